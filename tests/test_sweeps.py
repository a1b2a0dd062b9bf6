"""Every shipped sweep file, whatever its experiment: it composes, validates, plans, and its
first cell runs two seeds with the experiment's tiny budget (``Experiment.tiny_budget``)
in this process (no Ray); the records are those of the declared statuses and columns, carry
the cell's parameters, and make a valid Parquet fragment. Searches are sweep files too
(``tests/test_service_search.py`` runs their corner cells). A new experiment's sweeps are
covered without editing this file."""

from __future__ import annotations

import math

import pytest

from ray_jobs.config import available_searches, available_sweeps, compose_config
from ray_jobs.experiments.registry import registered_experiments
from ray_jobs.plan import plan_sweep
from ray_jobs.store import columns_of, row_schema, unit_table
from ray_jobs.store.rows import _table as rows_table
from ray_jobs.validate import validate

SWEEPS = [name for name in available_sweeps() if name not in available_searches()]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_experiment_has_a_sweep_and_a_tiny_budget():
    used = {compose_config([f"sweep={name}"]).experiment.name for name in SWEEPS}
    assert used == set(registered_experiments())
    assert all(experiment.tiny_budget for experiment in registered_experiments().values())


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_runs_its_first_cell_with_a_tiny_budget(sweep):
    experiment = registered_experiments()[compose_config([f"sweep={sweep}"]).experiment.name]
    cfg = compose_config([f"sweep={sweep}", *experiment.tiny_budget])
    experiment, cells = validate(cfg)
    plan = plan_sweep(cfg, experiment.name, cells)
    assert plan.cells and plan.units and plan.runs == len(plan.cells) * int(cfg.sweep.seeds)
    start = int(cfg.sweep.get("seed_start", 0))
    unit = next(unit for unit in plan.units if unit.cell == plan.cells[0])
    seeds = [start, start + 1][: len(unit.seeds)]
    records = experiment.run(unit.cell.params, seeds, "cpu")
    assert [r["seed"] for r in records] == seeds
    schema = row_schema(experiment.columns)
    for record in records:
        assert record["status"] in experiment.statuses
        assert set(record) <= set(schema.names), sorted(set(record) - set(schema.names))
        for key, value in unit.cell.params.items():  # the cell's parameters are what the run records
            if key in record and key in experiment.columns and not (isinstance(value, float) and math.isnan(value)):
                assert record[key] == value, key
    columns = columns_of(records)
    where = {"hostname": "node-a", "node_id": "abc", "gpu_ids": ""}
    table = unit_table(
        unit,
        columns,
        constants=where,
        experiment=experiment.name,
        column_types=experiment.columns,
        sweep=plan.sweep,
        code_version="test",
    )
    assert table.num_rows == len(seeds) and table.schema.names[: len(schema.names)] == schema.names
    # built column by column = the rows as dicts through Table.from_pylist (the reference),
    # value for value (the repr of the values: exact for floats, and NaN equals NaN) and type for type
    contract = {
        "sweep": plan.sweep,
        "experiment": experiment.name,
        "cell_id": unit.cell.cell_id,
        "unit_id": unit.unit_id,
        "code_version": "test",
        "config_json": unit.cell.config_json,
        "error_message": None,
    }
    reference = rows_table([{**record, **where, **contract} for record in records], schema)
    assert table.schema == reference.schema and repr(table.to_pylist()) == repr(reference.to_pylist())
    # the driver's copy: the same rows again from the records' own columns (as Arrow) that cross Ray
    again = unit_table(
        unit,
        {name: table.column(name) for name in columns},
        constants=where,
        experiment=experiment.name,
        column_types=experiment.columns,
        sweep=plan.sweep,
        code_version="test",
    )
    assert again.schema == table.schema and repr(again.to_pylist()) == repr(table.to_pylist())

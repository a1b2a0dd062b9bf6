"""The service's contract, checked once per registered experiment on its smoke sweep.

For every experiment of the registry (its smoke sweep and expectations in
tests/smoke_cases/<name>.py; an experiment without one is skipped, naming it),
on the session's 2-CPU Ray cluster:

- rows = cells x seeds, one per (cell, seed), with every contract column, the experiment's
  declared columns and its table axes, statuses among the experiment's declared ones, no
  error message;
- a second run of the same sweep schedules nothing and adds no rows (resume);
- a unit that fails (``experiment.fail_on_seeds``) becomes `error` rows with the cell's
  values and an error message, and the report counts them;
- one MLflow child run per cell under the sweep's parent run;
- the report (table.md, table.csv: one row per cell) is written and attached to the parent.

The smoke sweeps run once per session (``smoke_run``), shared with the experiments' own
service tests (tests/test_service_<experiment>.py, tests/test_service_e2e.py), which check
what is particular to each.
"""

from __future__ import annotations

import pandas as pd
import pytest

from ray_jobs.config import compose_config
from ray_jobs.experiments.registry import experiment_names, get_experiment, get_layout
from ray_jobs.report import TABLE_CSV, TABLE_MD
from ray_jobs.store import CONTRACT_COLUMNS
from ray_jobs.sweep import run_sweep
from tests.conftest import children_of, mlflow_client
from tests.service_helpers import SMOKE_CASES, rows_of, smoke_run
from tests.smoke_cases import SmokeCase

EXPERIMENTS = experiment_names()


def case_of(name: str) -> SmokeCase:
    if name not in SMOKE_CASES:
        pytest.skip(f"experiment {name!r} has no smoke case: tests/smoke_cases/{name}.py")
    return SMOKE_CASES[name]


@pytest.fixture(params=EXPERIMENTS)
def smoke(request, ray_session, tmp_path_factory):
    """(experiment, smoke case, results directory, sweep result) of one registered experiment."""
    case = case_of(request.param)
    results, result = smoke_run(request.param, tmp_path_factory)
    return get_experiment(request.param), case, results, result


def test_every_shipped_experiment_has_a_smoke_case():
    assert {"teacher_student", "null_run", "skip_networks", "width_threshold", "string_sampling"} <= set(EXPERIMENTS)
    assert set(SMOKE_CASES) <= set(EXPERIMENTS)
    for name, case in SMOKE_CASES.items():
        cfg = compose_config(list(case.overrides))
        assert cfg.experiment.name == name and cfg.sweep.name == case.sweep


def test_rows_are_cells_times_seeds_with_the_contract_columns(smoke):
    experiment, case, results, result = smoke
    assert result.units_scheduled == case.units and result.units_failed == 0 and result.units_skipped == 0
    assert len(result.plan.cells) == case.cells
    rows = rows_of(results, case.sweep)
    assert len(rows) == case.cells * case.seeds and not rows.duplicated(["cell_id", "seed"]).any()
    assert sorted(rows.groupby("cell_id").size()) == [case.seeds] * case.cells
    assert set(CONTRACT_COLUMNS) <= set(rows.columns)
    assert set(experiment.columns) <= set(rows.columns)
    layout = get_layout(experiment)
    assert set(layout.table_axes) - set(layout.optional_table_axes) <= set(rows.columns)
    assert set(rows["status"]) <= set(experiment.statuses)
    assert rows["error_message"].isna().all()
    assert (rows["sweep"] == case.sweep).all() and (rows["experiment"] == experiment.name).all()
    assert rows["code_version"].nunique() == 1 and rows["code_version"].iloc[0]
    assert rows["config_json"].notna().all() and rows["device"].notna().all()
    assert sorted(rows["unit_id"].unique()) == sorted(unit.unit_id for unit in result.plan.units)


def test_second_run_schedules_nothing(smoke):
    _, case, results, _ = smoke
    rows_before = rows_of(results, case.sweep)
    again = run_sweep(compose_config([*case.overrides, f"results_dir={results}"]))
    assert again.units_scheduled == 0 and again.units_skipped == case.units and again.units_failed == 0
    assert len(rows_of(results, case.sweep)) == case.cells * case.seeds == len(rows_before)


def test_mlflow_child_per_cell(smoke):
    _, case, results, result = smoke
    children = children_of(mlflow_client(results), result.parent_run_id)
    assert len(children) == case.cells
    assert {child.data.params["cell_id"] for child in children} == set(rows_of(results, case.sweep)["cell_id"])


def test_report_is_written_and_attached(smoke):
    _, case, results, result = smoke
    report = results / case.sweep / "report"
    table = pd.read_csv(report / TABLE_CSV)
    assert len(table) == case.cells and set(table["cell_id"]) == set(rows_of(results, case.sweep)["cell_id"])
    assert (table["runs"] == case.seeds).all() and (table["errors"] == 0).all()
    assert (report / TABLE_MD).read_text().strip()
    assert result.report.paths and all(path.is_file() for path in result.report.paths)
    artifacts = {a.path for a in mlflow_client(results).list_artifacts(result.parent_run_id, "report")}
    assert {f"report/{TABLE_MD}", f"report/{TABLE_CSV}"} <= artifacts


def test_cell_files_are_on_their_cells_children(smoke):
    """The layout's one-cell files (ReportLayout.cell_files) are artifacts of that cell's child."""
    _, case, results, result = smoke
    client = mlflow_client(results)
    child_of = {child.data.params["cell_id"]: child.info.run_id for child in children_of(client, result.parent_run_id)}
    for cell_id, paths in result.report.cell_paths.items():
        artifacts = {a.path for a in client.list_artifacts(child_of[cell_id], "report")}
        assert {f"report/{path.name}" for path in paths} <= artifacts, cell_id


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_failing_units_become_error_rows_with_the_cell_values(ray_session, tmp_path, name):
    case, experiment = case_of(name), get_experiment(name)
    failing = case.failing
    result = run_sweep(compose_config([*case.overrides, *failing.overrides, f"results_dir={tmp_path}"]))
    assert result.units_failed == 1
    rows = rows_of(tmp_path, case.sweep)
    errors = rows[rows["status"] == "error"]
    assert sorted(errors["seed"]) == sorted(failing.seeds)
    for column, value in failing.cell.items():
        assert (errors[column] == value).all(), column
    assert errors["error_message"].str.contains("InjectedFault").all()
    assert set(rows.loc[rows["status"] != "error", "status"]) <= set(experiment.statuses)
    assert rows.loc[rows["status"] != "error", "error_message"].isna().all()
    table = pd.read_csv(tmp_path / case.sweep / "report" / TABLE_CSV)
    assert list(table["runs"]) == [failing.runs] and list(table["errors"]) == [failing.errors]

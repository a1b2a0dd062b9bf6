"""The results store: a Parquet dataset of one row per run, one fragment per work unit.

Layout (the results contract of design.md)::

    <results_dir>/<sweep>/runs/<unit_id>.parquet   one fragment per finished unit
    <results_dir>/<sweep>/report/                   table.md, table.csv, figures
    <results_dir>/<sweep>/config.yaml               the resolved sweep config

The driver is the only writer. A fragment is written to a hidden staging name
(``runs/.<unit_id>.parquet.tmp``, ignored by pyarrow, pandas and duckdb globs) and renamed
with :func:`os.replace`, so a reader sees a whole fragment or none. A fragment's existence
is what "this unit is done" means for resume.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ray_jobs.plan import WorkUnit

if TYPE_CHECKING:
    from ray_jobs.experiments.base import Experiment

#: the status of every row of a unit whose task failed (the experiments' statuses are theirs)
ERROR_STATUS = "error"

#: columns every row has, whatever the experiment
CONTRACT_COLUMNS: dict[str, pa.DataType] = {
    "sweep": pa.string(),
    "experiment": pa.string(),
    "cell_id": pa.string(),
    "unit_id": pa.string(),
    "seed": pa.int64(),
    "status": pa.string(),
    "final_loss": pa.float64(),
    "grad_norm": pa.float64(),
    "iterations": pa.int64(),
    "wall_s": pa.float64(),
    "device": pa.string(),
    "code_version": pa.string(),
    "config_json": pa.string(),
    "error_message": pa.string(),
}

FRAGMENT_SUFFIX = ".parquet"
STAGING_SUFFIX = ".parquet.tmp"


def arrow_type(name: str) -> pa.DataType:
    """The Arrow type of a column type name: ``int64``, ``float64``, ``string``, ``bool``,
    ``list<T>`` for a type name T (``list<float64>``, ``list<list<float64>>``)."""
    if name.startswith("list<") and name.endswith(">"):
        return pa.list_(arrow_type(name[len("list<"):-1]))
    scalar = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_()}
    try:
        return scalar[name]
    except KeyError:
        raise ValueError(f"unknown column type {name!r}; allowed: {', '.join(scalar)} or list<...> of them") from None


def row_schema(experiment: Experiment) -> pa.Schema:
    """Contract columns, then the experiment's own columns (declared as type names)."""
    columns = dict(CONTRACT_COLUMNS)
    columns.update({name: arrow_type(kind) for name, kind in experiment.columns.items() if name not in columns})
    return pa.schema(list(columns.items()))


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> table with ``schema``; keys the schema lacks are appended as inferred columns."""
    extra = sorted({key for row in rows for key in row} - set(schema.names))
    for key in extra:
        schema = schema.append(pa.field(key, pa.array([row.get(key) for row in rows]).type))
    return pa.Table.from_pylist(rows, schema=schema)


def unit_table(unit: WorkUnit, records: Sequence[dict], *, experiment: Experiment, sweep: str, code_version: str) -> pa.Table:
    """The rows of a unit that ran: each record plus the contract columns."""
    rows = []
    for record in records:
        row = dict(record)
        row.update(
            sweep=sweep,
            experiment=experiment.name,
            cell_id=unit.cell.cell_id,
            unit_id=unit.unit_id,
            code_version=code_version,
            config_json=unit.cell.config_json,
            error_message=None,
        )
        rows.append(row)
    return _table(rows, row_schema(experiment))


def error_table(unit: WorkUnit, message: str, *, experiment: Experiment, sweep: str, code_version: str) -> pa.Table:
    """One ``error`` row per seed of a unit whose task failed, with the cell's parameters."""
    schema = row_schema(experiment)
    cell_values = {key: value for key, value in unit.cell.params.items() if key in schema.names}
    rows = [
        {
            **cell_values,
            "sweep": sweep,
            "experiment": experiment.name,
            "cell_id": unit.cell.cell_id,
            "unit_id": unit.unit_id,
            "seed": seed,
            "status": ERROR_STATUS,
            "code_version": code_version,
            "config_json": unit.cell.config_json,
            "error_message": message,
        }
        for seed in unit.seeds
    ]
    return _table(rows, schema)


class ResultsStore:
    """The Parquet results of one sweep under ``results_dir``."""

    def __init__(self, results_dir: Path, sweep: str):
        self.results_dir = Path(results_dir)
        self.sweep_dir = self.results_dir / sweep
        self.runs_dir = self.sweep_dir / "runs"
        self.report_dir = self.sweep_dir / "report"
        self.config_path = self.sweep_dir / "config.yaml"

    def prepare(self) -> None:
        """Create the directories; remove staging files left by a killed driver."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.runs_dir.glob(f".*{STAGING_SUFFIX}"):
            stale.unlink()

    def fragment_path(self, unit_id: str) -> Path:
        return self.runs_dir / f"{unit_id}{FRAGMENT_SUFFIX}"

    def fragment_paths(self) -> list[Path]:
        if not self.runs_dir.is_dir():
            return []
        return sorted(self.runs_dir.glob(f"[!.]*{FRAGMENT_SUFFIX}"))

    def completed_unit_ids(self) -> set[str]:
        """Ids of the units that have a fragment (done, successfully or as `error` rows)."""
        return {path.name[: -len(FRAGMENT_SUFFIX)] for path in self.fragment_paths()}

    def unit_ids_with_errors(self) -> set[str]:
        """Ids of the units whose fragment holds `error` rows."""
        failed = set()
        for path in self.fragment_paths():
            statuses = pq.read_table(path, columns=["status"]).column("status").to_pylist()
            if ERROR_STATUS in statuses:
                failed.add(path.name[: -len(FRAGMENT_SUFFIX)])
        return failed

    def write_fragment(self, unit_id: str, table: pa.Table) -> Path:
        """Write ``table`` as the unit's fragment: staging name, fsync, atomic rename."""
        final = self.fragment_path(unit_id)
        staging = self.runs_dir / f".{unit_id}{STAGING_SUFFIX}"
        with open(staging, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, final)
        return final

    def read(self, unit_ids: Iterable[str] | None = None) -> pa.Table:
        """Rows of the given units' fragments (all fragments when None); missing ones skipped."""
        if unit_ids is None:
            paths = self.fragment_paths()
        else:
            paths = [path for path in map(self.fragment_path, unit_ids) if path.exists()]
        tables = [pq.read_table(path) for path in paths]
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="default")

    def save_text(self, path: Path, text: str) -> None:
        """Write a small text file atomically (config.yaml, report files)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_text(text)
        os.replace(staging, path)


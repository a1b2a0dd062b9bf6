"""The results store: a Parquet dataset of one row per run, one fragment per work unit.

Layout (the results contract of design.md)::

    <results_dir>/<sweep>/runs/<unit_id>.parquet   one fragment per finished unit
    <results_dir>/<sweep>/report/                   table.md, table.csv, figures
    <results_dir>/<sweep>/config.yaml               the resolved sweep config

The driver is the only writer: it holds :class:`DriverLock` on ``<sweep>/.driver.lock``
(an advisory ``flock``, released by the kernel when the driver dies, so a killed driver's
lock is taken over by the next one). A second driver on the same sweep is refused with a
line naming the holder (host, pid, since when). A fragment is written to a hidden staging
name (``runs/.<unit_id>.<pid>.parquet.tmp``, ignored by pyarrow, pandas and duckdb globs),
fsynced and renamed with :func:`os.replace`, so a reader sees a whole fragment or none;
staging files of a killed driver are removed by the next one (under the lock). A
fragment's existence is what "this unit is done" means for resume. A failed write
(disk full, read-only file system) raises :class:`~ray_jobs.errors.StorageError` naming
the path, after removing its staging file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ray_jobs.errors import ConfigError, StorageError
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
    "hostname": pa.string(),
    "node_id": pa.string(),
    "gpu_ids": pa.string(),
    "code_version": pa.string(),
    "config_json": pa.string(),
    "error_message": pa.string(),
}

FRAGMENT_SUFFIX = ".parquet"
STAGING_SUFFIX = ".parquet.tmp"
LOCK_NAME = ".driver.lock"


def _discard(path: Path) -> None:
    """Remove ``path`` if possible (a staging file after a failed write; the file system
    may refuse that too, and a leftover staging file is ignored and cleaned later)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


class DriverLock:
    """The exclusive right to write one sweep's results: ``flock`` on ``path``, whose content
    names the holder (host, pid, start time, command) for the refusal message.

    ``flock`` locks belong to the open file and vanish with the process that holds them, so
    a lock left by a killed driver (kill -9, node lost) never blocks the next one. On NFS,
    Linux maps ``flock`` to NFS byte-range locks (NFSv4, or v3 with lockd)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, *, field: str = "results_dir") -> None:
        """Take the lock, or raise ConfigError naming the driver that holds it.

        The lock is held on a read-only descriptor (an open file written to would keep the
        file system from being remounted read-only); the holder's details are written beside."""
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            try:
                info = json.loads(self.path.read_text())
                who = f"pid {info['pid']} on host {info['host']} since {info['since']}"
            except (OSError, ValueError, KeyError, TypeError):
                who = "another process"
            raise ConfigError(field, f"the sweep {self.path.parent.name!r} under {self.path.parent.parent} is being run by "
                                     f"another driver ({who}); wait for it to finish, or give another results_dir") from None
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv)[:500]}
        try:
            with open(self.path, "w") as handle:
                handle.write(json.dumps(holder))
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


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
        self.lock = DriverLock(self.sweep_dir / LOCK_NAME)

    def prepare(self) -> None:
        """Take the driver lock (ConfigError when another driver holds it), create the
        directories, remove staging files left by a killed driver."""
        try:
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("results_dir", f"cannot create {self.sweep_dir}: {exc.strerror or exc}") from None
        self.lock.acquire()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.runs_dir.glob(f".*{STAGING_SUFFIX}"):
            stale.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the driver lock."""
        self.lock.release()

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
        staging = self.runs_dir / f".{unit_id}.{os.getpid()}{STAGING_SUFFIX}"
        try:
            with open(staging, "wb") as handle:
                pq.write_table(table, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, final)
        except OSError as exc:
            _discard(staging)
            raise StorageError(final, exc.strerror or str(exc)) from exc
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
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging.write_text(text)
            os.replace(staging, path)
        except OSError as exc:
            _discard(staging)
            raise StorageError(path, exc.strerror or str(exc)) from exc


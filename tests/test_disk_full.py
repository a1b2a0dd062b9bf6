"""A disk filling up under the MLflow store (issue 24, item 6): the sweep stops with one line
naming the path it could not write (exit 3; exit 2 when the disk is full before it starts),
and once space is freed the same command leaves every cell's MLflow child FINISHED with its
metrics, one child per cell, and the Parquet rows of an uninterrupted run.

- Default suite: a child left RUNNING without metrics or params (what a full disk leaves
  between MLflow's create, log and end calls) in a real sqlite store is completed by the
  rerun, not duplicated; MLflow's storage faults name the store (the sqlite file, the
  artifacts). (Children left RUNNING under a parent that is not continued are marked KILLED:
  tests/test_mlflow_view.py.)
- Slow: the fault for real: a small tmpfs that the sweep itself fills (sizes hitting the
  store's creation, a child's creation, its metrics, the parent's end), a rerun while still
  full, then the tmpfs enlarged and the rerun.
"""

from __future__ import annotations

import errno
import sqlite3
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from ray_jobs.cli import EXIT_CRASHED, EXIT_OK, EXIT_USAGE
from ray_jobs.config import compose_config
from ray_jobs.errors import StorageError, storage_fault
from ray_jobs.sweep import run_sweep
from ray_jobs.tracking.backend import NamedStoreClient
from tests.conftest import TINY_SWEEP, children_of, mlflow_client, run_cli
from tests.test_driver_kills import VOLATILE
from tests.test_faults import needs_mount


def stable(metrics: dict[str, float]) -> dict[str, float]:
    """A child's metrics but those of the runs' wall times (they differ between two runs of a unit)."""
    return {key: value for key, value in metrics.items() if "wall_s" not in key}


def cell_children(results: Path) -> dict[str, list]:
    """cell id -> its child runs under every sweep parent of ``results``' store."""
    client = mlflow_client(results)
    experiment = client.get_experiment_by_name("landscape-smoke")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`landscape.role` = 'sweep'")
    found: dict[str, list] = {}
    for parent in parents:
        for child in children_of(client, parent.info.run_id, role="cell"):
            found.setdefault(child.data.tags["cell_id"], []).append(child)
    return found


def assert_children_complete(results: Path, want: dict[str, dict]) -> None:
    """One child per cell, FINISHED, with the metrics and params of ``want`` (cell id -> the
    reference run's child) exactly."""
    found = cell_children(results)
    assert sorted(found) == sorted(want)
    for cell, runs in found.items():
        assert len(runs) == 1, f"cell {cell}: {len(runs)} children"
        child = runs[0]
        assert child.info.status == "FINISHED", (cell, child.info.status)
        assert stable(child.data.metrics) == want[cell]["metrics"], cell
        assert child.data.params == want[cell]["params"], cell


def children_snapshot(results: Path) -> dict[str, dict]:
    return {
        cell: {"metrics": stable(runs[0].data.metrics), "params": runs[0].data.params}
        for cell, runs in cell_children(results).items()
    }


def break_child(database: Path, run_id: str, *, metrics: bool, params: bool) -> None:
    """Leave the child ``run_id`` as a driver stopped by a full disk leaves it: RUNNING, no end
    time, its metrics (and params) gone."""
    with sqlite3.connect(database) as db:
        db.execute("update runs set status = 'RUNNING', end_time = NULL where run_uuid = ?", (run_id,))
        for table in ["metrics", "latest_metrics"] if metrics else []:
            db.execute(f"delete from {table} where run_uuid = ?", (run_id,))
        if params:
            db.execute("delete from params where run_uuid = ?", (run_id,))


def test_a_child_left_running_without_metrics_is_completed_by_the_rerun_not_duplicated(ray_session, tmp_path):
    results = tmp_path / "results"
    args = [*TINY_SWEEP, f"results_dir={results}", "sweep.grid.k=[2]"]
    first = run_sweep(compose_config(args))
    want = children_snapshot(results)
    assert len(want) == 2 and all(len(child["metrics"]) > 10 for child in want.values())
    (one, two) = [runs[0].info.run_id for runs in cell_children(results).values()]
    break_child(results / "mlflow.db", one, metrics=True, params=True)  # created, nothing logged
    break_child(results / "mlflow.db", two, metrics=False, params=False)  # logged, never ended
    mlflow_client(results).update_run(first.parent_run_id, status="FAILED")  # what the stopped driver set
    assert {runs[0].info.status for runs in cell_children(results).values()} == {"RUNNING"}

    again = run_sweep(compose_config(args))  # every unit recorded: the cells are logged from the report

    assert again.units_scheduled == 0 and again.parent_run_id == first.parent_run_id
    assert_children_complete(results, want)
    assert {runs[0].info.run_id for runs in cell_children(results).values()} == {one, two}  # completed, not new
    assert mlflow_client(results).get_run(first.parent_run_id).info.status == "FINISHED"


def _on(client, store: str, artifacts: str | None = None) -> NamedStoreClient:
    """A NamedStoreClient around ``client`` (not an MlflowClient)."""
    named = NamedStoreClient.__new__(NamedStoreClient)
    named._client, named._store, named._artifacts = client, store, artifacts or store
    return named


class _Failing:
    """A stand-in MlflowClient whose calls raise ``exc``."""

    def __init__(self, exc: BaseException):
        self.exc, self.tracking_uri = exc, "sqlite:////r/mlflow.db"

    def log_batch(self, *args, **kwargs):
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            RuntimeError("(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT ...]"),
            "cannot write /r/mlflow.db: database or disk is full (the MLflow store)",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "cannot write /r/mlartifacts/x: No space left on device"),
        (
            OSError(errno.ENOSPC, "No space left on device", "/r/mlartifacts/x/a.png"),
            "cannot write /r/mlartifacts/x/a.png: No space left on device",
        ),
    ],
)
def test_mlflow_storage_faults_name_the_store_or_the_artifacts(exc, line):
    client = _on(_Failing(exc), "/r/mlflow.db", "/r/mlartifacts/x")
    assert client.tracking_uri == "sqlite:////r/mlflow.db"  # attributes pass through
    with pytest.raises(BaseException) as raised:
        client.log_batch("run")
    assert storage_fault(raised.value) == line
    assert isinstance(raised.value, StorageError) or raised.value is exc


def test_other_mlflow_errors_pass_unchanged():
    exc = ValueError("RESOURCE_DOES_NOT_EXIST: run x")
    with pytest.raises(ValueError) as raised:
        _on(_Failing(exc), "/r/mlflow.db").log_batch("run")
    assert raised.value is exc


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs filled to the last block with ``dd``; unmounted at the end."""
    mountpoint = tmp_path / "full"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)], check=True)
    (mountpoint / "results" / "smoke").mkdir(parents=True)
    subprocess.run(["dd", "if=/dev/zero", f"of={mountpoint / 'filler'}", "bs=4k"], capture_output=True)
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@needs_mount
def test_the_lock_file_and_a_figure_on_a_full_disk_name_their_path(full_disk):
    from ray_jobs.errors import ConfigError
    from ray_jobs.report.figures import pyplot, save_figure
    from ray_jobs.store import ResultsStore

    store = ResultsStore(full_disk / "results", "smoke")
    with pytest.raises(ConfigError) as refused:  # exit 2: before anything else is written
        store.claim()
    lock = full_disk / "results" / "smoke" / ".driver.lock"
    assert str(refused.value) == f"results_dir: cannot write {lock}: No space left on device"
    assert not lock.exists() and not store.lock.held
    figure = full_disk / "results" / "smoke" / "report" / "f.png"
    with pytest.raises(StorageError) as stopped:
        save_figure(pyplot().figure(figsize=(2, 2)), figure)
    assert storage_fault(stopped.value) == f"cannot write {figure}: No space left on device"


# --- the fault for real --------------------------------------------------------------------

#: 6 cells of 2 units; a finished sweep takes ~1.3 MB on a tmpfs (a 1 MB mlflow.db, 12 fragments, report)
SWEEP = [*TINY_SWEEP, "sweep.grid.k=[2,3,4]"]
#: tmpfs sizes (KiB) at which this sweep fills the disk at different moments (MLflow 3.17.2, before
#: the fix): creating the store (900), a child's creation (1100), a child's metrics (1200, 1300),
#: the parent's end (1400)
SIZES_K = [900, 1100, 1200, 1300, 1400]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, driver_env) -> tuple[Path, dict[str, dict]]:
    """An uninterrupted run of :data:`SWEEP`: its results and its children."""
    results = tmp_path_factory.mktemp("reference") / "results"
    proc = run_cli([*SWEEP, f"results_dir={results}"], env=driver_env)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    return results, children_snapshot(results)


def _rows(results: Path) -> pd.DataFrame:
    rows = pd.read_parquet(results / "smoke" / "runs").drop(columns=VOLATILE)
    return rows.sort_values(["cell_id", "seed"]).reset_index(drop=True)


def _last_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if "━" not in line]
    return lines[-1] if lines else ""


def _state(results: Path) -> str:
    """What the failed run left in MLflow: children RUNNING / without metrics."""
    if not (results / "mlflow.db").exists():
        return "no mlflow.db"
    found = cell_children(results)
    running = sum(run.info.status == "RUNNING" for runs in found.values() for run in runs)
    bare = sum(not run.data.metrics for runs in found.values() for run in runs)
    return f"{len(found)} children, {running} RUNNING, {bare} without metrics"


@needs_mount
@pytest.mark.slow  # ~25 s per size on the session's cluster (2 runs and a refusal)
@pytest.mark.parametrize("size_k", SIZES_K)
def test_a_disk_filled_by_the_sweep_stops_naming_the_path_and_the_rerun_finishes_every_child(
    driver_env, reference, tmp_path, size_k
):
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(mountpoint)], check=True)
    try:
        results = mountpoint / "results"
        args = [*SWEEP, f"results_dir={results}"]
        stopped = run_cli(args, env=driver_env)
        line = _last_line(stopped.stderr)
        assert stopped.returncode == EXIT_CRASHED, stopped.stderr[-3000:]
        assert line.startswith(f"landscape-sweep: stopped: cannot write {results}/"), line
        assert "Traceback" not in stopped.stderr
        left = _state(results)

        full = run_cli(args, env=driver_env)  # nothing freed yet: refused or stopped, naming the path
        assert full.returncode in (EXIT_USAGE, EXIT_CRASHED), full.stderr[-3000:]
        again = _last_line(full.stderr)
        assert f"cannot write {results}" in again or f"cannot write under {mountpoint}" in again, again
        assert "Traceback" not in full.stderr

        subprocess.run(["mount", "-o", "remount,size=16m", str(mountpoint)], check=True)
        proc = run_cli(args, env=driver_env)
        assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
        pd.testing.assert_frame_equal(
            _rows(results).drop(columns=["final_weights"]),
            _rows(reference[0]).drop(columns=["final_weights"]),
            check_exact=True,
        )
        assert_children_complete(results, reference[1])
        assert not list((results / "smoke" / "runs").glob(".*"))
        print(f"size {size_k}k: {line!r}; left {left}; still full: exit {full.returncode} {again!r}")
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)

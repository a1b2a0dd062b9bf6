"""MLflow tracking: one parent run per sweep invocation, one child run per cell.

The parent holds the sweep's parameters (sweep, experiment, grid, seeds, code version),
progress metrics and, at the end, the report files and the resolved config as artifacts.
Each child holds its cell's parameters (the same keys as the Parquet columns) and the
cell's aggregate metrics (the report's column names: ``frac_spurious``,
``mean_objective_spurious``, ``n_families``...). Per-run rows live in Parquet only.

Default store: ``sqlite:///<results_dir>/mlflow.db`` with artifacts in
``<results_dir>/mlartifacts``; ``tracking.uri=http://host:port`` uses a server.

Faults: the sqlite store is created under a lock (``<results_dir>/.mlflow.lock``) in a
staging file renamed into place once MLflow's migrations are done, so a driver killed
while creating it leaves no half-migrated ``mlflow.db`` and two drivers starting together
do not race the migrations. A server is asked for ``/health`` first (a few seconds): an
unreachable one is a one-line error before anything is written. A parent left ``RUNNING``
by a killed driver of the same sweep and results directory is marked ``KILLED`` by the
next invocation, which continues it (same parameters) instead of opening another parent:
cells already logged there are not logged twice.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from ray_jobs.config import PROJECT_ROOT
from ray_jobs.errors import ConfigError

PARENT_TAG = "landscape.role"
MAX_PARAM_LENGTH = 6000
#: seconds a tracking server has to answer /health before the invocation is refused
SERVER_TIMEOUT_S = 5.0
#: tags on a parent continued by a later invocation
RESUMED_TAG = "landscape.resumed"
#: the experiment tag MLflow 3's UI reads to choose its view, and the value of its model-training view
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
#: MLflow's HTTP client settings unless the user set them (its defaults retry a dead server
#: for minutes per call: 7 retries with exponential backoff, 120 s timeouts)
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def default_tracking_uri(results_dir: Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def check_server(uri: str, *, timeout: float = SERVER_TIMEOUT_S) -> None:
    """Raise ConfigError unless an MLflow server answers ``uri``/health within ``timeout``."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise ConfigError("tracking.uri", f"no MLflow server answers at {uri} ({reason}); start one "
                                      f"(mlflow server --host 127.0.0.1 --port 5000), or use tracking=sqlite or tracking=none")


class _FileLock:
    """``flock`` on ``path`` for the duration of a ``with`` block (blocking)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.handle = open(self.path, "a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def ensure_sqlite_store(results_dir: Path) -> None:
    """Create ``<results_dir>/mlflow.db`` if missing, atomically: migrate a staging database,
    then rename it into place (under ``.mlflow.lock``; leftovers of killed drivers removed)."""
    from mlflow.tracking import MlflowClient

    results_dir = Path(results_dir).resolve()
    database = results_dir / "mlflow.db"
    if database.exists():
        return
    with _FileLock(results_dir / ".mlflow.lock"):
        if database.exists():
            return
        for stale in results_dir.glob(".mlflow.db.*.init*"):  # the staging file and its sqlite journal
            stale.unlink(missing_ok=True)
        staging = results_dir / f".mlflow.db.{os.getpid()}.init"
        client = MlflowClient(tracking_uri=f"sqlite:///{staging}")
        client.search_experiments(max_results=1)  # creates the schema and runs every migration
        _dispose_engines()
        os.replace(staging, database)


def _dispose_engines() -> None:
    """Close MLflow's cached sqlalchemy engines (so a renamed staging file is not held open)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        engines = getattr(SqlAlchemyStore, "_engine_map", {})
        for uri in [uri for uri in engines if uri.endswith(".init")]:
            engines.pop(uri).dispose()
    except Exception:  # an MLflow without that cache: nothing to close
        pass


def _metric_value(value: Any) -> float | None:
    """A float MLflow can store, or None to skip (missing / NaN / not a number)."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


class SweepTracker:
    """Parent/child MLflow runs of one sweep invocation (the MlflowClient API, no global state)."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_location: str | None):
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # after the import: mlflow configures its logger on import
            logging.getLogger(name).setLevel(logging.WARNING)
        # it logs every database error with its traceback before raising it; the raise is reported
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment_name, artifact_location=artifact_location)
            except Exception:  # created meanwhile by another driver (another sweep sharing the server)
                experiment = self.client.get_experiment_by_name(experiment_name)
                if experiment is None:
                    raise
                self.experiment_id = experiment.experiment_id
        else:
            self.experiment_id = experiment.experiment_id
        if self.client.get_experiment(self.experiment_id).tags.get(KIND_TAG) is None:
            self.client.set_experiment_tag(self.experiment_id, KIND_TAG, MODEL_TRAINING)  # the UI's runs table, not its GenAI view
        self.parent_run_id: str | None = None
        self.logged_cells: set[str] = set()  # cell ids with a child under the parent (a continued parent has some)
        self.failed_reason: str | None = None

    @classmethod
    def from_config(cls, cfg, results_dir: Path) -> "SweepTracker | None":
        """The tracker the config asks for, or None when ``tracking.enabled`` is false."""
        if not cfg.tracking.enabled:
            return None
        uri = cfg.tracking.uri or default_tracking_uri(results_dir)
        name = cfg.tracking.experiment_name or f"landscape-{cfg.sweep.name}"
        if uri.startswith(("http://", "https://")):
            check_server(uri)
            for variable, value in HTTP_DEFAULTS.items():  # a server lost mid-sweep: an error in minutes, not tens
                os.environ.setdefault(variable, value)
        elif uri.startswith("sqlite:") and not cfg.tracking.uri:
            ensure_sqlite_store(results_dir)
        artifacts = (Path(results_dir).resolve() / "mlartifacts" / name).as_uri() if uri.startswith("sqlite:") else None
        return cls(uri, name, artifacts)

    def _log(self, run_id: str, params: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        param_list = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in (params or {}).items()]
        metric_list = [Metric(key, number, now, 0) for key, value in (metrics or {}).items()
                       if (number := _metric_value(value)) is not None]
        self.client.log_batch(run_id, metrics=metric_list, params=param_list)

    def _parents(self, sweep: str, results_dir: str) -> list:
        """Parent runs of ``sweep`` with results in ``results_dir``, newest first."""
        query = f"tags.`{PARENT_TAG}` = 'sweep' and tags.sweep = '{sweep}' and params.results_dir = '{results_dir}'"
        return self.client.search_runs([self.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"],
                                       max_results=100)

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Open the parent run of this invocation, or continue the last one of this sweep and
        results directory when it was interrupted (KILLED, FAILED, or RUNNING with its driver
        gone: the caller holds the sweep's driver lock) and has the same parameters.

        Parents left RUNNING are first marked KILLED."""
        from mlflow.entities import RunStatus

        sweep, results_dir = tags.get("sweep", ""), str(params.get("results_dir", ""))
        parents = self._parents(sweep, results_dir)
        for run in parents:
            if run.info.status == "RUNNING":
                self.client.set_tag(run.info.run_id, "landscape.ended_by", "a later invocation (its driver was gone)")
                self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        wanted = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in params.items()}
        last = parents[0] if parents else None
        if last is not None and last.info.status in ("RUNNING", "KILLED", "FAILED") and last.data.params == wanted:
            self.parent_run_id = last.info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
            self.client.set_tag(self.parent_run_id, RESUMED_TAG, str(int(last.data.tags.get(RESUMED_TAG, "0")) + 1))
            children = self.client.search_runs([self.experiment_id], max_results=50000,
                                               filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'")
            self.logged_cells = {run.data.tags["cell_id"] for run in children if "cell_id" in run.data.tags}
            return self.parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={PARENT_TAG: "sweep", **tags})
        self.parent_run_id = run.info.run_id
        self._log(self.parent_run_id, params=params)
        return self.parent_run_id

    def log_cell(self, run_name: str, params: dict[str, Any], metrics: dict[str, Any], tags: dict[str, str], *,
                 kind: str = "cell") -> str:
        """A finished child run under the parent: one cell of a sweep, or one trial of a search (``kind``)."""
        run = self.client.create_run(
            self.experiment_id, run_name=run_name,
            tags={"mlflow.parentRunId": self.parent_run_id, PARENT_TAG: kind, **tags},
        )
        self._log(run.info.run_id, params=params, metrics=metrics)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        if "cell_id" in tags:
            self.logged_cells.add(tags["cell_id"])
        return run.info.run_id

    def log_parent_metrics(self, metrics: dict[str, Any]) -> None:
        self._log(self.parent_run_id, metrics=metrics)

    def log_history(self, series: dict[str, list[tuple[int, float]]]) -> None:
        """Each series as a metric history of the parent (step = the axis value), so that the
        UI charts e.g. the spurious fraction against k by itself."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, number, now, int(step)) for name, points in series.items() for step, value in points
                   if (number := _metric_value(value)) is not None]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.parent_run_id, metrics=metrics[start:start + 1000])

    def log_table(self, table, artifact_file: str) -> None:
        """The report table as an MLflow table artifact of the parent (the UI's table view);
        once per parent (MLflow appends to an existing table artifact)."""
        folder = str(Path(artifact_file).parent)
        if any(item.path == artifact_file for item in self.client.list_artifacts(self.parent_run_id, folder)):
            return
        self.client.log_table(self.parent_run_id, data=table, artifact_file=artifact_file)

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str) -> None:
        for path in paths:
            self.client.log_artifact(self.parent_run_id, str(path), artifact_path=artifact_path)

    def fail(self, reason: str) -> None:
        """Mark the parent to end FAILED (instead of FINISHED), ``reason`` as the tag ``landscape.stopped``."""
        self.failed_reason = reason
        self.client.set_tag(self.parent_run_id, "landscape.stopped", reason[:MAX_PARAM_LENGTH])

    def finish(self, status: str) -> None:
        """Close the parent run: FINISHED (FAILED after :meth:`fail`), FAILED or KILLED."""
        if self.parent_run_id is not None:
            if status == "FINISHED" and self.failed_reason:
                status = "FAILED"
            self.client.set_terminated(self.parent_run_id, status)


@contextmanager
def parent_run(tracker: SweepTracker | None, sweep: str, *, params: dict[str, Any], tags: dict[str, str]) -> Iterator[None]:
    """The invocation's MLflow parent run around the block (nothing when ``tracker`` is None):
    named ``<sweep>@<UTC time>``; ended FINISHED, KILLED on an interrupt (re-raised), FAILED
    on any other exception (re-raised)."""
    if tracker is None:
        yield
        return
    tracker.start(run_name=f"{sweep}@{datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}", params=params, tags=tags)
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.finish(status)


def source_tags() -> dict[str, str]:
    """Tags linking a run to its source checkout (for the MLflow UI)."""
    return {"mlflow.source.name": str(PROJECT_ROOT), "mlflow.source.type": "LOCAL"}

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

UI: an invocation that ends normally saves the experiment's view ``Cells of the latest run``
(its children flat, the swept axes and the metrics with an interval as columns; :func:`view_path`),
linked from the experiment's description. Over :data:`UI_MAX_RUNS` children: one warning
pointing at the Parquet dataset. ``landscape-report`` logs a run of its own (:func:`log_report`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ray_jobs.config import PROJECT_ROOT
from ray_jobs.errors import ConfigError

logger = logging.getLogger(__name__)

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
#: child runs the MLflow UI lists comfortably; a sweep with more cells logs a warning
UI_MAX_RUNS = 1000
#: the experiment tag of a saved view of MLflow's runs page (its "Views" menu), and the id
#: of the view of the latest invocation's cells (``?viewStateShareKey=<id>`` opens it)
VIEW_TAG, CELLS_VIEW = "mlflow.sharedViewState.", "landscape-cells"
#: the experiment description (shown above the runs table) and how the service's own begins
NOTE_TAG, NOTE_START = "mlflow.note.content", "Landscape sweep:"


def view_path(experiment_id: str) -> str:
    """The UI address (after ``http://host:port/``) of the cells view, in the model-training
    workflow (MLflow 3.17's UI opens the GenAI one unless asked or switched in its sidebar)."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={CELLS_VIEW}&workflowType=machine_learning"


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
    raise ConfigError(
        "tracking.uri",
        f"no MLflow server answers at {uri} ({reason}); start one "
        f"(mlflow server --host 127.0.0.1 --port 5000), or use tracking=sqlite or tracking=none",
    )


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
            self.client.set_experiment_tag(
                self.experiment_id, KIND_TAG, MODEL_TRAINING
            )  # the UI's runs table, not its GenAI view
        self.parent_run_id: str | None = None
        self.logged_cells: set[str] = set()  # cell ids with a child under the parent (a continued parent has some)
        self.failed_reason: str | None = None
        self.children = 0  # child runs under the parent (a continued parent's included)
        self.where = ("", "")  # (sweep, results_dir) of the invocation, for the warning
        self.warned_many = False

    @classmethod
    def from_config(cls, cfg, results_dir: Path) -> SweepTracker | None:
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
        metric_list = [
            Metric(key, number, now, 0)
            for key, value in (metrics or {}).items()
            if (number := _metric_value(value)) is not None
        ]
        self.client.log_batch(run_id, metrics=metric_list, params=param_list)

    def _parents(self, sweep: str, results_dir: str) -> list:
        """Parent runs of ``sweep`` with results in ``results_dir``, newest first."""
        query = f"tags.`{PARENT_TAG}` = 'sweep' and tags.sweep = '{sweep}' and params.results_dir = '{results_dir}'"
        return self.client.search_runs(
            [self.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=100
        )

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Open the parent run of this invocation, or continue the last one of this sweep and
        results directory when it was interrupted (KILLED, FAILED, or RUNNING with its driver
        gone: the caller holds the sweep's driver lock) and has the same parameters.

        Parents left RUNNING are first marked KILLED."""
        from mlflow.entities import RunStatus

        sweep, results_dir = tags.get("sweep", ""), str(params.get("results_dir", ""))
        self.where = (sweep, results_dir)
        self.warn_many_runs(int(params.get("cells", 0)))
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
            children = self.client.search_runs(
                [self.experiment_id],
                max_results=50000,
                filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
            )
            self.logged_cells = {run.data.tags["cell_id"] for run in children if "cell_id" in run.data.tags}
            self.children = len(children)
            return self.parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={PARENT_TAG: "sweep", **tags})
        self.parent_run_id = run.info.run_id
        self._log(self.parent_run_id, params=params)
        return self.parent_run_id

    def log_cell(
        self,
        run_name: str,
        params: dict[str, Any],
        metrics: dict[str, Any],
        tags: dict[str, str],
        *,
        kind: str = "cell",
    ) -> str:
        """A finished child run under the parent: one cell of a sweep, or one trial of a search (``kind``)."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={"mlflow.parentRunId": self.parent_run_id, PARENT_TAG: kind, **tags},
        )
        self._log(run.info.run_id, params=params, metrics=metrics)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        if "cell_id" in tags:
            self.logged_cells.add(tags["cell_id"])
        self.children += 1
        self.warn_many_runs(self.children)
        return run.info.run_id

    def warn_many_runs(self, runs: int) -> None:
        """Once per invocation, when ``runs`` child runs (cells, trials) exceed what the UI
        lists comfortably: one warning line pointing at the Parquet dataset instead."""
        if self.warned_many or runs <= UI_MAX_RUNS:
            return
        self.warned_many = True
        logger.warning(
            f"MLflow: {runs:,} child runs (cells, trials) under one parent; the MLflow UI lists more than "
            f"{UI_MAX_RUNS:,} runs poorly (slow paging, search and charts): compare cells in the report "
            f"table and the Parquet dataset {self.runs_dir} (pandas.read_parquet or duckdb; docs/architecture.md)"
        )

    @property
    def runs_dir(self) -> Path:
        """The invocation's Parquet dataset, ``<results_dir>/<sweep>/runs``."""
        sweep, results_dir = self.where
        return Path(results_dir or ".") / (sweep or "<sweep>") / "runs"

    def log_parent_metrics(self, metrics: dict[str, Any]) -> None:
        self._log(self.parent_run_id, metrics=metrics)

    def log_history(self, series: dict[str, list[tuple[int, float]]]) -> None:
        """Each series as a metric history of the parent (step = the axis value), so that the
        UI charts e.g. the spurious fraction against k by itself."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(name, number, now, int(step))
            for name, points in series.items()
            for step, value in points
            if (number := _metric_value(value)) is not None
        ]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.parent_run_id, metrics=metrics[start : start + 1000])

    def log_table(self, table, artifact_file: str) -> None:
        """The report table as an MLflow table artifact of the parent (the UI's table view);
        once per parent (MLflow appends to an existing table artifact)."""
        folder = str(Path(artifact_file).parent)
        if any(item.path == artifact_file for item in self.client.list_artifacts(self.parent_run_id, folder)):
            return
        self.client.log_table(self.parent_run_id, data=table, artifact_file=artifact_file)

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str) -> None:
        """The files as artifacts of the parent under ``artifact_path``; PNG figures also as
        MLflow images (key = file name without suffix, step 0, once per run: the run's charts show them)."""
        paths = [Path(path) for path in paths]
        for path in paths:
            self.client.log_artifact(self.parent_run_id, str(path), artifact_path=artifact_path)
        figures = [path for path in paths if path.suffix.lower() == ".png"]
        if figures:
            from PIL import Image

            logged = {
                Path(item.path).name.split("+step+")[0]
                for item in self.client.list_artifacts(self.parent_run_id, "images")
            }
            for path in (path for path in figures if path.stem not in logged):
                with Image.open(path) as image:
                    self.client.log_image(
                        self.parent_run_id, image.convert("RGB"), key=path.stem, step=0, synchronous=True
                    )

    def publish_view(self) -> None:
        """Save the experiment's view ``Cells of the latest run`` (:data:`CELLS_VIEW`) of the
        parent's children: flat (ordered by the first swept axis; by date, MLflow nests them
        under their collapsed parent), as columns in this order the params that differ between
        them, ``runs`` and each metric with an interval (``m``, ``m_lo``, ``m_hi``) not zero in
        every child; and the experiment's description (unless a user wrote one) links it."""
        children = self.client.search_runs(
            [self.experiment_id],
            max_results=UI_MAX_RUNS,
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
        )
        if not children:
            return
        first = children[0].data
        axes = [
            key
            for key in first.params
            if key != "cell_id" and len({child.data.params.get(key) for child in children}) > 1
        ] or sorted(first.params)[:1]
        metrics = ["runs"] if "runs" in first.metrics else []
        for key in first.metrics:
            if {f"{key}_lo", f"{key}_hi"} <= set(first.metrics) and any(c.data.metrics.get(key, 0) for c in children):
                metrics += [key, f"{key}_lo", f"{key}_hi"]
        columns = [f"params.`{key}`" for key in axes] + [f"metrics.`{key}`" for key in metrics]  # axes first
        state = {
            "searchFilter": f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
            "orderByAsc": True,
            "orderByKey": f"params.`{axes[0]}`" if axes else "attributes.run_name",
            "selectedColumns": columns,
            "columnOrder": columns,
        }
        now = int(time.time() * 1000)
        view = {"name": "Cells of the latest run", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
        self.client.set_experiment_tag(self.experiment_id, VIEW_TAG + CELLS_VIEW, json.dumps(view))
        note = self.client.get_experiment(self.experiment_id).tags.get(NOTE_TAG, NOTE_START)
        if note.startswith(NOTE_START):
            self.client.set_experiment_tag(
                self.experiment_id,
                NOTE_TAG,
                (
                    f"{NOTE_START} one parent run per invocation, a child per cell; `landscape-report` rebuilds are runs of "
                    f"role `report`. **[Cells of the latest run]({view_path(self.experiment_id)})**: one row per cell, "
                    f"the swept axes and the metrics with an interval. Per-run rows: the Parquet dataset "
                    f"`{self.runs_dir}` (pandas, duckdb)."
                ),
            )

    def fail(self, reason: str) -> None:
        """Mark the parent to end FAILED (instead of FINISHED), ``reason`` as the tag ``landscape.stopped``."""
        self.failed_reason = reason
        self.client.set_tag(self.parent_run_id, "landscape.stopped", reason[:MAX_PARAM_LENGTH])

    def finish(self, status: str) -> None:
        """Close the parent run: FINISHED (FAILED after :meth:`fail`), FAILED or KILLED;
        when the invocation ended normally, first point the experiment's cells view at its children."""
        if self.parent_run_id is not None:
            if status == "FINISHED" and self.children:
                self.publish_view()
            if status == "FINISHED" and self.failed_reason:
                status = "FAILED"
            self.client.set_terminated(self.parent_run_id, status)


@contextmanager
def parent_run(
    tracker: SweepTracker | None, sweep: str, *, params: dict[str, Any], tags: dict[str, str]
) -> Iterator[None]:
    """The invocation's MLflow parent run around the block (nothing when ``tracker`` is None):
    named ``<sweep>@<UTC time>``; ended FINISHED, KILLED on an interrupt (re-raised), FAILED
    on any other exception (re-raised)."""
    if tracker is None:
        yield
        return
    tracker.start(
        run_name=f"{sweep}@{datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}", params=params, tags=tags
    )
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.finish(status)


def log_report(
    tracker: SweepTracker,
    *,
    sweep: str,
    results_dir: Path,
    params: dict[str, Any],
    table,
    series: dict[str, list[tuple[int, float]]],
    paths: list[Path],
    config_path: Path,
) -> str:
    """``landscape-report``'s run ``<sweep>-report@<UTC time>``, role ``report``, in the sweep's
    experiment beside its parents (one per rebuild: rebuilds compare like runs): ``params``
    (report settings, code version), tag ``landscape.sweep_run`` = the sweep's latest parent,
    metrics ``cells`` and ``runs``, ``series`` as histories, the ``table`` as an MLflow table,
    the report files (figures also as images) and the config as artifacts. Ends FINISHED,
    KILLED on an interrupt, FAILED on an error (both re-raised); returns the run's id."""
    parents = tracker._parents(sweep, str(results_dir))
    tags = {
        PARENT_TAG: "report",
        "sweep": sweep,
        "code_version": str(params.get("code_version", "")),
        **source_tags(),
        **({"landscape.sweep_run": parents[0].info.run_id} if parents else {}),
    }
    run = tracker.client.create_run(
        tracker.experiment_id, run_name=f"{sweep}-report@{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}", tags=tags
    )
    tracker.parent_run_id = run.info.run_id  # the log_* methods write to the invocation's run
    status = "FAILED"
    try:
        tracker._log(run.info.run_id, params={"sweep": sweep, "results_dir": str(results_dir), **params})
        if table is not None and not table.empty:
            tracker.log_parent_metrics(
                {"cells": len(table), "runs": int(table["runs"].sum()) if "runs" in table else None}
            )
            tracker.log_history(series)
            tracker.log_table(table, "report/table.json")
        tracker.log_artifacts(paths, artifact_path="report")
        tracker.log_artifacts([config_path], artifact_path="config")
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def source_tags() -> dict[str, str]:
    """Tags linking a run to its source checkout (for the MLflow UI)."""
    return {"mlflow.source.name": str(PROJECT_ROOT), "mlflow.source.type": "LOCAL"}

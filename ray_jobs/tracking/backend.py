"""Where the MLflow runs go: the tracking URI, a server's health check, the sqlite store
created atomically under a lock, and the tag names and limits the runs share
(:mod:`ray_jobs.tracking`)."""

from __future__ import annotations

import fcntl
import functools
import math
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ray_jobs.errors import STORAGE_ERRNOS, STORAGE_MESSAGES, ConfigError, StorageError

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
#: the id of the view of the latest invocation's parent with its cells nested under it:
#: the link a sweep's end and ``make ui`` print (:func:`latest_path`)
LATEST_VIEW = "landscape-latest"
#: what MLflow 3.17's UI needs in the address to open the model-training pages (runs table), not
#: GenAI's: its per-browser switch starts on GenAI, and the experiment's kind tag does not change it
ML_WORKFLOW = "workflowType=machine_learning"
#: the prefix of the metric a cell child logs per numeric grid axis (params are strings in MLflow:
#: ``axis/k`` sorts as a number in the runs table)
AXIS_METRIC = "axis/"
#: the experiment description (shown above the runs table) and how the service's own begins
NOTE_TAG, NOTE_START = "mlflow.note.content", "Landscape sweep:"


def view_path(experiment_id: str) -> str:
    """The UI address (after ``http://host:port/``) of the cells view, in the model-training
    workflow (MLflow 3.17's UI opens the GenAI one unless asked or switched in its sidebar)."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={CELLS_VIEW}&{ML_WORKFLOW}"


def runs_path(experiment_id: str, view: str | None = LATEST_VIEW) -> str:
    """The UI address (after ``http://host:port/``) of the experiment's runs table in the
    model-training workflow, in the saved view ``view`` (None: the table as the browser left it)."""
    shared = f"viewStateShareKey={view}&" if view else ""
    return f"#/experiments/{experiment_id}/runs?{shared}{ML_WORKFLOW}"


def latest_path(experiment_id: str) -> str:
    """The UI address of the view ``Latest run and its cells`` (:data:`LATEST_VIEW`): the
    latest invocation's parent with its cells nested under it (its expander lists them; MLflow
    3.17 keeps expanded rows per browser, not in a shared view), the swept axes and the metrics
    with an interval as columns; the link printed at a sweep's end and by ``make ui``."""
    return runs_path(experiment_id, LATEST_VIEW)


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


def store_location(uri: str) -> str:
    """What a storage fault of the tracking store ``uri`` names: the sqlite file, else the URI."""
    return uri.split("sqlite:///", 1)[1] if uri.startswith("sqlite:///") else uri


def _naming(function: Any, store: str, artifacts: str) -> Any:
    """``function`` raising :class:`~ray_jobs.errors.StorageError` for a storage fault: sqlite's
    messages (:data:`~ray_jobs.errors.STORAGE_MESSAGES`, which name no file) naming ``store``,
    a file-system fault that names no file naming ``artifacts``; other exceptions unchanged."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS or exc.filename:
                raise
            raise StorageError(artifacts, exc.strerror or STORAGE_ERRNOS[exc.errno]) from exc
        except Exception as exc:
            found = next((message for message in STORAGE_MESSAGES if message in str(exc)), None)
            if found is None:
                raise
            raise StorageError(store, f"{found} (the MLflow store)") from exc

    return call


class NamedStoreClient:
    """An MlflowClient on ``tracking_uri`` (every method and attribute passed through) whose
    storage faults name their path (:func:`_naming`): ``store`` (the sqlite file, or the
    server's URI) for sqlite's "database or disk is full", ``artifacts`` (the artifact location)
    for a file-system fault naming no file (an artifact copied by ``shutil``). Its creation is
    covered too: MLflow creates and migrates a sqlite store when the client is made."""

    def __init__(self, tracking_uri: str, store: str, artifacts: str | None = None):
        from mlflow.tracking import MlflowClient

        self._store, self._artifacts = store, artifacts or store
        self._client = _naming(MlflowClient, self._store, self._artifacts)(tracking_uri=tracking_uri)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        return _naming(attribute, self._store, self._artifacts) if callable(attribute) else attribute


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
        try:  # creating the client creates the schema and runs every migration
            NamedStoreClient(f"sqlite:///{staging}", str(database)).search_experiments(max_results=1)
        except StorageError:  # a full disk: its space back (the message names the database)
            _dispose_engines()
            for partial in results_dir.glob(f"{staging.name}*"):
                partial.unlink(missing_ok=True)
            raise
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

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
cells already logged there are not logged twice, and a child an earlier driver left RUNNING
or without metrics (a full disk between MLflow's calls) is completed, not created again;
children left RUNNING under parents not continued are marked KILLED. MLflow's storage
faults (sqlite's "database or disk is full") name the sqlite file or the artifact folder.

UI: an invocation that ends normally saves the experiment's view ``Cells of the latest run``
(its children flat, the swept axes and the metrics with an interval as columns; :func:`view_path`),
and ``Latest run and its cells`` (the parent with its cells nested under it;
:func:`latest_path`: the link printed at a sweep's end and by ``make ui``, in the model-training
workflow, :mod:`ray_jobs.tracking.links`), linked from the experiment's description. A cell's
numeric grid axes are also metrics ``axis/<name>`` (they sort as numbers). Over
:data:`UI_MAX_RUNS` children: one warning pointing at the Parquet dataset. ``landscape-report``
logs a run of its own (:func:`log_report`).

The modules: ``backend.py`` (tracking URI, server check, the sqlite store, tag names),
``tracker.py`` (:class:`SweepTracker`), ``runs.py`` (:func:`parent_run`, :func:`log_report`),
``links.py`` (the UI links printed).
"""

from __future__ import annotations

from ray_jobs.tracking.backend import (
    CELLS_VIEW,
    HTTP_DEFAULTS,
    KIND_TAG,
    LATEST_VIEW,
    MAX_PARAM_LENGTH,
    MODEL_TRAINING,
    NOTE_START,
    NOTE_TAG,
    PARENT_TAG,
    RESUMED_TAG,
    SERVER_TIMEOUT_S,
    UI_MAX_RUNS,
    VIEW_TAG,
    check_server,
    default_tracking_uri,
    ensure_sqlite_store,
    latest_path,
    runs_path,
    view_path,
)
from ray_jobs.tracking.runs import log_report, parent_run, source_tags
from ray_jobs.tracking.tracker import SweepTracker

__all__ = [
    "CELLS_VIEW",
    "HTTP_DEFAULTS",
    "KIND_TAG",
    "LATEST_VIEW",
    "MAX_PARAM_LENGTH",
    "MODEL_TRAINING",
    "NOTE_START",
    "NOTE_TAG",
    "PARENT_TAG",
    "RESUMED_TAG",
    "SERVER_TIMEOUT_S",
    "UI_MAX_RUNS",
    "VIEW_TAG",
    "SweepTracker",
    "check_server",
    "default_tracking_uri",
    "ensure_sqlite_store",
    "latest_path",
    "log_report",
    "parent_run",
    "runs_path",
    "source_tags",
    "view_path",
]

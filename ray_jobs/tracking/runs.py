"""The runs around an invocation: its parent run as a context (:func:`parent_run`), the run
of a ``landscape-report`` rebuild (:func:`log_report`) and the source tags of both
(:mod:`ray_jobs.tracking`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ray_jobs.config import PROJECT_ROOT
from ray_jobs.tracking.backend import PARENT_TAG
from ray_jobs.tracking.tracker import SweepTracker


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
        if status == "FINISHED":
            tracker.finish(status)
        else:
            _finish_quietly(tracker, status)


def _finish_quietly(tracker: SweepTracker, status: str) -> None:
    """Close the parent as KILLED / FAILED while an interrupt or an error is on its way out:
    a failure to close it (an interrupt that landed inside an MLflow write can leave sqlite
    locked past its busy timeout; seen under load in tests/test_search_kills.py) must not
    replace that exception, and MLflow's own traceback of it is not printed. The parent then
    stays RUNNING, and the next invocation of the sweep continues it
    (:meth:`SweepTracker.start`); one warning line says so."""
    store_log = logging.getLogger("mlflow.store.db.utils")
    level = store_log.level
    store_log.setLevel(logging.CRITICAL)
    try:
        tracker.finish(status)
    except Exception as exc:  # any failure here: the run's own exception wins
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"warning: MLflow parent run {tracker.parent_run_id} not marked {status} ({reason[:200]}); "
            "the next run of this sweep continues it",
            file=sys.stderr,
        )
    finally:
        store_log.setLevel(level)


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

"""MLflow tracking: one parent run per sweep invocation, one child run per cell.

The parent holds the sweep's parameters (sweep, experiment, grid, seeds, code version),
progress metrics and, at the end, the report files and the resolved config as artifacts.
Each child holds its cell's parameters (the same keys as the Parquet columns) and the
cell's aggregate metrics (the report's column names: ``frac_spurious``,
``mean_objective_spurious``, ``n_families``...). Per-run rows live in Parquet only.

Default store: ``sqlite:///<results_dir>/mlflow.db`` with artifacts in
``<results_dir>/mlartifacts``; ``tracking.uri=http://host:port`` uses a server.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from ray_jobs.config import PROJECT_ROOT

PARENT_TAG = "landscape.role"
MAX_PARAM_LENGTH = 6000


def default_tracking_uri(results_dir: Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


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

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            self.experiment_id = self.client.create_experiment(experiment_name, artifact_location=artifact_location)
        else:
            self.experiment_id = experiment.experiment_id
        self.parent_run_id: str | None = None

    @classmethod
    def from_config(cls, cfg, results_dir: Path) -> "SweepTracker | None":
        """The tracker the config asks for, or None when ``tracking.enabled`` is false."""
        if not cfg.tracking.enabled:
            return None
        uri = cfg.tracking.uri or default_tracking_uri(results_dir)
        name = cfg.tracking.experiment_name or f"landscape-{cfg.sweep.name}"
        artifacts = (Path(results_dir).resolve() / "mlartifacts" / name).as_uri() if uri.startswith("sqlite:") else None
        return cls(uri, name, artifacts)

    def _log(self, run_id: str, params: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        param_list = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in (params or {}).items()]
        metric_list = [Metric(key, number, now, 0) for key, value in (metrics or {}).items()
                       if (number := _metric_value(value)) is not None]
        self.client.log_batch(run_id, metrics=metric_list, params=param_list)

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Open the parent run of this invocation."""
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
        return run.info.run_id

    def log_parent_metrics(self, metrics: dict[str, Any]) -> None:
        self._log(self.parent_run_id, metrics=metrics)

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str) -> None:
        for path in paths:
            self.client.log_artifact(self.parent_run_id, str(path), artifact_path=artifact_path)

    def finish(self, status: str) -> None:
        """Close the parent run: FINISHED, FAILED or KILLED."""
        if self.parent_run_id is not None:
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

"""The parent / child MLflow runs of one sweep invocation (:class:`SweepTracker`): the parent
opened or continued, a child per cell (or trial), the parent's metrics, tables, artifacts,
and the experiment's view of the latest run's cells (:mod:`ray_jobs.tracking`)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ray_jobs.tracking.backend import (
    AXIS_METRIC,
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
    UI_MAX_RUNS,
    VIEW_TAG,
    NamedStoreClient,
    _metric_value,
    check_server,
    default_tracking_uri,
    ensure_sqlite_store,
    latest_path,
    store_location,
    view_path,
)

#: the package's logger (its warnings keep the name they had before the split into modules)
logger = logging.getLogger("ray_jobs.tracking")


class SweepTracker:
    """Parent/child MLflow runs of one sweep invocation (the MlflowClient API, no global state)."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_location: str | None):
        import mlflow.tracking  # noqa: F401

        for name in ("mlflow", "alembic"):  # after the import: mlflow configures its logger on import
            logging.getLogger(name).setLevel(logging.WARNING)
        # it logs every database error with its traceback before raising it; the raise is reported
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

        self.tracking_uri = tracking_uri
        artifacts = artifact_location.removeprefix("file://") if artifact_location else None
        self.client = NamedStoreClient(tracking_uri, store_location(tracking_uri), artifacts)
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
        self.unfinished: dict[str, str] = {}  # cell id -> its child an earlier invocation left unfinished
        self.failed_reason: str | None = None
        self.children = 0  # child runs under the parent (a continued parent's included)
        self.where = ("", "")  # (sweep, results_dir) of the invocation, for the warning
        self.warned_many = False
        self.grid_axes: set[str] = set()  # sweep.grid's axes (from_config): their numeric params also as metrics

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
        tracker = cls(uri, name, artifacts)
        tracker.grid_axes = set(cfg.sweep.get("grid") or {})
        return tracker

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

        Parents left RUNNING are first marked KILLED, and so are children left RUNNING under
        parents not continued. A continued parent's children that are not FINISHED with
        metrics (a driver stopped between creating one and ending it: a full disk) are
        completed by :meth:`log_cell` when their cell is logged: no second child."""
        from mlflow.entities import RunStatus

        sweep, results_dir = tags.get("sweep", ""), str(params.get("results_dir", ""))
        self.where = (sweep, results_dir)
        self.parent_run_id, self.logged_cells, self.unfinished, self.children = None, set(), {}, 0
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
        self._end_unfinished_children(sweep, {run.info.run_id for run in parents} - {self.parent_run_id})
        if self.parent_run_id is not None:
            children = self.client.search_runs(
                [self.experiment_id],
                max_results=50000,
                filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
            )
            for child in children:  # finished: status FINISHED and metrics (an earlier driver may have stopped
                # between creating the child, logging its params, its metrics and ending it: a full disk)
                cell = child.data.tags.get("cell_id")
                if cell is not None and child.info.status == "FINISHED" and child.data.metrics:
                    self.logged_cells.add(cell)
                    self.unfinished.pop(cell, None)
                elif cell is not None and cell not in self.logged_cells:
                    self.unfinished[cell] = child.info.run_id  # log_cell completes it
            self.children = len(children)
            return self.parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={PARENT_TAG: "sweep", **tags})
        self.parent_run_id = run.info.run_id
        self._log(self.parent_run_id, params=params)
        return self.parent_run_id

    def _end_unfinished_children(self, sweep: str, parents: set[str]) -> None:
        """Mark KILLED (tag ``landscape.ended_by``) the children left RUNNING under ``parents``,
        earlier parents of the sweep this invocation does not continue (their cells get a
        child under this invocation's parent)."""
        if not parents:
            return
        query = f"attributes.status = 'RUNNING' and tags.sweep = '{sweep}'"
        for run in self.client.search_runs([self.experiment_id], filter_string=query, max_results=50000):
            if run.data.tags.get("mlflow.parentRunId") in parents:
                self.client.set_tag(run.info.run_id, "landscape.ended_by", "a later invocation (its driver was gone)")
                self.client.set_terminated(run.info.run_id, "KILLED")

    def log_cell(
        self,
        run_name: str,
        params: dict[str, Any],
        metrics: dict[str, Any],
        tags: dict[str, str],
        *,
        kind: str = "cell",
    ) -> str:
        """A finished child run under the parent: one cell of a sweep, or one trial of a search (``kind``).

        Each numeric grid axis among ``params`` (``sweep.grid``'s; for a trial also the values its
        name gives as ``axis=value``: its setting and the searched axes) is also logged as the
        metric ``axis/<name>``, which sorts as a number (MLflow params are strings)."""
        named = {token.split("=", 1)[0] for token in run_name.split() if "=" in token} if kind == "trial" else set()
        axes = self.grid_axes | named
        metrics = {
            **metrics,
            **{
                f"{AXIS_METRIC}{key}": value
                for key, value in params.items()
                if key in axes and isinstance(value, int | float) and not isinstance(value, bool)
            },
        }
        run_id = self.unfinished.pop(tags["cell_id"], None) if "cell_id" in tags else None
        if run_id is None:  # else: the cell's child an earlier invocation left unfinished, completed here
            run_id = self.client.create_run(
                self.experiment_id,
                run_name=run_name,
                tags={"mlflow.parentRunId": self.parent_run_id, PARENT_TAG: kind, **tags},
            ).info.run_id
            self.children += 1
        self._log(run_id, params=params, metrics=metrics)  # params already there: the same values (allowed)
        self.client.set_terminated(run_id, "FINISHED")
        if "cell_id" in tags:
            self.logged_cells.add(tags["cell_id"])
        self.warn_many_runs(self.children)
        return run_id

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

    @property
    def parent(self) -> str:
        """The id of the run the ``log_*`` methods write to (the parent; :func:`log_report`'s own run)."""
        if self.parent_run_id is None:
            raise RuntimeError("no MLflow parent run: start() it first")
        return self.parent_run_id

    def log_parent_metrics(self, metrics: dict[str, Any]) -> None:
        self._log(self.parent, metrics=metrics)

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
            self.client.log_batch(self.parent, metrics=metrics[start : start + 1000])

    def log_table(self, table, artifact_file: str) -> None:
        """The report table as an MLflow table artifact of the parent (the UI's table view);
        once per parent (MLflow appends to an existing table artifact)."""
        folder = str(Path(artifact_file).parent)
        if any(item.path == artifact_file for item in self.client.list_artifacts(self.parent, folder)):
            return
        self.client.log_table(self.parent, data=table, artifact_file=artifact_file)

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str, *, run_id: str | None = None) -> None:
        """The files as artifacts of the parent (or of run ``run_id``) under ``artifact_path``; PNG
        figures also as MLflow images (key = file name without suffix, step 0, once per run: the
        run's charts show them)."""
        run_id = run_id or self.parent
        paths = [Path(path) for path in paths]
        for path in paths:
            self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)
        figures = [path for path in paths if path.suffix.lower() == ".png"]
        if figures:
            from PIL import Image

            logged = {Path(item.path).name.split("+step+")[0] for item in self.client.list_artifacts(run_id, "images")}
            for path in (path for path in figures if path.stem not in logged):
                with Image.open(path) as image:
                    self.client.log_image(run_id, image.convert("RGB"), key=path.stem, step=0, synchronous=True)

    def log_cell_artifacts(self, cell_paths: dict[str, list[Path]], artifact_path: str) -> None:
        """Each cell's files (cell id -> paths) as artifacts of that cell's child under the parent
        (:meth:`log_artifacts`); a cell without a child under this parent is skipped."""
        children = self.client.search_runs(
            [self.experiment_id], max_results=50000, filter_string=f"tags.mlflow.parentRunId = '{self.parent}'"
        )
        child_of = {run.data.tags["cell_id"]: run.info.run_id for run in children if "cell_id" in run.data.tags}
        for cell_id, paths in cell_paths.items():
            if cell_id in child_of and paths:
                self.log_artifacts(paths, artifact_path, run_id=child_of[cell_id])

    def publish_view(self) -> None:
        """Save the experiment's view ``Cells of the latest run`` (:data:`CELLS_VIEW`) of the
        parent's children: flat (ordered by the first swept axis; by date, MLflow nests them
        under their collapsed parent), as columns in this order the params that differ between
        them, ``runs`` and each metric with an interval (``m``, ``m_lo``, ``m_hi``) not zero in
        every child; the view ``Latest run and its cells`` (:data:`LATEST_VIEW`): every run by
        date, the cells nested under their parent (its expander lists them), the same columns; and the
        experiment's description (unless a user wrote one) links both."""
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
        latest = {  # every run by date: the UI nests the cells under their parent (latest_path); the UI
            # drops runsExpanded from a shared view (MLflow 3.17), so the parent opens collapsed
            "searchFilter": "",
            "orderByKey": "attributes.start_time",
            "orderByAsc": False,
            "selectedColumns": columns,
            "columnOrder": columns,
        }
        view = {**view, "name": "Latest run and its cells", "state": json.dumps(latest)}
        self.client.set_experiment_tag(self.experiment_id, VIEW_TAG + LATEST_VIEW, json.dumps(view))
        note = self.client.get_experiment(self.experiment_id).tags.get(NOTE_TAG, NOTE_START)
        if note.startswith(NOTE_START):
            self.client.set_experiment_tag(
                self.experiment_id,
                NOTE_TAG,
                (
                    f"{NOTE_START} one parent run per invocation, a child per cell; "
                    "`landscape-report` rebuilds are runs of "
                    f"role `report`. **[Cells of the latest run]({view_path(self.experiment_id)})**: one row per cell, "
                    f"the swept axes and the metrics with an interval; "
                    f"**[Latest run and its cells]({latest_path(self.experiment_id)})**: its cells under the parent. "
                    f"Numeric axes also as metrics `axis/<name>` (sortable). Per-run rows: the Parquet dataset "
                    f"`{self.runs_dir}` (pandas, duckdb)."
                ),
            )

    def fail(self, reason: str) -> None:
        """Mark the parent to end FAILED (instead of FINISHED), ``reason`` as the tag ``landscape.stopped``."""
        self.failed_reason = reason
        self.client.set_tag(self.parent, "landscape.stopped", reason[:MAX_PARAM_LENGTH])

    def finish(self, status: str) -> None:
        """Close the parent run: FINISHED (FAILED after :meth:`fail`), FAILED or KILLED;
        when the invocation ended normally, first point the experiment's cells view at its children."""
        if self.parent_run_id is not None:
            if status == "FINISHED" and self.children:
                self.publish_view()
            if status == "FINISHED" and self.failed_reason:
                status = "FAILED"
            self.client.set_terminated(self.parent_run_id, status)

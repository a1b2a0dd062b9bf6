"""What every run of the service shares: the results store, the saved config, the MLflow
parent run, recording finished units, and building the report.

A driver (:mod:`ray_jobs.sweep`, :mod:`ray_jobs.search.driver`) validates the config first
(nothing is written before), then opens a :class:`Session` (a context manager), which
takes the sweep's driver lock, unless the driver took it first (:meth:`ResultsStore.claim`)
(a second driver on the same sweep is refused; the lock is
released on exit, or by the kernel when the driver dies), prepares
``<results_dir>/<sweep>/`` (removing staging files of a killed driver) and saves the
resolved ``config.yaml``. The driver is the single writer of the results: each finished
unit becomes one Parquet fragment (:meth:`Session.record`: the unit's rows, or one
``error`` row per seed of a failed task), and at the end :meth:`Session.report` aggregates
every fragment of the sweep and attaches the report to the MLflow parent run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from rich.console import Console
from rich.markup import escape

from ray_jobs.config import to_yaml
from ray_jobs.experiments.base import Experiment
from ray_jobs.experiments.registry import get_layout
from ray_jobs.provenance import code_version
from ray_jobs.report import Report, build_report
from ray_jobs.store import ResultsStore, error_table, unit_table
from ray_jobs.tracking import SweepTracker, parent_run, source_tags
from ray_jobs.validate import resolve_reference, resolve_results_dir

if TYPE_CHECKING:
    from ray_jobs.execution import UnitOutcome


class Session:
    """One invocation's results: the store of sweep ``sweep`` under ``cfg.results_dir``, the
    MLflow tracker (None when ``tracking.enabled`` is false), the code version of its rows,
    the experiment's report layout with the ``report`` settings."""

    def __init__(self, cfg, experiment: Experiment, sweep: str, console: Console, *, store: ResultsStore | None = None):
        self.cfg, self.experiment, self.sweep, self.console = cfg, experiment, sweep, console
        self.layout = get_layout(experiment, cfg.report)
        self.results_dir = resolve_results_dir(cfg)
        self.reference = resolve_reference(cfg)
        self.store = store or ResultsStore(self.results_dir, sweep)  # (given: claimed by the driver already)
        self.store.prepare()
        try:
            self.store.save_text(self.store.config_path, to_yaml(cfg))
            self.version = code_version()
            self.tracker = SweepTracker.from_config(cfg, self.results_dir)
        except BaseException:
            self.store.close()
            raise
        self.units_failed = 0

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the sweep's driver lock."""
        self.store.close()

    @property
    def parent_run_id(self) -> str | None:
        return self.tracker.parent_run_id if self.tracker is not None else None

    @contextmanager
    def parent_run(self, params: dict[str, Any], tags: dict[str, str] | None = None) -> Iterator[None]:
        """The invocation's MLflow parent run around the block (FINISHED, KILLED on an
        interrupt, FAILED on an error); ``params`` plus the code version and results location."""
        params = {**params, "code_version": self.version, "results_dir": str(self.results_dir)}
        tags = {"sweep": self.sweep, "code_version": self.version, **(tags or {}), **source_tags()}
        with parent_run(self.tracker, self.sweep, params=params, tags=tags):
            yield

    def record(
        self, outcome: UnitOutcome, *, columns: dict[str, tuple[pa.DataType, Any]] | None = None, context: str = ""
    ) -> pa.Table:
        """Write the unit's fragment: its rows, or ``error`` rows when its task failed (the
        failure is printed, naming the unit and ``context``); ``columns`` (name -> (type,
        value)) are added to every row. Returns the rows written."""
        unit = outcome.unit
        fragment = None
        if outcome.error is None:  # the task built and encoded the rows; the same rows again, from its columns
            fragment, records = outcome.fragment, outcome.records
            assert records is not None  # a task that did not fail returns its records
            table = unit_table(
                unit,
                {name: records.column(name) for name in records.column_names},
                constants=outcome.where,
                experiment=self.experiment.name,
                column_types=self.experiment.columns,
                sweep=self.sweep,
                code_version=self.version,
            )
        else:
            self.units_failed += 1
            where = context or f"cell {unit.cell.cell_id}"
            self.console.print(
                f"[red]unit {unit.unit_id} ({escape(where)}, seeds {unit.seed_lo}..{unit.seed_hi - 1}) "
                f"failed:[/] {escape(outcome.error)}"
            )
            table = error_table(
                unit,
                outcome.error,
                experiment=self.experiment.name,
                column_types=self.experiment.columns,
                sweep=self.sweep,
                code_version=self.version,
            )
        for name, (kind, value) in (columns or {}).items():
            table = table.append_column(pa.field(name, kind), pa.array([value] * table.num_rows, kind))
            fragment = None  # rows changed: encoded again
        self.store.write_fragment(unit.unit_id, table if fragment is None else fragment)
        return table

    def build_report(self) -> Report:
        """The report over every fragment of the sweep (report.* settings of the config)."""
        report = self.cfg.report
        return build_report(
            self.store,
            self.layout,
            sweep=self.sweep,
            confidence=float(report.confidence),
            reference=self.reference,
            figure=bool(report.figure),
        )

    def finish(
        self,
        *,
        metrics: dict[str, Any],
        report_paths: list[Path],
        stopped: str | None = None,
        table=None,
        cell_paths: dict[str, list[Path]] | None = None,
    ) -> None:
        """Log the invocation's metrics, its report files and the config on the parent run,
        and, given the report ``table``, the table as an MLflow table and the layout's
        headline series as metric histories; ``cell_paths`` (cell id -> files) on the cells'
        children; ``stopped`` (why the sweep stopped early) ends the parent FAILED with that
        reason as a tag."""
        if self.tracker is None:
            return
        if stopped:
            self.tracker.fail(stopped)
        self.tracker.log_parent_metrics(metrics)
        if table is not None and not table.empty:
            self.tracker.log_history(self.layout.headline_series(table))
            self.tracker.log_table(table, "report/table.json")
        self.tracker.log_artifacts(report_paths, artifact_path="report")
        self.tracker.log_artifacts([self.store.config_path], artifact_path="config")
        if cell_paths:
            self.tracker.log_cell_artifacts(cell_paths, artifact_path="report")

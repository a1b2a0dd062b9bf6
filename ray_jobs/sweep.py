"""The grid driver: validate -> plan -> preflight -> skip done units -> execute -> record -> report.

Built on :class:`ray_jobs.session.Session` (driver lock, store, config, MLflow parent,
recording, report) and :mod:`ray_jobs.execution` (the Ray loop). MLflow gets a child run
per cell as soon as the cell's last unit is recorded; the cells recorded before this
invocation (a resume) get theirs from the report's table, once it is built. Ray is started
only when there is something to run, and before anything is written, so an unreachable
cluster or resources no node offers are refused with nothing written. With ``fail_fast.enabled``, the sweep
stops scheduling when too many of its first units failed. After the units, before the
report, the fragments are compacted (``compaction``: :mod:`ray_jobs.compaction`).
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
from omegaconf import OmegaConf
from rich.console import Console

from ray_jobs.compaction import compact
from ray_jobs.execution import Timings, ray_cluster, run_units
from ray_jobs.plan import Cell, SweepPlan, WorkUnit, canonical_json, plan_sweep
from ray_jobs.report import Report, project_rows, report_rows, rows_from_tables
from ray_jobs.report.aggregate import table_from_rows
from ray_jobs.session import Session
from ray_jobs.store import ResultsStore
from ray_jobs.validate import preflight, resolve_results_dir, validate


@dataclass
class SweepResult:
    """What one invocation did."""

    plan: SweepPlan
    results_dir: Path
    units_scheduled: int
    units_skipped: int
    units_failed: int
    report: Report
    parent_run_id: str | None
    wall_s: float
    stopped: str | None = None  # why the sweep stopped scheduling early (fail_fast), None when it ran everything
    timings: Timings | None = None  # phases of the invocation (ray_jobs.execution.timing)


class _CellTracker:
    """Logs a cell's MLflow child run once all of the cell's units of the plan are recorded.

    The child's metrics are the report's aggregation of the cell's rows: those this
    invocation recorded, held in memory (:func:`~ray_jobs.report.project_rows`: no vector
    column the report does not read) only until the cell is logged, and those of units
    recorded before it (a resumed sweep), read from the store. Nothing is held when
    tracking is off."""

    def __init__(self, session: Session, plan: SweepPlan):
        self.session, self.plan = session, plan
        self.units: dict[str, list[str]] = {}  # cell id -> its unit ids (one pass over the plan)
        for unit in plan.units:
            self.units.setdefault(unit.cell.cell_id, []).append(unit.unit_id)
        self.recorded: dict[str, dict[str, pa.Table]] = {}  # cell id -> unit id -> its rows, until logged

    def add(self, unit: WorkUnit, table: pa.Table) -> None:
        """Hold the rows of a unit just recorded until its cell is logged."""
        tracker = self.session.tracker
        if tracker is not None and unit.cell.cell_id not in tracker.logged_cells:
            self.recorded.setdefault(unit.cell.cell_id, {})[unit.unit_id] = project_rows(table, self.session.layout)

    def log(self, cell: Cell, row: dict | None = None) -> None:
        """Log the cell's child: ``row``, its row of the sweep's report table, when given,
        else the aggregation of its rows."""
        session = self.session
        recorded = self.recorded.pop(cell.cell_id, {})
        if session.tracker is None or cell.cell_id in session.tracker.logged_cells:
            return
        if row is None:
            earlier = [unit_id for unit_id in self.units[cell.cell_id] if unit_id not in recorded]
            rows = rows_from_tables([recorded[unit_id] for unit_id in sorted(recorded)], session.layout)
            if earlier:
                rows = pd.concat([report_rows(session.store, session.layout, earlier), rows], ignore_index=True)
            row = (
                table_from_rows(
                    rows, session.layout, confidence=float(session.cfg.report.confidence), reference=session.reference
                )
                .iloc[0]
                .to_dict()
            )
        metrics = {
            key: value for key, value in row.items() if key not in cell.params and key not in ("cell_id", "experiment")
        }
        params = {"sweep": self.plan.sweep, "cell_id": cell.cell_id, **cell.params}
        axes = [f"{axis}={cell.params[axis]}" for axis in session.layout.table_axes if axis in cell.params]
        session.tracker.log_cell(
            " ".join(axes) or cell.cell_id, params, metrics, {"cell_id": cell.cell_id, "sweep": self.plan.sweep}
        )


def units_to_run(store: ResultsStore, plan: SweepPlan, *, retry_errors: bool) -> list:
    """The units of ``plan`` without a fragment (and, with ``retry_errors``, those with error rows)."""
    done = store.completed_unit_ids()
    if retry_errors:
        done -= store.unit_ids_with_errors()
    return [unit for unit in plan.units if unit.unit_id not in done]


def fail_fast_reason(fail_fast, finished: int, failed: int) -> str | None:
    """Why to stop scheduling, once the first ``fail_fast.first_units`` units finished, if
    more than ``max_failed_fraction`` of them failed; else None."""
    if not fail_fast.enabled or finished != int(fail_fast.first_units):
        return None
    if failed > float(fail_fast.max_failed_fraction) * finished:
        return (
            f"fail_fast: {failed} of the first {finished} units failed (more than "
            f"{float(fail_fast.max_failed_fraction):.0%}); pending units cancelled"
        )
    return None


def compact_after_sweep(store: ResultsStore, plan: SweepPlan, compaction, console: Console) -> None:
    """Compact the sweep's fragments (:mod:`ray_jobs.compaction`) when ``compaction.after_sweep``
    and at least ``compaction.min_fragments`` of them are loose."""
    if not compaction.after_sweep or len(store.fragment_paths()) < int(compaction.min_fragments):
        return
    result = compact(
        store,
        unit_cells={unit.unit_id: unit.cell.cell_id for unit in plan.units},
        max_rows=int(compaction.max_rows),
        row_group_rows=int(compaction.row_group_rows),
    )
    console.print(result.line())


def run_sweep(cfg, console: Console | None = None, *, timings: Timings | None = None) -> SweepResult:
    """Run the sweep ``cfg`` (composed by :func:`ray_jobs.config.compose_config`).

    Raises ConfigError (nothing written) when the config is invalid, the results directory
    unwritable or in use by another driver, the tracking server or cluster unreachable, or
    the resources infeasible; StorageError when writing results fails mid-sweep;
    KeyboardInterrupt when interrupted (what was recorded stays; the same command resumes).
    Its phases are added to ``timings`` (the caller's, holding the compose step, or a new one).
    """
    console = console or Console(stderr=True)
    timings = timings if timings is not None else Timings()
    started = time.monotonic()
    with timings.phase("plan"):
        experiment, cell_params = validate(cfg)
        plan = plan_sweep(cfg, experiment.name, cell_params)
        preflight(cfg)
        retry_errors = bool(cfg.retry_errors)
    with ExitStack() as stack:
        claimed = ResultsStore(resolve_results_dir(cfg), plan.sweep)
        stack.callback(claimed.unclaim)
        with timings.phase("session_open"):
            claimed.claim()  # the driver lock first: a second driver is refused before Ray starts
        with timings.phase("plan"):
            pending = units_to_run(claimed, plan, retry_errors=retry_errors)
        cluster: list[str] = []

        def start_ray() -> str:
            if not cluster:
                ray = timings.around(
                    ray_cluster(cfg.cluster, console, resources=cfg.resources), enter="ray_start", leave="ray_stop"
                )
                cluster.append(stack.enter_context(ray))
            return cluster[0]

        if pending:
            start_ray()  # before anything is written: a cluster or resources that cannot serve fail here
        with timings.phase("session_open"):
            session = stack.enter_context(Session(cfg, experiment, plan.sweep, console, store=claimed))
        store = session.store
        with timings.phase("plan"):
            todo = units_to_run(store, plan, retry_errors=retry_errors)  # again, once damaged files are moved aside
        console.print(
            f"[bold]{plan.sweep}[/]: {len(plan.cells)} cells, {len(plan.units)} units, {plan.runs} runs; "
            f"{len(plan.units) - len(todo)} units already recorded, {len(todo)} to run. "
            f"Results: {store.sweep_dir}"
        )

        cells = _CellTracker(session, plan)
        remaining = Counter(unit.cell.cell_id for unit in todo)
        params = {
            "sweep": plan.sweep,
            "experiment": experiment.name,
            "cells": len(plan.cells),
            "units": len(plan.units),
            "seeds": int(cfg.sweep.seeds),
            "seed_start": int(cfg.sweep.get("seed_start", 0)),
            "chunk_size": int(cfg.resources.chunk_size),
            "grid": canonical_json(OmegaConf.to_container(cfg.sweep.grid, resolve=True)),
        }
        stopped = None
        mlflow = timings.stopwatch("mlflow")
        with session.parent_run(params):
            mlflow.lap()
            if todo:
                console.print(f"Scheduling {len(todo)} units on {start_ray()}.")
                finished = 0
                loop = run_units(
                    todo,
                    experiment.name,
                    cfg.resources,
                    console,
                    sweep=plan.sweep,
                    code_version=session.version,
                    description=plan.sweep,
                    timings=timings,
                )
                with closing(loop) as outcomes:
                    for outcome in outcomes:  # leaving the block closes the loop: pending tasks dropped
                        with timings.phase("record"):
                            cells.add(outcome.unit, session.record(outcome))
                        timings.units_recorded += 1
                        finished += 1
                        remaining[outcome.unit.cell.cell_id] -= 1
                        if remaining[outcome.unit.cell.cell_id] == 0:
                            with timings.phase("mlflow"):
                                cells.log(outcome.unit.cell)
                        stopped = fail_fast_reason(cfg.fail_fast, finished, session.units_failed)
                        if stopped:
                            console.print(f"[red]{stopped}[/]")
                            break
            with timings.phase("compact"):
                compact_after_sweep(session.store, plan, cfg.compaction, console)
            with timings.phase("report"):
                report = session.build_report()
            with timings.phase("mlflow"):
                reported = {row["cell_id"]: row for row in report.table.to_dict("records")}
                for cell in plan.cells:  # cells recorded by earlier invocations: their rows of the report
                    if remaining[cell.cell_id] == 0 and cell.cell_id in reported:
                        cells.log(cell, reported[cell.cell_id])
                wall_s = time.monotonic() - started
                session.finish(
                    metrics={
                        "units_scheduled": len(todo),
                        "units_skipped": len(plan.units) - len(todo),
                        "units_failed": session.units_failed,
                        "runs": plan.runs,
                        "wall_s": wall_s,
                        **timings.metrics(),
                    },
                    report_paths=report.paths,
                    stopped=stopped,
                    table=report.table,
                    cell_paths=report.cell_paths,
                )
            mlflow.restart()
        mlflow.lap()  # the parent run closed
    return SweepResult(
        plan=plan,
        results_dir=session.results_dir,
        units_scheduled=len(todo),
        units_skipped=len(plan.units) - len(todo),
        units_failed=session.units_failed,
        report=report,
        parent_run_id=session.parent_run_id,
        wall_s=wall_s,
        stopped=stopped,
        timings=timings,
    )

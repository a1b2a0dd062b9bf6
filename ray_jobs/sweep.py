"""The grid driver: validate -> plan -> skip done units -> execute -> record -> report.

Built on :class:`ray_jobs.session.Session` (store, config, MLflow parent, recording, report)
and :mod:`ray_jobs.execution` (the Ray loop). MLflow gets a child run per cell as soon as
the cell's last unit is recorded. Ray is started only when there is something to run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console

from ray_jobs.execution import ray_cluster, run_units
from ray_jobs.plan import Cell, SweepPlan, canonical_json, plan_sweep
from ray_jobs.report import Report
from ray_jobs.report.aggregate import table_from_rows
from ray_jobs.session import Session
from ray_jobs.validate import validate


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


class _CellTracker:
    """Logs a cell's MLflow child run once all of the cell's units of the plan are recorded."""

    def __init__(self, session: Session, plan: SweepPlan):
        self.session, self.plan = session, plan

    def log(self, cell: Cell) -> None:
        session = self.session
        if session.tracker is None:
            return
        rows = session.store.read(unit.unit_id for unit in self.plan.units_of(cell.cell_id))
        table = table_from_rows(rows, session.experiment, confidence=float(session.cfg.report.confidence),
                                family_tol=float(session.cfg.report.family_tol), reference=session.reference)
        metrics = {key: value for key, value in table.iloc[0].to_dict().items()
                   if key not in cell.params and key not in ("cell_id", "experiment")}
        params = {"sweep": self.plan.sweep, "cell_id": cell.cell_id, **cell.params}
        axes = [f"{axis}={cell.params[axis]}" for axis in session.experiment.table_axes if axis in cell.params]
        session.tracker.log_cell(" ".join(axes) or cell.cell_id, params, metrics, {"cell_id": cell.cell_id, "sweep": self.plan.sweep})


def run_sweep(cfg, console: Console | None = None) -> SweepResult:
    """Run the sweep ``cfg`` (composed by :func:`ray_jobs.config.compose_config`).

    Raises ConfigError (nothing written) when the config is invalid, KeyboardInterrupt
    when interrupted (what was recorded stays; the same command resumes).
    """
    console = console or Console(stderr=True)
    started = time.monotonic()
    experiment, cell_params = validate(cfg)
    plan = plan_sweep(cfg, experiment.name, cell_params)
    session = Session(cfg, experiment, plan.sweep, console)
    store = session.store

    done = store.completed_unit_ids()
    if cfg.retry_errors:
        done -= store.unit_ids_with_errors()
    todo = [unit for unit in plan.units if unit.unit_id not in done]
    console.print(f"[bold]{plan.sweep}[/]: {len(plan.cells)} cells, {len(plan.units)} units, {plan.runs} runs; "
                  f"{len(plan.units) - len(todo)} units already recorded, {len(todo)} to run. Results: {store.sweep_dir}")

    cells = _CellTracker(session, plan)
    remaining = Counter(unit.cell.cell_id for unit in todo)
    params = {"sweep": plan.sweep, "experiment": experiment.name, "cells": len(plan.cells),
              "units": len(plan.units), "seeds": int(cfg.sweep.seeds), "seed_start": int(cfg.sweep.get("seed_start", 0)),
              "chunk_size": int(cfg.resources.chunk_size), "grid": canonical_json(OmegaConf.to_container(cfg.sweep.grid, resolve=True))}
    with session.parent_run(params):
        for cell in plan.cells:
            if remaining[cell.cell_id] == 0:
                cells.log(cell)
        if todo:
            with ray_cluster(cfg.cluster, console) as where:
                console.print(f"Scheduling {len(todo)} units on {where}.")
                for outcome in run_units(todo, experiment.name, cfg.resources, console, description=plan.sweep):
                    session.record(outcome)
                    remaining[outcome.unit.cell.cell_id] -= 1
                    if remaining[outcome.unit.cell.cell_id] == 0:
                        cells.log(outcome.unit.cell)
        report = session.build_report()
        wall_s = time.monotonic() - started
        session.finish(metrics={"units_scheduled": len(todo), "units_skipped": len(plan.units) - len(todo),
                                "units_failed": session.units_failed, "runs": plan.runs, "wall_s": wall_s},
                       report_paths=report.paths)
    return SweepResult(plan=plan, results_dir=session.results_dir, units_scheduled=len(todo),
                       units_skipped=len(plan.units) - len(todo), units_failed=session.units_failed, report=report,
                       parent_run_id=session.parent_run_id, wall_s=wall_s)

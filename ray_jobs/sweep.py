"""The sweep driver: validate -> plan -> skip done units -> schedule -> record -> report.

The driver is the single writer of the results: Parquet fragments (one per finished
unit), MLflow runs (a parent per invocation, a child per cell as soon as the cell's last
unit is recorded) and the report. Ray is started only when there is something to run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console

from ray_jobs.config import to_yaml
from ray_jobs.experiments import Experiment
from ray_jobs.plan import Cell, SweepPlan, canonical_json, plan_sweep
from ray_jobs.provenance import code_version
from ray_jobs.report import Report, build_report, table_from_rows
from ray_jobs.schedule import ray_cluster, run_units
from ray_jobs.store import ResultsStore, error_table, unit_table
from ray_jobs.tracking import SweepTracker, parent_run, source_tags
from ray_jobs.validate import resolve_reference, resolve_results_dir, validate


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

    def __init__(self, cfg, plan: SweepPlan, store: ResultsStore, experiment: Experiment,
                 tracker: SweepTracker | None, reference: Path | None):
        self.cfg, self.plan, self.store, self.experiment = cfg, plan, store, experiment
        self.tracker, self.reference = tracker, reference

    def log(self, cell: Cell) -> None:
        if self.tracker is None:
            return
        rows = self.store.read(unit.unit_id for unit in self.plan.units_of(cell.cell_id))
        table = table_from_rows(rows, self.experiment, confidence=float(self.cfg.report.confidence),
                                family_tol=float(self.cfg.report.family_tol), reference=self.reference)
        metrics = {key: value for key, value in table.iloc[0].to_dict().items()
                   if key not in cell.params and key not in ("cell_id", "experiment")}
        params = {"sweep": self.plan.sweep, "cell_id": cell.cell_id, **cell.params}
        axes = [f"{axis}={cell.params[axis]}" for axis in self.experiment.table_axes if axis in cell.params]
        self.tracker.log_cell(" ".join(axes) or cell.cell_id, params, metrics, {"cell_id": cell.cell_id, "sweep": self.plan.sweep})


def run_sweep(cfg, console: Console | None = None) -> SweepResult:
    """Run the sweep ``cfg`` (composed by :func:`ray_jobs.config.compose_config`).

    Raises ConfigError (nothing written) when the config is invalid, KeyboardInterrupt
    when interrupted (what was recorded stays; the same command resumes).
    """
    console = console or Console(stderr=True)
    started = time.monotonic()
    experiment, cell_params = validate(cfg)
    plan = plan_sweep(cfg, experiment.name, cell_params)
    results_dir = resolve_results_dir(cfg)
    reference = resolve_reference(cfg)
    store = ResultsStore(results_dir, plan.sweep)
    store.prepare()
    store.save_text(store.config_path, to_yaml(cfg))

    done = store.completed_unit_ids()
    if cfg.retry_errors:
        done -= store.unit_ids_with_errors()
    todo = [unit for unit in plan.units if unit.unit_id not in done]
    version = code_version()
    console.print(f"[bold]{plan.sweep}[/]: {len(plan.cells)} cells, {len(plan.units)} units, {plan.runs} runs; "
                  f"{len(plan.units) - len(todo)} units already recorded, {len(todo)} to run. Results: {store.sweep_dir}")

    tracker = SweepTracker.from_config(cfg, results_dir)
    cells = _CellTracker(cfg, plan, store, experiment, tracker, reference)
    remaining = Counter(unit.cell.cell_id for unit in todo)
    failed = 0
    params = {"sweep": plan.sweep, "experiment": experiment.name, "cells": len(plan.cells),
              "units": len(plan.units), "seeds": int(cfg.sweep.seeds), "seed_start": int(cfg.sweep.get("seed_start", 0)),
              "chunk_size": int(cfg.resources.chunk_size), "grid": canonical_json(OmegaConf.to_container(cfg.sweep.grid, resolve=True)),
              "code_version": version, "results_dir": str(results_dir)}
    tags = {"sweep": plan.sweep, "code_version": version, **source_tags()}
    with parent_run(tracker, plan.sweep, params=params, tags=tags):
        for cell in plan.cells:
            if remaining[cell.cell_id] == 0:
                cells.log(cell)
        if todo:
            with ray_cluster(cfg.cluster, console) as where:
                console.print(f"Scheduling {len(todo)} units on {where}.")
                for outcome in run_units(todo, experiment.name, cfg.resources, console, description=plan.sweep):
                    unit = outcome.unit
                    if outcome.error is None:
                        table = unit_table(unit, outcome.records, experiment=experiment, sweep=plan.sweep, code_version=version)
                    else:
                        failed += 1
                        console.print(f"[red]unit {unit.unit_id} (cell {unit.cell.cell_id}, seeds {unit.seed_lo}..{unit.seed_hi - 1}) "
                                      f"failed:[/] {outcome.error}")
                        table = error_table(unit, outcome.error, experiment=experiment, sweep=plan.sweep, code_version=version)
                    store.write_fragment(unit.unit_id, table)
                    remaining[unit.cell.cell_id] -= 1
                    if remaining[unit.cell.cell_id] == 0:
                        cells.log(unit.cell)
        report = build_report(store, experiment, sweep=plan.sweep, confidence=float(cfg.report.confidence),
                              family_tol=float(cfg.report.family_tol), reference=reference, figure=bool(cfg.report.figure))
        wall_s = time.monotonic() - started
        if tracker is not None:
            tracker.log_parent_metrics({"units_scheduled": len(todo), "units_skipped": len(plan.units) - len(todo),
                                        "units_failed": failed, "runs": plan.runs, "wall_s": wall_s})
            tracker.log_artifacts(report.paths, artifact_path="report")
            tracker.log_artifacts([store.config_path], artifact_path="config")
    return SweepResult(plan=plan, results_dir=results_dir, units_scheduled=len(todo), units_skipped=len(plan.units) - len(todo),
                       units_failed=failed, report=report, parent_run_id=tracker.parent_run_id if tracker else None, wall_s=wall_s)

"""Adaptive searches through the sweep service: ``landscape-sweep search=<name>``.

A search file (``sweeps/search_*.yaml``) is a sweep file plus a ``search:`` block
(:class:`ray_jobs.search.SearchSpec`: kind, searched axes and ranges, target, confidence,
trials, seeds per stage, stages, total runs, trials in flight, sampler). The sweep's grid
gives the settings: every combination of the grid axes that are not searched is one
setting and one Optuna study (``<sweep>[k=10]``...), run one after the other. A searched
axis is either a grid axis of the experiment (``n_minus_k``, ``width``, ``step``...) or a
dotted key of the config (``protocol.init_scale``, ``optimizer.lr``...).

A trial's stage is one work unit of the sweep service: the cell is what the experiment
makes of the config with the setting's and the trial's values (validated like any cell),
the seeds are the stage's; it runs as one Ray task, lands as one Parquet fragment under
``<results_dir>/<sweep>/runs/`` (the results contract plus the columns ``study``,
``trial`` and ``stage`` of the trial whose request computed it), and a fragment that
already exists is read instead of run. So a killed search resumes from its journal
(``<results_dir>/<sweep>/optuna_journal.log``) without computing any unit twice, and two
trials that ask for the same unit share one computation.

Per trial an MLflow child run (parameters, fraction, interval, runs, decision); on the
parent, Optuna's optimisation history and parameter importances per study. The report
(``report/search.md``, ``report/trials.csv``) gives per setting the answer (threshold or
best protocol) with its interval and the runs spent, beside what a grid at the same
per-cell precision would spend; ``report/table.md`` is the per-cell table of every cell
the search ran (the experiment's own layout).
"""

from __future__ import annotations

import math
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from ray_jobs.execution import Execution, ray_cluster
from ray_jobs.plan import canonical_json, make_unit
from ray_jobs.report import Report
from ray_jobs.search.engine import EvalRequest, SearchOutcome, run_search
from ray_jobs.search.plan import SearchPlan, Setting, plan_search
from ray_jobs.search.report import SEARCH_MD, TRIALS_CSV, fmt, search_markdown, study_figures, trials_table
from ray_jobs.session import Session
from ray_jobs.validate import preflight

JOURNAL = "optuna_journal.log"
#: columns a search adds to the rows it computes
SEARCH_COLUMNS = {"study": pa.string(), "trial": pa.int64(), "stage": pa.int64()}


class RayUnitEvaluator:
    """Runs each stage request as a work unit through the execution loop and records its
    fragment through the session.

    A unit whose fragment exists is read, not run; a unit already in flight for another
    trial is waited for, not submitted again. ``runs_computed`` counts runs that ran here.
    """

    def __init__(self, *, plan: SearchPlan, setting: Setting, session: Session, execution: Execution,
                 retry_errors: bool = False):
        self.plan, self.setting, self.session, self.execution = plan, setting, session, execution
        self.waiting: dict[str, list[EvalRequest]] = {}  # unit_id -> requests waiting for it
        self.ready: deque[tuple[EvalRequest, list[dict]]] = deque()
        self.runs_computed = self.runs_read = self.units_failed = 0
        self.retry_errors = retry_errors

    def submit(self, request: EvalRequest) -> None:
        unit = make_unit(self.plan.cells.cell_for(request.params), request.seed_lo, request.seed_hi)
        if unit.unit_id in self.waiting:
            self.waiting[unit.unit_id].append(request)
            return
        rows = self.session.store.read([unit.unit_id]).to_pylist()  # its fragment, or its rows in a compacted part
        if rows:
            if not (self.retry_errors and any(row["status"] == "error" for row in rows)):  # else: run it again
                self.runs_read += len(rows)
                self.ready.append((request, rows))
                return
        self.waiting[unit.unit_id] = [request]
        self.execution.submit(unit)

    def next_result(self) -> tuple[EvalRequest, list[dict]]:
        while not self.ready:
            if not self.execution.pending:
                raise RuntimeError("search evaluator: asked for a result with nothing submitted")
            for outcome in self.execution.wait():
                unit = outcome.unit
                first = self.waiting[unit.unit_id][0]
                values = {"study": self.setting.study, "trial": first.trial, "stage": first.stage}
                table = self.session.record(outcome, columns={name: (kind, values[name]) for name, kind in SEARCH_COLUMNS.items()},
                                            context=f"trial {first.trial}")
                if outcome.error is None:
                    self.runs_computed += table.num_rows
                else:
                    self.units_failed += 1
                rows = table.to_pylist()
                for request in self.waiting.pop(unit.unit_id):
                    self.ready.append((request, rows))
        return self.ready.popleft()


@dataclass
class StudyResult:
    setting: Setting
    outcome: SearchOutcome
    runs_computed: int
    runs_read: int
    units_failed: int
    figures: list[Path] = field(default_factory=list)


@dataclass
class SearchResult:
    plan: SearchPlan
    results_dir: Path
    studies: list[StudyResult]
    report: Report
    markdown: str
    parent_run_id: str | None
    wall_s: float

    @property
    def units_failed(self) -> int:
        return sum(study.units_failed for study in self.studies)


def trial_line(summary: dict) -> str:
    """One line on a finished trial (printed as the search goes)."""
    params = ", ".join(f"{k}={fmt(v)}" for k, v in summary["params"].items())
    if summary["decision"] == "error":
        return f"trial {summary['number']}: {params}: every run of a stage failed (error rows recorded)"
    lo, hi = summary["interval"]
    return (f"trial {summary['number']}: {params}: {summary['fraction']:.3f} [{lo:.3f}, {hi:.3f}] over {summary['runs']} runs, "
            f"{summary['decision']}")


def log_trial(session: Session, plan: SearchPlan, setting: Setting, summary: dict) -> None:
    """A finished trial as an MLflow child run: the setting and trial values as params;
    fraction, interval, runs, stages, objective and the count per status as metrics."""
    if session.tracker is None:
        return
    params = {"study": setting.study, "trial": summary["number"], **setting.values, **summary["params"]}
    metrics = {**{f"n_{k}": v for k, v in (summary.get("statuses") or {}).items()},
               "fraction": summary["fraction"], "fraction_lo": summary["interval"][0],
               "fraction_hi": summary["interval"][1], "runs": summary["runs"],
               "stages": summary["stages"], "objective": summary["value"]}
    session.tracker.log_cell(f"trial {summary['number']} " + " ".join(f"{k}={fmt(v)}" for k, v in summary["params"].items()),
                             params, metrics, {"study": setting.study, "sweep": plan.sweep, "decision": summary["decision"]},
                             kind="trial")


def run_study(plan: SearchPlan, setting: Setting, session: Session, execution: Execution, journal: Path, *,
              retry_errors: bool) -> StudyResult:
    """Run (or resume) the study of one setting; its trials' units go through ``execution``."""
    console = session.console
    console.print(f"[bold]study {escape(setting.study)}[/]")
    evaluator = RayUnitEvaluator(plan=plan, setting=setting, session=session, execution=execution, retry_errors=retry_errors)

    def on_trial(summary: dict) -> None:
        console.print("  " + escape(trial_line(summary)))
        log_trial(session, plan, setting, summary)

    try:
        outcome = run_search(plan.spec_for(setting), evaluator, storage_path=journal, on_trial=on_trial,
                             retry_errors=retry_errors)
    except BaseException:  # interrupted or failed: the session ends with this study (Execution.close)
        execution.close()
        raise
    execution.cancel()  # the study is done; units still in flight would take the next study's workers
    console.print(f"  -> {escape(outcome.message)} ({evaluator.runs_computed} runs computed now, "
                  f"{evaluator.runs_read} read from earlier fragments)")
    return StudyResult(setting, outcome, evaluator.runs_computed, evaluator.runs_read, evaluator.units_failed)


def write_search_report(plan: SearchPlan, studies: list[StudyResult], session: Session, journal: Path) -> tuple[Report, str, list[Path]]:
    """The experiment's per-cell report of every cell the search ran, then search.md,
    trials.csv and the Optuna figures; returns the report, search.md's text and every file."""
    store = session.store
    report = session.build_report()
    figures = study_figures(plan, studies, journal, store.report_dir) if session.cfg.report.figure else []
    markdown = search_markdown(plan, studies, confidence=plan.spec.confidence)
    store.save_text(store.report_dir / SEARCH_MD, markdown)
    store.save_text(store.report_dir / TRIALS_CSV, trials_table(plan, studies).to_csv(index=False))
    return report, markdown, [*report.paths, store.report_dir / SEARCH_MD, store.report_dir / TRIALS_CSV, *figures]


def run_search_sweep(cfg: DictConfig, console: Console | None = None) -> SearchResult:
    """Run (or resume) the search ``cfg``; raises ConfigError (nothing written) when invalid,
    KeyboardInterrupt when interrupted (the journal and fragments stay; the same command resumes)."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    plan = plan_search(cfg)
    preflight(cfg)
    with ExitStack() as stack:
        where = stack.enter_context(ray_cluster(cfg.cluster, console, resources=cfg.resources))  # before anything is written
        session = stack.enter_context(Session(cfg, plan.experiment, plan.sweep, console))
        journal = session.store.sweep_dir / JOURNAL
        spec = plan.spec
        console.print(f"[bold]{plan.sweep}[/]: {spec.kind} search over {', '.join(a.name for a in spec.axes)} for "
                      f"{len(plan.settings)} setting(s), sampler {spec.sampler}, up to {spec.trials} trials x "
                      f"{spec.max_stages} stages x {spec.seeds_per_stage} seeds each; journal {journal}")
        params = {"sweep": plan.sweep, "experiment": plan.experiment.name, "settings": len(plan.settings),
                  "search": canonical_json(OmegaConf.to_container(cfg.search, resolve=True)),
                  "grid": canonical_json(OmegaConf.to_container(cfg.sweep.grid, resolve=True))}
        with session.parent_run(params, tags={"landscape.search": spec.kind}):
            console.print(f"Trials run on {where}.")
            execution = Execution(plan.experiment.name, cfg.resources, sweep=plan.sweep, code_version=session.version)
            studies = [run_study(plan, setting, session, execution, journal, retry_errors=bool(cfg.retry_errors))
                       for setting in plan.settings]
            report, markdown, paths = write_search_report(plan, studies, session, journal)
            wall_s = time.monotonic() - started
            session.finish(metrics={"trials": sum(len(s.outcome.trials) for s in studies),
                                    "runs_spent": sum(s.outcome.runs_spent for s in studies),
                                    "runs_computed": sum(s.runs_computed for s in studies),
                                    "grid_runs": (plan.grid_runs() or math.nan) * len(plan.settings),
                                    "wall_s": wall_s},
                           report_paths=paths)
    return SearchResult(plan, session.results_dir, studies, report, markdown, session.parent_run_id, wall_s)

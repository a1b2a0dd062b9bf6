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
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from ray_jobs.execution import Timings, UnitOutcome, ray_cluster, run_units
from ray_jobs.plan import WorkUnit, canonical_json, make_unit
from ray_jobs.report import Report
from ray_jobs.search.engine import EvalRequest, Searcher
from ray_jobs.search.plan import SearchPlan, Setting, plan_search
from ray_jobs.search.report import SEARCH_MD, TRIALS_CSV, fmt, search_markdown, study_figures, trials_table
from ray_jobs.search.result import StudyResult
from ray_jobs.session import Session
from ray_jobs.store import ResultsStore
from ray_jobs.validate import preflight, resolve_results_dir

JOURNAL = "optuna_journal.log"
#: columns a search adds to the rows it computes
SEARCH_COLUMNS = {"study": pa.string(), "trial": pa.int64(), "stage": pa.int64()}


class StudyUnits:
    """One study's searcher (:class:`~ray_jobs.search.engine.Searcher`) on the execution loop:
    the stage requests of its trials become work units to run, and the recorded rows of each
    unit go back to the trials that asked for it.

    A unit whose fragment exists is read, not run; a unit already asked for by another trial
    is waited for, not run twice. ``runs_computed`` counts runs that ran here."""

    def __init__(
        self,
        plan: SearchPlan,
        setting: Setting,
        session: Session,
        journal: Path,
        *,
        retry_errors: bool,
        timings: Timings,
    ):
        self.plan, self.setting, self.session, self.timings = plan, setting, session, timings
        self.retry_errors = retry_errors
        self.waiting: dict[str, list[EvalRequest]] = {}  # unit_id -> requests waiting for it (queued or running)
        self.queue: deque[WorkUnit] = deque()  # units proposed, not yet given to the loop
        self.ready: deque[tuple[EvalRequest, list[dict]]] = deque()  # results not yet told to the searcher
        self.runs_computed = self.runs_read = self.units_failed = 0
        session.console.print(f"[bold]study {escape(setting.study)}[/]")
        self.searcher = Searcher(
            plan.spec_for(setting), self, journal, on_trial=self.on_trial, retry_errors=retry_errors
        )

    def on_trial(self, summary: dict) -> None:
        self.session.console.print("  " + escape(trial_line(summary)))
        with self.timings.phase("mlflow"):
            log_trial(self.session, self.plan, self.setting, summary)

    def submit(self, request: EvalRequest) -> None:
        """The searcher asks for a stage (the evaluator protocol of the engine)."""
        unit = make_unit(self.plan.cells.cell_for(request.params), request.seed_lo, request.seed_hi)
        if unit.unit_id in self.waiting:
            self.waiting[unit.unit_id].append(request)
            return
        rows = self.session.store.read([unit.unit_id]).to_pylist()  # its fragment, or its rows in a compacted part
        if rows and not (self.retry_errors and any(row["status"] == "error" for row in rows)):  # else: run it again
            self.runs_read += len(rows)
            self.ready.append((request, rows))
            return
        self.waiting[unit.unit_id] = [request]
        self.queue.append(unit)

    def tell_ready(self) -> None:
        """Tell the searcher every result it has not been told (its next stages are proposed meanwhile)."""
        with self.timings.phase("search"):
            while self.ready:
                self.searcher.tell(*self.ready.popleft())

    def next_units(self, room: int) -> list[WorkUnit]:
        self.tell_ready()
        return [self.queue.popleft() for _ in range(min(room, len(self.queue)))]

    @property
    def done(self) -> bool:
        return self.searcher.done and not self.waiting and not self.ready

    def consume(self, outcome: UnitOutcome) -> None:
        """Record a finished unit (columns study, trial, stage of the first trial that asked for it)
        and hand its rows to every trial waiting for it."""
        unit = outcome.unit
        first = self.waiting[unit.unit_id][0]
        values = {"study": self.setting.study, "trial": first.trial, "stage": first.stage}
        with self.timings.phase("record"):
            columns = {name: (kind, values[name]) for name, kind in SEARCH_COLUMNS.items()}
            table = self.session.record(outcome, columns=columns, context=f"trial {first.trial}")
            rows = table.to_pylist()
        self.timings.units_recorded += 1
        if outcome.error is None:
            self.runs_computed += table.num_rows
        else:
            self.units_failed += 1
        for request in self.waiting.pop(unit.unit_id):
            self.ready.append((request, rows))
        self.tell_ready()

    def result(self) -> StudyResult:
        outcome = self.searcher.outcome()
        self.session.console.print(
            f"  -> {escape(outcome.message)} ({self.runs_computed} runs computed now, "
            f"{self.runs_read} read from earlier fragments)"
        )
        return StudyResult(self.setting, outcome, self.runs_computed, self.runs_read, self.units_failed)


class SearchUnits:
    """The search's unit source for :func:`~ray_jobs.execution.run_units`: the studies of the
    settings one after the other, each proposing the units its trials ask for."""

    total: int | None = None  # not known in advance

    def __init__(self, plan: SearchPlan, session: Session, journal: Path, *, retry_errors: bool, timings: Timings):
        self.plan, self.session, self.journal, self.timings = plan, session, journal, timings
        self.retry_errors = retry_errors
        self.settings = deque(plan.settings)
        self.study: StudyUnits | None = None
        self.studies: list[StudyResult] = []

    def next_units(self, room: int) -> list[WorkUnit]:
        while True:
            if self.study is None:
                if not self.settings:
                    return []
                with self.timings.phase("search"):
                    self.study = StudyUnits(
                        self.plan,
                        self.settings.popleft(),
                        self.session,
                        self.journal,
                        retry_errors=self.retry_errors,
                        timings=self.timings,
                    )
                    self.study.searcher.start()
            units = self.study.next_units(room)
            if units or not self.study.done:
                return units  # (none while its units run: the loop waits for them)
            self.studies.append(self.study.result())
            self.close()

    def consume(self, outcome: UnitOutcome) -> None:
        assert self.study is not None, "an outcome with no study running"
        self.study.consume(outcome)

    def close(self) -> None:
        """Let go of the running study's trials (a later driver takes them over)."""
        if self.study is not None:
            self.study.searcher.close()
            self.study = None


@dataclass
class SearchResult:
    plan: SearchPlan
    results_dir: Path
    studies: list[StudyResult]
    report: Report
    markdown: str
    parent_run_id: str | None
    wall_s: float
    timings: Timings | None = None  # phases of the invocation (ray_jobs.execution.timing)

    @property
    def units_failed(self) -> int:
        return sum(study.units_failed for study in self.studies)


def trial_line(summary: dict) -> str:
    """One line on a finished trial (printed as the search goes)."""
    params = ", ".join(f"{k}={fmt(v)}" for k, v in summary["params"].items())
    if summary["decision"] == "error":
        return f"trial {summary['number']}: {params}: every run of a stage failed (error rows recorded)"
    lo, hi = summary["interval"]
    return (
        f"trial {summary['number']}: {params}: {summary['fraction']:.3f} [{lo:.3f}, {hi:.3f}] "
        f"over {summary['runs']} runs, {summary['decision']}"
    )


def log_trial(session: Session, plan: SearchPlan, setting: Setting, summary: dict) -> None:
    """A finished trial as an MLflow child run named by its setting, number and values
    (``k=12 trial 3 n_minus_k=2``): the setting and trial values as params;
    fraction, interval, runs, stages, objective and the count per status as metrics."""
    if session.tracker is None:
        return
    params = {"study": setting.study, "trial": summary["number"], **setting.values, **summary["params"]}
    metrics = {
        **{f"n_{k}": v for k, v in (summary.get("statuses") or {}).items()},
        "fraction": summary["fraction"],
        "fraction_lo": summary["interval"][0],
        "fraction_hi": summary["interval"][1],
        "runs": summary["runs"],
        "stages": summary["stages"],
        "objective": summary["value"],
    }
    setting_name = "".join(f"{k}={fmt(v)} " for k, v in setting.values.items())  # the axes not searched
    name = f"{setting_name}trial {summary['number']} " + " ".join(f"{k}={fmt(v)}" for k, v in summary["params"].items())
    tags = {"study": setting.study, "sweep": plan.sweep, "decision": summary["decision"]}
    session.tracker.log_cell(name, params, metrics, tags, kind="trial")


def write_search_report(
    plan: SearchPlan, studies: list[StudyResult], session: Session, journal: Path
) -> tuple[Report, str, list[Path]]:
    """The experiment's per-cell report of every cell the search ran, then search.md,
    trials.csv and the Optuna figures; returns the report, search.md's text and every file."""
    store = session.store
    report = session.build_report()
    figures = study_figures(plan, studies, journal, store.report_dir) if session.cfg.report.figure else []
    markdown = search_markdown(plan, studies, confidence=plan.spec.confidence)
    store.save_text(store.report_dir / SEARCH_MD, markdown)
    store.save_text(store.report_dir / TRIALS_CSV, trials_table(plan, studies).to_csv(index=False))
    return report, markdown, [*report.paths, store.report_dir / SEARCH_MD, store.report_dir / TRIALS_CSV, *figures]


def run_search_sweep(
    cfg: DictConfig, console: Console | None = None, *, timings: Timings | None = None
) -> SearchResult:
    """Run (or resume) the search ``cfg``; raises ConfigError (nothing written) when invalid,
    KeyboardInterrupt when interrupted (the journal and fragments stay; the same command resumes).
    Its phases are added to ``timings`` (the caller's, holding the compose step, or a new one)."""
    console = console or Console(stderr=True)
    timings = timings if timings is not None else Timings()
    started = time.monotonic()
    with timings.phase("plan"):
        plan = plan_search(cfg)
        preflight(cfg)
    with ExitStack() as stack:
        claimed = ResultsStore(resolve_results_dir(cfg), plan.sweep)
        stack.callback(claimed.unclaim)
        with timings.phase("session_open"):
            claimed.claim()  # the driver lock first: a second driver is refused before Ray starts
        where = stack.enter_context(
            timings.around(
                ray_cluster(cfg.cluster, console, resources=cfg.resources), enter="ray_start", leave="ray_stop"
            )
        )  # before anything is written
        with timings.phase("session_open"):
            session = stack.enter_context(Session(cfg, plan.experiment, plan.sweep, console, store=claimed))
        journal = session.store.sweep_dir / JOURNAL
        spec = plan.spec
        console.print(
            f"[bold]{plan.sweep}[/]: {spec.kind} search over {', '.join(a.name for a in spec.axes)} for "
            f"{len(plan.settings)} setting(s), sampler {spec.sampler}, up to {spec.trials} trials x "
            f"{spec.max_stages} stages x {spec.seeds_per_stage} seeds each; journal {journal}"
        )
        params = {
            "sweep": plan.sweep,
            "experiment": plan.experiment.name,
            "settings": len(plan.settings),
            "search": canonical_json(OmegaConf.to_container(cfg.search, resolve=True)),
            "grid": canonical_json(OmegaConf.to_container(cfg.sweep.grid, resolve=True)),
        }
        mlflow = timings.stopwatch("mlflow")
        with session.parent_run(params, tags={"landscape.search": spec.kind}):
            mlflow.lap()
            console.print(f"Trials run on {where}.")
            source = SearchUnits(plan, session, journal, retry_errors=bool(cfg.retry_errors), timings=timings)
            try:
                loop = run_units(
                    source,
                    plan.experiment.name,
                    cfg.resources,
                    console,
                    sweep=plan.sweep,
                    code_version=session.version,
                    description=plan.sweep,
                    timings=timings,
                )
                with closing(loop) as outcomes:
                    for outcome in outcomes:  # leaving the block closes the loop: pending tasks dropped, never forced
                        source.consume(outcome)
            finally:
                source.close()
            studies = source.studies
            with timings.phase("report"):
                report, markdown, paths = write_search_report(plan, studies, session, journal)
            wall_s = time.monotonic() - started
            with timings.phase("mlflow"):
                session.finish(
                    metrics={
                        "trials": sum(len(s.outcome.trials) for s in studies),
                        "runs_spent": sum(s.outcome.runs_spent for s in studies),
                        "runs_computed": sum(s.runs_computed for s in studies),
                        "grid_runs": (plan.grid_runs() or math.nan) * len(plan.settings),
                        "wall_s": wall_s,
                        **timings.metrics(),
                    },
                    report_paths=paths,
                )
            mlflow.restart()
        mlflow.lap()  # the parent run closed
    return SearchResult(plan, session.results_dir, studies, report, markdown, session.parent_run_id, wall_s, timings)

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

import copy
import itertools
import math
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from ray_jobs.config import to_yaml
from ray_jobs.errors import ConfigError
from ray_jobs.experiments import Experiment
from ray_jobs.plan import Cell, WorkUnit, canonical_json, make_cell, make_unit, stable_hash
from ray_jobs.provenance import code_version
from ray_jobs.report import Report, build_report, pyplot, save_figure
from ray_jobs.search import EvalRequest, SearchOutcome, SearchSpec, run_search
from ray_jobs.store import RUN_STATUSES, ResultsStore, error_table, unit_table
from ray_jobs.tracking import SweepTracker, parent_run, source_tags
from ray_jobs.validate import resolve_reference, resolve_results_dir, validate

JOURNAL = "optuna_journal.log"
SEARCH_MD = "search.md"
TRIALS_CSV = "trials.csv"
#: columns a search adds to the rows it computes
SEARCH_COLUMNS = {"study": pa.string(), "trial": pa.int64(), "stage": pa.int64()}


def is_search(cfg) -> bool:
    """Whether the composed config is a search (its sweep file has a ``search:`` block)."""
    return cfg.get("search") is not None


# ------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class Setting:
    """One study: the values of the grid axes that are not searched."""

    values: dict[str, Any]
    study: str

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "(one setting)"


@dataclass
class SearchPlan:
    sweep: str
    experiment: Experiment
    spec: SearchSpec  # the search block (its name is the sweep's; each study gets its own copy)
    settings: list[Setting]
    cells: "TrialCells"

    def spec_for(self, setting: Setting) -> SearchSpec:
        return SearchSpec(**{**self.spec.__dict__, "name": setting.study, "fixed": dict(setting.values)})

    def grid_runs(self) -> int | None:
        """Runs a grid over the searched axes spends per setting at the same per-cell precision
        (None when an axis is continuous: no grid without a step)."""
        if any(axis.type == "float" and axis.step is None for axis in self.spec.axes):
            return None
        return len(self.spec.grid_points()) * self.spec.seeds_per_stage * self.spec.max_stages


class TrialCells:
    """The cell of (setting values + trial values): the sweep config with those values set,
    made into cell parameters by the experiment (validated like any sweep cell)."""

    def __init__(self, cfg: DictConfig, experiment: Experiment, searched: tuple[str, ...]):
        self.cfg, self.experiment, self.searched = cfg, experiment, searched
        self._cache: dict[str, Cell] = {}

    def config_for(self, values: dict[str, Any]) -> DictConfig:
        cfg = copy.deepcopy(self.cfg)
        OmegaConf.set_readonly(cfg, False)
        OmegaConf.set_struct(cfg, False)
        for name, value in values.items():
            if name in self.experiment.axes:
                cfg.sweep.grid[name] = [value]
            else:
                OmegaConf.update(cfg, name, value, merge=False)
        OmegaConf.set_readonly(cfg, True)
        return cfg

    def cell_for(self, values: dict[str, Any]) -> Cell:
        key = canonical_json(values)
        if key not in self._cache:
            try:
                _, cells = validate(self.config_for(values))
            except ConfigError as error:
                raise self._rename(error) from None
            if len(cells) != 1:
                raise ConfigError("sweep.grid", f"a search trial must be one cell, got {len(cells)} for {values}")
            self._cache[key] = make_cell(cells[0])
        return self._cache[key]

    def _rename(self, error: ConfigError) -> ConfigError:
        """An error on a searched value names the search axis (``search.axes.<name>``)."""
        for name in self.searched:
            if error.field in (f"sweep.grid.{name}", name):
                return ConfigError(f"search.axes.{name}", error.message)
        return error


def plan_search(cfg: DictConfig) -> SearchPlan:
    """Validate a search config (everything, before anything is written) and plan its studies.

    Raises ConfigError naming the field: the ``search`` block's own fields, a searched
    axis that is neither a grid axis of the experiment nor a config key, a searched range
    whose end values the experiment rejects (each setting's corner cells are built).
    """
    from ray_jobs.experiments import get_experiment

    experiment = get_experiment(cfg.experiment.get("name"))  # the whole config is validated per corner cell below
    raw = OmegaConf.to_container(cfg.search, resolve=True)
    if not isinstance(raw, dict):
        raise ConfigError("search", "must be a mapping (kind, axes, target, trials, ...)")
    allowed = set(SearchSpec.__dataclass_fields__) - {"name", "fixed"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"search.{key}", f"unknown search setting; allowed: {', '.join(sorted(allowed))}")
    spec = SearchSpec.from_dict({**raw, "name": str(cfg.sweep.name), "seed_start": raw.get("seed_start", int(cfg.sweep.get("seed_start", 0)))})
    for key, statuses in (("success_statuses", spec.success_statuses), ("failure_statuses", spec.failure_statuses)):
        unknown = [s for s in statuses if s not in RUN_STATUSES]
        if unknown or not statuses:
            raise ConfigError(f"search.{key}", f"{unknown or statuses!r}: give statuses among {', '.join(RUN_STATUSES)}")
    searched = tuple(axis.name for axis in spec.axes)
    for name in searched:
        if name in experiment.axes:
            continue
        node = OmegaConf.select(cfg, name, default=_MISSING)
        if node is _MISSING:
            raise ConfigError(f"search.axes.{name}", f"neither a grid axis of {experiment.name} "
                                                     f"({', '.join(experiment.axes)}) nor a key of the config (e.g. protocol.step)")
        if isinstance(node, (DictConfig, ListConfig)):
            raise ConfigError(f"search.axes.{name}", "is a config group or section, not a value; search its keys "
                                                     f"(e.g. {name}.lr), one search per group option")
    grid = OmegaConf.to_container(cfg.sweep.grid, resolve=True) or {}
    fixed_axes = {axis: (list(v) if isinstance(v, (list, tuple)) else [v]) for axis, v in grid.items() if axis not in searched}
    cells = TrialCells(cfg, experiment, searched)
    settings = []
    for point in itertools.product(*fixed_axes.values()):
        values = dict(zip(fixed_axes, point))
        # every end of every searched range (every choice of a categorical axis), the other
        # axes at their first value, must make a valid cell
        first = {a.name: (a.choices[0] if a.type == "categorical" else _axis_value(a, a.low)) for a in spec.axes}
        for axis in spec.axes:
            for value in (axis.choices if axis.type == "categorical" else (axis.low, axis.high)):
                cells.cell_for({**values, **first, axis.name: _axis_value(axis, value)})
        # The study's name carries a hash of what decides its trials (the search's target,
        # statuses, confidence, stages, seeds, ranges, and the cell's science config), so a
        # search run again with other such settings starts a new study in the same journal
        # instead of reusing verdicts to another question; units are still shared by id.
        identity = stable_hash({"search": {**spec.identity(), "fixed": values},
                                "cell": cells.cell_for({**values, **first}).params}, 8)
        suffix = ",".join(f"{k}={v}" for k, v in values.items())
        settings.append(Setting(values, f"{cfg.sweep.name}[{suffix}]#{identity}" if suffix else f"{cfg.sweep.name}#{identity}"))
    return SearchPlan(str(cfg.sweep.name), experiment, spec, settings, cells)


_MISSING = object()


def _axis_value(axis, value):
    """A range end as the axis' type (int ends of an int axis)."""
    return int(value) if axis.type == "int" else value


# ------------------------------------------------------------------------- evaluator
class RayUnitEvaluator:
    """Runs each stage request as a work unit on Ray (one task) and records its fragment.

    A unit whose fragment exists is read, not run; a unit already in flight for another
    trial is waited for, not submitted again. ``runs_computed`` counts runs that ran here.
    """

    def __init__(self, *, plan: SearchPlan, setting: Setting, store: ResultsStore, resources, version: str,
                 console: Console, retry_errors: bool = False):
        from ray_jobs.schedule import unit_submitter

        self.plan, self.setting, self.store, self.version, self.console = plan, setting, store, version, console
        self.submit_unit = unit_submitter(plan.experiment.name, resources)
        self.pending: dict[Any, WorkUnit] = {}  # ObjectRef -> unit
        self.waiting: dict[str, list[EvalRequest]] = {}  # unit_id -> requests waiting for it
        self.ready: deque[tuple[EvalRequest, list[dict]]] = deque()
        self.runs_computed = self.runs_read = self.units_failed = 0
        self.retry_errors = retry_errors

    def submit(self, request: EvalRequest) -> None:
        unit = make_unit(self.plan.cells.cell_for(request.params), request.seed_lo, request.seed_hi)
        if unit.unit_id in self.waiting:
            self.waiting[unit.unit_id].append(request)
            return
        path = self.store.fragment_path(unit.unit_id)
        if path.exists():
            rows = pq.read_table(path).to_pylist()
            if not (self.retry_errors and any(row["status"] == "error" for row in rows)):  # else: run it again
                self.runs_read += len(rows)
                self.ready.append((request, rows))
                return
        self.waiting[unit.unit_id] = [request]
        self.pending[self.submit_unit(unit)] = unit

    def next_result(self) -> tuple[EvalRequest, list[dict]]:
        import ray
        from ray.exceptions import RayError

        from ray_jobs.schedule import WAIT_TIMEOUT_S, describe_failure

        while not self.ready:
            if not self.pending:
                raise RuntimeError("search evaluator: asked for a result with nothing submitted")
            done, _ = ray.wait(list(self.pending), num_returns=1, timeout=WAIT_TIMEOUT_S)
            for ref in done:
                unit = self.pending.pop(ref)
                first = self.waiting[unit.unit_id][0]
                try:
                    table = unit_table(unit, ray.get(ref), experiment=self.plan.experiment, sweep=self.plan.sweep,
                                       code_version=self.version)
                    self.runs_computed += table.num_rows
                except RayError as exc:
                    self.units_failed += 1
                    message = describe_failure(exc)
                    self.console.print(f"[red]unit {unit.unit_id} (trial {first.trial}, seeds {unit.seed_lo}..{unit.seed_hi - 1}) "
                                       f"failed:[/] {escape(message)}")
                    table = error_table(unit, message, experiment=self.plan.experiment, sweep=self.plan.sweep,
                                        code_version=self.version)
                for name, kind in SEARCH_COLUMNS.items():
                    value = {"study": self.setting.study, "trial": first.trial, "stage": first.stage}[name]
                    table = table.append_column(pa.field(name, kind), pa.array([value] * table.num_rows, kind))
                self.store.write_fragment(unit.unit_id, table)
                rows = table.to_pylist()
                for request in self.waiting.pop(unit.unit_id):
                    self.ready.append((request, rows))
        return self.ready.popleft()

    def cancel(self) -> None:
        import ray

        for ref in self.pending:
            ray.cancel(ref, force=True)
        self.pending.clear()


# ---------------------------------------------------------------------------- driver
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


def _trial_line(summary: dict) -> str:
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in summary["params"].items())
    if summary["decision"] == "error":
        return f"trial {summary['number']}: {params}: every run of a stage failed (error rows recorded)"
    lo, hi = summary["interval"]
    return (f"trial {summary['number']}: {params}: {summary['fraction']:.3f} [{lo:.3f}, {hi:.3f}] over {summary['runs']} runs, "
            f"{summary['decision']}")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_search_sweep(cfg: DictConfig, console: Console | None = None) -> SearchResult:
    """Run (or resume) the search ``cfg``; raises ConfigError (nothing written) when invalid,
    KeyboardInterrupt when interrupted (the journal and fragments stay; the same command resumes)."""
    from ray_jobs.schedule import ray_cluster

    console = console or Console(stderr=True)
    started = time.monotonic()
    plan = plan_search(cfg)
    results_dir = resolve_results_dir(cfg)
    store = ResultsStore(results_dir, plan.sweep)
    store.prepare()
    store.save_text(store.config_path, to_yaml(cfg))
    journal = store.sweep_dir / JOURNAL
    version = code_version()
    spec = plan.spec
    console.print(f"[bold]{plan.sweep}[/]: {spec.kind} search over {', '.join(a.name for a in spec.axes)} for "
                  f"{len(plan.settings)} setting(s), sampler {spec.sampler}, up to {spec.trials} trials x "
                  f"{spec.max_stages} stages x {spec.seeds_per_stage} seeds each; journal {journal}")
    tracker = SweepTracker.from_config(cfg, results_dir)
    studies: list[StudyResult] = []
    params = {"sweep": plan.sweep, "experiment": plan.experiment.name, "settings": len(plan.settings),
              "search": canonical_json(OmegaConf.to_container(cfg.search, resolve=True)),
              "grid": canonical_json(OmegaConf.to_container(cfg.sweep.grid, resolve=True)),
              "code_version": version, "results_dir": str(results_dir)}
    tags = {"sweep": plan.sweep, "code_version": version, "landscape.search": spec.kind, **source_tags()}
    with parent_run(tracker, plan.sweep, params=params, tags=tags):
        with ray_cluster(cfg.cluster, console) as where:
            console.print(f"Trials run on {where}.")
            for setting in plan.settings:
                console.print(f"[bold]study {escape(setting.study)}[/]")
                evaluator = RayUnitEvaluator(plan=plan, setting=setting, store=store, resources=cfg.resources,
                                             version=version, console=console, retry_errors=bool(cfg.retry_errors))

                def on_trial(summary: dict, setting=setting) -> None:
                    console.print("  " + escape(_trial_line(summary)))
                    if tracker is not None:
                        params = {"study": setting.study, "trial": summary["number"], **setting.values, **summary["params"]}
                        metrics = {**{f"n_{k}": v for k, v in (summary.get("statuses") or {}).items()},
                                   "fraction": summary["fraction"], "fraction_lo": summary["interval"][0],
                                   "fraction_hi": summary["interval"][1], "runs": summary["runs"],
                                   "stages": summary["stages"], "objective": summary["value"]}
                        tracker.log_cell(f"trial {summary['number']} " + " ".join(f"{k}={_fmt(v)}" for k, v in summary["params"].items()),
                                         params, metrics, {"study": setting.study, "sweep": plan.sweep,
                                                           "decision": summary["decision"]}, kind="trial")

                try:
                    outcome = run_search(plan.spec_for(setting), evaluator, storage_path=journal, on_trial=on_trial,
                                         retry_errors=bool(cfg.retry_errors))
                finally:
                    evaluator.cancel()
                console.print(f"  -> {escape(outcome.message)} ({evaluator.runs_computed} runs computed now, "
                              f"{evaluator.runs_read} read from earlier fragments)")
                studies.append(StudyResult(setting, outcome, evaluator.runs_computed, evaluator.runs_read,
                                           evaluator.units_failed))
        report = build_report(store, plan.experiment, sweep=plan.sweep, confidence=float(cfg.report.confidence),
                              family_tol=float(cfg.report.family_tol), reference=resolve_reference(cfg),
                              figure=bool(cfg.report.figure))
        figures = study_figures(plan, studies, journal, store.report_dir) if cfg.report.figure else []
        markdown = search_markdown(plan, studies, confidence=spec.confidence)
        store.save_text(store.report_dir / SEARCH_MD, markdown)
        store.save_text(store.report_dir / TRIALS_CSV, trials_table(plan, studies).to_csv(index=False))
        wall_s = time.monotonic() - started
        if tracker is not None:
            tracker.log_parent_metrics({"trials": sum(len(s.outcome.trials) for s in studies),
                                        "runs_spent": sum(s.outcome.runs_spent for s in studies),
                                        "runs_computed": sum(s.runs_computed for s in studies),
                                        "grid_runs": (plan.grid_runs() or math.nan) * len(plan.settings),
                                        "wall_s": wall_s})
            tracker.log_artifacts([*report.paths, store.report_dir / SEARCH_MD, store.report_dir / TRIALS_CSV, *figures],
                                  artifact_path="report")
            tracker.log_artifacts([store.config_path], artifact_path="config")
    return SearchResult(plan, results_dir, studies, report, markdown, tracker.parent_run_id if tracker else None, wall_s)


# ---------------------------------------------------------------------------- report
def trials_table(plan: SearchPlan, studies: list[StudyResult]) -> pd.DataFrame:
    """One row per trial of every study: setting, searched values, runs, fraction, interval, decision."""
    rows = []
    for study in studies:
        for t in sorted(study.outcome.trials, key=lambda t: t["number"]):
            rows.append({"study": study.setting.study, **study.setting.values, "trial": t["number"],
                         **{f"param_{k}": v for k, v in t["params"].items()}, "runs": t["runs"], "stages": t["stages"],
                         "fraction": t["fraction"], "fraction_lo": t["interval"][0], "fraction_hi": t["interval"][1],
                         "decision": t["decision"], "objective": t["value"],
                         **{f"n_{status}": (t.get("statuses") or {}).get(status, 0) for status in RUN_STATUSES}})
    return pd.DataFrame(rows)


def search_markdown(plan: SearchPlan, studies: list[StudyResult], *, confidence: float) -> str:
    """The answer per setting beside the grid's cost, then every trial."""
    spec = plan.spec
    level = f"{100 * confidence:g}%"
    axes = ", ".join(a.name for a in spec.axes)
    what = (f"smallest {axes} with a fraction of runs in {{{', '.join(spec.success_statuses)}}} >= {spec.target:g}"
            if spec.kind == "threshold" else
            f"values of {axes} minimising the fraction of runs in {{{', '.join(spec.failure_statuses)}}}")
    lines = [f"# {plan.sweep}: {spec.kind} search", "",
             f"Question: {what}. Sampler {spec.sampler} (seed {spec.sampler_seed}); up to {spec.trials} trials per "
             f"setting, {spec.parallel_trials} in flight; seeds added in stages of {spec.seeds_per_stage} (at most "
             f"{spec.max_stages}, the same seeds for every trial), a trial stopped early once its Wilson {level} interval "
             f"decides it. Grid runs = every value of the searched axes x {spec.max_stages * spec.seeds_per_stage} seeds "
             f"(the same per-cell precision; none for a continuous axis). Runs spent = runs the search looked at; "
             f"runs computed now = runs this invocation ran (the rest were read from fragments of earlier invocations "
             f"or shared between trials asking for the same unit).", ""]
    head = ["setting", "answer", f"fraction [{level} CI]", "runs of the answer", "trials", "runs spent",
            "runs computed now", "grid runs", "result"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for study in studies:
        o = study.outcome
        if o.best is not None:
            answer = ", ".join(f"{k}={_fmt(v)}" for k, v in o.best["params"].items())
            lo, hi = o.best["interval"]
            frac = f"{100 * o.best['fraction']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
            runs = str(o.best["runs"])
        else:
            answer, frac, runs = "not reached", "", ""
        lines.append("| " + " | ".join([study.setting.label, answer, frac, runs, str(len(o.trials)), str(o.runs_spent),
                                         str(study.runs_computed), "" if plan.grid_runs() is None else str(plan.grid_runs()), o.message]) + " |")
    lines += ["", "## Trials", ""]
    table = trials_table(plan, studies)
    if not table.empty:
        head = ["setting", "trial", *(a.name for a in spec.axes), "runs", "stages", f"fraction % [{level} CI]",
                "runs per status", "decision"]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for study in studies:
            for t in sorted(study.outcome.trials, key=lambda t: t["number"]):
                lo, hi = t["interval"]
                frac = "" if math.isnan(t["fraction"]) else f"{100 * t['fraction']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
                lines.append("| " + " | ".join([study.setting.label, str(t["number"]),
                                                 *(_fmt(t["params"].get(a.name)) for a in spec.axes),
                                                 str(t["runs"]), str(t["stages"]), frac,
                                                 ", ".join(f"{k} {v}" for k, v in (t.get("statuses") or {}).items()),
                                                 t["decision"]]) + " |")
    return "\n".join(lines) + "\n"


def study_figures(plan: SearchPlan, studies: list[StudyResult], journal: Path, report_dir: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances (matplotlib) per study."""
    pyplot()  # Optuna draws with matplotlib: the Agg backend first
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    paths = []
    for index, study_result in enumerate(studies):
        study = optuna.load_study(study_name=study_result.setting.study, storage=storage)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        plots = [("history", optuna.visualization.matplotlib.plot_optimization_history)]
        if len(complete) >= 2:
            plots.append(("importance", optuna.visualization.matplotlib.plot_param_importances))
        for name, plot in plots:
            try:
                with warnings.catch_warnings():  # the matplotlib backend is "experimental"; equal importances warn
                    warnings.simplefilter("ignore")
                    ax = plot(study)
            except (ValueError, RuntimeError) as exc:  # e.g. importances of a study whose values never vary
                Console(stderr=True).print(f"[yellow]{name} figure of {study.study_name} skipped:[/] {exc}")
                continue
            fig = ax.figure
            for loc in ("left", "center", "right"):  # Optuna titles on the left; one title, naming the study
                ax.set_title("", loc=loc)
            ax.set_title(f"{'optimisation history' if name == 'history' else 'parameter importances'}: {study.study_name}",
                         fontsize=9, loc="left")
            fig.tight_layout()
            paths.append(save_figure(fig, report_dir / f"optuna_{name}_{index}.png", dpi=110))
    return paths

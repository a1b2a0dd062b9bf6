"""The report of a search: the answer per setting (threshold or best protocol) with its
interval and the runs spent beside a grid at the same precision (``search.md``), every
trial (``trials.csv``), and Optuna's optimisation history and importances per study."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd
from rich.console import Console

from ray_jobs.report.figures import pyplot, save_figure
from ray_jobs.search.plan import SearchPlan
from ray_jobs.search.result import StudyResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEARCH_MD = "search.md"
TRIALS_CSV = "trials.csv"


def fmt(value) -> str:
    """A searched value for display (floats with 4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_table(plan: SearchPlan, studies: list[StudyResult]) -> pd.DataFrame:
    """One row per trial of every study: setting, searched values, runs, fraction, interval, decision."""
    rows = []
    for study in studies:
        for t in sorted(study.outcome.trials, key=lambda t: t["number"]):
            rows.append(
                {
                    "study": study.setting.study,
                    **study.setting.values,
                    "trial": t["number"],
                    **{f"param_{k}": v for k, v in t["params"].items()},
                    "runs": t["runs"],
                    "stages": t["stages"],
                    "fraction": t["fraction"],
                    "fraction_lo": t["interval"][0],
                    "fraction_hi": t["interval"][1],
                    "decision": t["decision"],
                    "objective": t["value"],
                    **{f"n_{status}": (t.get("statuses") or {}).get(status, 0) for status in plan.experiment.statuses},
                }
            )
    return pd.DataFrame(rows)


def search_markdown(plan: SearchPlan, studies: list[StudyResult], *, confidence: float) -> str:
    """The answer per setting beside the grid's cost, then every trial."""
    spec = plan.spec
    level = f"{100 * confidence:g}%"
    axes = ", ".join(a.name for a in spec.axes)
    what = (
        f"smallest {axes} with a fraction of runs in {{{', '.join(spec.success_statuses)}}} >= {spec.target:g}"
        if spec.kind == "threshold"
        else f"values of {axes} minimising the fraction of runs in {{{', '.join(spec.failure_statuses)}}}"
    )
    lines = [
        f"# {plan.sweep}: {spec.kind} search",
        "",
        f"Question: {what}. Sampler {spec.sampler} (seed {spec.sampler_seed}); up to {spec.trials} trials per "
        f"setting, {spec.parallel_trials} in flight; seeds added in stages of {spec.seeds_per_stage} (at most "
        f"{spec.max_stages}, the same seeds for every trial), a trial stopped early once its Wilson {level} interval "
        f"decides it. Grid runs = every value of the searched axes x {spec.max_stages * spec.seeds_per_stage} seeds "
        f"(the same per-cell precision; none for a continuous axis). Runs spent = runs the search looked at; "
        f"runs computed now = runs this invocation ran (the rest were read from fragments of earlier invocations "
        f"or shared between trials asking for the same unit).",
        "",
    ]
    head = [
        "setting",
        "answer",
        f"fraction [{level} CI]",
        "runs of the answer",
        "trials",
        "runs spent",
        "runs computed now",
        "grid runs",
        "result",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for study in studies:
        o = study.outcome
        if o.best is not None:
            answer = ", ".join(f"{k}={fmt(v)}" for k, v in o.best["params"].items())
            lo, hi = o.best["interval"]
            frac = f"{100 * o.best['fraction']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
            runs = str(o.best["runs"])
        else:
            answer, frac, runs = "not reached", "", ""
        lines.append(
            "| "
            + " | ".join(
                [
                    study.setting.label,
                    answer,
                    frac,
                    runs,
                    str(len(o.trials)),
                    str(o.runs_spent),
                    str(study.runs_computed),
                    "" if plan.grid_runs() is None else str(plan.grid_runs()),
                    o.message,
                ]
            )
            + " |"
        )
    lines += ["", "## Trials", ""]
    table = trials_table(plan, studies)
    if not table.empty:
        head = [
            "setting",
            "trial",
            *(a.name for a in spec.axes),
            "runs",
            "stages",
            f"fraction % [{level} CI]",
            "runs per status",
            "decision",
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for study in studies:
            for t in sorted(study.outcome.trials, key=lambda t: t["number"]):
                lo, hi = t["interval"]
                frac = (
                    "" if math.isnan(t["fraction"]) else f"{100 * t['fraction']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
                )
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            study.setting.label,
                            str(t["number"]),
                            *(fmt(t["params"].get(a.name)) for a in spec.axes),
                            str(t["runs"]),
                            str(t["stages"]),
                            frac,
                            ", ".join(f"{k} {v}" for k, v in (t.get("statuses") or {}).items()),
                            t["decision"],
                        ]
                    )
                    + " |"
                )
    return "\n".join(lines) + "\n"


def study_figures(plan: SearchPlan, studies: list[StudyResult], journal: Path, report_dir: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances (matplotlib) per study."""
    pyplot()  # Optuna draws with matplotlib: the Agg backend first
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    paths = []
    for index, study_result in enumerate(studies):
        study = optuna.load_study(study_name=study_result.setting.study, storage=storage)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        plots: list[tuple[str, Callable[..., Any]]] = [
            ("history", optuna.visualization.matplotlib.plot_optimization_history)
        ]
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
            fig = cast("Figure", ax.figure)  # Optuna draws on a figure of its own, not a subfigure
            for loc in ("left", "center", "right"):  # Optuna titles on the left; one title, naming the study
                ax.set_title("", loc=loc)
            ax.set_title(
                f"{'optimisation history' if name == 'history' else 'parameter importances'}: {study.study_name}",
                fontsize=9,
                loc="left",
            )
            fig.tight_layout()
            paths.append(save_figure(fig, report_dir / f"optuna_{name}_{index}.png", dpi=110))
    return paths

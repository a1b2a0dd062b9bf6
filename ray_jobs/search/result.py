"""What a search's studies come to: :class:`SearchOutcome` (the engine's answer from a study's
trials) and :class:`StudyResult` (a study as the driver ran it, read by the search report).
Both search modules import them from here (``search.driver`` -> ``search.report`` -> here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ray_jobs.search.spec import SearchSpec

if TYPE_CHECKING:
    from ray_jobs.search.plan import Setting


@dataclass
class SearchOutcome:
    study_name: str
    trials: list[dict]  # one dict per finished trial: params, runs, fraction, interval, decision
    runs_spent: int
    best: dict | None  # threshold: smallest feasible axis value (+ its trial); protocol: best trial
    reached: bool  # threshold: a feasible value was found; protocol: always True when a trial finished
    message: str


def search_outcome(spec: SearchSpec, summaries: list[dict], runs_spent: int) -> SearchOutcome:
    """The answer of a study from its finished trials' summaries: the threshold (smallest feasible
    value, with the largest infeasible one below it) or the best protocol, and a one-line message."""
    errored = sorted({tuple(s["params"].items()) for s in summaries if s["decision"] == "error"})
    decided = [s for s in summaries if s["decision"] != "error"]
    if summaries and not decided:
        return SearchOutcome(
            spec.name,
            summaries,
            runs_spent,
            None,
            False,
            f"every trial failed ({len(summaries)} trials; their error rows are recorded; "
            "rerun with retry_errors=true)",
        )
    if spec.kind == "threshold":
        axis = spec.axes[0].name
        feasible = sorted((s for s in decided if s["decision"].startswith("feasible")), key=lambda s: s["params"][axis])
        infeasible = [s["params"][axis] for s in decided if s["decision"].startswith("infeasible")]
        if not feasible:
            return SearchOutcome(
                spec.name,
                summaries,
                runs_spent,
                None,
                False,
                f"not reached within budget: no {axis} in [{spec.axes[0].low}, {spec.axes[0].high}] "
                f"reached "
                f"{spec.target:.0%} success in {len(summaries)} trials / {runs_spent} runs",
            )
        best = feasible[0]
        below = max((v for v in infeasible if v < best["params"][axis]), default=None)
        undecided = sorted(
            dict(p)[axis]
            for p in errored
            if (below is None or dict(p)[axis] > below) and dict(p)[axis] < best["params"][axis]
        )
        note = f"; undecided, every run failed: {axis} = {undecided}" if undecided else ""
        return SearchOutcome(
            spec.name,
            summaries,
            runs_spent,
            {
                **best,
                "threshold": best["params"][axis],
                "largest_infeasible_below": below,
                "undecided_below": undecided,
            },
            True,
            f"threshold {axis} = {best['params'][axis]} (largest infeasible below: {below}{note}), {runs_spent} runs",
        )
    if not decided:
        return SearchOutcome(spec.name, summaries, runs_spent, None, False, "no trial finished within budget")
    best = min(decided, key=lambda s: (s["fraction"], -s["runs"]))
    values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
    lo, hi = best["interval"]
    return SearchOutcome(
        spec.name,
        summaries,
        runs_spent,
        best,
        True,
        f"best {values}: fraction {best['fraction']:.3f} [{lo:.3f}, {hi:.3f}], {runs_spent} runs",
    )


@dataclass
class StudyResult:
    """One study of a search: its setting, its outcome, the runs this invocation computed and
    read from earlier fragments, its failed units and its figures."""

    setting: Setting
    outcome: SearchOutcome
    runs_computed: int
    runs_read: int
    units_failed: int
    figures: list[Path] = field(default_factory=list)

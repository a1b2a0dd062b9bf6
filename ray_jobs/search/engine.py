"""Adaptive searches with Optuna: find a width threshold, or the best protocol, with far
fewer runs than a grid.

This module is the search engine; it does not know how runs are executed. It asks an
:class:`Evaluator` for batches of runs (one :class:`EvalRequest` = one cell x one stage of
seeds) and is told their records as they finish, so several trials are in flight at once
(ask, submit, tell as they finish). The sweep service's Ray evaluator runs each request
as a work unit with a Parquet fragment; tests use an in-process one.

Two kinds of search:

- ``threshold``: one ordered integer axis (``width``, ``n``, ...): the smallest value at
  which the fraction of runs with a success status (``global``) is at least ``target``.
  A trial's value is the axis value when the trial is feasible, and
  ``axis high + 1 + (target - fraction)`` when it is not, so the minimum is the smallest
  feasible value.
- ``protocol``: any axes (step, init_scale, ...) at a fixed cell; minimise the fraction of
  runs with a failure status (``spurious``).

Seeds are added to a trial in stages of ``seeds_per_stage``; after each stage the Wilson
interval (``confidence``) of the trial's fraction decides it early: for a threshold, when
the interval is entirely above or below the target; for a protocol search, when its lower
bound is above the best finished trial's upper bound (clearly worse). A trial that uses
all ``max_stages`` is decided by its point estimate. When the sampler proposes values a
finished trial already decided, the trial is told that trial's value at once (no runs; its
decision reads "repeat of trial N"); values of a trial in flight are dropped (PRUNED).
A threshold search assumes the success fraction does not decrease along the axis (wider
or larger students do not do worse), so only the open bracket can change its answer: the
values strictly between the largest infeasible value below the smallest feasible one and
that one. A proposal outside it is dropped (PRUNED) like a repeat, the middle of the
bracket is enqueued for the next trial, and the search stops as soon as the bracket is
empty: the threshold is then known to the axis step. Such skipped proposals cost no runs
and do not count against ``trials``. Rows with status ``error`` (a failed task) are not
runs; a stage with nothing but errors fails its trial (Optuna state FAIL).

Persistence: the study lives in Optuna's journal file (``JournalFileBackend``); a killed
driver leaves RUNNING trials, which the next driver marks FAIL and re-enqueues with the
same parameters (their finished stages are not recomputed by an evaluator that keeps
results, such as the sweep service's Parquet store), so no trial is evaluated twice.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend

from ray_jobs.search.result import SearchOutcome, search_outcome
from ray_jobs.search.spec import SearchSpec
from ray_jobs.search.trials import (
    _LIVE_DRIVERS,
    EvalRequest,
    Evaluator,
    InProcessEvaluator,
    Proposals,
    TrialState,
    _driver_is_gone,
    wilson_interval,
)

__all__ = [
    "EvalRequest",
    "Evaluator",
    "InProcessEvaluator",
    "Proposals",
    "Searcher",
    "TrialState",
    "run_search",
    "wilson_interval",
]


def run_search(
    spec: SearchSpec,
    evaluator: Evaluator,
    *,
    storage_path: Path,
    on_records=None,
    on_trial=None,
    retry_errors: bool = False,
) -> SearchOutcome:
    """Run (or resume) the search ``spec``; the study is stored in the journal ``storage_path``.

    ``on_records(request, records)`` is called for every finished request (to store rows),
    ``on_trial(summary)`` for every finished trial (to log it). With ``retry_errors``,
    trials whose runs all errored in an earlier invocation are not taken as decided. Seeds of trial t, stage s
    are ``seed_start + s * seeds_per_stage + [0, seeds_per_stage)``: the same seeds for
    every trial (common random numbers across the searched values).
    """
    searcher = Searcher(
        spec, evaluator, Path(storage_path), on_records=on_records, on_trial=on_trial, retry_errors=retry_errors
    )
    try:
        searcher.start()
        while not searcher.done:
            searcher.tell(*evaluator.next_result())
        return searcher.outcome()
    finally:
        searcher.close()


class Searcher:
    """One study's search, apart from execution: :meth:`start` proposes the first trials' stages
    (``evaluator.submit``), :meth:`tell` takes a finished stage's records and proposes what
    follows, until :attr:`done`; :meth:`outcome` is the answer. :func:`run_search` drives it
    from a pulling evaluator; the sweep service from its execution loop
    (:mod:`ray_jobs.search.driver`). :meth:`close` (always) lets another driver of this
    process take over the trials it left RUNNING."""

    def __init__(
        self,
        spec: SearchSpec,
        evaluator: Proposals,
        storage_path: Path,
        *,
        on_records=None,
        on_trial=None,
        retry_errors: bool = False,
    ):
        self.spec, self.evaluator, self.on_records, self.on_trial, self.retry_errors = (
            spec,
            evaluator,
            on_records,
            on_trial,
            retry_errors,
        )
        self.driver = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.summaries: list[dict] = []  # one per finished trial (summary dicts, as in the outcome)
        self.known: set[int] = set()  # numbers of the trials in summaries
        self.in_flight: dict[int, TrialState] = {}  # this driver's trials with a stage submitted
        self.open_study(storage_path)
        self.distributions = {a.name: a.distribution() for a in spec.axes}
        self.refresh()
        self.runs_spent = sum(s.get("runs", 0) for s in self.summaries)
        self.grid_size = len(spec.grid_points()) if spec.sampler == "grid" else None
        self.started, self.asked = sum(1 for s in self.summaries if "repeat_of" not in s), 0
        self.statuses = spec.success_statuses if spec.kind == "threshold" else spec.failure_statuses
        self.bisect = spec.kind == "threshold" and spec.sampler != "grid"

    def open_study(self, storage_path: Path) -> None:
        """Create or load the study, take over dead drivers' trials, enqueue baseline and grid points."""
        spec = self.spec
        storage_path.parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(storage_path)))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = self.study = optuna.create_study(
            storage=storage,
            study_name=spec.name,
            sampler=spec.make_sampler(),
            direction="minimize",
            load_if_exists=True,
        )
        # Trials a dead driver left RUNNING: fail them and ask for the same parameters again.
        # Trials of a driver still alive (another process sharing the study) are left alone.
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if _driver_is_gone(t.user_attrs, spec.stale_after_s):
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                study.enqueue_trial(dict(t.params), skip_if_exists=False)
        for point in spec.enqueue:
            study.enqueue_trial(point, skip_if_exists=True)
        if spec.sampler == "grid":
            for point in spec.grid_points():
                study.enqueue_trial(point, skip_if_exists=True)

    def refresh(self) -> None:
        """Add trials finished since the last look (by this driver or another one sharing the study)."""
        for t in self.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        ):
            if t.state == optuna.trial.TrialState.FAIL and self.retry_errors:
                continue  # its values may be asked again (the evaluator reruns units with error rows)
            if t.number not in self.known and "summary" in t.user_attrs:  # (a FAIL with a summary = every run errored)
                self.known.add(t.number)
                self.summaries.append(dict(t.user_attrs["summary"], number=t.number))

    def budget_left(self) -> bool:
        """Whether the runs left, after those committed to the trials in flight, pay for a whole new trial."""
        spec = self.spec
        committed = sum((spec.max_stages - s.stage) * spec.seeds_per_stage for s in self.in_flight.values())
        return (
            self.runs_spent + committed + spec.max_stages * spec.seeds_per_stage <= spec.total_runs
        )  # a whole new trial

    def submit_stage(self, state: TrialState) -> None:
        """Submit the next stage of seeds of ``state``."""
        lo, n = self.spec.seed_start + state.stage * self.spec.seeds_per_stage, self.spec.seeds_per_stage
        self.evaluator.submit(EvalRequest(state.number, state.stage, {**self.spec.fixed, **state.params}, lo, lo + n))

    def flying_params(self, exclude: int | None = None) -> list[dict]:
        """Parameters of the trials in flight: this driver's and those another live driver runs."""
        ours = [state.params for state in self.in_flight.values()]
        others = [
            dict(t.params)
            for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if t.number not in self.in_flight and t.number != exclude
        ]
        return ours + others

    def open_threshold_values(self, exclude: int | None = None) -> list:
        """Threshold search: axis values still able to change the answer (the open bracket), not in flight."""
        axis = self.spec.axes[0]
        assert axis.low is not None and axis.high is not None  # a threshold axis is a number range (SearchSpec)
        decided = {s["params"][axis.name]: s["decision"] for s in self.summaries if "repeat_of" not in s}
        feasible = [v for v, d in decided.items() if d.startswith("feasible")]
        top = min(feasible) if feasible else axis.high + 1
        bottom = max((v for v, d in decided.items() if d.startswith("infeasible") and v < top), default=axis.low - 1)
        # (a value whose runs all errored is not open either: asking again would fail again; see search_outcome)
        flying = {params[axis.name] for params in self.flying_params(exclude)}
        return [v for v in axis.grid_values() if bottom < v < top and v not in decided and v not in flying]

    def start_trials(self) -> None:
        """Ask for trials and submit their first stage while slots, trials, budget and open values remain."""
        spec = self.spec
        while (
            len(self.in_flight) < spec.parallel_trials
            and self.started < spec.trials
            and self.budget_left()
            and (self.grid_size is None or self.started < self.grid_size)
            and not (self.bisect and not self.open_threshold_values())
        ):
            self.refresh()
            trial = self.study.ask(self.distributions)
            trial.set_user_attr("driver", self.driver)
            trial.set_user_attr("heartbeat", time.time())
            self.started += 1
            self.asked += 1
            params = dict(trial.params)
            done = next((s for s in self.summaries if s["params"] == params and "repeat_of" not in s), None)
            flying = next((p for p in self.flying_params(exclude=trial.number) if p == params), None)
            outside = (
                self.bisect
                and done is None
                and flying is None
                and params[spec.axes[0].name] not in self.open_threshold_values(trial.number)
            )
            if done is not None or flying is not None or outside:
                self.skip_proposal(trial, done, flying)
                continue
            self.in_flight[trial.number] = state = TrialState(trial, trial.number, params)
            self.submit_stage(state)

    def skip_proposal(self, trial: optuna.trial.Trial, done: dict | None, flying: dict | None) -> None:
        """Close, without runs, a proposal that repeats a decided value, is in flight or is outside the bracket."""
        if done is not None and done["decision"] != "error":  # values already decided: the same answer, no runs
            summary = {
                **done,
                "number": trial.number,
                "runs": 0,
                "stages": 0,
                "repeat_of": done["number"],
                "decision": f"repeat of trial {done['number']}",
            }
            trial.set_user_attr("summary", summary)
            self.study.tell(trial, done["value"])
            self.summaries.append(summary)
            self.known.add(trial.number)
            if self.on_trial is not None:
                self.on_trial(summary)
        else:  # values of a trial in flight (never evaluated twice), or outside the open
            # bracket of a threshold search (cannot change its answer): dropped, pruned
            reason = (
                "errored" if done is not None else "in flight" if flying is not None else "outside the open bracket"
            )
            trial.set_user_attr("skipped", reason)
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        if self.bisect:  # the sampler repeats itself: the next trial bisects the open bracket
            values = self.open_threshold_values(trial.number)
            if values and self.asked < 4 * self.spec.trials:  # (a guard; a repeat is always followed by a new value)
                self.study.enqueue_trial({self.spec.axes[0].name: values[len(values) // 2]})
                self.started -= 1  # a repeat costs no runs and does not count against search.trials

    def decide(self, state: TrialState) -> str | None:
        """The decision on ``state`` after its latest stage, or None to run another stage."""
        spec = self.spec
        lo, hi = wilson_interval(state.hits, state.runs, spec.confidence)
        if spec.kind == "threshold":
            if lo >= spec.target:
                return "feasible"
            if hi < spec.target:
                return "infeasible"
        else:
            best_hi = min((s["interval"][1] for s in self.summaries if s["decision"] != "error"), default=None)
            if best_hi is not None and lo > best_hi:
                return "worse"
        if state.stage >= spec.max_stages:
            if spec.kind == "threshold":
                return (
                    "feasible (point estimate)"
                    if state.hits / state.runs >= spec.target
                    else "infeasible (point estimate)"
                )
            return "all stages"
        return None

    def record_stage(self, request: EvalRequest, records: list[dict]) -> None:
        """Pass a finished stage to on_records, count its runs; submit the next stage, or fail or tell the trial."""
        spec = self.spec
        if self.on_records is not None:
            self.on_records(request, records)
        state = self.in_flight[request.trial]
        ran = [r for r in records if r.get("status") != "error"]  # a failed task's rows are not runs
        state.runs += len(ran)
        state.hits += sum(1 for r in ran if r.get("status") in self.statuses)
        for r in ran:
            state.statuses[r.get("status")] = state.statuses.get(r.get("status"), 0) + 1
        state.stage += 1
        state.trial.set_user_attr("heartbeat", time.time())
        self.runs_spent += len(ran)
        if not ran:  # the whole stage failed: the trial fails (its error rows are stored), others go on
            summary = {
                "number": state.number,
                "params": state.params,
                "runs": state.runs,
                "stages": state.stage,
                "fraction": math.nan,
                "interval": [math.nan, math.nan],
                "decision": "error",
                "value": math.nan,
            }
            # in the outcome and trials table; never asked again (rerun: retry_errors)
            self.finish_trial(state, summary, optuna.trial.TrialState.FAIL)
            return
        decision = self.decide(state)
        if decision is None:
            self.submit_stage(state)
            return
        fraction = state.hits / state.runs
        interval = wilson_interval(state.hits, state.runs, spec.confidence)
        if spec.kind == "threshold":
            axis = spec.axes[0]
            assert axis.high is not None  # a threshold axis is a number range (SearchSpec)
            value = (
                float(state.params[axis.name])
                if decision.startswith("feasible")
                else float(axis.high) + 1 + (spec.target - fraction)
            )
        else:
            value = fraction
        summary = {
            "number": state.number,
            "params": state.params,
            "runs": state.runs,
            "stages": state.stage,
            "fraction": fraction,
            "interval": list(interval),
            "decision": decision,
            "value": value,
            "statuses": dict(sorted(state.statuses.items())),
        }
        self.finish_trial(state, summary, value)

    def finish_trial(self, state: TrialState, summary: dict, result: float | optuna.trial.TrialState) -> None:
        """Store ``summary`` with the trial, tell it ``result`` (a value or a state), start the next trials."""
        state.trial.set_user_attr("summary", summary)  # kept in the journal with the trial
        if isinstance(result, optuna.trial.TrialState):
            self.study.tell(state.trial, state=result)
        else:
            self.study.tell(state.trial, result)
        self.summaries.append(summary)
        self.known.add(state.number)
        del self.in_flight[state.number]
        if self.on_trial is not None:
            self.on_trial(summary)
        self.start_trials()

    def start(self) -> None:
        """Mark this driver live (its RUNNING trials are not taken over) and start the first trials."""
        _LIVE_DRIVERS.add(self.driver)
        self.start_trials()

    def tell(self, request: EvalRequest, records: list[dict]) -> None:
        """A finished stage: its trial goes on, or is decided and the next trials start."""
        self.record_stage(request, records)

    @property
    def done(self) -> bool:
        """Whether no trial is in flight (nothing more will be proposed)."""
        return not self.in_flight

    def outcome(self) -> SearchOutcome:
        return search_outcome(self.spec, self.summaries, self.runs_spent)

    def close(self) -> None:
        _LIVE_DRIVERS.discard(self.driver)

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import optuna

from ray_jobs.errors import ConfigError
from ray_jobs.report import wilson_interval as _wilson


def wilson_interval(successes: int, runs: int, confidence: float) -> tuple[float, float]:
    """The report's Wilson interval; (0, 1) before any run (nothing known yet)."""
    return (0.0, 1.0) if runs == 0 else _wilson(successes, runs, confidence)

SAMPLERS = ("tpe", "gp", "grid", "random")
KINDS = ("threshold", "protocol")
AXIS_TYPES = ("int", "float", "categorical")


@dataclass(frozen=True)
class SearchAxis:
    name: str
    type: str  # int | float | categorical
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.type == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.type == "float":
            return optuna.distributions.FloatDistribution(float(self.low), float(self.high), step=self.step, log=self.log)
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def contains(self, value) -> bool:
        """Whether ``value`` is a value of this axis (in range, or one of the choices)."""
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high and (self.type == "float" or float(value).is_integer())

    def grid_values(self) -> list:
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ConfigError(f"search.axes.{self.name}.step", "the grid sampler needs a step for a float axis")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1  # never past high
        return [round(self.low + i * self.step, 12) for i in range(count)]  # no accumulated float noise


@dataclass(frozen=True)
class SearchSpec:
    name: str
    kind: str
    axes: tuple[SearchAxis, ...]
    fixed: dict[str, Any] = field(default_factory=dict)  # cell parameters every trial shares
    target: float = 0.99  # threshold: required success fraction
    success_statuses: tuple[str, ...] = ("global",)
    failure_statuses: tuple[str, ...] = ("spurious",)
    confidence: float = 0.99
    trials: int = 20
    seeds_per_stage: int = 25
    max_stages: int = 4
    total_runs: int = 100_000
    parallel_trials: int = 2
    sampler: str = "tpe"
    sampler_seed: int = 0
    seed_start: int = 0
    #: a RUNNING trial of another host's driver is taken over when its last stage is older than this
    stale_after_s: float = 3600.0
    #: trials evaluated first, e.g. the published protocol as the baseline of a protocol search
    enqueue: tuple[dict[str, Any], ...] = ()

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> "SearchSpec":
        """Validate a search config (a plain dict); ConfigError names the offending field."""
        raw = dict(raw)
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError("search.name", "required: a non-empty string")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ConfigError("search.kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        axes_raw = raw.get("axes") or {}
        if not isinstance(axes_raw, dict) or not axes_raw:
            raise ConfigError("search.axes", "give at least one searched axis, e.g. {width: {type: int, low: 4, high: 64}}")
        axes = []
        for axis_name, a in axes_raw.items():
            a = dict(a or {})
            t = a.get("type")
            if t not in AXIS_TYPES:
                raise ConfigError(f"search.axes.{axis_name}.type", f"{t!r} is not one of {', '.join(AXIS_TYPES)}")
            if t == "categorical":
                if not a.get("choices"):
                    raise ConfigError(f"search.axes.{axis_name}.choices", "a categorical axis needs a non-empty list")
            else:
                low, high = a.get("low"), a.get("high")
                if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or low > high:
                    raise ConfigError(f"search.axes.{axis_name}.low", f"need numbers low <= high, got {low!r}, {high!r}")
                if a.get("log") and low <= 0:
                    raise ConfigError(f"search.axes.{axis_name}.low", "a log axis needs low > 0")
                step = a.get("step")
                if step is not None:
                    if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
                        raise ConfigError(f"search.axes.{axis_name}.step", f"must be a number > 0 (or null), got {step!r}")
                    if t == "int" and not float(step).is_integer():
                        raise ConfigError(f"search.axes.{axis_name}.step", f"an int axis needs an integer step, got {step!r}")
                    if a.get("log"):
                        raise ConfigError(f"search.axes.{axis_name}.step", "a log axis takes no step (Optuna samples it continuously)")
                if t == "int" and not (float(low).is_integer() and float(high).is_integer()):
                    raise ConfigError(f"search.axes.{axis_name}.low", f"an int axis needs integer ends, got {low!r}, {high!r}")
            axes.append(SearchAxis(axis_name, t, a.get("low"), a.get("high"), a.get("step"), bool(a.get("log", False)),
                                   tuple(a.get("choices") or ())))
        if kind == "threshold" and (len(axes) != 1 or axes[0].type != "int"):
            raise ConfigError("search.axes", "a threshold search has exactly one integer axis (e.g. width)")
        for key in ("target", "confidence"):
            value = raw.get(key, 0.99)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"search.{key}", f"must be a number, got {value!r}")
        for key in ("success_statuses", "failure_statuses"):
            value = raw.get(key, ["x"])
            if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"search.{key}", f"must be a non-empty list of statuses, got {value!r}")
        for key in ("sampler_seed", "seed_start"):
            value = raw.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"search.{key}", f"must be an integer >= 0, got {value!r}")
        spec = SearchSpec(
            name=name, kind=kind, axes=tuple(axes), fixed=dict(raw.get("fixed") or {}),
            target=float(raw.get("target", 0.99)),
            success_statuses=tuple(raw.get("success_statuses", ("global",))),
            failure_statuses=tuple(raw.get("failure_statuses", ("spurious",))),
            confidence=float(raw.get("confidence", 0.99)),
            trials=raw.get("trials", 20), seeds_per_stage=raw.get("seeds_per_stage", 25),
            max_stages=raw.get("max_stages", 4), total_runs=raw.get("total_runs", 100_000),
            parallel_trials=raw.get("parallel_trials", 2), sampler=raw.get("sampler", "tpe"),
            sampler_seed=raw.get("sampler_seed", 0), seed_start=raw.get("seed_start", 0),
            stale_after_s=raw.get("stale_after_s", 3600.0),
            enqueue=tuple(dict(point) for point in (raw.get("enqueue") or ()) if isinstance(point, dict)),
        )
        if len(spec.enqueue) != len(raw.get("enqueue") or ()):
            raise ConfigError("search.enqueue", "must be a list of {axis: value} mappings, one per trial to run first")
        names = {axis.name: axis for axis in axes}
        for point in spec.enqueue:
            if set(point) != set(names):
                raise ConfigError("search.enqueue", f"each entry gives every searched axis ({', '.join(names)}), got {point}")
            for key, value in point.items():
                if not names[key].contains(value):
                    raise ConfigError(f"search.enqueue.{key}", f"{value!r} is outside the searched range of {key}")
        for key in ("trials", "seeds_per_stage", "max_stages", "total_runs", "parallel_trials"):
            value = getattr(spec, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"search.{key}", f"must be an integer >= 1, got {value!r}")
        if isinstance(spec.stale_after_s, bool) or not isinstance(spec.stale_after_s, (int, float)) or not spec.stale_after_s > 0:
            raise ConfigError("search.stale_after_s", f"must be a number of seconds > 0, got {spec.stale_after_s!r}")
        if not 0 < spec.target <= 1:
            raise ConfigError("search.target", f"must be in (0, 1], got {spec.target!r}")
        if not 0 < spec.confidence < 1:
            raise ConfigError("search.confidence", f"must be in (0, 1), got {spec.confidence!r}")
        if spec.sampler not in SAMPLERS:
            raise ConfigError("search.sampler", f"{spec.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if spec.total_runs < spec.max_stages * spec.seeds_per_stage:
            raise ConfigError("search.total_runs", f"must allow one whole trial (max_stages x seeds_per_stage = "
                                                   f"{spec.max_stages * spec.seeds_per_stage}), got {spec.total_runs}")
        if spec.sampler == "grid":
            spec.grid_points()  # a float axis without a step has no grid: ConfigError naming it
        return spec

    def identity(self) -> dict[str, Any]:
        """The settings that decide a trial's runs and verdict (not the budget, sampler or
        concurrency): two specs with the same identity may share a study's finished trials."""
        return {"kind": self.kind, "axes": [a.__dict__ for a in self.axes], "fixed": self.fixed, "target": self.target,
                "success_statuses": list(self.success_statuses), "failure_statuses": list(self.failure_statuses),
                "confidence": self.confidence, "seeds_per_stage": self.seeds_per_stage, "max_stages": self.max_stages,
                "seed_start": self.seed_start}

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        if self.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=self.sampler_seed, n_startup_trials=min(5, self.trials))
        if self.sampler == "gp":
            return optuna.samplers.GPSampler(seed=self.sampler_seed)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=self.sampler_seed)
        # grid: every grid point is enqueued as a fixed trial by run_search (Optuna's
        # GridSampler calls Study.stop() when exhausted, which is only legal inside
        # Study.optimize, not with ask/tell); the random sampler never gets to choose.
        return optuna.samplers.RandomSampler(seed=self.sampler_seed)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the axes' grid values (grid sampler)."""
        points: list[dict[str, Any]] = [{}]
        for axis in self.axes:
            points = [{**p, axis.name: v} for p in points for v in axis.grid_values()]
        return points


#: drivers (run_search calls) running in this process
_LIVE_DRIVERS: set[str] = set()


def _driver_is_gone(attrs: dict, stale_after_s: float) -> bool:
    """Whether the driver that started a RUNNING trial is dead: same host and its process
    (or, in this process, its run_search call) is gone, or, on another host, no stage
    finished for ``stale_after_s`` seconds. Trials without a driver mark are taken over."""
    driver, heartbeat = attrs.get("driver"), attrs.get("heartbeat")
    if not driver or heartbeat is None:
        return True
    host, pid, _ = driver.split(":", 2)
    if host != socket.gethostname():
        return time.time() - float(heartbeat) > stale_after_s
    if int(pid) == os.getpid():
        return driver not in _LIVE_DRIVERS
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class EvalRequest:
    """Runs to do: seeds ``seed_lo .. seed_hi - 1`` of the cell ``params`` (one stage of a trial)."""

    trial: int
    stage: int
    params: dict[str, Any]
    seed_lo: int
    seed_hi: int

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed_lo, self.seed_hi))


class Evaluator(Protocol):
    """Runs requests; ``results`` yields each submitted request with its records as it finishes."""

    def submit(self, request: EvalRequest) -> None: ...

    def next_result(self) -> tuple[EvalRequest, list[dict]]: ...


@dataclass
class TrialState:
    trial: optuna.trial.Trial
    number: int
    params: dict[str, Any]
    stage: int = 0
    runs: int = 0
    hits: int = 0  # successes (threshold) or failures (protocol)
    statuses: dict = field(default_factory=dict)  # runs per status
    records: list = field(default_factory=list)


@dataclass
class SearchOutcome:
    study_name: str
    trials: list[dict]  # one dict per finished trial: params, runs, fraction, interval, decision
    runs_spent: int
    best: dict | None  # threshold: smallest feasible axis value (+ its trial); protocol: best trial
    reached: bool  # threshold: a feasible value was found; protocol: always True when a trial finished
    message: str


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
    storage_path = Path(storage_path)
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage_path)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=spec.name, sampler=spec.make_sampler(),
                                direction="minimize", load_if_exists=True)
    # Trials a dead driver left RUNNING: fail them and ask for the same parameters again.
    # Trials of a driver still alive (another process sharing the study) are left alone.
    driver = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if _driver_is_gone(t.user_attrs, spec.stale_after_s):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(dict(t.params), skip_if_exists=False)
    _LIVE_DRIVERS.add(driver)
    distributions = {a.name: a.distribution() for a in spec.axes}
    for point in spec.enqueue:
        study.enqueue_trial(point, skip_if_exists=True)
    if spec.sampler == "grid":
        for point in spec.grid_points():
            study.enqueue_trial(point, skip_if_exists=True)
    summaries: list[dict] = []
    known: set[int] = set()

    def refresh() -> None:
        """Add trials finished since the last look (by this driver or another one sharing the study)."""
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)):
            if t.state == optuna.trial.TrialState.FAIL and retry_errors:
                continue  # its values may be asked again (the evaluator reruns units with error rows)
            if t.number not in known and "summary" in t.user_attrs:  # (a FAIL with a summary = every run errored)
                known.add(t.number)
                summaries.append(dict(t.user_attrs["summary"], number=t.number))

    refresh()
    runs_spent = sum(s.get("runs", 0) for s in summaries)
    grid_size = len(spec.grid_points()) if spec.sampler == "grid" else None
    in_flight: dict[int, TrialState] = {}
    started = sum(1 for s in summaries if "repeat_of" not in s)
    statuses = spec.success_statuses if spec.kind == "threshold" else spec.failure_statuses

    def budget_left() -> bool:
        committed = sum((spec.max_stages - s.stage) * spec.seeds_per_stage for s in in_flight.values())
        return runs_spent + committed + spec.max_stages * spec.seeds_per_stage <= spec.total_runs  # a whole new trial

    def submit_stage(state: TrialState) -> None:
        lo = spec.seed_start + state.stage * spec.seeds_per_stage
        evaluator.submit(EvalRequest(state.number, state.stage, {**spec.fixed, **state.params}, lo, lo + spec.seeds_per_stage))

    bisect = spec.kind == "threshold" and spec.sampler != "grid"
    asked = 0

    def flying_params(exclude: int | None = None) -> list[dict]:
        """Parameters of the trials in flight: this driver's and those another live driver runs."""
        ours = [state.params for state in in_flight.values()]
        others = [dict(t.params) for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                  if t.number not in in_flight and t.number != exclude]
        return ours + others

    def open_threshold_values(exclude: int | None = None) -> list:
        """Threshold search: axis values still able to change the answer (between the largest
        value decided infeasible below the smallest feasible one, and that one), not in flight."""
        axis = spec.axes[0]
        decided = {s["params"][axis.name]: s["decision"] for s in summaries if "repeat_of" not in s}
        feasible = [v for v, d in decided.items() if d.startswith("feasible")]
        top = min(feasible) if feasible else axis.high + 1
        bottom = max((v for v, d in decided.items() if d.startswith("infeasible") and v < top), default=axis.low - 1)
        # (a value whose runs all errored is not open either: asking again would fail again; see _outcome)
        flying = {params[axis.name] for params in flying_params(exclude)}
        return [v for v in axis.grid_values() if bottom < v < top and v not in decided and v not in flying]

    def start_trials() -> None:
        nonlocal started, asked
        while (len(in_flight) < spec.parallel_trials and started < spec.trials and budget_left()
               and (grid_size is None or started < grid_size) and not (bisect and not open_threshold_values())):
            refresh()
            trial = study.ask(distributions)
            trial.set_user_attr("driver", driver)
            trial.set_user_attr("heartbeat", time.time())
            started += 1
            asked += 1
            params = dict(trial.params)
            done = next((s for s in summaries if s["params"] == params and "repeat_of" not in s), None)
            flying = next((p for p in flying_params(exclude=trial.number) if p == params), None)
            outside = bisect and done is None and flying is None and params[spec.axes[0].name] not in open_threshold_values(trial.number)
            if done is not None or flying is not None or outside:
                if done is not None and done["decision"] != "error":  # values already decided: the same answer, no runs
                    summary = {**done, "number": trial.number, "runs": 0, "stages": 0, "repeat_of": done["number"],
                               "decision": f"repeat of trial {done['number']}"}
                    trial.set_user_attr("summary", summary)
                    study.tell(trial, done["value"])
                    summaries.append(summary)
                    known.add(trial.number)
                    if on_trial is not None:
                        on_trial(summary)
                else:  # values of a trial in flight (never evaluated twice), or outside the open
                    # bracket of a threshold search (cannot change its answer): dropped, pruned
                    reason = ("errored" if done is not None else "in flight" if flying is not None else "outside the open bracket")
                    trial.set_user_attr("skipped", reason)
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                if bisect:  # the sampler repeats itself: the next trial bisects the open bracket
                    values = open_threshold_values(trial.number)
                    if values and asked < 4 * spec.trials:  # (a guard; a repeat is always followed by a new value)
                        study.enqueue_trial({spec.axes[0].name: values[len(values) // 2]})
                        started -= 1  # a repeat costs no runs and does not count against search.trials
                continue
            state = TrialState(trial, trial.number, params)
            in_flight[trial.number] = state
            submit_stage(state)

    def decide(state: TrialState) -> str | None:
        lo, hi = wilson_interval(state.hits, state.runs, spec.confidence)
        if spec.kind == "threshold":
            if lo >= spec.target:
                return "feasible"
            if hi < spec.target:
                return "infeasible"
        else:
            best_hi = min((s["interval"][1] for s in summaries if s["decision"] != "error"), default=None)
            if best_hi is not None and lo > best_hi:
                return "worse"
        if state.stage >= spec.max_stages:
            if spec.kind == "threshold":
                return "feasible (point estimate)" if state.hits / state.runs >= spec.target else "infeasible (point estimate)"
            return "all stages"
        return None

    try:
        start_trials()
        while in_flight:
            request, records = evaluator.next_result()
            if on_records is not None:
                on_records(request, records)
            state = in_flight[request.trial]
            ran = [r for r in records if r.get("status") != "error"]  # a failed task's rows are not runs
            state.runs += len(ran)
            state.hits += sum(1 for r in ran if r.get("status") in statuses)
            for r in ran:
                state.statuses[r.get("status")] = state.statuses.get(r.get("status"), 0) + 1
            state.stage += 1
            state.trial.set_user_attr("heartbeat", time.time())
            runs_spent += len(ran)
            if not ran:  # the whole stage failed: the trial fails (its error rows are stored), others go on
                summary = {"number": state.number, "params": state.params, "runs": state.runs, "stages": state.stage,
                           "fraction": math.nan, "interval": [math.nan, math.nan], "decision": "error", "value": math.nan}
                state.trial.set_user_attr("summary", summary)
                study.tell(state.trial, state=optuna.trial.TrialState.FAIL)
                summaries.append(summary)  # in the outcome and trials table; never asked again (rerun: retry_errors)
                known.add(state.number)
                del in_flight[state.number]
                if on_trial is not None:
                    on_trial(summary)
                start_trials()
                continue
            decision = decide(state)
            if decision is None:
                submit_stage(state)
                continue
            fraction = state.hits / state.runs
            interval = wilson_interval(state.hits, state.runs, spec.confidence)
            if spec.kind == "threshold":
                axis = spec.axes[0]
                value = float(state.params[axis.name]) if decision.startswith("feasible") else float(axis.high) + 1 + (spec.target - fraction)
            else:
                value = fraction
            summary = {"number": state.number, "params": state.params, "runs": state.runs, "stages": state.stage,
                       "fraction": fraction, "interval": list(interval), "decision": decision, "value": value,
                       "statuses": dict(sorted(state.statuses.items()))}
            state.trial.set_user_attr("summary", summary)  # kept in the journal with the trial
            study.tell(state.trial, value)
            summaries.append(summary)
            known.add(state.number)
            del in_flight[state.number]
            if on_trial is not None:
                on_trial(summary)
            start_trials()
    finally:
        _LIVE_DRIVERS.discard(driver)
    return _outcome(spec, summaries, runs_spent)


def _outcome(spec: SearchSpec, summaries: list[dict], runs_spent: int) -> SearchOutcome:
    errored = sorted({tuple(s["params"].items()) for s in summaries if s["decision"] == "error"})
    decided = [s for s in summaries if s["decision"] != "error"]
    if summaries and not decided:
        return SearchOutcome(spec.name, summaries, runs_spent, None, False,
                             f"every trial failed ({len(summaries)} trials; their error rows are recorded; "
                             "rerun with retry_errors=true)")
    if spec.kind == "threshold":
        axis = spec.axes[0].name
        feasible = sorted((s for s in decided if s["decision"].startswith("feasible")), key=lambda s: s["params"][axis])
        infeasible = [s["params"][axis] for s in decided if s["decision"].startswith("infeasible")]
        if not feasible:
            return SearchOutcome(spec.name, summaries, runs_spent, None, False,
                                 f"not reached within budget: no {axis} in [{spec.axes[0].low}, {spec.axes[0].high}] reached "
                                 f"{spec.target:.0%} success in {len(summaries)} trials / {runs_spent} runs")
        best = feasible[0]
        below = max((v for v in infeasible if v < best["params"][axis]), default=None)
        undecided = sorted(dict(p)[axis] for p in errored if (below is None or dict(p)[axis] > below)
                           and dict(p)[axis] < best["params"][axis])
        note = f"; undecided, every run failed: {axis} = {undecided}" if undecided else ""
        return SearchOutcome(spec.name, summaries, runs_spent,
                             {**best, "threshold": best["params"][axis], "largest_infeasible_below": below,
                              "undecided_below": undecided}, True,
                             f"threshold {axis} = {best['params'][axis]} (largest infeasible below: {below}{note}), "
                             f"{runs_spent} runs")
    if not decided:
        return SearchOutcome(spec.name, summaries, runs_spent, None, False, "no trial finished within budget")
    best = min(decided, key=lambda s: (s["fraction"], -s["runs"]))
    values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
    lo, hi = best["interval"]
    return SearchOutcome(spec.name, summaries, runs_spent, best, True,
                         f"best {values}: fraction {best['fraction']:.3f} [{lo:.3f}, {hi:.3f}], {runs_spent} runs")


class InProcessEvaluator:
    """Runs each request synchronously with ``run(params, seeds) -> records`` (tests, notebooks).

    Requests finish in submission order. ``cache`` (optional dict) keeps records by
    (params, seeds) so a resumed search does not evaluate a finished request again.
    """

    def __init__(self, run, cache: dict | None = None):
        self.run = run
        self.queue: list[EvalRequest] = []
        self.cache = cache
        self.evaluated = 0

    def submit(self, request: EvalRequest) -> None:
        self.queue.append(request)

    def next_result(self) -> tuple[EvalRequest, list[dict]]:
        request = self.queue.pop(0)
        key = (tuple(sorted(request.params.items())), request.seed_lo, request.seed_hi)
        if self.cache is not None and key in self.cache:
            return request, self.cache[key]
        records = self.run(request.params, request.seeds)
        self.evaluated += 1
        if self.cache is not None:
            self.cache[key] = records
        return request, records

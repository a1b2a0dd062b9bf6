"""What a search asks (the ``search:`` block of a search file): kind, searched axes and
their ranges, target, confidence, trials, seeds per stage, stages, total runs, trials in
flight, sampler. Validated field by field (:meth:`SearchSpec.from_dict`, ConfigError naming
``search.<field>``); the engine (:mod:`ray_jobs.search.engine`) runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

from ray_jobs.errors import ConfigError

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

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` of an int or float axis (:meth:`SearchSpec.from_dict` requires both)."""
        assert self.low is not None and self.high is not None, f"axis {self.name} ({self.type}) has no range"
        return self.low, self.high

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.type == "int":
            low, high = self.bounds
            return optuna.distributions.IntDistribution(int(low), int(high), step=int(self.step or 1), log=self.log)
        if self.type == "float":
            low, high = self.bounds
            return optuna.distributions.FloatDistribution(float(low), float(high), step=self.step, log=self.log)
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def contains(self, value) -> bool:
        """Whether ``value`` is a value of this axis (in range, or one of the choices)."""
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = self.bounds
        return low <= value <= high and (self.type == "float" or float(value).is_integer())

    def grid_values(self) -> list:
        if self.type == "categorical":
            return list(self.choices)
        low, high = self.bounds
        if self.type == "int":
            return list(range(int(low), int(high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ConfigError(f"search.axes.{self.name}.step", "the grid sampler needs a step for a float axis")
        count = int(math.floor((high - low) / self.step + 1e-9)) + 1  # never past high
        return [round(low + i * self.step, 12) for i in range(count)]  # no accumulated float noise


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
    def from_dict(raw: dict[str, Any]) -> SearchSpec:
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
            raise ConfigError(
                "search.axes", "give at least one searched axis, e.g. {width: {type: int, low: 4, high: 64}}"
            )
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
                    raise ConfigError(
                        f"search.axes.{axis_name}.low", f"need numbers low <= high, got {low!r}, {high!r}"
                    )
                if a.get("log") and low <= 0:
                    raise ConfigError(f"search.axes.{axis_name}.low", "a log axis needs low > 0")
                step = a.get("step")
                if step is not None:
                    if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
                        raise ConfigError(
                            f"search.axes.{axis_name}.step", f"must be a number > 0 (or null), got {step!r}"
                        )
                    if t == "int" and not float(step).is_integer():
                        raise ConfigError(
                            f"search.axes.{axis_name}.step", f"an int axis needs an integer step, got {step!r}"
                        )
                    if a.get("log"):
                        raise ConfigError(
                            f"search.axes.{axis_name}.step", "a log axis takes no step (Optuna samples it continuously)"
                        )
                if t == "int" and not (float(low).is_integer() and float(high).is_integer()):
                    raise ConfigError(
                        f"search.axes.{axis_name}.low", f"an int axis needs integer ends, got {low!r}, {high!r}"
                    )
            axes.append(
                SearchAxis(
                    axis_name,
                    t,
                    a.get("low"),
                    a.get("high"),
                    a.get("step"),
                    bool(a.get("log", False)),
                    tuple(a.get("choices") or ()),
                )
            )
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
            name=name,
            kind=kind,
            axes=tuple(axes),
            fixed=dict(raw.get("fixed") or {}),
            target=float(raw.get("target", 0.99)),
            success_statuses=tuple(raw.get("success_statuses", ("global",))),
            failure_statuses=tuple(raw.get("failure_statuses", ("spurious",))),
            confidence=float(raw.get("confidence", 0.99)),
            trials=raw.get("trials", 20),
            seeds_per_stage=raw.get("seeds_per_stage", 25),
            max_stages=raw.get("max_stages", 4),
            total_runs=raw.get("total_runs", 100_000),
            parallel_trials=raw.get("parallel_trials", 2),
            sampler=raw.get("sampler", "tpe"),
            sampler_seed=raw.get("sampler_seed", 0),
            seed_start=raw.get("seed_start", 0),
            stale_after_s=raw.get("stale_after_s", 3600.0),
            enqueue=tuple(dict(point) for point in (raw.get("enqueue") or ()) if isinstance(point, dict)),
        )
        if len(spec.enqueue) != len(raw.get("enqueue") or ()):
            raise ConfigError("search.enqueue", "must be a list of {axis: value} mappings, one per trial to run first")
        names = {axis.name: axis for axis in axes}
        for point in spec.enqueue:
            if set(point) != set(names):
                raise ConfigError(
                    "search.enqueue", f"each entry gives every searched axis ({', '.join(names)}), got {point}"
                )
            for key, value in point.items():
                if not names[key].contains(value):
                    raise ConfigError(f"search.enqueue.{key}", f"{value!r} is outside the searched range of {key}")
        for key in ("trials", "seeds_per_stage", "max_stages", "total_runs", "parallel_trials"):
            value = getattr(spec, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"search.{key}", f"must be an integer >= 1, got {value!r}")
        if (
            isinstance(spec.stale_after_s, bool)
            or not isinstance(spec.stale_after_s, (int, float))
            or not spec.stale_after_s > 0
        ):
            raise ConfigError("search.stale_after_s", f"must be a number of seconds > 0, got {spec.stale_after_s!r}")
        if not 0 < spec.target <= 1:
            raise ConfigError("search.target", f"must be in (0, 1], got {spec.target!r}")
        if not 0 < spec.confidence < 1:
            raise ConfigError("search.confidence", f"must be in (0, 1), got {spec.confidence!r}")
        if spec.sampler not in SAMPLERS:
            raise ConfigError("search.sampler", f"{spec.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if spec.total_runs < spec.max_stages * spec.seeds_per_stage:
            raise ConfigError(
                "search.total_runs",
                f"must allow one whole trial (max_stages x seeds_per_stage = "
                f"{spec.max_stages * spec.seeds_per_stage}), got {spec.total_runs}",
            )
        if spec.sampler == "grid":
            spec.grid_points()  # a float axis without a step has no grid: ConfigError naming it
        return spec

    def identity(self) -> dict[str, Any]:
        """The settings that decide a trial's runs and verdict (not the budget, sampler or
        concurrency): two specs with the same identity may share a study's finished trials."""
        return {
            "kind": self.kind,
            "axes": [a.__dict__ for a in self.axes],
            "fixed": self.fixed,
            "target": self.target,
            "success_statuses": list(self.success_statuses),
            "failure_statuses": list(self.failure_statuses),
            "confidence": self.confidence,
            "seeds_per_stage": self.seeds_per_stage,
            "max_stages": self.max_stages,
            "seed_start": self.seed_start,
        }

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

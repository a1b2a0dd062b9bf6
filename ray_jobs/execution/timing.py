"""Where an invocation's time goes, measured by the service itself (no profiler, no patching).

A driver (:mod:`ray_jobs.sweep`, :mod:`ray_jobs.search.driver`; :mod:`ray_jobs.cli` for the
compose step) times its phases with one :class:`Timings`: ``compose`` (Hydra config),
``plan`` (validate, plan, the resume check), ``ray_start`` (start of or connection to the
cluster), ``session_open`` (driver lock, results directory, saved config, MLflow store),
``loop`` (the execution loop's own time: submit, ``ray.wait``, ``ray.get``, progress),
``record`` (fragments written by the driver), ``search`` (a search's Optuna ask / tell and
journal), ``mlflow`` (parent run, cells' or trials'
child runs, the final logging), ``compact`` (fragments merged after the units), ``report``
(the report built and written) and ``ray_stop`` (after the parent run is closed: in the
result only). Phases nest: a phase counted inside another is taken out of the outer one, so
the phases add up to the time the driver spent in them (no second counted twice). Besides wall seconds, each phase
has the process's CPU seconds (``time.process_time``: every thread of the driver, Ray's
included); ``driver_cpu_per_unit_ms`` is the CPU the driver spent in the loop and in
recording, per unit recorded.

The loop's span (its first submit to its end: everything the driver did meanwhile, the
cells' MLflow children included) is kept beside, wall and CPU. The figures are returned in
the driver's result (``SweepResult.timings``, ``SearchResult.timings``) and logged on the
MLflow parent run as ``timing/<phase>_s`` and ``timing/<phase>_cpu_s`` (the phases done
before the parent's final logging), ``timing/driver_cpu_per_unit_ms``,
``timing/units_recorded``, ``timing/loop_span_s``, ``timing/loop_span_cpu_s`` and
``timing/peak_rss_mib`` (the driver's peak resident memory when its loop ended).
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: the phases, in the order a driver goes through them
PHASES = (
    "compose",
    "plan",
    "ray_start",
    "session_open",
    "loop",
    "record",
    "search",
    "mlflow",
    "compact",
    "report",
    "ray_stop",
)
#: prefix of the timing metrics on the MLflow parent run
METRIC_PREFIX = "timing/"


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB): ``VmHWM`` of /proc/self/status on Linux
    (``ru_maxrss`` there would carry the peak of the process that exec'd this one), else
    ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class Timings:
    """Wall and CPU seconds per phase of one invocation, and the units it recorded."""

    wall_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    units_recorded: int = 0
    peak_rss_mib: float = 0.0  # the driver's peak resident memory when its loop ended
    loop_span_s: float = 0.0  # from the loop's first submit to its end: all the driver did meanwhile
    loop_span_cpu_s: float = 0.0
    _claimed: list[float] = field(default_factory=lambda: [0.0, 0.0], repr=False)  # wall, CPU counted so far

    def add(self, name: str, wall: float, cpu: float) -> None:
        """Count ``wall`` / ``cpu`` seconds for phase ``name``."""
        self.wall_s[name] = self.wall_s.get(name, 0.0) + wall
        self.cpu_s[name] = self.cpu_s.get(name, 0.0) + cpu
        self._claimed[0] += wall
        self._claimed[1] += cpu

    def stopwatch(self, name: str) -> Stopwatch:
        """A stopwatch of phase ``name`` for code that cannot sit in one block (a generator)."""
        return Stopwatch(self, name)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name``, less the phases counted inside it."""
        watch = self.stopwatch(name)
        try:
            yield
        finally:
            watch.lap()

    @contextmanager
    def around(self, manager: AbstractContextManager[T], *, enter: str, leave: str) -> Iterator[T]:
        """``manager`` (e.g. the Ray cluster) with its entry timed as phase ``enter`` and its exit as ``leave``."""
        leaving = self.stopwatch(leave)
        with ExitStack() as stack:
            stack.callback(leaving.lap)  # last: after the manager's exit
            with self.phase(enter):
                value = stack.enter_context(manager)
            try:
                yield value
            finally:
                leaving.restart()

    @property
    def driver_cpu_per_unit_ms(self) -> float:
        """The driver's CPU in the loop and in recording, per unit recorded (ms; NaN without units)."""
        if not self.units_recorded:
            return float("nan")
        return 1e3 * (self.cpu_s.get("loop", 0.0) + self.cpu_s.get("record", 0.0)) / self.units_recorded

    def metrics(self) -> dict[str, float]:
        """The figures as MLflow metrics of the parent run (``timing/...``)."""
        out = {}
        for name in (name for name in [*PHASES, *sorted(set(self.wall_s) - set(PHASES))] if name in self.wall_s):
            out[f"{METRIC_PREFIX}{name}_s"] = self.wall_s[name]
            out[f"{METRIC_PREFIX}{name}_cpu_s"] = self.cpu_s[name]
        out.update(
            {
                f"{METRIC_PREFIX}driver_cpu_per_unit_ms": self.driver_cpu_per_unit_ms,
                f"{METRIC_PREFIX}units_recorded": float(self.units_recorded),
                f"{METRIC_PREFIX}loop_span_s": self.loop_span_s,
                f"{METRIC_PREFIX}loop_span_cpu_s": self.loop_span_cpu_s,
                f"{METRIC_PREFIX}peak_rss_mib": self.peak_rss_mib,
            }
        )
        return out

    def as_dict(self) -> dict:
        """Plain numbers (JSON): wall and CPU per phase, units, per-unit CPU, peak memory."""
        return {
            "wall_s": dict(self.wall_s),
            "cpu_s": dict(self.cpu_s),
            "units_recorded": self.units_recorded,
            "driver_cpu_per_unit_ms": self.driver_cpu_per_unit_ms,
            "loop_span_s": self.loop_span_s,
            "loop_span_cpu_s": self.loop_span_cpu_s,
            "peak_rss_mib": self.peak_rss_mib,
        }

    def line(self) -> str:
        """One line for the console: seconds per phase, then the per-unit CPU."""
        phases = ", ".join(f"{name} {self.wall_s[name]:.2f}" for name in PHASES if name in self.wall_s)
        per_unit = f"; driver CPU {self.driver_cpu_per_unit_ms:.2f} ms per unit" if self.units_recorded else ""
        return f"timings (s): {phases}{per_unit}"


class Stopwatch:
    """Counts the time since it was started or last lapped as its phase, less the phases
    counted in between (so phases never count the same second twice)."""

    def __init__(self, timings: Timings, name: str):
        self.timings, self.name = timings, name
        self.restart()

    def restart(self) -> None:
        """Start again from now (the time since the last lap is nobody's)."""
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.claimed = tuple(self.timings._claimed)

    def lap(self) -> None:
        """Count the phase's time since the last (re)start, and restart."""
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        claimed_wall, claimed_cpu = (now - then for now, then in zip(self.timings._claimed, self.claimed))
        self.timings.add(self.name, max(0.0, wall - claimed_wall), max(0.0, cpu - claimed_cpu))
        self.restart()

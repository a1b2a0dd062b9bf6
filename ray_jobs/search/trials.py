"""What a search asks for and keeps per trial, apart from the Optuna bookkeeping of
:class:`~ray_jobs.search.engine.Searcher`: the runs of one stage of a trial
(:class:`EvalRequest`), who runs them (:class:`Proposals`, :class:`Evaluator`, the
in-process :class:`InProcessEvaluator`), a trial's counts so far (:class:`TrialState`), the
Wilson interval that decides it, and whether the driver of a RUNNING trial is gone."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna

from landscape_core.statistics import wilson_interval as _wilson


def wilson_interval(successes: int, runs: int, confidence: float) -> tuple[float, float]:
    """The report's Wilson interval; (0, 1) before any run (nothing known yet)."""
    return (0.0, 1.0) if runs == 0 else _wilson(successes, runs, confidence)


#: drivers (started Searchers, not closed) running in this process
_LIVE_DRIVERS: set[str] = set()


def _driver_is_gone(attrs: dict, stale_after_s: float) -> bool:
    """Whether the driver that started a RUNNING trial is dead: same host and its process
    (or, in this process, its Searcher is closed) is gone, or, on another host, no stage
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


class Proposals(Protocol):
    """Takes the requests a :class:`Searcher` proposes (whoever runs them tells it the records)."""

    def submit(self, request: EvalRequest) -> None: ...


class Evaluator(Proposals, Protocol):
    """Runs requests; ``next_result`` gives a submitted request with its records as it finishes."""

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

"""Phase timings measured by the service itself (:mod:`ray_jobs.execution.timing`).

- nested phases and stopwatches never count a second twice: the inner phase is taken out
  of the outer one, a stopwatch does not count the phases counted while it ran;
- a sweep returns its timings in ``SweepResult.timings`` (every phase it went through, the
  units recorded, the driver CPU per unit) and logs them on the MLflow parent as
  ``timing/<phase>_s``; a second run (nothing to run) starts no Ray and records no unit.
"""

from __future__ import annotations

import math
import time

import pytest

from ray_jobs.config import compose_config
from ray_jobs.execution.timing import PHASES, Timings
from ray_jobs.sweep import run_sweep
from tests.conftest import TINY_SWEEP, mlflow_client


def test_nested_phases_and_stopwatches_count_each_second_once():
    timings = Timings()
    started = time.perf_counter()
    with timings.phase("plan"):
        time.sleep(0.05)
        with timings.phase("record"):
            time.sleep(0.10)
    watch = timings.stopwatch("loop")
    time.sleep(0.05)
    with timings.phase("record"):
        time.sleep(0.05)
    watch.lap()
    total = time.perf_counter() - started
    # each phase got at least its own sleeps; together exactly the time spent (a busy machine oversleeps)
    assert timings.wall_s["plan"] >= 0.05 and timings.wall_s["record"] >= 0.15 and timings.wall_s["loop"] >= 0.05
    assert sum(timings.wall_s.values()) == pytest.approx(total, abs=0.005)
    assert math.isnan(timings.driver_cpu_per_unit_ms)
    timings.units_recorded = 4
    per_unit = 1e3 * (timings.cpu_s["loop"] + timings.cpu_s["record"]) / 4
    assert timings.driver_cpu_per_unit_ms == pytest.approx(per_unit)
    metrics = timings.metrics()
    assert metrics["timing/record_s"] == timings.wall_s["record"] and metrics["timing/units_recorded"] == 4
    assert {"timing/plan_s", "timing/plan_cpu_s", "timing/loop_s", "timing/driver_cpu_per_unit_ms"} <= set(metrics)


def test_around_times_a_context_managers_entry_and_exit():
    from contextlib import contextmanager

    @contextmanager
    def slow():
        time.sleep(0.05)
        yield "inside"
        time.sleep(0.08)

    timings = Timings()
    with timings.around(slow(), enter="ray_start", leave="ray_stop") as value:
        time.sleep(0.02)
    assert value == "inside"
    assert timings.wall_s["ray_start"] >= 0.05  # (more on a busy machine, which oversleeps)
    assert timings.wall_s["ray_stop"] >= 0.08 and set(timings.wall_s) == {"ray_start", "ray_stop"}


def test_a_sweep_returns_its_phases_and_logs_them_on_the_parent(ray_session, tmp_path):
    timings = Timings()
    with timings.phase("compose"):
        cfg = compose_config([*TINY_SWEEP, f"results_dir={tmp_path}"])
    result = run_sweep(cfg, timings=timings)
    assert result.timings is timings
    phases = {"compose", "plan", "session_open", "loop", "record", "mlflow", "report"}
    assert phases <= set(timings.wall_s) <= set(PHASES)
    assert timings.units_recorded == result.units_scheduled == len(result.plan.units)
    assert 0 < timings.driver_cpu_per_unit_ms < 1e4
    assert timings.loop_span_s >= timings.wall_s["loop"] + timings.wall_s["record"] - 1e-6
    assert sum(timings.wall_s.values()) <= result.wall_s + timings.wall_s["compose"] + 1.0  # no second counted twice
    metrics = mlflow_client(tmp_path).get_run(result.parent_run_id).data.metrics
    assert metrics["timing/units_recorded"] == len(result.plan.units)
    assert metrics["timing/loop_s"] == pytest.approx(timings.wall_s["loop"])
    assert {"wall_s", "units_scheduled", "runs"} <= set(metrics)  # the parent's other metrics are still there

    again = run_sweep(compose_config([*TINY_SWEEP, f"results_dir={tmp_path}"]))
    assert again.units_scheduled == 0 and again.timings is not None
    assert again.timings.units_recorded == 0 and "loop" not in again.timings.wall_s

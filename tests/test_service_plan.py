"""Planning: stable ids, aligned seed chunks, cells from the grid (no Ray)."""

from __future__ import annotations

import math

import pytest

from landscape_core.statistics import wilson_interval
from ray_jobs.config import compose_config
from ray_jobs.plan import plan_sweep, seed_chunks
from ray_jobs.validate import validate


def plan_for(*overrides: str):
    cfg = compose_config(["sweep=smoke", *overrides])
    experiment, cells = validate(cfg)
    return plan_sweep(cfg, experiment.name, cells)


def test_grid_expands_to_cells_and_units():
    plan = plan_for("sweep.grid.k=[6,7]", "sweep.grid.n_minus_k=[0,1]", "sweep.seeds=10", "resources.chunk_size=4")
    assert [(c.params["k"], c.params["n"]) for c in plan.cells] == [(6, 6), (6, 7), (7, 7), (7, 8)]
    assert len(plan.units) == 4 * 3 and plan.runs == 40
    assert [(u.seed_lo, u.seed_hi) for u in plan.units_of(plan.cells[0].cell_id)] == [(0, 4), (4, 8), (8, 10)]
    assert all(c.params["d"] == c.params["k"] for c in plan.cells)


def test_explicit_n_axis_is_crossed_with_k():
    plan = plan_for("sweep.grid.k=[3]", "~sweep.grid.n_minus_k", "+sweep.grid.n=[3,5]")
    assert [(c.params["k"], c.params["n"]) for c in plan.cells] == [(3, 3), (3, 5)]


def test_ids_are_stable_and_depend_only_on_the_science():
    a = plan_for("sweep.grid.k=[6]")
    b = plan_for("sweep.grid.k=[6]", "resources.num_cpus=2", "results_dir=/elsewhere", "tracking=none")
    assert [u.unit_id for u in a.units] == [u.unit_id for u in b.units]
    c = plan_for("sweep.grid.k=[6]", "protocol.step=0.05")
    assert {u.unit_id for u in a.units}.isdisjoint(u.unit_id for u in c.units)
    assert a.cells[0].cell_id != c.cells[0].cell_id


def test_growing_the_seed_count_keeps_the_full_chunks():
    small = plan_for("sweep.grid.k=[6]", "sweep.seeds=50", "resources.chunk_size=25")
    large = plan_for("sweep.grid.k=[6]", "sweep.seeds=100", "resources.chunk_size=25")
    assert {u.unit_id for u in small.units} <= {u.unit_id for u in large.units}


def test_seed_chunks_are_aligned():
    assert seed_chunks(0, 7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert seed_chunks(10, 4, 10) == [(10, 14)]


@pytest.mark.parametrize(
    "successes,trials,lo,hi",
    [  # 99% Wilson, z = 2.5758, worked by hand
        (0, 1000, 0.0, 0.006591),
        (126, 1000, 0.10141, 0.15552),  # Table 1, k = 8: 12.6 %
        (500, 1000, 0.45941, 0.54059),
    ],
)
def test_wilson_interval_99(successes, trials, lo, hi):
    got_lo, got_hi = wilson_interval(successes, trials, 0.99)
    assert got_lo == pytest.approx(lo, abs=1e-5) and got_hi == pytest.approx(hi, abs=1e-5)
    assert got_lo <= successes / trials <= got_hi


def test_wilson_interval_without_trials_is_nan():
    assert all(math.isnan(x) for x in wilson_interval(0, 0, 0.99))

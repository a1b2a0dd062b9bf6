"""The teacher_student experiment's smoke case (tests/smoke_cases/__init__.py)."""

from __future__ import annotations

from tests.conftest import TINY_CELLS, TINY_SEEDS, TINY_SWEEP, TINY_UNITS
from tests.smoke_cases import QUIET, FailingCase, SmokeCase

# tests/conftest.py's TINY_SWEEP (sweeps/smoke.yaml cut: k = 2, 3; n = k, k + 1; 6 seeds, 3 per unit;
# 4000 iterations), shared with tests/test_service_e2e.py
CASE = SmokeCase(
    overrides=tuple(TINY_SWEEP),
    sweep="smoke",
    cells=TINY_CELLS,
    seeds=TINY_SEEDS,
    units=TINY_UNITS,
    failing=FailingCase(
        ("experiment.fail_on_seeds=[4]", "sweep.grid.k=[3]", "sweep.grid.n_minus_k=[0]", *QUIET),
        seeds=(3, 4, 5),
        cell={"k": 3, "n": 3},
        runs=3,
        errors=3,
    ),
)

"""The auer_minima experiment's smoke case (tests/smoke_cases/__init__.py)."""

from __future__ import annotations

from tests.smoke_cases import QUIET, FailingCase, SmokeCase

# sweeps/auer_minima_smoke.yaml: (n, d) = (4, 1), (4, 2); 32 starts, 16 per unit
CASE = SmokeCase(
    overrides=("sweep=auer_minima_smoke",),
    sweep="auer_minima_smoke",
    cells=2,
    seeds=32,
    units=4,
    failing=FailingCase(
        ("experiment.fail_on_seeds=[3]", "sweep.grid.d=[1]", "sweep.seeds=4", "resources.chunk_size=2", *QUIET),
        seeds=(2, 3),
        cell={"n": 4, "d": 1},
        runs=2,
        errors=2,
    ),
)

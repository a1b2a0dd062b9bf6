"""The string_sampling experiment's smoke case (tests/smoke_cases/__init__.py)."""

from __future__ import annotations

from tests.smoke_cases import QUIET, FailingCase, SmokeCase

# L0 = 0.1, 0.05 x width 4, 8; 2 pairs per cell, one pair per unit
CASE = SmokeCase(
    overrides=("sweep=dss_smoke",),
    sweep="dss_smoke",
    cells=4,
    seeds=2,
    units=8,
    failing=FailingCase(
        ("experiment.fail_on_seeds=[1]", "sweep.grid.threshold=[0.1]", "sweep.grid.width=[4]", *QUIET),
        seeds=(1,),
        cell={"threshold": 0.1, "width": 4},
        runs=1,
        errors=1,
    ),
)

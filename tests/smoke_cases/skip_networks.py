"""The skip_networks experiment's smoke case (tests/smoke_cases/__init__.py)."""

from __future__ import annotations

from tests.smoke_cases import QUIET, FailingCase, SmokeCase

# N = 8; M / N = 0.5, 1; plain / skip x sgd / rand; sigmoid; 4 seeds, one unit per cell
CASE = SmokeCase(
    overrides=("sweep=skip_smoke",),
    sweep="skip_smoke",
    cells=8,
    seeds=4,
    units=8,
    failing=FailingCase(
        (
            "experiment.fail_on_seeds=[3]",
            "sweep.grid.M_over_n=[1]",
            "sweep.grid.architecture=[skip]",
            "sweep.grid.mode=[rand]",
            "resources.chunk_size=2",
            *QUIET,
        ),
        seeds=(2, 3),
        cell={"M": 8, "mode": "rand"},
        runs=2,
        errors=2,
    ),
)

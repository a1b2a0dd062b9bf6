"""The width_threshold experiment's smoke case (tests/smoke_cases/__init__.py)."""

from __future__ import annotations

from tests.smoke_cases import QUIET, FailingCase, SmokeCase

# n = 6; width / n = 0.5, 1, 2; depth 2; tanh and relu; 4 seeds, chunks of 2
CASE = SmokeCase(
    overrides=("sweep=width_threshold_smoke",),
    sweep="width_threshold_smoke",
    cells=6,
    seeds=4,
    units=12,
    failing=FailingCase(
        ("experiment.fail_on_seeds=[3]", "sweep.grid.activation=[tanh]", "sweep.grid.width_over_n=[1]", *QUIET),
        seeds=(2, 3),
        cell={"width": 6, "activation": "tanh"},
        runs=2,
        errors=2,
    ),
)

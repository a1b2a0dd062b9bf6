"""The wide_bad_minima experiment's smoke case (tests/smoke_cases/__init__.py)."""

from __future__ import annotations

from tests.smoke_cases import QUIET, FailingCase, SmokeCase

# sweeps/wide_bad_minima_smoke.yaml cut to width 2, depth 2: tanh and the linear control; 2 seeds, one per unit
CASE = SmokeCase(
    overrides=("sweep=wide_bad_minima_smoke", "sweep.grid.width=[2]", "sweep.grid.depth=[2]", "resources.chunk_size=1"),
    sweep="wide_bad_minima_smoke",
    cells=2,
    seeds=2,
    units=4,
    failing=FailingCase(
        ("experiment.fail_on_seeds=[1]", "sweep.grid.activation=[tanh]", *QUIET),
        seeds=(1,),
        cell={"width": 2, "depth": 2, "activation": "tanh"},
        runs=1,
        errors=1,
    ),
)

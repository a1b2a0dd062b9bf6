"""The null_run experiment's smoke case (tests/smoke_cases/__init__.py)."""

from __future__ import annotations

from tests.smoke_cases import QUIET, FailingCase, SmokeCase

# sweeps/scale_null.yaml cut to 2 x 2 cells x 4 seeds, 2 per unit
CASE = SmokeCase(
    overrides=(
        "sweep=scale_null",
        "sweep.grid.width=[1,2]",
        "sweep.grid.depth=[1,3]",
        "sweep.seeds=4",
        "resources.chunk_size=2",
    ),
    sweep="scale_null",
    cells=4,
    seeds=4,
    units=8,
    failing=FailingCase(
        ("experiment.fail_on_seeds=[3]", "sweep.grid.width=[2]", "sweep.grid.depth=[3]", *QUIET),
        seeds=(2, 3),
        cell={"width": 2, "depth": 3},
        runs=2,
        errors=2,
    ),
)

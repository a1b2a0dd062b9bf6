"""The mode_connectivity experiment's smoke case (tests/smoke_cases/__init__.py)."""

from __future__ import annotations

from tests.smoke_cases import QUIET, FailingCase, SmokeCase

# sweeps/mode_connectivity_smoke.yaml: widths 8, 16 x plain / skip; 2 pairs per cell, one unit per cell
CASE = SmokeCase(
    overrides=("sweep=mode_connectivity_smoke",),
    sweep="mode_connectivity_smoke",
    cells=4,
    seeds=2,
    units=4,
    failing=FailingCase(
        (
            "experiment.fail_on_seeds=[1]",
            "sweep.grid.width=[8]",
            "sweep.grid.network=[plain]",
            "resources.chunk_size=1",
            *QUIET,
        ),
        seeds=(1,),
        cell={"width": 8, "network": "plain"},
        runs=1,
        errors=1,
    ),
)

"""The landscape_probes experiment's smoke case (tests/smoke_cases/__init__.py)."""

from __future__ import annotations

from tests.smoke_cases import QUIET, FailingCase, SmokeCase

# sweeps/landscape_probes_smoke.yaml cut to width 4: interpolation / slice x plain / skip; 4 seeds, 2 per unit
CASE = SmokeCase(
    overrides=("sweep=landscape_probes_smoke", "sweep.grid.width=[4]", "resources.chunk_size=2"),
    sweep="landscape_probes_smoke",
    cells=4,
    seeds=4,
    units=8,
    failing=FailingCase(
        ("experiment.fail_on_seeds=[3]", "sweep.grid.probe=[slice]", "sweep.grid.architecture=[plain]", *QUIET),
        seeds=(2, 3),
        cell={"probe": "slice", "architecture": "plain", "width": 4},
        runs=2,
        errors=2,
    ),
)

"""The single_neuron experiment's smoke case (tests/smoke_cases/__init__.py)."""

from __future__ import annotations

from tests.smoke_cases import QUIET, FailingCase, SmokeCase

# sweeps/single_neuron_smoke.yaml: relu, sigmoid, figure2; 16 starts, one unit per cell
CASE = SmokeCase(
    overrides=("sweep=single_neuron_smoke",),
    sweep="single_neuron_smoke",
    cells=3,
    seeds=16,
    units=3,
    failing=FailingCase(
        (
            "experiment.fail_on_seeds=[3]",
            "sweep.grid.activation=[relu]",
            "sweep.seeds=4",
            "resources.chunk_size=2",
            *QUIET,
        ),
        seeds=(2, 3),
        cell={"activation": "relu"},
        runs=2,
        errors=2,
    ),
)

"""The body of one Ray task: run one work unit's seeds as one batch, return its records.

It imports the registry and, through it, only the experiment of the unit (no pandas, no
pyarrow, no other experiment).

Plain Python (no Ray import): :mod:`ray_jobs.execution` wraps :func:`run_unit` in a Ray
remote function with the resources the config asks for (its ``unit_task``, which then
builds and encodes the unit's Parquet rows with pyarrow, outside this module).
"""

from __future__ import annotations

import os
from typing import Any

from ray_jobs.experiments.registry import get_experiment

#: environment variable naming a file each injected fault appends a line to (tests count attempts)
FAULT_LOG_ENV = "LANDSCAPE_FAULT_LOG"


class InjectedFault(RuntimeError):
    """Raised on purpose for seeds listed in ``experiment.fail_on_seeds`` (testing hook)."""


def select_device(use_gpu: bool) -> str:
    """CUDA when the task was given a GPU and torch sees one, CPU otherwise."""
    if use_gpu:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def run_unit(
    experiment_name: str, params: dict[str, Any], seeds: list[int], *, use_gpu: bool, torch_threads: int
) -> list[dict]:
    """Records of ``seeds`` of the cell ``params`` (one per seed, in order).

    Raises :class:`InjectedFault` when a seed is in ``params["fail_on_seeds"]``, and
    whatever the experiment raises; the driver turns a raise into ``error`` rows.
    """
    import torch

    fail_on_seeds = params.get("fail_on_seeds")
    injected = sorted(set(seeds) & set(fail_on_seeds)) if fail_on_seeds else []
    if injected:
        if os.environ.get(FAULT_LOG_ENV):
            with open(os.environ[FAULT_LOG_ENV], "a") as log:
                log.write(f"{seeds[0]}-{seeds[-1]} {os.getpid()}\n")
        raise InjectedFault(f"fault injected for seeds {injected} (experiment.fail_on_seeds)")
    torch.set_num_threads(torch_threads)
    records = get_experiment(experiment_name).run(params, seeds, select_device(use_gpu))
    returned = [record.get("seed") for record in records]
    if returned != list(seeds):
        raise RuntimeError(f"experiment returned records for seeds {returned[:5]}..., expected {list(seeds)[:5]}...")
    return records

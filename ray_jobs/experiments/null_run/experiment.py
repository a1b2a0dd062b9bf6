"""A null experiment: one record per seed, returned at once, no torch and no science.

It exists to measure the service itself at the scale its users work at (planning, the
driver loop, the store, the report, MLflow; ``benchmarks/bench_scale.py``, sweep
``scale_null``): a unit's task costs microseconds, so whatever a sweep of it takes is the
service's overhead.

The folder is ``null_run``, not ``null``: Hydra reads ``experiment=null`` as "no experiment
group", and ``null`` is a word of the service's own messages (``override /protocol: null``).

Each record is deterministic in (cell, seed): ``u`` = a 64-bit mix (splitmix64) of a
SHA-256 of the cell's parameters and the seed, mapped to [0, 1); the run is ``spurious``
when ``u < depth / (width + depth)``, else ``global`` (so the report has fractions that
fall with width and rise with depth, with Wilson intervals), and ``final_loss = u``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import Experiment, is_int
from ray_jobs.experiments.grid import GridAxes, grid_points

_MASK = (1 << 64) - 1


def _mix(value: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit integer from any 64-bit integer."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def cell_key(params: dict[str, Any]) -> int:
    """A 64-bit key of the cell's parameters (canonical JSON, SHA-256)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def null_records(params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
    """One record per seed of the cell ``params`` (``width``, ``depth``), in order."""
    width, depth = int(params["width"]), int(params["depth"])
    threshold = depth / (width + depth)
    key = cell_key(params)
    records = []
    for seed in seeds:
        u = _mix(key ^ (int(seed) & _MASK)) / 2.0**64
        records.append(
            {
                "seed": seed,
                "status": "spurious" if u < threshold else "global",
                "final_loss": u,
                "grad_norm": 0.0,
                "iterations": 0,
                "wall_s": 0.0,
                "device": device,
                "width": width,
                "depth": depth,
            }
        )
    return records


class NullRun(Experiment):
    """No work: one record per seed at once (docstring of the module). Grid axes ``width``
    and ``depth`` (positive integers, both required): they only shape the recorded values."""

    name = "null_run"
    help = "width, depth (required, integers >= 1): no work, one record per seed at once (scale benchmark)"
    tiny_budget = ("sweep.seeds=2",)  # already instant; fewer seeds only keep the plan small
    grid_axes = GridAxes(("width", "depth"), required={"width": "[1,2]", "depth": "[1,2]"})
    statuses = ("global", "spurious")
    table_axes = ("width", "depth")
    columns = {"width": "int64", "depth": "int64"}
    experiment_keys = ("name", "fail_on_seeds")
    groups = ()

    def cells(self, cfg) -> list[dict[str, Any]]:
        _, grid, fail_on_seeds = self.read_config(cfg)
        cells = []
        for values in grid_points(self.grid_axes.check(grid, self.name)):
            for axis in ("width", "depth"):
                if not is_int(values[axis]) or values[axis] < 1:
                    raise ConfigError(f"sweep.grid.{axis}", f"must be integers >= 1, got {values[axis]!r}")
            cells.append(
                {
                    "experiment": self.name,
                    "width": values["width"],
                    "depth": values["depth"],
                    "fail_on_seeds": fail_on_seeds,
                }
            )
        return cells

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        return null_records(params, seeds, device)


EXPERIMENT = NullRun

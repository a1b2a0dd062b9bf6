"""Plan a sweep: grid -> cells (one resolved parameter dict each) -> work units.

A work unit is one cell x one chunk of consecutive seeds; it is the unit of scheduling
(one Ray task), of storage (one Parquet fragment) and of resume. Chunks are aligned on
``seed_start + i * chunk_size``, so growing ``sweep.seeds`` keeps the ids of the full
chunks already done.

Ids are stable hashes of canonical JSON: ``cell_id`` of the cell's parameters (experiment,
grid point, protocol; never resources, sweep name or results location), ``unit_id`` of
the cell's parameters plus the seed range. Same science + same seeds = same id, on any
machine, in any process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def stable_hash(value: Any, length: int) -> str:
    """The first ``length`` hex digits of SHA-256 of ``canonical_json(value)``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class Cell:
    """One grid point: ``params`` is everything a run of it depends on."""

    cell_id: str
    params: dict[str, Any] = field(hash=False)

    @property
    def config_json(self) -> str:
        return canonical_json(self.params)


@dataclass(frozen=True)
class WorkUnit:
    """One cell x seeds ``seed_lo .. seed_hi - 1``: one Ray task, one Parquet fragment."""

    unit_id: str
    cell: Cell
    seed_lo: int
    seed_hi: int

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed_lo, self.seed_hi))


@dataclass(frozen=True)
class SweepPlan:
    """All cells and work units of one sweep invocation, in grid order."""

    sweep: str
    experiment: str
    cells: list[Cell]
    units: list[WorkUnit]

    def units_of(self, cell_id: str) -> list[WorkUnit]:
        return [unit for unit in self.units if unit.cell.cell_id == cell_id]

    @property
    def runs(self) -> int:
        return sum(unit.seed_hi - unit.seed_lo for unit in self.units)


def make_cell(params: dict[str, Any]) -> Cell:
    return Cell(cell_id=stable_hash(params, 12), params=params)


def make_unit(cell: Cell, seed_lo: int, seed_hi: int) -> WorkUnit:
    unit_id = stable_hash({"cell": cell.params, "seeds": [seed_lo, seed_hi]}, 16)
    return WorkUnit(unit_id=unit_id, cell=cell, seed_lo=seed_lo, seed_hi=seed_hi)


def seed_chunks(seed_start: int, seeds: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges covering ``seed_start .. seed_start + seeds - 1``, aligned on chunk_size."""
    stop = seed_start + seeds
    return [(lo, min(lo + chunk_size, stop)) for lo in range(seed_start, stop, chunk_size)]


def plan_sweep(cfg, experiment_name: str, cell_params: list[dict[str, Any]]) -> SweepPlan:
    """Cells and units of a validated config (``cell_params`` from the experiment)."""
    cells = list(
        {cell.cell_id: cell for cell in map(make_cell, cell_params)}.values()
    )  # a repeated grid value is one cell
    chunks = seed_chunks(int(cfg.sweep.get("seed_start", 0)), int(cfg.sweep.seeds), int(cfg.resources.chunk_size))
    units = [make_unit(cell, lo, hi) for cell in cells for lo, hi in chunks]
    return SweepPlan(sweep=str(cfg.sweep.name), experiment=experiment_name, cells=cells, units=units)

"""``landscape-verify``: check every file of a sweep's results, running nothing.

Every compacted part the manifest lists and every loose fragment is read whole (every data
page of every column decoded, batch by batch) and checked: readable, the key columns
(:data:`~ray_jobs.store.KEY_COLUMNS`) of their types, ``unit_id`` and ``seed`` present,
and its rows those of its units: a fragment holds only its own unit's rows, a part
exactly the units the manifest lists and the rows it counts, and each unit one row per
seed of its seed range (the seeds of the sweep's plan, from the saved ``config.yaml``,
for a grid sweep; a contiguous range for a search, whose units are chosen as it runs).
Nothing is moved or written: the next driver of the sweep moves what cannot be read to
``<sweep>/quarantine/`` and runs its units again (:meth:`ray_jobs.store.ResultsStore.heal`).
Resume checks footers only (:func:`ray_jobs.store.footer_problem`); this command also
finds damaged data pages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ray_jobs.plan import WorkUnit
from ray_jobs.store import FRAGMENT_SUFFIX, ResultsStore, footer_problem
from ray_jobs.store.health import read_failure

#: rows decoded at a time (bounded memory on a part of 10^6 rows with vector columns)
BATCH_ROWS = 65_536


@dataclass
class Verification:
    """What :func:`verify` found: one line per problem (``<path>: <what is wrong>``)."""

    problems: list[str] = field(default_factory=list)
    files: int = 0
    rows: int = 0
    units: int = 0
    outside_plan: int = 0  # units recorded that the saved config's plan does not have (an earlier grid)
    not_recorded: int = 0  # units of the plan without rows (not run yet, or moved to quarantine): not a problem

    def line(self) -> str:
        outside = f", {self.outside_plan} of them outside the saved config's plan" if self.outside_plan else ""
        plural = "s" if self.not_recorded != 1 else ""
        missing = f" ({self.not_recorded} unit{plural} of the plan not recorded yet)" if self.not_recorded else ""
        return (
            f"{self.files} files, {self.units} units{outside}{missing}, {self.rows} rows checked: "
            f"{len(self.problems) or 'no'} problem{'' if len(self.problems) == 1 else 's'}"
        )


def _seeds_by_unit(path: Path) -> dict[str, list[int]] | str:
    """Every row's (unit_id, seed) of ``path``, decoding every column; or why it cannot be read."""
    seeds: dict[str, list[int]] = {}
    try:
        handle = pq.ParquetFile(path)
        missing = [name for name in ("unit_id", "seed") if name not in handle.schema_arrow.names]
        if missing:
            return f"no {missing[0]} column: its rows cannot be told apart"
        for batch in handle.iter_batches(batch_size=BATCH_ROWS):
            units = batch.column("unit_id").to_pylist()
            for unit, seed in zip(units, batch.column("seed").to_pylist()):
                seeds.setdefault(unit, []).append(seed)
    except (OSError, pa.ArrowException) as exc:
        reason = read_failure(exc)
        if reason is None:
            raise
        return reason
    return seeds


def _unit_problem(unit_id: str, seeds: list[int], units: Mapping[str, WorkUnit] | None) -> str | None:
    """Why ``seeds`` (the rows' seeds, in file order) are not one row per seed of the unit."""
    ordered = sorted(seeds)
    if units is not None and unit_id in units:
        expected = units[unit_id].seeds
        if ordered != expected:
            return (
                f"unit {unit_id} has {len(seeds)} rows (seeds {_span(ordered)}), its plan "
                f"{len(expected)} (seeds {_span(expected)})"
            )
        return None
    if ordered != list(range(ordered[0], ordered[0] + len(ordered))):
        return f"unit {unit_id} has {len(seeds)} rows for the seeds {_span(ordered)}: not one per seed of a range"
    return None


def _span(seeds: list[int]) -> str:
    return f"{seeds[0]}..{seeds[-1]}" if seeds else "none"


def verify(store: ResultsStore, units: Mapping[str, WorkUnit] | None = None) -> Verification:
    """Check every file of ``store`` (see the module's docstring) against ``units`` (the plan's
    units by id; None: each unit's seeds a contiguous range). Reads only."""
    result = Verification()
    manifest = store.manifest()
    listed: list[tuple[Path, set[str] | None, int | None]] = [
        (store.runs_dir / part, set(info["units"]), int(info["rows"])) for part, info in sorted(manifest.parts.items())
    ]
    loose = [path for path in store.fragment_paths() if path.name[: -len(FRAGMENT_SUFFIX)] not in manifest.unit_part]
    seen: set[str] = set()
    for path, expected, rows in [*listed, *[(path, None, None) for path in loose]]:
        result.files += 1
        unit_id = None if expected is not None else path.name[: -len(FRAGMENT_SUFFIX)]
        if not path.exists():
            result.problems.append(f"{path}: missing, though the manifest lists it")
            continue
        problem = footer_problem(path, unit_id=unit_id, rows=rows)
        seeds = _seeds_by_unit(path) if problem is None else problem
        if isinstance(seeds, str):
            result.problems.append(f"{path}: {seeds}")
            continue
        result.rows += sum(map(len, seeds.values()))
        result.units += len(seeds)
        seen.update(seeds)
        result.outside_plan += 0 if units is None else len(seeds.keys() - units.keys())
        wanted = expected if expected is not None else {path.name[: -len(FRAGMENT_SUFFIX)]}
        if seeds.keys() != wanted:
            extra, absent = sorted(seeds.keys() - wanted), sorted(wanted - seeds.keys())
            result.problems.append(
                f"{path}: holds {len(extra)} units it should not ({', '.join(extra[:3])}) and lacks "
                f"{len(absent)} it should hold ({', '.join(absent[:3])})"
            )
            continue
        for unit, unit_seeds in sorted(seeds.items()):
            problem = _unit_problem(unit, unit_seeds, units)
            if problem is not None:
                result.problems.append(f"{path}: {problem}")
    result.not_recorded = 0 if units is None else len(units.keys() - seen)
    return result

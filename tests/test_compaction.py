"""Compaction of a sweep's fragments (ray_jobs/compaction.py) and the readers of the dataset.

Checked: the rows are the same before and after (every unit once, the same values), the
manifest lists each compacted unit once, a unit with error rows stays loose, parts are
merged again up to max_rows, row groups have row_group_rows rows; a process killed at
each step of a compaction (and at random moments) loses and duplicates nothing once the
next driver starts; the four readers of docs/architecture.md (pandas, pyarrow, polars,
DuckDB) return the same rows over the compacted dataset as over the fragments.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.compaction import compact
from ray_jobs.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
KEY = ["unit_id", "seed"]


def _fragment(cell: str, unit: str, seeds: range, *, status: str = "global", extra: dict | None = None) -> pa.Table:
    rows = [
        {
            "sweep": "s",
            "experiment": "null",
            "cell_id": cell,
            "unit_id": unit,
            "seed": seed,
            "status": status,
            "final_loss": seed * 0.5,
            "final_weights": [float(seed), float(seed) + 0.25],
            **(extra or {}),
        }
        for seed in seeds
    ]
    return pa.Table.from_pylist(rows)


def _store(
    tmp_path: Path, *, cells: int = 3, units: int = 8, seeds: int = 5, errors: set[tuple[int, int]] = frozenset()
) -> ResultsStore:
    store = ResultsStore(tmp_path / "results", "s")
    store.prepare()
    for c in range(cells):
        for u in range(units):
            status = "error" if (c, u) in errors else "global"
            store.write_fragment(
                f"u{c}x{u:03d}", _fragment(f"c{c}", f"u{c}x{u:03d}", range(u * seeds, (u + 1) * seeds), status=status)
            )
    return store


def _rows(table) -> pd.DataFrame:
    frame = table if isinstance(table, pd.DataFrame) else table.to_pandas()
    frame = frame[["cell_id", "unit_id", "seed", "status", "final_loss"]]
    return frame.sort_values(KEY).reset_index(drop=True)


def test_compaction_keeps_every_row_once_and_lists_every_unit_in_the_manifest(tmp_path):
    store = _store(tmp_path, errors={(1, 2)})
    before, units = _rows(store.read()), store.completed_unit_ids()
    result = compact(store, row_group_rows=10)
    assert (result.fragments, result.parts_written, result.kept_loose, result.rows) == (23, 3, 1, 115)
    assert _rows(store.read()).equals(before) and store.completed_unit_ids() == units
    assert [path.name for path in store.fragment_paths()] == ["u1x002.parquet"]  # the error unit stays loose
    assert store.unit_ids_with_errors() == {"u1x002"}
    manifest = json.loads(store.manifest_path.read_text())
    listed = [unit for part in manifest["parts"].values() for unit in part["units"]]
    assert sorted(listed) == sorted(units - {"u1x002"}) and len(listed) == len(set(listed))
    for relative, part in manifest["parts"].items():
        path = store.runs_dir / relative
        assert path.parent.name == part["cell_id"] and path.parent.parent == store.compacted_dir
        meta = pq.read_metadata(path)
        assert meta.num_rows == part["rows"] and {
            meta.row_group(i).num_rows for i in range(meta.num_row_groups - 1)
        } == {10}
        assert set(pq.read_table(path, columns=["unit_id"]).column("unit_id").to_pylist()) == set(part["units"])
    # the vectors survive, and a projected read of some units returns only those
    picked = store.read(["u0x001", "u2x007", "u1x002", "nope"], columns=["unit_id", "seed", "final_weights", "absent"])
    assert sorted(set(picked.column("unit_id").to_pylist())) == ["u0x001", "u1x002", "u2x007"]
    assert (
        picked.column_names == ["unit_id", "seed", "final_weights", "absent"]
        and picked.column("absent").null_count == 15
    )
    weights = dict(zip(picked.column("seed").to_pylist(), picked.column("final_weights").to_pylist()))
    assert weights[36] == [36.0, 36.25]
    assert store.read(columns=["seed"], statuses=["error"]).num_rows == 5


def test_a_second_compaction_merges_the_cells_small_parts_and_splits_at_max_rows(tmp_path):
    store = _store(tmp_path, cells=2, units=4, seeds=5)
    compact(store, max_rows=30, row_group_rows=10)
    for u in range(4, 10):  # more units of cell c0 arrive
        store.write_fragment(f"u0x{u:03d}", _fragment("c0", f"u0x{u:03d}", range(u * 5, (u + 1) * 5)))
    result = compact(store, max_rows=30, row_group_rows=10)
    assert result.parts_rewritten == 1 and result.fragments == 6
    parts = store.manifest().parts
    rows_of_c0 = sorted(info["rows"] for info in parts.values() if info["cell_id"] == "c0")
    assert rows_of_c0 == [20, 30]  # 50 rows of c0: one full part (a unit is never split) and the rest
    assert len(store.read().to_pandas()) == 70 and not store.fragment_paths()
    assert len([p for p in store.compacted_dir.rglob("*") if p.is_file()]) == len(parts) == 3


def test_files_differing_in_columns_are_compacted_under_one_schema(tmp_path):
    store = ResultsStore(tmp_path / "results", "s")
    store.prepare()
    store.write_fragment("old", _fragment("c", "old", range(0, 3)).drop_columns(["final_weights"]))
    store.write_fragment("new", _fragment("c", "new", range(3, 6), extra={"probe": 1.5}))
    compact(store)
    table = store.read().sort_by("seed")
    assert table.column("probe").to_pylist() == [None] * 3 + [1.5] * 3
    assert table.column("final_weights").to_pylist()[:3] == [None] * 3


# --- killed compactions ---------------------------------------------------------------------

_KILLER = """
import os, signal, sys
from ray_jobs.compaction import compact
from ray_jobs.store import ResultsStore
moment, root = sys.argv[1], sys.argv[2]
store = ResultsStore(root, "s")
store.prepare()
die = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
if moment == "after the commit":
    write = store.write_manifest
    store.write_manifest = lambda manifest: (write(manifest), die())
if moment == "while deleting":
    unlink = type(store.runs_dir).unlink
    calls = []
    def unlink_then_die(self, *args, **kwargs):
        unlink(self, *args, **kwargs)
        calls.append(self)
        if len(calls) == 5:
            die()
    type(store.runs_dir).unlink = unlink_then_die
compact(store, max_rows=40, row_group_rows=10, on_part=die if moment == "after the first part" else None)
"""


def _assert_each_unit_once(store: ResultsStore, before: pd.DataFrame, units: set[str]) -> None:
    assert _rows(store.read()).equals(before)
    assert store.completed_unit_ids() == units
    globbed = _rows(pd.read_parquet(store.runs_dir))  # a directory read after the recovery
    assert globbed.equals(before)


@pytest.mark.parametrize("moment", ["after the first part", "after the commit", "while deleting"])
def test_a_compaction_killed_at_each_step_loses_and_duplicates_nothing(tmp_path, moment):
    store = _store(tmp_path)
    before, units = _rows(store.read()), store.completed_unit_ids()
    store.close()
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, moment, str(store.results_dir)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _rows(store.read()).equals(before) and store.completed_unit_ids() == units  # exact even before recovery
    store.prepare()  # the next driver: recovery
    _assert_each_unit_once(store, before, units)
    leftovers = [p.name for p in store.runs_dir.rglob(".*")]
    assert leftovers == [], leftovers
    compact(store)  # and the compaction completes
    _assert_each_unit_once(store, before, units)
    assert not store.fragment_paths()


@pytest.mark.slow
def test_compactions_killed_at_random_moments_lose_and_duplicate_nothing(tmp_path):
    """A compaction SIGKILLed at random moments, again and again, new units arriving between."""
    store = _store(tmp_path, cells=4, units=120, seeds=2)
    before, units = _rows(store.read()), store.completed_unit_ids()
    store.close()
    rng = random.Random(0)
    for _ in range(6):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from ray_jobs.compaction import compact; from ray_jobs.store import ResultsStore; "
                f"s = ResultsStore({str(store.results_dir)!r}, 's'); s.prepare(); "
                "compact(s, max_rows=100, row_group_rows=50)",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.3, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _rows(store.read()).equals(before) and store.completed_unit_ids() == units
        store.prepare()
        _assert_each_unit_once(store, before, units)
        store.close()
        for _ in range(3):  # new units keep arriving between compactions
            unit = f"late{len(units)}"
            store.write_fragment(
                unit, _fragment("c0", unit, range(10_000 + len(units) * 2, 10_000 + len(units) * 2 + 2))
            )
            units = units | {unit}
        before = _rows(store.read())


# --- the four readers -----------------------------------------------------------------------


def _readers(runs: Path) -> dict[str, pd.DataFrame]:
    """The docs' examples (docs/architecture.md, "Reading the results")."""
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds

    return {
        "pandas": pd.read_parquet(runs, columns=["cell_id", "unit_id", "seed", "status", "final_loss"]),
        "pyarrow": ds.dataset(runs, format="parquet")
        .to_table(columns=["cell_id", "unit_id", "seed", "status", "final_loss"])
        .to_pandas(),
        "polars": pl.scan_parquet(f"{runs}/**/*.parquet")
        .select("cell_id", "unit_id", "seed", "status", "final_loss")
        .collect()
        .to_pandas(),
        "duckdb": duckdb.sql(
            f"SELECT cell_id, unit_id, seed, status, final_loss FROM read_parquet('{runs}/**/*.parquet')"
        ).df(),
    }


def test_pandas_pyarrow_polars_and_duckdb_read_the_same_rows_before_and_after_compaction(tmp_path):
    store = _store(tmp_path, errors={(0, 3)})
    expected = _rows(store.read())
    for name, frame in _readers(store.runs_dir).items():
        assert _rows(frame).equals(expected), name
    compact(store, row_group_rows=10)
    assert list(store.compacted_dir.rglob("*.parquet")) and store.fragment_paths()
    for name, frame in _readers(store.runs_dir).items():
        assert _rows(frame).equals(expected), name
    import duckdb

    counts = duckdb.sql(
        "SELECT cell_id, count(*) AS runs, avg(final_loss) AS mean_loss "
        f"FROM read_parquet('{store.runs_dir}/**/*.parquet') "
        "GROUP BY cell_id ORDER BY cell_id"
    ).df()
    assert counts["runs"].tolist() == [40, 40, 40]
    assert np.allclose(counts["mean_loss"], expected.groupby("cell_id")["final_loss"].mean().to_numpy())


# --- through the service --------------------------------------------------------------------


def test_a_sweep_compacts_after_itself_resumes_from_the_manifest_and_reports_the_same(
    ray_session, tmp_path, driver_env
):
    """The tiny sweep with a failing seed, compacted after it runs: the error unit stays loose
    and is retried, the rest is read from the parts; a rerun schedules nothing; the report
    equals the one over the fragments; landscape-compact is refused while a driver holds
    the sweep and compacts what a sweep without compaction left."""
    from ray_jobs.config import compose_config
    from ray_jobs.sweep import run_sweep
    from tests.conftest import TINY_SWEEP, TINY_UNITS, run_cli

    results = tmp_path / "results"
    args = [*TINY_SWEEP, f"results_dir={results}", "experiment.fail_on_seeds=[4]", "compaction.min_fragments=1"]
    first = run_sweep(compose_config(args))
    store = ResultsStore(results, "smoke")
    assert first.units_failed == 4 and len(store.fragment_paths()) == 4  # units of seed 4 (one per cell) stay loose
    assert len(store.manifest().unit_part) == TINY_UNITS - 4 and len(store.manifest().parts) == 4  # one part per cell
    rows = pd.read_parquet(store.runs_dir)
    assert len(rows) == 24 and not rows.duplicated(["cell_id", "seed"]).any()
    again = run_sweep(compose_config(args))
    assert again.units_scheduled == 0
    retried = run_sweep(compose_config([*args, "retry_errors=true"]))
    assert retried.units_scheduled == 4 and len(pd.read_parquet(store.runs_dir)) == 24

    plain = tmp_path / "plain"
    run_sweep(
        compose_config(
            [*TINY_SWEEP, f"results_dir={plain}", "experiment.fail_on_seeds=[4]", "compaction.after_sweep=false"]
        )
    )
    assert len(ResultsStore(plain, "smoke").fragment_paths()) == TINY_UNITS
    copy = tmp_path / "copy"
    shutil.copytree(plain, copy)

    holder = ResultsStore(copy, "smoke")
    holder.prepare()  # a driver holds the sweep
    proc = run_cli([f"results_dir={copy}", "sweep_name=smoke"], env=driver_env, entry="compact_main")
    assert proc.returncode == 2 and "being run by another driver" in proc.stderr.strip().splitlines()[-1], proc.stderr
    holder.close()
    proc = run_cli(
        [f"results_dir={copy}", "sweep_name=smoke", "compaction.row_group_rows=0"], env=driver_env, entry="compact_main"
    )
    assert proc.returncode == 2 and "compaction.row_group_rows" in proc.stderr, proc.stderr
    proc = run_cli(
        [f"results_dir={copy}", "sweep_name=smoke", "compaction.row_group_rows=2"], env=driver_env, entry="compact_main"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("compaction: 4 fragments -> 4 parts, 12 rows")
    assert len(ResultsStore(copy, "smoke").fragment_paths()) == 4
    # the report over the parts equals the report over the fragments, value for value
    proc = run_cli(
        [f"results_dir={copy}", "sweep_name=smoke", "report.figure=false"], env=driver_env, entry="report_main"
    )
    assert proc.returncode == 0, proc.stderr
    assert (copy / "smoke" / "report" / "table.csv").read_text() == (
        plain / "smoke" / "report" / "table.csv"
    ).read_text()

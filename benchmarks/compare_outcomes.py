"""Seed-by-seed comparison of two teacher-student sweeps over the same seeds (issue 13 item 3).

``full``: a sweep under the full protocol (e.g. ``safran_shamir_table1``); ``fast``: the
same cells and seeds with runs that end once their class is decided (e.g.
``safran_shamir_table1_proven``: ``early_stop_global`` and ``stop_when_proven``). Rows are
matched on (k, n, d, teacher, seed), the science of a run apart from the stopping rule;
the classification (``status``) must be identical for every matched seed. Prints one
markdown table (per cell: runs, statuses, runs that differ, spurious runs ended by a proof,
gradient steps and summed run time in each sweep) and exits 1 when a status differs or
a seed of ``fast`` has no match in ``full``.

    python -m benchmarks.compare_outcomes RESULTS/safran_shamir_table1 RESULTS/safran_shamir_table1_proven
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

KEYS = ["k", "n", "d", "teacher", "seed"]
COLUMNS = [*KEYS, "status", "iterations", "wall_s", "proven_iteration"]


def read(sweep_dir: Path) -> pd.DataFrame:
    """The rows of a sweep directory (``<results_dir>/<sweep>``), only the columns compared."""
    rows = pd.read_parquet(sweep_dir / "runs")
    return rows[[column for column in COLUMNS if column in rows.columns]]


def compare(full: pd.DataFrame, fast: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-cell summary, the rows whose status differs or that have no match in ``full``)."""
    merged = fast.merge(full, on=KEYS, how="left", suffixes=("_fast", "_full"), validate="one_to_one")
    merged["same"] = merged["status_fast"] == merged["status_full"]
    proven = "proven_iteration_fast" if "proven_iteration_fast" in merged else "proven_iteration"
    summary = (
        merged.groupby(["k", "n"])
        .apply(
            lambda cell: pd.Series(
                {
                    "runs": len(cell),
                    "full: statuses": ", ".join(
                        f"{s} {c}" for s, c in cell["status_full"].value_counts().sort_index().items()
                    ),
                    "identical": int(cell["same"].sum()),
                    "differ": int((~cell["same"]).sum()),
                    "proven spurious": int(cell[proven].notna().sum()) if proven in cell else 0,
                    "steps full": int(cell["iterations_full"].sum()),
                    "steps fast": int(cell["iterations_fast"].sum()),
                    "run time full (s)": round(float(cell["wall_s_full"].sum()), 1),
                    "run time fast (s)": round(float(cell["wall_s_fast"].sum()), 1),
                }
            ),
            include_groups=False,
        )
        .reset_index()
    )
    return summary, merged[~merged["same"]]


def markdown(table: pd.DataFrame) -> str:
    """A markdown table of ``table`` (no extra dependency)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("full", type=Path, help="sweep directory under the full protocol")
    parser.add_argument("fast", type=Path, help="sweep directory with early-ending runs")
    args = parser.parse_args(argv)
    summary, differing = compare(read(args.full), read(args.fast))
    print(markdown(summary))
    total = int(summary["runs"].sum())
    print(f"\n{total - len(differing)} of {total} runs classified identically; {len(differing)} differ.")
    if len(differing):
        print(markdown(differing.head(20)))
    return 1 if len(differing) else 0


if __name__ == "__main__":
    sys.exit(main())

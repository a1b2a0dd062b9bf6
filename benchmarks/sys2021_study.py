"""The 2021 study's table and figure from its sweeps' reports (issue 27 item 2): global % with
its Wilson 99% interval, spurious and certified spurious %, families (full symmetry group),
iterations and compute-seconds per (k, n), for n = k and n = k + 1 together, and the figure
global % vs k for both.

    python -m benchmarks.sys2021_study R/sys2021_global_rates_proven R/sys2021_global_rates_n_k_plus_1 \\
        R/sys2021_global_rates_n7_k6 --csv docs/results/sys2021_study.csv --figure docs/results/sys2021_study.png

Each argument is a sweep directory (``<results_dir>/<sweep>``) whose report was written
(``report/table.csv``, the report's columns ``k``, ``n``, ``runs``, ``frac_global`` and its
``_lo`` / ``_hi``, ``frac_spurious``, ``frac_certified_spurious``, ``n_families``,
``frac_not_converged``, ``frac_diverged``, ``iterations_mean``, ``wall_s``). ``--compare-2018``:
report tables of our 2018 reproductions (Table 1, n = k; Table 2, n = k + 1; step 0.1, 1,000 seeds,
the same initial points seed for seed): their global % beside each (k, n), and in the figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ray_jobs.report.tables import markdown_table

COLUMNS = {
    "k": "k",
    "n": "n",
    "runs": "runs",
    "global": "global % [99% CI]",
    "frac_spurious": "spurious %",
    "frac_certified_spurious": "certified spurious %",
    "n_families": "families",
    "frac_not_converged": "not conv. %",
    "frac_diverged": "diverged %",
    "iterations_mean": "iterations (mean)",
    "wall_s": "compute-s",
}


def read(sweep_dirs: list[Path]) -> pd.DataFrame:
    """The report rows of every sweep, one per (k, n), sorted by n - k then k."""
    table = pd.concat([pd.read_csv(path / "report" / "table.csv") for path in sweep_dirs], ignore_index=True)
    table = table.assign(offset=table["n"] - table["k"]).sort_values(["offset", "k"]).reset_index(drop=True)
    return table


def with_2018(table: pd.DataFrame, paths: list[Path]) -> pd.DataFrame:
    """``table`` with ``global_2018`` (the 2018 reproduction's frac_global at the same (k, n), NaN
    where it has none)."""
    old = pd.concat([pd.read_csv(path)[["k", "n", "frac_global"]] for path in paths], ignore_index=True)
    old = old.rename(columns={"frac_global": "global_2018"}).drop_duplicates(["k", "n"])
    return table.merge(old, on=["k", "n"], how="left")


def summary(table: pd.DataFrame) -> pd.DataFrame:
    out = table.assign(
        **{
            "global": [
                f"**{100 * g:.1f}** [{100 * lo:.1f}, {100 * hi:.1f}]"
                for g, lo, hi in zip(table["frac_global"], table["frac_global_lo"], table["frac_global_hi"])
            ],
            **{
                column: (100 * table[column]).round(1)
                for column in ("frac_spurious", "frac_certified_spurious", "frac_not_converged", "frac_diverged")
            },
            "iterations_mean": table["iterations_mean"].round(0).astype(int),
            "wall_s": table["wall_s"].round(0).astype(int),
        }
    )
    columns = dict(COLUMNS)
    if "global_2018" in table:
        out["global_2018"] = (100 * table["global_2018"]).round(1)
        columns["global_2018"] = "2018 reproduction: global %"
    return out[list(columns)].rename(columns=columns)


def figure(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 3.6))
    for offset, label in ((0, "n = k"), (1, "n = k + 1")):
        rows = table[table["offset"] == offset]
        if rows.empty:
            continue
        g = 100 * rows["frac_global"]
        err = [g - 100 * rows["frac_global_lo"], 100 * rows["frac_global_hi"] - g]
        line = axis.errorbar(rows["k"], g, yerr=err, marker="o", capsize=3, label=f"{label}, 2021 (step 5/k)")
        if "global_2018" in rows and rows["global_2018"].notna().any():
            axis.plot(rows["k"], 100 * rows["global_2018"], "x--", color=line[0].get_color(), alpha=0.6,
                      label=f"{label}, our 2018 reproduction (step 0.1)")  # fmt: skip
    axis.set_xlabel("k (teacher neurons)")
    axis.set_ylabel("runs reaching the global minimum (%)")
    axis.set_ylim(-2, 102)
    axis.legend(fontsize=7)
    axis.set_title("2021 protocol (step 5/k), 99% Wilson intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def markdown(table: pd.DataFrame) -> str:
    """``table`` as GitHub markdown (every cell as ``str`` gives it)."""
    header = [str(column) for column in table.columns]
    return "\n".join(markdown_table(header, [[str(cell) for cell in row] for row in table.itertuples(index=False)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", type=Path, nargs="+", help="sweep directories with a written report")
    parser.add_argument("--csv", type=Path, default=None, help="write the report rows here")
    parser.add_argument("--figure", type=Path, default=None, help="write global %% vs k here (PNG)")
    parser.add_argument("--compare-2018", type=Path, nargs="*", default=[], help="2018 reproduction tables")
    args = parser.parse_args(argv)
    table = read(args.sweeps)
    if args.compare_2018:
        table = with_2018(table, args.compare_2018)
    print(markdown(summary(table)))
    print(f"\n{int(table['runs'].sum())} runs, {table['wall_s'].sum():.0f} compute-seconds")
    if args.csv is not None:
        table.drop(columns="offset").to_csv(args.csv, index=False)
    if args.figure is not None:
        figure(table, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())

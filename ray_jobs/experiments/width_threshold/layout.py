"""The width-threshold report: the two threshold tables (rows activation x depth, columns
width / n; % of runs ending global and % with a full-rank last hidden layer, with
intervals) above the per-cell table, their CSVs, and a heat map."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from landscape_core.names import ACTIVATION_NAMES
from ray_jobs.report.figures import pyplot, save_figure
from ray_jobs.report.layout import ReportLayout
from ray_jobs.report.tables import num, pct, pct_ci, ratio_label, ratio_table

if TYPE_CHECKING:
    from ray_jobs.store import ResultsStore

THRESHOLD_PNG = "width_threshold_heatmap.png"
#: the threshold tables as CSV (rows activation x depth x n, columns width / n)
THRESHOLD_CSVS = {"global": "threshold_global.csv", "full_rank": "threshold_full_rank.csv"}
#: the threshold tables: (key of THRESHOLD_CSVS, fraction column, title)
THRESHOLD_TABLES = (
    ("global", "frac_global", "Runs ending at a global minimum (training loss < loss_tol)"),
    ("full_rank", "frac_full_rank", "Runs ending with a full-rank last hidden layer Z_{L-1}(X) (rank = min(n, width))"),
)


def threshold_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The width-threshold tables: one row per (activation, depth, n_samples) in table order,
    one column ``width/n=<r>`` per width / n (fraction of runs, 0..1), for each table of
    :data:`THRESHOLD_TABLES`; the Wilson bounds are in ``<column>_lo`` / ``<column>_hi``."""
    return {
        name: ratio_table(
            table, keys=["activation", "depth", "n_samples"], ratio="width_over_n", label="width/n", column=column
        )
        for name, column, _ in THRESHOLD_TABLES
    }


def width_threshold_markdown(table: pd.DataFrame, layout: ReportLayout, *, sweep: str, confidence: float) -> str:
    """The two width-threshold tables, then the per-cell table, as GitHub markdown."""
    level = f"{100 * confidence:g}%"
    ratios = sorted(table["width_over_n"].unique())
    several_n = table["n_samples"].nunique() > 1
    lines = [
        f"# {sweep}",
        "",
        f"Per cell: runs, fraction per status and fraction with a full-rank Z_{{L-1}}(X), in %, "
        f"with the Wilson {level} interval in brackets.",
        "",
    ]
    n_text = "" if several_n else f", n = {int(table['n_samples'].iloc[0])}"
    shared = int(table.duplicated(["activation", "depth", "n_samples", "width_over_n"]).sum())
    if shared:
        lines += [
            f"Note: {shared} cells share a table position with another cell (other settings, e.g. an earlier "
            "invocation with different overrides); the threshold tables show the first, the per-cell table all.",
            "",
        ]
    for name, _column, title in THRESHOLD_TABLES:
        grid = threshold_tables(table)[name]
        lines += [f"## {title}{n_text}", ""]
        head = ["activation", "depth", *(["n"] if several_n else []), *(f"width/n = {ratio_label(r)}" for r in ratios)]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for row in grid.to_dict("records"):
            cells = [str(row["activation"]), str(row["depth"]), *([str(row["n_samples"])] if several_n else [])]
            for r in ratios:
                key = f"width/n={ratio_label(r)}"
                cells.append(pct_ci(row[key], row[f"{key}_lo"], row[f"{key}_hi"], whole=True))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    head = [
        "activation",
        "depth",
        "n",
        "width",
        "width/n",
        "runs",
        f"global % [{level} CI]",
        f"spurious % [{level} CI]",
        "saddle %",
        "not conv. %",
        "diverged %",
        f"full rank % [{level} CI]",
        "full rank at init %",
        "mean loss (spurious)",
        "mean min eig (spurious)",
        "iterations mean / max",
        "errors",
    ]
    lines += ["## Per cell", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in table.to_dict("records"):
        iterations_max = row.get("iterations_max")
        cells = [
            str(row["activation"]),
            str(row["depth"]),
            str(row["n_samples"]),
            str(row["width"]),
            ratio_label(row["width_over_n"]),
            str(row["runs"]),
            f"{pct(row['frac_global'])} [{pct(row['frac_global_lo'])}, {pct(row['frac_global_hi'])}]",
            f"{pct(row['frac_spurious'])} [{pct(row['frac_spurious_lo'])}, {pct(row['frac_spurious_hi'])}]",
            pct(row["frac_saddle"]),
            pct(row["frac_not_converged"]),
            pct(row["frac_diverged"]),
            f"{pct(row['frac_full_rank'])} [{pct(row['frac_full_rank_lo'])}, {pct(row['frac_full_rank_hi'])}]",
            pct(row["frac_init_full_rank"]),
            num(row["mean_objective_spurious"]),
            num(row["mean_min_eig_spurious"]),
            f"{num(row['iterations_mean'], 4)} / "
            f"{'' if iterations_max is None or pd.isna(iterations_max) else int(iterations_max)}",
            str(row["errors"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_width_threshold(table: pd.DataFrame, path: Path, *, sweep: str, confidence: float) -> Path | None:
    """Heat maps of the two threshold tables (one row of panels per n_samples)."""
    if table.empty or not {"activation", "depth", "width_over_n", "n_samples"} <= set(table.columns):
        return None
    plt = pyplot()
    import numpy as np

    ratios = sorted(table["width_over_n"].unique())
    ns = list(dict.fromkeys(table["n_samples"]))
    tables = threshold_tables(table)
    n_rows = max(len(tables["global"][tables["global"]["n_samples"] == n]) for n in ns)
    fig, axes = plt.subplots(
        len(ns),
        2,
        figsize=(2.6 + 1.1 * len(ratios) * 2, 1.4 + (0.42 * n_rows + 0.6) * len(ns)),
        squeeze=False,
        sharey="row",
        layout="constrained",
    )
    image = None
    for row_index, n in enumerate(ns):
        for col_index, (name, _, _title) in enumerate(THRESHOLD_TABLES):
            grid = tables[name][tables[name]["n_samples"] == n]
            values = np.array(
                [[row[f"width/n={ratio_label(r)}"] for r in ratios] for row in grid.to_dict("records")], dtype=float
            )
            ax = axes[row_index][col_index]
            image = ax.imshow(100 * values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
            for i in range(values.shape[0]):
                for j in range(values.shape[1]):
                    if not np.isnan(values[i, j]):
                        ax.text(
                            j,
                            i,
                            f"{100 * values[i, j]:.0f}",
                            ha="center",
                            va="center",
                            fontsize=8,
                            color="black" if values[i, j] > 0.6 else "white",
                        )
            ax.set_xticks(range(len(ratios)), [ratio_label(r) for r in ratios])
            if col_index == 0:
                ax.set_yticks(range(len(grid)), [f"{a}, L={d}" for a, d in zip(grid["activation"], grid["depth"])])
            below = [index for index, r in enumerate(ratios) if r < 1]
            if below and len(below) < len(ratios):  # the threshold: width >= n to the right of this line
                ax.axvline(below[-1] + 0.5, color="red", linewidth=1.2, linestyle="--")
            ax.set_xlabel("width / n")
            short = "ending global" if name == "global" else "full-rank $Z_{L-1}(X)$ at the end"
            ax.set_title(f"{short} (% of runs), n = {n}", fontsize=9)
    fig.suptitle(f"{sweep}: runs per cell, dashed line = width / n crossing 1", fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.8, label="% of runs")
    return save_figure(fig, path)


class WidthThresholdLayout(ReportLayout):
    """The width-threshold report: the two threshold tables (global minimum reached, full
    rank of the last hidden layer) by width / n, the per-cell table and the heatmap."""

    table_axes = ("activation", "depth", "n_samples", "width_over_n", "width")
    fraction_columns = ("full_rank", "init_full_rank", "ntk_full_rank")
    axis_order = {"activation": ACTIVATION_NAMES}

    def extra_aggregates(self, ran: pd.DataFrame, *, confidence: float) -> dict[str, Any]:
        """``iterations_max``, ``n_stalled`` and ``mean_last_layer_rank`` of the cell's runs."""
        iterations = ran["iterations"].dropna()
        return {
            "iterations_max": int(iterations.max()) if len(iterations) else None,
            "n_stalled": int(ran["stalled"].fillna(False).astype(bool).sum()) if "stalled" in ran else 0,
            "mean_last_layer_rank": float(ran["last_layer_rank"].mean()) if len(ran) else math.nan,
        }

    def markdown(self, table: pd.DataFrame, *, sweep: str, confidence: float) -> str:
        return width_threshold_markdown(table, self, sweep=sweep, confidence=confidence)

    def files(
        self, table: pd.DataFrame, store: ResultsStore, *, sweep: str, confidence: float, figure: bool
    ) -> list[Path]:
        """The threshold tables as CSVs and, with ``figure``, the heatmap."""
        paths = []
        for name, grid in threshold_tables(table).items():
            path = store.report_dir / THRESHOLD_CSVS[name]
            store.save_text(path, grid.to_csv(index=False))
            paths.append(path)
        if figure:
            png = plot_width_threshold(table, store.report_dir / THRESHOLD_PNG, sweep=sweep, confidence=confidence)
            paths += [png] if png is not None else []
        return paths


LAYOUT = WidthThresholdLayout

"""The skip-networks report's figures: full-rank Psi against M / N (rank layout) and
trainability per cell (otherwise)."""

from __future__ import annotations

from pathlib import Path

from ray_jobs.experiments.skip_networks.tables import rank_tables, trainability_table
from ray_jobs.report.figures import pyplot, save_figure
from ray_jobs.report.layout import ReportLayout
from ray_jobs.report.tables import is_missing


def _bar(length: float) -> float:
    """An error-bar length in %: 0 when unknown, and never negative (a Wilson bound at a
    fraction of 0 or 1 can sit 1e-17 on the wrong side of it)."""
    return 0.0 if is_missing(length) else max(0.0, 100 * float(length))


def plot_rank(table, layout: ReportLayout, path: Path, *, sweep: str, confidence: float) -> Path | None:
    """% of runs with full-rank Psi at initialisation against M / N, one line per row of
    the M / N tables, Wilson intervals as error bars, a dashed line at M / N = 1; left at
    the default tolerance (sigma_max x max(N, M) x eps), right at sigma_max x rank_rtol."""
    grids = rank_tables(table, layout, confidence=confidence)
    ratios = sorted(table["M_over_n"].unique())
    plt = pyplot()
    fig, panels = plt.subplots(1, 2, figsize=(11.0, 4.6), sharey=True)
    rtol = ", ".join(f"{r:g}" for r in sorted(table["rank_rtol"].unique())) if "rank_rtol" in table else "rank_rtol"
    for ax, name, title in (
        (panels[0], "init", "default tolerance sigma_max x max(N, M) x eps"),
        (panels[1], "init_loose", f"looser tolerance sigma_max x {rtol}"),
    ):
        grid = grids[name]
        keys = [c for c in grid.columns if not c.startswith("M/N=")]
        count = len(grid)
        for index, row in enumerate(grid.to_dict("records")):
            values = [row[f"M/N={r:g}"] for r in ratios]
            lo = [row[f"M/N={r:g}_lo"] for r in ratios]
            hi = [row[f"M/N={r:g}_hi"] for r in ratios]
            dodge = 0.01 * (index - (count - 1) / 2)  # keep the interval bars apart
            ax.errorbar(
                [r + dodge for r in ratios],
                [100 * v for v in values],
                yerr=[[_bar(v - l) for v, l in zip(values, lo)], [_bar(h - v) for v, h in zip(values, hi)]],
                marker="o",
                markersize=4,
                capsize=2,
                label=", ".join(f"{k}={row[k]}" for k in keys),
            )
        ax.axvline(1.0, color="red", linestyle="--", linewidth=1)
        ax.set_xlabel("M / N (skip neurons / training samples)")
        ax.set_title(f"full rank N at init, {title}", fontsize=9)
        ax.grid(alpha=0.3)
    panels[0].set_ylabel("runs with full-rank Psi (%)")
    panels[1].legend(fontsize=7, ncol=1, loc="center right")
    fig.suptitle(f"{sweep}: Psi = N x M skip-neuron outputs ({100 * confidence:g}% Wilson intervals)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_trainability(table, layout: ReportLayout, path: Path, *, sweep: str, confidence: float) -> Path | None:
    """Two panels, one bar per cell: % reaching zero training error (Wilson interval) and
    mean test accuracy (t interval over seeds)."""
    summary = trainability_table(table, layout, confidence=confidence)
    axes = [c for c in summary.columns if c in layout.table_axes]
    labels = [
        "\n".join(f"{row[a]:g}" if isinstance(row[a], float) else str(row[a]) for a in axes)
        for row in summary.to_dict("records")
    ]
    plt = pyplot()
    import numpy as np

    x = np.arange(len(summary))
    fig, panels = plt.subplots(1, 2, figsize=(max(7.0, 0.65 * len(summary) * 2 + 2.0), 4.4))
    # one colour per setting of the axes other than the activation (e.g. architecture x mode)
    shades = [tuple(row[a] for a in axes if a != "activation") for row in summary.to_dict("records")]
    palette = {key: f"C{index % 10}" for index, key in enumerate(dict.fromkeys(shades))}
    for ax, column, title in (
        (panels[0], "frac_zero_train_error", f"reaching zero training error (%, Wilson {100 * confidence:g}%)"),
        (panels[1], "mean_test_accuracy", f"test accuracy (%, mean, t {100 * confidence:g}%)"),
    ):
        values = summary[column].to_numpy(dtype=float)
        lo = summary[f"{column}_lo"].to_numpy(dtype=float)
        hi = summary[f"{column}_hi"].to_numpy(dtype=float)
        err = np.clip(np.nan_to_num(np.array([values - lo, hi - values]), nan=0.0), 0.0, None)
        colors = [palette[key] for key in shades]
        ax.bar(x, 100 * np.nan_to_num(values), yerr=100 * err, capsize=3, color=colors)
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylim(0, 105)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{sweep}: {' / '.join(axes)} per bar", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)

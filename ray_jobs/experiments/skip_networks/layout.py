"""The skip-networks report (chosen by what the grid varies).

- ``M_over_n`` takes several values (sweep ``skip_rank``): tables with one row per setting
  of the other varying axes (activation x depth) and one column per M / N: % of runs
  whose Psi has full rank N at initialisation, the same at the looser tolerance, % full
  rank at the end (left out when every cell is ``rand``: it equals init), % reaching zero
  training error; a figure of the first two against M / N;
- otherwise (sweep ``skip_trainability``): one row per cell (architecture x mode x
  activation...): % reaching zero training error with its Wilson interval, the mean test
  accuracy with a Student-t interval over seeds, mean training loss and error; a figure.
Both also give the full per-cell table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape_core.names import ACTIVATION_NAMES
from landscape_core.statistics import t_interval, wilson_interval
from ray_jobs.report.figures import pyplot, save_figure
from ray_jobs.report.layout import ReportLayout
from ray_jobs.report.tables import is_missing, num, pct, pct_ci, ratio_table

if TYPE_CHECKING:
    from ray_jobs.store import ResultsStore

#: the paper's activations first, then the rest of the project's (display order)
ACTIVATION_ORDER = (
    "sigmoid",
    "softplus",
    "tanh",
    "relu",
    *(a for a in ACTIVATION_NAMES if a not in ("sigmoid", "softplus", "tanh", "relu")),
)

#: report files of this experiment (under report/): the M / N tables (rank layout), one CSV
#: per table of RANK_TABLES
RANK_CSVS = {
    "init": "psi_full_rank_init.csv",
    "init_loose": "psi_full_rank_init_loose.csv",
    "end": "psi_full_rank_end.csv",
    "zero_train_error": "zero_train_error.csv",
}
RANK_PNG = "psi_full_rank_vs_M_over_n.png"
#: per cell: zero training error and test accuracy with their intervals (both layouts)
SUMMARY_CSV = "skip_summary.csv"
TRAINABILITY_PNG = "trainability.png"


def skip_aggregates(ran, *, confidence: float) -> dict[str, Any]:
    """Means over the runs of a cell that have the value (a diverged run has no test
    accuracy or training error, a non-finite Psi no rank): ``n_test_accuracy`` (runs
    with a test accuracy), ``mean_test_accuracy`` and ``std_test_accuracy`` (sample
    std over seeds; the report's t interval comes from these three), ``mean_train_error``,
    ``mean_final_loss``, ``mean_psi_rank`` / ``mean_init_psi_rank``,
    ``mean_psi_sigma_min`` / ``mean_init_psi_sigma_min``, and
    ``n_init_psi_full_rank_loose`` / ``frac_init_psi_full_rank_loose`` (rank at the
    looser tolerance sigma_max x rank_rtol == N, out of ``n_init_psi_rank_known`` runs
    with a finite Psi; the report adds the Wilson bounds); and the cell's ``rank_rtol``
    (for the report's titles)."""
    import numpy as np

    def finite(column):
        if column not in ran:
            return np.array([], dtype=float)
        values = ran[column].astype(float).to_numpy()
        return values[np.isfinite(values)]

    def mean(column):
        values = finite(column)
        return float(values.mean()) if len(values) else math.nan

    accuracy = finite("test_accuracy")
    loose = ran[["init_psi_rank_loose", "n_samples"]].dropna() if "init_psi_rank_loose" in ran else None
    out = {
        "rank_rtol": float(ran["rank_rtol"].iloc[0]) if "rank_rtol" in ran and len(ran) else math.nan,  # the cell's
        "n_test_accuracy": int(len(accuracy)),
        "mean_test_accuracy": float(accuracy.mean()) if len(accuracy) else math.nan,
        "std_test_accuracy": float(accuracy.std(ddof=1)) if len(accuracy) >= 2 else math.nan,
        "mean_train_error": mean("train_error"),
        "mean_final_loss": mean("final_loss"),
        "mean_psi_rank": mean("psi_rank"),
        "mean_init_psi_rank": mean("init_psi_rank"),
        "mean_psi_sigma_min": mean("psi_sigma_min"),
        "mean_init_psi_sigma_min": mean("init_psi_sigma_min"),
        "n_init_psi_rank_known": int(len(loose)) if loose is not None else 0,
        "n_init_psi_full_rank_loose": int((loose["init_psi_rank_loose"] == loose["n_samples"]).sum())
        if loose is not None
        else 0,
        "frac_init_psi_full_rank_loose": float((loose["init_psi_rank_loose"] == loose["n_samples"]).mean())
        if loose is not None and len(loose)
        else math.nan,
    }
    lo, hi = t_interval(out["mean_test_accuracy"], out["std_test_accuracy"], out["n_test_accuracy"], confidence)
    # an accuracy lies in [0, 1]: the t bounds are clipped there (NaN when fewer than 2 runs)
    out["mean_test_accuracy_lo"], out["mean_test_accuracy_hi"] = (
        (max(0.0, lo), min(1.0, hi)) if not is_missing(lo) else (lo, hi)
    )
    out["frac_init_psi_full_rank_loose_lo"], out["frac_init_psi_full_rank_loose_hi"] = wilson_interval(
        out["n_init_psi_full_rank_loose"], out["n_init_psi_rank_known"], confidence
    )
    return out


def skip_report_files(table, layout: ReportLayout, store, *, sweep: str, confidence: float, figure: bool) -> list[Path]:
    """The report's files: the M / N tables' CSVs and figure (rank layout), the per-cell
    summary CSV, the trainability figure (otherwise)."""
    paths = []
    if is_rank_layout(table):
        for name, grid in rank_tables(table, layout, confidence=confidence).items():
            path = store.report_dir / RANK_CSVS[name]
            store.save_text(path, grid.to_csv(index=False))
            paths.append(path)
        if figure:
            png = plot_rank(table, layout, store.report_dir / RANK_PNG, sweep=sweep, confidence=confidence)
            paths += [png] if png is not None else []
    path = store.report_dir / SUMMARY_CSV
    store.save_text(path, trainability_table(table, layout, confidence=confidence).to_csv(index=False))
    paths.append(path)
    if figure and not is_rank_layout(table):
        png = plot_trainability(table, layout, store.report_dir / TRAINABILITY_PNG, sweep=sweep, confidence=confidence)
        paths += [png] if png is not None else []
    return paths


#: the M / N tables: (key of RANK_CSVS, fraction column, title)
RANK_TABLES = (
    ("init", "frac_init_psi_full_rank", "Runs whose Psi (N x M) has full rank N at initialisation"),
    (
        "init_loose",
        "frac_init_psi_full_rank_loose",
        "Runs whose Psi has full rank N at initialisation at the looser tolerance sigma_max x rank_rtol",
    ),
    ("end", "frac_psi_full_rank", "Runs whose Psi has full rank N at the end of training"),
    ("zero_train_error", "frac_zero_train_error", "Runs reaching zero training error"),
)


def varying_axes(table, layout: ReportLayout, *, exclude: tuple[str, ...] = ()) -> list[str]:
    """Table axes taking more than one value in ``table`` (display order)."""
    return [
        axis
        for axis in layout.table_axes
        if axis in table and axis not in exclude and table[axis].nunique(dropna=False) > 1
    ]


def fixed_settings(table, layout: ReportLayout) -> str:
    """``axis = value`` for each table axis with one value (the report's context line)."""
    fixed = [axis for axis in layout.table_axes if axis in table and table[axis].nunique(dropna=False) == 1]
    return ", ".join(
        f"{axis} = {table[axis].iloc[0]:g}"
        if isinstance(table[axis].iloc[0], float)
        else f"{axis} = {table[axis].iloc[0]}"
        for axis in fixed
    )


def is_rank_layout(table) -> bool:
    """The M / N layout when the table holds several values of M_over_n."""
    return "M_over_n" in table and table["M_over_n"].nunique() > 1


def rank_tables(table, layout: ReportLayout, *, confidence: float) -> dict:
    """Per :data:`RANK_TABLES`: one row per setting of the varying axes other than M / N
    (table order), one column ``M/N=<r>`` per M / N (fraction 0..1) with ``_lo`` / ``_hi``
    Wilson bounds (at the report's ``confidence``, from the aggregation); the first cell
    when several share a position."""
    keys = varying_axes(table, layout, exclude=("M_over_n", "M")) or ["activation"]
    return {
        name: ratio_table(table, keys=keys, ratio="M_over_n", label="M/N", column=column)
        for name, column, _ in RANK_TABLES
    }


def trainability_table(table, layout: ReportLayout, *, confidence: float):
    """Per cell: the varying axes, runs, the fraction reaching zero training error with its
    Wilson bounds, the mean test accuracy with its t bounds over seeds (clipped to [0, 1]), mean training
    error and loss, the fraction with full-rank Psi at initialisation, statuses."""
    import pandas as pd

    axes = varying_axes(table, layout) or ["activation"]
    rows = []
    for row in table.to_dict("records"):
        lo, hi = row["mean_test_accuracy_lo"], row["mean_test_accuracy_hi"]  # (extra_aggregates, clipped to [0, 1])
        rows.append(
            {
                "cell_id": row["cell_id"],
                **{axis: row[axis] for axis in axes},
                "runs": row["runs"],
                "errors": row["errors"],
                **{f"frac_zero_train_error{s}": row[f"frac_zero_train_error{s}"] for s in ("", "_lo", "_hi")},
                "n_test_accuracy": row["n_test_accuracy"],
                "mean_test_accuracy": row["mean_test_accuracy"],
                "mean_test_accuracy_lo": lo,
                "mean_test_accuracy_hi": hi,
                "mean_train_error": row["mean_train_error"],
                "mean_final_loss": row["mean_final_loss"],
                "frac_init_psi_full_rank": row["frac_init_psi_full_rank"],
                "frac_psi_full_rank": row["frac_psi_full_rank"],
                "frac_diverged": row["frac_diverged"],
            }
        )
    return pd.DataFrame(rows)


def _acc_ci(value, lo, hi) -> str:
    if is_missing(value):
        return ""
    return f"{100 * value:.1f}" + ("" if is_missing(lo) else f" [{100 * lo:.1f}, {100 * hi:.1f}]")


def skip_markdown(table, layout: ReportLayout, *, sweep: str, confidence: float) -> str:
    """The report as GitHub markdown: the M / N tables (when M / N varies) or the
    trainability table, then the per-cell table."""
    level = f"{100 * confidence:g}%"
    fixed = fixed_settings(table, layout)
    lines = [
        f"# {sweep}",
        "",
        *([f"Fixed: {fixed}.", ""] if fixed else []),
        f"Fractions in % of the runs of a cell with the Wilson {level} interval in brackets; test accuracy in % "
        f"(mean over seeds, Student-t {level} interval over seeds; diverged runs have none).",
        "",
    ]
    if is_rank_layout(table):
        ratios = sorted(table["M_over_n"].unique())
        tables = rank_tables(table, layout, confidence=confidence)
        shared = int(
            table.duplicated(
                [*(varying_axes(table, layout, exclude=("M_over_n", "M")) or ["activation"]), "M_over_n"]
            ).sum()
        )
        if shared:
            lines += [
                f"Note: {shared} cells share a table position with another cell (other settings); the M / N tables "
                "show the first, the per-cell table all.",
                "",
            ]
        for name, _, title in RANK_TABLES:
            if name == "end" and (table["mode"] == "rand").all():
                continue  # rand keeps the hidden weights: Psi at the end is Psi at init (table.csv has both)
            grid = tables[name]
            keys = [c for c in grid.columns if not c.startswith("M/N=")]
            if "rank_rtol" in title and "rank_rtol" in table and table["rank_rtol"].nunique() == 1:
                title = title.replace("rank_rtol", f"{table['rank_rtol'].iloc[0]:g}")
            lines += [f"## {title}", ""]
            head = [*keys, *(f"M/N = {r:g}" for r in ratios)]
            lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            for row in grid.to_dict("records"):
                cells = [str(row[k]) for k in keys]
                cells += [
                    pct_ci(row[f"M/N={r:g}"], row[f"M/N={r:g}_lo"], row[f"M/N={r:g}_hi"], whole=True) for r in ratios
                ]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    else:
        summary = trainability_table(table, layout, confidence=confidence)
        axes = [c for c in summary.columns if c in layout.table_axes]
        lines += ["## Trainability", ""]
        head = [
            *axes,
            "runs",
            f"zero training error % [{level}]",
            f"test accuracy % [{level} t]",
            "mean training error %",
            "mean training loss",
            "Psi full rank at init %",
            "diverged %",
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for row in summary.to_dict("records"):
            cells = [str(row[a]) for a in axes]
            cells += [
                str(row["runs"]),
                pct_ci(
                    row["frac_zero_train_error"],
                    row["frac_zero_train_error_lo"],
                    row["frac_zero_train_error_hi"],
                    whole=True,
                ),
                _acc_ci(row["mean_test_accuracy"], row["mean_test_accuracy_lo"], row["mean_test_accuracy_hi"]),
                pct(row["mean_train_error"]),
                num(row["mean_final_loss"]),
                pct(row["frac_init_psi_full_rank"]),
                pct(row["frac_diverged"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    axes = varying_axes(table, layout) or ["activation"]
    head = [
        *axes,
        "runs",
        "global %",
        "not conv. %",
        "diverged %",
        f"Psi full rank at init % [{level}]",
        "Psi full rank at end %",
        "Psi full rank at init, loose tol %",
        "mean Psi rank init / end",
        "mean sigma_min(Psi) init / end",
        "mean test acc. %",
        "mean loss",
        "errors",
    ]
    lines += ["## Per cell", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in table.to_dict("records"):
        cells = [f"{row[a]:g}" if isinstance(row[a], float) else str(row[a]) for a in axes]
        cells += [
            str(row["runs"]),
            pct(row["frac_global"]),
            pct(row["frac_not_converged"]),
            pct(row["frac_diverged"]),
            pct_ci(
                row["frac_init_psi_full_rank"],
                row["frac_init_psi_full_rank_lo"],
                row["frac_init_psi_full_rank_hi"],
                whole=True,
            ),
            pct(row["frac_psi_full_rank"]),
            pct(row["frac_init_psi_full_rank_loose"]),
            f"{num(row['mean_init_psi_rank'])} / {num(row['mean_psi_rank'])}",
            f"{num(row['mean_init_psi_sigma_min'], 3)} / {num(row['mean_psi_sigma_min'], 3)}",
            pct(row["mean_test_accuracy"]),
            num(row["mean_final_loss"]),
            str(row["errors"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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


class SkipNetworksLayout(ReportLayout):
    """The skip-networks report (module docstring)."""

    table_axes = ("data", "activation", "depth", "width", "n_samples", "architecture", "mode", "M_over_n", "M")
    fraction_columns = ("psi_full_rank", "init_psi_full_rank", "zero_train_error")
    axis_order = {"activation": ACTIVATION_ORDER, "architecture": ("plain", "skip"), "mode": ("sgd", "rand")}

    def extra_aggregates(self, ran, *, confidence: float) -> dict[str, Any]:
        return skip_aggregates(ran, confidence=confidence)

    def markdown(self, table, *, sweep: str, confidence: float) -> str:
        return skip_markdown(table, self, sweep=sweep, confidence=confidence)

    def files(self, table, store: ResultsStore, *, sweep: str, confidence: float, figure: bool) -> list[Path]:
        return skip_report_files(table, self, store, sweep=sweep, confidence=confidence, figure=figure)


LAYOUT = SkipNetworksLayout

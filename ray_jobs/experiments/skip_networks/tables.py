"""The skip-networks report's tables: the M / N tables (rank layout), the trainability
table and the markdown (:func:`skip_markdown`); :mod:`~ray_jobs.experiments.skip_networks.layout`
says which layout a table gets."""

from __future__ import annotations

from ray_jobs.report.layout import ReportLayout
from ray_jobs.report.tables import is_missing, num, pct, pct_ci, ratio_table

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

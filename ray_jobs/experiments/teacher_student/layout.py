"""The teacher-student report: the per-cell table beside the published one, and the
spurious fraction against k (one series per n - k)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ray_jobs.report.figures import pyplot, save_figure
from ray_jobs.report.tables import num, pct

if TYPE_CHECKING:
    from ray_jobs.experiments.base import Experiment

FIGURE_PNG = "spurious_fraction_vs_k.png"


def teacher_student_markdown(table: pd.DataFrame, experiment: "Experiment", *, sweep: str, confidence: float) -> str:
    """The per-cell table as GitHub markdown: spurious % with its interval (and the published
    value, when the sweep names a reference), mean objective and smallest eigenvalue of the
    spurious runs, families, the other statuses (percentages; intervals in brackets)."""
    level = f"{100 * confidence:g}%"
    has_ref = "ref_frac_spurious" in table
    axes = [axis for axis in experiment.table_axes if axis in table
            and (axis not in experiment.optional_table_axes or table[axis].nunique() > 1)]
    header = [*axes, "runs", f"spurious % [{level} CI]"]
    if has_ref:
        header += ["published %", "inside CI"]
    header += ["mean objective (spurious)"] + (["published"] if has_ref else [])
    header += ["mean min eig (spurious)"] + (["published"] if has_ref else [])
    header += ["families", "global %", "saddle %", "not conv. %", "diverged %", "errors"]
    lines = [f"# {sweep}", "", f"Runs per cell, fraction per status with its Wilson {level} interval.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.to_dict("records"):
        cells = [num(row[axis]) if isinstance(row[axis], float) else str(row[axis]) for axis in axes]
        cells += [str(row["runs"]), f"{pct(row['frac_spurious'])} [{pct(row['frac_spurious_lo'])}, {pct(row['frac_spurious_hi'])}]"]
        if has_ref:
            inside = row.get("ref_inside_ci")
            cells += [pct(row["ref_frac_spurious"]), "" if inside is None else ("yes" if inside else "NO")]
        cells += [num(row["mean_objective_spurious"])] + ([num(row.get("ref_mean_objective_spurious"))] if has_ref else [])
        cells += [num(row["mean_min_eig_spurious"])] + ([num(row.get("ref_mean_min_eig_spurious"))] if has_ref else [])
        families = row.get("n_families")
        cells += ["" if families is None or (isinstance(families, float) and math.isnan(families)) else str(int(families))]
        cells += [pct(row[f"frac_{s}"]) for s in ("global", "saddle", "not_converged", "diverged")]
        cells += [str(row["errors"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_spurious_fraction(table: pd.DataFrame, path: Path, *, sweep: str, confidence: float) -> Path | None:
    """Spurious fraction vs k, one series per n - k (n = k, n = k + 1, ...), with intervals."""
    if table.empty or not {"k", "n"} <= set(table.columns):
        return None
    plt = pyplot()

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    offsets = (table["n"] - table["k"]).astype(int)
    series = sorted(offsets.unique())
    for index, offset in enumerate(series):
        part = table[offsets == offset]
        label = "n = k" if offset == 0 else f"n = k {'+' if offset > 0 else '-'} {abs(offset)}"
        color = f"C{index}"
        dodge = 0.08 * (index - (len(series) - 1) / 2)  # keep the interval bars of the series apart
        ax.errorbar(part["k"] + dodge, 100 * part["frac_spurious"],
                    yerr=[100 * (part["frac_spurious"] - part["frac_spurious_lo"]), 100 * (part["frac_spurious_hi"] - part["frac_spurious"])],
                    marker="o", capsize=3, color=color, label=f"{label} (ours, {100 * confidence:g}% CI)")
        if "ref_frac_spurious" in part and part["ref_frac_spurious"].notna().any():
            ax.plot(part["k"], 100 * part["ref_frac_spurious"], marker="x", linestyle="--", color=color, alpha=0.7,
                    label=f"{label} (published)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("k (teacher neurons)")
    ax.set_ylabel("runs ending at a spurious local minimum (%)")
    ax.set_title(sweep)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)

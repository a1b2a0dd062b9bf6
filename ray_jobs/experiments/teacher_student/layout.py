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
FAMILIES_CSV = "families.csv"
RUN_CERTIFICATES_CSV = "run_certificates.csv"


def teacher_student_markdown(table: pd.DataFrame, experiment: "Experiment", *, sweep: str, confidence: float) -> str:
    """The per-cell table as GitHub markdown: spurious % with its interval (and the published
    value, when the sweep names a reference), mean objective and smallest eigenvalue of the
    spurious runs, families, the other statuses (percentages; intervals in brackets)."""
    level = f"{100 * confidence:g}%"
    has_ref = "ref_frac_spurious" in table
    axes = [axis for axis in experiment.table_axes if axis in table
            and (axis not in experiment.optional_table_axes or table[axis].nunique() > 1)]
    header = [*axes, "runs", f"spurious % [{level} CI]", f"certified spurious % [{level} CI]"]
    if has_ref:
        header += ["published %", "inside CI"]
    header += ["mean objective (spurious)"] + (["published"] if has_ref else [])
    header += ["mean min eig (spurious)"] + (["published"] if has_ref else [])
    has_ref_families = "ref_n_families" in table
    header += ["families", "families (student perm.)"] + (["authors' families"] if has_ref_families else [])
    header += ["global %", "saddle %", "not conv. %", "diverged %", "errors"]
    lines = [f"# {sweep}", "", f"Runs per cell, fraction per status with its Wilson {level} interval.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.to_dict("records"):
        cells = [num(row[axis]) if isinstance(row[axis], float) else str(row[axis]) for axis in axes]
        cells += [str(row["runs"]), f"{pct(row['frac_spurious'])} [{pct(row['frac_spurious_lo'])}, {pct(row['frac_spurious_hi'])}]"]
        certified = row.get("frac_certified_spurious")
        cells += ["" if certified is None or math.isnan(certified) else
                  f"{pct(certified)} [{pct(row['frac_certified_spurious_lo'])}, {pct(row['frac_certified_spurious_hi'])}]"]
        if has_ref:
            inside = row.get("ref_inside_ci")
            cells += [pct(row["ref_frac_spurious"]), "" if inside is None else ("yes" if inside else "NO")]
        cells += [num(row["mean_objective_spurious"])] + ([num(row.get("ref_mean_objective_spurious"))] if has_ref else [])
        cells += [num(row["mean_min_eig_spurious"])] + ([num(row.get("ref_mean_min_eig_spurious"))] if has_ref else [])
        cells += [_count(row.get(name)) for name in ("n_families", "n_families_student_perm",
                                                      *(["ref_n_families"] if has_ref_families else []))]
        cells += [pct(row[f"frac_{s}"]) for s in ("global", "saddle", "not_converged", "diverged")]
        cells += [str(row["errors"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + families_markdown(table, axes)) + "\n"


def _count(value) -> str:
    """A count of the table as text: empty when missing (None or NaN)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def families_markdown(table: pd.DataFrame, axes: list[str]) -> list[str]:
    """Lines of a second table: each cell's families (full symmetry group) with their runs,
    the certified ones, and the authors' families and runs per family when the reference
    has them ([] when no cell has a family)."""
    if not any(isinstance(value, str) and value != "[]" for value in table.get("family_multiplicities", [])):
        return []
    has_ref = "ref_family_multiplicities" in table
    header = [*axes, "families", "runs per family", "certified families", "certified spurious runs"]
    header += ["authors' families", "authors' runs per family"] if has_ref else []
    lines = ["", "Spurious minima up to student-neuron and coordinate permutations (families), each certified "
             "once (report/families.csv: objective, eigenvalue bound, radius, seeds of every family).", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.to_dict("records"):
        if not isinstance(row.get("family_multiplicities"), str):
            continue
        cells = [num(row[axis]) if isinstance(row[axis], float) else str(row[axis]) for axis in axes]
        cells += [_count(row.get("n_families")), row["family_multiplicities"], _count(row.get("n_families_certified")),
                  _count(row.get("n_certified_spurious"))]
        if has_ref:
            authors = row.get("ref_family_multiplicities")
            cells += [_count(row.get("ref_n_families")), authors if isinstance(authors, str) else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_families(table: pd.DataFrame, store) -> Path | None:
    """``report/families.csv``: every family of every cell of ``table`` (the cell's k, n, then
    :data:`~.families.FAMILY_COLUMNS`), as the report's aggregation found and certified them."""
    from ray_jobs.experiments.teacher_student.families import FAMILY_COLUMNS, families_of

    lines = [{"k": row["k"], "n": row["n"], **{name: family.get(name) for name in FAMILY_COLUMNS}}
             for row in table.to_dict("records") for family in families_of(row["cell_id"])]
    frame = pd.DataFrame(lines, columns=["k", "n", *FAMILY_COLUMNS])
    frame["seeds"] = frame["seeds"].map(lambda seeds: " ".join(map(str, seeds)) if isinstance(seeds, list) else seeds)
    path = store.report_dir / FAMILIES_CSV
    store.save_text(path, frame.to_csv(index=False))
    return path


def write_run_certificates(table: pd.DataFrame, store) -> Path | None:
    """``report/run_certificates.csv``: one row per spurious run of every cell of ``table``
    (cell_id, k, n, seed, family) with its family's certificate, issued once per family by
    the report (``certified``, ``certified_lambda_lo``, ``certified_radius``,
    ``certified_reason``): the per-run record of what the cell's table counts."""
    from ray_jobs.experiments.teacher_student.families import families_of

    lines = [{"cell_id": row["cell_id"], "k": row["k"], "n": row["n"], "seed": seed, "family": family["family"],
              "certified": family["certified"], "certified_lambda_lo": family["certified_lambda_lo"],
              "certified_radius": family["certified_radius"], "certified_reason": family["reason"]}
             for row in table.to_dict("records") for family in families_of(row["cell_id"]) for seed in family["seeds"]]
    columns = ["cell_id", "k", "n", "seed", "family", "certified", "certified_lambda_lo", "certified_radius", "certified_reason"]
    frame = pd.DataFrame(lines, columns=columns).sort_values(["k", "n", "seed"], kind="stable")
    path = store.report_dir / RUN_CERTIFICATES_CSV
    store.save_text(path, frame.to_csv(index=False))
    return path


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

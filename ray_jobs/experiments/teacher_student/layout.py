"""The teacher-student report: the per-cell table beside the published one, the families
of spurious minima (each certified once), and the spurious fraction against k (one series
per n - k). Its setting ``report.family_tol`` (the Frobenius distance within which two
spurious minima of a cell are one family) is this layout's, checked here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ray_jobs.report.figures import pyplot, save_figure
from ray_jobs.report.layout import ReportLayout, require_number_at_least
from ray_jobs.report.tables import num, pct

FIGURE_PNG = "spurious_fraction_vs_k.png"
FAMILIES_CSV = "families.csv"
RUN_CERTIFICATES_CSV = "run_certificates.csv"


def teacher_student_markdown(table: pd.DataFrame, layout: ReportLayout, *, sweep: str, confidence: float) -> str:
    """The per-cell table as GitHub markdown: spurious % with its interval (and the published
    value, when the sweep names a reference), mean objective and smallest eigenvalue of the
    spurious runs, families, the other statuses (percentages; intervals in brackets)."""
    level = f"{100 * confidence:g}%"
    has_ref = "ref_frac_spurious" in table
    axes = [
        axis
        for axis in layout.table_axes
        if axis in table and (axis not in layout.optional_table_axes or table[axis].nunique() > 1)
    ]
    header = [*axes, "runs", f"spurious % [{level} CI]", f"certified spurious % [{level} CI]"]
    if has_ref:
        header += ["published %", "inside CI"]
    header += ["mean objective (spurious)"] + (["published"] if has_ref else [])
    header += ["mean min eig (spurious)"] + (["published"] if has_ref else [])
    has_ref_families = "ref_n_families" in table
    header += ["families", "families (student perm.)"] + (["authors' families"] if has_ref_families else [])
    header += ["global %", "saddle %", "not conv. %", "diverged %", "errors"]
    lines = [
        f"# {sweep}",
        "",
        f"Runs per cell, fraction per status with its Wilson {level} interval.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in table.to_dict("records"):
        cells = [num(row[axis]) if isinstance(row[axis], float) else str(row[axis]) for axis in axes]
        cells += [
            str(row["runs"]),
            f"{pct(row['frac_spurious'])} [{pct(row['frac_spurious_lo'])}, {pct(row['frac_spurious_hi'])}]",
        ]
        certified = row.get("frac_certified_spurious")
        cells += [
            ""
            if certified is None or math.isnan(certified)
            else f"{pct(certified)} "
            f"[{pct(row['frac_certified_spurious_lo'])}, {pct(row['frac_certified_spurious_hi'])}]"
        ]
        if has_ref:
            inside = row.get("ref_inside_ci")
            cells += [pct(row["ref_frac_spurious"]), "" if inside is None else ("yes" if inside else "NO")]
        cells += [num(row["mean_objective_spurious"])] + (
            [num(row.get("ref_mean_objective_spurious"))] if has_ref else []
        )
        cells += [num(row["mean_min_eig_spurious"])] + ([num(row.get("ref_mean_min_eig_spurious"))] if has_ref else [])
        cells += [
            _count(row.get(name))
            for name in ("n_families", "n_families_student_perm", *(["ref_n_families"] if has_ref_families else []))
        ]
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
    lines = [
        "",
        "Spurious minima up to student-neuron and coordinate permutations (families), each certified "
        "once (report/families.csv: objective, eigenvalue bound, radius, seeds of every family).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in table.to_dict("records"):
        if not isinstance(row.get("family_multiplicities"), str):
            continue
        cells = [num(row[axis]) if isinstance(row[axis], float) else str(row[axis]) for axis in axes]
        cells += [
            _count(row.get("n_families")),
            row["family_multiplicities"],
            _count(row.get("n_families_certified")),
            _count(row.get("n_certified_spurious")),
        ]
        if has_ref:
            authors = row.get("ref_family_multiplicities")
            cells += [_count(row.get("ref_n_families")), authors if isinstance(authors, str) else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_families(table: pd.DataFrame, store) -> Path | None:
    """``report/families.csv``: every family of every cell of ``table`` (the cell's k, n, then
    :data:`~.families.FAMILY_COLUMNS`), as the report's aggregation found and certified them."""
    from ray_jobs.experiments.teacher_student.families import FAMILY_COLUMNS, families_of

    lines = [
        {"k": row["k"], "n": row["n"], **{name: family.get(name) for name in FAMILY_COLUMNS}}
        for row in table.to_dict("records")
        for family in families_of(row["cell_id"])
    ]
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

    lines = [
        {
            "cell_id": row["cell_id"],
            "k": row["k"],
            "n": row["n"],
            "seed": seed,
            "family": family["family"],
            "certified": family["certified"],
            "certified_lambda_lo": family["certified_lambda_lo"],
            "certified_radius": family["certified_radius"],
            "certified_reason": family["reason"],
        }
        for row in table.to_dict("records")
        for family in families_of(row["cell_id"])
        for seed in family["seeds"]
    ]
    columns = [
        "cell_id",
        "k",
        "n",
        "seed",
        "family",
        "certified",
        "certified_lambda_lo",
        "certified_radius",
        "certified_reason",
    ]
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
        ax.errorbar(
            part["k"] + dodge,
            100 * part["frac_spurious"],
            yerr=[
                100 * (part["frac_spurious"] - part["frac_spurious_lo"]),
                100 * (part["frac_spurious_hi"] - part["frac_spurious"]),
            ],
            marker="o",
            capsize=3,
            color=color,
            label=f"{label} (ours, {100 * confidence:g}% CI)",
        )
        if "ref_frac_spurious" in part and part["ref_frac_spurious"].notna().any():
            ax.plot(
                part["k"],
                100 * part["ref_frac_spurious"],
                marker="x",
                linestyle="--",
                color=color,
                alpha=0.7,
                label=f"{label} (published)",
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("k (teacher neurons)")
    ax.set_ylabel("runs ending at a spurious local minimum (%)")
    ax.set_title(sweep)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


class TeacherStudentLayout(ReportLayout):
    """The teacher-student report (module docstring); setting ``report.family_tol``
    (default 1e-4, a number >= 0): converged points sit ~grad_tol/min_eig from their
    minimum, distinct minima O(0.1) apart."""

    table_axes = ("k", "n", "step", "init_scale")
    optional_table_axes = ("step", "init_scale")  # grid axes of a protocol comparison or search
    #: the report reads the weight vectors of spurious runs only (families), not of all runs
    report_projection = {"final_weights": ("spurious",)}
    reference_columns = {
        "pct_runs_spurious": ("ref_frac_spurious", 0.01),
        "mean_min_eig": ("ref_mean_min_eig_spurious", 1.0),
        "mean_objective": ("ref_mean_objective_spurious", 1.0),
        "families": ("ref_n_families", 1.0),  # the authors' family representatives (their .npz)
        "family_multiplicities": ("ref_family_multiplicities", None),  # their runs per family, "[312, 34]"
    }
    settings = {"family_tol": 1e-4}

    @classmethod
    def check_setting(cls, key: str, value: Any) -> None:
        require_number_at_least(key, value, 0)

    @property
    def family_tol(self) -> float:
        """``report.family_tol``: Frobenius distance within which two spurious minima are one family."""
        return float(self.values["family_tol"])

    def extra_aggregates(self, ran: pd.DataFrame, *, confidence: float) -> dict[str, Any]:
        """Families of the cell's spurious minima under the full symmetry group (student
        neurons x coordinates, within ``report.family_tol``), each certified once
        (:mod:`.families`): ``n_families``, ``n_families_certified``, ``n_certified_spurious``,
        ``frac_certified_spurious`` with its Wilson interval, ``min_certified_lambda_lo``,
        ``max_certified_radius``, ``family_multiplicities`` (runs per family, largest first,
        as text: "[313, 33]"); and ``n_families_student_perm``, the count under student
        permutations only (what this report gave before). None when no run ran or the
        weights were not kept."""
        from ray_jobs.experiments.teacher_student.families import certified_families, family_aggregates

        records = ran[ran["status"] == "spurious"].to_dict("records")
        if not len(ran) or any(record.get("final_weights") is None for record in records):
            return {"n_families": None, "n_families_student_perm": None}
        out = family_aggregates(certified_families(records, tol=self.family_tol), len(ran), confidence=confidence)
        out["n_families_student_perm"] = count_families(records, self.family_tol)
        return out

    def headline_series(self, table: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
        """``frac_spurious_vs_k`` (and ``frac_certified_spurious_vs_k``): one series per
        n - k and per value of the other swept axes (``.../n_minus_k:1``,
        ``.../n_minus_k:0/step:0.05``: MLflow metric names allow ``/`` and ``:``), the
        fraction at each k; a single series has no suffix."""
        groups: dict[tuple, list[dict]] = {}
        # an axis splits the series only where it varies at one (k, n): a step of 5 / k
        # varies with k but is one value per cell, so it is one series (sys2021_global_rates)
        others = [
            axis
            for axis in self.optional_table_axes
            if axis in table and table.groupby(["k", "n"])[axis].nunique().max() > 1
        ]
        for row in table.to_dict("records"):
            groups.setdefault((int(row["n"]) - int(row["k"]), *(row[axis] for axis in others)), []).append(row)
        series = {}
        for key, rows in groups.items():
            suffix = (
                ""
                if len(groups) == 1
                else "/"
                + "/".join([f"n_minus_k:{key[0]}", *(f"{axis}:{value:g}" for axis, value in zip(others, key[1:]))])
            )
            for column in ("frac_spurious", "frac_certified_spurious"):
                points = [
                    (int(row["k"]), float(row[column]))
                    for row in sorted(rows, key=lambda r: r["k"])
                    if row.get(column) is not None and not math.isnan(row[column])
                ]
                if points:
                    series[f"{column}_vs_k{suffix}"] = points
        return series

    def markdown(self, table: pd.DataFrame, *, sweep: str, confidence: float) -> str:
        return teacher_student_markdown(table, self, sweep=sweep, confidence=confidence)

    def files(self, table: pd.DataFrame, store, *, sweep: str, confidence: float, figure: bool) -> list[Path]:
        """The figure, ``families.csv``: one line per family of every cell (objective,
        smallest eigenvalue, multiplicity, largest member distance, certificate), and
        ``run_certificates.csv``: each spurious run with its family's certificate."""
        png = None
        if figure:
            png = plot_spurious_fraction(table, store.report_dir / FIGURE_PNG, sweep=sweep, confidence=confidence)
        families = write_families(table, store)
        runs = write_run_certificates(table, store)
        return [path for path in (families, runs, png) if path is not None]


def count_families(records: Sequence[dict], tol: float) -> int | None:
    """Number of families among the spurious ``records`` of one cell under student-neuron
    permutations only (core's ``families.group_records_student_perm``); None when their weights were not kept
    (``experiment.keep_weights=false``)."""
    from landscape_core.families import group_records_student_perm

    records = [dict(record) for record in records]  # the weights as float lists (Parquet gives arrays)
    for record in records:
        weights = record.get("final_weights")
        record["final_weights"] = None if weights is None else [float(w) for w in weights]
    if any(record["final_weights"] is None for record in records):
        return None
    return len(group_records_student_perm(records, tol=tol, statuses=("spurious",)))


LAYOUT = TeacherStudentLayout

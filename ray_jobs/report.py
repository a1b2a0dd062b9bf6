"""Aggregate the Parquet rows of a sweep into the per-cell table the papers report.

Per cell: ``runs`` (rows that ran; ``errors`` counted apart), for every status its count
``n_<status>``, fraction ``frac_<status>`` and Wilson interval ``frac_<status>_lo`` /
``frac_<status>_hi`` at ``report.confidence``; ``mean_objective_spurious`` and
``mean_min_eig_spurious`` (means over spurious runs), ``n_families`` (distinct spurious
minima up to neuron permutation), ``iterations_mean`` and ``wall_s`` (compute seconds).
With a reference table: ``ref_*`` columns beside ours and ``ref_inside_ci`` (the
published spurious fraction lies inside our interval). These names are also the MLflow
metric keys of the per-cell child runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import pandas as pd
import pyarrow as pa

from ray_jobs.experiments import Experiment
from ray_jobs.store import RUN_STATUSES, ResultsStore

TABLE_MD = "table.md"
TABLE_CSV = "table.csv"
FIGURE_PNG = "spurious_fraction_vs_k.png"


def wilson_interval(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Two-sided Wilson score interval of a binomial proportion (NaNs when trials == 0)."""
    if trials <= 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def deduplicate(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell_id, seed): a successful row wins over an `error` row of the same run."""
    if rows.empty:
        return rows
    order = rows.assign(_is_error=rows["status"].eq("error")).sort_values(["_is_error"], kind="stable")
    return order.drop_duplicates(["cell_id", "seed"], keep="first").drop(columns="_is_error")


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else math.nan


def aggregate_cell(rows: pd.DataFrame, experiment: Experiment, *, confidence: float, family_tol: float) -> dict:
    """The table row of one cell from its (deduplicated) run rows."""
    first = rows.iloc[0]
    errors = int(rows["status"].eq("error").sum())
    ran = rows[rows["status"] != "error"]
    runs = len(ran)
    out: dict = {"cell_id": first["cell_id"], "experiment": first["experiment"]}
    out.update({axis: first[axis] for axis in experiment.table_axes if axis in rows})
    out.update(runs=runs, errors=errors)
    for status in RUN_STATUSES:
        count = int(ran["status"].eq(status).sum())
        lo, hi = wilson_interval(count, runs, confidence)
        out.update({f"n_{status}": count, f"frac_{status}": count / runs if runs else math.nan,
                    f"frac_{status}_lo": lo, f"frac_{status}_hi": hi})
    spurious = ran[ran["status"] == "spurious"]
    out["mean_objective_spurious"] = _mean(spurious["final_loss"])
    out["mean_min_eig_spurious"] = _mean(spurious["min_eig"]) if "min_eig" in spurious else math.nan
    records = spurious.to_dict("records")
    for record in records:
        weights = record.get("final_weights")
        record["final_weights"] = None if weights is None else [float(w) for w in weights]
    out["n_families"] = experiment.count_families(records, family_tol) if runs else None
    out["iterations_mean"] = _mean(ran["iterations"])
    out["wall_s"] = float(ran["wall_s"].sum())
    return out


def aggregate(rows: pd.DataFrame, experiment: Experiment, *, confidence: float, family_tol: float) -> pd.DataFrame:
    """One table row per cell, sorted by the experiment's table axes."""
    rows = deduplicate(rows)
    if rows.empty:
        return pd.DataFrame()
    cells = [aggregate_cell(group, experiment, confidence=confidence, family_tol=family_tol)
             for _, group in rows.groupby("cell_id", sort=False)]
    table = pd.DataFrame(cells)
    axes = [axis for axis in experiment.table_axes if axis in table]
    return table.sort_values([*axes, "cell_id"], kind="stable").reset_index(drop=True)


def attach_reference(table: pd.DataFrame, reference_csv: Path, experiment: Experiment) -> pd.DataFrame:
    """Add the published values (``ref_*``) and ``ref_inside_ci`` beside ours."""
    reference = pd.read_csv(reference_csv)
    keys = [axis for axis in experiment.table_axes if axis in reference.columns]
    renamed = {}
    for column, (ours, scale) in experiment.reference_columns.items():
        if column in reference.columns:
            renamed[ours] = reference[column] * scale
    reference = pd.concat([reference[keys], pd.DataFrame(renamed)], axis=1)
    merged = table.merge(reference, on=keys, how="left")
    if "ref_frac_spurious" in merged:
        known = merged["ref_frac_spurious"].notna()
        inside = (merged["frac_spurious_lo"] <= merged["ref_frac_spurious"]) & (merged["ref_frac_spurious"] <= merged["frac_spurious_hi"])
        merged["ref_inside_ci"] = inside.where(known, None).astype("object")
    return merged


def _pct(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def to_markdown(table: pd.DataFrame, experiment: Experiment, *, sweep: str, confidence: float) -> str:
    """The aggregate table as GitHub markdown (percentages; intervals in brackets)."""
    level = f"{100 * confidence:g}%"
    has_ref = "ref_frac_spurious" in table
    axes = [axis for axis in experiment.table_axes if axis in table]
    header = [*axes, "runs", f"spurious % [{level} CI]"]
    if has_ref:
        header += ["published %", "inside CI"]
    header += ["mean objective (spurious)"] + (["published"] if has_ref else [])
    header += ["mean min eig (spurious)"] + (["published"] if has_ref else [])
    header += ["families", "global %", "saddle %", "not conv. %", "diverged %", "errors"]
    lines = [f"# {sweep}", "", f"Runs per cell, fraction per status with its Wilson {level} interval.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.to_dict("records"):
        cells = [str(row[axis]) for axis in axes]
        cells += [str(row["runs"]), f"{_pct(row['frac_spurious'])} [{_pct(row['frac_spurious_lo'])}, {_pct(row['frac_spurious_hi'])}]"]
        if has_ref:
            inside = row.get("ref_inside_ci")
            cells += [_pct(row["ref_frac_spurious"]), "" if inside is None else ("yes" if inside else "NO")]
        cells += [_num(row["mean_objective_spurious"])] + ([_num(row.get("ref_mean_objective_spurious"))] if has_ref else [])
        cells += [_num(row["mean_min_eig_spurious"])] + ([_num(row.get("ref_mean_min_eig_spurious"))] if has_ref else [])
        families = row.get("n_families")
        cells += ["" if families is None or (isinstance(families, float) and math.isnan(families)) else str(int(families))]
        cells += [_pct(row[f"frac_{s}"]) for s in ("global", "saddle", "not_converged", "diverged")]
        cells += [str(row["errors"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_spurious_fraction(table: pd.DataFrame, path: Path, *, sweep: str, confidence: float) -> Path | None:
    """Spurious fraction vs k, one series per n - k (n = k, n = k + 1, ...), with intervals."""
    if table.empty or not {"k", "n"} <= set(table.columns):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass
class Report:
    """A built report: the table, its markdown, and the files written."""

    table: pd.DataFrame
    markdown: str
    paths: list[Path]


def table_from_rows(rows: pa.Table | pd.DataFrame, experiment: Experiment, *, confidence: float, family_tol: float,
                    reference: Path | None) -> pd.DataFrame:
    """Aggregate rows (Arrow or pandas) and attach the reference when given."""
    frame = rows.to_pandas() if isinstance(rows, pa.Table) else rows
    table = aggregate(frame, experiment, confidence=confidence, family_tol=family_tol)
    if reference is not None and not table.empty:
        table = attach_reference(table, reference, experiment)
    return table


def build_report(store: ResultsStore, experiment: Experiment, *, sweep: str, confidence: float, family_tol: float,
                 reference: Path | None, figure: bool = True) -> Report:
    """Read every fragment of the sweep, aggregate, and write table.md / table.csv / figure."""
    table = table_from_rows(store.read(), experiment, confidence=confidence, family_tol=family_tol, reference=reference)
    markdown = to_markdown(table, experiment, sweep=sweep, confidence=confidence) if not table.empty else f"# {sweep}\n\nNo rows yet.\n"
    md_path, csv_path = store.report_dir / TABLE_MD, store.report_dir / TABLE_CSV
    store.save_text(md_path, markdown)
    store.save_text(csv_path, table.to_csv(index=False))
    paths = [md_path, csv_path]
    if figure:
        png = plot_spurious_fraction(table, store.report_dir / FIGURE_PNG, sweep=sweep, confidence=confidence)
        if png is not None:
            paths.append(png)
    return Report(table=table, markdown=markdown, paths=paths)

"""Aggregate the Parquet rows of a sweep into the per-cell table the papers report.

Per cell: ``runs`` (rows that ran; ``errors`` counted apart), for every status its count
``n_<status>``, fraction ``frac_<status>`` and Wilson interval ``frac_<status>_lo`` /
``frac_<status>_hi`` at ``report.confidence``; the same four columns for each boolean
column the experiment names in ``fraction_columns`` (width_threshold: ``full_rank``,
``init_full_rank``, ``ntk_full_rank``); ``mean_objective_spurious`` and
``mean_min_eig_spurious`` (means over spurious runs), ``n_families`` (teacher_student:
distinct spurious minima up to neuron permutation), ``iterations_mean`` and ``wall_s``
(compute seconds), and the experiment's extra aggregates (width_threshold:
``iterations_max``, ``n_stalled``, ``mean_last_layer_rank``). With a reference table:
``ref_*`` columns beside ours and ``ref_inside_ci`` (the published spurious fraction lies
inside our interval). These names are also the MLflow metric keys of the per-cell child
runs.

Layouts: teacher_student writes the per-cell table and the spurious fraction against k;
width_threshold writes the two width-threshold tables (rows = activation x depth,
columns = width / n; cells = % of runs ending global, and % with a full-rank last hidden
layer) above the per-cell table, their CSVs, and a heat map.
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
THRESHOLD_PNG = "width_threshold_heatmap.png"
#: width_threshold: the threshold tables as CSV (rows activation x depth x n, columns width / n)
THRESHOLD_CSVS = {"global": "threshold_global.csv", "full_rank": "threshold_full_rank.csv"}


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
    for column in experiment.fraction_columns:
        known = ran[column].dropna() if column in ran else pd.Series([], dtype=bool)
        trials = len(known)
        count = int(known.astype(bool).sum()) if trials else 0
        lo, hi = wilson_interval(count, trials, confidence)
        out.update({f"n_{column}": count, f"frac_{column}": count / trials if trials else math.nan,
                    f"frac_{column}_lo": lo, f"frac_{column}_hi": hi})
    spurious = ran[ran["status"] == "spurious"]
    out["mean_objective_spurious"] = _mean(spurious["final_loss"])
    out["mean_min_eig_spurious"] = _mean(spurious["min_eig"]) if "min_eig" in spurious else math.nan
    if experiment.has_families:
        records = spurious.to_dict("records")
        for record in records:
            weights = record.get("final_weights")
            record["final_weights"] = None if weights is None else [float(w) for w in weights]
        out["n_families"] = experiment.count_families(records, family_tol) if runs else None
    out["iterations_mean"] = _mean(ran["iterations"])
    out["wall_s"] = float(ran["wall_s"].sum())
    out.update(experiment.extra_aggregates(ran, confidence=confidence))
    return out


def sort_table(table: pd.DataFrame, experiment: Experiment) -> pd.DataFrame:
    """Rows in the order of the experiment's table axes (categorical axes in ``axis_order``)."""
    keys, helpers = [], []
    for axis in experiment.table_axes:
        if axis not in table:
            continue
        if axis in experiment.axis_order:
            rank = {value: index for index, value in enumerate(experiment.axis_order[axis])}
            helper = f"_order_{axis}"
            table = table.assign(**{helper: table[axis].map(lambda v: rank.get(v, len(rank)))})
            keys.append(helper)
            helpers.append(helper)
        keys.append(axis)
    return table.sort_values([*keys, "cell_id"], kind="stable").drop(columns=helpers).reset_index(drop=True)


def aggregate(rows: pd.DataFrame, experiment: Experiment, *, confidence: float, family_tol: float) -> pd.DataFrame:
    """One table row per cell, sorted by the experiment's table axes."""
    rows = deduplicate(rows)
    if rows.empty:
        return pd.DataFrame()
    cells = [aggregate_cell(group, experiment, confidence=confidence, family_tol=family_tol)
             for _, group in rows.groupby("cell_id", sort=False)]
    return sort_table(pd.DataFrame(cells), experiment)


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
        cells = [_num(row[axis]) if isinstance(row[axis], float) else str(row[axis]) for axis in axes]
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


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (reports are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parent directories created), close it, return ``path``."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
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


# ----------------------------------------------------------------- width-threshold layout
#: the threshold tables: (key of THRESHOLD_CSVS, fraction column, title)
THRESHOLD_TABLES = (
    ("global", "frac_global", "Runs ending at a global minimum (training loss < loss_tol)"),
    ("full_rank", "frac_full_rank", "Runs ending with a full-rank last hidden layer Z_{L-1}(X) (rank = min(n, width))"),
)


def _ratio(value: float) -> str:
    return f"{value:g}"


def ratio_table(table: pd.DataFrame, *, keys: list[str], ratio: str, label: str, column: str) -> pd.DataFrame:
    """A per-cell fraction laid out as a grid: one row per value of ``keys`` (table order),
    one column ``<label>=<r>`` per value r of the ``ratio`` axis holding ``column``, with
    its interval in ``<label>=<r>_lo`` / ``_hi`` (from ``<column>_lo`` / ``_hi``); NaN where
    no cell; where several cells share a position (earlier invocations with other
    settings), the first."""
    ratios = sorted(table[ratio].unique())
    rows = []
    for key, group in table.groupby(keys, sort=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        by_ratio = group.drop_duplicates(ratio).set_index(ratio)
        for r in ratios:
            present = r in by_ratio.index
            for suffix in ("", "_lo", "_hi"):
                row[f"{label}={_ratio(r)}{suffix}"] = by_ratio.loc[r, f"{column}{suffix}"] if present else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def threshold_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The width-threshold tables: one row per (activation, depth, n_samples) in table order,
    one column ``width/n=<r>`` per width / n (fraction of runs, 0..1), for each table of
    :data:`THRESHOLD_TABLES`; the Wilson bounds are in ``<column>_lo`` / ``<column>_hi``."""
    return {name: ratio_table(table, keys=["activation", "depth", "n_samples"], ratio="width_over_n", label="width/n",
                              column=column)
            for name, column, _ in THRESHOLD_TABLES}


def _pct_ci(value, lo, hi) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def width_threshold_markdown(table: pd.DataFrame, experiment: Experiment, *, sweep: str, confidence: float) -> str:
    """The two width-threshold tables, then the per-cell table, as GitHub markdown."""
    level = f"{100 * confidence:g}%"
    ratios = sorted(table["width_over_n"].unique())
    several_n = table["n_samples"].nunique() > 1
    lines = [f"# {sweep}", "",
             f"Per cell: runs, fraction per status and fraction with a full-rank Z_{{L-1}}(X), in %, "
             f"with the Wilson {level} interval in brackets.", ""]
    n_text = "" if several_n else f", n = {int(table['n_samples'].iloc[0])}"
    shared = int(table.duplicated(["activation", "depth", "n_samples", "width_over_n"]).sum())
    if shared:
        lines += [f"Note: {shared} cells share a table position with another cell (other settings, e.g. an earlier "
                  "invocation with different overrides); the threshold tables show the first, the per-cell table all.", ""]
    for name, column, title in THRESHOLD_TABLES:
        grid = threshold_tables(table)[name]
        lines += [f"## {title}{n_text}", ""]
        head = ["activation", "depth", *(["n"] if several_n else []), *(f"width/n = {_ratio(r)}" for r in ratios)]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for row in grid.to_dict("records"):
            cells = [str(row["activation"]), str(row["depth"]), *([str(row["n_samples"])] if several_n else [])]
            for r in ratios:
                key = f"width/n={_ratio(r)}"
                cells.append(_pct_ci(row[key], row[f"{key}_lo"], row[f"{key}_hi"]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    head = ["activation", "depth", "n", "width", "width/n", "runs", f"global % [{level} CI]", f"spurious % [{level} CI]",
            "saddle %", "not conv. %", "diverged %", f"full rank % [{level} CI]", "full rank at init %",
            "mean loss (spurious)", "mean min eig (spurious)", "iterations mean / max", "errors"]
    lines += ["## Per cell", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in table.to_dict("records"):
        iterations_max = row.get("iterations_max")
        cells = [str(row["activation"]), str(row["depth"]), str(row["n_samples"]), str(row["width"]), _ratio(row["width_over_n"]),
                 str(row["runs"]),
                 f"{_pct(row['frac_global'])} [{_pct(row['frac_global_lo'])}, {_pct(row['frac_global_hi'])}]",
                 f"{_pct(row['frac_spurious'])} [{_pct(row['frac_spurious_lo'])}, {_pct(row['frac_spurious_hi'])}]",
                 _pct(row["frac_saddle"]), _pct(row["frac_not_converged"]), _pct(row["frac_diverged"]),
                 f"{_pct(row['frac_full_rank'])} [{_pct(row['frac_full_rank_lo'])}, {_pct(row['frac_full_rank_hi'])}]",
                 _pct(row["frac_init_full_rank"]), _num(row["mean_objective_spurious"]), _num(row["mean_min_eig_spurious"]),
                 f"{_num(row['iterations_mean'], 4)} / {'' if iterations_max is None or pd.isna(iterations_max) else int(iterations_max)}",
                 str(row["errors"])]
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
    fig, axes = plt.subplots(len(ns), 2, figsize=(2.6 + 1.1 * len(ratios) * 2, 1.4 + (0.42 * n_rows + 0.6) * len(ns)),
                             squeeze=False, sharey="row", layout="constrained")
    image = None
    for row_index, n in enumerate(ns):
        for col_index, (name, _, title) in enumerate(THRESHOLD_TABLES):
            grid = tables[name][tables[name]["n_samples"] == n]
            values = np.array([[row[f"width/n={_ratio(r)}"] for r in ratios] for row in grid.to_dict("records")], dtype=float)
            ax = axes[row_index][col_index]
            image = ax.imshow(100 * values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
            for i in range(values.shape[0]):
                for j in range(values.shape[1]):
                    if not np.isnan(values[i, j]):
                        ax.text(j, i, f"{100 * values[i, j]:.0f}", ha="center", va="center", fontsize=8,
                                color="black" if values[i, j] > 0.6 else "white")
            ax.set_xticks(range(len(ratios)), [_ratio(r) for r in ratios])
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
    """Read every fragment of the sweep, aggregate, and write table.md / table.csv and the
    experiment's own files (:meth:`Experiment.report_files`: figures, extra tables)."""
    table = table_from_rows(store.read(), experiment, confidence=confidence, family_tol=family_tol, reference=reference)
    if table.empty:
        markdown = f"# {sweep}\n\nNo rows yet.\n"
    else:
        markdown = experiment.report_markdown(table, sweep=sweep, confidence=confidence)
    md_path, csv_path = store.report_dir / TABLE_MD, store.report_dir / TABLE_CSV
    store.save_text(md_path, markdown)
    store.save_text(csv_path, table.to_csv(index=False))
    paths = [md_path, csv_path]
    if not table.empty:
        paths += experiment.report_files(table, store, sweep=sweep, confidence=confidence, figure=figure)
    return Report(table=table, markdown=markdown, paths=paths)

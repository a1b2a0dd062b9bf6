"""Aggregate the Parquet rows of a sweep into one table row per cell.

Per cell: ``runs`` (rows that ran; ``errors`` counted apart), for every status of the
experiment (``ReportLayout.statuses``, the experiment's) its count ``n_<status>``, fraction ``frac_<status>``
and Wilson interval ``frac_<status>_lo`` / ``frac_<status>_hi`` at ``report.confidence``;
the same four columns for each boolean column the layout names in
``fraction_columns``; ``mean_objective_spurious`` and ``mean_min_eig_spurious`` (means over
spurious runs), ``iterations_mean`` and ``wall_s`` (compute seconds), then the layout's
own aggregates (``ReportLayout.extra_aggregates``: the families of spurious minima, the
largest iteration count...). With a reference table: ``ref_*`` columns beside
ours and ``ref_inside_ci`` (the published spurious fraction lies inside our interval).
These names are also the MLflow metric keys of the per-cell child runs.

Generic: nothing here knows an experiment; what differs is declared on its report layout.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from landscape_core.statistics import wilson_interval

if TYPE_CHECKING:
    from ray_jobs.report.layout import ReportLayout


def deduplicate(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell_id, seed): a successful row wins over an `error` row of the same run."""
    if rows.empty:
        return rows
    order = rows.assign(_is_error=rows["status"].eq("error")).sort_values(["_is_error"], kind="stable")
    return order.drop_duplicates(["cell_id", "seed"], keep="first").drop(columns="_is_error")


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else math.nan


def aggregate_cell(rows: pd.DataFrame, layout: ReportLayout, *, confidence: float) -> dict:
    """The table row of one cell from its (deduplicated) run rows."""
    first = rows.iloc[0]
    errors = int(rows["status"].eq("error").sum())
    ran = rows[rows["status"] != "error"]
    runs = len(ran)
    out: dict = {"cell_id": first["cell_id"], "experiment": first["experiment"]}
    out.update({axis: first[axis] for axis in layout.table_axes if axis in rows})
    out.update(runs=runs, errors=errors)
    for status in layout.statuses:
        count = int(ran["status"].eq(status).sum())
        lo, hi = wilson_interval(count, runs, confidence)
        out.update(
            {
                f"n_{status}": count,
                f"frac_{status}": count / runs if runs else math.nan,
                f"frac_{status}_lo": lo,
                f"frac_{status}_hi": hi,
            }
        )
    for column in layout.fraction_columns:
        known = ran[column].dropna() if column in ran else pd.Series([], dtype=bool)
        trials = len(known)
        count = int(known.astype(bool).sum()) if trials else 0
        lo, hi = wilson_interval(count, trials, confidence)
        out.update(
            {
                f"n_{column}": count,
                f"frac_{column}": count / trials if trials else math.nan,
                f"frac_{column}_lo": lo,
                f"frac_{column}_hi": hi,
            }
        )
    spurious = ran[ran["status"] == "spurious"]
    out["mean_objective_spurious"] = _mean(spurious["final_loss"])
    out["mean_min_eig_spurious"] = _mean(spurious["min_eig"]) if "min_eig" in spurious else math.nan
    out["iterations_mean"] = _mean(ran["iterations"])
    out["wall_s"] = float(ran["wall_s"].sum())
    out.update(layout.extra_aggregates(ran, confidence=confidence))
    return out


def sort_table(table: pd.DataFrame, layout: ReportLayout) -> pd.DataFrame:
    """Rows in the order of the layout's table axes (categorical axes in ``axis_order``)."""
    keys, helpers = [], []
    for axis in layout.table_axes:
        if axis not in table:
            continue
        if axis in layout.axis_order:
            rank = {value: index for index, value in enumerate(layout.axis_order[axis])}
            helper = f"_order_{axis}"
            table = table.assign(**{helper: table[axis].map(lambda v, rank=rank: rank.get(v, len(rank)))})
            keys.append(helper)
            helpers.append(helper)
        keys.append(axis)
    return table.sort_values([*keys, "cell_id"], kind="stable").drop(columns=helpers).reset_index(drop=True)


def aggregate(rows: pd.DataFrame, layout: ReportLayout, *, confidence: float) -> pd.DataFrame:
    """One table row per cell, sorted by the layout's table axes."""
    rows = deduplicate(rows)
    if rows.empty:
        return pd.DataFrame()
    cells = [aggregate_cell(group, layout, confidence=confidence) for _, group in rows.groupby("cell_id", sort=False)]
    return sort_table(pd.DataFrame(cells), layout)


def attach_reference(table: pd.DataFrame, reference_csv: Path, layout: ReportLayout) -> pd.DataFrame:
    """Add the published values (``ref_*``) and ``ref_inside_ci`` beside ours."""
    reference = pd.read_csv(reference_csv)
    keys = [axis for axis in layout.table_axes if axis in reference.columns]
    renamed = {}
    for column, (ours, scale) in layout.reference_columns.items():
        if column in reference.columns:
            renamed[ours] = reference[column] if scale is None else reference[column] * scale  # None: as written
    reference = pd.concat([reference[keys], pd.DataFrame(renamed)], axis=1)
    merged = table.merge(reference, on=keys, how="left")
    if "ref_frac_spurious" in merged:
        known = merged["ref_frac_spurious"].notna()
        inside = (merged["frac_spurious_lo"] <= merged["ref_frac_spurious"]) & (
            merged["ref_frac_spurious"] <= merged["frac_spurious_hi"]
        )
        merged["ref_inside_ci"] = inside.where(known, None).astype("object")
    return merged


def table_from_rows(
    rows: pa.Table | pd.DataFrame, layout: ReportLayout, *, confidence: float, reference: Path | None
) -> pd.DataFrame:
    """Aggregate rows (Arrow or pandas) and attach the reference when given."""
    frame = rows.to_pandas() if isinstance(rows, pa.Table) else rows
    table = aggregate(frame, layout, confidence=confidence)
    if reference is not None and not table.empty:
        table = attach_reference(table, reference, layout)
    return table

"""The landscape-probes report: Conjecture V.1's monotone fraction and Conjecture V.2's
basin-free fraction by width (Wilson intervals), the width thresholds c1 (plain) and c2
(skip) of V.2, the per-cell table, their CSVs and the figures (interpolation curves and
slice contours, one figure per architecture x activation, a panel per depth x width)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from landscape_core.names import ACTIVATION_NAMES
from ray_jobs.report.layout import ReportLayout
from ray_jobs.report.tables import markdown_table, num, pct, pct_ci

if TYPE_CHECKING:
    from ray_jobs.store import ResultsStore

#: Conjecture V.2's width threshold: the smallest width from which on every width of the
#: grid has at least this fraction of basin-free slices (the issue's 95%)
BASIN_FREE_TARGET = 0.95
#: what names a row of the by-width tables (everything of a cell but its width)
ROW_KEYS = ["data", "optimizer", "architecture", "activation", "depth", "n_samples"]
FRACTION_CSVS = {"monotone": "monotone_by_width.csv", "basin_free": "basin_free_by_width.csv"}
THRESHOLD_CSV = "basin_free_thresholds.csv"


def by_width(table: pd.DataFrame, column: str, probe: str) -> pd.DataFrame:
    """One row per :data:`ROW_KEYS` of the ``probe``'s cells, one column per width with the
    fraction ``frac_<column>`` and its Wilson bounds (``<w>_lo`` / ``<w>_hi``)."""
    cells = table[table["probe"] == probe]
    rows = []
    for key, group in cells.groupby(ROW_KEYS, sort=False):
        row = dict(zip(ROW_KEYS, key))
        for record in group.to_dict("records"):
            w = int(record["width"])
            row[str(w)] = record.get(f"frac_{column}")
            row[f"{w}_lo"], row[f"{w}_hi"] = record.get(f"frac_{column}_lo"), record.get(f"frac_{column}_hi")
        rows.append(row)
    return pd.DataFrame(rows)


def width_threshold(widths: list[int], fractions: list[float], target: float) -> int | None:
    """The smallest width w of the grid with fraction >= target at w and at every larger
    width of the grid; None when the largest width is below target."""
    found = None
    for w, f in sorted(zip(widths, fractions), reverse=True):
        if f is None or (isinstance(f, float) and math.isnan(f)) or f < target:
            break
        found = w
    return found


def thresholds(table: pd.DataFrame, target: float = BASIN_FREE_TARGET) -> pd.DataFrame:
    """c1 (plain) and c2 (skip) per data x optimizer x activation x depth x n_samples: the
    :func:`width_threshold` of the basin-free fraction."""
    cells = table[table["probe"] == "slice"]
    keys = ["data", "optimizer", "activation", "depth", "n_samples"]
    rows = []
    for key, group in cells.groupby(keys, sort=False):
        row: dict[str, Any] = dict(zip(keys, key))
        for arch, label in (("plain", "c1_plain"), ("skip", "c2_skip")):
            part = group[group["architecture"] == arch].sort_values("width")
            row[label] = (
                width_threshold(part["width"].astype(int).tolist(), part["frac_basin_free"].tolist(), target)
                if len(part)
                else None
            )
            row[f"{label}_widths"] = ",".join(str(int(w)) for w in part["width"])
        rows.append(row)
    return pd.DataFrame(rows)


def _fraction_lines(table: pd.DataFrame, column: str, probe: str, title: str) -> list[str]:
    grid = by_width(table, column, probe)
    if grid.empty:
        return []
    widths = sorted({int(w) for w in table[table["probe"] == probe]["width"]})
    rows = []
    for row in grid.to_dict("records"):
        cells = [str(row[k]) for k in ROW_KEYS]
        for w in widths:
            value = row.get(str(w))
            cells.append("" if value is None else pct_ci(value, row.get(f"{w}_lo"), row.get(f"{w}_hi"), whole=True))
        rows.append(cells)
    head = ["data", "optimizer", "architecture", "activation", "depth", "n", *(f"width {w}" for w in widths)]
    return [f"## {title}", "", *markdown_table(head, rows), ""]


def probes_markdown(table: pd.DataFrame, *, sweep: str, confidence: float) -> str:
    """The report: V.1 table, V.2 table, thresholds, per-cell table."""
    level = f"{100 * confidence:g}%"
    lines = [f"# {sweep}", "", f"Fractions in %, Wilson {level} interval in brackets.", ""]
    lines += _fraction_lines(
        table,
        "monotone",
        "interpolation",
        "Conjecture V.1: runs whose loss decreases monotonically from init to solution",
    )
    lines += _fraction_lines(
        table, "basin_free", "slice", "Conjecture V.2: filter-normalized 2-D slices with no sub-optimal basin"
    )
    limits = thresholds(table)
    if not limits.empty:
        lines += [
            f"## Conjecture V.2 width thresholds (smallest width with >= {100 * BASIN_FREE_TARGET:g}% basin-free "
            "slices there and at every larger width of the grid; none = not reached)",
            "",
        ]
        rows = [
            [str(r["data"]), str(r["optimizer"]), str(r["activation"]), str(r["depth"]), str(r["n_samples"])]
            + [_width(r["c1_plain"]), _width(r["c2_skip"]), str(r["c1_plain_widths"] or r["c2_skip_widths"])]
            for r in limits.to_dict("records")
        ]
        lines += [
            *markdown_table(
                ["data", "optimizer", "activation", "depth", "n", "c1 (plain)", "c2 (skip)", "widths"], rows
            ),
            "",
        ]
    head = [
        "probe",
        "architecture",
        "activation",
        "depth",
        "width",
        "runs",
        "trained global %",
        "monotone % / basin-free %",
        "mean rel. bump",
        "mean bump t",
        "mean pair barrier",
        "mean basins",
        "mean convex frac.",
        "mean slice max",
        "errors",
    ]
    rows = []
    for r in table.to_dict("records"):
        interp = r["probe"] == "interpolation"
        frac = "frac_monotone" if interp else "frac_basin_free"
        rows.append([
            str(r["probe"]), str(r["architecture"]), str(r["activation"]), str(r["depth"]), str(r["width"]),
            str(r["runs"]), pct(r.get("frac_trained_global")),
            pct_ci(r.get(frac), r.get(f"{frac}_lo"), r.get(f"{frac}_hi")),
            num(r.get("mean_relative_bump")), num(r.get("mean_bump_t")), num(r.get("mean_pair_barrier")),
            num(r.get("mean_n_basins")), num(r.get("mean_convex_fraction")), num(r.get("mean_slice_max")),
            str(r.get("errors", "")),
        ])  # fmt: skip
    lines += ["## Per cell", "", *markdown_table(head, rows)]
    return "\n".join(lines) + "\n"


def _width(value) -> str:
    return "none" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def _mean(ran: pd.DataFrame, column: str) -> float:
    if column not in ran:
        return math.nan
    values = pd.to_numeric(ran[column], errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


class LandscapeProbesLayout(ReportLayout):
    """The landscape-probes report (module docstring)."""

    table_axes = ("probe", "data", "optimizer", "architecture", "activation", "depth", "n_samples", "width")
    fraction_columns = ("monotone", "basin_free", "trained_global")
    axis_order = {
        "activation": ACTIVATION_NAMES,
        "probe": ("interpolation", "slice"),
        "architecture": ("plain", "skip"),
    }
    #: curves and slices are read by the figures themselves, never by the aggregation
    report_projection = {"interp_curve": (), "pair_curve": (), "slice_values": ()}

    def extra_aggregates(self, ran: pd.DataFrame, *, confidence: float) -> dict[str, Any]:
        """Means of the probes' numbers over the cell's runs (NaN for the other probe's)."""
        names = ("max_bump", "relative_bump", "bump_t", "pair_barrier", "n_basins", "convex_fraction", "slice_max")
        return {f"mean_{name}": _mean(ran, name) for name in names}

    def markdown(self, table: pd.DataFrame, *, sweep: str, confidence: float) -> str:
        return probes_markdown(table, sweep=sweep, confidence=confidence)

    def files(
        self, table: pd.DataFrame, store: ResultsStore, *, sweep: str, confidence: float, figure: bool
    ) -> list[Path]:
        """The by-width tables and the thresholds as CSVs and, with ``figure``, the curve and
        contour figures (:mod:`.figures`)."""
        paths = []
        for column, probe in (("monotone", "interpolation"), ("basin_free", "slice")):
            grid = by_width(table, column, probe)
            if not grid.empty:
                path = store.report_dir / FRACTION_CSVS[column]
                store.save_text(path, grid.to_csv(index=False))
                paths.append(path)
        limits = thresholds(table)
        if not limits.empty:
            path = store.report_dir / THRESHOLD_CSV
            store.save_text(path, limits.to_csv(index=False))
            paths.append(path)
        if figure:
            from ray_jobs.experiments.landscape_probes.figures import probe_figures

            paths += probe_figures(store, sweep=sweep)
        return paths


LAYOUT = LandscapeProbesLayout

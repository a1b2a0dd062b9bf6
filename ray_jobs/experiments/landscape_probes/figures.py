"""Figures of the landscape-probes report, read from the results store: for each probe x
architecture x activation one PNG with a panel per (depth, width) cell:

- ``interpolation_<arch>_<act>.png``: F((1 - t) theta_0 + t theta_1) / F(theta_0) of every run
  (monotone runs grey, the others red), Conjecture V.1;
- ``slice_<arch>_<act>.png``: the contours of log10 F on the 2-D slice of the cell's lowest
  kept seed (``keep_surfaces``), centre marked, sub-optimal basins (interior strict grid
  minima above the centre by more than basin_tol) as red crosses, Conjecture V.2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ray_jobs.report.figures import pyplot, save_figure
from ray_jobs.report.layout import CELL_FILES_DIR

if TYPE_CHECKING:
    from ray_jobs.store import ResultsStore

WANTED = [
    "cell_id", "seed", "status", "probe", "architecture", "activation", "depth", "width", "grid", "radius",
    "basin_tol", "monotone", "interp_curve", "slice_values", "slice_centre",
]  # fmt: skip


def _rows(store: ResultsStore) -> pd.DataFrame | None:
    names = store.schema().names
    if "probe" not in names:
        return None
    rows = store.read(columns=[c for c in WANTED if c in names]).to_pandas()
    if rows.empty:
        return None
    return rows.drop_duplicates(["cell_id", "seed"], keep="last")


def _basins(values: np.ndarray, centre: float, tol: float) -> list[tuple[int, int]]:
    """Interior strict grid minima above centre + tol (as landscape_core.loss_surfaces.count_basins)."""
    A, B = values.shape
    out = []
    for i in range(1, A - 1):
        for j in range(1, B - 1):
            block = values[i - 1 : i + 2, j - 1 : j + 2].copy()
            v = block[1, 1]
            block[1, 1] = np.inf
            if v < block.min() and v > centre + tol:
                out.append((i, j))
    return out


def probe_figures(store: ResultsStore, *, sweep: str) -> list[Path]:
    """Write the figures (module docstring) into ``store.report_dir``; return their paths."""
    rows = _rows(store)
    if rows is None:
        return []
    plt = pyplot()
    paths = []
    for (probe, arch, act), part in rows.groupby(["probe", "architecture", "activation"], sort=True):
        depths = sorted(part["depth"].unique())
        widths = sorted(part["width"].unique())
        fig, axes = plt.subplots(
            len(depths), len(widths), figsize=(1.9 * len(widths) + 0.6, 1.7 * len(depths) + 0.7), squeeze=False,
            layout="constrained", sharex=True, sharey=probe == "interpolation",
        )  # fmt: skip
        for i, depth in enumerate(depths):
            for j, width in enumerate(widths):
                ax = axes[i][j]
                cell = part[(part["depth"] == depth) & (part["width"] == width)].sort_values("seed")
                ax.set_title(f"L={depth}, w={width}", fontsize=7)
                ax.tick_params(labelsize=6)
                if probe == "interpolation":
                    _plot_curves(ax, cell)
                else:
                    _plot_slice(ax, cell)
        what = "F(t) / F(0), init -> solution" if probe == "interpolation" else "log10 F on the slice"
        fig.suptitle(f"{sweep}: {probe}, {arch}, {act}: {what}", fontsize=9)
        paths.append(save_figure(fig, store.report_dir / f"{probe}_{arch}_{act}.png"))
    return paths + cell_figures(rows, store)


def cell_figures(rows: pd.DataFrame, store: ResultsStore) -> list[Path]:
    """One small figure per cell, ``cells/<cell id>.png`` (its MLflow child's artifact:
    :meth:`ray_jobs.report.layout.ReportLayout.cell_files`): the cell's interpolation curves,
    or its first kept slice's contours."""
    plt = pyplot()
    paths = []
    for cell_id, cell in rows.groupby("cell_id", sort=True):
        cell = cell.sort_values("seed")
        first = cell.iloc[0]
        fig, ax = plt.subplots(figsize=(3.4, 3.0), layout="constrained")
        if first["probe"] == "interpolation":
            _plot_curves(ax, cell)
        else:
            _plot_slice(ax, cell)
        ax.set_title(
            f"{first['probe']}, {first['architecture']}, {first['activation']}, L={first['depth']}, w={first['width']}",
            fontsize=7,
        )
        ax.tick_params(labelsize=6)
        paths.append(save_figure(fig, store.report_dir / CELL_FILES_DIR / f"{cell_id}.png", dpi=90))
    return paths


def _plot_curves(ax, cell: pd.DataFrame) -> None:
    records = cell.to_dict("records")
    for record in sorted(records, key=lambda r: bool(r.get("monotone"))):  # monotone (grey) drawn last, on top
        curve = record.get("interp_curve")
        if curve is None or len(curve) < 2 or not curve[0]:
            continue
        values = np.asarray(curve, dtype=float) / float(curve[0])
        ts = np.linspace(0.0, 1.0, len(values))
        monotone = bool(record.get("monotone"))
        ax.plot(ts, values, color="0.5" if monotone else "tab:red", linewidth=0.6, alpha=0.7)
    ax.set_ylim(bottom=0)


def _plot_slice(ax, cell: pd.DataFrame) -> None:
    kept = cell[cell["slice_values"].notna()] if "slice_values" in cell else cell.iloc[:0]
    if kept.empty:
        ax.text(0.5, 0.5, "no kept slice", ha="center", va="center", fontsize=6, transform=ax.transAxes)
        return
    record = kept.iloc[0]
    n, r = int(record["grid"]), float(record["radius"])
    values = np.asarray(record["slice_values"], dtype=float).reshape(n, n)
    axis = np.linspace(-r, r, n)
    logv = np.log10(np.maximum(values, 1e-12))
    ax.contourf(axis, axis, logv.T, levels=20, cmap="viridis")
    ax.contour(axis, axis, logv.T, levels=20, colors="k", linewidths=0.2)
    ax.plot([0], [0], marker="o", color="white", markersize=3)
    for i, j in _basins(values, float(record["slice_centre"]), float(record["basin_tol"])):
        ax.plot([axis[i]], [axis[j]], marker="x", color="red", markersize=4)
    ax.set_aspect("equal")

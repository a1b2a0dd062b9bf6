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
from ray_jobs.experiments.skip_networks.figures import plot_rank, plot_trainability
from ray_jobs.experiments.skip_networks.tables import (
    RANK_TABLES,
    fixed_settings,
    is_rank_layout,
    rank_tables,
    skip_markdown,
    trainability_table,
    varying_axes,
)
from ray_jobs.report.layout import ReportLayout
from ray_jobs.report.tables import is_missing

if TYPE_CHECKING:
    from ray_jobs.store import ResultsStore

__all__ = [
    "ACTIVATION_ORDER",
    "RANK_CSVS",
    "RANK_PNG",
    "RANK_TABLES",
    "SUMMARY_CSV",
    "TRAINABILITY_PNG",
    "LAYOUT",
    "SkipNetworksLayout",
    "fixed_settings",
    "is_rank_layout",
    "rank_tables",
    "skip_aggregates",
    "skip_markdown",
    "skip_report_files",
    "trainability_table",
    "varying_axes",
]

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

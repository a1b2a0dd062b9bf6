"""The string-sampling report: the per-cell table, normalized length and beads against the
threshold L0, connected fraction against the width (tables, CSVs and figures), one kept
string projected on its top-3 principal directions coloured by loss, and every kept
string's weights (``strings.npz``, indexed by ``strings.csv``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from landscape_core.names import ACTIVATION_NAMES
from ray_jobs.experiments.string_sampling.experiment import PROBLEMS
from ray_jobs.experiments.string_sampling.figures import (
    LENGTH_PNG,
    WIDTH_PNG,
    plot_connected_vs_width,
    plot_length_vs_threshold,
    plot_string_pca,
)
from ray_jobs.experiments.string_sampling.strings import (
    STRINGS_CSV,
    STRINGS_NPZ,
    kept_strings,
    save_strings,
    string_projection,
)
from ray_jobs.experiments.string_sampling.tables import dss_markdown, length_table, width_table
from ray_jobs.report.layout import ReportLayout

__all__ = [
    "LENGTH_CSV",
    "LENGTH_PNG",
    "PCA_PNG",
    "STRINGS_CSV",
    "STRINGS_NPZ",
    "WIDTH_CSV",
    "WIDTH_PNG",
    "LAYOUT",
    "StringSamplingLayout",
    "dss_aggregates",
    "dss_markdown",
    "dss_report_files",
    "string_projection",
]

LENGTH_CSV = "length_vs_threshold.csv"
WIDTH_CSV = "connected_vs_width.csv"
PCA_PNG = "dss_string_pca.png"

#: the network / data columns that name a series (everything of a cell but the swept one)
_NET = ("problem", "activation", "depth", "n_train")


def dss_aggregates(ran, *, confidence: float) -> dict[str, Any]:
    """Over the connected pairs: normalized length (mean, median, max), beads (mean, max),
    rounds (mean); over the strung pairs that did not connect: beads and rounds (mean;
    at the budget when DSS gave up); over the strung pairs (status global): the final string's worst
    segment relative to L0, endpoint test loss, DSS seconds; over every pair that ran:
    the straight-line barrier between the endpoints and the largest rise of the
    initial-point lines (Conjecture V.1: 0)."""
    strung = ran[ran["status"] == "global"]
    certified = (
        strung["dss_connected"].fillna(False).astype(bool)
        if "dss_connected" in strung
        else strung["status"].ne(strung["status"])
    )
    connected, not_connected = strung[certified], strung[~certified]

    def stat(frame, column, how):
        values = frame[column].dropna() if column in frame else pd.Series([], dtype=float)
        return float(getattr(values, how)()) if len(values) else math.nan

    ratio = (strung["dss_max_interp_loss"] / strung["threshold"]) if len(strung) else pd.Series([], dtype=float)
    test_loss = (
        strung["endpoint_test_losses"].dropna().map(lambda pair: sum(pair) / len(pair))
        if len(strung)
        else pd.Series([], dtype=float)
    )
    return {
        "mean_normalized_length": stat(connected, "dss_normalized_length", "mean"),
        "median_normalized_length": stat(connected, "dss_normalized_length", "median"),
        "max_normalized_length": stat(connected, "dss_normalized_length", "max"),
        "mean_beads": stat(connected, "dss_beads", "mean"),
        "max_beads": stat(connected, "dss_beads", "max"),
        "mean_rounds": stat(connected, "dss_rounds", "mean"),
        "mean_beads_not_connected": stat(not_connected, "dss_beads", "mean"),
        "mean_rounds_not_connected": stat(not_connected, "dss_rounds", "mean"),
        "mean_max_interp_over_threshold": float(ratio.mean()) if len(ratio.dropna()) else math.nan,
        "mean_endpoint_test_loss": float(test_loss.mean()) if len(test_loss) else math.nan,
        "mean_interp_ab_barrier": stat(ran, "interp_ab_barrier", "mean"),
        "mean_interp_init_max_rise": stat(ran, "interp_init_max_rise", "mean"),
        "dss_wall_s_mean": stat(strung, "dss_wall_s", "mean"),
    }


def dss_report_files(table: pd.DataFrame, store, *, sweep: str, confidence: float, figure: bool) -> list[Path]:
    """The CSVs and figures of the length / width tables, the kept strings and their PCA figure."""
    paths = []
    for name, grid in ((LENGTH_CSV, length_table(table)), (WIDTH_CSV, width_table(table))):
        if grid is not None:
            path = store.report_dir / name
            store.save_text(path, grid.to_csv(index=False))
            paths.append(path)
    if figure:
        for plot in (plot_length_vs_threshold, plot_connected_vs_width):
            path = plot(table, store.report_dir, sweep=sweep, confidence=confidence)
            paths += [path] if path is not None else []
    strings = kept_strings(store)
    if strings is not None:
        paths += save_strings(strings, store)
        if figure:
            path = plot_string_pca(strings, store.report_dir / PCA_PNG, sweep=sweep)
            paths += [path] if path is not None else []
    return paths


class StringSamplingLayout(ReportLayout):
    """The string-sampling report: length against threshold, connected fraction against
    width, the kept strings and their PCA figure."""

    table_axes = ("problem", "activation", "depth", "n_train", "width", "threshold")
    fraction_columns = ("dss_connected",)
    axis_order = {"activation": ACTIVATION_NAMES, "problem": PROBLEMS}
    #: the kept strings are read by the layout itself (kept_strings), never by the aggregation
    report_projection = {"dss_string": (), "dss_string_losses": ()}

    def extra_aggregates(self, ran, *, confidence: float) -> dict[str, Any]:
        return dss_aggregates(ran, confidence=confidence)

    def markdown(self, table: pd.DataFrame, *, sweep: str, confidence: float) -> str:
        return dss_markdown(table, sweep=sweep, confidence=confidence)

    def files(self, table: pd.DataFrame, store, *, sweep: str, confidence: float, figure: bool) -> list[Path]:
        return dss_report_files(table, store, sweep=sweep, confidence=confidence, figure=figure)


LAYOUT = StringSamplingLayout

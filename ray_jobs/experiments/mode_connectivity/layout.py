"""The mode-connectivity report: per cell the connected fractions (Bezier, polygonal chain,
straight segment) with their intervals and barriers; beside them DSS's verdict on the same
pairs and the agreement table (curve vs DSS per pair, counted per cell; every pair in
``pairs.csv``); Conjecture V.3 (the plane through three solutions: fraction of pairs whose
minimax path in the plane rises above the ends); figures: barrier against width and one
contour plot of the plane per cell (``plane_<n>.png``, listed in ``planes.csv``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from landscape_core.names import ACTIVATION_NAMES
from ray_jobs.experiments.mode_connectivity.experiment import NETWORKS, PROBLEMS
from ray_jobs.experiments.mode_connectivity.figures import PLANES_CSV, plot_barrier_vs_width, plot_planes
from ray_jobs.report.aggregate import deduplicate
from ray_jobs.report.layout import ReportLayout
from ray_jobs.report.tables import markdown_table, num, pct_ci

__all__ = ["AGREEMENT_COLUMNS", "LAYOUT", "ModeConnectivityLayout", "PAIRS_CSV", "agreement_counts"]

PAIRS_CSV = "pairs.csv"
CONNECTIVITY_CSV = "connectivity.csv"
#: per-cell counts of the agreement table: (curve verdict, DSS verdict)
AGREEMENT_COLUMNS = ("n_both_connected", "n_curve_only", "n_dss_only", "n_neither")
#: the per-pair columns of pairs.csv
PAIR_COLUMNS = (
    "seed",
    "status",
    "bezier_connected",
    "polychain_connected",
    "dss_connected",
    "bezier_barrier",
    "polychain_barrier",
    "segment_barrier",
    "plane_barrier",
    "v3_holds",
    "dss_beads",
    "dss_max_interp_loss",
    "endpoint_train_losses",
)
CELL_KEYS = ("problem", "network", "activation", "depth", "width", "threshold")


def agreement_counts(ran: pd.DataFrame) -> dict[str, float]:
    """Over the pairs with both verdicts (Bezier curve, DSS): the 2 x 2 counts and the
    fraction that agree."""
    both = ran.dropna(subset=["bezier_connected", "dss_connected"]) if len(ran) else ran
    curve = both["bezier_connected"].astype(bool) if len(both) else pd.Series([], dtype=bool)
    dss = both["dss_connected"].astype(bool) if len(both) else pd.Series([], dtype=bool)
    counts = {
        "n_both_connected": int((curve & dss).sum()),
        "n_curve_only": int((curve & ~dss).sum()),
        "n_dss_only": int((~curve & dss).sum()),
        "n_neither": int((~curve & ~dss).sum()),
    }
    pairs = len(both)
    agree = counts["n_both_connected"] + counts["n_neither"]
    return {**counts, "n_compared": pairs, "frac_agree": agree / pairs if pairs else math.nan}


class ModeConnectivityLayout(ReportLayout):
    table_axes = CELL_KEYS
    fraction_columns = ("bezier_connected", "polychain_connected", "segment_connected", "dss_connected", "v3_holds")
    axis_order = {"activation": ACTIVATION_NAMES, "problem": PROBLEMS, "network": NETWORKS}
    #: the per-pair paths and planes are read by the figures only
    report_projection = {"plane_losses": (), "bezier_losses": (), "polychain_losses": (), "segment_losses": ()}

    def extra_aggregates(self, ran, *, confidence: float) -> dict[str, Any]:
        strung = ran[ran["status"] == "global"]

        def stat(column: str, how: str) -> float:
            values = strung[column].dropna() if column in strung else pd.Series([], dtype=float)
            return float(getattr(values, how)()) if len(values) else math.nan

        out: dict[str, Any] = {"pairs_strung": len(strung)}
        for kind in ("bezier", "polychain", "segment", "plane"):
            out[f"mean_{kind}_barrier"] = stat(f"{kind}_barrier", "mean")
            out[f"median_{kind}_barrier"] = stat(f"{kind}_barrier", "median")
            out[f"max_{kind}_barrier"] = stat(f"{kind}_barrier", "max")
        out["mean_dss_beads"] = stat("dss_beads", "mean")
        out["mean_wall_s"] = float(ran["wall_s"].mean()) if len(ran) else math.nan
        out.update(agreement_counts(strung))
        return out

    def markdown(self, table: pd.DataFrame, *, sweep: str, confidence: float) -> str:
        level = f"{100 * confidence:g}%"
        keys = [k for k in CELL_KEYS if k in table and (k in ("network", "width") or table[k].nunique() > 1)]
        head = [*keys, "pairs", "strung"]

        def ci(row, column: str) -> str:
            return pct_ci(row[f"frac_{column}"], row[f"frac_{column}_lo"], row[f"frac_{column}_hi"], whole=True)

        rows1, rows2, rows3 = [], [], []
        for _, row in table.iterrows():
            cell = [str(row[k]) for k in keys] + [str(int(row["runs"])), str(int(row["pairs_strung"]))]
            rows1.append(
                cell
                + [ci(row, "bezier_connected"), ci(row, "polychain_connected"), ci(row, "segment_connected")]
                + [num(row[f"{stat}_{kind}_barrier"], 3) for kind in ("bezier", "segment") for stat in ("mean", "max")]
                + [num(row["mean_polychain_barrier"], 3)]
            )
            rows2.append(
                cell
                + [ci(row, "bezier_connected"), ci(row, "dss_connected")]
                + [str(int(row[c])) for c in AGREEMENT_COLUMNS]
                + [pct_ci(row["frac_agree"], row["frac_agree"], row["frac_agree"]).split(" ")[0]]
            )
            rows3.append(
                cell + [ci(row, "v3_holds"), num(row["mean_plane_barrier"], 3), num(row["mean_segment_barrier"], 3)]
            )
        lines = [
            f"# {sweep}",
            "",
            "Mode connectivity per cell (survey V-B): pairs that reached the training target (strung); "
            f"connected when the path's barrier (max F - mean of the ends) < the cell's `curve_barrier_tol`; "
            f"Wilson {level} intervals.",
            "",
            *markdown_table(
                head
                + ["Bezier connected %", "polychain connected %", "segment connected %"]
                + ["Bezier barrier mean", "max", "segment barrier mean", "max", "polychain barrier mean"],
                rows1,
            ),
            "",
            "## Agreement with Dynamic String Sampling on the same pairs",
            "",
            "Curve = Bezier connected; DSS = certified (string below pass_factor x L0).",
            "",
            *markdown_table(
                head + ["Bezier %", "DSS %", "both", "curve only", "DSS only", "neither", "agree %"], rows2
            ),
            "",
            "## Conjecture V.3: the plane through the pair and a third solution",
            "",
            "Holds on the grid when the minimax path between the two in the plane rises more than the tolerance.",
            "",
            *markdown_table(head + ["V.3 holds %", "plane barrier mean", "segment barrier mean"], rows3),
            "",
        ]
        return "\n".join(lines)

    def files(self, table: pd.DataFrame, store, *, sweep: str, confidence: float, figure: bool) -> list[Path]:
        paths = []
        path = store.report_dir / CONNECTIVITY_CSV
        store.save_text(path, table.to_csv(index=False))
        paths.append(path)
        names = store.schema().names
        wanted = ["cell_id", *CELL_KEYS, *PAIR_COLUMNS, "plane_losses", "plane_low", "plane_high", "plane_points"]
        rows = deduplicate(store.read(columns=[c for c in wanted if c in names]).to_pandas())
        pairs = rows[[c for c in ["cell_id", *CELL_KEYS, *PAIR_COLUMNS] if c in rows]].sort_values(
            [*CELL_KEYS, "seed"], kind="stable"
        )
        path = store.report_dir / PAIRS_CSV
        store.save_text(path, pairs.to_csv(index=False))
        paths.append(path)
        if figure:
            path = plot_barrier_vs_width(table, store.report_dir, sweep=sweep)
            paths += [path] if path is not None else []
            paths += plot_planes(rows, store, keys=CELL_KEYS)
        return paths

    def cell_files(self, table: pd.DataFrame, store, paths: list[Path]) -> dict[str, list[Path]]:
        """Each cell's plane figure (``planes.csv`` names its cell), for the cell's MLflow child."""
        index_path = store.report_dir / PLANES_CSV
        if index_path not in paths:
            return {}
        index = pd.read_csv(index_path)
        return {str(row["cell_id"]): [store.report_dir / str(row["file"])] for row in index.to_dict("records")}


LAYOUT = ModeConnectivityLayout

"""The Auer et al. report: per cell (n, d, starts) the minima predicted by Theorem 3.4
(floor(n/d)^d), the distinct strict minima found (the endpoints of all the cell's units with
status local_min, grouped by relative distance <= group_tol, the value recorded in the rows),
the cross-check by product cell (distinct ``cell_index``), how many starts, and the smallest
basin found (the fewest starts ending at one minimum); a log-scale figure of found vs
predicted."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ray_jobs.report.figures import pyplot, save_figure
from ray_jobs.report.layout import ReportLayout
from ray_jobs.report.tables import markdown_table, pct

if TYPE_CHECKING:
    from ray_jobs.store import ResultsStore

COUNTS_PNG = "minima_found_vs_predicted.png"
COUNTS_CSV = "minima_counts.csv"


def group_endpoints(points: np.ndarray, tol: float) -> np.ndarray:
    """Cluster labels (N,) of endpoints (N, d): greedy, a point joins the first cluster whose
    representative is within relative distance tol (|a - b|_inf / max(|b|_inf, 1)), else
    starts a new one."""
    centers: list[np.ndarray] = []
    labels = np.empty(len(points), dtype=np.int64)
    stack = np.zeros((0, points.shape[1] if points.ndim == 2 else 0))
    for i, p in enumerate(points):
        if len(centers):
            dist = np.abs(stack - p).max(axis=1) / np.maximum(np.abs(stack).max(axis=1), 1.0)
            j = int(dist.argmin())
            if dist[j] <= tol:
                labels[i] = j
                continue
        centers.append(p)
        stack = np.vstack([stack, p[None, :]])
        labels[i] = len(centers) - 1
    return labels


class AuerMinimaLayout(ReportLayout):
    table_axes = ("d", "n", "starts")

    def extra_aggregates(self, ran: pd.DataFrame, *, confidence: float) -> dict[str, Any]:
        if ran.empty:
            return {}
        minima = ran[ran["status"] == "local_min"]
        out: dict[str, Any] = {
            "predicted_minima": int(ran["predicted_minima"].iloc[0]),
            "minima_1d": int(ran["minima_1d"].iloc[0]),
            "group_tol": float(ran["group_tol"].iloc[0]),
            "found_minima": 0,
            "found_cells": 0,
            "unmatched_minima": 0,
            "smallest_basin_runs": 0,
            "smallest_basin_frac": float("nan"),
            "starts_total": len(ran),
        }
        if len(minima):
            points = np.array([np.asarray(w, dtype=float) for w in minima["final_w"]])
            labels = group_endpoints(points, out["group_tol"])
            sizes = np.bincount(labels)
            out.update(
                found_minima=int(len(sizes)),
                found_cells=int(minima.loc[minima["cell_index"] >= 0, "cell_index"].nunique()),
                unmatched_minima=int((minima["cell_index"] < 0).sum()),
                smallest_basin_runs=int(sizes.min()),
                smallest_basin_frac=float(sizes.min() / len(ran)),
            )
        out["count_equals_theorem"] = out["found_minima"] == out["predicted_minima"]
        return out

    def markdown(self, table: pd.DataFrame, *, sweep: str, confidence: float) -> str:
        ok = int(table["count_equals_theorem"].sum()) if "count_equals_theorem" in table else 0
        lines = [
            f"# {sweep}",
            "",
            "Auer, Herbster & Warmuth (1995) Theorem 3.4: E_S(w) = sum_t (y - sigma(w . x_t))^2 with the "
            "construction's n examples in R^d has floor(n/d)^d distinct local minima. Found = the endpoints "
            "with status local_min (scaled gradient <= grad_tol, scaled Hessian positive definite) grouped by "
            "relative distance <= group_tol; cells = distinct products of the 1-D minima they sit at (a "
            "cross-check); smallest basin = the fewest starts that ended at one minimum.",
            "",
            f"Cells whose count equals the theorem's: {ok} of {len(table)}.",
            "",
        ]
        header = [
            "d",
            "n",
            "starts",
            "predicted floor(n/d)^d",
            "found",
            "found (by cell)",
            "1-D minima",
            "runs",
            "local_min %",
            "saddle / not conv. / diverged %",
            "smallest basin (runs, % of starts)",
            "equal",
            "errors",
        ]
        rows = []
        for row in table.to_dict("records"):
            rows.append(
                [
                    str(row["d"]),
                    str(row["n"]),
                    str(row["starts"]),
                    str(row.get("predicted_minima", "")),
                    str(row.get("found_minima", "")),
                    str(row.get("found_cells", "")),
                    str(row.get("minima_1d", "")),
                    str(row["runs"]),
                    pct(row["frac_local_min"]),
                    f"{pct(row['frac_saddle'])} / {pct(row['frac_not_converged'])} / {pct(row['frac_diverged'])}",
                    f"{row.get('smallest_basin_runs', '')} ({pct(row.get('smallest_basin_frac'))})",
                    "yes" if row.get("count_equals_theorem") else "NO",
                    str(row["errors"]),
                ]
            )
        lines += markdown_table(header, rows)
        return "\n".join(lines) + "\n"

    def files(
        self, table: pd.DataFrame, store: ResultsStore, *, sweep: str, confidence: float, figure: bool
    ) -> list[Path]:
        out = store.report_dir
        keep = [
            c
            for c in (
                "d",
                "n",
                "starts",
                "predicted_minima",
                "found_minima",
                "found_cells",
                "unmatched_minima",
                "minima_1d",
                "runs",
                "n_local_min",
                "smallest_basin_runs",
                "smallest_basin_frac",
                "count_equals_theorem",
                "group_tol",
            )
            if c in table
        ]
        paths = [out / COUNTS_CSV]
        table[keep].to_csv(paths[0], index=False)
        if figure and "found_minima" in table:
            plt = pyplot()
            fig, ax = plt.subplots(figsize=(5.5, 4.5))
            top = max(float(table["predicted_minima"].max()), 1.0)
            ax.plot([1, top * 1.5], [1, top * 1.5], color="grey", lw=0.8, ls="--", label="found = predicted")
            markers = {1: "o", 2: "s", 3: "^", 4: "D"}
            for (d, starts), part in table.groupby(["d", "starts"], sort=True):
                filled = starts == "log_uniform"
                ax.scatter(
                    part["predicted_minima"],
                    part["found_minima"].clip(lower=0.8),
                    marker=markers.get(int(d), "x"),
                    facecolors=None if filled else "none",
                    edgecolors=f"C{int(d) - 1}",
                    color=f"C{int(d) - 1}",
                    label=f"d = {d}, {starts}",
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("predicted floor(n/d)^d")
            ax.set_ylabel("distinct strict minima found")
            ax.set_title("Auer et al. Theorem 3.4: one sigmoid neuron")
            ax.legend(fontsize=7)
            paths.append(save_figure(fig, out / COUNTS_PNG))
        return paths


LAYOUT = AuerMinimaLayout

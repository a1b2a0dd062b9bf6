"""The wide-bad-minima report: per cell (activation, depth, width) the status fractions,
"bad minimum exists" (status suboptimal_min) beside "training ends at a bad point" (the
trained starts not reaching loss_tol), and the figures of the checks; a CSV and a figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ray_jobs.report.figures import pyplot, save_figure
from ray_jobs.report.layout import ReportLayout

if TYPE_CHECKING:
    from ray_jobs.store import ResultsStore

FIGURE = "wide_bad_minima.png"


def _max(ran: pd.DataFrame, column: str) -> float:
    values = ran[column].dropna() if column in ran else pd.Series(dtype=float)
    return float(values.max()) if len(values) else math.nan


def _min(ran: pd.DataFrame, column: str) -> float:
    values = ran[column].dropna() if column in ran else pd.Series(dtype=float)
    return float(values.min()) if len(values) else math.nan


class WideBadMinimaLayout(ReportLayout):
    """Status table by (activation, depth, width) with the checks' extremes per cell."""

    table_axes = ("activation", "depth", "width")
    fraction_columns = ("suboptimal", "local_min_evidence", "flat_as_predicted", "condition_holds")

    def extra_aggregates(self, ran: pd.DataFrame, *, confidence: float) -> dict[str, Any]:
        """Extremes over the cell's runs of the checks, and the mean trained "bad end" fraction."""
        return {
            "max_grad_norm": _max(ran, "grad_norm"),
            "mean_point_loss": float(ran["final_loss"].mean()) if len(ran) else math.nan,
            "max_trained_best_loss": _max(ran, "trained_best_loss"),
            "mean_trained_bad_fraction": float(ran["trained_bad_fraction"].mean()) if len(ran) else math.nan,
            "min_min_eig": _min(ran, "min_eig"),
            "min_normal_min_eig": _min(ran, "normal_min_eig"),
            "min_perturb_change": _min(ran, "perturb_min_change"),
            "min_descent_gap": _min(ran.assign(gap=ran["descent_min_loss"] - ran["final_loss"]), "gap")
            if len(ran)
            else math.nan,
            "hessian_method": ",".join(sorted(set(ran["hessian_method"].dropna()))) if len(ran) else "",
        }

    def files(
        self, table: pd.DataFrame, store: ResultsStore, *, sweep: str, confidence: float, figure: bool
    ) -> list[Path]:
        """``wide_bad_minima.csv`` (the per-cell table) and, with ``figure``, the width plot."""
        path = store.report_dir / "wide_bad_minima.csv"
        store.save_text(path, table.to_csv(index=False))
        paths = [path]
        if figure and not table.empty:
            png = plot(table, store.report_dir / FIGURE, sweep=sweep)
            paths += [png] if png is not None else []
        return paths


def plot(table: pd.DataFrame, path: Path, *, sweep: str) -> Path | None:
    """Left: % of runs whose constructed point is a verified sub-optimal minimum, and % of
    trained starts ending above loss_tol, against width (log 2). Right: the point's loss and
    the best trained loss against width."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for (activation, depth), group in table.groupby(["activation", "depth"], sort=False):
        group = group.sort_values("width")
        label = f"{activation}, L={depth}"
        line = axes[0].plot(group["width"], 100 * group["frac_suboptimal_min"], marker="o", label=label)[0]
        axes[0].plot(group["width"], 100 * group["mean_trained_bad_fraction"], linestyle="--", color=line.get_color())
        axes[1].plot(group["width"], group["mean_point_loss"], marker="o", color=line.get_color(), label=label)
        axes[1].plot(
            group["width"], group["max_trained_best_loss"].clip(lower=1e-12), linestyle="--", color=line.get_color()
        )
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width of the last hidden layer")
    axes[0].set_ylabel("% of runs")
    axes[0].set_title(
        "solid: point verified a sub-optimal minimum\ndashed: trained starts ending above loss_tol", fontsize=9
    )
    axes[1].set_yscale("log")
    axes[1].set_ylabel("loss")
    axes[1].set_title("solid: constructed point\ndashed: best trained start (max over seeds)", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{sweep}: constructed sub-optimal minima vs. training", fontsize=10)
    return save_figure(fig, path)


LAYOUT = WideBadMinimaLayout

"""The single-neuron report: per cell (activation, x, y) what Proposition IV.1's condition
says (decided from phi) beside what the runs say (a sub-optimal endpoint found or not), the
fraction of sub-optimal endpoints with its interval and whether the two agree; then the
survey's Figure 2 (F for phi(z) = -(z - 1)^2 / 8, x = y = 1: surface and contours, the
non-strict minimum (v, w) = (1, 1) marked) when the sweep has the figure2 activation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ray_jobs.report.figures import pyplot, save_figure
from ray_jobs.report.layout import ReportLayout
from ray_jobs.report.tables import markdown_table, pct, pct_ci

if TYPE_CHECKING:
    from ray_jobs.store import ResultsStore

FIGURE2_PNG = "figure2_surface.png"
AGREEMENT_CSV = "proposition_table.csv"


def runs_say(n_suboptimal: int) -> str:
    return "sub-optimal minima found" if n_suboptimal > 0 else "none found"


class SingleNeuronLayout(ReportLayout):
    table_axes = ("activation", "x", "y")
    axis_order = {
        "activation": (
            "relu",
            "square",
            "figure2",
            "square_plus_one",
            "sigmoid",
            "tanh",
            "softplus",
            "leaky_relu",
            "elu",
            "gelu",
            "swish",
        )
    }

    def extra_aggregates(self, ran: pd.DataFrame, *, confidence: float) -> dict[str, Any]:
        if ran.empty:
            return {}
        condition = bool(ran["condition_bad_minima"].iloc[0])
        found = int(ran["status"].eq("suboptimal_min").sum())
        return {
            "condition_bad_minima": condition,
            "phi_zeros": str(ran["phi_zeros"].iloc[0]),
            "runs_bad_minima": found > 0,
            "agrees": condition == (found > 0),
            "iterations_max": int(ran["iterations"].max()),
        }

    def markdown(self, table: pd.DataFrame, *, sweep: str, confidence: float) -> str:
        level = f"{100 * confidence:g}%"
        agree = int(table["agrees"].sum()) if "agrees" in table else 0
        lines = [
            f"# {sweep}",
            "",
            "Proposition IV.1 (survey section IV-A): F(v, w) = (y - v phi(w x))^2 has no sub-optimal local "
            "minimum iff no zero of phi is a local minimum or maximum of phi. 'Condition says' is decided from "
            "phi (its zeros and their kind); 'runs say' is whether any descent endpoint was classified "
            "suboptimal_min (F > 0, gradient ~ 0, smallest Hessian eigenvalue >= -eig_tol and no decrease "
            f"under the perturbation test). Intervals: Wilson {level}.",
            "",
            f"Rows agreeing: {agree} of {len(table)}.",
            "",
        ]
        header = [
            "activation",
            "x",
            "y",
            "zeros of phi (kind)",
            "condition says",
            "runs say",
            "runs",
            f"sub-optimal % [{level} CI]",
            "global %",
            "saddle %",
            "not conv. %",
            "diverged %",
            "agree",
            "errors",
        ]
        rows = []
        for row in table.to_dict("records"):
            rows.append(
                [
                    str(row["activation"]),
                    f"{row['x']:g}",
                    f"{row['y']:g}",
                    str(row.get("phi_zeros", "")),
                    "sub-optimal minima exist" if row.get("condition_bad_minima") else "none",
                    runs_say(int(row["n_suboptimal_min"])),
                    str(row["runs"]),
                    pct_ci(row["frac_suboptimal_min"], row["frac_suboptimal_min_lo"], row["frac_suboptimal_min_hi"]),
                    pct(row["frac_global"]),
                    pct(row["frac_saddle"]),
                    pct(row["frac_not_converged"]),
                    pct(row["frac_diverged"]),
                    "yes" if row.get("agrees") else "NO",
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
                "activation",
                "x",
                "y",
                "phi_zeros",
                "condition_bad_minima",
                "runs_bad_minima",
                "agrees",
                "runs",
                "n_suboptimal_min",
                "frac_suboptimal_min",
                "frac_suboptimal_min_lo",
                "frac_suboptimal_min_hi",
                "frac_global",
                "frac_saddle",
                "frac_not_converged",
                "frac_diverged",
            )
            if c in table
        ]
        paths = [out / AGREEMENT_CSV]
        table[keep].to_csv(paths[0], index=False)
        if figure and "figure2" in set(table["activation"]):
            paths.append(figure2(out / FIGURE2_PNG))
        return paths


def figure2(path: Path) -> Path:
    """The survey's Figure 2: F(v, w) = (1 - v phi(w))^2, phi(z) = -(z - 1)^2 / 8, as a surface
    and as contours, with the non-strict sub-optimal minimum (1, 1) marked (F = 1 along w = 1
    for every v > 0: flat in v, curved in w)."""
    import torch

    from landscape_core.single_neuron import loss_surface

    plt = pyplot()
    v = torch.linspace(-2.0, 3.0, 201, dtype=torch.float64)
    w = torch.linspace(-2.0, 4.0, 241, dtype=torch.float64)
    F = loss_surface("figure2", 1.0, 1.0, v, w).numpy()  # (V, W)
    Fc = F.clip(max=6.0)
    V, W = torch.meshgrid(v, w, indexing="ij")  # (201, 241) each, as F
    fig = plt.figure(figsize=(11, 4.6))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    ax.plot_surface(V.numpy(), W.numpy(), Fc, cmap="viridis", linewidth=0, alpha=0.85)  # (V, W) grids
    ax.scatter([1.0], [1.0], [1.0], color="red", s=40, depthshade=False)
    ax.set_xlabel("v")
    ax.set_ylabel("w")
    ax.set_zlabel("F (clipped at 6)")
    ax.set_title("F(v, w) = (1 - v phi(w))^2, phi(z) = -(z-1)^2/8")
    ax2 = fig.add_subplot(1, 2, 2)
    levels = [0.05, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.5, 2.0, 3.0, 4.5, 6.0]
    cs = ax2.contour(v.numpy(), w.numpy(), Fc.T, levels=levels, cmap="viridis")
    ax2.clabel(cs, fontsize=7)
    ax2.plot([1.0], [1.0], "o", color="red", label="(v, w) = (1, 1): F = 1, non-strict local min")
    ax2.plot([0.0, 3.0], [1.0, 1.0], color="red", lw=0.8, ls="--", label="w = 1, v > 0: flat set of sub-optimal minima")
    ax2.set_xlabel("v")
    ax2.set_ylabel("w")
    ax2.legend(fontsize=7, loc="lower left")
    ax2.set_title("contours; global minima where v (w-1)^2 = -8")
    return save_figure(fig, path, dpi=90)


LAYOUT = SingleNeuronLayout

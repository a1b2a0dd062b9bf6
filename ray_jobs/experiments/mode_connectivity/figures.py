"""Figures of the mode-connectivity report: barriers against width (one series per
network / activation / depth), and per cell the loss on the plane through a pair and a third
solution (Conjecture V.3; the survey's Fig. 6 left), as filled contours of log10 F."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ray_jobs.report.figures import pyplot, save_figure

BARRIER_PNG = "barrier_vs_width.png"
PLANES_CSV = "planes.csv"


def plot_barrier_vs_width(table: pd.DataFrame, folder: Path, *, sweep: str) -> Path | None:
    """Mean barrier of the segment (dashed) and of the Bezier curve (solid) against the width."""
    if "width" not in table or table["width"].nunique() < 2:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    groups = [c for c in ("network", "activation", "depth") if c in table]
    for i, (key, group) in enumerate(table.groupby(groups, sort=True)):
        group = group.sort_values("width")
        label = " ".join(f"{g}={v}" for g, v in zip(groups, key if isinstance(key, tuple) else (key,)))
        color = f"C{i % 10}"
        ax.plot(group["width"], group["mean_bezier_barrier"].clip(lower=1e-7), "-o", color=color, label=f"{label}")
        ax.plot(group["width"], group["mean_segment_barrier"].clip(lower=1e-7), "--", color=color)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.set_ylabel("mean barrier (max F - mean of ends)")
    ax.set_title(f"{sweep}: Bezier curve (solid) vs straight segment (dashed)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, folder / BARRIER_PNG)


def plot_planes(rows: pd.DataFrame, store, *, keys: tuple[str, ...]) -> list[Path]:
    """Per cell, its lowest seed with a plane: filled contours of log10 F(s A + t B + (1 - s - t) C)
    with A, B, C and the segment A-B marked; ``plane_<n>.png`` indexed by ``planes.csv``."""
    if "plane_losses" not in rows:
        return []
    have = rows[rows["plane_losses"].notna()].sort_values([*keys, "seed"], kind="stable")
    if have.empty:
        return []
    plt = pyplot()
    index, paths = [], []
    for n, (_, group) in enumerate(have.groupby(list(keys), sort=False)):
        row = group.iloc[0]
        values = np.array([np.asarray(r, dtype=float) for r in row["plane_losses"]])  # (G, G): s rows, t columns
        grid = np.linspace(float(row["plane_low"]), float(row["plane_high"]), int(row["plane_points"]))
        fig, ax = plt.subplots(figsize=(4.6, 4.0))
        shown = np.log10(np.clip(values, 1e-12, None))
        filled = ax.contourf(grid, grid, shown, levels=20, cmap="viridis")  # x = t, y = s
        fig.colorbar(filled, ax=ax, label="log10 F")
        ax.plot([0, 1], [1, 0], "w--", lw=0.8)
        for (s, t), name in (((1, 0), "A"), ((0, 1), "B"), ((0, 0), "C (third)")):
            ax.plot(t, s, "r*", ms=9)
            ax.annotate(name, (t, s), color="white", fontsize=8, xytext=(4, 4), textcoords="offset points")
        shown = [k for k in keys if k in row and have[k].nunique() > 1] or [k for k in keys if k in row][:2]
        title = ", ".join(f"{k} {row[k]}" for k in shown) + f", seed {row['seed']}"
        barrier = row.get("plane_barrier")
        ax.set_title(f"{title}\nplane barrier {barrier:.3g}", fontsize=7)
        ax.set_xlabel("t (weight of B)")
        ax.set_ylabel("s (weight of A)")
        fig.tight_layout()
        name = f"plane_{n}.png"
        paths.append(save_figure(fig, store.report_dir / name, dpi=90))
        index.append(
            {"file": name, "cell_id": row["cell_id"], "seed": int(row["seed"]), **{k: row[k] for k in keys if k in row}}
        )
    path = store.report_dir / PLANES_CSV
    store.save_text(path, pd.DataFrame(index).to_csv(index=False))
    return [*paths, path]

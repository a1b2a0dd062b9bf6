"""The string-sampling report's figures: normalized length and beads against L0,
connected fraction against the width, and one kept string on its top-3 principal
directions coloured by loss."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ray_jobs.experiments.string_sampling.strings import _string_array, string_projection
from ray_jobs.experiments.string_sampling.tables import _series
from ray_jobs.report.figures import pyplot, save_figure

LENGTH_PNG = "dss_length_vs_threshold.png"
WIDTH_PNG = "dss_connected_vs_width.png"


def _label(key: tuple, names: Sequence[str]) -> str:
    return ", ".join(
        f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}" for name, value in zip(names, key)
    )


def plot_length_vs_threshold(table: pd.DataFrame, report_dir: Path, *, sweep: str, confidence: float) -> Path | None:
    """Normalized length (mean, median) and mean beads of the connected pairs against L0."""
    series = _series(table, "threshold")
    if not series:
        return None
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    names = ("problem", "activation", "depth", "n_train", "width")
    for index, (key, group) in enumerate(series):
        color, label = f"C{index}", _label(key, names)
        left.plot(group["threshold"], group["mean_normalized_length"], marker="o", color=color, label=f"{label} (mean)")
        left.plot(
            group["threshold"],
            group["median_normalized_length"],
            marker="x",
            linestyle="--",
            color=color,
            alpha=0.7,
            label=f"{label} (median)",
        )
        right.plot(group["threshold"], group["mean_beads"], marker="o", color=color, label=label)
    for ax, ylabel in ((left, "normalized length (connected pairs)"), (right, "beads per connected pair (mean)")):
        ax.set_xscale("log")
        ax.invert_xaxis()  # lower loss to the right, as the paper's tables run
        ax.set_xlabel("threshold L0 (log scale, decreasing)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.legend(fontsize=7)
    fig.suptitle(f"{sweep}: normalized geodesic length and beads vs L0", fontsize=10)
    path = report_dir / LENGTH_PNG
    return save_figure(fig, path)


def plot_connected_vs_width(table: pd.DataFrame, report_dir: Path, *, sweep: str, confidence: float) -> Path | None:
    """Connected % of the strung pairs (Wilson interval) and normalized length against the width."""
    series = _series(table, "width")
    if not series:
        return None
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    names = ("problem", "activation", "depth", "n_train", "L0")
    for index, (key, group) in enumerate(series):
        color, label = f"C{index}", _label(key, names)
        frac = 100 * group["frac_dss_connected"]
        dodge = 2 ** (0.06 * (index - (len(series) - 1) / 2))  # keep overlapping series' bars apart (log axis)
        left.errorbar(
            group["width"] * dodge,
            frac,
            yerr=[frac - 100 * group["frac_dss_connected_lo"], 100 * group["frac_dss_connected_hi"] - frac],
            marker="o",
            capsize=3,
            color=color,
            label=label,
        )
        right.plot(group["width"], group["mean_normalized_length"], marker="o", color=color, label=f"{label} (mean)")
        right.plot(
            group["width"],
            group["median_normalized_length"],
            marker="x",
            linestyle="--",
            color=color,
            alpha=0.7,
            label=f"{label} (median)",
        )
        n = group["n_train"].iloc[0]
        for ax in (left, right):
            ax.axvline(n, color=color, linewidth=0.8, linestyle=":")
    left.set_ylim(-5, 105)
    left.set_ylabel(f"connected pairs (% of strung, {100 * confidence:g}% CI)")
    right.set_ylabel("normalized length (connected pairs)")
    right.axhline(1.0, color="grey", linewidth=0.8)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width (dotted: n_train)")
        ax.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    fig.suptitle(f"{sweep}: connectivity vs width", fontsize=10)
    path = report_dir / WIDTH_PNG
    return save_figure(fig, path)


def plot_string_pca(strings: pd.DataFrame, path: Path, *, sweep: str) -> Path | None:
    """The first row's string on its top-3 principal directions; every segment drawn as its
    interpolation points coloured by the loss there (log scale), beads in black, A and B marked."""
    plt = pyplot()
    import numpy as np
    from matplotlib.colors import LogNorm

    row = strings.iloc[0]
    coords, explained = string_projection(_string_array(row["dss_string"]))
    losses = row.get("dss_string_losses")
    point_parts: list[np.ndarray] = []  # (n, 3) each: interpolation points, then the last bead
    value_parts: list[np.ndarray] = []  # the loss at each
    if losses is not None and len(losses) == len(coords) - 1:
        for i, segment in enumerate(losses):
            segment = np.asarray(segment, dtype=float)
            t = np.arange(len(segment)) / len(segment)  # the segment check's t = 0, 1/m, ..., (m - 1)/m
            point_parts.append((1 - t)[:, None] * coords[i] + t[:, None] * coords[i + 1])
            value_parts.append(segment)
        point_parts.append(coords[-1:])
        value_parts.append(np.asarray(row["dss_bead_losses"][-1:], dtype=float))
    else:
        point_parts, value_parts = [coords], [np.asarray(row["dss_bead_losses"], dtype=float)]
    points, values = np.concatenate(point_parts), np.concatenate(value_parts)
    positive = values[values > 0]
    # three decades below the highest loss at most (an exact solution's 1e-32 would flatten the scale)
    floor = max(positive.min(), 1e-3 * positive.max()) if len(positive) else 0.0
    norm = LogNorm(vmin=floor, vmax=positive.max()) if len(positive) and floor < positive.max() else None
    fig = plt.figure(figsize=(7, 5.6))
    ax = fig.add_subplot(projection="3d")
    image = ax.scatter(
        points[:, 0], points[:, 1], points[:, 2], c=np.clip(values, floor, None), cmap="viridis", norm=norm, s=4
    )
    ax.plot(coords[:, 0], coords[:, 1], coords[:, 2], color="grey", linewidth=0.6)
    ax.scatter(coords[1:-1, 0], coords[1:-1, 1], coords[1:-1, 2], color="black", s=14, label="beads")
    for index, name in ((0, "A"), (-1, "B")):
        ax.scatter(*coords[index], color="red", s=40)
        ax.text(*coords[index], f" {name}", color="red")
    for setter, k in ((ax.set_xlabel, 0), (ax.set_ylabel, 1), (ax.set_zlabel, 2)):
        setter(f"PC{k + 1} ({100 * explained[k]:.0f}%)")
    bar = fig.colorbar(image, ax=ax, shrink=0.7, pad=0.12, label="training loss (red: pass level)")
    level = row["string_pass_factor"] * row["threshold"]
    if floor <= level <= (positive.max() if len(positive) else 0.0):
        bar.ax.axhline(level, color="red", linewidth=1.5)
    state = "connected" if bool(row["dss_connected"]) else "not certified"
    ax.set_title(
        f"{sweep}: {row['problem']} pair seed {int(row['seed'])}, L0 = {row['threshold']:g}, "
        f"width {int(row['width'])}\n"
        f"{int(row['dss_beads'])} beads, {state}, normalized length {row['dss_normalized_length']:.3g}",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path)

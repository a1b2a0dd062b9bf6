"""The string-sampling report: the per-cell table, normalized length and beads against the
threshold L0, connected fraction against the width (tables, CSVs and figures), one kept
string projected on its top-3 principal directions coloured by loss, and every kept
string's weights (``strings.npz``, indexed by ``strings.csv``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from landscape_core.names import ACTIVATION_NAMES
from ray_jobs.experiments.string_sampling.experiment import PROBLEMS
from ray_jobs.report.aggregate import deduplicate
from ray_jobs.report.figures import pyplot, save_figure
from ray_jobs.report.layout import ReportLayout
from ray_jobs.report.tables import num, pct, pct_ci

LENGTH_CSV = "length_vs_threshold.csv"
WIDTH_CSV = "connected_vs_width.csv"
LENGTH_PNG = "dss_length_vs_threshold.png"
WIDTH_PNG = "dss_connected_vs_width.png"
PCA_PNG = "dss_string_pca.png"
STRINGS_NPZ = "strings.npz"
STRINGS_CSV = "strings.csv"

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


def dss_markdown(table: pd.DataFrame, *, sweep: str, confidence: float) -> str:
    """The report as GitHub markdown: length vs L0 and connected vs width (when they vary), then the per-cell table."""
    level = f"{100 * confidence:g}%"
    lines = [
        f"# {sweep}",
        "",
        "Dynamic String Sampling (Freeman & Bruna 2017). Per cell: pairs that ran; pairs strung (both "
        "endpoints below alpha x L0, status global); connected % of the strung pairs with the Wilson "
        f"{level} interval; normalized length (string length / endpoint distance), beads and rounds over "
        "the connected pairs.",
        "",
    ]
    for title, grid in (
        ("Normalized length and beads vs threshold L0", length_table(table)),
        ("Connected fraction vs width", width_table(table)),
    ):
        if grid is None:
            continue
        head = [
            f"connected % [{level} CI]" if c == "frac_connected" else c
            for c in grid.columns
            if c not in ("connected", "frac_connected_lo", "frac_connected_hi")
        ]
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for row in grid.to_dict("records"):
            lines.append(
                "| "
                + " | ".join(
                    _cell_text(column, row)
                    for column in grid.columns
                    if column not in ("connected", "frac_connected_lo", "frac_connected_hi")
                )
                + " |"
            )
        lines.append("")
    head = [
        "problem",
        "activation",
        "depth",
        "n_train",
        "width",
        "L0",
        "pairs",
        "strung",
        f"connected % [{level} CI]",
        "norm. length mean / median / max",
        "beads mean / max",
        "rounds mean",
        "not connected: beads / rounds (mean)",
        "max interp. / L0 (mean)",
        "A-B line barrier (mean)",
        "init-line max rise (mean)",
        "test loss (mean)",
        "not conv. %",
        "diverged %",
        "errors",
    ]
    lines += ["## Per cell", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in table.to_dict("records"):
        cells = [
            str(row["problem"]),
            str(row["activation"]),
            str(row["depth"]),
            str(row["n_train"]),
            str(row["width"]),
            f"{row['threshold']:g}",
            str(row["runs"]),
            str(row["n_global"]),
            _connected_text(row),
            _joined(
                num(row["mean_normalized_length"]),
                num(row["median_normalized_length"]),
                num(row["max_normalized_length"]),
            ),
            _joined(num(row["mean_beads"], 3), _int(row["max_beads"])),
            num(row["mean_rounds"], 3),
            _joined(num(row["mean_beads_not_connected"], 3), num(row["mean_rounds_not_connected"], 3)),
            num(row["mean_max_interp_over_threshold"]),
            num(row["mean_interp_ab_barrier"]),
            num(row["mean_interp_init_max_rise"]),
            num(row["mean_endpoint_test_loss"]),
            pct(row["frac_not_converged"]),
            pct(row["frac_diverged"]),
            str(row["errors"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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


def _int(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def _joined(*texts: str) -> str:
    """``a / b / c``, or empty when every part is (no pair to average over)."""
    return " / ".join(texts) if any(texts) else ""


def _connected_text(row: dict) -> str:
    return pct_ci(row["frac_dss_connected"], row["frac_dss_connected_lo"], row["frac_dss_connected_hi"])


def _cell_text(column: str, row: dict) -> str:
    """One cell of a focused table (length_table / width_table) in markdown."""
    value = row[column]
    if column == "frac_connected":
        return pct_ci(value, row["frac_connected_lo"], row["frac_connected_hi"])
    if column in ("L0", "width / n_train"):
        return f"{value:g}"
    if column == "max beads":
        return _int(value)
    return num(value) if isinstance(value, float) else str(value)


def _series(table: pd.DataFrame, swept: str) -> list[tuple[tuple, pd.DataFrame]]:
    """Groups of cells that differ only in ``swept`` (and have more than one value of it)."""
    keys = [axis for axis in ("problem", "activation", "depth", "n_train", "width", "threshold") if axis != swept]
    out = []
    for key, group in table.groupby(keys, sort=False):
        group = group.drop_duplicates(swept)  # cells of earlier invocations with other settings: the first
        if len(group) > 1:
            out.append((key, group.sort_values(swept, ascending=swept != "threshold")))
    return out


def length_table(table: pd.DataFrame) -> pd.DataFrame | None:
    """Normalized length and beads against L0 (thresholds decreasing), one block per series;
    None when no series has more than one threshold."""
    rows = []
    for _, group in _series(table, "threshold"):
        for row in group.to_dict("records"):
            rows.append(
                {
                    "problem": row["problem"],
                    "activation": row["activation"],
                    "depth": row["depth"],
                    "width": row["width"],
                    "n_train": row["n_train"],
                    "L0": row["threshold"],
                    "pairs strung": row["n_global"],
                    **_connected_columns(row),
                    "normalized length mean": row["mean_normalized_length"],
                    "normalized length median": row["median_normalized_length"],
                    "normalized length max": row["max_normalized_length"],
                    "beads mean": row["mean_beads"],
                    "max beads": row["max_beads"],
                    "rounds mean": row["mean_rounds"],
                }
            )
    return pd.DataFrame(rows) if rows else None


def width_table(table: pd.DataFrame) -> pd.DataFrame | None:
    """Connected fraction and normalized length against the width, one block per series;
    None when no series has more than one width."""
    rows = []
    for _, group in _series(table, "width"):
        for row in group.to_dict("records"):
            rows.append(
                {
                    "problem": row["problem"],
                    "activation": row["activation"],
                    "depth": row["depth"],
                    "n_train": row["n_train"],
                    "L0": row["threshold"],
                    "width": row["width"],
                    "width / n_train": row["width"] / row["n_train"],
                    "pairs strung": row["n_global"],
                    **_connected_columns(row),
                    "normalized length mean": row["mean_normalized_length"],
                    "normalized length median": row["median_normalized_length"],
                    "beads mean": row["mean_beads"],
                    "A-B line barrier mean": row["mean_interp_ab_barrier"],
                }
            )
    return pd.DataFrame(rows) if rows else None


def _connected_columns(row: dict) -> dict:
    return {
        "connected": row["n_dss_connected"],
        "frac_connected": row["frac_dss_connected"],
        "frac_connected_lo": row["frac_dss_connected_lo"],
        "frac_connected_hi": row["frac_dss_connected_hi"],
    }


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


def kept_strings(store) -> pd.DataFrame | None:
    """Rows (deduplicated) that carry a kept string, best first for the PCA figure: connected
    before not, most beads, lowest threshold, lowest seed; None when there are none."""
    wanted = [
        "cell_id",
        "seed",
        "status",
        "problem",
        "threshold",
        "string_pass_factor",
        "width",
        "depth",
        "activation",
        "dss_connected",
        "dss_beads",
        "dss_normalized_length",
        "dss_string",
        "dss_string_losses",
        "dss_bead_losses",
    ]
    names = store.schema().names
    if "dss_string" not in names:
        return None
    rows = store.read(columns=[c for c in wanted if c in names])
    if rows.num_rows == 0:
        return None
    frame = deduplicate(rows.to_pandas())
    frame = frame[frame["dss_string"].notna()]
    if frame.empty:
        return None
    frame = frame.assign(_connected=frame["dss_connected"].fillna(False).astype(bool))
    frame = frame.sort_values(
        ["_connected", "dss_beads", "threshold", "seed", "cell_id"],
        ascending=[False, False, True, True, True],
        kind="stable",
    )
    return frame.drop(columns="_connected").reset_index(drop=True)


def _string_array(value):
    import numpy as np

    return np.array([np.asarray(bead, dtype=float) for bead in value], dtype=float)


def save_strings(strings: pd.DataFrame, store) -> list[Path]:
    """Every kept string's weights in ``strings.npz`` (key ``<cell_id>_seed<seed>``: beads x
    parameters, endpoints first and last; ``<key>_bead_losses``: each model's training
    loss), indexed by ``strings.csv``."""
    import io

    import numpy as np

    arrays, index = {}, []
    for row in strings.to_dict("records"):
        key = f"{row['cell_id']}_seed{int(row['seed'])}"
        arrays[key] = _string_array(row["dss_string"])
        arrays[f"{key}_bead_losses"] = np.asarray(row["dss_bead_losses"], dtype=float)
        index.append(
            {
                "key": key,
                **{
                    c: row[c]
                    for c in (
                        "cell_id",
                        "seed",
                        "problem",
                        "threshold",
                        "width",
                        "depth",
                        "activation",
                        "dss_connected",
                        "dss_beads",
                        "dss_normalized_length",
                    )
                },
                "parameters": arrays[key].shape[1],
            }
        )
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    npz = store.report_dir / STRINGS_NPZ
    npz.parent.mkdir(parents=True, exist_ok=True)
    staging = npz.with_name(f".{npz.name}.tmp")
    staging.write_bytes(buffer.getvalue())
    staging.replace(npz)
    csv = store.report_dir / STRINGS_CSV
    store.save_text(csv, pd.DataFrame(index).to_csv(index=False))
    return [npz, csv]


def string_projection(string, dims: int = 3):
    """Coordinates (B, dims) of a string's beads on its top principal directions (of the
    centred beads, endpoints included) and the fraction of variance each explains."""
    import numpy as np

    beads = np.asarray(string, dtype=float)  # (B, P)
    centred = beads - beads.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(dims, vt.shape[0])
    coords = np.zeros((beads.shape[0], dims))
    coords[:, :k] = centred @ vt[:k].T
    total = float((singular**2).sum())
    explained = np.zeros(dims)
    explained[:k] = singular[:k] ** 2 / total if total > 0 else 0.0
    return coords, explained


def plot_string_pca(strings: pd.DataFrame, path: Path, *, sweep: str) -> Path | None:
    """The first row's string on its top-3 principal directions; every segment drawn as its
    interpolation points coloured by the loss there (log scale), beads in black, A and B marked."""
    plt = pyplot()
    import numpy as np
    from matplotlib.colors import LogNorm

    row = strings.iloc[0]
    coords, explained = string_projection(_string_array(row["dss_string"]))
    losses = row.get("dss_string_losses")
    points, values = [], []
    if losses is not None and len(losses) == len(coords) - 1:
        for i, segment in enumerate(losses):
            segment = np.asarray(segment, dtype=float)
            t = np.arange(len(segment)) / len(segment)  # the segment check's t = 0, 1/m, ..., (m - 1)/m
            points.append((1 - t)[:, None] * coords[i] + t[:, None] * coords[i + 1])
            values.append(segment)
        points.append(coords[-1:])
        values.append(np.asarray(row["dss_bead_losses"][-1:], dtype=float))
    else:
        points, values = [coords], [np.asarray(row["dss_bead_losses"], dtype=float)]
    points, values = np.concatenate(points), np.concatenate(values)
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
        f"{sweep}: {row['problem']} pair seed {int(row['seed'])}, L0 = {row['threshold']:g}, width {int(row['width'])}\n"
        f"{int(row['dss_beads'])} beads, {state}, normalized length {row['dss_normalized_length']:.3g}",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path)


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

"""The string-sampling report's tables: the markdown (:func:`dss_markdown`), normalized
length and beads against the threshold L0 (:func:`length_table`), connected fraction
against the width (:func:`width_table`); :mod:`~ray_jobs.experiments.string_sampling.layout`."""

from __future__ import annotations

import math

import pandas as pd

from ray_jobs.report.tables import num, pct, pct_ci


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

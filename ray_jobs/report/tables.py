"""Formatting of report tables: percentages with intervals, numbers, ratio grids, and the
default status table of an experiment without a layout of its own."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd


def is_missing(value) -> bool:
    """None or NaN (a cell with no value)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def pct(value) -> str:
    """A fraction in % with one decimal; empty for a missing value."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def num(value, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (floats), as is otherwise; empty for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def pct_ci(value, lo, hi, *, whole: bool = False) -> str:
    """``value [lo, hi]`` in %: one decimal, or with ``whole`` whole percentages, except one
    decimal for the value where whole % would show 0 or 100 for a fraction that is neither
    (299 of 300 is 99.7, not 100); empty for a missing value."""
    if is_missing(value):
        return ""
    if not whole:
        return f"{pct(value)} [{pct(lo)}, {pct(hi)}]"
    digits = 1 if 0 < value < 1 and round(100 * value) in (0, 100) else 0
    return f"{100 * value:.{digits}f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def ratio_label(value: float) -> str:
    """A ratio axis value as a column label (``0.5``, ``1``, ``1.25``)."""
    return f"{value:g}"


def ratio_table(table: pd.DataFrame, *, keys: list[str], ratio: str, label: str, column: str) -> pd.DataFrame:
    """A per-cell fraction laid out as a grid: one row per value of ``keys`` (table order),
    one column ``<label>=<r>`` per value r of the ``ratio`` axis holding ``column``, with
    its interval in ``<label>=<r>_lo`` / ``_hi`` (from ``<column>_lo`` / ``_hi``); NaN where
    no cell; where several cells share a position (earlier invocations with other
    settings), the first."""
    ratios = sorted(table[ratio].unique())
    rows = []
    for key, group in table.groupby(keys, sort=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        by_ratio = group.drop_duplicates(ratio).set_index(ratio)
        for r in ratios:
            present = r in by_ratio.index
            for suffix in ("", "_lo", "_hi"):
                row[f"{label}={ratio_label(r)}{suffix}"] = by_ratio.loc[r, f"{column}{suffix}"] if present else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """GitHub markdown lines of a table."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(cells) + " |" for cells in rows),
    ]


def status_markdown(
    table: pd.DataFrame, *, axes: Sequence[str], statuses: Sequence[str], sweep: str, confidence: float
) -> str:
    """The default report of an experiment: one row per cell with its table ``axes``, runs,
    the percentage of each of its ``statuses`` with the Wilson interval, and errors."""
    level = f"{100 * confidence:g}%"
    header = [*axes, "runs", *(f"{status} % [{level} CI]" for status in statuses), "errors"]
    rows = []
    for row in table.to_dict("records"):
        cells = [num(row[axis]) if isinstance(row[axis], float) else str(row[axis]) for axis in axes]
        cells += [str(row["runs"])]
        cells += [pct_ci(row[f"frac_{s}"], row[f"frac_{s}_lo"], row[f"frac_{s}_hi"]) for s in statuses]
        rows.append([*cells, str(row["errors"])])
    lines = [f"# {sweep}", "", f"Runs per cell, fraction per status with its Wilson {level} interval.", ""]
    return "\n".join([*lines, *markdown_table(header, rows)]) + "\n"

"""The report layout of an experiment: what its report shows, apart from how its runs are made.

A :class:`ReportLayout` holds the report's side of an experiment: the columns naming a
cell in the table (:attr:`~ReportLayout.table_axes`), the boolean columns given as
fractions, the published reference columns, the vector columns the report reads only
for some statuses, the per-cell aggregates of its own, the markdown, the extra files
(figures, CSVs), the headline series of the MLflow parent, and its own settings block
(``report.<key>``: :attr:`~ReportLayout.settings`, e.g. teacher-student's
``report.family_tol``), validated by :meth:`~ReportLayout.check_settings`.

An experiment's layout is the class its folder's ``layout.py`` binds to ``LAYOUT``
(:func:`ray_jobs.experiments.registry.get_layout`), imported by the driver only, when a
report is built or its settings checked; a worker never imports it. Without one, this
class is the layout: a table with one row per cell, its grid axes, and each status in %.

Generic: this module imports no experiment; the report (:mod:`ray_jobs.report`) takes a
layout, never an experiment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_jobs.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from ray_jobs.store import ResultsStore

#: keys of the ``report`` section that are the service's, not a layout's
SERVICE_SETTINGS = ("confidence", "figure")
#: the report's sub-folder of one-cell files, ``<cell id>.<suffix>`` (:meth:`ReportLayout.cell_files`)
CELL_FILES_DIR = "cells"


class ReportLayout:
    """The report of one experiment (a subclass per experiment's ``layout.py``; this class
    itself is the default status table)."""

    #: columns naming a cell in the report table (and the MLflow child's name), in display
    #: order; empty: the experiment's grid axes
    table_axes: tuple[str, ...] = ()
    #: table axes the default markdown shows only when they vary between the table's cells
    optional_table_axes: tuple[str, ...] = ()
    #: display order of categorical table axes (values not listed sort after, alphabetically)
    axis_order: dict[str, tuple] = {}
    #: boolean Parquet columns the report gives as a fraction with a Wilson interval
    #: (``n_<col>``, ``frac_<col>``, ``frac_<col>_lo`` / ``_hi``), beside the statuses
    fraction_columns: tuple[str, ...] = ()
    #: published-table column -> (report column, scale factor to our units; None: as written)
    reference_columns: dict[str, tuple[str, float | None]] = {}
    #: per-run vector columns (weights, strings) the report reads only for the rows of the
    #: given statuses (an empty tuple: never): column projection, so that a report over 10^6
    #: rows does not decode 10^6 weight vectors to count statuses. Others are read for every row.
    report_projection: dict[str, tuple[str, ...]] = {}
    #: the layout's own settings, ``report.<key>`` -> default (checked by :meth:`check_settings`)
    settings: dict[str, Any] = {}

    def __init__(self, *, axes: tuple[str, ...], statuses: tuple[str, ...], settings: Mapping[str, Any] | None = None):
        """``axes``: the experiment's grid axes (the table axes unless the layout names its
        own); ``statuses``: the outcomes the experiment records; ``settings``: the ``report``
        section (its keys among :attr:`settings` are taken, checked; others are left out)."""
        if not self.table_axes:
            self.table_axes = tuple(axes)
        self.statuses = tuple(statuses)
        self.values = self.check_settings(settings or {})

    @classmethod
    def check_settings(cls, report: Mapping[str, Any]) -> dict[str, Any]:
        """The layout's settings from the ``report`` section (defaults for those not given),
        each checked by :meth:`check_setting`; raises :class:`ConfigError` naming
        ``report.<key>``."""
        values = dict(cls.settings)
        for key in cls.settings:
            value = report.get(key, cls.settings[key]) if hasattr(report, "get") else cls.settings[key]
            cls.check_setting(key, value)
            values[key] = value
        return values

    @classmethod
    def check_setting(cls, key: str, value: Any) -> None:
        """Check one of the layout's settings (``report.<key>``); raise :class:`ConfigError`."""

    def extra_aggregates(self, ran: pd.DataFrame, *, confidence: float) -> dict[str, Any]:
        """Layout-specific report columns of one cell from its rows that ran; ``confidence``
        is the report's level (for intervals). Default: none."""
        return {}

    def markdown(self, table: pd.DataFrame, *, sweep: str, confidence: float) -> str:
        """The report as GitHub markdown from the per-cell table (non-empty); default: one
        row per cell with the percentage of each status (:func:`ray_jobs.report.tables.status_markdown`),
        the optional table axes shown only where they vary."""
        from ray_jobs.report.tables import status_markdown

        return status_markdown(
            table, axes=self.shown_axes(table), statuses=self.statuses, sweep=sweep, confidence=confidence
        )

    def shown_axes(self, table: pd.DataFrame) -> list[str]:
        """The table axes in ``table``, those of :attr:`optional_table_axes` only when they vary."""
        return [
            axis
            for axis in self.table_axes
            if axis in table and (axis not in self.optional_table_axes or table[axis].nunique() > 1)
        ]

    def headline_series(self, table: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
        """The headline report column against an integer grid axis, for the MLflow parent's
        charts: metric name -> [(axis value, value), ...] (logged as the metric's history,
        the axis value as the step). Default: none."""
        return {}

    def files(
        self, table: pd.DataFrame, store: ResultsStore, *, sweep: str, confidence: float, figure: bool
    ) -> list[Path]:
        """Write the report's extra files (CSVs; figures when ``figure``) under
        ``store.report_dir`` from the per-cell table (non-empty); return their paths.
        ``table.md`` and ``table.csv`` are written by the caller."""
        return []

    def cell_files(self, table: pd.DataFrame, store: ResultsStore, paths: list[Path]) -> dict[str, list[Path]]:
        """Of the report's files ``paths`` (written by :meth:`files`), those that show one cell:
        cell id -> its files, logged also as artifacts of that cell's MLflow child (figures also
        as its images), so that a cell's own figure opens from its row of the runs table.
        Default: the files under ``<report dir>/cells/`` named ``<cell id>.<suffix>``."""
        folder = store.report_dir / CELL_FILES_DIR
        cells: dict[str, list[Path]] = {}
        for path in paths:
            if Path(path).parent == folder:
                cells.setdefault(Path(path).stem, []).append(Path(path))
        return cells


def require_number_at_least(key: str, value: Any, minimum: float) -> None:
    """``report.<key>`` is a finite number >= ``minimum`` (a YAML bool is not one), else
    :class:`ConfigError` (``report.<key>: must be a number >= <minimum>, got ...``)."""
    import math

    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= minimum
    if not ok:
        raise ConfigError(f"report.{key}", f"must be a number >= {minimum:g}, got {value!r}")

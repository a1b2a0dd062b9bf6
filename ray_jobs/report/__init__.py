"""The report of a sweep: aggregate its Parquet rows per cell, write the tables and figures.

- :mod:`ray_jobs.report.aggregate`  one table row per cell (statuses with Wilson intervals,
  the experiment's own aggregates, published reference values)
- :mod:`ray_jobs.report.tables`     formatting: percentages with intervals, ratio grids,
  the default status table
- :mod:`ray_jobs.report.figures`    matplotlib on the Agg backend
- :mod:`ray_jobs.report.layout`     :class:`~ray_jobs.report.layout.ReportLayout`, what an
  experiment's report shows (its folder's ``layout.py`` subclasses it)

Generic: the functions here take a report layout, never an experiment; nothing here
imports an experiment. Interval statistics come from :mod:`landscape_core.statistics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs.report.aggregate import table_from_rows
from ray_jobs.store import ResultsStore

if TYPE_CHECKING:
    from ray_jobs.report.layout import ReportLayout

TABLE_MD = "table.md"
TABLE_CSV = "table.csv"


@dataclass
class Report:
    """A built report: the table, its markdown, the files written, and those of them that show
    one cell (cell id -> files: :meth:`ReportLayout.cell_files`)."""

    table: pd.DataFrame
    markdown: str
    paths: list[Path]
    cell_paths: dict[str, list[Path]] = field(default_factory=dict)


def report_rows(store: ResultsStore, layout: ReportLayout, unit_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """The rows the report aggregates (of ``unit_ids``, all when None): every column but
    the layout's projected vector columns (:attr:`ReportLayout.report_projection`), which
    are read only for the rows of their statuses (null elsewhere)."""
    unit_ids = None if unit_ids is None else list(unit_ids)
    names = store.schema(unit_ids).names
    projection = {name: statuses for name, statuses in layout.report_projection.items() if name in names}
    # one chunk per column first: to_pandas over 10^4 chunks (one per file) is ~50x slower with pandas 3
    rows = store.read(unit_ids, columns=[name for name in names if name not in projection]).combine_chunks().to_pandas()
    for name, statuses in projection.items():
        if statuses and not rows.empty:
            vectors = (
                store.read(unit_ids, columns=["unit_id", "seed", name], statuses=list(statuses))
                .combine_chunks()
                .to_pandas()
            )
            rows = (
                rows.merge(vectors, on=["unit_id", "seed"], how="left")
                if not vectors.empty
                else rows.assign(**{name: None})
            )
    return rows


def project_rows(table: pa.Table, layout: ReportLayout) -> pa.Table:
    """A unit's rows as :func:`report_rows` reads them: each projected vector column
    (:attr:`ReportLayout.report_projection`) kept only on the rows of its statuses (null
    elsewhere), dropped when it has none."""
    for name, statuses in layout.report_projection.items():
        if name not in table.column_names:
            continue
        index = table.schema.get_field_index(name)
        if not statuses:
            table = table.remove_column(index)
            continue
        column = table.column(name)
        keep = pc.is_in(table.column("status"), value_set=pa.array(list(statuses), pa.string()))
        table = table.set_column(index, name, pc.if_else(keep, column, pa.nulls(table.num_rows, column.type)))
    return table


def rows_from_tables(tables: Sequence[pa.Table], layout: ReportLayout) -> pd.DataFrame:
    """:func:`report_rows` over rows held in memory (tables as :meth:`Session.record` wrote
    them, already :func:`project_rows`-ed or not): the rows in the order given; the same
    aggregates as over the units' files (tested), without reading them back."""
    if not tables:
        return pd.DataFrame()
    table = pa.concat_tables([project_rows(table, layout) for table in tables], promote_options="default")
    return table.combine_chunks().to_pandas()


def build_report(
    store: ResultsStore,
    layout: ReportLayout,
    *,
    sweep: str,
    confidence: float,
    reference: Path | None,
    figure: bool = True,
) -> Report:
    """Read the sweep's rows (:func:`report_rows`: no vector column the report does not
    need), aggregate, and write table.md / table.csv and the
    layout's own files (:meth:`ReportLayout.files`: figures, extra tables)."""
    table = table_from_rows(report_rows(store, layout), layout, confidence=confidence, reference=reference)
    if table.empty:
        markdown = f"# {sweep}\n\nNo rows yet.\n"
    else:
        markdown = layout.markdown(table, sweep=sweep, confidence=confidence)
    md_path, csv_path = store.report_dir / TABLE_MD, store.report_dir / TABLE_CSV
    store.save_text(md_path, markdown)
    store.save_text(csv_path, table.to_csv(index=False))
    paths = [md_path, csv_path]
    cell_paths: dict[str, list[Path]] = {}
    if not table.empty:
        paths += layout.files(table, store, sweep=sweep, confidence=confidence, figure=figure)
        cell_paths = layout.cell_files(table, store, paths)
    return Report(table=table, markdown=markdown, paths=paths, cell_paths=cell_paths)

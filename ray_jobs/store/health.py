"""Whether a file of the results can be read back, from its Parquet footer alone.

:func:`footer_problem` is what resume checks on every fragment and part
(:meth:`ray_jobs.store.ResultsStore.heal`) and what ``landscape-report`` checks before
reading: it reads the footer (schema, row count, column statistics), no data page, so it
costs about as much as opening the file (0.1-0.2 ms per fragment on a shared 2-core
machine, docs/reliability.md). ``landscape-verify`` (:mod:`ray_jobs.verify`) reads every
page as well.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: columns every file of the dataset has, with their types: what resume, compaction and the report rely on
KEY_COLUMNS = {"cell_id": pa.string(), "unit_id": pa.string(), "seed": pa.int64(), "status": pa.string()}


def read_failure(exc: BaseException) -> str | None:
    """What a pyarrow error reading a file says when the file's bytes are at fault (not
    Parquet, truncated, an undecodable footer or page), on one line; None for an error of
    the operating system (a vanished file, permissions, EIO: not the file's content)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return None
    if not isinstance(exc, (OSError, pa.ArrowException)):
        return None
    text = " ".join(str(exc).split())
    if text.startswith("Could not open Parquet input source") and "': " in text:
        text = text.split("': ", 1)[1]  # the path is named by the caller
    return text.rstrip(".")[:200]


def _min_max(meta: pq.FileMetaData, column: str) -> tuple | None:
    """(min, max) of a top-level column over every row group, from the footer's statistics;
    None when a row group has none."""
    leaves = [meta.schema.column(i).path for i in range(meta.num_columns)]
    if column not in leaves:
        return None
    index = leaves.index(column)
    low = high = None
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(index).statistics
        if stats is None or not stats.has_min_max:
            return None
        low = stats.min if low is None else min(low, stats.min)
        high = stats.max if high is None else max(high, stats.max)
    return (low, high) if low is not None else None


def footer_problem(path: Path, *, unit_id: str | None = None, rows: int | None = None) -> str | None:
    """Why ``path`` cannot be a file of the dataset, read from its footer alone (no data page;
    0.1-0.2 ms per fragment, docs/reliability.md): the footer does not parse (not Parquet,
    truncated), a key column (:data:`KEY_COLUMNS`) is missing or of another type, no rows,
    not the ``rows`` the manifest lists (a part), or, for the fragment of ``unit_id``,
    another unit's id or a row count other than its seed range (footer statistics). None
    when none of these; OSErrors of the operating system (a vanished file) propagate."""
    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        reason = read_failure(exc)
        if reason is None:
            raise
        return reason
    for name, kind in KEY_COLUMNS.items():
        if name not in schema.names:
            return f"no {name} column (not rows of this dataset)"
        if schema.field(name).type != kind:
            return f"column {name} is {schema.field(name).type}, not {kind}"
    if meta.num_rows == 0:
        return "no rows"
    if rows is not None and meta.num_rows != rows:
        return f"{meta.num_rows} rows, the manifest lists {rows}"
    if unit_id is not None:
        ids = _min_max(meta, "unit_id")
        if ids is not None and ids != (unit_id, unit_id):
            return f"holds rows of unit {ids[0] if ids[0] != unit_id else ids[1]}, not only of {unit_id}"
        seeds = _min_max(meta, "seed")
        if seeds is not None and meta.num_rows != seeds[1] - seeds[0] + 1:
            return f"{meta.num_rows} rows for the seeds {seeds[0]}..{seeds[1]}"
    return None

"""Whether a file of the results can be read back, from its Parquet footer alone.

:func:`footer_problem` is what resume checks on every fragment and part
(:meth:`ray_jobs.store.ResultsStore.heal`) and what ``landscape-report`` checks before
reading: it reads the footer (schema, row count, column statistics), no data page, so it
costs 1.3-2x a bare ``read_metadata`` (0.24-0.37 ms per fragment on a shared 2-core
machine, docs/reliability.md). ``landscape-verify`` (:mod:`ray_jobs.verify`) reads every
page as well.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: threads reading footers at once (pyarrow opens and parses them without the GIL)
CHECK_THREADS = min(8, os.cpu_count() or 1)
#: in the sweep's folder, beside runs/: its mtime is when the last complete check of the footers began
CHECK_MARK = ".footers_checked"
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


def _min_max(meta: pq.FileMetaData, index: int) -> tuple | None:
    """(min, max) of leaf column ``index`` over every row group, from the footer's
    statistics; None when a row group has none."""
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
    0.24-0.37 ms per fragment, docs/reliability.md): the footer does not parse (not Parquet,
    truncated), none of the key columns (:data:`KEY_COLUMNS`) or one of another type, no rows,
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
    present = [name for name in KEY_COLUMNS if name in schema.names]
    if not present:  # a missing column reads as null (files of an older code version), but none at all is no fragment
        return f"none of the columns {', '.join(KEY_COLUMNS)} (not rows of this dataset)"
    for name in present:
        if schema.field(name).type != KEY_COLUMNS[name]:
            return f"column {name} is {schema.field(name).type}, not {KEY_COLUMNS[name]}"
    if meta.num_rows == 0:
        return "no rows"
    if rows is not None and meta.num_rows != rows:
        return f"{meta.num_rows} rows, the manifest lists {rows}"
    if unit_id is not None:
        leaves = {meta.schema.column(i).path: i for i in range(meta.num_columns)}  # top-level key columns: their paths
        ids = _min_max(meta, leaves["unit_id"]) if "unit_id" in leaves else None
        if ids is not None and ids != (unit_id, unit_id):
            return f"holds rows of unit {ids[0] if ids[0] != unit_id else ids[1]}, not only of {unit_id}"
        seeds = _min_max(meta, leaves["seed"]) if "seed" in leaves else None
        if seeds is not None and meta.num_rows != seeds[1] - seeds[0] + 1:
            return f"{meta.num_rows} rows for the seeds {seeds[0]}..{seeds[1]}"
    return None


def fragment_problems(paths: list[Path], *, threads: int = CHECK_THREADS) -> list[tuple[Path, str]]:
    """:func:`footer_problem` of each fragment (its name is its unit id) in ``threads``
    threads: the fragments that cannot be read back, with why. A fragment gone meanwhile (a
    compaction, a rerun) is skipped."""

    def check(path: Path) -> str | None:
        try:
            return footer_problem(path, unit_id=path.name[: -len(".parquet")])
        except FileNotFoundError:
            return None

    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = pool.map(check, paths, chunksize=256)
        return [(path, problem) for path, problem in zip(paths, found) if problem is not None]


@contextmanager
def checked_before(sweep_dir: Path) -> Iterator[Callable[[Path], bool]]:
    """Yields ``skip(path)``: True for a fragment the last complete check (the driver's,
    under the lock) found sound and that was not modified since (its mtime older than the
    check's start), so that a resume reads only the footers of fragments new or changed
    since. The check's start is the mtime of a mark file (``<sweep>/.footers_checked``)
    created on entry by the same file system (no clock of this host involved) and put in
    place on a normal exit. A file
    damaged without a new mtime (bit rot, a copy keeping times) is not seen here:
    ``landscape-verify`` reads every file."""
    try:
        before = (sweep_dir / CHECK_MARK).stat().st_mtime_ns
    except OSError:
        before = None
    staging = sweep_dir / f"{CHECK_MARK}.{os.getpid()}.tmp"
    try:
        for stale in sweep_dir.glob(f"{CHECK_MARK}.*.tmp"):  # a killed driver's
            stale.unlink(missing_ok=True)
        staging.touch()
    except OSError:  # not writable: nothing is marked (the driver's next write names the fault)
        yield lambda path: False
        return

    def skip(path: Path) -> bool:
        try:
            return before is not None and path.stat().st_mtime_ns < before
        except FileNotFoundError:
            return True

    try:
        yield skip
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    os.replace(staging, sweep_dir / CHECK_MARK)

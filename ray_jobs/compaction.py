"""Compaction: merge a sweep's per-unit fragments into a few large Parquet files per cell.

One fragment per unit stays the commit unit of a sweep (it is what makes resume exact);
thousands of small files make every read slow, so after a sweep (``compact: true``, the
default) and on demand (``landscape-compact``) the loose fragments are merged, cell by
cell, into ``runs/compacted/<cell_id>/part-<token>.parquet``: files of up to
``max_rows`` rows (default 10^6) in row groups of ``row_group_rows`` (default 10^5). A
cell's earlier parts smaller than ``max_rows`` are merged again with its new fragments, so
a cell keeps one part per ``max_rows`` rows however many times it is compacted.

Crash safety (one writer: the caller holds the sweep's driver lock):

1. each new part is written under a hidden staging name, fsynced, renamed into place;
2. the manifest (``runs/_manifest.json``) is replaced atomically: the new parts with the
   units each holds, the merged parts dropped. This is the commit point;
3. the merged fragments and parts are deleted.

Killed before 2, the new parts are unlisted and the fragments still there: the next
:meth:`~ray_jobs.store.ResultsStore.recover` deletes the parts. Killed after 2, the
fragments are copies of listed units: ``recover`` deletes them. Nothing is lost or
counted twice at any moment by the store's readers (tests/test_compaction.py kills it).
Units with ``error`` rows stay loose fragments (a ``retry_errors`` rerun replaces them).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from ray_jobs.store import (
    COMPACTED_DIR,
    ERROR_STATUS,
    FRAGMENT_SUFFIX,
    STAGING_SUFFIX,
    Manifest,
    ResultsStore,
    StorageError,
    _discard,
    _fsync_dir,
)

#: rows per compacted file at most (a cell with more gets several parts)
MAX_ROWS = 1_000_000
#: rows per row group of a compacted file (the unit of a reader's column-chunk reads)
ROW_GROUP_ROWS = 100_000


@dataclass
class CompactionResult:
    """What one compaction did."""

    fragments: int  # loose fragments merged (and deleted)
    parts_rewritten: int  # earlier parts merged again (and deleted)
    parts_written: int
    rows: int  # rows in the parts written
    kept_loose: int  # fragments left loose (units with error rows)
    wall_s: float

    def line(self) -> str:
        if not self.fragments:
            return f"compaction: nothing to compact ({self.kept_loose} fragments with error rows stay loose)"
        return (
            f"compaction: {self.fragments} fragments"
            f"{f' and {self.parts_rewritten} earlier parts' if self.parts_rewritten else ''} "
            f"-> {self.parts_written} parts, {self.rows} rows, in {self.wall_s:.1f} s"
            f"{f'; {self.kept_loose} fragments with error rows stay loose' if self.kept_loose else ''}"
        )


def _cell_of(path: Path) -> str:
    """The cell id of a fragment from its footer statistics (no data read)."""
    meta = pq.read_metadata(path)
    index = meta.schema.to_arrow_schema().get_field_index("cell_id")
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(index).statistics
        if stats is not None and stats.has_min_max:
            return stats.min if isinstance(stats.min, str) else stats.min.decode()
    return pq.read_table(path, columns=["cell_id"]).column("cell_id")[0].as_py()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order (missing ones null)."""
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class _PartWriter:
    """Rows of one cell into parts of at most ``max_rows``, in row groups of ``row_group_rows``."""

    def __init__(self, store: ResultsStore, cell_id: str, schema: pa.Schema, *, max_rows: int, row_group_rows: int):
        self.store, self.cell_id, self.schema = store, cell_id, schema
        self.max_rows, self.row_group_rows = max_rows, row_group_rows
        self.folder = store.compacted_dir / cell_id
        self.written: list[tuple[str, int, list[str]]] = []  # (part path relative to runs/, rows, unit ids)
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._handle: BinaryIO | None = None
        self._staging: Path | None = None
        self._final: Path | None = None
        self._rows = 0
        self._units: list[str] = []

    def add(self, table: pa.Table, units: list[str]) -> None:
        """Add one source's rows (a fragment, or an earlier part) holding ``units``; a
        source is never split between two parts (a unit lives in one file)."""
        if self._rows and self._rows + self._buffered + table.num_rows > self.max_rows:
            self._close_part()
        self._buffer.append(_conform(table, self.schema))
        self._buffered += table.num_rows
        self._units.extend(units)
        if self._buffered >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffered:
            return
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            token = hashlib.sha256(
                f"{time.time_ns()}-{os.getpid()}-{self.cell_id}-{len(self.written)}".encode()
            ).hexdigest()[:12]
            self._final = self.folder / f"part-{token}{FRAGMENT_SUFFIX}"
            self._staging = self.folder / f".part-{token}{STAGING_SUFFIX}"
            self._handle = open(self._staging, "wb")
            self._writer = pq.ParquetWriter(self._handle, self.schema, compression="zstd")
        table = pa.concat_tables(self._buffer)
        self._writer.write_table(table, row_group_size=self.row_group_rows)
        self._rows += table.num_rows
        self._buffer, self._buffered = [], 0

    def _close_part(self) -> None:
        self._flush()
        if self._writer is None:
            return
        handle, staging, final = self._handle, self._staging, self._final
        assert handle is not None and staging is not None and final is not None  # opened with the writer
        self._writer.close()
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(staging, final)
        self.written.append((final.relative_to(self.store.runs_dir).as_posix(), self._rows, self._units))
        self._writer = self._handle = self._staging = self._final = None
        self._rows, self._units = 0, []

    def finish(self) -> list[tuple[str, int, list[str]]]:
        self._close_part()
        if self.written:
            _fsync_dir(self.folder)
        return self.written

    def abort(self) -> None:
        if self._writer is not None:
            assert self._handle is not None and self._staging is not None  # opened with the writer
            try:
                self._writer.close()
                self._handle.close()
            except OSError:
                pass
            _discard(self._staging)


def compact(
    store: ResultsStore,
    *,
    unit_cells: Mapping[str, str] | None = None,
    max_rows: int = MAX_ROWS,
    row_group_rows: int = ROW_GROUP_ROWS,
    on_part: Callable[[str], None] | None = None,
) -> CompactionResult:
    """Compact the loose fragments of ``store`` (the caller holds its driver lock and has run
    :meth:`~ResultsStore.recover`, as :meth:`~ResultsStore.prepare` does).

    ``unit_cells`` (unit id -> cell id, from the plan) spares reading each fragment's
    footer for its cell. ``on_part`` is called with each part's path once it is in place
    (before the commit: tests kill the process there). Raises StorageError on a failed write
    (nothing committed then; the fragments stay)."""
    started = time.monotonic()
    manifest = store.manifest()
    loose = [path for path in store.fragment_paths() if path.name[: -len(FRAGMENT_SUFFIX)] not in manifest.unit_part]
    by_cell: dict[str, list[Path]] = {}
    kept = 0
    for path in loose:
        unit = path.name[: -len(FRAGMENT_SUFFIX)]
        cell = unit_cells.get(unit) if unit_cells else None
        by_cell.setdefault(cell or _cell_of(path), []).append(path)
    if not by_cell:
        return CompactionResult(0, 0, 0, 0, 0, time.monotonic() - started)

    parts = dict(manifest.parts)
    merged_parts: list[Path] = []
    fragments: list[Path] = []
    rows = written_count = 0
    try:
        for cell_id in sorted(by_cell):
            old = [part for part in manifest.parts_of(cell_id) if manifest.parts[part]["rows"] < max_rows]
            sources = [store.runs_dir / part for part in old] + by_cell[cell_id]
            schema = pa.unify_schemas([pq.read_schema(path) for path in sources], promote_options="default")
            writer = _PartWriter(store, cell_id, schema, max_rows=max_rows, row_group_rows=row_group_rows)
            try:
                for part in old:
                    writer.add(pq.read_table(store.runs_dir / part), list(manifest.parts[part]["units"]))
                taken = []
                for path in by_cell[cell_id]:
                    table = pq.read_table(path)
                    if ERROR_STATUS in table.column("status").to_pylist():
                        kept += 1  # stays loose: a retry_errors rerun replaces it
                        continue
                    writer.add(table, [path.name[: -len(FRAGMENT_SUFFIX)]])
                    taken.append(path)
                written = writer.finish()
            except BaseException:
                writer.abort()
                raise
            for part in old:
                del parts[part]
            for relative, count, units in written:
                parts[relative] = {"cell_id": cell_id, "rows": count, "units": units}
                rows += count
                written_count += 1
                if on_part is not None:
                    on_part(relative)
            merged_parts += [store.runs_dir / part for part in old]
            fragments += taken
    except OSError as exc:
        store.recover()  # the unlisted parts written so far go; the fragments are untouched
        raise StorageError(store.compacted_dir, exc.strerror or str(exc)) from exc
    store.write_manifest(Manifest(parts))  # the commit point
    for path in [*fragments, *merged_parts]:
        path.unlink(missing_ok=True)
    return CompactionResult(len(fragments), len(merged_parts), written_count, rows, kept, time.monotonic() - started)


__all__ = ["COMPACTED_DIR", "CompactionResult", "MAX_ROWS", "ROW_GROUP_ROWS", "compact"]

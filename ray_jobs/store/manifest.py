"""The store's file names and the manifest of compacted parts (:class:`Manifest`), and the
writes every file of the store goes through: a staging name, fsync, an atomic rename
(:func:`write_atomically`; :mod:`ray_jobs.store`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ray_jobs.errors import StorageError

FRAGMENT_SUFFIX = ".parquet"
STAGING_SUFFIX = ".parquet.tmp"
LOCK_NAME = ".driver.lock"
#: under runs/: the compacted parts, one folder per cell (no ``=`` in the names: no hive column)
COMPACTED_DIR = "compacted"
#: under runs/; the ``_`` prefix keeps pyarrow's and pandas' directory reads from taking it for data
MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1
#: under the sweep's folder (outside runs/, so no reader of the dataset sees them): files that could not be read back
QUARANTINE_DIR = "quarantine"


def encode_fragment(table: pa.Table) -> bytes:
    """A unit's rows as the bytes of its Parquet fragment (pyarrow's defaults: snappy, one
    row group, statistics), wherever they are encoded (the unit's task, or the driver)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _discard(path: Path) -> None:
    """Remove ``path`` if possible (a staging file after a failed write; the file system
    may refuse that too, and a leftover staging file is ignored and cleaned later)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


class Manifest:
    """The compacted parts of a sweep: ``parts`` maps a part's path (relative to runs/) to
    ``{"cell_id", "rows", "units": [unit ids]}``. Immutable once loaded; written whole."""

    def __init__(self, parts: dict[str, dict] | None = None):
        self.parts: dict[str, dict] = dict(parts or {})
        self.unit_part: dict[str, str] = {unit: part for part, info in self.parts.items() for unit in info["units"]}

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise StorageError(
                path, f"unreadable manifest ({exc}); it is the commit record of the compacted parts"
            ) from None
        if data.get("version") != MANIFEST_VERSION:
            raise StorageError(path, f"manifest version {data.get('version')!r}, this code reads {MANIFEST_VERSION}")
        return cls(data["parts"])

    def to_json(self) -> str:
        return json.dumps({"version": MANIFEST_VERSION, "parts": self.parts}, separators=(",", ":"), sort_keys=True)

    def parts_of(self, cell_id: str) -> list[str]:
        return sorted(part for part, info in self.parts.items() if info["cell_id"] == cell_id)


def write_atomically(final: Path, staging: Path, data: bytes, *, sync_folder: bool = False) -> None:
    """Write ``data`` to ``staging``, fsync it and rename it to ``final`` (then fsync the folder
    too with ``sync_folder``), so that a reader sees the whole file or none. A failure
    removes the staging file and raises :class:`~ray_jobs.errors.StorageError` naming ``final``."""
    try:
        with open(staging, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, final)
        if sync_folder:
            _fsync_dir(final.parent)
    except OSError as exc:
        _discard(staging)
        raise StorageError(final, exc.strerror or str(exc)) from exc


def _fsync_dir(path: Path) -> None:
    """fsync a directory, so that a rename in it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

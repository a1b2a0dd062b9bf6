"""The results store: a Parquet dataset of one row per run, one fragment per work unit.

Layout (the results contract of design.md)::

    <results_dir>/<sweep>/runs/<unit_id>.parquet                  one fragment per finished unit
    <results_dir>/<sweep>/runs/compacted/<cell_id>/part-*.parquet  fragments merged by compaction
    <results_dir>/<sweep>/runs/_manifest.json                      the units each compacted part holds
    <results_dir>/<sweep>/report/                                  table.md, table.csv, figures
    <results_dir>/<sweep>/config.yaml                              the resolved sweep config
    <results_dir>/<sweep>/quarantine/                              files that could not be read back
    <results_dir>/<sweep>/.footers_checked                         its mtime: when resume last checked the footers

The driver is the only writer: it holds :class:`DriverLock` on ``<sweep>/.driver.lock``
(an advisory ``flock``, released by the kernel when the driver dies, so a killed driver's
lock is taken over by the next one). A second driver on the same sweep is refused with a
line naming the holder (host, pid, since when). A fragment is written to a hidden staging
name (``runs/.<unit_id>.<pid>.parquet.tmp``, ignored by pyarrow, pandas and duckdb globs),
fsynced and renamed with :func:`os.replace`, so a reader sees a whole fragment or none;
staging files of a killed driver are removed by the next one (under the lock). A unit is
done when it has a fragment or the manifest lists it: that is what resume reads. A failed
write (disk full, read-only file system) raises :class:`~ray_jobs.errors.StorageError`
naming the path, after removing its staging file.

Compaction (:mod:`ray_jobs.compaction`) merges fragments into a few large files per cell;
the manifest, replaced atomically, is its commit point: a part file the manifest does not
list is ignored (and removed), a fragment whose unit the manifest lists is a copy (and
removed), so a crash at any moment loses and duplicates nothing (:meth:`ResultsStore.recover`).
Units with ``error`` rows are never compacted: their fragment stays loose, so that a
``retry_errors`` rerun replaces it. :meth:`ResultsStore.files` is the exact file list of
the dataset at any moment; a directory read (``pd.read_parquet(runs)``, a DuckDB or polars
glob over ``runs/**/*.parquet``) equals it except while a compaction runs (docs/architecture.md).

Damaged files heal: a fragment or part that cannot be read back (not Parquet, truncated,
another schema, another unit's rows: :func:`footer_problem`, from the footer alone) is
moved by the next driver (under the lock, :meth:`ResultsStore.recover`) to
``<sweep>/quarantine/`` with one warning line naming it; its units are then no longer
recorded, so the sweep runs them again. A file whose footer is sound but whose data pages
are not fails when it is read (:class:`~ray_jobs.errors.CorruptFile`, naming it): under the
lock it is moved aside then, and the next run recomputes its units.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import takewhile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ray_jobs.errors import ConfigError, CorruptFile, StorageError
from ray_jobs.store.health import KEY_COLUMNS, checked_before, footer_problem, fragment_problems, read_failure
from ray_jobs.store.lock import DriverLock
from ray_jobs.store.manifest import (
    COMPACTED_DIR,
    FRAGMENT_SUFFIX,
    LOCK_NAME,
    MANIFEST_NAME,
    QUARANTINE_DIR,
    STAGING_SUFFIX,
    Manifest,
    _discard,
    _warn,
    encode_fragment,
    write_atomically,
)
from ray_jobs.store.manifest import _fsync_dir as _fsync_dir  # re-exported: compaction writes its parts with it
from ray_jobs.store.rows import (
    CONTRACT_COLUMNS,
    ERROR_STATUS,
    arrow_type,
    columns_of,
    error_table,
    row_schema,
    unit_table,
)

__all__ = [
    "CONTRACT_COLUMNS",
    "ERROR_STATUS",
    "DriverLock",
    "Manifest",
    "ResultsStore",
    "arrow_type",
    "columns_of",
    "KEY_COLUMNS",
    "encode_fragment",
    "error_table",
    "footer_problem",
    "row_schema",
    "unit_table",
]


class ResultsStore:
    """The Parquet results of one sweep under ``results_dir``."""

    def __init__(self, results_dir: Path, sweep: str):
        self.results_dir = Path(results_dir)
        self.sweep_dir = self.results_dir / sweep
        self.runs_dir = self.sweep_dir / "runs"
        self.compacted_dir = self.runs_dir / COMPACTED_DIR
        self.manifest_path = self.runs_dir / MANIFEST_NAME
        self.report_dir = self.sweep_dir / "report"
        self.config_path = self.sweep_dir / "config.yaml"
        self.lock = DriverLock(self.sweep_dir / LOCK_NAME)
        self.quarantine_dir = self.sweep_dir / QUARANTINE_DIR
        self._manifest: tuple[tuple[int, int] | None, Manifest] | None = None
        #: where the warning line of each file moved to quarantine goes (stderr)
        self.warn: Callable[[str], None] = _warn
        self._claimed: list[Path] = []  # the lock file and folders :meth:`claim` created, deepest first
        self.prepared = False

    def claim(self) -> None:
        """Take the driver lock (ConfigError when another driver holds it), creating the sweep's
        folder: the first thing a driver does, before Ray starts, so that a second driver is
        refused in a second. :meth:`unclaim` removes what it created if nothing else is written."""
        if self.lock.held:
            return
        missing = list(takewhile(lambda path: not path.exists(), (self.sweep_dir, *self.sweep_dir.parents)))
        for attempt in range(3):  # a driver giving up may remove the folder it had just created
            try:
                self.sweep_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError("results_dir", f"cannot create {self.sweep_dir}: {exc.strerror or exc}") from None
            new_lock = not self.lock.path.exists()
            try:
                self.lock.acquire()
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        self._claimed = [self.lock.path] if new_lock else []
        self._claimed += missing

    def unclaim(self) -> None:
        """Release the lock; when the invocation ends before :meth:`prepare` (refused or
        interrupted while Ray starts), first remove the lock file and folders :meth:`claim`
        created, so that a refusal leaves nothing behind."""
        if self.lock.held and not self.prepared:
            for path in self._claimed:
                try:
                    path.unlink() if path == self.lock.path else path.rmdir()
                except OSError:
                    break
        self.close()

    def prepare(self) -> None:
        """Take the driver lock (:meth:`claim`, unless taken), create the directories, finish
        what a killed driver or compaction left (:meth:`recover`)."""
        self.claim()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.recover()
        self.prepared = True

    def recover(self) -> None:
        """Under the lock: remove staging files, part files the manifest does not list (a
        compaction killed before its commit) and fragments whose unit the manifest lists
        (killed after it). Both are copies of rows recorded elsewhere."""
        for stale in self.runs_dir.glob(f".*{STAGING_SUFFIX}"):
            stale.unlink(missing_ok=True)
        self.heal()
        if not self.compacted_dir.is_dir():
            return
        manifest = self.manifest()
        for path in self.compacted_dir.rglob("*"):
            relative = path.relative_to(self.runs_dir).as_posix()
            if path.is_file() and relative not in manifest.parts:
                path.unlink(missing_ok=True)
        for path in self.fragment_paths():
            if path.name[: -len(FRAGMENT_SUFFIX)] in manifest.unit_part:
                path.unlink(missing_ok=True)
        for folder in sorted(self.compacted_dir.iterdir()):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def close(self) -> None:
        """Release the driver lock."""
        self.lock.release()

    # --- damaged files --------------------------------------------------------------------

    def part_problems(self) -> list[tuple[Path, str]]:
        """The parts the manifest lists that are missing or cannot be read back (footers only)."""
        found = []
        for part, info in sorted(self.manifest().parts.items()):
            path = self.runs_dir / part
            try:
                problem = footer_problem(path, rows=int(info["rows"]))
            except FileNotFoundError:
                problem = "missing, though the manifest lists it"
            if problem is not None:
                found.append((path, problem))
        return found

    def fragment_problems(self) -> list[tuple[Path, str]]:
        """The loose fragments (not in a listed part) that cannot be read back (footers only)."""
        return fragment_problems(self._loose(self.manifest()))

    def problems(self) -> list[tuple[Path, str]]:
        """Every file of the dataset that cannot be read back, with why: :func:`footer_problem`
        over the parts and the loose fragments (their footers only, no data page)."""
        return self.part_problems() + self.fragment_problems()

    def heal(self) -> list[Path]:
        """Under the lock: move every file of :meth:`problems` to ``<sweep>/quarantine/``
        (one warning line each) and drop the parts among them from the manifest, so that
        their units count as not recorded and run again. Parts first: the fragments of a
        dropped part's units (a compaction killed after its commit) then stay, as loose
        fragments, and are checked in turn; a fragment an earlier heal checked and not
        modified since is not read again (:func:`~ray_jobs.store.health.checked_before`).
        Returns where the files went."""
        moved = [self._quarantine(path, problem) for path, problem in self.part_problems()]
        self._drop_parts(moved)
        with checked_before(self.sweep_dir) as skip:
            loose = [path for path in self._loose(self.manifest()) if not skip(path)]
            moved += [self._quarantine(path, problem) for path, problem in fragment_problems(loose)]
        return [target for _, target in moved if target is not None]

    def _drop_parts(self, moved: list[tuple[str, Path | None]]) -> None:
        """Write the manifest without the parts among ``moved`` (paths relative to runs/)."""
        manifest = self.manifest()
        dropped = {relative for relative, _ in moved if relative in manifest.parts}
        if dropped:
            self.write_manifest(Manifest({part: info for part, info in manifest.parts.items() if part not in dropped}))

    def _quarantine(self, path: Path, problem: str) -> tuple[str, Path | None]:
        """Move ``path`` to the quarantine folder (a missing part: nothing to move) and say so;
        returns its path relative to runs/ and where it went."""
        relative = path.relative_to(self.runs_dir).as_posix()
        info = self.manifest().parts.get(relative)
        units = len(info["units"]) if info else 1
        what = f"{units} units run" if units != 1 else "its unit runs"
        if not path.exists():
            self.warn(f"{path} {problem}; dropped from the manifest, {what} again")
            return relative, None
        target = self.quarantine_dir / relative.replace("/", "__")
        index = 0
        while target.exists():
            index += 1
            target = self.quarantine_dir / f"{relative.replace('/', '__')}.{index}"
        try:
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except OSError as exc:
            raise StorageError(target, exc.strerror or str(exc)) from exc
        self.warn(f"{path} cannot be read ({problem}); moved to {target}, {what} again")
        return relative, target

    @contextmanager
    def _reading(self, path: Path) -> Iterator[None]:
        """Turn pyarrow's failure to decode ``path`` into :class:`CorruptFile` naming it; under
        the lock the file is moved to quarantine first (its units run again next time)."""
        try:
            yield
        except (OSError, pa.ArrowException) as exc:
            reason = read_failure(exc)
            if reason is None:
                raise
            if self.lock.held:
                moved = self._quarantine(path, reason)
                self._drop_parts([moved])
                reason += f"; moved to {moved[1]}: run the same command again to run its units again"
            raise CorruptFile(path, reason) from None

    # --- the manifest ---------------------------------------------------------------------

    def manifest(self) -> Manifest:
        """The manifest as on disk now (re-read when the file changed)."""
        try:
            stat = self.manifest_path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            key = None
        if self._manifest is None or self._manifest[0] != key:
            self._manifest = (key, Manifest() if key is None else Manifest.load(self.manifest_path))
        return self._manifest[1]

    def write_manifest(self, manifest: Manifest) -> None:
        """Replace the manifest atomically (staging file, fsync, rename, fsync of runs/):
        the commit point of a compaction."""
        staging = self.runs_dir / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
        write_atomically(self.manifest_path, staging, manifest.to_json().encode(), sync_folder=True)
        self._manifest = None

    # --- fragments and files --------------------------------------------------------------

    def fragment_path(self, unit_id: str) -> Path:
        return self.runs_dir / f"{unit_id}{FRAGMENT_SUFFIX}"

    def fragment_paths(self) -> list[Path]:
        """The loose fragments (not yet compacted)."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(self.runs_dir.glob(f"[!._]*{FRAGMENT_SUFFIX}"))

    def _loose(self, manifest: Manifest) -> list[Path]:
        return [path for path in self.fragment_paths() if path.name[: -len(FRAGMENT_SUFFIX)] not in manifest.unit_part]

    def files(self) -> list[Path]:
        """Every Parquet file of the dataset, each row in exactly one: the manifest's parts
        and the fragments of units it does not list. Exact at any moment, also while a
        compaction runs (the listing is retried if the manifest changed meanwhile)."""
        for _ in range(10):
            manifest = self.manifest()
            loose = self._loose(manifest)
            if self.manifest() is manifest:
                return [self.runs_dir / part for part in sorted(manifest.parts)] + loose
        raise StorageError(self.manifest_path, "the manifest kept changing while listing the dataset")

    def completed_unit_ids(self) -> set[str]:
        """Ids of the units recorded (done, successfully or as `error` rows): those with a
        fragment and those the manifest lists."""
        ids = {path.name[: -len(FRAGMENT_SUFFIX)] for path in self.fragment_paths()}
        ids.update(self.manifest().unit_part)
        return ids

    def unit_ids_with_errors(self) -> set[str]:
        """Ids of the units with `error` rows (never compacted: only loose fragments hold them)."""
        failed = set()
        for path in self.fragment_paths():
            with self._reading(path):
                statuses = pq.read_table(path, columns=["status"]).column("status").to_pylist()
            if ERROR_STATUS in statuses:
                failed.add(path.name[: -len(FRAGMENT_SUFFIX)])
        return failed

    def write_fragment(self, unit_id: str, rows: pa.Table | bytes) -> Path:
        """Write the unit's fragment, ``rows`` as a table or as :func:`encode_fragment`'s
        bytes: staging name, fsync, atomic rename."""
        final = self.fragment_path(unit_id)
        staging = self.runs_dir / f".{unit_id}.{os.getpid()}{STAGING_SUFFIX}"
        write_atomically(final, staging, rows if isinstance(rows, bytes) else encode_fragment(rows))
        return final

    def read(
        self,
        unit_ids: Iterable[str] | None = None,
        *,
        columns: Sequence[str] | None = None,
        statuses: Sequence[str] | None = None,
    ) -> pa.Table:
        """Rows of the given units (all units when None; units not recorded are skipped),
        only ``columns`` (those a file lacks come back null; all when None), only the rows
        whose status is in ``statuses`` (all when None). Files of different schemas (an
        older code version) are unified, missing columns null."""
        manifest = self.manifest()
        wanted = None if unit_ids is None else set(unit_ids)
        paths = self._paths(manifest, wanted)
        tables = []
        for path in paths:
            with self._reading(path):
                handle = pq.ParquetFile(path)
                present = handle.schema_arrow.names
                filters = []
                if wanted is not None and path.parent != self.runs_dir:  # a part holds other units too
                    filters.append(
                        (
                            "unit_id",
                            "in",
                            sorted(wanted & set(manifest.parts[path.relative_to(self.runs_dir).as_posix()]["units"])),
                        )
                    )
                if statuses is not None:
                    filters.append(("status", "in", list(statuses)))
                selected = None if columns is None else [name for name in columns if name in present]
                tables.append(pq.read_table(path, columns=selected, filters=filters or None))
        if not tables:
            return pa.table({})
        table = pa.concat_tables(tables, promote_options="default")
        if columns is not None:
            for name in columns:
                if name not in table.column_names:
                    table = table.append_column(name, pa.nulls(table.num_rows))
            table = table.select(list(columns))
        return table

    def _paths(self, manifest: Manifest, wanted: set[str] | None) -> list[Path]:
        """The files holding the units ``wanted`` (all files when None)."""
        if wanted is None:
            return self.files()
        parts = sorted({manifest.unit_part[unit] for unit in wanted if unit in manifest.unit_part})
        loose = [path for path in map(self.fragment_path, sorted(wanted - manifest.unit_part.keys())) if path.exists()]
        return [self.runs_dir / part for part in parts] + loose

    def schema(self, unit_ids: Iterable[str] | None = None) -> pa.Schema:
        """The unified schema of the files holding ``unit_ids`` (all when None; footers only)."""
        wanted = None if unit_ids is None else set(unit_ids)
        schemas = []
        for path in self._paths(self.manifest(), wanted):
            with self._reading(path):
                schemas.append(pq.read_schema(path))
        return pa.unify_schemas(schemas, promote_options="default") if schemas else pa.schema([])

    def save_text(self, path: Path, text: str) -> None:
        """Write a small text file atomically (config.yaml, report files)."""
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging.write_text(text)
            os.replace(staging, path)
        except OSError as exc:
            _discard(staging)
            raise StorageError(path, exc.strerror or str(exc)) from exc

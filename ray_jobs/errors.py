"""The exceptions the CLI turns into one-line messages instead of tracebacks.

:class:`ConfigError` (exit 2): the invocation cannot start: an invalid configuration, a
results directory that cannot be written or is in use by another driver, an unreachable
tracking server or cluster, resources no node of the cluster offers. Raised before
anything is scheduled or written.

:class:`StorageError` (exit 3): writing the results failed while the sweep ran (disk full,
file system turned read-only...). What was recorded before stays valid; the same command
resumes once the fault is fixed.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid sweep configuration, detected before anything is scheduled or written.

    ``field`` is the dotted config path at fault (``sweep.grid.k``, ``protocol.step``,
    ``results_dir``...); ``message`` says what is wrong and what is allowed.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class StorageError(RuntimeError):
    """Writing ``path`` failed during a sweep; ``reason`` is the operating system's message."""

    def __init__(self, path, reason: str):
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.reason = reason


class CorruptFile(StorageError):
    """A file of the results that cannot be read back (not Parquet, truncated, another
    schema, other units' rows): ``path`` and what is wrong with it. Exit 3 like a storage
    fault; the driver moves such a file to ``<sweep>/quarantine/`` and runs its units again."""

    def __init__(self, path, reason: str):
        RuntimeError.__init__(self, f"cannot read {path}: {reason}")
        self.path = path
        self.reason = reason


#: operating-system errors that mean "the storage refuses writes", not "the program is wrong"
STORAGE_ERRNOS = {28: "No space left on device", 30: "Read-only file system", 122: "Disk quota exceeded"}
#: what sqlite (through MLflow / sqlalchemy) says for the same faults
STORAGE_MESSAGES = ("database or disk is full", "attempt to write a readonly database", "disk I/O error")


def storage_fault(exc: BaseException) -> str | None:
    """A one-line description when ``exc`` or an exception in its chain (``__cause__`` /
    ``__context__``: a fault while handling the first one) is a storage fault: a
    :class:`StorageError`, an OSError with ENOSPC / EROFS / EDQUOT, or sqlite's full-disk /
    read-only messages as MLflow re-raises them; None otherwise. The earliest file-system
    fault of the chain naming a file is named (the fragment path rather than the MLflow store;
    the path a :class:`StorageError` gives to an OSError that named none)."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        chain.append(link)
        link = link.__cause__ or link.__context__
    unnamed = None  # a fault naming no file: said only when no fault of the chain names one
    for exc in reversed(chain):
        if isinstance(exc, StorageError):
            return str(exc)
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            if exc.filename:
                return f"cannot write {exc.filename}: {exc.strerror or STORAGE_ERRNOS[exc.errno]}"
            unnamed = unnamed or f"cannot write: {exc.strerror or STORAGE_ERRNOS[exc.errno]}"
    if unnamed is not None:
        return unnamed
    for exc in chain:
        for message in STORAGE_MESSAGES:
            if message in str(exc):
                return f"the MLflow store refused a write ({message})"
    return None

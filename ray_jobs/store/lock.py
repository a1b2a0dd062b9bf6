"""The driver lock of a sweep: one writer per sweep directory (an advisory ``flock``)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from ray_jobs.errors import ConfigError


class DriverLock:
    """The exclusive right to write one sweep's results: ``flock`` on ``path``, whose content
    names the holder (host, pid, start time, command) for the refusal message.

    ``flock`` locks belong to the open file and vanish with the process that holds them, so
    a lock left by a killed driver (kill -9, node lost) never blocks the next one. On NFS,
    Linux maps ``flock`` to NFS byte-range locks (NFSv4, or v3 with lockd)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, *, field: str = "results_dir") -> None:
        """Take the lock, or raise ConfigError naming the driver that holds it.

        The lock is held on a read-only descriptor (an open file written to would keep the
        file system from being remounted read-only); the holder's details are written beside."""
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            try:
                info = json.loads(self.path.read_text())
                who = f"pid {info['pid']} on host {info['host']} since {info['since']}"
            except (OSError, ValueError, KeyError, TypeError):
                who = "another process"
            raise ConfigError(
                field,
                f"the sweep {self.path.parent.name!r} under {self.path.parent.parent} is being run by "
                f"another driver ({who}); wait for it to finish, or give another results_dir",
            ) from None
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:  # removed by a driver that gave up (ResultsStore.unclaim): anew
            os.close(fd)
            self.acquire(field=field)
            return
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(sys.argv)[:500],
        }
        try:
            with open(self.path, "w") as handle:
                handle.write(json.dumps(holder))
        except OSError as exc:  # a full or read-only disk: refused before anything else, naming the file
            with contextlib.suppress(OSError):
                self.path.unlink()  # under the flock: a driver that opened it meanwhile takes a new one
            os.close(fd)
            raise ConfigError(field, f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._fd = fd

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (taken by :meth:`acquire`, not released yet)."""
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

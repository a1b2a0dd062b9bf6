"""Fate sharing for a driver's local Ray cluster: when the driver dies, its cluster dies.

When a driver that started a local cluster is killed (kill -9, the OOM killer), Ray's GCS,
raylet and workers exit within seconds, but the raylet's dashboard and runtime-env agents
wait for the dead GCS for a minute or more before they notice (measured with Ray 2.60;
docs/reliability.md). :func:`start_reaper` starts a small watchdog process, in its own
session so that a signal to the driver's process group does not reach it. Once the driver
is gone it SIGKILLs every process that carries the driver's mark in its environment
(:data:`MARK_ENV` = driver pid and start time, set by :func:`start_reaper` before Ray
starts, so the GCS, raylet, agents and workers all inherit it, even those started and
orphaned between two looks) and every descendant of the driver it recorded (every
:data:`POLL_S`; matched by pid and start time, so a reused pid is never hit), then exits.
After a normal exit (``ray.shutdown``) nothing is left to kill.

Linux only (``/proc``); elsewhere :func:`start_reaper` does nothing. Standard library only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

#: seconds between two looks at the driver and its descendants
POLL_S = 0.5
#: seconds the reaper waits after the driver's death before killing (Ray's own exits first)
GRACE_S = 1.0
#: environment variable marking the processes of one driver: ``<pid>-<start time>``
MARK_ENV = "LANDSCAPE_DRIVER"


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22);
    None when it is gone or a zombie (exited, waiting to be reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(root: int) -> set[int]:
    """Pids of every process below ``root`` in the process tree."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def marked(mark: str) -> set[int]:
    """Pids of the processes whose environment holds ``MARK_ENV=mark``."""
    needle = f"{MARK_ENV}={mark}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.add(int(entry))
            except OSError:
                continue
    return found


def watch(driver: int, driver_started: int) -> None:
    """Record ``driver``'s descendants until it is gone, then SIGKILL those still alive and
    every process carrying its mark."""
    me = os.getpid()
    known: dict[int, int | None] = {}  # pid -> start time (None: a marked process already gone)
    while start_time(driver) == driver_started:
        for pid in descendants(driver) - {me}:
            if pid not in known and (started := start_time(pid)) is not None:
                known[pid] = started
        time.sleep(POLL_S)
    time.sleep(GRACE_S)
    for pid in marked(f"{driver}-{driver_started}") - {me}:
        known.setdefault(pid, start_time(pid))
    for pid, started in known.items():
        if started is not None and start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def start_reaper() -> subprocess.Popen | None:
    """Start the watchdog of this process (the driver); None where /proc is missing."""
    if not Path("/proc/self/stat").exists():
        return None
    driver = os.getpid()
    os.environ[MARK_ENV] = f"{driver}-{start_time(driver)}"  # inherited by every process Ray starts from here
    return subprocess.Popen(
        [sys.executable, "-m", "ray_jobs.reaper", str(driver), str(start_time(driver))],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=Path(__file__).resolve().parents[1],
    )


if __name__ == "__main__":  # python -m ray_jobs.reaper <driver pid> <driver start time>
    watch(int(sys.argv[1]), int(sys.argv[2]))

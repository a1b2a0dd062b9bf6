"""Fate sharing for a driver's local Ray cluster: when the driver dies, its cluster dies.

When a driver that started a local cluster is killed (kill -9, the OOM killer), Ray's GCS,
raylet and workers exit within seconds, but the raylet's dashboard and runtime-env agents
wait for the dead GCS for a minute or more before they notice (measured with Ray 2.60;
docs/reliability.md). :func:`start_reaper` starts a small watchdog process, in its own
session so that a signal to the driver's process group does not reach it, that records the
driver's descendants every :data:`POLL_S` and, once the driver is gone, SIGKILLs every
recorded process still alive (matched by pid and start time, so a reused pid is never
hit), then exits. After a normal exit (``ray.shutdown``) nothing is left to kill.

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


def watch(driver: int, driver_started: int) -> None:
    """Record ``driver``'s descendants until it is gone, then SIGKILL those still alive."""
    known: dict[int, int] = {}  # pid -> start time
    while start_time(driver) == driver_started:
        for pid in descendants(driver) - {os.getpid()}:
            if pid not in known and (started := start_time(pid)) is not None:
                known[pid] = started
        time.sleep(POLL_S)
    time.sleep(GRACE_S)
    for pid, started in known.items():
        if start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def start_reaper() -> subprocess.Popen | None:
    """Start the watchdog of this process (the driver); None where /proc is missing."""
    if not Path("/proc/self/stat").exists():
        return None
    driver = os.getpid()
    return subprocess.Popen([sys.executable, "-m", "ray_jobs.reaper", str(driver), str(start_time(driver))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=Path(__file__).resolve().parents[1])


if __name__ == "__main__":  # python -m ray_jobs.reaper <driver pid> <driver start time>
    watch(int(sys.argv[1]), int(sys.argv[2]))

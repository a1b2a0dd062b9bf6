"""The console scripts ``landscape-sweep`` and ``landscape-compact`` as processes: the entry
point of :mod:`ray_jobs.cli`, then the end of the process, interruptible at every moment.

After the entry point returns, Python's own exit would first set SIGTERM back to its
default disposition (``_PySignal_Fini``) and then spend seconds tearing down modules
(torch, Ray, MLflow): a SIGTERM then killed the driver with no message (-15) after its
summary line. Here the ``atexit`` handlers run with a handler that notes a SIGTERM, the
standard streams are flushed, and the process ends with :func:`os._exit`: exit 130 and the
interrupted line if a SIGTERM came at any moment, the entry point's code otherwise.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from ray_jobs.cli import EXIT_INTERRUPTED, compact_main, sweep_main

INTERRUPTED = {
    "landscape-sweep": "interrupted; recorded units are kept, run the same command again to resume",
    "landscape-compact": "interrupted; nothing lost (the next run finishes the job)",
}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(program: str, entry: Callable[[], int]) -> NoReturn:
    """Run ``entry`` (a ``*_main`` of :mod:`ray_jobs.cli`) and end the process with its exit code."""
    signal.signal(signal.SIGTERM, _interrupt)  # from the first moment (the entry point installs it again)
    held: list[int] = []
    code: int | None
    try:
        code = entry()
    except KeyboardInterrupt:  # a SIGTERM between the entry point's own handling and its return
        code = None
    signal.signal(signal.SIGTERM, lambda signum, frame: held.append(signum))
    threading._shutdown()  # type: ignore[attr-defined]  # what Python's exit does first: non-daemon threads joined (thread pools told to stop)
    atexit._run_exitfuncs()
    if code is None or (held and code != EXIT_INTERRUPTED):  # (130: the entry point said it)
        print(f"{program}: {INTERRUPTED[program]}", file=sys.stderr)
        code = EXIT_INTERRUPTED
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def sweep() -> NoReturn:
    """``landscape-sweep`` (pyproject's console script)."""
    run("landscape-sweep", sweep_main)


def compact() -> NoReturn:
    """``landscape-compact`` (pyproject's console script)."""
    run("landscape-compact", compact_main)


if __name__ == "__main__":  # python -m ray_jobs.console sweep=smoke
    sweep()

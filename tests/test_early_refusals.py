"""Issue 24 items 3, 4 and 5, tried for real: an address where something answers that is not
Ray, a second driver and a read-only ``runs/`` refused before Ray starts, SIGTERM after
Ray has shut down.

Each refusal: exit 2, one line, in seconds, nothing written. Each SIGTERM: exit 130, the
one interrupted line, no traceback.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from ray_jobs.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from tests.conftest import TINY_SWEEP, run_cli
from tests.test_faults import MOUNT_SKIP, SLOW_UNITS_SWEEP, _driver, _local_env, _when, assert_each_run_once, python

# --- item 3: an address where something answers but is not Ray ----------------------------


class _Silent:
    """A TCP listener that accepts (the kernel's backlog) and never says anything."""

    def __enter__(self) -> int:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        return self.server.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.server.close()


_CLI_START: list[float] = []


def within(idle_s: float) -> float:
    """The time limit of a refusal that takes well under ``idle_s`` on an idle 2-core machine,
    scaled to the load of this one: at least ``idle_s``, and 2.5 x what a bare CLI start
    (``--help``: the same interpreter and imports, no config) takes now, measured once per
    module. A refusal that waits for Ray or for a listener (the faults these tests guard
    against: 13-208 s idle) stays far outside either bound."""
    if not _CLI_START:
        started = time.monotonic()
        run_cli(["--help"], timeout=120)
        _CLI_START.append(time.monotonic() - started)
        print(f"\nbare CLI start: {_CLI_START[0]:.1f} s")
    return max(idle_s, 2.5 * _CLI_START[0])


class _Http:
    """``http.server`` on 127.0.0.1 (it answers anything with HTTP)."""

    def __enter__(self) -> int:
        self.server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("listener", "answer"), [(_Silent, "(no answer in 2 s)"), (_Http, "(it answered '<!DOCTYPE HTML>')")]
)
def test_an_address_that_answers_but_is_not_ray_is_refused_in_seconds(tmp_path, listener, answer):
    results = tmp_path / "results"
    with listener() as port:
        started = time.monotonic()
        proc = run_cli(
            [*TINY_SWEEP, f"cluster.address=127.0.0.1:{port}", f"results_dir={results}"], env=_local_env(), timeout=120
        )
        elapsed = time.monotonic() - started
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == EXIT_USAGE, proc.stderr[-3000:]
    assert lines == [
        f"landscape-sweep: error: cluster.address: 127.0.0.1:{port} accepted the connection but did not speak "
        f"Ray's protocol {answer}; give the head's GCS address (`ray start --head` prints it, port 6379 by "
        f"default) or ray://HOST:10001"
    ], proc.stderr[-3000:]
    assert not results.exists()
    print(f"\nnot Ray ({listener.__name__}): refused in {elapsed:.1f} s")
    assert elapsed < within(10)  # before: 208 s for the silent listener; 7 lines for HTTP


def test_a_real_gcs_passes_the_probe(ray_session):
    from ray_jobs.execution.cluster import check_speaks_ray

    started = time.monotonic()
    check_speaks_ray(ray_session, "cluster.address")  # token authentication on (Ray 2.60's default)
    assert time.monotonic() - started < 1


def test_a_grpc_server_passes_the_probe_as_a_ray_client_address():
    """Ray Client (``ray://HOST:10001``) is a grpcio server: it answers the preface too."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from ray_jobs.execution.cluster import check_speaks_ray

    server = grpc.server(ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        check_speaks_ray(f"ray://127.0.0.1:{port}", "cluster.address")
    finally:
        server.stop(0)


# --- item 5: a second driver and a read-only runs/ refused before Ray starts --------------


def test_a_second_driver_is_refused_in_seconds_before_starting_ray(driver_env, tmp_path):
    """The first driver holds the lock (it takes it before Ray); the second is one line in
    under 5 s, and the first completes every row once."""
    results = tmp_path / "results"
    lock = results / "smoke" / ".driver.lock"
    args = [*SLOW_UNITS_SWEEP, f"results_dir={results}"]
    first = _driver(args, driver_env)

    def holds() -> bool:
        try:
            return json.loads(lock.read_text())["pid"] == first.pid
        except (OSError, ValueError, KeyError):
            return False

    _when(holds)
    started = time.monotonic()
    second = run_cli(args, env={**driver_env, "RAY_ADDRESS": "127.0.0.1:9"}, timeout=120)  # (it must not need Ray)
    elapsed = time.monotonic() - started
    lines = second.stderr.strip().splitlines()
    assert second.returncode == EXIT_USAGE, second.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("landscape-sweep: error: results_dir: the sweep 'smoke' under ")
    assert f"being run by another driver (pid {first.pid} on host " in lines[0]
    print(f"\nsecond driver refused in {elapsed:.1f} s")
    assert elapsed < within(5)  # before: after its Ray started (13 s idle, ~60 s busy)
    _, err = first.communicate(timeout=300)
    assert first.returncode == EXIT_OK, err[-3000:]
    assert_each_run_once(results)


@pytest.mark.skipif(MOUNT_SKIP is not None, reason=MOUNT_SKIP or "")
def test_a_read_only_runs_folder_is_refused_up_front(tmp_path):
    """``runs/`` of a sweep read-only (a bind mount: root writes through chmod) under a
    writable results directory: one line naming it, exit 2, nothing written."""
    results = tmp_path / "results"
    runs = results / "smoke" / "runs"
    runs.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(runs), str(runs)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(runs)], check=True)
        started = time.monotonic()
        proc = run_cli([*TINY_SWEEP, f"results_dir={results}"], env=_local_env(), timeout=120)
        elapsed = time.monotonic() - started
    finally:
        subprocess.run(["umount", "-l", str(runs)], check=False)
    assert proc.returncode == EXIT_USAGE, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f"landscape-sweep: error: results_dir: cannot write under {runs}: Read-only file system; "
        "give a writable directory"
    ]
    assert sorted(path.name for path in (results / "smoke").iterdir()) == ["runs"] and not any(runs.iterdir())
    print(f"\nread-only runs/ refused in {elapsed:.1f} s")
    assert elapsed < within(10)  # before: exit 3 after 24 s, when the first fragment was written


def test_a_driver_refused_after_taking_the_lock_leaves_nothing(tmp_path):
    """The lock is taken before Ray; a refusal that comes after it (here: no cluster at the
    address) removes the lock file and folders it created."""
    results = tmp_path / "results"
    proc = run_cli([*TINY_SWEEP, "cluster.address=127.0.0.1:9", f"results_dir={results}"], env=_local_env())
    assert proc.returncode == EXIT_USAGE and "cannot reach the Ray cluster" in proc.stderr
    assert not results.exists()


# --- item 4: SIGTERM after Ray has shut down ---------------------------------------------

#: the console script's process, made to wait (2 s, after printing PAUSED) at a moment after
#: the report is written: in Ray's shutdown (after the core worker's, which used to set
#: SIGTERM to SIG_DFL), or among the atexit handlers of the process's end
PAUSED_DRIVER = """
import atexit, sys, time
paused = []
def pause(*args):
    if not paused:  # once (Ray's own atexit handler shuts down again)
        paused.append(1)
        print("PAUSED", file=sys.stderr, flush=True)
        time.sleep(2)
if sys.argv[1] == "exit":
    atexit.register(pause)
else:
    import ray._private.state as state
    disconnect = state.GlobalState.disconnect
    state.GlobalState.disconnect = lambda self: (pause(), disconnect(self))
del sys.argv[1]
from ray_jobs.console import sweep
sweep()
"""


@pytest.mark.parametrize("moment", ["shutdown", "exit"])
def test_sigterm_after_ray_has_shut_down_is_exit_130_with_one_line(driver_env, tmp_path, moment):
    results = tmp_path / "results"
    driver = python(PAUSED_DRIVER, moment, *TINY_SWEEP, f"results_dir={results}", "tracking=none", env=driver_env)
    assert driver.stderr is not None
    seen = []
    for line in driver.stderr:
        seen.append(line)
        if line.strip() == "PAUSED":
            break
    assert (results / "smoke" / "report" / "table.md").exists(), "".join(seen)[-3000:]
    os.kill(driver.pid, signal.SIGTERM)
    _, err = driver.communicate(timeout=60)
    err = "".join(seen) + err
    assert driver.returncode == EXIT_INTERRUPTED, err[-3000:]  # before: -15, nothing said
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "landscape-sweep: interrupted; recorded units are kept, run the same command again to resume"
    )
    assert err.count("landscape-sweep: interrupted") == 1

"""Shared fixtures of the service tests.

Ray starts once per test session (``ray_session``), as a local cluster with 2 CPUs, no
dashboard and a small object store. In-process drivers use it directly (the driver sees
``ray.is_initialized()``); driver subprocesses connect to it through ``RAY_ADDRESS``
(``driver_env``), which also exercises the "existing cluster" path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: a sweep small enough for tests: 4 cells (k = 2, 3; n = k, k + 1) x 6 seeds, 2 units per cell
TINY_SWEEP = [
    "sweep=smoke",
    "sweep.grid.k=[2,3]",
    "sweep.grid.n_minus_k=[0,1]",
    "sweep.seeds=6",
    "resources.chunk_size=3",
    "protocol.max_iterations=4000",
    "sweep.reference=null",
]
TINY_CELLS, TINY_SEEDS, TINY_UNITS = 4, 6, 8


@pytest.fixture(scope="module")
def one_torch_thread():
    """In-process runs on one thread, as a Ray task runs them (resources.torch_threads = 1):
    for tiny problems two threads on a shared 2-core machine are several times slower.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray cluster for the whole session; yields its address."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def driver_env(ray_session):
    """Environment for a driver subprocess: connects to the session's Ray cluster."""
    env = dict(os.environ, RAY_ADDRESS=ray_session, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_cli(
    args: list[str],
    *,
    env: dict | None = None,
    timeout: float = 300,
    module: str = "ray_jobs.cli",
    entry: str = "sweep_main",
) -> subprocess.CompletedProcess:
    """Run an entry point of ray_jobs.cli in a fresh interpreter (as the console script does)."""
    code = f"import sys; from {module} import {entry}; sys.exit({entry}(sys.argv[1:]))"
    if env is None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_usage_error(args: list[str], field_message: str, allowed: str, tmp_path: Path, capsys) -> None:
    """``landscape-sweep args results_dir=<tmp_path>/results`` exits 2 with one error line
    holding ``field_message`` (``field: message``) and ``allowed``, and writes nothing."""
    from ray_jobs.cli import EXIT_USAGE, sweep_main

    code = sweep_main([*args, f"results_dir={tmp_path / 'results'}"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE
    assert len(err.splitlines()) == 1, err
    assert err.startswith("landscape-sweep: error: ")
    assert field_message in err and allowed in err, err
    assert list(tmp_path.iterdir()) == []


def sigkill_driver_when(args: list[str], *, env: dict, ready, timeout: float = 240) -> None:
    """Start ``landscape-sweep args`` in a subprocess, SIGKILL it as soon as ``ready()`` is
    true (polled every 50 ms), and wait for it; fails if the driver ended before that."""
    code = "import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    driver = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and driver.poll() is None and not ready():
            time.sleep(0.05)
        assert driver.poll() is None, f"driver ended before it could be killed: {driver.stderr.read().decode()[-2000:]}"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.stderr.close()


def mlflow_client(results_dir: Path):
    """An MlflowClient on the default tracking store of ``results_dir`` (its mlflow.db)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{results_dir / 'mlflow.db'}")


def children_of(client, parent_run_id: str, *, role: str | None = None):
    """The child runs of ``parent_run_id`` (only those tagged ``landscape.role = role`` when given)."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{parent_run_id}'" + (f" and tags.`landscape.role` = '{role}'" if role else "")
    return client.search_runs([experiment_id], filter_string=query)


def wait_for_health(address: str, server: subprocess.Popen, *, timeout: float, output, name: str) -> None:
    """Poll ``<address>/health`` of an MLflow server started as ``server`` until it answers
    200; fail with ``output()`` (its log) if it exits, or naming ``name`` after ``timeout`` s."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert server.poll() is None, output()
        assert time.monotonic() < deadline, f"{name} did not answer in {timeout:g} s"
        time.sleep(0.5)

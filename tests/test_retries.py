"""Worker death and task retries, tried for real.

- A worker process SIGKILLed in the middle of a unit: Ray runs the unit again
  (``resources.max_retries``); the sweep ends with exit 0 and rows identical to an
  undisturbed run's.
- A unit that raises deterministically: with ``resources.retry_exceptions=true`` it is run
  1 + ``max_retries`` times (counted by the fault hook), then recorded as ``error`` rows,
  and the other units are recorded normally.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from ray_jobs.config import compose_config
from ray_jobs.sweep import run_sweep
from ray_jobs.worker import FAULT_LOG_ENV
from tests.conftest import PROJECT_ROOT, TINY_SWEEP

#: 2 cells x 4 seeds in one-seed units that do not stop early (a few seconds each)
SLOW = [
    *TINY_SWEEP,
    "sweep.grid.k=[3]",
    "sweep.grid.n_minus_k=[0,1]",
    "sweep.seeds=4",
    "resources.chunk_size=1",
    "protocol.early_stop_global=false",
    "protocol.max_iterations=30000",
]
VOLATILE = [
    "wall_s",
    "hostname",
    "node_id",
    "gpu_ids",
    "code_version",
    "final_weights",
]  # code_version: the tree may change between runs


def _parent(pid: int) -> int:
    """The parent pid of ``pid`` (0 when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def unit_workers(ancestor: int) -> dict[int, str]:
    """pid -> process title of every Ray worker running a unit (``ray::unit-<id>``) that
    descends from process ``ancestor`` (the test process, whose session cluster runs the
    driver's units: never another sweep's worker on this machine)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::unit-"):
                pid = int(entry)
                while pid > 1 and pid != ancestor:
                    pid = _parent(pid)
                if pid == ancestor:
                    found[int(entry)] = title
    return found


def test_a_worker_killed_mid_unit_is_retried_and_the_rows_equal_an_undisturbed_run(driver_env, tmp_path):
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    code = "import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    driver = subprocess.Popen(
        [sys.executable, "-c", code, *SLOW, f"results_dir={killed_dir}"],
        cwd=PROJECT_ROOT,
        env=driver_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and driver.poll() is None:
        workers = unit_workers(os.getpid())  # the session cluster (and its workers) descend from this process
        if workers:
            time.sleep(0.5)  # inside the unit's computation
            victim, title = next(iter(workers.items()))
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    _, err = driver.communicate(timeout=300)
    assert victim is not None, "no unit worker seen"
    assert driver.returncode == 0, err[-3000:]

    reference = run_sweep(compose_config([*SLOW, f"results_dir={reference_dir}"]))
    assert reference.units_failed == 0
    got = pd.read_parquet(killed_dir / "smoke" / "runs").drop(columns=VOLATILE).sort_values(["cell_id", "seed"])
    want = pd.read_parquet(reference_dir / "smoke" / "runs").drop(columns=VOLATILE).sort_values(["cell_id", "seed"])
    assert len(got) == 8 and (got["status"] != "error").all()
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_exact=True)


def test_a_deterministic_raise_is_retried_as_configured_then_recorded_as_error_rows(tmp_path):
    """Its own local cluster (the fault hook's log path travels in the environment)."""
    log = tmp_path / "attempts.log"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(PROJECT_ROOT), **{FAULT_LOG_ENV: str(log)})
    code = "import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    args = [
        *TINY_SWEEP,
        "sweep.grid.k=[2]",
        "sweep.grid.n_minus_k=[0]",
        f"results_dir={tmp_path / 'r'}",
        "experiment.fail_on_seeds=[4]",
        "resources.retry_exceptions=true",
        "resources.max_retries=2",
        "cluster.num_cpus=2",
        f"cluster.object_store_memory={200 * 1024**2}",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # done, with failed units
    attempts = log.read_text().splitlines()
    assert [line.split()[0] for line in attempts] == ["3-5"] * 3  # the unit of seeds 3..5: 1 run + 2 retries
    rows = pd.read_parquet(tmp_path / "r" / "smoke" / "runs")
    assert len(rows) == 6
    assert rows.loc[rows["seed"] >= 3, "status"].eq("error").all()
    assert rows.loc[rows["seed"] < 3, "status"].ne("error").all()
    assert (
        rows.loc[rows["seed"] >= 3, "error_message"].str.startswith("InjectedFault: fault injected for seeds [4]").all()
    )

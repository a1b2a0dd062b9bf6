"""kill -9 of the driver at random moments: nothing lost, nothing duplicated, nothing left.

A property test: the CLI runs a sweep of many small units on its own local Ray cluster and
is SIGKILLed at a random moment, then started again, as many times as the test asks; a
last run completes the sweep. Kills alternate between two kinds of moment: a time drawn
uniformly from the start-up of an uninterrupted run (imports, Ray start, the MLflow
store, the lock, the first units: up to its first fragment), and a point in the
recording: once a random number of further fragments (1 to half of those left) exist,
after a random delay of up to 0.5 s (between fragments, inside a write, during the report
once all are written). Then:

- every row of the uninterrupted run is there exactly once, every value identical
  (timings and placement aside);
- after each kill every process of the dead driver's local cluster is gone within
  seconds (:mod:`ray_jobs.reaper`), and no staging file is left once the sweep completes;
- no MLflow parent is left RUNNING: a killed invocation's parent is marked KILLED and
  continued by the next one, so the sweep ends with a single FINISHED parent and one
  child per cell.

2 kills in the default run, 10 in ``make test-all`` (``LANDSCAPE_KILLS`` overrides both,
``LANDSCAPE_KILL_SEED`` the moments).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ray_jobs.reaper import descendants, start_time
from tests.conftest import PROJECT_ROOT, TINY_SWEEP, children_of, mlflow_client

#: 4 cells x 6 seeds in 24 one-seed units: many commits to interrupt
SWEEP = [*TINY_SWEEP, "resources.chunk_size=1", "cluster.num_cpus=2", f"cluster.object_store_memory={200 * 1024**2}"]
UNITS, ROWS = 24, 24
#: columns that legitimately differ between two runs of the same unit
VOLATILE = [
    "wall_s",
    "hostname",
    "node_id",
    "gpu_ids",
    "code_version",
]  # code_version: the tree may change between runs


def _env() -> dict:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # the driver's own local cluster
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


def _driver(results: Path) -> subprocess.Popen:
    code = "import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *SWEEP, f"results_dir={results}"],
        cwd=PROJECT_ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _fragments(results: Path) -> int:
    return len(list((results / "smoke" / "runs").glob("*.parquet")))


def _complete(results: Path) -> float:
    """Run the sweep to the end; the seconds until its first fragment."""
    started = time.monotonic()
    driver = _driver(results)
    first = None
    while driver.poll() is None:
        if first is None and _fragments(results):
            first = time.monotonic() - started
        time.sleep(0.05)
    _, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    return first if first is not None else time.monotonic() - started


def _alive(processes: dict[int, int]) -> list[int]:
    return [pid for pid, started in processes.items() if start_time(pid) == started]


def _kill_at(results: Path, *, delay: float | None = None, fragments: int | None = None, extra: float = 0.0) -> dict:
    """Start the driver, SIGKILL it after ``delay`` s, or ``extra`` s after ``fragments``
    fragments exist (or let it finish first), and return what was seen: fragments at the
    kill, processes of its cluster still alive after it (waiting up to 15 s)."""
    driver = _driver(results)
    started = time.monotonic()
    reached = None
    tree: dict[int, int] = {}
    while driver.poll() is None:
        now = time.monotonic()
        if delay is not None and now - started >= delay:
            break
        if fragments is not None:
            if reached is None and _fragments(results) >= fragments:
                reached = now
            if reached is not None and now - reached >= extra:
                break
        for pid in descendants(driver.pid):  # what the driver started (its local cluster), recorded as it grows
            tree.setdefault(pid, start_time(pid))
        time.sleep(0.02)
    finished = driver.poll() is not None
    if not finished:
        driver.kill()
    driver.communicate(timeout=60)
    tree = {pid: started for pid, started in tree.items() if started is not None}
    left = _alive(tree)
    waited = 0.0
    while left and waited < 15:
        time.sleep(0.25)
        waited += 0.25
        left = _alive(tree)
    return {
        "at_s": round(time.monotonic() - started, 2),
        "finished": finished,
        "left": left,
        "processes": len(tree),
        "cleanup_s": waited,
        "fragments": _fragments(results),
    }


def _kills() -> int:
    return int(os.environ.get("LANDSCAPE_KILLS", 0)) or None


def _property(tmp_path: Path, kills: int) -> list[dict]:
    rng = random.Random(int(os.environ.get("LANDSCAPE_KILL_SEED", "20261202")))
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    startup = _complete(reference)
    seen = []
    for index in range(kills):
        if index % 2 == 0:  # during start-up
            seen.append(_kill_at(interrupted, delay=rng.uniform(0.2, startup)))
        else:  # during the recording
            done = _fragments(interrupted)
            target = min(UNITS, done + rng.randint(1, max(1, (UNITS - done) // 2)))
            seen.append(_kill_at(interrupted, fragments=target, extra=rng.uniform(0, 0.5)))
        assert not seen[-1]["left"], f"processes of the killed driver's cluster still alive: {seen[-1]}"
    _complete(interrupted)

    want, got = pd.read_parquet(reference / "smoke" / "runs"), pd.read_parquet(interrupted / "smoke" / "runs")
    assert len(got) == len(want) == ROWS
    assert not got.duplicated(["cell_id", "seed"]).any()
    keys = ["cell_id", "seed"]
    got = got.drop(columns=VOLATILE).sort_values(keys).reset_index(drop=True)
    want = want.drop(columns=VOLATILE).sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        got.drop(columns=["final_weights"]), want.drop(columns=["final_weights"]), check_exact=True
    )
    assert all(list(a) == list(b) for a, b in zip(got["final_weights"], want["final_weights"]))
    assert not list((interrupted / "smoke" / "runs").glob(".*"))

    client = mlflow_client(interrupted)
    experiment = client.get_experiment_by_name("landscape-smoke")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`landscape.role` = 'sweep'")
    assert [run.info.status for run in parents].count("RUNNING") == 0
    assert parents[0].info.status == "FINISHED"  # the newest: the completing invocation (or the one it continued)
    cells = [
        run.data.tags["cell_id"]
        for parent in parents
        for run in children_of(client, parent.info.run_id, role="cell")
        if parent.info.status == "FINISHED"
    ]
    assert len(set(cells)) == 4
    print(f"kills: {seen}")
    return seen


def test_driver_killed_at_two_random_moments_loses_and_duplicates_nothing(tmp_path):
    _property(tmp_path, _kills() or 2)


@pytest.mark.slow
def test_driver_killed_at_ten_random_moments_loses_and_duplicates_nothing(tmp_path):
    _property(tmp_path, _kills() or 10)

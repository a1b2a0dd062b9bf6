"""A search driver killed (SIGKILL) and stopped (SIGTERM) mid-search, then run again.

The search runs on the same execution loop as a grid (:func:`ray_jobs.execution.run_units`),
which never cancels tasks itself in a session it owns (Ray issue 54846): so a search stopped
by SIGTERM exits 130 with one line and no traceback, like a grid, and a killed one leaves no
process of its local Ray cluster behind (:mod:`ray_jobs.reaper`). Each invocation here is
``landscape-sweep search=search_smoke`` in its own interpreter on its own local cluster:

1. SIGKILL once the first fragment exists: every process of its cluster is gone within seconds;
2. SIGTERM once a further fragment exists: exit 130, the last line says how to resume, no
   traceback, no process left;
3. the same command again: exit 0, no traceback; every trial's runs are in the results
   exactly once (no row duplicated, each finished trial's rows = its runs), no trial is
   left RUNNING in the journal, and no MLflow parent is left RUNNING.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from ray_jobs.cli import EXIT_INTERRUPTED, EXIT_OK
from ray_jobs.config import compose_config, search_to_sweep
from ray_jobs.reaper import descendants, start_time
from ray_jobs.search.driver import JOURNAL
from ray_jobs.search.plan import plan_search
from ray_jobs.store import ResultsStore
from tests.conftest import PROJECT_ROOT, mlflow_client

#: slow units (k = 3, no early-global rule): a kill lands while units run; 2 CPUs, a small object store
SEARCH = [
    "search=search_smoke",
    "sweep.grid.k=[3]",
    "protocol.early_stop_global=false",
    "protocol.max_iterations=40000",
    "search.seeds_per_stage=4",
    "search.max_stages=2",
    "cluster.num_cpus=2",
    f"cluster.object_store_memory={200 * 1024**2}",
]


def _driver(args: list[str]) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # its own local cluster
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    code = "import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _fragments(results: Path) -> int:
    return len(list((results / "search_smoke" / "runs").glob("*.parquet")))


def _stop_when(results: Path, fragments: int, sig: signal.Signals) -> tuple[int, str, list[int]]:
    """Start the search, send ``sig`` once ``fragments`` fragments exist; its exit code,
    stderr and the processes it started that are still alive 15 s after it ended."""
    driver = _driver([*SEARCH, f"results_dir={results}"])
    tree: dict[int, int | None] = {}
    deadline = time.monotonic() + 240
    while driver.poll() is None and _fragments(results) < fragments and time.monotonic() < deadline:
        for pid in descendants(driver.pid):  # its local cluster, recorded as it grows
            tree.setdefault(pid, start_time(pid))
        time.sleep(0.05)
    assert driver.poll() is None, f"the search ended before it could be stopped: {driver.communicate()[1][-2000:]}"
    os.kill(driver.pid, sig)
    _, err = driver.communicate(timeout=120)
    left = [pid for pid, started in tree.items() if started is not None and start_time(pid) == started]
    waited = 0.0
    while left and waited < 15:
        time.sleep(0.25)
        waited += 0.25
        left = [pid for pid in left if start_time(pid) == tree[pid]]
    return driver.returncode, err, left


def test_a_killed_and_a_stopped_search_exit_cleanly_and_the_rerun_completes_every_study_once(tmp_path):
    code, err, left = _stop_when(tmp_path, 1, signal.SIGKILL)
    assert code == -signal.SIGKILL and not left, f"processes of the killed search's cluster still alive: {left}"

    code, err, left = _stop_when(tmp_path, _fragments(tmp_path) + 1, signal.SIGTERM)
    assert code == EXIT_INTERRUPTED, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("landscape-sweep: interrupted; recorded units are kept"), err[-3000:]
    assert "Traceback" not in err and "Check failed" not in err, err[-3000:]
    assert not left, f"processes of the stopped search's cluster still alive: {left}"

    driver = _driver([*SEARCH, f"results_dir={tmp_path}"])
    _, err = driver.communicate(timeout=600)
    assert driver.returncode == EXIT_OK and "Traceback" not in err, err[-3000:]

    rows = ResultsStore(tmp_path, "search_smoke").read().to_pandas()
    assert len(rows) and not rows.duplicated(["cell_id", "seed"]).any()
    plan = plan_search(compose_config(search_to_sweep([*SEARCH, f"results_dir={tmp_path}"])[0]))
    journal = optuna.storages.journal.JournalFileBackend(str(tmp_path / "search_smoke" / JOURNAL))
    storage = optuna.storages.JournalStorage(journal)
    spp = plan.spec.seeds_per_stage
    for setting in plan.settings:
        trials = optuna.load_study(study_name=setting.study, storage=storage).trials
        assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        finished = [
            t
            for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE and "repeat_of" not in t.user_attrs["summary"]
        ]
        assert finished
        for trial in finished:  # each finished trial's runs are its cell's first stages' rows, once each
            summary = trial.user_attrs["summary"]
            cell = plan.cells.cell_for({**setting.values, **trial.params})
            mine = rows[(rows["cell_id"] == cell.cell_id) & (rows["seed"] < summary["stages"] * spp)]
            assert len(mine) == summary["runs"] == summary["stages"] * spp
            assert (mine["status"] == "global").sum() == round(summary["fraction"] * summary["runs"])

    client = mlflow_client(tmp_path)
    parents = client.search_runs(
        [client.get_experiment_by_name("landscape-search_smoke").experiment_id],
        filter_string="tags.`landscape.role` = 'sweep'",
    )
    assert parents and "RUNNING" not in [run.info.status for run in parents]
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["timing/units_recorded"] >= 0 and "timing/loop_s" in parents[0].data.metrics

"""A sweep on a real three-node Ray cluster inside this machine, and the loss of a node.

``ray.cluster_utils.Cluster`` starts a head node and two worker nodes, each a raylet of its
own with one CPU and its own object store, under token authentication (``RAY_AUTH_MODE=token``
and a token file made for the test, as on a real cluster: every node and the driver read
it) and listening on 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). The test
process already has its own Ray session (``ray_session``), so the cluster and the driver
live in a subprocess (:data:`SCRIPT`) with a private ``RAY_TMPDIR``: another Ray user on the
machine never finds it through ``/tmp/ray/ray_current_cluster``. The driver is the real
service (``run_sweep`` in the script's process, which uses the Ray session the script opened).

- **Three nodes:** every row once, no error, every row's ``node_id`` is a node of the
  cluster, several nodes ran units, ``hostname`` recorded.
- **Node loss:** while units run on a worker node, that node dies as a machine would: its
  worker processes are SIGKILLed, then ``cluster.remove_node(node, allow_graceful=False)``
  SIGKILLs its raylet, object store and agents. The unit that was running there is run
  again on another node (Ray's task retry, ``resources.max_retries``); the sweep completes
  with every row once, nothing ``error``, rows identical to the undisturbed run's
  (placement and timings aside). The stall (the longest gap between two consecutive
  fragments from the last one before the removal to the end, against the longest gap
  before it), the time the interrupted unit took to be recorded and the time the GCS took
  to declare the node dead are printed (``pytest -s``); docs/cluster.md keeps the figures.
  The retry starts either at once or only once the node is declared dead (~13-15 s):
  both happen, so no bound on the stall is asserted.

One subprocess runs both sweeps (the undisturbed one is the reference of the other), so the
cluster starts once: about 45-55 s on two shared cores.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT, TINY_SWEEP

# ~1 min alone, ~1.5-2 min beside other work on 2 cores (a three-node cluster, two sweeps): `make test-all`
pytestmark = pytest.mark.slow

#: 2 cells (k = 3, n = 4, 5) x 8 seeds in one-seed units of about a second (no early stop):
#: 16 units, long enough that a node removed mid-sweep is running one
SWEEP = [
    *TINY_SWEEP,
    "sweep.grid.k=[3]",
    "sweep.grid.n_minus_k=[1,2]",
    "sweep.seeds=8",
    "resources.chunk_size=1",
    "protocol.early_stop_global=false",
    "protocol.max_iterations=15000",
    "tracking=none",
]
UNITS = ROWS = 16
#: columns that legitimately differ between two runs of the same unit
VOLATILE = ["wall_s", "hostname", "node_id", "gpu_ids"]
KEYS = ["cell_id", "seed"]

#: Runs in the subprocess: argv = results root, JSON list of overrides. Prints one line
#: ``MULTINODE_RESULT {json}`` (cluster start time, node ids, both sweeps, the removal).
SCRIPT = r'''
import json, os, sys, threading, time
from pathlib import Path

results, overrides = Path(sys.argv[1]), json.loads(sys.argv[2])
import ray
from ray.cluster_utils import Cluster
from ray_jobs.config import compose_config
from ray_jobs.sweep import run_sweep

STORE = 100 * 1024**2
began = time.monotonic()
cluster = Cluster(initialize_head=True,
                  head_node_args=dict(num_cpus=1, include_dashboard=False, object_store_memory=STORE))
out = {}
try:
    workers = [cluster.add_node(num_cpus=1, object_store_memory=STORE) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    out["cluster_start_s"] = time.monotonic() - began
    out["address"] = cluster.address
    out["head"] = cluster.head_node.node_id
    out["workers"] = [node.node_id for node in workers]
    out["alive_nodes"] = sorted(node["NodeID"] for node in ray.nodes() if node["Alive"])

    def sweep(name):
        started = time.monotonic()
        result = run_sweep(compose_config([*overrides, f"results_dir={results / name}"]))
        return {"wall_s": time.monotonic() - started, "units_failed": result.units_failed,
                "units_scheduled": result.units_scheduled}

    def fragments(name):
        paths = (results / name / "smoke" / "runs").glob("[!.]*.parquet")
        return sorted((path.stat().st_mtime, path.stem) for path in paths)

    def children_of(raylet_pid):
        """pid -> process title of the raylet's children (its workers: ray::IDLE, ray::unit-<id>...)."""
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == raylet_pid:
                found[int(entry)] = title
        return found

    out["undisturbed"] = sweep("undisturbed")

    victim = workers[0]
    raylet_pid = victim.all_processes["raylet"][0].process.pid
    removal = {"node_id": victim.node_id}

    def remove_when_busy():
        """Once 2 fragments exist and a unit runs on the victim node, the node dies as a machine
        would: its workers, then its raylet, object store and agents, all SIGKILLed. (The raylet
        alone is not enough: a worker outlives its raylet for a second or two, and a unit it
        finishes then is still delivered to the driver, which talks to workers directly.)"""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "at" not in removal:
            if len(fragments("node_loss")) < 2:
                time.sleep(0.02)
                continue
            workers_there = children_of(raylet_pid)
            running = [title[len("ray::unit-"):].strip() for title in workers_there.values()
                       if title.startswith("ray::unit-")]
            if running:
                removal["fragments_before"] = len(fragments("node_loss"))
                removal["at"] = time.time()
                for pid in workers_there:
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                cluster.remove_node(victim, allow_graceful=False)
                removal["remove_took_s"] = time.time() - removal["at"]
                removal["interrupted_units"] = running
            time.sleep(0.02)
        while "at" in removal and time.time() - removal["at"] < 90:  # when the GCS declares it dead
            if not any(node["NodeID"] == victim.node_id and node["Alive"] for node in ray.nodes()):
                removal["marked_dead_after_s"] = time.time() - removal["at"]
                break
            time.sleep(0.2)

    killer = threading.Thread(target=remove_when_busy, daemon=True)
    killer.start()
    out["node_loss"] = sweep("node_loss")
    killer.join(timeout=90)
    out["removal"] = removal
    if "at" in removal:
        times = fragments("node_loss")
        before = [mtime for mtime, _ in times if mtime < removal["at"]]
        after = [mtime for mtime, _ in times if mtime >= removal["at"]]
        gaps = lambda values: [b - a for a, b in zip(values, values[1:])]
        removal["longest_gap_before_s"] = max(gaps(before), default=None)
        removal["stall_s"] = max(gaps(before[-1:] + after), default=None)  # includes the gap spanning the removal
        removal["interrupted_recorded_after_s"] = {unit: mtime - removal["at"] for mtime, unit in times
                                                   if unit in removal["interrupted_units"]}
        removal["fragments_after"] = len(after)
        removal["recorded_after_s"] = [round(mtime - removal["at"], 2) for mtime in after]
finally:
    print("MULTINODE_RESULT " + json.dumps(out), flush=True)
    ray.shutdown()
    cluster.shutdown()
'''


def _processes_mentioning(text: str) -> list[int]:
    """PIDs (not this process) whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _stop(process: subprocess.Popen, private: Path) -> None:
    """Whatever the script left: its process group, then every process naming the private dir."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # agents that outlive the driver share its group
        except ProcessLookupError:
            pass
    for pid in _processes_mentioning(str(private)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def multinode():
    """Both sweeps on the three-node cluster; yields the script's JSON (+ ``results``)."""
    pytest.importorskip("ray")
    private = Path(tempfile.mkdtemp(prefix="mn_", dir="/tmp"))  # short: Ray's socket paths have a length limit
    token = private / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(
        RAY_TMPDIR=str(private),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    results = private / "results"
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(results), json.dumps(SWEEP)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        _stop(process, private)
        out, err = process.communicate()
        pytest.fail(f"the multi-node script did not finish in 400 s: {err[-3000:]}")
    finally:
        _stop(process, private)
    lines = [line for line in out.splitlines() if line.startswith("MULTINODE_RESULT ")]
    try:
        assert process.returncode == 0 and lines, f"rc={process.returncode}\n{out[-2000:]}\n{err[-5000:]}"
        data = json.loads(lines[-1][len("MULTINODE_RESULT ") :])
        data["results"] = results
        data["script_s"] = time.monotonic() - started
        data["undisturbed_rows"] = pd.read_parquet(results / "undisturbed" / "smoke" / "runs")
        data["node_loss_rows"] = (
            pd.read_parquet(results / "node_loss" / "smoke" / "runs")
            if (results / "node_loss" / "smoke" / "runs").is_dir()
            else None
        )
        print(
            f"\nmulti-node: cluster up in {data['cluster_start_s']:.1f} s, undisturbed sweep "
            f"{data['undisturbed']['wall_s']:.1f} s, with node loss "
            f"{data.get('node_loss', {}).get('wall_s', float('nan')):.1f} s, "
            f"removal {json.dumps(data.get('removal'))}, whole script {data['script_s']:.1f} s"
        )
        yield data
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _check_rows(rows: pd.DataFrame, nodes: set[str]) -> None:
    assert len(rows) == ROWS
    assert not rows.duplicated(KEYS).any()
    assert (rows["status"] != "error").all(), rows.loc[rows["status"] == "error", "error_message"].tolist()
    assert set(rows["node_id"]) <= nodes, (set(rows["node_id"]), nodes)
    assert (rows["hostname"] == socket.gethostname()).all()  # every node is this machine


def test_a_sweep_on_three_nodes_records_every_row_once_and_where_it_ran(multinode):
    nodes = {multinode["head"], *multinode["workers"]}
    assert len(nodes) == 3 and set(multinode["alive_nodes"]) == nodes
    assert multinode["undisturbed"] == {**multinode["undisturbed"], "units_failed": 0, "units_scheduled": UNITS}
    rows = multinode["undisturbed_rows"]
    _check_rows(rows, nodes)
    assert rows["node_id"].nunique() >= 2, rows["node_id"].value_counts()


def test_losing_a_worker_node_mid_sweep_loses_nothing_and_changes_no_row(multinode):
    removal = multinode["removal"]
    assert "at" in removal, f"no unit was seen running on the worker node to remove: {removal}"
    assert removal["interrupted_units"], removal
    assert multinode["node_loss"]["units_failed"] == 0 and multinode["node_loss"]["units_scheduled"] == UNITS
    nodes = {multinode["head"], *multinode["workers"]}
    rows = multinode["node_loss_rows"]
    _check_rows(rows, nodes)
    # the unit killed with the node was run again elsewhere: its row comes from a surviving node (unless it
    # finished in the instant between being seen running and the kill: then it was recorded at once)
    interrupted = rows[rows["unit_id"].isin(removal["interrupted_units"])]
    assert len(interrupted) == len(removal["interrupted_units"])
    for unit, node in zip(interrupted["unit_id"], interrupted["node_id"]):
        assert node != removal["node_id"] or removal["interrupted_recorded_after_s"][unit] < 1.5, (unit, removal)
    # after the removal, only the surviving nodes ran units
    assert removal["fragments_after"] > 0

    want = multinode["undisturbed_rows"].drop(columns=VOLATILE).sort_values(KEYS).reset_index(drop=True)
    got = rows.drop(columns=VOLATILE).sort_values(KEYS).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        got.drop(columns=["final_weights"]), want.drop(columns=["final_weights"]), check_exact=True
    )
    assert all(list(a) == list(b) for a, b in zip(got["final_weights"], want["final_weights"]))
    print(
        f"\nnode loss: stall {removal['stall_s']:.2f} s across the removal (longest gap before it "
        f"{removal['longest_gap_before_s'] or 0:.2f} s); interrupted unit recorded "
        f"{max(removal['interrupted_recorded_after_s'].values()):.2f} s after the removal; node marked dead after "
        f"{removal.get('marked_dead_after_s', float('nan')):.1f} s"
    )

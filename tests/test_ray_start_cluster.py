"""End to end on a cluster started the way docs/cluster.md says: ``ray start``, token auth.

One machine plays three: ``ray start --head`` (one CPU, the dashboard on 127.0.0.1) and two
worker nodes ``ray start --address=HEAD:PORT`` (one CPU each), every node with its own
``--temp-dir`` under a private directory and its own ports (other Ray users on the machine
keep theirs), every process with ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` naming a
token file made for the test. Then:

- the CLI driver with ``cluster.address=HEAD:PORT`` and the same auth environment: exit 0,
  every row once, rows from several nodes;
- a driver without ``RAY_AUTH_MODE``: refused with one error line (exit 2) within 40 s;
- ``ray job submit --working-dir <project>`` of the smoke sweep: the job SUCCEEDED, rows and
  ``mlflow.db`` under the absolute ``results_dir`` given (the job's driver runs on the head
  node, here this machine: a shared path);
- node loss: a worker node added for the test is killed (SIGKILL of its raylet, its
  workers and agents: the machine is gone) while it runs a unit: exit 0, every row once,
  nothing ``error``, the interrupted unit run again on a surviving node; the stall is printed.

Teardown kills the processes of this cluster only (by process group, by the private
directory in their command line, and their descendants), never ``ray stop``, which would stop
every Ray on the machine. All slow (``make test-all``): about 2-4 min on two shared cores.
"""

from __future__ import annotations

import json
import os
import re
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

from tests.conftest import PROJECT_ROOT, TINY_SWEEP, children_of, mlflow_client, run_cli

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
RAY = shutil.which("ray", path=os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]))
#: 2 cells x 8 seeds in one-seed units of about a second: 16 units, one running on every node most of the time
SWEEP = [
    *TINY_SWEEP,
    "sweep.grid.k=[3]",
    "sweep.grid.n_minus_k=[1,2]",
    "sweep.seeds=8",
    "resources.chunk_size=1",
    "protocol.early_stop_global=false",
    "protocol.max_iterations=15000",
]
UNITS = ROWS = 16
KEYS = ["cell_id", "seed"]
VOLATILE = ["wall_s", "hostname", "node_id", "gpu_ids"]
OBJECT_STORE = str(100 * 1024**2)
REFUSED = "landscape-sweep: error: cluster.address: cannot connect to the Ray cluster at"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _ppids() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return parents


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def processes_of(text: str) -> set[int]:
    """Processes whose command line contains ``text``, and all their descendants (workers and
    agents rename themselves ``ray::...`` and no longer show the directory)."""
    parents = _ppids()
    found = {pid for pid in parents if pid != os.getpid() and text.encode() in _cmdline(pid)}
    frontier = set(found)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def raylet_of(node_dir: Path) -> tuple[int, str]:
    """PID and node id of the raylet started with ``--temp_dir=<node_dir>``."""
    for pid in processes_of(str(node_dir)):
        args = _cmdline(pid).split(b"\0")
        if args and args[0].endswith(b"/raylet"):
            node_id = next(arg.split(b"=", 1)[1] for arg in args if arg.startswith(b"--node_id="))
            return pid, node_id.decode()
    raise AssertionError(f"no raylet for {node_dir}")


class RayStartCluster:
    """A ``ray start`` cluster in ``root``: one head, worker nodes added on demand."""

    def __init__(self, root: Path):
        self.root = root
        self.token_path = root / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))  # what `ray get-auth-token --generate` makes
        self.token_path.chmod(0o600)
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.groups: list[int] = []  # process groups of the `ray start` commands (their daemons inherit them)
        self.nodes: dict[str, Path] = {}

    def env(self, *, auth: bool = True) -> dict:
        """The environment of every node, driver and CLI call (``auth=False``: no token auth)."""
        env = {
            key: value
            for key, value in os.environ.items()
            if key
            not in (
                "RAY_ADDRESS",
                "RAY_AUTH_MODE",
                "RAY_AUTH_TOKEN",
                "RAY_AUTH_TOKEN_PATH",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
            )
        }
        env.update(
            RAY_TMPDIR=str(self.root),
            PYTHONUNBUFFERED="1",
            PATH=os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]),
            PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            RAY_USAGE_STATS_ENABLED="0",
        )
        if auth:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        return env

    def _ray_start(self, name: str, args: list[str]) -> float:
        node_dir = self.root / name
        node_dir.mkdir()
        env = self.env()
        if name == "head":  # the autoscaler's and dashboard's metrics ports are fixed by default: others may hold them
            env.update(AUTOSCALER_METRIC_PORT=str(free_port()), DASHBOARD_METRIC_PORT=str(free_port()))
        started = time.monotonic()
        process = subprocess.Popen(
            [
                RAY,
                "start",
                *args,
                "--num-cpus=1",
                f"--object-store-memory={OBJECT_STORE}",
                f"--temp-dir={node_dir}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--disable-usage-stats",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.groups.append(process.pid)
        self.nodes[name] = node_dir
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, f"ray start ({name}) failed:\n{out[-4000:]}"
        return time.monotonic() - started

    def start_head(self) -> float:
        return self._ray_start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
            ],
        )

    def add_worker(self, name: str) -> float:
        return self._ray_start(name, [f"--address={self.address}"])

    @property
    def node_ip(self) -> str:
        """The address Ray gives the head node (127.0.0.1 in cluster.address is rewritten to it)."""
        args = _cmdline(raylet_of(self.nodes["head"])[0]).split(b"\0")
        return next(arg.split(b"=", 1)[1] for arg in args if arg.startswith(b"--node_ip_address=")).decode()

    def node_ids(self) -> dict[str, str]:
        return {name: raylet_of(node_dir)[1] for name, node_dir in self.nodes.items()}

    def status(self) -> str:
        return subprocess.run(
            [RAY, "status", f"--address={self.address}"], env=self.env(), capture_output=True, text=True, timeout=60
        ).stdout

    def alive_nodes(self) -> int:
        """Nodes `ray status` lists as active or idle (it refreshes every few seconds)."""
        listed = self.status().split("Pending:")[0]
        return len(re.findall(r"^\s*\d+ node_[0-9a-f]+\s*$", listed, flags=re.MULTILINE))

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive_nodes() >= count:
                return
            time.sleep(1)
        raise AssertionError(f"fewer than {count} nodes alive:\n{self.status()}")

    def stop(self) -> None:
        """Every process of this cluster: SIGKILL by group, then by directory (+ descendants)."""
        left = processes_of(str(self.root))
        for group in self.groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_all(left)
        kill_all(processes_of(str(self.root)))


@pytest.fixture(scope="module")
def ray_start_cluster():
    if RAY is None:
        pytest.skip("the `ray` command is not installed (pip install 'ray[default]')")
    root = Path(tempfile.mkdtemp(prefix="mn_rs_", dir="/tmp"))  # short: Ray's socket paths have a length limit
    cluster = RayStartCluster(root)
    try:
        times = {"head": cluster.start_head()}
        for name in ("worker1", "worker2"):
            times[name] = cluster.add_worker(name)
        cluster.wait_for_nodes(3)
        print(f"\nray start: {', '.join(f'{name} {seconds:.1f} s' for name, seconds in times.items())}")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _rows(results: Path) -> pd.DataFrame:
    return pd.read_parquet(results / "smoke" / "runs")


def _check_rows(rows: pd.DataFrame, node_ids: set[str]) -> None:
    assert len(rows) == ROWS
    assert not rows.duplicated(KEYS).any()
    assert (rows["status"] != "error").all(), rows.loc[rows["status"] == "error", "error_message"].tolist()
    assert set(rows["node_id"]) <= node_ids, (set(rows["node_id"]), node_ids)
    assert rows["hostname"].ne("").all()


def test_the_cli_on_a_ray_start_cluster_with_token_auth_spreads_units_over_the_nodes(ray_start_cluster, tmp_path):
    cluster = ray_start_cluster
    started = time.monotonic()
    proc = run_cli(
        [*SWEEP, f"cluster.address={cluster.address}", f"results_dir={tmp_path}"], env=cluster.env(), timeout=280
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert cluster.address in proc.stderr  # "Scheduling 16 units on Ray cluster at <address>"
    rows = _rows(tmp_path)
    node_ids = set(cluster.node_ids().values())
    _check_rows(rows, node_ids)
    assert rows["node_id"].nunique() >= 2, rows["node_id"].value_counts()
    print(
        f"\nCLI sweep on 3 nodes: {time.monotonic() - started:.1f} s, units per node "
        f"{rows['node_id'].str[:8].value_counts().to_dict()}"
    )


def _refused(cluster, env: dict, tmp_path: Path, label: str) -> str:
    """Run the CLI against ``cluster`` with ``env``; assert one error line (the last), exit 2,
    under 40 s, nothing written; return the line."""
    started = time.monotonic()
    proc = run_cli(
        [*SWEEP, f"cluster.address={cluster.address}", f"results_dir={tmp_path / 'r'}"], env=env, timeout=120
    )
    elapsed = time.monotonic() - started
    errors = [line for line in proc.stderr.splitlines() if line.startswith("landscape-sweep:")]
    print(
        f"\n{label}: exit {proc.returncode} after {elapsed:.1f} s, {len(proc.stderr.splitlines())} lines on "
        f"stderr (Ray's own retries), the last: {errors}"
    )
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert len(errors) == 1 and errors[0] == proc.stderr.strip().splitlines()[-1], proc.stderr[-4000:]
    assert errors[0].startswith(f"{REFUSED} {cluster.address}")
    assert elapsed < 40
    assert not (tmp_path / "r").exists()  # refused before anything was written
    return errors[0]


def test_a_driver_without_token_auth_is_refused_with_one_line_quickly(ray_start_cluster, tmp_path):
    line = _refused(ray_start_cluster, ray_start_cluster.env(auth=False), tmp_path, "without RAY_AUTH_MODE=token")
    assert "RAY_AUTH_MODE=token" in line


@pytest.mark.parametrize("token", ["wrong", "missing"])
def test_a_driver_with_a_wrong_or_missing_token_is_refused_with_one_line(ray_start_cluster, tmp_path, token):
    env = ray_start_cluster.env()
    if token == "wrong":
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # read before RAY_AUTH_TOKEN_PATH
    else:
        home = tmp_path / "home"  # no ~/.ray/auth_token either
        home.mkdir()
        env.update(HOME=str(home), RAY_AUTH_TOKEN_PATH=str(tmp_path / "no-such-token"))
    line = _refused(ray_start_cluster, env, tmp_path, f"{token} token")
    if token == "wrong":
        assert "check that the driver's token" in line


def test_ray_job_submit_runs_the_smoke_sweep_and_writes_rows_and_mlflow_to_the_shared_path(ray_start_cluster, tmp_path):
    cluster = ray_start_cluster
    results = tmp_path / "shared-results"  # absolute: the job's driver runs on the head node, its cwd is the upload
    job_id = f"landscape-test-{secrets.token_hex(4)}"
    excludes = [".git", ".venv", "results", "benchmarks", "**/__pycache__", "*.egg-info"]
    started = time.monotonic()
    submit = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            f"--address={cluster.dashboard}",
            f"--submission-id={job_id}",
            f"--working-dir={PROJECT_ROOT}",
            f"--runtime-env-json={json.dumps({'excludes': excludes})}",
            "--",
            "python",
            "-m",
            "ray_jobs.cli",
            *SWEEP,
            f"results_dir={results}",
        ],
        cwd=PROJECT_ROOT,
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=280,
    )
    elapsed = time.monotonic() - started
    assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-4000:]
    assert "succeeded" in submit.stdout.lower(), submit.stdout[-4000:]
    # the job's driver found this cluster: the job supervisor sets RAY_ADDRESS to the head's GCS address
    assert f"Ray cluster at {cluster.node_ip}:{cluster.port}" in " ".join(submit.stdout.split()), submit.stdout[-4000:]
    # the same job seen with the token as a header instead of the environment
    status = subprocess.run(
        [
            RAY,
            "job",
            "status",
            f"--address={cluster.dashboard}",
            job_id,
            "--headers",
            json.dumps({"Authorization": f"Bearer {cluster.token_path.read_text()}"}),
        ],
        cwd=PROJECT_ROOT,
        env=cluster.env(auth=False),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and f"Job '{job_id}' succeeded" in status.stdout, status.stdout + status.stderr

    rows = _rows(results)
    _check_rows(rows, set(cluster.node_ids().values()))
    client = mlflow_client(results)
    experiment = client.get_experiment_by_name("landscape-smoke")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`landscape.role` = 'sweep'")
    assert [run.info.status for run in parents] == ["FINISHED"]
    assert len(children_of(client, parents[0].info.run_id, role="cell")) == 2
    assert (results / "smoke" / "report" / "table.md").is_file()
    print(f"\nray job submit: SUCCEEDED in {elapsed:.1f} s, {len(rows)} rows and mlflow.db under {results}")


def test_a_worker_node_lost_mid_sweep_loses_nothing_and_its_unit_runs_again(ray_start_cluster, tmp_path):
    """A fourth node is added for this test and killed: the other tests keep three."""
    cluster = ray_start_cluster
    cluster.add_worker("doomed")
    cluster.wait_for_nodes(4)
    raylet, victim = raylet_of(cluster.nodes["doomed"])
    node_ids = set(cluster.node_ids().values())
    results = tmp_path / "results"
    runs = results / "smoke" / "runs"
    code = "import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    args = [*SWEEP, f"cluster.address={cluster.address}", f"results_dir={results}"]
    driver = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=PROJECT_ROOT,
        env=cluster.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed_at, interrupted = None, []
    try:
        deadline = time.monotonic() + 240
        while killed_at is None and time.monotonic() < deadline and driver.poll() is None:
            if len(list(runs.glob("[!.]*.parquet"))) < 2:
                time.sleep(0.02)
                continue
            node_processes = processes_of(str(cluster.nodes["doomed"]))
            titles = {pid: _cmdline(pid).split(b"\0")[0].decode(errors="replace") for pid in node_processes}
            interrupted = [
                title[len("ray::unit-") :]
                for pid, title in titles.items()
                if title.startswith("ray::unit-") and _ppids().get(pid) == raylet
            ]
            if interrupted:
                killed_at = time.time()
                kill_all(node_processes)  # kill -9 of the raylet, its workers and agents at once
                cluster.nodes.pop("doomed")
            time.sleep(0.02)
        _, err = driver.communicate(timeout=280)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert killed_at is not None, "no unit was seen running on the doomed node"
    assert driver.returncode == 0, err[-4000:]
    rows = _rows(results)
    _check_rows(rows, node_ids)
    times = sorted((path.stat().st_mtime, path.stem) for path in runs.glob("[!.]*.parquet"))
    recorded = {unit: mtime - killed_at for mtime, unit in times}
    # the interrupted unit ran again on a surviving node (unless it finished in the instant between being seen
    # running and the kill: then it was recorded at once)
    again = rows[rows["unit_id"].isin(interrupted)]
    assert len(again) == len(interrupted)
    for unit, node in zip(again["unit_id"], again["node_id"]):
        assert node != victim or recorded[unit] < 1.5, (unit, node, recorded[unit])

    before = [mtime for mtime, _ in times if mtime < killed_at]
    after = [mtime for mtime, _ in times if mtime >= killed_at]
    gaps = lambda values: [b - a for a, b in zip(values, values[1:])]  # noqa: E731
    stall = max(gaps(before[-1:] + after), default=0.0)
    redone = max(recorded[unit] for unit in interrupted)
    dead_after = None
    while time.time() - killed_at < 60 and dead_after is None:  # when `ray status` stops listing the node
        if cluster.alive_nodes() <= 3:
            dead_after = time.time() - killed_at
        else:
            time.sleep(0.5)
    print(
        f"\nnode loss (ray start cluster): stall {stall:.2f} s across the kill (longest gap before it "
        f"{max(gaps(before), default=0.0):.2f} s), the interrupted unit recorded {redone:.2f} s after the kill, "
        f"node gone from `ray status` after {dead_after if dead_after is None else round(dead_after, 1)} s"
    )

"""Faults a long sweep meets, tried for real: a second driver, a driver killed while MLflow
creates its store, killed drivers' MLflow parents, SIGTERM at any phase, fail-fast,
unreachable services, infeasible resources, unwritable / full / read-only storage.

Each test asserts what the user is promised: one line and the right exit code, nothing
written before a refusal, every row exactly once after the fault is fixed and the same
command is run again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ray_jobs.cli import EXIT_CRASHED, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNITS_FAILED, EXIT_USAGE, sweep_main
from ray_jobs.config import compose_config
from ray_jobs.store import STAGING_SUFFIX, ResultsStore
from ray_jobs.sweep import run_sweep
from tests.conftest import (
    PROJECT_ROOT,
    TINY_CELLS,
    TINY_SEEDS,
    TINY_SWEEP,
    TINY_UNITS,
    children_of,
    mlflow_client,
    run_cli,
)

ROWS = TINY_CELLS * TINY_SEEDS


def read_rows(results: Path, name: str = "smoke") -> pd.DataFrame:
    return pd.read_parquet(results / name / "runs")


def assert_each_run_once(results: Path) -> pd.DataFrame:
    rows = read_rows(results)
    assert len(rows) == ROWS and not rows.duplicated(["cell_id", "seed"]).any()
    assert (rows["status"] != "error").all()
    return rows


def python(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """A fresh interpreter running ``code`` with the project importable."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- two drivers, one results directory ---------------------------------------------------

HOLD_LOCK = """
import sys, time
from ray_jobs.store import ResultsStore
store = ResultsStore(sys.argv[1], "smoke")
store.prepare()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_driver_is_refused_naming_the_first_and_a_dead_drivers_lock_is_taken_over(
    ray_session, tmp_path, capsys
):
    results = tmp_path / "results"
    holder = python(HOLD_LOCK, str(results))
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = sweep_main([*TINY_SWEEP, f"results_dir={results}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == EXIT_USAGE
        assert err[-1].startswith("landscape-sweep: error: results_dir: the sweep 'smoke' under ")
        assert f"being run by another driver (pid {holder.pid} on host " in err[-1] and " since 20" in err[-1]
        assert not list((results / "smoke").glob("runs/*")) and not (results / "smoke" / "config.yaml").exists()
    finally:
        holder.kill()  # SIGKILL: the lock is not released by the program, the kernel drops it
        holder.wait()
    result = run_sweep(compose_config([*TINY_SWEEP, f"results_dir={results}"]))
    assert result.units_scheduled == TINY_UNITS
    assert_each_run_once(results)
    lock = json.loads((results / "smoke" / ".driver.lock").read_text())
    assert lock["pid"] == os.getpid()


def test_two_drivers_started_together_record_every_run_once(driver_env, tmp_path):
    """Two CLI drivers on one fresh results directory at the same moment: one runs the sweep,
    the other is refused with one line (or, if it comes second, finds nothing to run); no
    traceback (the MLflow store is created once, under a lock); every row once."""
    results = tmp_path / "results"
    code = "import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    drivers = [python(code, *TINY_SWEEP, f"results_dir={results}", env=driver_env) for _ in range(2)]
    outputs = [driver.communicate(timeout=300) for driver in drivers]
    codes = sorted(driver.returncode for driver in drivers)
    for (_, err), driver in zip(outputs, drivers):
        assert "Traceback" not in err, err[-3000:]
        if driver.returncode == EXIT_USAGE:
            assert "being run by another driver" in err.strip().splitlines()[-1]
    assert codes in ([EXIT_OK, EXIT_OK], [EXIT_OK, EXIT_USAGE]), [err[-2000:] for _, err in outputs]
    assert_each_run_once(results)
    parents = mlflow_client(results).search_runs(
        [mlflow_client(results).get_experiment_by_name("landscape-smoke").experiment_id],
        filter_string="tags.`landscape.role` = 'sweep'",
    )
    assert all(run.info.status == "FINISHED" for run in parents)


def test_staging_files_are_per_process_ignored_by_readers_and_cleaned_by_the_next_driver(tmp_path):
    import pyarrow as pa

    store = ResultsStore(tmp_path, "s")
    store.prepare()
    stale = store.runs_dir / f".abc.99999{STAGING_SUFFIX}"
    stale.write_bytes(b"PAR1 half a file")
    assert store.completed_unit_ids() == set() and store.read().num_rows == 0
    store.write_fragment("abc", pa.table({"seed": [1, 2]}))
    assert store.completed_unit_ids() == {"abc"}
    assert pd.read_parquet(store.runs_dir).shape == (2, 1)  # pandas' directory read skips the hidden file
    store.close()
    store.prepare()  # the next driver (the lock is free again)
    assert not stale.exists() and store.completed_unit_ids() == {"abc"}
    store.close()


# --- the MLflow store --------------------------------------------------------------------

CREATE_STORE = """
import sys
from ray_jobs.tracking import ensure_sqlite_store
ensure_sqlite_store(sys.argv[1])
"""


def _store_is_usable(results: Path) -> bool:
    client = mlflow_client(results)
    return client.get_experiment("0") is not None


def test_a_driver_killed_while_mlflow_creates_its_store_leaves_none_or_a_whole_one(tmp_path):
    """kill -9 at several moments of store creation (imports, migrations, rename): afterwards
    mlflow.db is absent or complete, and the next driver creates or opens it."""
    for index, delay in enumerate((1.0, 2.0, 3.0, 4.0)):
        results = tmp_path / f"r{index}"
        results.mkdir()
        creator = python(CREATE_STORE, str(results))
        time.sleep(delay)
        creator.kill()
        creator.communicate()
        database = results / "mlflow.db"
        if database.exists():
            assert _store_is_usable(results)
        python(CREATE_STORE, str(results)).communicate(timeout=120)
        assert database.exists() and _store_is_usable(results)
        assert not list(results.glob(".mlflow.db.*"))


def test_drivers_creating_the_store_together_all_succeed(tmp_path):
    creators = [python(CREATE_STORE, str(tmp_path)) for _ in range(3)]
    for creator in creators:
        _, err = creator.communicate(timeout=120)
        assert creator.returncode == 0, err[-3000:]
    assert _store_is_usable(tmp_path)


# --- MLflow parents of killed drivers ------------------------------------------------------


def test_a_killed_drivers_parent_is_continued_by_the_next_invocation_not_duplicated(ray_session, tmp_path):
    """A parent left RUNNING (its driver was killed) is marked KILLED by the next invocation
    of the same sweep, which continues it: one parent, one child per cell. A later
    invocation with other parameters opens its own parent."""
    from mlflow.tracking import MlflowClient

    from ray_jobs.tracking import RESUMED_TAG

    results = tmp_path / "results"
    first = run_sweep(compose_config([*TINY_SWEEP, f"results_dir={results}", "sweep.grid.k=[2]"]))
    client = mlflow_client(results)
    client.update_run(first.parent_run_id, status="RUNNING")  # what a kill -9 leaves: the parent never ended
    for fragment in list((results / "smoke" / "runs").glob("*.parquet"))[:1]:
        fragment.unlink()  # and one unit not recorded yet
    resumed = run_sweep(compose_config([*TINY_SWEEP, f"results_dir={results}", "sweep.grid.k=[2]"]))
    assert resumed.units_scheduled == 1
    assert resumed.parent_run_id == first.parent_run_id
    parent = client.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags[RESUMED_TAG] == "1"
    cells = [run.data.tags["cell_id"] for run in children_of(client, first.parent_run_id, role="cell")]
    assert len(cells) == len(set(cells)) == 2

    client.update_run(first.parent_run_id, status="RUNNING")
    other = run_sweep(compose_config([*TINY_SWEEP, f"results_dir={results}"]))  # k = 2, 3: other parameters
    assert other.parent_run_id != first.parent_run_id
    assert client.get_run(first.parent_run_id).info.status == "KILLED"
    assert isinstance(client, MlflowClient)


# --- SIGTERM ---------------------------------------------------------------------------

SIGTERM_HANDLER_AROUND_RAY = """
import signal
from omegaconf import OmegaConf
from rich.console import Console
from ray_jobs.execution import ray_cluster

def mine(signum, frame):
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, mine)
cluster = OmegaConf.create({"address": None, "num_cpus": 1, "num_gpus": 0, "object_store_memory": 100 * 1024**2,
                            "include_dashboard": False, "log_to_driver": False, "ship_code": False})
with ray_cluster(cluster, Console(stderr=True)):
    print("inside", signal.getsignal(signal.SIGTERM) is mine, flush=True)
print("after", signal.getsignal(signal.SIGTERM) is mine, flush=True)
"""


def test_the_drivers_sigterm_handler_survives_ray_init_and_ray_shutdown(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    out, err = python(SIGTERM_HANDLER_AROUND_RAY, env=env).communicate(timeout=180)
    assert "inside True" in out and "after True" in out, err[-3000:]


# --- fail fast -------------------------------------------------------------------------


def test_fail_fast_stops_scheduling_with_the_reason_and_exit_1(ray_session, tmp_path, capsys):
    results = tmp_path / "results"
    args = [
        *TINY_SWEEP,
        f"results_dir={results}",
        "experiment.fail_on_seeds=[0,1,2,3,4,5]",
        "fail_fast.enabled=true",
        "fail_fast.first_units=2",
        "fail_fast.max_failed_fraction=0.5",
    ]
    assert sweep_main(args) == EXIT_UNITS_FAILED
    err = capsys.readouterr().err
    assert "stopped early: fail_fast: 2 of the first 2 units failed (more than 50%); pending units cancelled" in err
    rows = read_rows(results)
    assert 2 * 3 <= len(rows) < ROWS and (rows["status"] == "error").all()
    # off (the default): every unit runs and is recorded as error rows
    assert (
        sweep_main([*TINY_SWEEP, f"results_dir={tmp_path / 'off'}", "experiment.fail_on_seeds=[0,1,2,3,4,5]"])
        == EXIT_UNITS_FAILED
    )
    assert len(read_rows(tmp_path / "off")) == ROWS


# --- refusals before anything is written, in seconds ---------------------------------------


def _local_env() -> dict:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["tracking=server"], "tracking.uri: no MLflow server answers at http://127.0.0.1:5000"),
        (["tracking.uri=http://127.0.0.1:9"], "tracking.uri: no MLflow server answers at http://127.0.0.1:9"),
        (["cluster.address=127.0.0.1:9"], "cluster.address: cannot reach the Ray cluster at 127.0.0.1:9"),
        (["cluster.address=nonsense"], "cluster.address: 'nonsense' is not an address"),
        (
            ["resources.num_cpus=64", "cluster.num_cpus=1"],
            "resources.num_cpus: each task asks for 64 CPUs, but the largest node of the local cluster offers 1",
        ),
        (
            ["resources=gpu", "cluster.num_cpus=1"],
            "resources.num_gpus: each task asks for 0.25 GPUs, but the largest node of the local cluster offers 0",
        ),
        (
            ["sweep.seeds=1000000000", "resources.chunk_size=1"],
            "sweep.seeds: 4 cells x 1000000000 seeds at resources.chunk_size=1 make 4000000000 work units; "
            "at most 1000000",
        ),
        (["sweep.grid.k=[100000]"], "sweep.grid.k: k=100000, n=100000: one run's Hessian has"),
        (["fail_fast.max_failed_fraction=1.5"], "fail_fast.max_failed_fraction: must be a number in [0, 1)"),
        (
            ["+fail_fast.first_unit=3"],
            "fail_fast.first_unit: no such key in the config (did you mean fail_fast.first_units?)",
        ),
    ],
)
def test_unservable_invocations_fail_in_seconds_with_one_line_and_write_nothing(tmp_path, overrides, line):
    results = tmp_path / "results"
    started = time.monotonic()
    proc = run_cli(
        [
            *TINY_SWEEP,
            *overrides,
            f"results_dir={results}",
            "tracking=sqlite" if overrides == ["tracking.uri=http://127.0.0.1:9"] else "report.figure=true",
        ],
        env=_local_env(),
        timeout=120,
    )
    elapsed = time.monotonic() - started
    errors = [text for text in proc.stderr.splitlines() if text.startswith("landscape-sweep:")]
    assert proc.returncode == EXIT_USAGE, proc.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith(f"landscape-sweep: error: {line}"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not results.exists()
    assert elapsed < 60  # Ray's local start dominates (~10 s here); a hang would be minutes


def test_a_results_dir_that_cannot_be_written_is_one_line_and_exit_2(capsys):
    assert sweep_main([*TINY_SWEEP, "results_dir=/proc/landscape-results"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert (
        err == "landscape-sweep: error: results_dir: cannot write under /proc: No such file or directory; "
        "give a writable directory"
    )


# --- storage faults mid-sweep (a real tmpfs, a real read-only mount) -----------------------


def _can_mount() -> str | None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "needs root and mount(8) to make a small or read-only file system"
    probe = Path("/tmp/landscape-mount-probe")
    probe.mkdir(exist_ok=True)
    ok = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True).returncode
        == 0
    )
    if ok:
        subprocess.run(["umount", str(probe)], check=True)
    return None if ok else "mount(8) is not permitted here (a container without CAP_SYS_ADMIN)"


MOUNT_SKIP = _can_mount()
needs_mount = pytest.mark.skipif(MOUNT_SKIP is not None, reason=MOUNT_SKIP or "")


@pytest.fixture
def tmpfs(tmp_path):
    """A 16 MiB tmpfs at tmp_path/fs, unmounted at the end."""
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


SLOW_UNITS_SWEEP = [
    *TINY_SWEEP,
    "protocol.early_stop_global=false",
    "protocol.max_iterations=20000",
    "resources.chunk_size=1",
]


def _driver(args: list[str], env: dict) -> subprocess.Popen:
    code = "import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    return python(code, *args, env=env)


def _when(predicate, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@needs_mount
@pytest.mark.slow  # ~1 min; the default suite keeps the read-only case, the same stop-and-rerun path
def test_a_disk_filling_mid_sweep_stops_with_one_line_and_the_rerun_completes(driver_env, tmpfs):
    results = tmpfs / "results"
    runs = results / "smoke" / "runs"
    args = [*SLOW_UNITS_SWEEP, f"results_dir={results}"]
    driver = _driver(args, driver_env)
    _when(lambda: len(list(runs.glob("*.parquet"))) >= 2)
    filler = tmpfs / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # until the disk is full
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == EXIT_CRASHED, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert (
        last.startswith("landscape-sweep: stopped: ") and "No space left on device" in last or "disk is full" in last
    ), last
    assert "Traceback" not in err
    recorded = pd.read_parquet(runs)  # whatever was recorded reads back whole
    assert 2 <= len(recorded) < ROWS
    filler.unlink()
    proc = run_cli(args, env=driver_env)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    assert_each_run_once(results)
    assert not list(runs.glob(".*"))


@needs_mount
def test_a_results_dir_turning_read_only_mid_sweep_stops_with_one_line_and_the_rerun_completes(driver_env, tmp_path):
    source, mountpoint = tmp_path / "source", tmp_path / "ro"
    source.mkdir()
    mountpoint.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(mountpoint)], check=True)
    try:
        results = mountpoint / "results"
        runs = results / "smoke" / "runs"
        args = [
            *SLOW_UNITS_SWEEP,
            f"results_dir={results}",
            "tracking=none",
        ]  # sqlite holds its file open: no ro remount
        driver = _driver(args, driver_env)
        _when(lambda: len(list(runs.glob("*.parquet"))) >= 2)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mountpoint)], check=True)
        _, err = driver.communicate(timeout=300)
        assert driver.returncode == EXIT_CRASHED, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("landscape-sweep: stopped: cannot write ") and "Read-only file system" in last, last
        assert 2 <= len(pd.read_parquet(runs)) < ROWS
        # still read-only: the next invocation is refused before it starts
        proc = run_cli(args, env=driver_env)
        assert proc.returncode == EXIT_USAGE and "results_dir: cannot write under" in proc.stderr, proc.stderr[-2000:]
        subprocess.run(["mount", "-o", "remount,bind,rw", str(mountpoint)], check=True)
        proc = run_cli(args, env=driver_env)
        assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
        assert_each_run_once(results)
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _titles(pids) -> list[str]:
    titles = []
    for pid in pids:
        try:
            titles.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace"))
        except OSError:
            pass
    return titles


@pytest.mark.parametrize("moment", ["while Ray starts", "while units run"])
def test_sigterm_at_any_moment_is_exit_130_with_the_parent_killed_and_nothing_left(tmp_path, moment):
    from ray_jobs.reaper import descendants, start_time

    results = tmp_path / "results"
    runs = results / "smoke" / "runs"
    driver = _driver(
        [
            *SLOW_UNITS_SWEEP,
            f"results_dir={results}",
            "cluster.num_cpus=2",
            f"cluster.object_store_memory={200 * 1024**2}",
        ],
        _local_env(),
    )
    tree: dict[int, int] = {}

    def ready() -> bool:
        for pid in descendants(driver.pid):
            tree.setdefault(pid, start_time(pid))
        if moment == "while Ray starts":
            return any("gcs_server" in title for title in _titles(tree))
        return len(list(runs.glob("*.parquet"))) >= 1

    _when(ready)
    os.kill(driver.pid, signal.SIGTERM)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("landscape-sweep: interrupted; recorded units are kept")
    time.sleep(3)
    left = [pid for pid, started in tree.items() if started is not None and start_time(pid) == started]
    assert not left, _titles(left)
    if moment == "while Ray starts":
        assert not results.exists()  # Ray starts before anything is written
    else:
        client = mlflow_client(results)
        parents = client.search_runs(
            [client.get_experiment_by_name("landscape-smoke").experiment_id],
            filter_string="tags.`landscape.role` = 'sweep'",
        )
        assert [run.info.status for run in parents] == ["KILLED"]
        assert len(pd.read_parquet(runs)) >= 1


# --- small pieces ------------------------------------------------------------------------


def test_storage_fault_names_the_first_file_system_fault_of_a_chain():
    import errno

    from ray_jobs.errors import StorageError, storage_fault

    def chained(first: BaseException, then: BaseException) -> BaseException:
        try:
            try:
                raise first
            except BaseException:
                raise then  # noqa: B904  # the implicit __context__ chain (a fault while handling another) is the case
        except BaseException as exc:
            return exc

    full = OSError(errno.ENOSPC, "No space left on device", "/x/runs/a.parquet")
    assert storage_fault(full) == "cannot write /x/runs/a.parquet: No space left on device"
    assert (
        storage_fault(StorageError("/x/runs/a.parquet", "Read-only file system"))
        == "cannot write /x/runs/a.parquet: Read-only file system"
    )
    mlflow_after = chained(
        StorageError("/x/runs/a.parquet", "No space left on device"),
        RuntimeError("(sqlite3.OperationalError) database or disk is full"),
    )
    assert storage_fault(mlflow_after) == "cannot write /x/runs/a.parquet: No space left on device"
    assert (
        storage_fault(RuntimeError("(sqlite3.OperationalError) database or disk is full"))
        == "the MLflow store refused a write (database or disk is full)"
    )
    assert storage_fault(OSError(errno.ENOENT, "No such file or directory")) is None
    assert storage_fault(ValueError("a bug")) is None


def test_cluster_addresses_are_probed_before_ray_is_asked(tmp_path):
    import socket

    from ray_jobs.errors import ConfigError
    from ray_jobs.execution import check_reachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}", "cluster.address")
        check_reachable(f"ray://127.0.0.1:{port}", "cluster.address")
    for address, text in [(f"127.0.0.1:{port}", "Connection refused"), ("HOST", "is not an address")]:
        with pytest.raises(ConfigError, match=text):
            check_reachable(address, "cluster.address")
    check_reachable("auto", "cluster.address")  # left to Ray (it fails at once when no cluster runs)


def test_unit_count_bound_names_the_chunk_size_that_fits():
    from ray_jobs.errors import ConfigError
    from ray_jobs.validate import MAX_UNITS, check_unit_count

    check_unit_count(1000, 1000, 1)  # exactly MAX_UNITS
    with pytest.raises(
        ConfigError,
        match=r"sweep.seeds: 2 cells x 1000000 seeds at resources.chunk_size=1 make 2000000 "
        r"work units; at most 1000000 per sweep: raise resources.chunk_size \(>= 2\)",
    ):
        check_unit_count(2, 1_000_000, 1)
    assert MAX_UNITS == 1_000_000

"""Fractional GPU scheduling, tested on a machine without a GPU.

Ray schedules GPUs as a declared resource: a local cluster started with ``num_gpus=2``
offers GPU ids 0 and 1 whether or not a GPU exists, gives each task asking for
``num_gpus=0.25`` one of them (``ray.get_gpu_ids()``, ``CUDA_VISIBLE_DEVICES``) and runs
at most 2 / 0.25 = 8 such tasks at a time. The worker then finds no CUDA in torch and
runs on the CPU (``device = "cpu"``) while the row still records the GPU id Ray gave it.

The session's Ray (``ray_session``, 2 CPUs, no GPU) lives in the pytest process, so the
cluster with GPUs lives in one subprocess (:data:`GPU_CLUSTER_SCRIPT`): it starts the
local cluster through the service (``ray_jobs.execution.ray_cluster`` with
``cluster.num_gpus=2``, as ``landscape-sweep`` does), measures how many quarter-GPU tasks
run at once, then runs a tiny ``resources=gpu`` sweep through ``run_sweep`` on it.
One Ray start for both keeps the file well under a minute on 2 busy cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT, TINY_CELLS, TINY_SEEDS, TINY_SWEEP, TINY_UNITS

#: the declared cluster: GPUs and logical CPUs; a task asks for 0.25 of each, so CPUs never
#: limit (8 / 0.25 = 32 tasks) and GPUs do (2 / 0.25 = 8 tasks)
CLUSTER_GPUS, CLUSTER_CPUS, TASK_GPUS, TASK_CPUS = 2, 8, 0.25, 0.25
AT_ONCE = int(CLUSTER_GPUS / TASK_GPUS)
#: probe tasks: a full wave of 8 and 2 that must wait for a free quarter GPU
N_PROBES = AT_ONCE + 2

#: the sweep: the tiny teacher-student sweep (8 units) asking for a quarter GPU per unit
GPU_SWEEP = [
    *TINY_SWEEP,
    "resources=gpu",
    f"resources.num_cpus={TASK_CPUS}",
    f"cluster.num_cpus={CLUSTER_CPUS}",
    f"cluster.num_gpus={CLUSTER_GPUS}",
    f"cluster.object_store_memory={100 * 1024**2}",
    "tracking=none",
    "report.figure=false",
]

# Each probe asks for what a unit of GPU_SWEEP asks (0.25 GPU, 0.25 CPU), records what Ray
# gave it and when it ran. A probe holds its slot until AT_ONCE probes are running (marker
# files in a shared directory), or every probe has started, or HOLD_LIMIT_S passed: so the
# peak is reached however slowly workers start on a busy machine (Ray starts a fresh worker
# per GPU task), and if Ray ran more than AT_ONCE at a time the measured overlap shows it
# (nothing holds the extra ones back). Then the sweep runs on the same cluster.
GPU_CLUSTER_SCRIPT = r"""
import json, os, sys, time
from pathlib import Path

import ray
from rich.console import Console

from ray_jobs.config import compose_config
from ray_jobs.execution import ray_cluster
from ray_jobs.sweep import run_sweep

marks, at_once, n_probes = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = compose_config(json.loads(sys.argv[4]))
HOLD_LIMIT_S, AFTER_S = 60.0, 0.3


@ray.remote(num_cpus=float(cfg.resources.num_cpus), num_gpus=float(cfg.resources.num_gpus), max_retries=0)
def probe(index):
    start = time.time()
    (marks / f"start-{index}").touch()
    deadline = time.monotonic() + HOLD_LIMIT_S
    while time.monotonic() < deadline:
        started, ended = len(list(marks.glob("start-*"))), len(list(marks.glob("end-*")))
        if started - ended >= at_once or started == n_probes:
            break
        time.sleep(0.02)
    time.sleep(AFTER_S)
    record = {"index": index, "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(),
              "start": start, "end": time.time()}
    (marks / f"end-{index}").touch()
    return record


with ray_cluster(cfg.cluster, Console(stderr=True), resources=cfg.resources) as description:
    resources = ray.cluster_resources()
    records = ray.get([probe.remote(i) for i in range(n_probes)], timeout=300)
    result = run_sweep(cfg)
print("GPU_CLUSTER " + json.dumps({"description": description, "GPU": resources.get("GPU"), "CPU": resources.get("CPU"),
                                   "records": records, "units_scheduled": result.units_scheduled,
                                   "units_failed": result.units_failed}))
"""


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (one ending when another starts does not overlap it)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:  # at equal times -1 sorts before +1
        running += step
        peak = max(peak, running)
    return peak


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    """Run GPU_CLUSTER_SCRIPT once; its summary, the sweep's rows and the wall time."""
    marks = tmp_path_factory.mktemp("gpu-probes")
    results = tmp_path_factory.mktemp("gpu-sweep") / "results"
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            GPU_CLUSTER_SCRIPT,
            str(marks),
            str(AT_ONCE),
            str(N_PROBES),
            json.dumps([*GPU_SWEEP, f"results_dir={results}"]),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    wall_s = time.monotonic() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("GPU_CLUSTER ")]
    assert proc.returncode == 0 and len(lines) == 1, (proc.stdout[-2000:], proc.stderr[-4000:])
    summary = json.loads(lines[0][len("GPU_CLUSTER ") :])
    return summary, pd.read_parquet(results / "smoke" / "runs"), wall_s


# --- the CPU fallback ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("use_gpu", "cuda", "expected"),
    [
        (True, True, "cuda"),  # a GPU task where torch sees CUDA
        (True, False, "cpu"),  # a GPU task where torch sees none: the fallback
        (False, True, "cpu"),  # a CPU task never takes the GPU, even when one is there
        (False, False, "cpu"),
    ],
)
def test_select_device_falls_back_to_cpu_when_torch_sees_no_cuda(monkeypatch, use_gpu, cuda, expected):
    import torch

    from ray_jobs.worker import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert select_device(use_gpu) == expected


def test_max_overlap_counts_concurrent_intervals():
    assert max_overlap([(0, 1), (1, 2), (2, 3)]) == 1
    assert max_overlap([(0, 3), (1, 2), (1.5, 4), (3, 5)]) == 3
    assert max_overlap([]) == 0


# --- 8 tasks at a time, measured ---------------------------------------------------------------


def test_the_local_cluster_declares_two_gpus_on_a_cpu_machine(gpu_cluster):
    summary, _, _ = gpu_cluster
    assert (summary["GPU"], summary["CPU"]) == (CLUSTER_GPUS, CLUSTER_CPUS) == (2, 8)
    assert summary["description"] == f"local Ray cluster ({CLUSTER_CPUS} CPUs), stopped at the end"


def test_quarter_gpu_tasks_run_eight_at_a_time(gpu_cluster):
    records = gpu_cluster[0]["records"]
    assert sorted(r["index"] for r in records) == list(range(N_PROBES))
    intervals = [(r["start"], r["end"]) for r in records]
    assert max_overlap(intervals) == AT_ONCE == 8
    # at the peak 4 quarter tasks share each GPU id, never more than one GPU's worth
    for gpu in ("0", "1"):
        on_gpu = [(r["start"], r["end"]) for r in records if r["gpu_ids"] == [gpu]]
        assert max_overlap(on_gpu) == AT_ONCE // CLUSTER_GPUS == 4, (gpu, len(on_gpu))
    # the 2 probes beyond 8 started only after a probe had ended: they waited for a quarter GPU
    first_end = min(end for _, end in intervals)
    assert sum(start >= first_end for start, _ in intervals) == N_PROBES - AT_ONCE == 2


def test_each_task_gets_one_gpu_id_and_cuda_visible_devices(gpu_cluster):
    records = gpu_cluster[0]["records"]
    assert all(len(r["gpu_ids"]) == 1 and r["gpu_ids"][0] in {"0", "1"} for r in records), records
    assert all(r["cuda_visible_devices"] == r["gpu_ids"][0] for r in records), records
    assert sorted({r["gpu_ids"][0] for r in records}) == ["0", "1"]
    # Ray gives a GPU task a fresh worker process (not reused: CUDA_VISIBLE_DEVICES is fixed
    # once CUDA initialises in a process), so every probe ran in its own process
    assert len({r["pid"] for r in records}) == N_PROBES


# --- a real sweep through the service on the declared GPUs ------------------------------------


def test_sweep_with_resources_gpu_records_cpu_device_and_the_gpu_ids_ray_gave(gpu_cluster):
    summary, rows, _ = gpu_cluster
    assert (summary["units_scheduled"], summary["units_failed"]) == (TINY_UNITS, 0) == (8, 0)
    assert len(rows) == TINY_CELLS * TINY_SEEDS == 24
    assert rows["unit_id"].nunique() == TINY_UNITS
    assert rows["error_message"].isna().all() and (rows["status"] != "error").all()
    assert (rows["device"] == "cpu").all(), rows["device"].value_counts().to_dict()
    assert set(rows["gpu_ids"]) <= {"0", "1"}, rows["gpu_ids"].value_counts().to_dict()
    assert set(rows["gpu_ids"]) == {"0", "1"}  # the 8 units fit at once: both GPU ids are used
    assert (rows.groupby("unit_id")["gpu_ids"].nunique() == 1).all()  # one task, one GPU id per unit
    assert rows["node_id"].nunique() == 1 and len(rows["node_id"].iloc[0]) == 56  # Ray's hex node id
    assert set(rows["hostname"]) == {socket.gethostname()}


def test_the_rows_do_not_depend_on_where_the_unit_ran(gpu_cluster, one_torch_thread):
    """Statuses, iteration counts and losses of the Ray GPU-resource run equal those of the
    same units run in this process with ``run_unit`` (seed by seed; one torch thread, as in a
    task, and put back afterwards by ``one_torch_thread``)."""
    from ray_jobs.config import compose_config
    from ray_jobs.plan import plan_sweep
    from ray_jobs.validate import validate
    from ray_jobs.worker import run_unit

    _, rows, _ = gpu_cluster
    cfg = compose_config([*GPU_SWEEP, "results_dir=unused"])
    experiment, cell_params = validate(cfg)
    plan = plan_sweep(cfg, experiment.name, cell_params)
    assert sorted(unit.unit_id for unit in plan.units) == sorted(rows["unit_id"].unique())
    local = {
        (unit.unit_id, record["seed"]): record
        for unit in plan.units
        for record in run_unit(experiment.name, unit.cell.params, unit.seeds, use_gpu=True, torch_threads=1)
    }
    assert len(local) == len(rows) == 24
    for row in rows.itertuples():
        record = local[(row.unit_id, row.seed)]
        assert (record["device"], record["status"], record["iterations"]) == (row.device, row.status, row.iterations)
        assert abs(record["final_loss"] - row.final_loss) <= 1e-12

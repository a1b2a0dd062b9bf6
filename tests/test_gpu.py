"""The GPU checks (docs/gpu.md): the cores and the service on a device, against the CPU.

Every test takes the ``device`` fixture: ``cpu`` (the default suite: the same bodies at small
sizes, cpu against cpu, which proves the checks themselves work, ~10 s) and ``cuda`` (marker
``gpu``, deselected by default: ``pytest -m gpu``, or ``bash benchmarks/gpu_check.sh``;
skipped, saying why, when torch sees no CUDA device). On ``cuda``, in float64:

- teacher-student closed forms (loss, gradient, Hessian, its extreme eigenvalues) equal to the
  CPU's within 1e-12, and the analytic gradient equal to autograd on the device;
- whole teacher-student runs (k = n = 6, 8; k = 6, n = 7; ``CORE_SEEDS`` seeds, default 100)
  with identical classifications, objectives within 1e-8 and min eigenvalues within 1e-6;
- width threshold: numerical ranks of known-rank matrices, exact Hessian extremes of a small
  network (<= 1e-10), whole cells (tanh, relu x depth 2, 3 x width 3, 12; n = 6; 8 seeds;
  L-BFGS to 1e-9) with identical statuses and ranks, converged objectives within 1e-6 relative;
- the ``make bench`` cell (k = n = 10, published protocol, ``BENCH_SEEDS`` seeds, default
  "200 1000") batched on the device vs one CPU thread: identical classifications, and the
  wall times and speed-up as figures;
- ``landscape-sweep sweep=smoke resources=gpu``: every row on ``cuda`` with a GPU id, no error
  rows, the same classifications as the same sweep on CPUs.

Each test adds its figures (markdown table rows) to the file named by ``$GPU_CHECK_FIGURES``
when set (``benchmarks/gpu_check.sh`` writes them to docs). ``GPU_CHECK_DRY_RUN=1`` runs the
``cuda`` variant on the CPU (GPUs declared to the local cluster) to check the checks on a
machine without a GPU; its figures say nothing about GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from landscape_core.networks import MLPSpec, flatten, forward, init_parameters, unflatten
from landscape_core.probes import exact_hessian_extremes, numerical_rank
from landscape_core.teacher_student import (
    hessian_extreme_eigenvalues,
    population_gradient,
    population_hessian,
    population_loss,
    run_teacher_student,
)
from landscape_core.width_threshold import resolve_options, run_width_threshold
from tests.conftest import PROJECT_ROOT

F64 = torch.float64
DRY_RUN = os.environ.get("GPU_CHECK_DRY_RUN") == "1"
NO_CUDA = (
    f"no CUDA device visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}, "
    f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): the gpu checks need an NVIDIA "
    f"GPU "
    f"and a CUDA build of torch (docs/gpu.md)"
)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> str:
    """The device under test: ``cpu`` (small sizes, default suite) or ``cuda`` (``-m gpu``)."""
    if request.param == "cuda" and not DRY_RUN and not torch.cuda.is_available():
        pytest.skip(NO_CUDA)
    return request.param


def full_size(device: str) -> bool:
    """The checks' full sizes on the GPU variant (also in a dry run), small ones on ``cpu``."""
    return device != "cpu" or DRY_RUN


def on(device: str) -> str:
    """The torch device: ``cuda`` in a dry run runs on the CPU."""
    return "cpu" if DRY_RUN else device


def record(section: str, header: str, row: str) -> None:
    """Add a markdown table row under ``section`` to $GPU_CHECK_FIGURES (JSON lines), when set."""
    path = os.environ.get("GPU_CHECK_FIGURES")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"section": section, "header": header, "row": row}) + "\n")


def rand(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


CORES = "(b) cores vs cpu, float64"
CORES_HEADER = "| check | figure |\n|---|---|"


# --- teacher-student ------------------------------------------------------------------------
def test_teacher_student_closed_forms_equal_the_cpus(device):
    dev = on(device)
    worst = dict.fromkeys(("loss", "gradient", "hessian", "hessian eigenvalues", "autograd"), 0.0)
    for (n, k, d), seed in zip([(3, 3, 3), (4, 2, 5), (6, 6, 6), (10, 10, 10)], range(4)):
        W, V = rand((8, n, d), 10 + seed), rand((8, k, d), 20 + seed)  # [B, n, d], [B, k, d]
        Wd, Vd = W.to(dev), V.to(dev)
        assert Wd.dtype == F64
        worst["loss"] = max(worst["loss"], float((population_loss(Wd, Vd).cpu() - population_loss(W, V)).abs().max()))
        worst["gradient"] = max(
            worst["gradient"], float((population_gradient(Wd, Vd).cpu() - population_gradient(W, V)).abs().max())
        )
        worst["hessian"] = max(
            worst["hessian"], float((population_hessian(Wd, Vd).cpu() - population_hessian(W, V)).abs().max())
        )
        (lo_d, hi_d), (lo, hi) = hessian_extreme_eigenvalues(Wd, Vd), hessian_extreme_eigenvalues(W, V)
        worst["hessian eigenvalues"] = max(
            worst["hessian eigenvalues"], float((lo_d.cpu() - lo).abs().max()), float((hi_d.cpu() - hi).abs().max())
        )
        Wr = Wd.clone().requires_grad_(True)
        population_loss(Wr, Vd).sum().backward()
        assert Wr.grad is not None
        worst["autograd"] = max(worst["autograd"], float((Wr.grad - population_gradient(Wd, Vd)).abs().max()))
    for name, value in worst.items():
        record(
            CORES, CORES_HEADER, f"| teacher-student {name} ({device} vs cpu) | max abs diff {value:.2e} (<= 1e-12) |"
        )
    assert max(worst.values()) <= 1e-12, worst


def test_teacher_student_runs_classify_as_on_the_cpu(device):
    full = full_size(device)
    seeds = int(os.environ.get("CORE_SEEDS", 100)) if full else 2
    opts: dict[str, Any] = dict(max_iterations=20000 if full else 2000, early_stop_global=True, keep_weights=False)
    for k, n in [(6, 6), (8, 8), (6, 7)] if full else [(6, 6)]:
        cpu = run_teacher_student(k, n, range(seeds), device="cpu", **opts)
        started = time.perf_counter()
        dev = run_teacher_student(k, n, range(seeds), device=on(device), **opts)
        wall = time.perf_counter() - started
        same_it = sum(a["iterations"] == b["iterations"] for a, b in zip(cpu, dev))
        dloss = max(abs(a["final_loss"] - b["final_loss"]) for a, b in zip(cpu, dev))
        deig = max(
            (
                abs(a["min_eig"] - b["min_eig"])
                for a, b in zip(cpu, dev)
                if a["min_eig"] == a["min_eig"] and b["min_eig"] == b["min_eig"]
            ),
            default=0.0,
        )  # NaN: not computed
        statuses = dict(sorted(Counter(r["status"] for r in cpu).items()))
        record(
            CORES,
            CORES_HEADER,
            f"| teacher-student run k={k} n={n}, {seeds} seeds | statuses {statuses}; same "
            f"iteration count {same_it}/{seeds}; max abs dF {dloss:.1e} (<= 1e-8), max abs d(min_eig) {deig:.1e} "
            f"(<= 1e-6); {device} {wall:.1f} s |",
        )
        assert [a["status"] for a in cpu] == [b["status"] for b in dev], (k, n)
        assert dloss <= 1e-8 and deig <= 1e-6, (k, n, dloss, deig)


# --- width threshold -------------------------------------------------------------------------
def test_width_threshold_ranks_and_hessian_extremes_equal_the_cpus(device):
    dev = on(device)
    gen = torch.Generator().manual_seed(7)
    for rows, cols, rank in [(10, 8, 4), (6, 6, 6), (5, 9, 1), (12, 12, 11), (64, 48, 40)]:
        M = torch.randn(rows, rank, generator=gen, dtype=F64) @ torch.randn(rank, cols, generator=gen, dtype=F64)
        assert int(numerical_rank(M.to(dev)).rank) == int(numerical_rank(M).rank) == rank
    spec = MLPSpec(input_dim=3, width=5, depth=3, activation="tanh", output_dim=2)
    theta = torch.stack(
        [flatten(init_parameters(spec, generator=torch.Generator().manual_seed(s)), spec) for s in range(3)]
    )  # [3, P]
    X, Y = rand((3, 7, 3), 1), rand((3, 7, 2), 2)  # [3, 7, in], [3, 7, out]

    def loss(t, x, y):
        return 0.5 * ((forward(unflatten(t, spec), x, spec) - y) ** 2).sum(-1).mean()

    lo, hi = exact_hessian_extremes(loss, theta, X, Y)
    lo_d, hi_d = exact_hessian_extremes(loss, theta.to(dev), X.to(dev), Y.to(dev))
    diff = max(float((lo_d.cpu() - lo).abs().max()), float((hi_d.cpu() - hi).abs().max()))
    record(
        CORES,
        CORES_HEADER,
        "| width-threshold numerical rank of known-rank matrices | 5 matrices, ranks equal to "
        "the truth on both devices |",
    )
    record(CORES, CORES_HEADER, f"| width-threshold exact Hessian extremes | max abs diff {diff:.2e} (<= 1e-10) |")
    assert diff <= 1e-10


def test_width_threshold_runs_classify_as_on_the_cpu(device):
    full = full_size(device)
    cells = [(width, depth, act) for act in ("tanh", "relu") for depth in (2, 3) for width in (3, 12)]  # width < n, > n
    cells = cells if full else cells[:1]
    seeds = range(8 if full else 2)
    keys = ("status", "full_rank", "init_full_rank", "last_layer_rank", "init_last_layer_rank")
    mismatches, dloss, total, started = [], 0.0, 0, time.perf_counter()
    for width, depth, act in cells:
        options = resolve_options(
            width=width,
            depth=depth,
            activation=act,
            n_samples=6,
            data=dict(name="random_labels", input_dim=2),
            optimizer=dict(name="lbfgs", lr=1.0, max_iterations=2000 if full else 200, grad_tol=1e-9),
        )
        cpu, dev = (run_width_threshold(options, seeds=seeds, device=d) for d in ("cpu", on(device)))
        for a, b in zip(cpu, dev):
            total += 1
            if any(a[key] != b[key] for key in keys):
                differ = {key: (a[key], b[key]) for key in keys if a[key] != b[key]}
                mismatches.append((width, depth, act, a["seed"], differ))
            elif a["status"] in ("global", "spurious", "saddle"):
                dloss = max(dloss, abs(a["final_loss"] - b["final_loss"]) / max(1.0, abs(a["final_loss"])))
    record(
        CORES,
        CORES_HEADER,
        f"| width-threshold runs, {len(cells)} cells x {len(seeds)} seeds (n = 6) | "
        f"{total - len(mismatches)}/{total} runs with identical status and ranks; converged runs' max rel dF "
        f"{dloss:.1e} (<= 1e-6); {time.perf_counter() - started:.1f} s for both devices |",
    )
    assert not mismatches, mismatches[:20]
    assert dloss <= 1e-6


# --- the make-bench cell ---------------------------------------------------------------------
def test_bench_cell_on_the_device_classifies_as_one_cpu_thread(device):
    """k = n = 10, published protocol (step 0.1, tolerance 1e-9, float64, no early stop), batched."""
    seed_counts = [int(s) for s in os.environ.get("BENCH_SEEDS", "200 1000").split()] if full_size(device) else [4]
    dev = on(device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as benchmarks/bench_teacher_student.py: one thread per worker
    try:
        run_teacher_student(4, 4, range(4), device=dev, keep_weights=False)  # CUDA context, kernels: not timed
        for seeds in seed_counts:
            walls, records = {}, {}
            for name, where in (("cpu", "cpu"), (device, dev)):
                if where.startswith("cuda"):
                    torch.cuda.synchronize()
                started = time.perf_counter()
                records[name] = run_teacher_student(10, 10, range(seeds), device=where, keep_weights=False)
                walls[name] = time.perf_counter() - started
            cpu, other = records["cpu"], records[device]
            same_status = [r["status"] for r in cpu] == [r["status"] for r in other]
            same_it = [r["iterations"] for r in cpu] == [r["iterations"] for r in other]
            counts = dict(sorted(Counter(r["status"] for r in cpu).items()))
            record(
                "(c) the make-bench cell vs one CPU thread",
                f"| seeds | cpu 1 thread wall (s) | cpu runs / s | {device} wall (s) | {device} runs / s | "
                "speed-up | identical classifications | identical iteration counts | statuses |\n"
                "|---|---|---|---|---|---|---|---|---|",
                f"| {seeds} | {walls['cpu']:.2f} | {seeds / walls['cpu']:.1f} | {walls[device]:.2f} | "
                f"{seeds / walls[device]:.1f} | {walls['cpu'] / walls[device]:.1f}x | "
                f"{'yes' if same_status else 'NO'} | "
                f"{'yes' if same_it else 'no'} | {counts}, {sum(r['iterations'] for r in cpu):,} steps |",
            )
            assert same_status, [
                (a["seed"], a["status"], b["status"]) for a, b in zip(cpu, other) if a["status"] != b["status"]
            ][:20]
    finally:
        torch.set_num_threads(threads)


# --- the service on the GPU ------------------------------------------------------------------
def _sweep(args: list[str], limit_s: float) -> float:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # its own local cluster
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    code = "import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=limit_s
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return time.perf_counter() - started


def test_smoke_sweep_with_resources_gpu_runs_every_unit_on_the_gpu(device, tmp_path):
    if device == "cpu":
        pytest.skip("the service on a GPU: the cuda variant only (without a GPU: tests/test_gpu_scheduling.py)")
    extra = os.environ.get("SWEEP_OVERRIDES", "").split()
    declared = ["cluster.num_gpus=1"] if DRY_RUN else []  # a dry run declares a GPU to the local cluster
    gpu_args = ["sweep=smoke", "resources=gpu", f"results_dir={tmp_path / 'gpu'}", *declared, *extra]
    gpu_wall = _sweep(gpu_args, 240)
    cpu_wall = _sweep(["sweep=smoke", f"results_dir={tmp_path / 'cpu'}", "tracking=none", *extra], 180)
    gpu = pd.read_parquet(tmp_path / "gpu" / "smoke" / "runs")
    cpu = pd.read_parquet(tmp_path / "cpu" / "smoke" / "runs")
    merged = gpu.merge(cpu, on=["cell_id", "seed"], suffixes=("_gpu", "_cpu"))
    expected = on(device)
    checks = {
        "rows (gpu sweep / cpu sweep / matched)": (
            f"{len(gpu)} / {len(cpu)} / {len(merged)}",
            len(gpu) == len(cpu) == len(merged) > 0,
        ),
        "error rows": (int((gpu["status"] == "error").sum()), bool((gpu["status"] != "error").all())),
        f"rows with device = {expected}": (
            f"{int((gpu['device'] == expected).sum())}/{len(gpu)}",
            bool((gpu["device"] == expected).all()),
        ),
        "rows with a GPU id": (
            f"{int((gpu['gpu_ids'].fillna('') != '').sum())}/{len(gpu)}",
            bool((gpu["gpu_ids"].fillna("") != "").all()),
        ),
        "identical classifications (gpu sweep vs cpu sweep)": (
            f"{int((merged['status_gpu'] == merged['status_cpu']).sum())}/{len(merged)}",
            bool((merged["status_gpu"] == merged["status_cpu"]).all()),
        ),
        "identical iteration counts": (
            f"{int((merged['iterations_gpu'] == merged['iterations_cpu']).sum())}/{len(merged)}",
            True,
        ),
        "units (gpu sweep)": (gpu["unit_id"].nunique(), True),
        "wall (gpu sweep, cpu sweep)": (f"{gpu_wall:.0f} s, {cpu_wall:.0f} s", True),
        "median wall_s per run (gpu rows, cpu rows)": (
            f"{gpu['wall_s'].median():.3f} s, {cpu['wall_s'].median():.3f} s",
            True,
        ),
    }
    for name, (figure, ok) in checks.items():
        record(
            "(d) landscape-sweep sweep=smoke resources=gpu vs the same sweep on CPUs",
            "| check | figure | |\n|---|---|---|",
            f"| {name} | {figure} | {'ok' if ok else 'FAIL'} |",
        )
    assert all(ok for _, ok in checks.values()), {name: figure for name, (figure, ok) in checks.items() if not ok}


def test_the_figures_file_collects_rows_by_section(tmp_path, monkeypatch):
    path = Path(tmp_path / "figures.jsonl")
    monkeypatch.setenv("GPU_CHECK_FIGURES", str(path))
    record("s", "| a |\n|---|", "| 1 |")
    record("s", "| a |\n|---|", "| 2 |")
    assert [json.loads(line)["row"] for line in path.read_text().splitlines()] == ["| 1 |", "| 2 |"]

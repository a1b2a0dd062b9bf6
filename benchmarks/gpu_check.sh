#!/usr/bin/env bash
# GPU check: what a machine with an NVIDIA GPU runs to show that the service uses it and
# that results do not depend on the device (docs/gpu.md).
#
#   bash benchmarks/gpu_check.sh [SUMMARY.md]      # default: docs/benchmarks_gpu.md
#
# (a) the GPU and torch: nvidia-smi -L, torch version, CUDA build, device name;
# (b) the teacher-student and width-threshold cores on CUDA in float64 against the CPU:
#     closed forms, ranks and Hessian extremes to 1e-10 or better, whole protocol runs
#     with identical classifications and objectives within tolerance (the unit tests in
#     tests/ build their tensors on the CPU and have no device switch, so this is a
#     focused snippet over the same core functions);
# (c) the `make bench` cell (k = n = 10, published protocol, BENCH_SEEDS seeds) with the
#     batched core on CUDA vs on one CPU thread: wall time, runs / s, identical
#     classifications and iteration counts;
# (d) `landscape-sweep sweep=smoke resources=gpu`: every row must say device = cuda and
#     carry a GPU id, and its classifications must equal a CPU run of the same sweep.
# Prints the figures and writes them as a markdown section to SUMMARY.md (also when a step
# fails, with the step named), between <!-- gpu_check:begin/end --> markers: a file that has
# them gets that section replaced, any other file (docs/benchmarks.md) gets it appended.
# Each step runs under a timeout: all together at most 8 minutes (~3-4 expected).
# Exit 0: every check passed; 1: no GPU visible (one line, nothing written); otherwise the
# failing step's code (1: a check failed, 124: a step timed out, 2: the sweep refused its config).
#
# Environment: PYTHON (default .venv/bin/python, else python3; needs a CUDA build of torch),
# BENCH_SEEDS (default "200 1000"), CORE_SEEDS (default 100), SWEEP_OVERRIDES (extra Hydra
# overrides for both sweeps of (d)), GPU_CHECK_DRY_RUN=1 (check the script itself on a
# machine without a GPU: "cuda" becomes "cpu", (d) declares cluster.num_gpus=1; the figures
# mean nothing and the summary goes to $1, else $TMPDIR/gpu_check_dry_run.md; DRY-RUN-marked).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY="${GPU_CHECK_DRY_RUN:-0}"
BENCH_SEEDS="${BENCH_SEEDS:-200 1000}"
CORE_SEEDS="${CORE_SEEDS:-100}"
SWEEP_OVERRIDES="${SWEEP_OVERRIDES:-}"
START_S=$SECONDS

die() { echo "gpu_check: error: $*" >&2; exit 1; }

# --- where things are -------------------------------------------------------------------
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY="python3"; fi
command -v "$PY" >/dev/null 2>&1 || die "no Python interpreter at '$PY' (make setup, or PYTHON=...)"

if [[ $# -ge 1 ]]; then
    out_dir="$(cd "$(dirname -- "$1")" 2>/dev/null && pwd)" || die "the directory of '$1' does not exist"
    OUT="$out_dir/$(basename -- "$1")"
elif [[ "$DRY" == 1 ]]; then
    OUT="${TMPDIR:-/tmp}/gpu_check_dry_run.md"
else
    OUT="$ROOT/docs/benchmarks_gpu.md"
fi

# --- (a, precondition) a GPU must be visible: one line and exit 1 otherwise ------------------
if [[ "$DRY" == 1 ]]; then
    DEVICE=cpu
else
    DEVICE=cuda
    command -v nvidia-smi >/dev/null 2>&1 \
        || die "no GPU visible: nvidia-smi is not installed (run this on a machine with an NVIDIA GPU and its driver)"
    GPU_LIST="$(nvidia-smi -L 2>/dev/null)" && [[ "$GPU_LIST" == GPU* ]] \
        || die "no GPU visible: nvidia-smi -L lists no GPU (driver not loaded, or no GPU on this machine)"
    torch_cuda="$(timeout 30 "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda, int(torch.cuda.is_available()), torch.cuda.device_count())' 2>/dev/null)" \
        || die "cannot import torch with $PY (make setup, or PYTHON=...)"
    read -r torch_version torch_cuda_build cuda_ok cuda_count <<<"$torch_cuda"
    [[ "$cuda_ok" == 1 ]] \
        || die "no GPU visible to torch $torch_version (CUDA build: $torch_cuda_build, CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES-unset}'); a CPU build needs replacing by a CUDA build of torch (docs/gpu.md)"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
SUMMARY="$WORK/summary.md"
STEP="setup"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
unset RAY_ADDRESS  # the smoke sweeps start their own local cluster

md() { printf '%s\n' "$@" >>"$SUMMARY"; }
code_version() {
    local rev dirty
    rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    dirty="$(git -C "$ROOT" status --porcelain landscape_core ray_jobs 2>/dev/null | head -1)"
    echo "$rev${dirty:+-dirty}"
}

# Put the summary between <!-- gpu_check:begin/end --> markers in OUT: replaces that section
# when OUT has it, appends it to any other file (e.g. docs/benchmarks.md), creates OUT otherwise.
write_summary() {
    "$PY" - "$1" "$2" <<'PY'
import sys
from pathlib import Path

out, summary = Path(sys.argv[1]), Path(sys.argv[2]).read_text().rstrip() + "\n"
begin, end = "<!-- gpu_check:begin -->", "<!-- gpu_check:end -->"
section = f"{begin}\n{summary}{end}\n"
text = out.read_text() if out.exists() else ""
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1].lstrip("\n")
    text = head + section + ("\n" + tail if tail else "")
elif text.strip():
    text = text.rstrip() + "\n\n" + section
else:
    text = section
out.write_text(text)
PY
}

finish() {
    local status=$?
    trap - EXIT
    if [[ $status -ne 0 ]]; then
        md "" "**FAILED** at step $STEP (exit $status) after $((SECONDS - START_S)) s; the output of that step is above in the terminal."
    else
        md "" "All checks passed in $((SECONDS - START_S)) s."
    fi
    write_summary "$OUT" "$SUMMARY" || { cp "$SUMMARY" "$OUT.new"; OUT="$OUT.new"; }
    rm -rf "$WORK"
    if [[ $status -ne 0 ]]; then
        echo "gpu_check: FAILED at step $STEP (exit $status); summary: $OUT" >&2
    else
        echo "gpu_check: all checks passed in $((SECONDS - START_S)) s; summary: $OUT"
    fi
    exit "$status"
}
trap finish EXIT

# step LOG TITLE LIMIT_S COMMAND...: run COMMAND under a timeout, its output to the terminal
# and to $WORK/LOG.log; a failure or timeout ends the script (the EXIT trap names TITLE).
step() {
    local log="$1" title="$2" limit="$3"; shift 3
    STEP="$title"
    echo "=== $title (at most ${limit} s)"
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$WORK/$log.log"
}
# the markdown table a step's Python printed between MARKDOWN_BEGIN / MARKDOWN_END, into the summary
table_of() { sed -n '/^MARKDOWN_BEGIN$/,/^MARKDOWN_END$/p' "$WORK/$1.log" | sed '1d;$d' >>"$SUMMARY"; }

md "## GPU check (\`benchmarks/gpu_check.sh\`)" "" \
   "$(date -u '+%Y-%m-%d %H:%M UTC'); code $(code_version); command: \`bash benchmarks/gpu_check.sh${1:+ $1}\`" ""
[[ "$DRY" == 1 ]] && md "**DRY RUN without a GPU (GPU_CHECK_DRY_RUN=1): 'cuda' below ran on the CPU; these are not GPU figures.**" ""

# --- (a) the GPU and torch --------------------------------------------------------------------
STEP="(a) GPU and torch"
echo "=== $STEP"
md "### (a) GPU and torch" "" '```'
if [[ "$DRY" != 1 ]]; then
    { echo '$ nvidia-smi -L'; echo "$GPU_LIST"
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true; } | tee -a "$SUMMARY"
fi
timeout 30 "$PY" - <<'PY' | tee -a "$SUMMARY"
import platform, os, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}, "
      f"cuda available {torch.cuda.is_available()}, devices {torch.cuda.device_count()}, "
      f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}, host CPUs {os.cpu_count()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
PY
md '```' ""

# --- (b) the cores on the device in float64, against the CPU --------------------------------------
cat >"$WORK/core_check.py" <<'PY'
"""Teacher-student and width-threshold cores on DEVICE vs CPU, float64. Exit 1 on a mismatch."""
import sys, time
import torch

from landscape_core.probes import exact_hessian_extremes, numerical_rank
from landscape_core.networks import MLPSpec, flatten, forward, init_parameters, unflatten
from landscape_core.teacher_student import (hessian_extreme_eigenvalues, population_gradient, population_hessian,
                                            population_loss, run_teacher_student)
from landscape_core.width_threshold import resolve_options, run_width_threshold

DEVICE, SEEDS = sys.argv[1], int(sys.argv[2])
F64 = torch.float64
torch.set_num_threads(1)
failures, lines = [], []


def check(name, ok, figure):
    lines.append(f"| {name} | {figure} | {'ok' if ok else 'FAIL'} |")
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {figure}", flush=True)
    if not ok:
        failures.append(name)


def rand(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# teacher-student closed forms: the same float64 inputs on both devices
worst = {"loss": 0.0, "gradient": 0.0, "hessian": 0.0, "hessian eigenvalues": 0.0, "autograd": 0.0}
for (n, k, d), seed in zip([(3, 3, 3), (4, 2, 5), (6, 6, 6), (10, 10, 10)], range(4)):
    W, V = rand((8, n, d), 10 + seed), rand((8, k, d), 20 + seed)
    Wd, Vd = W.to(DEVICE), V.to(DEVICE)
    assert Wd.dtype == F64
    worst["loss"] = max(worst["loss"], float((population_loss(Wd, Vd).cpu() - population_loss(W, V)).abs().max()))
    worst["gradient"] = max(worst["gradient"], float((population_gradient(Wd, Vd).cpu() - population_gradient(W, V)).abs().max()))
    worst["hessian"] = max(worst["hessian"], float((population_hessian(Wd, Vd).cpu() - population_hessian(W, V)).abs().max()))
    lo_d, hi_d = hessian_extreme_eigenvalues(Wd, Vd)
    lo, hi = hessian_extreme_eigenvalues(W, V)
    worst["hessian eigenvalues"] = max(worst["hessian eigenvalues"], float((lo_d.cpu() - lo).abs().max()),
                                       float((hi_d.cpu() - hi).abs().max()))
    Wr = Wd.clone().requires_grad_(True)
    population_loss(Wr, Vd).sum().backward()
    worst["autograd"] = max(worst["autograd"], float((Wr.grad - population_gradient(Wd, Vd)).abs().max()))
for name, value in worst.items():
    check(f"teacher-student {name} ({DEVICE} vs cpu" + (", analytic vs autograd on the device)" if name == "autograd" else ")"),
          value <= 1e-12, f"max abs diff {value:.2e} (<= 1e-12)")

# teacher-student protocol: whole runs, classifications identical
for k, n in [(6, 6), (8, 8), (6, 7)]:
    opts = dict(max_iterations=20000, early_stop_global=True)
    cpu = run_teacher_student(k, n, range(SEEDS), device="cpu", keep_weights=False, **opts)
    started = time.perf_counter()
    dev = run_teacher_student(k, n, range(SEEDS), device=DEVICE, keep_weights=False, **opts)
    wall = time.perf_counter() - started
    same_status = [a["status"] for a in cpu] == [b["status"] for b in dev]
    same_it = sum(a["iterations"] == b["iterations"] for a, b in zip(cpu, dev))
    dloss = max(abs(a["final_loss"] - b["final_loss"]) for a, b in zip(cpu, dev))
    deig = max((abs(a["min_eig"] - b["min_eig"]) for a, b in zip(cpu, dev)
                if a["min_eig"] == a["min_eig"] and b["min_eig"] == b["min_eig"]), default=0.0)
    statuses = {s: [r["status"] for r in cpu].count(s) for s in sorted({r["status"] for r in cpu})}
    check(f"teacher-student run k={k} n={n}, {SEEDS} seeds", same_status and dloss <= 1e-8 and deig <= 1e-6,
          f"classifications identical: {same_status} {statuses}; same iteration count {same_it}/{SEEDS}; "
          f"max abs dF {dloss:.1e} (<= 1e-8), max abs d(min_eig) {deig:.1e} (<= 1e-6); {DEVICE} {wall:.1f} s")
    if not same_status:
        print("  differing seeds:", [(a["seed"], a["status"], b["status"]) for a, b in zip(cpu, dev) if a["status"] != b["status"]][:20])

# width threshold: ranks and Hessian extremes of the same matrices / problems
gen = torch.Generator().manual_seed(7)
ok_rank = True
for rows, cols, rank in [(10, 8, 4), (6, 6, 6), (5, 9, 1), (12, 12, 11), (64, 48, 40)]:
    M = torch.randn(rows, rank, generator=gen, dtype=F64) @ torch.randn(rank, cols, generator=gen, dtype=F64)
    ok_rank &= int(numerical_rank(M.to(DEVICE)).rank) == int(numerical_rank(M).rank) == rank
check("width-threshold numerical rank of known-rank matrices", ok_rank, "5 matrices, ranks equal to the truth on both devices")
spec = MLPSpec(input_dim=3, width=5, depth=3, activation="tanh", output_dim=2)
theta = torch.stack([flatten(init_parameters(spec, generator=torch.Generator().manual_seed(s)), spec) for s in range(3)])
X, Y = rand((3, 7, 3), 1), rand((3, 7, 2), 2)
loss = lambda t, x, y: 0.5 * ((forward(unflatten(t, spec), x, spec) - y) ** 2).sum(-1).mean()  # noqa: E731
lo, hi = exact_hessian_extremes(loss, theta, X, Y)
lo_d, hi_d = exact_hessian_extremes(loss, theta.to(DEVICE), X.to(DEVICE), Y.to(DEVICE))
diff = max(float((lo_d.cpu() - lo).abs().max()), float((hi_d.cpu() - hi).abs().max()))
check("width-threshold exact Hessian extremes", diff <= 1e-10, f"max abs diff {diff:.2e} (<= 1e-10)")

# width threshold: whole cells, L-BFGS to grad 1e-9; classifications and ranks identical
cells = [(width, depth, act) for act in ("tanh", "relu") for depth in (2, 3) for width in (3, 12)]  # width < n, > n
mism, dloss_conv, total, started = [], 0.0, 0, time.perf_counter()
for width, depth, act in cells:
    options = resolve_options(width=width, depth=depth, activation=act, n_samples=6, data=dict(name="random_labels", input_dim=2),
                              optimizer=dict(name="lbfgs", lr=1.0, max_iterations=2000, grad_tol=1e-9))
    cpu, dev = (run_width_threshold(options, seeds=range(8), device=device) for device in ("cpu", DEVICE))
    for a, b in zip(cpu, dev):
        total += 1
        keys = ("status", "full_rank", "init_full_rank", "last_layer_rank", "init_last_layer_rank")
        if any(a[key] != b[key] for key in keys):
            mism.append((width, depth, act, a["seed"], {key: (a[key], b[key]) for key in keys if a[key] != b[key]}))
        elif a["status"] in ("global", "spurious", "saddle"):
            dloss_conv = max(dloss_conv, abs(a["final_loss"] - b["final_loss"]) / max(1.0, abs(a["final_loss"])))
check(f"width-threshold runs, {len(cells)} cells x 8 seeds (n = 6; tanh, relu; depth 2, 3; width 3, 12)",
      not mism and dloss_conv <= 1e-6,
      f"{total - len(mism)}/{total} runs with identical status and ranks; converged runs' max rel dF {dloss_conv:.1e} (<= 1e-6); "
      f"{time.perf_counter() - started:.1f} s for both devices")
for m in mism[:20]:
    print("  differs:", m)

print("MARKDOWN_BEGIN")
print(f"| check ({DEVICE} vs cpu, float64) | figure | |\n|---|---|---|")
print("\n".join(lines))
print("MARKDOWN_END")
sys.exit(1 if failures else 0)
PY

md "### (b) Teacher-student and width-threshold cores on $DEVICE (float64) vs CPU" ""
step core "(b) cores on $DEVICE vs cpu" 110 "$PY" "$WORK/core_check.py" "$DEVICE" "$CORE_SEEDS"
table_of core
md ""

# --- (c) the make-bench cell on the device vs one CPU thread ----------------------------------------
cat >"$WORK/bench_cell.py" <<'PY'
"""The `make bench` cell (k = n = 10, published protocol) with the batched core: DEVICE vs 1 CPU thread."""
import sys, time
from collections import Counter
import torch

from landscape_core.teacher_student import run_teacher_student

DEVICE, SEEDS = sys.argv[1], [int(s) for s in sys.argv[2:]]
torch.set_num_threads(1)  # as benchmarks/bench_teacher_student.py: one thread per worker
run_teacher_student(4, 4, range(4), device=DEVICE, keep_weights=False)  # CUDA context and kernels outside the clock
rows, ok = [], True
for seeds in SEEDS:
    walls, recs = {}, {}
    for dev in ("cpu", DEVICE):
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        recs[dev] = run_teacher_student(10, 10, range(seeds), device=dev, keep_weights=False)  # ends with a copy to the CPU
        walls[dev] = time.perf_counter() - started
    cpu, dev = recs["cpu"], recs[DEVICE]
    same_status = [r["status"] for r in cpu] == [r["status"] for r in dev]
    same_it = [r["iterations"] for r in cpu] == [r["iterations"] for r in dev]
    ok &= same_status
    counts = dict(sorted(Counter(r["status"] for r in cpu).items()))
    steps = sum(r["iterations"] for r in cpu)
    rows.append(f"| {seeds} | {walls['cpu']:.2f} | {seeds / walls['cpu']:.1f} | {walls[DEVICE]:.2f} | {seeds / walls[DEVICE]:.1f} | "
                f"{walls['cpu'] / walls[DEVICE]:.1f}x | {'yes' if same_status else 'NO'} | {'yes' if same_it else 'no'} | {counts}, {steps:,} steps |")
    print(rows[-1], flush=True)
    if not same_status:
        print("  differing seeds:", [(a["seed"], a["status"], b["status"]) for a, b in zip(cpu, dev) if a["status"] != b["status"]][:20])
print("MARKDOWN_BEGIN")
print(f"| seeds | cpu 1 thread wall (s) | cpu runs / s | {DEVICE} wall (s) | {DEVICE} runs / s | {DEVICE} speed-up | "
      "identical classifications | identical iteration counts | statuses |")
print("|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
print("MARKDOWN_END")
sys.exit(0 if ok else 1)
PY

md "### (c) The \`make bench\` cell on $DEVICE vs one CPU thread" "" \
   "k = n = 10, published protocol (step 0.1, tolerance 1e-9, float64, no early stop), batched core, one process." ""
# shellcheck disable=SC2086  # BENCH_SEEDS is a list of numbers
step bench "(c) bench cell on $DEVICE vs cpu" 110 "$PY" "$WORK/bench_cell.py" "$DEVICE" $BENCH_SEEDS
table_of bench
md ""

# --- (d) the smoke sweep with resources=gpu: every row on cuda, same classifications as on CPUs -----------
# landscape-sweep itself (the console script's entry point, with this script's Python)
SWEEP=("$PY" -c 'import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))')
GPU_ARGS=(sweep=smoke resources=gpu "results_dir=$WORK/results_gpu")
[[ "$DRY" == 1 ]] && GPU_ARGS+=(cluster.num_gpus=1)
CPU_ARGS=(sweep=smoke "results_dir=$WORK/results_cpu" tracking=none)
# shellcheck disable=SC2206  # SWEEP_OVERRIDES: Hydra overrides separated by spaces
extra=($SWEEP_OVERRIDES)
GPU_ARGS+=("${extra[@]}")
CPU_ARGS+=("${extra[@]}")
md "### (d) \`landscape-sweep sweep=smoke resources=gpu\`" "" \
   "Compared with \`landscape-sweep sweep=smoke tracking=none\` (resources=cpu) seed by seed.${SWEEP_OVERRIDES:+ Extra overrides: \`$SWEEP_OVERRIDES\`.}" ""
t0=$SECONDS
step sweep_gpu "(d) landscape-sweep ${GPU_ARGS[*]}" 100 "${SWEEP[@]}" "${GPU_ARGS[@]}"
gpu_wall=$((SECONDS - t0))
t0=$SECONDS
step sweep_cpu "(d) landscape-sweep ${CPU_ARGS[*]}" 60 "${SWEEP[@]}" "${CPU_ARGS[@]}"
cpu_wall=$((SECONDS - t0))

cat >"$WORK/sweep_check.py" <<'PY'
"""Rows of the resources=gpu smoke sweep: all on DEVICE with a GPU id; statuses equal to the CPU sweep's."""
import sys
import pandas as pd

DEVICE, work, gpu_wall, cpu_wall = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
gpu = pd.read_parquet(f"{work}/results_gpu/smoke/runs")
cpu = pd.read_parquet(f"{work}/results_cpu/smoke/runs")
merged = gpu.merge(cpu, on=["cell_id", "seed"], suffixes=("_gpu", "_cpu"))
checks = {
    f"rows (gpu sweep / cpu sweep / matched)": (f"{len(gpu)} / {len(cpu)} / {len(merged)}", len(gpu) == len(cpu) == len(merged) > 0),
    "error rows": (int((gpu["status"] == "error").sum()), bool((gpu["status"] != "error").all())),
    f"rows with device = {DEVICE}": (f"{int((gpu['device'] == DEVICE).sum())}/{len(gpu)}", bool((gpu["device"] == DEVICE).all())),
    "rows with a GPU id": (f"{int((gpu['gpu_ids'].fillna('') != '').sum())}/{len(gpu)} ({gpu['gpu_ids'].value_counts().to_dict()})",
                           bool((gpu["gpu_ids"].fillna("") != "").all())),
    "identical classifications (gpu sweep vs cpu sweep)": (f"{int((merged['status_gpu'] == merged['status_cpu']).sum())}/{len(merged)}",
                                                           bool((merged["status_gpu"] == merged["status_cpu"]).all())),
    "identical iteration counts": (f"{int((merged['iterations_gpu'] == merged['iterations_cpu']).sum())}/{len(merged)}", True),
    "units (gpu sweep)": (gpu["unit_id"].nunique(), True),
    "wall (gpu sweep, cpu sweep)": (f"{gpu_wall}, {cpu_wall}", True),
    "median wall_s per run (gpu rows, cpu rows)": (f"{gpu['wall_s'].median():.3f} s, {cpu['wall_s'].median():.3f} s", True),
}
print("MARKDOWN_BEGIN")
print("| check | figure | |\n|---|---|---|")
for name, (figure, ok) in checks.items():
    print(f"| {name} | {figure} | {'ok' if ok else 'FAIL'} |")
print("MARKDOWN_END")
print("statuses:", gpu["status"].value_counts().to_dict())
sys.exit(0 if all(ok for _, ok in checks.values()) else 1)
PY
step sweep_rows "(d) rows of the resources=gpu sweep" 30 "$PY" "$WORK/sweep_check.py" "$DEVICE" "$WORK" "${gpu_wall} s" "${cpu_wall} s"
table_of sweep_rows
echo
echo "=== summary"
cat "$SUMMARY"

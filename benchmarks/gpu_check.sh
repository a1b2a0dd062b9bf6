#!/usr/bin/env bash
# GPU check: what a machine with an NVIDIA GPU runs to show that the service uses it and
# that results do not depend on the device (docs/gpu.md). A thin wrapper around the
# `pytest -m gpu` tests of tests/test_gpu.py:
#
#   bash benchmarks/gpu_check.sh [SUMMARY.md]      # default: docs/benchmarks_gpu.md
#
# (a) the GPU and torch: nvidia-smi -L, torch version, CUDA build, device name;
# (b)-(d) `pytest -m gpu tests/test_gpu.py` (the cores on CUDA in float64 against the CPU,
#     the `make bench` cell on CUDA vs one CPU thread, `landscape-sweep sweep=smoke
#     resources=gpu` against the same sweep on CPUs); the figures each test records.
# Prints the figures and writes them as a markdown section to SUMMARY.md (also when a test
# fails), between <!-- gpu_check:begin/end --> markers: a file that has them gets that
# section replaced, any other file (docs/benchmarks.md) gets it appended. At most 15 minutes
# (~3-4 expected). Exit 0: every check passed; 1: no GPU visible (one line, nothing written),
# or a check failed; 124: the tests timed out.
#
# Environment: PYTHON (default .venv/bin/python, else python3; needs a CUDA build of torch),
# BENCH_SEEDS (default "200 1000"), CORE_SEEDS (default 100), SWEEP_OVERRIDES (extra Hydra
# overrides for both sweeps), GPU_CHECK_PYTEST_ARGS (extra pytest arguments, e.g. -k bench), GPU_CHECK_DRY_RUN=1 (check the checks on a machine without a
# GPU: "cuda" runs on the CPU, the sweep declares cluster.num_gpus=1; the figures mean
# nothing and the summary goes to $1, else $TMPDIR/gpu_check_dry_run.md; DRY-RUN-marked).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY="${GPU_CHECK_DRY_RUN:-0}"
START_S=$SECONDS
die() { echo "gpu_check: error: $*" >&2; exit 1; }

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY="python3"; fi
command -v "$PY" >/dev/null 2>&1 || die "no Python interpreter at '$PY' (make setup, or PYTHON=...)"

if [[ $# -ge 1 ]]; then
    out_dir="$(cd "$(dirname -- "$1")" 2>/dev/null && pwd)" || die "the directory of '$1' does not exist"
    OUT="$out_dir/$(basename -- "$1")"
elif [[ "$DRY" == 1 ]]; then OUT="${TMPDIR:-/tmp}/gpu_check_dry_run.md"
else OUT="$ROOT/docs/benchmarks_gpu.md"; fi

# --- a GPU must be visible: one line and exit 1 otherwise -----------------------------------
if [[ "$DRY" != 1 ]]; then
    command -v nvidia-smi >/dev/null 2>&1 \
        || die "no GPU visible: nvidia-smi is not installed (run this on a machine with an NVIDIA GPU and its driver)"
    GPU_LIST="$(nvidia-smi -L 2>/dev/null)" && [[ "$GPU_LIST" == GPU* ]] \
        || die "no GPU visible: nvidia-smi -L lists no GPU (driver not loaded, or no GPU on this machine)"
    torch_cuda="$(timeout 30 "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda, int(torch.cuda.is_available()))' 2>/dev/null)" \
        || die "cannot import torch with $PY (make setup, or PYTHON=...)"
    read -r torch_version torch_cuda_build cuda_ok <<<"$torch_cuda"
    [[ "$cuda_ok" == 1 ]] \
        || die "no GPU visible to torch $torch_version (CUDA build: $torch_cuda_build, CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES-unset}'); a CPU build needs replacing by a CUDA build of torch (docs/gpu.md)"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
SUMMARY="$WORK/summary.md"
cd "$ROOT"
export PYTHONUNBUFFERED=1 GPU_CHECK_FIGURES="$WORK/figures.jsonl"
unset RAY_ADDRESS  # the smoke sweeps start their own local cluster
md() { printf '%s\n' "$@" >>"$SUMMARY"; }
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git status --porcelain landscape_core ray_jobs 2>/dev/null | head -1)" ]] && rev="$rev-dirty"

finish() {
    local status=$?
    trap - EXIT
    if [[ $status -ne 0 ]]; then md "" "**FAILED** (exit $status) after $((SECONDS - START_S)) s; pytest's output is above in the terminal."
    else md "" "All checks passed in $((SECONDS - START_S)) s."; fi
    # the summary between the markers of OUT (replaced there), else appended to OUT
    "$PY" - "$OUT" "$SUMMARY" <<'PY' || cp "$SUMMARY" "$OUT.new"
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
else:
    text = (text.rstrip() + "\n\n" if text.strip() else "") + section
out.write_text(text)
PY
    rm -rf "$WORK"
    if [[ $status -ne 0 ]]; then echo "gpu_check: FAILED (exit $status); summary: $OUT" >&2
    else echo "gpu_check: all checks passed in $((SECONDS - START_S)) s; summary: $OUT"; fi
    exit "$status"
}
trap finish EXIT

md "## GPU check (\`benchmarks/gpu_check.sh\`)" "" \
   "$(date -u '+%Y-%m-%d %H:%M UTC'); code $rev; command: \`bash benchmarks/gpu_check.sh${1:+ $1}\` (\`pytest -m gpu tests/test_gpu.py\`)" ""
[[ "$DRY" == 1 ]] && md "**DRY RUN without a GPU (GPU_CHECK_DRY_RUN=1): 'cuda' below ran on the CPU; these are not GPU figures.**" ""

# --- (a) the GPU and torch ------------------------------------------------------------------
md "### (a) GPU and torch" "" '```'
if [[ "$DRY" != 1 ]]; then
    { echo '$ nvidia-smi -L'; echo "$GPU_LIST"
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true; } | tee -a "$SUMMARY"
fi
timeout 30 "$PY" - <<'PY' | tee -a "$SUMMARY"
import os, platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}, "
      f"cuda available {torch.cuda.is_available()}, devices {torch.cuda.device_count()}, "
      f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}, host CPUs {os.cpu_count()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
PY
md '```' ""

# --- (b)-(d) the gpu tests, then their figures by section -----------------------------------------
set +e
# shellcheck disable=SC2086  # GPU_CHECK_PYTEST_ARGS: extra pytest arguments separated by spaces
timeout --kill-after=15 900 "$PY" -m pytest -m gpu -p no:cacheprovider -v -rs tests/test_gpu.py ${GPU_CHECK_PYTEST_ARGS:-}
status=$?
set -e
"$PY" - "$GPU_CHECK_FIGURES" >>"$SUMMARY" <<'PY'
import json, sys
from pathlib import Path

path, sections = Path(sys.argv[1]), {}
for line in (path.read_text().splitlines() if path.exists() else []):
    entry = json.loads(line)
    sections.setdefault(entry["section"], (entry["header"], []))[1].append(entry["row"])
for name, (header, rows) in sections.items():
    print(f"### {name}\n\n{header}\n" + "\n".join(rows) + "\n")
PY
echo
echo "=== summary"
cat "$SUMMARY"
exit "$status"

"""Benchmark: the sweep service at 10^6 runs (issue 12, item 1; ``make bench-scale``).

The ``scale_null`` sweep (10 x 10 cells x 10,000 seeds of the ``null_run`` experiment,
whose tasks return their records at once) measures the service alone: planning, the
driver loop, the store, compaction, the report, MLflow. For each chunk size (1,000 and
50 seeds per unit) and each size (10^5 runs, then 10^6):

1. **planning**, in this process on an empty results directory: compose + validate,
   :func:`~ray_jobs.plan.plan_sweep`, :func:`~ray_jobs.sweep.units_to_run`;
2. **the sweep**, as a user runs it: ``landscape-sweep sweep=scale_null ...`` with a fresh
   ``results_dir`` under /tmp, local Ray, MLflow on the default sqlite store; its phases
   are the service's own figures (:mod:`ray_jobs.execution.timing`), read afterwards from
   the ``timing/*`` metrics of the invocation's MLflow parent run; this process only
   polls the command's peak resident memory (/proc/<pid>/status VmHWM);
3. **files** under the sweep directory after the sweep;
4. ``landscape-compact`` (when the command exists), then **the report**:
   ``landscape-report`` over the sweep's rows (wall time, peak resident memory);
5. **resume**: the same ``landscape-sweep`` command again (0 units to run): whole command
   wall time and its phases (compose, plan: the resume check included).

The driver's per-unit overhead: the loop's span (``timing/loop_span_s``: first submit to
its end) over the units recorded; ``driver CPU / unit`` is the driver process's CPU time
(all its threads, Ray's included) over that span per unit, and without the cells' MLflow
children (``timing/driver_cpu_per_unit_ms``: the loop's own time and recording);
``wall overhead / unit`` is (span - compute / workers) / units, compute being the units'
worker-side time (``run_unit`` of a unit timed in this process, x units) and workers the
cluster's CPUs.

    python -m benchmarks.bench_scale [--quick] [--chunks 1000,50] [--sizes 100000,1000000]
        [--write docs/benchmarks.md] [--profile DIR] [--keep] [--render DIR] [--append DIR]

``--quick``: 10^5 runs only (a few minutes). ``--profile DIR``: each sweep runs under
``py-spy record`` (raw collapsed stacks in DIR). Results go to a fresh directory under
/tmp, removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import cpu_and_memory

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SWEEP = "scale_null"
CELLS = 100  # the sweep's grid: 10 widths x 10 depths
MARK_BEGIN, MARK_END = "<!-- bench_scale:begin -->", "<!-- bench_scale:end -->"
#: targets of issue 12
TARGET_PLAN_RESUME_S, TARGET_UNIT_MS, TARGET_REPORT_S, FLAT_TOLERANCE = 10.0, 5.0, 60.0, 0.10
#: teacher-student runs per second on one core (docs/benchmarks.md, k = n = 10, 1,000 seeds,
#: batched, one worker): what a unit of a real sweep costs, to put the overhead in proportion
TEACHER_STUDENT_RUNS_PER_S = 38.8
#: prefix of the service's timing metrics on the parent run (ray_jobs.execution.timing.METRIC_PREFIX)
TIMING = "timing/"


def _status_kib(field: str, pid: int | str = "self") -> int:
    """A ``VmRSS`` / ``VmHWM`` line of /proc/<pid>/status, in KiB (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _files(path: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(path))


def service_timings(results_dir: Path) -> dict[str, float]:
    """The ``timing/*`` metrics (prefix dropped) and ``wall_s`` of the newest parent run of the
    sweep in ``results_dir``'s MLflow store: what the service measured of its last invocation."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{results_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"landscape-{SWEEP}")
    if experiment is None:
        raise FileNotFoundError(f"no MLflow experiment landscape-{SWEEP} in {results_dir}")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`landscape.role` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs or not any(key.startswith(TIMING) for key in runs[0].data.metrics):
        raise FileNotFoundError(f"no parent run with timing metrics in {results_dir} (code older than the timings?)")
    metrics = runs[0].data.metrics
    return {
        **{key[len(TIMING) :]: value for key, value in metrics.items() if key.startswith(TIMING)},
        "wall_s": metrics.get("wall_s", float("nan")),
    }


# --- the benchmark ---------------------------------------------------------------------------


def _run(command: list[str], *, label: str, log_dir: Path) -> dict:
    """Run ``command`` (cwd: the project), polling its peak resident memory; wall time, exit code."""
    start = time.perf_counter()
    with open(log_dir / f"{label}.out", "w") as out, open(log_dir / f"{label}.err", "w") as err:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=err,
            env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        )
        hwm = 0
        while process.poll() is None:
            hwm = max(hwm, _status_kib("VmHWM", process.pid))
            time.sleep(0.1)
    wall = time.perf_counter() - start
    stderr = (log_dir / f"{label}.err").read_text()
    if process.returncode != 0:
        print(f"{label}: exit {process.returncode}\n{stderr[-3000:]}", file=sys.stderr)
    return {"wall_s": wall, "exit_code": process.returncode, "hwm_kib": hwm, "stderr": stderr}


def _overrides(runs: int, chunk: int, results_dir: Path) -> list[str]:
    return [
        f"sweep={SWEEP}",
        f"sweep.seeds={runs // CELLS}",
        f"resources.chunk_size={chunk}",
        f"results_dir={results_dir}",
    ]


def measure_planning(runs: int, chunk: int, results_dir: Path) -> dict:
    """Compose + validate, plan, units_to_run on ``results_dir`` (in this process; the
    imports are warmed up by a first call, so this is the work, not the interpreter)."""
    from ray_jobs.plan import plan_sweep
    from ray_jobs.store import ResultsStore
    from ray_jobs.sweep import units_to_run
    from ray_jobs.validate import compose, resolve_results_dir, validate

    compose(_overrides(1000, 1000, results_dir))  # Hydra's first compose imports and caches a lot
    t0 = time.perf_counter()
    cfg = compose(_overrides(runs, chunk, results_dir))
    experiment, cells = validate(cfg)
    t1 = time.perf_counter()
    plan = plan_sweep(cfg, experiment.name, cells)
    t2 = time.perf_counter()
    todo = units_to_run(ResultsStore(resolve_results_dir(cfg), plan.sweep), plan, retry_errors=False)
    t3 = time.perf_counter()
    return {
        "compose_validate_s": t1 - t0,
        "plan_s": t2 - t1,
        "resume_check_s": t3 - t2,
        "total_s": t3 - t0,
        "units": len(plan.units),
        "todo": len(todo),
    }


def unit_compute_s(chunk: int, repeats: int = 20) -> float:
    """Worker-side time of one unit of ``chunk`` seeds (median of ``repeats``): what the
    unit's task does apart from Ray (``execution.unit_task``: ``run_unit``, then the unit's
    rows and their Parquet bytes)."""
    from ray_jobs.config import compose_config
    from ray_jobs.experiments.registry import get_experiment
    from ray_jobs.plan import make_cell, make_unit
    from ray_jobs.store import columns_of, encode_fragment, unit_table
    from ray_jobs.validate import validate
    from ray_jobs.worker import run_unit

    _, cells = validate(compose_config([f"sweep={SWEEP}"]))
    unit, experiment = make_unit(make_cell(cells[-1]), 0, chunk), get_experiment("null_run")
    where = {"hostname": "host", "node_id": "0" * 56, "gpu_ids": ""}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        columns = columns_of(run_unit("null_run", cells[-1], unit.seeds, use_gpu=False, torch_threads=1))
        table = unit_table(
            unit,
            columns,
            constants=where,
            experiment=experiment.name,
            column_types=experiment.columns,
            sweep=SWEEP,
            code_version="x",
        )
        encode_fragment(table)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


class SettingStopped(RuntimeError):
    """A setting's sweep was stopped before it finished (interrupted, killed): no figures."""


def run_setting(runs: int, chunk: int, root: Path, log_dir: Path, profile: Path | None) -> dict:
    """Plan, sweep, compact, report and resume one (runs, chunk) setting; the figures."""
    label = f"r{runs}_c{chunk}"
    results_dir = root / label
    out: dict = {"runs": runs, "chunk": chunk, "planning": measure_planning(runs, chunk, results_dir)}
    sweep_dir = results_dir / SWEEP
    sweep = [str(BIN / "landscape-sweep"), *_overrides(runs, chunk, results_dir)]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        sweep = [
            str(BIN / "py-spy"),
            "record",
            "-r",
            "50",
            "-f",
            "raw",
            "-o",
            str(profile / f"{label}.txt"),
            "--",
            *sweep,
        ]
    print(f"[{label}] sweep ...", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    done = _run(sweep, label=f"{label}.sweep", log_dir=log_dir)
    if done["exit_code"] not in (0, 1):
        raise SettingStopped(f"the sweep ended with exit code {done['exit_code']}")
    out["sweep"] = {
        **service_timings(results_dir),
        "command_wall_s": done["wall_s"],
        "hwm_kib": done["hwm_kib"],
        "exit_code": done["exit_code"],
    }
    out["load"] = (load, os.getloadavg()[0])
    out["files_after_sweep"] = _files(sweep_dir)
    compact = BIN / "landscape-compact"
    if compact.exists():
        print(f"[{label}] landscape-compact ...", file=sys.stderr, flush=True)
        done = _run(
            [str(compact), f"results_dir={results_dir}", f"sweep_name={SWEEP}"],
            label=f"{label}.compact",
            log_dir=log_dir,
        )
        out["compact"] = {"wall_s": done["wall_s"], "exit_code": done["exit_code"], "files_after": _files(sweep_dir)}
    print(f"[{label}] landscape-report ...", file=sys.stderr, flush=True)
    done = _run(
        [str(BIN / "landscape-report"), f"results_dir={results_dir}", f"sweep_name={SWEEP}"],
        label=f"{label}.report",
        log_dir=log_dir,
    )
    out["report"] = {"wall_s": done["wall_s"], "exit_code": done["exit_code"], "hwm_kib": done["hwm_kib"]}
    print(f"[{label}] resume ...", file=sys.stderr, flush=True)
    done = _run(
        [str(BIN / "landscape-sweep"), *_overrides(runs, chunk, results_dir)], label=f"{label}.resume", log_dir=log_dir
    )
    out["resume"] = {
        **service_timings(results_dir),
        "command_wall_s": done["wall_s"],
        "exit_code": done["exit_code"],
        "zero_to_run": " 0 to run" in " ".join(done["stderr"].split()),
    }
    out["resume_planning"] = measure_planning(runs, chunk, results_dir)
    return out


def derived(result: dict, compute_s: float, workers: int) -> dict:
    """Per-unit figures of one setting, from the service's timings of its sweep."""
    t = result["sweep"]
    units = max(1.0, t.get("units_recorded", 0.0))
    span, span_cpu = t.get("loop_span_s", float("nan")), t.get("loop_span_cpu_s", float("nan"))
    compute = compute_s * units
    own_cpu = t.get("loop_cpu_s", 0.0) + t.get("record_cpu_s", 0.0)
    ts_unit_s = result["chunk"] / TEACHER_STUDENT_RUNS_PER_S
    return {
        "units": units,
        "loop_span_s": span,
        "units_per_s": units / span,
        "driver_cpu_ms": 1e3 * span_cpu / units,
        "driver_cpu_own_ms": t.get("driver_cpu_per_unit_ms", float("nan")),
        "wall_overhead_ms": 1e3 * (span - compute / workers) / units,
        "loop_ms": 1e3 * t.get("loop_s", 0.0) / units,
        "record_ms": 1e3 * t.get("record_s", 0.0) / units,
        "loop_cpu_ms": 1e3 * t.get("loop_cpu_s", 0.0) / units,
        "record_cpu_ms": 1e3 * t.get("record_cpu_s", 0.0) / units,
        # what else the driver did during the loop: the cells' MLflow children, per cell
        "cells_cpu_ms_per_cell": 1e3 * max(0.0, span_cpu - own_cpu) / CELLS,
        "compute_s": compute,
        # CPU capacity of the workers not spent computing, per unit of compute (null_run)
        "overhead_fraction_null": (span * workers - compute) / compute if compute else float("inf"),
        # the driver's CPU per unit against the compute of a teacher-student unit of the same chunk
        "overhead_fraction_ts": span_cpu / units / ts_unit_s,
        "loop_peak_rss_mib": t.get("peak_rss_mib", 0.0),
        "driver_hwm_mib": t["hwm_kib"] / 1024,
    }


# --- output --------------------------------------------------------------------------------


def machine_description() -> str:
    import mlflow
    import pyarrow
    import ray

    return (
        f"{cpu_and_memory()} RAM; Python {platform.python_version()}, Ray {ray.__version__}, "
        f"pyarrow {pyarrow.__version__}, MLflow {mlflow.__version__}, {platform.system()} {platform.release()}"
    )


def code_version() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "ray_jobs"], cwd=PROJECT_ROOT, capture_output=True, text=True
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f}"


def render(results: list[dict], figures: dict, args, elapsed: float) -> str:
    """The markdown section: the machine, the command, the figures with their targets."""
    big = max(r["runs"] for r in results)
    small = min(r["runs"] for r in results)
    by = {(r["runs"], r["chunk"]): r for r in results}
    chunks = sorted({r["chunk"] for r in results}, reverse=True)
    lines = [
        f"Machine: {machine_description()}. Code: {figures.get('code') or code_version()}. "
        f"Date: {figures.get('date') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Command: `python -m benchmarks.bench_scale {' '.join(_shown(args.argv))}`".rstrip()
        + " (or `make bench-scale`); "
        f"{_settings_s(results) / 60:.0f} min of commands in all. Local Ray cluster ({figures['workers']} CPUs), "
        "MLflow on the default sqlite store, a fresh results directory under /tmp per setting. The sweep's phases are "
        "the service's own figures (`timing/*` metrics of its MLflow parent run).",
        "",
        "Worker-side compute of one unit (the task apart from Ray: `run_unit`, the unit's rows and their Parquet "
        "bytes; null_run): " + ", ".join(f"{figures['compute'][c] * 1e3:.2f} ms at chunk {c}" for c in chunks) + ".",
        "",
    ]
    header = (
        "| | "
        + " | ".join(
            f"{r['runs']:,} runs, chunk {r['chunk']} ({r['planning'].get('units', 0):,} units)" for r in results
        )
        + " | target |"
    )
    lines += [header, "|---" * (len(results) + 2) + "|"]

    def row(name: str, cell, target: str = "") -> None:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in results) + f" | {target} |")

    def at_target(r: dict, ok: bool) -> str:
        return _met(ok) if r["chunk"] == 1000 and r["runs"] == big else ""

    d = {id(r): r["derived"] for r in results}
    row(
        "planning, empty store: compose + validate / plan / units_to_run (s)",
        lambda r: (
            f"{r['planning']['compose_validate_s']:.2f} / {r['planning']['plan_s']:.2f} / "
            f"{r['planning']['resume_check_s']:.2f}"
        ),
    )
    row(
        "planning + resume check, finished store (s, in process)",
        lambda r: (
            f"{r['resume_planning']['total_s']:.2f} "
            f"{_met(r['resume_planning']['total_s'] < TARGET_PLAN_RESUME_S) if r['runs'] == big else ''}"
        ),
        f"< {TARGET_PLAN_RESUME_S:.0f} s at 10^6 runs",
    )
    row(
        "1-minute load average of the machine before / after the sweep",
        lambda r: f"{r['load'][0]:.1f} / {r['load'][1]:.1f}",
    )
    row("sweep command wall (s)", lambda r: f"{r['sweep']['command_wall_s']:.0f}")
    row(
        "of which: compose / plan / Ray start / session open (s)",
        lambda r: " / ".join(
            f"{r['sweep'].get(k + '_s', 0):.1f}" for k in ("compose", "plan", "ray_start", "session_open")
        ),
    )
    row(
        "of which: loop span, first submit to its end (s; units / s)",
        lambda r: f"{d[id(r)]['loop_span_s']:.1f} ({d[id(r)]['units_per_s']:.0f})",
    )
    row(
        "of which: compaction / report / MLflow (parent, children; s)",
        lambda r: " / ".join(f"{r['sweep'].get(k + '_s', 0):.1f}" for k in ("compact", "report", "mlflow")),
    )
    row(
        "driver CPU per unit over the loop span (ms)",
        lambda r: f"{d[id(r)]['driver_cpu_ms']:.1f} {at_target(r, d[id(r)]['driver_cpu_ms'] < TARGET_UNIT_MS)}",
        f"< {TARGET_UNIT_MS:.0f} ms at chunk 1,000, 10^6 runs",
    )
    row(
        "of which per unit, without the cells' MLflow children: the loop (Ray) and recording (ms)",
        lambda r: f"{d[id(r)]['driver_cpu_own_ms']:.1f} {at_target(r, d[id(r)]['driver_cpu_own_ms'] < TARGET_UNIT_MS)}",
        f"< {TARGET_UNIT_MS:.0f} ms at chunk 1,000, 10^6 runs",
    )
    row(
        "of which per cell: its MLflow child, driver CPU per cell (ms; units per cell)",
        lambda r: f"{d[id(r)]['cells_cpu_ms_per_cell']:.0f} ({r['planning'].get('units', 0) / CELLS:.0f})",
    )
    row(
        "wall overhead per unit: (loop span - compute / workers) / units (ms)",
        lambda r: f"{d[id(r)]['wall_overhead_ms']:.1f} {at_target(r, d[id(r)]['wall_overhead_ms'] < TARGET_UNIT_MS)}",
        f"< {TARGET_UNIT_MS:.0f} ms at chunk 1,000, 10^6 runs",
    )
    row(
        "driver wall per unit: the loop (Ray submit, wait, get) / record fragment (ms)",
        lambda r: f"{d[id(r)]['loop_ms']:.1f} / {d[id(r)]['record_ms']:.1f}",
    )
    row(
        "driver CPU per unit: the loop (Ray) / record fragment (ms)",
        lambda r: f"{d[id(r)]['loop_cpu_ms']:.1f} / {d[id(r)]['record_cpu_ms']:.1f}",
    )
    row(
        "orchestration overhead / compute, null_run: (workers x span - compute) / compute",
        lambda r: f"{d[id(r)]['overhead_fraction_null']:.0f}x",
    )
    row(
        "driver CPU per unit / compute of a teacher-student unit (k = n = 10, same chunk; estimate)",
        lambda r: f"{100 * d[id(r)]['overhead_fraction_ts']:.2f}%",
    )
    row("driver peak RSS at the loop's end (MiB)", lambda r: f"{d[id(r)]['loop_peak_rss_mib']:.0f}", "flat in runs")
    row("driver peak RSS, whole command (MiB; report included)", lambda r: f"{d[id(r)]['driver_hwm_mib']:.0f}")
    row("files under the sweep dir after the sweep", lambda r: f"{r['files_after_sweep']:,}")
    if any("compact" in r for r in results):
        row(
            "`landscape-compact` (s) / files after",
            lambda r: f"{r['compact']['wall_s']:.1f} / {r['compact']['files_after']:,}" if "compact" in r else "",
        )
    row(
        "`landscape-report` wall (s) / peak RSS (MiB)",
        lambda r: (
            f"{r['report']['wall_s']:.1f} / {_mib(r['report']['hwm_kib'])} "
            f"{_met(r['report']['wall_s'] < TARGET_REPORT_S) if r['runs'] == big else ''}"
        ),
        f"< {TARGET_REPORT_S:.0f} s at 10^6 rows",
    )
    row(
        "resume (0 units to run): command wall (s)",
        lambda r: f"{r['resume']['command_wall_s']:.1f}{'' if r['resume']['zero_to_run'] else ' (units were left!)'}",
    )
    row(
        "resume: compose + plan (validate, plan, resume check) inside it (s)",
        lambda r: f"{r['resume'].get('compose_s', 0) + r['resume'].get('plan_s', 0):.2f}",
        f"< {TARGET_PLAN_RESUME_S:.0f} s",
    )
    row(
        "resume: session open / report / MLflow (s)",
        lambda r: " / ".join(f"{r['resume'].get(k + '_s', 0):.1f}" for k in ("session_open", "report", "mlflow")),
    )
    lines.append("")
    flat = []
    for chunk in chunks:
        if (small, chunk) in by and (big, chunk) in by and small != big:
            a, b = by[(small, chunk)]["derived"]["loop_peak_rss_mib"], by[(big, chunk)]["derived"]["loop_peak_rss_mib"]
            flat.append(
                f"chunk {chunk}: {a:.0f} MiB at {small:,} runs, {b:.0f} MiB at {big:,} runs "
                f"({100 * (b - a) / a:+.0f}%) {_met(b <= a * (1 + FLAT_TOLERANCE))}"
            )
    if flat:
        lines.append(
            f"Driver memory in the loop, flat in the number of runs (peak within {FLAT_TOLERANCE:.0%} from "
            f"{small:,} to {big:,} runs): " + "; ".join(flat) + "."
        )
    lines.append(
        "`landscape-compact` was run after each sweep."
        if any("compact" in r for r in results)
        else "No `landscape-compact` command in this checkout: files are counted as the sweep left them."
    )
    return "\n".join(lines)


def _shown(argv: list[str]) -> list[str]:
    """The command line without ``--append DIR`` (a run completed by a second one is the same measurement)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--append":
            skip = True
        elif not arg.startswith("--append="):
            out.append(arg)
    return out


def _settings_s(results: list[dict]) -> float:
    """Wall time of every command of every setting (sweep, compaction, report, resume)."""
    return sum(
        r["sweep"]["command_wall_s"]
        + r.get("compact", {}).get("wall_s", 0.0)
        + r["report"]["wall_s"]
        + r["resume"]["command_wall_s"]
        for r in results
    )


def write_section(path: Path, body: str) -> None:
    section = f"{MARK_BEGIN}\n{body}\n{MARK_END}"
    text = path.read_text() if path.exists() else ""
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + section + rest.split(MARK_END, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text else "") + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10^5 runs only")
    parser.add_argument("--chunks", default="1000,50", help="chunk sizes (seeds per unit), comma-separated")
    parser.add_argument(
        "--sizes", default=None, help="runs per setting, comma-separated (default 100000,1000000; --quick 100000)"
    )
    parser.add_argument("--write", type=Path, default=None, help="markdown file whose bench_scale section to rewrite")
    parser.add_argument(
        "--profile", type=Path, default=None, help="run each sweep under py-spy, raw stacks in this folder"
    )
    parser.add_argument("--keep", action="store_true", help="keep the results directory")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="only render (and --write) the figures saved in this logs folder by an earlier run",
    )
    parser.add_argument(
        "--append",
        type=Path,
        default=None,
        help="a logs folder of an earlier run: keep its settings, run only the missing ones",
    )
    args = parser.parse_args(argv)
    args.argv = argv
    if args.render:
        saved = json.loads((args.render / "results.json").read_text())
        figures = {**saved["figures"], "compute": {int(c): v for c, v in saved["figures"]["compute"].items()}}
        args.argv = saved.get("argv", args.argv)
        body = render(saved["results"], figures, args, saved.get("elapsed_s", 0.0))
        print(body)
        if args.write:
            write_section(args.write, body)
        return 0
    sizes = [int(s) for s in (args.sizes or ("100000" if args.quick else "100000,1000000")).split(",")]
    chunks = [int(c) for c in args.chunks.split(",")]
    os.environ.pop("RAY_ADDRESS", None)
    root = Path(tempfile.mkdtemp(prefix="landscape-bench-scale-"))
    log_dir = root / "logs"
    log_dir.mkdir()
    print(f"results and logs under {root}", file=sys.stderr)
    started = time.perf_counter()
    figures = {
        "workers": os.cpu_count() or 1,
        "compute": {c: unit_compute_s(c) for c in chunks},
        "code": code_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    results = []
    if args.append:  # an earlier run's settings (and their figures) are kept
        saved = json.loads((args.append / "results.json").read_text())
        results = saved["results"]
        figures["compute"] = {**{int(c): v for c, v in saved["figures"]["compute"].items()}, **figures["compute"]}
    try:
        for runs in sizes:
            for chunk in chunks:
                if any(r["runs"] == runs and r["chunk"] == chunk for r in results):
                    continue
                for _ in range(3):  # a sweep stopped from outside (exit 130, no figures) is run again
                    try:
                        result = run_setting(runs, chunk, root, log_dir, args.profile)
                        break
                    except (SettingStopped, FileNotFoundError) as exc:
                        print(f"[r{runs}_c{chunk}] no figures ({exc}); running the setting again", file=sys.stderr)
                        shutil.rmtree(root / f"r{runs}_c{chunk}", ignore_errors=True)
                else:
                    raise RuntimeError(f"the setting {runs} runs, chunk {chunk} was stopped three times")
                result["derived"] = derived(result, figures["compute"][chunk], figures["workers"])
                results.append(result)
                saved = {"figures": figures, "results": results}
                (log_dir / "results.json").write_text(json.dumps(saved, indent=1, default=str))
                if not args.keep:  # the next setting's reads should not find this one's files in the page cache
                    shutil.rmtree(root / f"r{runs}_c{chunk}", ignore_errors=True)
        elapsed = time.perf_counter() - started
        (log_dir / "results.json").write_text(
            json.dumps(
                {"figures": figures, "results": results, "argv": argv, "elapsed_s": elapsed}, indent=1, default=str
            )
        )
        body = render(results, figures, args, elapsed)
        print(body)
        if args.write:
            write_section(args.write, body)
            print(f"wrote {args.write}", file=sys.stderr)
    finally:
        if not args.keep:
            for path in root.iterdir():
                if path != log_dir:
                    shutil.rmtree(path, ignore_errors=True)
    print(f"logs: {log_dir}", file=sys.stderr)
    ok = all(r[step]["exit_code"] == 0 for r in results for step in ("sweep", "report", "resume"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

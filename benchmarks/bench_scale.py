"""Benchmark: the sweep service at 10^6 runs (issue 12, item 1; ``make bench-scale``).

The ``scale_null`` sweep (10 x 10 cells x 10,000 seeds of the ``null_run`` experiment,
whose tasks return their records at once) measures the service alone: planning, the
driver loop, the store, compaction, the report, MLflow. For each chunk size (1,000 and
50 seeds per unit) and each size (10^5 runs, then 10^6):

1. **planning**, in this process on an empty results directory: compose + validate,
   :func:`~ray_jobs.plan.plan_sweep`, :func:`~ray_jobs.sweep.units_to_run`;
2. **the sweep**, as a user runs it: ``landscape-sweep sweep=scale_null ...`` with a fresh
   ``results_dir`` under /tmp, local Ray, MLflow on the default sqlite store, in a fresh
   interpreter (``python -m benchmarks.bench_scale --child``: the console script's
   ``sweep_main`` with timers wrapped around the driver's phases and a thread sampling
   the driver's resident memory; nothing else changes);
3. **files** under the sweep directory: loose fragments before the compaction that ends a
   sweep (when the code has one), files after it;
4. **the report**: ``landscape-report`` over the sweep's rows, in a fresh interpreter
   (wall time; peak resident memory from /proc/<pid>/status VmHWM);
5. **resume**: the same ``landscape-sweep`` command again (0 units to run): whole command
   wall time, and its compose + validate + plan + resume-check part.

How the driver's per-unit overhead is measured: the loop phase runs from the first task
submitted to the last outcome recorded (``run_units`` iterated by the sweep, recording
included). ``driver CPU / unit`` is the driver process's CPU time (user + system, all its
threads, Ray's included) during the loop divided by the units; ``wall overhead / unit`` is
(loop wall - compute / workers) / units, compute being the units' worker-side time
(``run_unit`` of a unit timed in this process, x units) and workers the cluster's CPUs.
The driver's time inside the loop is split into waiting on Ray (submit, ``ray.wait``,
``ray.get``), recording fragments (``Session.record``) and logging finished cells
(MLflow child runs).

    python -m benchmarks.bench_scale [--quick] [--chunks 1000,50] [--sizes 100000,1000000]
        [--write docs/benchmarks.md] [--profile DIR] [--patch FILE] [--keep]

``--quick``: 10^5 runs only (a few minutes). ``--profile DIR``: each sweep runs under
``py-spy record`` (raw collapsed stacks in DIR). ``--patch FILE``: FILE is executed in
each driver before it starts (a proposed change applied by monkeypatching, measured
without editing the tree). Results go to a fresh directory under /tmp, removed at the end
unless ``--keep``.
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
import threading
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


# --- the instrumented driver (child process) --------------------------------------------


def _status_kib(field: str, pid: int | str = "self") -> int:
    """A ``VmRSS`` / ``VmHWM`` line of /proc/<pid>/status, in KiB (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class _Probe:
    """Cumulative time and calls per phase of the driver, the phase the driver is in, and
    the peak resident memory seen in each phase (sampled every 50 ms by a thread)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # CPU time of the calling thread in each phase
        self.calls: dict[str, int] = {}
        self.peak_rss: dict[str, int] = {}
        self.extra: dict[str, object] = {}
        self.phase = "start"
        self.started = time.perf_counter()
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.note_rss()

    def note_rss(self) -> None:
        rss = _status_kib("VmRSS")
        self.peak_rss[self.phase] = max(self.peak_rss.get(self.phase, 0), rss)

    def add(self, name: str, seconds: float, cpu: float = 0.0) -> None:
        self.times[name] = self.times.get(name, 0.0) + seconds
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu
        self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, owner, attribute: str, name: str, *, phase: str | None = None) -> None:
        """Time every call of ``owner.attribute`` (a function or method) as ``name``."""
        original = getattr(owner, attribute, None)
        if original is None:
            return
        probe = self

        def timed(*args, **kwargs):
            previous = probe.phase
            if phase:
                probe.note_rss()
                probe.phase = phase
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                probe.add(name, time.perf_counter() - start, time.thread_time() - cpu)
                if phase:
                    probe.note_rss()
                    probe.phase = previous

        setattr(owner, attribute, timed)

    def stop(self) -> None:
        self._stop.set()
        self.note_rss()


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _files(path: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(path))


PATCH_ENV = "BENCH_SCALE_PATCH"


def apply_patch() -> None:
    """Execute the file named by $BENCH_SCALE_PATCH (``--patch``): a proposed change of the
    service applied by monkeypatching, to measure it without editing the tree."""
    path = os.environ.get(PATCH_ENV)
    if path:
        exec(compile(Path(path).read_text(), path, "exec"), {"__name__": "bench_scale_patch"})


def report_main(argv: list[str]) -> int:
    """``landscape-report argv`` with the patch applied (``--patch``)."""
    apply_patch()
    from ray_jobs.cli import report_main as main

    return main(argv)


def child_main(out: Path, argv: list[str]) -> int:
    """Run ``landscape-sweep argv`` (``ray_jobs.cli.sweep_main``) with the driver's phases timed."""
    probe = _Probe()
    import ray_jobs.cli as cli
    import ray_jobs.session as session_mod
    import ray_jobs.sweep as sweep_mod
    import ray_jobs.validate as validate_mod

    probe.add("imports", time.perf_counter() - probe.started)
    apply_patch()
    probe.wrap(validate_mod, "compose", "compose", phase="plan")
    probe.wrap(sweep_mod, "validate", "validate", phase="plan")
    probe.wrap(sweep_mod, "plan_sweep", "plan", phase="plan")
    probe.wrap(sweep_mod, "preflight", "preflight", phase="plan")
    probe.wrap(sweep_mod, "units_to_run", "resume_check", phase="plan")
    probe.wrap(session_mod.Session, "__init__", "session_open", phase="session")
    probe.wrap(session_mod.Session, "record", "record")
    probe.wrap(getattr(sweep_mod, "_CellTracker", None), "log", "cell_log")
    probe.wrap(session_mod.Session, "build_report", "report", phase="report")
    probe.wrap(session_mod.Session, "finish", "finish", phase="report")

    original_plan, original_todo = sweep_mod.plan_sweep, sweep_mod.units_to_run

    def plan_sweep(*args, **kwargs):
        plan = original_plan(*args, **kwargs)
        probe.extra.update(units=len(plan.units), runs=plan.runs, cells=len(plan.cells), sweep_dir=None)
        return plan

    def units_to_run(store, plan, **kwargs):
        todo = original_todo(store, plan, **kwargs)
        probe.extra.update(units_to_run=len(todo), sweep_dir=str(store.sweep_dir))
        return todo

    sweep_mod.plan_sweep, sweep_mod.units_to_run = plan_sweep, units_to_run

    original_cluster = sweep_mod.ray_cluster

    class TimedCluster:
        def __init__(self, *args, **kwargs):
            self.inner = original_cluster(*args, **kwargs)

        def __enter__(self):
            start = time.perf_counter()
            try:
                return self.inner.__enter__()
            finally:
                probe.add("ray_start", time.perf_counter() - start)

        def __exit__(self, *exc):
            start = time.perf_counter()
            try:
                return self.inner.__exit__(*exc)
            finally:
                probe.add("ray_shutdown", time.perf_counter() - start)

    sweep_mod.ray_cluster = TimedCluster

    compact = getattr(sweep_mod, "compact_after_sweep", None)
    if compact is not None:
        def compact_after_sweep(store, *args, **kwargs):
            probe.extra["fragments_before_compaction"] = len(store.fragment_paths())
            probe.extra["files_before_compaction"] = _files(store.sweep_dir)
            probe.note_rss()
            probe.phase = "compaction"
            start = time.perf_counter()
            try:
                return compact(store, *args, **kwargs)
            finally:
                probe.add("compaction", time.perf_counter() - start)
                probe.note_rss()
                probe.phase = "after_loop"

        sweep_mod.compact_after_sweep = compact_after_sweep

    original_run_units = sweep_mod.run_units

    def run_units(*args, **kwargs):
        outcomes = original_run_units(*args, **kwargs)
        probe.note_rss()
        probe.phase = "loop"
        start, cpu, inside, count = time.perf_counter(), _cpu_s(), 0.0, 0
        first = None  # (wall, cpu, time in Ray) when the first outcome came: the steady state starts there
        trace: list[tuple[int, int]] = []  # (units done, driver RSS in KiB), 20 points over the loop
        trace_every = max(1, len(args[0]) // 20) if args else 1
        try:
            while True:
                tick = time.perf_counter()
                try:
                    outcome = next(outcomes)
                except StopIteration:
                    break
                inside += time.perf_counter() - tick
                count += 1
                if count % trace_every == 0:
                    trace.append((count, _status_kib("VmRSS")))
                if first is None:
                    first = (time.perf_counter(), _cpu_s(), inside, dict(probe.times), dict(probe.cpu))
                yield outcome
        finally:
            outcomes.close()
            end, end_cpu = time.perf_counter(), _cpu_s()
            probe.extra.update(loop_wall_s=end - start, loop_cpu_s=end_cpu - cpu,
                               loop_in_ray_s=inside, loop_units=count, loop_rss_end_kib=_status_kib("VmRSS"),
                               loop_hwm_kib=_status_kib("VmHWM"), loop_rss_trace=trace)
            if first is not None:
                probe.extra["steady"] = {"units": count - 1, "wall_s": end - first[0], "cpu_s": end_cpu - first[1],
                                         "in_ray_s": inside - first[2],
                                         **{f"{name}_s": probe.times.get(name, 0.0) - first[3].get(name, 0.0)
                                            for name in ("record", "cell_log")},
                                         **{f"{name}_cpu_s": probe.cpu.get(name, 0.0) - first[4].get(name, 0.0)
                                            for name in ("record", "cell_log")}}
            probe.note_rss()
            probe.phase = "after_loop"

    sweep_mod.run_units = run_units

    code = cli.sweep_main(argv)
    probe.stop()
    result = {"exit_code": code, "times": probe.times, "phase_cpu": probe.cpu, "calls": probe.calls, "peak_rss_kib": probe.peak_rss,
              "hwm_kib": _status_kib("VmHWM"), "cpu_s": _cpu_s(), "wall_s": time.perf_counter() - probe.started,
              **probe.extra}
    out.write_text(json.dumps(result, indent=1))
    return code


# --- the benchmark (parent process) ------------------------------------------------------


def _run(command: list[str], *, label: str, log_dir: Path) -> dict:
    """Run ``command`` (cwd: the project), polling its peak resident memory; wall time, exit code."""
    start = time.perf_counter()
    with open(log_dir / f"{label}.out", "w") as out, open(log_dir / f"{label}.err", "w") as err:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=out, stderr=err,
                                   env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
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
    return [f"sweep={SWEEP}", f"sweep.seeds={runs // CELLS}", f"resources.chunk_size={chunk}", f"results_dir={results_dir}"]


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
    return {"compose_validate_s": t1 - t0, "plan_s": t2 - t1, "resume_check_s": t3 - t2, "total_s": t3 - t0,
            "units": len(plan.units), "todo": len(todo)}


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
        encode_fragment(unit_table(unit, columns, constants=where, experiment=experiment.name, column_types=experiment.columns,
                                   sweep=SWEEP, code_version="x"))
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


class SettingStopped(RuntimeError):
    """A setting's sweep was stopped before it finished (interrupted, killed): no figures."""


def run_setting(runs: int, chunk: int, root: Path, log_dir: Path, profile: Path | None) -> dict:
    """Plan, sweep, report and resume one (runs, chunk) setting; the figures."""
    label = f"r{runs}_c{chunk}"
    results_dir = root / label
    out = {"runs": runs, "chunk": chunk, "planning": measure_planning(runs, chunk, results_dir)}
    sweep_dir = results_dir / SWEEP
    child = [sys.executable, "-m", "benchmarks.bench_scale", "--child", str(log_dir / f"{label}.sweep.json"), "--",
             *_overrides(runs, chunk, results_dir)]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        child = [str(BIN / "py-spy"), "record", "-r", "50", "-f", "raw", "-o", str(profile / f"{label}.txt"), "--", *child]
    print(f"[{label}] sweep ...", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    done = _run(child, label=f"{label}.sweep", log_dir=log_dir)
    if done["exit_code"] not in (0, 1) or not (log_dir / f"{label}.sweep.json").exists():
        raise SettingStopped(f"the sweep ended with exit code {done['exit_code']}")
    out["sweep"] = {**json.loads((log_dir / f"{label}.sweep.json").read_text()), "command_wall_s": done["wall_s"]}
    out["load"] = (load, os.getloadavg()[0])
    out["files_after_sweep"] = _files(sweep_dir)
    out["runs_files"] = _files(sweep_dir / "runs")
    compact = BIN / "landscape-compact"
    out["compact_command"] = compact.exists()
    if compact.exists():
        print(f"[{label}] landscape-compact ...", file=sys.stderr, flush=True)
        done = _run([str(compact), f"results_dir={results_dir}", f"sweep_name={SWEEP}"], label=f"{label}.compact", log_dir=log_dir)
        out["compact"] = {"wall_s": done["wall_s"], "exit_code": done["exit_code"], "files_after": _files(sweep_dir)}
    print(f"[{label}] landscape-report ...", file=sys.stderr, flush=True)
    report = ([sys.executable, "-m", "benchmarks.bench_scale", "--report", "--"] if os.environ.get(PATCH_ENV)
              else [str(BIN / "landscape-report")])
    done = _run([*report, f"results_dir={results_dir}", f"sweep_name={SWEEP}"], label=f"{label}.report", log_dir=log_dir)
    out["report"] = {"wall_s": done["wall_s"], "exit_code": done["exit_code"], "hwm_kib": done["hwm_kib"]}
    print(f"[{label}] resume ...", file=sys.stderr, flush=True)
    resume = [sys.executable, "-m", "benchmarks.bench_scale", "--child", str(log_dir / f"{label}.resume.json"), "--",
              *_overrides(runs, chunk, results_dir)]
    done = _run(resume, label=f"{label}.resume", log_dir=log_dir)
    out["resume"] = {**json.loads((log_dir / f"{label}.resume.json").read_text()), "command_wall_s": done["wall_s"],
                     "zero_to_run": " 0 to run" in " ".join(done["stderr"].split())}
    out["resume_planning"] = measure_planning(runs, chunk, results_dir)
    return out


def derived(result: dict, compute_s: float, workers: int) -> dict:
    """Per-unit figures of one setting. Per-unit figures are taken in the steady state, from
    the first outcome to the last (the first units also wait for Ray's worker processes to
    start and import); the whole loop is given beside."""
    sweep = result["sweep"]
    steady = sweep.get("steady") or {}
    units = max(1, steady.get("units", 0))
    wall, cpu = steady.get("wall_s", float("nan")), steady.get("cpu_s", float("nan"))
    compute = compute_s * units
    loop_units = max(1, sweep.get("loop_units", 0))
    loop_wall = sweep.get("loop_wall_s", float("nan"))
    ts_unit_s = result["chunk"] / TEACHER_STUDENT_RUNS_PER_S
    return {
        "units": loop_units,
        "loop_wall_s": loop_wall,
        "loop_units_per_s": loop_units / loop_wall,
        "units_per_s": units / wall,
        "driver_cpu_ms": 1e3 * cpu / units,
        "wall_overhead_ms": 1e3 * (wall - compute / workers) / units,
        "in_ray_ms": 1e3 * steady.get("in_ray_s", 0.0) / units,
        "record_ms": 1e3 * steady.get("record_s", 0.0) / units,
        "cell_log_ms": 1e3 * steady.get("cell_log_s", 0.0) / units,
        "record_cpu_ms": 1e3 * steady.get("record_cpu_s", 0.0) / units,
        "cell_log_cpu_ms": 1e3 * steady.get("cell_log_cpu_s", 0.0) / units,
        "compute_s": compute,
        # CPU capacity of the workers not spent computing, per unit of compute (null_run)
        "overhead_fraction_null": (wall * workers - compute) / compute if compute else float("inf"),
        # the driver's CPU per unit against the compute of a teacher-student unit of the same chunk
        "overhead_fraction_ts": 1e-3 * (1e3 * cpu / units) / ts_unit_s,
        "loop_peak_rss_mib": sweep["peak_rss_kib"].get("loop", 0) / 1024,
        "loop_rss_end_mib": sweep.get("loop_rss_end_kib", 0) / 1024,
        "driver_hwm_mib": sweep["hwm_kib"] / 1024,
    }


# --- output --------------------------------------------------------------------------------


def machine_description() -> str:
    import mlflow
    import pyarrow
    import ray

    return (f"{cpu_and_memory()} RAM; Python {platform.python_version()}, Ray {ray.__version__}, "
            f"pyarrow {pyarrow.__version__}, MLflow {mlflow.__version__}, {platform.system()} {platform.release()}")


def code_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "ray_jobs"], cwd=PROJECT_ROOT, capture_output=True, text=True)
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
        f"Command: `python -m benchmarks.bench_scale {' '.join(_shown(args.argv))}`".rstrip() + " (or `make bench-scale`); "
        f"{_settings_s(results) / 60:.0f} min of commands in all. Local Ray cluster ({figures['workers']} CPUs), "
        f"MLflow on the default sqlite store, "
        f"a fresh results directory under /tmp per setting."
        + (f" **Patched** with `{args.patch}` (a proposed change, not the tree as it is)." if args.patch else ""),
        "",
        "Worker-side compute of one unit (the task apart from Ray: `run_unit`, the unit's rows and their Parquet bytes; null_run): "
        + ", ".join(f"{figures['compute'][c] * 1e3:.2f} ms at chunk {c}" for c in chunks) + ".",
        "",
    ]
    header = "| | " + " | ".join(f"{r['runs']:,} runs, chunk {r['chunk']} ({r['sweep'].get('units', 0):,} units){r.get('mark', '')}"
                                 for r in results) + " | target |"
    lines += [header, "|---" * (len(results) + 2) + "|"]

    def row(name: str, cell, target: str = "") -> None:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in results) + f" | {target} |")

    d = {id(r): r["derived"] for r in results}
    row("planning, empty store: compose + validate / plan / units_to_run (s)",
        lambda r: f"{r['planning']['compose_validate_s']:.2f} / {r['planning']['plan_s']:.2f} / {r['planning']['resume_check_s']:.2f}")
    row("planning + resume check, finished store (s, in process)",
        lambda r: f"{r['resume_planning']['total_s']:.2f} {_met(r['resume_planning']['total_s'] < TARGET_PLAN_RESUME_S) if r['runs'] == big else ''}",
        f"< {TARGET_PLAN_RESUME_S:.0f} s at 10^6 runs")
    row("1-minute load average of the machine before / after the sweep", lambda r: f"{r['load'][0]:.1f} / {r['load'][1]:.1f}")
    row("sweep command wall (s)", lambda r: f"{r['sweep']['command_wall_s']:.0f}")
    row("of which: Ray start / session open (MLflow store) (s)",
        lambda r: f"{r['sweep']['times'].get('ray_start', 0):.1f} / {r['sweep']['times'].get('session_open', 0):.1f}")
    row("of which: loop, first submit to last unit recorded (s; units / s)",
        lambda r: f"{d[id(r)]['loop_wall_s']:.1f} ({d[id(r)]['loop_units_per_s']:.0f})")
    row("of which: compaction / report / finish (MLflow) (s)",
        lambda r: f"{r['sweep']['times'].get('compaction', 0):.1f} / {r['sweep']['times'].get('report', 0):.1f} / {r['sweep']['times'].get('finish', 0):.1f}")
    row("steady state (first outcome to last): units / s", lambda r: f"{d[id(r)]['units_per_s']:.0f}")
    row("driver CPU per unit, steady state (ms)",
        lambda r: f"{d[id(r)]['driver_cpu_ms']:.1f} {_met(d[id(r)]['driver_cpu_ms'] < TARGET_UNIT_MS) if r['chunk'] == 1000 and r['runs'] == big else ''}",
        f"< {TARGET_UNIT_MS:.0f} ms at chunk 1,000, 10^6 runs")
    row("of which per unit, without the cells' MLflow children: Ray, loop, fragment (ms)",
        lambda r: f"{d[id(r)]['driver_cpu_ms'] - d[id(r)]['cell_log_cpu_ms']:.1f} "
                  f"{_met(d[id(r)]['driver_cpu_ms'] - d[id(r)]['cell_log_cpu_ms'] < TARGET_UNIT_MS) if r['chunk'] == 1000 and r['runs'] == big else ''}",
        f"< {TARGET_UNIT_MS:.0f} ms at chunk 1,000, 10^6 runs")
    row("of which per cell: its MLflow child (aggregation + 3 sqlite commits), driver CPU per cell (ms; units per cell)",
        lambda r: f"{1e3 * r['sweep']['phase_cpu'].get('cell_log', 0.0) / max(1, r['sweep'].get('cells', 1)):.0f} "
                  f"({r['sweep'].get('units', 0) / max(1, r['sweep'].get('cells', 1)):.0f})")
    row("wall overhead per unit, steady state: (wall - compute / workers) / units (ms)",
        lambda r: f"{d[id(r)]['wall_overhead_ms']:.1f} {_met(d[id(r)]['wall_overhead_ms'] < TARGET_UNIT_MS) if r['chunk'] == 1000 and r['runs'] == big else ''}",
        f"< {TARGET_UNIT_MS:.0f} ms at chunk 1,000, 10^6 runs")
    row("driver wall per unit, steady state: Ray (submit, wait, get) / record fragment / cell's MLflow child (ms)",
        lambda r: f"{d[id(r)]['in_ray_ms']:.1f} / {d[id(r)]['record_ms']:.1f} / {d[id(r)]['cell_log_ms']:.1f}")
    row("driver CPU per unit, steady state: record fragment / cell's MLflow child / the rest (Ray, loop) (ms)",
        lambda r: f"{d[id(r)]['record_cpu_ms']:.1f} / {d[id(r)]['cell_log_cpu_ms']:.1f} / "
                  f"{d[id(r)]['driver_cpu_ms'] - d[id(r)]['record_cpu_ms'] - d[id(r)]['cell_log_cpu_ms']:.1f}")
    row("orchestration overhead / compute, null_run: (workers x wall - compute) / compute",
        lambda r: f"{d[id(r)]['overhead_fraction_null']:.0f}x")
    row("driver CPU per unit / compute of a teacher-student unit (k = n = 10, same chunk; estimate)",
        lambda r: f"{100 * d[id(r)]['overhead_fraction_ts']:.2f}%")
    row("driver peak RSS in the loop / at its end (MiB)",
        lambda r: f"{d[id(r)]['loop_peak_rss_mib']:.0f} / {d[id(r)]['loop_rss_end_mib']:.0f}", "flat in runs")
    row("driver peak RSS, whole command (MiB; report included)", lambda r: f"{d[id(r)]['driver_hwm_mib']:.0f}")
    row("files under the sweep dir: before compaction / after the sweep",
        lambda r: f"{r['sweep'].get('files_before_compaction', r['files_after_sweep']):,} / {r['files_after_sweep']:,}")
    if any("compact" in r for r in results):
        row("`landscape-compact` (s) / files after", lambda r: f"{r['compact']['wall_s']:.1f} / {r['compact']['files_after']:,}" if "compact" in r else "")
    row("`landscape-report` wall (s) / peak RSS (MiB)",
        lambda r: f"{r['report']['wall_s']:.1f} / {_mib(r['report']['hwm_kib'])} {_met(r['report']['wall_s'] < TARGET_REPORT_S) if r['runs'] == big else ''}",
        f"< {TARGET_REPORT_S:.0f} s at 10^6 rows")
    row("resume (0 units to run): command wall (s)",
        lambda r: f"{r['resume']['command_wall_s']:.1f}{'' if r['resume']['zero_to_run'] else ' (units were left!)'}")
    row("resume: compose + validate + plan + resume check inside it (s)",
        lambda r: f"{sum(r['resume']['times'].get(k, 0) for k in ('compose', 'validate', 'plan', 'resume_check')):.2f}",
        f"< {TARGET_PLAN_RESUME_S:.0f} s")
    row("resume: imports / Ray / cells' MLflow children / report / finish (s)",
        lambda r: " / ".join(f"{r['resume']['times'].get(k, 0):.1f}" for k in ("imports", "ray_start", "cell_log", "report", "finish")))
    lines.append("")
    lines += [f"{r['mark'].strip()} {r['note']}" for r in results if r.get("note")]
    flat = []
    for chunk in chunks:
        if (small, chunk) in by and (big, chunk) in by and small != big:
            a, b = by[(small, chunk)]["derived"]["loop_peak_rss_mib"], by[(big, chunk)]["derived"]["loop_peak_rss_mib"]
            flat.append(f"chunk {chunk}: {a:.0f} MiB at {small:,} runs, {b:.0f} MiB at {big:,} runs "
                        f"({100 * (b - a) / a:+.0f}%) {_met(b <= a * (1 + FLAT_TOLERANCE))}")
    if flat:
        lines.append(f"Driver memory in the loop, flat in the number of runs (peak within {FLAT_TOLERANCE:.0%} from "
                     f"{small:,} to {big:,} runs): " + "; ".join(flat) + ".")
    traces = []
    for r in results:
        trace = [kib / 1024 for _, kib in r["sweep"].get("loop_rss_trace", [])]
        if len(trace) >= 8:
            quarter, rest = trace[len(trace) // 4], max(trace[len(trace) // 4:])
            traces.append(f"{r['runs']:,} runs at chunk {r['chunk']}: {' / '.join(f'{trace[i * (len(trace) - 1) // 4]:.0f}' for i in range(5))} MiB "
                          f"({100 * (rest - quarter) / quarter:+.0f}% after the first quarter) {_met(rest <= quarter * (1 + FLAT_TOLERANCE))}")
    if traces:
        lines.append("Driver resident memory at 0, 25, 50, 75 and 100% of the loop's units (no growth with the units "
                     f"recorded: within {FLAT_TOLERANCE:.0%} of the value at 25%): " + "; ".join(traces) + ".")
    compact_note = ("`landscape-compact` was run after each sweep." if any("compact" in r for r in results) else
                    "No `landscape-compact` command in this checkout: files are counted as the sweep left them.")
    lines.append(compact_note)
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
    return sum(r["sweep"]["command_wall_s"] + r.get("compact", {}).get("wall_s", 0.0) + r["report"]["wall_s"]
               + r["resume"]["command_wall_s"] for r in results)


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
    if argv[:1] == ["--child"]:
        return child_main(Path(argv[1]), argv[3:] if argv[2:3] == ["--"] else argv[2:])
    if argv[:1] == ["--report"]:
        return report_main(argv[2:] if argv[1:2] == ["--"] else argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10^5 runs only")
    parser.add_argument("--chunks", default="1000,50", help="chunk sizes (seeds per unit), comma-separated")
    parser.add_argument("--sizes", default=None, help="runs per setting, comma-separated (default 100000,1000000; --quick 100000)")
    parser.add_argument("--write", type=Path, default=None, help="markdown file whose bench_scale section to rewrite")
    parser.add_argument("--profile", type=Path, default=None, help="run each sweep under py-spy, raw stacks in this folder")
    parser.add_argument("--keep", action="store_true", help="keep the results directory")
    parser.add_argument("--render", type=Path, default=None,
                        help="only render (and --write) the figures saved in this logs folder by an earlier run")
    parser.add_argument("--append", type=Path, default=None,
                        help="a logs folder of an earlier run: keep its settings, run only the missing ones")
    parser.add_argument("--patch", type=Path, default=None,
                        help="a Python file run in each driver first (a proposed change, monkeypatched)")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.patch:
        os.environ[PATCH_ENV] = str(args.patch.resolve())
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
    figures = {"workers": os.cpu_count() or 1, "compute": {c: unit_compute_s(c) for c in chunks}, "code": code_version(),
               "date": time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}
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
                for attempt in range(3):  # a sweep stopped from outside (exit 130, no figures) is run again
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
                (log_dir / "results.json").write_text(json.dumps({"figures": figures, "results": results}, indent=1, default=str))
                if not args.keep:  # the next setting's reads should not find this one's files in the page cache
                    shutil.rmtree(root / f"r{runs}_c{chunk}", ignore_errors=True)
        elapsed = time.perf_counter() - started
        (log_dir / "results.json").write_text(json.dumps({"figures": figures, "results": results, "argv": argv,
                                                          "elapsed_s": elapsed}, indent=1, default=str))
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
    ok = all(r["sweep"]["exit_code"] == 0 and r["report"]["exit_code"] == 0 and r["resume"]["exit_code"] == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

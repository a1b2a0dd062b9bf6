"""Ray: start or connect to a cluster, submit one task per work unit, wait with ray.wait.

:func:`ray_cluster` starts a local cluster (no ``cluster.address`` and no ``RAY_ADDRESS``)
and shuts it down at the end, or connects to an existing one and only disconnects; inside
a process that already called ``ray.init`` (tests, notebooks) it uses that session as is.
:func:`run_units` submits the units and yields each outcome as its task finishes, showing
a live progress bar; the caller (the driver) records it. A task that still fails after
Ray's retries yields an outcome with an error message instead of records.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ray_jobs.plan import WorkUnit
from ray_jobs.worker import run_unit

#: seconds ray.wait blocks before the progress bar refreshes when nothing finished
WAIT_TIMEOUT_S = 1.0
#: without a terminal (logs, `ray job submit`), a plain progress line this often instead of the bar
LOG_EVERY_S = 30.0


@contextmanager
def ray_cluster(cluster, console: Console) -> Iterator[str]:
    """Ray for the duration of the block; yields a description of the cluster used."""
    import ray

    if ray.is_initialized():
        yield "the Ray session already open in this process"
        return
    address = cluster.get("address") or os.environ.get("RAY_ADDRESS")
    common = {"log_to_driver": bool(cluster.get("log_to_driver", False))}
    if cluster.get("ship_code"):
        packages = Path(__file__).resolve().parents[1]
        common["runtime_env"] = {"py_modules": [str(packages / "ray_jobs"), str(packages / "landscape_core")]}
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    if address:
        ray.init(address=address, **common)
        description = f"Ray cluster at {address}"
    else:
        ray.init(
            num_cpus=cluster.get("num_cpus"),
            num_gpus=cluster.get("num_gpus"),
            object_store_memory=cluster.get("object_store_memory"),
            include_dashboard=bool(cluster.get("include_dashboard", False)),
            **common,
        )
        description = f"local Ray cluster ({int(ray.cluster_resources().get('CPU', 0))} CPUs), stopped at the end"
    if callable(sigterm_handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm_handler)  # ray.init installs its own, which just dies
    try:
        yield description
    finally:
        ray.shutdown()


@dataclass
class UnitOutcome:
    """A finished unit: its records, or the error message of its failed task."""

    unit: WorkUnit
    records: list[dict] | None
    error: str | None
    elapsed_s: float


def describe_failure(exc: BaseException) -> str:
    """``Type: message`` of what the task raised (the cause of a RayTaskError), one line."""
    from ray.exceptions import RayTaskError

    if isinstance(exc, RayTaskError) and exc.cause is not None:
        cause, text = exc.cause, str(exc.cause)
    else:  # a system failure (worker died, task cancelled...): the last line is the reason
        lines = str(exc).strip().splitlines()
        cause, text = exc, lines[-1] if lines else ""
    return f"{type(cause).__name__}: {' '.join(text.split())}"


def progress_bar(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("units  runs {task.fields[runs]}/{task.fields[total_runs]}  failed units {task.fields[failed]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def unit_submitter(experiment_name: str, resources):
    """``submit(unit) -> ObjectRef``: one Ray task running :func:`run_unit` on the unit, with
    the per-task resources and retries of ``resources`` (the config group)."""
    import ray

    num_gpus = float(resources.num_gpus)
    task = ray.remote(
        num_cpus=float(resources.num_cpus),
        num_gpus=num_gpus,
        max_retries=int(resources.max_retries),
        retry_exceptions=bool(resources.retry_exceptions),
    )(run_unit)

    def submit(unit: WorkUnit):
        return task.options(name=f"unit-{unit.unit_id}").remote(
            experiment_name, unit.cell.params, unit.seeds, use_gpu=num_gpus > 0, torch_threads=int(resources.torch_threads)
        )

    return submit


def run_units(units: Sequence[WorkUnit], experiment_name: str, resources, console: Console, *,
              description: str = "sweep") -> Iterator[UnitOutcome]:
    """Submit one Ray task per unit; yield each outcome as its task finishes.

    Waits with ``ray.wait`` (one ready ref, then every ref ready at that moment), never
    one ``ray.get`` over all refs. Tasks still pending when the caller stops iterating
    (Ctrl-C, an exception) are cancelled.
    """
    import ray
    from ray.exceptions import RayError

    submit = unit_submitter(experiment_name, resources)
    started = time.monotonic()
    pending = {submit(unit): unit for unit in units}
    total_runs = sum(len(unit.seeds) for unit in units)
    runs_done = failed = 0
    last_log = started
    try:
        with progress_bar(console) as progress:
            bar = progress.add_task(description, total=len(units), runs=0, total_runs=total_runs, failed=0)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_TIMEOUT_S)
                if ready:
                    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                for ref in ready:
                    unit = pending.pop(ref)
                    try:
                        outcome = UnitOutcome(unit, ray.get(ref), None, time.monotonic() - started)
                    except RayError as exc:
                        outcome = UnitOutcome(unit, None, describe_failure(exc), time.monotonic() - started)
                        failed += 1
                    runs_done += len(unit.seeds)
                    yield outcome
                    progress.update(bar, advance=1, runs=runs_done, failed=failed)
                progress.refresh()
                if not console.is_terminal and time.monotonic() - last_log >= LOG_EVERY_S:
                    last_log = time.monotonic()
                    console.print(f"{description}: {len(units) - len(pending)}/{len(units)} units, {runs_done}/{total_runs} runs, "
                                  f"{failed} failed units, {last_log - started:.0f} s elapsed")
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)

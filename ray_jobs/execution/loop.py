"""The one submit / ray.wait / retry / cancel loop every driver uses.

:class:`Execution` runs work units on Ray: ``submit(unit)`` starts one Ray task per unit
(resources and retries from the ``resources`` group: Ray retries dead workers, and raised
exceptions when ``retry_exceptions``), ``wait()`` returns the outcomes of the tasks finished
by then, ``close()`` stops what is still pending. A task that still fails after Ray's
retries gives an outcome with an error message instead of records.

:func:`run_units` is the loop around it, for grids and searches alike: it asks a
:class:`UnitSource` for units while it keeps a bounded window of them in flight (a few per
task slot of the cluster, topped up as units finish), yields each outcome as its task
finishes (the driver records it; a search's source turns it into the searcher's next
proposals), shows a progress bar, and closes the execution however it ends. A grid's
source is its list of units (:class:`ListSource`); a search's proposes the units its
trials ask for. So the driver's memory and the cost of each ``ray.wait`` do not grow with
the sweep, and no driver cancels tasks itself.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ray_jobs.execution.cluster import session_owned
from ray_jobs.execution.timing import Timings, peak_rss_mib
from ray_jobs.plan import WorkUnit, make_cell, make_unit
from ray_jobs.store import columns_of, encode_fragment, unit_table
from ray_jobs.worker import get_experiment, run_unit

#: seconds ray.wait blocks before the progress bar refreshes when nothing finished
WAIT_TIMEOUT_S = 1.0
#: without a terminal (logs, `ray job submit`), a plain progress line this often instead of the bar
LOG_EVERY_S = 30.0
#: units the loop keeps in flight per task slot of the cluster (a slot = room for one
#: task's resources.num_cpus / num_gpus), within [MIN_IN_FLIGHT, MAX_IN_FLIGHT]: enough queued
#: work that no worker waits on the driver, few enough that a ``ray.wait`` over the pending
#: tasks stays cheap (its cost grows faster than linearly with the refs, docs/benchmarks.md)
#: and the driver holds no state per unit of the sweep
IN_FLIGHT_PER_SLOT, MIN_IN_FLIGHT, MAX_IN_FLIGHT = 8, 32, 2048
#: seconds between two looks at the cluster's size (an autoscaled cluster grows the window)
RESIZE_EVERY_S = 15.0


def unit_task(
    experiment_name: str,
    params: dict,
    seed_lo: int,
    seed_hi: int,
    *,
    use_gpu: bool,
    torch_threads: int,
    sweep: str,
    code_version: str,
) -> tuple[bytes, pa.Table, dict[str, str]]:
    """A unit's Ray task: :func:`~ray_jobs.worker.run_unit` on seeds ``seed_lo .. seed_hi - 1``
    (two integers: the arguments stay small whatever the chunk size), then the unit's rows
    (:func:`~ray_jobs.store.unit_table`, with ``hostname``, Ray ``node_id`` and ``gpu_ids``)
    and their Parquet fragment, built here, in parallel on the workers: the driver (the
    single writer) only writes the bytes. Returns (fragment bytes, the records' own columns,
    where): the columns shared by every row do not cross Ray (a 1,000-row null_run unit:
    ~70 KB inline in the reply instead of ~290 KB through the object store)."""
    import ray

    unit = make_unit(make_cell(params), seed_lo, seed_hi)
    try:  # the worker's process title names the unit (ps, fault tests); a private Ray helper, never a failure
        ray._raylet.setproctitle(f"ray::unit-{unit.unit_id}")  # type: ignore[attr-defined]
    except Exception:
        pass
    columns = columns_of(run_unit(experiment_name, params, unit.seeds, use_gpu=use_gpu, torch_threads=torch_threads))
    where = {
        "hostname": socket.gethostname(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(gpu) for gpu in ray.get_gpu_ids()),
    }
    table = unit_table(
        unit,
        columns,
        constants=where,
        experiment=experiment_name,
        column_types=get_experiment(experiment_name).columns,
        sweep=sweep,
        code_version=code_version,
    )
    return encode_fragment(table), table.select(list(columns)), where


@dataclass
class UnitOutcome:
    """A finished unit: its fragment, records and where they ran (:func:`unit_task`), or its task's error."""

    unit: WorkUnit
    fragment: bytes | None
    records: pa.Table | None
    where: dict[str, str] | None
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


class Execution:
    """Work units in flight on Ray, one task each; the caller records the outcomes."""

    def __init__(self, experiment_name: str, resources, *, sweep: str, code_version: str):
        """Tasks run :func:`unit_task` with the per-task resources and retries of
        ``resources`` (the config group); their rows name ``sweep`` and ``code_version``."""
        import ray

        self.experiment_name, self.sweep, self.code_version = experiment_name, sweep, code_version
        self.num_gpus = float(resources.num_gpus)
        self.torch_threads = int(resources.torch_threads)
        self.num_cpus = float(resources.num_cpus)
        # one task name for every unit (``ray::unit-<experiment>`` in the dashboard and the
        # workers' process titles): a name per unit costs the driver ~10 KiB that it never
        # frees (Ray 2.60; measured: +105 MiB over 10,000 units, none with one name)
        remote = ray.remote(
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            max_retries=int(resources.max_retries),
            retry_exceptions=bool(resources.retry_exceptions),
        )
        self.task: Any = remote(unit_task).options(name=f"unit-{experiment_name}")  # type: ignore[arg-type]
        self.pending: dict = {}  # ObjectRef -> WorkUnit
        self.started = time.monotonic()

    def submit(self, unit: WorkUnit) -> None:
        """Start the unit's task (one Ray task)."""
        ref = self.task.remote(
            self.experiment_name,
            unit.cell.params,
            unit.seed_lo,
            unit.seed_hi,
            use_gpu=self.num_gpus > 0,
            torch_threads=self.torch_threads,
            sweep=self.sweep,
            code_version=self.code_version,
        )
        self.pending[ref] = unit

    def slots(self) -> int:
        """Tasks of this execution the cluster can run at once now (at least 1)."""
        import ray

        total = ray.cluster_resources()
        demands = [(total.get("CPU", 0.0), self.num_cpus), (total.get("GPU", 0.0), self.num_gpus)]
        fits = [int(have // need) for have, need in demands if need > 0]
        return max(1, min(fits) if fits else int(total.get("CPU", 1.0)))

    def window(self) -> int:
        """Units to keep in flight: :data:`IN_FLIGHT_PER_SLOT` per slot, within bounds."""
        return min(MAX_IN_FLIGHT, max(MIN_IN_FLIGHT, IN_FLIGHT_PER_SLOT * self.slots()))

    def wait(self, timeout: float = WAIT_TIMEOUT_S) -> list[UnitOutcome]:
        """Outcomes of the tasks finished within ``timeout`` (none when nothing finished).

        Waits with ``ray.wait`` for one ready task, then takes every task ready at that
        moment (prompt on each completion, batched under load) with one ``ray.get`` over
        those (each on its own when one of them failed); never a ``ray.get`` over tasks
        still running."""
        import ray
        from ray.exceptions import RayError

        if not self.pending:
            return []
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
        try:
            values = ray.get(ready) if ready else []
        except RayError:
            values = None
        outcomes = []
        for index, ref in enumerate(ready):
            unit = self.pending.pop(ref)
            elapsed = time.monotonic() - self.started
            if values is not None:
                fragment, records, where = values[index]
                outcomes.append(UnitOutcome(unit, fragment, records, where, None, elapsed))
                continue
            try:
                fragment, records, where = ray.get(ref)
                outcomes.append(UnitOutcome(unit, fragment, records, where, None, elapsed))
            except RayError as exc:
                outcomes.append(UnitOutcome(unit, None, None, None, describe_failure(exc), elapsed))
        return outcomes

    def cancel(self) -> None:
        """Cancel every task still pending (force: their workers are killed)."""
        import ray

        for ref in self.pending:
            ray.cancel(ref, force=True)
        self.pending.clear()

    def close(self) -> None:
        """Stop waiting on the tasks still pending; none of them will be recorded.

        In a Ray session that :func:`ray_cluster` opened, the tasks are only dropped: the
        session ends right after (``ray.shutdown``), and with it the job, whose workers Ray
        kills. ``ray.cancel`` is avoided there on purpose: in Ray 2.60 a cancellation that
        meets the reply of a task finishing at that moment aborts the driver ("Check failed:
        it != submissible_tasks_.end() Tried to complete task that was not pending",
        ray-project/ray#54846), seen on a SIGTERM while units ran. In a session the caller
        opened (it outlives this sweep), the tasks are cancelled."""
        if session_owned():
            self.pending.clear()
        else:
            self.cancel()


class UnitSource(Protocol):
    """What :func:`run_units` runs: units to start, as many as there is room for."""

    #: units it gives in all, when known in advance (the progress bar's total), else None
    total: int | None

    def next_units(self, room: int) -> Sequence[WorkUnit]:
        """At most ``room`` (>= 1) units to start now; none when it has nothing to start now (the
        loop ends when it has none and no task is pending)."""
        ...


class ListSource:
    """A grid's units, in order."""

    def __init__(self, units: Sequence[WorkUnit]):
        self.units, self.next = units, 0
        self.total: int | None = len(units)
        self.total_runs = sum(unit.seed_hi - unit.seed_lo for unit in units)

    def next_units(self, room: int) -> Sequence[WorkUnit]:
        start, self.next = self.next, min(len(self.units), self.next + room)
        return self.units[start : self.next]


def run_units(
    source: UnitSource | Sequence[WorkUnit],
    experiment_name: str,
    resources,
    console: Console,
    *,
    sweep: str,
    code_version: str,
    description: str = "sweep",
    timings: Timings | None = None,
) -> Generator[UnitOutcome, None, None]:
    """Run one Ray task per unit ``source`` gives (a list of units: in order), keeping
    :meth:`Execution.window` of them in flight (topped up before each outcome is handed over
    and after the caller is done with it); yield each outcome as its task finishes, with a
    live progress bar (without a terminal, a plain progress line every :data:`LOG_EVERY_S`).
    Ends when no task is pending and the source gives nothing more. Tasks still pending when
    the caller stops iterating (Ctrl-C, an exception, fail_fast) are never recorded
    (:meth:`Execution.close`); units not yet given never start. The loop's own time (not the
    caller's between two outcomes) is added to ``timings`` as phase ``loop``."""
    timings = timings if timings is not None else Timings()
    watch = timings.stopwatch("loop")  # the loop's own time: not the caller's, nor the source's phases
    span = (time.perf_counter(), time.process_time())
    handed_over = False  # the caller has an outcome: its time is not the loop's

    if isinstance(source, Sequence):
        source = ListSource(source)
    execution = Execution(experiment_name, resources, sweep=sweep, code_version=code_version)
    total_runs = getattr(source, "total_runs", None)
    runs_done = failed = done = 0
    last_log = resized = execution.started
    window = execution.window()

    def top_up() -> None:
        room = window - len(execution.pending)
        while room > 0:
            units = source.next_units(room)
            if not units:
                return
            for unit in units:
                execution.submit(unit)
            room -= len(units)

    try:
        with progress_bar(console) as progress:
            bar = progress.add_task(
                description, total=source.total, runs=0, total_runs="?" if total_runs is None else total_runs, failed=0
            )
            top_up()
            while execution.pending:
                if time.monotonic() - resized >= RESIZE_EVERY_S:
                    window, resized = execution.window(), time.monotonic()
                for outcome in execution.wait():
                    top_up()  # before the outcome is handed over: no worker waits while the caller records it
                    failed += outcome.error is not None
                    runs_done += outcome.unit.seed_hi - outcome.unit.seed_lo
                    done += 1
                    watch.lap()
                    handed_over = True
                    yield outcome
                    handed_over = False
                    watch.restart()
                    progress.update(bar, advance=1, runs=runs_done, failed=failed)
                top_up()  # and after: a search's next units come from the outcomes just handed over
                progress.refresh()
                if not console.is_terminal and time.monotonic() - last_log >= LOG_EVERY_S:
                    last_log = time.monotonic()
                    console.print(
                        f"{description}: {done}/{source.total or '?'} units, "
                        f"{runs_done}/{'?' if total_runs is None else total_runs} runs, "
                        f"{failed} failed units, "
                        f"{last_log - execution.started:.0f} s elapsed"
                    )
    finally:
        if handed_over:  # stopped by the caller (break, an exception, Ctrl-C) while it held an outcome
            watch.restart()
        execution.close()
        watch.lap()
        timings.loop_span_s += time.perf_counter() - span[0]
        timings.loop_span_cpu_s += time.process_time() - span[1]
        timings.peak_rss_mib = max(timings.peak_rss_mib, peak_rss_mib())

"""Execution on Ray: the cluster, and the one submit / ray.wait / retry / cancel loop.

:func:`ray_cluster` starts a local cluster (no ``cluster.address`` and no ``RAY_ADDRESS``)
and shuts it down at the end, or connects to an existing one and only disconnects; inside
a process that already called ``ray.init`` (tests, notebooks) it uses that session as is.

:class:`Execution` is the loop every driver uses: ``submit(unit)`` starts one Ray task per
work unit (resources and retries from the ``resources`` group: Ray retries dead workers,
and raised exceptions when ``retry_exceptions``), ``wait()`` returns the outcomes of the
tasks finished by then, ``close()`` stops what is still pending. A task that still fails
after Ray's retries gives an outcome with an error message instead of records. The grid
driver keeps a bounded window of units in flight (:func:`run_units`, with a progress bar:
a few per task slot of the cluster, topped up as units finish), so its memory and the cost
of each ``ray.wait`` do not grow with the sweep; a search submits units as its trials ask
for them.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ray_jobs.errors import ConfigError
from ray_jobs.plan import WorkUnit, make_cell, make_unit
from ray_jobs.reaper import start_reaper
from ray_jobs.store import columns_of, encode_fragment, unit_table
from ray_jobs.worker import get_experiment, run_unit

#: seconds ray.wait blocks before the progress bar refreshes when nothing finished
WAIT_TIMEOUT_S = 1.0
#: without a terminal (logs, `ray job submit`), a plain progress line this often instead of the bar
LOG_EVERY_S = 30.0
#: seconds to reach a cluster address before the invocation is refused
CONNECT_TIMEOUT_S = 5.0
#: Ray's connection attempts (one a second) to a cluster whose port answers: a cluster that
#: refuses the driver (token authentication) is reported after these instead of Ray's 20
CONNECT_ATTEMPTS = {"RAY_gcs_server_port_wait_time_s": "5"}
#: whether the Ray session of this process is one :func:`ray_cluster` opened (and will close)
_SESSION_OWNED = False
#: ``cluster.bind`` of a local cluster listening on the loopback interface only
LOOPBACK = "127.0.0.1"
#: units the grid driver keeps in flight per task slot of the cluster (a slot = room for one
#: task's resources.num_cpus / num_gpus), within [MIN_IN_FLIGHT, MAX_IN_FLIGHT]: enough queued
#: work that no worker waits on the driver, few enough that a ``ray.wait`` over the pending
#: tasks stays cheap (its cost grows faster than linearly: ~0.3 ms over 1,000 refs, ~70 ms
#: over 20,000 with Ray 2.60) and the driver holds no state per unit of the sweep
IN_FLIGHT_PER_SLOT, MIN_IN_FLIGHT, MAX_IN_FLIGHT = 8, 32, 2048
#: seconds between two looks at the cluster's size (an autoscaled cluster grows the window)
RESIZE_EVERY_S = 15.0


def check_reachable(address: str, field: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ConfigError unless something accepts a TCP connection at ``address``
    (``HOST:PORT`` or ``ray://HOST:PORT``; ``auto`` and other forms are left to Ray)."""
    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        if address != "auto" and not address.startswith(("ray://", "local")):
            raise ConfigError(field, f"{address!r} is not an address; give HOST:PORT (e.g. 10.0.0.1:6379), "
                                     f"ray://HOST:10001 or auto")
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise ConfigError(field, f"cannot reach the Ray cluster at {address} ({reason}); start it with "
                                 f"`ray start --head` (docs/cluster.md) or fix the address") from None


def check_feasible(resources, where: str) -> None:
    """Raise ConfigError when no alive node offers what one task asks for (``resources.num_cpus``
    / ``num_gpus``): such tasks would wait forever. Looks at the nodes alive now."""
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    for key, field, hint in (("CPU", "num_cpus", "lower resources.num_cpus, or cluster.num_cpus=N for a local cluster"),
                             ("GPU", "num_gpus", "use resources=cpu, or cluster.num_gpus=N to declare GPUs of a local cluster")):
        asked = float(resources.get(field) or 0)
        largest = max((node.get(key, 0.0) for node in nodes), default=0.0)
        if asked > largest:
            raise ConfigError(f"resources.{field}", f"each task asks for {asked:g} {key}s, but the largest node of the {where} "
                                                    f"offers {largest:g}; {hint}")


@contextmanager
def ray_cluster(cluster, console: Console, *, resources=None) -> Iterator[str]:
    """Ray for the duration of the block; yields a description of the cluster used.

    Fails fast with ConfigError (nothing scheduled): an address nothing listens at, a
    connection Ray refuses (e.g. token authentication), per-task ``resources`` that no node
    offers. A SIGTERM while Ray starts is an interrupt (KeyboardInterrupt), like one later.
    """
    import ray

    if ray.is_initialized():
        if resources is not None:
            check_feasible(resources, "Ray session already open in this process")
        yield "the Ray session already open in this process"
        return
    address = cluster.get("address") or os.environ.get("RAY_ADDRESS")
    field = "cluster.address" if cluster.get("address") else "RAY_ADDRESS"
    common = {"log_to_driver": bool(cluster.get("log_to_driver", False))}
    if cluster.get("ship_code"):
        packages = Path(__file__).resolve().parents[1]
        common["runtime_env"] = {"py_modules": [str(packages / "ray_jobs"), str(packages / "landscape_core")]}
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            check_reachable(address, field)
            try:
                with _environment(CONNECT_ATTEMPTS):
                    ray.init(address=address, **common)
            except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError...
                if os.environ.get("RAY_AUTH_MODE") != "token":
                    hint = ("; a cluster started by `ray start` (Ray >= 2.60) uses token authentication: export "
                            "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, from "
                            "`ray get-auth-token` on the head) for the driver")
                else:
                    hint = ("; with RAY_AUTH_MODE=token, check that the driver's token (RAY_AUTH_TOKEN, "
                            "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) is the head's (`ray get-auth-token` on the head)")
                raise ConfigError(field, f"cannot connect to the Ray cluster at {address}: "
                                         f"{' '.join(str(exc).split())[:300]}{hint} (docs/cluster.md)") from None
            description = f"Ray cluster at {address}"
            where = "cluster"
        else:
            start_reaper()  # the local cluster dies with this driver, even on kill -9 during ray.init
            with loopback_only(cluster.get("bind") == LOOPBACK):
                ray.init(
                    num_cpus=cluster.get("num_cpus"),
                    num_gpus=cluster.get("num_gpus"),
                    object_store_memory=cluster.get("object_store_memory"),
                    include_dashboard=bool(cluster.get("include_dashboard", False)),
                    **common,
                )
            description = f"local Ray cluster ({int(ray.cluster_resources().get('CPU', 0))} CPUs), stopped at the end"
            where = "local cluster"
    except SystemExit as exc:  # ray.init's own SIGTERM handler exits while it starts
        ray.shutdown()
        if exc.code == signal.SIGTERM:
            raise KeyboardInterrupt from None
        raise
    finally:
        _restore(sigterm_handler)
    global _SESSION_OWNED
    _SESSION_OWNED = True
    try:
        if resources is not None:
            check_feasible(resources, where)
        yield description
    finally:
        _SESSION_OWNED = False
        ray.shutdown()
        _restore(sigterm_handler)  # ray.shutdown resets it as well


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the block (where the user has not set them), then removed."""
    added = {key: value for key, value in values.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _restore(sigterm_handler) -> None:
    """Put back the driver's SIGTERM handler (ray.init and ray.shutdown install Ray's)."""
    if callable(sigterm_handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm_handler)


#: Ray's switch between a single-machine and a multi-machine Ray; off, every server of the
#: cluster listens on the node address 127.0.0.1 (Ray 2.60, ray/_private/services.py)
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def loopback_only(enabled: bool) -> Iterator[None]:
    """A local cluster started in the block listens on 127.0.0.1 only (``cluster.bind=127.0.0.1``).

    Ray binds its servers (GCS, raylet, object manager, workers, dashboard and runtime-env
    agents, metrics) to the node's IP, or to every interface, unless the node IP is a
    loopback address; and it replaces a requested 127.0.0.1 with the machine's address
    unless multi-machine Ray is switched off. So the switch is turned off for the cluster's
    start (the environment variable, which its processes inherit, and the constant this
    process read at import) and restored afterwards."""
    if not enabled:
        yield
        return
    from ray._private import ray_constants

    previous_env, previous_constant = os.environ.get(SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous_constant
        if previous_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = previous_env


def unit_task(experiment_name: str, params: dict, seed_lo: int, seed_hi: int, *, use_gpu: bool,
              torch_threads: int, sweep: str, code_version: str) -> tuple[bytes, pa.Table, dict[str, str]]:
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
        ray._raylet.setproctitle(f"ray::unit-{unit.unit_id}")
    except Exception:
        pass
    columns = columns_of(run_unit(experiment_name, params, unit.seeds, use_gpu=use_gpu, torch_threads=torch_threads))
    where = {"hostname": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id(),
             "gpu_ids": ",".join(str(gpu) for gpu in ray.get_gpu_ids())}
    table = unit_table(unit, columns, constants=where, experiment=experiment_name,
                       column_types=get_experiment(experiment_name).columns, sweep=sweep, code_version=code_version)
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
        self.task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                               max_retries=int(resources.max_retries),
                               retry_exceptions=bool(resources.retry_exceptions))(unit_task).options(
                                   name=f"unit-{experiment_name}")
        self.pending: dict = {}  # ObjectRef -> WorkUnit
        self.started = time.monotonic()

    def submit(self, unit: WorkUnit) -> None:
        """Start the unit's task (one Ray task)."""
        ref = self.task.remote(self.experiment_name, unit.cell.params, unit.seed_lo, unit.seed_hi,
                               use_gpu=self.num_gpus > 0, torch_threads=self.torch_threads, sweep=self.sweep,
                               code_version=self.code_version)
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
                outcomes.append(UnitOutcome(unit, *values[index], None, elapsed))
                continue
            try:
                outcomes.append(UnitOutcome(unit, *ray.get(ref), None, elapsed))
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
        if _SESSION_OWNED:
            self.pending.clear()
        else:
            self.cancel()


def run_units(units: Sequence[WorkUnit], experiment_name: str, resources, console: Console, *, sweep: str,
              code_version: str, description: str = "sweep") -> Iterator[UnitOutcome]:
    """Run one Ray task per unit, in order, keeping :meth:`Execution.window` of them in flight
    (topped up as they finish); yield each outcome as its task finishes, with a live
    progress bar (without a terminal, a plain progress line every :data:`LOG_EVERY_S`).
    Tasks still pending when the caller stops iterating (Ctrl-C, an exception, fail_fast)
    are never recorded (:meth:`Execution.close`); units not yet submitted never start."""
    execution = Execution(experiment_name, resources, sweep=sweep, code_version=code_version)
    total_runs = sum(unit.seed_hi - unit.seed_lo for unit in units)
    next_unit = runs_done = failed = done = 0
    last_log = resized = execution.started
    window = execution.window()

    def top_up() -> None:  # before each outcome is handed over: no worker waits while the caller records it
        nonlocal next_unit
        while next_unit < len(units) and len(execution.pending) < window:
            execution.submit(units[next_unit])
            next_unit += 1

    try:
        with progress_bar(console) as progress:
            bar = progress.add_task(description, total=len(units), runs=0, total_runs=total_runs, failed=0)
            top_up()
            while execution.pending:
                if time.monotonic() - resized >= RESIZE_EVERY_S:
                    window, resized = execution.window(), time.monotonic()
                for outcome in execution.wait():
                    top_up()
                    failed += outcome.error is not None
                    runs_done += outcome.unit.seed_hi - outcome.unit.seed_lo
                    done += 1
                    yield outcome
                    progress.update(bar, advance=1, runs=runs_done, failed=failed)
                top_up()
                progress.refresh()
                if not console.is_terminal and time.monotonic() - last_log >= LOG_EVERY_S:
                    last_log = time.monotonic()
                    console.print(f"{description}: {done}/{len(units)} units, "
                                  f"{runs_done}/{total_runs} runs, {failed} failed units, "
                                  f"{last_log - execution.started:.0f} s elapsed")
    finally:
        execution.close()

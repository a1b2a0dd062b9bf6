"""The Ray cluster of an invocation: start a local one or connect to one, refuse early.

:func:`ray_cluster` starts a local cluster (no ``cluster.address`` and no ``RAY_ADDRESS``)
and shuts it down at the end, or connects to an existing one and only disconnects; inside
a process that already called ``ray.init`` (tests, notebooks) it uses that session as is.
:func:`session_owned` says which case the loop (:mod:`ray_jobs.execution.loop`) is in.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from ray_jobs.errors import ConfigError
from ray_jobs.reaper import start_reaper

#: seconds to reach a cluster address before the invocation is refused
CONNECT_TIMEOUT_S = 5.0
#: Ray's connection attempts (one a second) to a cluster whose port answers: a cluster that
#: refuses the driver (token authentication) is reported after these instead of Ray's 20
CONNECT_ATTEMPTS = {"RAY_gcs_server_port_wait_time_s": "5"}
#: seconds a cluster address has to answer the HTTP/2 connection preface of :func:`check_speaks_ray`
HANDSHAKE_TIMEOUT_S = 2.0
#: what a gRPC client sends first (RFC 9113, 3.4): the preface, then an empty SETTINGS frame
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
#: whether the Ray session of this process is one :func:`ray_cluster` opened (and will close)
_SESSION_OWNED = False
#: ``cluster.bind`` of a local cluster listening on the loopback interface only
LOOPBACK = "127.0.0.1"


def session_owned() -> bool:
    """Whether the Ray session of this process is one :func:`ray_cluster` opened (it ends with the invocation)."""
    return _SESSION_OWNED


def check_reachable(address: str, field: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ConfigError unless something accepts a TCP connection at ``address``
    (``HOST:PORT`` or ``ray://HOST:PORT``; ``auto`` and other forms are left to Ray)."""
    target = address[len("ray://") :] if address.startswith("ray://") else address
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        if address != "auto" and not address.startswith(("ray://", "local")):
            raise ConfigError(
                field, f"{address!r} is not an address; give HOST:PORT (e.g. 10.0.0.1:6379), ray://HOST:10001 or auto"
            )
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise ConfigError(
            field,
            f"cannot reach the Ray cluster at {address} ({reason}); start it with "
            f"`ray start --head` (docs/cluster.md) or fix the address",
        ) from None


def check_speaks_ray(address: str, field: str, *, timeout: float = HANDSHAKE_TIMEOUT_S) -> None:
    """Raise ConfigError unless the server at ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``)
    answers like Ray's GCS (or Ray Client server): gRPC over HTTP/2, whose server answers a
    client's connection preface with a SETTINGS frame. A plain TCP listener (silent), an
    HTTP/1.x server or one that closes is refused within ``timeout`` seconds, naming what
    answered; Ray itself would retry for minutes. Skipped for TLS clusters (``RAY_USE_TLS``)."""
    target = address[len("ray://") :] if address.startswith("ray://") else address
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return
    answer = b""
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(HTTP2_PREFACE)
            while not _enough(answer):
                chunk = conn.recv(256)
                if not chunk:
                    break
                answer += chunk
    except TimeoutError:
        what = f"no answer in {timeout:g} s" if not answer else f"a partial answer {answer!r}"
        raise ConfigError(field, _not_ray(address, what)) from None
    except OSError as exc:
        if not answer:
            raise ConfigError(field, _not_ray(address, f"it closed the connection: {exc.strerror or exc}")) from None
    if _is_settings(answer):
        return
    if not answer:
        raise ConfigError(field, _not_ray(address, "it closed the connection without answering"))
    text = answer.decode("ascii", "replace")
    shown = repr(text.splitlines()[0][:60]) if text[:1].isprintable() and text[:1] != " " else answer.hex(" ")
    raise ConfigError(field, _not_ray(address, f"it answered {shown}"))


def _is_settings(answer: bytes) -> bool:
    """Whether ``answer`` starts with an HTTP/2 frame header (length 3, type 1, flags 1,
    stream 4 bytes) of a SETTINGS frame (type 4) on stream 0."""
    return len(answer) >= 9 and answer[3] == 4 and answer[5:9] == bytes(4)


def _enough(answer: bytes) -> bool:
    """Whether ``answer`` tells what answered: a frame header, or a first line (of HTTP/1.x)."""
    return _is_settings(answer) or (len(answer) >= 9 and (b"\n" in answer or len(answer) >= 80))


def _not_ray(address: str, what: str) -> str:
    return (
        f"{address} accepted the connection but did not speak Ray's protocol ({what}); "
        f"give the head's GCS address (`ray start --head` prints it, port 6379 by default) or ray://HOST:10001"
    )


def check_feasible(resources, where: str) -> None:
    """Raise ConfigError when no alive node offers what one task asks for (``resources.num_cpus``
    / ``num_gpus``): such tasks would wait forever. Looks at the nodes alive now."""
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    hints = (
        ("CPU", "num_cpus", "lower resources.num_cpus, or cluster.num_cpus=N for a local cluster"),
        ("GPU", "num_gpus", "use resources=cpu, or cluster.num_gpus=N to declare GPUs of a local cluster"),
    )
    for key, field, hint in hints:
        asked = float(resources.get(field) or 0)
        largest = max((node.get(key, 0.0) for node in nodes), default=0.0)
        if asked > largest:
            raise ConfigError(
                f"resources.{field}",
                f"each task asks for {asked:g} {key}s, but the largest node of the {where} offers {largest:g}; {hint}",
            )


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
    common: dict[str, Any] = {"log_to_driver": bool(cluster.get("log_to_driver", False))}
    if cluster.get("ship_code"):
        packages = Path(__file__).resolve().parents[2]  # the folder holding ray_jobs and landscape_core
        common["runtime_env"] = {"py_modules": [str(packages / "ray_jobs"), str(packages / "landscape_core")]}
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    stack = ExitStack()
    stack.enter_context(_no_failure_signal_handler())
    try:
        if address:
            check_reachable(address, field)
            check_speaks_ray(address, field)
            try:
                with _environment(CONNECT_ATTEMPTS):
                    ray.init(address=address, **common)
            except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError...
                if os.environ.get("RAY_AUTH_MODE") != "token":
                    hint = (
                        "; a cluster started by `ray start` (Ray >= 2.60) uses token authentication: export "
                        "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, from "
                        "`ray get-auth-token` on the head) for the driver"
                    )
                else:
                    hint = (
                        "; with RAY_AUTH_MODE=token, check that the driver's token (RAY_AUTH_TOKEN, "
                        "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) is the head's "
                        "(`ray get-auth-token` on the head)"
                    )
                raise ConfigError(
                    field,
                    f"cannot connect to the Ray cluster at {address}: "
                    f"{' '.join(str(exc).split())[:300]}{hint} (docs/cluster.md)",
                ) from None
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
        _shutdown(sigterm_handler)
        if exc.code == signal.SIGTERM:
            raise KeyboardInterrupt from None
        raise
    finally:
        stack.close()
        _restore(sigterm_handler)
    global _SESSION_OWNED
    _SESSION_OWNED = True
    try:
        if resources is not None:
            check_feasible(resources, where)
        yield description
    finally:
        _SESSION_OWNED = False
        _shutdown(sigterm_handler)


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


@contextmanager
def _no_failure_signal_handler() -> Iterator[None]:
    """The driver's core worker (created by ray.init) installs no C++ failure-signal handler:
    ``ray.shutdown`` uninstalls it by setting SIGTERM (with SIGSEGV...) to SIG_DFL below
    Python, so a SIGTERM during the second of shutdown killed the driver silently (-15).
    Only this process's constant is changed; the cluster's processes keep theirs."""
    from ray._private import ray_constants

    previous = ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    try:
        yield
    finally:
        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = previous


def _shutdown(sigterm_handler) -> None:
    """``ray.shutdown`` with a SIGTERM held back until it is done (an interrupt in the middle
    would leave the cluster's processes running), then the driver's handler put back and the
    held signal delivered to it."""
    import ray

    held: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.signal(signal.SIGTERM, lambda signum, frame: held.append(signum))
    try:
        ray.shutdown()
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if sigterm_handler is None else sigterm_handler)
            if held:
                signal.raise_signal(signal.SIGTERM)


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

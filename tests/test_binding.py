"""The driver's local Ray cluster listens on 127.0.0.1 only (``cluster.bind``, the default).

While a sweep runs on its own local cluster, every listening TCP socket of the driver and
of every process below it (GCS, raylet, object manager, workers, dashboard and runtime-env
agents) is read from ``/proc/net/tcp{,6}`` and the processes' file descriptors (what
``ss -ltnp`` shows; ``ss`` itself is cross-checked when installed). With
``cluster.bind=null`` (Ray's default) the same check finds sockets on other addresses,
which shows that the check sees what it claims to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ray_jobs.reaper import descendants
from tests.conftest import PROJECT_ROOT, TINY_SWEEP

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
SWEEP = [
    *TINY_SWEEP,
    "sweep.grid.k=[3]",
    "sweep.grid.n_minus_k=[0]",
    "resources.chunk_size=1",
    "protocol.early_stop_global=false",
    "protocol.max_iterations=30000",
    "cluster.num_cpus=2",
    f"cluster.object_store_memory={200 * 1024**2}",
]


def _address(hex_address: str) -> str:
    """``0100007F:1F90`` / 32 hex digits (IPv6) -> the address text (no port)."""
    import ipaddress

    host = hex_address.split(":")[0]
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))  # four little-endian 32-bit words
    address = ipaddress.IPv6Address(words)
    return f"::ffff:{address.ipv4_mapped}" if address.ipv4_mapped else str(address)


def listening_sockets() -> dict[int, str]:
    """socket inode -> local address of every TCP socket in LISTEN state."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                found[int(fields[9])] = _address(fields[1])
    return found


def listeners_of(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every listening socket the processes ``pids`` hold."""
    sockets = listening_sockets()
    found = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and int(link[8:-1]) in sockets:
                found.append((pid, sockets[int(link[8:-1])]))
    return found


def _listeners_while_running(tmp_path: Path, *overrides: str) -> list[tuple[int, str]]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    results = tmp_path / "results"
    code = "import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    driver = subprocess.Popen(
        [sys.executable, "-c", code, *SWEEP, *overrides, f"results_dir={results}"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not list((results / "smoke" / "runs").glob("*.parquet")):  # the cluster is up and running units
            assert driver.poll() is None and time.monotonic() < deadline, driver.stderr.read()[-3000:]
            time.sleep(0.1)
        tree = {driver.pid} | descendants(driver.pid)
        found = listeners_of(tree)
        if shutil.which("ss"):  # the same sockets as ss sees them
            ss = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
            for pid, _address in found:
                assert f"pid={pid}," in ss
        _, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    return found


def test_a_local_cluster_listens_on_loopback_only(tmp_path):
    found = _listeners_while_running(tmp_path)
    assert len({pid for pid, _ in found}) >= 3  # gcs, raylet, workers, agents... each with its own servers
    exposed = [(pid, address) for pid, address in found if address not in LOOPBACK]
    assert not exposed, f"listening beyond loopback: {exposed}"


@pytest.mark.slow
def test_with_rays_default_binding_the_check_sees_other_addresses(tmp_path):
    found = _listeners_while_running(tmp_path, "cluster.bind=null")
    assert [address for _, address in found if address not in LOOPBACK]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_make_ui_listens_on_loopback_only(tmp_path):
    """`make ui` (the MLflow UI over a results directory) serves on 127.0.0.1 only."""
    import urllib.request

    from ray_jobs.tracking import ensure_sqlite_store

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    ensure_sqlite_store(tmp_path)
    port = _free_port()
    ui = subprocess.Popen(
        ["make", "-s", "ui", f"RESULTS={tmp_path}", f"UI_PORT={port}"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    assert response.status == 200
                break
            except OSError:
                assert ui.poll() is None and time.monotonic() < deadline, "the MLflow UI did not start"
                time.sleep(0.5)
        found = listeners_of({ui.pid} | descendants(ui.pid))
        assert any(address == "127.0.0.1" for _, address in found)
        assert not [address for _, address in found if address not in LOOPBACK], found
    finally:
        os.killpg(ui.pid, 9)
        ui.wait()

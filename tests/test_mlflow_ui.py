"""The MLflow UI over a smoke sweep's store, in a real browser (headless Chromium).

A smoke sweep (``landscape-sweep sweep=smoke``, on the session's Ray cluster) writes its
sqlite store; ``mlflow ui`` serves it on 127.0.0.1; Chromium, driven over the DevTools
protocol (a small stdlib websocket client, no browser package), loads the experiment's
cells view and the test reads the rendered runs table: one row per cell, named by its axes,
with the swept axes and the metric values of report/table.csv. It also loads the runs page
in the model-training workflow: the parent run, and the description linking the cells view.

Skipped when no chromium / chromium-browser / google-chrome is on PATH (Debian:
``apt-get install chromium``). Slow: the smoke sweep (~1-3 min on 2 busy cores), the UI's
start and the page loads (~1 min).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from ray_jobs.tracking import CELLS_VIEW, NOTE_TAG, view_path
from tests.conftest import PROJECT_ROOT, children_of, mlflow_client, run_cli, wait_for_health

BROWSER = next(
    (
        found
        for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
        if (found := shutil.which(name))
    ),
    None,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        BROWSER is None,
        reason="no chromium, chromium-browser or google-chrome on PATH (Debian: apt-get install chromium)",
    ),
]

#: seconds the UI has to start, and a page to show what is asserted (2 busy cores: both are slow)
UI_START_S, PAGE_S = 240, 120


class WebSocket:
    """A blocking client of RFC 6455 text frames: enough for the DevTools protocol."""

    def __init__(self, url: str, *, timeout: float = 60):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._chunk()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _chunk(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the browser closed the websocket")
        return chunk

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self.buffer += self._chunk()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def send(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        size = len(payload)
        header = bytes([0x81]) + (
            bytes([0x80 | size])
            if size < 126
            else bytes([0x80 | 126]) + struct.pack(">H", size)
            if size < 1 << 16
            else bytes([0x80 | 127]) + struct.pack(">Q", size)
        )
        self.sock.sendall(header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload)))

    def recv(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack(">H", self._read(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(size)
            if first & 0x0F == 0x8:
                raise ConnectionError("the browser closed the websocket")
            if first & 0x0F in (0x0, 0x1, 0x2):  # continuation, text, binary (pings are skipped)
                message += payload
                if first & 0x80:
                    return message.decode()


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str, *, timeout: float = 60):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=3840,2160",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port_file = Path(self.profile) / "DevToolsActivePort"  # the port Chromium chose, once it listens
            deadline = time.monotonic() + timeout
            while not (port_file.is_file() and port_file.read_text().strip()):
                assert self.process.poll() is None, f"{binary} exited with {self.process.returncode}"
                assert time.monotonic() < deadline, f"{binary} did not open its DevTools port in {timeout} s"
                time.sleep(0.2)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as response:
                page = next(target for target in json.load(response) if target["type"] == "page")
            self.socket = WebSocket(page["webSocketDebuggerUrl"], timeout=timeout)
        except BaseException:
            self.close()
            raise
        self.calls = 0

    def call(self, method: str, **params):
        """One DevTools command; its result (events arriving meanwhile are dropped)."""
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, url: str, probe: str, ready, *, timeout: float = PAGE_S):
        """Load ``url``, then evaluate ``probe`` (JSON) every 0.5 s until ``ready(value)``;
        returns the value, or fails with the page's text after ``timeout`` seconds. A fresh
        document each time (a hash change alone would keep the single-page app's state)."""
        self.call("Page.navigate", url="about:blank")
        self.call("Page.navigate", url=url)
        return self.poll(probe, ready, timeout=timeout, what=url)

    def poll(self, probe: str, ready, *, timeout: float = PAGE_S, what: str = "the page"):
        """Evaluate ``probe`` (JSON) on the page as it is every 0.5 s until ``ready(value)``."""
        deadline = time.monotonic() + timeout
        while True:
            value = json.loads(self.evaluate(probe))
            if ready(value):
                return value
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText : ''")
                pytest.fail(
                    f"{what}: not shown after {timeout} s; the page reads: {' | '.join(text.split(chr(10)))[:3000]}"
                )
            time.sleep(0.5)

    def close(self) -> None:
        if getattr(self, "socket", None) is not None:
            self.socket.sock.close()
        try:
            os.killpg(self.process.pid, 9)
        except ProcessLookupError:
            pass
        self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


#: the runs table as rendered: run id -> {column id -> text} (ag-grid renders a row's pinned
#: and scrolled parts as separate elements with the same row-id), and the page's text
TABLE = """JSON.stringify((() => {
  const rows = {};
  for (const row of document.querySelectorAll('.ag-row[row-id]')) {
    const cells = rows[row.getAttribute('row-id')] = rows[row.getAttribute('row-id')] || {};
    for (const cell of row.querySelectorAll('[col-id]')) cells[cell.getAttribute('col-id')] = cell.innerText.trim();
  }
  return {rows, text: document.body ? document.body.innerText : '',
          links: Array.from(document.querySelectorAll('a')).map(a => [a.innerText.trim(), a.getAttribute('href')])};
})())"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def smoke_results(driver_env, tmp_path_factory) -> Path:
    """``landscape-sweep sweep=smoke`` into a fresh results directory (default sqlite store)."""
    results = tmp_path_factory.mktemp("ui") / "results"
    done = run_cli(["sweep=smoke", f"results_dir={results}"], env=driver_env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    (results.parent / "sweep.stderr").write_text(done.stderr)  # its last lines: the UI link
    return results


@pytest.fixture(scope="module")
def mlflow_ui(smoke_results) -> str:
    """``make ui`` over the smoke store on 127.0.0.1 (one worker: on 2 busy cores uvicorn's
    supervisor restarts workers that answer its pings late); yields its address. Its output
    (the links it prints first, then the server's log) goes to ``mlflow_ui.log``."""
    port = _free_port()
    log = open(smoke_results.parent / "mlflow_ui.log", "w")
    server = subprocess.Popen(
        [
            "make",
            "-s",
            "ui",
            f"RESULTS={smoke_results}",
            f"UI_PORT={port}",
            "UI_ARGS=--workers 1",
            f"BIN={os.path.dirname(sys.executable)}",
        ],
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(
            address,
            server,
            timeout=UI_START_S,
            name="mlflow ui",
            output=lambda: (smoke_results.parent / "mlflow_ui.log").read_text()[-3000:],
        )
        yield address
    finally:
        os.killpg(server.pid, 9)
        server.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    chromium = Chromium(BROWSER)
    try:
        yield chromium
    finally:
        chromium.close()


def _number(text: str) -> float:
    return math.nan if text in ("", "-") else float(text.replace(",", ""))


def test_the_cells_view_shows_one_row_per_cell_with_its_axes_and_metric_values(smoke_results, mlflow_ui, browser):
    client = mlflow_client(smoke_results)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("landscape-smoke").experiment_id],
        filter_string="tags.`landscape.role` = 'sweep'",
    )
    experiment_id = parent.info.experiment_id
    table = pd.read_csv(smoke_results / "smoke" / "report" / "table.csv")
    children = {child.info.run_id: child for child in children_of(client, parent.info.run_id, role="cell")}
    assert len(children) == len(table) == 6

    page = browser.wait_for(
        f"{mlflow_ui}/{view_path(experiment_id)}",
        TABLE,
        lambda page: (
            len(page["rows"]) >= len(table) and all("metrics.`runs`" in cells for cells in page["rows"].values())
        ),
    )
    assert "Cells of the latest run" in page["text"]  # the saved view, named in the Views menu
    rows = page["rows"]
    assert set(rows) == set(children)  # the cells of the last parent, flat, and nothing else
    metric_columns = {
        column[len("metrics.`") : -1] for cells in rows.values() for column in cells if column.startswith("metrics.")
    }
    assert {"runs", "frac_global", "frac_global_lo", "frac_global_hi"} <= metric_columns
    for run_id, cells in rows.items():
        name = cells["attributes.`Run Name`"]
        k, n = int(cells["params.`k`"]), int(cells["params.`n`"])
        assert f"k={k} n={n}" in name and children[run_id].info.run_name in name
        (expected,) = table[(table["k"] == k) & (table["n"] == n)].to_dict("records")
        for metric in metric_columns:
            shown, value = _number(cells[f"metrics.`{metric}`"]), float(expected[metric])
            assert shown == pytest.approx(value, rel=1e-6, abs=1e-12), (name, metric, cells)
    if "frac_spurious" in metric_columns:  # k = 8 usually has spurious minima in 50 seeds
        assert any(_number(cells["metrics.`frac_spurious`"]) > 0 for cells in rows.values())


def test_the_runs_page_opens_on_the_parent_and_links_the_cells_view(smoke_results, mlflow_ui, browser):
    client = mlflow_client(smoke_results)
    experiment = client.get_experiment_by_name("landscape-smoke")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`landscape.role` = 'sweep'")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert (
        experiment.tags[NOTE_TAG].startswith("Landscape sweep:")
        and str(smoke_results / "smoke" / "runs") in experiment.tags[NOTE_TAG]
    )
    # what the parent carries for the UI: the report table, the figures as images, the headline against k
    tags = client.get_run(parent.info.run_id).data.tags
    assert {"path": "report/table.json", "type": "table"} in json.loads(tags["mlflow.loggedArtifacts"])
    assert tags.get("mlflow.loggedImages") == "True"
    images = [item.path for item in client.list_artifacts(parent.info.run_id, "images")]
    assert any(path.startswith("images/spurious_fraction_vs_k+step+0+") for path in images), images
    history = client.get_metric_history(parent.info.run_id, "frac_spurious_vs_k/n_minus_k:0")
    assert sorted(point.step for point in history) == [6, 7, 8]

    # the model-training workflow (the UI's own default is GenAI): the runs table with the parent
    page = browser.wait_for(
        f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning",
        TABLE,
        lambda page: parent.info.run_id in page["rows"],
    )
    assert parent.info.run_name in page["rows"][parent.info.run_id]["attributes.`Run Name`"]
    assert ["Cells of the latest run", view_path(experiment.experiment_id)] in page["links"]  # the description's link
    assert "Model registry" in page["text"]  # the model-training sidebar, not the GenAI one
    assert CELLS_VIEW in view_path(experiment.experiment_id)


#: the runs table's rows as shown: run id -> {index: row index, cells: {column id: text}}
ROWS_IN_ORDER = """JSON.stringify((() => {
  const rows = {};
  for (const row of document.querySelectorAll('.ag-row[row-id]')) {
    const id = row.getAttribute('row-id');
    const entry = rows[id] = rows[id] || {index: Number(row.getAttribute('row-index')), cells: {}};
    for (const cell of row.querySelectorAll('[col-id]'))
      entry.cells[cell.getAttribute('col-id')] = cell.innerText.trim();
  }
  return {rows, text: document.body ? document.body.innerText : ''};
})())"""


def test_the_printed_link_opens_the_parent_with_its_cells_nested_in_a_fresh_browser(smoke_results, mlflow_ui):
    """The link the sweep prints at its end and ``make ui`` prints before it starts, opened
    in a browser with a new profile (MLflow's GenAI / model-training switch as a new user has
    it): the runs table, the parent with its cells nested (expanded) under it, the frac_* columns."""
    client = mlflow_client(smoke_results)
    experiment = client.get_experiment_by_name("landscape-smoke")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`landscape.role` = 'sweep'")
    children = {child.info.run_id for child in children_of(client, parent.info.run_id, role="cell")}
    swept = (smoke_results.parent / "sweep.stderr").read_text()
    (printed,) = re.findall(r"^MLflow UI: (http://\S+) ", swept, flags=re.M)
    made = (smoke_results.parent / "mlflow_ui.log").read_text()
    (link,) = re.findall(r"^MLflow UI, landscape-smoke: (http://\S+)$", made, flags=re.M)
    assert link == printed.replace("http://127.0.0.1:5000", mlflow_ui)  # the same link, at make ui's port
    assert link.startswith(f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs?")
    assert "workflowType=machine_learning" in link

    started = time.monotonic()
    fresh = Chromium(BROWSER)  # a new --user-data-dir: nothing remembered from another page
    try:
        page = fresh.wait_for(  # the runs table, the parent with the view's columns, its cells under its expander
            link,
            ROWS_IN_ORDER,
            lambda page: (
                parent.info.run_id in page["rows"]
                and "metrics.`frac_global`" in page["rows"][parent.info.run_id]["cells"]
            ),
        )
        shown = time.monotonic() - started
        assert "Model registry" in page["text"]  # the model-training sidebar, not GenAI's traces
        assert parent.info.run_name in page["rows"][parent.info.run_id]["cells"]["attributes.`Run Name`"]
        clicked = fresh.evaluate(
            f"""(() => {{ const button = document.querySelector(
                '.ag-row[row-id="{parent.info.run_id}"] [col-id="attributes.`Run Name`"] button');
                if (button) button.click(); return Boolean(button); }})()"""
        )
        assert clicked, "no expander on the parent's row: its cells are not nested under it"
        page = fresh.poll(ROWS_IN_ORDER, lambda page: children <= set(page["rows"]), what="the parent's cells")
    finally:
        fresh.close()
    print(
        f"fresh browser: the printed link showed the runs table with the parent in {shown:.1f} s, "
        f"its {len(children)} cells nested under it after one click ({time.monotonic() - started:.1f} s in all)"
    )
    rows = page["rows"]
    order = sorted(rows, key=lambda run_id: rows[run_id]["index"])
    at = order.index(parent.info.run_id)
    assert set(order[at + 1 : at + 1 + len(children)]) == children  # nested: right under their parent
    columns = set(rows[parent.info.run_id]["cells"])
    assert {"metrics.`frac_global`", "metrics.`frac_global_lo`", "metrics.`frac_global_hi`"} <= columns
    assert {"params.`k`", "params.`n`"} <= columns
    for run_id in children:
        assert rows[run_id]["cells"]["metrics.`frac_global`"] not in ("", "-")

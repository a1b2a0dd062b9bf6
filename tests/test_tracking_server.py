"""A sweep tracked on a real MLflow server (``mlflow server`` on 127.0.0.1, started here).

The parent run and one child per cell land on the server with their metrics, the report
files as artifacts (through the server's artifact proxy); the Parquet rows land under
``results_dir`` as always, and nothing MLflow-related is written there (no mlflow.db).
An unreachable server is refused in seconds (tests/test_faults.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pandas as pd
import pytest

from ray_jobs.config import compose_config
from ray_jobs.sweep import run_sweep
from tests.conftest import TINY_CELLS, TINY_SEEDS, TINY_SWEEP, children_of, wait_for_health

# 20 s alone, ~2.5 min beside other work on 2 cores (an MLflow server and a sweep): `make test-all`; the default
# suite keeps the sqlite store and the unreachable-server refusal (tests/test_faults.py)
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a sqlite store and proxied artifacts; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    server = subprocess.Popen(
        [
            mlflow,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(
            uri, server, timeout=120, name="mlflow server", output=lambda: server.stderr.read().decode()[-3000:]
        )
        yield uri, root
    finally:
        os.killpg(server.pid, 9)
        server.wait()


def test_a_sweep_tracked_on_a_server_logs_parent_children_metrics_and_artifacts(ray_session, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    uri, root = mlflow_server
    results = tmp_path / "results"
    result = run_sweep(compose_config([*TINY_SWEEP, f"results_dir={results}", f"tracking.uri={uri}"]))
    assert result.units_failed == 0
    assert len(pd.read_parquet(results / "smoke" / "runs")) == TINY_CELLS * TINY_SEEDS
    assert not (results / "mlflow.db").exists() and not (results / "mlartifacts").exists()

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.name == "landscape-smoke"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens its runs table
    assert parent.data.params["results_dir"] == str(results.resolve())
    assert parent.data.metrics["units_scheduled"] == 8 and parent.data.metrics["units_failed"] == 0
    children = children_of(client, result.parent_run_id, role="cell")
    assert len(children) == TINY_CELLS
    assert all(child.data.metrics["runs"] == TINY_SEEDS for child in children)
    assert sorted((int(c.data.params["k"]), int(c.data.params["n"])) for c in children) == [
        (2, 2),
        (2, 3),
        (3, 3),
        (3, 4),
    ]
    artifacts = {item.path for item in client.list_artifacts(result.parent_run_id, "report")}
    assert "report/table.md" in artifacts and "report/table.csv" in artifacts
    # the line a sweep prints last: the server's own address, the runs table in the model-training workflow
    from ray_jobs.tracking.links import sweep_link_line

    cfg = compose_config([*TINY_SWEEP, f"results_dir={results}", f"tracking.uri={uri}"])
    assert sweep_link_line(cfg, results, result.parent_run_id) == (
        f"MLflow UI: {uri}/#/experiments/{experiment.experiment_id}/runs"
        "?viewStateShareKey=landscape-latest&workflowType=machine_learning"
    )
    local = client.download_artifacts(result.parent_run_id, "report/table.md", str(tmp_path))
    assert open(local).read() == (results / "smoke" / "report" / "table.md").read_text()
    assert (root / "artifacts").is_dir()
    # the parent charts the headline against k by itself: one history per n - k, step = k
    for name in (
        "frac_spurious_vs_k/n_minus_k:0",
        "frac_spurious_vs_k/n_minus_k:1",
        "frac_certified_spurious_vs_k/n_minus_k:0",
    ):
        history = client.get_metric_history(result.parent_run_id, name)
        assert [point.step for point in sorted(history, key=lambda p: p.step)] == [2, 3]
        assert all(point.value == 0.0 for point in history)  # k = 2, 3: no spurious run
    import json

    assert {"path": "report/table.json", "type": "table"} in json.loads(
        client.get_run(result.parent_run_id).data.tags["mlflow.loggedArtifacts"]
    )  # what the UI's table view reads
    logged = json.loads(
        open(client.download_artifacts(result.parent_run_id, "report/table.json", str(tmp_path))).read()
    )
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    assert len(table) == TINY_CELLS and {"k", "n", "frac_spurious", "frac_spurious_lo"} <= set(table.columns)

    # a rerun: nothing to schedule, a new parent (one per invocation), the same children values
    again = run_sweep(compose_config([*TINY_SWEEP, f"results_dir={results}", f"tracking.uri={uri}"]))
    assert again.units_scheduled == 0 and again.parent_run_id != result.parent_run_id
    assert len(children_of(client, again.parent_run_id, role="cell")) == TINY_CELLS

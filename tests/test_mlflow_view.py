"""What MLflow shows of a sweep, and ``landscape-report`` logging its rebuilt report.

- More than ``UI_MAX_RUNS`` cells: one warning per invocation pointing at the Parquet
  dataset (the tracker alone on a tmp sqlite store, no Ray).
- The experiment's saved view ``Cells of the latest run``: the last parent's children, flat,
  swept axes and the metrics with an interval as columns; figures also as MLflow images.
- ``landscape-report`` logs a ``report`` run with the rebuilt report (files, table,
  histories) to the store of the sweep's saved config; nothing with ``tracking=none``; a
  dead server is one line and exit 2 (a tiny sweep on the session's Ray cluster).
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from ray_jobs.tracking import (
    CELLS_VIEW,
    LATEST_VIEW,
    NOTE_TAG,
    UI_MAX_RUNS,
    VIEW_TAG,
    SweepTracker,
    default_tracking_uri,
    ensure_sqlite_store,
    latest_path,
    view_path,
)
from ray_jobs.tracking.links import store_links
from tests.conftest import PROJECT_ROOT, TINY_CELLS, TINY_SEEDS, TINY_SWEEP, children_of, mlflow_client


def tracker_on(store: Path, name: str) -> SweepTracker:
    """A tracker on ``<store>/mlflow.db`` (created as the service creates it), experiment ``name``."""
    ensure_sqlite_store(store)
    return SweepTracker(default_tracking_uri(store), name, (store / "mlartifacts" / name).as_uri())


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One sqlite store for the tracker tests (its migrations take seconds); one experiment per test."""
    path = tmp_path_factory.mktemp("store")
    ensure_sqlite_store(path)
    return path


def warnings_of(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "ray_jobs.tracking" and record.levelno == logging.WARNING
    ]


def test_more_cells_than_the_ui_lists_warns_once_pointing_at_the_parquet_dataset(store, tmp_path, caplog):
    tracker = tracker_on(store, "many")
    with caplog.at_level(logging.WARNING, logger="ray_jobs.tracking"):
        tracker.start("big@now", {"cells": UI_MAX_RUNS + 1, "results_dir": str(tmp_path)}, {"sweep": "big"})
        tracker.log_cell("k=1", {"k": 1}, {"runs": 1}, {"cell_id": "c1", "sweep": "big"})
        tracker.log_cell("k=2", {"k": 2}, {"runs": 1}, {"cell_id": "c2", "sweep": "big"})
        tracker.finish("FINISHED")
    (line,) = warnings_of(caplog)
    assert "\n" not in line
    assert f"{UI_MAX_RUNS + 1:,} child runs" in line and f"more than {UI_MAX_RUNS:,} runs" in line
    assert str(tmp_path / "big" / "runs") in line and "pandas.read_parquet or duckdb" in line


def test_no_warning_up_to_the_limit_and_one_when_the_children_pass_it(store, tmp_path, caplog):
    tracker = tracker_on(store, "limit")
    with caplog.at_level(logging.WARNING, logger="ray_jobs.tracking"):
        tracker.start("ok@now", {"cells": UI_MAX_RUNS, "results_dir": str(tmp_path)}, {"sweep": "ok"})
        tracker.log_cell("k=1", {"k": 1}, {"runs": 1}, {"cell_id": "c1", "sweep": "ok"})
        assert warnings_of(caplog) == []
        # a search's trials are not counted up front: the children logged are (one warning only)
        tracker.children = UI_MAX_RUNS
        tracker.log_cell("trial 1000", {"k": 2}, {"runs": 1}, {"sweep": "ok"}, kind="trial")
        tracker.log_cell("trial 1001", {"k": 3}, {"runs": 1}, {"sweep": "ok"}, kind="trial")
    (line,) = warnings_of(caplog)
    assert f"{UI_MAX_RUNS + 1:,} child runs" in line and str(tmp_path / "ok" / "runs") in line


def test_the_warning_is_one_line_on_the_console(store, tmp_path):
    """In a fresh interpreter (as the CLI runs it), with no logging set up: one stderr line."""
    code = (
        "import sys; from pathlib import Path; from tests.test_mlflow_view import tracker_on; "
        "t = tracker_on(Path(sys.argv[2]), 'console'); "
        "t.start('big@now', {'cells': 5000, 'results_dir': sys.argv[1]}, {'sweep': 'big'})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), str(store)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "child runs" in line]
    assert len(lines) == 1 and str(tmp_path / "big" / "runs") in lines[0] and "5,000 child runs" in lines[0], (
        done.stderr
    )


def view_of(client, experiment_id: str) -> dict:
    """The saved view ``landscape-cells`` of the experiment: its envelope with the state parsed."""
    view = json.loads(client.get_experiment(experiment_id).tags[VIEW_TAG + CELLS_VIEW])
    return {**view, "state": json.loads(view["state"])}


def test_the_cells_view_shows_the_last_parents_children_with_axes_and_interval_metrics(store, tmp_path):
    tracker = tracker_on(store, "view")
    tracker.start("s@1", {"cells": 3, "results_dir": str(tmp_path)}, {"sweep": "s"})
    for k in (2, 3, 10):
        tracker.log_cell(
            f"k={k} n=4",
            {"sweep": "s", "cell_id": f"c{k}", "k": k, "n": 4},
            {
                "runs": 6,
                "frac_spurious": 0.5 if k == 10 else 0.0,
                "frac_spurious_lo": 0.1,
                "frac_spurious_hi": 0.9,
                "frac_saddle": 0.0,
                "frac_saddle_lo": 0.0,
                "frac_saddle_hi": 0.4,
                "n_spurious": 3.0,
            },
            {"cell_id": f"c{k}", "sweep": "s"},
        )
    tracker.finish("FINISHED")
    view = view_of(tracker.client, tracker.experiment_id)
    state = view["state"]
    assert view["name"] == "Cells of the latest run" and isinstance(view["createdAt"], int)
    assert state["searchFilter"] == f"tags.mlflow.parentRunId = '{tracker.parent_run_id}'"
    assert state["orderByKey"] == "params.`k`" and state["orderByAsc"] is True  # not by date: MLflow would nest them
    assert (
        state["selectedColumns"]
        == state["columnOrder"]
        == [
            "params.`k`",
            "metrics.`runs`",
            "metrics.`frac_spurious`",
            "metrics.`frac_spurious_lo`",
            "metrics.`frac_spurious_hi`",
        ]
    )
    note = tracker.client.get_experiment(tracker.experiment_id).tags[NOTE_TAG]  # the description links the view
    assert note.startswith("Landscape sweep:") and f"({view_path(tracker.experiment_id)})" in note
    assert str(tmp_path / "s" / "runs") in note
    first = tracker.parent_run_id

    again = tracker_on(store, "view")  # the next invocation: the view follows its parent
    again.start("s@2", {"cells": 3, "results_dir": str(tmp_path)}, {"sweep": "s"})
    again.log_cell(
        "k=2 n=4", {"sweep": "s", "cell_id": "c2", "k": 2, "n": 4}, {"runs": 6}, {"cell_id": "c2", "sweep": "s"}
    )
    again.finish("KILLED")  # an interrupted invocation leaves the view alone
    assert view_of(again.client, again.experiment_id)["state"]["searchFilter"].endswith(f"'{first}'")
    again.start("s@3", {"cells": 3, "results_dir": str(tmp_path), "other": 1}, {"sweep": "s"})
    again.log_cell(
        "k=2 n=4", {"sweep": "s", "cell_id": "c2", "k": 2, "n": 4}, {"runs": 6}, {"cell_id": "c2", "sweep": "s"}
    )
    again.finish("FINISHED")
    assert view_of(again.client, again.experiment_id)["state"]["searchFilter"].endswith(f"'{again.parent_run_id}'")
    again.client.set_experiment_tag(again.experiment_id, NOTE_TAG, "my own notes")  # a user's description stays
    again.start("s@4", {"cells": 3, "results_dir": str(tmp_path), "other": 2}, {"sweep": "s"})
    again.log_cell(
        "k=2 n=4", {"sweep": "s", "cell_id": "c2", "k": 2, "n": 4}, {"runs": 6}, {"cell_id": "c2", "sweep": "s"}
    )
    again.finish("FINISHED")
    assert again.client.get_experiment(again.experiment_id).tags[NOTE_TAG] == "my own notes"


def test_children_left_running_under_a_parent_not_continued_are_marked_killed(store, tmp_path):
    """A child a stopped driver left RUNNING (a full disk between MLflow's calls) under a parent
    the next invocation does not continue (other parameters) is marked KILLED by it."""
    tracker = tracker_on(store, "orphans")
    tracker.start("s@1", {"cells": 2, "results_dir": str(tmp_path)}, {"sweep": "s"})
    old = tracker.parent_run_id
    done = tracker.log_cell("k=1", {"k": 1}, {"runs": 1}, {"cell_id": "c1", "sweep": "s"})
    stuck = tracker.client.create_run(
        tracker.experiment_id, tags={"mlflow.parentRunId": old, "landscape.role": "cell", "cell_id": "c2", "sweep": "s"}
    ).info.run_id
    tracker.finish("FAILED")
    again = tracker_on(store, "orphans")
    again.start("s@2", {"cells": 2, "results_dir": str(tmp_path), "other": 1}, {"sweep": "s"})  # not continued
    assert again.parent_run_id != old and not again.logged_cells and not again.unfinished
    assert again.client.get_run(stuck).info.status == "KILLED"
    assert again.client.get_run(done).info.status == "FINISHED"
    again.log_cell("k=2", {"k": 2}, {"runs": 1}, {"cell_id": "c2", "sweep": "s"})
    assert again.children == 1


def test_figures_are_logged_as_images_too_once_per_run(store, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure_path = tmp_path / "spurious_fraction_vs_k.png"
    plt.figure(figsize=(2, 2)).savefig(figure_path)
    plt.close("all")
    (tmp_path / "table.md").write_text("# t\n")
    tracker = tracker_on(store, "images")
    tracker.start("s@1", {"cells": 1, "results_dir": str(tmp_path)}, {"sweep": "s"})
    for _ in range(2):  # a continued parent logs its report again
        tracker.log_artifacts([tmp_path / "table.md", figure_path], artifact_path="report")
    run_id = tracker.parent_run_id
    assert {item.path for item in tracker.client.list_artifacts(run_id, "report")} == {
        "report/table.md",
        "report/spurious_fraction_vs_k.png",
    }
    images = [item.path for item in tracker.client.list_artifacts(run_id, "images")]
    assert len([path for path in images if path.endswith(".png")]) == 1, images
    assert images[0].startswith("images/spurious_fraction_vs_k+step+0+")
    assert tracker.client.get_run(run_id).data.tags["mlflow.loggedImages"] == "True"


# --- landscape-report -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tracked_sweep(ray_session, tmp_path_factory):
    """The tiny sweep with the default sqlite tracking: (results_dir, its result)."""
    from ray_jobs.config import compose_config
    from ray_jobs.sweep import run_sweep

    results = tmp_path_factory.mktemp("view") / "results"
    result = run_sweep(compose_config([*TINY_SWEEP, f"results_dir={results}", "tracking=sqlite"]))
    assert result.units_failed == 0 and result.parent_run_id
    return results, result


def report(args: list[str], capsys) -> tuple[int, str]:
    from ray_jobs.cli import report_main

    code = report_main(args)
    return code, capsys.readouterr().err


def copy_of_sweep(results: Path, where: Path, tracking: dict) -> Path:
    """The sweep's rows and config under ``where`` (no MLflow store, no report), its
    tracking section replaced by ``tracking``."""
    shutil.copytree(results / "smoke" / "runs", where / "smoke" / "runs")
    cfg = OmegaConf.load(results / "smoke" / "config.yaml")
    cfg.tracking = tracking
    (where / "smoke" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return where


def test_a_sweep_saves_the_cells_view_of_its_parent(tracked_sweep):
    results, result = tracked_sweep
    client = mlflow_client(results)
    experiment_id = client.get_run(result.parent_run_id).info.experiment_id
    state = view_of(client, experiment_id)["state"]
    assert state["searchFilter"] == f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    assert state["orderByKey"] == "params.`k`"
    assert {
        "params.`k`",
        "params.`n`",
        "metrics.`runs`",
        "metrics.`frac_global`",
        "metrics.`frac_global_lo`",
        "metrics.`frac_global_hi`",
    } <= set(state["selectedColumns"])
    assert "params.`step`" not in state["selectedColumns"]  # not swept
    assert f"({view_path(experiment_id)})" in client.get_experiment(experiment_id).tags[NOTE_TAG]


def test_a_sweep_saves_the_view_of_its_parent_with_the_cells_nested_and_prints_its_link(tracked_sweep):
    results, result = tracked_sweep
    client = mlflow_client(results)
    experiment_id = client.get_run(result.parent_run_id).info.experiment_id
    cells = view_of(client, experiment_id)["state"]
    view = json.loads(client.get_experiment(experiment_id).tags[VIEW_TAG + LATEST_VIEW])
    state = json.loads(view["state"])
    assert view["name"] == "Latest run and its cells"
    assert state["orderByKey"] == "attributes.start_time" and not state["searchFilter"]  # nested by the UI
    assert state["selectedColumns"] == cells["selectedColumns"]
    assert f"({latest_path(experiment_id)})" in client.get_experiment(experiment_id).tags[NOTE_TAG]
    link = f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?viewStateShareKey={LATEST_VIEW}"
    assert store_links(results / "mlflow.db", "http://127.0.0.1:5000") == [
        ("landscape-smoke", f"{link}&workflowType=machine_learning")
    ]
    # what `make ui` prints first (python -m ray_jobs.tracking.links RESULTS PORT)
    done = subprocess.run(
        [sys.executable, "-m", "ray_jobs.tracking.links", str(results), "5123"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.splitlines() == [
        f"MLflow UI, landscape-smoke: {link.replace('5000', '5123')}&workflowType=machine_learning"
    ], done


def test_the_line_a_sweep_prints_last_links_its_runs_table_and_none_without_tracking(tracked_sweep):
    from ray_jobs.config import compose_config
    from ray_jobs.tracking.links import sweep_link_line

    results, result = tracked_sweep
    experiment_id = mlflow_client(results).get_run(result.parent_run_id).info.experiment_id
    cfg = compose_config([*TINY_SWEEP, f"results_dir={results}", "tracking=sqlite"])
    line = sweep_link_line(cfg, results, result.parent_run_id)
    assert line.startswith(
        f"MLflow UI: http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"
        "?viewStateShareKey=landscape-latest&workflowType=machine_learning (start it with `make ui`"
    ), line
    assert sweep_link_line(compose_config([*TINY_SWEEP, "tracking=none"]), results, result.parent_run_id) is None


def test_numeric_grid_axes_of_the_cells_are_also_metrics_that_sort_as_numbers(tracked_sweep, store):
    results, result = tracked_sweep
    client = mlflow_client(results)
    children = children_of(client, result.parent_run_id, role="cell")
    assert len(children) == TINY_CELLS
    for child in children:  # sweep.grid's k (n_minus_k is no param of a cell; step, init_scale are no axes)
        params, metrics = child.data.params, child.data.metrics
        assert metrics["axis/k"] == float(params["k"])
        assert {key for key in metrics if key.startswith("axis/")} == {"axis/k"}, metrics
    # k = 9, 10, 12: as params (strings) 10 < 12 < 9, as the axis metric 9 < 10 < 12
    tracker = tracker_on(store, "axes")
    tracker.grid_axes = {"k"}
    tracker.start("axes@now", {"cells": 3}, {"sweep": "axes"})
    for k in (12, 9, 10):
        tracker.log_cell(f"k={k} lr=0.5", {"sweep": "axes", "k": k, "lr": 0.5}, {"runs": 1}, {"sweep": "axes"})

    def order(key: str) -> list[str]:
        runs = tracker.client.search_runs(
            [tracker.experiment_id], filter_string="tags.`landscape.role` = 'cell'", order_by=[f"{key} ASC"]
        )
        return [run.data.params["k"] for run in runs]

    assert order("params.`k`") == ["10", "12", "9"]
    assert order("metrics.`axis/k`") == ["9", "10", "12"]
    assert "axis/lr" not in tracker.client.search_runs([tracker.experiment_id])[0].data.metrics  # not an axis


def test_landscape_report_logs_the_rebuilt_report_as_a_report_run(tracked_sweep, capsys):
    results, result = tracked_sweep
    code, err = report([f"results_dir={results}", "sweep_name=smoke", "report.confidence=0.95"], capsys)
    assert code == 0, err
    client = mlflow_client(results)
    experiment_id = client.get_run(result.parent_run_id).info.experiment_id
    (run,) = client.search_runs([experiment_id], filter_string="tags.`landscape.role` = 'report'")
    assert run.info.run_id in err.splitlines()[-1]
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("smoke-report@")
    assert run.data.tags["landscape.sweep_run"] == result.parent_run_id and "mlflow.parentRunId" not in run.data.tags
    assert run.data.params["confidence"] == "0.95" and run.data.params["sweep"] == "smoke"
    assert run.data.params["results_dir"] == str(results.resolve()) and run.data.params["code_version"]
    assert run.data.metrics["cells"] == TINY_CELLS and run.data.metrics["runs"] == TINY_CELLS * TINY_SEEDS
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/table.md", "report/table.csv", "report/table.json"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "report/table.md", str(results.parent))
    assert Path(local).read_text() == (results / "smoke" / "report" / "table.md").read_text()
    assert {item.path for item in client.list_artifacts(run.info.run_id, "config")} == {"config/config.yaml"}
    logged = json.loads(
        Path(client.download_artifacts(run.info.run_id, "report/table.json", str(results.parent))).read_text()
    )
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    csv = pd.read_csv(results / "smoke" / "report" / "table.csv")
    assert len(table) == TINY_CELLS and list(table["frac_global_lo"]) == pytest.approx(list(csv["frac_global_lo"]))
    history = client.get_metric_history(run.info.run_id, "frac_spurious_vs_k/n_minus_k:0")
    assert sorted(point.step for point in history) == [2, 3]
    # the sweep's own runs are untouched: still one parent and its children
    assert len(children_of(client, result.parent_run_id, role="cell")) == TINY_CELLS

    code, err = report([f"results_dir={results}", "sweep_name=smoke"], capsys)  # a second rebuild: a second run
    assert code == 0, err
    runs = client.search_runs([experiment_id], filter_string="tags.`landscape.role` = 'report'")
    assert sorted(r.data.params["confidence"] for r in runs) == ["0.95", "0.99"]


def test_landscape_report_logs_nothing_with_tracking_none(tracked_sweep, tmp_path, capsys):
    results, _ = tracked_sweep
    where = copy_of_sweep(results, tmp_path / "results", {"enabled": False, "uri": None, "experiment_name": None})
    code, err = report([f"results_dir={where}", "sweep_name=smoke"], capsys)
    assert code == 0, err
    assert (where / "smoke" / "report" / "table.md").is_file()
    assert not (where / "mlflow.db").exists() and not (where / "mlartifacts").exists() and "MLflow" not in err


def test_landscape_report_with_a_dead_server_is_one_line_and_exit_2(tracked_sweep, tmp_path, capsys):
    results, _ = tracked_sweep
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    where = copy_of_sweep(
        results, tmp_path / "results", {"enabled": True, "uri": f"http://127.0.0.1:{port}", "experiment_name": None}
    )
    code, err = report([f"results_dir={where}", "sweep_name=smoke"], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("landscape-report: error: tracking.uri: no MLflow server answers at http://127.0.0.1:")
    assert not (where / "smoke" / "report").exists()  # refused before rebuilding anything

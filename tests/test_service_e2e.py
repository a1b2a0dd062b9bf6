"""End to end on a local Ray cluster (2 CPUs): rows, MLflow, report, resume, kill, errors.

Everything runs the real ``landscape_core.teacher_student`` with tiny budgets
(k = 2, 3; n = k, k + 1; 6 seeds; 4000 iterations).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import binomtest

from ray_jobs.config import compose_config
from ray_jobs.experiments.base import RUN_STATUSES as EXPERIMENT_STATUSES
from ray_jobs.report import TABLE_CSV, TABLE_MD
from ray_jobs.store import CONTRACT_COLUMNS
from ray_jobs.sweep import run_sweep
from tests.conftest import (
    PROJECT_ROOT,
    TINY_CELLS,
    TINY_SEEDS,
    TINY_SWEEP,
    TINY_UNITS,
    children_of,
    mlflow_client,
    run_cli,
    sigkill_driver_when,
)
from tests.service_helpers import smoke_run

RUN_STATUSES = list(EXPERIMENT_STATUSES)


def sweep(results_dir: Path, *overrides: str):
    """Run the tiny sweep in this process (on the session's Ray cluster)."""
    return run_sweep(compose_config([*TINY_SWEEP, f"results_dir={results_dir}", *overrides]))


def read_rows(results_dir: Path, name: str = "smoke") -> pd.DataFrame:
    """All rows, read as a user would: pandas over the Parquet directory."""
    return pd.read_parquet(results_dir / name / "runs")


def assert_children_match_report(results: Path, parent_run_id: str, name: str = "smoke") -> None:
    """Every metric of every cell's child run equals the report's column of that cell (the
    child aggregates the rows the driver held in memory and those read from the store)."""
    table = pd.read_csv(results / name / "report" / TABLE_CSV).set_index("cell_id")
    children = children_of(mlflow_client(results), parent_run_id)
    assert {child.data.params["cell_id"] for child in children} == set(table.index)
    for child in children:
        row = table.loc[child.data.params["cell_id"]]
        shared = [key for key in child.data.metrics if key in row.index]
        assert len(shared) > 10
        for key in shared:
            assert child.data.metrics[key] == pytest.approx(float(row[key]), rel=1e-9, abs=1e-12), key


@pytest.fixture(scope="module")
def first_run(ray_session, tmp_path_factory):
    """The tiny sweep, run once per session and shared with the contract test (tests/service_helpers.py)."""
    return smoke_run("teacher_student", tmp_path_factory)


def test_rows_cells_times_seeds_with_valid_statuses(first_run):
    results, result = first_run
    assert result.units_scheduled == TINY_UNITS and result.units_failed == 0
    rows = read_rows(results)
    assert len(rows) == TINY_CELLS * TINY_SEEDS
    assert not rows.duplicated(["cell_id", "seed"]).any()
    assert set(rows["status"]) <= set(RUN_STATUSES)
    assert set(CONTRACT_COLUMNS) <= set(rows.columns)
    assert {"k", "n", "min_eig", "final_weights"} <= set(rows.columns)
    assert rows["error_message"].isna().all()
    assert sorted(rows.groupby(["k", "n"]).size().items()) == [((2, 2), 6), ((2, 3), 6), ((3, 3), 6), ((3, 4), 6)]
    assert all(len(w) == n * k for w, k, n in zip(rows["final_weights"], rows["k"], rows["n"]))
    fragments = sorted(p.stem for p in (results / "smoke" / "runs").glob("*.parquet"))
    assert fragments == sorted(rows["unit_id"].unique())
    assert rows["code_version"].nunique() == 1 and rows["code_version"].iloc[0]
    config = json.loads(rows["config_json"].iloc[0])
    assert config["experiment"] == "teacher_student" and config["max_iterations"] == 4000
    assert (results / "smoke" / "config.yaml").is_file()
    assert not list((results / "smoke" / "runs").glob(".*"))  # no staging leftovers


def _wilson_99(count: int, total: int) -> tuple[float, float]:
    interval = binomtest(count, total).proportion_ci(confidence_level=0.99, method="wilson")
    return interval.low, interval.high


def test_report_matches_an_independent_aggregation(first_run):
    results, _ = first_run
    rows = read_rows(results)
    table = pd.read_csv(results / "smoke" / "report" / TABLE_CSV)
    assert len(table) == TINY_CELLS
    for (k, n), cell in rows.groupby(["k", "n"]):
        row = table[(table["k"] == k) & (table["n"] == n)].iloc[0]
        assert row["runs"] == len(cell) and row["errors"] == 0
        for status in RUN_STATUSES:
            count = int((cell["status"] == status).sum())
            lo, hi = _wilson_99(count, len(cell))
            assert row[f"n_{status}"] == count
            assert row[f"frac_{status}"] == pytest.approx(count / len(cell))
            assert row[f"frac_{status}_lo"] == pytest.approx(lo, abs=1e-9)
            assert row[f"frac_{status}_hi"] == pytest.approx(hi, abs=1e-9)
        spurious = cell[cell["status"] == "spurious"]
        if len(spurious):
            assert row["mean_objective_spurious"] == pytest.approx(spurious["final_loss"].mean())
            assert row["mean_min_eig_spurious"] == pytest.approx(spurious["min_eig"].mean())
        else:
            assert math.isnan(row["mean_objective_spurious"]) and row["n_families"] == 0
    markdown = (results / "smoke" / "report" / TABLE_MD).read_text()
    assert markdown.count("\n| ") == TINY_CELLS + 1  # header + one line per cell
    assert (results / "smoke" / "report" / "spurious_fraction_vs_k.png").stat().st_size > 0


def test_mlflow_parent_and_one_child_per_cell_with_metrics(first_run):
    results, result = first_run
    client = mlflow_client(results)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep"] == "smoke" and parent.data.params["cells"] == str(TINY_CELLS)
    assert parent.data.metrics["units_scheduled"] == TINY_UNITS
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/table.md", "report/table.csv"} <= artifacts
    children = children_of(client, result.parent_run_id)
    assert len(children) == TINY_CELLS
    table = pd.read_csv(results / "smoke" / "report" / TABLE_CSV).set_index("cell_id")
    for child in children:
        cell_id = child.data.params["cell_id"]
        metrics = child.data.metrics
        assert metrics["runs"] == TINY_SEEDS
        for status in RUN_STATUSES:  # same names and values as the report's columns
            assert metrics[f"frac_{status}"] == pytest.approx(table.loc[cell_id, f"frac_{status}"])
            assert metrics[f"frac_{status}_hi"] == pytest.approx(table.loc[cell_id, f"frac_{status}_hi"])
        assert metrics["n_families"] == table.loc[cell_id, "n_families"]
        assert child.data.params["k"] == str(table.loc[cell_id, "k"])
        assert child.data.params["step"] == "0.1"
    assert_children_match_report(results, result.parent_run_id)


def test_second_run_schedules_nothing_and_adds_no_rows(first_run):
    results, _ = first_run
    runs_dir = results / "smoke" / "runs"
    before = {p.name: p.stat().st_mtime_ns for p in runs_dir.glob("*.parquet")}
    rows_before = read_rows(results)
    again = sweep(results)
    assert again.units_scheduled == 0 and again.units_skipped == TINY_UNITS
    assert {p.name: p.stat().st_mtime_ns for p in runs_dir.glob("*.parquet")} == before
    pd.testing.assert_frame_equal(read_rows(results), rows_before)
    assert len(children_of(mlflow_client(results), again.parent_run_id)) == TINY_CELLS
    assert_children_match_report(results, again.parent_run_id)  # logged from the report's rows


def test_report_cli_rebuilds_the_same_table(first_run):
    results, _ = first_run
    table_csv = results / "smoke" / "report" / TABLE_CSV
    expected = table_csv.read_text()
    table_csv.unlink()
    from ray_jobs.cli import report_main

    assert report_main([f"results_dir={results}", "sweep_name=smoke"]) == 0
    assert table_csv.read_text() == expected
    assert report_main([f"results_dir={results}", "sweep_name=nope"]) == 2


def test_failing_task_becomes_error_rows_and_the_sweep_goes_on(ray_session, tmp_path):
    results = tmp_path / "results"
    result = sweep(results, "experiment.fail_on_seeds=[4]")  # seed 4 is in the second chunk of every cell
    assert result.units_failed == TINY_CELLS
    rows = read_rows(results)
    assert len(rows) == TINY_CELLS * TINY_SEEDS
    errors = rows[rows["status"] == "error"]
    assert sorted(errors["seed"].unique()) == [3, 4, 5]
    assert len(errors) == TINY_CELLS * 3
    assert errors["error_message"].str.contains("InjectedFault: fault injected for seeds \\[4\\]").all()
    assert errors["k"].notna().all() and errors["final_loss"].isna().all()
    assert set(rows.loc[rows["status"] != "error", "status"]) <= set(RUN_STATUSES)
    table = pd.read_csv(results / "smoke" / "report" / TABLE_CSV)
    assert (table["errors"] == 3).all() and (table["runs"] == 3).all()
    parent = mlflow_client(results).get_run(result.parent_run_id)
    assert parent.data.metrics["units_failed"] == TINY_CELLS

    # retry_errors=true runs exactly the failed units again (they fail again: same seeds)
    retried = sweep(results, "experiment.fail_on_seeds=[4]", "retry_errors=true")
    assert retried.units_scheduled == TINY_CELLS and retried.units_failed == TINY_CELLS
    assert len(read_rows(results)) == TINY_CELLS * TINY_SEEDS


#: slower units for the kill test: runs that do not converge before max_iterations
SLOW_SWEEP = [
    *TINY_SWEEP,
    "sweep.grid.k=[3,4]",
    "sweep.grid.n_minus_k=[1]",
    "sweep.seeds=8",
    "resources.chunk_size=2",
    "protocol.early_stop_global=false",
    "protocol.max_iterations=40000",
]
SLOW_UNITS = 8


def _comparable(rows: pd.DataFrame) -> pd.DataFrame:
    keep = ["cell_id", "unit_id", "seed", "status", "final_loss", "grad_norm", "iterations", "min_eig", "restarts"]
    return rows[keep].sort_values(["cell_id", "seed"]).reset_index(drop=True)


# 50 s alone, ~1.5 min beside other work; the default suite kills drivers in tests/test_driver_kills.py
# (2 random moments)
@pytest.mark.slow
def test_killed_driver_resumes_to_the_same_rows(driver_env, tmp_path):
    interrupted, uninterrupted = tmp_path / "interrupted", tmp_path / "uninterrupted"
    runs_dir = interrupted / "smoke" / "runs"
    sigkill_driver_when(
        [*SLOW_SWEEP, f"results_dir={interrupted}"],
        env=driver_env,
        ready=lambda: len(list(runs_dir.glob("*.parquet"))) >= 2,
    )
    done_at_kill = len(list(runs_dir.glob("*.parquet")))
    assert 1 <= done_at_kill < SLOW_UNITS

    resumed = run_sweep(compose_config([*SLOW_SWEEP, f"results_dir={interrupted}"]))
    assert resumed.units_skipped >= done_at_kill and resumed.units_scheduled == SLOW_UNITS - resumed.units_skipped
    reference = run_sweep(compose_config([*SLOW_SWEEP, f"results_dir={uninterrupted}"]))
    assert reference.units_scheduled == SLOW_UNITS

    got, want = read_rows(interrupted), read_rows(uninterrupted)
    assert len(got) == len(want) == 2 * 8 and not got.duplicated(["cell_id", "seed"]).any()
    pd.testing.assert_frame_equal(_comparable(got), _comparable(want), check_exact=False, rtol=1e-12)
    assert not list(runs_dir.glob(".*"))
    # cells begun by the killed driver: their children aggregate its rows (read back) and the resumed ones
    assert_children_match_report(interrupted, resumed.parent_run_id)


def test_cli_starts_and_stops_its_own_local_cluster(tmp_path):
    """No RAY_ADDRESS: the driver starts a 2-CPU local cluster, prints the table, exits 0."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    proc = run_cli(
        [
            *TINY_SWEEP,
            "sweep.grid.k=[2]",
            "sweep.grid.n_minus_k=[0]",
            f"results_dir={tmp_path / 'r'}",
            "cluster.num_cpus=2",
            f"cluster.object_store_memory={200 * 1024**2}",
        ],
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| k | n | runs |" in proc.stdout and "| 2 | 2 | 6 |" in proc.stdout
    assert "local Ray cluster (2 CPUs), stopped at the end" in proc.stderr
    assert len(read_rows(tmp_path / "r")) == TINY_SEEDS

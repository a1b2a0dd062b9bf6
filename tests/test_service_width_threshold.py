"""The width-threshold experiment through the service: configs, validation, end to end.

- every new config (the sweeps width_threshold / width_threshold_smoke, each optimizer and
  data option) composes, validates and runs a cell with a tiny budget (no Ray);
- invalid width-threshold configs exit 2 with one line naming the field, nothing written;
- ``sweep=width_threshold_smoke`` end to end on the session's Ray cluster (run once per
  session, shared with the contract test, tests/test_service_contract.py, which checks
  rows = cells x seeds, MLflow children, resume and `error` rows): the rows' width-threshold
  columns, the report (per-cell table, the two threshold tables, their CSVs, the heat map)
  against an independent aggregation, the MLflow children's metrics and params.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ray_jobs.config import available_options, compose_config
from ray_jobs.experiments.base import ACTIVATIONS
from ray_jobs.experiments.width_threshold.layout import THRESHOLD_CSVS, THRESHOLD_PNG
from ray_jobs.report import TABLE_CSV, TABLE_MD
from tests.conftest import assert_usage_error, children_of, mlflow_client
from tests.service_helpers import SMOKE_CASES, plan_for, rows_of, run_first_cell, wilson
from tests.service_helpers import smoke_run as shared_smoke_run

SMOKE = list(SMOKE_CASES["width_threshold"].overrides)
#: the smoke sweep: n = 6; width / n = 0.5, 1, 2; depth 2; tanh and relu; 4 seeds, chunks of 2
SMOKE_CELLS, SMOKE_SEEDS = SMOKE_CASES["width_threshold"].cells, SMOKE_CASES["width_threshold"].seeds
SMOKE_RATIOS = [0.5, 1.0, 2.0]


# ----------------------------------------------------------------------------- configs
def test_activation_list_matches_the_core():
    from landscape_core.networks import ACTIVATIONS as CORE

    assert ACTIVATIONS == tuple(CORE)


def test_shipped_sweep_plans_below_at_and_above_n():
    experiment, plan = plan_for("sweep=width_threshold")
    assert experiment.name == "width_threshold"
    widths = sorted({(c.params["width"], c.params["width_over_n"]) for c in plan.cells})
    assert widths == [(8, 0.5), (12, 0.75), (16, 1.0), (24, 1.5), (32, 2.0)]
    assert {c.params["activation"] for c in plan.cells} >= {"relu", "tanh", "sigmoid", "softplus", "linear"}
    assert len(plan.cells) == 5 * 2 * 5 and plan.runs == len(plan.cells) * 50
    params = plan.cells[0].params
    assert params["optimizer"] == "lbfgs" and params["data"] == "random_labels" and params["n_samples"] == 16
    assert params["optimizer_stop_loss"] == params["loss_tol"]  # stop_loss 0 resolves to loss_tol
    assert "protocol" not in compose_config(["sweep=width_threshold"])


def test_shipped_sweep_runs_a_cell_with_a_tiny_budget():
    records = run_first_cell("sweep=width_threshold", "optimizer.max_iterations=20")
    assert len(records) == 2 and all(r["iterations"] <= 20 for r in records)


@pytest.mark.parametrize("optimizer", available_options("optimizer"))
def test_every_optimizer_config_runs(optimizer):
    records = run_first_cell(*SMOKE, f"optimizer={optimizer}", "optimizer.max_iterations=30")
    assert all(r["optimizer"] == optimizer and r["iterations"] <= 30 for r in records)


@pytest.mark.parametrize("data", available_options("data"))
def test_every_data_config_runs(data):
    records = run_first_cell(*SMOKE, f"data={data}", "optimizer.max_iterations=30")
    assert all(r["data"] == data and r["n_samples"] == 6 for r in records)
    if data == "digits":
        assert records[0]["input_dim"] == 64 and records[0]["output_dim"] == 10


def test_cross_entropy_on_digits_runs():
    records = run_first_cell(
        *SMOKE,
        "data=digits",
        "data.classification=true",
        "experiment.loss=cross_entropy",
        "optimizer.max_iterations=30",
    )
    assert all(r["loss"] == "cross_entropy" for r in records)


def test_cell_params_round_trip_to_the_core():
    from landscape_core.width_threshold import resolve_options

    experiment, plan = plan_for(*SMOKE, "optimizer=adam", "data=teacher", "experiment.probes.ntk_rank=true")
    for cell in plan.cells:
        options = resolve_options(**experiment.core_options(cell.params))
        assert {key: cell.params[key] for key in options.columns()} == options.columns()
        assert set(cell.params) - set(options.columns()) == {"experiment", "fail_on_seeds"}


def test_width_axis_and_ratio_axis_give_the_same_cells():
    _, by_ratio = plan_for(*SMOKE)
    _, by_width = plan_for(*SMOKE, "~sweep.grid.width_over_n", "+sweep.grid.width=[3,6,12]")
    assert {c.cell_id for c in by_ratio.cells} == {c.cell_id for c in by_width.cells}


def test_ids_depend_on_the_science_only():
    _, a = plan_for(*SMOKE)
    _, b = plan_for(*SMOKE, "resources.chunk_size=1", "tracking=none")
    assert [c.cell_id for c in a.cells] == [c.cell_id for c in b.cells]
    _, c = plan_for(*SMOKE, "optimizer.grad_tol=1e-7")
    assert {x.cell_id for x in a.cells}.isdisjoint(x.cell_id for x in c.cells)


def test_ntk_rank_probe_columns():
    records = run_first_cell(*SMOKE, "experiment.probes.ntk_rank=true", "optimizer.max_iterations=5")
    assert all(isinstance(r["ntk_gram_rank"], int) and isinstance(r["ntk_full_rank"], bool) for r in records)
    off = run_first_cell(*SMOKE, "optimizer.max_iterations=5")
    assert all(r["ntk_gram_rank"] is None and r["ntk_full_rank"] is None for r in off)


# -------------------------------------------------------------------------- validation
ALLOWED_ACTIVATIONS = "allowed: " + ", ".join(ACTIVATIONS)
INVALID = {
    "unknown activation": (
        [*SMOKE, "sweep.grid.activation=[tanh,swishy]"],
        "sweep.grid.activation: unknown activation 'swishy'",
        ALLOWED_ACTIVATIONS,
    ),
    "width and ratio": (
        [*SMOKE, "+sweep.grid.width=[4]"],
        "sweep.grid.width: give either width or width_over_n",
        "not both",
    ),
    "no width axis": ([*SMOKE, "~sweep.grid.width_over_n"], "sweep.grid.width: required axis", "width_over_n"),
    "no depth axis": ([*SMOKE, "~sweep.grid.depth"], "sweep.grid.depth: required axis", "sweep.grid.depth=[2,3]"),
    "depth 1": ([*SMOKE, "sweep.grid.depth=[1]"], "sweep.grid.depth: must be an integer >= 2", "got 1"),
    "width 0": (
        [*SMOKE, "~sweep.grid.width_over_n", "+sweep.grid.width=[0]"],
        "sweep.grid.width: must be an integer >= 1",
        "got 0",
    ),
    "ratio <= 0": ([*SMOKE, "sweep.grid.width_over_n=[-1]"], "sweep.grid.width_over_n: must be a number > 0", "got -1"),
    "ratio x n not integer": (
        [*SMOKE, "sweep.grid.width_over_n=[0.3]"],
        "sweep.grid.width_over_n: width = width_over_n x n_samples must be an integer",
        "0.3 x 6 = 1.8",
    ),
    "n_samples 0": ([*SMOKE, "sweep.grid.n_samples=[0]"], "sweep.grid.n_samples: must be an integer >= 1", "got 0"),
    "empty axis": ([*SMOKE, "sweep.grid.activation=[]"], "sweep.grid.activation: empty axis", "at least one value"),
    "unknown axis": (
        [*SMOKE, "sweep.grid.k=[2]"],
        "sweep.grid.k: unknown axis 'k' for width_threshold",
        "allowed: width, width_over_n, depth, activation, n_samples",
    ),
    "unknown axis added": (
        [*SMOKE, "+sweep.grid.k=[2]"],
        "sweep.grid.k: unknown axis 'k' for width_threshold",
        "allowed: width, width_over_n",
    ),
    "unknown optimizer": (
        [*SMOKE, "optimizer=sgd"],
        "optimizer: unknown optimizer option 'sgd'",
        "allowed: adam, gd, lbfgs, momentum",
    ),
    "no optimizer": (
        [*SMOKE, "~optimizer"],
        "optimizer: required by width_threshold",
        "allowed: adam, gd, lbfgs, momentum",
    ),
    "grad_tol 0": ([*SMOKE, "optimizer.grad_tol=0"], "optimizer.grad_tol: must be a positive number", "got 0"),
    "max_iterations 0": (
        [*SMOKE, "optimizer.max_iterations=0"],
        "optimizer.max_iterations: must be an integer >= 1",
        "got 0",
    ),
    "max_iterations text": (
        [*SMOKE, "optimizer.max_iterations=many"],
        "optimizer.max_iterations: must be an integer",
        "got 'many'",
    ),
    "momentum 1": (
        [*SMOKE, "optimizer=momentum", "optimizer.momentum=1.0"],
        "optimizer.momentum: must be in [0, 1)",
        "got 1.0",
    ),
    "unknown data": (
        [*SMOKE, "data=mnist"],
        "data: unknown data option 'mnist'",
        "allowed: digits, distinct, random_labels, teacher",
    ),
    "input_dim 0": ([*SMOKE, "data.input_dim=0"], "data.input_dim: must be an integer >= 1", "got 0"),
    "digits too many": (
        [*SMOKE, "data=digits", "sweep.grid.n_samples=[2000]"],
        "sweep.grid.n_samples: digits has 1797 samples",
        "got 2000",
    ),
    "n_samples in data": (
        [*SMOKE, "+data.n_samples=5"],
        "data.n_samples: the number of samples is the grid axis",
        "sweep.grid.n_samples",
    ),
    "loss_tol 0": ([*SMOKE, "experiment.probes.loss_tol=0"], "experiment.probes.loss_tol: must be > 0", "got 0"),
    "unknown probe": ([*SMOKE, "+experiment.probes.colour=1"], "experiment.probes.colour: unknown field", "loss_tol"),
    "unknown loss": (
        [*SMOKE, "experiment.loss=hinge"],
        "experiment.loss: 'hinge' is not one of",
        "square, cross_entropy",
    ),
    "cross-entropy on regression": (
        [*SMOKE, "experiment.loss=cross_entropy"],
        "data.classification: the cross-entropy loss needs class labels",
        "classification true",
    ),
    "unknown init": (
        [*SMOKE, "experiment.init=xavier"],
        "experiment.init: 'xavier' is not one of",
        "lecun, he, uniform",
    ),
    "protocol given": ([*SMOKE, "protocol=safran_shamir_2018"], "protocol: not used by width_threshold", "~protocol"),
    "optimizer for teacher_student": (
        ["sweep=smoke", "optimizer=adam"],
        "optimizer: not used by teacher_student",
        "~optimizer",
    ),
}


@pytest.mark.parametrize("args,field_message,allowed", INVALID.values(), ids=list(INVALID))
def test_invalid_width_threshold_config_exits_2_naming_the_field(tmp_path, capsys, args, field_message, allowed):
    assert_usage_error(args, field_message, allowed, tmp_path, capsys)


# -------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def smoke_run(ray_session, tmp_path_factory):
    """The smoke sweep, run once per session (tests/service_helpers.py)."""
    return shared_smoke_run("width_threshold", tmp_path_factory)


def _rows(results) -> pd.DataFrame:
    return rows_of(results, "width_threshold_smoke")


def test_rows_carry_the_cell_and_probe_columns(smoke_run):
    results, _ = smoke_run
    rows = _rows(results)
    assert sorted(rows.groupby(["activation", "width"]).size().items()) == [
        ((a, w), SMOKE_SEEDS) for a in ("relu", "tanh") for w in (3, 6, 12)
    ]
    assert (rows["width_over_n"] == rows["width"] / rows["n_samples"]).all()
    assert (rows["full_rank"] == (rows["last_layer_rank"] == rows[["width", "n_samples"]].min(axis=1))).all()
    assert (rows["iterations"] <= 300).all() and (rows["hessian_method"] == "exact").all()
    config = json.loads(rows["config_json"].iloc[0])
    assert config["experiment"] == "width_threshold" and config["optimizer_max_iterations"] == 300


def test_report_tables_and_heat_map(smoke_run):
    results, _ = smoke_run
    report = results / "width_threshold_smoke" / "report"
    rows = _rows(results)
    table = pd.read_csv(report / TABLE_CSV)
    assert len(table) == SMOKE_CELLS
    assert list(table["activation"]) == ["relu"] * 3 + ["tanh"] * 3  # the core's activation order
    for (activation, width), cell in rows.groupby(["activation", "width"]):
        row = table[(table["activation"] == activation) & (table["width"] == width)].iloc[0]
        assert row["runs"] == len(cell) == SMOKE_SEEDS
        for column, count in [
            ("global", int((cell["status"] == "global").sum())),
            ("full_rank", int(cell["full_rank"].sum())),
            ("init_full_rank", int(cell["init_full_rank"].sum())),
        ]:
            lo, hi = wilson(count, len(cell))
            assert row[f"n_{column}"] == count
            assert row[f"frac_{column}"] == pytest.approx(count / len(cell))
            assert row[f"frac_{column}_lo"] == pytest.approx(lo, abs=1e-9)
            assert row[f"frac_{column}_hi"] == pytest.approx(hi, abs=1e-9)
        assert row["iterations_max"] == cell["iterations"].max()
    for name, column in (("global", "frac_global"), ("full_rank", "frac_full_rank")):
        grid = pd.read_csv(report / THRESHOLD_CSVS[name])
        assert list(grid["activation"]) == ["relu", "tanh"] and list(grid["depth"]) == [2, 2]
        ratio_columns = [c for c in grid.columns if c.startswith("width/n=") and not c.endswith(("_lo", "_hi"))]
        assert ratio_columns == [f"width/n={r:g}" for r in SMOKE_RATIOS]
        for record in grid.to_dict("records"):
            for ratio in SMOKE_RATIOS:
                cell = table[(table["activation"] == record["activation"]) & (table["width_over_n"] == ratio)].iloc[0]
                assert record[f"width/n={ratio:g}"] == pytest.approx(cell[column])
    markdown = (report / TABLE_MD).read_text()
    assert "## Runs ending at a global minimum" in markdown and "## Runs ending with a full-rank" in markdown
    assert markdown.count("| activation | depth | width/n = 0.5 | width/n = 1 | width/n = 2 |") == 2
    assert markdown.count("\n| relu | 2 | ") == 2 + 3 and markdown.count("\n| tanh | 2 | ") == 2 + 3
    assert (report / THRESHOLD_PNG).stat().st_size > 0


def test_mlflow_children_carry_the_report_metrics(smoke_run):
    results, result = smoke_run
    client = mlflow_client(results)
    children = children_of(client, result.parent_run_id)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {f"report/{TABLE_MD}", f"report/{THRESHOLD_CSVS['global']}", f"report/{THRESHOLD_PNG}"} <= artifacts
    table = pd.read_csv(results / "width_threshold_smoke" / "report" / TABLE_CSV).set_index("cell_id")
    for child in children:
        cell_id, metrics, params = child.data.params["cell_id"], child.data.metrics, child.data.params
        assert metrics["runs"] == SMOKE_SEEDS
        for key in (
            "frac_global",
            "frac_global_lo",
            "frac_global_hi",
            "frac_spurious",
            "frac_full_rank",
            "frac_full_rank_hi",
            "frac_init_full_rank",
            "iterations_max",
        ):
            assert metrics[key] == pytest.approx(table.loc[cell_id, key]), key
        assert (
            params["width"] == str(table.loc[cell_id, "width"])
            and params["activation"] == table.loc[cell_id, "activation"]
        )
        assert params["optimizer"] == "lbfgs" and params["optimizer_max_iterations"] == "300"
        assert "n_families" not in metrics

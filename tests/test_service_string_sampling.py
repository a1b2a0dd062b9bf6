"""Dynamic String Sampling through the service: configs, validation, end to end.

- every DSS sweep (dss_quadratic, dss_width, dss_counterexample, dss_smoke) composes,
  validates and runs its first cell with a tiny budget (no Ray); the shipped sweeps plan
  the published settings; cell parameters round-trip to the core;
- invalid DSS configs exit 2 with one line naming the field, nothing written;
- ``sweep=dss_smoke`` end to end on the session's Ray cluster (run once per session, shared
  with the contract test, tests/test_service_contract.py, which checks rows = cells x
  seeds, MLflow children, resume and `error` rows): the rows' DSS columns, the report
  (per-cell table, length-vs-L0 and connected-vs-width tables, figures, kept strings)
  against an independent aggregation of the Parquet rows, the MLflow children's metrics
  and the report's artifacts; the counterexample sweep through the service does not certify.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ray_jobs.config import compose_config
from ray_jobs.experiments.string_sampling.experiment import BEAD_INITS, INITS, LOSSES, PROBLEMS
from ray_jobs.experiments.string_sampling.layout import (
    LENGTH_CSV,
    LENGTH_PNG,
    PCA_PNG,
    STRINGS_CSV,
    STRINGS_NPZ,
    WIDTH_CSV,
    WIDTH_PNG,
    string_projection,
)
from ray_jobs.report import TABLE_CSV, TABLE_MD
from ray_jobs.store import CONTRACT_COLUMNS
from ray_jobs.sweep import run_sweep
from tests.conftest import assert_usage_error, children_of, mlflow_client
from tests.service_helpers import SMOKE_CASES, plan_for, rows_of, run_first_cell, wilson
from tests.service_helpers import smoke_run as shared_smoke_run

SMOKE = list(SMOKE_CASES["string_sampling"].overrides)
#: the smoke sweep: L0 = 0.1, 0.05 x width 4, 8; 2 pairs per cell, one pair per unit
SMOKE_CELLS, SMOKE_SEEDS = SMOKE_CASES["string_sampling"].cells, SMOKE_CASES["string_sampling"].seeds
#: a counterexample sweep small enough for a test: L0 = 0.1, 3 rounds of 300-step beads
COUNTER = [
    "sweep=dss_counterexample",
    "sweep.grid.threshold=[0.1]",
    "experiment.string.max_rounds=3",
    "experiment.bead_training.max_iterations=300",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # (tests/conftest.py)


# ----------------------------------------------------------------------------- configs
def test_lists_match_the_core():
    from landscape_core import string_sampling as core
    from landscape_core.networks import MLPSpec, init_parameters
    from landscape_core.seeding import run_generator

    assert PROBLEMS == core.PROBLEMS and LOSSES == core.LOSSES and BEAD_INITS == core.BEAD_INITS
    for init in INITS:
        init_parameters(MLPSpec(1, 2, 2), generator=run_generator("test", init), init=init)


def test_quadratic_sweep_plans_the_published_setting():
    experiment, plan = plan_for("sweep=dss_quadratic")
    assert experiment.name == "string_sampling" and "protocol" not in compose_config(["sweep=dss_quadratic"])
    assert sorted(c.params["threshold"] for c in plan.cells) == [0.001, 0.003, 0.01, 0.03, 0.06, 0.125]
    assert plan.runs == 6 * 4
    for cell in plan.cells:
        p = cell.params
        assert (p["problem"], p["width"], p["depth"], p["activation"], p["init"], p["loss"]) == (
            "quadratic",
            4,
            3,
            "sigmoid",
            "uniform",
            "mae",
        )
        assert p["n_train"] == p["n_test"] == 10_000 and p["input_dim"] == 1
        assert (p["endpoint_optimizer"], p["endpoint_lr"], p["bead_optimizer"], p["bead_lr"]) == (
            "adam",
            1e-3,
            "adam",
            1e-3,
        )
        assert (p["string_pass_factor"], p["string_alpha"], p["string_interp_points"], p["string_max_rounds"]) == (
            1.1,
            0.95,
            100,
            10,
        )
        assert p["probe_points"] == 100 and p["endpoint_stop_loss"] == pytest.approx(0.95 * p["threshold"])


def test_width_sweep_runs_below_and_above_n():
    _, plan = plan_for("sweep=dss_width")
    widths = sorted({c.params["width"] for c in plan.cells})
    n = {c.params["n_train"] for c in plan.cells}
    assert n == {32} and min(widths) < 32 < max(widths) and 32 in widths
    assert {(c.params["problem"], c.params["depth"], c.params["activation"]) for c in plan.cells} == {
        ("relu_teacher", 2, "relu")
    }


def test_counterexample_cells_record_the_fixed_network():
    _, plan = plan_for("sweep=dss_counterexample")
    for cell in plan.cells:
        p = cell.params
        assert (p["width"], p["depth"], p["activation"], p["input_dim"], p["n_train"], p["init"]) == (
            3,
            2,
            "relu",
            2,
            3,
            "hand_built",
        )
        assert p["threshold"] < 0.27  # below the straight line's peak


def test_quadratic_first_cell_with_a_tiny_budget():
    records = run_first_cell(
        "sweep=dss_quadratic",
        "experiment.n_train=300",
        "experiment.n_test=50",
        "experiment.endpoint_training.max_iterations=40",
        "experiment.probe_points=9",
    )
    for r in records:  # L0 = 0.125 cannot be reached in 40 Adam steps at lr 1e-3 from U[-1, 1] weights
        assert r["threshold"] == 0.125 and r["status"] == "not_converged" and r["dss_connected"] is None
        assert r["endpoint_iterations"] == [40, 40] and r["iterations"] == 80
        assert len(r["interp_ab_losses"]) == len(r["interp_init_a_losses"]) == 9
        assert (
            r["interp_ab_losses"][0] == r["endpoint_train_losses"][0]
            and r["interp_init_b_losses"][-1] == r["endpoint_train_losses"][1]
        )


def test_width_first_cell_with_a_tiny_budget():
    records = run_first_cell(
        "sweep=dss_width",
        "experiment.endpoint_training.max_iterations=3000",
        "experiment.string.max_rounds=2",
        "experiment.n_test=50",
    )
    for r in records:
        assert (r["problem"], r["width"], r["n_train"], r["input_dim"]) == ("relu_teacher", 4, 32, 2)
        assert r["status"] in ("global", "not_converged") and r["iterations"] <= 6000
        if r["status"] == "global":
            assert max(r["endpoint_train_losses"]) < 0.95 * r["threshold"] and r["dss_normalized_length"] >= 1.0


def test_counterexample_first_cell_does_not_certify():
    records = run_first_cell(
        "sweep=dss_counterexample",
        "experiment.string.max_rounds=2",
        "experiment.bead_training.max_iterations=200",
        seeds=(0,),
    )
    r = records[0]
    assert r["status"] == "global" and r["final_loss"] < 1e-30 and r["dss_connected"] is False
    assert r["interp_ab_max_loss"] > 0.25 and r["dss_max_interp_loss"] >= 1.1 * r["threshold"]
    assert r["dss_rounds"] == 2 and r["dss_beads"] >= 1 and r["dss_normalized_length"] >= 1.0
    assert len(r["dss_string"]) == r["dss_beads"] + 2 and len(r["dss_string"][0]) == 12  # 2-3-2, no biases


def test_smoke_first_cell_keeps_the_string():
    records = run_first_cell(*SMOKE, "experiment.string.max_rounds=1", seeds=(0,))
    r = records[0]
    assert r["status"] == "global" and r["keep_string"] is True
    assert len(r["dss_string"]) == r["dss_beads"] + 2 == len(r["dss_bead_losses"]) == len(r["dss_string_losses"]) + 1
    if r["dss_connected"]:
        assert max(r["dss_segment_max_losses"]) < 1.1 * r["threshold"]


def test_cell_params_round_trip_to_the_core():
    import inspect

    from landscape_core.string_sampling import resolve_options

    experiment, plan = plan_for(*SMOKE, "+experiment.bead_training.lr=0.005")
    accepted = set(inspect.signature(resolve_options).parameters)  # the options of run_string_sampling
    schema = set(experiment.columns) | set(CONTRACT_COLUMNS)
    for cell in plan.cells:
        options = experiment.core_options(cell.params)
        assert set(options) == accepted
        assert options["bead_training"]["lr"] == 0.005 and options["endpoint_training"]["lr"] == 0.01
        assert set(cell.params) - schema == {"fail_on_seeds"}


def test_ids_depend_on_the_science_only():
    _, a = plan_for(*SMOKE)
    _, b = plan_for(*SMOKE, "resources.chunk_size=2", "tracking=none")
    assert [c.cell_id for c in a.cells] == [c.cell_id for c in b.cells]
    _, c = plan_for(*SMOKE, "experiment.string.pass_factor=1.2")
    assert {x.cell_id for x in a.cells}.isdisjoint(x.cell_id for x in c.cells)
    _, d = plan_for(*SMOKE, "experiment.string.spring_weight=0")  # 0 and 0.0 are the same value
    assert [x.cell_id for x in a.cells] == [x.cell_id for x in d.cells]


@pytest.mark.parametrize(
    "args, field_message, allowed",
    [
        ([*SMOKE, "sweep.grid.threshold=[0]"], "sweep.grid.threshold: must be a number > 0", "L0"),
        ([*SMOKE, "~sweep.grid.threshold"], "sweep.grid.threshold: required", "threshold"),
        (
            [*SMOKE, "+sweep.grid.lr=[1]"],
            "sweep.grid.lr: unknown axis",
            "problem, threshold, width, depth, activation, n_train",
        ),
        (
            [*SMOKE, "experiment.problem=nope"],
            "experiment.problem: unknown problem 'nope'",
            "quadratic, relu_teacher, counterexample",
        ),
        (
            [*SMOKE, "experiment.activation=nope"],
            "experiment.activation: unknown activation 'nope'",
            "relu, leaky_relu",
        ),
        ([*SMOKE, "sweep.grid.width=[0]"], "sweep.grid.width: must be an integer >= 1", "hidden units"),
        ([*SMOKE, "experiment.loss=hinge"], "experiment.loss: 'hinge' is not one of", "mae, mse"),
        ([*SMOKE, "experiment.init=zeros"], "experiment.init: 'zeros' is not one of", "uniform, lecun, he"),
        ([*SMOKE, "experiment.probe_points=1"], "experiment.probe_points: must be an integer >= 2", "t = 0 and t = 1"),
        ([*SMOKE, "experiment.input_dim=3"], "experiment.input_dim: the quadratic problem", "relu_teacher"),
        ([*SMOKE, "experiment.string.bead_init=middle"], "experiment.string.bead_init:", "midpoint, argmax"),
        ([*SMOKE, "experiment.string.pass_factor=0.5"], "experiment.string.pass_factor: must be >= 1", "0.5"),
        ([*SMOKE, "experiment.string.max_rounds=0"], "experiment.string.max_rounds: must be an integer >= 1", "0"),
        ([*SMOKE, "+experiment.string.threshold=0.1"], "experiment.string.threshold:", "sweep.grid.threshold"),
        ([*SMOKE, "+experiment.string.depth=3"], "experiment.string.depth: unknown DSS setting", "pass_factor, alpha"),
        (
            [*SMOKE, "experiment.endpoint_training.lr=-1"],
            "experiment.endpoint_training.lr: must be a positive number",
            "-1",
        ),
        (
            [*SMOKE, "+experiment.bead_training.optimizer=sgd"],
            "experiment.bead_training.optimizer:",
            "gd, momentum, adam, lbfgs",
        ),
        (
            [*SMOKE, "+experiment.endpoint_training.stop_loss=0.1"],
            "experiment.endpoint_training.stop_loss: set by the threshold",
            "alpha",
        ),
        (
            [*SMOKE, "experiment.endpoint_training.max_iterations=ten"],
            "experiment.endpoint_training.max_iterations: must be an integer",
            "ten",
        ),
        ([*SMOKE, "experiment.keep_string=maybe"], "experiment.keep_string: must be true or false", "maybe"),
        (
            [*SMOKE, "experiment.fail_on_seeds=oops"],
            "experiment.fail_on_seeds: must be a list of integer seeds",
            "oops",
        ),
        ([*SMOKE, "optimizer=adam"], "optimizer: not used by string_sampling", "~optimizer"),
        (
            ["sweep=dss_counterexample", "+sweep.grid.width=[4,8]"],
            "sweep.grid.width: the counterexample's network",
            "remove the axis",
        ),
    ],
)
def test_invalid_config_exits_2_naming_the_field(args, field_message, allowed, tmp_path, capsys):
    assert_usage_error(args, field_message, allowed, tmp_path, capsys)


def test_string_projection_keeps_distances_in_the_top_directions():
    rng = np.random.default_rng(0)
    plane = rng.standard_normal((6, 2)) @ rng.standard_normal((2, 20))  # 6 beads spanning 2 directions
    coords, explained = string_projection(plane)
    assert explained[:2].sum() == pytest.approx(1.0) and explained[2] == pytest.approx(0.0, abs=1e-12)
    for i in range(6):
        for j in range(6):
            assert np.linalg.norm(coords[i] - coords[j]) == pytest.approx(np.linalg.norm(plane[i] - plane[j]), rel=1e-9)


# -------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def smoke_run(ray_session, tmp_path_factory):
    """The smoke sweep, run once per session (tests/service_helpers.py)."""
    return shared_smoke_run("string_sampling", tmp_path_factory)


def _rows(results, sweep: str = "dss_smoke") -> pd.DataFrame:
    return rows_of(results, sweep)


def test_rows_carry_the_cell_and_dss_columns(smoke_run):
    results, _ = smoke_run
    rows = _rows(results)
    assert sorted(rows.groupby(["threshold", "width"]).size().items()) == [
        ((t, w), SMOKE_SEEDS) for t in (0.05, 0.1) for w in (4, 8)
    ]
    strung = rows[rows["status"] == "global"]
    assert len(strung) >= 6  # lr 0.01, 5000 steps: the endpoints reach 0.95 L0
    for r in strung.to_dict("records"):
        assert max(r["endpoint_train_losses"]) < 0.95 * r["threshold"] and r["dss_normalized_length"] >= 1.0
        assert len(r["dss_string"]) == r["dss_beads"] + 2 and len(r["interp_ab_losses"]) == 11
        if r["dss_connected"]:
            assert max(r["dss_segment_max_losses"]) < 1.1 * r["threshold"]


def _independent_aggregate(cell: pd.DataFrame) -> dict:
    strung = cell[cell["status"] == "global"]
    connected = strung[strung["dss_connected"].astype(bool)]
    not_connected = strung[~strung["dss_connected"].astype(bool)]
    lengths = connected["dss_normalized_length"]
    return {
        "runs": len(cell),
        "n_global": len(strung),
        "n_dss_connected": len(connected),
        "mean_normalized_length": lengths.mean() if len(lengths) else math.nan,
        "median_normalized_length": lengths.median() if len(lengths) else math.nan,
        "max_normalized_length": lengths.max() if len(lengths) else math.nan,
        "mean_beads": connected["dss_beads"].mean() if len(connected) else math.nan,
        "max_beads": connected["dss_beads"].max() if len(connected) else math.nan,
        "mean_rounds": connected["dss_rounds"].mean() if len(connected) else math.nan,
        "mean_beads_not_connected": not_connected["dss_beads"].mean() if len(not_connected) else math.nan,
        "mean_max_interp_over_threshold": (strung["dss_max_interp_loss"] / strung["threshold"]).mean()
        if len(strung)
        else math.nan,
        "mean_interp_ab_barrier": cell["interp_ab_barrier"].mean(),
        "mean_interp_init_max_rise": cell["interp_init_max_rise"].mean(),
    }


def _same(a, b) -> bool:
    return (pd.isna(a) and pd.isna(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-15)


def test_report_against_an_independent_aggregation(smoke_run):
    results, _ = smoke_run
    report = results / "dss_smoke" / "report"
    rows = _rows(results)
    table = pd.read_csv(report / TABLE_CSV)
    assert len(table) == SMOKE_CELLS
    assert list(zip(table["width"], table["threshold"])) == [(4, 0.05), (4, 0.1), (8, 0.05), (8, 0.1)]
    for (threshold, width), cell in rows.groupby(["threshold", "width"]):
        row = table[(table["threshold"] == threshold) & (table["width"] == width)].iloc[0]
        expected = _independent_aggregate(cell)
        for key, value in expected.items():
            assert _same(row[key], value), (key, row[key], value)
        if expected["n_global"]:
            lo, hi = wilson(expected["n_dss_connected"], expected["n_global"])
            assert row["frac_dss_connected"] == pytest.approx(expected["n_dss_connected"] / expected["n_global"])
            assert row["frac_dss_connected_lo"] == pytest.approx(lo, abs=1e-9)
            assert row["frac_dss_connected_hi"] == pytest.approx(hi, abs=1e-9)
    by_threshold = pd.read_csv(report / LENGTH_CSV)  # one block per width, L0 decreasing
    assert list(zip(by_threshold["width"], by_threshold["L0"])) == [(4, 0.1), (4, 0.05), (8, 0.1), (8, 0.05)]
    by_width = pd.read_csv(report / WIDTH_CSV)  # one block per L0, width increasing
    assert list(zip(by_width["L0"], by_width["width"])) == [(0.05, 4), (0.05, 8), (0.1, 4), (0.1, 8)]
    for grid in (by_threshold, by_width):
        for record in grid.to_dict("records"):
            cell = table[(table["threshold"] == record["L0"]) & (table["width"] == record["width"])].iloc[0]
            assert _same(record["normalized length mean"], cell["mean_normalized_length"])
            assert (
                _same(record["frac_connected"], cell["frac_dss_connected"])
                and record["pairs strung"] == cell["n_global"]
            )
    markdown = (report / TABLE_MD).read_text()
    assert "## Normalized length and beads vs threshold L0" in markdown and "## Connected fraction vs width" in markdown
    per_cell = markdown.split("## Per cell")[1]
    assert per_cell.count("\n| quadratic | sigmoid | 3 | 200 | ") == 4
    for name in (LENGTH_PNG, WIDTH_PNG, PCA_PNG):
        assert (report / name).stat().st_size > 10_000, name


def test_kept_strings_are_saved_with_their_weights(smoke_run):
    results, _ = smoke_run
    report = results / "dss_smoke" / "report"
    rows = _rows(results)
    kept = rows[rows["dss_string"].notna()]
    index = pd.read_csv(report / STRINGS_CSV)
    assert len(index) == len(kept) == int((rows["status"] == "global").sum())
    # the PCA figure's pair comes first: connected before not, then most beads
    first = index.iloc[0]
    assert first["dss_beads"] == kept[kept["dss_connected"] == first["dss_connected"]]["dss_beads"].max()
    with np.load(report / STRINGS_NPZ) as arrays:
        for record in kept.to_dict("records"):
            key = f"{record['cell_id']}_seed{record['seed']}"
            beads = arrays[key]
            w = record["width"]
            assert beads.shape == (record["dss_beads"] + 2, w * w + 4 * w)  # 1-w-w-1: hidden biases, no output bias
            np.testing.assert_array_equal(beads, np.array([np.asarray(b) for b in record["dss_string"]]))
            np.testing.assert_array_equal(arrays[f"{key}_bead_losses"], np.asarray(record["dss_bead_losses"]))
            assert arrays[f"{key}_bead_losses"][0] == record["endpoint_train_losses"][0]


def test_mlflow_children_metrics_and_report_artifacts(smoke_run):
    results, result = smoke_run
    client = mlflow_client(results)
    children = children_of(client, result.parent_run_id)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {
        f"report/{name}" for name in (TABLE_MD, LENGTH_CSV, WIDTH_CSV, PCA_PNG, STRINGS_NPZ, STRINGS_CSV)
    } <= artifacts
    table = pd.read_csv(results / "dss_smoke" / "report" / TABLE_CSV).set_index("cell_id")
    for child in children:
        cell_id, metrics = child.data.params["cell_id"], child.data.metrics
        assert metrics["runs"] == SMOKE_SEEDS
        for key in ("frac_dss_connected", "n_global", "mean_interp_ab_barrier", "mean_normalized_length", "mean_beads"):
            if not pd.isna(table.loc[cell_id, key]):
                assert metrics[key] == pytest.approx(table.loc[cell_id, key]), key
        assert child.data.params["threshold"] == str(table.loc[cell_id, "threshold"])


def test_counterexample_sweep_does_not_certify(ray_session, tmp_path):
    result = run_sweep(compose_config([*COUNTER, f"results_dir={tmp_path}", "tracking=none"]))
    assert result.units_scheduled == 1 and result.units_failed == 0
    row = _rows(tmp_path, "dss_counterexample").iloc[0]
    assert row["status"] == "global" and not row["dss_connected"] and row["dss_rounds"] == 3
    assert row["dss_max_interp_loss"] >= 1.1 * 0.1 and row["interp_ab_max_loss"] > 0.25
    table = pd.read_csv(tmp_path / "dss_counterexample" / "report" / TABLE_CSV)
    assert (
        list(table["n_global"]) == [1]
        and list(table["n_dss_connected"]) == [0]
        and list(table["frac_dss_connected"]) == [0.0]
    )
    assert table["mean_normalized_length"].isna().all()  # no connected pair: no geodesic length
    assert list(table["mean_rounds_not_connected"]) == [3] and list(table["mean_beads_not_connected"]) == [
        row["dss_beads"]
    ]
    assert (tmp_path / "dss_counterexample" / "report" / PCA_PNG).stat().st_size > 10_000

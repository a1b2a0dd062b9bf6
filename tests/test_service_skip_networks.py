"""The skip-networks experiment through the service: configs, validation, end to end.

- every skip sweep (skip_rank, skip_trainability, skip_smoke) composes, validates and runs
  its first cell with a tiny budget (no Ray); cell parameters round-trip to the core;
- invalid skip configs exit 2 with one line naming the field, nothing written;
- ``sweep=skip_smoke`` end to end on the session's Ray cluster (run once per session, shared
  with the contract test, tests/test_service_contract.py, which checks rows = cells x
  seeds, MLflow children, resume and `error` rows): the rows' skip columns, the report
  (M / N tables, per-cell summary with intervals, figure) against an independent
  aggregation of the Parquet rows, the MLflow children's metrics;
- the trainability layout of the report from a hand-made table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from landscape_core.statistics import t_interval
from ray_jobs.config import compose_config
from ray_jobs.experiments.base import ACTIVATIONS
from ray_jobs.experiments.registry import get_experiment, get_layout
from ray_jobs.experiments.skip_networks.layout import RANK_CSVS, RANK_PNG, SUMMARY_CSV, skip_markdown
from ray_jobs.report import TABLE_CSV, TABLE_MD
from tests.conftest import assert_usage_error, children_of, mlflow_client
from tests.service_helpers import SMOKE_CASES, plan_for, rows_of, run_first_cell, wilson
from tests.service_helpers import smoke_run as shared_smoke_run

SMOKE = list(SMOKE_CASES["skip_networks"].overrides)
#: the smoke sweep: N = 8; M / N = 0.5, 1; plain / skip x sgd / rand; sigmoid; 4 seeds, one unit per cell
SMOKE_CELLS, SMOKE_SEEDS = SMOKE_CASES["skip_networks"].cells, SMOKE_CASES["skip_networks"].seeds
TINY_SGD = ["experiment.sgd.epochs=2"]


# ----------------------------------------------------------------------------- configs
def test_skip_rank_plans_M_over_n_below_at_and_above_one():
    experiment, plan = plan_for("sweep=skip_rank")
    assert experiment.name == "skip_networks" and experiment.groups == ()
    assert sorted({(c.params["M"], c.params["M_over_n"]) for c in plan.cells}) == [
        (24, 0.5),
        (36, 0.75),
        (48, 1.0),
        (60, 1.25),
        (72, 1.5),
        (96, 2.0),
    ]
    assert {c.params["activation"] for c in plan.cells} == {"sigmoid", "softplus", "tanh", "relu"}
    assert {c.params["depth"] for c in plan.cells} == {5, 9}
    assert len(plan.cells) == 6 * 4 * 2 and plan.runs == len(plan.cells) * 300
    assert all(c.params["M"] <= c.params["width"] * (c.params["depth"] - 1) for c in plan.cells)
    assert "protocol" not in compose_config(["sweep=skip_rank"])


def test_skip_trainability_plans_plain_skip_sgd_rand():
    _, plan = plan_for("sweep=skip_trainability")
    assert sorted((c.params["architecture"], c.params["mode"], c.params["activation"]) for c in plan.cells) == sorted(
        (a, m, act) for a in ("plain", "skip") for m in ("sgd", "rand") for act in ("sigmoid", "softplus")
    )
    params = plan.cells[0].params
    assert params["M"] == params["n_samples"] == 200 and params["M_over_n"] == 1.0
    assert params["data"] == "digits" and params["input_dim"] == 64 and params["classes"] == 10  # digits' own sizes
    assert params["sgd_milestones"] == [50, 75] and params["sgd_nesterov"] is True
    assert plan.runs == 8 * 24


@pytest.mark.parametrize(
    "sweep,budget",
    [
        ("skip_rank", ["experiment.rand_max_iterations=5"]),
        ("skip_trainability", [*TINY_SGD, "experiment.data.n_test=20"]),
        ("skip_smoke", TINY_SGD),
    ],
)
def test_every_skip_sweep_runs_its_first_cell(sweep, budget):
    experiment, plan = plan_for(f"sweep={sweep}", *budget)
    records = run_first_cell(f"sweep={sweep}", *budget)
    params = plan.cells[0].params
    for record in records:
        for key in (
            "width",
            "depth",
            "activation",
            "n_samples",
            "M",
            "architecture",
            "mode",
            "data",
            "input_dim",
            "classes",
        ):
            assert record[key] == params[key], key
        assert record["psi_rank"] <= min(params["M"], params["n_samples"])
        assert record["psi_full_rank"] == (record["psi_rank"] == params["n_samples"])
        assert record["zero_train_error"] == (record["status"] == "global") == (record["train_error"] == 0.0)
    if params["mode"] == "rand":
        assert all(
            r["iterations"] <= params["rand_max_iterations"] and r["psi_rank"] == r["init_psi_rank"] for r in records
        )
    else:
        assert all(r["epochs"] == params["sgd_epochs"] for r in records)


def test_cell_params_round_trip_to_the_core():
    from landscape_core.skip_networks import resolve_options

    experiment, plan = plan_for(*SMOKE)
    for cell in plan.cells:
        options = experiment.core_options(cell.params)
        core = resolve_options(**options)
        spec, M, sgd = core.model, core.M, core.sgd
        assert (
            M == cell.params["M"]
            and spec.input_dim == cell.params["input_dim"]
            and sgd.epochs == cell.params["sgd_epochs"]
        )
        assert set(cell.params) - {"experiment", "fail_on_seeds"} <= set(experiment.columns)


def test_M_axis_and_ratio_axis_give_the_same_cells():
    _, by_ratio = plan_for(*SMOKE)
    _, by_count = plan_for(*SMOKE, "~sweep.grid.M_over_n", "+sweep.grid.M=[4,8]")
    assert {c.cell_id for c in by_ratio.cells} == {c.cell_id for c in by_count.cells}
    _, default_M = plan_for(*SMOKE, "~sweep.grid.M_over_n")  # experiment.M = n_samples
    assert {c.params["M"] for c in default_M.cells} == {8}


# -------------------------------------------------------------------------- validation
INVALID = {
    "unknown activation": (
        [*SMOKE, "sweep.grid.activation=[sigmoid,swishy]"],
        "sweep.grid.activation: unknown activation 'swishy'",
        "allowed: " + ", ".join(ACTIVATIONS),
    ),
    "M too large": (
        [*SMOKE, "sweep.grid.M_over_n=[3]"],
        "sweep.grid.M_over_n: must be an integer in [1, 16] (hidden neurons available)",
        "got 24",
    ),
    "M axis too large": (
        [*SMOKE, "~sweep.grid.M_over_n", "+sweep.grid.M=[17]"],
        "sweep.grid.M: must be an integer in [1, 16]",
        "got 17",
    ),
    "experiment.M too large": (
        [*SMOKE, "~sweep.grid.M_over_n", "experiment.M=40"],
        "experiment.M: must be an integer in [1, 16]",
        "got 40",
    ),
    "M and ratio": ([*SMOKE, "+sweep.grid.M=[4]"], "sweep.grid.M: give either M or M_over_n", "not both"),
    "ratio x n not integer": (
        [*SMOKE, "sweep.grid.M_over_n=[0.3]"],
        "sweep.grid.M_over_n: M = M_over_n x n_samples must be an integer",
        "0.3 x 8 = 2.4",
    ),
    "ratio <= 0": ([*SMOKE, "sweep.grid.M_over_n=[-1]"], "sweep.grid.M_over_n: must be a number > 0", "got -1"),
    "depth 1": ([*SMOKE, "sweep.grid.depth=[1]"], "sweep.grid.depth: must be an integer >= 2", "got 1"),
    "no width": ([*SMOKE, "~sweep.grid.width"], "sweep.grid.width: required axis", "sweep.grid.width=[16]"),
    "unknown axis": (
        [*SMOKE, "+sweep.grid.k=[2]"],
        "sweep.grid.k: unknown axis 'k' for skip_networks",
        "allowed: width, depth",
    ),
    "unknown mode": ([*SMOKE, "sweep.grid.mode=[adam]"], "sweep.grid.mode: unknown mode 'adam'", "allowed: sgd, rand"),
    "unknown architecture": (
        [*SMOKE, "sweep.grid.architecture=[resnet]"],
        "sweep.grid.architecture: unknown architecture 'resnet'",
        "allowed: skip, plain",
    ),
    "unknown mode key": (
        [*SMOKE, "~sweep.grid.mode", "experiment.mode=adam"],
        "experiment.mode: 'adam' is not one of",
        "sgd, rand",
    ),
    "unknown data": (
        [*SMOKE, "experiment.data.name=cifar"],
        "experiment.data.name: 'cifar' is not one of",
        "mixture, random_labels, digits",
    ),
    "digits too many": (
        [*SMOKE, "experiment.data.name=digits", "sweep.grid.n_samples=[1790]", "sweep.grid.width=[1000]"],
        "sweep.grid.n_samples: digits has 1797 images",
        "1790 + 50",
    ),
    "classes 1": ([*SMOKE, "experiment.data.classes=1"], "experiment.data.classes: must be an integer >= 2", "got 1"),
    "unknown data key": ([*SMOKE, "+experiment.data.colour=1"], "experiment.data.colour: unknown key", "n_test"),
    "sgd lr 0": ([*SMOKE, "experiment.sgd.lr=0"], "experiment.sgd.lr: must be > 0", "got 0"),
    "sgd lr text": ([*SMOKE, "experiment.sgd.lr=fast"], "experiment.sgd.lr: must be a finite number", "got 'fast'"),
    "sgd milestones": (
        [*SMOKE, "experiment.sgd.milestones=[a]"],
        "experiment.sgd.milestones: must be a list of epochs",
        "got ['a']",
    ),
    "sgd unknown key": (
        [*SMOKE, "+experiment.sgd.beta=1"],
        "experiment.sgd.beta: unknown option",
        "allowed: lr, momentum",
    ),
    "skip layer": (
        [*SMOKE, "experiment.skip_layers=[3]"],
        "experiment.skip_layers: must be distinct hidden layers among [1, 2]",
        "got [3]",
    ),
    "rank_rtol": ([*SMOKE, "experiment.rank_rtol=0"], "experiment.rank_rtol: must be a number in (0, 1)", "got 0"),
    "rand iterations": (
        [*SMOKE, "experiment.rand_max_iterations=0"],
        "experiment.rand_max_iterations: must be an integer >= 1",
        "got 0",
    ),
    "unknown experiment key": (
        [*SMOKE, "+experiment.loss=square"],
        "experiment.loss: unknown key for skip_networks",
        "allowed: name, M",
    ),
    "fail_on_seeds": (
        [*SMOKE, "experiment.fail_on_seeds=[x]"],
        "experiment.fail_on_seeds: must be a list of integer seeds",
        "got ['x']",
    ),
    "protocol given": ([*SMOKE, "protocol=safran_shamir_2018"], "protocol: not used by skip_networks", "~protocol"),
}


@pytest.mark.parametrize("args,field_message,allowed", INVALID.values(), ids=list(INVALID))
def test_invalid_skip_config_exits_2_naming_the_field(tmp_path, capsys, args, field_message, allowed):
    assert_usage_error(args, field_message, allowed, tmp_path, capsys)


# -------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def smoke_run(ray_session, tmp_path_factory):
    """The smoke sweep, run once per session (tests/service_helpers.py)."""
    return shared_smoke_run("skip_networks", tmp_path_factory)


def _rows(results) -> pd.DataFrame:
    return rows_of(results, "skip_smoke")


def test_rows_carry_the_cell_and_psi_columns(smoke_run):
    results, _ = smoke_run
    rows = _rows(results)
    assert sorted(rows.groupby(["architecture", "mode", "M"]).size().items()) == [
        ((a, m, M), SMOKE_SEEDS) for a in ("plain", "skip") for m in ("rand", "sgd") for M in (4, 8)
    ]
    assert (rows["M_over_n"] == rows["M"] / rows["n_samples"]).all()
    assert (rows["psi_full_rank"] == (rows["psi_rank"] == rows["n_samples"])).all()
    assert (rows["psi_rank"] <= rows["M"]).all()  # rank of an N x M matrix never exceeds M
    rand = rows[rows["mode"] == "rand"]
    assert (rand["psi_rank"] == rand["init_psi_rank"]).all()  # rand keeps the hidden weights
    # plain and skip start from the same hidden weights and skip neurons: same Psi at init, seed by seed
    init = rows.pivot_table(index=["seed", "mode", "M"], columns="architecture", values="init_psi_sigma_min")
    assert np.array_equal(init["plain"].to_numpy(), init["skip"].to_numpy())
    assert list(rows["sgd_milestones"].iloc[0]) == [3] and rows["skip_layers"].isna().all()


def test_report_tables_against_the_rows(smoke_run):
    results, _ = smoke_run
    report = results / "skip_smoke" / "report"
    rows = _rows(results)
    table = pd.read_csv(report / TABLE_CSV)
    assert len(table) == SMOKE_CELLS
    assert list(table["architecture"]) == ["plain"] * 4 + ["skip"] * 4 and list(table["mode"][:4]) == [
        "sgd",
        "sgd",
        "rand",
        "rand",
    ]
    summary = pd.read_csv(report / SUMMARY_CSV).set_index("cell_id")
    for cell_id, cell in rows.groupby("cell_id"):
        row = table.set_index("cell_id").loc[cell_id]
        assert row["runs"] == len(cell) == SMOKE_SEEDS
        for column in ("zero_train_error", "psi_full_rank", "init_psi_full_rank"):
            count = int(cell[column].sum())
            lo, hi = wilson(count, len(cell))
            assert row[f"n_{column}"] == count and row[f"frac_{column}"] == pytest.approx(count / len(cell))
            assert row[f"frac_{column}_lo"] == pytest.approx(lo, abs=1e-9) and row[
                f"frac_{column}_hi"
            ] == pytest.approx(hi, abs=1e-9)
        accuracy = cell["test_accuracy"].dropna()
        assert row["n_test_accuracy"] == len(accuracy) == SMOKE_SEEDS
        assert row["mean_test_accuracy"] == pytest.approx(accuracy.mean())
        assert row["std_test_accuracy"] == pytest.approx(accuracy.std(ddof=1))
        half = student_t.ppf(0.995, len(accuracy) - 1) * accuracy.std(ddof=1) / math.sqrt(len(accuracy))
        assert summary.loc[cell_id, "mean_test_accuracy_lo"] == pytest.approx(
            max(0.0, accuracy.mean() - half)
        )  # clipped to [0, 1]
        assert summary.loc[cell_id, "mean_test_accuracy_hi"] == pytest.approx(min(1.0, accuracy.mean() + half))
        assert row["mean_final_loss"] == pytest.approx(cell["final_loss"].mean())
        assert row["mean_psi_rank"] == pytest.approx(cell["psi_rank"].mean())
        assert row["mean_init_psi_sigma_min"] == pytest.approx(cell["init_psi_sigma_min"].mean())
        assert row["frac_init_psi_full_rank_loose"] == pytest.approx((cell["init_psi_rank_loose"] == 8).mean())
    # the M / N tables: one row per (architecture, mode), one column per M / N
    for name, column in (
        ("init", "frac_init_psi_full_rank"),
        ("end", "frac_psi_full_rank"),
        ("zero_train_error", "frac_zero_train_error"),
    ):
        grid = pd.read_csv(report / RANK_CSVS[name])
        assert list(zip(grid["architecture"], grid["mode"])) == [
            ("plain", "sgd"),
            ("plain", "rand"),
            ("skip", "sgd"),
            ("skip", "rand"),
        ]
        for record in grid.to_dict("records"):
            for ratio in (0.5, 1.0):
                cell = table[
                    (table["architecture"] == record["architecture"])
                    & (table["mode"] == record["mode"])
                    & (table["M_over_n"] == ratio)
                ].iloc[0]
                assert record[f"M/N={ratio:g}"] == pytest.approx(cell[column])
                assert record[f"M/N={ratio:g}_lo"] == pytest.approx(cell[f"{column}_lo"])
    # M < N: Psi (8 x 4) can never have rank 8
    assert (table.loc[table["M_over_n"] == 0.5, "frac_init_psi_full_rank"] == 0).all()
    markdown = (report / TABLE_MD).read_text()
    assert (
        markdown.count("| architecture | mode | M/N = 0.5 | M/N = 1 |") == 4
    )  # init, init at the loose tolerance, end, zero error
    assert "## Runs whose Psi has full rank N at initialisation at the looser tolerance sigma_max x 1e-06" in markdown
    loose = pd.read_csv(report / RANK_CSVS["init_loose"])
    for record in loose.to_dict("records"):
        cell = rows[
            (rows["architecture"] == record["architecture"])
            & (rows["mode"] == record["mode"])
            & (rows["M_over_n"] == 1.0)
        ]
        count = int((cell["init_psi_rank_loose"] == 8).sum())
        lo, hi = wilson(count, len(cell))
        assert (record["M/N=1"], record["M/N=1_lo"], record["M/N=1_hi"]) == pytest.approx(
            (count / len(cell), lo, hi), abs=1e-9
        )
    assert "## Runs whose Psi (N x M) has full rank N at initialisation" in markdown
    # init and end tables: rank <= M = 4 < 8 at M / N = 0.5; sigmoid Psi of 8 generic points has rank 8 at M = N
    loose_full = pd.read_csv(report / RANK_CSVS["init_loose"]).iloc[0]["M/N=1"] == 1.0  # plain, sgd
    assert markdown.count("\n| plain | sgd | 0 [0, 62] | 100 [38, 100] |") == 2 + int(loose_full)
    assert (report / RANK_PNG).stat().st_size > 0


def test_mlflow_children_carry_the_report_metrics(smoke_run):
    results, result = smoke_run
    client = mlflow_client(results)
    children = children_of(client, result.parent_run_id)
    table = pd.read_csv(results / "skip_smoke" / "report" / TABLE_CSV).set_index("cell_id")
    for child in children:
        cell_id, metrics = child.data.params["cell_id"], child.data.metrics
        for key in ("frac_zero_train_error", "frac_psi_full_rank_lo", "mean_test_accuracy", "mean_psi_rank"):
            assert metrics[key] == pytest.approx(table.loc[cell_id, key]), key
        assert child.data.params["mode"] == table.loc[cell_id, "mode"]


# ----------------------------------------------------------------- trainability layout
def test_trainability_layout_from_a_table():
    experiment = get_layout(get_experiment("skip_networks"))
    base = {
        "data": "digits",
        "activation": "sigmoid",
        "depth": 9,
        "width": 30,
        "n_samples": 200,
        "M_over_n": 1.0,
        "M": 200,
        "errors": 0,
        "frac_global": 0.5,
        "frac_not_converged": 0.5,
        "frac_diverged": 0.0,
        "frac_psi_full_rank": 0.0,
        "frac_init_psi_full_rank": 0.0,
        "frac_init_psi_full_rank_lo": 0.0,
        "frac_init_psi_full_rank_hi": 0.3,
        "frac_init_psi_full_rank_loose": 0.0,
        "mean_init_psi_rank": 180.0,
        "mean_psi_rank": 181.0,
        "mean_init_psi_sigma_min": 1e-9,
        "mean_psi_sigma_min": 1e-9,
        "mean_train_error": 0.1,
        "mean_final_loss": 0.3,
    }
    table = pd.DataFrame(
        [
            {
                **base,
                "cell_id": "a",
                "architecture": "plain",
                "mode": "sgd",
                "runs": 10,
                "frac_zero_train_error": 0.0,
                "frac_zero_train_error_lo": 0.0,
                "frac_zero_train_error_hi": 0.4,
                "n_test_accuracy": 10,
                "mean_test_accuracy": 0.1,
                "std_test_accuracy": 0.01,
                "mean_test_accuracy_lo": t_interval(0.1, 0.01, 10, 0.95)[0],
                "mean_test_accuracy_hi": t_interval(0.1, 0.01, 10, 0.95)[1],
            },
            {
                **base,
                "cell_id": "b",
                "architecture": "skip",
                "mode": "rand",
                "runs": 10,
                "frac_zero_train_error": 1.0,
                "frac_zero_train_error_lo": 0.6,
                "frac_zero_train_error_hi": 1.0,
                "n_test_accuracy": 1,
                "mean_test_accuracy": 0.9,
                "std_test_accuracy": math.nan,
                "mean_test_accuracy_lo": math.nan,
                "mean_test_accuracy_hi": math.nan,
            },
        ]
    )
    markdown = skip_markdown(table, experiment, sweep="t", confidence=0.95)
    assert (
        "Fixed: data = digits, activation = sigmoid, depth = 9, width = 30, n_samples = 200, M_over_n = 1, M = 200."
        in markdown
    )
    assert "## Trainability" in markdown and "M/N =" not in markdown
    lo, hi = t_interval(0.1, 0.01, 10, 0.95)
    assert (lo, hi) == pytest.approx(
        (0.1 - 2.2621571628 * 0.01 / math.sqrt(10), 0.1 + 2.2621571628 * 0.01 / math.sqrt(10))
    )
    assert f"| plain | sgd | 10 | 0 [0, 40] | 10.0 [{100 * lo:.1f}, {100 * hi:.1f}] |" in markdown
    assert "| skip | rand | 10 | 100 [60, 100] | 90.0 |" in markdown  # one accuracy: no interval

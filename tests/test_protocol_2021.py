"""Protocol values as functions of the grid (issue 13, item 4): the step as a multiple of
1/k (``step_times_k``), the initial variance 1/d or 1/k (``init_variance``), the stopping
norm of 2018 (max_i ||2 pi dF/dw_i||) or of 2021 (||dF/dW||_F, ``stopping_norm``), no
restart rule (``restart_grad_norm: null``); the 2021 protocol file and sweep; and the cell
ids of every 2018 sweep unchanged by the new keys."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from landscape_core.errors import OptionError
from landscape_core.teacher_student import (
    TeacherStudentProtocol,
    frobenius_gradient_norm,
    gradient_norm,
    initial_points,
    neuron_gradient_norm,
    population_gradient,
    population_loss,
    run_teacher_student,
    scaled_gradient,
)
from landscape_core.teacher_student_reference import run_teacher_student_reference
from ray_jobs.config import compose_config
from ray_jobs.plan import plan_sweep
from ray_jobs.validate import validate
from tests.conftest import assert_usage_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
#: protocols.md, "The 2021 protocol"
PROTOCOL_2021 = dict(
    step_times_k=5, init_variance="1/k", stopping_norm="frobenius", grad_tol=1e-12, restart_grad_norm=None
)


def _random(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --------------------------------------------------------------------------- the stopping norms
@pytest.mark.parametrize("n,k,d", [(3, 3, 3), (5, 2, 4), (6, 6, 6), (2, 4, 6)])
def test_frobenius_stopping_norm_matches_autograd(n, k, d):
    """The 2021 quantity ||dF/dW||_F against torch.autograd.grad of the closed-form F; the
    2018 one, max_i ||2 pi dF/dw_i||, from the same autograd gradient."""
    W, V = _random((4, n, d), 50 + n), _random((4, k, d), 60 + k)
    Wr = W.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(population_loss(Wr, V).sum(), Wr)
    frobenius = torch.stack([torch.linalg.matrix_norm(g, ord="fro") for g in grad])
    G = scaled_gradient(W, V)
    torch.testing.assert_close(frobenius_gradient_norm(G), frobenius, rtol=1e-13, atol=0)
    torch.testing.assert_close(gradient_norm(G, "frobenius"), frobenius, rtol=1e-13, atol=0)
    torch.testing.assert_close(population_gradient(W, V).flatten(1).norm(dim=1), frobenius, rtol=1e-13, atol=0)
    max_neuron = (2 * math.pi * grad).norm(dim=-1).amax(-1)
    torch.testing.assert_close(gradient_norm(G, "max_neuron"), max_neuron, rtol=1e-13, atol=0)
    torch.testing.assert_close(neuron_gradient_norm(G), max_neuron, rtol=1e-13, atol=0)
    with pytest.raises(OptionError, match=r"^stopping_norm: 'l2' is not one of max_neuron, frobenius"):
        gradient_norm(G, "l2")


# --------------------------------------------------------------------------- grid-dependent values
def test_effective_step_and_initial_variance():
    assert TeacherStudentProtocol().effective_step(8) == 0.1  # the 2018 default
    assert TeacherStudentProtocol(step=0.05).effective_step(8) == 0.05
    assert TeacherStudentProtocol(step_times_k=5).effective_step(8) == 5 / 8
    assert TeacherStudentProtocol(step_times_k=5).effective_step(20) == 0.25
    # "1/d" and "1/k" are the same initial points (bitwise) when d = k ...
    W_d, V_d = initial_points(6, 6, range(5), TeacherStudentProtocol())
    W_k, V_k = initial_points(6, 6, range(5), TeacherStudentProtocol(init_variance="1/k"))
    assert torch.equal(W_d, W_k) and torch.equal(V_d, V_k)
    # ... and differ by sqrt(d / k) when d > k (same draws: common random numbers)
    W_d, _ = initial_points(3, 3, range(5), TeacherStudentProtocol(d=12))
    W_k, _ = initial_points(3, 3, range(5), TeacherStudentProtocol(d=12, init_variance="1/k"))
    torch.testing.assert_close(W_k, W_d * 2.0, rtol=1e-15, atol=0)
    p = TeacherStudentProtocol(d=12, init_scale=2.0, init_variance="1/k")
    assert p.init_variance_value(3) == 4.0 / 3 and TeacherStudentProtocol(d=12).init_variance_value(3) == 1 / 12


def test_records_carry_the_effective_values():
    records = run_teacher_student(6, 6, range(3), keep_weights=False, **PROTOCOL_2021)
    for record in records:
        assert record["step"] == 5 / 6 and record["step_times_k"] == 5 and record["final_step"] == pytest.approx(5 / 6)
        assert record["init_variance"] == "1/k" and record["init_variance_value"] == 1 / 6
        assert record["stopping_norm"] == "frobenius" and record["restart_grad_norm"] is None
        assert record["status"] == "global" and record["grad_norm"] <= 1e-12 and record["restarts"] == 0
    (old,) = run_teacher_student(6, 6, [0], keep_weights=False, max_iterations=50)
    assert old["step"] == 0.1 and old["step_times_k"] is None and old["init_variance"] == "1/d"
    assert (
        old["init_variance_value"] == 1 / 6 and old["stopping_norm"] == "max_neuron" and old["restart_grad_norm"] == 1e4
    )


def test_2021_protocol_batched_equals_one_by_one_and_plain_loop():
    """k = n = 8 under the 2021 protocol, seeds 8..15 (11 and 15 end at a spurious minimum): the
    batched descent, one seed at a time and the numpy one-run loop give the same statuses,
    iteration counts, objectives and stopping norms."""
    seeds = list(range(8, 16))
    batched = run_teacher_student(8, 8, seeds, keep_weights=False, **PROTOCOL_2021)
    single = [run_teacher_student(8, 8, [s], keep_weights=False, **PROTOCOL_2021)[0] for s in seeds]
    loop = run_teacher_student_reference(8, 8, seeds, **PROTOCOL_2021)
    assert {r["status"] for r in batched} == {"global", "spurious"}
    for b, s, r in zip(batched, single, loop):
        assert b["status"] == s["status"] == r["status"]
        assert b["iterations"] == s["iterations"] == r["iterations"]
        assert abs(b["final_loss"] - s["final_loss"]) < 1e-13 and abs(b["final_loss"] - r["final_loss"]) < 1e-13
        assert b["grad_norm"] <= 1e-12 and r["grad_norm"] <= 1e-12
        assert abs(b["grad_norm"] - r["grad_norm"]) < 1e-14
        assert abs(b["min_eig"] - r["min_eig"]) < 1e-9


def test_no_restart_rule_when_restart_grad_norm_is_none():
    """A step far too large blows the gradient up: the 2018 rule restarts with half the step
    (300 iterations: restarted, step halved), without the rule the run ends `diverged` and
    never restarts."""
    (with_rule,) = run_teacher_student(3, 3, [0], keep_weights=False, step=60.0, max_iterations=300)
    (without,) = run_teacher_student(
        3, 3, [0], keep_weights=False, step=60.0, max_iterations=300, restart_grad_norm=None
    )
    assert with_rule["restarts"] > 0 and with_rule["final_step"] < 60.0
    assert without["restarts"] == 0 and without["status"] == "diverged" and without["restart_grad_norm"] is None


@pytest.mark.parametrize(
    "options,field,text",
    [
        (dict(step=0.1, step_times_k=5), "step_times_k", "the step is given twice"),
        (dict(step_times_k=0), "step_times_k", "must be a positive finite number, got 0"),
        (dict(step_times_k="5/k"), "step_times_k", "must be a positive finite number, got '5/k'"),
        (dict(init_variance="1/n"), "init_variance", "'1/n' is not one of 1/d, 1/k"),
        (dict(stopping_norm="l2"), "stopping_norm", "'l2' is not one of max_neuron, frobenius"),
        (dict(restart_grad_norm=-1.0), "restart_grad_norm", "must be a positive finite number"),
    ],
)
def test_invalid_grid_dependent_options_name_the_field(options, field, text):
    with pytest.raises(OptionError, match=rf"^{field}: ") as error:
        run_teacher_student(3, 3, [0], **options)
    assert text in str(error.value) and "\n" not in str(error.value)


# --------------------------------------------------------------------------- the service
#: cell ids of safran_shamir_table1 (k = 6..20), computed with the code before the 2021 keys
TABLE1_CELL_IDS = [
    "14fabe1d0963",
    "a620bd9970fd",
    "9e871789ac4e",
    "6d96f1cb8721",
    "83eb30219155",
    "c7c36e759d9f",
    "08ecf344f705",
    "06d8872a335b",
    "967632db48ba",
    "a7e6a622ac57",
    "e35169dfadd8",
    "e73703ded739",
    "ba016fa3aa25",
    "39b1af264fb0",
    "420588ea4760",
]
TABLE1_FIRST_UNITS = ["71444ecdbf9a7195", "2d17cb691155de07", "52f625dd2beed104"]
TABLE1_K6_PARAMS = (
    '{"activation":"relu","bad_loss_threshold":0.001,"compact_every":64,"d":6,"early_stop_global":false,'
    '"eig_margin":1e-06,"experiment":"teacher_student","fail_on_seeds":[],"grad_tol":1e-09,"init_scale":1.0,'
    '"k":6,"keep_weights":true,"max_iterations":200000,"max_restarts":30,"monotone_rtol":1e-12,"n":6,'
    '"restart_grad_norm":10000.0,"step":0.1,"teacher":"identity"}'
)
SMOKE_CELL_IDS = ["9082286b3abf", "81658716f161", "3f62e2ae5f0c", "697e349d7359", "c1f952642378", "2ad2a6f66bb4"]


def _plan(overrides):
    cfg = compose_config(overrides)
    experiment, cells = validate(cfg)
    return plan_sweep(cfg, experiment.name, cells)


def test_cell_and_unit_ids_of_the_2018_sweeps_are_unchanged():
    """The 2021 keys enter a cell only when its protocol sets them: Table 1's cells keep
    their parameters byte for byte, hence their ids and their fragments' names."""
    plan = _plan(["sweep=safran_shamir_table1"])
    assert [cell.cell_id for cell in plan.cells] == TABLE1_CELL_IDS
    assert [unit.unit_id for unit in plan.units[:3]] == TABLE1_FIRST_UNITS
    assert plan.cells[0].config_json == TABLE1_K6_PARAMS
    assert [cell.cell_id for cell in _plan(["sweep=smoke"]).cells] == SMOKE_CELL_IDS


def test_the_2021_sweep_has_the_published_protocol():
    plan = _plan(["sweep=sys2021_global_rates"])
    assert [cell.params["k"] for cell in plan.cells] == list(range(6, 21))
    assert all(cell.params["n"] == cell.params["k"] for cell in plan.cells) and plan.runs == 15 * 500
    params = plan.cells[0].params
    assert "step" not in params and params["step_times_k"] == 5 and params["init_variance"] == "1/k"
    assert params["stopping_norm"] == "frobenius" and params["grad_tol"] == 1e-12
    assert params["restart_grad_norm"] is None and params["early_stop_global"] is False
    assert params["init_scale"] == 1.0 and params["d"] == 6 and params["teacher"] == "identity"
    assert not set(TABLE1_CELL_IDS) & {cell.cell_id for cell in plan.cells}
    # larger k as an override; the same 2018 sweep given the 2021 values is the same science, the same ids
    assert [c.params["k"] for c in _plan(["sweep=sys2021_global_rates", "sweep.grid.k=[25,30]"]).cells] == [25, 30]
    same = _plan(
        [
            "sweep=safran_shamir_table1",
            "sweep.grid.k=[6]",
            "protocol.step=null",
            "+protocol.step_times_k=5",
            "+protocol.init_variance=1/k",
            "+protocol.stopping_norm=frobenius",
            "protocol.grad_tol=1e-12",
            "protocol.restart_grad_norm=null",
            "~protocol.max_restarts",
        ]
    )
    assert same.cells[0].cell_id == plan.cells[0].cell_id


def test_the_2021_cell_records_what_it_ran():
    cfg = compose_config(["sweep=sys2021_global_rates", "sweep.grid.k=[6]", "protocol.max_iterations=300"])
    experiment, cells = validate(cfg)
    records = experiment.run(cells[0], [0, 1], "cpu")
    for record in records:
        assert (
            record["step"] == 5 / 6
            and record["init_variance_value"] == 1 / 6
            and record["stopping_norm"] == "frobenius"
        )
        assert set(record) <= set(experiment.columns) | {
            "seed",
            "status",
            "final_loss",
            "grad_norm",
            "iterations",
            "wall_s",
            "device",
        }


CONFIG_ERRORS = {
    "step twice": (
        ["protocol=safran_yehudai_shamir_2021", "+protocol.step=0.1"],
        "protocol.step_times_k: the step is given twice",
        "give either step (a number) or step_times_k",
    ),
    "grid step meets step_times_k": (
        ["protocol=safran_yehudai_shamir_2021", "+sweep.grid.step=[0.1]"],
        "sweep.grid.step: the step is given twice",
        "step = step_times_k / k",
    ),
    "added to the 2018 step": (
        ["+protocol.step_times_k=5"],
        "protocol.step_times_k: the step is given twice",
        "set the other to null",
    ),
    "no step": (["protocol.step=null"], "protocol.step: no step", "protocol.step_times_k"),
    "step_times_k as code": (
        ["protocol=safran_yehudai_shamir_2021", "protocol.step_times_k=5/k"],
        "protocol.step_times_k: must be a positive finite number",
        "got '5/k'",
    ),
    "init variance": (
        ["protocol=safran_yehudai_shamir_2021", "protocol.init_variance=1/n"],
        "protocol.init_variance: '1/n' is not one of",
        "1/d, 1/k",
    ),
    "stopping norm": (
        ["protocol=safran_yehudai_shamir_2021", "protocol.stopping_norm=l2"],
        "protocol.stopping_norm: 'l2' is not one of",
        "max_neuron, frobenius",
    ),
}


@pytest.mark.parametrize("args,field_message,allowed", CONFIG_ERRORS.values(), ids=list(CONFIG_ERRORS))
def test_bad_protocol_values_are_one_line_config_errors(tmp_path, capsys, args, field_message, allowed):
    tiny = ["sweep=smoke", "sweep.grid.k=[3]", "sweep.grid.n_minus_k=[0]", "sweep.seeds=2", "sweep.reference=null"]
    assert_usage_error([*tiny, *args], field_message, allowed, tmp_path, capsys)


def test_a_step_of_5_over_k_is_one_headline_series():
    """The effective step varies with k in the 2021 sweep, but is one value per cell: one
    series, not one per k; a grid over the step still gives one series per step."""
    from ray_jobs.experiments.registry import get_layout
    from ray_jobs.experiments.teacher_student.experiment import TeacherStudent

    rows = [
        dict(k=k, n=k, step=5 / k, init_scale=1.0, frac_spurious=0.1 * i, frac_certified_spurious=math.nan)
        for i, k in enumerate(range(6, 10))
    ]
    assert list(get_layout(TeacherStudent()).headline_series(pd.DataFrame(rows))) == ["frac_spurious_vs_k"]
    grid = [
        dict(k=k, n=k, step=step, init_scale=1.0, frac_spurious=step, frac_certified_spurious=math.nan)
        for k in (6, 7)
        for step in (0.05, 0.1)
    ]
    assert sorted(get_layout(TeacherStudent()).headline_series(pd.DataFrame(grid))) == [
        "frac_spurious_vs_k/n_minus_k:0/step:0.05",
        "frac_spurious_vs_k/n_minus_k:0/step:0.1",
    ]

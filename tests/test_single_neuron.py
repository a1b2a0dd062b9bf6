"""Proposition IV.1 (survey section IV-A): the condition decided from phi, F's derivatives,
the endpoint classification, batched = plain loop, the table's agreement on a few cheap
activations, and the service's refusals (one line naming the field)."""

from __future__ import annotations

import pytest
import torch
from torch.func import hessian

from landscape_core.errors import OptionError
from landscape_core.single_neuron import (
    ACTIVATIONS,
    SingleNeuronOptions,
    activation_condition,
    classify_endpoints,
    loss,
    loss_derivatives,
    run_single_neuron,
)
from ray_jobs.config import compose_config
from ray_jobs.errors import ConfigError
from ray_jobs.validate import validate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: the proposition applied by hand (protocols.md section 5 and the survey's examples)
BAD_MINIMA = {"relu": True, "square": True, "figure2": True}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_condition_decided_from_phi_matches_the_proposition(activation):
    condition = activation_condition(activation)
    assert condition["bad_minima"] is BAD_MINIMA.get(activation, False), condition["zeros_text"]


def test_zero_kinds():
    relu = activation_condition("relu")
    assert relu["kinds"] == ["flat"] and relu["zeros"][0][0] == -6.0 and abs(relu["zeros"][0][1]) < 1e-3
    square = activation_condition("square")
    assert square["kinds"] == ["minimum"] and abs(square["zeros"][0][0]) < 1e-12
    fig2 = activation_condition("figure2")
    assert fig2["kinds"] == ["maximum"] and abs(fig2["zeros"][0][0] - 1.0) < 1e-9
    for name in ("tanh", "leaky_relu", "elu", "gelu", "swish"):
        condition = activation_condition(name)
        assert condition["kinds"] == ["crossing"] and abs(condition["zeros"][0][0]) < 1e-12, name
    for name in ("sigmoid", "softplus", "square_plus_one"):
        assert activation_condition(name)["zeros"] == [], name


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus", "gelu", "swish", "figure2", "square", "elu"])
def test_closed_form_derivatives_equal_autograd(activation):
    gen = torch.Generator().manual_seed(3)
    points = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    x, y = -0.7, 1.3
    f, g, H = loss_derivatives(activation, points[:, 0], points[:, 1], x, y)
    for i, p in enumerate(points):

        def F(q):
            return loss(activation, q[0], q[1], x, y)

        ref_g = torch.func.grad(F)(p)
        ref_H = hessian(F)(p)
        assert torch.allclose(f[i], F(p), rtol=1e-13, atol=1e-15)
        assert torch.allclose(g[i], ref_g, rtol=1e-10, atol=1e-12)
        assert torch.allclose(H[i], ref_H, rtol=1e-10, atol=1e-12)


def test_figure2_point_is_a_non_strict_suboptimal_minimum_and_tanh_origin_a_saddle():
    gens = [torch.Generator().manual_seed(0)]
    one = torch.ones(1, dtype=torch.float64)
    options = SingleNeuronOptions(activation="figure2")
    out = classify_endpoints(options, one, one, generators=gens)
    assert out["status"] == ["suboptimal_min"]
    assert float(out["final_loss"][0]) == 1.0 and abs(float(out["min_eig"][0])) < 1e-12
    assert int(out["perturb_decreases"][0]) == 0
    zero = torch.zeros(1, dtype=torch.float64)
    out = classify_endpoints(SingleNeuronOptions(activation="tanh"), zero, zero, generators=gens)
    assert out["status"] == ["saddle"] and float(out["min_eig"][0]) < -1.0  # eigenvalues +-2|y phi'(0) x|
    # relu's flat half-plane w x < 0: F = y^2, zero Hessian, no descent: a minimum the
    # Hessian alone cannot certify
    out = classify_endpoints(SingleNeuronOptions(activation="relu"), one, -one, generators=gens)
    assert out["status"] == ["suboptimal_min"] and float(out["min_eig"][0]) == 0.0


def test_batched_equals_plain_loop():
    options = SingleNeuronOptions(activation="square", max_iterations=400)
    batched = run_single_neuron(options, seeds=range(6))
    for record in batched:
        (alone,) = run_single_neuron(options, seeds=[record["seed"]])
        assert alone["status"] == record["status"] and alone["iterations"] == record["iterations"]
        for key in ("v", "w", "final_loss", "v0", "w0"):
            assert alone[key] == pytest.approx(record[key], rel=1e-12, abs=1e-14), key


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "figure2"])
def test_runs_agree_with_the_condition(activation):
    records = run_single_neuron(SingleNeuronOptions(activation=activation, max_iterations=3000), seeds=range(24))
    found = sum(r["status"] == "suboptimal_min" for r in records)
    assert (found > 0) is BAD_MINIMA.get(activation, False)
    assert all(r["condition_bad_minima"] is BAD_MINIMA.get(activation, False) for r in records)
    for r in records:
        if r["status"] == "suboptimal_min":  # F = y^2: the residual is y, phi(w x) = 0
            assert r["final_loss"] == pytest.approx(1.0, abs=1e-8) and r["perturb_decreases"] == 0
        if r["status"] == "global":
            assert r["final_loss"] <= 1e-12


def test_bad_options_name_the_field():
    with pytest.raises(OptionError) as err:
        SingleNeuronOptions(activation="figure2", x=0.0).validate()
    assert err.value.field == "x"
    with pytest.raises(OptionError) as err:
        SingleNeuronOptions(activation="cubic").validate()
    assert err.value.field == "activation" and "allowed: relu" in err.value.message


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("sweep.grid.activation=[relu,cubic]", "sweep.grid.activation"),
        ("+sweep.grid.y=[0.0]", "sweep.grid.y"),
        ("experiment.perturb_tol=0", "experiment.perturb_tol"),
        ("experiment.max_iterations=0", "experiment.max_iterations"),
    ],
)
def test_service_refuses_bad_cells(override, field):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(["sweep=single_neuron_smoke", override]))
    assert err.value.field == field


def test_report_rows_agree_or_say_no():
    import pandas as pd

    from ray_jobs.experiments.single_neuron.layout import SingleNeuronLayout

    layout = SingleNeuronLayout(axes=("activation", "x", "y"), statuses=("global", "suboptimal_min"))
    rows = pd.DataFrame(
        {"status": ["global", "suboptimal_min"], "condition_bad_minima": [False, False], "phi_zeros": ["no zero"] * 2}
        | {"iterations": [3, 4]}
    )
    assert layout.extra_aggregates(rows, confidence=0.99)["agrees"] is False  # a minimum where none may exist
    rows["condition_bad_minima"] = True
    out = layout.extra_aggregates(rows, confidence=0.99)
    assert out["agrees"] is True and out["runs_bad_minima"] is True and out["iterations_max"] == 4

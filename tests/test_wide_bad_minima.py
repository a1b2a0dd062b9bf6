"""The constructed sub-optimal minima (landscape_core.wide_bad_minima) against the statement
they implement: gradient below 1e-10 in float64, loss strictly above a trained solution, the
Hessian PSD with the predicted flat directions; batched equals a plain loop; Lanczos equals
eigvalsh; the linear control's points are saddles; bad input is one line naming the field."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, hessian

from landscape_core.errors import OptionError
from landscape_core.networks import forward, unflatten
from landscape_core.probes import exact_hessian_extremes, lanczos_hessian_extremes
from landscape_core.training import TrainSpec
from landscape_core.wide_bad_minima import ConstructionSpec, construct
from landscape_core.wide_bad_minima_checks import CheckSpec, run_wide_bad_minima

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")
CHEAP = CheckSpec(perturb_directions=4, radii=3, train_starts=2, descent_starts=1)
LBFGS = TrainSpec(optimizer="lbfgs", grad_tol=1e-8, max_iterations=300)


def _loss(spec):
    model = spec.model()

    def loss(t, x, y):
        return 0.5 * ((forward(unflatten(t, model), x, model) - y) ** 2).mean()

    return loss


@pytest.mark.parametrize("depth", [2, 3])
def test_point_is_critical_psd_with_the_predicted_kernel(depth):
    spec = ConstructionSpec(width=3, depth=depth, activation="tanh")
    c = construct(spec, seeds=[0], device=CPU)
    loss = _loss(spec)
    g = grad(loss)(c.theta[0], c.X[0], c.Y[0])
    assert float(g.norm()) < 1e-10
    ev = torch.linalg.eigvalsh(hessian(loss)(c.theta[0], c.X[0], c.Y[0]))
    k = spec.predicted_flat_dim()  # 2 (depth 2) or 8 (depth 3)
    assert float(ev[0]) > -1e-12
    assert float(ev[k - 1].abs()) < 1e-12 * float(ev[-1]) and float(ev[k]) > 1e-9
    assert float(c.second_order_max_eig[0]) < 0 and float(c.reduced_min_eig[0]) > 0


def test_suboptimal_minimum_status_and_strictly_above_training():
    records = run_wide_bad_minima(ConstructionSpec(width=4, depth=2, activation="tanh"), CHEAP, LBFGS, seeds=[0, 1])
    for r in records:
        assert r["status"] == "suboptimal_min"
        assert r["grad_norm"] < 1e-10
        assert r["final_loss"] > r["trained_best_loss"] + 1e-3  # strictly worse than a trained net
        assert r["flat_as_predicted"] and r["kernel_dim"] == 3
        assert not r["perturb_decrease"] and not r["descent_lower"]


def test_batched_equals_plain_loop():
    spec = ConstructionSpec(width=2, depth=3, activation="sigmoid")
    both = construct(spec, seeds=[3, 4], device=CPU)
    for i, seed in enumerate([3, 4]):
        one = construct(spec, seeds=[seed], device=CPU)
        torch.testing.assert_close(one.theta[0], both.theta[i], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(one.Y[0], both.Y[i], rtol=1e-12, atol=1e-14)


def test_width_does_not_change_the_data():
    a = construct(ConstructionSpec(width=2, depth=2, activation="softplus"), seeds=[0], device=CPU)
    b = construct(ConstructionSpec(width=16, depth=2, activation="softplus"), seeds=[0], device=CPU)
    torch.testing.assert_close(a.Y, b.Y)


def test_lanczos_equals_eigvalsh_at_a_small_width():
    spec = ConstructionSpec(width=4, depth=2, activation="tanh")
    c = construct(spec, seeds=[0, 1], device=CPU)
    loss = _loss(spec)
    lo, hi = exact_hessian_extremes(loss, c.theta, c.X, c.Y)
    P = c.theta.shape[1]
    llo, lhi = lanczos_hessian_extremes(loss, c.theta, c.X, c.Y, steps=P, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(lhi, hi, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(llo, lo, rtol=0, atol=1e-10)


@pytest.mark.parametrize("depth", [2, 3])
def test_linear_control_is_a_saddle(depth):
    checks = CheckSpec(train_starts=2, descent_starts=1)  # the default 16 directions x 7 radii
    records = run_wide_bad_minima(ConstructionSpec(width=2, depth=depth, activation="linear"), checks, LBFGS, seeds=[0])
    r = records[0]
    assert r["grad_norm"] < 1e-10 and r["status"] == "saddle"
    if depth == 2:
        assert r["min_eig"] < -1e-3  # negative curvature
        assert r["descent_lower"]  # descent from a perturbed point (radius 1e-6) reaches a lower loss
    else:
        assert r["min_eig"] > -1e-12 and r["perturb_decrease"]  # a degenerate saddle: only perturbation sees it


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"activation": "relu"}, "activation"),
        ({"width": 1}, "width"),
        ({"input_dim": 5, "n_samples": 32}, "input_dim"),
        ({"depth": 4}, "depth"),
        ({"n_samples": 10}, "n_samples"),
    ],
)
def test_bad_input_names_the_field(kwargs, field):
    spec = ConstructionSpec(**{"width": 2, "depth": 2, "activation": "tanh", **kwargs})
    with pytest.raises(OptionError) as exc:
        spec.validate()
    assert exc.value.field == field


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("sweep.grid.activation=[relu]", "sweep.grid.activation"),
        ("sweep.grid.width=[1]", "sweep.grid.width"),
        ("experiment.input_dim=6", "experiment.input_dim"),
        ("+experiment.checks.bogus=1", "experiment.checks.bogus"),
    ],
)
def test_service_refuses_bad_input_with_the_config_path(override, path):
    from ray_jobs.config import compose_config
    from ray_jobs.errors import ConfigError
    from ray_jobs.validate import validate

    cfg = compose_config(["sweep=wide_bad_minima_smoke", override])
    with pytest.raises(ConfigError) as exc:
        validate(cfg)
    assert exc.value.field == path
    assert "relu" not in path or "twice differentiable" in str(exc.value)

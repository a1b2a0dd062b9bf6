"""Deep-network probes and training (issue: width threshold), checked against references."""

from __future__ import annotations

import pytest
import torch

from landscape_core.data import DataSpec, make_dataset
from landscape_core.networks import ACTIVATIONS, MLPSpec, flatten, forward, init_parameters, unflatten
from landscape_core.probes import exact_hessian_extremes, lanczos_hessian_extremes, numerical_rank
from landscape_core.training import TrainSpec, train
from landscape_core.width_threshold import resolve_options, run_width_threshold

F64 = torch.float64


def run(*, seeds, **options) -> list[dict]:
    """``run_width_threshold`` on the options resolved (and checked) by ``resolve_options``."""
    return run_width_threshold(resolve_options(**options), seeds=seeds)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- rank
@pytest.mark.parametrize("rows,cols,rank", [(10, 8, 4), (6, 6, 6), (5, 9, 1), (12, 12, 11)])
def test_rank_of_matrices_of_known_rank(rows, cols, rank):
    g = _gen(rows * cols)
    M = torch.randn(rows, rank, generator=g, dtype=F64) @ torch.randn(rank, cols, generator=g, dtype=F64)
    res = numerical_rank(M)
    assert int(res.rank) == rank == torch.linalg.matrix_rank(M).item()
    if rank < min(rows, cols):
        assert float(res.sigma_min) < float(res.tol)


def test_rank_tolerance_edge_and_nearly_singular():
    U, _ = torch.linalg.qr(torch.randn(8, 8, generator=_gen(1), dtype=F64))
    Vt, _ = torch.linalg.qr(torch.randn(6, 6, generator=_gen(2), dtype=F64))
    sv = torch.tensor([1.0, 0.5, 0.1, 1e-3, 1e-9, 1e-14], dtype=F64)
    M = U[:, :6] @ torch.diag(sv) @ Vt  # known singular values
    default = numerical_rank(M)  # tol = 1 * 8 * 2.2e-16 = 1.8e-15: 1e-14 still counts
    assert int(default.rank) == 6
    assert float(default.tol) == pytest.approx(8 * torch.finfo(F64).eps, rel=1e-9)
    assert float(default.sigma_min) == pytest.approx(1e-14, rel=1e-2)
    assert int(numerical_rank(M, rtol=1e-6).rank) == 4  # 1e-9 and 1e-14 fall under 1e-6
    # the edge: sigma_4 = 1e-3 counts just below it and not just above it
    assert int(numerical_rank(M, rtol=1e-3 * (1 - 1e-9)).rank) == 4
    assert int(numerical_rank(M, rtol=1e-3 * (1 + 1e-9)).rank) == 3
    low = U[:, :6] @ torch.diag(torch.tensor([1.0, 1.0, 1.0, 0, 0, 0], dtype=F64)) @ Vt  # rank 3
    assert numerical_rank(torch.stack([M, low])).rank.tolist() == [6, 3]  # batched call


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus"])
def test_rank_at_init_is_full_for_analytic_activations(activation):
    recs = run(
        width=12,
        depth=3,
        activation=activation,
        n_samples=8,
        seeds=range(3),
        data=dict(name="random_labels", input_dim=3),
        optimizer=dict(max_iterations=1),
    )
    assert all(r["init_last_layer_rank"] == 8 and r["init_full_rank"] for r in recs)
    recs = run(
        width=5,
        depth=2,
        activation=activation,
        n_samples=8,
        seeds=range(3),
        data=dict(name="random_labels", input_dim=3),
        optimizer=dict(max_iterations=1),
    )
    assert all(r["init_last_layer_rank"] == 5 and r["init_full_rank"] for r in recs)  # min(n, width)


def test_linear_network_rank_limited_by_input_dimension():
    recs = run(
        width=12,
        depth=3,
        activation="linear",
        n_samples=10,
        seeds=range(3),
        data=dict(name="random_labels", input_dim=3),
        optimizer=dict(max_iterations=1),
    )
    assert all(r["init_last_layer_rank"] == 3 and not r["init_full_rank"] for r in recs)


def test_distinct_data_separates_samples_on_one_coordinate():
    X, Y = make_dataset(DataSpec(name="distinct", n_samples=7, input_dim=3), generator=_gen(0))
    assert X[:, 0].unique().numel() == 7 and Y.shape == (7, 1)


def test_digits_is_shipped_and_subsampled():
    X, Y = make_dataset(DataSpec(name="digits", n_samples=50), generator=_gen(0))
    assert X.shape == (50, 64) and Y.shape == (50, 10) and torch.all(Y.sum(1) == 1)
    X, y = make_dataset(DataSpec(name="digits", n_samples=50, classification=True), generator=_gen(0))
    assert y.dtype == torch.int64 and y.max() <= 9


# --------------------------------------------------------------------------- Hessian probes
def _small_problem(S=3, activation="tanh"):
    spec = MLPSpec(3, 5, 3, 2, activation)
    g = _gen(5)
    theta = torch.stack([flatten(init_parameters(spec, generator=g), spec) for _ in range(S)])
    X = torch.randn(S, 7, 3, generator=g, dtype=F64)
    Y = torch.randn(S, 7, 2, generator=g, dtype=F64)

    def loss(t, X, Y):
        return 0.5 * ((forward(unflatten(t, spec), X, spec) - Y) ** 2).sum(-1).mean()

    return spec, theta, X, Y, loss


def test_exact_extremes_match_eigvalsh_of_full_hessian():
    spec, theta, X, Y, loss = _small_problem()
    lo, hi = exact_hessian_extremes(loss, theta, X, Y)
    for s in range(theta.shape[0]):
        H = torch.func.hessian(loss)(theta[s], X[s], Y[s])
        ev = torch.linalg.eigvalsh(H)
        assert float(lo[s]) == pytest.approx(float(ev[0]), abs=1e-12)
        assert float(hi[s]) == pytest.approx(float(ev[-1]), abs=1e-12)


def test_lanczos_matches_eigvalsh():
    spec, theta, X, Y, loss = _small_problem()
    P = theta.shape[1]
    lo, hi = exact_hessian_extremes(loss, theta, X, Y)
    lo_full, hi_full = lanczos_hessian_extremes(loss, theta, X, Y, steps=P)
    torch.testing.assert_close(lo_full, lo, rtol=0, atol=1e-9)
    torch.testing.assert_close(hi_full, hi, rtol=0, atol=1e-9)
    lo_part, hi_part = lanczos_hessian_extremes(loss, theta, X, Y, steps=40)  # P = 62
    assert torch.all(lo_part >= lo - 1e-9) and torch.all(hi_part <= hi + 1e-9)  # Ritz values are inside
    torch.testing.assert_close(lo_part, lo, rtol=0, atol=1e-6)
    torch.testing.assert_close(hi_part, hi, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("optimizer,lr", [("gd", 0.3), ("momentum", 0.05), ("adam", 0.01), ("lbfgs", 1.0)])
def test_batched_training_equals_per_seed(optimizer, lr):
    spec, theta, X, Y, loss = _small_problem()
    ts = TrainSpec(optimizer=optimizer, lr=lr, grad_tol=1e-7, max_iterations=400)
    batched = train(loss, theta, X, Y, spec=ts)
    for s in range(theta.shape[0]):
        one = train(loss, theta[s : s + 1], X[s : s + 1], Y[s : s + 1], spec=ts)
        assert int(one.iterations[0]) == int(batched.iterations[s])
        torch.testing.assert_close(one.theta[0], batched.theta[s], rtol=0, atol=1e-10)
        assert bool(one.converged[0]) == bool(batched.converged[s])


def test_training_reaches_stationary_point_and_gradient_is_small():
    spec, theta, X, Y, loss = _small_problem()
    res = train(loss, theta, X, Y, spec=TrainSpec(optimizer="lbfgs", lr=1.0, grad_tol=1e-9, max_iterations=3000))
    assert bool(res.converged.all())
    g = torch.func.vmap(torch.func.grad(loss))(res.theta, X, Y)
    assert float(torch.linalg.vector_norm(g, dim=-1).max()) <= 1e-9


def test_run_width_threshold_records_and_statuses():
    recs = run(
        width=16,
        depth=2,
        activation="tanh",
        n_samples=8,
        seeds=range(4),
        data=dict(name="random_labels", input_dim=3),
        optimizer=dict(name="lbfgs", lr=1.0, max_iterations=2000, grad_tol=1e-9),
    )
    for r in recs:
        assert r["status"] == "global" and r["final_loss"] < 1e-6  # width 2n, analytic activation
        assert r["full_rank"] and r["last_layer_rank"] == 8 and r["hessian_method"] == "exact"
        for key in ("min_eig", "last_layer_sigma_min", "last_layer_rank_tol", "width_over_n", "optimizer_lr"):
            assert key in r
    quick = run(
        width=4,
        depth=2,
        activation="linear",
        n_samples=8,
        seeds=[0],
        data=dict(name="random_labels", input_dim=3),
        optimizer=dict(name="lbfgs", lr=1.0, max_iterations=500, grad_tol=1e-9),
    )
    assert quick[0]["status"] == "spurious"  # least squares cannot interpolate 8 random labels from 3 inputs


def test_all_activations_run():
    for act in ACTIVATIONS:
        recs = run(
            width=4,
            depth=2,
            activation=act,
            n_samples=4,
            seeds=[0],
            data=dict(name="random_labels", input_dim=2),
            optimizer=dict(max_iterations=5),
        )
        assert recs[0]["status"] in ("global", "spurious", "saddle", "not_converged", "diverged")


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(activation="swishy"), "activation"),
        (dict(width=0), "width"),
        (dict(optimizer=dict(name="sgd")), "optimizer.name"),
        (dict(data=dict(name="mnist")), "data.name"),
        (dict(data=dict(colour=1)), "data.colour"),
        (dict(loss="hinge"), "loss"),
        (dict(init="xavier"), "init"),
        (dict(loss="cross_entropy", data=dict(classification=False)), "data.classification"),
        (dict(probes=dict(lanczos_steps=0)), "probes.lanczos_steps"),
    ],
)
def test_invalid_width_threshold_options_name_the_field(kwargs, field):
    base = dict(width=4, depth=2, activation="relu", n_samples=4, seeds=[0])
    base.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{field}"):
        run(**base)


def test_ntk_gram_rank_probe():
    """Claim VI.3's Gram matrix J J^T (n x n here) has rank n for a wide analytic net; null when off."""
    kwargs = dict(
        width=12,
        depth=2,
        activation="tanh",
        n_samples=8,
        seeds=range(2),
        data=dict(name="random_labels", input_dim=3),
        optimizer=dict(max_iterations=1),
    )
    on = run(probes=dict(ntk_rank=True), **kwargs)
    assert all(r["ntk_gram_rank"] == 8 and r["ntk_full_rank"] is True and r["ntk_rank"] is True for r in on)
    off = run(**kwargs)
    assert all(r["ntk_gram_rank"] is None and r["ntk_full_rank"] is None for r in off)


def test_resolved_options_are_the_record_columns():
    options = resolve_options(
        width=6,
        depth=3,
        activation="gelu",
        n_samples=4,
        data=dict(name="distinct", input_dim=2),
        optimizer=dict(name="lbfgs"),
        probes=dict(loss_tol=1e-8),
    )
    assert options.train.stop_loss == 1e-8  # stop_loss 0 resolves to the global threshold
    recs = run(
        width=6,
        depth=3,
        activation="gelu",
        n_samples=4,
        seeds=[0],
        data=dict(name="distinct", input_dim=2),
        optimizer=dict(name="lbfgs", max_iterations=3),
        probes=dict(loss_tol=1e-8),
    )
    columns = resolve_options(
        width=6,
        depth=3,
        activation="gelu",
        n_samples=4,
        data=dict(name="distinct", input_dim=2),
        optimizer=dict(name="lbfgs", max_iterations=3),
        probes=dict(loss_tol=1e-8),
    ).columns()
    assert {key: recs[0][key] for key in columns} == columns

"""Skip-to-output networks: Psi rank, plain/skip equivalence, convex `rand` fit, batching."""

from __future__ import annotations

import pytest
import torch

from landscape_core.networks import MLPSpec, forward, init_parameters
from landscape_core.skip_networks import choose_skip_neurons, psi, resolve_options, run_skip_networks, skip_forward

F64 = torch.float64


def run(*, seeds, **options) -> list[dict]:
    """``run_skip_networks`` on the options resolved (and checked) by ``resolve_options``."""
    return run_skip_networks(resolve_options(**options), seeds=seeds)


def _net(width=6, depth=4, activation="sigmoid", seed=0):
    spec = MLPSpec(5, width, depth, 3, activation, output_bias=True)
    g = torch.Generator().manual_seed(seed)
    return spec, init_parameters(spec, generator=g), g


@pytest.mark.parametrize("M,N", [(12, 12), (18, 12), (7, 12)])
def test_psi_rank_full_when_M_at_least_N_and_at_most_M_otherwise(M, N):
    spec, params, g = _net()
    X = torch.randn(N, 5, generator=g, dtype=F64)
    idx = choose_skip_neurons(spec, M, generator=g)
    P = psi(params, X, spec, idx)
    assert P.shape == (N, M)
    rank = int(torch.linalg.matrix_rank(P))
    assert rank == min(M, N)  # sigmoid, generic data: full rank (Lemma 3.2); never above M


def test_skip_neurons_are_distinct_and_from_named_layers():
    spec, _, g = _net(width=6, depth=4)
    idx = choose_skip_neurons(spec, 10, generator=g)
    assert idx.unique().numel() == 10 and int(idx.max()) < 18
    only2 = choose_skip_neurons(spec, 6, generator=g, layers=[2])
    assert torch.equal(only2, torch.arange(6, 12))
    with pytest.raises(ValueError, match="^skip.M"):
        choose_skip_neurons(spec, 19, generator=g)
    with pytest.raises(ValueError, match="^skip.layers"):
        choose_skip_neurons(spec, 2, generator=g, layers=[4])


def test_skip_equals_plain_when_skip_weights_are_zero():
    spec, params, g = _net()
    X = torch.randn(9, 5, generator=g, dtype=F64)
    idx = choose_skip_neurons(spec, 4, generator=g)
    params = dict(params, V=torch.zeros(3, 4, dtype=F64))
    torch.testing.assert_close(skip_forward(params, X, spec, idx), forward(params, X, spec), rtol=0, atol=0)
    params["V"] = torch.ones(3, 4, dtype=F64)
    assert not torch.allclose(skip_forward(params, X, spec, idx), forward(params, X, spec))


def test_rand_mode_reaches_zero_training_error_when_psi_has_rank_n():
    # random labels: nothing to learn but memorisation; the convex fit interpolates iff features span R^N
    kw = dict(
        width=16,
        depth=4,
        activation="sigmoid",
        n_samples=48,
        seeds=range(3),
        mode="rand",
        data="random_labels",
        classes=3,
        n_test=0,
        rand_max_iterations=3000,
    )
    skip = run(architecture="skip", **kw)  # M = N = 48 of the 48 hidden neurons
    assert all(r["psi_full_rank"] and r["init_psi_rank"] == 48 for r in skip)
    assert all(r["zero_train_error"] and r["status"] == "global" for r in skip)
    # control: 16 features + bias; 48 random points are beyond a linear classifier's capacity
    # (Cover: about 2 x 17 points), so the plain network's convex fit cannot interpolate them
    plain = run(architecture="plain", **kw)
    assert all(not r["zero_train_error"] for r in plain)


def test_batched_equals_per_seed_for_both_modes():
    for mode in ("sgd", "rand"):
        kw = dict(
            width=10,
            depth=3,
            activation="softplus",
            n_samples=16,
            mode=mode,
            n_test=20,
            sgd=dict(epochs=5, batch_size=4, lr=0.05),
            rand_max_iterations=200,
        )
        batched = run(seeds=[3, 4, 5], **kw)
        for rec in batched:
            one = run(seeds=[rec["seed"]], **kw)[0]
            assert one["final_loss"] == pytest.approx(rec["final_loss"], abs=1e-10)
            assert one["test_accuracy"] == rec["test_accuracy"] and one["psi_rank"] == rec["psi_rank"]


def test_plain_and_skip_share_initial_hidden_weights_per_seed():
    kw = dict(width=10, depth=3, activation="sigmoid", n_samples=16, seeds=[0], mode="rand", n_test=0)
    a = run(architecture="skip", **kw)[0]
    b = run(architecture="plain", **kw)[0]
    assert a["init_psi_sigma_min"] == b["init_psi_sigma_min"]  # same U, same skip neurons


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(mode="adam"), "mode"),
        (dict(architecture="resnet"), "architecture"),
        (dict(activation="nope"), "activation"),
        (dict(M=500), "skip.M"),
        (dict(data="cifar"), "data.name"),
        (dict(sgd=dict(lr=0)), "sgd.lr"),
    ],
)
def test_invalid_skip_options_name_the_field(kwargs, field):
    base = dict(width=6, depth=3, activation="sigmoid", n_samples=8, seeds=[0])
    base.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{field}"):
        run(**base)


def test_a_diverged_run_is_recorded_without_probes():
    # lr 1e6: seed 1's weights overflow to NaN within 20 epochs (seed 0 stays finite)
    records = run(
        width=8,
        depth=3,
        activation="softplus",
        n_samples=16,
        seeds=[0, 1],
        mode="sgd",
        n_test=10,
        sgd=dict(lr=1e6, epochs=20, batch_size=4, momentum=0.9),
    )
    diverged = records[1]
    assert diverged["status"] == "diverged" and not diverged["zero_train_error"]
    assert diverged["psi_rank"] is None and diverged["psi_full_rank"] is None and diverged["init_psi_rank"] == 16
    assert (
        diverged["test_accuracy"] != diverged["test_accuracy"] and diverged["train_error"] != diverged["train_error"]
    )  # NaN
    assert records[0]["status"] != "diverged" and isinstance(records[0]["psi_rank"], int)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(skip_layers=[3]), "skip.layers"),
        (dict(skip_layers=[1, 1]), "skip.layers"),
        (dict(M=17, skip_layers=[2]), "skip.M"),
        (dict(n_test=-1), "data.n_test"),
        (dict(data="digits", n_samples=1700, n_test=500, width=2000), "n_samples"),
        (dict(classes=1), "data.classes"),
        (dict(sgd=dict(beta=1)), "sgd.beta"),
        (dict(sgd=dict(milestones=["a"])), "sgd.milestones"),
        (dict(rank_rtol=0), "rank_rtol"),
        (dict(rand_max_iterations=0), "rand_max_iterations"),
        (dict(depth=1), "depth"),
    ],
)
def test_resolve_options_names_the_field_before_running(kwargs, field):
    base = dict(width=8, depth=3, activation="sigmoid", n_samples=8)
    base.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{field}: "):
        resolve_options(**base)

"""Dynamic String Sampling: invariants and known answers (issue: sublevel-set connectivity)."""

from __future__ import annotations

import pytest
import torch

from landscape_core.networks import forward, unflatten
from landscape_core.string_sampling import (
    StringSpec,
    cyclic_permutation_counterexample,
    dynamic_string_sampling,
    interpolation_losses,
    resolve_options,
    run_string_sampling,
)
from landscape_core.string_sampling import train_beads as _train_beads
from landscape_core.training import TrainSpec

F64 = torch.float64


def run(*, seeds, **options) -> list[dict]:
    """``run_string_sampling`` on the options resolved (and checked) by ``resolve_options``."""
    return run_string_sampling(resolve_options(**options), seeds=seeds)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # (tests/conftest.py)


def _linear_regression():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 3, generator=g, dtype=F64)
    y = X @ torch.tensor([1.0, 2.0, -1.0], dtype=F64) + 0.1 * torch.randn(60, generator=g, dtype=F64)

    def loss(t, X, y):
        return 0.5 * ((X @ t - y) ** 2).mean()

    w = torch.linalg.lstsq(X, y.unsqueeze(-1)).solution.squeeze(-1)
    a = w + 0.05 * torch.randn(3, generator=g, dtype=F64)
    b = w - 0.05 * torch.randn(3, generator=g, dtype=F64)
    return loss, X, y, a, b


def test_interpolation_reproduces_endpoints_exactly():
    X, Y, A, B, spec = cyclic_permutation_counterexample()

    def loss(t, X, Y):
        return 0.5 * ((forward(unflatten(t, spec), X, spec) - Y) ** 2).sum(-1).mean()

    t, values = interpolation_losses(loss, A, B, X, Y, points=17)
    assert float(t[0]) == 0.0 and float(t[-1]) == 1.0
    assert float(values[0]) == float(loss(A, X, Y)) and float(values[-1]) == float(loss(B, X, Y))
    assert float(values.max()) > 0.1  # the straight line between the two solutions is not a solution


def test_convex_problem_certifies_with_no_beads_and_unit_length():
    loss, X, y, a, b = _linear_regression()
    L0 = 1.0001 * max(float(loss(a, X, y)), float(loss(b, X, y)))
    rec = dynamic_string_sampling(
        loss, a, b, X, y, spec=StringSpec(threshold=L0), bead_training=TrainSpec(optimizer="adam", lr=0.01)
    )
    assert rec["dss_connected"] and rec["dss_beads"] == 0 and rec["dss_rounds"] == 0
    assert rec["dss_normalized_length"] == pytest.approx(1.0, abs=1e-12)


def test_double_well_with_barrier_above_threshold_does_not_certify():
    def loss(t):  # minima at +-1 (loss 0), barrier 1 at 0
        return ((t * t - 1.0) ** 2).sum()

    a, b = torch.tensor([-1.0], dtype=F64), torch.tensor([1.0], dtype=F64)
    rec = dynamic_string_sampling(
        loss,
        a,
        b,
        spec=StringSpec(threshold=0.1, max_rounds=5),
        bead_training=TrainSpec(optimizer="gd", lr=0.05, max_iterations=500),
    )
    assert not rec["dss_connected"]
    assert rec["dss_max_interp_loss"] >= 0.11
    assert rec["dss_normalized_length"] >= 1.0


@pytest.mark.parametrize("constrained", [False, True])
def test_counterexample_is_not_certified(constrained):
    X, Y, A, B, spec = cyclic_permutation_counterexample()

    def loss(t, X, Y):
        return 0.5 * ((forward(unflatten(t, spec), X, spec) - Y) ** 2).sum(-1).mean()

    assert float(loss(A, X, Y)) < 1e-30 and float(loss(B, X, Y)) < 1e-30  # both exact solutions
    rec = dynamic_string_sampling(
        loss,
        A,
        B,
        X,
        Y,
        spec=StringSpec(threshold=0.01, max_rounds=6, constrained=constrained),
        bead_training=TrainSpec(optimizer="adam", lr=0.01, max_iterations=1500),
    )
    assert not rec["dss_connected"]
    assert rec["dss_normalized_length"] >= 1.0
    assert len(rec["dss_segment_max_losses"]) == rec["dss_beads"] + 1


def test_batched_bead_training_equals_one_by_one():
    loss, X, y, a, b = _linear_regression()
    g = torch.Generator().manual_seed(1)
    init = torch.randn(4, 3, generator=g, dtype=F64)
    prev, nxt = init - 1.0, init + 1.0
    for constrained in (False, True):
        spec = StringSpec(threshold=1.0, constrained=constrained, spring_weight=0.1)
        tspec = TrainSpec(optimizer="adam", lr=0.01, max_iterations=200, stop_loss=0.0)
        batched = _train_beads(loss, init, prev, nxt, (X, y), spec, tspec)
        for i in range(4):
            one = _train_beads(loss, init[i : i + 1], prev[i : i + 1], nxt[i : i + 1], (X, y), spec, tspec)
            torch.testing.assert_close(one[0], batched[i], rtol=0, atol=1e-12)


def test_keep_string_returns_endpoints_first_and_last():
    loss, X, y, a, b = _linear_regression()
    L0 = 0.5 * max(float(loss(a, X, y)), float(loss(b, X, y)))  # endpoints above the level: not connected
    rec = dynamic_string_sampling(
        loss,
        a,
        b,
        X,
        y,
        spec=StringSpec(threshold=L0, max_rounds=2),
        keep_string=True,
        bead_training=TrainSpec(optimizer="adam", lr=0.01, max_iterations=50),
    )
    string = torch.tensor(rec["dss_string"], dtype=F64)
    torch.testing.assert_close(string[0], a, rtol=0, atol=0)
    torch.testing.assert_close(string[-1], b, rtol=0, atol=0)
    assert not rec["dss_connected"]
    # per-model losses of the final string, and its segment checks (t in [0, 1), so row i starts at bead i)
    assert rec["dss_bead_losses"] == pytest.approx([float(loss(theta, X, y)) for theta in string], rel=1e-12)
    assert len(rec["dss_string_losses"]) == len(string) - 1 == len(rec["dss_segment_max_losses"])
    for row, bead_loss, seg_max in zip(rec["dss_string_losses"], rec["dss_bead_losses"], rec["dss_segment_max_losses"]):
        assert len(row) == 100 and row[0] == pytest.approx(bead_loss, rel=1e-12) and max(row) == seg_max


def test_run_string_sampling_protocol_entry_points():
    counter = run(
        problem="counterexample",
        threshold=0.01,
        seeds=[0],
        loss="mse",
        string=dict(max_rounds=4),
        bead_training=dict(lr=0.01, max_iterations=1000),
    )
    assert counter[0]["status"] == "global" and not counter[0]["dss_connected"]
    quad = run(
        problem="quadratic",
        threshold=0.05,
        seeds=[0, 1],
        n_train=1000,
        n_test=500,
        endpoint_training=dict(lr=1e-2, max_iterations=20_000),
        string=dict(max_rounds=5),
    )
    for r in quad:
        assert r["status"] == "global" and max(r["endpoint_train_losses"]) < 0.95 * 0.05
        assert r["dss_normalized_length"] >= 1.0 and r["dss_beads"] == len(r["dss_segment_max_losses"]) - 1
        if r["dss_connected"]:
            assert max(r["dss_segment_max_losses"]) < 1.1 * 0.05
    # endpoints that cannot reach the threshold are reported, not strung
    hard = run(
        problem="quadratic",
        threshold=1e-6,
        seeds=[0],
        n_train=200,
        n_test=50,
        endpoint_training=dict(max_iterations=50),
    )
    assert hard[0]["status"] == "not_converged" and hard[0]["dss_connected"] is None  # DSS did not run


def test_interpolation_probe_records_lines_with_exact_ends():
    records = run(
        problem="quadratic",
        threshold=0.05,
        seeds=[0],
        n_train=500,
        n_test=100,
        probe_points=7,
        endpoint_training=dict(lr=1e-2, max_iterations=20_000),
        string=dict(max_rounds=3),
    )
    r = records[0]
    assert r["status"] == "global" and r["probe_points"] == 7
    ab, init_a, init_b = r["interp_ab_losses"], r["interp_init_a_losses"], r["interp_init_b_losses"]
    assert len(ab) == len(init_a) == len(init_b) == 7
    # t = 0 and t = 1 are the trained endpoints (and for the init lines, the untrained point -> the model)
    assert ab[0] == r["endpoint_train_losses"][0] and ab[-1] == r["endpoint_train_losses"][1]
    assert init_a[-1] == r["endpoint_train_losses"][0] and init_b[-1] == r["endpoint_train_losses"][1]
    assert init_a[0] > init_a[-1] and init_b[0] > init_b[-1]  # training lowered the loss
    assert r["interp_ab_max_loss"] == max(ab)
    assert r["interp_ab_barrier"] == pytest.approx(max(ab) - max(ab[0], ab[-1]), abs=0) and r["interp_ab_barrier"] >= 0
    rises = [b - a for line in (init_a, init_b) for a, b in zip(line, line[1:])]
    assert r["interp_init_max_rise"] == pytest.approx(max(0.0, max(rises)), rel=1e-12)
    # the same line from the core's interpolation function: A -> B on the training data, recomputed
    counter = run(
        problem="counterexample",
        threshold=0.01,
        seeds=[0],
        loss="mse",
        probe_points=5,
        string=dict(max_rounds=1),
        bead_training=dict(lr=0.01, max_iterations=10),
    )
    c = counter[0]
    X, Y, A, B, spec = cyclic_permutation_counterexample()

    def loss(t, X, Y):
        return 0.5 * ((forward(unflatten(t, spec), X, spec) - Y) ** 2).sum(-1).mean()

    _, expected = interpolation_losses(loss, A, B, X, Y, points=5)
    assert c["interp_ab_losses"] == pytest.approx(expected.tolist(), rel=1e-12, abs=1e-15)
    assert c["interp_ab_barrier"] > 0.1  # the two solutions are separated by a barrier on the line
    assert c["interp_init_a_losses"] is None and c["interp_init_max_rise"] is None
    with pytest.raises(ValueError, match="^probe_points:"):
        run(problem="counterexample", threshold=0.01, seeds=[0], probe_points=1)

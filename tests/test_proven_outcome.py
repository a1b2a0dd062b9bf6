"""Runs that end when their outcome is proven (``stop_when_proven``, issue 13 item 3): the
same classification as the full protocol seed by seed, final points at the certified
minimum, and the option off is the old descent bit for bit."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from landscape_core.certification import certify_minimum
from landscape_core.teacher_student import (
    SpuriousProver,
    TeacherStudentProtocol,
    gradient_descent,
    initial_points,
    run_teacher_student,
)


def _compare(k: int, seeds) -> tuple[list[dict], list[dict]]:
    full = run_teacher_student(k, k, seeds)
    fast = run_teacher_student(k, k, seeds, early_stop_global=True, stop_when_proven=True)
    assert [r["seed"] for r in fast] == [r["seed"] for r in full]
    differ = [(a["seed"], a["status"], b["status"]) for a, b in zip(full, fast) if a["status"] != b["status"]]
    assert not differ, f"classifications differ: {differ}"
    for a, b in zip(full, fast):
        if b["proven_iteration"] is not None:
            assert b["status"] == "spurious" and b["proven_iteration"] == b["iterations"] <= a["iterations"]
            assert b["grad_norm"] <= 1e-9 and b["final_loss"] >= 1e-3
        else:
            assert b["status"] != "spurious" or b["iterations"] == a["iterations"]
    return full, fast


@pytest.fixture(scope="module")
def k8():
    """The full protocol and the proven-outcome variant on 40 seeds at k = n = 8 (shared:
    the default suite pays for one comparison)."""
    return _compare(8, range(40))


def test_statuses_identical_to_the_full_protocol_k8(k8):
    full, fast = k8
    counts = Counter(r["status"] for r in full)
    proven = sum(r["proven_iteration"] is not None for r in fast)
    assert counts["spurious"] >= 3 and proven == counts["spurious"]  # every spurious run ended early here
    assert sum(r["iterations"] for r in fast) < sum(r["iterations"] for r in full)


@pytest.mark.slow
@pytest.mark.parametrize("k", [8, 9, 10])
def test_statuses_identical_to_the_full_protocol_300_seeds(k):
    full, fast = _compare(k, range(300))
    assert sum(r["proven_iteration"] is not None for r in fast) > 0


def test_final_points_within_the_certified_radius_of_the_full_protocol(k8):
    full, fast = k8
    checked = 0
    for a, b in zip(full, fast):
        if b["proven_iteration"] is None:
            continue
        W_full = np.array(a["final_weights"]).reshape(8, 8)
        W_fast = np.array(b["final_weights"]).reshape(8, 8)
        cert = certify_minimum(W_full)  # x* within cert.radius of the full protocol's final point
        assert cert.certified
        # same seed, same trajectory up to the early stop: no symmetry alignment needed;
        # the early point is x* to float64 accuracy (Newton-finished)
        assert np.linalg.norm(W_fast - W_full) <= cert.radius
        assert abs(a["final_loss"] - b["final_loss"]) <= 1e-12
        checked += 1
        if checked == 2:
            break
    assert checked > 0


def test_option_off_is_the_old_descent_bit_for_bit():
    seeds = range(12)
    protocol = TeacherStudentProtocol(max_iterations=3000)
    W0, V = initial_points(6, 6, seeds, protocol)
    old = gradient_descent(W0, V, protocol)
    off = gradient_descent(W0, V, TeacherStudentProtocol(max_iterations=3000, stop_when_proven=False))
    for name in (
        "weights",
        "grad_norm",
        "iterations",
        "restarts",
        "final_step",
        "converged",
        "diverged",
        "stopped_early",
        "monotone",
    ):
        assert torch.equal(getattr(old, name), getattr(off, name)), name
    assert torch.equal(off.proven, torch.full_like(off.proven, -1))
    records = run_teacher_student(6, 6, seeds, max_iterations=3000)
    assert all(r["proven_iteration"] is None and r["stop_when_proven"] is False for r in records)


def test_the_prover_refuses_what_it_cannot_prove(k8):
    full, _ = k8
    rec = next(r for r in full if r["status"] == "spurious")
    W = np.array(rec["final_weights"]).reshape(8, 8)
    V = np.eye(8)
    prover = SpuriousProver(TeacherStudentProtocol(), 8)
    ball = prover.certify(W, V)
    assert ball is not None and 0 < ball.mu < ball.L and ball.radius < ball.ball
    # the ball is centred on the minimum (Newton from W, then certified there): the minimum's
    # radius is a negligible part of the ball, and the Hessian stays positive definite on it
    assert ball.radius < 1e-6 * ball.ball and np.linalg.norm(ball.center - W) <= 1e-7
    assert 0.05 * ball.lam <= ball.mu <= 0.15 * ball.lam
    out = prover.covers(ball, W, V, step=0.1, iterations=0)
    assert out is not None and np.linalg.norm(out[0] - W) <= 1e-7
    # a permuted copy (rows and coordinates) is covered by the same ball; its final point is the
    # centre in the copy's orientation: the centre's entries, permuted (the minimum's own symmetries
    # may pick another of its equal orientations), next to the copy
    rng = np.random.default_rng(0)
    P, Q = rng.permutation(8), rng.permutation(8)
    out = prover.covers(ball, W[P][:, Q], V, step=0.1, iterations=0)
    assert out is not None and np.array_equal(np.sort(out[0], axis=None), np.sort(ball.center, axis=None))
    assert np.linalg.norm(out[0] - ball.center[P][:, Q]) <= 1e-12
    assert np.linalg.norm(out[0] - W[P][:, Q]) <= 1e-7 and out[1] <= 1e-9
    # a step with s L >= 2 is refused, and so is a run too close to its iteration cap
    assert prover.covers(ball, W, V, step=2.5 / ball.L, iterations=0) is None
    assert prover.last_failure == "step_too_large"
    assert prover.covers(ball, W, V, step=0.1, iterations=200_000) is None
    assert prover.last_failure == "iteration_cap"
    # a threshold above the minimum's objective: not provably bad
    high = SpuriousProver(TeacherStudentProtocol(bad_loss_threshold=1.0), 8)
    assert high.certify(W, V) is None
    # a point outside the ball
    far = W + 1e-2 * rng.normal(size=W.shape)
    assert prover.covers(ball, far, V, step=0.1, iterations=0) is None
    assert prover.last_failure == "outside_ball"


def test_the_rounding_model_of_the_prover_holds_with_margin(k8):
    """``_PROOF_FLOAT_STEP_ERROR`` models how far one float64 descent step lands from the exact
    step x - step grad F(x). Measured here against the exact step (the gradient in 110-bit
    interval arithmetic, sums at 200 bits) at a spurious minimum, near it and at initial points
    of k = n = 8 and 12: the deviation stays below a quarter of the model."""
    import math

    from mpmath import mp, mpf

    from landscape_core.certification import pair_enclosures
    from landscape_core.teacher_student import scaled_gradient
    from landscape_core.teacher_student.prover import PROOF_FLOAT_STEP_ERROR as _PROOF_FLOAT_STEP_ERROR

    full, _ = k8
    W_min = np.array(next(r for r in full if r["status"] == "spurious")["final_weights"]).reshape(8, 8)
    rng = np.random.default_rng(1)
    points = [(W_min, np.eye(8)), (W_min + 1e-4 * rng.normal(size=(8, 8)), np.eye(8))]
    for k in (8, 12):
        W0, V = initial_points(k, k, [3], TeacherStudentProtocol())
        points.append((W0[0].numpy(), V[0].numpy()))
    lr = 0.1 / (2 * math.pi)  # the descent's step on G = 2 pi dF/dW (step 0.1)
    worst = 0.0
    with mp.workprec(200):
        for W, V in points:
            Wt, Vt = torch.from_numpy(W)[None], torch.from_numpy(V)[None]
            stepped = torch.addcmul(Wt, scaled_gradient(Wt, Vt), torch.full((1, 1, 1), -lr, dtype=torch.float64))[0]
            lo, hi = pair_enclosures(W, V).gradient  # dF/dW, width ~1e-30
            dev2 = mpf(0)
            for (i, a), x in np.ndenumerate(W):
                exact = mpf(x) - mpf(lr) * 2 * mp.pi * (mpf(lo[i, a]) + mpf(hi[i, a])) / 2
                dev2 += (mpf(float(stepped[i, a])) - exact) ** 2
            worst = max(worst, float(mp.sqrt(dev2)))
    assert 0 < worst <= _PROOF_FLOAT_STEP_ERROR / 4, worst

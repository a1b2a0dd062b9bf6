"""Proven outcomes under the 2021 protocol (issue 27 item 1): step 5 / k, the Frobenius
stopping norm ||dF/dW||_F <= 1e-12, no restart rule. The statuses equal the full protocol's
seed by seed (smoke-sized here; 500 seeds at k = 8, 10, 13 in docs/results/sys2021_global_rates.md),
each proven run records what its proof rests on (``proven_*``), and the two conditions a
cell needs are refused in one line where they fail: the early-global rule's step * lambda_max <
2 at the global minima, and the prover's float64 floor c_norm * eps / step <= grad_tol / 2."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from landscape_core.errors import OptionError
from landscape_core.teacher_student import (
    PROOF_COLUMNS,
    TeacherStudentProtocol,
    global_minimum_curvature,
    hessian_extreme_eigenvalues,
    initial_points,
    run_teacher_student,
)
from landscape_core.teacher_student.protocol import PROOF_FLOAT_STEP_ERROR, _lanczos_curvature, global_reference_minimum
from tests.conftest import assert_usage_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: protocols.md, "The 2021 protocol"
PROTOCOL_2021 = dict(
    step_times_k=5, init_variance="1/k", stopping_norm="frobenius", grad_tol=1e-12, restart_grad_norm=None
)


@pytest.fixture(scope="module")
def k8():
    """The full 2021 protocol and its proven-outcome variant (early-global rule and
    ``stop_when_proven``) on 40 seeds at k = n = 8 (~1 s each)."""
    seeds = range(40)
    full = run_teacher_student(8, 8, seeds, **PROTOCOL_2021)
    fast = run_teacher_student(8, 8, seeds, **PROTOCOL_2021, early_stop_global=True, stop_when_proven=True)
    return full, fast


def test_statuses_identical_to_the_full_2021_protocol_k8(k8):
    full, fast = k8
    assert [r["seed"] for r in fast] == [r["seed"] for r in full]
    differ = [(a["seed"], a["status"], b["status"]) for a, b in zip(full, fast) if a["status"] != b["status"]]
    assert not differ, f"classifications differ: {differ}"
    counts = Counter(r["status"] for r in full)
    assert counts == Counter({"global": 35, "spurious": 5})  # seeds 0..39
    proven = [b for b in fast if b["proven_iteration"] is not None]
    assert len(proven) == counts["spurious"]  # every spurious run ended by a proof
    assert sum(r["iterations"] for r in fast) < 0.5 * sum(r["iterations"] for r in full)  # 13,045 vs 32,366
    for a, b in zip(full, fast):
        assert b["step"] == 5 / 8 and b["stopping_norm"] == "frobenius"
        if b["status"] == "spurious":
            assert b["grad_norm"] <= 1e-12 and abs(a["final_loss"] - b["final_loss"]) <= 1e-12


def test_each_proven_run_records_what_its_proof_rests_on(k8):
    """The ``proven_*`` columns: rigorous bounds on the ball where the run was proven, checked
    against what the full protocol's run did from the same start."""
    full, fast = k8
    checked = 0
    for a, b in zip(full, fast):
        if b["proven_iteration"] is None:
            assert all(b[column] is None for column in PROOF_COLUMNS)
            continue
        assert b["proven_step_curvature"] < 2 and 0 < b["proven_contraction"] < 1
        # the converged point's float64 spectrum lies inside the ball's bounds
        assert b["proven_min_eig_lo"] > 1e-6 and b["proven_min_eig_lo"] <= a["min_eig"]
        assert b["proven_step_curvature"] >= b["step"] * a["max_eig"]
        assert b["proven_contraction"] >= max(1 - b["step"] * a["min_eig"], b["step"] * a["max_eig"] - 1)
        # the full protocol reached its stopping rule within the proven number of further steps
        assert b["iterations"] < a["iterations"] <= b["iterations"] + b["proven_steps_left"]
        assert 0 < b["proven_distance"] < 1
        checked += 1
    assert checked == 5


def test_the_early_global_rule_is_sound_for_the_2021_step_at_k8(k8):
    """Early-stopped runs stop near a global minimum where step * lambda_max < 2 (the float64
    Hessian at the stopping point), and the full protocol ends them at F ~ 1e-15."""
    full, fast = k8
    early = [(a, b) for a, b in zip(full, fast) if b["stopped_early"]]
    assert len(early) >= 30
    for a, b in early:
        assert b["final_loss"] < 1e-3 and a["final_loss"] < 1e-14 and a["status"] == "global"
        assert b["step"] * b["max_eig"] < 2 and b["iterations"] < a["iterations"]


def test_global_minimum_curvature_dense_and_lanczos_agree():
    # n = k: the Hessian at W = V = I has smallest eigenvalue (pi - 2) / (4 pi) (protocols.md)
    W, V = global_reference_minimum(8, 8, 8)
    assert torch.equal(W, V)
    lo, hi = hessian_extreme_eigenvalues(W[None], V[None])
    assert abs(float(lo[0]) - (math.pi - 2) / (4 * math.pi)) <= 1e-12
    assert global_minimum_curvature(8, 8, 8) == pytest.approx(2.6020045774073086, rel=1e-12)
    for k, n in ((6, 6), (6, 7), (8, 9)):
        W, V = global_reference_minimum(k, n, k)
        assert abs(_lanczos_curvature(W, V) / global_minimum_curvature(k, n, k) - 1) <= 1e-7
    # n = k + 1: the same largest eigenvalue at every split fraction a of the first teacher row
    V = torch.eye(6, dtype=torch.float64)
    for a in (0.02, 0.25, 0.5):
        W = torch.cat([V, (1 - a) * V[:1]])
        W[0] = a * V[0]
        assert float(hessian_extreme_eigenvalues(W[None], V[None])[1][0]) == pytest.approx(
            global_minimum_curvature(6, 7, 6), rel=1e-9
        )


@pytest.mark.parametrize(
    "k,n,refused", [(3, 3, True), (4, 4, False), (6, 6, False), (6, 7, True), (7, 8, False), (30, 31, False)]
)
def test_the_early_global_rule_needs_a_descent_step_at_the_global_minima(k, n, refused):
    """5/k * lambda_max(H at a global minimum): 2.03 at k = n = 3, 1.89 at 4, 2.04 at k = 6,
    n = 7, 1.94 at k = 7, n = 8 (docs/teacher_student.md, "The early-global rule")."""
    protocol = TeacherStudentProtocol(**PROTOCOL_2021, early_stop_global=True)
    product = 5 / k * global_minimum_curvature(k, n, k)
    if not refused:
        protocol.validate(k=k, n=n)
        assert product < 2
        return
    with pytest.raises(OptionError) as err:
        protocol.validate(k=k, n=n)
    assert err.value.field == "early_stop_global" and "\n" not in err.value.message
    assert f"{product:.4g}" in err.value.message and product >= 2
    TeacherStudentProtocol(**PROTOCOL_2021).validate(k=k, n=n)  # the full protocol runs there


def test_the_prover_refuses_a_step_whose_float64_floor_is_above_the_tolerance():
    # 2021 at k = 8: floor 1 * 2e-15 / 0.625 = 3.2e-15 <= 5e-13; with grad_tol 1e-15 no proof can hold
    TeacherStudentProtocol(**PROTOCOL_2021, stop_when_proven=True).validate(k=8, n=8)
    bad = TeacherStudentProtocol(**{**PROTOCOL_2021, "grad_tol": 1e-15}, stop_when_proven=True)
    with pytest.raises(OptionError) as err:
        bad.validate(k=8, n=8)
    assert err.value.field == "stop_when_proven" and "grad_tol / 2" in err.value.message
    # the 2018 norm is 2 pi times larger: at step 0.1 and grad_tol 1e-9 the floor is 1.26e-13
    TeacherStudentProtocol(stop_when_proven=True).validate(k=8, n=8)
    with pytest.raises(OptionError):
        TeacherStudentProtocol(stop_when_proven=True, step=1e-5).validate(k=8, n=8)
    assert 2 * math.pi * PROOF_FLOAT_STEP_ERROR / 1e-5 > 1e-9 / 2


def test_a_refused_cell_is_one_line_and_writes_nothing(tmp_path, capsys):
    assert_usage_error(
        ["sweep=sys2021_global_rates_n_k_plus_1", "sweep.grid.k=[6]", "sweep.seeds=2"],
        "protocol.early_stop_global: needs step * lambda_max(Hessian at a global minimum) < 2",
        "2.042",
        tmp_path,
        capsys,
    )


def test_the_rounding_model_of_the_prover_holds_at_the_2021_step(k8):
    """``PROOF_FLOAT_STEP_ERROR`` against the exact step x - (5 / k) grad F(x) (gradient in
    110-bit interval arithmetic, sums at 200 bits) at a spurious minimum of the 2021 protocol,
    near it, and at initial points of k = n = 8 and 13: below a quarter of the model."""
    from mpmath import mp, mpf

    from landscape_core.certification import pair_enclosures
    from landscape_core.teacher_student import scaled_gradient

    full, _ = k8
    W_min = np.array(next(r for r in full if r["status"] == "spurious")["final_weights"]).reshape(8, 8)
    rng = np.random.default_rng(1)
    points = [(W_min, np.eye(8)), (W_min + 1e-4 * rng.normal(size=(8, 8)), np.eye(8))]
    for k in (8, 13):
        W0, V = initial_points(k, k, [3], TeacherStudentProtocol(**PROTOCOL_2021))
        points.append((W0[0].numpy(), V[0].numpy()))
    worst = 0.0
    with mp.workprec(200):
        for W, V in points:
            lr = 5 / W.shape[0] / (2 * math.pi)  # the descent's step on G = 2 pi dF/dW (step 5 / k)
            Wt, Vt = torch.from_numpy(W)[None], torch.from_numpy(V)[None]
            stepped = torch.addcmul(Wt, scaled_gradient(Wt, Vt), torch.full((1, 1, 1), -lr, dtype=torch.float64))[0]
            lo, hi = pair_enclosures(W, V).gradient  # dF/dW, width ~1e-30
            dev2 = mpf(0)
            for (i, a), x in np.ndenumerate(W):
                exact = mpf(x) - mpf(lr) * 2 * mp.pi * (mpf(lo[i, a]) + mpf(hi[i, a])) / 2
                dev2 += (mpf(float(stepped[i, a])) - exact) ** 2
            worst = max(worst, float(mp.sqrt(dev2)))
    assert 0 < worst <= PROOF_FLOAT_STEP_ERROR / 4, worst


@pytest.mark.slow
@pytest.mark.parametrize("k", [10, 13])
def test_statuses_identical_to_the_full_2021_protocol_100_seeds(k):
    seeds = range(100)
    full = run_teacher_student(k, k, seeds, **PROTOCOL_2021)
    fast = run_teacher_student(k, k, seeds, **PROTOCOL_2021, early_stop_global=True, stop_when_proven=True)
    assert [a["status"] for a in full] == [b["status"] for b in fast]
    assert sum(b["proven_iteration"] is not None for b in fast) > 0


def test_a_minimum_whose_float64_floor_fails_is_certified_once(k8):
    """With the Frobenius norm, a kept ball whose floor check failed stops the prover from
    certifying the same minimum again (each certificate costs ~1 s at k = 13); the 2018 norm
    keeps re-certifying, as its pinned results were made."""
    from landscape_core.teacher_student import SpuriousProver

    full, _ = k8
    W = np.array(next(r for r in full if r["status"] == "spurious")["final_weights"]).reshape(8, 8)
    V = np.eye(8)
    tight = TeacherStudentProtocol(**{**PROTOCOL_2021, "grad_tol": 1e-15})  # floor ~3e-15 > 5e-16
    prover = SpuriousProver(tight, 8)
    assert prover.skip_hopeless and prover.certify(W, V) is not None and prover.certificates == 1
    out = prover.prove(W, V, loss=prover.balls[0].objective, step=5 / 8, iterations=0, est_dist=0.0, try_certify=True)
    assert out is None and prover.last_failure == "rounding_floor" and prover.certificates == 1
    legacy = SpuriousProver(TeacherStudentProtocol(grad_tol=1e-14), 8)  # 2018 norm: floor ~1e-13 > 5e-15
    assert not legacy.skip_hopeless and legacy.certify(W, V) is not None
    assert (
        legacy.prove(W, V, loss=legacy.balls[0].objective, step=0.1, iterations=0, est_dist=0.0, try_certify=True)
        is None
    )
    assert legacy.certificates == 2

"""Proven outcomes (the ``stop_when_proven`` option of the descent): certified balls around
spurious strict local minima (:class:`SpuriousProver`, :class:`ProvenBall`) and the check of
candidate runs against them (:func:`prove_outcomes`).

A run is stopped as ``spurious`` only when a certificate (interval arithmetic,
:mod:`.certificate`) proves that gradient descent with the run's step converges from its
current point to a strict local minimum with F >= the bad threshold, and that every rule
of the full protocol would end the run ``spurious``. The argument:
docs/teacher_student.md#proven-outcomes-the-convergence-proof.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from mpmath import iv
from scipy.optimize import linear_sum_assignment

from landscape_core.intervals import Precision, distance_up, lower_end, sum_up, upper_end
from landscape_core.symmetry import aligned, symmetric_distance
from landscape_core.teacher_student.certificate import certify_minimum, newton_polish
from landscape_core.teacher_student.enclosures import (
    hessian_enclosure,
    l3_bound,
    l3_estimate,
    lambda_min_lower_bound,
    pair_enclosures,
)
from landscape_core.teacher_student.objective import (
    TWO_PI,
    gradient_norm,
    hessian_extreme_eigenvalues,
    population_loss,
    scaled_gradient,
)
from landscape_core.teacher_student.protocol import PROOF_FLOAT_STEP_ERROR, TeacherStudentProtocol

__all__ = [
    "PROOF_FLOAT_STEP_ERROR",
    "PROOF_COLUMNS",
    "ProofCandidates",
    "ProofRecord",
    "ProvenBall",
    "SpuriousProver",
    "prove_outcomes",
]

#: a run is checked only when ||dF/dW||_F is at most this (far from a minimum nothing can be proven)
_PROOF_GRAD_PREFILTER = 1e-3
#: at most this many iterations between two checks of one candidate run
_PROOF_RECHECK_MAX = 4096
#: at most this many iterations before a run whose check failed is checked again
_PROOF_RETRY = 1024
#: a run is checked against a ball of radius R once its estimated distance to the minimum,
#: ||dF/dW||_F / lambda, is at most this fraction of R (float64 estimate; the proof decides)
_PROOF_REACH = 0.85
#: float64 Newton steps that move a run's iterate onto the minimum before a new ball is certified
#: there (not part of the proof); the ball's centre is then every covered run's final point
_PROOF_NEWTON_STEPS = 3
#: the prover's ball radius R as a fraction of lambda_c / L3: the Hessian stays >= (1 - this)
#: lambda_c on the ball. A run is checked with the bounds of the ball around x* through its own
#: point (and the floor with those at x*), so a large ball only admits farther runs; those with a
#: slow contraction there fail the iteration-cap check and are looked at again later
_PROOF_BALL_FRACTION = 0.9


@dataclass(frozen=True)
class ProvenBall:
    """A certified ball B(center, ball) around a strict local minimum x* (all bounds rigorous,
    see :class:`SpuriousProver`): ||x* - center|| <= radius, mu I <= Hessian(F) <= L I on the
    whole ball, F(x*) >= objective_lo; ``lam`` <= lambda_min(H(center)), ``big`` >=
    lambda_max(H(center)), ``l3`` the third-derivative bound on the ball (so on B(center, t),
    t <= ball, lam - l3 t <= H <= big + l3 t); ``objective`` is F(center) in float64 (only
    used to choose which balls to try), ``teacher`` the V it holds for."""

    center: np.ndarray  # (n, d)
    teacher: np.ndarray  # (k, d)
    radius: float
    ball: float
    mu: float
    L: float
    objective_lo: float
    objective: float
    lam: float
    big: float
    l3: float


@dataclass(frozen=True)
class ProofRecord:
    """What the proof of one run's outcome rests on, every number a rigorous bound (interval
    arithmetic) on the ball B(x*, rho1) of phase 1 (docs/teacher_student.md#proven-outcomes-the-convergence-proof):
    the record's ``proven_*`` columns (:data:`PROOF_COLUMNS`)."""

    contraction: float  # q1 = max(1 - s mu1, s L1 - 1) >= the contraction factor of one step, < 1
    step_curvature: float  # s L1 >= step * lambda_max(H) on the ball, < 2
    min_eig_lo: float  # mu1 <= lambda_min(H) on the ball (and at the converged point), > eig_margin
    steps_left: int  # T1 + T2 >= the iterations the full protocol still takes to its stopping rule
    distance: float  # D + r >= ||y' - x*||, the run's distance to its minimum when proven

    def columns(self) -> dict[str, float | int]:
        return {
            "proven_contraction": self.contraction,
            "proven_step_curvature": self.step_curvature,
            "proven_min_eig_lo": self.min_eig_lo,
            "proven_steps_left": self.steps_left,
            "proven_distance": self.distance,
        }


#: the per-run columns of a proven run (null for the others), :meth:`ProofRecord.columns`
PROOF_COLUMNS = (
    "proven_contraction",
    "proven_step_curvature",
    "proven_min_eig_lo",
    "proven_steps_left",
    "proven_distance",
)


class SpuriousProver:
    """Decides, with a proof, that gradient descent from a point y ends at a spurious strict
    local minimum, and that the full protocol would classify the run ``spurious``.

    In short (proof: docs/teacher_student.md#proven-outcomes-the-convergence-proof): at a
    centre c (the run's iterate moved onto its minimum by float64 Newton steps),
    :func:`.certificate.certify_minimum` proves a strict local minimum x* within r of c; the
    interval Hessian at c and the notes' L3 bound give mu I <= H <= L I on a ball B(c, R),
    so gradient descent with step s (s L < 2) contracts towards x* from every point of the
    ball. A point y (aligned to c under the symmetry group, which gradient descent commutes
    with) within the ball is covered when the float64 iterates provably stay in it, reach
    the stopping norm within ``max_iterations``, never trigger a restart or the early-global
    rule, and end at a point whose Hessian is above ``eig_margin``. The run's final point is
    then c in y's orientation. Balls are kept and reused for every later run of the batch.
    """

    def __init__(self, protocol: TeacherStudentProtocol, k: int):
        self.protocol = protocol
        self.k = k
        self.balls: list[ProvenBall] = []
        self.group = protocol.teacher == "identity" and protocol.input_dim(k) == k
        self.c_norm = TWO_PI if protocol.stopping_norm == "max_neuron" else 1.0
        self.certificates = 0  # certify_minimum calls (for the benchmark)
        self.alignments = 0
        self.last_failure = ""  # the first condition that failed in the last covers() (diagnostics)
        self.last_proof: ProofRecord | None = None  # what the last successful covers() proved
        self.proofs: dict[int, ProofRecord] = {}  # per run (its position in the batch) proven
        # Scheduling only (never part of a proof): do not certify a new ball for a run whose minimum
        # cannot pass the float64 floor (estimated > grad_tol, or a kept ball of it failed there: a new
        # ball of the same minimum has the same floor). On for the 2021 Frobenius norm, where
        # grad_tol / c_norm is ~160x smaller than in 2018 and the floor fails at many minima from k = 13
        # on (a third of the spurious runs there; each certificate ~1 s); off for the 2018 norm, whose
        # pinned results stay as they were
        self.skip_hopeless = protocol.stopping_norm == "frobenius"

    # -- the ball ------------------------------------------------------------------
    def certify(self, y, V) -> ProvenBall | None:
        self.certificates += 1
        # the centre: y moved onto the minimum by float64 Newton steps (not part of the proof:
        # everything below is proven about the point c whatever produced it), so the minimum's
        # radius r is ~1e-12 and nearly all of the ball is left for the runs it covers
        c = newton_polish(y, V, steps=_PROOF_NEWTON_STEPS)
        pairs = pair_enclosures(c, V)
        cert = certify_minimum(c, V, bad_loss_threshold=self.protocol.bad_loss_threshold, pairs=pairs)
        if not (cert.certified and cert.spurious):
            return None
        H_lo, H_hi = hessian_enclosure(c, V, pairs=pairs)
        # >= lambda_max: Gershgorin on the enclosure, or (usually ~2x tighter) lambda_min(-H) bounded
        # below like lambda_min(H) (Weyl + Bauer-Fike, enclosures.lambda_min_lower_bound)
        big = min(
            max(sum_up(row) for row in np.maximum(np.abs(H_lo), np.abs(H_hi))),
            -lambda_min_lower_bound(-H_hi, -H_lo).lower,
        )
        n, _ = y.shape
        k = V.shape[0]
        limit = min(pairs.w_min_lo, pairs.row_distance_lo / 2)
        lam = cert.lambda_at_point_lo
        with Precision(80):
            kw = dict(n=n, k=k, w_min=pairs.w_min_lo, w_max=pairs.w_max_hi, v_max=pairs.v_max_hi)
            R = min(0.5 * limit, _PROOF_BALL_FRACTION * lam / upper_end(l3_bound(**kw, rho=0.0)))
            L3 = l3_bound(**kw, rho=R)
            mu = lower_end(iv.mpf(lam) - L3 * iv.mpf(R))
            L = upper_end(iv.mpf(big) + L3 * iv.mpf(R))
            l3 = upper_end(L3)
        if not mu > 0:
            return None
        ball = ProvenBall(
            center=np.array(c, copy=True),
            teacher=np.array(V, copy=True),
            radius=cert.radius,
            ball=R,
            mu=mu,
            L=L,
            objective_lo=cert.objective_lo,
            objective=float(population_loss(torch.from_numpy(c)[None], torch.from_numpy(V)[None])),
            lam=lam,
            big=big,
            l3=l3,
        )
        self.balls.append(ball)
        return ball

    # -- a point against a ball -------------------------------------------------------
    def covers(self, ball: ProvenBall, y, V, *, step: float, iterations: int):
        """The final point (numpy (n, d)) and its stopping norm when ``ball`` proves the run's
        outcome from y (docs/teacher_student.md#proven-outcomes-the-convergence-proof), else None."""
        p = self.protocol
        if not np.array_equal(V, ball.teacher):
            self.last_failure = "other_teacher"
            return None
        self.alignments += 1
        # y' = y[rows][:, cols] (an exact permutation of y's entries), aligned to the centre
        if self.group:
            alignment = symmetric_distance(ball.center, y, enumerate_max=0)
            rows, cols = alignment.row_perm, alignment.col_perm
            y_al = aligned(y, alignment)
        else:
            cost = ((ball.center[:, None, :] - y[None, :, :]) ** 2).sum(-1)
            assigned_rows, assigned_cols = linear_sum_assignment(cost)
            rows, cols = assigned_cols[np.argsort(assigned_rows)], np.arange(y.shape[1])
            y_al = y[rows]
        D = distance_up(y_al, ball.center)
        with Precision(80):
            r = iv.mpf(float(ball.radius))
            dist = iv.mpf(D) + r  # >= ||y' - x*||
            s = iv.mpf(float(step))
            c, eps, tol = iv.mpf(self.c_norm), iv.mpf(PROOF_FLOAT_STEP_ERROR), iv.mpf(float(p.grad_tol))

            def bounds(rho):
                """mu <= H <= L on B(x*, rho), inside B(c, rho + r), and the contraction factor q."""
                reach_c = iv.mpf(upper_end(rho + r))
                mu = lower_end(iv.mpf(ball.lam) - iv.mpf(ball.l3) * reach_c)
                L = upper_end(iv.mpf(ball.big) + iv.mpf(ball.l3) * reach_c)
                return mu, L, max(upper_end(1 - s * iv.mpf(mu)), upper_end(s * iv.mpf(L) - 1))

            # phase 1: B(x*, rho1), the start's distance plus room for the float iterates' drift
            rho1 = iv.mpf(upper_end(dist + max(upper_end(dist) * 1e-3, 1e-10)))
            if not upper_end(rho1 + r) <= ball.ball:
                self.last_failure = "outside_ball"
                return None
            mu1, L1, q1 = bounds(rho1)
            if not upper_end(s * iv.mpf(L1)) < 2:
                self.last_failure = "step_too_large"
                return None
            if not q1 < 1:
                self.last_failure = "no_contraction"
                return None
            drift1 = eps / (1 - iv.mpf(q1))  # iterates: ||x~_t - x*|| <= q1^t dist + drift1 <= rho1
            if not upper_end(dist + drift1) <= lower_end(rho1):
                self.last_failure = "rounding_floor"
                return None
            # phase 2: once q1^t dist <= drift1, every iterate lies in B(x*, rho2), rho2 = 2 drift1
            # (or rho1 if smaller), where the bounds are the minimum's own (mu2 ~ lambda, L2 ~ lambda_max)
            rho2 = iv.mpf(min(upper_end(2 * drift1), upper_end(rho1)))
            mu2, L2, q2 = bounds(rho2)
            floor = c * iv.mpf(L2) * eps / (1 - iv.mpf(q2))  # the stopping norm's float64 floor
            if not upper_end(floor) <= lower_end(tol / 2):
                self.last_failure = "rounding_floor"
                return None
            restart = math.inf if p.restart_grad_norm is None else float(p.restart_grad_norm)
            if not upper_end(c * iv.mpf(L1) * rho1) <= restart:  # every later stopping norm
                self.last_failure = "restart_rule"
                return None
            t1 = lower_end(drift1 / dist)  # phase 1 ends once q1^t <= drift1 / dist
            T1 = 0 if t1 >= 1 else math.ceil(math.log(t1) / math.log(q1)) + 1
            t2 = lower_end((tol * 3 / 4 - floor) / (c * iv.mpf(L2) * rho2))  # stopping norm <= 3/4 tol once q2^t <= t2
            T2 = 0 if t2 >= 1 else math.ceil(math.log(t2) / math.log(q2)) + 1
            if iterations + T1 + T2 > p.max_iterations:
                self.last_failure = "iteration_cap"
                return None
            if not ball.objective_lo >= p.bad_loss_threshold + 1e-12:
                self.last_failure = "objective_below_threshold"
                return None
            if not mu1 >= p.eig_margin + 1e-9:
                self.last_failure = "eig_margin"
                return None
            reach = upper_end(dist) + 1e-10
            proof = ProofRecord(
                contraction=float(q1),
                step_curvature=upper_end(s * iv.mpf(L1)),
                min_eig_lo=float(mu1),
                steps_left=int(T1 + T2),
                distance=upper_end(dist),
            )
        # the final point: the centre c (x* to ~r, Newton-polished when the ball was made) in the
        # run's own orientation, z[rows][:, cols] = c: the minimum y's descent converges to
        z = np.empty_like(ball.center)
        z[np.ix_(rows, cols)] = ball.center
        if not distance_up(z, y) <= reach:  # ||z - y|| = ||c - y'||: checks the mapping back
            self.last_failure = "final_point_outside_ball"
            return None
        G = scaled_gradient(torch.from_numpy(z)[None], torch.from_numpy(V)[None])
        g = float(gradient_norm(G, p.stopping_norm)[0])
        if not g <= p.grad_tol:
            self.last_failure = "final_point_not_converged"
            return None
        self.last_proof = proof
        return z, g

    def prove(self, y, V, *, loss: float, step: float, iterations: int, est_dist: float, try_certify: bool):
        """(final point, stopping norm) when the outcome from y is proven, else None: first the
        kept balls (those whose float objective is near F(y)), then a new certificate at y
        when ``try_certify``."""
        floor_failed = False
        for ball in self.balls:
            if abs(ball.objective - loss) <= 1e-6 and est_dist <= ball.ball:
                out = self.covers(ball, y, V, step=step, iterations=iterations)
                if out is not None:
                    return out
                floor_failed |= self.last_failure == "rounding_floor"
        if not try_certify or (self.skip_hopeless and floor_failed):
            return None
        new_ball = self.certify(y, V)
        if new_ball is None:
            return None
        return self.covers(new_ball, y, V, step=step, iterations=iterations)


@dataclass(frozen=True)
class ProofCandidates:
    """The active runs of the descent as one check of :func:`prove_outcomes` sees them. The
    tensors are the descent's own (never its inputs): a proven run's rows of ``weights`` and
    ``stopping_norms``, and every checked run's ``next_check``, are updated in place."""

    index: torch.Tensor  # each run's position in the batch (A,) int64 (the key of ``SpuriousProver.proofs``)
    weights: torch.Tensor  # W (A, n, d); a proven run's row becomes its final point
    teachers: torch.Tensor  # V (A, k, d)
    scaled_grad: torch.Tensor  # G = 2 pi dF/dW at W (A, n, d)
    stopping_norms: torch.Tensor  # g (A,) in the protocol's stopping norm; a proven run's is its final point's
    iterations: torch.Tensor  # iterations taken (A,) int64
    step_on_grad: torch.Tensor  # the step on G, step / (2 pi) (A,)
    next_check: torch.Tensor  # iteration of each run's next check (A,) int64


def prove_outcomes(prover: SpuriousProver, candidates: torch.Tensor, runs: ProofCandidates) -> torch.Tensor:
    """One check of the candidate runs ``candidates`` (A,) bool for ``stop_when_proven``;
    returns the runs proven (A,) bool (their final point and stopping norm written into
    ``runs``). Float64 estimates (not part of the proof) choose which runs to check and
    when to look again: ||dF/dW||_F <= ``_PROOF_GRAD_PREFILTER``, F >= the bad threshold,
    a positive smallest Hessian eigenvalue lambda, then a kept ball of radius R near the point
    once ||y - x*|| ~ g / lambda <= ``_PROOF_REACH`` R, or a new certificate once g / lambda is
    that fraction of the radius the new ball would have (R ~ ``_PROOF_BALL_FRACTION``
    lambda / L3, L3 the notes' bound at y, :func:`.enclosures.l3_estimate`). A run that is
    not proven is looked at again after the iterations its gradient needs to shrink to that
    level at the rate 1 - step lambda (at most ``_PROOF_RECHECK_MAX``), or, after a failed
    try, to halve (at most ``_PROOF_RETRY``)."""
    proven = torch.zeros_like(candidates)
    if not bool(candidates.any()):
        return proven
    frobenius = torch.linalg.vector_norm(runs.scaled_grad, dim=(-2, -1)) / TWO_PI  # (A,) ||dF/dW||_F
    small = candidates & (frobenius <= _PROOF_GRAD_PREFILTER)
    far = candidates & ~small
    if bool(far.any()):  # large gradient: look again later
        runs.next_check[far] = runs.iterations[far] + prover.protocol.compact_every * 4
    if not bool(small.any()):
        return proven
    checked = small.nonzero().squeeze(-1)
    estimates = _point_estimates(prover, runs.weights[checked], runs.teachers[checked])
    for estimate, j in zip(estimates, checked.tolist()):
        if _check_run(prover, runs, j, estimate, frobenius=float(frobenius[j])):
            proven[j] = True
    return proven


@dataclass(frozen=True)
class _PointEstimate:
    """Float64 estimates at one candidate's point (not part of the proof)."""

    loss: float  # F
    lam: float  # smallest Hessian eigenvalue: a kept ball's (same F), else eigvalsh at the point
    lam_max: float  # largest Hessian eigenvalue: a kept ball's bound (same F), else eigvalsh at the point
    w_min: float  # smallest student row norm
    w_max: float  # largest student row norm
    v_max: float  # largest teacher row norm


def _point_estimates(prover: SpuriousProver, W: torch.Tensor, V: torch.Tensor) -> list[_PointEstimate]:
    """:class:`_PointEstimate` of each of the runs W (C, n, d), V (C, k, d)."""
    loss = population_loss(W, V).tolist()
    # lambda: that of a kept ball's minimum when the point's F is that minimum's, else eigvalsh at the point
    kept = [next((b for b in prover.balls if abs(b.objective - f) <= 1e-6), None) for f in loss]
    lam: list[Any] = [None if b is None else b.lam for b in kept]
    lam_max: list[Any] = [None if b is None else b.big for b in kept]
    unknown = [a for a, x in enumerate(lam) if x is None]
    if unknown:
        lo, hi = hessian_extreme_eigenvalues(W[unknown], V[unknown])
        for a, x, y in zip(unknown, lo.tolist(), hi.tolist()):
            lam[a], lam_max[a] = x, y
    nw = torch.linalg.vector_norm(W, dim=-1)
    wmin, wmax = nw.amin(-1).tolist(), nw.amax(-1).tolist()
    vmax = torch.linalg.vector_norm(V, dim=-1).amax(-1).tolist()
    return [
        _PointEstimate(loss=f, lam=x, lam_max=x_max, w_min=lo, w_max=hi, v_max=v)
        for f, x, x_max, lo, hi, v in zip(loss, lam, lam_max, wmin, wmax, vmax)
    ]


def _check_run(
    prover: SpuriousProver, runs: ProofCandidates, j: int, estimate: _PointEstimate, *, frobenius: float
) -> bool:
    """Check run ``j`` (``frobenius`` = its ||dF/dW||_F) now, or set when to look again;
    True when its outcome is proven (its final point and stopping norm then in ``runs``)."""
    protocol = prover.protocol
    iteration, step, g = int(runs.iterations[j]), float(runs.step_on_grad[j]) * TWO_PI, frobenius
    lam = estimate.lam
    if not (estimate.loss >= protocol.bad_loss_threshold and lam > protocol.eig_margin):
        runs.next_check[j] = iteration + _PROOF_RETRY
        return False
    n, k = runs.weights.shape[-2], runs.teachers.shape[-2]
    l3 = l3_estimate(n=n, k=k, w_min=estimate.w_min, w_max=estimate.w_max, v_max=estimate.v_max)
    # gradient level where a new ball, centred on the minimum (Newton from y), should hold y
    need = _PROOF_REACH * lam * (_PROOF_BALL_FRACTION * lam / l3)
    near = [b.ball for b in prover.balls if abs(b.objective - estimate.loss) <= 1e-6]
    target = max([need] + [_PROOF_REACH * lam * R for R in near])
    if g <= target:
        out = prover.prove(
            runs.weights[j].cpu().numpy(),
            runs.teachers[j].cpu().numpy(),
            loss=estimate.loss,
            step=step,
            iterations=iteration,
            est_dist=g / lam,
            try_certify=g <= need
            and not (prover.skip_hopeless and _floor_estimate(prover, estimate, step) > protocol.grad_tol),
        )
        if out is not None:
            z, gz = out
            runs.weights[j] = torch.from_numpy(z).to(runs.weights)
            runs.stopping_norms[j] = gz
            assert prover.last_proof is not None
            prover.proofs[int(runs.index[j])] = prover.last_proof
            return True
        halve = math.log(2.0) / max(step * lam, 1e-12)  # look again once the distance has halved
        runs.next_check[j] = iteration + int(min(max(halve, protocol.compact_every), _PROOF_RETRY))
        return False
    wait = math.log(g / target) / max(step * lam, 1e-12)
    runs.next_check[j] = iteration + int(min(max(0.9 * wait, 1), _PROOF_RECHECK_MAX))
    return False


def _floor_estimate(prover: SpuriousProver, estimate: _PointEstimate, step: float) -> float:
    """Float64 estimate of the proof's float64 floor c_norm L2 eps / (1 - q2) at the run's minimum,
    with L2 ~ lambda_max and 1 - q2 <= step lambda_min (not part of the proof: it only decides
    whether a certificate is worth making, with ``skip_hopeless``)."""
    return prover.c_norm * PROOF_FLOAT_STEP_ERROR * estimate.lam_max / (step * max(estimate.lam, 1e-300))

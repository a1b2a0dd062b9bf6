"""Computer-assisted certificates of strict local minima of the teacher-student objective.

A float64 eigenvalue says "probably a minimum"; this module proves it, following the four
steps of protocols.md section 1 ("Certified spurious minima", after Safran & Shamir, ICML
2018, who did the same in exact symbolic arithmetic): (1) a rigorous lower bound lambda on
the smallest Hessian eigenvalue at W; (2) the notes' bound L3 on the third derivative in a
ball B(W, rho); (3) if 9 lambda^2 >= 25 g L3 (g >= ||grad F(W)||_F), a strict local minimum
within r = (3 lambda - sqrt(9 lambda^2 - 25 g L3)) / (2 L3) of W, with rigorous bounds on
its objective; (4) a family of points within delta of W is covered by widening the ball
to r + delta. Every number is rigorous (outward-rounded intervals,
:mod:`landscape_core.intervals`; enclosures in :mod:`.enclosures`).

The argument of step 3 and the arithmetic, with sources: docs/teacher_student.md#certified-minima-the-proof
and docs/teacher_student.md#certified-minima-the-arithmetic.

Public entry points: :func:`certify_minimum`, :func:`certify_family`, :func:`certify_points`,
:func:`newton_polish`, :class:`Certificate`, :data:`REASONS`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from mpmath import iv

from landscape_core.errors import OptionError
from landscape_core.intervals import (
    SMALLEST_SUBNORMAL,
    Precision,
    distance_up,
    gamma_up,
    lower_end,
    round_up,
    upper_end,
)
from landscape_core.symmetry import symmetric_distance
from landscape_core.teacher_student.enclosures import (
    PairEnclosures,
    as_float64_matrix,
    hessian_enclosure,
    l3_bound,
    lambda_min_lower_bound,
    pair_enclosures,
    student_and_teacher,
)
from landscape_core.teacher_student.families import group_points
from landscape_core.teacher_student.objective import population_gradient, population_hessian

__all__ = ["REASONS", "Certificate", "certify_family", "certify_minimum", "certify_points", "newton_polish"]

#: why a certificate holds or not
REASONS = (
    "certified",
    "non_differentiable",  # a zero student row, or two rows parallel at W (F not C^3 there)
    "hessian_not_positive_definite",  # the rigorous lower bound on lambda_min(H(W)) is <= 0
    "discriminant_negative",  # 9 lambda^2 < 25 g L3: the gradient is too large for the curvature
    "radius_too_large",  # no ball B(W, rho) holds r + delta inside the smooth region, or L3 (r + delta) >= lambda
)


# ----------------------------------------------------------------------------------
# Newton polishing (float64, not part of the proof)
# ----------------------------------------------------------------------------------
def newton_polish(W: Any, V: Any | None = None, *, steps: int) -> np.ndarray:
    """``steps`` Newton steps W <- W - H(W)^-1 grad F(W) in float64 with the analytic
    gradient and Hessian of ``teacher_student`` (the point to certify, not part of the
    proof: the certificate is computed at the returned point). Stops early when the
    float64 gradient norm stops decreasing; returns the best point seen. (n, d)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise OptionError("newton_steps", f"must be an integer >= 0, got {steps!r}")
    W, V = student_and_teacher(W, V)
    n, d = W.shape
    Vt = torch.from_numpy(V)[None]  # (1, k, d)
    x = torch.from_numpy(W.copy())[None]  # (1, n, d)
    best, best_g = x.clone(), float(population_gradient(x, Vt).norm())
    for _ in range(steps):
        g = population_gradient(x, Vt).reshape(-1)  # (n d,)
        H = population_hessian(x, Vt)[0]
        H = 0.5 * (H + H.T)
        x = x - torch.linalg.solve(H, g).reshape(1, n, d)
        gn = float(population_gradient(x, Vt).norm())
        if not math.isfinite(gn) or gn >= best_g:
            break
        best, best_g = x.clone(), gn
    return best[0].numpy()


# ----------------------------------------------------------------------------------
# Steps 3 and 4: the certificate
# ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Certificate:
    """The outcome of :func:`certify_minimum`. All bounds are rigorous (rounded outward).

    certified: steps 1-4 hold: a strict local minimum x* exists with ||x* - W|| <=
      ``radius``, and F is strictly convex on B(W, ``cover_radius``), which holds every
      family member (and the unpolished input, with ``cover_input``);
    reason: one of :data:`REASONS` (the first failing step);
    minimum_certified: steps 1-3 hold at the (polished) point W, whatever the coverage;
    lambda_lo: lower bound on the smallest Hessian eigenvalue at every point within
      ``family_distance`` of W: lambda(W) - L3 delta (= lambda_at_point_lo when delta = 0);
    lambda_at_point_lo <= lambda_min(H(W)) <= lambda_at_point_hi (the upper bound is a
      Rayleigh quotient: < 0 proves the Hessian at W indefinite); lambda_float: the
      float64 estimate;
    radius: r of step 3; cover_radius: r + family_distance (nan when not reached);
    ball_radius: rho, the ball where L3 was bounded; l3: the L3 bound on it;
    objective_lo / objective_hi: bounds on F(x*) when the minimum is certified, else on F(W);
    grad_norm_hi: upper bound on ||grad F(W)||_F (unscaled) at the (polished) point;
    grad_norm_input: float64 ||grad F|| at the input before polishing (not rigorous);
    family_distance: the delta used (input distance widened for rounding, plus the
      polishing displacement with ``cover_input``);
    newton_steps: polishing steps asked for; spurious: certified and objective_lo >=
      bad_loss_threshold; point: the (polished) W the certificate is about, (n, d).
    """

    certified: bool
    reason: str
    minimum_certified: bool
    lambda_lo: float
    lambda_at_point_lo: float
    lambda_at_point_hi: float
    lambda_float: float
    radius: float
    cover_radius: float
    ball_radius: float
    l3: float
    objective_lo: float
    objective_hi: float
    grad_norm_hi: float
    grad_norm_input: float
    family_distance: float
    newton_steps: int
    spurious: bool
    point: np.ndarray

    def summary(self) -> dict[str, Any]:
        """The scalar fields (no ``point``), for records and tables."""
        return {key: getattr(self, key) for key in self.__dataclass_fields__ if key != "point"}


def certify_minimum(
    W: Any,
    V: Any | None = None,
    *,
    family_distance: float = 0.0,
    newton_steps: int = 0,
    cover_input: bool = True,
    bad_loss_threshold: float = 1e-3,
    precision_bits: int = 110,
    max_ball_iterations: int = 40,
    pairs: PairEnclosures | None = None,
) -> Certificate:
    """Certify that a strict local minimum of F lies near W (protocols.md section 1,
    "Certified spurious minima"; method and sources: docs/teacher_student.md#certified-minima-the-proof).

    W: (n, d) student rows (numpy or torch, float64; not modified); V: (k, d) teacher rows
    (None: the identity, k = d). Keyword-only options:

    - ``family_distance`` (delta >= 0): the largest Frobenius distance from W of the members
      of W's family, after the symmetries (``families.symmetric_distance``). The certificate
      then covers every member: F strictly convex on B(W, r + delta). A float64 distance is
      widened by the factor 1 + 2 gamma_{N+3} (N = n d), which bounds the rounding of
      sqrt(sum (a - b)^2) in float64.
    - ``newton_steps``: float64 Newton steps applied first (:func:`newton_polish`); the
      certificate is about the polished point. Use it when the raw point's gradient is too
      large (reason ``discriminant_negative``): gradient-descent points stop at
      ||grad F|| ~ 2e-10, i.e. about g / lambda from the minimum, too far when lambda is
      small (~4e-5 in some n = k + 1 families).
    - ``cover_input``: with polishing, count the input point as a family member (delta
      grows by the rigorously bounded displacement). False: the certificate is about the
      polished point and members within ``family_distance`` of *it*.
    - ``bad_loss_threshold``: ``spurious`` = certified and objective_lo >= this (1e-3 in the
      published protocol).
    - ``precision_bits``: mpmath interval precision for the objective, gradient and angles.
    - ``max_ball_iterations``: rounds of the ball iteration rho <- 2 (r(rho) + delta) (step 3).
    - ``pairs``: :func:`pair_enclosures` of W, when the caller has them (only without
      ``newton_steps``: they must be those of the point certified).

    Returns a :class:`Certificate`; refusals carry the first failing step's reason.
    Cost: about 0.2-1 s at k = n = 20 (N = 400), dominated by the mpmath pass and eigh.
    """
    if (
        isinstance(family_distance, bool)
        or not isinstance(family_distance, (int, float))
        or not math.isfinite(family_distance)
        or family_distance < 0
    ):
        raise OptionError("family_distance", f"must be a finite number >= 0, got {family_distance!r}")
    if not isinstance(bad_loss_threshold, (int, float)) or not math.isfinite(bad_loss_threshold):
        raise OptionError("bad_loss_threshold", f"must be a finite number, got {bad_loss_threshold!r}")
    if isinstance(precision_bits, bool) or not isinstance(precision_bits, int) or precision_bits < 53:
        raise OptionError("precision_bits", f"must be an integer >= 53, got {precision_bits!r}")
    if isinstance(max_ball_iterations, bool) or not isinstance(max_ball_iterations, int) or max_ball_iterations < 1:
        raise OptionError("max_ball_iterations", f"must be an integer >= 1, got {max_ball_iterations!r}")
    W0, V = student_and_teacher(W, V)
    n, d = W0.shape
    k = V.shape[0]
    N = n * d

    grad_input = float(population_gradient(torch.from_numpy(W0)[None], torch.from_numpy(V)[None]).norm())
    Wc = newton_polish(W0, V, steps=newton_steps) if newton_steps else W0
    with Precision(80):
        delta = iv.mpf(float(family_distance)) * (1 + 2 * iv.mpf(gamma_up(N + 3)))
        if newton_steps and cover_input:
            delta = delta + iv.mpf(distance_up(Wc, W0))
    delta_hi = upper_end(delta)

    if pairs is not None and newton_steps:
        raise OptionError("pairs", "precomputed pair enclosures need newton_steps = 0 (they are those of W)")
    if pairs is None:
        pairs = pair_enclosures(Wc, V, precision_bits=precision_bits)
    nan = float("nan")
    out: dict[str, Any] = dict(
        certified=False,
        minimum_certified=False,
        lambda_lo=nan,
        lambda_at_point_lo=nan,
        lambda_at_point_hi=nan,
        lambda_float=nan,
        radius=nan,
        cover_radius=nan,
        ball_radius=nan,
        l3=nan,
        objective_lo=pairs.objective[0],
        objective_hi=pairs.objective[1],
        grad_norm_hi=pairs.grad_norm_hi,
        grad_norm_input=grad_input,
        family_distance=delta_hi,
        newton_steps=int(newton_steps),
        spurious=False,
    )

    def result(reason: str, **fields) -> Certificate:
        out.update(fields)
        return Certificate(reason=reason, point=Wc.copy(), **out)

    if pairs.zero_rows or pairs.parallel:
        return result("non_differentiable")

    # step 1: rigorous bounds on lambda_min at the point
    H_lo, H_hi = hessian_enclosure(Wc, V, pairs=pairs)
    eig = lambda_min_lower_bound(H_lo, H_hi)
    out.update(
        lambda_lo=eig.lower, lambda_at_point_lo=eig.lower, lambda_at_point_hi=eig.upper, lambda_float=eig.float_min
    )
    if not eig.lower > 0:
        return result("hessian_not_positive_definite")

    with Precision(80):
        lam = iv.mpf(eig.lower)  # a rigorous lower bound, used as the value (conservative)
        g = iv.mpf(pairs.grad_norm_hi)
        # steps 2 + 3: the ball iteration; rho must stay below w_min and half the row distance
        limit = min(pairs.w_min_lo, pairs.row_distance_lo / 2)
        rho, state = 0.0, None
        for _ in range(max_ball_iterations):
            if not rho < limit:
                break
            L3 = l3_bound(n=n, k=k, w_min=pairs.w_min_lo, w_max=pairs.w_max_hi, v_max=pairs.v_max_hi, rho=rho)
            out.update(l3=upper_end(L3), lambda_lo=lower_end(lam - L3 * delta))
            disc = 9 * lam * lam - 25 * g * L3
            if not lower_end(disc) >= 0:
                if rho == 0.0:  # L3 grows with rho: negative for every ball
                    return result("discriminant_negative")
                break
            r_hi = upper_end((3 * lam - iv.sqrt(disc)) / (2 * L3))
            out.update(radius=r_hi)
            if r_hi + delta_hi <= rho:
                state = (rho, L3, r_hi)
                break
            rho = float(round_up(2.0 * (r_hi + delta_hi) + 4 * SMALLEST_SUBNORMAL))
        if state is None:
            return result("radius_too_large")
        rho, L3, r_hi = state
        r_iv = iv.mpf(r_hi)
        out.update(ball_radius=rho, l3=upper_end(L3), radius=r_hi)
        # the sphere condition at r (docs/teacher_student.md#certified-minima-the-proof), checked at the
        # rounded-up radius
        sphere = L3 * r_iv * r_iv - 3 * lam * r_iv + 6 * g
        mu = lam - L3 * r_iv  # Hessian lower bound on B(W, r)
        if not upper_end(sphere) < 0 or not lower_end(mu) > 0:
            return result("radius_too_large")
        drop = min(upper_end(g * r_iv), upper_end(g * g / (2 * mu)))
        out.update(minimum_certified=True, objective_lo=lower_end(iv.mpf(pairs.objective[0]) - iv.mpf(drop)))
        # step 4: strict convexity on B(W, r + delta) covers every member
        cover = r_iv + delta
        out.update(cover_radius=upper_end(cover), lambda_lo=lower_end(lam - L3 * delta))
        if not lower_end(lam - L3 * cover) > 0:
            return result("radius_too_large")
        out.update(certified=True, spurious=bool(out["objective_lo"] >= bad_loss_threshold))
        return result("certified")


def certify_family(
    members: Any,
    V: Any | None = None,
    *,
    newton_steps: int = 3,
    bad_loss_threshold: float = 1e-3,
    precision_bits: int = 110,
) -> Certificate:
    """Certify one family (step 4): ``members`` (m, n, d) points, the representative first
    (as ``families.group_points`` orders them), V the shared teacher (None: identity).

    First at the representative W with delta = max_j min_{P,Q} ||W - P X_j Q||_F
    (``families.symmetric_distance`` by alternating assignments: an achieved alignment, so
    an upper bound, which is all the coverage needs; rigorous up to the widening of
    :func:`certify_minimum` for the identity teacher, while for an orthonormal teacher the
    float64 change of basis adds an unbounded ~1e-16 relative error). If that
    fails for the gradient or the coverage (``discriminant_negative``,
    ``radius_too_large``) and ``newton_steps`` > 0, again at the polished representative,
    with delta measured from the polished point (the unpolished representative is one of
    the members). Returns the last certificate.
    """
    pts = [as_float64_matrix(x, "members") for x in members]  # (m,) of (n, d)
    if not pts:
        raise OptionError("members", "must hold at least the representative")
    teacher = None if V is None else as_float64_matrix(V, "V")

    def spread(center: np.ndarray) -> float:
        return max((symmetric_distance(center, x, teacher=teacher, enumerate_max=0).distance for x in pts), default=0.0)

    rep = pts[0]
    cert = certify_minimum(
        rep,
        teacher,
        family_distance=spread(rep) if len(pts) > 1 else 0.0,
        bad_loss_threshold=bad_loss_threshold,
        precision_bits=precision_bits,
    )
    if cert.certified or not newton_steps or cert.reason not in ("discriminant_negative", "radius_too_large"):
        return cert
    polished = newton_polish(rep, teacher, steps=newton_steps)
    again = certify_minimum(
        polished,
        teacher,
        family_distance=spread(polished),
        bad_loss_threshold=bad_loss_threshold,
        precision_bits=precision_bits,
    )
    return dataclasses.replace(again, newton_steps=int(newton_steps), grad_norm_input=cert.grad_norm_input)


def certify_points(
    points: Sequence[Any],
    V: Any | None = None,
    *,
    tol: float = 1e-4,
    objectives: Sequence[float] | None = None,
    min_eigs: Sequence[float] | None = None,
    bad_loss_threshold: float = 1e-3,
    newton_steps: int = 3,
) -> list[dict[str, Any]]:
    """Per-point certificates of a batch of bad points (one cell's spurious runs of one
    work unit), one certificate per family: the points are grouped under the full symmetry
    group (``families.group_points`` with Frobenius ``tol``), each family certified once
    (:func:`certify_family`: the representative's ball widened to cover every member), and
    each point gets its family's outcome.

    Returns, per input point in order: ``certified`` (the family's certificate holds and
    F(x*) >= ``bad_loss_threshold`` provably: a proven spurious strict local minimum within
    ``certified_radius`` of the point's family representative, covering the point),
    ``certified_lambda_lo`` (rigorous lower bound on the Hessian's smallest eigenvalue over
    the family's ball), ``certified_radius`` (the ball radius r + delta, nan when the
    certificate fails before it), ``certified_reason`` (why not, or ``certified``),
    ``family_size`` (members in this batch). ``objectives`` / ``min_eigs`` spare recomputing
    F and the smallest eigenvalue for the grouping.
    """
    pts = [as_float64_matrix(x, "points") for x in points]  # (m,) of (n, d)
    if not pts:
        return []
    groups = group_points(pts, teacher=V, tol=tol, objectives=objectives, min_eigs=min_eigs)
    out: list[dict[str, Any] | None] = [None] * len(pts)
    for group in groups:
        order = [group.representative] + [m for m in group.members if m != group.representative]
        cert = certify_family(
            np.stack([pts[m] for m in order]), V, newton_steps=newton_steps, bad_loss_threshold=bad_loss_threshold
        )
        reason = cert.reason if not cert.certified else ("certified" if cert.spurious else "objective_below_threshold")
        for member in group.members:
            out[member] = {
                "certified": bool(cert.spurious),
                "certified_lambda_lo": float(cert.lambda_lo),
                "certified_radius": float(cert.cover_radius),
                "certified_reason": reason,
                "family_size": int(group.multiplicity),
            }
    return out  # type: ignore[return-value]

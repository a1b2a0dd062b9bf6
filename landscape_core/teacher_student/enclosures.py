"""Rigorous enclosures of the teacher-student objective at a point: the pair quantities,
objective and gradient (``mpmath.iv``), the Hessian (outward-rounded float64 intervals), a
rigorous lower bound on its smallest eigenvalue (Weyl + Bauer-Fike), and the notes' bound
L3 on the third derivative (protocols.md section 1, "Certified spurious minima", steps 1-2).

Method, sources and the closed-form Hessian: docs/teacher_student.md#certified-minima-the-arithmetic
(the interval arithmetic itself is :mod:`landscape_core.intervals`). Pure numpy / mpmath:
no torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from mpmath import iv

from landscape_core.errors import OptionError
from landscape_core.intervals import (
    SMALLEST_SUBNORMAL,
    Intervals,
    Precision,
    check_gradual_underflow,
    clamp,
    exact_interval,
    frobenius_up,
    gamma_up,
    lower_end,
    round_up,
    sum_up,
    upper_end,
)

__all__ = [
    "EigenBound",
    "PairEnclosures",
    "as_float64_matrix",
    "hessian_enclosure",
    "l3_bound",
    "l3_estimate",
    "lambda_min_lower_bound",
    "pair_enclosures",
    "student_and_teacher",
]


def as_float64_matrix(x: Any, name: str) -> np.ndarray:
    """A float64 copy of a (rows = neurons) matrix (numpy or torch), checked finite."""
    if hasattr(x, "detach"):  # a torch tensor: copy, never a view of the caller's storage
        x = x.detach().cpu().double().numpy()
    a = np.array(x, dtype=np.float64, copy=True)
    if a.ndim != 2:
        raise OptionError(name, f"must be a matrix (rows = neurons), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise OptionError(name, "must be finite")
    return a


def student_and_teacher(W: Any, V: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """W (n, d) and V (k, d) as float64 copies (V None: the identity, k = d), checked."""
    W = as_float64_matrix(W, "W")  # (n, d)
    V = np.eye(W.shape[1], dtype=np.float64) if V is None else as_float64_matrix(V, "V")  # (k, d)
    if V.shape[1] != W.shape[1]:
        raise OptionError("V", f"has {V.shape[1]} columns, W has {W.shape[1]}")
    if np.any(np.all(V == 0, axis=1)):
        raise OptionError("V", "has a zero row")
    return W, V


# ----------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------
@dataclass
class PairEnclosures:
    """Rigorous enclosures at W (from :func:`pair_enclosures`).

    Arrays of shape (n, m), m = n + k, columns = student rows then teacher rows, as float64
    intervals ``(lo, hi)``: ``cos``, ``sin``, ``angle`` of (w_i, u_j) (the (i, i) entries are
    placeholders 0, 1, pi/2: self pairs are not used); ``norm_w`` (n,), ``norm_u`` (m,);
    ``objective`` (lo, hi) of F(W); ``gradient`` (lo, hi) arrays (n, d) of dF/dW;
    ``grad_norm_hi`` >= ||dF/dW||_F; ``w_min_lo``, ``w_max_hi``, ``v_max_hi`` row norms;
    ``row_distance_lo``: lower bound on min_{i<j} ||w_i - w_j|| (inf when n = 1);
    ``parallel``: (i, j) pairs (j a student > i or a teacher index n + l) whose sine cannot
    be shown positive; ``zero_rows``: student rows whose norm cannot be shown positive.
    """

    cos: Intervals
    sin: Intervals
    angle: Intervals
    norm_w: Intervals
    norm_u: Intervals
    objective: tuple[float, float]
    gradient: tuple[np.ndarray, np.ndarray]
    grad_norm_hi: float
    w_min_lo: float
    w_max_hi: float
    v_max_hi: float
    row_distance_lo: float
    parallel: list[tuple[int, int]]
    zero_rows: list[int]


def pair_enclosures(W: Any, V: Any | None = None, *, precision_bits: int = 110) -> PairEnclosures:
    """Objective, gradient and every pair's cosine, sine and angle at W, in ``mpmath.iv``.

    W: (n, d) student rows, V: (k, d) teacher rows (None: identity, k = d). The exact
    float64 entries are the inputs; dot products, squared norms, |w||u| sin t =
    sqrt(|w|^2 |u|^2 - (w.u)^2) (Lagrange's identity) and t = atan2(|w||u| sin t, w.u)
    are intervals at ``precision_bits``. Then (protocols.md section 1)

        f(w, u) = (|w||u| sin t + (pi - t) w.u) / (2 pi),  f(w, w) = |w|^2 / 2,
        F = 1/2 sum_{i,j} f(w_i, w_j) - sum_{i,j} f(w_i, v_j) + 1/2 sum_{i,j} f(v_i, v_j),
        2 pi dF/dw_i = pi w_i + sum_j s_ij (|w_i||u_j| sin t_ij / |w_i|^2) w_i
                              + sum_j s_ij (pi - t_ij) u_j,

    s_ij = +1 for students j != i, -1 for teachers. Cost: O(n (n + k) d) interval
    operations (about 0.3 s at k = n = 20).
    """
    W, V = student_and_teacher(W, V)
    n, d = W.shape
    k = V.shape[0]
    m = n + k
    U = np.concatenate([W, V], axis=0)  # (m, d)
    # Exact integer images of the entries: U = U_int / 2^e (every float64 is p / 2^t).
    ratios = [[float(x).as_integer_ratio() for x in row] for row in U.tolist()]
    den = max(q for row in ratios for _, q in row)  # a power of two
    e = den.bit_length() - 1
    U_int = [[p_ * (den // q) for p_, q in row] for row in ratios]
    sq_int = [sum(x * x for x in row) for row in U_int]  # |u_j|^2 2^(2e), exact
    with Precision(precision_bits):
        pi = iv.pi
        two_pi = 2 * pi
        Ui = [[exact_interval(x) for x in row] for row in U.tolist()]  # exact entries
        sq = [iv.ldexp(iv.mpf(q), -2 * e) for q in sq_int]  # |u_j|^2 (outward from the exact integer)
        norms = [iv.sqrt(q) for q in sq]
        dots_int: dict[tuple[int, int], int] = {}

        def pair(a: int, b: int):
            dot_int = sum(x * y for x, y in zip(U_int[a], U_int[b]))  # exact
            dots_int[(a, b)] = dot_int
            dot = iv.ldexp(iv.mpf(dot_int), -2 * e)
            # |a|^2 |b|^2 - (a.b)^2 >= 0 exactly (Cauchy-Schwarz); Lagrange's identity
            cross = iv.sqrt(iv.ldexp(iv.mpf(sq_int[a] * sq_int[b] - dot_int * dot_int), -4 * e))
            angle = iv.atan2(cross, dot)
            return dot, cross, angle

        pairs: dict[tuple[int, int], tuple] = {}
        for i in range(n):
            for j in range(i + 1, m):
                pairs[(i, j)] = pair(i, j)
        teacher_pairs = [pair(n + a, n + b) for a in range(k) for b in range(a + 1, k)]

        def f_pair(dot, cross, angle):
            return (cross + (pi - angle) * dot) / two_pi

        # objective: student-student (self terms |w|^2/2 count half), student-teacher, teacher-teacher
        F = iv.mpf(0)
        for i in range(n):
            F += sq[i] / 4
        for a in range(k):
            F += sq[n + a] / 4
        for (_, j), (dot, cross, angle) in pairs.items():
            F += f_pair(dot, cross, angle) if j < n else -f_pair(dot, cross, angle)
        for dot, cross, angle in teacher_pairs:
            F += f_pair(dot, cross, angle)

        # gradient (scaled by 2 pi)
        G = []
        for i in range(n):
            radial = iv.mpf(0)
            coef: list[Any] = []
            for j in range(m):
                if j == i:
                    coef.append(None)
                    continue
                dot, cross, angle = pairs[(min(i, j), max(i, j))]
                sign = 1 if j < n else -1
                radial += sign * cross
                coef.append(sign * (pi - angle))
            radial = radial / sq[i]
            row = []
            for a in range(d):
                acc = (pi + radial) * Ui[i][a]
                for j in range(m):
                    if coef[j] is not None and U[j, a] != 0.0:
                        acc += coef[j] * Ui[j][a]
                row.append(acc / two_pi)
            G.append(row)
        gsq = sum((x * x for row in G for x in row), iv.mpf(0))
        grad_norm = iv.sqrt(clamp(gsq, lo=0.0))  # a sum of squares is >= 0

        # per-pair float intervals for the Hessian
        cos_lo, cos_hi = np.zeros((n, m)), np.zeros((n, m))
        sin_lo, sin_hi = np.ones((n, m)), np.ones((n, m))
        half_pi = pi / 2
        ang_lo, ang_hi = np.full((n, m), lower_end(half_pi)), np.full((n, m), upper_end(half_pi))
        parallel, zero_rows = [], []
        for i in range(n):
            if not lower_end(sq[i]) > 0:
                zero_rows.append(i)
        for (i, j), (dot, cross, angle) in pairs.items():
            if i in zero_rows or (j < n and j in zero_rows):
                continue
            nn = norms[i] * norms[j]
            c = dot / nn
            s = cross / nn
            c = clamp(c, -1.0, 1.0)  # |cos| <= 1 exactly
            s = clamp(s, 0.0, 1.0)
            if not lower_end(s) > 0:
                parallel.append((i, j))
            for a, b in ((i, j), (j, i)) if j < n else ((i, j),):
                cos_lo[a, b], cos_hi[a, b] = lower_end(c), upper_end(c)
                sin_lo[a, b], sin_hi[a, b] = lower_end(s), upper_end(s)
                ang_lo[a, b], ang_hi[a, b] = lower_end(angle), upper_end(angle)
        row_distance = math.inf
        for i in range(n):
            for j in range(i + 1, n):
                dist2 = iv.ldexp(iv.mpf(sq_int[i] + sq_int[j] - 2 * dots_int[(i, j)]), -2 * e)  # exact integer
                row_distance = min(row_distance, lower_end(iv.sqrt(dist2)))
        out = PairEnclosures(
            cos=Intervals(cos_lo, cos_hi),
            sin=Intervals(sin_lo, sin_hi),
            angle=Intervals(ang_lo, ang_hi),
            norm_w=Intervals([lower_end(x) for x in norms[:n]], [upper_end(x) for x in norms[:n]]),
            norm_u=Intervals([lower_end(x) for x in norms], [upper_end(x) for x in norms]),
            objective=(lower_end(F), upper_end(F)),
            gradient=(
                np.array([[lower_end(x) for x in row] for row in G]),
                np.array([[upper_end(x) for x in row] for row in G]),
            ),
            grad_norm_hi=upper_end(grad_norm),
            w_min_lo=min(lower_end(x) for x in norms[:n]),
            w_max_hi=max(upper_end(x) for x in norms[:n]),
            v_max_hi=max(upper_end(x) for x in norms[n:]),
            row_distance_lo=max(row_distance, 0.0),
            parallel=parallel,
            zero_rows=zero_rows,
        )
    return out


# ----------------------------------------------------------------------------------
# Step 1: Hessian enclosure and the rigorous smallest eigenvalue
# ----------------------------------------------------------------------------------
def hessian_enclosure(
    W: Any, V: Any | None = None, *, pairs: PairEnclosures | None = None, precision_bits: int = 110
) -> tuple[np.ndarray, np.ndarray]:
    """Entrywise enclosure [H_lo, H_hi] of the Hessian of F at W, (n d, n d) each, rows and
    columns in the row-major order of W (neuron-major, as ``teacher_student.population_hessian``).

    The closed form (docs/teacher_student.md#certified-minima-the-arithmetic) in float64
    interval arithmetic (one-ulp outward rounding per operation), from the mpmath enclosures
    of the pair quantities (``pairs``, computed when None). Raises ValueError where two rows
    are parallel or a student row is zero (the closed form is undefined there).
    The result is intersected with its transpose (the exact Hessian is symmetric).
    """
    check_gradual_underflow()
    W, V = student_and_teacher(W, V)
    n, d = W.shape
    k = V.shape[0]
    if pairs is None:
        pairs = pair_enclosures(W, V, precision_bits=precision_bits)
    if pairs.zero_rows or pairs.parallel:
        raise ValueError(
            f"the closed-form Hessian is undefined: zero rows {pairs.zero_rows}, parallel pairs {pairs.parallel[:5]}"
        )
    U = np.concatenate([W, V], axis=0)  # (m, d)
    with Precision(53):
        pi = Intervals(lower_end(iv.pi), upper_end(iv.pi))
    two_pi = pi * 2.0
    uw = Intervals(W) / pairs.norm_w[:, None]  # (n, d) unit student rows
    uu = Intervals(U) / pairs.norm_u[:, None]  # (m, d) unit rows of [W; V]
    c, s, t = pairs.cos, pairs.sin, pairs.angle  # (n, m)
    sign = np.concatenate([1.0 - np.eye(n), -np.ones((n, k))], axis=1)  # (n, m): +1 / 0 / -1
    eye_d = np.eye(d)

    # diagonal blocks: I/2 + sum_j sign_ij ||u_j||/(2 pi ||w_i||) (s (I - u u^T) + a a^T / s)
    coef = (pairs.norm_u[None, :] / (two_pi * pairs.norm_w[:, None])) * sign  # (n, m)
    a = uu[None, :, :] - c[:, :, None] * uw[:, None, :]  # (n, m, d): z_j - c u_i
    aat = ((coef / s)[:, :, None, None] * (a[:, :, :, None] * a[:, :, None, :])).sum(axis=1)  # (n, d, d)
    sum_s = (coef * s).sum(axis=1)  # (n,)
    proj = Intervals(eye_d)[None] - uw[:, :, None] * uw[:, None, :]  # (n, d, d)
    diag = sum_s[:, None, None] * proj + aat + 0.5 * eye_d  # (n, d, d)

    # off-diagonal blocks (i != j): ((pi - t) I + c s z z^T - (c/s) b b^T + s (b z^T + z b^T)) / (2 pi)
    ct, st, th = c[:, :n], s[:, :n], t[:, :n]  # (n, n)
    z = uw[None, :, :]  # z_j = u_j, (1, n, d)
    u = uw[:, None, :]  # u_i, (n, 1, d)
    b = u - ct[:, :, None] * z  # (n, n, d)
    zz = z[:, :, :, None] * z[:, :, None, :]  # (1, n, d, d)
    bb = b[:, :, :, None] * b[:, :, None, :]  # (n, n, d, d)
    bz = b[:, :, :, None] * z[:, :, None, :]  # (n, n, d, d): b_a z_b
    zb = z[:, :, :, None] * b[:, :, None, :]  # z_a b_b
    off = (
        (pi - th)[:, :, None, None] * eye_d
        + (ct * st)[:, :, None, None] * zz
        - (ct / st)[:, :, None, None] * bb
        + st[:, :, None, None] * (bz + zb)
    ) / two_pi  # (n, n, d, d)
    lo, hi = off.lo.copy(), off.hi.copy()
    idx = np.arange(n)
    lo[idx, idx] = diag.lo
    hi[idx, idx] = diag.hi
    lo = lo.transpose(0, 2, 1, 3).reshape(n * d, n * d)  # (i, a, j, b) -> rows (i, a), columns (j, b)
    hi = hi.transpose(0, 2, 1, 3).reshape(n * d, n * d)
    lo, hi = np.maximum(lo, lo.T), np.minimum(hi, hi.T)
    if not np.all(lo <= hi) or not np.all(np.isfinite(lo)) or not np.all(np.isfinite(hi)):
        raise ArithmeticError("Hessian enclosure is empty or not finite: a bug, or the closed form does not hold")
    return lo, hi


@dataclass(frozen=True)
class EigenBound:
    """Result of :func:`lambda_min_lower_bound`: ``lower`` <= lambda_min(H) <= ``upper``
    (both rigorous; ``upper`` is the Rayleigh quotient of the computed eigenvector, so
    ``upper < 0`` proves the Hessian indefinite); ``float_min`` the float64 smallest
    eigenvalue of the midpoint Hessian; the error terms ``enclosure`` (||Hr||_inf, width
    of the interval Hessian), ``bauer_fike`` (eigenvector residual bound) and
    ``orthogonality`` (delta >= ||X^T X - I||_2)."""

    lower: float
    upper: float
    float_min: float
    enclosure: float
    bauer_fike: float
    orthogonality: float


def lambda_min_lower_bound(H_lo: np.ndarray, H_hi: np.ndarray) -> EigenBound:
    """Rigorous lower bound on the smallest eigenvalue of every symmetric matrix in the
    entrywise interval [H_lo, H_hi] (N x N, symmetric bounds).

    Method (docs/teacher_student.md#certified-minima-the-arithmetic): midpoint Hc and radius
    Hr, Weyl; ``numpy.linalg.eigh`` of Hc, then Bauer-Fike with a non-orthogonal eigenvector
    matrix; the BLAS products bounded a priori (Higham 2002, eq. 3.13). Cost: one eigh and two N x N matmuls.
    """
    check_gradual_underflow()
    H_lo = np.asarray(H_lo, dtype=np.float64)
    H_hi = np.asarray(H_hi, dtype=np.float64)
    N = H_lo.shape[0]
    if not (np.array_equal(H_lo, H_lo.T) and np.array_equal(H_hi, H_hi.T)):
        raise ValueError("the interval matrix must have symmetric bounds")
    Hc = 0.5 * H_lo + 0.5 * H_hi  # a float64 inside [lo, hi] (clipped below), symmetric
    Hc = np.minimum(np.maximum(Hc, H_lo), H_hi)
    Hr = np.maximum(round_up(H_hi - Hc), round_up(Hc - H_lo))  # >= |H - Hc| entrywise
    enclosure = max(sum_up(row) for row in Hr)  # ||Hr||_inf >= ||H - Hc||_2

    mu, X = np.linalg.eigh(Hc)  # Hc X ~ X diag(mu)
    gamma = gamma_up(N)
    # delta >= ||X^T X - I||_2 <= ||fl(X^T X) - I||_F + gamma ||X||_F^2 + 2 N eta N
    G = X.T @ X
    Gd = Intervals(G) - np.eye(N)
    G_err = np.maximum(np.abs(Gd.lo), np.abs(Gd.hi))
    x_f = frobenius_up(X)
    with Precision(80):
        up = lambda v: iv.mpf(float(v))  # noqa: E731  (exact float -> interval)
        delta = up(frobenius_up(G_err)) + up(gamma) * up(x_f) ** 2 + 2 * N * N * iv.mpf(SMALLEST_SUBNORMAL)
        # ||R||_F, R = Hc X - X diag(mu): computed part + gamma ||Hc||_F ||X||_F + 2 N eta N
        P = Hc @ X
        XM = Intervals(X) * mu[None, :]
        R = Intervals(P) - XM
        R_abs = np.maximum(np.abs(R.lo), np.abs(R.hi))
        r_norm = (
            up(frobenius_up(R_abs))
            + up(gamma) * up(frobenius_up(Hc)) * up(x_f)
            + 2 * N * N * iv.mpf(SMALLEST_SUBNORMAL)
        )
        if not upper_end(delta) < 1:
            raise ArithmeticError(f"eigenvectors too far from orthogonal (delta <= {upper_end(delta)})")
        eps = iv.sqrt(1 + delta) * r_norm / (1 - delta)
        lower = iv.mpf(float(mu[0])) - eps - up(enclosure)
        upper = _rayleigh_upper(H_lo, H_hi, X[:, 0])
        return EigenBound(
            lower=lower_end(lower),
            upper=upper,
            float_min=float(mu[0]),
            enclosure=enclosure,
            bauer_fike=upper_end(eps),
            orthogonality=upper_end(delta),
        )


def _rayleigh_upper(H_lo: np.ndarray, H_hi: np.ndarray, x: np.ndarray) -> float:
    """Upper bound on x^T H x / x^T x over the interval matrix (>= lambda_min of every
    member, the exact Hessian included), in outward-rounded float64 intervals."""
    Hx = (Intervals(H_lo, H_hi) * x[None, :]).sum(axis=1)  # (N,)
    num = (Hx * x).sum(axis=0)
    den = (Intervals(x) * x).sum(axis=0)
    num_hi, den_lo, den_hi = float(num.hi), float(den.lo), float(den.hi)
    if not den_lo > 0:
        return math.inf
    return float(round_up(num_hi / den_lo)) if num_hi >= 0 else float(round_up(num_hi / den_hi))


# ----------------------------------------------------------------------------------
# Step 2: the third-derivative bound
# ----------------------------------------------------------------------------------
def l3_bound(*, n: int, k: int, w_min: float, w_max: float, v_max: float, rho: float, precision_bits: int = 80):
    """Upper bound (an ``mpmath.iv`` interval, use ``.b``) on the third derivative of F in
    the Frobenius ball B(W, rho), the notes' form (protocols.md section 1, after Safran &
    Shamir 2018):

        L3 <= n (sqrt(2) (n - 1) (w_max + rho + w_min - rho) + k v_max) / (pi (w_min - rho)^2)

    ``w_min`` must be a lower bound and ``w_max``, ``v_max`` upper bounds on the student /
    teacher row norms at W; requires rho < w_min (raises ValueError otherwise)."""
    with Precision(precision_bits):
        wmin, wmax = iv.mpf(float(w_min)), iv.mpf(float(w_max))
        r = iv.mpf(float(rho))
        lo = wmin - r
        if not lower_end(lo) > 0:
            raise ValueError(f"rho = {rho} is not below the smallest student row norm {w_min}")
        return n * (iv.sqrt(2) * (n - 1) * ((wmax + r) + lo) + k * iv.mpf(float(v_max))) / (iv.pi * lo * lo)


def l3_estimate(*, n: int, k: int, w_min: float, w_max: float, v_max: float) -> float:
    """The float64 value of :func:`l3_bound`'s formula at rho = 0 (an estimate, not a bound:
    no outward rounding), for choosing when a proof is worth trying."""
    return n * (math.sqrt(2) * (n - 1) * (w_max + w_min) + k * v_max) / (math.pi * w_min**2)

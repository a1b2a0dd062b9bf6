"""Computer-assisted certificates of strict local minima of the teacher-student objective.

A float64 eigenvalue says "probably a minimum"; this module proves it, following the four
steps of protocols.md section 1 ("Certified spurious minima", after Safran & Shamir, ICML
2018, who did the same in exact symbolic arithmetic):

1. ``lambda``: a rigorous lower bound on the smallest eigenvalue of the Hessian of F at W;
2. ``L3``: the notes' bound on the third derivative of F in a ball B(W, rho),
   L3 <= n (sqrt(2) (n - 1) (w_max + w_min) + k v_max) / (pi w_min^2), with w_max + rho and
   w_min - rho in place of the largest and smallest student row norms;
3. if 9 lambda^2 >= 25 g L3 (g >= ||grad F(W)||_F), a local minimum lies within
   r = (3 lambda - sqrt(9 lambda^2 - 25 g L3)) / (2 L3) of W, and it is strict, with
   rigorous bounds on its objective;
4. a family of points within Frobenius distance delta of W (after the symmetries) is
   covered by widening the ball to r + delta (the eigenvalue bound loses L3 delta).

The argument of step 3 (checked by this code in interval arithmetic, not assumed):
with ||D^3 F|| <= L3 on B(W, rho), Taylor's theorem gives, for ||x - W|| = s <= rho,
F(x) >= F(W) - g s + lambda s^2 / 2 - L3 s^3 / 6. The notes' radius r is the smaller root
of L3 r^2 - 3 lambda r + 25 g / 4 = 0; there L3 r^2 - 3 lambda r + 6 g < 0 (g > 0), i.e.
F > F(W) on the sphere ||x - W|| = r, so the minimum of F over the closed ball is attained
inside: a local minimum x*. We also require L3 (r + delta) < lambda: then the Hessian is
>= lambda - L3 (r + delta) > 0 on all of B(W, r + delta), F is strictly convex there, x*
is its only critical point and a strict local minimum, and every family member (within
delta of W) lies in that ball, within r + delta of x*. F(x*) <= F(W) (x* minimises over a
ball containing W) and F(x*) >= F(W) - min(g r, g^2 / (2 (lambda - L3 r))) (Taylor /
strong convexity on the ball). The smoothness conditions of the notes are checked for the
whole ball B(W, rho) with rho >= r + delta: rho < smallest student row norm and
rho < half the smallest distance between two student rows. L3 is used as a bound on
||D^3 F|| (equivalently, a Lipschitz constant of the Hessian) on B(W, rho); it is the
notes' bound as stated there (attributed to Safran & Shamir 2018), not re-derived here;
tests check it against Hessian Lipschitz quotients numerically.

Arithmetic (what makes each number rigorous):

- Objective, gradient, angles, norms, row distances: ``mpmath.iv`` interval arithmetic
  (outward rounding at ``precision_bits``, default 110), starting from the exact float64
  entries of W and V. Angles t = atan2(|w||u| sin t, w.u) by ``iv.atan2``.
- Hessian entries (n^2 d^2 of them, too many for mpmath at k = 20): the closed form below,
  evaluated entrywise in float64 *interval* arithmetic: every +, -, *, /, sqrt is an
  IEEE-754 correctly rounded operation, so its exact result lies within one ulp of the
  rounded one; each result is widened outward by one ulp (``numpy.nextafter``), which
  encloses the exact value (Moore, Kearfott & Cloud, *Introduction to Interval Analysis*,
  SIAM 2009, ch. 3; Tucker, *Validated Numerics*, Princeton 2011, ch. 2). The per-pair
  quantities (norms, cos, sin, angle) come from the mpmath pass, rounded outward. This
  needs gradual underflow (no flush-to-zero), checked at run time.
- Smallest eigenvalue: the interval Hessian [H_lo, H_hi] (intersected with its transpose:
  the exact Hessian is symmetric) is split into a float64 midpoint Hc and radius Hr, so
  lambda_min(H) >= lambda_min(Hc) - ||Hr||_inf (Weyl's inequality; ||E||_2 <= || |E| ||_2
  <= ||Hr||_inf for symmetric |E| <= Hr). For lambda_min(Hc), a float64 eigendecomposition
  Hc X ~ X diag(mu) (LAPACK ``eigh``) and the Bauer-Fike theorem (Bauer & Fike 1960; Golub
  & Van Loan, *Matrix Computations*, 4th ed., Thm 7.2.2) applied to
  Hc = X diag(mu) X^-1 + R X^-1, R = Hc X - X diag(mu): every eigenvalue of Hc lies within
  kappa(X) ||R||_2 / sigma_min(X) <= sqrt(1 + delta) ||R||_F / (1 - delta) of some mu_i,
  where ||X^T X - I||_2 <= delta < 1. R and X^T X are computed by BLAS (dgemm); their
  rounding errors are bounded a priori, |fl(AB) - AB| <= gamma_m |A||B| + 2 m eta entrywise
  (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM 2002, eq. 3.13,
  plus an underflow term; gamma_m = m u / (1 - m u), u = 2^-53, eta = 2^-1074), valid for
  any order of summation with or without FMA (assumption: dgemm is a classical, not
  Strassen-type, algorithm in IEEE double, as OpenBLAS, MKL and reference BLAS are), and
  || |A||B| ||_F <= ||A||_F ||B||_F. Every bound on a norm is itself accumulated upward.
  Floating point is thus used only to produce the approximate decomposition; every error
  term is bounded rigorously.
- The scalars of steps 2-4 (L3, r, the ball, the objective bounds): ``mpmath.iv``.

Closed-form Hessian (derived from g(w, v) = dF-pair / dw, protocols.md; u = w/||w||,
z = v/||v||, c = cos t, s = sin t):
  d g(w, v) / d w = ||v|| / (2 pi ||w||) (s (I - u u^T) + a a^T / s),   a = z - c u,
  d g(w, v) / d v = ((pi - t) I + c s z z^T - (c/s) b b^T + s (b z^T + z b^T)) / (2 pi),
                                                                        b = u - c z;
  diagonal block i: I/2 + sum_{j != i} dg(w_i, w_j)/dw_i - sum_j dg(w_i, v_j)/dw_i;
  off-diagonal block (i, j): dg(w_i, w_j)/dw_j.
The 1/s terms make the closed form undefined where two rows are parallel (s = 0): F is
C^2 but not C^3 there. Such points (the global minimum W = V among them: every student
row is parallel to a teacher row) are refused with reason ``non_differentiable``, as are
points with a zero student row.

Public entry points: :func:`certify_minimum`, :func:`certify_family`, :func:`hessian_enclosure`,
:func:`lambda_min_lower_bound`, :func:`pair_enclosures`, :func:`newton_polish`,
:func:`l3_bound`, :class:`Certificate`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
from mpmath import iv
from mpmath.libmp import from_float, mpf_gt, mpf_lt, round_ceiling, round_floor, to_float

from landscape_core.errors import OptionError

__all__ = [
    "REASONS",
    "Certificate",
    "PairEnclosures",
    "certify_family",
    "certify_minimum",
    "certify_points",
    "hessian_enclosure",
    "lambda_min_lower_bound",
    "l3_bound",
    "newton_polish",
    "pair_enclosures",
]

#: why a certificate holds or not
REASONS = (
    "certified",
    "non_differentiable",  # a zero student row, or two rows parallel at W (F not C^3 there)
    "hessian_not_positive_definite",  # the rigorous lower bound on lambda_min(H(W)) is <= 0
    "discriminant_negative",  # 9 lambda^2 < 25 g L3: the gradient is too large for the curvature
    "radius_too_large",  # no ball B(W, rho) holds r + delta inside the smooth region, or L3 (r + delta) >= lambda
)

_U = Fraction(1, 2**53)  # unit roundoff of IEEE double
_ETA = 2.0**-1074  # smallest positive subnormal


# ----------------------------------------------------------------------------------
# float64 interval arithmetic with one-ulp outward rounding
# ----------------------------------------------------------------------------------
def _dn(x):
    return np.nextafter(x, -np.inf)


def _up(x):
    return np.nextafter(x, np.inf)


def _check_gradual_underflow() -> None:
    """The one-ulp enclosure needs IEEE gradual underflow (no flush-to-zero / DAZ)."""
    tiny = np.array([2.0**-1022], dtype=np.float64)
    if not (tiny * 0.5)[0] == 2.0**-1023 or not (np.array([_ETA]) * 1.0)[0] == _ETA:
        raise RuntimeError("float64 subnormals are flushed to zero (FTZ/DAZ); "
                           "the interval bounds need gradual underflow")


class _Iv:
    """An array of closed intervals [lo, hi] (float64), outward-rounded by one ulp per
    operation. Only what the Hessian needs: +, -, *, / by intervals of one sign, sums."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi=None):
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = self.lo if hi is None else np.asarray(hi, dtype=np.float64)

    @staticmethod
    def _of(x) -> "_Iv":
        return x if isinstance(x, _Iv) else _Iv(x)  # a float64 constant is exact

    def __add__(self, other):
        o = _Iv._of(other)
        return _Iv(_dn(self.lo + o.lo), _up(self.hi + o.hi))

    __radd__ = __add__

    def __sub__(self, other):
        o = _Iv._of(other)
        return _Iv(_dn(self.lo - o.hi), _up(self.hi - o.lo))

    def __rsub__(self, other):
        return _Iv._of(other) - self

    def __neg__(self):
        return _Iv(-self.hi, -self.lo)

    def __mul__(self, other):
        o = _Iv._of(other)
        p = (self.lo * o.lo, self.lo * o.hi, self.hi * o.lo, self.hi * o.hi)
        lo = np.minimum(np.minimum(p[0], p[1]), np.minimum(p[2], p[3]))
        hi = np.maximum(np.maximum(p[0], p[1]), np.maximum(p[2], p[3]))
        return _Iv(_dn(lo), _up(hi))

    __rmul__ = __mul__

    def reciprocal(self):
        """1 / x for intervals of one strict sign."""
        if not (np.all(self.lo > 0) or np.all(self.hi < 0)):
            raise ValueError("reciprocal of an interval containing 0")
        return _Iv(_dn(1.0 / self.hi), _up(1.0 / self.lo))

    def __truediv__(self, other):
        return self * _Iv._of(other).reciprocal()

    def __getitem__(self, index):
        return _Iv(self.lo[index], self.hi[index])

    def reshape(self, *shape):
        return _Iv(self.lo.reshape(*shape), self.hi.reshape(*shape))

    def transpose(self, *axes):
        return _Iv(self.lo.transpose(*axes), self.hi.transpose(*axes))

    def sum(self, axis: int):
        """Sum along ``axis``, one outward-rounded addition at a time."""
        lo = np.moveaxis(self.lo, axis, 0)
        hi = np.moveaxis(self.hi, axis, 0)
        acc_lo, acc_hi = lo[0].copy(), hi[0].copy()
        for j in range(1, lo.shape[0]):
            acc_lo = _dn(acc_lo + lo[j])
            acc_hi = _up(acc_hi + hi[j])
        return _Iv(acc_lo, acc_hi)


def _gamma_up(m: int) -> float:
    """A float64 >= gamma_m = m u / (1 - m u) (Higham 2002, Lemma 3.1)."""
    if m * _U >= 1:
        raise OptionError("n", f"problem too large for the a-priori rounding bounds (m = {m})")
    g = m * _U / (1 - m * _U)
    out = float(g)
    return float(np.nextafter(out, np.inf)) if Fraction(out) < g else out


def _sum_up(x: np.ndarray) -> float:
    """An upper bound on the exact sum of the non-negative float64 entries of ``x``.

    numpy's (pairwise) sum is a sequence of at most M - 1 IEEE additions of non-negative
    numbers, each with relative error <= u (additions with a subnormal result are exact),
    so exact <= fl(sum) (1 - u)^-(M - 1) <= fl(sum) (1 + gamma_{M-1})."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return 0.0
    if np.any(x < 0) or not np.all(np.isfinite(x)):
        raise ValueError("_sum_up needs finite non-negative entries")
    s = float(np.sum(x))
    return float(_up(_up(s * (1.0 + _gamma_up(max(x.size - 1, 1))))))


def _frobenius_up(x: np.ndarray) -> float:
    """Upper bound on ||x||_F of a float64 array (squares rounded up, summed upward)."""
    sq = _up(np.square(np.abs(np.asarray(x, dtype=np.float64))))
    return float(_up(np.sqrt(_sum_up(sq))))


def _distance_up(A: np.ndarray, B: np.ndarray) -> float:
    """Upper bound on ||A - B||_F for float64 arrays (differences enclosed outward)."""
    D = _Iv(A) - B
    return _frobenius_up(np.maximum(np.abs(D.lo), np.abs(D.hi)))


# ----------------------------------------------------------------------------------
# mpmath helpers
# ----------------------------------------------------------------------------------
def _lo(x) -> float:
    """Largest float64 <= the lower endpoint of an mpmath interval. (Comparisons of
    ``mpmath.iv`` intervals are three-valued; every decision here is taken on these
    outward-rounded endpoints instead, which is conservative.)"""
    return to_float(x._mpi_[0], rnd=round_floor)


def _hi(x) -> float:
    """Smallest float64 >= the upper endpoint of an mpmath interval."""
    return to_float(x._mpi_[1], rnd=round_ceiling)


def _clamp(x, lo: float | None = None, hi: float | None = None):
    """The interval x intersected with [lo, hi] (endpoints kept at full precision); for
    quantities known to lie in [lo, hi] exactly (a cosine, a square root's argument)."""
    a, b = x._mpi_
    if lo is not None:
        f = from_float(lo)
        a = f if mpf_lt(a, f) else a
        b = f if mpf_lt(b, f) else b
    if hi is not None:
        f = from_float(hi)
        a = f if mpf_gt(a, f) else a
        b = f if mpf_gt(b, f) else b
    return iv.make_mpf((a, b))


class _Precision:
    """``with _Precision(bits):`` sets mpmath.iv's working precision, restoring it after."""

    def __init__(self, bits: int):
        self.bits = int(bits)

    def __enter__(self):
        self.saved = iv.prec
        iv.prec = self.bits

    def __exit__(self, *exc):
        iv.prec = self.saved
        return False


def _iv_float(x: float):
    return iv.mpf(float(x))  # exact: a float64 is a 53-bit binary number


# ----------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------
def _as_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor: copy, never a view of the caller's storage
        x = x.detach().cpu().double().numpy()
    a = np.array(x, dtype=np.float64, copy=True)
    if a.ndim != 2:
        raise OptionError(name, f"must be a matrix (rows = neurons), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise OptionError(name, "must be finite")
    return a


def _inputs(W: Any, V: Any | None) -> tuple[np.ndarray, np.ndarray]:
    W = _as_array(W, "W")  # (n, d)
    V = np.eye(W.shape[1], dtype=np.float64) if V is None else _as_array(V, "V")  # (k, d)
    if V.shape[1] != W.shape[1]:
        raise OptionError("V", f"has {V.shape[1]} columns, W has {W.shape[1]}")
    if np.any(np.all(V == 0, axis=1)):
        raise OptionError("V", "has a zero row")
    return W, V


# ----------------------------------------------------------------------------------
# Per-pair quantities, objective and gradient in mpmath interval arithmetic
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

    cos: _Iv
    sin: _Iv
    angle: _Iv
    norm_w: _Iv
    norm_u: _Iv
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
    W, V = _inputs(W, V)
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
    with _Precision(precision_bits):
        pi = iv.pi
        two_pi = 2 * pi
        Ui = [[_iv_float(x) for x in row] for row in U.tolist()]  # exact entries
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
        for (i, j), (dot, cross, angle) in pairs.items():
            F += (f_pair(dot, cross, angle) if j < n else -f_pair(dot, cross, angle))
        for dot, cross, angle in teacher_pairs:
            F += f_pair(dot, cross, angle)

        # gradient (scaled by 2 pi)
        G = []
        for i in range(n):
            radial = iv.mpf(0)
            coef = []
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
        grad_norm = iv.sqrt(_clamp(gsq, lo=0.0))  # a sum of squares is >= 0

        # per-pair float intervals for the Hessian
        cos_lo = np.zeros((n, m)); cos_hi = np.zeros((n, m))
        sin_lo = np.ones((n, m)); sin_hi = np.ones((n, m))
        half_pi = pi / 2
        ang_lo = np.full((n, m), _lo(half_pi)); ang_hi = np.full((n, m), _hi(half_pi))
        parallel, zero_rows = [], []
        for i in range(n):
            if not _lo(sq[i]) > 0:
                zero_rows.append(i)
        for (i, j), (dot, cross, angle) in pairs.items():
            if i in zero_rows or (j < n and j in zero_rows):
                continue
            nn = norms[i] * norms[j]
            c = dot / nn
            s = cross / nn
            c = _clamp(c, -1.0, 1.0)  # |cos| <= 1 exactly
            s = _clamp(s, 0.0, 1.0)
            if not _lo(s) > 0:
                parallel.append((i, j))
            for (a, b) in ((i, j), (j, i)) if j < n else ((i, j),):
                cos_lo[a, b], cos_hi[a, b] = _lo(c), _hi(c)
                sin_lo[a, b], sin_hi[a, b] = _lo(s), _hi(s)
                ang_lo[a, b], ang_hi[a, b] = _lo(angle), _hi(angle)
        row_distance = math.inf
        for i in range(n):
            for j in range(i + 1, n):
                dist2 = iv.ldexp(iv.mpf(sq_int[i] + sq_int[j] - 2 * dots_int[(i, j)]), -2 * e)  # exact integer
                row_distance = min(row_distance, _lo(iv.sqrt(dist2)))
        out = PairEnclosures(
            cos=_Iv(cos_lo, cos_hi),
            sin=_Iv(sin_lo, sin_hi),
            angle=_Iv(ang_lo, ang_hi),
            norm_w=_Iv([_lo(x) for x in norms[:n]], [_hi(x) for x in norms[:n]]),
            norm_u=_Iv([_lo(x) for x in norms], [_hi(x) for x in norms]),
            objective=(_lo(F), _hi(F)),
            gradient=(np.array([[_lo(x) for x in row] for row in G]), np.array([[_hi(x) for x in row] for row in G])),
            grad_norm_hi=_hi(grad_norm),
            w_min_lo=min(_lo(x) for x in norms[:n]),
            w_max_hi=max(_hi(x) for x in norms[:n]),
            v_max_hi=max(_hi(x) for x in norms[n:]),
            row_distance_lo=max(row_distance, 0.0),
            parallel=parallel,
            zero_rows=zero_rows,
        )
    return out


# ----------------------------------------------------------------------------------
# Step 1: Hessian enclosure and the rigorous smallest eigenvalue
# ----------------------------------------------------------------------------------
def hessian_enclosure(W: Any, V: Any | None = None, *, pairs: PairEnclosures | None = None,
                      precision_bits: int = 110) -> tuple[np.ndarray, np.ndarray]:
    """Entrywise enclosure [H_lo, H_hi] of the Hessian of F at W, (n d, n d) each, rows and
    columns in the row-major order of W (neuron-major, as ``teacher_student.population_hessian``).

    The closed form of the module docstring in float64 interval arithmetic (one-ulp
    outward rounding per operation), from the mpmath enclosures of the pair quantities
    (``pairs``, computed when None). Raises ValueError where two rows are parallel or a
    student row is zero (the closed form is undefined there; see the module docstring).
    The result is intersected with its transpose (the exact Hessian is symmetric).
    """
    _check_gradual_underflow()
    W, V = _inputs(W, V)
    n, d = W.shape
    k = V.shape[0]
    if pairs is None:
        pairs = pair_enclosures(W, V, precision_bits=precision_bits)
    if pairs.zero_rows or pairs.parallel:
        raise ValueError(f"the closed-form Hessian is undefined: zero rows {pairs.zero_rows}, "
                         f"parallel pairs {pairs.parallel[:5]}")
    U = np.concatenate([W, V], axis=0)  # (m, d)
    with _Precision(53):
        pi = _Iv(_lo(iv.pi), _hi(iv.pi))
    two_pi = pi * 2.0
    uw = _Iv(W) / pairs.norm_w[:, None]  # (n, d) unit student rows
    uu = _Iv(U) / pairs.norm_u[:, None]  # (m, d) unit rows of [W; V]
    c, s, t = pairs.cos, pairs.sin, pairs.angle  # (n, m)
    sign = np.concatenate([1.0 - np.eye(n), -np.ones((n, k))], axis=1)  # (n, m): +1 / 0 / -1
    eye_d = np.eye(d)

    # diagonal blocks: I/2 + sum_j sign_ij ||u_j||/(2 pi ||w_i||) (s (I - u u^T) + a a^T / s)
    coef = (pairs.norm_u[None, :] / (two_pi * pairs.norm_w[:, None])) * sign  # (n, m)
    a = uu[None, :, :] - c[:, :, None] * uw[:, None, :]  # (n, m, d): z_j - c u_i
    aat = ((coef / s)[:, :, None, None] * (a[:, :, :, None] * a[:, :, None, :])).sum(axis=1)  # (n, d, d)
    sum_s = (coef * s).sum(axis=1)  # (n,)
    proj = _Iv(eye_d)[None] - uw[:, :, None] * uw[:, None, :]  # (n, d, d)
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
    off = ((pi - th)[:, :, None, None] * eye_d + (ct * st)[:, :, None, None] * zz
           - (ct / st)[:, :, None, None] * bb + st[:, :, None, None] * (bz + zb)) / two_pi  # (n, n, d, d)
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

    Method (module docstring): midpoint Hc and radius Hr, Weyl; ``numpy.linalg.eigh`` of
    Hc, then Bauer-Fike with a non-orthogonal eigenvector matrix; the BLAS products bounded
    a priori (Higham 2002, eq. 3.13). Cost: one eigh and two N x N matmuls.
    """
    _check_gradual_underflow()
    H_lo = np.asarray(H_lo, dtype=np.float64)
    H_hi = np.asarray(H_hi, dtype=np.float64)
    N = H_lo.shape[0]
    if not (np.array_equal(H_lo, H_lo.T) and np.array_equal(H_hi, H_hi.T)):
        raise ValueError("the interval matrix must have symmetric bounds")
    Hc = 0.5 * H_lo + 0.5 * H_hi  # a float64 inside [lo, hi] (clipped below), symmetric
    Hc = np.minimum(np.maximum(Hc, H_lo), H_hi)
    Hr = np.maximum(_up(H_hi - Hc), _up(Hc - H_lo))  # >= |H - Hc| entrywise
    enclosure = max(_sum_up(row) for row in Hr)  # ||Hr||_inf >= ||H - Hc||_2

    mu, X = np.linalg.eigh(Hc)  # Hc X ~ X diag(mu)
    gamma = _gamma_up(N)
    # delta >= ||X^T X - I||_2 <= ||fl(X^T X) - I||_F + gamma ||X||_F^2 + 2 N eta N
    G = X.T @ X
    Gd = _Iv(G) - np.eye(N)
    G_err = np.maximum(np.abs(Gd.lo), np.abs(Gd.hi))
    x_f = _frobenius_up(X)
    with _Precision(80):
        up = lambda v: iv.mpf(float(v))  # noqa: E731  (exact float -> interval)
        delta = up(_frobenius_up(G_err)) + up(gamma) * up(x_f) ** 2 + 2 * N * N * iv.mpf(_ETA)
        # ||R||_F, R = Hc X - X diag(mu): computed part + gamma ||Hc||_F ||X||_F + 2 N eta N
        P = Hc @ X
        XM = _Iv(X) * mu[None, :]
        R = _Iv(P) - XM
        R_abs = np.maximum(np.abs(R.lo), np.abs(R.hi))
        r_norm = up(_frobenius_up(R_abs)) + up(gamma) * up(_frobenius_up(Hc)) * up(x_f) + 2 * N * N * iv.mpf(_ETA)
        if not _hi(delta) < 1:
            raise ArithmeticError(f"eigenvectors too far from orthogonal (delta <= {_hi(delta)})")
        eps = iv.sqrt(1 + delta) * r_norm / (1 - delta)
        lower = iv.mpf(float(mu[0])) - eps - up(enclosure)
        upper = _rayleigh_upper(H_lo, H_hi, X[:, 0])
        return EigenBound(lower=_lo(lower), upper=upper, float_min=float(mu[0]), enclosure=enclosure,
                          bauer_fike=_hi(eps), orthogonality=_hi(delta))


def _rayleigh_upper(H_lo: np.ndarray, H_hi: np.ndarray, x: np.ndarray) -> float:
    """Upper bound on x^T H x / x^T x over the interval matrix (>= lambda_min of every
    member, the exact Hessian included), in outward-rounded float64 intervals."""
    Hx = (_Iv(H_lo, H_hi) * x[None, :]).sum(axis=1)  # (N,)
    num = (Hx * x).sum(axis=0)
    den = (_Iv(x) * x).sum(axis=0)
    num_hi, den_lo, den_hi = float(num.hi), float(den.lo), float(den.hi)
    if not den_lo > 0:
        return math.inf
    return float(_up(num_hi / den_lo)) if num_hi >= 0 else float(_up(num_hi / den_hi))


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
    with _Precision(precision_bits):
        wmin, wmax = iv.mpf(float(w_min)), iv.mpf(float(w_max))
        r = iv.mpf(float(rho))
        lo = wmin - r
        if not _lo(lo) > 0:
            raise ValueError(f"rho = {rho} is not below the smallest student row norm {w_min}")
        return n * (iv.sqrt(2) * (n - 1) * ((wmax + r) + lo) + k * iv.mpf(float(v_max))) / (iv.pi * lo * lo)


# ----------------------------------------------------------------------------------
# Newton polishing (float64, not part of the proof)
# ----------------------------------------------------------------------------------
def newton_polish(W: Any, V: Any | None = None, *, steps: int) -> np.ndarray:
    """``steps`` Newton steps W <- W - H(W)^-1 grad F(W) in float64 with the analytic
    gradient and Hessian of ``teacher_student`` (the point to certify, not part of the
    proof: the certificate is computed at the returned point). Stops early when the
    float64 gradient norm stops decreasing; returns the best point seen. (n, d)."""
    import torch

    from landscape_core.teacher_student import population_gradient, population_hessian

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise OptionError("newton_steps", f"must be an integer >= 0, got {steps!r}")
    W, V = _inputs(W, V)
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
    "Certified spurious minima"; method and sources in the module docstring).

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
    if isinstance(family_distance, bool) or not isinstance(family_distance, (int, float)) \
            or not math.isfinite(family_distance) or family_distance < 0:
        raise OptionError("family_distance", f"must be a finite number >= 0, got {family_distance!r}")
    if not isinstance(bad_loss_threshold, (int, float)) or not math.isfinite(bad_loss_threshold):
        raise OptionError("bad_loss_threshold", f"must be a finite number, got {bad_loss_threshold!r}")
    if isinstance(precision_bits, bool) or not isinstance(precision_bits, int) or precision_bits < 53:
        raise OptionError("precision_bits", f"must be an integer >= 53, got {precision_bits!r}")
    if isinstance(max_ball_iterations, bool) or not isinstance(max_ball_iterations, int) or max_ball_iterations < 1:
        raise OptionError("max_ball_iterations", f"must be an integer >= 1, got {max_ball_iterations!r}")
    W0, V = _inputs(W, V)
    n, d = W0.shape
    k = V.shape[0]
    N = n * d

    import torch

    from landscape_core.teacher_student import population_gradient

    grad_input = float(population_gradient(torch.from_numpy(W0)[None], torch.from_numpy(V)[None]).norm())
    Wc = newton_polish(W0, V, steps=newton_steps) if newton_steps else W0
    with _Precision(80):
        delta = iv.mpf(float(family_distance)) * (1 + 2 * iv.mpf(_gamma_up(N + 3)))
        if newton_steps and cover_input:
            delta = delta + iv.mpf(_distance_up(Wc, W0))
    delta_hi = _hi(delta)

    if pairs is not None and newton_steps:
        raise OptionError("pairs", "precomputed pair enclosures need newton_steps = 0 (they are those of W)")
    if pairs is None:
        pairs = pair_enclosures(Wc, V, precision_bits=precision_bits)
    nan = float("nan")
    out = dict(certified=False, minimum_certified=False, lambda_lo=nan, lambda_at_point_lo=nan,
               lambda_at_point_hi=nan, lambda_float=nan, radius=nan, cover_radius=nan, ball_radius=nan, l3=nan,
               objective_lo=pairs.objective[0], objective_hi=pairs.objective[1], grad_norm_hi=pairs.grad_norm_hi,
               grad_norm_input=grad_input, family_distance=delta_hi, newton_steps=int(newton_steps), spurious=False)

    def result(reason: str, **fields) -> Certificate:
        out.update(fields)
        return Certificate(reason=reason, point=Wc.copy(), **out)

    if pairs.zero_rows or pairs.parallel:
        return result("non_differentiable")

    # step 1: rigorous bounds on lambda_min at the point
    H_lo, H_hi = hessian_enclosure(Wc, V, pairs=pairs)
    eig = lambda_min_lower_bound(H_lo, H_hi)
    out.update(lambda_lo=eig.lower, lambda_at_point_lo=eig.lower, lambda_at_point_hi=eig.upper,
               lambda_float=eig.float_min)
    if not eig.lower > 0:
        return result("hessian_not_positive_definite")

    with _Precision(80):
        lam = iv.mpf(eig.lower)  # a rigorous lower bound, used as the value (conservative)
        g = iv.mpf(pairs.grad_norm_hi)
        # steps 2 + 3: the ball iteration; rho must stay below w_min and half the row distance
        limit = min(pairs.w_min_lo, pairs.row_distance_lo / 2)
        rho, state = 0.0, None
        for _ in range(max_ball_iterations):
            if not rho < limit:
                break
            L3 = l3_bound(n=n, k=k, w_min=pairs.w_min_lo, w_max=pairs.w_max_hi, v_max=pairs.v_max_hi, rho=rho)
            out.update(l3=_hi(L3), lambda_lo=_lo(lam - L3 * delta))
            disc = 9 * lam * lam - 25 * g * L3
            if not _lo(disc) >= 0:
                if rho == 0.0:  # L3 grows with rho: negative for every ball
                    return result("discriminant_negative")
                break
            r_hi = _hi((3 * lam - iv.sqrt(disc)) / (2 * L3))
            out.update(radius=r_hi)
            if r_hi + delta_hi <= rho:
                state = (rho, L3, r_hi)
                break
            rho = float(_up(2.0 * (r_hi + delta_hi) + 4 * _ETA))
        if state is None:
            return result("radius_too_large")
        rho, L3, r_hi = state
        r_iv = iv.mpf(r_hi)
        out.update(ball_radius=rho, l3=_hi(L3), radius=r_hi)
        # the sphere condition at r (module docstring), checked at the rounded-up radius
        sphere = L3 * r_iv * r_iv - 3 * lam * r_iv + 6 * g
        mu = lam - L3 * r_iv  # Hessian lower bound on B(W, r)
        if not _hi(sphere) < 0 or not _lo(mu) > 0:
            return result("radius_too_large")
        drop = min(_hi(g * r_iv), _hi(g * g / (2 * mu)))
        out.update(minimum_certified=True, objective_lo=_lo(iv.mpf(pairs.objective[0]) - iv.mpf(drop)))
        # step 4: strict convexity on B(W, r + delta) covers every member
        cover = r_iv + delta
        out.update(cover_radius=_hi(cover), lambda_lo=_lo(lam - L3 * delta))
        if not _lo(lam - L3 * cover) > 0:
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
    from landscape_core.families import symmetric_distance

    pts = [_as_array(x, "members") for x in members]  # (m,) of (n, d)
    if not pts:
        raise OptionError("members", "must hold at least the representative")
    teacher = None if V is None else _as_array(V, "V")

    def spread(center: np.ndarray) -> float:
        return max((symmetric_distance(center, x, teacher=teacher, enumerate_max=0).distance for x in pts),
                   default=0.0)

    rep = pts[0]
    cert = certify_minimum(rep, teacher, family_distance=spread(rep) if len(pts) > 1 else 0.0,
                           bad_loss_threshold=bad_loss_threshold, precision_bits=precision_bits)
    if cert.certified or not newton_steps or cert.reason not in ("discriminant_negative", "radius_too_large"):
        return cert
    polished = newton_polish(rep, teacher, steps=newton_steps)
    again = certify_minimum(polished, teacher, family_distance=spread(polished),
                            bad_loss_threshold=bad_loss_threshold, precision_bits=precision_bits)
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
    from landscape_core.families import group_points

    pts = [_as_array(x, "points") for x in points]  # (m,) of (n, d)
    if not pts:
        return []
    groups = group_points(pts, teacher=V, tol=tol, objectives=objectives, min_eigs=min_eigs)
    out: list[dict[str, Any] | None] = [None] * len(pts)
    for group in groups:
        order = [group.representative] + [m for m in group.members if m != group.representative]
        cert = certify_family(np.stack([pts[m] for m in order]), V, newton_steps=newton_steps,
                              bad_loss_threshold=bad_loss_threshold)
        reason = cert.reason if not cert.certified else ("certified" if cert.spurious else "objective_below_threshold")
        for member in group.members:
            out[member] = {"certified": bool(cert.spurious), "certified_lambda_lo": float(cert.lambda_lo),
                           "certified_radius": float(cert.cover_radius), "certified_reason": reason,
                           "family_size": int(group.multiplicity)}
    return out  # type: ignore[return-value]

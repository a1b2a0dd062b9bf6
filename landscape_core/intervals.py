"""Outward-rounded interval arithmetic: the rigorous arithmetic of the certificates.

Two kinds of enclosures, each containing the exact real value of every quantity computed:

- :class:`Intervals`: arrays of float64 intervals [lo, hi], every operation's result
  widened outward by one ulp (``numpy.nextafter``). An IEEE-754 operation is correctly
  rounded, so its exact result lies within one ulp of the rounded one (Moore, Kearfott &
  Cloud, *Introduction to Interval Analysis*, SIAM 2009, ch. 3; Tucker, *Validated
  Numerics*, Princeton 2011, ch. 2). Needs gradual underflow (:func:`check_gradual_underflow`).
- ``mpmath.iv`` intervals at a chosen precision (:class:`Precision`), read back as float64
  with :func:`lower_end` / :func:`upper_end` (rounded outward).

Upper bounds on sums and norms of float64 arrays (:func:`sum_up`, :func:`frobenius_up`,
:func:`distance_up`) use the a-priori bound of recursive summation (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., SIAM 2002, Lemma 3.1, :func:`gamma_up`).
How the certificates use them: docs/teacher_student.md#certified-minima-the-arithmetic.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from mpmath import iv
from mpmath.libmp import from_float, mpf_gt, mpf_lt, round_ceiling, round_floor, to_float

from landscape_core.errors import OptionError

__all__ = [
    "SMALLEST_SUBNORMAL",
    "UNIT_ROUNDOFF",
    "Intervals",
    "Precision",
    "check_gradual_underflow",
    "clamp",
    "distance_up",
    "exact_interval",
    "frobenius_up",
    "gamma_up",
    "lower_end",
    "round_down",
    "round_up",
    "sum_up",
    "upper_end",
]

UNIT_ROUNDOFF = Fraction(1, 2**53)  # unit roundoff of IEEE double
SMALLEST_SUBNORMAL = 2.0**-1074  # smallest positive subnormal


# ----------------------------------------------------------------------------------
# float64 interval arithmetic with one-ulp outward rounding
# ----------------------------------------------------------------------------------
def round_down(x):
    return np.nextafter(x, -np.inf)


def round_up(x):
    return np.nextafter(x, np.inf)


def check_gradual_underflow() -> None:
    """The one-ulp enclosure needs IEEE gradual underflow (no flush-to-zero / DAZ)."""
    tiny = np.array([2.0**-1022], dtype=np.float64)
    if not (tiny * 0.5)[0] == 2.0**-1023 or not (np.array([SMALLEST_SUBNORMAL]) * 1.0)[0] == SMALLEST_SUBNORMAL:
        raise RuntimeError(
            "float64 subnormals are flushed to zero (FTZ/DAZ); the interval bounds need gradual underflow"
        )


class Intervals:
    """An array of closed intervals [lo, hi] (float64), outward-rounded by one ulp per
    operation. Only what the Hessian needs: +, -, *, / by intervals of one sign, sums."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi=None):
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = self.lo if hi is None else np.asarray(hi, dtype=np.float64)

    @staticmethod
    def _of(x) -> Intervals:
        return x if isinstance(x, Intervals) else Intervals(x)  # a float64 constant is exact

    def __add__(self, other):
        o = Intervals._of(other)
        return Intervals(round_down(self.lo + o.lo), round_up(self.hi + o.hi))

    __radd__ = __add__

    def __sub__(self, other):
        o = Intervals._of(other)
        return Intervals(round_down(self.lo - o.hi), round_up(self.hi - o.lo))

    def __rsub__(self, other):
        return Intervals._of(other) - self

    def __neg__(self):
        return Intervals(-self.hi, -self.lo)

    def __mul__(self, other):
        o = Intervals._of(other)
        p = (self.lo * o.lo, self.lo * o.hi, self.hi * o.lo, self.hi * o.hi)
        lo = np.minimum(np.minimum(p[0], p[1]), np.minimum(p[2], p[3]))
        hi = np.maximum(np.maximum(p[0], p[1]), np.maximum(p[2], p[3]))
        return Intervals(round_down(lo), round_up(hi))

    __rmul__ = __mul__

    def reciprocal(self):
        """1 / x for intervals of one strict sign."""
        if not (np.all(self.lo > 0) or np.all(self.hi < 0)):
            raise ValueError("reciprocal of an interval containing 0")
        return Intervals(round_down(1.0 / self.hi), round_up(1.0 / self.lo))

    def __truediv__(self, other):
        return self * Intervals._of(other).reciprocal()

    def __getitem__(self, index):
        return Intervals(self.lo[index], self.hi[index])

    def reshape(self, *shape):
        return Intervals(self.lo.reshape(*shape), self.hi.reshape(*shape))

    def transpose(self, *axes):
        return Intervals(self.lo.transpose(*axes), self.hi.transpose(*axes))

    def sum(self, axis: int):
        """Sum along ``axis``, one outward-rounded addition at a time."""
        lo = np.moveaxis(self.lo, axis, 0)
        hi = np.moveaxis(self.hi, axis, 0)
        acc_lo, acc_hi = lo[0].copy(), hi[0].copy()
        for j in range(1, lo.shape[0]):
            acc_lo = round_down(acc_lo + lo[j])
            acc_hi = round_up(acc_hi + hi[j])
        return Intervals(acc_lo, acc_hi)


def gamma_up(m: int) -> float:
    """A float64 >= gamma_m = m u / (1 - m u) (Higham 2002, Lemma 3.1)."""
    if m * UNIT_ROUNDOFF >= 1:
        raise OptionError("n", f"problem too large for the a-priori rounding bounds (m = {m})")
    g = m * UNIT_ROUNDOFF / (1 - m * UNIT_ROUNDOFF)
    out = float(g)
    return float(np.nextafter(out, np.inf)) if Fraction(out) < g else out


def sum_up(x: np.ndarray) -> float:
    """An upper bound on the exact sum of the non-negative float64 entries of ``x``.

    numpy's (pairwise) sum is a sequence of at most M - 1 IEEE additions of non-negative
    numbers, each with relative error <= u (additions with a subnormal result are exact),
    so exact <= fl(sum) (1 - u)^-(M - 1) <= fl(sum) (1 + gamma_{M-1})."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return 0.0
    if np.any(x < 0) or not np.all(np.isfinite(x)):
        raise ValueError("sum_up needs finite non-negative entries")
    s = float(np.sum(x))
    return float(round_up(round_up(s * (1.0 + gamma_up(max(x.size - 1, 1))))))


def frobenius_up(x: np.ndarray) -> float:
    """Upper bound on ||x||_F of a float64 array (squares rounded up, summed upward)."""
    sq = round_up(np.square(np.abs(np.asarray(x, dtype=np.float64))))
    return float(round_up(np.sqrt(sum_up(sq))))


def distance_up(A: np.ndarray, B: np.ndarray) -> float:
    """Upper bound on ||A - B||_F for float64 arrays (differences enclosed outward)."""
    D = Intervals(A) - B
    return frobenius_up(np.maximum(np.abs(D.lo), np.abs(D.hi)))


# ----------------------------------------------------------------------------------
# mpmath helpers
# ----------------------------------------------------------------------------------
def lower_end(x) -> float:
    """Largest float64 <= the lower endpoint of an mpmath interval. (Comparisons of
    ``mpmath.iv`` intervals are three-valued; every decision here is taken on these
    outward-rounded endpoints instead, which is conservative.)"""
    return to_float(x._mpi_[0], rnd=round_floor)


def upper_end(x) -> float:
    """Smallest float64 >= the upper endpoint of an mpmath interval."""
    return to_float(x._mpi_[1], rnd=round_ceiling)


def clamp(x, lo: float | None = None, hi: float | None = None):
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


class Precision:
    """``with Precision(bits):`` sets mpmath.iv's working precision, restoring it after."""

    def __init__(self, bits: int):
        self.bits = int(bits)

    def __enter__(self):
        self.saved = iv.prec
        iv.prec = self.bits

    def __exit__(self, *exc):
        iv.prec = self.saved
        return False


def exact_interval(x: float):
    return iv.mpf(float(x))  # exact: a float64 is a 53-bit binary number


# ----------------------------------------------------------------------------------
# Inputs

"""Confidence intervals of the sweep summaries, computed by scipy, in one place.

* :func:`wilson_interval`: a binomial proportion (fraction of runs with some outcome),
  Wilson score interval.
* :func:`clopper_pearson_interval`: the same, exact (Clopper-Pearson) interval.
* :func:`t_interval`: a mean over runs, Student-t interval from the sample std.

Pure functions of plain numbers (scipy only, imported when first called); every interval
is two-sided and returned as ``(lo, hi)`` Python floats, ``(nan, nan)`` where the data
give no interval (no trials, fewer than two values, non-finite inputs).
"""

from __future__ import annotations

import math
import numbers

__all__ = ["clopper_pearson_interval", "t_interval", "wilson_interval"]

_NAN_INTERVAL = (math.nan, math.nan)


def wilson_interval(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Two-sided Wilson score interval of a binomial proportion (Wilson 1927, "Probable
    inference, the law of succession, and statistical inference", JASA 22, 209-212).

    ``successes`` out of ``trials`` (integers, 0 <= successes <= trials) at the two-sided
    ``confidence`` level (e.g. 0.99): the set of proportions ``p`` not rejected by the
    normal-approximation score test,

        center = (p^ + z^2 / 2N) / (1 + z^2 / N),
        half = z sqrt(p^ (1 - p^) / N + z^2 / 4N^2) / (1 + z^2 / N),  z = Phi^-1(1/2 + c/2),

    computed exactly as ``scipy.stats.binomtest(successes, trials).proportion_ci(method=
    "wilson")`` does (no continuity correction; scipy's ``ndtri`` for z and its Newcombe
    (1998) arrangement of the same formula, operation for operation: the limits are
    bitwise scipy's, tested), without ``binomtest``'s p-value, which costs ~5 ms per call
    (a report of 10^4 cells x 5 statuses). lo = 0 when successes == 0 and hi = 1 when
    successes == trials, clipped to [0, 1]. Unlike the Wald interval it is never empty or
    degenerate at 0 or ``trials`` successes.

    Edge cases: ``(nan, nan)`` when ``trials <= 0`` (no runs, no fraction); ``ValueError``
    for ``successes`` outside [0, trials] or a confidence outside [0, 1] and ``TypeError``
    for non-integer counts, as scipy's ``binomtest``.
    """
    if trials <= 0:
        return _NAN_INTERVAL
    for name, value in (("successes", successes), ("trials", trials)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials = {trials}], got {successes}")
    if not 0 <= confidence <= 1:
        raise ValueError(f"confidence must be in [0, 1], got {confidence}")
    from scipy.special import ndtri

    n, p = int(trials), int(successes) / int(trials)
    z = ndtri(0.5 + 0.5 * confidence)
    denominator = 2 * (n + z**2)
    center = (2 * n * p + z**2) / denominator
    delta = z / denominator * math.sqrt(4 * n * p * (1 - p) + z**2)
    lo = 0.0 if successes == 0 else center - delta
    hi = 1.0 if successes == trials else center + delta
    return max(0.0, float(lo)), min(1.0, float(hi))


def clopper_pearson_interval(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Two-sided exact binomial interval (Clopper & Pearson 1934, "The use of confidence
    or fiducial limits illustrated in the case of the binomial", Biometrika 26, 404-413).

    ``successes`` out of ``trials`` (integers, 0 <= successes <= trials) at the two-sided
    ``confidence`` level: lo and hi are the proportions at which the binomial tail
    probabilities P(X >= successes) and P(X <= successes) equal (1 - confidence) / 2, i.e.
    the beta quantiles ``Beta(a; s, N - s + 1)`` and ``Beta(1 - a; s + 1, N - s)``;
    lo = 0 when successes == 0, hi = 1 when successes == trials. Computed by
    ``scipy.stats.binomtest(successes, trials).proportion_ci(method="exact")``, which
    solves the tail equations with ``brentq`` (absolute tolerance 2e-12: the limits agree
    with the beta quantiles to about 1e-12). Conservative: coverage is at least
    ``confidence`` for every true proportion.

    Edge cases: ``(nan, nan)`` when ``trials <= 0``; scipy raises ``ValueError`` for
    ``successes`` outside [0, trials] or a confidence outside [0, 1], ``TypeError`` for
    non-integer counts.
    """
    if trials <= 0:
        return _NAN_INTERVAL
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def t_interval(mean: float, std: float, count: int, confidence: float) -> tuple[float, float]:
    """Two-sided Student-t interval of a mean (Student 1908, "The probable error of a
    mean", Biometrika 6, 1-25).

    ``mean`` and ``std`` (sample standard deviation, ddof = 1) of ``count`` values at the
    two-sided ``confidence`` level:

        mean -/+ t_{count - 1}^-1(1/2 + c/2) * std / sqrt(count),

    computed by ``scipy.stats.t.interval(confidence, count - 1, loc=mean,
    scale=std / sqrt(count))``.

    Edge cases: ``(nan, nan)`` when ``count`` is None, NaN or < 2 (no spread to estimate)
    or when ``mean`` or ``std`` is NaN or infinite; ``(mean, mean)`` when
    ``std / sqrt(count)`` is 0 (all values equal; scipy itself would give NaNs for a zero
    scale); ``(nan, nan)`` for a negative ``std``, which no sample has.
    """
    if count is None or not count >= 2 or not math.isfinite(mean) or not math.isfinite(std):
        return _NAN_INTERVAL
    if std < 0:
        return _NAN_INTERVAL
    scale = std / math.sqrt(count)
    if scale == 0:
        return float(mean), float(mean)
    from scipy.stats import t

    lo, hi = t.interval(confidence, count - 1, loc=mean, scale=scale)
    return float(lo), float(hi)

"""landscape_core.statistics: the scipy intervals give the same numbers as the hand-written
formulas they replace (copied below as references), to 1e-12, edge cases included."""

from __future__ import annotations

import math
import subprocess
import sys
from statistics import NormalDist

import pytest
from scipy.stats import beta, binom

from landscape_core.statistics import clopper_pearson_interval, t_interval, wilson_interval


# ----------------------------------------------------------------------------------
# References: verbatim copies of the hand-written versions
# ----------------------------------------------------------------------------------
def reference_wilson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """ray_jobs/report.py ``wilson_interval`` before the move to scipy."""
    if trials <= 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def reference_clopper_pearson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """landscape_core/teacher_student.py ``_clopper_pearson`` before the move (beta quantiles)."""
    a = (1 - confidence) / 2
    lo = 0.0 if successes == 0 else float(beta.ppf(a, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta.ppf(1 - a, successes + 1, trials - successes))
    return lo, hi


def reference_t_interval(mean: float, std: float, count: int, confidence: float) -> tuple[float, float]:
    """ray_jobs/skip_networks_experiment.py ``t_interval`` before the move."""
    if count is None or not count >= 2 or not math.isfinite(mean) or not math.isfinite(std):
        return math.nan, math.nan
    from scipy.stats import t

    half = t.ppf(0.5 + confidence / 2, count - 1) * std / math.sqrt(count)
    return mean - half, mean + half


def assert_same(got: tuple[float, float], want: tuple[float, float], tol: float = 1e-12) -> None:
    assert isinstance(got, tuple) and len(got) == 2
    assert all(type(x) is float for x in got), got
    for g, w in zip(got, want):
        if math.isnan(w):
            assert math.isnan(g), (got, want)
        else:
            assert g == pytest.approx(w, rel=tol, abs=tol), (got, want)


# ----------------------------------------------------------------------------------
# Binomial intervals
# ----------------------------------------------------------------------------------
TRIALS = (1, 2, 3, 5, 10, 37, 100, 300, 1000)
CONFIDENCES = (0.9, 0.95, 0.99)
BINOMIAL_CASES = sorted(
    {(s, n, c) for n in TRIALS for s in (0, 1, 2, n // 3, n // 2, n - 2, n - 1, n) if 0 <= s <= n for c in CONFIDENCES}
    | {(40, 300, 0.99), (641, 1000, 0.99), (126, 1000, 0.99), (7, 13, 0.8), (3, 4, 0.5), (500, 1000, 0.999)}
)


@pytest.mark.parametrize(("successes", "trials", "confidence"), BINOMIAL_CASES)
def test_wilson_is_bitwise_scipys_binomtest(successes, trials, confidence):
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    assert wilson_interval(successes, trials, confidence) == (max(0.0, float(ci.low)), min(1.0, float(ci.high)))


@pytest.mark.parametrize(
    ("successes", "trials", "confidence"), [(-1, 10, 0.9), (11, 10, 0.9), (3, 10, 1.5), (3, 10, -0.1)]
)
def test_wilson_refuses_counts_or_levels_out_of_range(successes, trials, confidence):
    with pytest.raises(ValueError):
        wilson_interval(successes, trials, confidence)
    with pytest.raises(TypeError):
        wilson_interval(2.5, 10, 0.9)


@pytest.mark.parametrize(("successes", "trials", "confidence"), BINOMIAL_CASES)
def test_wilson_matches_the_hand_written_formula(successes, trials, confidence):
    assert_same(wilson_interval(successes, trials, confidence), reference_wilson(successes, trials, confidence))


@pytest.mark.parametrize(("successes", "trials", "confidence"), BINOMIAL_CASES)
def test_clopper_pearson_matches_the_beta_quantiles(successes, trials, confidence):
    assert_same(
        clopper_pearson_interval(successes, trials, confidence),
        reference_clopper_pearson(successes, trials, confidence),
    )


@pytest.mark.parametrize("interval", [wilson_interval, clopper_pearson_interval])
@pytest.mark.parametrize("trials", [0, -1])
def test_no_trials_gives_nans(interval, trials):
    lo, hi = interval(0, trials, 0.99)
    assert math.isnan(lo) and math.isnan(hi)


@pytest.mark.parametrize("interval", [wilson_interval, clopper_pearson_interval])
def test_limits_are_exactly_zero_and_one_at_the_ends(interval):
    assert interval(0, 10, 0.99)[0] == 0.0
    assert interval(10, 10, 0.99)[1] == 1.0
    assert interval(0, 1, 0.95)[0] == 0.0 and interval(1, 1, 0.95)[1] == 1.0


def test_known_values():
    # the values the existing service and teacher-student tests pin
    assert tuple(round(x, 4) for x in clopper_pearson_interval(40, 300, 0.99)) == (0.0873, 0.1914)
    lo, hi = wilson_interval(641, 1000, 0.99)
    assert (round(lo, 4), round(hi, 4)) == (0.6011, 0.679)
    for successes, want_lo, want_hi in ((0, 0.0, 0.006591), (126, 0.10141, 0.15552), (500, 0.45941, 0.54059)):
        lo, hi = wilson_interval(successes, 1000, 0.99)  # 99% Wilson, z = 2.5758, worked by hand
        assert lo == pytest.approx(want_lo, abs=1e-5) and hi == pytest.approx(want_hi, abs=1e-5)


@pytest.mark.parametrize("interval", [wilson_interval, clopper_pearson_interval])
def test_interval_contains_the_estimate_and_nests(interval):
    for n in TRIALS:
        for s in range(0, n + 1, max(1, n // 10)):
            p = s / n
            narrow = interval(s, n, 0.9)
            wide = interval(s, n, 0.99)
            assert 0.0 <= wide[0] <= narrow[0] <= p <= narrow[1] <= wide[1] <= 1.0, (s, n, narrow, wide)


@pytest.mark.parametrize("interval", [wilson_interval, clopper_pearson_interval])
def test_interval_shrinks_with_trials(interval):
    widths = [interval(3 * m, 10 * m, 0.95) for m in (1, 10, 100, 1000)]
    widths = [hi - lo for lo, hi in widths]
    assert all(a > b for a, b in zip(widths, widths[1:])), widths
    # ~ 1 / sqrt(N): a hundred times the trials, about a tenth of the width
    assert widths[3] / widths[1] == pytest.approx(0.1, rel=0.05)


def _coverage(interval, n: int, p: float, confidence: float) -> float:
    """Exact coverage: the probability, over X ~ Binomial(n, p), that the interval holds p."""
    return sum(
        binom.pmf(k, n, p) for k in range(n + 1) if interval(k, n, confidence)[0] <= p <= interval(k, n, confidence)[1]
    )


@pytest.mark.parametrize("p", [0.05, 0.126, 0.3, 0.5, 0.8])
def test_coverage(p):
    # Clopper-Pearson is conservative: coverage >= confidence for every p;
    # Wilson is close to nominal (it oscillates around it, a little below at worst).
    assert _coverage(clopper_pearson_interval, 60, p, 0.95) >= 0.95
    assert _coverage(wilson_interval, 60, p, 0.95) >= 0.92


def test_clopper_pearson_limits_solve_the_binomial_tail_equations():
    s, n, confidence = 17, 120, 0.95
    lo, hi = clopper_pearson_interval(s, n, confidence)
    alpha = (1 - confidence) / 2
    assert binom.sf(s - 1, n, lo) == pytest.approx(alpha, abs=1e-10)  # P(X >= s | lo)
    assert binom.cdf(s, n, hi) == pytest.approx(alpha, abs=1e-10)  # P(X <= s | hi)


def test_teacher_student_command_line_uses_the_shared_interval():
    import landscape_core.teacher_student.cli as ts  # the command line's module

    assert not hasattr(ts, "beta")
    assert ts.clopper_pearson_interval is clopper_pearson_interval


# ----------------------------------------------------------------------------------
# Student-t interval of a mean
# ----------------------------------------------------------------------------------
T_CASES = [
    (0.1, 0.01, 10, 0.95),
    (0.1, 0.01, 10, 0.99),
    (0.5, 0.2, 2, 0.9),
    (0.5, 0.2, 3, 0.95),
    (-3.25, 1.5, 7, 0.99),
    (1e6, 1e-3, 50, 0.95),
    (0.0, 1.0, 1000, 0.95),
    (42, 3, 5, 0.9),  # ints
    (0.9, 0.05, 2.0, 0.95),  # float count
    (0.7, 0.1, 1_000_000, 0.999),
    # edge cases
    (0.7, 0.0, 10, 0.95),  # no spread: (mean, mean)
    (0.7, 0.0, 2, 0.99),
    (0.7, 0.1, 1, 0.95),  # one value: NaNs
    (0.7, 0.1, 0, 0.95),
    (0.7, 0.1, -3, 0.95),
    (0.7, 0.1, None, 0.95),
    (0.7, 0.1, math.nan, 0.95),
    (math.nan, 0.1, 10, 0.95),
    (0.7, math.nan, 10, 0.95),
    (math.inf, 0.1, 10, 0.95),
    (0.7, math.inf, 10, 0.95),
    (-math.inf, math.nan, 1, 0.95),
    (0.7, 0.1, math.inf, 0.95),  # infinitely many values: (mean, mean)
]


@pytest.mark.parametrize(("mean", "std", "count", "confidence"), T_CASES)
def test_t_interval_matches_the_hand_written_version(mean, std, count, confidence):
    got = t_interval(mean, std, count, confidence)
    want = tuple(float(x) for x in reference_t_interval(mean, std, count, confidence))
    assert_same(got, want)


def test_t_interval_without_spread_is_the_mean_exactly():
    assert t_interval(0.7, 0.0, 10, 0.95) == (0.7, 0.7)


def test_t_interval_of_a_negative_std_is_nan():
    lo, hi = t_interval(0.7, -0.1, 10, 0.95)
    assert math.isnan(lo) and math.isnan(hi)


def test_t_interval_invariants():
    lo90, hi90 = t_interval(2.0, 0.5, 8, 0.9)
    lo99, hi99 = t_interval(2.0, 0.5, 8, 0.99)
    assert lo99 < lo90 < 2.0 < hi90 < hi99
    assert (lo90 + hi90) / 2 == pytest.approx(2.0, abs=1e-15)
    widths = [t_interval(0.0, 1.0, n, 0.95) for n in (2, 5, 30, 1000)]
    widths = [hi - lo for lo, hi in widths]
    assert all(a > b for a, b in zip(widths, widths[1:]))
    # large samples: the normal interval, 2 * 1.96 / sqrt(n)
    assert widths[-1] == pytest.approx(2 * NormalDist().inv_cdf(0.975) / math.sqrt(1000), rel=2e-3)


def test_statistics_module_is_pure():
    """Only scipy/numpy: no torch, Ray, MLflow, Hydra, pyarrow or pandas, even after use."""
    code = (
        "import sys; from landscape_core.statistics import wilson_interval, clopper_pearson_interval, t_interval; "
        "wilson_interval(3, 10, 0.95); clopper_pearson_interval(3, 10, 0.95); t_interval(1.0, 0.5, 5, 0.95); "
        "bad = sorted(m for m in ('torch', 'ray', 'mlflow', 'hydra', 'pyarrow', 'pandas') if m in sys.modules); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

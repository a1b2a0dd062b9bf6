"""Certified spurious minima (protocols.md section 1): the rigorous enclosures contain
independent high-precision values, the closed-form Hessian matches torch.func, the
authors' representatives are certified with lambda_lo just below the float64 eigenvalue,
and saddles, large gradients and the non-smooth global minimum are refused."""

from __future__ import annotations

import math
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch

from landscape_core.certification import (
    REASONS,
    certify_family,
    certify_minimum,
    hessian_enclosure,
    l3_bound,
    lambda_min_lower_bound,
    newton_polish,
    pair_enclosures,
)
from landscape_core.errors import OptionError
from landscape_core.teacher_student import hessian_extreme_eigenvalues, population_hessian, population_loss

MINIMA = (
    Path(__file__).resolve().parents[1] / "sweeps" / "reference" / "safran_shamir_2018_minima.npz"
)  # the authors' data (shipped copy of ../shared/reference)
needs_minima = pytest.mark.skipif(not MINIMA.exists(), reason="reference minima file not available")
F64 = torch.float64


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape) / math.sqrt(shape[-1])


def _float_min_eig(W, V):
    lo, _ = hessian_extreme_eigenvalues(torch.tensor(W)[None], torch.tensor(V)[None])
    return float(lo)


# --------------------------------------------------------------------------- references
def _mp_grad(Wmp, V):
    """dF/dW (the notes' gradient, angles by acos) at the current mpmath precision, for an
    mpmath-valued W (list of rows)."""
    U = Wmp + [[mpmath.mpf(x) for x in row] for row in V.tolist()]
    n = len(Wmp)
    nrm = [mpmath.sqrt(mpmath.fsum(x * x for x in r)) for r in U]
    G = []
    for i in range(n):
        row = [x / 2 for x in U[i]]
        for j in range(len(U)):
            if j == i:
                continue
            c = mpmath.fsum(x * y for x, y in zip(U[i], U[j])) / (nrm[i] * nrm[j])
            t = mpmath.acos(max(min(c, 1), -1))
            s = 1 if j < n else -1
            for col in range(len(row)):
                term = nrm[j] * mpmath.sin(t) * U[i][col] / nrm[i] + (mpmath.pi - t) * U[j][col]
                row[col] += s * term / (2 * mpmath.pi)
        G.append(row)
    return G


def _mp_objective(W, V):
    """F at 60 digits, written independently of the module: angles by acos of the cosine."""
    with mpmath.workdps(60):
        U = [[mpmath.mpf(x) for x in row] for row in np.vstack([W, V]).tolist()]
        n, m = len(W), len(U)
        nrm = [mpmath.sqrt(mpmath.fsum(x * x for x in r)) for r in U]

        def f(a, b):
            if a == b:
                return nrm[a] ** 2 / 2
            c = max(min(mpmath.fsum(x * y for x, y in zip(U[a], U[b])) / (nrm[a] * nrm[b]), 1), -1)
            t = mpmath.acos(c)
            return nrm[a] * nrm[b] * (mpmath.sin(t) + (mpmath.pi - t) * c) / (2 * mpmath.pi)

        sign = lambda a, b: 1 if (a < n) == (b < n) else -1  # noqa: E731
        return mpmath.fsum(sign(a, b) * f(a, b) for a in range(m) for b in range(m)) / 2


@pytest.mark.parametrize("n,k,d", [(3, 3, 3), (4, 2, 5)])
def test_enclosures_contain_high_precision_values(n, k, d):
    """F, grad F (60-digit mpmath, acos-based) and the Hessian (central differences of
    that gradient at 60 digits, error ~1e-40: independent of the closed-form Hessian) lie
    inside the rigorous enclosures."""
    W, V = _random((n, d), 1), _random((k, d), 2)
    pe = pair_enclosures(W, V)
    F = _mp_objective(W, V)
    with mpmath.workdps(60):
        G = _mp_grad([[mpmath.mpf(x) for x in row] for row in W.tolist()], V)
    assert pe.objective[0] <= F <= pe.objective[1]
    assert pe.objective[1] - pe.objective[0] <= 4 * np.spacing(float(abs(F)))  # float64 endpoints, outward
    glo, ghi = pe.gradient
    for i in range(n):
        for c in range(d):
            assert glo[i, c] <= G[i][c] <= ghi[i, c]
    assert float(mpmath.sqrt(mpmath.fsum(x * x for r in G for x in r))) <= pe.grad_norm_hi
    H_lo, H_hi = hessian_enclosure(W, V, pairs=pe)
    with mpmath.workdps(60):
        h = mpmath.mpf("1e-20")
        for col in range(n * d):
            i, c = divmod(col, d)
            Wp = [[mpmath.mpf(x) for x in row] for row in W.tolist()]
            Wm = [row[:] for row in Wp]
            Wp[i][c] += h
            Wm[i][c] -= h
            Gp, Gm = _mp_grad(Wp, V), _mp_grad(Wm, V)
            for row in range(n * d):
                a, b = divmod(row, d)
                ref = (Gp[a][b] - Gm[a][b]) / (2 * h)
                assert H_lo[row, col] - 1e-30 <= ref <= H_hi[row, col] + 1e-30
    assert (H_hi - H_lo).max() < 1e-13


@pytest.mark.parametrize("n,k,d", [(3, 3, 3), (4, 2, 5), (6, 6, 6)])
def test_closed_form_hessian_matches_torch_func(n, k, d):
    W, V = _random((n, d), 3), _random((k, d), 4)
    H_lo, H_hi = hessian_enclosure(W, V)
    mid = 0.5 * (H_lo + H_hi)
    ref = torch.func.hessian(lambda w: population_loss(w.reshape(1, n, d), torch.tensor(V)[None]).sum())(
        torch.tensor(W).reshape(-1)
    ).numpy()
    np.testing.assert_allclose(mid, ref, rtol=0, atol=1e-10)
    analytic = population_hessian(torch.tensor(W)[None], torch.tensor(V)[None])[0].numpy()
    assert np.all(H_lo <= analytic + 1e-13) and np.all(analytic - 1e-13 <= H_hi)


def test_lambda_bound_on_a_known_spectrum():
    """A symmetric matrix with known eigenvalues, as a zero-width interval."""
    rng = np.random.default_rng(5)
    Q = np.linalg.qr(rng.normal(size=(60, 60)))[0]
    lam = np.linspace(-0.3, 2.0, 60)
    H = (Q * lam) @ Q.T
    H = 0.5 * (H + H.T)
    eb = lambda_min_lower_bound(H, H)
    exact = float(np.linalg.eigvalsh(H)[0])
    assert eb.lower <= exact <= eb.upper
    assert exact - eb.lower < 1e-12 and eb.upper - exact < 1e-12
    wide = lambda_min_lower_bound(H - 1e-9, H + 1e-9)  # width costs at most N * 1e-9
    assert exact - 60 * 1e-9 - 1e-12 <= wide.lower <= exact


def test_l3_bound_dominates_hessian_lipschitz_quotients():
    """Sanity check of the notes' L3 (not a proof): ||H(x) - H(y)||_2 / ||x - y|| <= L3
    for pairs in the ball, around a random point and around the k = 6 minimum."""
    points = [_random((6, 6), 6)]
    if MINIMA.exists():
        points.append(np.load(MINIMA)["W_k6_n6"][0])
    rng = np.random.default_rng(6)
    V = np.eye(6)
    for W in points:
        norms = np.linalg.norm(W, axis=1)
        rho = 0.5 * norms.min()
        L3 = l3_bound(n=6, k=6, w_min=norms.min(), w_max=norms.max(), v_max=1.0, rho=rho)
        worst = 0.0
        for _ in range(10):
            x = W + rho * 0.9 * rng.uniform() * _unit(rng, W.shape)
            y = x + 1e-3 * rho * _unit(rng, W.shape)
            Hx, Hy = (population_hessian(torch.tensor(z)[None], torch.tensor(V)[None])[0].numpy() for z in (x, y))
            worst = max(worst, np.linalg.norm(Hx - Hy, 2) / np.linalg.norm(x - y))
        assert worst <= float(L3.b)


def _unit(rng, shape):
    v = rng.normal(size=shape)
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------- certificates
#: (key, family): a handful of the authors' representatives, the largest k included;
#: W_k20_n20[10] needs Newton polishing (lambda = 4.0e-4)
SAMPLE = [("W_k6_n6", 0), ("W_k8_n8", 0), ("W_k10_n11", 0), ("W_k13_n14", 1), ("W_k20_n20", 0), ("W_k20_n20", 10)]


def _certify_representative(W, V):
    cert = certify_minimum(W, V)
    if cert.reason == "discriminant_negative":  # gradient too large for the curvature: polish
        cert = certify_minimum(W, V, newton_steps=3, cover_input=False)
    return cert


def _check_representative(key, W, cert):
    V = np.eye(W.shape[1])
    assert cert.certified and cert.reason == "certified" and cert.spurious, (key, cert.summary())
    lam = _float_min_eig(cert.point, V)
    assert cert.lambda_lo <= lam <= cert.lambda_at_point_hi + 1e-15
    assert lam - cert.lambda_lo < 1e-6, key
    F = float(population_loss(torch.tensor(cert.point)[None], torch.tensor(V)[None]))  # float64: error ~1e-14
    assert cert.objective_lo - 1e-13 <= F <= cert.objective_hi + 1e-13
    assert cert.objective_lo >= 1e-3 and cert.objective_hi - cert.objective_lo < 1e-12
    assert 0 < cert.radius < cert.ball_radius < np.linalg.norm(W, axis=1).min()


@needs_minima
@pytest.mark.parametrize("key,family", SAMPLE)
def test_sample_of_representatives_is_certified(key, family):
    W = np.load(MINIMA)[key][family]
    cert = _certify_representative(W, np.eye(W.shape[1]))  # ~0.2-1 s at k = 20 (timing: docs/teacher_student.md)
    _check_representative(key, W, cert)
    if (key, family) == ("W_k20_n20", 10):
        assert cert.newton_steps == 3 and cert.grad_norm_input > 1e-10 > 1e-13 > cert.grad_norm_hi


@pytest.mark.slow
@needs_minima
def test_every_representative_is_certified_or_proven_saddle():
    """All 182 representatives (about 1.5 min). Two of them, W_k15_n16[6] and
    W_k17_n18[11], have a negative Hessian eigenvalue (proven: Rayleigh upper bound < 0):
    they are not minima."""
    data = np.load(MINIMA)
    saddles = {("W_k15_n16", 6), ("W_k17_n18", 11)}
    for key in (k for k in data.files if k.startswith("W_")):
        for f, W in enumerate(data[key]):
            cert = _certify_representative(W, np.eye(W.shape[1]))
            if (key, f) in saddles:
                assert cert.reason == "hessian_not_positive_definite" and cert.lambda_at_point_hi < 0
            else:
                _check_representative(key, W, cert)


def _symmetric_saddle(k=3):
    """A critical point with a negative eigenvalue and no parallel rows: on the invariant
    family W = a I + b (J - I) (fixed by simultaneous row/column permutations, so its
    critical points are critical points of F), the root near (-0.318, 0.659) at k = 3."""
    from scipy.optimize import root

    from landscape_core.teacher_student import population_gradient

    V = torch.eye(k, dtype=F64)[None]

    def point(x):
        return x[0] * np.eye(k) + x[1] * (np.ones((k, k)) - np.eye(k))

    def grad(x):
        G = population_gradient(torch.tensor(point(x))[None], V)[0].numpy()
        return [G[0, 0], G[0, 1]]

    sol = root(grad, [-0.3, 0.65], tol=1e-13)
    assert np.max(np.abs(grad(sol.x))) < 1e-15
    return point(sol.x)


def test_saddle_is_refused():
    W = _symmetric_saddle()
    V = np.eye(3)
    assert _float_min_eig(W, V) < -0.04
    cert = certify_minimum(W, V)
    assert not cert.certified and cert.reason == "hessian_not_positive_definite"
    assert cert.lambda_at_point_lo <= cert.lambda_at_point_hi < 0  # proven indefinite
    assert cert.grad_norm_hi < 1e-14 and not cert.spurious


def test_global_minimum_is_refused_as_non_differentiable():
    for k in (3, 6):
        I = np.eye(k)
        cert = certify_minimum(I, I)
        assert cert.reason == "non_differentiable" and not cert.certified
        assert cert.objective_lo <= 0.0 <= cert.objective_hi and cert.objective_hi < 1e-25
    W = _random((4, 4), 9)
    W[2] = 0.0  # a zero student row
    assert certify_minimum(W).reason == "non_differentiable"


@needs_minima
def test_perturbed_representative_is_refused_then_polished():
    W = np.load(MINIMA)["W_k10_n10"][0]  # lambda = 0.032
    V = np.eye(10)
    rng = np.random.default_rng(10)
    for size in (1e-3, 1e-5):
        P = W + size * _unit(rng, W.shape)
        assert _float_min_eig(P, V) > 0.02  # still positive curvature: the gradient is what fails
        cert = certify_minimum(P, V)
        assert cert.reason == "discriminant_negative" and not cert.certified
        assert cert.lambda_at_point_lo > 0 and cert.grad_norm_input > 1e-6
    polished = certify_minimum(P, V, newton_steps=3)  # covers the unpolished input too
    assert polished.certified and polished.family_distance >= 0.5e-5
    assert polished.cover_radius >= polished.family_distance


@needs_minima
def test_family_is_covered():
    """The synthetic k = n = 8 family (20 members P (W + 1e-9 noise) Q): the certificate at
    the representative, widened by the family's largest member distance."""
    from landscape_core.families import group_points

    W = np.load(MINIMA)["W_k8_n8"][0]
    rng = np.random.default_rng(8)
    points = [W]
    for _ in range(19):
        noise = rng.normal(size=W.shape)
        points.append((W + 1e-9 * noise / np.linalg.norm(noise))[rng.permutation(8)][:, rng.permutation(8)])
    (fam,) = group_points(points)
    single = certify_minimum(points[fam.representative])
    cert = certify_minimum(points[fam.representative], family_distance=fam.max_member_distance)
    assert cert.certified and cert.spurious
    assert cert.family_distance >= fam.max_member_distance
    assert cert.cover_radius == pytest.approx(cert.radius + cert.family_distance, rel=1e-12)
    assert cert.lambda_lo < single.lambda_lo  # loses L3 * delta
    assert single.lambda_lo - cert.lambda_lo <= cert.l3 * cert.family_distance * (1 + 1e-9)
    far = certify_minimum(points[0], family_distance=1e-3)  # L3 * delta > lambda: not covered
    assert far.reason == "radius_too_large" and far.minimum_certified and not far.certified


def test_inputs_are_not_modified_and_options_checked():
    W = _random((4, 4), 12)
    Wt = torch.tensor(W)
    copy_np, copy_t = W.copy(), Wt.clone()
    certify_minimum(W, newton_steps=2)
    certify_minimum(Wt)
    newton_polish(W, steps=2)
    assert np.array_equal(W, copy_np) and torch.equal(Wt, copy_t)
    for bad in (
        dict(family_distance=-1.0),
        dict(newton_steps=-1),
        dict(precision_bits=20),
        dict(family_distance=float("nan")),
    ):
        with pytest.raises(OptionError):
            certify_minimum(W, **bad)
    with pytest.raises(OptionError):
        certify_minimum(W, np.eye(5))
    assert set(REASONS) >= {
        "certified",
        "non_differentiable",
        "hessian_not_positive_definite",
        "discriminant_negative",
        "radius_too_large",
    }


@needs_minima
def test_certify_family_polishes_and_measures_coverage_from_the_polished_point():
    """W_k20_n20 representatives 10, 12, 14-20 are one minimum (families.NPZ_MERGES),
    lambda = 4.0e-4: the raw points (gradient ~2.5e-10) are refused, the polished one is a
    certified minimum, but the members lie ~6e-7 from it, beyond lambda / L3 ~ 7.5e-7
    minus the rounding: not covered. The single representative 12 alone is covered."""
    data = np.load(MINIMA)["W_k20_n20"]
    members = data[[10, 12, 14, 15, 16, 17, 18, 19, 20]]
    cert = certify_family(members)
    assert cert.newton_steps == 3 and cert.minimum_certified and not cert.certified
    assert cert.reason == "radius_too_large" and 4e-7 < cert.family_distance < 1e-6
    assert cert.grad_norm_input > 1e-10 > 1e-13 > cert.grad_norm_hi
    alone = certify_family(data[[12]])
    assert alone.certified and alone.newton_steps == 3 and alone.spurious
    easy = certify_family(data[[0]])  # certified as it is
    assert easy.certified and easy.newton_steps == 0


@needs_minima
def test_certify_points_gives_each_point_its_familys_certificate():
    """The authors' two k = n = 9 families, three permuted copies of each (1e-9 noise),
    interleaved: one certificate per family, every member carrying it, equal to certifying
    the family directly (batched = plain loop)."""
    from landscape_core.certification import certify_points

    reps = np.load(MINIMA)["W_k9_n9"]  # (2, 9, 9)
    rng = np.random.default_rng(3)
    points, family_of = [], []
    for _ in range(3):
        for family, W in enumerate(reps):
            noise = rng.normal(size=W.shape)
            points.append((W + 1e-9 * noise / np.linalg.norm(noise))[rng.permutation(9)][:, rng.permutation(9)])
            family_of.append(family)
    out = certify_points(points)
    assert len(out) == 6
    for family in (0, 1):
        members = [i for i, f in enumerate(family_of) if f == family]
        got = {(out[i]["certified_lambda_lo"], out[i]["certified_radius"]) for i in members}
        assert len(got) == 1  # one certificate per family
        direct = certify_family(np.stack([points[i] for i in members]))
        for i in members:
            assert out[i]["certified"] and direct.spurious and out[i]["certified_reason"] == "certified"
            assert out[i]["family_size"] == 3
            assert out[i]["certified_lambda_lo"] == pytest.approx(direct.lambda_lo, rel=1e-6)
            assert 0 < out[i]["certified_lambda_lo"] and 0 < out[i]["certified_radius"] < 1e-3
    assert out[0]["certified_lambda_lo"] != out[1]["certified_lambda_lo"]
    assert certify_points([]) == []

"""Families under the full symmetry group (student x coordinate permutations).

Distances against brute force over every permutation pair (n, d <= 6), the proven lower
bound, one family for permuted copies, none for distinct points of equal objective, the
authors' representatives (safran_shamir_2018_minima.npz) and a synthetic k = n = 8 family.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape_core.errors import OptionError
from landscape_core.families import aligned, group_points, group_records, symmetric_distance
from landscape_core.symmetry import student_permutation_distance as permutation_distance  # was teacher_student's
from landscape_core.teacher_student import population_loss

MINIMA = (
    Path(__file__).resolve().parents[1] / "sweeps" / "reference" / "safran_shamir_2018_minima.npz"
)  # the authors' data (shipped copy of ../shared/reference)
needs_minima = pytest.mark.skipif(not MINIMA.exists(), reason="reference minima file not available")

#: representatives of the .npz that are ONE point under coordinate permutations (found by
#: this module, exact: lower bound = distance); the file's families are distinct under
#: student permutations only (min distance > 1.5), see test_npz_representatives
NPZ_MERGES = {
    "W_k17_n18": [(1, 4, 6, 12)],
    "W_k19_n19": [(0, 8, 9, 10, 11, 15, 16, 17, 19, 20, 22, 23, 24, 25, 26, 27)],
    "W_k20_n20": [(10, 12, 14, 15, 16, 17, 18, 19, 20)],
}


def _brute_force(A: np.ndarray, B: np.ndarray) -> float:
    """min over ALL (P, Q) of ||A - P B Q||_F, by enumerating both permutation groups."""
    n, d = A.shape
    row_perms = np.array(list(itertools.permutations(range(n))))  # (n!, n)
    best = math.inf
    for q in itertools.permutations(range(d)):
        Bq = B[:, list(q)]
        D = ((A[:, None, :] - Bq[None, :, :]) ** 2).sum(-1)  # (n, n): row i of A vs row j of B Q
        best = min(best, float(D[np.arange(n), row_perms].sum(1).min()))
    return math.sqrt(best)


def _copy(W: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return W[rng.permutation(W.shape[0])][:, rng.permutation(W.shape[1])]


@pytest.mark.parametrize("n,d", [(2, 2), (3, 3), (4, 3), (4, 4), (5, 5), (6, 6), (5, 6)])
def test_distance_matches_brute_force(n, d):
    rng = np.random.default_rng(100 * n + d)
    for _ in range(3):
        A = rng.normal(size=(n, d))
        related = _copy(A, rng) + 1e-3 * rng.normal(size=(n, d))
        for B in (rng.normal(size=(n, d)), related):
            exact = _brute_force(A, B)
            al = symmetric_distance(A, B)  # d <= 6: enumeration
            assert al.method == "enumeration" and al.exact
            assert al.distance == pytest.approx(exact, rel=1e-12, abs=1e-14)
            assert al.lower_bound <= exact * (1 + 1e-12)
            # the achieved alignment is what it claims
            assert np.linalg.norm(A - aligned(B, al)) == pytest.approx(al.distance, rel=1e-12, abs=1e-14)
            heur = symmetric_distance(A, B, enumerate_max=0)  # alternating assignments
            assert heur.lower_bound <= exact * (1 + 1e-12) + 1e-15
            assert heur.distance >= exact * (1 - 1e-12)
            if B is related:
                assert heur.distance == pytest.approx(exact, rel=1e-9)


def test_alternating_is_tight_for_permuted_copies_at_k_12():
    rng = np.random.default_rng(7)
    A = rng.normal(size=(12, 12)) / math.sqrt(12)
    for noise in (0.0, 1e-9, 1e-6):
        B = _copy(A + noise * rng.normal(size=A.shape), rng)
        al = symmetric_distance(A, B)
        assert al.method == "alternating" and al.exact  # meets the proven lower bound
        assert al.distance <= 2 * noise * math.sqrt(A.size) + 1e-14


def test_permuted_copies_form_one_family():
    rng = np.random.default_rng(1)
    for n, d in ((5, 5), (9, 8)):  # enumeration and alternating
        W = rng.normal(size=(n, d)) / math.sqrt(d)
        points = [W] + [_copy(W, rng) for _ in range(10)]
        fams = group_points(points, confirm_spectrum=True)
        assert len(fams) == 1
        assert fams[0].multiplicity == 11 and fams[0].members == tuple(range(11))
        assert fams[0].max_member_distance <= 1e-12 and fams[0].undecided == 0


def test_orthonormal_teacher_coordinate_permutations():
    """Q = V^T Pi V + (I - V^T V): a coordinate permutation in the teacher's basis (d > k)."""
    rng = np.random.default_rng(2)
    k, d, n = 4, 6, 5
    V = np.linalg.qr(rng.normal(size=(d, k)))[0].T  # (k, d) orthonormal rows
    W = rng.normal(size=(n, d)) / math.sqrt(d)
    Pi = np.eye(k)[rng.permutation(k)]
    Q = V.T @ Pi @ V + (np.eye(d) - V.T @ V)
    copy = W[rng.permutation(n)] @ Q
    F = lambda X: float(population_loss(torch.tensor(X)[None], torch.tensor(V)[None]))  # noqa: E731
    assert F(copy) == pytest.approx(F(W), abs=1e-13)  # a symmetry of F
    al = symmetric_distance(W, copy, teacher=V)
    assert al.distance < 1e-12
    assert np.linalg.norm(W - aligned(copy, al, teacher=V)) < 1e-12
    assert symmetric_distance(W, copy).distance > 1e-3  # not a plain coordinate permutation
    with pytest.raises(OptionError):
        symmetric_distance(W, copy, teacher=2 * V)


@needs_minima
def test_distinct_points_of_equal_objective_do_not_merge():
    """B on the segment from the k = n = 8 minimum A to the global minimum, where F has
    climbed back to F(A): same objective, not equivalent."""
    from scipy.optimize import brentq

    A = np.load(MINIMA)["W_k8_n8"][0]
    I = np.eye(8)
    F = lambda X: float(population_loss(torch.tensor(X)[None], torch.tensor(I)[None]))  # noqa: E731
    FA = F(A)
    s = brentq(lambda s: F(A + s * (I - A)) - FA, 0.05, 1.0, xtol=1e-15)
    B = A + s * (I - A)
    assert abs(F(B) - FA) < 1e-12
    fams = group_points([A, B], objectives=[FA, F(B)], min_eigs=[0.0, 0.0])
    assert len(fams) == 2
    al = symmetric_distance(A, B)
    assert al.lower_bound > 1e-2  # proven apart


@needs_minima
def test_npz_representatives():
    """Every representative of the authors' file is its own family under student
    permutations; under the full group (with coordinate permutations) too, except three
    groups of the file that are one point (distances 2e-10 .. 6e-6, proven: lower bound
    = distance), listed in NPZ_MERGES."""
    data = np.load(MINIMA)
    tol = 1e-4
    for key in (k for k in data.files if k.startswith("W_")):
        Ws = data[key]
        d = Ws.shape[-1]
        student_only = [
            permutation_distance(torch.tensor(Ws[a]), torch.tensor(Ws[b]))
            for a in range(len(Ws))
            for b in range(a + 1, len(Ws))
        ]
        assert min(student_only, default=math.inf) > 1.0, key
        loss = population_loss(torch.tensor(Ws), torch.eye(d, dtype=torch.float64)[None].expand(len(Ws), d, d))
        fams = group_points(list(Ws), tol=tol, objectives=loss.tolist(), min_eigs=[0.0] * len(Ws))
        merged = sorted(f.members for f in fams if f.multiplicity > 1)
        assert merged == NPZ_MERGES.get(key, []), key
        for fam in fams:
            assert fam.undecided == 0
            if fam.multiplicity > 1:
                assert fam.max_member_distance < 1e-5 and fam.objective_spread < 1e-12


@needs_minima
def test_synthetic_k8_family_collapses_to_one():
    """20 members P (W + 1e-9 noise) Q of the k = n = 8 representative: one family of 20
    whose largest member distance is the noise level."""
    W = np.load(MINIMA)["W_k8_n8"][0]
    rng = np.random.default_rng(8)
    points = []
    for _ in range(20):
        noise = rng.normal(size=W.shape)
        points.append(_copy(W + 1e-9 * noise / np.linalg.norm(noise), rng))
    fams = group_points(points, confirm_spectrum=True)
    assert len(fams) == 1
    fam = fams[0]
    assert fam.multiplicity == 20 and fam.undecided == 0
    assert 1e-10 < fam.max_member_distance <= 2e-9 + 1e-15


def test_group_records_identity_and_orthonormal_teachers():
    from landscape_core.teacher_student import TeacherStudentProtocol, initial_points

    rng = np.random.default_rng(3)
    k = n = d = 5
    W = rng.normal(size=(n, d)) / math.sqrt(d)
    base = dict(k=k, n=n, d=d, status="spurious", min_eig=0.01)
    records = []
    for seed in range(4):
        X = W if seed == 0 else _copy(W, rng)
        F = float(population_loss(torch.tensor(X)[None], torch.eye(d, dtype=torch.float64)[None]))
        records.append(
            {**base, "seed": seed, "teacher": "identity", "final_weights": X.ravel().tolist(), "final_loss": F}
        )
    records.append(
        {
            **base,
            "seed": 9,
            "teacher": "identity",
            "status": "global",
            "final_weights": np.eye(d).ravel().tolist(),
            "final_loss": 0.0,
        }
    )
    fams = group_records(records)
    assert len(fams) == 1 and fams[0]["multiplicity"] == 4 and fams[0]["seeds"] == [0, 1, 2, 3]
    assert fams[0]["max_member_distance"] < 1e-12 and fams[0]["family"] == 0
    assert len(group_records(records, statuses=("spurious", "global"))) == 2

    # orthonormal teacher, d = k: each run's own V maps it to teacher coordinates
    protocol = TeacherStudentProtocol(teacher="orthonormal")
    orth = []
    for seed in (11, 12, 13):
        _, V = initial_points(k, n, [seed], protocol)
        X = _copy(W, rng) @ V[0].numpy()  # the same point in each run's teacher basis
        orth.append(
            {**base, "seed": seed, "teacher": "orthonormal", "final_weights": X.ravel().tolist(), "final_loss": 0.02}
        )
    fams = group_records(orth)
    assert len(fams) == 1 and fams[0]["multiplicity"] == 3
    with pytest.raises(OptionError):
        group_records([{**r, "d": 6, "final_weights": [0.0] * 30} for r in orth])
    with pytest.raises(OptionError):
        group_records(records + [{**records[0], "k": 6}])

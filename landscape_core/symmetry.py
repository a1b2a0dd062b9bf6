"""Alignment and distances of teacher-student points under the objective's symmetry group.

F(W) (protocols.md section 1) is unchanged by permuting the student neurons (W -> P W) and,
for the identity teacher, by permuting the input coordinates (W -> W Q): Q permutes the
teacher's rows, which leaves the teacher function unchanged. For an orthonormal teacher V
(k x d) the coordinate permutations act in the teacher's basis: Q = V^T Pi V + (I - V^T V)
for a k x k permutation Pi. Writing W = C V + R with C = W V^T (n x k, teacher coordinates)
and R = W (I - V^T V), W Q = (C Pi) V + R, and because V has orthonormal rows,

    ||A - P B Q||_F^2 = ||C_A - P C_B Pi||_F^2 + ||R_A - P R_B||_F^2.           (*)

Distance (:func:`symmetric_distance`): min over P, Pi of (*)^(1/2). For a fixed Pi the
minimum over P is a linear assignment on the row distances, solved exactly by the
Hungarian method (``scipy.optimize.linear_sum_assignment``); likewise for P fixed and Pi.
- Exact for k <= ``enumerate_max`` (default 6, k! <= 720): every Pi, the optimal P for each.
- Otherwise: alternating assignments (each step exact for one factor, so (*) never
  increases) from several starts: Pi from sorted-column signatures, P from sorted-row
  signatures, the identity, and ``random_starts`` seeded random Pi. The best value found
  is an achieved distance (an upper bound on the minimum). It is paired with a proven
  lower bound: sorting is a contraction (||sort x - sort y|| <= ||x - y||, rearrangement
  inequality) and is invariant under the permutations that act on each row (Pi) or
  column (P), so
      min (*) >= min_sigma sum_i ||(sort c_A,i, r_A,i) - (sort c_B,sigma(i), r_B,sigma(i))||^2
      min (*) >= min_tau   sum_a ||sort C_A[:, a] - sort C_B[:, tau(a)]||^2,
  both linear assignments. A grouping decision is thereby proven when the achieved
  distance is <= tol (merge) or the lower bound is > tol (apart); the rare remaining
  cases are counted as ``undecided`` (decided by the achieved distance, after extra starts).


The student-permutation distance alone (:func:`student_permutation_distance`, no coordinate
permutations) is kept for the report's ``n_families_student_perm`` count.

Public entry points: :func:`symmetric_distance`, :func:`aligned`, :class:`Alignment`,
:func:`student_permutation_distance`, :func:`as_matrix`, :func:`teacher_basis`,
:func:`teacher_coordinates`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from landscape_core.errors import OptionError

__all__ = [
    "ENUMERATE_MAX",
    "Alignment",
    "aligned",
    "as_matrix",
    "student_permutation_distance",
    "symmetric_distance",
    "teacher_basis",
    "teacher_coordinates",
]

#: above this k, coordinate permutations are searched (alternating assignments), not enumerated
ENUMERATE_MAX = 6


# ----------------------------------------------------------------------------------
# Teacher coordinates
# ----------------------------------------------------------------------------------
def as_matrix(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    a = np.array(x, dtype=np.float64, copy=True)
    if a.ndim != 2 or not np.all(np.isfinite(a)):
        raise OptionError(name, f"must be a finite matrix (rows = neurons), got shape {a.shape}")
    return a


def teacher_basis(teacher: Any | None, d: int) -> np.ndarray | None:
    """None for the identity teacher (k = d, coordinates are W itself), else V (k, d) with
    orthonormal rows (checked to 1e-10)."""
    if teacher is None:
        return None
    V = as_matrix(teacher, "teacher")
    if V.shape[1] != d:
        raise OptionError("teacher", f"has {V.shape[1]} columns, the points have {d}")
    if V.shape[0] == d and np.array_equal(V, np.eye(d)):
        return None
    if np.abs(V @ V.T - np.eye(V.shape[0])).max() > 1e-10:
        raise OptionError("teacher", "must have orthonormal rows (coordinate permutations act in its basis)")
    return V


def teacher_coordinates(W: np.ndarray, V: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Teacher coordinates C = W V^T (n, k) and the rest R = W - C V (n, d), or (n, 0) when
    the teacher spans every coordinate."""
    if V is None:
        return W, np.zeros((W.shape[0], 0))
    C = W @ V.T  # (n, k)
    if V.shape[0] == V.shape[1]:
        return C, np.zeros((W.shape[0], 0))
    return C, W - C @ V


# ----------------------------------------------------------------------------------
# Distance
# ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Alignment:
    """Result of :func:`symmetric_distance` for points A, B.

    distance: ||A - P B Q||_F at the best (P, Q) found (an achieved value: an upper bound
      on the minimum, equal to it when ``exact``);
    lower_bound: a proven lower bound on min_{P, Q} ||A - P B Q||_F (sorted signatures);
    row_perm (n,): row i of the aligned B is row row_perm[i] of B;
    col_perm (k,): teacher coordinate a of the aligned B is coordinate col_perm[a] of B;
    exact: the distance is the minimum (enumeration, or it meets the lower bound);
    method: "enumeration" or "alternating".
    """

    distance: float
    lower_bound: float
    row_perm: np.ndarray
    col_perm: np.ndarray
    exact: bool
    method: str


def _sq_rows(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Squared distances between rows, by differences (accurate for near-equal rows). (n, m)"""
    if X.shape[1] == 0:
        return np.zeros((X.shape[0], Y.shape[0]))
    diff = X[:, None, :] - Y[None, :, :]  # (n, m, c)
    return np.einsum("ijc,ijc->ij", diff, diff)


def _assign(cost: np.ndarray) -> tuple[np.ndarray, float]:
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(cost.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm, float(cost[rows, cols].sum())


class _Problem:
    """min over P, Pi of (*) for one pair, in teacher coordinates."""

    def __init__(self, CA, RA, CB, RB):
        self.CA, self.RA, self.CB, self.RB = CA, RA, CB, RB
        self.rest = _sq_rows(RA, RB)  # (n, n), independent of Pi

    def value(self, p: np.ndarray, q: np.ndarray) -> float:
        """(*) at (p, q), from the differences (no cancellation)."""
        dc = self.CA - self.CB[p][:, q]
        dr = self.RA - self.RB[p]
        return float(np.sum(dc * dc) + np.sum(dr * dr))

    def best_rows(self, q: np.ndarray) -> np.ndarray:
        return _assign(_sq_rows(self.CA, self.CB[:, q]) + self.rest)[0]

    def best_cols(self, p: np.ndarray) -> np.ndarray:
        return _assign(_sq_rows(self.CA.T, self.CB[p].T))[0]

    def alternate(self, q: np.ndarray, *, max_rounds: int) -> tuple[np.ndarray, np.ndarray, float]:
        best: tuple[Any, Any, float] = (None, None, math.inf)
        for _ in range(max_rounds):
            p = self.best_rows(q)
            q = self.best_cols(p)
            v = self.value(p, q)
            if v >= best[2]:
                break
            best = (p, q, v)
        return best

    def lower_bound_sq(self) -> tuple[float, np.ndarray, np.ndarray]:
        """max of the row- and column-signature assignment values (module docstring), with
        the two assignments (used as starts)."""
        sA, sB = np.sort(self.CA, axis=1), np.sort(self.CB, axis=1)
        p_sig, rows = _assign(_sq_rows(sA, sB) + self.rest)
        tA, tB = np.sort(self.CA, axis=0), np.sort(self.CB, axis=0)
        q_sig, cols = _assign(_sq_rows(tA.T, tB.T))
        return max(rows, cols), p_sig, q_sig


def symmetric_distance(
    A: Any,
    B: Any,
    *,
    teacher: Any | None = None,
    enumerate_max: int = ENUMERATE_MAX,
    random_starts: int = 4,
    seed: int = 0,
    max_rounds: int = 100,
) -> Alignment:
    """min over student permutations P and coordinate permutations Q of ||A - P B Q||_F.

    A, B: (n, d) points (numpy or torch; not modified). ``teacher``: None for the identity
    teacher (k = d), or V (k, d) with orthonormal rows (Q acts in its basis, module
    docstring). Exact (every coordinate permutation, optimal student permutation for each)
    when k <= ``enumerate_max``; otherwise alternating linear assignments from the
    signature starts, the identity and ``random_starts`` random starts (``seed``), each for
    at most ``max_rounds`` rounds, with a proven lower bound. Cost at k = n = 20: a few ms.
    """
    A = as_matrix(A, "A")
    B = as_matrix(B, "B")
    if A.shape != B.shape:
        raise OptionError("B", f"has shape {B.shape}, A has {A.shape}")
    for name, value, minimum in (
        ("enumerate_max", enumerate_max, 0),
        ("random_starts", random_starts, 0),
        ("max_rounds", max_rounds, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise OptionError(name, f"must be an integer >= {minimum}, got {value!r}")
    V = teacher_basis(teacher, A.shape[1])
    prob = _Problem(*teacher_coordinates(A, V), *teacher_coordinates(B, V))
    k = prob.CA.shape[1]
    lb_sq, p_sig, q_sig = prob.lower_bound_sq()
    lower = math.sqrt(max(lb_sq, 0.0))
    if k <= enumerate_max:
        best: tuple[Any, Any, float] = (None, None, math.inf)
        for perm in itertools.permutations(range(k)):
            q = np.array(perm, dtype=np.int64)
            p = prob.best_rows(q)
            v = prob.value(p, q)
            if v < best[2]:
                best = (p, q, v)
        p, q, v = best
        return Alignment(math.sqrt(v), min(lower, math.sqrt(v)), p, q, True, "enumeration")
    return _alternating(prob, p_sig, q_sig, lower, random_starts=random_starts, seed=seed, max_rounds=max_rounds)


def _alternating(
    prob: _Problem, p_sig, q_sig, lower: float, *, random_starts: int, seed: int, max_rounds: int
) -> Alignment:
    k = prob.CA.shape[1]
    starts = [q_sig, prob.best_cols(p_sig), np.arange(k)]
    rng = np.random.default_rng(seed)
    starts += [rng.permutation(k) for _ in range(random_starts)]
    best: tuple[Any, Any, float] = (None, None, math.inf)
    for q0 in starts:
        p, q, v = prob.alternate(q0, max_rounds=max_rounds)
        if v < best[2]:
            best = (p, q, v)
        if math.sqrt(best[2]) <= lower * (1 + 1e-9) + 1e-15:
            break  # meets the lower bound: optimal
    p, q, v = best
    dist = math.sqrt(v)
    return Alignment(dist, min(lower, dist), p, q, dist <= lower * (1 + 1e-9) + 1e-15, "alternating")


def aligned(B: Any, alignment: Alignment, *, teacher: Any | None = None) -> np.ndarray:
    """P B Q for the permutations of ``alignment`` (a new array, (n, d)): the copy of B
    that is ``alignment.distance`` from A."""
    B = as_matrix(B, "B")
    V = teacher_basis(teacher, B.shape[1])
    C, R = teacher_coordinates(B, V)
    C = C[alignment.row_perm][:, alignment.col_perm]
    if V is None:
        return C
    return C @ V + (R[alignment.row_perm] if R.shape[1] else 0.0)


def student_permutation_distance(A: torch.Tensor, B: torch.Tensor) -> float:
    """min over permutations P of the rows of B of ||A - P B||_F (student neurons only, no
    coordinate permutations). A, B: (n, d).

    Exact: the optimal row matching is a linear assignment on the squared row distances,
    solved by the Hungarian method (``scipy.optimize.linear_sum_assignment``). (The distance
    of the superseded ``teacher_student.permutation_distance``, the same operations.)
    """
    cost = torch.cdist(A.unsqueeze(0), B.unsqueeze(0)).squeeze(0).pow(2)  # (n, n)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return float(cost[rows, cols].sum().clamp_min(0).sqrt())

"""Families of critical points of the teacher-student objective under its full symmetry group.

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

Families (:func:`group_points`, :func:`group_records`): leader clustering in input order
(as ``teacher_student.group_families``, which uses student permutations only): a point
joins the first family whose representative has the same objective (within
``objective_tol``), the same Hessian spectrum if asked (``confirm_spectrum``, within
``spectrum_tol``; spectra are invariant under the symmetries) and symmetric distance
<= ``tol``; otherwise it founds a family. Each family reports objective and smallest
Hessian eigenvalue (means over members, as the authors report them), multiplicity and the
largest member distance to the representative (an achieved, i.e. upper, bound: the
widening that ``certification.certify_minimum(family_distance=...)`` needs).

Public entry points: :func:`symmetric_distance`, :func:`aligned`, :func:`group_points`,
:func:`group_records`, :class:`Alignment`, :class:`Family`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from landscape_core.errors import OptionError

__all__ = ["Alignment", "Family", "aligned", "group_points", "group_records", "symmetric_distance"]

#: above this k, coordinate permutations are searched (alternating assignments), not enumerated
ENUMERATE_MAX = 6


# ----------------------------------------------------------------------------------
# Teacher coordinates
# ----------------------------------------------------------------------------------
def _as_matrix(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    a = np.array(x, dtype=np.float64, copy=True)
    if a.ndim != 2 or not np.all(np.isfinite(a)):
        raise OptionError(name, f"must be a finite matrix (rows = neurons), got shape {a.shape}")
    return a


def _teacher_basis(teacher: Any | None, d: int) -> np.ndarray | None:
    """None for the identity teacher (k = d, coordinates are W itself), else V (k, d) with
    orthonormal rows (checked to 1e-10)."""
    if teacher is None:
        return None
    V = _as_matrix(teacher, "teacher")
    if V.shape[1] != d:
        raise OptionError("teacher", f"has {V.shape[1]} columns, the points have {d}")
    if V.shape[0] == d and np.array_equal(V, np.eye(d)):
        return None
    if np.abs(V @ V.T - np.eye(V.shape[0])).max() > 1e-10:
        raise OptionError("teacher", "must have orthonormal rows (coordinate permutations act in its basis)")
    return V


def _split(W: np.ndarray, V: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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
        best = (None, None, math.inf)
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
    A = _as_matrix(A, "A")
    B = _as_matrix(B, "B")
    if A.shape != B.shape:
        raise OptionError("B", f"has shape {B.shape}, A has {A.shape}")
    for name, value, minimum in (("enumerate_max", enumerate_max, 0), ("random_starts", random_starts, 0),
                                 ("max_rounds", max_rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise OptionError(name, f"must be an integer >= {minimum}, got {value!r}")
    V = _teacher_basis(teacher, A.shape[1])
    prob = _Problem(*_split(A, V), *_split(B, V))
    k = prob.CA.shape[1]
    lb_sq, p_sig, q_sig = prob.lower_bound_sq()
    lower = math.sqrt(max(lb_sq, 0.0))
    if k <= enumerate_max:
        best = (None, None, math.inf)
        for perm in itertools.permutations(range(k)):
            q = np.array(perm, dtype=np.int64)
            p = prob.best_rows(q)
            v = prob.value(p, q)
            if v < best[2]:
                best = (p, q, v)
        p, q, v = best
        return Alignment(math.sqrt(v), min(lower, math.sqrt(v)), p, q, True, "enumeration")
    return _alternating(prob, p_sig, q_sig, lower, random_starts=random_starts, seed=seed, max_rounds=max_rounds)


def _alternating(prob: _Problem, p_sig, q_sig, lower: float, *, random_starts: int, seed: int,
                 max_rounds: int) -> Alignment:
    k = prob.CA.shape[1]
    starts = [q_sig, prob.best_cols(p_sig), np.arange(k)]
    rng = np.random.default_rng(seed)
    starts += [rng.permutation(k) for _ in range(random_starts)]
    best = (None, None, math.inf)
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
    B = _as_matrix(B, "B")
    V = _teacher_basis(teacher, B.shape[1])
    C, R = _split(B, V)
    C = C[alignment.row_perm][:, alignment.col_perm]
    if V is None:
        return C
    return C @ V + (R[alignment.row_perm] if R.shape[1] else 0.0)


# ----------------------------------------------------------------------------------
# Families
# ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Family:
    """One family of :func:`group_points`.

    index: position in the returned list (sorted by multiplicity, then objective);
    representative: index of the founding point in the input; members: input indices
    (representative first); multiplicity: len(members); objective, min_eig: means over
    members; objective_spread: max - min objective; max_member_distance: the largest
    achieved symmetric distance of a member to the representative (0 for a singleton);
    undecided: comparisons of a point with this representative that neither the achieved
    distance (<= tol: merge) nor the lower bound (> tol: apart) settled; they are decided
    by the achieved distance after extra starts.
    """

    index: int
    representative: int
    members: tuple[int, ...]
    multiplicity: int
    objective: float
    objective_spread: float
    min_eig: float
    max_member_distance: float
    undecided: int


def _invariants(points: list[np.ndarray], V: np.ndarray | None, *, spectra: bool):
    """Objective, smallest Hessian eigenvalue (and full spectra) of each point, float64."""
    import torch

    from landscape_core.teacher_student import population_hessian, population_loss

    W = torch.from_numpy(np.stack(points))  # (R, n, d)
    d = W.shape[-1]
    Vt = torch.from_numpy(np.eye(d) if V is None else V)[None].expand(W.shape[0], -1, -1)
    loss = population_loss(W, Vt).numpy()
    eigs = []
    for s in range(0, W.shape[0], 32):
        H = population_hessian(W[s:s + 32], Vt[s:s + 32])
        eigs.append(torch.linalg.eigvalsh(0.5 * (H + H.transpose(-1, -2))).numpy())
    ev = np.concatenate(eigs)  # (R, n d) ascending
    return loss, ev[:, 0], (ev if spectra else None)


def group_points(
    points: Sequence[Any],
    *,
    teacher: Any | None = None,
    tol: float = 1e-4,
    objectives: Sequence[float] | None = None,
    min_eigs: Sequence[float] | None = None,
    objective_tol: float = 1e-6,
    confirm_spectrum: bool = False,
    spectrum_tol: float = 1e-6,
    enumerate_max: int = ENUMERATE_MAX,
    random_starts: int = 4,
    seed: int = 0,
) -> list[Family]:
    """Group points (each (n, d), one (k, n, d) cell) into families under the full
    symmetry group (module docstring).

    ``tol``: Frobenius distance within which two points are one family (absolute;
    converged points sit within ~grad_tol / lambda of their critical point, distinct
    critical points are O(0.1) apart). ``objective_tol``: points of one family differ in F
    by at most g tol + lambda_max tol^2 / 2 (g the gradient norm), far below the default
    1e-6 for tol = 1e-4; a larger difference keeps two points apart without computing a
    distance. ``objectives`` / ``min_eigs``: per-point F and smallest Hessian eigenvalue
    (computed from ``teacher_student`` when None). ``confirm_spectrum``: also require equal
    Hessian spectra (max difference <= ``spectrum_tol``; one eigvalsh per point).
    ``teacher``: None (identity) or V (k, d) with orthonormal rows, shared by all points.
    Returns families sorted by multiplicity (descending), then objective.
    """
    pts = [_as_matrix(p, "points") for p in points]
    if not pts:
        return []
    if any(p.shape != pts[0].shape for p in pts):
        raise OptionError("points", "must all have the same shape (one (k, n, d) cell)")
    for name, value in (("tol", tol), ("objective_tol", objective_tol), ("spectrum_tol", spectrum_tol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise OptionError(name, f"must be a number >= 0, got {value!r}")
    V = _teacher_basis(teacher, pts[0].shape[1])
    need = objectives is None or min_eigs is None or confirm_spectrum
    loss, lmin, spectra = _invariants(pts, V, spectra=confirm_spectrum) if need else (None, None, None)
    obj = np.asarray(loss if objectives is None else objectives, dtype=np.float64)
    eig = np.asarray(lmin if min_eigs is None else min_eigs, dtype=np.float64)
    if obj.shape != (len(pts),) or eig.shape != (len(pts),):
        raise OptionError("objectives", f"objectives and min_eigs need one value per point ({len(pts)})")

    reps: list[int] = []
    members: list[list[int]] = []
    dists: list[list[float]] = []
    undecided: list[int] = []
    for i, W in enumerate(pts):
        for f, r in enumerate(reps):
            if abs(obj[i] - obj[r]) > objective_tol:
                continue
            if spectra is not None and np.abs(spectra[i] - spectra[r]).max() > spectrum_tol:
                continue
            al = symmetric_distance(pts[r], W, teacher=V, enumerate_max=enumerate_max,
                                    random_starts=random_starts, seed=seed)
            unproven = al.lower_bound <= tol < al.distance
            if unproven:  # more starts before deciding by the achieved distance
                al = symmetric_distance(pts[r], W, teacher=V, enumerate_max=enumerate_max,
                                        random_starts=8 * random_starts + 16, seed=seed + 1)
                unproven = al.lower_bound <= tol < al.distance
            if al.distance <= tol:
                members[f].append(i)
                dists[f].append(al.distance)
                break
            undecided[f] += int(unproven)
        else:
            reps.append(i)
            members.append([i])
            dists.append([0.0])
            undecided.append(0)
    fams = []
    for r, mem, ds, und in zip(reps, members, dists, undecided):
        o = obj[mem]
        fams.append(dict(representative=r, members=tuple(mem), multiplicity=len(mem), objective=float(o.mean()),
                         objective_spread=float(o.max() - o.min()), min_eig=float(eig[mem].mean()),
                         max_member_distance=float(max(ds)), undecided=und))
    fams.sort(key=lambda f: (-f["multiplicity"], f["objective"]))
    return [Family(index=i, **f) for i, f in enumerate(fams)]


def group_records(
    records: Sequence[dict],
    *,
    tol: float = 1e-4,
    statuses: Sequence[str] = ("spurious",),
    **options,
) -> list[dict]:
    """:func:`group_points` over the records of one (k, n, d) cell of
    ``teacher_student.run_teacher_student`` (those with a status in ``statuses``; their
    ``final_weights``, ``final_loss`` and ``min_eig`` are used).

    Output: the dicts of ``teacher_student.group_families`` (family, status, multiplicity,
    objective, objective_spread, min_eig, seeds, representative = flat weights of the
    founding member) plus ``max_member_distance`` and ``undecided``. Families never mix
    statuses. Teachers: "identity"; "orthonormal" with d = k, where each run's own teacher
    (rebuilt from its seed) maps it to teacher coordinates W V^T, an equivalent problem
    with the identity teacher. An orthonormal teacher with d > k has a larger symmetry
    group (rotations of the complement), not handled: OptionError. ``options`` go to
    :func:`group_points`.
    """
    chosen = [r for r in records if r["status"] in statuses]
    cells = {(r["k"], r["n"], r.get("d", r["k"])) for r in chosen}
    if len(cells) > 1:
        raise OptionError("records", f"group_records takes records of one (k, n, d) cell, got {sorted(cells)}")
    if not chosen:
        return []
    teachers = {r.get("teacher", "identity") for r in chosen}
    if len(teachers) > 1:
        raise OptionError("records", f"records mix teachers {sorted(teachers)}")
    teacher = teachers.pop()
    k, n, d = cells.pop()
    if teacher != "identity" and d != k:
        raise OptionError("teacher", f"orthonormal teachers with d = {d} > k = {k} have rotations of the "
                                     "complement as symmetries; families are implemented for d = k")
    out = []
    for status in dict.fromkeys(r["status"] for r in chosen):
        group = [r for r in chosen if r["status"] == status]
        points = []
        for r in group:
            if r.get("final_weights") is None:
                raise OptionError("records", "final_weights is missing (run with keep_weights=True)")
            W = np.asarray(r["final_weights"], dtype=np.float64).reshape(n, d)
            if teacher != "identity":
                W = W @ _record_teacher(r, k, n, d).T  # teacher coordinates, (n, k)
            points.append(W)
        fams = group_points(points, tol=tol, objectives=[r["final_loss"] for r in group],
                            min_eigs=[r["min_eig"] for r in group], **options)
        for fam in fams:
            out.append({
                "status": status,
                "multiplicity": fam.multiplicity,
                "objective": fam.objective,
                "objective_spread": fam.objective_spread,
                "min_eig": fam.min_eig,
                "seeds": [group[m]["seed"] for m in fam.members],
                "representative": list(map(float, np.asarray(group[fam.representative]["final_weights"]).ravel())),
                "max_member_distance": fam.max_member_distance,
                "undecided": fam.undecided,
            })
    out.sort(key=lambda f: (-f["multiplicity"], f["objective"]))
    for i, fam in enumerate(out):
        fam["family"] = i
    return out


def _record_teacher(record: dict, k: int, n: int, d: int) -> np.ndarray:
    """The teacher V (k, d) of one run, rebuilt as ``teacher_student.initial_points`` draws it."""
    from landscape_core.teacher_student import TeacherStudentProtocol, initial_points

    protocol = TeacherStudentProtocol(d=d, teacher=record.get("teacher", "identity"))
    _, V = initial_points(k, n, [int(record["seed"])], protocol)
    return V[0].numpy()

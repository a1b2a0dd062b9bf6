"""Families of critical points of the teacher-student objective under its full symmetry group.

F(W) (protocols.md section 1) is unchanged by permuting the student neurons (W -> P W) and,
for the identity teacher, by permuting the input coordinates (W -> W Q); the distance under
both, exact or with a proven lower bound, is :func:`landscape_core.symmetry.symmetric_distance`.

Families (:func:`group_points`, :func:`group_records`): leader clustering in input order: a
point joins the first family whose representative has the same objective (within
``objective_tol``), the same Hessian spectrum if asked (``confirm_spectrum``, within
``spectrum_tol``; spectra are invariant under the symmetries) and symmetric distance
<= ``tol``; otherwise it founds a family. Each family reports objective and smallest
Hessian eigenvalue (means over members, as the authors report them), multiplicity and the
largest member distance to the representative (an achieved, i.e. upper, bound: the
widening that ``certify_minimum(family_distance=...)`` needs).
:func:`group_records_student_perm` is the same leader clustering under student-neuron
permutations only (the report's ``n_families_student_perm``).

Public entry points: :func:`group_points`, :func:`group_records`,
:func:`group_records_student_perm`, :class:`Family`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from landscape_core.errors import OptionError
from landscape_core.symmetry import (
    ENUMERATE_MAX,
    as_matrix,
    student_permutation_distance,
    symmetric_distance,
    teacher_basis,
)
from landscape_core.teacher_student.objective import population_hessian, population_loss
from landscape_core.teacher_student.protocol import TeacherStudentProtocol, initial_points

__all__ = ["Family", "group_points", "group_records", "group_records_student_perm"]


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
    W = torch.from_numpy(np.stack(points))  # (R, n, d)
    d = W.shape[-1]
    Vt = torch.from_numpy(np.eye(d) if V is None else V)[None].expand(W.shape[0], -1, -1)
    loss = population_loss(W, Vt).numpy()
    eigs = []
    for s in range(0, W.shape[0], 32):
        H = population_hessian(W[s : s + 32], Vt[s : s + 32])
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
    symmetry group (module docstring; distances: :func:`landscape_core.symmetry.symmetric_distance`).

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
    pts = [as_matrix(p, "points") for p in points]
    if not pts:
        return []
    if any(p.shape != pts[0].shape for p in pts):
        raise OptionError("points", "must all have the same shape (one (k, n, d) cell)")
    for name, value in (("tol", tol), ("objective_tol", objective_tol), ("spectrum_tol", spectrum_tol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise OptionError(name, f"must be a number >= 0, got {value!r}")
    V = teacher_basis(teacher, pts[0].shape[1])
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
            al = symmetric_distance(
                pts[r], W, teacher=V, enumerate_max=enumerate_max, random_starts=random_starts, seed=seed
            )
            unproven = al.lower_bound <= tol < al.distance
            if unproven:  # more starts before deciding by the achieved distance
                al = symmetric_distance(
                    pts[r],
                    W,
                    teacher=V,
                    enumerate_max=enumerate_max,
                    random_starts=8 * random_starts + 16,
                    seed=seed + 1,
                )
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
    fams: list[dict[str, Any]] = []
    for r, mem, ds, und in zip(reps, members, dists, undecided):
        o = obj[mem]
        fams.append(
            dict(
                representative=r,
                members=tuple(mem),
                multiplicity=len(mem),
                objective=float(o.mean()),
                objective_spread=float(o.max() - o.min()),
                min_eig=float(eig[mem].mean()),
                max_member_distance=float(max(ds)),
                undecided=und,
            )
        )
    fams.sort(key=lambda f: (-f["multiplicity"], f["objective"]))
    return [Family(index=i, **f) for i, f in enumerate(fams)]


def group_records(
    records: Sequence[dict], *, tol: float = 1e-4, statuses: Sequence[str] = ("spurious",), **options
) -> list[dict]:
    """:func:`group_points` over the records of one (k, n, d) cell of
    ``teacher_student.run_teacher_student`` (those with a status in ``statuses``; their
    ``final_weights``, ``final_loss`` and ``min_eig`` are used).

    Output: the dicts of :func:`group_records_student_perm` (family, status, multiplicity,
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
        raise OptionError(
            "teacher",
            f"orthonormal teachers with d = {d} > k = {k} have rotations of the "
            "complement as symmetries; families are implemented for d = k",
        )
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
        fams = group_points(
            points,
            tol=tol,
            objectives=[r["final_loss"] for r in group],
            min_eigs=[r["min_eig"] for r in group],
            **options,
        )
        for fam in fams:
            out.append(
                {
                    "status": status,
                    "multiplicity": fam.multiplicity,
                    "objective": fam.objective,
                    "objective_spread": fam.objective_spread,
                    "min_eig": fam.min_eig,
                    "seeds": [group[m]["seed"] for m in fam.members],
                    "representative": list(map(float, np.asarray(group[fam.representative]["final_weights"]).ravel())),
                    "max_member_distance": fam.max_member_distance,
                    "undecided": fam.undecided,
                }
            )
    out.sort(key=lambda f: (-f["multiplicity"], f["objective"]))
    for i, entry in enumerate(out):
        entry["family"] = i
    return out


def _record_teacher(record: dict, k: int, n: int, d: int) -> np.ndarray:
    """The teacher V (k, d) of one run, rebuilt as ``teacher_student.initial_points`` draws it."""
    protocol = TeacherStudentProtocol(d=d, teacher=record.get("teacher", "identity"))
    _, V = initial_points(k, n, [int(record["seed"])], protocol)
    return V[0].numpy()


def group_records_student_perm(
    records: Sequence[dict], *, tol: float = 1e-4, statuses: Sequence[str] = ("spurious",)
) -> list[dict]:
    """Group the final points of one (k, n) cell up to permutation of student neurons only
    (no coordinate permutations: the report's ``n_families_student_perm``; superseded by
    :func:`group_records` for the families themselves).

    Leader clustering: records (in order) join the first family whose representative is
    within Frobenius distance ``tol`` after the best permutation (see
    :func:`landscape_core.symmetry.student_permutation_distance`), else found a new family. ``tol`` is an absolute
    Frobenius distance; converged points are pinned to about grad_tol / min_eig, far below
    the default 1e-4, while distinct critical points are O(0.1) apart.

    Returns families sorted by multiplicity (descending), each with ``family`` (index),
    ``status``, ``multiplicity``, ``objective`` and ``min_eig`` (means over members, as the
    authors report them), ``objective_spread`` (max - min), ``seeds`` and
    ``representative`` (flat weights of the first member).
    """
    if tol < 0:
        raise OptionError("tol", f"must be >= 0, got {tol!r}")
    chosen = [r for r in records if r["status"] in statuses]
    cells = {(r["k"], r["n"], r.get("d", r["k"])) for r in chosen}
    if len(cells) > 1:
        raise OptionError(
            "records", f"group_records_student_perm takes records of one (k, n, d) cell, got {sorted(cells)}"
        )
    families: list[dict] = []
    reps: list[torch.Tensor] = []
    for r in chosen:
        if r.get("final_weights") is None:
            raise OptionError("records", "final_weights is missing (run with keep_weights=True)")
        W = torch.tensor(r["final_weights"], dtype=torch.float64).reshape(r["n"], -1)
        for fam, rep in zip(families, reps):
            if fam["status"] == r["status"] and student_permutation_distance(rep, W) <= tol:
                fam["_members"].append(r)
                break
        else:
            families.append({"status": r["status"], "_members": [r]})
            reps.append(W)
    out = []
    for fam in families:
        members = fam.pop("_members")
        losses = [m["final_loss"] for m in members]
        out.append(
            {
                "status": fam["status"],
                "multiplicity": len(members),
                "objective": sum(losses) / len(losses),
                "objective_spread": max(losses) - min(losses),
                "min_eig": sum(m["min_eig"] for m in members) / len(members),
                "seeds": [m["seed"] for m in members],
                "representative": members[0]["final_weights"],
            }
        )
    out.sort(key=lambda f: (-f["multiplicity"], f["objective"]))
    for i, fam in enumerate(out):
        fam["family"] = i
    return out

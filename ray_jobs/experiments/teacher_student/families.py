"""A cell's spurious minima as the authors count them, each family certified.

Report-side only (the report and the per-cell MLflow child import it; workers never do).
Families are grouped under the full symmetry group, student-neuron permutations x
coordinate permutations (:func:`landscape_core.families.group_points`; protocols.md
section 1), and each family is certified once (:func:`landscape_core.certification.certify_family`:
rigorous Hessian bound, radius, coverage of every member, objective bounds), so a run
counts as a *certified* spurious minimum when its family's certificate holds and the
minimum's objective is provably >= the protocol's bad-loss threshold.

Certification needs the identity teacher (the authors' setting); with an orthonormal
teacher the families are still grouped (in each run's teacher coordinates) but the
certificate columns are empty. Results are kept per cell for the process (a sweep logs a
cell's MLflow child, then the report aggregates the same runs again).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: cell key -> families, for the duration of the process; and the last families of each cell id
_MEMO: dict[tuple, list[dict]] = {}
_LAST: dict[str, list[dict]] = {}
#: the columns of report/families.csv, after the cell's table axes
FAMILY_COLUMNS = (
    "family",
    "multiplicity",
    "objective",
    "objective_spread",
    "min_eig",
    "max_member_distance",
    "undecided",
    "certified",
    "reason",
    "certified_lambda_lo",
    "certified_radius",
    "objective_lo",
    "objective_hi",
    "minimum_certified",
    "newton_steps",
    "seeds",
)


def certified_families(records: Sequence[dict], *, tol: float) -> list[dict]:
    """Families of the spurious ``records`` of one cell (full symmetry group, Frobenius
    ``tol``), sorted by multiplicity, each with its certificate's outcome; [] without
    spurious runs; None entries for the certificate without the identity teacher."""
    from landscape_core.families import group_points, group_records

    records = [record for record in records if record["status"] == "spurious"]
    if not records:
        return []
    key = (records[0]["cell_id"], float(tol), tuple(sorted((r["unit_id"], int(r["seed"])) for r in records)))
    if key in _MEMO:
        _LAST[key[0]] = _MEMO[key]
        return _MEMO[key]
    records = [{**record, "final_weights": np.asarray(record["final_weights"], dtype=np.float64)} for record in records]
    teacher = records[0].get("teacher", "identity")
    if teacher != "identity":
        families = [{**family, **_uncertified()} for family in group_records(records, tol=tol)]
    else:
        k, n, d = (int(records[0][name]) for name in ("k", "n", "d"))
        points = [record["final_weights"].reshape(n, d) for record in records]  # (n, d) each
        groups = group_points(
            points, tol=tol, objectives=[r["final_loss"] for r in records], min_eigs=[r["min_eig"] for r in records]
        )
        threshold = float(records[0].get("bad_loss_threshold") or 1e-3)
        families = [_family(index, group, records, points, threshold) for index, group in enumerate(groups)]
    _MEMO[key] = _LAST[key[0]] = families
    return families


def families_of(cell_id: str) -> list[dict]:
    """The families last computed for ``cell_id`` in this process ([] if none)."""
    return _LAST.get(cell_id, [])


def _uncertified() -> dict[str, Any]:
    return {
        "certified": None,
        "reason": "not_identity_teacher",
        "certified_lambda_lo": None,
        "certified_radius": None,
        "objective_lo": None,
        "objective_hi": None,
        "minimum_certified": None,
        "newton_steps": None,
    }


def _family(index: int, group, records: list[dict], points: list[np.ndarray], threshold: float) -> dict[str, Any]:
    from landscape_core.certification import certify_family

    order = [group.representative] + [member for member in group.members if member != group.representative]
    certificate = certify_family(np.stack([points[member] for member in order]), bad_loss_threshold=threshold)
    return {
        "family": index,
        "multiplicity": group.multiplicity,
        "objective": group.objective,
        "objective_spread": group.objective_spread,
        "min_eig": group.min_eig,
        "max_member_distance": group.max_member_distance,
        "undecided": group.undecided,
        "certified": bool(
            certificate.spurious
        ),  # a certified strict minimum covering every member, F provably >= threshold
        "reason": certificate.reason
        if certificate.certified and certificate.spurious
        else (certificate.reason if not certificate.certified else "objective_below_threshold"),
        "certified_lambda_lo": float(certificate.lambda_lo),
        "certified_radius": float(certificate.cover_radius),
        "objective_lo": float(certificate.objective_lo),
        "objective_hi": float(certificate.objective_hi),
        "minimum_certified": bool(certificate.minimum_certified),
        "newton_steps": int(certificate.newton_steps),
        "seeds": [int(records[member]["seed"]) for member in group.members],
    }


def family_aggregates(families: list[dict], runs: int, *, confidence: float) -> dict[str, Any]:
    """Per-cell aggregates: ``n_families``, ``n_families_certified``, ``n_certified_spurious``,
    ``frac_certified_spurious`` with its Wilson interval over the ``runs`` that ran,
    ``family_multiplicities`` (runs per family, largest first, as text),
    ``min_certified_lambda_lo`` and ``max_certified_radius`` over certified families."""
    from landscape_core.statistics import wilson_interval

    certified = [family for family in families if family["certified"]]
    count = sum(family["multiplicity"] for family in certified)
    out = {"n_families": len(families), "n_families_certified": len(certified), "n_certified_spurious": count}
    if any(family["certified"] is None for family in families):  # not certifiable here (teacher)
        out.update(n_families_certified=None, n_certified_spurious=None)
    if runs and out["n_certified_spurious"] is not None:
        lo, hi = wilson_interval(count, runs, confidence)
        out.update(frac_certified_spurious=count / runs, frac_certified_spurious_lo=lo, frac_certified_spurious_hi=hi)
    else:
        out.update(
            frac_certified_spurious=math.nan, frac_certified_spurious_lo=math.nan, frac_certified_spurious_hi=math.nan
        )
    # text, never a number (a metric of MLflow would take "[126]" for one otherwise), beside the authors'
    out["family_multiplicities"] = (
        "[" + ", ".join(str(m) for m in sorted((f["multiplicity"] for f in families), reverse=True)) + "]"
    )
    out["min_certified_lambda_lo"] = min((f["certified_lambda_lo"] for f in certified), default=math.nan)
    out["max_certified_radius"] = max((f["certified_radius"] for f in certified), default=math.nan)
    return out

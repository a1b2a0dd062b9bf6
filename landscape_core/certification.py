"""Computer-assisted certificates of strict local minima of the teacher-student objective:
the public names of :mod:`landscape_core.teacher_student.certificate` (the certificate) and
:mod:`landscape_core.teacher_student.enclosures` (rigorous enclosures at a point), where
they live next to the objective they certify.

Steps, method and sources: docs/teacher_student.md#certified-minima-the-proof.
"""

from landscape_core.teacher_student.certificate import (
    REASONS,
    Certificate,
    certify_family,
    certify_minimum,
    certify_points,
    newton_polish,
)
from landscape_core.teacher_student.enclosures import (
    EigenBound,
    PairEnclosures,
    hessian_enclosure,
    l3_bound,
    lambda_min_lower_bound,
    pair_enclosures,
)

__all__ = [
    "REASONS",
    "Certificate",
    "EigenBound",
    "PairEnclosures",
    "certify_family",
    "certify_minimum",
    "certify_points",
    "hessian_enclosure",
    "l3_bound",
    "lambda_min_lower_bound",
    "newton_polish",
    "pair_enclosures",
]

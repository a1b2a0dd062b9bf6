"""Families of critical points of the teacher-student objective under its full symmetry
group: the public names of :mod:`landscape_core.teacher_student.families` (the grouping,
which needs the objective) and :mod:`landscape_core.symmetry` (alignment and distances).
"""

from landscape_core.symmetry import ENUMERATE_MAX, Alignment, aligned, symmetric_distance
from landscape_core.teacher_student.families import Family, group_points, group_records, group_records_student_perm

__all__ = [
    "ENUMERATE_MAX",
    "Alignment",
    "Family",
    "aligned",
    "group_points",
    "group_records",
    "group_records_student_perm",
    "symmetric_distance",
]

"""Two-layer ReLU teacher-student population objective (Safran & Shamir, ICML 2018) and its
gradient-descent protocol, batched over runs.

Modules, from the bottom up (docs/teacher_student.md, "Module map"):

- :mod:`.objective`: the closed-form F, its analytic gradient and Hessian, the descent's kernels;
- :mod:`.protocol`: :class:`TeacherStudentProtocol` (2018 defaults, 2021 options), initial points,
  classification of final points;
- :mod:`.enclosures`, :mod:`.certificate`: rigorous enclosures and certified strict local minima;
- :mod:`.families`: families of critical points under the symmetry group;
- :mod:`.prover`: proven outcomes (``stop_when_proven``);
- :mod:`.descent`: :func:`gradient_descent`;
- :mod:`.run`: :func:`run_teacher_student`, one cell as one batch; :mod:`.cli`: the command line.

Public entry points (re-exported here): :func:`run_teacher_student`, :func:`gradient_descent`,
:func:`population_loss`, :func:`population_gradient`, :func:`population_hessian`,
:func:`gradient_norm`, :class:`TeacherStudentProtocol`.
"""

from landscape_core.teacher_student.cli import main
from landscape_core.teacher_student.descent import DescentResult, descend_with_proofs, gradient_descent
from landscape_core.teacher_student.objective import (
    STOPPING_NORMS,
    TWO_PI,
    frobenius_gradient_norm,
    gradient_norm,
    hessian_extreme_eigenvalues,
    neuron_gradient_norm,
    population_gradient,
    population_hessian,
    population_loss,
    scaled_gradient,
)
from landscape_core.teacher_student.protocol import (
    DEFAULT_STEP,
    INIT_VARIANCES,
    MAX_HESSIAN_BYTES,
    STATUSES,
    TEACHERS,
    TeacherStudentProtocol,
    classify,
    global_minimum_curvature,
    initial_points,
)
from landscape_core.teacher_student.prover import PROOF_COLUMNS, ProofRecord, ProvenBall, SpuriousProver
from landscape_core.teacher_student.run import run_teacher_student

__all__ = [
    "DEFAULT_STEP",
    "INIT_VARIANCES",
    "MAX_HESSIAN_BYTES",
    "PROOF_COLUMNS",
    "STATUSES",
    "STOPPING_NORMS",
    "TEACHERS",
    "TWO_PI",
    "DescentResult",
    "ProofRecord",
    "ProvenBall",
    "SpuriousProver",
    "TeacherStudentProtocol",
    "classify",
    "descend_with_proofs",
    "frobenius_gradient_norm",
    "gradient_descent",
    "global_minimum_curvature",
    "gradient_norm",
    "hessian_extreme_eigenvalues",
    "initial_points",
    "main",
    "neuron_gradient_norm",
    "population_gradient",
    "population_hessian",
    "population_loss",
    "run_teacher_student",
    "scaled_gradient",
]

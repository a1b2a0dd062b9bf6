"""Sublevel-set connectivity by Dynamic String Sampling (Freeman & Bruna, ICLR 2017).

protocols.md section 4. Given two models theta_A, theta_B (flat parameter vectors) with
loss below a threshold L0, DSS certifies that they lie in one connected component of
{theta : loss(theta) <= pass_factor * L0} by building a string of models ("beads") whose
neighbours are joined by straight segments along which the interpolated loss stays under
the pass level:

1. evaluate the loss along every segment of the string at ``interp_points`` values of
   t in [0, 1) (the authors' check);
2. for every segment whose maximum exceeds ``pass_factor * L0``, insert a bead at the
   midpoint or at the argmax of the interpolated loss (``bead_init``) and train it until
   its loss is below ``alpha * L0`` (the authors train to 0.95 L0); the new beads of a
   round are trained together as one batch;
3. repeat until every segment passes (connected, certified) or ``max_rounds`` /
   ``max_beads`` runs out (not certified: a persistent barrier suggests, but does not
   prove, a disconnection).

Outputs per pair: ``connected``, number of beads, rounds, the maximum interpolated loss
of every final segment, and the normalized geodesic length
sum_i ||theta_{i+1} - theta_i|| / ||theta_B - theta_A|| (1 for a straight line).

Interpolation probe (issue #6, survey Conjecture V.1; :func:`probe_lines`): the loss
along the straight line between the two trained models, and between each model's
initial point and the model, at a configurable number of points, recorded as arrays.

Constrained variant (appendix A; the paper's text gives the idea, not the formula, so
this is our reading): a new bead is trained on
    loss(theta) + spring_weight (||theta - prev||^2 + ||theta - next||^2)
                + plane_weight ((theta - (prev + next) / 2) . u)^2,   u = (next - prev) / ||next - prev||,
which keeps it near the hyperplane equidistant from its two neighbours ("springy-ness"
and deviation from the plane are the two knobs).

Modules: ``algorithm`` (the string, DSS, the probe, the counterexample) and ``protocol``
(problems, options, :func:`run_string_sampling`); their public names are imported here.
"""

from landscape_core.string_sampling.algorithm import (
    BEAD_INITS,
    StringSpec,
    cyclic_permutation_counterexample,
    dynamic_string_sampling,
    interpolation_losses,
    probe_lines,
    string_length,
    train_beads,
)
from landscape_core.string_sampling.protocol import (
    LOSSES,
    PROBLEMS,
    StringSamplingOptions,
    regression_problem,
    resolve_options,
    run_string_sampling,
)

__all__ = [
    "BEAD_INITS",
    "StringSpec",
    "interpolation_losses",
    "string_length",
    "dynamic_string_sampling",
    "train_beads",
    "cyclic_permutation_counterexample",
    "probe_lines",
    "PROBLEMS",
    "LOSSES",
    "regression_problem",
    "StringSamplingOptions",
    "resolve_options",
    "run_string_sampling",
]

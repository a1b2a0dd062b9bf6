"""Mode connectivity by trained curves (survey section V-B, Conjectures V.3 and V.4).

Between two independently trained solutions theta_A, theta_B of one cell (a *pair*):

- **Curves** (Garipov et al., NeurIPS 2018, section 3; survey V-B): a quadratic Bezier curve
      phi(t) = (1 - t)^2 theta_A + 2 t (1 - t) C + t^2 theta_B
  and a polygonal chain with one bend C (theta_A -> C for t <= 1/2, C -> theta_B after);
  the bend / control point C (initialised at the midpoint) is trained, as the paper does,
  on E_{t ~ U[0, 1]} F(phi(t)) by drawing ``t_samples`` fresh values of t per step
  (the paper: one per minibatch) and taking an optimizer step on their mean (full-batch
  Adam here, ``steps`` steps at ``lr``; the paper uses SGD with a schedule). All curves of
  a chunk (pairs x both kinds) train as one batch; the t draws of a pair come from a
  generator seeded by (cell, seed, curve kind).
- **Evaluation**: F along each curve and along the straight segment at ``eval_points``
  evenly spaced t in [0, 1] (61, both ends included: the ends are theta_A, theta_B bit for
  bit). Barrier of a path = max over t of F - mean(F(theta_A), F(theta_B)) (issue 26);
  a pair is *connected* by a curve when that curve's barrier is below ``barrier_tol``
  (absolute, in loss units). A connected Bezier curve is a witness of Conjecture V.4: it
  lies in the plane M(theta_A, theta_B, C) and keeps F near the ends' value.
- **Plane through three solutions** (Conjecture V.3; survey Fig. 6 left): a third solution
  theta_3 (trained from the seed's third initial point), and
      f(s, t) = F(s theta_A + t theta_B + (1 - s - t) theta_3)
  on a ``points`` x ``points`` grid of s, t in [low, high] (theta_A at (1, 0), theta_B at
  (0, 1), theta_3 at (0, 0): grid nodes when low, high put them there, checked). The V.3
  barrier is the minimax value over 8-connected grid paths from theta_A's node to
  theta_B's (a bottleneck shortest path, Dijkstra with max) minus the ends' mean; V.3
  ("every path in the plane rises above F(theta_A)") *holds on the grid* when that
  barrier exceeds ``barrier_tol``. The grid is finite and discrete: a lower path leaving
  [low, high]^2 or passing between nodes is not seen.
- **DSS verdict on the same pair** (``dss=True``): Freeman & Bruna's Dynamic String
  Sampling (:func:`landscape_core.string_sampling.dynamic_string_sampling`) between the
  same theta_A, theta_B, beads trained with the endpoint settings.

Pairs are the string-sampling experiment's pairs: for a plain network on its problems
(``quadratic``, ``relu_teacher``) the data set, the initial points (generators seeded by
(model, seed, "A" / "B")) and the endpoint training (all endpoints of a chunk as one
batch, :func:`landscape_core.training.train` to below ``alpha x threshold``) are those of
:func:`landscape_core.string_sampling.run_string_sampling`, so the endpoints are the same
bit for bit (tested). Skip networks (Nguyen et al. 2019; :mod:`landscape_core.skip_networks`)
add V (m, M) from M hidden neurons to the outputs, V ~ N(0, 1/M) from its own generator.
``random_labels`` and ``digits`` (one-hot targets) come from :mod:`landscape_core.data`.
"""

from landscape_core.mode_connectivity.curves import (
    CURVES,
    CurveSpec,
    PlaneSpec,
    barrier,
    curve_points,
    minimax_path,
    path_losses,
    plane_losses,
    train_curves,
)
from landscape_core.mode_connectivity.protocol import (
    DSS_KEYS,
    LOSSES,
    NETWORKS,
    PROBLEMS,
    ModeConnectivityOptions,
    initial_points,
    problem_data,
    resolve_options,
    run_mode_connectivity,
)

__all__ = [
    "CURVES",
    "CurveSpec",
    "PlaneSpec",
    "barrier",
    "curve_points",
    "minimax_path",
    "path_losses",
    "plane_losses",
    "train_curves",
    "DSS_KEYS",
    "LOSSES",
    "NETWORKS",
    "PROBLEMS",
    "ModeConnectivityOptions",
    "initial_points",
    "problem_data",
    "resolve_options",
    "run_mode_connectivity",
]

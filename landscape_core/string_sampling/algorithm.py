"""Dynamic String Sampling itself (Freeman & Bruna, ICLR 2017): the string, its segments' interpolated
losses, the bead training, the interpolation probe and appendix E's counterexample.
The method and its outputs: the package docstring (:mod:`landscape_core.string_sampling`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.func import vmap

from landscape_core.errors import OptionError
from landscape_core.networks import MLPSpec, flatten
from landscape_core.training import TrainSpec, train

BEAD_INITS = ("midpoint", "argmax")


@dataclass(frozen=True)
class StringSpec:
    threshold: float  # L0
    pass_factor: float = 1.1  # a segment passes when max interpolated loss < pass_factor * L0
    alpha: float = 0.95  # beads are trained to below alpha * L0
    interp_points: int = 100  # t = 0, 1/m, ..., (m - 1)/m on each segment
    bead_init: str = "midpoint"  # or "argmax" of the interpolated loss
    max_rounds: int = 10
    max_beads: int = 64
    constrained: bool = False  # appendix A variant
    spring_weight: float = 0.0
    plane_weight: float = 1.0

    def validate(self) -> None:
        if not self.threshold > 0:
            raise OptionError("threshold", f"must be > 0, got {self.threshold!r}")
        if not self.pass_factor >= 1:
            raise OptionError("pass_factor", f"must be >= 1, got {self.pass_factor!r}")
        if not 0 < self.alpha <= 1:
            raise OptionError("alpha", f"must be in (0, 1], got {self.alpha!r}")
        if self.bead_init not in BEAD_INITS:
            raise OptionError("bead_init", f"{self.bead_init!r} is not one of {', '.join(BEAD_INITS)}")
        for name in ("interp_points", "max_rounds", "max_beads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise OptionError(name, f"must be an integer >= 1, got {v!r}")
        if self.spring_weight < 0 or self.plane_weight < 0:
            raise OptionError("spring_weight, plane_weight", "must be >= 0")


def interpolation_losses(
    loss: Callable[..., torch.Tensor],
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    *data: torch.Tensor,
    points: int = 100,
    include_end: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss along the straight line (1 - t) theta_a + t theta_b.

    theta_a, theta_b: (P,) or batches (S, P) of pairs; ``data`` shared by all points.
    t = linspace(0, 1, points) with ``include_end``, else ``points`` values in [0, 1).
    Returns (t (points,), losses (points,) or (S, points)).
    """
    dtype, device = theta_a.dtype, theta_a.device
    if include_end:
        t = torch.linspace(0.0, 1.0, points, dtype=dtype, device=device)
    else:
        t = torch.arange(points, dtype=dtype, device=device) / points
    single = theta_a.dim() == 1
    A = theta_a.unsqueeze(0) if single else theta_a  # (S, P)
    B = theta_b.unsqueeze(0) if single else theta_b
    # (1 - t) A + t B, not A + t (B - A): the ends are then A and B bit for bit
    path = (1 - t)[None, :, None] * A.unsqueeze(1) + t[None, :, None] * B.unsqueeze(1)  # (S, m, P)
    S, m, P = path.shape
    in_dims = (0,) + (None,) * len(data)
    values = vmap(loss, in_dims=in_dims)(path.reshape(S * m, P), *data).reshape(S, m)
    return t, (values[0] if single else values)


def string_length(string: torch.Tensor) -> torch.Tensor:
    """sum of consecutive distances of a string (B, P) of beads (endpoints included)."""
    return torch.linalg.vector_norm(string[1:] - string[:-1], dim=-1).sum()


def dynamic_string_sampling(
    loss: Callable[..., torch.Tensor],
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    *data: torch.Tensor,
    spec: StringSpec,
    bead_training: TrainSpec,
    keep_string: bool = False,
) -> dict:
    """Run DSS between two trained models; ``data`` is shared by every loss evaluation.

    ``bead_training`` configures how new beads are trained (its ``stop_loss`` is set to
    ``alpha * L0``). Returns a record (plain Python values) described in the module
    docstring, plus ``string`` (list of flat weight lists) when ``keep_string``.
    """
    spec.validate()
    start = time.perf_counter()
    L0 = spec.threshold
    level = spec.pass_factor * L0
    in_dims = (0,) + (None,) * len(data)
    vloss = vmap(loss, in_dims=in_dims)
    endpoint_losses = vloss(torch.stack([theta_a, theta_b]), *data)
    string = [theta_a, theta_b]
    rounds = 0
    beads_failed = 0
    connected = False
    seg_max = None
    tspec = TrainSpec(**{**asdict(bead_training), "stop_loss": spec.alpha * L0})
    while True:
        S = torch.stack(string)  # (B, P)
        _, seg = interpolation_losses(loss, S[:-1], S[1:], *data, points=spec.interp_points, include_end=False)
        seg_max = seg.amax(-1)  # (B - 1,)
        failing = (seg_max >= level) | ~torch.isfinite(seg_max)
        if not bool(failing.any()) and bool((endpoint_losses < level).all()):
            connected = True
            break
        if rounds >= spec.max_rounds or len(string) - 2 >= spec.max_beads:
            break
        idx = torch.nonzero(failing).flatten().tolist()
        idx = idx[: spec.max_beads - (len(string) - 2)]
        if not idx:
            break
        rounds += 1
        prev = S[idx]  # (b, P)
        nxt = S[[i + 1 for i in idx]]
        if spec.bead_init == "argmax":
            t_star = seg[idx].argmax(-1).to(S.dtype) / spec.interp_points  # (b,)
            t_star = t_star.clamp(1.0 / spec.interp_points, 1.0 - 1.0 / spec.interp_points)
            init = prev + t_star[:, None] * (nxt - prev)
        else:
            init = 0.5 * (prev + nxt)
        beads = train_beads(loss, init, prev, nxt, data, spec, tspec)
        bead_losses = vloss(beads, *data)
        beads_failed += int((bead_losses >= level).sum())
        for offset, (i, bead) in enumerate(zip(idx, beads)):
            string.insert(i + 1 + offset, bead)
    S = torch.stack(string)
    direct = torch.linalg.vector_norm(theta_b - theta_a)
    record = {
        "dss_connected": connected,
        "dss_beads": len(string) - 2,
        "dss_rounds": rounds,
        "dss_beads_failed": beads_failed,
        "dss_max_interp_loss": float(seg_max.max()) if seg_max is not None else float("nan"),
        "dss_segment_max_losses": seg_max.tolist(),
        "dss_normalized_length": float(string_length(S) / direct) if float(direct) > 0 else float("nan"),
        "dss_endpoint_distance": float(direct),
        "dss_endpoint_losses": endpoint_losses.tolist(),
        "dss_bead_losses": vloss(S, *data).tolist(),  # every model of the final string, ends included
        "dss_threshold": L0,
        "dss_wall_s": time.perf_counter() - start,
    }
    if keep_string:
        record["dss_string"] = S.tolist()
        # the final string's segment check (every exit of the loop follows one): (B - 1,
        # interp_points) losses at t = 0, 1/m, ..., (m - 1)/m of each segment
        record["dss_string_losses"] = seg.tolist()
    return record


def train_beads(loss, init, prev, nxt, data, spec: StringSpec, tspec: TrainSpec) -> torch.Tensor:
    """Train a batch of beads (b, P) from ``init``; constrained variant adds the appendix-A terms."""
    b = init.shape[0]
    shared = [d.expand(b, *d.shape) for d in data]  # views, no copies
    if not spec.constrained:
        return train(loss, init, *shared, spec=tspec).theta

    sw, pw = spec.spring_weight, spec.plane_weight

    def constrained_loss(theta, p, q, *d):
        mid = 0.5 * (p + q)
        u = (q - p) / torch.linalg.vector_norm(q - p).clamp_min(1e-300)
        spring = ((theta - p) ** 2).sum() + ((theta - q) ** 2).sum()
        plane = ((theta - mid) * u).sum() ** 2
        return loss(theta, *d) + sw * spring + pw * plane

    # The penalised loss has no "below alpha * L0" target of its own: constrained beads are
    # trained on it for the step budget (or to a stationary point), and their data loss is
    # judged by the segment test of the next round, like every bead.
    t_no_target = TrainSpec(**{**asdict(tspec), "stop_loss": 0.0})
    res = train(constrained_loss, init, prev, nxt, *shared, spec=t_no_target)
    return res.theta


def cyclic_permutation_counterexample(dtype=torch.float64):
    """Appendix E: three points of R^2 mapped to a cyclic permutation of themselves.

    Returns (X (3, 2), Y (3, 2), theta_A, theta_B, spec) for the paper's 2-3-2 ReLU
    network with 12 parameters (no biases: with biases every unit could be active on all
    three points and the network affine there, and three points in general position are
    always mapped by an affine map, so the zero-loss set would be connected). theta_A is
    an exact solution built by hand: with x_j at angles 0, 120, 240 degrees, hidden unit j
    computes relu(x_j . x), which is 1 on x_j and 0 on the other two points
    (x_i . x_j = -1/2); the output layer's column j is the target of x_j, x_{j+1}.
    theta_B is theta_A with hidden units 1 and 2 swapped: the same function, zero loss.
    Since sum_j x_j = 0, no unit can be active on all three points.
    """
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=dtype)
    X = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (3, 2)
    Y = X.roll(-1, dims=0)  # x_j -> x_{j+1}
    spec = MLPSpec(input_dim=2, width=3, depth=2, output_dim=2, activation="relu", output_bias=False, bias=False)
    params_a = {"W1": X.clone(), "W2": Y.T.clone()}
    perm = torch.tensor([1, 0, 2])
    params_b = {"W1": params_a["W1"][perm], "W2": params_a["W2"][:, perm]}
    return X, Y, flatten(params_a, spec), flatten(params_b, spec), spec


def probe_lines(
    loss: Callable[..., torch.Tensor],
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    *data: torch.Tensor,
    points: int,
    initial: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """The interpolation probe of one pair (issue #6; survey Conjecture V.1), as plain lists.

    ``theta_a``, ``theta_b`` (P,): the trained endpoints; ``initial``: their initial points
    (or None). Losses at t = linspace(0, 1, points), so t = 0 and t = 1 are the end models:
    - ``interp_ab_losses``: A -> B; ``interp_ab_max_loss`` its maximum and
      ``interp_ab_barrier`` = max - max(loss(A), loss(B)) (0 when the line stays below
      both ends: no barrier between the two models);
    - ``interp_init_a_losses`` / ``interp_init_b_losses``: initial point -> trained model;
      ``interp_init_max_rise`` = the largest increase between consecutive points of either
      line (0 when both decrease monotonically, as Conjecture V.1 says).
    Each line is evaluated on its own (memory of one line, ``points`` models, at a time).
    """
    _, ab = interpolation_losses(loss, theta_a, theta_b, *data, points=points)  # (points,)
    record = {
        "interp_ab_losses": ab.tolist(),
        "interp_ab_max_loss": float(ab.max()),
        "interp_ab_barrier": float(ab.max() - torch.maximum(ab[0], ab[-1])),
        "interp_init_a_losses": None,
        "interp_init_b_losses": None,
        "interp_init_max_rise": None,
    }
    if initial is not None:
        rises = []
        for side, start, end in (("a", initial[0], theta_a), ("b", initial[1], theta_b)):
            _, line = interpolation_losses(loss, start, end, *data, points=points)  # (points,)
            record[f"interp_init_{side}_losses"] = line.tolist()
            rises.append(float((line[1:] - line[:-1]).clamp_min(0).max()))
        record["interp_init_max_rise"] = max(rises)
    return record

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
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch
from torch.func import vmap

from landscape_core.errors import OptionError
from landscape_core.networks import MLPSpec, flatten, forward, init_parameters, unflatten
from landscape_core.seeding import run_generator
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
        beads = _train_beads(loss, init, prev, nxt, data, spec, tspec)
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


def _train_beads(loss, init, prev, nxt, data, spec: StringSpec, tspec: TrainSpec) -> torch.Tensor:
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


# ----------------------------------------------------------------------------------
# Protocols: problems, endpoint training, one record per pair
# ----------------------------------------------------------------------------------
PROBLEMS = ("quadratic", "relu_teacher", "counterexample")
LOSSES = ("mae", "mse")


def regression_problem(
    name: str, *, n_train: int, n_test: int, input_dim: int = 1, teacher_width: int = 4, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X, Y, X_test, Y_test) of a DSS regression study.

    - ``quadratic``: the authors' polynomial study, x ~ U[0, 1], y = 0.5 x^2 + 0.25 x + 0.1;
    - ``relu_teacher``: x ~ N(0, I_input_dim), y = a one-hidden-layer ReLU teacher of
      ``teacher_width`` units with N(0, 1/fan_in) weights (for the width study);
    - ``counterexample``: appendix E's three points (train = test).
    """
    f64 = torch.float64
    if name == "counterexample":
        X, Y, *_ = cyclic_permutation_counterexample()
        return X, Y, X, Y
    total = n_train + n_test
    if name == "quadratic":
        x = torch.rand(total, 1, generator=generator, dtype=f64)
        y = 0.5 * x * x + 0.25 * x + 0.1
    elif name == "relu_teacher":
        x = torch.randn(total, input_dim, generator=generator, dtype=f64)
        teacher = MLPSpec(input_dim, teacher_width, 2, 1, "relu")
        y = forward(init_parameters(teacher, generator=generator), x, teacher)
    else:
        raise OptionError("problem", f"{name!r} is not one of {', '.join(PROBLEMS)}")
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@dataclass(frozen=True)
class StringSamplingOptions:
    """Every option of one cell, resolved and validated (see :func:`resolve_options`).

    ``string``: the DSS settings with the cell's ``threshold``; ``endpoint``: endpoint
    training (its ``stop_loss`` = ``alpha * threshold``); ``bead``: bead training (the
    endpoint settings unless overridden; :func:`dynamic_string_sampling` sets its stop
    loss). The other fields are the arguments as given.
    """

    problem: str
    threshold: float
    width: int
    depth: int
    activation: str
    init: str
    loss: str
    n_train: int
    n_test: int
    input_dim: int
    teacher_width: int
    data_seed: int
    keep_string: bool
    probe_points: int
    string: StringSpec
    endpoint: TrainSpec
    bead: TrainSpec


def resolve_options(
    *,
    problem: str = "quadratic",
    threshold: float,
    width: int = 4,
    depth: int = 3,
    activation: str = "sigmoid",
    init: str = "uniform",
    loss: str = "mae",
    n_train: int = 10_000,
    n_test: int = 10_000,
    input_dim: int = 1,
    teacher_width: int = 4,
    data_seed: int = 0,
    endpoint_training: dict | None = None,
    bead_training: dict | None = None,
    string: dict | None = None,
    keep_string: bool = False,
    probe_points: int = 100,
) -> StringSamplingOptions:
    """Validate the options of :func:`run_string_sampling` and resolve their defaults (the
    one place they are checked); nothing runs.

    Defaults are the authors' polynomial study: 1-4-4-1 sigmoid MLP (``width=4``,
    ``depth=3``), U[-1, 1] weights, mean absolute error, Adam lr 1e-3 full batch, 10,000
    training and test points. ``endpoint_training`` / ``bead_training``: fields of
    :class:`~landscape_core.training.TrainSpec` (bead training takes the endpoint values
    unless overridden); ``string``: fields of :class:`StringSpec` but ``threshold``.
    Raises ``OptionError(field, message)``; the field is ``problem``, ``loss``,
    ``probe_points``, a :class:`StringSpec` field or ``optimizer.<key>`` (endpoint training).
    """
    if problem not in PROBLEMS:
        raise OptionError("problem", f"{problem!r} is not one of {', '.join(PROBLEMS)}")
    if loss not in LOSSES:
        raise OptionError("loss", f"{loss!r} is not one of {', '.join(LOSSES)}")
    if isinstance(probe_points, bool) or not isinstance(probe_points, int) or probe_points < 2:
        raise OptionError("probe_points", f"must be an integer >= 2 (t = 0 and t = 1 included), got {probe_points!r}")
    sspec = StringSpec(threshold=threshold, **(string or {}))
    sspec.validate()
    end_kw = {"optimizer": "adam", "lr": 1e-3, "max_iterations": 100_000, "grad_tol": 1e-12, **(endpoint_training or {})}
    bead_kw = {**end_kw, **(bead_training or {})}
    end_spec = TrainSpec(**{**end_kw, "stop_loss": sspec.alpha * threshold})
    bead_spec = TrainSpec(**bead_kw)
    end_spec.validate()
    return StringSamplingOptions(
        problem=problem, threshold=threshold, width=width, depth=depth, activation=activation, init=init, loss=loss,
        n_train=n_train, n_test=n_test, input_dim=input_dim, teacher_width=teacher_width, data_seed=data_seed,
        keep_string=keep_string, probe_points=probe_points, string=sspec, endpoint=end_spec, bead=bead_spec,
    )


def run_string_sampling(
    options: StringSamplingOptions,
    *,
    seeds: Iterable[int],
    device: str | torch.device = "cpu",
) -> list[dict]:
    """One DSS pair per seed: train two endpoints independently below ``alpha * threshold``
    (all endpoints of the cell as one batch), then run :func:`dynamic_string_sampling`.

    ``options``: the cell, resolved and validated by :func:`resolve_options`. The data set
    is shared by every pair of the cell (seeded by ``data_seed``); endpoint A of pair s
    starts from a generator seeded by (model, s, "A"), B from (model, s, "B").
    ``problem="counterexample"`` uses appendix E's hand-built endpoints instead (nothing is
    trained; ``seeds`` still names the records). Three lines from a notebook::

        options = resolve_options(problem="quadratic", threshold=0.05, n_train=1000, n_test=500)
        records = run_string_sampling(options, seeds=[0, 1])

    ``status``: ``global`` when both endpoints reached the threshold (connectivity is in
    ``dss_connected``), ``not_converged`` when an endpoint did not (DSS is not run),
    ``diverged`` on a non-finite loss.

    Interpolation probe (every pair, whatever its status; :func:`probe_lines`): the
    training loss at ``probe_points`` evenly spaced t in [0, 1] (both ends included) along
    the straight line from endpoint A to endpoint B (``interp_ab_losses``) and from each
    endpoint's initial point to its trained model (``interp_init_a_losses``,
    ``interp_init_b_losses``; survey Conjecture V.1: decreasing along the line), with
    the summaries ``interp_ab_max_loss``, ``interp_ab_barrier`` and
    ``interp_init_max_rise``. The counterexample has no initial points (None).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise OptionError("seeds", "must be a non-empty list of integers")
    if not isinstance(options, StringSamplingOptions):
        got = type(options).__name__
        raise OptionError("options", f"must be the StringSamplingOptions of resolve_options(), got {got}")
    problem, threshold, width, depth = options.problem, options.threshold, options.width, options.depth
    activation, init, loss = options.activation, options.init, options.loss
    n_train, n_test, input_dim = options.n_train, options.n_test, options.input_dim
    teacher_width, data_seed = options.teacher_width, options.data_seed
    keep_string, probe_points = options.keep_string, options.probe_points
    sspec, end_spec, bead_spec = options.string, options.endpoint, options.bead
    dev = torch.device(device)
    start = time.perf_counter()

    X, Y, Xt, Yt = regression_problem(problem, n_train=n_train, n_test=n_test, input_dim=input_dim,
                                      teacher_width=teacher_width,
                                      generator=run_generator("dss.data", problem, n_train, n_test, input_dim, teacher_width, data_seed))
    if problem == "counterexample":
        _, _, A, B, spec = cyclic_permutation_counterexample()
        theta_a, theta_b = A.expand(len(seeds), -1), B.expand(len(seeds), -1)
    else:
        spec = MLPSpec(X.shape[1], width, depth, Y.shape[1], activation)
        spec.validate()
        key = ("dss.init", spec.input_dim, width, depth, spec.output_dim, init)
        theta_a = torch.stack([flatten(init_parameters(spec, generator=run_generator(*key, s, "A"), init=init), spec) for s in seeds])
        theta_b = torch.stack([flatten(init_parameters(spec, generator=run_generator(*key, s, "B"), init=init), spec) for s in seeds])
    X, Y, Xt, Yt = X.to(dev), Y.to(dev), Xt.to(dev), Yt.to(dev)

    def data_loss(theta, X, Y):
        err = forward(unflatten(theta, spec), X, spec) - Y
        return err.abs().mean() if loss == "mae" else 0.5 * (err * err).sum(-1).mean()

    ends = torch.cat([theta_a, theta_b]).to(dev)  # (2S, P)
    initial = None if problem == "counterexample" else ends.clone()  # (2S, P) the untrained points
    S = len(seeds)
    if problem != "counterexample":
        trained = train(data_loss, ends, X.expand(2 * S, *X.shape), Y.expand(2 * S, *Y.shape), spec=end_spec)
        ends, end_iters = trained.theta, trained.iterations.cpu()
    else:
        end_iters = torch.zeros(2 * S, dtype=torch.int64)
    in_dims = (0, None, None)
    train_losses = vmap(data_loss, in_dims=in_dims)(ends, X, Y)
    test_losses = vmap(data_loss, in_dims=in_dims)(ends, Xt, Yt)
    prepare_s = (time.perf_counter() - start) / S

    records = []
    for i, seed in enumerate(seeds):
        la, lb = float(train_losses[i]), float(train_losses[S + i])
        rec = {
            "seed": seed,
            "final_loss": max(la, lb),
            "endpoint_train_losses": [la, lb],
            "endpoint_test_losses": [float(test_losses[i]), float(test_losses[S + i])],
            "endpoint_iterations": [int(end_iters[i]), int(end_iters[S + i])],
            "iterations": int(end_iters[i] + end_iters[S + i]),
            "grad_norm": float("nan"),
            "problem": problem,
            "threshold": threshold,
            "width": width if problem != "counterexample" else spec.width,
            "depth": depth if problem != "counterexample" else spec.depth,
            "activation": activation if problem != "counterexample" else spec.activation,
            "init": init,
            "loss": loss,
            "n_train": int(X.shape[0]),  # the counterexample's 3 points whatever n_train says
            "n_test": int(Xt.shape[0]),
            "input_dim": spec.input_dim,
            "teacher_width": teacher_width,
            "data_seed": data_seed,
            "keep_string": keep_string,
            **{f"string_{k}": v for k, v in asdict(sspec).items()},
            **{f"endpoint_{k}": v for k, v in asdict(end_spec).items()},
            **{f"bead_{k}": v for k, v in asdict(bead_spec).items()},
            "device": str(dev),
            "probe_points": probe_points,
            **probe_lines(data_loss, ends[i], ends[S + i], X, Y, points=probe_points,
                          initial=None if initial is None else (initial[i], initial[S + i])),
        }
        # dss_connected is None (unknown) where DSS did not run: fractions count strung pairs only
        if not (math.isfinite(la) and math.isfinite(lb)):
            rec.update(status="diverged", dss_connected=None)
        elif max(la, lb) >= sspec.alpha * threshold * (1 + 1e-12) and problem != "counterexample":
            rec.update(status="not_converged", dss_connected=None)
        else:
            dss = dynamic_string_sampling(data_loss, ends[i], ends[S + i], X, Y, spec=sspec, bead_training=bead_spec,
                                          keep_string=keep_string)
            rec.update(status="global", **dss)
        rec["wall_s"] = prepare_s + rec.get("dss_wall_s", 0.0)
        records.append(rec)
    return records

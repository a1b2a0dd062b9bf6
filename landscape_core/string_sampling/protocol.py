"""Dynamic String Sampling as a protocol: the regression problems, the options of a cell
(:class:`StringSamplingOptions`, checked once by :func:`resolve_options`) and
:func:`run_string_sampling`, one record per pair of independently trained endpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch.func import vmap

from landscape_core.errors import OptionError
from landscape_core.networks import MLPSpec, flatten, forward, init_parameters, unflatten
from landscape_core.seeding import run_generator
from landscape_core.string_sampling.algorithm import (
    StringSpec,
    cyclic_permutation_counterexample,
    dynamic_string_sampling,
    probe_lines,
)
from landscape_core.training import TrainSpec, train

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
    end_kw = {
        "optimizer": "adam",
        "lr": 1e-3,
        "max_iterations": 100_000,
        "grad_tol": 1e-12,
        **(endpoint_training or {}),
    }
    bead_kw = {**end_kw, **(bead_training or {})}
    end_spec = TrainSpec(**{**end_kw, "stop_loss": sspec.alpha * threshold})
    bead_spec = TrainSpec(**bead_kw)
    end_spec.validate()
    return StringSamplingOptions(
        problem=problem,
        threshold=threshold,
        width=width,
        depth=depth,
        activation=activation,
        init=init,
        loss=loss,
        n_train=n_train,
        n_test=n_test,
        input_dim=input_dim,
        teacher_width=teacher_width,
        data_seed=data_seed,
        keep_string=keep_string,
        probe_points=probe_points,
        string=sspec,
        endpoint=end_spec,
        bead=bead_spec,
    )


def run_string_sampling(
    options: StringSamplingOptions, *, seeds: Iterable[int], device: str | torch.device = "cpu"
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

    X, Y, Xt, Yt = regression_problem(
        problem,
        n_train=n_train,
        n_test=n_test,
        input_dim=input_dim,
        teacher_width=teacher_width,
        generator=run_generator("dss.data", problem, n_train, n_test, input_dim, teacher_width, data_seed),
    )
    if problem == "counterexample":
        _, _, A, B, spec = cyclic_permutation_counterexample()
        theta_a, theta_b = A.expand(len(seeds), -1), B.expand(len(seeds), -1)
    else:
        spec = MLPSpec(X.shape[1], width, depth, Y.shape[1], activation)
        spec.validate()
        key = ("dss.init", spec.input_dim, width, depth, spec.output_dim, init)
        theta_a = torch.stack(
            [flatten(init_parameters(spec, generator=run_generator(*key, s, "A"), init=init), spec) for s in seeds]
        )
        theta_b = torch.stack(
            [flatten(init_parameters(spec, generator=run_generator(*key, s, "B"), init=init), spec) for s in seeds]
        )
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
            **probe_lines(
                data_loss,
                ends[i],
                ends[S + i],
                X,
                Y,
                points=probe_points,
                initial=None if initial is None else (initial[i], initial[S + i]),
            ),
        }
        # dss_connected is None (unknown) where DSS did not run: fractions count strung pairs only
        if not (math.isfinite(la) and math.isfinite(lb)):
            rec.update(status="diverged", dss_connected=None)
        elif max(la, lb) >= sspec.alpha * threshold * (1 + 1e-12) and problem != "counterexample":
            rec.update(status="not_converged", dss_connected=None)
        else:
            dss = dynamic_string_sampling(
                data_loss, ends[i], ends[S + i], X, Y, spec=sspec, bead_training=bead_spec, keep_string=keep_string
            )
            rec.update(status="global", **dss)
        rec["wall_s"] = prepare_s + rec.get("dss_wall_s", 0.0)
        records.append(rec)
    return records

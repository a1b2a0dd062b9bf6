"""Mode connectivity as a protocol: the options of a cell (:class:`ModeConnectivityOptions`,
checked once by :func:`resolve_options`) and :func:`run_mode_connectivity`, one record per
pair of independently trained solutions. The method: the package docstring."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch.func import vmap

from landscape_core.data import DataSpec, make_dataset
from landscape_core.errors import OptionError
from landscape_core.mode_connectivity.curves import (
    CURVES,
    CurveSpec,
    PlaneSpec,
    barrier,
    minimax_path,
    path_losses,
    plane_losses,
    train_curves,
)
from landscape_core.networks import MLPSpec, flatten, forward, init_parameters, unflatten
from landscape_core.seeding import run_generator
from landscape_core.skip_networks import choose_skip_neurons, skip_forward
from landscape_core.string_sampling import StringSpec, dynamic_string_sampling, regression_problem
from landscape_core.training import TrainSpec, train

PROBLEMS = ("quadratic", "relu_teacher", "random_labels", "digits")
NETWORKS = ("plain", "skip")
LOSSES = ("mae", "mse")


@dataclass(frozen=True)
class ModeConnectivityOptions:
    """Every option of one cell, resolved and validated (:func:`resolve_options`).

    ``string``: DSS's settings with the cell's threshold (``alpha`` also sets the endpoint
    target); ``endpoint``: endpoint training (``stop_loss = alpha * threshold``), also
    the DSS beads' training; ``curve``, ``plane``: the curve and plane settings.
    """

    problem: str
    threshold: float
    network: str
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
    skip_neurons: int
    dss: bool
    string: StringSpec
    endpoint: TrainSpec
    curve: CurveSpec
    plane: PlaneSpec


def resolve_options(
    *,
    problem: str = "relu_teacher",
    threshold: float,
    network: str = "plain",
    width: int = 8,
    depth: int = 2,
    activation: str = "relu",
    init: str = "lecun",
    loss: str = "mse",
    n_train: int = 32,
    n_test: int = 200,
    input_dim: int = 2,
    teacher_width: int = 4,
    data_seed: int = 0,
    skip_neurons: int = 0,
    dss: bool = True,
    endpoint_training: dict | None = None,
    string: dict | None = None,
    curve: dict | None = None,
    plane: dict | None = None,
) -> ModeConnectivityOptions:
    """Validate the options of :func:`run_mode_connectivity`; nothing runs.

    ``endpoint_training``: fields of :class:`~landscape_core.training.TrainSpec` but
    ``stop_loss`` (defaults as the string-sampling protocol's: Adam lr 1e-3, 100,000
    steps); ``string``: fields of :class:`StringSpec` but ``threshold``; ``curve``,
    ``plane``: fields of :class:`CurveSpec`, :class:`PlaneSpec`. ``skip_neurons`` (M): the
    hidden neurons wired to the outputs by ``network="skip"`` (ignored by a plain one).
    Raises ``OptionError(field, message)``.
    """
    if problem not in PROBLEMS:
        raise OptionError("problem", f"{problem!r} is not one of {', '.join(PROBLEMS)}")
    if network not in NETWORKS:
        raise OptionError("network", f"{network!r} is not one of {', '.join(NETWORKS)}")
    if loss not in LOSSES:
        raise OptionError("loss", f"{loss!r} is not one of {', '.join(LOSSES)}")
    if init not in ("uniform", "lecun", "he"):
        raise OptionError("init", f"{init!r} is not one of uniform, lecun, he")
    if not isinstance(dss, bool):
        raise OptionError("dss", f"must be true or false, got {dss!r}")
    if problem == "quadratic" and input_dim != 1:
        raise OptionError("input_dim", f"the quadratic problem has one input, got {input_dim!r}")
    sspec = StringSpec(threshold=threshold, **(string or {}))
    sspec.validate()
    end_kw = {
        "optimizer": "adam",
        "lr": 1e-3,
        "max_iterations": 100_000,
        "grad_tol": 1e-12,
        **(endpoint_training or {}),
    }
    end_spec = TrainSpec(**{**end_kw, "stop_loss": sspec.alpha * threshold})
    end_spec.validate()
    cspec, pspec = CurveSpec(**(curve or {})), PlaneSpec(**(plane or {}))
    cspec.validate()
    pspec.validate()
    spec = _network(problem, input_dim, width, depth, activation)
    spec.validate()
    if network == "skip":
        hidden = width * (depth - 1)
        if depth < 2 or isinstance(skip_neurons, bool) or not isinstance(skip_neurons, int):
            raise OptionError("skip_neurons", f"must be an integer and depth >= 2, got {skip_neurons!r}")
        if not 1 <= skip_neurons <= hidden:
            raise OptionError("skip_neurons", f"must be in [1, {hidden}] (hidden neurons), got {skip_neurons!r}")
    return ModeConnectivityOptions(
        problem=problem,
        threshold=threshold,
        network=network,
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
        skip_neurons=skip_neurons,
        dss=dss,
        string=sspec,
        endpoint=end_spec,
        curve=cspec,
        plane=pspec,
    )


def _network(problem: str, input_dim: int, width: int, depth: int, activation: str) -> MLPSpec:
    in_dim = 64 if problem == "digits" else input_dim
    return MLPSpec(in_dim, width, depth, 10 if problem == "digits" else 1, activation)


def problem_data(o: ModeConnectivityOptions):
    """(X, Y, X_test, Y_test): the string-sampling protocol's draw for its problems (same
    generator, same data), :func:`landscape_core.data.make_dataset` for the others."""
    if o.problem in ("quadratic", "relu_teacher"):
        key = ("dss.data", o.problem, o.n_train, o.n_test, o.input_dim, o.teacher_width, o.data_seed)
        return regression_problem(
            o.problem,
            n_train=o.n_train,
            n_test=o.n_test,
            input_dim=o.input_dim,
            teacher_width=o.teacher_width,
            generator=run_generator(*key),
        )
    dspec = DataSpec(name=o.problem, n_samples=o.n_train + o.n_test, input_dim=o.input_dim, output_dim=1)
    X, Y = make_dataset(
        dspec, generator=run_generator("mc.data", o.problem, o.n_train, o.n_test, o.input_dim, o.data_seed)
    )
    return X[: o.n_train], Y[: o.n_train], X[o.n_train :], Y[o.n_train :]


def initial_points(o: ModeConnectivityOptions, spec: MLPSpec, seeds: list[int], side: str) -> torch.Tensor:
    """(S, P) initial points of one side ("A", "B" or "C" = the third solution): the plain
    weights from the string-sampling protocol's generator (model, seed, side); a skip
    network appends V ~ N(0, 1/M) from a generator of its own."""
    key = ("dss.init", spec.input_dim, o.width, o.depth, spec.output_dim, o.init)
    rows = []
    for s in seeds:
        theta = flatten(init_parameters(spec, generator=run_generator(*key, s, side), init=o.init), spec)
        if o.network == "skip":
            g = run_generator("mc.skip_v", *key, o.skip_neurons, s, side)
            V = torch.randn(spec.output_dim * o.skip_neurons, generator=g, dtype=torch.float64)
            theta = torch.cat([theta, V / math.sqrt(o.skip_neurons)])
        rows.append(theta)
    return torch.stack(rows)


def run_mode_connectivity(
    options: ModeConnectivityOptions, *, seeds: Iterable[int], device: str | torch.device = "cpu"
) -> list[dict]:
    """One pair per seed: endpoints A, B trained as the string-sampling protocol trains them
    (all 2S as one batch); for the pairs that reached ``alpha * threshold`` (status
    ``global``): both curves trained (one batch of pairs x kinds), F along them and along
    the segment at ``eval_points`` t, barriers and connected flags; the plane through A, B
    and a third solution (``plane.enabled``); DSS's verdict on the pair (``dss``).
    ``not_converged``: an endpoint above the target (curves not trained, results null);
    ``diverged``: a non-finite endpoint loss. Three lines from a notebook::

        options = resolve_options(problem="relu_teacher", threshold=0.002, width=16)
        records = run_mode_connectivity(options, seeds=[0, 1])
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise OptionError("seeds", "must be a non-empty list of integers")
    if not isinstance(options, ModeConnectivityOptions):
        raise OptionError("options", f"must be resolve_options()'s result, got {type(options).__name__}")
    o, dev, S = options, torch.device(device), len(seeds)
    start = time.perf_counter()
    X, Y, Xt, Yt = (d.to(dev) for d in problem_data(o))
    spec = _network(o.problem, o.input_dim, o.width, o.depth, o.activation)
    skip_index = None
    if o.network == "skip":
        g = run_generator("mc.skip_index", spec.input_dim, o.width, o.depth, o.skip_neurons)
        skip_index = choose_skip_neurons(spec, o.skip_neurons, generator=g).to(dev)
    n_plain, m = spec.num_parameters(), spec.output_dim

    def data_loss(theta, X, Y):  # the string-sampling protocol's loss, op for op, for a plain net
        if skip_index is None:
            out = forward(unflatten(theta, spec), X, spec)
        else:
            params = {**unflatten(theta[..., :n_plain], spec), "V": theta[n_plain:].reshape(m, -1)}
            out = skip_forward(params, X, spec, skip_index)
        err = out - Y
        return err.abs().mean() if o.loss == "mae" else 0.5 * (err * err).sum(-1).mean()

    ends = torch.cat([initial_points(o, spec, seeds, "A"), initial_points(o, spec, seeds, "B")]).to(dev)  # (2S, P)
    trained = train(data_loss, ends, X.expand(2 * S, *X.shape), Y.expand(2 * S, *Y.shape), spec=o.endpoint)
    ends, end_iters = trained.theta, trained.iterations.cpu()
    vloss = vmap(data_loss, in_dims=(0, None, None))
    train_l, test_l = vloss(ends, X, Y).cpu(), vloss(ends, Xt, Yt).cpu()
    target = o.string.alpha * o.threshold
    finite = torch.isfinite(train_l[:S]) & torch.isfinite(train_l[S:])
    ok = finite & (train_l[:S] < target * (1 + 1e-12)) & (train_l[S:] < target * (1 + 1e-12))
    good = torch.nonzero(ok).flatten().tolist()
    A, B = ends[:S][good], ends[S:][good]  # (G, P)
    results: dict[int, dict] = {i: {} for i in good}
    curve_s = 0.0
    if good:
        curve_start = time.perf_counter()
        c = o.curve
        t_eval = torch.linspace(0.0, 1.0, c.eval_points, dtype=ends.dtype, device=dev)
        seg = path_losses(data_loss, "segment", A, A, B, t_eval, X, Y).cpu()  # (G, T)
        cell_key = (o.problem, o.network, spec.input_dim, o.width, o.depth, o.activation, o.threshold)
        for kind in CURVES:
            draws = torch.stack(
                [
                    torch.rand(
                        c.steps,
                        c.t_samples,
                        generator=run_generator("mc.curve_t", *cell_key, kind, seeds[i]),
                        dtype=ends.dtype,
                    )
                    for i in good
                ]
            ).to(dev)  # (G, steps, k)
            bend, last = train_curves(data_loss, kind, A, B, draws, X, Y, lr=c.lr)
            along = path_losses(data_loss, kind, A, bend, B, t_eval, X, Y).cpu()  # (G, T)
            bar = barrier(along)
            dist = torch.linalg.vector_norm(bend - 0.5 * (A + B), dim=-1).cpu()
            for j, i in enumerate(good):
                results[i].update(
                    {
                        f"{kind}_losses": along[j].tolist(),
                        f"{kind}_barrier": float(bar[j]),
                        f"{kind}_connected": bool(bar[j] < c.barrier_tol),
                        f"{kind}_train_loss": float(last[j]),
                        f"{kind}_bend_offset": float(dist[j]),
                    }
                )
        seg_bar = barrier(seg)
        for j, i in enumerate(good):
            results[i].update(
                segment_losses=seg[j].tolist(),
                segment_barrier=float(seg_bar[j]),
                segment_connected=bool(seg_bar[j] < c.barrier_tol),
            )
        if o.plane.enabled:
            _planes(o, data_loss, spec, seeds, good, A, B, X, Y, results)
        curve_s = (time.perf_counter() - curve_start) / len(good)
    prepare_s = (time.perf_counter() - start) / S - (curve_s * len(good) / S)

    records = []
    for i, seed in enumerate(seeds):
        la, lb = float(train_l[i]), float(train_l[S + i])
        rec = {
            "seed": seed,
            "final_loss": max(la, lb),
            "grad_norm": float("nan"),
            "iterations": int(end_iters[i] + end_iters[S + i]),
            "endpoint_train_losses": [la, lb],
            "endpoint_test_losses": [float(test_l[i]), float(test_l[S + i])],
            "endpoint_iterations": [int(end_iters[i]), int(end_iters[S + i])],
            "problem": o.problem,
            "threshold": o.threshold,
            "network": o.network,
            "width": o.width,
            "depth": o.depth,
            "activation": o.activation,
            "init": o.init,
            "loss": o.loss,
            "n_train": o.n_train,
            "n_test": o.n_test,
            "input_dim": o.input_dim,
            "teacher_width": o.teacher_width,
            "data_seed": o.data_seed,
            "skip_neurons": o.skip_neurons,
            "dss": o.dss,
            "device": str(dev),
            **{f"string_{k}": v for k, v in asdict(o.string).items()},
            **{f"endpoint_{k}": v for k, v in asdict(o.endpoint).items()},
            **{f"curve_{k}": v for k, v in asdict(o.curve).items()},
            **{f"plane_{k}": v for k, v in asdict(o.plane).items()},
            "status": "global" if ok[i] else ("diverged" if not finite[i] else "not_converged"),
            **results.get(i, {}),
        }
        dss_s = 0.0
        if ok[i] and o.dss:
            dss = dynamic_string_sampling(
                data_loss, ends[i], ends[S + i], X, Y, spec=o.string, bead_training=o.endpoint
            )
            rec.update({k: dss[k] for k in DSS_KEYS})
            dss_s = dss["dss_wall_s"]
        rec["wall_s"] = prepare_s + (curve_s if ok[i] else 0.0) + dss_s
        records.append(rec)
    return records


#: what a record keeps of DSS's outcome (:func:`dynamic_string_sampling`)
DSS_KEYS = ("dss_connected", "dss_beads", "dss_rounds", "dss_max_interp_loss", "dss_normalized_length", "dss_wall_s")


def _planes(o, data_loss, spec, seeds, good, A, B, X, Y, results) -> None:
    """The third solutions (one batch) and, per pair whose third reached the target, the
    plane's losses and its minimax-path barrier between A and B."""
    S3 = [seeds[i] for i in good]
    third0 = initial_points(o, spec, S3, "C").to(A.device)
    res = train(data_loss, third0, X.expand(len(good), *X.shape), Y.expand(len(good), *Y.shape), spec=o.endpoint)
    third_l = vmap(data_loss, in_dims=(0, None, None))(res.theta, X, Y).cpu()
    grid = o.plane.grid(dtype=A.dtype, device=A.device)
    one, zero = o.plane.node(1.0), o.plane.node(0.0)
    for j, i in enumerate(good):
        rec = results[i]
        rec["plane_third_loss"] = float(third_l[j])
        if not float(third_l[j]) < o.string.alpha * o.threshold * (1 + 1e-12):
            continue  # V.3 is about three solutions: no plane when the third is not one
        values = plane_losses(data_loss, A[j], B[j], res.theta[j], grid, X, Y).cpu()  # (G, G)
        table = values.tolist()
        top = minimax_path(table, (one, zero), (zero, one))
        rec["plane_losses"] = table
        rec["plane_barrier"] = top - 0.5 * (table[one][zero] + table[zero][one])
        rec["v3_holds"] = bool(rec["plane_barrier"] > o.curve.barrier_tol)

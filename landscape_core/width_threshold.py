"""Width threshold of deep networks: spurious stationary points and last-layer rank.

protocols.md section 2 / survey sections IV-VI. For each run (seed): draw a data set of
``n_samples`` points and a network of the given width / depth / activation, train it to a
stationary point, and record

- ``status``: ``global`` (loss < ``loss_tol``), ``spurious`` (converged, loss >= loss_tol,
  smallest Hessian eigenvalue >= -eig_margin), ``saddle`` (converged, a Hessian eigenvalue
  < -eig_margin), ``not_converged`` (cap or stalled line search), ``diverged``;
- the smallest and largest Hessian eigenvalue (exact up to ``exact_hessian_max_params``
  parameters, Lanczos above; ``hessian_method`` says which);
- the numerical rank of Z_{L-1}(X) (n x width) at initialisation and at the end, with the
  default tolerance (sigma_max * max(shape) * eps) and a looser relative one, its smallest
  singular value and both tolerances; ``full_rank`` = (rank == min(n, width));
- optionally the rank of the NTK Gram matrix J J^T (survey Claim VI.3): ``ntk_gram_rank``
  and ``ntk_full_rank`` (= n m), null when ``probes.ntk_rank`` is off.

A "global" ending means zero training loss up to ``loss_tol``, the meaning the survey's
theorems use for width >= n; below that width the global minimum need not be zero, which
is exactly what the threshold table shows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

import torch
from torch.func import jacrev, vmap

from landscape_core.data import DataSpec, make_dataset
from landscape_core.errors import OptionError
from landscape_core.networks import MLPSpec, flatten, forward, init_parameters, last_hidden, unflatten
from landscape_core.probes import hessian_extremes, numerical_rank, numerical_ranks
from landscape_core.seeding import run_generator
from landscape_core.training import TrainSpec, train

LOSSES = ("square", "cross_entropy")


@dataclass(frozen=True)
class ProbeSpec:
    loss_tol: float = 1e-6  # global when the training loss is below this
    eig_margin: float = 1e-6  # saddle when the smallest Hessian eigenvalue < -eig_margin
    rank_rtol: float = 1e-6  # the looser rank tolerance, relative to sigma_max
    exact_hessian_max_params: int = 3000
    lanczos_steps: int = 80
    ntk_rank: bool = False  # also compute the rank of the NTK Gram matrix (record: ntk_gram_rank)

    def validate(self) -> None:
        for name in ("loss_tol", "rank_rtol"):
            if not getattr(self, name) > 0:
                raise OptionError(f"probes.{name}", f"must be > 0, got {getattr(self, name)!r}")
        if self.eig_margin < 0:
            raise OptionError("probes.eig_margin", f"must be >= 0, got {self.eig_margin!r}")
        for name, minimum in (("exact_hessian_max_params", 0), ("lanczos_steps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise OptionError(f"probes.{name}", f"must be an integer >= {minimum}, got {value!r}")


def _loss_fn(spec: MLPSpec, loss: str):
    if loss == "square":

        def fn(theta, X, Y):  # 1/(2n) sum_i ||f(x_i) - y_i||^2
            out = forward(unflatten(theta, spec), X, spec)
            return 0.5 * ((out - Y) ** 2).sum(-1).mean()

    elif loss == "cross_entropy":

        def fn(theta, X, Y):  # mean cross-entropy, integer labels
            out = forward(unflatten(theta, spec), X, spec)
            return torch.nn.functional.cross_entropy(out, Y)

    else:
        raise OptionError("loss", f"{loss!r} is not one of {', '.join(LOSSES)}")
    return fn


def _rank_columns(prefix: str, Z: torch.Tensor, rtol: float) -> dict[str, list]:
    """Rank probes of a batch of feature matrices Z (S, n, width)."""
    default, loose = numerical_ranks(Z, rtols=(None, rtol))
    full = min(Z.shape[-2], Z.shape[-1])
    return {
        f"{prefix}last_layer_rank": default.rank.tolist(),
        f"{prefix}last_layer_rank_loose": loose.rank.tolist(),
        f"{prefix}last_layer_sigma_min": default.sigma_min.tolist(),
        f"{prefix}last_layer_rank_tol": default.tol.tolist(),
        f"{prefix}last_layer_rank_tol_loose": loose.tol.tolist(),
        f"{prefix}full_rank": (default.rank == full).tolist(),
    }


@dataclass(frozen=True)
class WidthThresholdOptions:
    """Every option of one cell, resolved and validated (see :func:`resolve_options`)."""

    model: MLPSpec
    data: DataSpec
    train: TrainSpec
    probes: ProbeSpec
    loss: str
    init: str

    @property
    def n_samples(self) -> int:
        return self.data.n_samples

    def columns(self) -> dict:
        """The cell's configuration as flat record columns (every record carries them).

        ``width, depth, activation, n_samples, width_over_n, num_params, input_dim,
        output_dim, loss, init, output_bias``, ``data`` (the data set's name) and
        ``data_<field>``, ``optimizer`` (its name) and ``optimizer_<field>``, and the probe
        settings under their own names (``loss_tol``, ``eig_margin``, ``rank_rtol``, ...).
        """
        spec, dspec = self.model, self.data
        return {
            "width": spec.width,
            "depth": spec.depth,
            "activation": spec.activation,
            "n_samples": dspec.n_samples,
            "width_over_n": spec.width / dspec.n_samples,
            "num_params": spec.num_parameters(),
            "input_dim": spec.input_dim,
            "output_dim": spec.output_dim,
            "loss": self.loss,
            "init": self.init,
            "output_bias": spec.output_bias,
            "data": dspec.name,
            **{f"data_{k}": v for k, v in asdict(dspec).items() if k not in ("name", "n_samples")},
            **{("optimizer" if k == "optimizer" else f"optimizer_{k}"): v for k, v in asdict(self.train).items()},
            **asdict(self.probes),
        }


INITS = ("lecun", "he", "uniform")


def resolve_options(
    *,
    width: int,
    depth: int,
    activation: str,
    n_samples: int,
    data: dict | None = None,
    optimizer: dict | None = None,
    probes: dict | None = None,
    loss: str = "square",
    init: str = "lecun",
    output_bias: bool = False,
) -> WidthThresholdOptions:
    """Validate the options of :func:`run_width_threshold` and resolve their defaults (the
    one place they are checked).

    Raises ``OptionError(field, message)`` (its text ``"<field>: <what is wrong>"``); the
    field is ``width``, ``depth``, ``activation``, ``loss``, ``init``, ``data.<key>``,
    ``optimizer.<key>`` or ``probes.<key>`` (``input_dim`` / ``output_dim`` of the model
    come from the data).
    ``optimizer.stop_loss = 0`` resolves to ``probes.loss_tol`` (stop once global).
    """
    data_kw = dict(data or {})
    data_kw["n_samples"] = n_samples
    data_kw.setdefault("classification", loss == "cross_entropy")
    _check_fields("data", data_kw, DataSpec)
    dspec = DataSpec(**data_kw)
    dspec.validate()
    opt_kw = dict(optimizer or {})
    if "name" in opt_kw:
        opt_kw["optimizer"] = opt_kw.pop("name")
    _check_fields("optimizer", opt_kw, TrainSpec)
    tspec = TrainSpec(**opt_kw)
    pspec_kw = dict(probes or {})
    _check_fields("probes", pspec_kw, ProbeSpec)
    pspec = ProbeSpec(**pspec_kw)
    pspec.validate()
    if loss not in LOSSES:
        raise OptionError("loss", f"{loss!r} is not one of {', '.join(LOSSES)}")
    if init not in INITS:
        raise OptionError("init", f"{init!r} is not one of {', '.join(INITS)}")
    if not isinstance(output_bias, bool):
        raise OptionError("output_bias", f"must be true or false, got {output_bias!r}")
    if loss == "square" and dspec.classification:
        raise OptionError("data.classification", "the square loss needs regression targets")
    if loss == "cross_entropy" and not dspec.classification:
        raise OptionError("data.classification", "the cross-entropy loss needs class labels (classification true)")
    tspec.validate()
    if tspec.stop_loss == 0.0:
        tspec = TrainSpec(**{**asdict(tspec), "stop_loss": pspec.loss_tol})  # stop once global
    spec = MLPSpec(dspec.feature_dim(), width, depth, dspec.target_dim(), activation, output_bias)
    spec.validate()
    return WidthThresholdOptions(model=spec, data=dspec, train=tspec, probes=pspec, loss=loss, init=init)


def run_width_threshold(
    options: WidthThresholdOptions, *, seeds: Iterable[int], device: str | torch.device = "cpu"
) -> list[dict]:
    """Train one cell's seeds as one batch and probe them; one record per seed.

    ``options``: the cell, resolved and validated by :func:`resolve_options` (its
    arguments: ``data`` fields of :class:`~landscape_core.data.DataSpec`, ``optimizer``
    fields of :class:`~landscape_core.training.TrainSpec`, ``probes`` fields of
    :class:`ProbeSpec`). The data set of a run is drawn from a generator seeded by (data
    spec, seed) and its initial weights from (architecture, init, seed): each seed is an
    independent draw of both. Three lines from a notebook::

        options = resolve_options(width=16, depth=2, activation="tanh", n_samples=8)
        records = run_width_threshold(options, seeds=range(4))
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise OptionError("seeds", "must be a non-empty list of integers")
    if not isinstance(options, WidthThresholdOptions):
        got = type(options).__name__
        raise OptionError("options", f"must be the WidthThresholdOptions of resolve_options(), got {got}")
    spec, dspec, tspec, pspec = options.model, options.data, options.train, options.probes
    loss, init, n_samples = options.loss, options.init, options.n_samples

    dev = torch.device(device)
    start = time.perf_counter()
    Xs, Ys, thetas = [], [], []
    # Seeds come from explicitly named values (never "all fields of a dataclass", which
    # would change every seed when a field is added). The activation is left out of the
    # init seed on purpose: activations compared at the same seed share initial weights.
    data_key = (
        "width_threshold.data",
        dspec.name,
        dspec.n_samples,
        dspec.input_dim,
        dspec.output_dim,
        dspec.classification,
        dspec.teacher_width,
        dspec.teacher_depth,
        dspec.teacher_activation,
        dspec.noise,
    )
    init_key = (
        "width_threshold.init",
        spec.input_dim,
        spec.width,
        spec.depth,
        spec.output_dim,
        spec.output_bias,
        spec.bias,
        init,
    )
    for seed in seeds:
        X, Y = make_dataset(dspec, generator=run_generator(*data_key, seed))
        Wg = run_generator(*init_key, seed)
        thetas.append(flatten(init_parameters(spec, generator=Wg, init=init), spec))
        Xs.append(X)
        Ys.append(Y)
    X, Y, theta0 = torch.stack(Xs).to(dev), torch.stack(Ys).to(dev), torch.stack(thetas).to(dev)

    loss_fn = _loss_fn(spec, loss)
    feats = vmap(lambda t, x: last_hidden(unflatten(t, spec), x, spec))
    init_rank = _rank_columns("init_", feats(theta0, X), pspec.rank_rtol)
    result = train(loss_fn, theta0, X, Y, spec=tspec)
    final_rank = _rank_columns("", feats(result.theta, X), pspec.rank_rtol)
    finite = torch.isfinite(result.theta).all(-1) & torch.isfinite(result.loss)
    lo = torch.full((len(seeds),), float("nan"), dtype=theta0.dtype, device=dev)
    hi = lo.clone()
    method = "none"
    if bool(finite.any()):
        lo_f, hi_f, method = hessian_extremes(
            loss_fn,
            result.theta[finite],
            X[finite],
            Y[finite],
            exact_max_params=pspec.exact_hessian_max_params,
            lanczos_steps=pspec.lanczos_steps,
            generator=run_generator("width_threshold.lanczos", seeds[0]),
        )
        lo[finite], hi[finite] = lo_f, hi_f
    ntk = None
    if pspec.ntk_rank:
        ntk = ntk_gram_rank(spec, result.theta, X).tolist()
    wall = time.perf_counter() - start

    config = options.columns()
    records = []
    for i, seed in enumerate(seeds):
        f = float(result.loss[i])
        min_eig = float(lo[i])
        if bool(result.diverged[i]) or not math.isfinite(f):
            status = "diverged"
        elif f < pspec.loss_tol:
            status = "global"
        elif not bool(result.converged[i]):
            status = "not_converged"
        elif min_eig < -pspec.eig_margin:
            status = "saddle"
        else:
            status = "spurious"
        rec = {
            "seed": seed,
            "status": status,
            "final_loss": f,
            "grad_norm": float(result.grad_norm[i]),
            "iterations": int(result.iterations[i]),
            "stalled": bool(result.stalled[i]),
            "min_eig": min_eig,
            "max_eig": float(hi[i]),
            "hessian_method": method,
            **config,
            "wall_s": wall / len(seeds),
            "device": str(dev),
        }
        for cols in (init_rank, final_rank):
            for key, values in cols.items():
                rec[key] = values[i]
        # rank of the NTK Gram matrix J J^T (n m x n m) when probes.ntk_rank is on, else null
        rec["ntk_gram_rank"] = None if ntk is None else ntk[i]
        rec["ntk_full_rank"] = None if ntk is None else ntk[i] == spec.output_dim * n_samples
        records.append(rec)
    return records


def ntk_gram_rank(spec: MLPSpec, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Numerical rank (default tolerance) of the empirical NTK Gram matrix J J^T per run.

    J is the Jacobian of the n x m outputs with respect to all parameters, (n m, P);
    the Gram matrix is (n m, n m). theta: (S, P), X: (S, n, d) -> (S,) int64.
    """

    def jac(t, x):
        return jacrev(lambda p: forward(unflatten(p, spec), x, spec).reshape(-1))(t)  # (n m, P)

    J = vmap(jac)(theta, X)
    return numerical_rank(J @ J.transpose(-1, -2)).rank


def _check_fields(group: str, values: dict, cls) -> None:
    allowed = {f.name for f in fields(cls)}
    if group == "optimizer":
        allowed = allowed | {"name"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise OptionError(f"{group}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")

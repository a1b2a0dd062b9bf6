"""The landscape seen empirically: monotone interpolation (Conjecture V.1) and filter-normalized
2-D slices and their basins (Conjecture V.2), on the project's plain and skip MLPs.

Survey section V-A (global_landscape_survey.txt); lecture notes, "A modern view". One run =
one seed of one cell: draw a data set (:mod:`landscape_core.data`: teacher, random labels,
digits...), a network (:mod:`landscape_core.networks`; ``architecture=skip`` adds
connections from *every* hidden neuron straight to the outputs, f = f_plain + V psi(x), psi
the M = width x (depth - 1) hidden neurons' outputs, as the skip networks of Nguyen,
Mukkamala & Hein 2019 with all neurons chosen), train it full batch (the optimizer group,
:func:`landscape_core.training.train`), then probe its training loss F:

- ``probe=interpolation`` (Goodfellow et al. 2015): F on ``points`` equally spaced points of
  the segment from the initial point theta_0 to the solution theta_1, and on the segment
  between theta_1 and a second solution of the same data (trained from a second initial
  point of the same seed). Per run: the largest bump above the running minimum, where it
  sits (t), ``monotone`` = bump <= monotone_tol x F(theta_0) (a relative tolerance), the
  pair segment's barrier (max minus the mean of its two ends).
- ``probe=slice`` (Li et al. 2018): F(theta_1 + a v1 + b v2) on a ``grid x grid`` grid of
  [-radius, radius]^2, v1, v2 ~ N(0, I) filter-normalized against theta_1. Per run: the
  number of sub-optimal basins (interior strict grid minima above the centre by more than
  basin_tol), ``basin_free``, the slice's largest value, its convex fraction.

Statuses: ``monotone`` / ``non_monotone`` (interpolation), ``basin_free`` / ``basins``
(slice), ``diverged`` (a non-finite trained loss: nothing probed). Whether training reached
zero loss is the column ``trained_global`` (F(theta_1) < loss_tol).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch.func import vmap

from landscape_core.data import DataSpec, make_dataset
from landscape_core.errors import OptionError
from landscape_core.loss_surfaces import (
    BIAS_DIRECTIONS,
    barrier,
    bumps,
    convex_fraction,
    count_basins,
    filter_normalize,
    grid_coordinates,
    line_losses,
    plane_losses,
    slice_memory_bytes,
)
from landscape_core.networks import MLPSpec, forward, hidden_features, init_parameters
from landscape_core.seeding import run_generator
from landscape_core.training import TrainSpec, train

PROBES = ("interpolation", "slice")
ARCHITECTURES = ("plain", "skip")
LOSSES = ("square", "cross_entropy")
INITS = ("lecun", "he")


@dataclass(frozen=True)
class SurfaceSpec:
    """Settings of the two probes (every one recorded per row under its own name)."""

    points: int = 101  # interpolation: points on each segment, t = 0, 1/(points-1), ..., 1
    grid: int = 51  # slice: grid x grid points on [-radius, radius]^2 (odd: the centre is a grid point)
    radius: float = 1.0  # slice: half-width of the grid, in units of the filter-normalized directions
    monotone_tol: float = 1e-4  # monotone when the largest bump <= monotone_tol x F(theta_0) (relative)
    basin_tol: float = 1e-3  # a grid minimum is sub-optimal when above the centre by more than this (absolute)
    convexity_tol: float = 1e-6  # a grid point is convex when its slice Hessian's smallest eigenvalue >= -this
    bias_directions: str = "zero"  # zero | copy (Li et al.'s code: biases not perturbed, or d_b = b)
    grid_batch: int = 256  # grid points per run evaluated in one kernel call
    max_memory_mb: float = 2048.0  # a slice whose estimated memory per run is above this is refused
    keep_surfaces: int = 2  # seeds < keep_surfaces store their whole slice (slice_values) for figures
    loss_tol: float = 1e-6  # trained_global when F(theta_1) < loss_tol (training also stops there)

    def validate(self) -> None:
        for name, minimum in (("points", 2), ("grid", 3), ("grid_batch", 1), ("keep_surfaces", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise OptionError(f"surface.{name}", f"must be an integer >= {minimum}, got {value!r}")
        for name in ("radius", "max_memory_mb", "loss_tol"):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise OptionError(f"surface.{name}", f"must be a number > 0, got {value!r}")
        for name in ("monotone_tol", "basin_tol", "convexity_tol"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise OptionError(f"surface.{name}", f"must be a number >= 0, got {value!r}")
        if self.bias_directions not in BIAS_DIRECTIONS:
            raise OptionError(
                "surface.bias_directions", f"{self.bias_directions!r} is not one of {', '.join(BIAS_DIRECTIONS)}"
            )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def model_shapes(spec: MLPSpec, architecture: str) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes: the plain network's, plus ``V`` (m, width x (depth - 1))
    for ``architecture=skip``."""
    shapes = dict(spec.shapes())
    if architecture == "skip":
        shapes["V"] = (spec.output_dim, spec.width * (spec.depth - 1))
    return shapes


def to_dict(theta: torch.Tensor, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """(..., P) -> dict of (..., *shape) views, in ``shapes`` order."""
    out, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = theta[..., offset : offset + size].reshape(*theta.shape[:-1], *shape)
        offset += size
    return out


def to_flat(params: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> torch.Tensor:
    """Inverse of :func:`to_dict`: dict of (..., *shape) -> (..., P)."""
    parts = []
    for name, shape in shapes.items():
        value = params[name]
        parts.append(value.reshape(*value.shape[: value.dim() - len(shape)], -1))
    return torch.cat(parts, dim=-1)


def model_forward(params: dict[str, torch.Tensor], X: torch.Tensor, spec: MLPSpec) -> torch.Tensor:
    """f(X) (n, m) of one model: the plain network, plus V psi(X) when ``params`` holds V
    (psi = every hidden neuron's output, layers concatenated)."""
    out = forward(params, X, spec)
    if "V" in params:
        out = out + torch.cat(hidden_features(params, X, spec), dim=-1) @ params["V"].T
    return out


def loss_function(spec: MLPSpec, architecture: str, loss: str):
    """F(theta (P,), X (n, d), Y) of one run: ``square`` 1/(2n) sum ||f(x_i) - y_i||^2, or the
    mean ``cross_entropy`` with integer labels."""
    shapes = model_shapes(spec, architecture)

    def fn(theta, X, Y):
        out = model_forward(to_dict(theta, shapes), X, spec)
        if loss == "square":
            return 0.5 * ((out - Y) ** 2).sum(-1).mean()
        return F.cross_entropy(out, Y)

    return fn


@dataclass(frozen=True)
class ProbeOptions:
    """Every option of one cell, resolved and validated (see :func:`resolve_options`)."""

    model: MLPSpec
    architecture: str
    probe: str
    data: DataSpec
    train: TrainSpec
    surface: SurfaceSpec
    loss: str
    init: str

    def num_params(self) -> int:
        return sum(math.prod(s) for s in model_shapes(self.model, self.architecture).values())

    def memory_bytes(self) -> int:
        """Estimated memory of one run's slice (:func:`slice_memory_bytes`); 0 for interpolation."""
        if self.probe != "slice":
            return 0
        spec = self.model
        return slice_memory_bytes(
            grid=self.surface.grid,
            grid_batch=self.surface.grid_batch,
            num_params=self.num_params(),
            n_samples=self.data.n_samples,
            neurons=spec.width * (spec.depth - 1) + spec.output_dim,
        )

    def columns(self) -> dict:
        """The cell's configuration as flat record columns: ``width, depth, activation,
        n_samples, architecture, probe, skip_M, num_params, input_dim, output_dim, loss,
        init, output_bias``, ``data`` and ``data_<field>``, ``optimizer`` and
        ``optimizer_<field>``, and the surface settings under their own names."""
        spec, dspec = self.model, self.data
        return {
            "width": spec.width,
            "depth": spec.depth,
            "activation": spec.activation,
            "n_samples": dspec.n_samples,
            "architecture": self.architecture,
            "probe": self.probe,
            "skip_M": spec.width * (spec.depth - 1) if self.architecture == "skip" else 0,
            "num_params": self.num_params(),
            "input_dim": spec.input_dim,
            "output_dim": spec.output_dim,
            "loss": self.loss,
            "init": self.init,
            "output_bias": spec.output_bias,
            "data": dspec.name,
            **{f"data_{k}": v for k, v in asdict(dspec).items() if k not in ("name", "n_samples")},
            **{("optimizer" if k == "optimizer" else f"optimizer_{k}"): v for k, v in asdict(self.train).items()},
            **asdict(self.surface),
        }


def resolve_options(
    *,
    width: int,
    depth: int,
    activation: str,
    n_samples: int,
    architecture: str = "plain",
    probe: str = "interpolation",
    data: dict | None = None,
    optimizer: dict | None = None,
    surface: dict | None = None,
    loss: str = "square",
    init: str = "lecun",
    output_bias: bool = False,
) -> ProbeOptions:
    """Validate the options of :func:`run_landscape_probes` and resolve their defaults (the one
    place they are checked; nothing runs). Raises OptionError with the field ``width``,
    ``depth``, ``activation``, ``architecture``, ``probe``, ``loss``, ``init``,
    ``output_bias``, ``data.<key>``, ``optimizer.<key>`` or ``surface.<key>``; a slice whose
    estimated memory per run (:meth:`ProbeOptions.memory_bytes`) is above
    ``surface.max_memory_mb`` is refused as ``surface.grid``. ``optimizer.stop_loss = 0``
    resolves to ``surface.loss_tol``."""
    if architecture not in ARCHITECTURES:
        raise OptionError("architecture", f"{architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    if probe not in PROBES:
        raise OptionError("probe", f"{probe!r} is not one of {', '.join(PROBES)}")
    if loss not in LOSSES:
        raise OptionError("loss", f"{loss!r} is not one of {', '.join(LOSSES)}")
    if init not in INITS:
        raise OptionError("init", f"{init!r} is not one of {', '.join(INITS)}")
    if not isinstance(output_bias, bool):
        raise OptionError("output_bias", f"must be true or false, got {output_bias!r}")
    data_kw = {**dict(data or {}), "n_samples": n_samples}
    data_kw.setdefault("classification", loss == "cross_entropy")
    _check_fields("data", data_kw, DataSpec)
    dspec = DataSpec(**data_kw)
    dspec.validate()
    if loss == "square" and dspec.classification:
        raise OptionError("data.classification", "the square loss needs regression targets (classification false)")
    if loss == "cross_entropy" and not dspec.classification:
        raise OptionError("data.classification", "the cross-entropy loss needs class labels (classification true)")
    opt_kw = dict(optimizer or {})
    if "name" in opt_kw:
        opt_kw["optimizer"] = opt_kw.pop("name")
    _check_fields("optimizer", opt_kw, TrainSpec)
    tspec = TrainSpec(**opt_kw)
    tspec.validate()
    _check_fields("surface", dict(surface or {}), SurfaceSpec)
    sspec = SurfaceSpec(**dict(surface or {}))
    sspec.validate()
    if tspec.stop_loss == 0.0:
        tspec = TrainSpec(**{**asdict(tspec), "stop_loss": sspec.loss_tol})  # stop once global
    spec = MLPSpec(dspec.feature_dim(), width, depth, dspec.target_dim(), activation, output_bias)
    spec.validate()
    if depth < 2:
        raise OptionError("depth", f"must be >= 2 (weight layers; 2 = one hidden layer), got {depth!r}")
    options = ProbeOptions(spec, architecture, probe, dspec, tspec, sspec, loss, init)
    need = options.memory_bytes()
    if need > sspec.max_memory_mb * 2**20:
        raise OptionError(
            "surface.grid",
            f"a {sspec.grid} x {sspec.grid} slice needs about {need / 2**20:.0f} MB per run "
            f"(grid_batch {sspec.grid_batch}, {options.num_params()} parameters, n = {dspec.n_samples}), "
            f"above max_memory_mb = {sspec.max_memory_mb:g}: lower surface.grid or surface.grid_batch",
        )
    return options


def _check_fields(group: str, values: dict, cls) -> None:
    allowed = {f.name for f in fields(cls)} | ({"name"} if group == "optimizer" else set())
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise OptionError(f"{group}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")


def initial_points(options: ProbeOptions, seed: int, draw: int = 0) -> torch.Tensor:
    """theta_0 (P,) of one seed: the plain weights from (architecture of the plain network,
    init, seed, draw) (so plain and skip runs of a seed share them), V ~ N(0, 1/M) from its
    own generator; ``draw`` = 1 is the second initial point of the interpolation's pair."""
    spec = options.model
    key = ("landscape_probes.init", spec.input_dim, spec.width, spec.depth, spec.output_dim, spec.output_bias)
    params = init_parameters(spec, generator=run_generator(*key, options.init, seed, draw), init=options.init)
    if options.architecture == "skip":
        M = spec.width * (spec.depth - 1)
        g = run_generator("landscape_probes.skip", *key, seed, draw)
        params["V"] = torch.randn(spec.output_dim, M, generator=g, dtype=torch.float64) / math.sqrt(M)
    return to_flat(params, model_shapes(spec, options.architecture))


def directions(options: ProbeOptions, theta: torch.Tensor, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """v1, v2 (S, P): Gaussian directions (drawn on the CPU from a generator of the seed)
    filter-normalized against the solutions theta (S, P) (:func:`filter_normalize`)."""
    shapes = model_shapes(options.model, options.architecture)
    raw = []
    for seed in seeds:
        g = run_generator("landscape_probes.directions", seed)
        raw.append(torch.randn(2, theta.shape[-1], generator=g, dtype=theta.dtype))  # (2, P)
    d = torch.stack(raw).to(theta.device)  # (S, 2, P)
    base = to_dict(theta, shapes)
    out = []
    for k in range(2):
        normed = filter_normalize(to_dict(d[:, k], shapes), base, bias=options.surface.bias_directions)
        out.append(to_flat(normed, shapes))
    return out[0], out[1]


def run_landscape_probes(
    options: ProbeOptions, *, seeds: Iterable[int], device: str | torch.device = "cpu"
) -> list[dict]:
    """Train one cell's seeds as one batch and probe them (module docstring); one record per
    seed. Data from (data settings, seed), initial points from (architecture, init, seed),
    directions from the seed: a run's record does not depend on its chunk. Three lines::

        options = resolve_options(width=8, depth=2, activation="tanh", n_samples=8, probe="slice")
        records = run_landscape_probes(options, seeds=range(4))
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise OptionError("seeds", "must be a non-empty list of integers")
    if not isinstance(options, ProbeOptions):
        raise OptionError("options", f"must be the ProbeOptions of resolve_options(), got {type(options).__name__}")
    spec, dspec, sspec = options.model, options.data, options.surface
    dev = torch.device(device)
    start = time.perf_counter()
    data_key = ("landscape_probes.data", *(getattr(dspec, f.name) for f in fields(DataSpec)))
    Xs, Ys = zip(*(make_dataset(dspec, generator=run_generator(*data_key, seed)) for seed in seeds))
    X, Y = torch.stack(Xs).to(dev), torch.stack(Ys).to(dev)
    pair = options.probe == "interpolation"
    theta0 = torch.stack([initial_points(options, seed) for seed in seeds]).to(dev)  # (S, P)
    loss_fn = loss_function(spec, options.architecture, options.loss)
    if pair:  # the second initial point of each seed, trained in the same batch on the same data
        theta0b = torch.stack([initial_points(options, seed, 1) for seed in seeds]).to(dev)
        result = train(loss_fn, torch.cat([theta0, theta0b]), torch.cat([X, X]), torch.cat([Y, Y]), spec=options.train)
    else:
        result = train(loss_fn, theta0, X, Y, spec=options.train)
    S = len(seeds)
    theta1, loss1 = result.theta[:S], result.loss[:S]
    finite = torch.isfinite(theta1).all(-1) & torch.isfinite(loss1)
    if pair:
        finite = finite & torch.isfinite(result.theta[S:]).all(-1)
    probe = (
        _interpolation(options, loss_fn, theta0, result, X, Y)
        if pair
        else _slice(options, loss_fn, theta1, X, Y, seeds)
    )
    wall = time.perf_counter() - start

    config = options.columns()
    records = []
    for i, seed in enumerate(seeds):
        ok = bool(finite[i]) and not bool(result.diverged[i])
        rec = {
            "seed": seed,
            "final_loss": float(loss1[i]),
            "grad_norm": float(result.grad_norm[i]),
            "iterations": int(result.iterations[i]),
            "trained_global": bool(loss1[i] < sspec.loss_tol),
            **config,
            "wall_s": wall / S,
            "device": str(dev),
        }
        for key, values in probe.items():
            rec[key] = values[i] if ok else None
        if not ok:
            rec["status"] = "diverged"
        elif pair:
            rec["status"] = "monotone" if rec["monotone"] else "non_monotone"
        else:
            rec["status"] = "basin_free" if rec["basin_free"] else "basins"
            if seed >= sspec.keep_surfaces:
                rec["slice_values"] = None
        records.append(rec)
    return records


def _interpolation(options: ProbeOptions, loss_fn, theta0, result, X, Y) -> dict[str, list]:
    """The interpolation probe's columns (lists over the S runs)."""
    sspec, S = options.surface, theta0.shape[0]
    theta1, theta1b = result.theta[:S], result.theta[S:]
    safe = torch.nan_to_num(theta1, nan=0.0, posinf=0.0, neginf=0.0)
    safe_b = torch.nan_to_num(theta1b, nan=0.0, posinf=0.0, neginf=0.0)
    ts = torch.linspace(0.0, 1.0, sspec.points, dtype=theta0.dtype, device=theta0.device)  # (T,)
    curve = line_losses(loss_fn, theta0, safe, ts, X, Y, grid_batch=sspec.grid_batch)  # (S, T)
    pair = line_losses(loss_fn, safe, safe_b, ts, X, Y, grid_batch=sspec.grid_batch)  # (S, T)
    height, at = bumps(curve, ts)
    start_loss = curve[:, 0]
    monotone = height <= sspec.monotone_tol * start_loss.abs()
    return {
        "init_loss": start_loss.tolist(),
        "monotone": monotone.tolist(),
        "max_bump": height.tolist(),
        "relative_bump": (height / start_loss.abs()).tolist(),
        "bump_t": at.tolist(),
        "interp_curve": curve.tolist(),
        "pair_final_loss": result.loss[S:].tolist(),
        "pair_barrier": barrier(pair).tolist(),
        "pair_curve": pair.tolist(),
    }


def _slice(options: ProbeOptions, loss_fn, theta1, X, Y, seeds: list[int]) -> dict[str, list]:
    """The slice probe's columns (lists over the S runs). Runs are evaluated in sub-batches
    that keep the estimated memory (:meth:`ProbeOptions.memory_bytes`) under max_memory_mb."""
    sspec, S = options.surface, theta1.shape[0]
    safe = torch.nan_to_num(theta1, nan=0.0, posinf=0.0, neginf=0.0)
    v1, v2 = directions(options, safe, seeds)
    coords = grid_coordinates(sspec.grid, sspec.radius, dtype=theta1.dtype, device=theta1.device)  # (G, 2)
    per_kernel = max(1, int(sspec.max_memory_mb * 2**20 // max(options.memory_bytes(), 1)))
    values = torch.cat(
        [
            plane_losses(
                loss_fn,
                safe[i : i + per_kernel],
                v1[i : i + per_kernel],
                v2[i : i + per_kernel],
                coords,
                X[i : i + per_kernel],
                Y[i : i + per_kernel],
                grid_batch=sspec.grid_batch,
            )
            for i in range(0, S, per_kernel)
        ]
    ).reshape(S, sspec.grid, sspec.grid)  # (S, A, B)
    centre = vmap(loss_fn)(safe, X, Y)  # (S,) F(theta_1), the slice's centre
    basins = count_basins(values, centre, tol=sspec.basin_tol)
    spacing = 2 * sspec.radius / (sspec.grid - 1)
    return {
        "slice_centre": centre.tolist(),
        "slice_max": values.amax(dim=(1, 2)).tolist(),
        "slice_min": values.amin(dim=(1, 2)).tolist(),
        "n_basins": basins.tolist(),
        "basin_free": (basins == 0).tolist(),
        "convex_fraction": convex_fraction(values, spacing, tol=sspec.convexity_tol).tolist(),
        "slice_values": values.reshape(S, -1).tolist(),
    }

"""Numerical tests of the constructed points of :mod:`landscape_core.wide_bad_minima`.

Per run (seed) of a cell (width, depth, activation), at the constructed point theta*:

- (a) ``grad_norm`` = ||grad L(theta*)||_2 (float64; ~1e-16 expected);
- (b) ``final_loss`` = L(theta*) against ``trained_best_loss``: the smallest loss that
  training the same network (LeCun init, output bias, the ``optimizer``) reaches from
  ``train_starts`` random starts; ``suboptimal`` = final_loss > trained_best_loss + gap_tol;
  ``trained_bad_fraction`` = fraction of those starts ending with loss >= loss_tol (the
  width-threshold experiment's "not global");
- (c) ``min_eig`` / ``max_eig`` of the Hessian (exact eigvalsh up to
  ``exact_hessian_max_params`` parameters, Lanczos on Hessian-vector products above:
  ``hessian_method``); the perturbation test: L(theta* +- rho u) - L(theta*) for
  ``perturb_directions`` random unit directions u and radii logspace(radius_min, radius_max,
  radii) (``perturb_min_change``, ``perturb_decrease`` when below -perturb_tol), and
  descent (the ``optimizer``) from ``descent_starts`` points at radius ``descent_radius``
  (``descent_min_loss``; ``descent_lower`` when below final_loss - descent_tol), run to
  the iteration cap (``descent_grad_tol`` ~ 0: near a degenerate saddle the gradient is
  ~ radius^2);
- (d) the flat directions: ``tangent_residual`` = max ||H t|| / (max_eig ||t||) over
  random vectors t of the predicted tangent space (0 up to rounding when they are flat),
  ``normal_min_eig`` = smallest eigenvalue of H + max_eig P_T (P_T the projection onto the
  predicted tangent: the smallest curvature across it), and (exact method) ``kernel_dim`` =
  #{|lambda| <= kernel_rtol max_eig} against ``predicted_flat_dim``; ``flat_as_predicted``.

Status: ``not_critical`` (grad_norm > grad_tol), else ``saddle`` (a negative eigenvalue
below -eig_tol, a perturbation decrease or a lower descent), else ``global`` (not above
the trained loss), else ``suboptimal_min``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch.func import grad, jvp, vmap

from landscape_core.errors import OptionError
from landscape_core.networks import flatten, forward, init_parameters, unflatten
from landscape_core.probes import hessian_extremes
from landscape_core.seeding import run_generator
from landscape_core.training import TrainSpec, train
from landscape_core.wide_bad_minima import CONTROL, ConstructionSpec, construct, tangent_projection

STATUSES = ("suboptimal_min", "saddle", "global", "not_critical")


@dataclass(frozen=True)
class CheckSpec:
    grad_tol: float = 1e-10  # critical when ||grad|| <= this (float64)
    eig_tol: float = 1e-9  # a saddle when the smallest Hessian eigenvalue < -eig_tol
    kernel_rtol: float = 1e-12  # |lambda| <= kernel_rtol * max_eig counts as flat (the zeros are ~1e-17)
    perturb_directions: int = 16  # random unit directions, each with both signs
    radius_min: float = 1e-8
    radius_max: float = 1e-2
    radii: int = 7  # log-spaced radii
    perturb_tol: float = 1e-13  # a decrease below -perturb_tol is a descent (rounding is ~1e-17)
    descent_starts: int = 2  # descent from this many perturbed points
    descent_radius: float = 1e-6  # basins are small where the curvature across the flat set is small
    descent_tol: float = 1e-9  # lower when descent ends below final_loss - descent_tol
    descent_grad_tol: float = 1e-30  # the descent's own stopping gradient: ~0 runs it to the iteration cap
    # (a perturbed point near a degenerate saddle has a gradient ~ radius^2: any usual tolerance stops it at once)
    train_starts: int = 4  # random starts of the same network
    loss_tol: float = 1e-6  # a trained start is global (zero loss) below this
    gap_tol: float = 1e-6  # sub-optimal when final_loss > trained_best_loss + gap_tol
    exact_hessian_max_params: int = 2100
    lanczos_steps: int = 60

    def validate(self) -> None:
        for name in (
            "grad_tol",
            "kernel_rtol",
            "radius_min",
            "radius_max",
            "descent_radius",
            "descent_grad_tol",
            "loss_tol",
        ):
            if not getattr(self, name) > 0:
                raise OptionError(f"checks.{name}", f"must be > 0, got {getattr(self, name)!r}")
        for name in ("eig_tol", "perturb_tol", "descent_tol", "gap_tol"):
            if not getattr(self, name) >= 0:
                raise OptionError(f"checks.{name}", f"must be >= 0, got {getattr(self, name)!r}")
        for name in ("perturb_directions", "radii", "train_starts", "lanczos_steps", "exact_hessian_max_params"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name.startswith("exact") else 1):
                raise OptionError(f"checks.{name}", f"must be a positive integer, got {value!r}")
        if isinstance(self.descent_starts, bool) or not isinstance(self.descent_starts, int) or self.descent_starts < 0:
            raise OptionError("checks.descent_starts", f"must be an integer >= 0, got {self.descent_starts!r}")
        if self.radius_min > self.radius_max:
            raise OptionError("checks.radius_min", "must be <= checks.radius_max")


def _unit(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    u = torch.randn(*shape, generator=generator, dtype=torch.float64)
    return u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)


def run_wide_bad_minima(
    spec: ConstructionSpec,
    checks: CheckSpec,
    optimizer: TrainSpec,
    *,
    seeds: Iterable[int],
    device: str | torch.device = "cpu",
) -> list[dict]:
    """Construct one cell's points (batched over seeds) and test them; one record per seed.

    Every random draw comes from a generator seeded by (what it is for, the cell's
    architecture, seed): directions, starts and Lanczos start vectors.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise OptionError("seeds", "must be a non-empty list of integers")
    spec.validate()
    checks.validate()
    optimizer.validate()
    dev = torch.device(device)
    start = time.perf_counter()
    model = spec.model()
    c = construct(spec, seeds=seeds, device=dev)
    theta, X, Y = c.theta, c.X, c.Y  # (S, P), (S, n, d), (S, n, 1)
    S, P = theta.shape

    def loss(t, x, y):  # 1/(2n) sum_i (f(x_i) - y_i)^2
        return 0.5 * ((forward(unflatten(t, model), x, model) - y) ** 2).mean()

    f0 = vmap(loss)(theta, X, Y)  # (S,)
    gnorm = torch.linalg.vector_norm(vmap(grad(loss))(theta, X, Y), dim=-1)
    key = (spec.width, spec.depth, spec.activation, spec.n_samples, spec.input_dim)
    lo, hi, method = hessian_extremes(
        loss,
        theta,
        X,
        Y,
        exact_max_params=checks.exact_hessian_max_params,
        lanczos_steps=checks.lanczos_steps,
        generator=run_generator("wide_bad_minima.lanczos", *key, seeds[0]),
    )
    flat = _flat_directions(spec, checks, loss, theta, X, Y, hi, seeds, key)
    pert = _perturbation(checks, loss, theta, X, Y, f0, seeds, key)
    desc_min = torch.full((S,), float("nan"), dtype=theta.dtype, device=dev)
    if checks.descent_starts:
        K = checks.descent_starts
        u = torch.stack([_unit((K, P), run_generator("wide_bad_minima.descent", *key, s)) for s in seeds]).to(dev)
        starts = (theta[:, None] + checks.descent_radius * u).reshape(S * K, P)
        rep = {"X": X.repeat_interleave(K, 0), "Y": Y.repeat_interleave(K, 0)}
        descent_spec = TrainSpec(**{**asdict(optimizer), "grad_tol": checks.descent_grad_tol, "stop_loss": 0.0})
        res = train(loss, starts, rep["X"], rep["Y"], spec=descent_spec)
        desc_min = res.loss.reshape(S, K).nan_to_num(nan=float("inf")).amin(-1)
    # training the same network from random starts
    K = checks.train_starts
    inits = torch.stack(
        [
            flatten(init_parameters(model, generator=run_generator("wide_bad_minima.init", *key, s, k)), model)
            for s in seeds
            for k in range(K)
        ]
    ).to(dev)
    trained = train(
        loss, inits, X.repeat_interleave(K, 0), Y.repeat_interleave(K, 0), spec=_stop_at(optimizer, checks.loss_tol)
    )
    tl = trained.loss.reshape(S, K).nan_to_num(nan=float("inf"))
    wall = time.perf_counter() - start

    cols = {
        **{k: v for k, v in asdict(spec).items()},
        **asdict(checks),
        **{("optimizer" if k == "optimizer" else f"optimizer_{k}"): v for k, v in asdict(optimizer).items()},
        "num_params": P,
        "predicted_flat_dim": spec.predicted_flat_dim() if spec.activation != CONTROL else None,
        "point": "rank0" if spec.activation == CONTROL else "identical_neurons",
    }
    records = []
    for i, seed in enumerate(seeds):
        rec = {
            "seed": seed,
            "final_loss": float(f0[i]),
            "grad_norm": float(gnorm[i]),
            "iterations": int(trained.iterations.reshape(S, K)[i].max()),
            "min_eig": float(lo[i]),
            "max_eig": float(hi[i]),
            "hessian_method": method,
            "trained_best_loss": float(tl[i].min()),
            "trained_bad_fraction": float((tl[i] >= checks.loss_tol).double().mean()),
            "trained_above_point_fraction": float((tl[i] >= f0[i] - checks.gap_tol).double().mean()),
            "descent_min_loss": float(desc_min[i]),
            "condition_residual": float(c.condition_residual[i]),
            "second_order_max_eig": float(c.second_order_max_eig[i]),
            "reduced_min_eig": float(c.reduced_min_eig[i]),
            "min_abs_phi2": float(c.min_abs_phi2[i]),
            "residual_rms_used": float(c.residual_rms_used[i]),
            "draw": int(c.draw[i]) if c.draw is not None else 0,
            **{k: v[i] for k, v in flat.items()},
            **{k: v[i] for k, v in pert.items()},
            **cols,
            "wall_s": wall / S,
            "device": str(dev),
        }
        rec["suboptimal"] = rec["final_loss"] > rec["trained_best_loss"] + checks.gap_tol
        rec["perturb_decrease"] = rec["perturb_min_change"] < -checks.perturb_tol
        rec["descent_lower"] = bool(rec["descent_min_loss"] < rec["final_loss"] - checks.descent_tol)
        rec["condition_holds"] = (
            spec.activation != CONTROL and rec["second_order_max_eig"] < 0 and rec["reduced_min_eig"] > 0
        )
        descent = rec["min_eig"] < -checks.eig_tol or rec["perturb_decrease"] or rec["descent_lower"]
        rec["local_min_evidence"] = not descent
        if not rec["grad_norm"] <= checks.grad_tol:
            rec["status"] = "not_critical"
        elif descent:
            rec["status"] = "saddle"
        elif not rec["suboptimal"]:
            rec["status"] = "global"
        else:
            rec["status"] = "suboptimal_min"
        records.append(rec)
    return records


def _stop_at(optimizer: TrainSpec, loss_tol: float) -> TrainSpec:
    """The optimizer, stopping once a start is global (stop_loss = loss_tol when it is 0)."""
    if optimizer.stop_loss:
        return optimizer
    return TrainSpec(**{**asdict(optimizer), "stop_loss": loss_tol})


def _perturbation(checks, loss, theta, X, Y, f0, seeds, key) -> dict[str, list]:
    """min over directions (both signs) and radii of L(theta + rho u) - L(theta), per run and per radius."""
    S, P = theta.shape
    K = checks.perturb_directions
    u = torch.stack([_unit((K, P), run_generator("wide_bad_minima.perturb", *key, s)) for s in seeds]).to(theta.device)
    u = torch.cat([u, -u], 1)  # (S, 2K, P)
    radii = torch.logspace(math.log10(checks.radius_min), math.log10(checks.radius_max), checks.radii).tolist()
    vl = vmap(vmap(loss, in_dims=(0, None, None)))
    per_radius = []
    for rho in radii:
        change = vl(theta[:, None] + rho * u, X, Y) - f0[:, None]  # (S, 2K)
        per_radius.append(change.amin(-1))
    table = torch.stack(per_radius, -1)  # (S, radii)
    return {"perturb_min_change": table.amin(-1).tolist(), "perturb_min_change_by_radius": table.tolist()}


def _flat_directions(spec, checks, loss, theta, X, Y, hi, seeds, key) -> dict[str, list]:
    """tangent_residual, normal_min_eig, kernel_dim, flat_as_predicted (module docstring)."""
    S, P = theta.shape
    if spec.activation == CONTROL:
        none = [None] * S
        return {"tangent_residual": none, "normal_min_eig": none, "kernel_dim": none, "flat_as_predicted": none}
    scale = hi.clamp_min(torch.finfo(hi.dtype).tiny)  # (S,)

    def hvp(t, v, x, y):
        return jvp(lambda z: grad(loss)(z, x, y), (t,), (v,))[1]

    t_dirs = torch.stack([_unit((4, P), run_generator("wide_bad_minima.tangent", *key, s)) for s in seeds])
    t_dirs = tangent_projection(spec, t_dirs.to(theta.device))  # (S, 4, P)
    t_dirs = t_dirs / torch.linalg.vector_norm(t_dirs, dim=-1, keepdim=True)
    Ht = vmap(vmap(hvp, in_dims=(None, 0, None, None)))(theta, t_dirs, X, Y)
    tangent_res = torch.linalg.vector_norm(Ht, dim=-1).amax(-1) / scale

    def shifted(t, x, y, base, shift):  # L + shift/2 |P_T (t - base)|^2: Hessian H + shift P_T
        d = tangent_projection(spec, t - base)
        return loss(t, x, y) + 0.5 * shift * (d * d).sum()

    kernel = [None] * S
    if P <= checks.exact_hessian_max_params:
        from torch.func import hessian

        H = vmap(hessian(loss))(theta, X, Y)
        ev = torch.linalg.eigvalsh(0.5 * (H + H.transpose(-1, -2)))  # (S, P)
        kernel = (ev.abs() <= checks.kernel_rtol * scale[:, None]).sum(-1).tolist()
        Hs = vmap(hessian(shifted))(theta, X, Y, theta, scale)
        normal = torch.linalg.eigvalsh(0.5 * (Hs + Hs.transpose(-1, -2)))[:, 0]
    else:
        normal, _, _ = hessian_extremes(
            shifted,
            theta,
            X,
            Y,
            theta,
            scale,
            exact_max_params=0,
            lanczos_steps=checks.lanczos_steps,
            generator=run_generator("wide_bad_minima.normal", *key, seeds[0]),
        )
    predicted = spec.predicted_flat_dim()
    ok = []
    for i in range(S):
        good = bool(tangent_res[i] <= checks.kernel_rtol) and bool(normal[i] > checks.kernel_rtol * scale[i])
        if kernel[i] is not None:
            good = good and kernel[i] == predicted
        ok.append(good)
    return {
        "tangent_residual": tangent_res.tolist(),
        "normal_min_eig": normal.tolist(),
        "kernel_dim": kernel,
        "flat_as_predicted": ok,
    }

"""The single-neuron landscape of the survey's Proposition IV.1 (Sun et al., "The global
landscape of neural networks: an overview", section IV-A, Figure 2; protocols.md section 5).

    F(v, w) = (y - v phi(w x))^2,   x, y != 0,   (v, w) in R^2.

Proposition IV.1: F has no sub-optimal local minimum iff no zero t of phi (phi(t) = 0) is a
local minimum or a local maximum of phi. This module

(a) decides that condition from phi itself (:func:`activation_condition`): the zeros of phi
    on a range (sign changes refined by bisection, and interior local minima of |phi|
    refined by golden section, accepted when |phi| <= ``zero_tol``), then each zero's kind
    from the signs of phi on both sides of it (``minimum``: phi >= 0 around it, ``maximum``:
    phi <= 0, ``flat``: phi = 0 around it, i.e. both; ``crossing``: both signs, no extremum);
    nothing is written per activation;
(b) runs gradient descent from random starts, all runs of a chunk as one batch
    (:func:`run_single_neuron`), and classifies every endpoint (:func:`classify_endpoints`):
    ``diverged`` (non-finite, or |(v, w)|_inf > ``divergence_radius``), ``global``
    (F <= ``loss_tol``), ``not_converged`` (|grad F| > ``grad_tol`` after ``max_iterations``),
    else a critical point with F > 0: ``suboptimal_min`` when the smallest Hessian eigenvalue
    is >= -``eig_tol`` AND no perturbation (``perturb_directions`` random unit directions at
    each radius of ``perturb_radii``) lowers F by more than ``perturb_tol``; ``saddle``
    otherwise. The perturbation test is needed because these minima are not strict: the
    Hessian is singular along the flat set (relu: a whole half-plane; Figure 2: the line
    w = 1), so eigenvalues alone cannot tell a minimum from a degenerate saddle.

Derivatives: F's gradient and Hessian in closed form from phi, phi', phi'' (phi' and phi''
by ``torch.func.grad`` of the scalar activation, vmapped), tested against
``torch.func.hessian`` of F. Descent: steepest descent with an Armijo backtracking line
search (the largest step s = ``lr * 2^-j``, j = 0..``line_search_steps``-1, shortened so
that |s g| <= ``max_step``, with F(p - s g) <= F(p) - 1e-4 s |g|^2), so that quartic activations (t^2) do not blow up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F_
from torch.func import grad, vmap

from landscape_core.errors import OptionError
from landscape_core.seeding import run_generator

__all__ = [
    "ACTIVATIONS",
    "STATUSES",
    "SingleNeuronOptions",
    "activation_condition",
    "classify_endpoints",
    "loss",
    "loss_derivatives",
    "run_single_neuron",
]

Activation = Callable[[torch.Tensor], torch.Tensor]

#: the activations of the table, by name (t: the pre-activation w x). ``figure2`` is the
#: survey's Figure 2 activation -(t - 1)^2 / 8.
ACTIVATIONS: dict[str, Activation] = {
    "relu": torch.relu,
    "square": lambda t: t * t,
    "square_plus_one": lambda t: t * t + 1.0,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": F_.softplus,
    "leaky_relu": lambda t: F_.leaky_relu(t, 0.01),
    "elu": F_.elu,
    "gelu": F_.gelu,
    "swish": lambda t: t * torch.sigmoid(t),
    "figure2": lambda t: -((t - 1.0) ** 2) / 8.0,
}

#: outcomes of a run, in report order
STATUSES = ("global", "suboptimal_min", "saddle", "not_converged", "diverged")


@dataclass(frozen=True)
class SingleNeuronOptions:
    """One cell: the activation, the example (x, y), the starts, the descent and the tests.

    ``init_scale``: starts (v, w) ~ N(0, init_scale^2 I). ``lr``: the line search's first
    step; ``max_step``: the longest move of one iteration (a trust radius: without it one
    step from a steep start can land on a numerically flat plateau, gelu at w x ~ -13 where
    phi ~ 1e-40, that no test can tell from a flat minimum). ``grad_tol``: |grad F|_2 below
    which descent stops (a critical point).
    ``loss_tol``: F at or below it is a global minimum (F = 0 up to rounding).
    ``eig_tol``: the smallest Hessian eigenvalue must be >= -eig_tol for a minimum.
    ``perturb_radii`` / ``perturb_directions`` / ``perturb_tol``: the perturbation test
    (a decrease of F by more than perturb_tol at any radius = a descent direction).
    ``divergence_radius``: |(v, w)|_inf above it = diverged. The condition's scan:
    zeros of phi searched on [-scan_range, scan_range] with ``scan_points`` grid points,
    accepted at |phi| <= ``zero_tol``; the sign test around a zero looks at
    t +- ``side_radius`` * 2^-k, k = 0..19."""

    activation: str
    x: float = 1.0
    y: float = 1.0
    init_scale: float = 1.0
    lr: float = 0.5
    max_step: float = 0.25
    max_iterations: int = 5000
    line_search_steps: int = 40
    grad_tol: float = 1e-10
    loss_tol: float = 1e-12
    eig_tol: float = 1e-8
    perturb_radii: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3)
    perturb_directions: int = 64
    perturb_tol: float = 1e-13
    divergence_radius: float = 1e6
    scan_range: float = 6.0
    scan_points: int = 12001
    zero_tol: float = 1e-20
    side_radius: float = 1e-3

    def validate(self) -> SingleNeuronOptions:
        """Check every option; raise :class:`OptionError` naming the first bad one."""
        if self.activation not in ACTIVATIONS:
            raise OptionError(
                "activation", f"unknown activation {self.activation!r}; allowed: {', '.join(ACTIVATIONS)}"
            )
        for name in ("x", "y"):
            value = getattr(self, name)
            if not _number(value) or value == 0:
                raise OptionError(name, f"must be a nonzero number (Proposition IV.1 needs x, y != 0), got {value!r}")
        for name in (
            "init_scale",
            "lr",
            "max_step",
            "grad_tol",
            "loss_tol",
            "perturb_tol",
            "divergence_radius",
            "scan_range",
        ):
            value = getattr(self, name)
            if not _number(value) or value <= 0:
                raise OptionError(name, f"must be a number > 0, got {value!r}")
        for name in ("eig_tol", "zero_tol", "side_radius"):
            value = getattr(self, name)
            if not _number(value) or value < 0:
                raise OptionError(name, f"must be a number >= 0, got {value!r}")
        for name, low in (
            ("max_iterations", 1),
            ("line_search_steps", 1),
            ("perturb_directions", 1),
            ("scan_points", 3),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OptionError(name, f"must be an integer >= {low}, got {value!r}")
        radii = self.perturb_radii
        if not radii or not all(_number(r) and r > 0 for r in radii):
            raise OptionError("perturb_radii", f"must be a non-empty list of numbers > 0, got {list(radii)!r}")
        return self

    def columns(self) -> dict:
        """The options as the flat record columns (``perturb_radii`` a list)."""
        out = asdict(self)
        out["perturb_radii"] = [float(r) for r in self.perturb_radii]
        return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- (a) the condition
def _bisect(phi: Activation, lo: float, hi: float, steps: int = 200) -> float:
    """A zero of phi in [lo, hi] where phi(lo) phi(hi) < 0, by bisection to float64 resolution."""
    f_lo = float(phi(torch.tensor(lo, dtype=torch.float64)))
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        f_mid = float(phi(torch.tensor(mid, dtype=torch.float64)))
        if f_mid == 0.0:
            return mid
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _golden_min_abs(phi: Activation, lo: float, hi: float, steps: int = 200) -> float:
    """The minimiser of |phi| on [lo, hi] by golden-section search (|phi| unimodal there)."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0

    def f(t: float) -> float:
        return abs(float(phi(torch.tensor(t, dtype=torch.float64))))

    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(steps):
        if f(c) <= f(d):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
        if b - a <= 1e-15 * max(1.0, abs(a)):
            break
    return 0.5 * (a + b)


def _zero_kind(phi: Activation, t: float, side_radius: float) -> str:
    """Whether the zero t is a local extremum of phi, from the signs of phi at t +- side_radius
    * 2^-k (k = 0..19): ``flat`` (phi = 0 at every sample: a local min and max), ``minimum``
    (phi >= 0 at every sample), ``maximum`` (phi <= 0), ``crossing`` (both signs: no extremum)."""
    offsets = side_radius * 2.0 ** -torch.arange(20, dtype=torch.float64)  # (20,)
    samples = phi(torch.cat([t - offsets, t + offsets]))  # (40,)
    positive, negative = bool((samples > 0).any()), bool((samples < 0).any())
    if positive and negative:
        return "crossing"
    if positive:
        return "minimum"
    if negative:
        return "maximum"
    return "flat"


def activation_condition(
    activation: str,
    *,
    scan_range: float = 6.0,
    scan_points: int = 12001,
    zero_tol: float = 1e-20,
    side_radius: float = 1e-3,
) -> dict:
    """Proposition IV.1's condition decided from phi (module docstring, (a)).

    Zeros on [-scan_range, scan_range] (a grid of ``scan_points``): runs of two or more
    consecutive grid points with |phi| <= zero_tol are an interval of zeros [a, b] (relu:
    [-scan_range, 0]); isolated such points, sign changes between neighbours (refined by
    bisection) and interior local minima of |phi| on the grid (refined by golden section,
    kept when |phi| <= zero_tol) are point zeros, one per two grid steps. An interval's kind
    is ``flat`` (phi = 0 around its inner points: a local min and max of phi); a point's by
    :func:`_zero_kind`. Returns ``zeros`` (list of (a, b), a = b for a point), ``kinds``,
    ``zeros_text`` (one line) and ``bad_minima``: True when some zero is a local extremum
    (the proposition: F then has sub-optimal local minima), False when every zero is a
    crossing or there is none. The range must lie where phi is resolvable from 0 in
    float64 (gelu's Gaussian tail is below 1e-20 beyond t ~ -9.5): it is configuration."""
    phi = ACTIVATIONS[activation]
    grid_t = torch.linspace(-scan_range, scan_range, scan_points, dtype=torch.float64)  # (P,)
    values = phi(grid_t)  # (P,)
    step = float(grid_t[1] - grid_t[0])
    is_zero = values.abs() <= zero_tol  # (P,)
    zeros: list[tuple[float, float]] = []
    points: list[float] = []
    i = 0
    while i < scan_points:
        if bool(is_zero[i]):
            j = i
            while j + 1 < scan_points and bool(is_zero[j + 1]):
                j += 1
            if j > i:
                zeros.append((float(grid_t[i]), float(grid_t[j])))
            else:
                points.append(float(grid_t[i]))
            i = j + 1
        else:
            i += 1
    signs = torch.sign(values)
    change = torch.nonzero(signs[:-1] * signs[1:] < 0).flatten()
    points += [_bisect(phi, float(grid_t[k]), float(grid_t[k + 1])) for k in change.tolist()]
    absolute = values.abs()
    interior = (absolute[1:-1] <= absolute[:-2]) & (absolute[1:-1] <= absolute[2:]) & ~is_zero[1:-1]
    for k in (torch.nonzero(interior).flatten() + 1).tolist():
        t = _golden_min_abs(phi, float(grid_t[k - 1]), float(grid_t[k + 1]))
        if abs(float(phi(torch.tensor(t, dtype=torch.float64)))) <= zero_tol:
            points.append(t)
    merged: list[float] = []
    for t in sorted(points):
        inside = any(a - 2.0 * step <= t <= b + 2.0 * step for a, b in zeros)
        if not inside and not (merged and t - merged[-1] <= 2.0 * step):
            merged.append(t)
    zeros = sorted(zeros + [(t, t) for t in merged])
    kinds = ["flat" if b > a else _zero_kind(phi, a, side_radius) for a, b in zeros]
    parts = [
        (f"t={a:.6g}" if a == b else f"t in [{a:.6g}, {b:.6g}]") + f" ({kind})" for (a, b), kind in zip(zeros, kinds)
    ]
    return {
        "zeros": zeros,
        "kinds": kinds,
        "zeros_text": "; ".join(parts) if parts else "no zero",
        "bad_minima": any(kind != "crossing" for kind in kinds),
    }


# --------------------------------------------------------------------------- F and its derivatives
def _phi_and_derivatives(
    activation: str, t: torch.Tensor, *, second: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """phi(t), phi'(t) and (``second``) phi''(t) elementwise (t any shape), the derivatives
    by ``torch.func.grad`` of the scalar activation, vmapped."""
    phi = ACTIVATIONS[activation]
    flat = t.reshape(-1)
    first = vmap(grad(phi))(flat).reshape(t.shape)
    if not second:
        return phi(t), first, None
    return phi(t), first, vmap(grad(grad(phi)))(flat).reshape(t.shape)


def _gradient(activation: str, v: torch.Tensor, w: torch.Tensor, x: float, y: float):
    """v phi(w x) (R,), F (R,) and its gradient (R, 2) (order (v, w)), without phi''."""
    p, p1, _ = _phi_and_derivatives(activation, w * x, second=False)
    r = y - v * p
    return v * p, r * r, torch.stack([-2.0 * r * p, -2.0 * r * v * p1 * x], dim=-1)


def loss(activation: str, v: torch.Tensor, w: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """F(v, w) = (y - v phi(w x))^2, elementwise over v, w (same shape)."""
    return (y - v * ACTIVATIONS[activation](w * x)) ** 2


def loss_derivatives(
    activation: str, v: torch.Tensor, w: torch.Tensor, x: float, y: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """F (R,), its gradient (R, 2) and Hessian (R, 2, 2) in the order (v, w), closed form:
    with r = y - v p, p = phi(wx), p1 = phi'(wx), p2 = phi''(wx):
    dF/dv = -2 r p, dF/dw = -2 r v p1 x; d2F/dv2 = 2 p^2, d2F/dvdw = 2 x p1 (v p - r),
    d2F/dw2 = 2 x^2 v (v p1^2 - r p2)."""
    p, p1, p2 = _phi_and_derivatives(activation, w * x)  # (R,) each
    assert p2 is not None
    r = y - v * p
    g = torch.stack([-2.0 * r * p, -2.0 * r * v * p1 * x], dim=-1)  # (R, 2)
    hvv = 2.0 * p * p
    hvw = 2.0 * x * p1 * (v * p - r)
    hww = 2.0 * x * x * v * (v * p1 * p1 - r * p2)
    H = torch.stack([torch.stack([hvv, hvw], -1), torch.stack([hvw, hww], -1)], -2)  # (R, 2, 2)
    return r * r, g, H


# --------------------------------------------------------------------------- (b) descent and classification
def _descend(options: SingleNeuronOptions, v: torch.Tensor, w: torch.Tensor):
    """Batched steepest descent with Armijo backtracking from (v, w) (R,) each. Returns v, w and
    iterations (R,) int64 (steps taken); a run stops at |g| <= grad_tol,
    F <= loss_tol, or leaving the divergence box. The Armijo test uses the decrease
    F(trial) - F(p) = (u - u_t)(2 y - u - u_t) with u = v phi(w x): exact to rounding of u,
    not of F (near a flat minimum F ~ y^2 changes by ~1e-20 per step, below F's own rounding,
    and a test on F itself would stall there)."""
    act, x, y = options.activation, float(options.x), float(options.y)
    phi = ACTIVATIONS[act]
    ladder = options.lr * 2.0 ** -torch.arange(options.line_search_steps, dtype=v.dtype, device=v.device)  # (J,)
    iterations = torch.zeros(v.shape, dtype=torch.int64, device=v.device)
    g = torch.zeros(v.shape + (2,), dtype=v.dtype, device=v.device)
    for _ in range(options.max_iterations):
        u, f, g = _gradient(act, v, w, x, y)
        gnorm2 = (g * g).sum(-1)  # (R,)
        inside = (torch.maximum(v.abs(), w.abs()) <= options.divergence_radius) & torch.isfinite(f)
        active = inside & (gnorm2.sqrt() > options.grad_tol) & (f > options.loss_tol)
        if not bool(active.any()):
            break
        scale = torch.clamp(options.max_step / gnorm2.sqrt().clamp(min=1e-300), max=1.0)  # (R,) trust radius
        steps = ladder[None, :] * scale[:, None]  # (R, J)
        tv = v[:, None] - steps * g[:, :1]  # (R, J)
        tw = w[:, None] - steps * g[:, 1:]  # (R, J)
        ut = tv * phi(tw * x)  # (R, J)
        decrease = (u[:, None] - ut) * (2.0 * y - u[:, None] - ut)  # F(trial) - F(p), (R, J)
        ok = decrease <= -1e-4 * steps * gnorm2[:, None]  # (R, J)
        first = torch.where(ok.any(-1), ok.float().argmax(-1), torch.full_like(iterations, -1))  # (R,)
        moved = active & (first >= 0)
        pick = first.clamp(min=0)[:, None]
        v = torch.where(moved, tv.gather(1, pick)[:, 0], v)
        w = torch.where(moved, tw.gather(1, pick)[:, 0], w)
        iterations = iterations + moved.long()
        if not bool(moved.any()):
            break  # every active run is at a point no step of the ladder improves (rounding)
    return v, w, iterations


def classify_endpoints(
    options: SingleNeuronOptions,
    v: torch.Tensor,
    w: torch.Tensor,
    *,
    generators: list[torch.Generator],
    v0: torch.Tensor | None = None,
    w0: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | list[str]]:
    """Status of each endpoint (v, w) (R,) (module docstring (b)). A run left unconverged is
    ``diverged`` also when it is escaping to infinity: farther from the origin than its start
    (v0, w0) and still moving outward (-grad F . (v, w) > 0), e.g. gelu or swish with
    phi -> 0 at -infinity, where F tends to y^2 along w -> -infinity without a minimum.
    Measurements:
    ``final_loss``, ``grad_norm``, ``min_eig`` (smallest Hessian eigenvalue), ``perturb_min_change``
    (the smallest F(p + r u) - F(p) over the perturbations), ``perturb_decreases`` (how many
    lowered F by more than perturb_tol). ``generators``: one per run (its perturbation directions)."""
    act, x, y = options.activation, float(options.x), float(options.y)
    f, g, H = loss_derivatives(act, v, w, x, y)
    min_eig = torch.linalg.eigvalsh(torch.nan_to_num(H))[:, 0]  # (R,)
    grad_norm = g.norm(dim=-1)
    radii = torch.tensor(options.perturb_radii, dtype=v.dtype, device=v.device)  # (K,)
    dirs = torch.stack(
        [torch.randn(options.perturb_directions, 2, generator=gen, dtype=torch.float64) for gen in generators]
    ).to(v.device)  # (R, D, 2)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    steps = radii[None, None, :, None] * dirs[:, :, None, :]  # (R, D, K, 2)
    moved = loss(act, v[:, None, None] + steps[..., 0], w[:, None, None] + steps[..., 1], x, y)  # (R, D, K)
    change = (moved - f[:, None, None]).flatten(1)  # (R, D*K)
    decreases = (change < -options.perturb_tol).sum(-1)
    point = torch.stack([v, w], -1)  # (R, 2)
    outward = -(g * point).sum(-1) > 0
    if v0 is not None and w0 is not None:
        outward = outward & (point.norm(dim=-1) > torch.stack([v0, w0], -1).norm(dim=-1))
    statuses = []
    for i in range(v.shape[0]):
        finite = bool(torch.isfinite(f[i]) & torch.isfinite(v[i]) & torch.isfinite(w[i]))
        if not finite or max(abs(float(v[i])), abs(float(w[i]))) > options.divergence_radius:
            statuses.append("diverged")
        elif float(f[i]) <= options.loss_tol:
            statuses.append("global")
        elif float(grad_norm[i]) > options.grad_tol:
            statuses.append("diverged" if bool(outward[i]) and v0 is not None else "not_converged")
        elif float(min_eig[i]) >= -options.eig_tol and int(decreases[i]) == 0:
            statuses.append("suboptimal_min")
        else:
            statuses.append("saddle")
    return {
        "status": statuses,
        "final_loss": f,
        "grad_norm": grad_norm,
        "min_eig": min_eig,
        "perturb_min_change": change.min(-1).values,
        "perturb_decreases": decreases,
    }


def run_single_neuron(
    options: SingleNeuronOptions, *, seeds: Iterable[int], device: str | torch.device = "cpu"
) -> list[dict]:
    """Descend from one start per seed, all seeds as one batch (float64); one record per seed.

    Each seed's start (v, w) ~ N(0, init_scale^2 I) and its perturbation directions come from
    a generator seeded by (activation, x, y, init_scale, seed), so a run does not depend on
    the chunk it ran in. Records: the contract columns, ``v0``, ``w0``, ``v``, ``w``,
    ``min_eig``, ``perturb_min_change``, ``perturb_decreases``, the condition of (a)
    (``condition_bad_minima``, ``phi_zeros``) and every option. Three lines from a notebook::

        options = SingleNeuronOptions(activation="figure2").validate()
        records = run_single_neuron(options, seeds=range(100))
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise OptionError("seeds", "must be a non-empty list of integers")
    options.validate()
    dev = torch.device(device)
    start = time.perf_counter()
    condition = activation_condition(
        options.activation,
        scan_range=options.scan_range,
        scan_points=options.scan_points,
        zero_tol=options.zero_tol,
        side_radius=options.side_radius,
    )
    gens = [
        run_generator("single_neuron", options.activation, options.x, options.y, options.init_scale, s) for s in seeds
    ]
    starts = torch.stack(
        [options.init_scale * torch.randn(2, generator=g, dtype=torch.float64) for g in gens]
    )  # (R, 2)
    starts = starts.to(dev)
    v, w, iterations = _descend(options, starts[:, 0], starts[:, 1])
    result = classify_endpoints(options, v, w, generators=gens, v0=starts[:, 0], w0=starts[:, 1])
    wall = (time.perf_counter() - start) / len(seeds)
    records = []
    for i, seed in enumerate(seeds):
        records.append(
            {
                "seed": seed,
                "status": result["status"][i],
                "final_loss": float(result["final_loss"][i]),
                "grad_norm": float(result["grad_norm"][i]),
                "iterations": int(iterations[i]),
                "wall_s": wall,
                "device": str(dev),
                "v0": float(starts[i, 0]),
                "w0": float(starts[i, 1]),
                "v": float(v[i]),
                "w": float(w[i]),
                "min_eig": float(result["min_eig"][i]),
                "perturb_min_change": float(result["perturb_min_change"][i]),
                "perturb_decreases": int(result["perturb_decreases"][i]),
                "condition_bad_minima": bool(condition["bad_minima"]),
                "phi_zeros": condition["zeros_text"],
                **options.columns(),
            }
        )
    return records


def loss_surface(activation: str, x: float, y: float, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """F on the grid v (A,) x w (B,): (A, B), for figures."""
    return loss(activation, v[:, None], w[None, :], x, y)

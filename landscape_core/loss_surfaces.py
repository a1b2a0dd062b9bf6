"""Loss along lines and on 2-D planes through parameter space, batched over runs and points.

Survey section V-A (global_landscape_survey.txt): Goodfellow, Vinyals & Saxe (2015) look at
F on the segment from a network's initial point to its solution (Conjecture V.1: F
decreases monotonically along it); Li, Xu, Taylor, Studer & Goldstein (2018, "Visualizing
the loss landscape of neural nets", section 4) look at F(theta + a v1 + b v2) on a grid
around a solution, v1, v2 Gaussian directions with *filter normalization* (Conjecture
V.2: wide enough networks show no sub-optimal basin in such slices).

Everything here is a function of flat parameter vectors ``theta (S, P)`` (one row per run)
and of a scalar loss ``loss_fn(theta (P,), X, Y)`` of one run; points are evaluated as
batched tensor programs: a chunk of ``grid_batch`` points of every run in one vmapped call
(nested ``torch.func.vmap``: runs outside, points inside), never one forward pass per point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch.func import vmap

from landscape_core.errors import OptionError

#: how a bias (a 1-D parameter) enters a filter-normalized direction (Li et al.'s code,
#: ``normalize_directions_for_weights``): ``zero`` = not perturbed (their ``--xignore
#: biasbn``, the setting of the paper's figures), ``copy`` = the direction's bias equals the
#: solution's bias (their default branch ``d.copy_(w)``)
BIAS_DIRECTIONS = ("zero", "copy")


def is_weight(name: str) -> bool:
    """A weight matrix (rows = neurons' incoming weights): ``W<l>`` and the skip weights ``V``;
    everything else (``b<l>``) is a bias."""
    return name.startswith("W") or name == "V"


def filter_normalize(
    direction: Mapping[str, torch.Tensor], theta: Mapping[str, torch.Tensor], *, bias: str = "zero"
) -> dict[str, torch.Tensor]:
    """Filter normalization of a direction (Li et al. 2018, section 4, eq. (1)) for fully
    connected layers, where a "filter" is a neuron's incoming weights:

        d_{l,i} <- d_{l,i} / ||d_{l,i}|| * ||theta_{l,i}||   (row i of weight matrix l)

    so each neuron's row of the direction has the norm of that neuron's row in theta; a
    bias is zero (``bias="zero"``) or theta's bias (``bias="copy"``), see
    :data:`BIAS_DIRECTIONS`. Works on one model's dict or a batch (leading run dimensions):
    the norm is over the last axis. A direction row of norm 0 stays 0. Returns a new dict
    (the inputs are not modified)."""
    if bias not in BIAS_DIRECTIONS:
        raise OptionError("surface.bias_directions", f"{bias!r} is not one of {', '.join(BIAS_DIRECTIONS)}")
    out: dict[str, torch.Tensor] = {}
    for name, d in direction.items():
        w = theta[name]
        if is_weight(name):
            d_norm = torch.linalg.vector_norm(d, dim=-1, keepdim=True)  # (..., out, 1)
            w_norm = torch.linalg.vector_norm(w, dim=-1, keepdim=True)  # (..., out, 1)
            out[name] = torch.where(d_norm > 0, d * (w_norm / torch.where(d_norm > 0, d_norm, 1.0)), 0.0 * d)
        else:
            out[name] = torch.zeros_like(d) if bias == "zero" else w.clone()
    return out


def grid_coordinates(points: int, radius: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """The ``points x points`` grid on [-radius, radius]^2 as (points^2, 2) coordinates (a, b),
    row-major: index i * points + j holds (a_i, b_j), a_i = -radius + 2 radius i / (points - 1)."""
    axis = torch.linspace(-radius, radius, points, dtype=dtype, device=device)  # (points,)
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([a.reshape(-1), b.reshape(-1)], dim=-1)  # (points^2, 2)


def plane_losses(
    loss_fn: Callable[..., torch.Tensor],
    theta: torch.Tensor,
    d1: torch.Tensor,
    d2: torch.Tensor,
    coords: torch.Tensor,
    X: torch.Tensor,
    Y: torch.Tensor,
    *,
    grid_batch: int = 256,
) -> torch.Tensor:
    """F(theta_s + a_g d1_s + b_g d2_s; X_s, Y_s) for every run s and point g.

    theta, d1, d2: (S, P); coords: (G, 2) rows (a, b) shared by the runs; X: (S, n, d),
    Y: (S, n, ...). Each call of the vmapped kernel evaluates ``grid_batch`` points of all S
    runs (a batched matmul per layer). Returns (S, G)."""
    if isinstance(grid_batch, bool) or not isinstance(grid_batch, int) or grid_batch < 1:
        raise OptionError("surface.grid_batch", f"must be an integer >= 1, got {grid_batch!r}")

    def one_run(t, u, v, c, x, y):  # t, u, v: (P,), c: (g, 2)
        points = t + c[:, :1] * u + c[:, 1:] * v  # (g, P)
        return vmap(loss_fn, in_dims=(0, None, None))(points, x, y)  # (g,)

    kernel = vmap(one_run, in_dims=(0, 0, 0, None, 0, 0))
    chunks = [
        kernel(theta, d1, d2, coords[start : start + grid_batch], X, Y)  # (S, g)
        for start in range(0, coords.shape[0], grid_batch)
    ]
    return torch.cat(chunks, dim=1)  # (S, G)


def line_losses(
    loss_fn: Callable[..., torch.Tensor],
    start: torch.Tensor,
    end: torch.Tensor,
    ts: torch.Tensor,
    X: torch.Tensor,
    Y: torch.Tensor,
    *,
    grid_batch: int = 256,
) -> torch.Tensor:
    """F((1 - t) start_s + t end_s) for every run s and t in ``ts`` (T,): the segment as the
    plane with d1 = end - start, d2 = 0. start, end: (S, P). Returns (S, T)."""
    coords = torch.stack([ts, torch.zeros_like(ts)], dim=-1)  # (T, 2)
    return plane_losses(loss_fn, start, end - start, torch.zeros_like(start), coords, X, Y, grid_batch=grid_batch)


def bumps(curve: torch.Tensor, ts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest bump of each curve above its running minimum and where it sits.

    curve: (S, T) values at ``ts`` (T,). bump_k = F(t_k) - min_{j<k} F(t_j) (0 at k = 0); the
    curve is monotone non-increasing exactly when every bump_k <= 0. Returns (max_k bump_k
    clamped at 0 (S,), t at the argmax (S,); t = ts[0] for a curve with no bump)."""
    running = torch.cummin(curve, dim=1).values  # (S, T)
    previous = torch.cat([curve[:, :1], running[:, :-1]], dim=1)  # min over j < k (k = 0: itself)
    excess = (curve - previous).clamp_min(0.0)  # (S, T)
    excess = torch.where(torch.isnan(excess), torch.full_like(excess, math.inf), excess)
    height, at = excess.max(dim=1)
    return height, ts[at]


def barrier(curve: torch.Tensor) -> torch.Tensor:
    """max_t F(t) minus the mean of the two ends, per curve (S, T) -> (S,) (the barrier of the
    survey's section V-B, used for the segment between two solutions)."""
    return curve.max(dim=1).values - 0.5 * (curve[:, 0] + curve[:, -1])


def local_minima(values: torch.Tensor) -> torch.Tensor:
    """Strict local minima of grids (S, A, B) over the 8 neighbours, interior points only
    (a point on the grid's edge may descend out of the slice, so it is never counted).
    Returns a bool mask (S, A, B)."""
    S, A, B = values.shape
    mask = torch.zeros_like(values, dtype=torch.bool)
    if A < 3 or B < 3:
        return mask
    centre = values[:, 1:-1, 1:-1]  # (S, A-2, B-2)
    lowest = torch.full_like(centre, math.inf)
    for da in (-1, 0, 1):
        for db in (-1, 0, 1):
            if da or db:
                lowest = torch.minimum(lowest, values[:, 1 + da : A - 1 + da, 1 + db : B - 1 + db])
    mask[:, 1:-1, 1:-1] = centre < lowest
    return mask


def count_basins(values: torch.Tensor, centre: torch.Tensor, *, tol: float) -> torch.Tensor:
    """Sub-optimal basins of slices (S, A, B): interior strict grid local minima whose value
    exceeds the slice's centre value ``centre (S,)`` by more than ``tol`` (an absolute loss
    difference). Returns (S,) int64."""
    high = values > (centre + tol)[:, None, None]
    return (local_minima(values) & high).sum(dim=(1, 2))


def convex_fraction(values: torch.Tensor, spacing: float, *, tol: float) -> torch.Tensor:
    """A convexity measure of slices (S, A, B) on a square grid of ``spacing``: the fraction
    of interior points where the finite-difference 2 x 2 Hessian of the slice
    [[f_aa, f_ab], [f_ab, f_bb]] (central differences, O(spacing^2)) has smallest
    eigenvalue >= -tol. 1 = convex everywhere on the slice (a slice-level version of Li et
    al.'s |lambda_min / lambda_max| maps, section 6). Returns (S,)."""
    h2 = spacing * spacing
    c = values[:, 1:-1, 1:-1]
    f_aa = (values[:, 2:, 1:-1] - 2 * c + values[:, :-2, 1:-1]) / h2
    f_bb = (values[:, 1:-1, 2:] - 2 * c + values[:, 1:-1, :-2]) / h2
    f_ab = (values[:, 2:, 2:] - values[:, 2:, :-2] - values[:, :-2, 2:] + values[:, :-2, :-2]) / (4 * h2)
    smallest = 0.5 * (f_aa + f_bb) - torch.sqrt((0.5 * (f_aa - f_bb)) ** 2 + f_ab**2)  # (S, A-2, B-2)
    return (smallest >= -tol).to(values.dtype).mean(dim=(1, 2))


def slice_memory_bytes(*, grid: int, grid_batch: int, num_params: int, n_samples: int, neurons: int) -> int:
    """Estimated peak memory (bytes, float64) of one run's slice: the grid's values
    (grid^2), plus per kernel call ``min(grid_batch, grid^2)`` points, each with its own
    parameter vector (num_params) and three activation-sized tensors (pre-activation,
    activation, gradient-free output) of n_samples x neurons (hidden + output units)."""
    points = min(grid_batch, grid * grid)
    return 8 * (grid * grid + points * (num_params + 3 * n_samples * neurons) + 3 * num_params)

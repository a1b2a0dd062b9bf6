"""The curves, their training and evaluation, the plane through three solutions and its
minimax path: the method is described in the package docstring."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import vmap

from landscape_core.errors import OptionError

CURVES = ("bezier", "polychain")


@dataclass(frozen=True)
class CurveSpec:
    steps: int = 1000  # optimizer steps on the control point / bend
    lr: float = 0.01  # Adam step size
    t_samples: int = 1  # t ~ U[0, 1] drawn per step (the step follows their mean loss)
    eval_points: int = 61  # t = linspace(0, 1, eval_points) for the evaluation (ends included)
    barrier_tol: float = 1e-3  # connected when barrier (max F - mean of ends) < barrier_tol

    def validate(self) -> None:
        for name, minimum in (("steps", 0), ("t_samples", 1), ("eval_points", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise OptionError(f"curve.{name}", f"must be an integer >= {minimum}, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise OptionError("curve.lr", f"must be a number > 0, got {self.lr!r}")
        if not (isinstance(self.barrier_tol, (int, float)) and self.barrier_tol >= 0):
            raise OptionError("curve.barrier_tol", f"must be a number >= 0, got {self.barrier_tol!r}")


@dataclass(frozen=True)
class PlaneSpec:
    enabled: bool = True  # train a third solution and evaluate the plane through the three
    points: int = 25  # grid nodes per axis
    low: float = -0.25  # s, t in [low, high]
    high: float = 1.25

    def validate(self) -> None:
        if isinstance(self.points, bool) or not isinstance(self.points, int) or self.points < 3:
            raise OptionError("plane.points", f"must be an integer >= 3, got {self.points!r}")
        if not self.low < self.high:
            raise OptionError("plane.low", f"must be below plane.high, got {self.low!r} >= {self.high!r}")
        if self.enabled:
            for value in (0.0, 1.0):
                k = (value - self.low) / (self.high - self.low) * (self.points - 1)
                if not (-1e-9 < k < self.points - 1 + 1e-9 and abs(k - round(k)) < 1e-9):
                    raise OptionError(
                        "plane.points",
                        f"s, t = 0 and 1 must be grid nodes of linspace({self.low}, {self.high}, {self.points}) "
                        "(the three solutions sit there); e.g. low -0.25, high 1.25, points 25",
                    )

    def grid(self, *, dtype=torch.float64, device=None) -> torch.Tensor:
        return torch.linspace(self.low, self.high, self.points, dtype=dtype, device=device)

    def node(self, value: float) -> int:
        return round((value - self.low) / (self.high - self.low) * (self.points - 1))


# ------------------------------------------------------------------------------ curves
def curve_points(kind: str, theta_a: torch.Tensor, bend: torch.Tensor, theta_b: torch.Tensor, t: torch.Tensor):
    """Models on a curve: theta_a, bend, theta_b (..., P), t (T,) or per pair (..., T) -> (..., T, P).

    ``bezier``: (1 - t)^2 A + 2 t (1 - t) C + t^2 B; ``polychain``: (1 - 2t) A + 2t C for
    t <= 1/2, (2 - 2t) C + (2t - 1) B after; ``segment``: (1 - t) A + t B (C unused).
    Written so that t = 0 and t = 1 give A and B bit for bit.
    """
    A, C, B = theta_a.unsqueeze(-2), bend.unsqueeze(-2), theta_b.unsqueeze(-2)  # (..., 1, P)
    tt = t.unsqueeze(-1)  # (T, 1)
    if kind == "bezier":
        return (1 - tt) ** 2 * A + 2 * tt * (1 - tt) * C + tt**2 * B
    if kind == "polychain":
        u1, u2 = 2 * tt, 2 * tt - 1
        return torch.where(tt <= 0.5, (1 - u1) * A + u1 * C, (1 - u2) * C + u2 * B)
    if kind == "segment":
        return (1 - tt) * A + tt * B
    raise OptionError("curve", f"{kind!r} is not one of {', '.join((*CURVES, 'segment'))}")


def path_losses(loss: Callable, kind: str, theta_a, bend, theta_b, t: torch.Tensor, *data) -> torch.Tensor:
    """F along a curve for a batch of pairs: (S, P) ends and bends, t (T,) -> (S, T)."""
    pts = curve_points(kind, theta_a, bend, theta_b, t)  # (S, T, P)
    S, T, P = pts.shape
    in_dims = (0,) + (None,) * len(data)
    return vmap(loss, in_dims=in_dims)(pts.reshape(S * T, P), *data).reshape(S, T)


def barrier(losses: torch.Tensor) -> torch.Tensor:
    """max over the path - mean of its two ends: (..., T) -> (...)."""
    return losses.amax(-1) - 0.5 * (losses[..., 0] + losses[..., -1])


def train_curves(
    loss: Callable, kind: str, theta_a: torch.Tensor, theta_b: torch.Tensor, t_draws: torch.Tensor, *data, lr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Garipov et al.'s curve training, batched over pairs.

    theta_a, theta_b (S, P); t_draws (S, steps, k): the t values of each step. Adam
    (Kingma & Ba, bias-corrected, beta = 0.9, 0.999, eps 1e-8) on the bends C (S, P) from
    the midpoints, minimising mean_j F(phi(t_j)) per step: one batched forward over the
    S x k models and one backward per step (the sum over pairs of their means has each
    pair's gradient in its own row). Returns (C (S, P), the last step's sampled loss (S,)).
    """
    S, P = theta_a.shape
    steps = t_draws.shape[1]
    vloss = vmap(loss, in_dims=(0,) + (None,) * len(data))

    def sampled(bend: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # (S, P), (S, k) -> (S,)
        k = t.shape[-1]
        pts = curve_points(kind, theta_a, bend, theta_b, t)  # (S, k, P)
        return vloss(pts.reshape(S * k, P), *data).reshape(S, k).mean(-1)

    C = 0.5 * (theta_a + theta_b)  # (S, P)
    m, v = torch.zeros_like(C), torch.zeros_like(C)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(steps):
        bend = C.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(sampled(bend, t_draws[:, step]).sum(), bend)  # (S, P)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        C = C - lr * (m / (1 - b1 ** (step + 1))) / ((v / (1 - b2 ** (step + 1))).sqrt() + eps)
    last = t_draws[:, -1] if steps else torch.full((S, 1), 0.5, dtype=C.dtype, device=C.device)
    with torch.no_grad():
        return C, sampled(C, last)


# ------------------------------------------------------------------------------ the plane
def plane_losses(loss: Callable, theta_1, theta_2, theta_3, grid: torch.Tensor, *data) -> torch.Tensor:
    """f(s, t) = F(s theta_1 + t theta_2 + (1 - s - t) theta_3) for s, t on ``grid`` (G,):
    (G, G) losses, rows s, columns t, all G^2 models as one batch."""
    s, t = grid[:, None, None], grid[None, :, None]  # (G, 1, 1), (1, G, 1)
    models = s * theta_1 + t * theta_2 + (1 - s - t) * theta_3  # (G, G, P)
    G = grid.shape[0]
    in_dims = (0,) + (None,) * len(data)
    return vmap(loss, in_dims=in_dims)(models.reshape(G * G, -1), *data).reshape(G, G)


def minimax_path(values: list[list[float]], start: tuple[int, int], end: tuple[int, int]) -> float:
    """Smallest possible maximum of ``values`` over 8-connected grid paths from ``start``
    to ``end`` (both included): Dijkstra with max in place of the sum (bottleneck path)."""
    rows, cols = len(values), len(values[0])
    best = [[math.inf] * cols for _ in range(rows)]
    best[start[0]][start[1]] = values[start[0]][start[1]]
    heap = [(best[start[0]][start[1]], start)]
    while heap:
        level, (i, j) = heapq.heappop(heap)
        if (i, j) == end:
            return level
        if level > best[i][j]:
            continue
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                a, b = i + di, j + dj
                if (di or dj) and 0 <= a < rows and 0 <= b < cols:
                    cand = max(level, values[a][b])
                    if cand < best[a][b]:
                        best[a][b] = cand
                        heapq.heappush(heap, (cand, (a, b)))
    return math.inf

"""Exponentially many local minima of one sigmoid neuron (Auer, Herbster & Warmuth, NIPS 1995,
Theorem 3.4 and Lemma 3.3, recapped in the lecture notes; protocols.md section 5).

    E_S(w) = sum_t (y_t - sigma(w . x_t))^2,   sigma the logistic function, no bias.

Theorem 3.4: for every n there are n examples in R^d with one common label y such that E_S
has floor(n / d)^d distinct local minima. The construction, as in the paper:

1. **d = 1, examples added one at a time** (:func:`auer_examples_1d`): (x_1, y) with x_1 = 1,
   y in (1/2, 1); example t alone has its zero-loss point w*_t = logit(y) / x_t. Given t - 1
   examples whose error f has t - 1 disjoint minimum-containing intervals
   U_s = [w*_s / c, c w*_s] (``interval`` c; minimum-containing: f(w*_s) < min(f(a), f(b)) at
   both ends, so U_s holds a local minimum), the next input is x_t = x_{t-1} / shrink^j with
   the smallest j = 1, 2, ... for which all t intervals are disjoint and minimum-containing for
   the new f. It exists because sigma(x w) is continuous and saturates: a small enough x_t
   barely changes f on the old intervals, and at w*_t the old examples are saturated (the
   paper's induction step). The margins (min over the ends minus f(w*_s)) are the certificate.
2. **Lift to d dimensions** (Lemma 3.3; :func:`auer_dataset`): m = floor(n / d) examples on
   each coordinate axis (x_t e_k, y), so E(w) = sum_k f(w_k) is separable and the products
   of the 1-D local minima are its m^d local minima; the n - d m examples left over are
   x = 0 (a constant term (y - 1/2)^2: no effect on any minimum).

The d = 1 error f has exactly m local minima (not only m minimum-containing intervals): f is
decreasing on w <= 0 (every term is, for y > 1/2) and increasing towards its limit beyond the
last minimum; :func:`minima_1d` counts them from the sign changes of f' on a log grid.

:func:`run_auer_minima` descends from one start per seed (all seeds one batch): a modified
Newton method in scaled coordinates (D = diag(max(|w_k|, 1)): S = D H D, steps
-D V diag(1 / max(|lambda|, ``eig_floor``)) V^T D g, at most ``max_step`` per scaled coordinate,
Armijo backtracking), because the curvature at the minima spans x_t^2 (1 .. 1e-20). Each
endpoint: ``local_min`` when the scaled gradient |D g|_inf <= ``grad_tol`` and the smallest
eigenvalue of S is > ``eig_tol`` (S positive definite <=> H positive definite, Sylvester's law
of inertia: a strict minimum), ``saddle`` (a critical point that is not), ``not_converged``,
``diverged`` (non-finite or beyond ``divergence_factor`` x the last w*). Its ``cell_index``:
the mixed-radix index of the 1-D minima its coordinates sit at (relative distance <=
``group_tol``), -1 if none; the report groups endpoints by distance and counts them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch

from landscape_core.errors import OptionError
from landscape_core.seeding import run_generator

__all__ = [
    "STARTS",
    "STATUSES",
    "AuerOptions",
    "auer_dataset",
    "auer_examples_1d",
    "error",
    "error_derivatives",
    "minima_1d",
    "run_auer_minima",
]

#: outcomes of a run, in report order
STATUSES = ("local_min", "saddle", "not_converged", "diverged")
#: start designs: log_uniform (random, each coordinate log-uniform over the examples' scales),
#: cells (seed s starts in the product cell s mod m^d of the 1-D intervals U: one per cell)
STARTS = ("log_uniform", "cells")


def _terms(z: torch.Tensor, y: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example (y - sigma(z))^2 and its first and second derivatives in z (z any shape)."""
    s = torch.sigmoid(z)
    s1 = s * (1.0 - s)
    s2 = s1 * (1.0 - 2.0 * s)
    r = y - s
    return r * r, -2.0 * r * s1, 2.0 * (s1 * s1 - r * s2)


def error(w: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """E_S(w) for w (..., d), examples X (n, d), labels Y (n,): (...,)."""
    return ((Y - torch.sigmoid(w @ X.T)) ** 2).sum(-1)


def error_derivatives(
    w: torch.Tensor, X: torch.Tensor, Y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """E (R,), gradient (R, d), Hessian (R, d, d) at w (R, d), closed form (chain rule through
    z_t = w . x_t: grad = sum_t l'(z_t) x_t, H = sum_t l''(z_t) x_t x_t^T)."""
    z = w @ X.T  # (R, n)
    s = torch.sigmoid(z)
    s1 = s * (1.0 - s)
    r = Y - s
    first = -2.0 * r * s1  # (R, n)
    second = 2.0 * (s1 * s1 - r * s1 * (1.0 - 2.0 * s))  # (R, n)
    return (r * r).sum(-1), first @ X, torch.einsum("rn,ni,nj->rij", second, X, X)


def _f1(w: float, x: list[float], y: float) -> float:
    """The 1-D error f(w) = sum_t (y - sigma(x_t w))^2 at one point (float64)."""
    z = torch.tensor(x, dtype=torch.float64) * w
    return float(_terms(z, y)[0].sum())


def auer_examples_1d(m: int, *, y: float = 0.75, shrink: float = 10.0, interval: float = 2.0, max_tries: int = 12):
    """The d = 1 construction (module docstring, 1): m inputs added one at a time. Returns
    ``x`` (list, decreasing), ``centers`` (w*_t), ``intervals`` ([a_t, b_t]), ``margins`` (per
    interval: min(f(a_t), f(b_t)) - f(w*_t) > 0 for the final f) and ``powers`` (the j of each
    added input). Raises OptionError when no j <= max_tries works."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise OptionError("m", f"must be an integer >= 1, got {m!r}")
    if not 0.5 < y < 1.0:
        raise OptionError("y", f"must be in (1/2, 1) (the construction's label), got {y!r}")
    if not shrink > interval * interval:
        limit = interval * interval
        raise OptionError("shrink", f"must exceed interval^2 = {limit:g} (disjoint intervals), got {shrink!r}")
    logit = math.log(y / (1.0 - y))

    def certificate(x: list[float]) -> list[float] | None:
        margins = []
        for xt in x:
            c = logit / xt
            a, b = c / interval, c * interval
            margins.append(min(_f1(a, x, y), _f1(b, x, y)) - _f1(c, x, y))
        return margins if min(margins) > 0 else None

    x, powers = [1.0], [0]
    for _ in range(1, m):
        for j in range(1, max_tries + 1):
            trial = [*x, x[-1] / shrink**j]
            if certificate(trial) is not None:
                x, powers = trial, [*powers, j]
                break
        else:
            text = f"no input x_{len(x) + 1} = x_{len(x)} / shrink^j, j <= {max_tries}, is certified"
            raise OptionError("shrink", text)
    margins = certificate(x)
    assert margins is not None
    centers = [logit / xt for xt in x]
    return {
        "x": x,
        "centers": centers,
        "intervals": [(c / interval, c * interval) for c in centers],
        "margins": margins,
        "powers": powers,
    }


def minima_1d(x: list[float], y: float, *, points_per_decade: int = 400) -> list[float]:
    """The local minima of f(w) = sum_t (y - sigma(x_t w))^2 on w > 0: sign changes of f' from
    - to + on a log grid from 1e-3 / max x to 1e3 logit(y) / min x, refined by bisection on f'.
    (On w <= 0, f is decreasing for y > 1/2: no minimum there.)"""
    xs = torch.tensor(x, dtype=torch.float64)

    def slope(w: torch.Tensor) -> torch.Tensor:
        return (_terms(w[..., None] * xs, y)[1] * xs).sum(-1)

    lo = math.log10(1e-3 / float(xs.max()))
    hi = math.log10(1e3 * math.log(y / (1 - y)) / float(xs.min()))
    grid = torch.logspace(lo, hi, int((hi - lo) * points_per_decade) + 1, dtype=torch.float64)
    d = slope(grid)
    found = []
    for k in torch.nonzero((d[:-1] < 0) & (d[1:] >= 0)).flatten().tolist():
        a, b = grid[k].clone(), grid[k + 1].clone()
        for _ in range(200):
            mid = 0.5 * (a + b)
            if bool(slope(mid) < 0):
                a = mid
            else:
                b = mid
        found.append(float(0.5 * (a + b)))
    return found


def auer_dataset(n: int, d: int, *, y: float = 0.75, shrink: float = 10.0, interval: float = 2.0):
    """Theorem 3.4's n examples in R^d (module docstring, 2): X (n, d) float64, Y (n,), and the
    1-D construction (:func:`auer_examples_1d` of m = floor(n / d)). Rows k m .. (k + 1) m - 1
    are the 1-D inputs on axis k; the last n - d m rows are 0."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise OptionError("d", f"must be an integer >= 1, got {d!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < d:
        raise OptionError("n", f"must be an integer >= d = {d} (floor(n / d) >= 1 examples per axis), got {n!r}")
    m = n // d
    one = auer_examples_1d(m, y=y, shrink=shrink, interval=interval)
    X = torch.zeros(n, d, dtype=torch.float64)
    for k in range(d):
        X[k * m : (k + 1) * m, k] = torch.tensor(one["x"], dtype=torch.float64)
    return X, torch.full((n,), float(y), dtype=torch.float64), one


@dataclass(frozen=True)
class AuerOptions:
    """One cell: the construction (n, d, y, shrink, interval), the starts, the descent, the tests.

    ``starts``: :data:`STARTS`; ``start_spread``: log_uniform starts cover [w*_1 / spread,
    w*_m x spread] per coordinate. ``grad_tol`` (scaled gradient), ``eig_tol`` (smallest
    eigenvalue of the scaled Hessian for a strict minimum), ``eig_floor`` (Newton's eigenvalue
    floor), ``max_step`` (per scaled coordinate and iteration), ``group_tol`` (relative
    distance under which two endpoints are one minimum), ``divergence_factor``."""

    n: int
    d: int
    y: float = 0.75
    shrink: float = 10.0
    interval: float = 2.0
    starts: str = "log_uniform"
    start_spread: float = 4.0
    max_iterations: int = 500
    line_search_steps: int = 40
    max_step: float = 1.0
    eig_floor: float = 1e-6
    grad_tol: float = 1e-9
    eig_tol: float = 1e-8
    group_tol: float = 1e-4
    divergence_factor: float = 1e3

    def validate(self) -> AuerOptions:
        """Check every option (the construction's by :func:`auer_dataset`); raise OptionError."""
        for name in ("y", "shrink", "interval", "start_spread", "max_step", "eig_floor", "grad_tol", "group_tol"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise OptionError(name, f"must be a number > 0, got {value!r}")
        if not isinstance(self.eig_tol, (int, float)) or isinstance(self.eig_tol, bool) or self.eig_tol < 0:
            raise OptionError("eig_tol", f"must be a number >= 0, got {self.eig_tol!r}")
        if not self.divergence_factor > 1:
            raise OptionError("divergence_factor", f"must be a number > 1, got {self.divergence_factor!r}")
        if self.starts not in STARTS:
            raise OptionError("starts", f"unknown start design {self.starts!r}; allowed: {', '.join(STARTS)}")
        for name in ("max_iterations", "line_search_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(name, f"must be an integer >= 1, got {value!r}")
        auer_dataset(self.n, self.d, y=self.y, shrink=self.shrink, interval=self.interval)
        return self

    def columns(self) -> dict:
        return asdict(self)


def _starts(options: AuerOptions, one: dict, seeds: list[int]) -> tuple[torch.Tensor, list[int]]:
    """(R, d) starts and the cell each was drawn in (-1 for log_uniform), from generators
    seeded by (construction, start design, seed)."""
    d, m = options.d, len(one["x"])
    key = ("auer", options.n, d, options.y, options.shrink, options.interval, options.starts, options.start_spread)
    rows, cells = [], []
    for seed in seeds:
        u = torch.rand(d, generator=run_generator(*key, seed), dtype=torch.float64)  # (d,)
        if options.starts == "cells":
            cell, digits = seed % m**d, []
            for k in range(d):
                digits.append((cell // m**k) % m)
            lo = torch.tensor([one["intervals"][c][0] for c in digits], dtype=torch.float64).log()
            hi = torch.tensor([one["intervals"][c][1] for c in digits], dtype=torch.float64).log()
            cells.append(cell)
        else:
            lo = torch.full((d,), math.log(one["centers"][0] / options.start_spread), dtype=torch.float64)
            hi = torch.full((d,), math.log(one["centers"][-1] * options.start_spread), dtype=torch.float64)
            cells.append(-1)
        rows.append((lo + u * (hi - lo)).exp())
    return torch.stack(rows), cells


def _newton(options: AuerOptions, w: torch.Tensor, X: torch.Tensor, Y: torch.Tensor):
    """Batched modified Newton with Armijo backtracking (module docstring) from w (R, d).
    Returns w and the iterations taken (R,)."""
    ladder = 2.0 ** -torch.arange(options.line_search_steps, dtype=w.dtype, device=w.device)  # (J,)
    iterations = torch.zeros(w.shape[0], dtype=torch.int64, device=w.device)
    for _ in range(options.max_iterations):
        E, g, H = error_derivatives(w, X, Y)
        D = w.abs().clamp(min=1.0)  # (R, d)
        gs = D * g  # scaled gradient (R, d)
        active = gs.abs().amax(-1) > options.grad_tol
        if not bool(active.any()):
            break
        lam, V = torch.linalg.eigh(D[:, :, None] * H * D[:, None, :])  # (R, d), (R, d, d)
        coeff = (V.transpose(-1, -2) @ gs[..., None])[..., 0] / lam.abs().clamp(min=options.eig_floor)
        step_s = -(V @ coeff[..., None])[..., 0]  # (R, d) scaled step
        step_s = step_s * torch.clamp(options.max_step / step_s.abs().amax(-1).clamp(min=1e-300), max=1.0)[:, None]
        step = D * step_s  # (R, d)
        slope = (g * step).sum(-1)  # (R,) < 0: a descent direction
        # Armijo with a rounding slack of 1e-14 |E| (Hager & Zhang's approximate test): near a
        # minimum the decrease a Newton step earns is below E's own rounding. The full step is
        # tried first; the ladder 2^-j only for the runs it fails (same choice, less work).
        slack = 1e-14 * E.abs()
        factor = torch.ones_like(E)
        failed = error(w + step, X, Y) > E + 1e-4 * slope + slack  # (R,)
        if bool(failed.any()):
            idx = torch.nonzero(failed).flatten()
            trial = w[idx, None, :] + ladder[None, :, None] * step[idx, None, :]  # (F, J, d)
            ok = error(trial, X, Y) <= (E[idx, None] + 1e-4 * ladder[None, :] * slope[idx, None] + slack[idx, None])
            first = torch.where(ok.any(-1), ok.float().argmax(-1), torch.full_like(idx, -1))
            factor[idx] = torch.where(first >= 0, ladder[first.clamp(min=0)], torch.zeros_like(ladder[:1]))
        moved = active & (factor > 0)
        w = torch.where(moved[:, None], w + factor[:, None] * step, w)
        iterations = iterations + moved.long()
        if not bool(moved.any()):
            break
    return w, iterations


def run_auer_minima(options: AuerOptions, *, seeds: Iterable[int], device: str | torch.device = "cpu") -> list[dict]:
    """Descend on Theorem 3.4's E_S from one start per seed, all seeds as one batch (float64);
    one record per seed: the contract columns, ``start_w``, ``final_w``, ``min_eig`` (scaled
    Hessian), ``cell_index``, ``start_cell``, ``predicted_minima`` (floor(n/d)^d),
    ``minima_1d`` (the 1-D error's local minima counted by :func:`minima_1d`), ``examples_x``,
    ``margin_1d`` (smallest certificate margin) and every option. From a notebook::

        records = run_auer_minima(AuerOptions(n=8, d=2).validate(), seeds=range(64))
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise OptionError("seeds", "must be a non-empty list of integers")
    options.validate()
    dev = torch.device(device)
    start = time.perf_counter()
    X, Y, one = auer_dataset(options.n, options.d, y=options.y, shrink=options.shrink, interval=options.interval)
    mu = minima_1d(one["x"], options.y)
    w0, start_cells = _starts(options, one, seeds)
    X, Y = X.to(dev), Y.to(dev)
    w, iterations = _newton(options, w0.to(dev), X, Y)
    E, g, H = error_derivatives(w, X, Y)
    D = w.abs().clamp(min=1.0)
    scaled_grad = (D * g).abs().amax(-1)
    min_eig = torch.linalg.eigvalsh(torch.nan_to_num(D[:, :, None] * H * D[:, None, :]))[:, 0]
    mus = torch.tensor(mu, dtype=torch.float64, device=dev)  # (M,)
    rel = (w[:, :, None] - mus[None, None, :]).abs() / mus.abs().clamp(min=1.0)  # (R, d, M)
    near, which = rel.min(-1)  # (R, d)
    radix = len(mu) ** torch.arange(options.d, device=dev)
    cell_index = torch.where((near <= options.group_tol).all(-1), (which * radix).sum(-1), -1)
    limit = options.divergence_factor * one["centers"][-1]
    wall = (time.perf_counter() - start) / len(seeds)
    columns, examples_x, margin = options.columns(), list(one["x"]), float(min(one["margins"]))
    records = []
    for i, seed in enumerate(seeds):
        if not bool(torch.isfinite(w[i]).all()) or float(w[i].abs().max()) > limit:
            status = "diverged"
        elif float(scaled_grad[i]) > options.grad_tol:
            status = "not_converged"
        else:
            status = "local_min" if float(min_eig[i]) > options.eig_tol else "saddle"
        records.append(
            {
                "seed": seed,
                "status": status,
                "final_loss": float(E[i]),
                "grad_norm": float(scaled_grad[i]),
                "iterations": int(iterations[i]),
                "wall_s": wall,
                "device": str(dev),
                "start_w": [float(v) for v in w0[i]],
                "final_w": [float(v) for v in w[i]],
                "min_eig": float(min_eig[i]),
                "cell_index": int(cell_index[i]),
                "start_cell": start_cells[i],
                "predicted_minima": (options.n // options.d) ** options.d,
                "minima_1d": len(mu),
                "examples_x": examples_x,
                "margin_1d": margin,
                **columns,
            }
        )
    return records

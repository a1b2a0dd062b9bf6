"""Probes of a trained model: numerical rank, and extreme Hessian eigenvalues.

- :func:`numerical_ranks` / :func:`numerical_rank`: rank of a (batch of) matrices by singular values against a
  stated tolerance: the numpy / torch default ``sigma_max * max(shape) * eps`` or a
  relative one ``sigma_max * rtol`` (protocols.md section 2).
- :func:`hessian_extremes`: smallest and largest eigenvalue of the Hessian of a scalar
  loss of a flat parameter vector, batched over runs: exact (``torch.func.hessian`` +
  ``torch.linalg.eigvalsh``) up to ``exact_max_params`` parameters, Lanczos with full
  reorthogonalisation on Hessian-vector products (``torch.func.jvp`` of ``grad``) above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import grad, hessian, jvp, vmap

from landscape_core.errors import OptionError


@dataclass
class RankResult:
    rank: torch.Tensor  # (...,) int64
    sigma_min: torch.Tensor  # (...,) smallest of the min(shape) singular values
    sigma_max: torch.Tensor  # (...,)
    tol: torch.Tensor  # (...,) the threshold used: singular values > tol count


def numerical_ranks(M: torch.Tensor, *, rtols: tuple[float | None, ...]) -> list[RankResult]:
    """Numerical rank of ``M`` (..., rows, cols) at several tolerances, from one SVD.

    For each ``rtol``: ``None`` means tol = sigma_max * max(rows, cols) * eps(dtype) (numpy's
    matrix_rank and torch.linalg.matrix_rank default); a number means tol = sigma_max * rtol.
    A singular value counts when it is strictly greater than tol.
    """
    for rtol in rtols:
        if rtol is not None and rtol < 0:
            raise OptionError("rtol", f"must be >= 0, got {rtol!r}")
    sv = torch.linalg.svdvals(M)  # (..., min(rows, cols)), descending
    smax = sv[..., 0]
    results = []
    for rtol in rtols:
        tol = smax * (max(M.shape[-2], M.shape[-1]) * torch.finfo(M.dtype).eps if rtol is None else rtol)
        rank = (sv > tol.unsqueeze(-1)).sum(-1)
        results.append(RankResult(rank=rank, sigma_min=sv[..., -1], sigma_max=smax, tol=tol))
    return results


def numerical_rank(M: torch.Tensor, *, rtol: float | None = None) -> RankResult:
    """Numerical rank of ``M`` at one tolerance (see :func:`numerical_ranks`)."""
    return numerical_ranks(M, rtols=(rtol,))[0]


def exact_hessian_extremes(
    loss: Callable[..., torch.Tensor], theta: torch.Tensor, *args: torch.Tensor, memory_budget_bytes: int = 2**30
) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) eigenvalue of the full Hessian of ``loss(theta_i, *args_i)`` per run.

    theta: (S, P); args: each (S, ...). Chunks of runs keep the (chunk, P, P) Hessians
    under ``memory_budget_bytes`` (times a small factor for autograd intermediates).
    """
    S, P = theta.shape
    per_run = 4 * P * P * theta.element_size()
    chunk = max(1, int(memory_budget_bytes // max(per_run, 1)))
    hess = vmap(hessian(loss))
    lo, hi = [], []
    for s in range(0, S, chunk):
        H = hess(theta[s : s + chunk], *(a[s : s + chunk] for a in args))  # (c, P, P)
        ev = torch.linalg.eigvalsh(0.5 * (H + H.transpose(-1, -2)))
        lo.append(ev[:, 0])
        hi.append(ev[:, -1])
    return torch.cat(lo), torch.cat(hi)


def lanczos_hessian_extremes(
    loss: Callable[..., torch.Tensor],
    theta: torch.Tensor,
    *args: torch.Tensor,
    steps: int = 80,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) Ritz values of ``steps`` Lanczos iterations on the Hessian, per run.

    Algorithm: symmetric Lanczos (Golub & Van Loan, alg. 10.1.1) with full
    reorthogonalisation against all previous vectors, batched over runs; the Hessian is
    only touched through Hessian-vector products ``jvp(grad(loss), theta, v)``. The start
    vector is Gaussian from ``generator``. On breakdown (beta below 1e-12 of the largest
    |alpha|, an invariant subspace found) the run's remaining steps are decoupled from the
    tridiagonal matrix. With ``steps >= P`` the result is exact up to rounding; with fewer,
    Ritz values lie inside the spectrum and converge to the extremes first.
    theta: (S, P); args: each (S, ...).
    """
    S, P = theta.shape
    m = min(steps, P)
    dtype, device = theta.dtype, theta.device

    def hvp_one(t, v, *a):
        return jvp(lambda x: grad(loss)(x, *a), (t,), (v,))[1]

    hvp = vmap(hvp_one)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    q = torch.randn(S, P, generator=g, dtype=dtype).to(device)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    Q = torch.zeros(S, m, P, dtype=dtype, device=device)
    alpha = torch.zeros(S, m, dtype=dtype, device=device)
    beta = torch.zeros(S, m, dtype=dtype, device=device)  # beta[:, j] couples j and j + 1
    alive = torch.ones(S, dtype=torch.bool, device=device)
    for j in range(m):
        Q[:, j] = q
        w = hvp(theta, q, *args)  # (S, P)
        a = (w * q).sum(-1)
        alpha[:, j] = torch.where(alive, a, torch.zeros_like(a))
        # full reorthogonalisation (twice, "twice is enough")
        for _ in range(2):
            w = w - torch.einsum("sj,sjp->sp", torch.einsum("sjp,sp->sj", Q[:, : j + 1], w), Q[:, : j + 1])
        b = torch.linalg.vector_norm(w, dim=-1)
        scale = alpha[:, : j + 1].abs().amax(-1).clamp_min(torch.finfo(dtype).tiny)
        broke = b <= 1e-12 * scale
        if j + 1 < m:
            beta[:, j] = torch.where(alive & ~broke, b, torch.zeros_like(b))
            # after a breakdown continue with a fresh random direction orthogonal to Q
            fresh = torch.randn(S, P, generator=g, dtype=dtype).to(device)
            fresh = fresh - torch.einsum("sj,sjp->sp", torch.einsum("sjp,sp->sj", Q[:, : j + 1], fresh), Q[:, : j + 1])
            nxt = torch.where(broke.unsqueeze(-1), fresh, w)
            q = nxt / torch.linalg.vector_norm(nxt, dim=-1, keepdim=True)
    T = torch.diag_embed(alpha) + torch.diag_embed(beta[:, :-1], 1) + torch.diag_embed(beta[:, :-1], -1)
    ev = torch.linalg.eigvalsh(T)  # (S, m)
    return ev[:, 0], ev[:, -1]


def hessian_extremes(
    loss: Callable[..., torch.Tensor],
    theta: torch.Tensor,
    *args: torch.Tensor,
    exact_max_params: int = 3000,
    lanczos_steps: int = 80,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Exact when P <= ``exact_max_params``, Lanczos otherwise. Returns (min, max, method)."""
    if theta.shape[-1] <= exact_max_params:
        lo, hi = exact_hessian_extremes(loss, theta, *args)
        return lo, hi, "exact"
    lo, hi = lanczos_hessian_extremes(loss, theta, *args, steps=lanczos_steps, generator=generator)
    return lo, hi, f"lanczos{lanczos_steps}"

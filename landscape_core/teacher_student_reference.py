"""Reference implementation: one run at a time, numpy, in the style of the authors' code.

Safran & Shamir's public MATLAB code trains one network at a time: a loop over
iterations, with the closed-form gradient vectorised over neuron pairs of that one
network. This module is that loop in numpy, same protocol (initial point, step, stopping
rule, restarts, cap), used as the baseline of ``make bench`` and as the "fast version
equals reference" oracle in the tests. It shares only the initial points and the final
Hessian classification with :mod:`landscape_core.teacher_student`; the descent is
independent code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import numpy as np
import torch

from landscape_core.errors import OptionError
from landscape_core.teacher_student import (
    TeacherStudentProtocol,
    classify,
    hessian_extreme_eigenvalues,
    initial_points,
    population_loss,
)


def _scaled_gradient_np(W: np.ndarray, V: np.ndarray) -> np.ndarray:
    """2 pi dF/dW for one run. W: (n, d), V: (k, d) -> (n, d)."""
    n = W.shape[0]
    U = np.concatenate([W, V], axis=0)  # (n + k, d)
    nw = np.sqrt((W * W).sum(1))  # (n,)
    nu = np.sqrt((U * U).sum(1))  # (n + k,)
    cos = np.clip((W @ U.T) / np.outer(nw, nu), -1.0, 1.0)  # (n, n + k)
    theta = np.arccos(cos)
    sin = np.sqrt(1.0 - cos * cos)  # sin(theta), theta in [0, pi]
    sign = np.concatenate([1.0 - np.eye(n), -np.ones((n, V.shape[0]))], axis=1)
    radial = (sign * sin) @ nu  # (n,)
    return math.pi * W + (radial / nw)[:, None] * W + (sign * (math.pi - theta)) @ U


def _stopping_norm_np(G: np.ndarray, kind: str) -> float:
    """The stopping quantity of G = 2 pi dF/dW for one run: max_i ||G_i|| (``max_neuron``,
    2018) or ||G||_F / (2 pi) = ||dF/dW||_F (``frobenius``, 2021)."""
    if kind == "frobenius":
        return float(np.sqrt((G * G).sum())) / (2.0 * math.pi)
    return float(np.sqrt((G * G).sum(1)).max())


def descend_one(W0: np.ndarray, V: np.ndarray, p: TeacherStudentProtocol) -> dict:
    """Gradient descent for one run with the protocol ``p`` (see gradient_descent): step
    ``p.effective_step(k)``, stopping norm ``p.stopping_norm``, restarts unless
    ``p.restart_grad_norm`` is None."""
    W = W0.copy()
    step = p.effective_step(V.shape[0])
    restart_norm = math.inf if p.restart_grad_norm is None else p.restart_grad_norm
    it = restarts = 0
    while True:
        G = _scaled_gradient_np(W, V)
        g = _stopping_norm_np(G, p.stopping_norm)
        if not math.isfinite(g) or restarts > p.max_restarts:
            return dict(W=W, g=g, it=it, restarts=restarts, step=step, converged=False, diverged=True)
        if g <= p.grad_tol:
            return dict(W=W, g=g, it=it, restarts=restarts, step=step, converged=True, diverged=False)
        if it >= p.max_iterations:
            return dict(W=W, g=g, it=it, restarts=restarts, step=step, converged=False, diverged=False)
        if g > restart_norm:
            W = W0.copy()
            step *= 0.5
            restarts += 1
        else:
            W = W - (step / (2.0 * math.pi)) * G
        it += 1


def run_teacher_student_reference(k: int, n: int, seeds: Iterable[int], **options) -> list[dict]:
    """One-run-at-a-time counterpart of ``run_teacher_student`` (no early stop).

    Returns records with ``seed``, ``status``, ``final_loss``, ``grad_norm``, ``min_eig``,
    ``max_eig``, ``iterations``, ``restarts``, ``final_step``, ``wall_s``.
    """
    p = TeacherStudentProtocol(**options)
    p.validate(k=k, n=n)
    if p.early_stop_global:
        raise OptionError("early_stop_global", "the reference loop runs the full protocol only")
    records = []
    for seed in seeds:
        start = time.perf_counter()
        W0, V = initial_points(k, n, [seed], p)
        out = descend_one(W0[0].numpy(), V[0].numpy(), p)
        W = torch.from_numpy(out["W"])[None]
        loss = population_loss(W, V)
        lo, hi = hessian_extreme_eigenvalues(W, V)
        status = classify(
            final_loss=loss,
            min_eig=lo,
            converged=torch.tensor([out["converged"]]),
            diverged=torch.tensor([out["diverged"]]),
            stopped_early=torch.tensor([False]),
            bad_loss_threshold=p.bad_loss_threshold,
            eig_margin=p.eig_margin,
        )[0]
        records.append(
            {
                "seed": int(seed),
                "status": status,
                "final_loss": float(loss[0]),
                "grad_norm": out["g"],
                "min_eig": float(lo[0]),
                "max_eig": float(hi[0]),
                "iterations": out["it"],
                "restarts": out["restarts"],
                "final_step": out["step"],
                "wall_s": time.perf_counter() - start,
            }
        )
    return records

"""The teacher-student protocol as configuration, its initial points and the
classification of final points (protocols.md section 1 and "The 2021 protocol").

The protocol (:class:`TeacherStudentProtocol`) is Safran & Shamir's (2018) by default;
Safran, Yehudai & Shamir's (2021) is a set of its options: the step as a multiple of 1/k
(``step_times_k``), the initial variance 1/k (``init_variance``), the Frobenius norm of
dF/dW as the stopping norm (``stopping_norm``) and no restart rule.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from landscape_core.errors import OptionError
from landscape_core.seeding import run_generator
from landscape_core.teacher_student.objective import (
    STOPPING_NORMS,
    TWO_PI,
    hessian_extreme_eigenvalues,
    population_gradient,
)

STATUSES = ("global", "spurious", "saddle", "not_converged", "diverged")
TEACHERS = ("identity", "orthonormal")
#: the published gradient-descent step of Safran & Shamir (2018), used when neither ``step``
#: nor ``step_times_k`` is given
DEFAULT_STEP = 0.1
#: initial variance of each coordinate of w_i (times ``init_scale^2``): ``1/d`` (Safran &
#: Shamir 2018, "Xavier") or ``1/k`` (Safran, Yehudai & Shamir 2021); equal when d = k
INIT_VARIANCES = ("1/d", "1/k")
#: modelled bound on the per-step deviation ||x~_{t+1} - (x~_t - step grad F(x~_t))||_F of the
#: float64 descent step from the exact map (absolute, Frobenius; not part of the interval proof of
#: ``stop_when_proven``, :mod:`.prover`): measured against the exact step (gradient in 110-bit
#: interval arithmetic, 200-bit sums) at initial points and near minima for k = n = 10 .. 20 with
#: step 0.1, at most 3.4e-16 (one rounding of each entry of W, ~2^-53 ||W||_F), and with the 2021
#: step 5 / k at k = n = 8 and 13 (tests/test_proven_outcome.py, tests/test_proven_2021.py check 4x)
PROOF_FLOAT_STEP_ERROR = 2e-15
#: largest n * d whose Hessian :func:`global_minimum_curvature` decomposes densely (eigvalsh); above,
#: Lanczos on Hessian-vector products
_DENSE_CURVATURE_MAX = 1024


@dataclass(frozen=True)
class TeacherStudentProtocol:
    """Every value of the protocol, as configuration (protocols.md section 1 and "The 2021
    protocol").

    Defaults are Safran & Shamir's (2018): V = I (d = k), w_i ~ N(0, I_d / d), step 0.1, stop
    at max_i ||2 pi dF/dw_i|| <= 1e-9, restart with half the step from the initial point
    when that norm exceeds 1e4, "bad" when F >= 1e-3. Safran, Yehudai & Shamir (2021) is
    ``step_times_k=5`` (step 5 / k), ``init_variance="1/k"``, ``stopping_norm="frobenius"``,
    ``grad_tol=1e-12``, ``restart_grad_norm=None`` (no restart rule).

    Values that depend on the grid are given as explicit forms, never as code: the step as
    ``step`` (a number) or ``step_times_k`` (step = step_times_k / k), not both; the initial
    variance as ``init_variance`` "1/d" or "1/k". :meth:`effective_step` and
    :meth:`init_variance_value` give the numbers a cell of a given k uses.
    """

    d: int | None = None  # input dimension; None means d = k (the published choice)
    teacher: str = "identity"  # "identity" (rows e_1..e_k) or "orthonormal" (random rows, per seed)
    init_scale: float = 1.0  # w_i ~ N(0, init_scale^2 I_d / d) (init_variance "1/d"; "/ k" with "1/k")
    step: float | None = None  # gradient-descent step on F; None: step_times_k / k, or DEFAULT_STEP (0.1)
    grad_tol: float = 1e-9  # stop when the stopping norm (see stopping_norm) <= grad_tol
    restart_grad_norm: float | None = 1e4  # restart from init with step/2 when the norm exceeds this; None: never
    max_iterations: int = 200_000  # cap; a run reaching it is `not_converged`
    bad_loss_threshold: float = 1e-3  # a converged point with F >= this is bad
    eig_margin: float = 1e-6  # spurious needs min eigenvalue > margin; saddle otherwise
    early_stop_global: bool = False  # stop monotone runs once F < bad_loss_threshold (see gradient_descent)
    monotone_rtol: float = 1e-12  # F_{t+1} <= F_t (1 + rtol) counts as "did not increase"
    compact_every: int = 64  # iterations between removals of finished runs from the batch
    max_restarts: int = 30  # a run needing more restarts than this is `diverged`
    step_times_k: float | None = None  # step = step_times_k / k (2021: 5); excludes `step`
    init_variance: str = "1/d"  # variance of each coordinate of w_i (x init_scale^2): "1/d" or "1/k"
    stopping_norm: str = "max_neuron"  # "max_neuron": max_i ||2 pi dF/dw_i|| (2018); "frobenius": ||dF/dW||_F (2021)
    stop_when_proven: bool = False  # end a run as `spurious` once its outcome is proven (see gradient_descent)

    def validate(self, *, k: int, n: int) -> None:
        """Raise OptionError naming the first invalid field and what is allowed."""
        _check_int("k", k, minimum=1)
        _check_int("n", n, minimum=1)
        if self.d is not None:
            _check_int("d", self.d, minimum=k)
        if self.teacher not in TEACHERS:
            raise OptionError("teacher", f"{self.teacher!r} is not one of {', '.join(TEACHERS)}")
        if self.step is not None and self.step_times_k is not None:
            raise OptionError(
                "step_times_k",
                f"the step is given twice (step = {self.step!r}, step_times_k = "
                f"{self.step_times_k!r}); give either step (a number) or step_times_k "
                "(step = step_times_k / k), and set the other to null",
            )
        names = ["init_scale", "grad_tol", "bad_loss_threshold"]
        names += [name for name in ("step", "step_times_k", "restart_grad_norm") if getattr(self, name) is not None]
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise OptionError(name, f"must be a positive finite number, got {value!r}")
        if self.init_variance not in INIT_VARIANCES:
            raise OptionError(
                "init_variance",
                f"{self.init_variance!r} is not one of {', '.join(INIT_VARIANCES)} "
                "(variance of each coordinate of w_i, times init_scale^2)",
            )
        if self.stopping_norm not in STOPPING_NORMS:
            raise OptionError(
                "stopping_norm",
                f"{self.stopping_norm!r} is not one of {', '.join(STOPPING_NORMS)} "
                "(max_neuron: max_i ||2 pi dF/dw_i||, 2018; "
                "frobenius: ||dF/dW||_F, 2021)",
            )
        if not isinstance(self.eig_margin, (int, float)) or self.eig_margin < 0:
            raise OptionError("eig_margin", f"must be a number >= 0, got {self.eig_margin!r}")
        if not isinstance(self.stop_when_proven, bool):
            raise OptionError("stop_when_proven", f"must be true or false, got {self.stop_when_proven!r}")
        if not isinstance(self.monotone_rtol, (int, float)) or self.monotone_rtol < 0:
            raise OptionError("monotone_rtol", f"must be a number >= 0, got {self.monotone_rtol!r}")
        entries = (n * self.input_dim(k)) ** 2
        if 8 * entries > MAX_HESSIAN_BYTES:
            largest = math.isqrt(MAX_HESSIAN_BYTES // 8)
            raise OptionError(
                "n" if n > k else "k",
                f"k={k}, n={n}: one run's Hessian has (n*d)^2 = {entries:.3g} "
                "float64 "
                f"entries ({8 * entries / 1024**3:.3g} GiB); at most "
                f"{MAX_HESSIAN_BYTES // 1024**3} GiB per run, so n*d <= {largest} "
                f"(k = n <= {math.isqrt(largest)})",
            )
        _check_int("max_iterations", self.max_iterations, minimum=1)
        _check_int("compact_every", self.compact_every, minimum=1)
        _check_int("max_restarts", self.max_restarts, minimum=0)
        if self.early_stop_global:
            self._check_early_global(k, n)
        if self.stop_when_proven:
            self._check_provable(k)

    def _check_early_global(self, k: int, n: int) -> None:
        """The early-global rule needs gradient descent to be a descent method near the global
        minima, where the runs it stops end: step * lambda_max(H) < 2 at a global minimum
        (:func:`global_minimum_curvature`; docs/teacher_student.md, "The early-global rule"). With
        n < k there is no global minimum (F > 0 everywhere) and nothing to check."""
        if n < k:
            return
        step, curvature = self.effective_step(k), global_minimum_curvature(k, n, self.input_dim(k))
        if step * curvature >= 2:
            raise OptionError(
                "early_stop_global",
                f"needs step * lambda_max(Hessian at a global minimum) < 2, but at k = {k}, n = {n} it is "
                f"{step:.4g} * {curvature:.4g} = {step * curvature:.4g} (gradient descent does not descend near "
                f"the global minima, so F < bad_loss_threshold does not decide the outcome): set it false for "
                f"this cell or take a step below {2 / curvature:.4g}",
            )

    def _check_provable(self, k: int) -> None:
        """A necessary condition of every proof of ``stop_when_proven`` at this step (the float64
        floor of the stopping norm, docs/teacher_student.md#proven-outcomes-the-convergence-proof):
        c_norm * eps / step <= grad_tol / 2, since c_norm L eps / (1 - q) >= c_norm eps / step."""
        step = self.effective_step(k)
        c_norm = TWO_PI if self.stopping_norm == "max_neuron" else 1.0
        floor = c_norm * PROOF_FLOAT_STEP_ERROR / step
        if not floor <= self.grad_tol / 2:
            raise OptionError(
                "stop_when_proven",
                f"no run can be proven at k = {k}: the proof needs c_norm * eps / step <= grad_tol / 2 (the "
                f"float64 floor of the stopping norm), but {c_norm:.4g} * {PROOF_FLOAT_STEP_ERROR:.0e} / {step:.4g} = "
                f"{floor:.3g} > {self.grad_tol / 2:.3g}: set it false for this cell, or a larger step or grad_tol",
            )

    def input_dim(self, k: int) -> int:
        return k if self.d is None else int(self.d)

    def effective_step(self, k: int) -> float:
        """The step a cell with k teacher neurons uses: ``step_times_k / k`` when given, else
        ``step``, else :data:`DEFAULT_STEP`."""
        if self.step_times_k is not None:
            return float(self.step_times_k) / k
        return DEFAULT_STEP if self.step is None else float(self.step)

    def init_std(self, k: int) -> float:
        """Standard deviation of each coordinate of an initial w_i: init_scale / sqrt(d) ("1/d")
        or init_scale / sqrt(k) ("1/k"); the same float when d = k."""
        return self.init_scale / math.sqrt(self.input_dim(k) if self.init_variance == "1/d" else k)

    def init_variance_value(self, k: int) -> float:
        """The effective initial variance of each coordinate of w_i: init_scale^2 / d ("1/d")
        or init_scale^2 / k ("1/k")."""
        return self.init_scale**2 / (self.input_dim(k) if self.init_variance == "1/d" else k)


#: the largest Hessian of one run (float64, (n*d)^2 entries) a cell may ask for: the
#: classification computes it per run, a chunk of runs at a time
MAX_HESSIAN_BYTES = 4 * 1024**3


def global_reference_minimum(k: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A global minimum (F = 0) of the identity teacher, float64: W (n, d), V (k, d). W = V for
    n = k; for n > k the first teacher row split into n - k + 1 equal parallel rows (W's rows 0
    and k..n-1 are v_1 / (n - k + 1)), one point of the degenerate set of global minima."""
    V = torch.eye(k, d, dtype=torch.float64)
    W = torch.cat([V, V[:1].expand(n - k, d)]) / 1.0  # (n, d), a copy
    W[0] = V[0] / (n - k + 1)
    W[k:] = V[0] / (n - k + 1)
    return W, V


@functools.lru_cache(maxsize=256)
def global_minimum_curvature(k: int, n: int, d: int) -> float:
    """The largest eigenvalue of the Hessian of F at the global minimum
    :func:`global_reference_minimum` (float64). With an orthonormal teacher it is the same
    (F(W Q, V Q) = F(W, V) for orthogonal Q); for n = k every global minimum is a permutation
    of V, with this spectrum; for n = k + 1 the value is the same at every split fraction (checked
    at 0.02 .. 0.5 in tests/test_proven_2021.py). Dense ``eigvalsh`` of the analytic Hessian for
    n * d <= ``_DENSE_CURVATURE_MAX``, else Lanczos (``scipy.sparse.linalg.eigsh``) on central
    differences of the analytic gradient, step 1e-6 (relative error ~1e-8, tested against eigvalsh)."""
    W, V = global_reference_minimum(k, n, d)
    if n * d <= _DENSE_CURVATURE_MAX:
        return float(hessian_extreme_eigenvalues(W[None], V[None])[1][0])
    return _lanczos_curvature(W, V)


def _lanczos_curvature(W: torch.Tensor, V: torch.Tensor, h: float = 1e-6) -> float:
    """Largest Hessian eigenvalue at W (n, d), V (k, d) by Lanczos on central differences of the
    analytic gradient: H u ~ (grad F(W + h u) - grad F(W - h u)) / (2 h), ||u|| = 1."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    size = W.numel()

    def hvp(x: np.ndarray) -> np.ndarray:
        u = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(W.shape))  # (n, d)
        scale = float(u.norm())
        if scale == 0:
            return np.zeros(size)
        u = u / scale
        plus, minus = population_gradient((W + h * u)[None], V[None]), population_gradient((W - h * u)[None], V[None])
        return ((plus - minus)[0] * (scale / (2 * h))).reshape(-1).numpy()

    start = np.linspace(1.0, 2.0, size)  # deterministic, not orthogonal to the top eigenvector here
    values = eigsh(LinearOperator((size, size), matvec=hvp, dtype=np.float64), k=1, which="LA", v0=start, tol=1e-10)[0]
    return float(values[0])


def _check_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(name, f"must be an integer >= {minimum}, got {value!r}")


def initial_points(k: int, n: int, seeds: Sequence[int], protocol: TeacherStudentProtocol):
    """Teacher V (R, k, d) and initial student W0 (R, n, d), float64 on the CPU.

    Each run draws from its own generator seeded by (k, n, d, teacher, seed), so a run's
    initial point is independent of which chunk or device computes it, and the same seed
    gives the same W0 for every step size / tolerance (common random numbers).
    """
    d = protocol.input_dim(k)
    std = protocol.init_std(k)  # init_scale / sqrt(d) ("1/d") or / sqrt(k) ("1/k")
    Ws, Vs = [], []
    for seed in seeds:
        gen = run_generator("teacher_student", k, n, d, protocol.teacher, int(seed))
        if protocol.teacher == "identity":
            V = torch.eye(k, d, dtype=torch.float64)
        else:
            q, r = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))
            V = (q * torch.sign(torch.diagonal(r))).T.contiguous()  # (k, d) orthonormal rows, Haar
        W = torch.randn(n, d, generator=gen, dtype=torch.float64) * std
        Ws.append(W)
        Vs.append(V)
    return torch.stack(Ws), torch.stack(Vs)


def classify(
    *,
    final_loss: torch.Tensor,
    min_eig: torch.Tensor,
    converged: torch.Tensor,
    diverged: torch.Tensor,
    stopped_early: torch.Tensor,
    bad_loss_threshold: float,
    eig_margin: float,
) -> list[str]:
    """Status per run (protocols.md section 1):

    - ``diverged``: non-finite loss or gradient, or more restarts than allowed;
    - ``not_converged``: the iteration cap ended the run above the gradient tolerance;
    - ``global``: converged (or stopped by the early-global rule) with F < threshold;
    - ``spurious``: converged with F >= threshold and smallest Hessian eigenvalue > margin
      (a strict local minimum in float64, the practical version of the authors' exact check);
    - ``saddle``: converged with F >= threshold and smallest eigenvalue <= margin (a
      negative eigenvalue, or a degenerate point that cannot be certified a minimum;
      ``hessian_degenerate`` in the record tells the two apart).
    """
    out = []
    for i in range(final_loss.shape[0]):
        loss = float(final_loss[i])
        if bool(diverged[i]) or not math.isfinite(loss):
            out.append("diverged")
        elif bool(stopped_early[i]):
            out.append("global")
        elif not bool(converged[i]):
            out.append("not_converged")
        elif loss < bad_loss_threshold:
            out.append("global")
        elif float(min_eig[i]) > eig_margin:
            out.append("spurious")
        else:
            out.append("saddle")
    return out

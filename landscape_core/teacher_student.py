"""Two-layer ReLU teacher-student population objective (Safran & Shamir, ICML 2018).

Inputs x ~ N(0, I_d); student rows w_1..w_n, teacher rows v_1..v_k, second layer fixed
to ones. The population loss has the closed form (protocols.md section 1)

    F(W) = 1/2 sum_{i,j} f(w_i, w_j) - sum_{i,j} f(w_i, v_j) + 1/2 sum_{i,j} f(v_i, v_j)
    f(w, v) = ||w|| ||v|| (sin t + (pi - t) cos t) / (2 pi),   t = angle(w, v)

Everything here is batched over runs: student weights ``W`` are ``(R, n, d)``, teacher
weights ``V`` are ``(R, k, d)``; runs never interact. The gradient and Hessian are the
analytic ones (autograd is used only by the tests, as a reference: it is undefined where
two rows are parallel, e.g. at the global minimum W = V, where the analytic forms are
continuous).

The protocol (:class:`TeacherStudentProtocol`) is Safran & Shamir's (2018) by default;
Safran, Yehudai & Shamir's (2021) is a set of its options: the step as a multiple of 1/k
(``step_times_k``), the initial variance 1/k (``init_variance``), the Frobenius norm of
dF/dW as the stopping norm (``stopping_norm``) and no restart rule.

Public entry points: :func:`population_loss`, :func:`population_gradient`,
:func:`population_hessian`, :func:`gradient_norm`, :func:`gradient_descent`,
:func:`run_teacher_student`, :func:`group_families`, :func:`permutation_distance`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import torch

from landscape_core.errors import OptionError
from landscape_core.seeding import run_generator
from landscape_core.statistics import clopper_pearson_interval

if TYPE_CHECKING:
    import numpy as np

TWO_PI = 2.0 * math.pi
STATUSES = ("global", "spurious", "saddle", "not_converged", "diverged")
TEACHERS = ("identity", "orthonormal")
#: the published gradient-descent step of Safran & Shamir (2018), used when neither ``step``
#: nor ``step_times_k`` is given
DEFAULT_STEP = 0.1
#: initial variance of each coordinate of w_i (times ``init_scale^2``): ``1/d`` (Safran &
#: Shamir 2018, "Xavier") or ``1/k`` (Safran, Yehudai & Shamir 2021); equal when d = k
INIT_VARIANCES = ("1/d", "1/k")
#: the gradient norm the stopping rule (and the restart rule) thresholds: ``max_neuron`` =
#: max_i ||2 pi dF/dw_i|| (2018), ``frobenius`` = ||dF/dW||_F, the unscaled gradient (2021)
STOPPING_NORMS = ("max_neuron", "frobenius")

# Below this sine the angle between two rows is treated as 0 or pi in the Hessian's
# rank-one correction terms; those terms are O(sin), so the error this makes is < 1e-12.
_SIN_FLOOR = 1e-12


# ----------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------
def _angles(W: torch.Tensor, U: torch.Tensor, *, self_pairs: bool):
    """Norms, cosines, angles and sines of every pair (w_i, u_j).

    W: (..., n, d), U: (..., m, d). With ``self_pairs`` (U is W) the diagonal cosine is
    set to 0 before ``arccos`` so that no derivative is taken at cos = 1; callers
    overwrite or mask the diagonal terms.
    Returns nw (..., n), nu (..., m), cos, theta, sin (..., n, m).
    """
    nw = torch.linalg.vector_norm(W, dim=-1)  # (..., n)
    nu = torch.linalg.vector_norm(U, dim=-1)  # (..., m)
    dots = W @ U.transpose(-1, -2)  # (..., n, m)
    cos = (dots / (nw.unsqueeze(-1) * nu.unsqueeze(-2))).clamp(-1.0, 1.0)
    if self_pairs:
        eye = torch.eye(W.shape[-2], dtype=torch.bool, device=W.device)
        cos = torch.where(eye, torch.zeros_like(cos), cos)
    theta = torch.arccos(cos)
    sin = torch.sqrt(1.0 - cos * cos)  # sin(theta), theta in [0, pi]
    return nw, nu, cos, theta, sin


def _pair_kernel(W: torch.Tensor, U: torch.Tensor, *, self_pairs: bool) -> torch.Tensor:
    """f(w_i, u_j) for every pair, (..., n, m); exact ||w||^2 / 2 on the diagonal of W, W."""
    nw, nu, cos, theta, sin = _angles(W, U, self_pairs=self_pairs)
    f = nw.unsqueeze(-1) * nu.unsqueeze(-2) * (sin + (math.pi - theta) * cos) / TWO_PI
    if self_pairs:
        eye = torch.eye(W.shape[-2], dtype=torch.bool, device=W.device)
        f = torch.where(eye, (nw * nw / 2.0).unsqueeze(-1).expand_as(f), f)
    return f


def _student_terms(W: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """The part of F that depends on W: 1/2 sum f(w_i, w_j) - sum f(w_i, v_j). (...,)"""
    student = _pair_kernel(W, W, self_pairs=True).sum(dim=(-2, -1))  # (...,)
    cross = _pair_kernel(W, V, self_pairs=False).sum(dim=(-2, -1))  # (...,)
    return 0.5 * student - cross


def _teacher_term(V: torch.Tensor) -> torch.Tensor:
    """The constant part of F: 1/2 sum f(v_i, v_j). (...,)"""
    return 0.5 * _pair_kernel(V, V, self_pairs=True).sum(dim=(-2, -1))


def population_loss(W: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Closed-form population loss F(W) for each run.

    W: (..., n, d) student rows; V: (..., k, d) teacher rows (broadcast over the batch).
    Returns (...,). Differentiable by autograd wherever no two rows are parallel.
    """
    return _student_terms(W, V) + _teacher_term(V)


def _gradient_weights(n: int, k: int, *, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign, offset), each (n, n + k). sign s_ij: the sign of pair (i, j)'s term in dF/dw_i,
    +1 student j != i, 0 for j = i, -1 teacher. offset = pi (s + [I_n | 0]), so that
    offset - s theta = s (pi - theta) + pi [I_n | 0] exactly (s in {-1, 0, 1}): the pi w_i
    term of the gradient joins the sum over u_j (u_i = w_i)."""
    student = 1.0 - torch.eye(n, dtype=dtype, device=device)
    teacher = -torch.ones(n, k, dtype=dtype, device=device)
    sign = torch.cat([student, teacher], dim=1)
    offset = math.pi * torch.cat([torch.ones(n, n, dtype=dtype, device=device), teacher], dim=1)
    return sign, offset


class _Workspace:
    """Outputs of every kernel of one evaluation of G = 2 pi dF/dW (and F) for R runs, at
    U = [W; V] (R, n + k, d), allocated once with the views the kernels read (W's unit rows,
    the transposed unit rows, the student norms). The descent allocates one for its batch and
    evaluates through ``head(A)``, the buffers of the first A runs (views: the batch is the
    leading dimension, so they stay contiguous): each kernel writes into its buffer
    (``out=``), so an iteration pays neither allocation nor view construction, which at a few
    runs is half its cost (k = n = 10, one run: 38 vs 76 us per step), and no block faults in
    fresh pages. The functional entry points allocate one per call: one code path, the same
    kernels, the same bits."""

    def __init__(self, R: int, n: int, k: int, d: int, *, dtype, device, loss: bool):
        m = n + k

        def new(*shape):
            return torch.empty(shape, dtype=dtype, device=device)

        buffers = dict(
            nu=new(R, m, 1),  # row norms of U
            Un=new(R, m, d),  # unit rows of U
            **{name: new(R, n, m) for name in ("cos", "theta", "sin", "signed_sin", "coef")},
            radial=new(R, n, 1),  # sum_j s_ij ||u_j|| sin t_ij
            radial_w=new(R, n, d),
            neuron_norms=new(R, n),  # ||G_i||, for the stopping rule
        )
        if loss:
            buffers.update(pi_minus_theta=new(R, n, m), pair=new(R, n, m),
                           weighted_nu=new(R, m, 1),  # lw_j ||u_j||
                           per_row=new(R, n, 1))
        self._bind(buffers, n, torch.tensor(math.pi, dtype=dtype, device=device) if loss else None)

    def _bind(self, buffers: dict, n: int, pi) -> None:
        self.buffers, self.n, self.pi = buffers, n, pi
        for name, buffer in buffers.items():
            setattr(self, name, buffer)
        self.Wn = self.Un[:, :n]  # (R, n, d): W / ||w||, a view
        self.UnT = self.Un.transpose(-1, -2)  # (R, d, m), a view
        if pi is not None:
            self.nw_row = self.nu[:, :n, 0].unsqueeze(-2)  # (R, 1, n): ||w_i||, a view

    def head(self, A: int) -> "_Workspace":
        """The workspace of the first A runs (views of these buffers)."""
        ws = object.__new__(_Workspace)
        ws._bind({name: buffer[:A] for name, buffer in self.buffers.items()}, self.n, self.pi)
        return ws


def _evaluate_into(U: torch.Tensor, ws: _Workspace, weights, G: torch.Tensor,
                   loss_weight: torch.Tensor | None = None, student: torch.Tensor | None = None, *,
                   angles: tuple | None = None) -> None:
    """G = 2 pi dF/dW written into ``G`` (R, n, d), and with ``student`` (R,) (``ws`` made
    with ``loss=True``) the W-dependent part of F written into it, at U = [W; V] (R, n + k, d),
    contiguous. ``angles`` = (nu (R, n + k, 1), cos, theta, sin (R, n, n + k)): buffers that
    receive the norms and angles instead of ``ws``'s (the descent keeps them per iterate and
    evaluates F after the block, :func:`_loss_from_angles`; ``student`` is then not given).

    Gradient (``weights`` = (s, offset) of :func:`_gradient_weights`; s_ii = 0, u_i = w_i),
    5 kernels after the angles:

        G_i = pi w_i + (sum_j s_ij ||u_j|| sin t_ij) w_i / ||w_i|| + sum_j s_ij (pi - t_ij) u_j
            = (sum_j s_ij ||u_j|| sin t_ij) w_i / ||w_i|| + sum_j c_ij u_j,
        c = offset - s t = s (pi - t) + pi [I | 0].

    The angles: cos of every (student, student-or-teacher) pair from the unit rows, clamped
    to [-1, 1]; sin t is one kernel where sqrt(1 - cos^2) (the same value for t in [0, pi]) is
    three. Loss (``loss_weight`` lw (n + k, 1) of :func:`_loss_weights`):

        1/2 sum_{i, j} f(w_i, w_j) - sum_{i, l} f(w_i, v_l) = sum_{i, j} ||w_i|| lw_j ||u_j|| p_ij,
        p_ij = sin t_ij + (pi - t_ij) cos t_ij,   2 pi f(w_i, u_j) = ||w_i|| ||u_j|| p_ij;

    lw weights the norms (n + k products per run instead of n (n + k)); the diagonal terms
    f(w_i, w_i) = ||w_i||^2 / 2 come out of the same formula (the computed self-cosine is 1 to
    a few ulp, so p_ii = pi to ~1e-15 relative)."""
    sign, offset = weights
    nu, cos, theta, sin = (ws.nu, ws.cos, ws.theta, ws.sin) if angles is None else angles
    torch.linalg.vector_norm(U, dim=-1, keepdim=True, out=nu)  # (R, n + k, 1)
    torch.div(U, nu, out=ws.Un)
    torch.bmm(ws.Wn, ws.UnT, out=cos).clamp_(-1.0, 1.0)  # (R, n, n + k)
    torch.arccos(cos, out=theta)
    torch.sin(theta, out=sin)
    torch.bmm(torch.mul(sign, sin, out=ws.signed_sin), nu, out=ws.radial)  # (R, n, 1)
    torch.addcmul(offset, sign, theta, value=-1.0, out=ws.coef)  # c_ij
    torch.baddbmm(torch.mul(ws.radial, ws.Wn, out=ws.radial_w), ws.coef, U, out=G)  # (R, n, d)
    if student is not None:
        _loss_from_angles(ws.nw_row, ws.nu, ws.cos, ws.theta, ws.sin, ws.pi, loss_weight, student,
                          pi_minus_theta=ws.pi_minus_theta, pair=ws.pair, weighted_nu=ws.weighted_nu,
                          per_row=ws.per_row)


def _loss_from_angles(nw_row, nu, cos, theta, sin, pi, loss_weight, student, *, pi_minus_theta, pair,
                      weighted_nu, per_row) -> None:
    """The W-dependent part of F (formula in :func:`_evaluate_into`) written into ``student``
    (R,), from the norms nu (R, n + k, 1) (``nw_row`` (R, 1, n): its student rows as a row) and
    the angles (R, n, n + k) of an evaluation; ``pi`` a 0-d tensor, the other keywords the
    buffers of the intermediate results (``pi_minus_theta`` and ``pair`` may be ``theta`` and
    ``sin`` themselves, which are then overwritten)."""
    torch.addcmul(sin, torch.sub(pi, theta, out=pi_minus_theta), cos, out=pair)  # p_ij
    torch.bmm(pair, torch.mul(loss_weight, nu, out=weighted_nu), out=per_row)  # (R, n, 1)
    torch.bmm(nw_row, per_row, out=student.view(-1, 1, 1))  # (R,)


def _fused_scaled_gradient(W: torch.Tensor, V: torch.Tensor, weights) -> torch.Tensor:
    """2 pi dF/dW with few kernel launches, the kernels of the descent's loop
    (:func:`_evaluate_into`). ``weights`` = (sign, offset) of :func:`_gradient_weights`.
    W: (R, n, d), V: (R, k, d) -> (R, n, d)."""
    (R, n, d), k = W.shape, V.shape[-2]
    ws = _Workspace(R, n, k, d, dtype=W.dtype, device=W.device, loss=False)
    G = torch.empty_like(W)
    _evaluate_into(torch.cat([W, V], dim=-2), ws, weights, G)
    return G


def _loss_weights(n: int, k: int, *, dtype, device) -> torch.Tensor:
    """Column weights of :func:`_fused_gradient_and_loss`'s loss, (n + k, 1): 1 / (4 pi) for
    every student column (the diagonal pair included), -1 / (2 pi) for teacher columns."""
    return torch.cat([torch.full((n, 1), 0.25 / math.pi, dtype=dtype, device=device),
                      torch.full((k, 1), -0.5 / math.pi, dtype=dtype, device=device)], dim=0)


def _fused_gradient_and_loss(
    W: torch.Tensor, V: torch.Tensor, weights, loss_weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """G = 2 pi dF/dW (the same kernels as :func:`_fused_scaled_gradient`, so the same bits)
    and the W-dependent part of F from the same angles (:func:`_evaluate_into`); used by the
    descent with ``stop_when_proven`` (the early-global rule's F at no extra arccos); equal to
    :func:`_student_terms` up to rounding. ``loss_weight`` from :func:`_loss_weights`.
    -> ((R, n, d), (R,))."""
    (R, n, d), k = W.shape, V.shape[-2]
    ws = _Workspace(R, n, k, d, dtype=W.dtype, device=W.device, loss=True)
    G, student = torch.empty_like(W), W.new_empty((R,))
    _evaluate_into(torch.cat([W, V], dim=-2), ws, weights, G, loss_weight, student)
    return G, student


def scaled_gradient(W: torch.Tensor, V: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor] | None = None,
                    ) -> torch.Tensor:
    """2 pi * dF/dW, analytic (protocols.md section 1):

        dF/dw_i = w_i / 2 + sum_{j != i} g(w_i, w_j) - sum_j g(w_i, v_j)
        g(w, v) = (||v|| sin t * w / ||w||  +  (pi - t) v) / (2 pi)

    W: (R, n, d), V: (R, k, d); ``weights`` are the pair weights of :func:`_gradient_weights`
    (built when None). Returns (R, n, d). Scaling by 2 pi saves a division in the hot loop and
    is the quantity the published stopping rule thresholds.
    """
    n, k = W.shape[-2], V.shape[-2]
    if weights is None:
        weights = _gradient_weights(n, k, dtype=W.dtype, device=W.device)
    return _fused_scaled_gradient(W, V, weights)


def population_gradient(W: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """dF/dW, analytic. W: (R, n, d), V: (R, k, d) -> (R, n, d)."""
    return scaled_gradient(W, V) / TWO_PI


def neuron_gradient_norm(scaled_grad: torch.Tensor) -> torch.Tensor:
    """max_i || 2 pi dF/dw_i ||, the 2018 stopping quantity. (R, n, d) -> (R,)."""
    return torch.linalg.vector_norm(scaled_grad, dim=-1).amax(dim=-1)


def frobenius_gradient_norm(scaled_grad: torch.Tensor) -> torch.Tensor:
    """|| dF/dW ||_F from G = 2 pi dF/dW, the 2021 stopping quantity (Safran, Yehudai &
    Shamir: the Frobenius norm of the unscaled gradient). (R, n, d) -> (R,)."""
    return torch.linalg.vector_norm(scaled_grad, dim=(-2, -1)) / TWO_PI


def gradient_norm(scaled_grad: torch.Tensor, kind: str = "max_neuron") -> torch.Tensor:
    """The stopping quantity ``kind`` (one of :data:`STOPPING_NORMS`) of G = 2 pi dF/dW.
    (R, n, d) -> (R,)."""
    if kind == "max_neuron":
        return neuron_gradient_norm(scaled_grad)
    if kind == "frobenius":
        return frobenius_gradient_norm(scaled_grad)
    raise OptionError("stopping_norm", f"{kind!r} is not one of {', '.join(STOPPING_NORMS)}")


def _hessian_blocks(W: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Analytic Hessian of F as blocks, (R, n, d, n, d).

    With u = w / ||w||, z = v / ||v||, c = cos t, s = sin t (derived from g above):
      d g(w, v) / d w = ||v|| / (2 pi ||w||) * (s (I - u u^T) + a a^T / s),  a = z - c u
      d g(w, v) / d v = ((pi - t) I + c s z z^T - (c / s) b b^T + s (b z^T + z b^T)) / (2 pi),
      b = u - c z,
    where every 1/s term multiplies an outer product of norm s^2 (so it is O(s)).
    Diagonal blocks: I / 2 + sum_{j != i} dg(w_i, w_j)/dw_i - sum_j dg(w_i, v_j)/dw_i;
    off-diagonal (i != j): dg(w_i, w_j)/dw_j.
    """
    R, n, d = W.shape
    k = V.shape[-2]
    dtype, device = W.dtype, W.device
    U = torch.cat([W, V], dim=-2)  # (R, m, d), m = n + k
    nw, nu, cos, theta, sin = _angles(W, U, self_pairs=False)  # (R, n, m)
    uw = W / nw.unsqueeze(-1)  # (R, n, d)
    uu = U / nu.unsqueeze(-1)  # (R, m, d)
    big = sin > _SIN_FLOOR
    inv_sin = torch.where(big, 1.0 / torch.where(big, sin, torch.ones_like(sin)), torch.zeros_like(sin))
    sign, _ = _gradient_weights(n, k, dtype=dtype, device=device)  # (n, m)
    eye_d = torch.eye(d, dtype=dtype, device=device)

    # Diagonal blocks: dg(w_i, u_j)/dw_i summed over j with sign.
    # coefficient ||u_j|| / (2 pi ||w_i||), times sign
    coef = sign * nu.unsqueeze(-2) / (TWO_PI * nw.unsqueeze(-1))  # (R, n, m)
    a = uu.unsqueeze(-3) - cos.unsqueeze(-1) * uw.unsqueeze(-2)  # (R, n, m, d): z_j - c u_i
    sum_s = (coef * sin).sum(-1)  # (R, n)
    proj = eye_d - uw.unsqueeze(-1) * uw.unsqueeze(-2)  # (R, n, d, d)
    aat = torch.einsum("rij,rijd,rije->ride", coef * inv_sin, a, a)  # (R, n, d, d)
    diag_blocks = 0.5 * eye_d + sum_s[..., None, None] * proj + aat  # (R, n, d, d)

    # Off-diagonal blocks between students: dg(w_i, w_j)/dw_j.
    ct, st, th = cos[..., :n], sin[..., :n], theta[..., :n]  # (R, n, n)
    ist = inv_sin[..., :n]
    z = uw.unsqueeze(-3).expand(R, n, n, d)  # z_j = u_j      (R, n, n, d)
    u = uw.unsqueeze(-2).expand(R, n, n, d)  # u_i            (R, n, n, d)
    b = u - ct.unsqueeze(-1) * z  # (R, n, n, d)
    zz = z.unsqueeze(-1) * z.unsqueeze(-2)  # (R, n, n, d, d)
    bb = b.unsqueeze(-1) * b.unsqueeze(-2)
    bz = b.unsqueeze(-1) * z.unsqueeze(-2)
    off = (
        (math.pi - th)[..., None, None] * eye_d
        + (ct * st)[..., None, None] * zz
        - (ct * ist)[..., None, None] * bb
        + st[..., None, None] * (bz + bz.transpose(-1, -2))
    ) / TWO_PI  # (R, n, n, d, d)
    eye_n = torch.eye(n, dtype=torch.bool, device=device)
    blocks = torch.where(eye_n[None, :, :, None, None], diag_blocks.unsqueeze(-3).expand_as(off), off)
    # (R, i, j, d, e) -> (R, i, d, j, e)
    return blocks.permute(0, 1, 3, 2, 4)


def population_hessian(W: torch.Tensor, V: torch.Tensor, *, chunk_size: int = 64) -> torch.Tensor:
    """Analytic Hessian of F with respect to the flattened W (row-major, neuron-major).

    W: (R, n, d), V: (R, k, d) -> (R, n*d, n*d). Runs are processed ``chunk_size`` at a
    time to bound the (R, n, n, d, d) intermediates.
    """
    R, n, d = W.shape
    out = [
        _hessian_blocks(W[s : s + chunk_size], V[s : s + chunk_size]).reshape(-1, n * d, n * d)
        for s in range(0, R, chunk_size)
    ]
    return torch.cat(out, dim=0) if out else W.new_zeros(0, n * d, n * d)


def hessian_extreme_eigenvalues(W: torch.Tensor, V: torch.Tensor, *, chunk_size: int = 64):
    """Smallest and largest eigenvalue of the analytic Hessian per run, by
    ``torch.linalg.eigvalsh`` (exact symmetric eigendecomposition). -> ((R,), (R,))."""
    mins, maxs = [], []
    for s in range(0, W.shape[0], chunk_size):
        H = population_hessian(W[s : s + chunk_size], V[s : s + chunk_size], chunk_size=chunk_size)
        H = 0.5 * (H + H.transpose(-1, -2))  # symmetrise away rounding before eigvalsh
        ev = torch.linalg.eigvalsh(H)  # (r, n*d), ascending
        mins.append(ev[:, 0])
        maxs.append(ev[:, -1])
    if not mins:
        empty = W.new_zeros(0)
        return empty, empty
    return torch.cat(mins), torch.cat(maxs)


# ----------------------------------------------------------------------------------
# Protocol
# ----------------------------------------------------------------------------------
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
            raise OptionError("step_times_k", f"the step is given twice (step = {self.step!r}, step_times_k = "
                                              f"{self.step_times_k!r}); give either step (a number) or step_times_k "
                                              "(step = step_times_k / k), and set the other to null")
        names = ["init_scale", "grad_tol", "bad_loss_threshold"]
        names += [name for name in ("step", "step_times_k", "restart_grad_norm") if getattr(self, name) is not None]
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise OptionError(name, f"must be a positive finite number, got {value!r}")
        if self.init_variance not in INIT_VARIANCES:
            raise OptionError("init_variance", f"{self.init_variance!r} is not one of {', '.join(INIT_VARIANCES)} "
                                               "(variance of each coordinate of w_i, times init_scale^2)")
        if self.stopping_norm not in STOPPING_NORMS:
            raise OptionError("stopping_norm", f"{self.stopping_norm!r} is not one of {', '.join(STOPPING_NORMS)} "
                                               "(max_neuron: max_i ||2 pi dF/dw_i||, 2018; frobenius: ||dF/dW||_F, 2021)")
        if not isinstance(self.eig_margin, (int, float)) or self.eig_margin < 0:
            raise OptionError("eig_margin", f"must be a number >= 0, got {self.eig_margin!r}")
        if not isinstance(self.stop_when_proven, bool):
            raise OptionError("stop_when_proven", f"must be true or false, got {self.stop_when_proven!r}")
        if not isinstance(self.monotone_rtol, (int, float)) or self.monotone_rtol < 0:
            raise OptionError("monotone_rtol", f"must be a number >= 0, got {self.monotone_rtol!r}")
        entries = (n * self.input_dim(k)) ** 2
        if 8 * entries > MAX_HESSIAN_BYTES:
            largest = math.isqrt(MAX_HESSIAN_BYTES // 8)
            raise OptionError("n" if n > k else "k", f"k={k}, n={n}: one run's Hessian has (n*d)^2 = {entries:.3g} float64 "
                                                     f"entries ({8 * entries / 1024**3:.3g} GiB); at most "
                                                     f"{MAX_HESSIAN_BYTES // 1024**3} GiB per run, so n*d <= {largest} "
                                                     f"(k = n <= {math.isqrt(largest)})")
        _check_int("max_iterations", self.max_iterations, minimum=1)
        _check_int("compact_every", self.compact_every, minimum=1)
        _check_int("max_restarts", self.max_restarts, minimum=0)

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


# ----------------------------------------------------------------------------------
# Proven outcomes (the ``stop_when_proven`` option)
# ----------------------------------------------------------------------------------
#: a run is checked only when ||dF/dW||_F is at most this (far from a minimum nothing can be proven)
_PROOF_GRAD_PREFILTER = 1e-3
#: at most this many iterations between two checks of one candidate run
_PROOF_RECHECK_MAX = 4096
#: at most this many iterations before a run whose check failed is checked again
_PROOF_RETRY = 1024
#: a run is checked against a ball of radius R once its estimated distance to the minimum,
#: ||dF/dW||_F / lambda, is at most this fraction of R (float64 estimate; the proof decides)
_PROOF_REACH = 0.85
#: modelled bound on the per-step deviation ||x~_{t+1} - (x~_t - step grad F(x~_t))||_F of the
#: float64 descent step from the exact map (absolute, Frobenius; not part of the interval proof):
#: measured against the exact step (gradient in 110-bit interval arithmetic, 200-bit sums) at
#: initial points and near minima for k = n = 10 .. 20, at most 3.4e-16 (one rounding of each
#: entry of W, ~2^-53 ||W||_F); 2e-15 keeps a factor ~6 (tests/test_proven_outcome.py checks 4)
_PROOF_FLOAT_STEP_ERROR = 2e-15
#: float64 Newton steps that move a run's iterate onto the minimum before a new ball is certified
#: there (not part of the proof); the ball's centre is then every covered run's final point
_PROOF_NEWTON_STEPS = 3
#: the prover's ball radius R as a fraction of lambda_c / L3: the Hessian stays >= (1 - this)
#: lambda_c on the ball. A run is checked with the bounds of the ball around x* through its own
#: point (and the floor with those at x*), so a large ball only admits farther runs; those with a
#: slow contraction there fail the iteration-cap check and are looked at again later
_PROOF_BALL_FRACTION = 0.9


@dataclass(frozen=True)
class ProvenBall:
    """A certified ball B(center, ball) around a strict local minimum x* (all bounds rigorous,
    see :class:`SpuriousProver`): ||x* - center|| <= radius, mu I <= Hessian(F) <= L I on the
    whole ball, F(x*) >= objective_lo; ``lam`` <= lambda_min(H(center)), ``big`` >=
    lambda_max(H(center)), ``l3`` the third-derivative bound on the ball (so on B(center, t),
    t <= ball, lam - l3 t <= H <= big + l3 t); ``objective`` is F(center) in float64 (only
    used to choose which balls to try), ``teacher`` the V it holds for."""

    center: "np.ndarray"  # (n, d)
    teacher: "np.ndarray"  # (k, d)
    radius: float
    ball: float
    mu: float
    L: float
    objective_lo: float
    objective: float
    lam: float
    big: float
    l3: float


class SpuriousProver:
    """Decides, with a proof, that gradient descent from a point y ends at a spurious strict
    local minimum, and that the full protocol would classify the run ``spurious``.

    **The certified ball.** At a point c (a run's current iterate moved onto its minimum by
    ``_PROOF_NEWTON_STEPS`` float64 Newton steps: how c is found is not part of the proof),
    :func:`certification.certify_minimum` (steps 1-3 of protocols.md "Certified spurious
    minima", interval arithmetic) gives lambda_c <= lambda_min(H(c)), a strict local minimum
    x* with ||x* - c|| <= r (~1e-12 at a Newton point) and F(x*) >= objective_lo. From the interval Hessian enclosure at c
    (:func:`certification.hessian_enclosure`), Lambda_c >= lambda_max(H(c)) for every symmetric
    H in the enclosure: the smaller of max_i sum_j max(|H_lo|, |H_hi|)_ij (Gershgorin, summed
    upward) and -lambda_min(-H) bounded below as lambda_min(H) is
    (:func:`certification.lambda_min_lower_bound`: Weyl + Bauer-Fike). With L3 the notes' third-derivative bound on B(c, R) (R below
    the smallest row norm and half the smallest row distance, as in the certificate), the
    Hessian is Lipschitz with constant L3 there, so on all of B(c, R)

        mu I <= H(x) <= L I,   mu = lambda_c - L3 R > 0,   L = Lambda_c + L3 R.

    F is strictly convex on B(c, R), x* is its only critical point there. R = min(w_min,
    row_distance / 2) / 2 capped at ``_PROOF_BALL_FRACTION`` lambda_c / L3(0), so mu ~
    lambda_c / 10 at the edge (runs nearer x* get the bounds of smaller balls, below).

    **Covering a point y.** For the identity teacher with d = k, F(P W Q) = F(W) for
    permutations P of the student rows and Q of the coordinates, hence grad F(P W Q) =
    P grad F(W) Q and gradient descent commutes with (P, Q): y and y' = P y Q (aligned to c
    by :func:`families.symmetric_distance`; an exact permutation of float64 entries) have
    trajectories that are images of each other, with the same losses, gradient norms (both
    stopping norms are permutation invariant) and Hessian spectra. (Other teachers: P only.)
    With D >= ||y' - c|| (rounded up), ||y' - x*|| <= D + r. For rho with rho + r <= R,
    B(x*, rho) is inside B(c, rho + r) within B(c, R), where mu_rho I <= H <= L_rho I with
    mu_rho = lambda_c - L3 (rho + r) >= mu > 0 and L_rho = Lambda_c + L3 (rho + r) <= L
    (tighter than (mu, L) on small balls).

    **Gradient descent converges to x*.** For x in B(x*, rho): grad F(x) = A (x - x*),
    A = int_0^1 H(x* + u (x - x*)) du, mu_rho I <= A <= L_rho I (the segment lies in the ball).
    With step s, s L_rho < 2: x - s grad F(x) - x* = (I - s A)(x - x*), whose norm is <= q_rho
    ||x - x*||, q_rho = max(1 - s mu_rho, s L_rho - 1) < 1. So from y' (rho = D + r) every iterate
    stays in the ball (induction) and ||x_t - x*|| <= q^t (D + r): linear convergence to x*, a
    strict local minimum with F(x*) >= objective_lo. (This is the contraction form of the
    sublevel-set argument: no iterate ever leaves the ball where the Hessian bounds hold.)

    **The full protocol would say ``spurious``.** Each of its rules, from y on:
    - stopping rule: ||grad F(x_t)||_F <= L_rho ||x_t - x*||; the stopping norm is at most
      c_norm ||grad F||_F (c_norm = 2 pi for max_i ||2 pi dF/dw_i||, 1 for ||dF/dW||_F);
    - float64: the computed iteration deviates from the exact map by at most eps per step
      (``_PROOF_FLOAT_STEP_ERROR``, a *model* of rounding, not part of the interval proof:
      it is what the seed-by-seed comparisons check). In two phases, with (mu_j, L_j, q_j) the
      bounds above on B(x*, rho_j): phase 1 on rho1 = (D + r) (1 + 1e-3) (at least + 1e-10):
      ||x~_t - x*|| <= q1^t (D + r) + e1, e1 = eps / (1 - q1), required <= rho1 - (D + r), so
      the float iterates never leave B(x*, rho1); after T1 steps (q1^T1 (D + r) <= e1) they are
      in B(x*, rho2), rho2 = min(2 e1, rho1) (invariant: q2 rho2 + eps <= rho2 as q2 <= q1), where the
      bounds are the minimum's own (mu2 ~ lambda_c, L2 ~ Lambda_c): ||x~ - x*|| <= q2^t rho2 +
      eps / (1 - q2). We require c_norm L2 eps / (1 - q2) <= grad_tol / 2 and stop early only if
      T1 + T2 (T2 the first t with c_norm L2 (q2^t rho2 + eps / (1 - q2)) <= 3 grad_tol / 4)
      satisfies iterations + T1 + T2 <= max_iterations: the full run converges before its cap
      (the last quarter of grad_tol is slack for the float64 evaluation of the stopping norm,
      ~1e-15);
    - restart rule: every later stopping norm is <= c_norm L1 rho1, required <=
      restart_grad_norm: no restart (and so no ``diverged`` by restarts; the gradient is
      finite in the ball);
    - early-global rule: F(x_t) >= F(x*) >= objective_lo; we require objective_lo >=
      bad_loss_threshold + 1e-12 (float64 slack), so it never fires, and the converged
      point is bad; the monotonicity check only gates that rule;
    - eig_margin: the Hessian at the converged point is >= mu1; we require mu1 >= eig_margin +
      1e-9 (slack for the float64 eigenvalue), so the point is ``spurious``, not ``saddle``.
    Where any condition fails the run is not stopped: it descends on under the full protocol.

    **The final point** is the centre c mapped back to y's orientation (P^-1 c Q^-1: the
    point within r of the minimum y's descent converges to, found by float64 Newton steps
    when the ball was made; no Newton step per run), accepted only when it lies in y's image
    of the ball (within D + r of y, plus 1e-10) and its stopping norm is <= grad_tol; else the
    run descends on. Balls are kept and reused for every later run of the batch (one
    certificate per minimum and orientation class, not per run).
    """

    def __init__(self, protocol: "TeacherStudentProtocol", k: int):
        self.p = protocol
        self.k = k
        self.balls: list[ProvenBall] = []
        self.group = protocol.teacher == "identity" and protocol.input_dim(k) == k
        self.c_norm = TWO_PI if protocol.stopping_norm == "max_neuron" else 1.0
        self.certificates = 0  # certify_minimum calls (for the benchmark)
        self.alignments = 0
        self.last_failure = ""  # the first condition that failed in the last covers() (diagnostics)

    # -- the ball ------------------------------------------------------------------
    def certify(self, y, V) -> ProvenBall | None:
        import numpy as np
        from mpmath import iv

        from landscape_core.certification import (
            _Precision, _hi, _lo, _sum_up, certify_minimum, hessian_enclosure, l3_bound, lambda_min_lower_bound,
            newton_polish, pair_enclosures)

        self.certificates += 1
        # the centre: y moved onto the minimum by float64 Newton steps (not part of the proof:
        # everything below is proven about the point c whatever produced it), so the minimum's
        # radius r is ~1e-12 and nearly all of the ball is left for the runs it covers
        c = newton_polish(y, V, steps=_PROOF_NEWTON_STEPS)
        pairs = pair_enclosures(c, V)
        cert = certify_minimum(c, V, bad_loss_threshold=self.p.bad_loss_threshold, pairs=pairs)
        if not (cert.certified and cert.spurious):
            return None
        H_lo, H_hi = hessian_enclosure(c, V, pairs=pairs)
        # >= lambda_max: Gershgorin on the enclosure, or (usually ~2x tighter) lambda_min(-H) bounded
        # below like lambda_min(H) (Weyl + Bauer-Fike, certification.lambda_min_lower_bound)
        big = min(max(_sum_up(row) for row in np.maximum(np.abs(H_lo), np.abs(H_hi))),
                  -lambda_min_lower_bound(-H_hi, -H_lo).lower)
        n, _ = y.shape
        k = V.shape[0]
        limit = min(pairs.w_min_lo, pairs.row_distance_lo / 2)
        lam = cert.lambda_at_point_lo
        with _Precision(80):
            kw = dict(n=n, k=k, w_min=pairs.w_min_lo, w_max=pairs.w_max_hi, v_max=pairs.v_max_hi)
            R = min(0.5 * limit, _PROOF_BALL_FRACTION * lam / _hi(l3_bound(**kw, rho=0.0)))
            L3 = l3_bound(**kw, rho=R)
            mu = _lo(iv.mpf(lam) - L3 * iv.mpf(R))
            L = _hi(iv.mpf(big) + L3 * iv.mpf(R))
            l3 = _hi(L3)
        if not mu > 0:
            return None
        ball = ProvenBall(center=np.array(c, copy=True), teacher=np.array(V, copy=True), radius=cert.radius,
                          ball=R, mu=mu, L=L, objective_lo=cert.objective_lo,
                          objective=float(population_loss(torch.from_numpy(c)[None], torch.from_numpy(V)[None])),
                          lam=lam, big=big, l3=l3)
        self.balls.append(ball)
        return ball

    # -- a point against a ball -------------------------------------------------------
    def covers(self, ball: ProvenBall, y, V, *, step: float, iterations: int):
        """The final point (numpy (n, d)) and its stopping norm when ``ball`` proves the run's
        outcome from y (class docstring), else None."""
        import numpy as np
        from mpmath import iv

        from landscape_core.certification import _Precision, _distance_up, _hi, _lo
        from landscape_core.families import aligned, symmetric_distance

        p = self.p
        if not np.array_equal(V, ball.teacher):
            self.last_failure = "other_teacher"
            return None
        self.alignments += 1
        # y' = y[rows][:, cols] (an exact permutation of y's entries), aligned to the centre
        if self.group:
            alignment = symmetric_distance(ball.center, y, enumerate_max=0)
            rows, cols = alignment.row_perm, alignment.col_perm
            y_al = aligned(y, alignment)
        else:
            from scipy.optimize import linear_sum_assignment

            cost = ((ball.center[:, None, :] - y[None, :, :]) ** 2).sum(-1)
            assigned_rows, assigned_cols = linear_sum_assignment(cost)
            rows, cols = assigned_cols[np.argsort(assigned_rows)], np.arange(y.shape[1])
            y_al = y[rows]
        D = _distance_up(y_al, ball.center)
        with _Precision(80):
            r = iv.mpf(float(ball.radius))
            dist = iv.mpf(D) + r  # >= ||y' - x*||
            s = iv.mpf(float(step))
            c, eps, tol = iv.mpf(self.c_norm), iv.mpf(_PROOF_FLOAT_STEP_ERROR), iv.mpf(float(p.grad_tol))

            def bounds(rho):
                """mu <= H <= L on B(x*, rho), inside B(c, rho + r), and the contraction factor q."""
                reach_c = iv.mpf(_hi(rho + r))
                mu = _lo(iv.mpf(ball.lam) - iv.mpf(ball.l3) * reach_c)
                L = _hi(iv.mpf(ball.big) + iv.mpf(ball.l3) * reach_c)
                return mu, L, max(_hi(1 - s * iv.mpf(mu)), _hi(s * iv.mpf(L) - 1))

            # phase 1: B(x*, rho1), the start's distance plus room for the float iterates' drift
            rho1 = iv.mpf(_hi(dist + max(_hi(dist) * 1e-3, 1e-10)))
            if not _hi(rho1 + r) <= ball.ball:
                self.last_failure = "outside_ball"
                return None
            mu1, L1, q1 = bounds(rho1)
            if not _hi(s * iv.mpf(L1)) < 2:
                self.last_failure = "step_too_large"
                return None
            if not q1 < 1:
                self.last_failure = "no_contraction"
                return None
            drift1 = eps / (1 - iv.mpf(q1))  # iterates: ||x~_t - x*|| <= q1^t dist + drift1 <= rho1
            if not _hi(dist + drift1) <= _lo(rho1):
                self.last_failure = "rounding_floor"
                return None
            # phase 2: once q1^t dist <= drift1, every iterate lies in B(x*, rho2), rho2 = 2 drift1
            # (or rho1 if smaller), where the bounds are the minimum's own (mu2 ~ lambda, L2 ~ lambda_max)
            rho2 = iv.mpf(min(_hi(2 * drift1), _hi(rho1)))
            mu2, L2, q2 = bounds(rho2)
            floor = c * iv.mpf(L2) * eps / (1 - iv.mpf(q2))  # the stopping norm's float64 floor
            if not _hi(floor) <= _lo(tol / 2):
                self.last_failure = "rounding_floor"
                return None
            restart = math.inf if p.restart_grad_norm is None else float(p.restart_grad_norm)
            if not _hi(c * iv.mpf(L1) * rho1) <= restart:  # every later stopping norm
                self.last_failure = "restart_rule"
                return None
            t1 = _lo(drift1 / dist)  # phase 1 ends once q1^t <= drift1 / dist
            T1 = 0 if t1 >= 1 else math.ceil(math.log(t1) / math.log(q1)) + 1
            t2 = _lo((tol * 3 / 4 - floor) / (c * iv.mpf(L2) * rho2))  # stopping norm <= 3/4 tol once q2^t <= t2
            T2 = 0 if t2 >= 1 else math.ceil(math.log(t2) / math.log(q2)) + 1
            if iterations + T1 + T2 > p.max_iterations:
                self.last_failure = "iteration_cap"
                return None
            if not ball.objective_lo >= p.bad_loss_threshold + 1e-12:
                self.last_failure = "objective_below_threshold"
                return None
            if not mu1 >= p.eig_margin + 1e-9:
                self.last_failure = "eig_margin"
                return None
            reach = _hi(dist) + 1e-10
        # the final point: the centre c (x* to ~r, Newton-polished when the ball was made) in the
        # run's own orientation, z[rows][:, cols] = c: the minimum y's descent converges to
        z = np.empty_like(ball.center)
        z[np.ix_(rows, cols)] = ball.center
        if not _distance_up(z, y) <= reach:  # ||z - y|| = ||c - y'||: checks the mapping back
            self.last_failure = "final_point_outside_ball"
            return None
        G = scaled_gradient(torch.from_numpy(z)[None], torch.from_numpy(V)[None])
        g = float(gradient_norm(G, p.stopping_norm)[0])
        if not g <= p.grad_tol:
            self.last_failure = "final_point_not_converged"
            return None
        return z, g

    def prove(self, y, V, *, loss: float, step: float, iterations: int, est_dist: float, try_certify: bool):
        """(final point, stopping norm) when the outcome from y is proven, else None: first the
        kept balls (those whose float objective is near F(y)), then a new certificate at y
        when ``try_certify``."""
        for ball in self.balls:
            if abs(ball.objective - loss) <= 1e-6 and est_dist <= ball.ball:
                out = self.covers(ball, y, V, step=step, iterations=iterations)
                if out is not None:
                    return out
        if not try_certify:
            return None
        ball = self.certify(y, V)
        if ball is None:
            return None
        return self.covers(ball, y, V, step=step, iterations=iterations)


#: memory for the iterates U_t = [W_t; V] of one block of the descent (sets the block length when batches
#: are large; 128 MiB: blocks of 64 up to ~1,300 runs at k = n = d = 10, as with W_t alone in 64 MiB)
_BLOCK_BUFFER_BYTES = 128 * 2**20
#: with at most this many active runs, a block's iterations only evaluate G and step (12 kernels
#: instead of 20 with F), keeping G_t and the norms and angles F needs per iterate; the stopping
#: norms and F of the whole block follow in 8 kernels. Measured at k = n = 10 with the fused F
#: (us per iteration, in the loop vs deferred; distinct runs, best of 3): 1 run 64 vs 48, 4 runs
#: 79 vs 61, 8 runs 120 vs 87, 16 runs 169 vs 150, 32 runs 249 vs 241, 40 runs 276 vs 280, 48
#: runs 349 vs 334, 56 runs 330 vs 334, 64 runs 523 vs 558, 128 runs 822 vs 897 (above ~32 runs
#: the kept angles, 5.8 KB per run and iterate, cost more in cache than the launches saved)
_DEFER_MAX_RUNS = 32


class _DeferredBuffers:
    """Per-iterate storage of the deferred evaluation (:data:`_DEFER_MAX_RUNS`): G_t, and with
    ``angles`` the norms and angles of every iterate (and the loss's two small intermediate
    buffers), for up to ``capacity`` (iterate, run) pairs; flat, so that the first block * A of
    them view as (block, A, ...) contiguously for any A."""

    def __init__(self, capacity: int, n: int, k: int, d: int, *, dtype, device, angles: bool):
        m = n + k
        self.n, self.m = n, m

        def new(*shape):
            return torch.empty(shape, dtype=dtype, device=device)

        self.G = new(capacity * n * d)
        if angles:
            self.nu, self.cos, self.theta, self.sin = new(capacity * m), *(new(capacity * n * m) for _ in range(3))
            self.weighted_nu, self.per_row = new(capacity, m, 1), new(capacity, n, 1)

    def angles(self, B: int, block: int, A: int):
        """(nu (block, A, n + k, 1), cos, theta, sin (block, A, n, n + k)) of the first B = block * A."""
        n, m = self.n, self.m
        return (self.nu[:B * m].view(block, A, m, 1),
                *(x[:B * n * m].view(block, A, n, m) for x in (self.cos, self.theta, self.sin)))


@dataclass
class DescentResult:
    """Per-run outcome of :func:`gradient_descent` (all tensors (R,) or (R, n, d))."""

    weights: torch.Tensor  # final W (R, n, d)
    grad_norm: torch.Tensor  # the stopping norm (protocol.stopping_norm) at the final W (R,)
    iterations: torch.Tensor  # gradient steps taken, restarts included (R,) int64
    restarts: torch.Tensor  # restarts from the initial point (R,) int64
    final_step: torch.Tensor  # step in force at the end (R,)
    converged: torch.Tensor  # grad_norm <= grad_tol (R,) bool
    diverged: torch.Tensor  # non-finite, or too many restarts (R,) bool
    stopped_early: torch.Tensor  # stopped by the early-global rule (R,) bool
    monotone: torch.Tensor  # F never increased along the run (tracked only with early stop) (R,) bool
    proven: torch.Tensor  # iteration at which the run's outcome was proven (stop_when_proven), -1 if not (R,) int64


def _prove_outcomes(prover: SpuriousProver, p: "TeacherStudentProtocol", cand, W, V, G, g, it, lr, next_check):
    """One check of the candidate runs ``cand`` (A,) for ``stop_when_proven``; returns the
    runs proven (A,) bool, whose W and g rows are replaced by the finished final point and
    its stopping norm. Float64 estimates (not part of the proof) choose which runs to check
    and when to look again: ||dF/dW||_F <= ``_PROOF_GRAD_PREFILTER``, F >= the bad threshold,
    a positive smallest Hessian eigenvalue lambda, then a kept ball of radius R near the point
    once ||y - x*|| ~ g / lambda <= ``_PROOF_REACH`` R, or a new certificate once g / lambda is
    that fraction of the radius the new ball would have (R ~ ``_PROOF_BALL_FRACTION``
    lambda / L3, L3 the notes' bound at y). A run that is not proven is looked at again after
    the iterations its gradient needs to shrink to that level at the rate 1 - step lambda (at
    most ``_PROOF_RECHECK_MAX``), or, after a failed try, to halve (at most ``_PROOF_RETRY``)."""
    proven = torch.zeros_like(cand)
    if not bool(cand.any()):
        return proven
    frob = torch.linalg.vector_norm(G, dim=(-2, -1)) / TWO_PI  # (A,)
    small = cand & (frob <= _PROOF_GRAD_PREFILTER)
    far = cand & ~small
    if bool(far.any()):  # large gradient: look again later
        next_check[far] = it[far] + p.compact_every * 4
    if not bool(small.any()):
        return proven
    ci = small.nonzero().squeeze(-1)
    Wc, Vc = W[ci], V[ci]
    loss = population_loss(Wc, Vc).tolist()
    # lambda: that of a kept ball's minimum when the point's F is that minimum's, else eigvalsh at the point
    lam = [next((b.lam for b in prover.balls if abs(b.objective - f) <= 1e-6), None) for f in loss]
    unknown = [a for a, x in enumerate(lam) if x is None]
    if unknown:
        for a, x in zip(unknown, hessian_extreme_eigenvalues(Wc[unknown], Vc[unknown])[0].tolist()):
            lam[a] = x
    nw = torch.linalg.vector_norm(Wc, dim=-1)
    wmin, wmax = nw.amin(-1).tolist(), nw.amax(-1).tolist()
    vmax = torch.linalg.vector_norm(Vc, dim=-1).amax(-1).tolist()
    n, k = W.shape[-2], V.shape[-2]
    for a, j in enumerate(ci.tolist()):
        it_j, s_j, g_j = int(it[j]), float(lr[j]) * TWO_PI, float(frob[j])
        lam_j = lam[a]
        if not (loss[a] >= p.bad_loss_threshold and lam_j > p.eig_margin):
            next_check[j] = it_j + _PROOF_RETRY
            continue
        l3 = n * (math.sqrt(2) * (n - 1) * (wmax[a] + wmin[a]) + k * vmax[a]) / (math.pi * wmin[a] ** 2)
        # gradient level where a new ball, centred on the minimum (Newton from y), should hold y
        need = _PROOF_REACH * lam_j * (_PROOF_BALL_FRACTION * lam_j / l3)
        near = [b.ball for b in prover.balls if abs(b.objective - loss[a]) <= 1e-6]
        target = max([need] + [_PROOF_REACH * lam_j * R for R in near])
        if g_j <= target:
            out = prover.prove(W[j].cpu().numpy(), V[j].cpu().numpy(), loss=loss[a], step=s_j, iterations=it_j,
                               est_dist=g_j / lam_j, try_certify=g_j <= need)
            if out is not None:
                z, gz = out
                W[j] = torch.from_numpy(z).to(W)
                g[j] = gz
                proven[j] = True
            else:  # look again once the distance has halved
                halve = math.log(2.0) / max(s_j * lam_j, 1e-12)
                next_check[j] = it_j + int(min(max(halve, p.compact_every), _PROOF_RETRY))
            continue
        wait = math.log(g_j / target) / max(s_j * lam_j, 1e-12)
        next_check[j] = it_j + int(min(max(0.9 * wait, 1), _PROOF_RECHECK_MAX))
    return proven


@torch.inference_mode()
def gradient_descent(W0: torch.Tensor, V: torch.Tensor, protocol: TeacherStudentProtocol) -> DescentResult:
    """Plain gradient descent on F for all runs at once, published protocol.

    Each run follows exactly the one-run loop of the authors (and of
    ``teacher_student_reference.descend_one``): evaluate G = 2 pi dF/dW and the stopping
    norm g (``protocol.stopping_norm``: max_i ||G_i|| in 2018, ||G||_F / (2 pi) = ||dF/dW||_F
    in 2021); then, in this order,
      non-finite g, or more than ``max_restarts`` restarts -> diverged;
      g <= grad_tol -> converged;
      [with ``early_stop_global``] F never increased and F < bad_loss_threshold -> global;
      ``max_iterations`` steps taken -> not converged;
      g > restart_grad_norm (never when it is None) -> W = W0, step /= 2 (counts as one iteration);
      otherwise W <- W - step * G / (2 pi), step = ``protocol.effective_step(k)``.

    Early-global rule: gradient descent with step < 2 / lambda_max decreases F at every
    step, so a run whose F is below the bad threshold can no longer end bad. F is then
    evaluated every iteration; a run where it increased (beyond relative slack
    ``monotone_rtol``) falls back to the full protocol.

    Proven outcomes (``stop_when_proven``, off by default): at each compaction, runs that
    the float64 estimates make candidates (:func:`_prove_outcomes`) are checked by a
    :class:`SpuriousProver`: when a certified ball (interval arithmetic,
    :mod:`landscape_core.certification`) proves that gradient descent with the run's step
    converges from the current point to a strict local minimum with F >= bad_loss_threshold,
    and that every rule of the full protocol (stopping within ``max_iterations``, restart,
    early-global, ``eig_margin``) would end the run ``spurious`` (the argument is in the
    class docstring), the run stops there as converged, its final point the ball's
    Newton-polished centre in the run's own orientation (inside the ball), and ``proven``
    records the iteration. Runs that cannot be proven descend on under the full protocol. With
    ``early_stop_global`` too, F is taken from the gradient's angles
    (:func:`_fused_gradient_and_loss`). The descent stays one
    tensor program over runs; only the candidates' checks run on the host. Off, the code
    path is the one below, bit for bit.

    Batching: the active runs advance in blocks of ``compact_every`` iterations (fewer when
    the block's iterates would exceed ``_BLOCK_BUFFER_BYTES``, or the cap is nearer). Within
    a block every run steps every iteration, with no per-iteration masks (the tail of a
    chunk, a few slow runs, pays a fixed cost per iteration in kernel launches); the
    iterates W_t and the g_t (and F_t) evaluated at them are kept. After the block each run
    is put back at its first event (g <= tol, g > restart_grad_norm, non-finite g, or the
    early-global rule), i.e. exactly where the one-run loop stops stepping, with the
    iteration count and early-stop state it has there: the same result as freezing the run
    at once (tests compare block lengths 1, 7 and 64 bit for bit). With at most
    ``_DEFER_MAX_RUNS`` active runs (where an iteration costs mostly its kernel launches), the
    loop only evaluates G and steps, keeping G_t and the angles F needs per iterate, and g_t,
    F_t are computed after the block for all its iterates at once (the same kernels per run:
    the same bits, tested). Every kernel of the loop writes into buffers allocated once
    (:class:`_Workspace`), and the iterates are kept as U_t = [W_t; V]. Events are then processed,
    and finished runs removed from the batch (the only host synchronisation), so the cost
    follows the slow runs; a run's trajectory never depends on the other runs of the batch.
    Inputs are not modified.
    """
    R, n, d = W0.shape
    k = V.shape[-2]
    m = n + k  # rows of U = [W; V]
    dtype, device = W0.dtype, W0.device
    p = protocol
    weights = _gradient_weights(n, k, dtype=dtype, device=device)  # (sign, offset), (n, n + k) each
    tol = float(p.grad_tol)
    restart_norm = math.inf if p.restart_grad_norm is None else float(p.restart_grad_norm)
    step = p.effective_step(k)
    frobenius = p.stopping_norm == "frobenius"
    if p.stopping_norm not in STOPPING_NORMS:
        raise OptionError("stopping_norm", f"{p.stopping_norm!r} is not one of {', '.join(STOPPING_NORMS)}")

    out_W = W0.clone()
    out_g = torch.full((R,), float("nan"), dtype=dtype, device=device)
    out_it = torch.zeros(R, dtype=torch.int64, device=device)
    out_restarts = torch.zeros(R, dtype=torch.int64, device=device)
    out_step = torch.full((R,), step, dtype=dtype, device=device)
    out_conv = torch.zeros(R, dtype=torch.bool, device=device)
    out_div = torch.zeros(R, dtype=torch.bool, device=device)
    out_early = torch.zeros(R, dtype=torch.bool, device=device)
    out_mono = torch.ones(R, dtype=torch.bool, device=device)
    out_proven = torch.full((R,), -1, dtype=torch.int64, device=device)

    # Active state; `base` counts restart iterations, `moved` gradient steps.
    idx = torch.arange(R, device=device)
    W, W_init, V_act = W0.clone(), W0, V
    lr = torch.full((R,), step / TWO_PI, dtype=dtype, device=device)  # step on G
    moved = torch.zeros(R, dtype=torch.int64, device=device)
    base = torch.zeros(R, dtype=torch.int64, device=device)
    restarts = torch.zeros(R, dtype=torch.int64, device=device)
    mono = torch.ones(R, dtype=torch.bool, device=device)
    prev_loss = torch.full((R,), float("inf"), dtype=dtype, device=device)
    early = torch.zeros(R, dtype=torch.bool, device=device)
    next_check = torch.zeros(R, dtype=torch.int64, device=device)  # stop_when_proven: next check of each run
    prover = SpuriousProver(p, k) if p.stop_when_proven else None
    const_teacher = _teacher_term(V) if p.early_stop_global else None
    teacher_act = const_teacher

    fused_loss = p.early_stop_global and p.stop_when_proven  # F from the gradient's angles (new option only)
    loss_weight = _loss_weights(n, k, dtype=dtype, device=device) if fused_loss else None
    rise = 1.0 + p.monotone_rtol

    def workspace(R):
        """Buffers of one evaluation for R runs (:class:`_Workspace`)."""
        return _Workspace(R, n, k, d, dtype=dtype, device=device, loss=fused_loss)

    def gradient_and_loss(U, teacher_act, ws, G, loss_out):
        """G = 2 pi dF/dW at U = [W; V] (R, n + k, d) written into ``G`` (R, n, d) and, with
        ``early_stop_global``, F into ``loss_out`` (R,), through the buffers ``ws``."""
        if fused_loss:
            _evaluate_into(U, ws, weights, G, loss_weight, loss_out)
            torch.add(loss_out, teacher_act, out=loss_out)  # F without recomputing the constant
            return
        _evaluate_into(U, ws, weights, G)
        if p.early_stop_global:
            separate_loss(U, teacher_act, loss_out)

    def separate_loss(U, teacher_act, loss_out):
        """F at U = [W; V] (R, n + k, d) into ``loss_out`` (R,) from the separate closed form
        (``early_stop_global`` without the fused F), on contiguous copies of W and V: the bits
        of the code before the fused F."""
        torch.add(_student_terms(U[:, :n].contiguous(), U[:, n:].contiguous()), teacher_act, out=loss_out)

    def stopping_norm(G, out=None, neuron_norms=None):
        """The stopping quantity g (R,) of G, written into ``out`` when given (``neuron_norms``
        (R, n): a buffer for the per-neuron norms)."""
        if frobenius:  # ||dF/dW||_F
            return torch.div(torch.linalg.vector_norm(G, dim=(-2, -1)), TWO_PI, out=out)
        return torch.amax(torch.linalg.vector_norm(G, dim=-1, out=neuron_norms), dim=-1, out=out)  # max_i ||G_i||

    def evaluate(W, V_act, teacher_act, mono, prev_loss):
        """One evaluation: G (A, n, d), g (A,), ok-to-step (A,), and the early-stop state."""
        G = torch.empty_like(W)
        loss = W.new_empty((W.shape[0],)) if p.early_stop_global else None
        gradient_and_loss(torch.cat([W, V_act], dim=-2), teacher_act, workspace(W.shape[0]), G, loss)
        g = stopping_norm(G)
        ok = (g > tol) & (g <= restart_norm)  # NaN compares False: frozen
        early = None
        if p.early_stop_global:
            mono = mono & (loss <= prev_loss * rise)
            prev_loss = loss
            early = mono & (loss < p.bad_loss_threshold)
            ok = ok & ~early
        return G, g, ok, early, mono, prev_loss

    # Buffers reused by every block: one evaluation's workspace for the whole batch (blocks use
    # its first A runs), the block iterates (``slots``), and the buffers of the deferred g and F.
    shared_teacher = bool((V == V[:1]).all())  # one teacher for every run (as the sweeps make them)
    batch_ws, batch_G = workspace(R), W0.new_empty((R, n, d))
    slots = deferred = None

    while idx.numel() > 0:
        # Steps every active run may still take before the cap (host value, one sync).
        A = idx.numel()
        room = int((p.max_iterations - (base + moved)).min())
        # The block keeps every iterate: at most ~_BLOCK_BUFFER_BYTES of them.
        longest = max(1, min(p.compact_every, _BLOCK_BUFFER_BYTES // max(1, A * m * d * W.element_size()) - 1))
        block = max(1, min(longest, room))
        # Every run steps every iteration of the block, with no per-iteration masks; the
        # iterates W_t and the g_t and F_t evaluated at them are kept, and afterwards each
        # run is put back at its first event (the iterate where the one-run loop stops or
        # restarts): the same iterates, counts and early-stop state as freezing the run there.
        # Slot t holds U_t = [W_t; V] (contiguous (A, n + k, d)), so an iteration evaluates at
        # U_t and steps into W_{t+1}, a view of the next slot, with no copy. The slots are
        # reused by every block they fit (made again only when fewer runs allow longer
        # blocks), and a shared teacher's rows are written once.
        if slots is None or slots.shape[0] < longest + 1:
            slots = W.new_empty((longest + 1, A, m, d))
            if shared_teacher:
                slots[:, :, n:] = V_act[:1]
        iterates = slots[:block + 1, :A]  # (block + 1, A, n + k, d)
        if not shared_teacher:
            iterates[:, :, n:] = V_act.unsqueeze(0)
        iterates[0, :, :n] = W
        Us = iterates.unbind(0)
        Ws = [U[:, :n] for U in Us]
        g_seen = W.new_empty((block, A))
        gs = g_seen.unbind(0)
        loss_seen = W.new_empty((block, A)) if p.early_stop_global else None
        ls = loss_seen.unbind(0) if p.early_stop_global else [None] * block
        neg_lr = (-lr)[:, None, None]
        ws, G = batch_ws.head(A), batch_G[:A]
        if A <= _DEFER_MAX_RUNS:
            # Up to _DEFER_MAX_RUNS runs (where an iteration's cost is mostly kernel launches): each
            # iteration only evaluates G and steps, G_t (and the norms and angles F needs) kept per
            # iterate; g_t and F_t come afterwards from all of the block's at once, the same
            # kernels per run, so the same bits (tests compare with the in-loop evaluation)
            B = block * A
            if deferred is None:
                # the first deferred block has the most runs: no later block needs more room
                deferred = _DeferredBuffers(p.compact_every * A, n, k, d, dtype=dtype, device=device, angles=fused_loss)
            G_all = deferred.G[:B * n * d].view(block, A, n, d)
            Gs = G_all.unbind(0)
            if fused_loss:
                angle_all = deferred.angles(B, block, A)  # nu, cos, theta, sin, each (block, A, ...)
                angle_t = list(zip(*(x.unbind(0) for x in angle_all)))
                for t in range(block):
                    _evaluate_into(Us[t], ws, weights, Gs[t], angles=angle_t[t])
                    torch.addcmul(Ws[t], Gs[t], neg_lr, out=Ws[t + 1])
                nu_all, cos_all, theta_all, sin_all = (x.view(B, *x.shape[2:]) for x in angle_all)
                _loss_from_angles(nu_all[:, :n, 0].unsqueeze(-2), nu_all, cos_all, theta_all, sin_all, batch_ws.pi,
                                  loss_weight, loss_seen.view(-1), pi_minus_theta=theta_all, pair=sin_all,
                                  weighted_nu=deferred.weighted_nu[:B], per_row=deferred.per_row[:B])
                torch.add(loss_seen.view(-1), teacher_act.repeat(block), out=loss_seen.view(-1))
            else:
                for t in range(block):
                    _evaluate_into(Us[t], ws, weights, Gs[t])
                    torch.addcmul(Ws[t], Gs[t], neg_lr, out=Ws[t + 1])
                if p.early_stop_global:  # F as in the loop below, for all the block's iterates at once
                    separate_loss(iterates[:block].reshape(B, m, d), teacher_act.repeat(block), loss_seen.view(-1))
            stopping_norm(G_all.view(B, n, d), out=g_seen.view(-1))
        else:
            for t in range(block):
                gradient_and_loss(Us[t], teacher_act, ws, G, ls[t])
                stopping_norm(G, out=gs[t], neuron_norms=ws.neuron_norms)
                torch.addcmul(Ws[t], G, neg_lr, out=Ws[t + 1])
        event = ~((g_seen > tol) & (g_seen <= restart_norm))  # (block, A); NaN: an event
        if p.early_stop_global:
            before = torch.cat([prev_loss[None], loss_seen[:-1]])  # F at the previous iterate
            mono_seen = mono[None] & (torch.cumprod(loss_seen <= before * rise, dim=0) > 0)  # (block, A)
            event = event | (mono_seen & (loss_seen < p.bad_loss_threshold))
        first = torch.where(event.any(0), event.to(torch.uint8).argmax(0), block)  # (A,) steps taken
        runs = torch.arange(A, device=device)
        W = iterates[first, runs, :n]  # (A, n, d)
        moved = moved + first
        if p.early_stop_global:
            last = first.clamp(max=block - 1)  # the last evaluation the one-run loop made
            mono, prev_loss = mono_seen[last, runs], loss_seen[last, runs]
        del iterates, Us, Ws
        # Events at the current points (one more evaluation; frozen runs give the same g).
        G, g, ok, early_now, mono, prev_loss = evaluate(W, V_act, teacher_act, mono, prev_loss)
        it = base + moved
        finite = torch.isfinite(g)
        div = ~finite | (restarts > p.max_restarts)
        conv = ~div & (g <= tol)
        early = (~div & ~conv & early_now) if p.early_stop_global else torch.zeros_like(conv)
        capped = ~div & ~conv & ~early & (it >= p.max_iterations)
        restart = ~div & ~conv & ~early & ~capped & (g > restart_norm)
        finished = div | conv | early | capped
        if bool(restart.any()):
            W = torch.where(restart[:, None, None], W_init, W)
            lr = torch.where(restart, lr * 0.5, lr)
            restarts = restarts + restart
            base = base + restart
        if prover is not None:
            cand = ~finished & ~restart & (it >= next_check)
            proven = _prove_outcomes(prover, p, cand, W, V_act, G, g, it, lr, next_check)
            if bool(proven.any()):
                conv = conv | proven
                finished = finished | proven
        if bool(finished.any()):
            j = idx[finished]
            out_W[j] = W[finished]
            out_g[j] = g[finished]
            out_it[j] = it[finished]
            out_restarts[j] = restarts[finished]
            out_step[j] = lr[finished] * TWO_PI
            out_conv[j] = conv[finished]
            out_div[j] = div[finished]
            out_early[j] = early[finished]
            out_mono[j] = mono[finished]
            if prover is not None:
                out_proven[j] = torch.where(proven[finished], it[finished], torch.full_like(it[finished], -1))
            keep = ~finished
            idx, W, W_init, V_act = idx[keep], W[keep], W_init[keep], V_act[keep]
            lr, moved, base, restarts = lr[keep], moved[keep], base[keep], restarts[keep]
            mono, prev_loss, next_check = mono[keep], prev_loss[keep], next_check[keep]
            if teacher_act is not None:
                teacher_act = teacher_act[keep]
    return DescentResult(
        weights=out_W,
        grad_norm=out_g,
        iterations=out_it,
        restarts=out_restarts,
        final_step=out_step,
        converged=out_conv,
        diverged=out_div,
        stopped_early=out_early,
        monotone=out_mono,
        proven=out_proven,
    )


# ----------------------------------------------------------------------------------
# Classification and the public entry point
# ----------------------------------------------------------------------------------
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


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_teacher_student(
    k: int,
    n: int,
    seeds: Iterable[int],
    *,
    device: str | torch.device | None = "cpu",
    keep_weights: bool = True,
    hessian_chunk: int = 64,
    **options,
) -> list[dict]:
    """Run the teacher-student protocol for every seed of one (k, n) cell as one batch.

    ``options`` are the fields of :class:`TeacherStudentProtocol` (d, teacher, init_scale,
    step, step_times_k, init_variance, grad_tol, stopping_norm, restart_grad_norm,
    max_iterations, bad_loss_threshold, eig_margin, early_stop_global, monotone_rtol,
    compact_every, max_restarts, stop_when_proven). Everything is float64.

    Returns one record per seed, in order: the results-contract columns (``seed``,
    ``status``, ``final_loss``, ``grad_norm`` (in the protocol's stopping norm),
    ``iterations``, ``wall_s``, ``device``), the probes (``min_eig``, ``max_eig``,
    ``hessian_degenerate``, ``restarts``, ``final_step``, ``stopped_early``,
    ``proven_iteration``: the iteration where ``stop_when_proven`` proved the run spurious,
    None otherwise), every protocol
    value used (``step`` is the effective step, e.g. 5 / k for ``step_times_k=5``; also
    ``init_variance_value``, the effective initial variance of each coordinate), and
    ``final_weights`` (the final W flattened row-major, n * d floats) when ``keep_weights``.
    ``wall_s`` is the batch's wall time divided by the number of runs.
    """
    unknown = set(options) - {f for f in TeacherStudentProtocol.__dataclass_fields__}
    if unknown:
        allowed = ", ".join(sorted(TeacherStudentProtocol.__dataclass_fields__))
        raise OptionError(sorted(unknown)[0], f"unknown teacher-student option (allowed: {allowed})")
    protocol = TeacherStudentProtocol(**options)
    protocol.validate(k=k, n=n)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise OptionError("seeds", "must be a non-empty list of integers")
    dev = _resolve_device(device)
    start = time.perf_counter()
    W0, V = initial_points(k, n, seeds, protocol)
    W0, V = W0.to(dev), V.to(dev)
    result = gradient_descent(W0, V, protocol)
    final_loss = population_loss(result.weights, V)  # (R,)
    ok = torch.isfinite(final_loss) & torch.isfinite(result.weights).all(dim=(-2, -1))
    min_eig = torch.full_like(final_loss, float("nan"))
    max_eig = torch.full_like(final_loss, float("nan"))
    if bool(ok.any()):
        lo, hi = hessian_extreme_eigenvalues(result.weights[ok], V[ok], chunk_size=hessian_chunk)
        min_eig[ok], max_eig[ok] = lo, hi
    statuses = classify(
        final_loss=final_loss,
        min_eig=min_eig,
        converged=result.converged,
        diverged=result.diverged | ~ok,
        stopped_early=result.stopped_early,
        bad_loss_threshold=protocol.bad_loss_threshold,
        eig_margin=protocol.eig_margin,
    )
    wall = time.perf_counter() - start
    cpu = lambda t: t.detach().cpu()  # noqa: E731  (one transfer per field, after the loop)
    loss_c, g_c, lo_c, hi_c = cpu(final_loss), cpu(result.grad_norm), cpu(min_eig), cpu(max_eig)
    it_c, rs_c, st_c, early_c = cpu(result.iterations), cpu(result.restarts), cpu(result.final_step), cpu(result.stopped_early)
    proven_c = cpu(result.proven)
    W_c = cpu(result.weights)
    d = protocol.input_dim(k)
    values = asdict(protocol)
    values["d"] = d
    values["step"] = protocol.effective_step(k)  # the number used, whichever form gave it
    values["init_variance_value"] = protocol.init_variance_value(k)
    records = []
    for i, seed in enumerate(seeds):
        lo_i = float(lo_c[i])
        rec = {
            "seed": seed,
            "status": statuses[i],
            "final_loss": float(loss_c[i]),
            "grad_norm": float(g_c[i]),
            "min_eig": lo_i,
            "max_eig": float(hi_c[i]),
            "hessian_degenerate": bool(math.isfinite(lo_i) and abs(lo_i) <= protocol.eig_margin),
            "iterations": int(it_c[i]),
            "restarts": int(rs_c[i]),
            "final_step": float(st_c[i]),
            "stopped_early": bool(early_c[i]),
            "proven_iteration": int(proven_c[i]) if int(proven_c[i]) >= 0 else None,
            "k": int(k),
            "n": int(n),
            **{key: values[key] for key in values if key not in ("compact_every",)},
            "wall_s": wall / len(seeds),
            "device": str(dev),
            "final_weights": W_c[i].reshape(-1).tolist() if keep_weights else None,
        }
        records.append(rec)
    return records


# ----------------------------------------------------------------------------------
# Families of bad points
# ----------------------------------------------------------------------------------
def permutation_distance(A: torch.Tensor, B: torch.Tensor) -> float:
    """min over permutations P of the rows of B of ||A - P B||_F. A, B: (n, d).

    Exact: the optimal row matching is a linear assignment on the squared row
    distances, solved by the Hungarian method (``scipy.optimize.linear_sum_assignment``).
    """
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(A.unsqueeze(0), B.unsqueeze(0)).squeeze(0).pow(2)  # (n, n)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return float(cost[rows, cols].sum().clamp_min(0).sqrt())


def group_families(
    records: Sequence[dict],
    *,
    tol: float = 1e-4,
    statuses: Sequence[str] = ("spurious",),
) -> list[dict]:
    """Group the final points of one (k, n) cell up to permutation of student neurons.

    Leader clustering: records (in order) join the first family whose representative is
    within Frobenius distance ``tol`` after the best permutation (see
    :func:`permutation_distance`), else found a new family. ``tol`` is an absolute
    Frobenius distance; converged points are pinned to about grad_tol / min_eig, far below
    the default 1e-4, while distinct critical points are O(0.1) apart.

    Returns families sorted by multiplicity (descending), each with ``family`` (index),
    ``status``, ``multiplicity``, ``objective`` and ``min_eig`` (means over members, as the
    authors report them), ``objective_spread`` (max - min), ``seeds`` and
    ``representative`` (flat weights of the first member).
    """
    if tol < 0:
        raise OptionError("tol", f"must be >= 0, got {tol!r}")
    chosen = [r for r in records if r["status"] in statuses]
    cells = {(r["k"], r["n"], r.get("d", r["k"])) for r in chosen}
    if len(cells) > 1:
        raise OptionError("records", f"group_families takes records of one (k, n, d) cell, got {sorted(cells)}")
    families: list[dict] = []
    reps: list[torch.Tensor] = []
    for r in chosen:
        if r.get("final_weights") is None:
            raise OptionError("records", "final_weights is missing (run with keep_weights=True)")
        W = torch.tensor(r["final_weights"], dtype=torch.float64).reshape(r["n"], -1)
        for fam, rep in zip(families, reps):
            if fam["status"] == r["status"] and permutation_distance(rep, W) <= tol:
                fam["_members"].append(r)
                break
        else:
            families.append({"status": r["status"], "_members": [r]})
            reps.append(W)
    out = []
    for fam in families:
        members = fam.pop("_members")
        losses = [m["final_loss"] for m in members]
        out.append(
            {
                "status": fam["status"],
                "multiplicity": len(members),
                "objective": sum(losses) / len(losses),
                "objective_spread": max(losses) - min(losses),
                "min_eig": sum(m["min_eig"] for m in members) / len(members),
                "seeds": [m["seed"] for m in members],
                "representative": members[0]["final_weights"],
            }
        )
    out.sort(key=lambda f: (-f["multiplicity"], f["objective"]))
    for i, fam in enumerate(out):
        fam["family"] = i
    return out


# ----------------------------------------------------------------------------------
# Command line: one cell, printed (no Ray, no MLflow; the service runs sweeps)
# ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m landscape_core.teacher_student --k 8 --n 8 --seeds 300``: run one cell with
    the published protocol and print the status counts, the spurious fraction with its exact
    99% interval (and the published value when given), and the families of spurious minima."""
    import argparse
    from collections import Counter

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--seed-start", type=int, default=0)
    parser.add_argument("--published", type=float, default=None, help="published spurious percentage, to compare")
    parser.add_argument("--family-tol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    records = run_teacher_student(args.k, args.n, range(args.seed_start, args.seed_start + args.seeds))
    wall = time.perf_counter() - start
    counts = Counter(r["status"] for r in records)
    spurious = counts.get("spurious", 0)
    lo, hi = clopper_pearson_interval(spurious, len(records), 0.99)
    print(f"k = {args.k}, n = {args.n}, seeds {args.seed_start}..{args.seed_start + args.seeds - 1}: "
          f"{dict(sorted(counts.items()))} in {wall:.1f} s")
    line = f"spurious: {spurious}/{len(records)} = {100 * spurious / len(records):.1f}%, exact 99% interval [{100 * lo:.1f}%, {100 * hi:.1f}%]"
    if args.published is not None:
        inside = lo <= args.published / 100 <= hi
        line += f"; published {args.published}%: {'inside' if inside else 'OUTSIDE'}"
    print(line)
    families = group_families(records, tol=args.family_tol)
    print(f"{len(families)} families of spurious minima (up to student-neuron permutation, tol {args.family_tol}):")
    print("family  multiplicity  objective    min_eig      seeds")
    for fam in families:
        seeds = ", ".join(map(str, fam["seeds"][:6])) + (", ..." if len(fam["seeds"]) > 6 else "")
        print(f"{fam['family']:>6}  {fam['multiplicity']:>12}  {fam['objective']:.8f}  {fam['min_eig']:.8f}  {seeds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

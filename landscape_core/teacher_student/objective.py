"""The closed-form population objective of the two-layer ReLU teacher-student problem
(Safran & Shamir, ICML 2018): F, its analytic gradient and Hessian, batched over runs.

Inputs x ~ N(0, I_d); student rows w_1..w_n, teacher rows v_1..v_k, second layer fixed
to ones. The population loss has the closed form (protocols.md section 1)

    F(W) = 1/2 sum_{i,j} f(w_i, w_j) - sum_{i,j} f(w_i, v_j) + 1/2 sum_{i,j} f(v_i, v_j)
    f(w, v) = ||w|| ||v|| (sin t + (pi - t) cos t) / (2 pi),   t = angle(w, v)

Everything here is batched over runs: student weights ``W`` are ``(R, n, d)``, teacher
weights ``V`` are ``(R, k, d)``; runs never interact. The gradient and Hessian are the
analytic ones (autograd is used only by the tests, as a reference: it is undefined where
two rows are parallel, e.g. at the global minimum W = V, where the analytic forms are
continuous). The descent's kernels (:class:`Workspace`, :func:`evaluate_into`,
:func:`loss_from_angles`) write into preallocated buffers; the functional entry points
use the same kernels, so the same bits.
"""

from __future__ import annotations

import math

import torch

from landscape_core.errors import OptionError

TWO_PI = 2.0 * math.pi
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


def student_terms(W: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """The part of F that depends on W: 1/2 sum f(w_i, w_j) - sum f(w_i, v_j). (...,)"""
    student = _pair_kernel(W, W, self_pairs=True).sum(dim=(-2, -1))  # (...,)
    cross = _pair_kernel(W, V, self_pairs=False).sum(dim=(-2, -1))  # (...,)
    return 0.5 * student - cross


def teacher_term(V: torch.Tensor) -> torch.Tensor:
    """The constant part of F: 1/2 sum f(v_i, v_j). (...,)"""
    return 0.5 * _pair_kernel(V, V, self_pairs=True).sum(dim=(-2, -1))


def population_loss(W: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Closed-form population loss F(W) for each run.

    W: (..., n, d) student rows; V: (..., k, d) teacher rows (broadcast over the batch).
    Returns (...,). Differentiable by autograd wherever no two rows are parallel.
    """
    return student_terms(W, V) + teacher_term(V)


def gradient_weights(n: int, k: int, *, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign, offset), each (n, n + k). sign s_ij: the sign of pair (i, j)'s term in dF/dw_i,
    +1 student j != i, 0 for j = i, -1 teacher. offset = pi (s + [I_n | 0]), so that
    offset - s theta = s (pi - theta) + pi [I_n | 0] exactly (s in {-1, 0, 1}): the pi w_i
    term of the gradient joins the sum over u_j (u_i = w_i)."""
    student = 1.0 - torch.eye(n, dtype=dtype, device=device)
    teacher = -torch.ones(n, k, dtype=dtype, device=device)
    sign = torch.cat([student, teacher], dim=1)
    offset = math.pi * torch.cat([torch.ones(n, n, dtype=dtype, device=device), teacher], dim=1)
    return sign, offset


class Workspace:
    """Outputs of every kernel of one evaluation of G = 2 pi dF/dW (and F) for R runs, at
    U = [W; V] (R, n + k, d), allocated once with the views the kernels read (W's unit rows,
    the transposed unit rows, the student norms). The descent allocates one for its batch and
    evaluates through ``head(A)``, the buffers of the first A runs (views: the batch is the
    leading dimension, so they stay contiguous): each kernel writes into its buffer
    (``out=``), so an iteration pays neither allocation nor view construction, which at a few
    runs is half its cost (k = n = 10, one run: 38 vs 76 us per step), and no block faults in
    fresh pages. The functional entry points allocate one per call: one code path, the same
    kernels, the same bits."""

    # the buffers, bound by _bind (names of ``buffers``); the loss's only with ``loss=True``
    nu: torch.Tensor
    Un: torch.Tensor
    cos: torch.Tensor
    theta: torch.Tensor
    sin: torch.Tensor
    signed_sin: torch.Tensor
    coef: torch.Tensor
    radial: torch.Tensor
    radial_w: torch.Tensor
    neuron_norms: torch.Tensor
    pi_minus_theta: torch.Tensor
    pair: torch.Tensor
    weighted_nu: torch.Tensor
    per_row: torch.Tensor

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
            buffers.update(
                pi_minus_theta=new(R, n, m),
                pair=new(R, n, m),
                weighted_nu=new(R, m, 1),  # lw_j ||u_j||
                per_row=new(R, n, 1),
            )
        self._bind(buffers, n, torch.tensor(math.pi, dtype=dtype, device=device) if loss else None)

    def _bind(self, buffers: dict, n: int, pi) -> None:
        self.buffers, self.n, self.pi = buffers, n, pi
        for name, buffer in buffers.items():
            setattr(self, name, buffer)
        self.Wn = self.Un[:, :n]  # (R, n, d): W / ||w||, a view
        self.UnT = self.Un.transpose(-1, -2)  # (R, d, m), a view
        if pi is not None:
            self.nw_row = self.nu[:, :n, 0].unsqueeze(-2)  # (R, 1, n): ||w_i||, a view

    def head(self, A: int) -> Workspace:
        """The workspace of the first A runs (views of these buffers)."""
        ws = object.__new__(Workspace)
        ws._bind({name: buffer[:A] for name, buffer in self.buffers.items()}, self.n, self.pi)
        return ws


def evaluate_into(
    U: torch.Tensor,
    ws: Workspace,
    weights,
    G: torch.Tensor,
    loss_weight: torch.Tensor | None = None,
    student: torch.Tensor | None = None,
    *,
    angles: tuple | None = None,
) -> None:
    """G = 2 pi dF/dW written into ``G`` (R, n, d), and with ``student`` (R,) (``ws`` made
    with ``loss=True``) the W-dependent part of F written into it, at U = [W; V] (R, n + k, d),
    contiguous. ``angles`` = (nu (R, n + k, 1), cos, theta, sin (R, n, n + k)): buffers that
    receive the norms and angles instead of ``ws``'s (the descent keeps them per iterate and
    evaluates F after the block, :func:`loss_from_angles`; ``student`` is then not given).

    Gradient (``weights`` = (s, offset) of :func:`gradient_weights`; s_ii = 0, u_i = w_i),
    5 kernels after the angles:

        G_i = pi w_i + (sum_j s_ij ||u_j|| sin t_ij) w_i / ||w_i|| + sum_j s_ij (pi - t_ij) u_j
            = (sum_j s_ij ||u_j|| sin t_ij) w_i / ||w_i|| + sum_j c_ij u_j,
        c = offset - s t = s (pi - t) + pi [I | 0].

    The angles: cos of every (student, student-or-teacher) pair from the unit rows, clamped
    to [-1, 1]; sin t is one kernel where sqrt(1 - cos^2) (the same value for t in [0, pi]) is
    three. Loss (``loss_weight`` lw (n + k, 1) of :func:`loss_weights`):

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
        loss_from_angles(
            ws.nw_row,
            ws.nu,
            ws.cos,
            ws.theta,
            ws.sin,
            ws.pi,
            loss_weight,
            student,
            pi_minus_theta=ws.pi_minus_theta,
            pair=ws.pair,
            weighted_nu=ws.weighted_nu,
            per_row=ws.per_row,
        )


def loss_from_angles(
    nw_row, nu, cos, theta, sin, pi, loss_weight, student, *, pi_minus_theta, pair, weighted_nu, per_row
) -> None:
    """The W-dependent part of F (formula in :func:`evaluate_into`) written into ``student``
    (R,), from the norms nu (R, n + k, 1) (``nw_row`` (R, 1, n): its student rows as a row) and
    the angles (R, n, n + k) of an evaluation; ``pi`` a 0-d tensor, the other keywords the
    buffers of the intermediate results (``pi_minus_theta`` and ``pair`` may be ``theta`` and
    ``sin`` themselves, which are then overwritten)."""
    torch.addcmul(sin, torch.sub(pi, theta, out=pi_minus_theta), cos, out=pair)  # p_ij
    torch.bmm(pair, torch.mul(loss_weight, nu, out=weighted_nu), out=per_row)  # (R, n, 1)
    torch.bmm(nw_row, per_row, out=student.view(-1, 1, 1))  # (R,)


def _fused_scaled_gradient(W: torch.Tensor, V: torch.Tensor, weights) -> torch.Tensor:
    """2 pi dF/dW with few kernel launches, the kernels of the descent's loop
    (:func:`evaluate_into`). ``weights`` = (sign, offset) of :func:`gradient_weights`.
    W: (R, n, d), V: (R, k, d) -> (R, n, d)."""
    (R, n, d), k = W.shape, V.shape[-2]
    ws = Workspace(R, n, k, d, dtype=W.dtype, device=W.device, loss=False)
    G = torch.empty_like(W)
    evaluate_into(torch.cat([W, V], dim=-2), ws, weights, G)
    return G


def loss_weights(n: int, k: int, *, dtype, device) -> torch.Tensor:
    """Column weights of :func:`fused_gradient_and_loss`'s loss, (n + k, 1): 1 / (4 pi) for
    every student column (the diagonal pair included), -1 / (2 pi) for teacher columns."""
    return torch.cat(
        [
            torch.full((n, 1), 0.25 / math.pi, dtype=dtype, device=device),
            torch.full((k, 1), -0.5 / math.pi, dtype=dtype, device=device),
        ],
        dim=0,
    )


def fused_gradient_and_loss(
    W: torch.Tensor, V: torch.Tensor, weights, loss_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """G = 2 pi dF/dW (the same kernels as :func:`_fused_scaled_gradient`, so the same bits)
    and the W-dependent part of F from the same angles (:func:`evaluate_into`); used by the
    descent with ``stop_when_proven`` (the early-global rule's F at no extra arccos); equal to
    :func:`student_terms` up to rounding. ``loss_weight`` from :func:`loss_weights`.
    -> ((R, n, d), (R,))."""
    (R, n, d), k = W.shape, V.shape[-2]
    ws = Workspace(R, n, k, d, dtype=W.dtype, device=W.device, loss=True)
    G, student = torch.empty_like(W), W.new_empty((R,))
    evaluate_into(torch.cat([W, V], dim=-2), ws, weights, G, loss_weight, student)
    return G, student


def scaled_gradient(
    W: torch.Tensor, V: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """2 pi * dF/dW, analytic (protocols.md section 1):

        dF/dw_i = w_i / 2 + sum_{j != i} g(w_i, w_j) - sum_j g(w_i, v_j)
        g(w, v) = (||v|| sin t * w / ||w||  +  (pi - t) v) / (2 pi)

    W: (R, n, d), V: (R, k, d); ``weights`` are the pair weights of :func:`gradient_weights`
    (built when None). Returns (R, n, d). Scaling by 2 pi saves a division in the hot loop and
    is the quantity the published stopping rule thresholds.
    """
    n, k = W.shape[-2], V.shape[-2]
    if weights is None:
        weights = gradient_weights(n, k, dtype=W.dtype, device=W.device)
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
    sign, _ = gradient_weights(n, k, dtype=dtype, device=device)  # (n, m)
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

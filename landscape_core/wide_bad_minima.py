"""Sub-optimal local minima at every width: the construction (Ding, Li & Sun 2019).

Survey section IV-C (Proposition IV.2 and the stronger statement after it; arXiv
1911.01413); the recipe of protocols.md section 5, extended here to two hidden layers.
The paper's own construction could not be read here (only its abstract); this module
implements the recipe and proves its point a local minimum from finite-dimensional
conditions that every run checks (:func:`construct`), and
:mod:`landscape_core.wide_bad_minima_checks` tests the point numerically.

Network (``networks.MLPSpec``, output bias on): f(x) = sum_j v_j phi(h_j(x)) + c, every
hidden layer of width m. Loss L = 1/(2n) sum_i (f(x_i) - y_i)^2; r = y - f(X) at the point.

**Depth 2 (one hidden layer).** Every hidden neuron at the same (w0, b0), t_i = w0.x_i + b0,
v_j = s / m. The gradient vanishes iff r is orthogonal to phi(t), 1, phi'(t) and
phi'(t) x_{.k} (k = 1..d): d + 3 linear conditions. With r = y - f the Hessian is
(1/n)(J^T J - Q), Q(delta) = sum_i r_i delta^T grad^2 f_i delta; the cross terms v_j x
(w_j, b_j) are sums r_i phi'(t_i)[x_i; 1] = 0, so Q = sum_j v_j delta_j^T M delta_j with
M = sum_i r_i phi''(t_i)[x_i; 1][x_i; 1]^T. M negative definite and v_j > 0 make -Q PSD
with kernel {delta_j = 0}; ker H = ker J there = {sum_j dv_j = 0, dc = 0} (phi(t) and 1
independent): dimension m - 1, the tangent of the set of critical points {v_j > 0,
sum v_j = s} of equal loss. A manifold of critical points with a Hessian positive definite
across it is a set of local minima (Morse-Bott lemma): the point is a local minimum (non
strict for m >= 2), at every width m, with the same data y for every m.

**Depth 3 (two hidden layers; this module's extension).** First layer: every neuron at
(u, a), p_i = u.x_i + a, z_i = phi(p_i), so h_i = z_i 1_m. Second layer: W2 = (beta / m)
1 1^T (beta > 0), b2 = b0 1, t_i = beta z_i + b0; output v_j = s / m. The gradient vanishes
iff r is orthogonal to phi(t), 1, phi'(t), phi'(t) z, phi'(t) phi'(p)[x; 1] (d + 5
conditions). Write the second-layer change of neuron j as mu_j = (sigma_j, db2_j) with
sigma_j = sum_k dW2_jk, split mu_j = mu_bar + nu_j (sum_j v_j nu_j = 0) and the first-layer
changes delta_k = delta_bar + eta_k (sum_k eta_k = 0). The v cross terms vanish by the
orthogonality, and

    Q = s [mu_bar; xi]^T B [mu_bar; xi] + sum_j v_j nu_j^T M2 nu_j + s (beta / m) sum_k eta_k^T M_b eta_k,
    M2 = sum_i r_i phi''(t_i) [z_i; 1][z_i; 1]^T,  M_b = sum_i r_i phi'(t_i) phi''(p_i) [x_i; 1][x_i; 1]^T

(xi = beta delta_bar; B collects the mean terms). J sees only mu_bar, xi, sum dv_j and dc,
so H splits into: the mean block, which is the Hessian of the reduced width-1 network
f = s phi(beta phi(u.x + a) + b0) + c at its point; -M2 on the nu_j; -M_b on the eta_k;
and zero on {sum dv_j = 0, dc = 0, zero row sums of dW2} (dimension m^2 - 1, the tangent of
the manifold of critical points "any v with sum s, any W2 with row sums beta"). So the
point is a local minimum at every width m (Morse-Bott) when (i) M2 and M_b are negative
definite and (ii) the reduced Hessian (d + 5 parameters) is positive definite. The recipe
sets M2 = M_b = -I (least norm in the null space of the gradient conditions) and then
scales |r| to min(residual_rms sqrt(n), curvature_safety kappa*), kappa* the largest |r|
for which (ii) holds (a generalised eigenvalue of (J^T J, Q) of the reduced network); B
itself need not be negative definite (J^T J makes up for it), which is why a least-norm
"B = -I" (the first attempt) is not used: on these data it is not solvable.

**Choosing r.** Within the null space of the gradient conditions, the least-norm solution
of the linear equations "second-order matrices = -I" (M = -I; M2 = -I and M_b = -I), then
scaled; this needs the equations to be solvable there:
n - (d + 3) >= (d + 1)(d + 2)/2 (depth 2), n - (d + 5) >= 3 + (d + 1)(d + 2)/2 (depth 3).
The best-conditioned of ``draws`` candidate parameter sets is kept. The paper's class: phi
twice differentiable with phi'' != 0 at the points used (sigmoid, tanh, softplus, swish,
gelu, quadratic; relu / leaky relu have phi'' = 0 where it exists). Proven per run, from
numbers computed in float64 and recorded: the gradient conditions' residual
(``condition_residual``), the largest eigenvalue of the second-order matrices
(``second_order_max_eig`` < 0) and the reduced Hessian's smallest (``reduced_min_eig`` > 0);
the local-minimum argument above then holds for every width. Rounding (the point's
gradient is ~1e-16, not 0) is outside the proof; the numerical tests cover it.

**Linear control (Kawaguchi 2016).** For phi linear the conditions force r orthogonal to
[x; 1], so the identical-neuron point is the least-squares affine fit: global (M = 0). The
non-global critical point the construction's family gives is the rank-0 point: every
weight 0, hidden biases 0, output weights 0, c = mean(y) (critical: every gradient block
has a zero factor); a saddle (depth 2: negative curvature; depth >= 3: a degenerate saddle,
Hessian PSD, descent only at third order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import hessian, jacrev, jvp, vmap

from landscape_core.errors import OptionError
from landscape_core.networks import MLPSpec, activation_fn, flatten, forward, unflatten
from landscape_core.seeding import run_generator

#: the construction's activation class (phi twice differentiable, phi'' != 0 at the t_i)
CLASS_ACTIVATIONS = ("sigmoid", "tanh", "softplus", "swish", "silu", "gelu", "quadratic")
#: the control: a deep linear network (every local minimum global)
CONTROL = "linear"
DEPTHS = (2, 3)
CLASS_CONDITION = (
    "the construction needs phi twice differentiable with phi'' != 0 at the pre-activations "
    f"(allowed: {', '.join(CLASS_ACTIVATIONS)}; {CONTROL} = Kawaguchi's control)"
)


@dataclass(frozen=True)
class ConstructionSpec:
    """One cell's construction: architecture and data."""

    width: int
    depth: int
    activation: str
    n_samples: int = 32
    input_dim: int = 2
    residual_rms: float = 0.5  # rms of r = y - f at the point: the point's loss is residual_rms^2 / 2
    output_scale: float = 1.0  # s = sum_j v_j
    draws: int = 8  # candidate generic parameter sets per seed; the best-conditioned one is kept
    curvature_safety: float = 0.5  # depth 3: |r| <= this x the largest |r| keeping the reduced Hessian PD

    def validate(self) -> None:
        for name, minimum in (("width", 2), ("n_samples", 1), ("input_dim", 1), ("draws", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise OptionError(name, f"must be an integer >= {minimum}, got {value!r}")
        if self.depth not in DEPTHS:
            raise OptionError("depth", f"must be 2 or 3 (weight layers: one or two hidden layers), got {self.depth!r}")
        if self.activation not in CLASS_ACTIVATIONS + (CONTROL,):
            raise OptionError("activation", f"{self.activation!r} is outside the class: {CLASS_CONDITION}")
        for name in ("residual_rms", "output_scale", "curvature_safety"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise OptionError(name, f"must be a number > 0, got {value!r}")
        d, n = self.input_dim, self.n_samples
        if not d * d + 1.5 * d < n:
            raise OptionError(
                "input_dim", f"d_x = {d} is too large for n = {n}: generic inputs need d_x^2 + 3 d_x / 2 < n"
            )
        need = required_samples(d, self.depth)
        if n < need:
            raise OptionError(
                "n_samples", f"must be >= {need} for d_x = {d}, depth {self.depth} (the recipe's equations), got {n}"
            )

    def model(self) -> MLPSpec:
        return MLPSpec(self.input_dim, self.width, self.depth, 1, self.activation, output_bias=True)

    def predicted_flat_dim(self) -> int:
        """dim of the critical manifold's tangent: m - 1 (depth 2), m^2 - 1 (depth 3)."""
        return self.width - 1 if self.depth == 2 else self.width * self.width - 1


def required_samples(d: int, depth: int) -> int:
    """Smallest n for which the recipe's linear equations have as many unknowns as equations."""
    D = d + 1
    if depth == 2:
        return (d + 3) + D * (D + 1) // 2
    return (d + 5) + 3 + D * (D + 1) // 2  # M2 (2 x 2) and M_b (D x D)


def derivatives(name: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """phi(t), phi'(t), phi''(t) elementwise, by forward-mode autodiff (torch.func.jvp)."""
    phi = activation_fn(name)
    ones = torch.ones_like(t)

    def first(x):
        return jvp(phi, (x,), (ones,))

    (value, d1), d2 = first(t), jvp(lambda x: first(x)[1], (t,), (ones,))[1]
    return value, d1, d2


@dataclass
class Construction:
    """A batch of S constructed points (one per seed)."""

    X: torch.Tensor  # (S, n, d)
    Y: torch.Tensor  # (S, n, 1)
    theta: torch.Tensor  # (S, P) the point, flat in spec.model() order
    residual: torch.Tensor  # (S, n) r = y - f(X) at the point
    condition_residual: torch.Tensor  # (S,) max |gradient condition . r| / |r| (0 up to rounding)
    second_order_max_eig: torch.Tensor  # (S,) largest eigenvalue over the second-order matrices (< 0: proven)
    min_abs_phi2: torch.Tensor  # (S,) min_i |phi''| over the points used (the class condition)
    solve_residual: torch.Tensor  # (S,) relative residual of the least-norm solve (before scaling)
    reduced_min_eig: torch.Tensor  # (S,) smallest Hessian eigenvalue of the width-1 network at its point (> 0)
    residual_rms_used: torch.Tensor  # (S,) rms of r: residual_rms, or less where the reduced Hessian needs it
    draw: torch.Tensor | None = None  # (S,) which candidate parameter set was kept


def _outer(a: torch.Tensor) -> torch.Tensor:
    return a.unsqueeze(-1) * a.unsqueeze(-2)  # (..., n, D) -> (..., n, D, D)


def construct(spec: ConstructionSpec, *, seeds: list[int], device: torch.device) -> Construction:
    """The data y and the point of each seed, batched over seeds (module docstring).

    Per seed: X ~ N(0, I_d) from a generator seeded by (n, d, seed); then ``spec.draws``
    candidate sets of generic parameters (w0 ~ N(0, 2.25 I), b0 ~ N(0, 1/4); depth 3:
    u ~ N(0, 2.25 I), a ~ N(0, 1/4), beta ~ U[2, 4], b0 ~ N(0, 1/4) then centred so that
    t = beta (z - mean z) + b0), each from a generator seeded by (n, d, depth, seed, draw);
    the candidate with the largest certificate margin min(-second_order_max_eig,
    reduced_min_eig) is kept (``draw``). The width does not enter: every width of a seed
    shares X, y and the reduced point; the activation enters only through that choice.
    """
    spec.validate()
    S, A = len(seeds), spec.draws
    Xs, ws, extras, b0s = [], [], [], []
    for seed in seeds:
        X = torch.randn(
            spec.n_samples,
            spec.input_dim,
            generator=run_generator("wide_bad_minima.x", spec.n_samples, spec.input_dim, seed),
            dtype=torch.float64,
        )
        for draw in range(A):
            g = run_generator("wide_bad_minima.params", spec.n_samples, spec.input_dim, spec.depth, seed, draw)
            ws.append(1.5 * torch.randn(spec.input_dim, generator=g, dtype=torch.float64))
            a = 0.5 * torch.randn(1, generator=g, dtype=torch.float64)
            beta = 2.0 * (1 + torch.rand(1, generator=g, dtype=torch.float64))
            extras.append(torch.cat([a, beta]))
            b0s.append(0.5 * torch.randn(1, generator=g, dtype=torch.float64))
            Xs.append(X)
    X = torch.stack(Xs).to(device)  # (S A, n, d)
    w = torch.stack(ws).to(device)  # (S A, d)
    extra = torch.stack(extras).to(device)  # (S A, 2): (a, beta)
    b0 = torch.stack(b0s).to(device)[:, 0]  # (S A,)
    c = _construct(spec, X, w, extra, b0, seeds=[s for s in seeds for _ in range(A)])
    score = torch.minimum(-c.second_order_max_eig, c.reduced_min_eig).nan_to_num(nan=0.0).reshape(S, A)
    pick = score.argmax(-1) + A * torch.arange(S, device=score.device)  # (S,)
    out = Construction(**{k: v[pick] for k, v in c.__dict__.items() if v is not None})
    out.draw = (pick % A).cpu()
    return out


def _construct(spec: ConstructionSpec, X, w, extra, b0, *, seeds: list[int]) -> Construction:
    """The construction for a batch of candidate parameter sets (see :func:`construct`)."""
    n, depth = spec.n_samples, spec.depth
    device = X.device
    S = X.shape[0]
    ones = torch.ones(S, n, 1, dtype=X.dtype, device=device)
    Xa = torch.cat([X, ones], -1)  # (S, n, D)
    s = float(spec.output_scale)
    name = spec.activation

    if name == CONTROL:
        t = X @ w.unsqueeze(-1)  # (S, n, 1)
        t = t[..., 0] + b0[:, None]
        G = Xa.transpose(1, 2)  # r orthogonal to [x; 1]
        r = _null_space_draw(G, seeds, n)
        f = s * t
        phi2 = torch.zeros_like(t)
        max_eig = torch.zeros(S, dtype=X.dtype, device=device)
        solve_res = torch.zeros_like(max_eig)
    elif depth == 2:
        t = (X @ w.unsqueeze(-1))[..., 0] + b0[:, None]  # (S, n)
        p0, p1, phi2 = derivatives(name, t)
        G = torch.cat([p0[:, None], ones.transpose(1, 2), p1[:, None], p1[:, None] * X.transpose(1, 2)], 1)
        K = phi2[..., None, None] * _outer(Xa)  # (S, n, D, D)
        r, max_eig, solve_res = _solve(G, [K])
        f = s * p0
    else:
        a, beta = extra[:, 0], extra[:, 1]
        p = (X @ w.unsqueeze(-1))[..., 0] + a[:, None]  # (S, n)
        z, z1, z2 = derivatives(name, p)
        b0 = b0 - beta * z.mean(-1)  # centre t on the data: t = beta (z - mean z) + b0
        t = beta[:, None] * z + b0[:, None]
        q0, q1, q2 = derivatives(name, t)
        Za = torch.stack([z, torch.ones_like(z)], -1)  # (S, n, 2)
        Z1Xa = (q1 * z1)[..., None] * Xa  # (S, n, D)
        G = torch.cat([q0[:, None], ones.transpose(1, 2), q1[:, None], (q1 * z)[:, None], Z1Xa.transpose(1, 2)], 1)
        # M2 = sum r q2 Za Za^T (2 x 2) and M_b = sum r q1 z2 Xa Xa^T (D x D) set to -I; the mean
        # block (B of the module docstring) is the reduced network's Hessian, made PD by |r| below
        Mb = (q1 * z2)[..., None, None] * _outer(Xa)
        r, max_eig, solve_res = _solve(G, [q2[..., None, None] * _outer(Za), Mb])
        phi2 = torch.cat([q2, z2], -1)
        f = s * q0
    r_raw = r
    r_hat = r / torch.linalg.vector_norm(r, dim=-1, keepdim=True)  # (S, n) unit residual direction
    theta1 = _point(spec, w, extra, b0, f.unsqueeze(-1), width=1)  # (S, P1) the reduced (width-1) point
    target = torch.full((S,), spec.residual_rms * n**0.5, dtype=X.dtype, device=device)
    if name == CONTROL:
        kappa, reduced = target, torch.full_like(target, float("nan"))
    else:
        kappa, reduced = _reduced_scale(spec, theta1, X, r_hat, target)
    r = r_hat * kappa[:, None]
    max_eig = max_eig * kappa / torch.linalg.vector_norm(r_raw, dim=-1)
    Y = (f + r).unsqueeze(-1)  # (S, n, 1), c = 0
    cond = (G @ r.unsqueeze(-1))[..., 0].abs() / torch.linalg.vector_norm(G, dim=-1)  # (S, q)
    return Construction(
        X=X,
        Y=Y,
        theta=_point(spec, w, extra, b0, Y),
        residual=r,
        reduced_min_eig=reduced,
        residual_rms_used=kappa / n**0.5,
        condition_residual=cond.amax(-1) / torch.linalg.vector_norm(r, dim=-1),
        second_order_max_eig=max_eig,
        min_abs_phi2=phi2.abs().amin(-1),
        solve_residual=solve_res,
    )


def _null_space(G: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of {r : G r = 0} per run: G (S, q, n) -> (S, n, n - q) (G of full row rank)."""
    q = G.shape[1]
    _, _, Vh = torch.linalg.svd(G, full_matrices=True)  # Vh (S, n, n)
    return Vh[:, q:, :].transpose(1, 2)


def _null_space_draw(G: torch.Tensor, seeds: list[int], n: int) -> torch.Tensor:
    """A random r in the null space of G (the linear control's residual), per seed."""
    N = _null_space(G)  # (S, n, k)
    coef = torch.stack(
        [
            torch.randn(N.shape[-1], generator=run_generator("wide_bad_minima.control", n, s), dtype=N.dtype)
            for s in seeds
        ]
    ).to(N.device)
    return (N @ coef.unsqueeze(-1))[..., 0]


def _solve(G: torch.Tensor, terms: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-norm r in null(G) with sum_i r_i T_i = -I for every per-sample term T (S, n, k, k).

    Returns r (S, n), the largest eigenvalue over the matrices sum_i r_i T_i at that r (-1 when
    the solve is exact), and the relative residual of the solve.
    """
    N = _null_space(G)  # (S, n, f)
    rows, targets = [], []
    for T in terms:
        k = T.shape[-1]
        iu = torch.triu_indices(k, k, device=T.device)
        mapped = torch.einsum("snf,snab->sfab", N, T)[..., iu[0], iu[1]]  # (S, f, k(k+1)/2)
        rows.append(mapped.transpose(1, 2))
        targets.append(-torch.eye(k, dtype=T.dtype, device=T.device)[iu[0], iu[1]])
    E = torch.cat(rows, 1)  # (S, eq, f)
    b = torch.cat(targets).expand(E.shape[0], -1)  # (S, eq)
    alpha = (torch.linalg.pinv(E) @ b.unsqueeze(-1))[..., 0]  # (S, f)
    res = torch.linalg.vector_norm((E @ alpha.unsqueeze(-1))[..., 0] - b, dim=-1) / torch.linalg.vector_norm(b, dim=-1)
    r = (N @ alpha.unsqueeze(-1))[..., 0]  # (S, n)
    top = torch.stack([torch.linalg.eigvalsh(torch.einsum("sn,snab->sab", r, T))[:, -1] for T in terms], -1)
    return r, top.amax(-1), res


def _reduced_scale(
    spec: ConstructionSpec, theta1: torch.Tensor, X: torch.Tensor, r_hat: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """|r| and the reduced Hessian's smallest eigenvalue: the width-1 network's Hessian at y = f + kappa r_hat
    is (J^T J - kappa Q) / n, Q = sum_i r_hat_i grad^2 f_i; PD for kappa < kappa* (generalised eigenvalue).
    kappa = min(target, spec.curvature_safety kappa*). theta1 (S, P1), X (S, n, d), r_hat (S, n)."""
    model = MLPSpec(spec.input_dim, 1, spec.depth, 1, spec.activation, output_bias=True)

    def f(t, x):
        return forward(unflatten(t, model), x, model)[:, 0]  # (n,)

    J = vmap(jacrev(f))(theta1, X)  # (S, n, P1)
    Q = vmap(hessian(lambda t, x, rr: (rr * f(t, x)).sum()))(theta1, X, r_hat)  # (S, P1, P1)
    JtJ = J.transpose(1, 2) @ J
    eye = torch.eye(JtJ.shape[-1], dtype=JtJ.dtype, device=JtJ.device)
    _, info = torch.linalg.cholesky_ex(JtJ)
    bad = info != 0  # J of deficient column rank (a candidate in saturation): never kept
    C = torch.linalg.cholesky(torch.where(bad[:, None, None], eye, JtJ))
    Ci = torch.linalg.solve_triangular(C, eye, upper=False)
    mu = torch.linalg.eigvalsh(Ci @ Q @ Ci.transpose(1, 2))[:, -1]  # (S,)
    kappa_star = torch.where(mu > 0, 1.0 / mu.clamp_min(torch.finfo(mu.dtype).tiny), torch.full_like(mu, float("inf")))
    kappa = torch.minimum(target, spec.curvature_safety * kappa_star)
    n = X.shape[1]
    reduced = torch.linalg.eigvalsh((JtJ - kappa[:, None, None] * Q) / n)[:, 0]
    reduced = torch.where(bad, torch.full_like(reduced, -float("inf")), reduced)
    return kappa, reduced


def _point(
    spec: ConstructionSpec,
    w: torch.Tensor,
    extra: torch.Tensor,
    b0: torch.Tensor,
    Y: torch.Tensor,
    *,
    width: int | None = None,
):
    """The flat point (S, P): identical neurons (module docstring); the control's rank-0 point.
    ``width`` (default spec.width) = 1 gives the reduced point."""
    m, S = width or spec.width, w.shape[0]
    model = MLPSpec(spec.input_dim, m, spec.depth, 1, spec.activation, output_bias=True)
    dt, dev = w.dtype, w.device
    if spec.activation == CONTROL:
        params = {k: torch.zeros(S, *shape, dtype=dt, device=dev) for k, shape in model.shapes().items()}
        params[f"b{spec.depth}"] = Y.mean(1)  # (S, 1): c = mean(y)
        return flatten(params, model)
    s = float(spec.output_scale)
    out = {
        f"W{spec.depth}": torch.full((S, 1, m), s / m, dtype=dt, device=dev),
        f"b{spec.depth}": torch.zeros(S, 1, dtype=dt, device=dev),
    }
    if spec.depth == 2:
        out["W1"] = w[:, None, :].expand(S, m, spec.input_dim).clone()
        out["b1"] = b0[:, None].expand(S, m).clone()
    else:
        out["W1"] = w[:, None, :].expand(S, m, spec.input_dim).clone()
        out["b1"] = extra[:, :1].expand(S, m).clone()
        out["W2"] = (extra[:, 1] / m)[:, None, None].expand(S, m, m).clone()
        out["b2"] = b0[:, None].expand(S, m).clone()
    return flatten(out, model)


def tangent_projection(spec: ConstructionSpec, delta: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection of directions (..., P) onto the predicted flat tangent space:
    zero-sum changes of the output weights, and (depth 3) zero-row-sum changes of W2."""
    model = spec.model()
    parts = unflatten(delta, model)
    out = {k: torch.zeros_like(v) for k, v in parts.items()}
    out_w = f"W{spec.depth}"
    out[out_w] = parts[out_w] - parts[out_w].mean(-1, keepdim=True)
    if spec.depth == 3:
        out["W2"] = parts["W2"] - parts["W2"].mean(-1, keepdim=True)
    return flatten(out, model)

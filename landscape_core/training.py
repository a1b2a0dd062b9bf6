"""Full-batch training to a stationary point, batched over runs.

Parameters are flat vectors ``theta (S, P)`` (see ``networks.flatten``), one row per run;
``loss(theta_i, *args_i)`` is a scalar function of one run, vmapped here. Each run stops
on its own when its gradient norm is under ``grad_tol`` (converged), its loss under
``stop_loss`` (reached the target), its loss is non-finite (diverged), or the iteration
cap is reached; finished runs are frozen at once and removed from the batch every
``compact_every`` iterations, so a run's trajectory does not depend on its neighbours.

Optimizers (all deterministic, full batch):
- ``gd``: theta <- theta - lr g
- ``momentum``: heavy ball v <- mu v + g, theta <- theta - lr v (``nesterov``: theta <- theta - lr (g + mu v))
- ``adam``: Kingma & Ba (2015) with bias correction (lr, beta1, beta2, eps)
- ``lbfgs``: limited-memory BFGS, two-loop recursion (Nocedal & Wright, alg. 7.4) with
  ``history`` pairs, initial scaling gamma = s.y / y.y, Armijo backtracking from t = 1
  (c1 = 1e-4, halving, at most 40 trials); a pair with s.y <= 1e-12 |s||y| is not
  stored; a run whose line search fails twice in a row (at steepest descent) stops as
  stalled (not converged).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import grad_and_value, vmap

from landscape_core.errors import OptionError

OPTIMIZERS = ("gd", "momentum", "adam", "lbfgs")


@dataclass(frozen=True)
class TrainSpec:
    optimizer: str = "gd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    history: int = 10  # L-BFGS memory
    grad_tol: float = 1e-6  # converged when ||grad||_2 <= grad_tol
    stop_loss: float = 0.0  # stop when loss < stop_loss (0 disables)
    max_iterations: int = 20_000
    compact_every: int = 32

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise OptionError("optimizer.name", f"{self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        for name in ("lr", "grad_tol", "adam_eps"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise OptionError(f"optimizer.{name}", f"must be a positive number, got {v!r}")
        for name in ("momentum", "beta1", "beta2"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise OptionError(f"optimizer.{name}", f"must be in [0, 1), got {v!r}")
        if self.stop_loss < 0:
            raise OptionError("optimizer.stop_loss", f"must be >= 0, got {self.stop_loss!r}")
        for name in ("history", "max_iterations", "compact_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise OptionError(f"optimizer.{name}", f"must be an integer >= 1, got {v!r}")


@dataclass
class TrainResult:
    theta: torch.Tensor  # (S, P) final parameters
    loss: torch.Tensor  # (S,) loss at theta
    grad_norm: torch.Tensor  # (S,) ||grad|| at theta
    iterations: torch.Tensor  # (S,) int64 optimizer steps taken
    converged: torch.Tensor  # (S,) grad_norm <= grad_tol
    reached_loss: torch.Tensor  # (S,) loss < stop_loss
    diverged: torch.Tensor  # (S,) non-finite loss or gradient
    stalled: torch.Tensor  # (S,) L-BFGS line search failed


def train(loss: Callable[..., torch.Tensor], theta0: torch.Tensor, *args: torch.Tensor, spec: TrainSpec) -> TrainResult:
    """Train every run of ``theta0 (S, P)`` with ``spec``; ``args`` are per-run (S, ...) tensors."""
    spec.validate()
    S, P = theta0.shape
    dtype, device = theta0.dtype, theta0.device
    vg = vmap(grad_and_value(loss))
    vloss = vmap(loss)

    out = dict(
        theta=theta0.clone(),
        loss=torch.full((S,), float("nan"), dtype=dtype, device=device),
        grad_norm=torch.full((S,), float("nan"), dtype=dtype, device=device),
        iterations=torch.zeros(S, dtype=torch.int64, device=device),
        converged=torch.zeros(S, dtype=torch.bool, device=device),
        reached_loss=torch.zeros(S, dtype=torch.bool, device=device),
        diverged=torch.zeros(S, dtype=torch.bool, device=device),
        stalled=torch.zeros(S, dtype=torch.bool, device=device),
    )
    idx = torch.arange(S, device=device)
    theta = theta0.clone()
    act_args = list(args)
    it = torch.zeros(S, dtype=torch.int64, device=device)
    state: dict[str, torch.Tensor] = {}
    if spec.optimizer in ("momentum", "adam"):
        state["m"] = torch.zeros_like(theta)
    if spec.optimizer == "adam":
        state["v"] = torch.zeros_like(theta)
    if spec.optimizer == "lbfgs":
        h = spec.history
        state["s"] = torch.zeros(S, h, P, dtype=dtype, device=device)
        state["y"] = torch.zeros(S, h, P, dtype=dtype, device=device)
        state["rho"] = torch.zeros(S, h, dtype=dtype, device=device)
        state["gamma"] = torch.ones(S, dtype=dtype, device=device)
        state["fails"] = torch.zeros(S, dtype=torch.int64, device=device)
    stalled = torch.zeros(S, dtype=torch.bool, device=device)
    done = torch.zeros(S, dtype=torch.bool, device=device)
    g, f = vg(theta, *act_args)  # (A, P), (A,)
    step_no = 0
    while idx.numel() > 0:
        gn = torch.linalg.vector_norm(g, dim=-1)
        diverged = ~torch.isfinite(f) | ~torch.isfinite(gn)
        converged = ~diverged & (gn <= spec.grad_tol)
        reached = ~diverged & (f < spec.stop_loss)
        capped = it >= spec.max_iterations
        done = diverged | converged | reached | capped | stalled
        if step_no % spec.compact_every == 0 or bool(done.all()):
            if bool(done.any()):
                j = idx[done]
                out["theta"][j] = theta[done]
                out["loss"][j] = f[done]
                out["grad_norm"][j] = gn[done]
                out["iterations"][j] = it[done]
                out["converged"][j] = converged[done]
                out["reached_loss"][j] = reached[done]
                out["diverged"][j] = diverged[done]
                out["stalled"][j] = stalled[done]
                keep = ~done
                idx, theta, g, f, it, stalled = idx[keep], theta[keep], g[keep], f[keep], it[keep], stalled[keep]
                act_args = [a[keep] for a in act_args]
                state = {k: v[keep] for k, v in state.items()}
                done = done[keep]
                if idx.numel() == 0:
                    break
        move = ~done  # (A,)
        mv = move.unsqueeze(-1)
        it = it + move
        if spec.optimizer == "gd":
            theta = torch.where(mv, theta - spec.lr * g, theta)
        elif spec.optimizer == "momentum":
            m = torch.where(mv, spec.momentum * state["m"] + g, state["m"])
            direction = g + spec.momentum * m if spec.nesterov else m
            theta = torch.where(mv, theta - spec.lr * direction, theta)
            state["m"] = m
        elif spec.optimizer == "adam":
            t = it.to(dtype).clamp_min(1).unsqueeze(-1)
            m = torch.where(mv, spec.beta1 * state["m"] + (1 - spec.beta1) * g, state["m"])
            v = torch.where(mv, spec.beta2 * state["v"] + (1 - spec.beta2) * g * g, state["v"])
            mhat = m / (1 - spec.beta1**t)
            vhat = v / (1 - spec.beta2**t)
            theta = torch.where(mv, theta - spec.lr * mhat / (vhat.sqrt() + spec.adam_eps), theta)
            state["m"], state["v"] = m, v
        else:
            theta, g_new, f_new, stalled = _lbfgs_step(vg, vloss, theta, g, f, act_args, state, move, stalled)
            g, f = g_new, f_new
            step_no += 1
            continue
        g, f = vg(theta, *act_args)
        step_no += 1
    return TrainResult(**out)


def _lbfgs_direction(g: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """Two-loop recursion, batched: returns -H g (A, P). Unused slots have rho = 0."""
    s, y, rho = state["s"], state["y"], state["rho"]  # (A, h, P), (A, h, P), (A, h)
    h = rho.shape[1]
    q = g.clone()
    alphas = []
    for i in reversed(range(h)):  # slot h-1 is the newest
        a = rho[:, i] * (s[:, i] * q).sum(-1)
        q = q - a.unsqueeze(-1) * y[:, i]
        alphas.append(a)
    r = state["gamma"].unsqueeze(-1) * q
    for i, a in zip(range(h), reversed(alphas)):
        b = rho[:, i] * (y[:, i] * r).sum(-1)
        r = r + s[:, i] * (a - b).unsqueeze(-1)
    return -r


def _lbfgs_step(vg, vloss, theta, g, f, args, state, move, stalled):
    """One batched L-BFGS iteration with Armijo backtracking; frozen runs are untouched."""
    direction = _lbfgs_direction(g, state)
    slope = (g * direction).sum(-1)
    bad = ~(slope < 0)  # not a descent direction: reset memory, use steepest descent
    if bool(bad.any()):
        direction = torch.where(bad.unsqueeze(-1), -g, direction)
        slope = torch.where(bad, -(g * g).sum(-1), slope)
        state["rho"] = torch.where(bad.unsqueeze(-1), torch.zeros_like(state["rho"]), state["rho"])
        state["gamma"] = torch.where(bad, torch.ones_like(state["gamma"]), state["gamma"])
    t = torch.ones_like(f)
    accepted = ~move  # frozen runs need no step
    for _ in range(40):
        trial = theta + t.unsqueeze(-1) * direction
        ft = vloss(trial, *args)
        ok = torch.isfinite(ft) & (ft <= f + 1e-4 * t * slope)
        accepted = accepted | ok
        if bool(accepted.all()):
            break
        t = torch.where(accepted, t, 0.5 * t)
    step_ok = move & accepted & ~((~move) & accepted)  # moving runs that found a step
    new_theta = torch.where(step_ok.unsqueeze(-1), theta + t.unsqueeze(-1) * direction, theta)
    g_new, f_new = vg(new_theta, *args)
    # memory update (shift left, newest at the end) for runs that stepped with curvature
    s_vec, y_vec = new_theta - theta, g_new - g
    sy = (s_vec * y_vec).sum(-1)
    good = step_ok & (sy > 1e-12 * torch.linalg.vector_norm(s_vec, dim=-1) * torch.linalg.vector_norm(y_vec, dim=-1))
    gm = good.unsqueeze(-1)
    state["s"] = torch.where(gm.unsqueeze(-1), torch.cat([state["s"][:, 1:], s_vec.unsqueeze(1)], 1), state["s"])
    state["y"] = torch.where(gm.unsqueeze(-1), torch.cat([state["y"][:, 1:], y_vec.unsqueeze(1)], 1), state["y"])
    new_rho = torch.where(good, 1.0 / torch.where(good, sy, torch.ones_like(sy)), torch.zeros_like(sy))
    state["rho"] = torch.where(gm, torch.cat([state["rho"][:, 1:], new_rho.unsqueeze(1)], 1), state["rho"])
    yy = (y_vec * y_vec).sum(-1)
    state["gamma"] = torch.where(good, sy / torch.where(good, yy, torch.ones_like(yy)), state["gamma"])
    failed = move & ~accepted
    state["fails"] = torch.where(
        failed, state["fails"] + 1, torch.where(move, torch.zeros_like(state["fails"]), state["fails"])
    )
    if bool(failed.any()):  # reset memory after a failed search; a second failure stalls
        fm = failed.unsqueeze(-1)
        state["rho"] = torch.where(fm, torch.zeros_like(state["rho"]), state["rho"])
        state["gamma"] = torch.where(failed, torch.ones_like(state["gamma"]), state["gamma"])
    stalled = stalled | (state["fails"] >= 2)
    g_out = torch.where(move.unsqueeze(-1), g_new, g)
    f_out = torch.where(move, f_new, f)
    return new_theta, g_out, f_out, stalled


@dataclass(frozen=True)
class SGDSpec:
    """Minibatch SGD with (Nesterov) momentum and a step schedule, as torch.optim.SGD.

    v <- mu v + g; theta <- theta - lr (g + mu v) with ``nesterov``, theta - lr v otherwise.
    The learning rate is multiplied by ``gamma`` at each epoch in ``milestones``.
    """

    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    batch_size: int = 32
    epochs: int = 100
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    weight_decay: float = 0.0

    def validate(self) -> None:
        if not self.lr > 0:
            raise OptionError("sgd.lr", f"must be > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise OptionError("sgd.momentum", f"must be in [0, 1), got {self.momentum!r}")
        for name in ("batch_size", "epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise OptionError(f"sgd.{name}", f"must be an integer >= 1, got {v!r}")
        if not 0 < self.gamma <= 1:
            raise OptionError("sgd.gamma", f"must be in (0, 1], got {self.gamma!r}")
        if self.weight_decay < 0:
            raise OptionError("sgd.weight_decay", f"must be >= 0, got {self.weight_decay!r}")


def train_sgd(
    loss: Callable[..., torch.Tensor],
    theta0: torch.Tensor,
    X: torch.Tensor,
    Y: torch.Tensor,
    *run_args: torch.Tensor,
    spec: SGDSpec,
    generators: list[torch.Generator],
) -> torch.Tensor:
    """Minibatch SGD for every run at once. theta0 (S, P), X (S, N, ...), Y (S, N, ...);
    ``loss(theta, X_batch, Y_batch, *run_args)`` where ``run_args`` are per-run (S, ...)
    tensors passed whole (not minibatched), e.g. a run's choice of skip neurons.

    Run s shuffles its training set each epoch with ``generators[s]`` (drawn on the CPU),
    so a run's trajectory is the same alone or in a batch. The last incomplete batch of an
    epoch is dropped (``N // batch_size`` steps per epoch). Returns the final theta (S, P).
    """
    spec.validate()
    S, N = X.shape[0], X.shape[1]
    if len(generators) != S:
        raise OptionError("generators", "one generator per run is required")
    B = min(spec.batch_size, N)
    steps = N // B
    vgrad = vmap(torch.func.grad(loss))
    theta = theta0.clone()
    velocity = torch.zeros_like(theta)
    lr = spec.lr
    rows = torch.arange(S, device=X.device).unsqueeze(-1)  # (S, 1)
    for epoch in range(spec.epochs):
        if epoch in spec.milestones:
            lr *= spec.gamma
        perms = torch.stack([torch.randperm(N, generator=g) for g in generators]).to(X.device)  # (S, N)
        for b in range(steps):
            idx = perms[:, b * B : (b + 1) * B]  # (S, B)
            g = vgrad(theta, X[rows, idx], Y[rows, idx], *run_args)
            if spec.weight_decay:
                g = g + spec.weight_decay * theta
            velocity = spec.momentum * velocity + g
            theta = theta - lr * (g + spec.momentum * velocity if spec.nesterov else velocity)
    return theta

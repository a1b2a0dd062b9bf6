"""Batched gradient descent on the teacher-student objective under the protocol
(:func:`gradient_descent`).

Batching: the active runs advance in blocks of ``compact_every`` iterations (fewer when
the block's iterates would exceed ``_BLOCK_BUFFER_BYTES``, or the cap is nearer). Within
a block every run steps every iteration, with no per-iteration masks (the tail of a
chunk, a few slow runs, pays a fixed cost per iteration in kernel launches); the iterates
U_t = [W_t; V] and the g_t (and F_t) evaluated at them are kept. After the block each run
is put back at its first event (g <= tol, g > restart_grad_norm, non-finite g, or the
early-global rule), i.e. exactly where the one-run loop stops stepping, with the
iteration count and early-stop state it has there: the same result as freezing the run
at once (tests compare block lengths 1, 7 and 64 bit for bit). With at most
``_DEFER_MAX_RUNS`` active runs (where an iteration costs mostly its kernel launches), the
loop only evaluates G and steps, keeping G_t and the angles F needs per iterate, and g_t,
F_t are computed after the block for all its iterates at once (the same kernels per run:
the same bits, tested). Every kernel of the loop writes into buffers allocated once
(:class:`.objective.Workspace`). Events are then processed, and finished runs removed from
the batch (the only host synchronisation), so the cost follows the slow runs; a run's
trajectory never depends on the other runs of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from landscape_core.errors import OptionError
from landscape_core.teacher_student.objective import (
    STOPPING_NORMS,
    TWO_PI,
    Workspace,
    evaluate_into,
    gradient_weights,
    loss_from_angles,
    loss_weights,
    student_terms,
    teacher_term,
)
from landscape_core.teacher_student.protocol import TeacherStudentProtocol
from landscape_core.teacher_student.prover import ProofCandidates, ProofRecord, SpuriousProver, prove_outcomes

__all__ = ["DescentResult", "descend_with_proofs", "gradient_descent"]

#: memory for the iterates U_t = [W_t; V] of one block of the descent (sets the block length when batches
#: are large; 128 MiB: blocks of 64 up to ~1,300 runs at k = n = d = 10, as with W_t alone in 64 MiB)
_BLOCK_BUFFER_BYTES = 128 * 2**20
#: with at most this many active runs, a block's iterations only evaluate G and step (12 kernels
#: instead of 20 with F), keeping G_t and the norms and angles F needs per iterate; the stopping
#: norms and F of the whole block follow in 8 kernels. Above ~32 runs the kept angles (5.8 KB per
#: run and iterate) cost more in cache than the launches saved; measurements:
#: docs/benchmarks.md#deferred-evaluation-of-g-and-f
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
        return (
            self.nu[: B * m].view(block, A, m, 1),
            *(x[: B * n * m].view(block, A, n, m) for x in (self.cos, self.theta, self.sin)),
        )


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


class _Kernels:
    """The evaluations of one batch's descent, through the kernels of :mod:`.objective`:
    G = 2 pi dF/dW, the stopping norm g and, with ``early_stop_global``, F (from the
    gradient's angles with ``stop_when_proven`` too, else from the separate closed form)."""

    def __init__(self, protocol: TeacherStudentProtocol, n: int, k: int, d: int, *, dtype, device):
        self.protocol, self.n, self.k, self.d = protocol, n, k, d
        self.dtype, self.device = dtype, device
        self.weights = gradient_weights(n, k, dtype=dtype, device=device)  # (sign, offset), (n, n + k) each
        self.tol = float(protocol.grad_tol)
        self.restart_norm = math.inf if protocol.restart_grad_norm is None else float(protocol.restart_grad_norm)
        self.frobenius = protocol.stopping_norm == "frobenius"
        self.early_stop = protocol.early_stop_global
        self.fused_loss = protocol.early_stop_global and protocol.stop_when_proven  # F from the gradient's angles
        self.loss_weight = loss_weights(n, k, dtype=dtype, device=device) if self.fused_loss else None
        self.rise = 1.0 + protocol.monotone_rtol

    def workspace(self, R: int) -> Workspace:
        """Buffers of one evaluation for R runs."""
        return Workspace(R, self.n, self.k, self.d, dtype=self.dtype, device=self.device, loss=self.fused_loss)

    def gradient_and_loss(self, U, teacher, ws: Workspace, G, loss_out) -> None:
        """G = 2 pi dF/dW at U = [W; V] (R, n + k, d) written into ``G`` (R, n, d) and, with
        ``early_stop_global``, F into ``loss_out`` (R,) (``teacher``: F's constant part (R,)),
        through the buffers ``ws``."""
        if self.fused_loss:
            evaluate_into(U, ws, self.weights, G, self.loss_weight, loss_out)
            torch.add(loss_out, teacher, out=loss_out)  # F without recomputing the constant
            return
        evaluate_into(U, ws, self.weights, G)
        if self.early_stop:
            self.separate_loss(U, teacher, loss_out)

    def separate_loss(self, U, teacher, loss_out) -> None:
        """F at U = [W; V] (R, n + k, d) into ``loss_out`` (R,) from the separate closed form
        (``early_stop_global`` without the fused F), on contiguous copies of W and V: the bits
        of the code before the fused F."""
        n = self.n
        torch.add(student_terms(U[:, :n].contiguous(), U[:, n:].contiguous()), teacher, out=loss_out)

    def stopping_norm(self, G, out=None, neuron_norms=None):
        """The stopping quantity g (R,) of G, written into ``out`` when given (``neuron_norms``
        (R, n): a buffer for the per-neuron norms)."""
        if self.frobenius:  # ||dF/dW||_F
            return torch.div(torch.linalg.vector_norm(G, dim=(-2, -1)), TWO_PI, out=out)
        return torch.amax(torch.linalg.vector_norm(G, dim=-1, out=neuron_norms), dim=-1, out=out)  # max_i ||G_i||

    def evaluate(self, runs: _ActiveRuns):
        """One evaluation at the active runs' points: G (A, n, d), g (A,) and the early-stop
        state there (early (A,) or None, mono, F)."""
        W = runs.W
        G = torch.empty_like(W)
        loss = W.new_empty((W.shape[0],)) if self.early_stop else None
        self.gradient_and_loss(torch.cat([W, runs.V], dim=-2), runs.teacher, self.workspace(W.shape[0]), G, loss)
        g = self.stopping_norm(G)
        if loss is None:
            return G, g, None, runs.mono, runs.prev_loss
        mono = runs.mono & (loss <= runs.prev_loss * self.rise)
        early = mono & (loss < self.protocol.bad_loss_threshold)
        return G, g, early, mono, loss


@dataclass
class _ActiveRuns:
    """The runs still descending (A of them); ``base`` counts restart iterations, ``moved``
    gradient steps."""

    index: torch.Tensor  # position of each run in the batch (A,)
    W: torch.Tensor  # current points (A, n, d)
    W_init: torch.Tensor  # initial points, for restarts (A, n, d)
    V: torch.Tensor  # teachers (A, k, d)
    lr: torch.Tensor  # the step on G, step / (2 pi) (A,)
    moved: torch.Tensor  # (A,) int64
    base: torch.Tensor  # (A,) int64
    restarts: torch.Tensor  # (A,) int64
    mono: torch.Tensor  # F never increased so far (A,) bool
    prev_loss: torch.Tensor  # F at the last evaluation (A,)
    next_check: torch.Tensor  # stop_when_proven: iteration of each run's next check (A,) int64
    teacher: torch.Tensor | None  # F's constant part 1/2 sum f(v_i, v_j) with early_stop_global (A,)

    def keep(self, mask: torch.Tensor) -> _ActiveRuns:
        """The runs where ``mask`` (A,) is true."""
        kept: dict[str, Any] = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[mask] for f in fields(self)
        }
        return _ActiveRuns(**kept)


class _Outputs:
    """The per-run results, filled as runs finish."""

    def __init__(self, W0: torch.Tensor, step: float):
        R, dtype, device = W0.shape[0], W0.dtype, W0.device
        self.W = W0.clone()
        self.g = torch.full((R,), float("nan"), dtype=dtype, device=device)
        self.it = torch.zeros(R, dtype=torch.int64, device=device)
        self.restarts = torch.zeros(R, dtype=torch.int64, device=device)
        self.step = torch.full((R,), step, dtype=dtype, device=device)
        self.conv = torch.zeros(R, dtype=torch.bool, device=device)
        self.div = torch.zeros(R, dtype=torch.bool, device=device)
        self.early = torch.zeros(R, dtype=torch.bool, device=device)
        self.mono = torch.ones(R, dtype=torch.bool, device=device)
        self.proven = torch.full((R,), -1, dtype=torch.int64, device=device)

    def record(self, runs: _ActiveRuns, finished, *, g, it, conv, div, early, proven) -> None:
        """Store the runs ``finished`` (A,) bool of ``runs`` (``proven`` (A,) bool or None)."""
        j = runs.index[finished]
        self.W[j] = runs.W[finished]
        self.g[j] = g[finished]
        self.it[j] = it[finished]
        self.restarts[j] = runs.restarts[finished]
        self.step[j] = runs.lr[finished] * TWO_PI
        self.conv[j] = conv[finished]
        self.div[j] = div[finished]
        self.early[j] = early[finished]
        self.mono[j] = runs.mono[finished]
        if proven is not None:
            self.proven[j] = torch.where(proven[finished], it[finished], torch.full_like(it[finished], -1))

    def result(self) -> DescentResult:
        return DescentResult(
            weights=self.W,
            grad_norm=self.g,
            iterations=self.it,
            restarts=self.restarts,
            final_step=self.step,
            converged=self.conv,
            diverged=self.div,
            stopped_early=self.early,
            monotone=self.mono,
            proven=self.proven,
        )


class _BlockStorage:
    """Buffers reused by every block: one evaluation's workspace for the whole batch (blocks
    use its first A runs), the block iterates (``slots``: slot t holds U_t = [W_t; V],
    contiguous (A, n + k, d), so an iteration evaluates at U_t and steps into W_{t+1}, a
    view of the next slot, with no copy; made again only when fewer runs allow longer
    blocks, and a shared teacher's rows are written once), and the buffers of the deferred
    g and F."""

    def __init__(self, kernels: _Kernels, W0: torch.Tensor, V: torch.Tensor):
        self.kernels = kernels
        self.shared_teacher = bool((V == V[:1]).all())  # one teacher for every run (as the sweeps make them)
        self.ws, self.G = kernels.workspace(W0.shape[0]), W0.new_empty(W0.shape)
        self.slots: torch.Tensor | None = None
        self.deferred: _DeferredBuffers | None = None

    def iterates(self, runs: _ActiveRuns, *, longest: int, block: int) -> torch.Tensor:
        """The block's iterates (block + 1, A, n + k, d), U_0 = [W; V] filled in."""
        n, A = self.kernels.n, runs.W.shape[0]
        if self.slots is None or self.slots.shape[0] < longest + 1:
            self.slots = runs.W.new_empty((longest + 1, A, n + self.kernels.k, self.kernels.d))
            if self.shared_teacher:
                self.slots[:, :, n:] = runs.V[:1]
        iterates = self.slots[: block + 1, :A]  # (block + 1, A, n + k, d)
        if not self.shared_teacher:
            iterates[:, :, n:] = runs.V.unsqueeze(0)
        iterates[0, :, :n] = runs.W
        return iterates

    def deferred_buffers(self, A: int) -> _DeferredBuffers:
        """The deferred evaluation's buffers; the first deferred block has the most runs: no
        later block needs more room."""
        if self.deferred is None:
            k = self.kernels
            self.deferred = _DeferredBuffers(
                k.protocol.compact_every * A, k.n, k.k, k.d, dtype=k.dtype, device=k.device, angles=k.fused_loss
            )
        return self.deferred


def _step_block(storage: _BlockStorage, runs: _ActiveRuns, iterates: torch.Tensor, block: int):
    """Every run steps every iteration of the block (no per-iteration masks), from U_0 in
    ``iterates``; returns the stopping norms g_t (block, A) and, with ``early_stop_global``,
    F_t (block, A) (else None) evaluated at the iterates U_0 .. U_{block - 1}."""
    kernels = storage.kernels
    n, A = kernels.n, runs.W.shape[0]
    Us = iterates.unbind(0)
    Ws = [U[:, :n] for U in Us]
    g_seen = runs.W.new_empty((block, A))
    loss_seen = runs.W.new_empty((block, A)) if kernels.early_stop else None
    neg_lr = (-runs.lr)[:, None, None]
    ws, G = storage.ws.head(A), storage.G[:A]
    if A <= _DEFER_MAX_RUNS:
        _step_block_deferred(storage, runs, iterates, Us, Ws, neg_lr, ws, g_seen, loss_seen)
        return g_seen, loss_seen
    gs = g_seen.unbind(0)
    ls = loss_seen.unbind(0) if loss_seen is not None else [None] * block
    for t in range(block):
        kernels.gradient_and_loss(Us[t], runs.teacher, ws, G, ls[t])
        kernels.stopping_norm(G, out=gs[t], neuron_norms=ws.neuron_norms)
        torch.addcmul(Ws[t], G, neg_lr, out=Ws[t + 1])
    return g_seen, loss_seen


def _step_block_deferred(
    storage: _BlockStorage, runs: _ActiveRuns, iterates, Us, Ws, neg_lr, ws: Workspace, g_seen, loss_seen
) -> None:
    """:func:`_step_block` for up to ``_DEFER_MAX_RUNS`` runs (where an iteration's cost is
    mostly kernel launches): each iteration only evaluates G and steps, G_t (and the norms
    and angles F needs) kept per iterate; g_t and F_t come afterwards from all of the
    block's at once, the same kernels per run, so the same bits (tests compare with the
    in-loop evaluation)."""
    kernels = storage.kernels
    n, (block, A), m, d = kernels.n, g_seen.shape, kernels.n + kernels.k, kernels.d
    B = block * A
    teacher = runs.teacher  # F's constant part (A,), with early_stop_global
    deferred = storage.deferred_buffers(A)
    G_all = deferred.G[: B * n * d].view(block, A, n, d)
    Gs = G_all.unbind(0)
    if kernels.fused_loss:
        angle_all = deferred.angles(B, block, A)  # nu, cos, theta, sin, each (block, A, ...)
        angle_t = list(zip(*(x.unbind(0) for x in angle_all)))
        for t in range(block):
            evaluate_into(Us[t], ws, kernels.weights, Gs[t], angles=angle_t[t])
            torch.addcmul(Ws[t], Gs[t], neg_lr, out=Ws[t + 1])
        nu_all, cos_all, theta_all, sin_all = (x.view(B, *x.shape[2:]) for x in angle_all)
        loss_from_angles(
            nu_all[:, :n, 0].unsqueeze(-2),
            nu_all,
            cos_all,
            theta_all,
            sin_all,
            storage.ws.pi,
            kernels.loss_weight,
            loss_seen.view(-1),
            pi_minus_theta=theta_all,
            pair=sin_all,
            weighted_nu=deferred.weighted_nu[:B],
            per_row=deferred.per_row[:B],
        )
        assert teacher is not None and loss_seen is not None
        torch.add(loss_seen.view(-1), teacher.repeat(block), out=loss_seen.view(-1))
    else:
        for t in range(block):
            evaluate_into(Us[t], ws, kernels.weights, Gs[t])
            torch.addcmul(Ws[t], Gs[t], neg_lr, out=Ws[t + 1])
        if teacher is not None and loss_seen is not None:  # early_stop_global: F as in the loop, all iterates at once
            kernels.separate_loss(iterates[:block].reshape(B, m, d), teacher.repeat(block), loss_seen.view(-1))
    kernels.stopping_norm(G_all.view(B, n, d), out=g_seen.view(-1))


def _advance_block(storage: _BlockStorage, runs: _ActiveRuns) -> None:
    """One block: every active run steps, then is put back at its first event (the iterate
    where the one-run loop stops or restarts), with the iteration count and early-stop
    state it has there (``runs`` updated)."""
    kernels, p = storage.kernels, storage.kernels.protocol
    A, n, m, d = runs.W.shape[0], kernels.n, kernels.n + kernels.k, kernels.d
    room = int((p.max_iterations - (runs.base + runs.moved)).min())  # steps before the cap (one sync)
    # The block keeps every iterate: at most ~_BLOCK_BUFFER_BYTES of them.
    longest = max(1, min(p.compact_every, _BLOCK_BUFFER_BYTES // max(1, A * m * d * runs.W.element_size()) - 1))
    block = max(1, min(longest, room))
    iterates = storage.iterates(runs, longest=longest, block=block)
    g_seen, loss_seen = _step_block(storage, runs, iterates, block)
    event = ~((g_seen > kernels.tol) & (g_seen <= kernels.restart_norm))  # (block, A); NaN: an event
    if kernels.early_stop:
        before = torch.cat([runs.prev_loss[None], loss_seen[:-1]])  # F at the previous iterate
        mono_seen = runs.mono[None] & (torch.cumprod(loss_seen <= before * kernels.rise, dim=0) > 0)  # (block, A)
        event = event | (mono_seen & (loss_seen < p.bad_loss_threshold))
    first = torch.where(event.any(0), event.to(torch.uint8).argmax(0), block)  # (A,) steps taken
    index = torch.arange(A, device=kernels.device)
    runs.W = iterates[first, index, :n]  # (A, n, d)
    runs.moved = runs.moved + first
    if kernels.early_stop:
        last = first.clamp(max=block - 1)  # the last evaluation the one-run loop made
        runs.mono, runs.prev_loss = mono_seen[last, index], loss_seen[last, index]


def _process_events(
    kernels: _Kernels, runs: _ActiveRuns, outputs: _Outputs, prover: SpuriousProver | None
) -> _ActiveRuns:
    """Events at the current points (one more evaluation; frozen runs give the same g), in the
    one-run loop's order: diverged, converged, early-global, capped, restart; then the proof
    checks; finished runs are recorded and removed. Returns the runs still active."""
    p = kernels.protocol
    G, g, early_now, runs.mono, runs.prev_loss = kernels.evaluate(runs)
    it = runs.base + runs.moved
    finite = torch.isfinite(g)
    div = ~finite | (runs.restarts > p.max_restarts)
    conv = ~div & (g <= kernels.tol)
    early = (~div & ~conv & early_now) if early_now is not None else torch.zeros_like(conv)
    capped = ~div & ~conv & ~early & (it >= p.max_iterations)
    restart = ~div & ~conv & ~early & ~capped & (g > kernels.restart_norm)
    finished = div | conv | early | capped
    if bool(restart.any()):
        runs.W = torch.where(restart[:, None, None], runs.W_init, runs.W)
        runs.lr = torch.where(restart, runs.lr * 0.5, runs.lr)
        runs.restarts = runs.restarts + restart
        runs.base = runs.base + restart
    proven = None
    if prover is not None:
        candidates = ~finished & ~restart & (it >= runs.next_check)
        proven = prove_outcomes(
            prover,
            candidates,
            ProofCandidates(
                index=runs.index,
                weights=runs.W,
                teachers=runs.V,
                scaled_grad=G,
                stopping_norms=g,
                iterations=it,
                step_on_grad=runs.lr,
                next_check=runs.next_check,
            ),
        )
        if bool(proven.any()):
            conv = conv | proven
            finished = finished | proven
    if not bool(finished.any()):
        return runs
    outputs.record(runs, finished, g=g, it=it, conv=conv, div=div, early=early, proven=proven)
    return runs.keep(~finished)


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

    Proven outcomes (``stop_when_proven``, off by default): at each compaction, candidate
    runs are checked by a :class:`.prover.SpuriousProver` (:func:`.prover.prove_outcomes`);
    a run whose outcome is proven ``spurious`` stops there as converged, its final point the
    certified ball's Newton-polished centre in the run's own orientation, and ``proven``
    records the iteration. Runs that cannot be proven descend on under the full protocol.
    With ``early_stop_global`` too, F is taken from the gradient's angles
    (:func:`.objective.fused_gradient_and_loss`). Off, no proof code runs.

    W0: (R, n, d), V: (R, k, d); batching (blocks, deferred evaluation): the module
    docstring. Inputs are not modified.
    """
    return descend_with_proofs(W0, V, protocol)[0]


@torch.inference_mode()
def descend_with_proofs(
    W0: torch.Tensor, V: torch.Tensor, protocol: TeacherStudentProtocol
) -> tuple[DescentResult, dict[int, ProofRecord]]:
    """:func:`gradient_descent`, and what each proven run's proof rests on: {position in the
    batch: :class:`.prover.ProofRecord`} (empty without ``stop_when_proven``)."""
    R, n, d = W0.shape
    k = V.shape[-2]
    dtype, device = W0.dtype, W0.device
    p = protocol
    if p.stopping_norm not in STOPPING_NORMS:
        raise OptionError("stopping_norm", f"{p.stopping_norm!r} is not one of {', '.join(STOPPING_NORMS)}")
    kernels = _Kernels(p, n, k, d, dtype=dtype, device=device)
    step = p.effective_step(k)
    outputs = _Outputs(W0, step)
    const_teacher = teacher_term(V) if p.early_stop_global else None
    runs = _ActiveRuns(
        index=torch.arange(R, device=device),
        W=W0.clone(),
        W_init=W0,
        V=V,
        lr=torch.full((R,), step / TWO_PI, dtype=dtype, device=device),  # step on G
        moved=torch.zeros(R, dtype=torch.int64, device=device),
        base=torch.zeros(R, dtype=torch.int64, device=device),
        restarts=torch.zeros(R, dtype=torch.int64, device=device),
        mono=torch.ones(R, dtype=torch.bool, device=device),
        prev_loss=torch.full((R,), float("inf"), dtype=dtype, device=device),
        next_check=torch.zeros(R, dtype=torch.int64, device=device),
        teacher=const_teacher,
    )
    prover = SpuriousProver(p, k) if p.stop_when_proven else None
    storage = _BlockStorage(kernels, W0, V)
    while runs.index.numel() > 0:
        _advance_block(storage, runs)
        runs = _process_events(kernels, runs, outputs, prover)
    return outputs.result(), ({} if prover is None else dict(prover.proofs))

"""One (k, n) cell of the teacher-student protocol as one batch: initial points, descent,
Hessian classification and one record per seed (:func:`run_teacher_student`)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict

import torch

from landscape_core.errors import OptionError
from landscape_core.teacher_student.descent import descend_with_proofs
from landscape_core.teacher_student.objective import hessian_extreme_eigenvalues, population_loss
from landscape_core.teacher_student.protocol import TeacherStudentProtocol, classify, initial_points
from landscape_core.teacher_student.prover import PROOF_COLUMNS

__all__ = ["hessian_chunk_size", "run_teacher_student"]

#: memory for the Hessians classified at once (the analytic blocks and their intermediates take
#: ~80 (n d)^2 bytes per run): 64 runs at a time up to n d = 1024 (k = n = 32), one at a time from
#: n d ~ 10,000 (k = n = 100, ~8 GB for that run)
_HESSIAN_CHUNK_BYTES = 8 * 1024**3


def hessian_chunk_size(n: int, d: int) -> int:
    """Runs whose Hessians are built and decomposed at once: 64, fewer where their ~80 (n d)^2
    bytes each would exceed ``_HESSIAN_CHUNK_BYTES`` (never fewer than 1). Chunking changes no
    value (each run's eigenvalues come from its own matrix)."""
    return max(1, min(64, _HESSIAN_CHUNK_BYTES // (80 * (n * d) ** 2)))


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
    hessian_chunk: int | None = None,
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
    None otherwise, and what that proof rests on, ``proven_contraction``, ``proven_step_curvature``,
    ``proven_min_eig_lo``, ``proven_steps_left``, ``proven_distance``: :class:`.prover.ProofRecord`,
    None otherwise), every protocol
    value used (``step`` is the effective step, e.g. 5 / k for ``step_times_k=5``; also
    ``init_variance_value``, the effective initial variance of each coordinate), and
    ``final_weights`` (the final W flattened row-major, n * d floats) when ``keep_weights``.
    ``wall_s`` is the batch's wall time divided by the number of runs. ``hessian_chunk``: runs
    classified at once (None: :func:`hessian_chunk_size`, 64 up to k = n = 32).
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
    result, proofs = descend_with_proofs(W0, V, protocol)
    final_loss = population_loss(result.weights, V)  # (R,)
    ok = torch.isfinite(final_loss) & torch.isfinite(result.weights).all(dim=(-2, -1))
    min_eig = torch.full_like(final_loss, float("nan"))
    max_eig = torch.full_like(final_loss, float("nan"))
    if bool(ok.any()):
        chunk = hessian_chunk_size(n, protocol.input_dim(k)) if hessian_chunk is None else hessian_chunk
        lo, hi = hessian_extreme_eigenvalues(result.weights[ok], V[ok], chunk_size=chunk)
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
    it_c, rs_c = cpu(result.iterations), cpu(result.restarts)
    st_c, early_c = cpu(result.final_step), cpu(result.stopped_early)
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
            **(proofs[i].columns() if i in proofs else dict.fromkeys(PROOF_COLUMNS)),
            "k": int(k),
            "n": int(n),
            **{key: values[key] for key in values if key not in ("compact_every",)},
            "wall_s": wall / len(seeds),
            "device": str(dev),
            "final_weights": W_c[i].reshape(-1).tolist() if keep_weights else None,
        }
        records.append(rec)
    return records

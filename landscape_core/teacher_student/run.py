"""One (k, n) cell of the teacher-student protocol as one batch: initial points, descent,
Hessian classification and one record per seed (:func:`run_teacher_student`)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict

import torch

from landscape_core.errors import OptionError
from landscape_core.teacher_student.descent import gradient_descent
from landscape_core.teacher_student.objective import hessian_extreme_eigenvalues, population_loss
from landscape_core.teacher_student.protocol import TeacherStudentProtocol, classify, initial_points

__all__ = ["run_teacher_student"]


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
            "k": int(k),
            "n": int(n),
            **{key: values[key] for key in values if key not in ("compact_every",)},
            "wall_s": wall / len(seeds),
            "device": str(dev),
            "final_weights": W_c[i].reshape(-1).tolist() if keep_weights else None,
        }
        records.append(rec)
    return records

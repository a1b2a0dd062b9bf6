"""The bits of every teacher-student descent mode, pinned: sha256 digests of (seed, status,
iterations, proven iteration, final weights, final loss, stopping norm) over fixed seeds,
recorded on the code before the split of ``teacher_student`` into a package (issue 23) and
unchanged by it. A refactor of the descent that changes one floating-point operation, or
its order, changes a digest here."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import fields

import pytest
import torch

from landscape_core.teacher_student import (
    DescentResult,
    TeacherStudentProtocol,
    gradient_descent,
    initial_points,
    run_teacher_student,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_2021 = dict(step_times_k=5, init_variance="1/k", stopping_norm="frobenius", grad_tol=1e-12, restart_grad_norm=None)

#: (k, n, seeds, options) of each mode of run_teacher_student
MODES = {
    "published": (8, 8, range(40), {}),  # safran_shamir_2018 defaults; 40 runs: the in-loop g and F, then deferred
    "early_stop_global": (8, 8, range(40), {"early_stop_global": True}),
    "stop_when_proven": (8, 8, range(40), {"stop_when_proven": True}),
    "proven_and_early": (8, 8, range(40), {"early_stop_global": True, "stop_when_proven": True}),  # fused F
    "protocol_2021": (8, 8, range(40), _2021),
    "protocol_2021_proven": (8, 8, range(40), {**_2021, "stop_when_proven": True}),
    "orthonormal_teacher": (8, 8, range(40), {"teacher": "orthonormal", "d": 9}),  # a teacher per run
    "restarts": (6, 6, range(20), {"step": 40.0, "max_iterations": 3000}),
    "overparameterised_early": (6, 7, range(20), {"early_stop_global": True, "max_iterations": 20000}),
}

DIGESTS = {
    "early_stop_global": "d3c98c85036d3aa2885b1cb4a556e312885aadd7c5826a76c340c45a75871133",
    "orthonormal_teacher": "c65a3fcc4aed8af6d64df2ad046c6e7a773f31a9fba4846b38475e2ed98e4cf6",
    "overparameterised_early": "2fa65f07e14438ad5574a27101ebdf707cd18718ca1805907a472311957fd7d6",
    "protocol_2021": "3b888da7a46190059f6a7768104aaf44fc36d865ab817ba5f38eeb94ec95974b",
    "protocol_2021_proven": "50111ef43a827badd751aa67fd0e307ec88b2c99e663364c380e028f7700cfe9",
    "proven_and_early": "20d1f9a897bf17da652014d03924e3cf57ea556d3e125dfad6ec7e9260a20293",
    "published": "9ae241b9cdfc90ec53b1f0e5f9f9fb227de35fa967584715d1a2e6abfbab2e4d",
    "restarts": "a2560d62df7fb8b001a5b26abe3324b6ba36706285eb4cb0e17833028aa0a74d",
    "stop_when_proven": "244eedeeade70310a2544312c5b3be4040bc0b7969ea25624478e3f681af945a",
}

#: gradient_descent with one random orthonormal teacher per run (not run_teacher_student's)
PER_RUN_TEACHERS = {
    "proven_and_early": "4593d276b9669c19e2573aff510528b9a53813f5ac5e32fdbec798245790c1a7",
    "published": "d9ea22972590898de016e57aad513b00f6575919f0041a57813f5a53b588a79e",
}


def _digest_records(records: list[dict]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(repr((r["seed"], r["status"], r["iterations"], r["proven_iteration"])).encode())
        h.update(struct.pack(f"<{len(r['final_weights'])}d", *r["final_weights"]))
        h.update(struct.pack("<2d", r["final_loss"], r["grad_norm"]))
    return h.hexdigest()


def _digest_descent(result) -> str:
    h = hashlib.sha256()
    for name in (field.name for field in fields(DescentResult)):  # every field, in declaration order
        h.update(getattr(result, name).contiguous().numpy().tobytes())
    return h.hexdigest()


def _per_run_teacher_descent(options: dict):
    k, runs = 6, 12
    p = TeacherStudentProtocol(max_iterations=6000, **options)
    W0, _ = initial_points(k, k, range(runs), p)
    g = torch.Generator().manual_seed(3)
    V = torch.linalg.qr(torch.randn(runs, k, k, generator=g, dtype=torch.float64))[0].transpose(-1, -2).contiguous()
    return gradient_descent(W0, V, p)


PER_RUN_OPTIONS = {"published": {}, "proven_and_early": {"early_stop_global": True, "stop_when_proven": True}}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_descent_digest(mode):
    k, n, seeds, options = MODES[mode]
    records = run_teacher_student(k, n, seeds, **options)
    assert _digest_records(records) == DIGESTS[mode]


@pytest.mark.parametrize("mode", sorted(PER_RUN_OPTIONS))
def test_per_run_teacher_digest(mode):
    assert _digest_descent(_per_run_teacher_descent(PER_RUN_OPTIONS[mode])) == PER_RUN_TEACHERS[mode]


if __name__ == "__main__":  # prints the literals (run on the code whose bits are to be pinned)
    for mode in sorted(MODES):
        k, n, seeds, options = MODES[mode]
        print(f"    {mode!r}: {_digest_records(run_teacher_student(k, n, seeds, **options))!r},")
    for mode in sorted(PER_RUN_OPTIONS):
        print(f"    {mode!r}: {_digest_descent(_per_run_teacher_descent(PER_RUN_OPTIONS[mode]))!r},")

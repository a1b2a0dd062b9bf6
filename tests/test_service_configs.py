"""Every shipped config is smoke-tested: each teacher-student sweep runs its first cell with a
tiny budget (in-process, no Ray), and every resources / tracking / cluster option composes
and validates (running them needs a GPU, an MLflow server or a cluster, which CI has not)."""

from __future__ import annotations

import pytest

from ray_jobs.config import compose_config
from ray_jobs.validate import validate
from tests.test_service_width_threshold import run_first_cell


@pytest.mark.parametrize("sweep", ["smoke", "safran_shamir_table1", "safran_shamir_table2"])
def test_teacher_student_sweeps_run_a_cell_with_a_tiny_budget(sweep):
    records = run_first_cell(f"sweep={sweep}", "protocol.max_iterations=300", seeds=(0, 1, 2))
    assert len(records) == 3 and all(r["iterations"] <= 300 for r in records)
    assert all(r["k"] == 6 and r["step"] == 0.1 and r["grad_tol"] == 1e-9 for r in records)
    early = compose_config([f"sweep={sweep}"]).protocol.early_stop_global
    assert all(r["early_stop_global"] == early for r in records)


@pytest.mark.parametrize(
    "option,check",
    [
        ("resources=gpu", lambda cfg: cfg.resources.num_gpus == 0.25),
        ("resources=cpu", lambda cfg: cfg.resources.num_gpus == 0),
        ("tracking=server", lambda cfg: cfg.tracking.uri.startswith("http://")),
        ("tracking=none", lambda cfg: not cfg.tracking.enabled),
        ("tracking=sqlite", lambda cfg: cfg.tracking.enabled),
        ("cluster=existing", lambda cfg: cfg.cluster.address == "auto"),
        ("cluster=local", lambda cfg: cfg.cluster.address is None),
    ],
)
def test_every_resources_tracking_cluster_option_composes_and_validates(option, check):
    cfg = compose_config(["sweep=smoke", option])
    experiment, cells = validate(cfg)
    assert experiment.name == "teacher_student" and cells
    assert check(cfg)

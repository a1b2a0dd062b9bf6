"""Every shipped config is smoke-tested: each teacher-student sweep runs its first cell with a
tiny budget (in-process, no Ray), and every resources / tracking / cluster option composes
and validates (running them needs a GPU, an MLflow server or a cluster, which CI has not)."""

from __future__ import annotations

import pytest

from omegaconf import OmegaConf

from ray_jobs.config import SWEEPS_DIR, available_searches, available_sweeps, compose_config
from ray_jobs.validate import validate
from tests.test_service_width_threshold import run_first_cell


TEACHER_STUDENT_SWEEPS = [name for name in available_sweeps() if name not in available_searches()
                          and OmegaConf.load(SWEEPS_DIR / f"{name}.yaml").get("defaults", [{}])[0].get("override /experiment")
                          == "teacher_student"]


def test_every_teacher_student_sweep_is_listed():
    assert {"smoke", "safran_shamir_table1", "safran_shamir_table2", "teacher_student_threshold_grid"} <= set(TEACHER_STUDENT_SWEEPS)


@pytest.mark.parametrize("sweep", TEACHER_STUDENT_SWEEPS)
def test_teacher_student_sweeps_run_a_cell_with_a_tiny_budget(sweep):
    records = run_first_cell(f"sweep={sweep}", "protocol.max_iterations=300", seeds=(0, 1, 2))
    assert len(records) == 3 and all(r["iterations"] <= 300 for r in records)
    first_k = compose_config([f"sweep={sweep}"]).sweep.grid.k[0]
    assert all(r["k"] == first_k and r["step"] == 0.1 and r["grad_tol"] == 1e-9 for r in records)
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

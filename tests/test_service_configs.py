"""Every shipped config is smoke-tested: every sweep runs its first cell with a tiny budget
(tests/test_sweeps.py, for every experiment); here, every teacher-student sweep keeps the
published protocol values, and every resources / tracking / cluster option composes and
validates (running them needs a GPU, an MLflow server or a cluster, which CI has not)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from ray_jobs.config import SWEEPS_DIR, available_searches, available_sweeps, compose_config
from ray_jobs.validate import validate

TEACHER_STUDENT_SWEEPS = [
    name
    for name in available_sweeps()
    if name not in available_searches()
    and OmegaConf.load(SWEEPS_DIR / f"{name}.yaml").get("defaults", [{}])[0].get("override /experiment")
    == "teacher_student"
]


def test_every_teacher_student_sweep_is_listed():
    assert {
        "smoke",
        "safran_shamir_table1",
        "safran_shamir_table2",
        "teacher_student_threshold_grid",
        "sys2021_global_rates",
    } <= set(TEACHER_STUDENT_SWEEPS)


#: the published step and tolerance of each protocol file (protocols.md section 1 and "The
#: 2021 protocol"): 2018 step 0.1, max_i ||2 pi dF/dw_i|| <= 1e-9; 2021 step 5 / k,
#: ||dF/dW||_F <= 1e-12, no restart rule
PUBLISHED = {
    "safran_shamir_2018": {"step": 0.1, "grad_tol": 1e-9, "restart_grad_norm": 1e4},
    "safran_yehudai_shamir_2021": {
        "step": None,
        "step_times_k": 5,
        "grad_tol": 1e-12,
        "stopping_norm": "frobenius",
        "init_variance": "1/k",
        "restart_grad_norm": None,
    },
}


@pytest.mark.parametrize("sweep", TEACHER_STUDENT_SWEEPS)
def test_teacher_student_sweeps_keep_the_published_step_and_tolerance(sweep):
    """What the old per-sweep run checked of its rows, now on the cells (the generic test checks
    that rows carry their cell's values)."""
    cfg = compose_config([f"sweep={sweep}", "protocol.max_iterations=300"])
    _, cells = validate(cfg)
    first_k = compose_config([f"sweep={sweep}"]).sweep.grid.k[0]
    params = cells[0]
    protocol = next(
        entry["override /protocol"]
        for entry in OmegaConf.load(SWEEPS_DIR / f"{sweep}.yaml").defaults
        if "override /protocol" in entry
    )
    assert params["k"] == first_k
    assert {key: params.get(key) for key in PUBLISHED[protocol]} == PUBLISHED[protocol]
    assert params["max_iterations"] == 300
    assert params["early_stop_global"] == compose_config([f"sweep={sweep}"]).protocol.early_stop_global


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

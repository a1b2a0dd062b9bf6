"""Helpers shared by the service tests of the experiments (not fixtures: those are in conftest.py).

- :func:`plan_for` / :func:`run_first_cell`: validate and plan a config; run its first cell
  in this process (no Ray);
- :data:`SMOKE_CASES`: per registered experiment, a smoke sweep small enough for the tests
  and what it must produce (cells, seeds, units; the failing-unit variant and its `error`
  rows), read by the contract test (tests/test_service_contract.py);
- :func:`smoke_run`: that sweep run once per test session and shared by every test file
  that asks for it (the contract test and the experiment's own service tests), so that
  each smoke sweep runs once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import binomtest

from ray_jobs.config import compose_config
from ray_jobs.experiments.base import RUN_STATUSES
from ray_jobs.plan import plan_sweep
from ray_jobs.store import row_schema
from ray_jobs.sweep import SweepResult, run_sweep
from ray_jobs.validate import validate
from tests.conftest import TINY_CELLS, TINY_SEEDS, TINY_SWEEP, TINY_UNITS


def plan_for(*overrides: str):
    """(experiment, plan) of the config composed from ``overrides``."""
    cfg = compose_config(list(overrides))
    experiment, cells = validate(cfg)
    return experiment, plan_sweep(cfg, experiment.name, cells)


def run_first_cell(*overrides: str, seeds=(0, 1)) -> list[dict]:
    """Validate, plan, and run the first cell's ``seeds`` in this process (no Ray)."""
    experiment, plan = plan_for(*overrides)
    records = experiment.run(plan.cells[0].params, list(seeds), "cpu")
    schema = set(row_schema(experiment.columns).names)
    for record in records:
        assert record["status"] in RUN_STATUSES
        assert set(record) <= schema, sorted(set(record) - schema)  # every key is a declared column
    return records


def rows_of(results: Path, sweep: str) -> pd.DataFrame:
    """Every row of ``sweep`` under ``results``, read as a user would: pandas over the Parquet directory."""
    return pd.read_parquet(results / sweep / "runs")


def wilson(count: int, trials: int, confidence: float = 0.99) -> tuple[float, float]:
    """The Wilson score interval of ``count`` successes in ``trials`` (scipy, independent of the report's)."""
    interval = binomtest(count, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return interval.low, interval.high


@dataclass(frozen=True)
class FailingCase:
    """A smoke-sweep variant with ``experiment.fail_on_seeds``: ``overrides`` added to the
    smoke sweep's; one failed unit whose ``seeds`` become `error` rows carrying the cell's
    values ``cell`` (column -> value); the report's only cell then counts ``runs`` runs
    that ran and ``errors`` errors."""

    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    cell: dict[str, Any]
    runs: int
    errors: int


@dataclass(frozen=True)
class SmokeCase:
    """The smoke sweep of one experiment: ``overrides`` (a shipped sweep, cut where needed),
    its name, and what it must plan: ``cells`` x ``seeds`` runs in ``units`` units."""

    overrides: tuple[str, ...]
    sweep: str
    cells: int
    seeds: int
    units: int
    failing: FailingCase


#: what the failing-unit variants need not do (they check rows and table.csv): MLflow, figures
QUIET = ("tracking=none", "report.figure=false")

#: per registered experiment (the contract test skips, naming it, one that has none here)
SMOKE_CASES: dict[str, SmokeCase] = {
    # tests/conftest.py's TINY_SWEEP (sweeps/smoke.yaml cut: k = 2, 3; n = k, k + 1; 6 seeds, 3 per unit;
    # 4000 iterations), shared with tests/test_service_e2e.py
    "teacher_student": SmokeCase(
        overrides=tuple(TINY_SWEEP),
        sweep="smoke",
        cells=TINY_CELLS,
        seeds=TINY_SEEDS,
        units=TINY_UNITS,
        failing=FailingCase(
            ("experiment.fail_on_seeds=[4]", "sweep.grid.k=[3]", "sweep.grid.n_minus_k=[0]", *QUIET),
            seeds=(3, 4, 5),
            cell={"k": 3, "n": 3},
            runs=3,
            errors=3,
        ),
    ),
    # sweeps/scale_null.yaml cut to 2 x 2 cells x 4 seeds, 2 per unit
    "null_run": SmokeCase(
        overrides=(
            "sweep=scale_null",
            "sweep.grid.width=[1,2]",
            "sweep.grid.depth=[1,3]",
            "sweep.seeds=4",
            "resources.chunk_size=2",
        ),
        sweep="scale_null",
        cells=4,
        seeds=4,
        units=8,
        failing=FailingCase(
            ("experiment.fail_on_seeds=[3]", "sweep.grid.width=[2]", "sweep.grid.depth=[3]", *QUIET),
            seeds=(2, 3),
            cell={"width": 2, "depth": 3},
            runs=2,
            errors=2,
        ),
    ),
    # N = 8; M / N = 0.5, 1; plain / skip x sgd / rand; sigmoid; 4 seeds, one unit per cell
    "skip_networks": SmokeCase(
        overrides=("sweep=skip_smoke",),
        sweep="skip_smoke",
        cells=8,
        seeds=4,
        units=8,
        failing=FailingCase(
            (
                "experiment.fail_on_seeds=[3]",
                "sweep.grid.M_over_n=[1]",
                "sweep.grid.architecture=[skip]",
                "sweep.grid.mode=[rand]",
                "resources.chunk_size=2",
                *QUIET,
            ),
            seeds=(2, 3),
            cell={"M": 8, "mode": "rand"},
            runs=2,
            errors=2,
        ),
    ),
    # n = 6; width / n = 0.5, 1, 2; depth 2; tanh and relu; 4 seeds, chunks of 2
    "width_threshold": SmokeCase(
        overrides=("sweep=width_threshold_smoke",),
        sweep="width_threshold_smoke",
        cells=6,
        seeds=4,
        units=12,
        failing=FailingCase(
            ("experiment.fail_on_seeds=[3]", "sweep.grid.activation=[tanh]", "sweep.grid.width_over_n=[1]", *QUIET),
            seeds=(2, 3),
            cell={"width": 6, "activation": "tanh"},
            runs=2,
            errors=2,
        ),
    ),
    # L0 = 0.1, 0.05 x width 4, 8; 2 pairs per cell, one pair per unit
    "string_sampling": SmokeCase(
        overrides=("sweep=dss_smoke",),
        sweep="dss_smoke",
        cells=4,
        seeds=2,
        units=8,
        failing=FailingCase(
            ("experiment.fail_on_seeds=[1]", "sweep.grid.threshold=[0.1]", "sweep.grid.width=[4]", *QUIET),
            seeds=(1,),
            cell={"threshold": 0.1, "width": 4},
            runs=1,
            errors=1,
        ),
    ),
}

_SMOKE_RUNS: dict[str, tuple[Path, SweepResult]] = {}


def smoke_run(name: str, tmp_path_factory) -> tuple[Path, SweepResult]:
    """(results directory, sweep result) of experiment ``name``'s smoke sweep, run in this
    process on the session's Ray cluster (ask for the ``ray_session`` fixture first) the
    first time any test file asks for it, then shared for the rest of the test session."""
    if name not in _SMOKE_RUNS:
        results = tmp_path_factory.mktemp(name) / "results"
        result = run_sweep(compose_config([*SMOKE_CASES[name].overrides, f"results_dir={results}"]))
        _SMOKE_RUNS[name] = results, result
    return _SMOKE_RUNS[name]

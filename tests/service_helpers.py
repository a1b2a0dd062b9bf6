"""Helpers shared by the service tests of the experiments (not fixtures: those are in conftest.py).

- :func:`plan_for` / :func:`run_first_cell`: validate and plan a config; run its first cell
  in this process (no Ray);
- :data:`SMOKE_CASES` (from :mod:`tests.smoke_cases`, one module per experiment): per
  registered experiment, a smoke sweep small enough for the tests and what it must produce,
  read by the contract test (tests/test_service_contract.py);
- :func:`smoke_run`: that sweep run once per test session and shared by every test file
  that asks for it (the contract test and the experiment's own service tests), so that
  each smoke sweep runs once.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from scipy.stats import binomtest

from ray_jobs.config import compose_config
from ray_jobs.experiments.base import RUN_STATUSES
from ray_jobs.plan import plan_sweep
from ray_jobs.store import row_schema
from ray_jobs.sweep import SweepResult, run_sweep
from ray_jobs.validate import validate
from tests.smoke_cases import SMOKE_CASES


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

"""The smoke case of each experiment: a smoke sweep small enough for the tests and what it
must produce (cells, seeds, units; the failing-unit variant and its `error` rows), read by
the contract test (tests/test_service_contract.py) and the experiments' service tests.

One module per experiment, named as the experiment, binding ``CASE``: adding an experiment
adds its module here and edits no file (:data:`SMOKE_CASES` finds it).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any


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


def _discover() -> dict[str, SmokeCase]:
    cases = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        cases[module.name] = importlib.import_module(f"{__name__}.{module.name}").CASE
    return cases


#: per registered experiment (the contract test skips, naming it, one that has none here)
SMOKE_CASES: dict[str, SmokeCase] = _discover()

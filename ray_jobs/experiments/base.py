"""The Experiment interface: what the service needs to know about one kind of experiment.

An :class:`Experiment` turns the composed config into one parameter dict per grid cell
(validating it), runs one chunk of seeds of a cell by calling ``landscape_core``, and
declares its grid axes, its statuses, its Parquet columns, the config groups it reads,
the columns that identify a cell in the report, and how published reference tables map
onto report columns. It also owns its report layout (:meth:`Experiment.report_markdown`,
:meth:`Experiment.report_files`), kept in its folder's ``layout.py`` and imported only when
a report is built, so that a worker running a unit imports neither pandas nor the layout.

An experiment lives in one folder, ``ray_jobs/experiments/<name>/``, whose
``experiment.py`` binds ``EXPERIMENT`` to its class; :mod:`ray_jobs.experiments.registry`
finds it there (docs/adding_an_experiment.md).

This module imports nothing heavy (no torch, pandas or pyarrow): the Parquet types of the
columns are Arrow type names (:data:`COLUMN_TYPES`), turned into Arrow types by the store.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ray_jobs.errors import ConfigError
from ray_jobs.experiments.grid import GridAxes

if TYPE_CHECKING:
    import pandas as pd

    from ray_jobs.store import ResultsStore

#: outcomes of a run, in report order; an experiment declares the ones it produces
#: (``Experiment.statuses``); the store adds ``error`` for a unit whose task failed
RUN_STATUSES = ("global", "spurious", "saddle", "not_converged", "diverged")

#: the Arrow type names a column may declare (``Experiment.columns``)
COLUMN_TYPES = ("int64", "float64", "string", "bool", "list<float64>")

#: activations of landscape_core.networks, in its order (a test keeps the two lists equal);
#: listed here so that validating and reporting need no torch import
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softplus", "swish", "silu", "gelu", "quadratic", "linear")


def is_int(value) -> bool:
    """An integer config value (a YAML bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite number config value (a YAML bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Experiment:
    """What the service needs from one kind of experiment (one subclass per experiment folder)."""

    name: str = ""
    #: one line for ``landscape-sweep --help``: the grid axes and what they mean
    help: str = ""
    #: the grid axes and their rules (required, either-or, ratio axes): :class:`GridAxes`
    grid_axes: GridAxes = GridAxes(())
    #: the run outcomes this experiment records in ``status`` (the report counts each);
    #: ``error`` (a failed task) is the service's, not listed here
    statuses: tuple[str, ...] = RUN_STATUSES
    #: columns naming a cell in the report table, in display order
    table_axes: tuple[str, ...] = ()
    #: Parquet columns this experiment adds to the results contract (name -> Arrow type name
    #: among :data:`COLUMN_TYPES`)
    columns: dict[str, str] = {}
    #: published-table column -> (report column, scale factor to our units)
    reference_columns: dict[str, tuple[str, float]] = {}
    #: config groups this experiment reads besides the service's (experiment, resources,
    #: tracking, cluster): ``protocol``, ``optimizer``, ``data`` or a group of its own; every
    #: other such group must be absent (no setting silently unused)
    groups: tuple[str, ...] = ()
    #: boolean Parquet columns the report gives as a fraction with a Wilson interval
    #: (``n_<col>``, ``frac_<col>``, ``frac_<col>_lo`` / ``_hi``), beside the statuses
    fraction_columns: tuple[str, ...] = ()
    #: display order of categorical table axes (values not listed sort after, alphabetically)
    axis_order: dict[str, tuple] = {}
    #: table axes the default markdown shows only when they vary between the table's cells
    optional_table_axes: tuple[str, ...] = ()

    #: per-run vector columns (weights, strings) the report reads only for the rows of the
    #: given statuses (an empty tuple: never; the layout may read them itself): column
    #: projection, so that a report over 10^6 rows does not decode 10^6 weight vectors to
    #: count statuses. Columns not listed are read for every row.
    report_projection: dict[str, tuple[str, ...]] = {}

    #: keys allowed in the experiment group (None: the experiment checks them itself)
    experiment_keys: tuple[str, ...] | None = None
    #: overrides that make a run of any sweep of this experiment cheap (a handful of
    #: iterations); the parametrized test of every shipped sweep runs a cell with them
    tiny_budget: tuple[str, ...] = ()

    @property
    def axes(self) -> tuple[str, ...]:
        """The keys allowed under ``sweep.grid`` (those of :attr:`grid_axes`)."""
        return self.grid_axes.names

    def cells(self, cfg) -> list[dict[str, Any]]:
        """One fully resolved parameter dict per grid cell; raises :class:`ConfigError`."""
        raise NotImplementedError

    def read_config(self, cfg) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
        """The experiment group and the sweep grid as plain dicts, and the sorted
        fault-injection seeds (``experiment.fail_on_seeds``); unknown experiment keys (when
        :attr:`experiment_keys` is set) and non-integer seeds raise :class:`ConfigError`."""
        from omegaconf import OmegaConf

        experiment = OmegaConf.to_container(cfg.experiment, resolve=True)
        grid = cfg.sweep.get("grid")
        grid = (OmegaConf.to_container(grid, resolve=True) if grid is not None else None) or {}
        if self.experiment_keys is not None:
            for key in experiment:
                if key not in self.experiment_keys:
                    raise ConfigError(f"experiment.{key}", f"unknown key for {self.name}; allowed: {', '.join(self.experiment_keys)}")
        fail_on_seeds = experiment.get("fail_on_seeds") or []
        if not isinstance(fail_on_seeds, list) or not all(is_int(s) for s in fail_on_seeds):
            raise ConfigError("experiment.fail_on_seeds", f"must be a list of integer seeds, got {fail_on_seeds!r}")
        return experiment, grid, sorted(fail_on_seeds)

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        """Run ``seeds`` of the cell ``params`` as one batch; one record per seed, in order."""
        raise NotImplementedError

    def extra_aggregates(self, ran: "pd.DataFrame", *, confidence: float, family_tol: float) -> dict[str, Any]:
        """Experiment-specific report columns of one cell from its rows that ran;
        ``confidence`` is the report's level (for intervals), ``family_tol`` its distance
        within which two bad points are one family (``report.family_tol``)."""
        return {}

    def report_markdown(self, table: "pd.DataFrame", *, sweep: str, confidence: float) -> str:
        """The report as GitHub markdown from the per-cell table (non-empty); default: one
        row per cell with the percentage of each status (:func:`ray_jobs.report.status_markdown`)."""
        from ray_jobs.report.tables import status_markdown

        return status_markdown(table, self, sweep=sweep, confidence=confidence)

    def headline_series(self, table: "pd.DataFrame") -> dict[str, list[tuple[int, float]]]:
        """The headline report column against an integer grid axis, for the MLflow parent's
        charts: metric name -> [(axis value, value), ...] (logged as the metric's history,
        the axis value as the step). Default: none."""
        return {}

    def report_files(self, table: "pd.DataFrame", store: "ResultsStore", *, sweep: str, confidence: float,
                     figure: bool) -> list[Path]:
        """Write the report's extra files (CSVs; figures when ``figure``) under
        ``store.report_dir`` from the per-cell table (non-empty); return their paths.
        ``table.md`` and ``table.csv`` are written by the caller."""
        return []


def _kind_of(default) -> tuple[str, Any]:
    """(description, check) of a config value whose core default is ``default``."""
    if isinstance(default, bool):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(default, int):
        return "an integer", is_int
    if isinstance(default, float):
        return "a finite number", is_number
    return "a string", lambda v: isinstance(v, str)


def check_types(path: str, values: dict, cls, rename: dict[str, str] | None = None) -> None:
    """Each value of ``values`` has the type of the core dataclass field it sets (else ConfigError)."""
    rename = rename or {}
    for f in fields(cls):
        key = rename.get(f.name, f.name)
        if key in values and f.default is not MISSING:
            kind, ok = _kind_of(f.default)
            if not ok(values[key]):
                raise ConfigError(f"{path}.{key}", f"must be {kind}, got {values[key]!r}")

"""The Experiment interface: what the service needs to know about one kind of experiment.

An :class:`Experiment` turns the composed config into one parameter dict per grid cell
(validating it), runs one chunk of seeds of a cell by calling ``landscape_core``, and
declares its grid axes, its statuses, its Parquet columns and the config groups it reads.
What its report shows is not here: that is its report layout
(:class:`ray_jobs.report.layout.ReportLayout`), the class bound to ``LAYOUT`` in the
``layout.py`` beside its ``experiment.py``, imported only when a report is built, so that
a worker running a unit imports neither pandas nor the layout.

An experiment lives in one folder, ``ray_jobs/experiments/<name>/`` or a package of its
own registered in the entry-point group ``landscape_sweeps.experiments``, whose
``experiment.py`` binds ``EXPERIMENT`` to its class; :mod:`ray_jobs.experiments.registry`
finds it (docs/adding_an_experiment.md).

This module imports nothing heavy (no torch, pandas or pyarrow): the Parquet types of the
columns are type names (``int64``, ``float64``, ``string``, ``bool``, ``list<...>``), turned
into Arrow types by the store (:func:`ray_jobs.store.arrow_type`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any, TypeGuard, cast

# the core's names, from its torch-free module: outcomes of a run in report order (an
# experiment declares the ones it produces, ``Experiment.statuses``; the store adds ``error``
# for a unit whose task failed) and the activations of landscape_core.networks
from landscape_core.names import ACTIVATION_NAMES as ACTIVATIONS
from landscape_core.names import RUN_STATUSES
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.grid import GridAxes

__all__ = ["ACTIVATIONS", "RUN_STATUSES", "Experiment", "check_types", "is_int", "is_number"]


def is_int(value) -> TypeGuard[int]:
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
    #: Parquet columns this experiment adds to the results contract (name -> type name:
    #: ``int64``, ``float64``, ``string``, ``bool``, ``list<T>``; :func:`ray_jobs.store.arrow_type`)
    columns: dict[str, str] = {}
    #: config groups this experiment reads besides the service's (experiment, resources,
    #: tracking, cluster): ``protocol``, ``optimizer``, ``data`` or a group of its own; every
    #: other such group must be absent (no setting silently unused)
    groups: tuple[str, ...] = ()
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

        # config sections are DictConfigs: plain dicts with str keys
        experiment = cast(dict[str, Any], OmegaConf.to_container(cfg.experiment, resolve=True))
        node = cfg.sweep.get("grid")
        grid = cast(dict[str, Any], (OmegaConf.to_container(node, resolve=True) if node is not None else None) or {})
        if self.experiment_keys is not None:
            for key in experiment:
                if key not in self.experiment_keys:
                    allowed = ", ".join(self.experiment_keys)
                    raise ConfigError(f"experiment.{key}", f"unknown key for {self.name}; allowed: {allowed}")
        fail_on_seeds = experiment.get("fail_on_seeds") or []
        if not isinstance(fail_on_seeds, list) or not all(is_int(s) for s in fail_on_seeds):
            raise ConfigError("experiment.fail_on_seeds", f"must be a list of integer seeds, got {fail_on_seeds!r}")
        return experiment, grid, sorted(fail_on_seeds)

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        """Run ``seeds`` of the cell ``params`` as one batch; one record per seed, in order."""
        raise NotImplementedError


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

"""The experiments of the service, found by folder and imported on first use.

Every folder ``ray_jobs/experiments/<name>/`` with an ``experiment.py`` is the experiment
``<name>``: its module binds ``EXPERIMENT`` to the :class:`~ray_jobs.experiments.base.Experiment`
subclass, whose ``name`` is the folder's. Listing the names reads the directory only;
:func:`get_experiment` imports the one module asked for, so a worker running a unit of one
experiment imports no other.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import Experiment

_HERE = Path(__file__).resolve().parent
_LOADED: dict[str, Experiment] = {}


def experiment_names() -> list[str]:
    """Names of the experiment folders, sorted (no import)."""
    return sorted(path.parent.name for path in _HERE.glob("*/experiment.py") if not path.parent.name.startswith("_"))


def _load(name: str) -> Experiment:
    module = importlib.import_module(f"ray_jobs.experiments.{name}.experiment")
    cls = getattr(module, "EXPERIMENT", None)
    if not (isinstance(cls, type) and issubclass(cls, Experiment)):
        raise TypeError(f"ray_jobs/experiments/{name}/experiment.py must bind EXPERIMENT to its Experiment subclass")
    if cls.name != name:
        raise TypeError(f"ray_jobs/experiments/{name}/experiment.py: EXPERIMENT.name is {cls.name!r}, not the folder's name")
    return cls()


def get_experiment(name: str) -> Experiment:
    """The experiment ``name`` (its module imported on first use); unknown -> ConfigError
    naming ``experiment.name`` with the allowed names."""
    if name not in _LOADED:
        if not isinstance(name, str) or name not in experiment_names():
            raise ConfigError("experiment.name", f"unknown experiment {name!r}; allowed: {', '.join(experiment_names())}")
        _LOADED[name] = _load(name)
    return _LOADED[name]


def registered_experiments() -> dict[str, Experiment]:
    """Name -> instance of every experiment (imports them all: for help texts and tests)."""
    return {name: get_experiment(name) for name in experiment_names()}

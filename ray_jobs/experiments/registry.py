"""The experiments of the service, found by entry point or by folder and imported on first use.

An experiment is registered in the entry-point group ``landscape_sweeps.experiments``
(:mod:`ray_jobs.plugins`: the shipped ones in the project's ``pyproject.toml``, others in
the package that holds them), or is a folder ``ray_jobs/experiments/<name>/`` with an
``experiment.py`` (found by its folder, registered or not). Either way its module binds
``EXPERIMENT`` to the :class:`~ray_jobs.experiments.base.Experiment` subclass (an entry
point may name the class itself), whose ``name`` is the registered one. Listing the names
reads the metadata and the directory only; :func:`get_experiment` imports the one module
asked for, so a worker running a unit of one experiment imports no other.

Its report layout is the class bound to ``LAYOUT`` in the ``layout.py`` beside that module
(:func:`get_layout`; the generic :class:`~ray_jobs.report.layout.ReportLayout` when there is
none), imported by the driver only when a report is built or its settings are checked.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import Experiment
from ray_jobs.plugins import experiment_entry_points

if TYPE_CHECKING:
    from ray_jobs.report.layout import ReportLayout

_HERE = Path(__file__).resolve().parent
_LOADED: dict[str, Experiment] = {}


def _folders() -> list[str]:
    return sorted(path.parent.name for path in _HERE.glob("*/experiment.py") if not path.parent.name.startswith("_"))


def experiment_names() -> list[str]:
    """Names of the registered experiments and experiment folders, sorted (no import)."""
    return sorted(set(experiment_entry_points()) | set(_folders()))


def _load(name: str) -> Experiment:
    point = experiment_entry_points().get(name)
    where = f"entry point {name} = {point.value!r}" if point else f"ray_jobs/experiments/{name}/experiment.py"
    if point is not None:
        target = point.load()
        cls = target if isinstance(target, type) else getattr(target, "EXPERIMENT", None)
    else:
        cls = getattr(importlib.import_module(f"ray_jobs.experiments.{name}.experiment"), "EXPERIMENT", None)
    if not (isinstance(cls, type) and issubclass(cls, Experiment)):
        raise TypeError(f"{where} must name (or bind EXPERIMENT to) its Experiment subclass")
    if cls.name != name:
        raise TypeError(f"{where}: the experiment's name is {cls.name!r}, not {name!r}")
    return cls()


def get_experiment(name: str) -> Experiment:
    """The experiment ``name`` (its module imported on first use); unknown -> ConfigError
    naming ``experiment.name`` with the allowed names."""
    if name not in _LOADED:
        if not isinstance(name, str) or name not in experiment_names():
            allowed = ", ".join(experiment_names())
            raise ConfigError("experiment.name", f"unknown experiment {name!r}; allowed: {allowed}")
        _LOADED[name] = _load(name)
    return _LOADED[name]


def registered_experiments() -> dict[str, Experiment]:
    """Name -> instance of every experiment (imports them all: for help texts and tests)."""
    return {name: get_experiment(name) for name in experiment_names()}


def layout_class(experiment: Experiment) -> type[ReportLayout]:
    """The report layout class of ``experiment``: ``LAYOUT`` of the ``layout`` module beside
    its experiment module, or the generic :class:`~ray_jobs.report.layout.ReportLayout`."""
    from ray_jobs.report.layout import ReportLayout

    package = type(experiment).__module__.rpartition(".")[0]
    if not package or importlib.util.find_spec(f"{package}.layout") is None:
        return ReportLayout
    cls = getattr(importlib.import_module(f"{package}.layout"), "LAYOUT", None)
    if not (isinstance(cls, type) and issubclass(cls, ReportLayout)):
        raise TypeError(f"{package}.layout must bind LAYOUT to its ReportLayout subclass")
    return cls


def get_layout(experiment: Experiment, report: Mapping[str, Any] | None = None) -> ReportLayout:
    """The report layout of ``experiment`` with the settings of the ``report`` section
    (its own keys, checked: ConfigError naming ``report.<key>``)."""
    return layout_class(experiment)(axes=experiment.axes, statuses=experiment.statuses, settings=report)

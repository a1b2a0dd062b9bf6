"""A search through the service: its settings (one Optuna study each) and the cell of a trial.

The sweep's grid gives the settings: every combination of the grid axes that are not
searched is one setting and one study (``<sweep>[k=10]#<hash>``). A searched axis is
either a grid axis of the experiment (``n_minus_k``, ``width``, ``step``...) or a dotted
key of the config (``protocol.init_scale``, ``optimizer.lr``...). A trial's cell is what
the experiment makes of the config with the setting's and the trial's values, validated
like any sweep cell. Everything is validated before anything is written.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import Experiment
from ray_jobs.experiments.registry import get_experiment
from ray_jobs.plan import Cell, canonical_json, make_cell, stable_hash
from ray_jobs.search.spec import SearchSpec
from ray_jobs.validate import validate


@dataclass(frozen=True)
class Setting:
    """One study: the values of the grid axes that are not searched."""

    values: dict[str, Any]
    study: str

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "(one setting)"


@dataclass
class SearchPlan:
    sweep: str
    experiment: Experiment
    spec: SearchSpec  # the search block (its name is the sweep's; each study gets its own copy)
    settings: list[Setting]
    cells: TrialCells

    def spec_for(self, setting: Setting) -> SearchSpec:
        return SearchSpec(**{**self.spec.__dict__, "name": setting.study, "fixed": dict(setting.values)})

    def grid_runs(self) -> int | None:
        """Runs a grid over the searched axes spends per setting at the same per-cell precision
        (None when an axis is continuous: no grid without a step)."""
        if any(axis.type == "float" and axis.step is None for axis in self.spec.axes):
            return None
        return len(self.spec.grid_points()) * self.spec.seeds_per_stage * self.spec.max_stages


class TrialCells:
    """The cell of (setting values + trial values): the sweep config with those values set,
    made into cell parameters by the experiment (validated like any sweep cell)."""

    def __init__(self, cfg: DictConfig, experiment: Experiment, searched: tuple[str, ...]):
        self.cfg, self.experiment, self.searched = cfg, experiment, searched
        self._cache: dict[str, Cell] = {}

    def config_for(self, values: dict[str, Any]) -> DictConfig:
        cfg = copy.deepcopy(self.cfg)
        OmegaConf.set_readonly(cfg, False)
        OmegaConf.set_struct(cfg, False)
        for name, value in values.items():
            if name in self.experiment.axes:
                cfg.sweep.grid[name] = [value]
            else:
                OmegaConf.update(cfg, name, value, merge=False)
        OmegaConf.set_readonly(cfg, True)
        return cfg

    def cell_for(self, values: dict[str, Any]) -> Cell:
        key = canonical_json(values)
        if key not in self._cache:
            try:
                _, cells = validate(self.config_for(values))
            except ConfigError as error:
                raise self._rename(error) from None
            if len(cells) != 1:
                raise ConfigError("sweep.grid", f"a search trial must be one cell, got {len(cells)} for {values}")
            self._cache[key] = make_cell(cells[0])
        return self._cache[key]

    def _rename(self, error: ConfigError) -> ConfigError:
        """An error on a searched value names the search axis (``search.axes.<name>``)."""
        for name in self.searched:
            if error.field in (f"sweep.grid.{name}", name):
                return ConfigError(f"search.axes.{name}", error.message)
        return error


def plan_search(cfg: DictConfig) -> SearchPlan:
    """Validate a search config (everything, before anything is written) and plan its studies.

    Raises ConfigError naming the field: the ``search`` block's own fields, a searched
    axis that is neither a grid axis of the experiment nor a config key, a searched range
    whose end values the experiment rejects (each setting's corner cells are built).
    """
    experiment = get_experiment(cfg.experiment.get("name"))  # the whole config is validated per corner cell below
    raw: object = OmegaConf.to_container(cfg.search, resolve=True)
    if not isinstance(raw, dict):
        raise ConfigError("search", "must be a mapping (kind, axes, target, trials, ...)")
    allowed = set(SearchSpec.__dataclass_fields__) - {"name", "fixed"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"search.{key}", f"unknown search setting; allowed: {', '.join(sorted(allowed))}")
    spec = SearchSpec.from_dict(
        {**raw, "name": str(cfg.sweep.name), "seed_start": raw.get("seed_start", int(cfg.sweep.get("seed_start", 0)))}
    )
    for key, statuses in (("success_statuses", spec.success_statuses), ("failure_statuses", spec.failure_statuses)):
        unknown = [s for s in statuses if s not in experiment.statuses]
        if unknown or not statuses:
            raise ConfigError(
                f"search.{key}", f"{unknown or statuses!r}: give statuses among {', '.join(experiment.statuses)}"
            )
    searched = tuple(axis.name for axis in spec.axes)
    for name in searched:
        if name in experiment.axes:
            continue
        node = OmegaConf.select(cfg, name, default=_MISSING)
        if node is _MISSING:
            raise ConfigError(
                f"search.axes.{name}",
                f"neither a grid axis of {experiment.name} "
                f"({', '.join(experiment.axes)}) nor a key of the config (e.g. protocol.step)",
            )
        if isinstance(node, (DictConfig, ListConfig)):
            raise ConfigError(
                f"search.axes.{name}",
                "is a config group or section, not a value; search its keys "
                f"(e.g. {name}.lr), one search per group option",
            )
    grid = cast(dict[str, Any], OmegaConf.to_container(cfg.sweep.grid, resolve=True) or {})  # a DictConfig section
    fixed_axes = {
        axis: (list(v) if isinstance(v, (list, tuple)) else [v]) for axis, v in grid.items() if axis not in searched
    }
    cells = TrialCells(cfg, experiment, searched)
    settings = []
    for point in itertools.product(*fixed_axes.values()):
        values = dict(zip(fixed_axes, point))
        # every end of every searched range (every choice of a categorical axis), the other
        # axes at their first value, must make a valid cell
        first = {a.name: (a.choices[0] if a.type == "categorical" else _axis_value(a, a.low)) for a in spec.axes}
        for axis in spec.axes:
            for value in axis.choices if axis.type == "categorical" else (axis.low, axis.high):
                cells.cell_for({**values, **first, axis.name: _axis_value(axis, value)})
        # The study's name carries a hash of what decides its trials (the search's target,
        # statuses, confidence, stages, seeds, ranges, and the cell's science config), so a
        # search run again with other such settings starts a new study in the same journal
        # instead of reusing verdicts to another question; units are still shared by id.
        identity = stable_hash(
            {"search": {**spec.identity(), "fixed": values}, "cell": cells.cell_for({**values, **first}).params}, 8
        )
        suffix = ",".join(f"{k}={v}" for k, v in values.items())
        settings.append(
            Setting(values, f"{cfg.sweep.name}[{suffix}]#{identity}" if suffix else f"{cfg.sweep.name}#{identity}")
        )
    return SearchPlan(str(cfg.sweep.name), experiment, spec, settings, cells)


_MISSING = object()


def _axis_value(axis, value):
    """A range end as the axis' type (int ends of an int axis)."""
    return int(value) if axis.type == "int" else value

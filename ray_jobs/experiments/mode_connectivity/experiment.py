"""Mode connectivity by trained curves (survey section V-B, Conjectures V.3 / V.4; issue 26
item 3) as a sweep experiment.

One run = one pair (seed) of one cell: two solutions trained as the string-sampling
experiment trains its endpoints (the same pairs, bit for bit, for a plain network on its
problems), a quadratic Bezier curve and a one-bend polygonal chain between them trained
as Garipov et al. do, F along both curves and along the segment at ``curve.eval_points``
t, barriers and connected flags; the plane through the pair and a third solution
(Conjecture V.3) and the DSS verdict on the same pair
(:func:`landscape_core.mode_connectivity.run_mode_connectivity`; docs/mode_connectivity.md).

The cell's parameters are flat, named as the Parquet columns (``threshold``, ``network``,
``curve_steps``, ``plane_points``, ``string_pass_factor``, ``endpoint_lr``...), every
default explicit; :meth:`ModeConnectivity.core_options` turns them back into the core's
arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any

from landscape_core.errors import OptionError
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import ACTIVATIONS, Experiment, check_types, is_int, is_number
from ray_jobs.experiments.grid import GridAxes, grid_points

#: the core's choices (a test keeps them equal); listed here so that validating needs no torch
PROBLEMS = ("quadratic", "relu_teacher", "random_labels", "digits")
NETWORKS = ("plain", "skip")
LOSSES = ("mae", "mse")
INITS = ("uniform", "lecun", "he")
#: the string-sampling protocol's endpoint training defaults that differ from TrainSpec's
ENDPOINT_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "max_iterations": 100_000, "grad_tol": 1e-12}
FLOATS = "list<float64>"
_KINDS = {bool: "bool", int: "int64", float: "float64", str: "string"}
#: options of the core's resolve_options that a cell carries as they are
_PLAIN_OPTIONS = (
    "problem",
    "threshold",
    "network",
    "width",
    "depth",
    "activation",
    "init",
    "loss",
    "n_train",
    "n_test",
    "input_dim",
    "teacher_width",
    "data_seed",
    "skip_neurons",
    "dss",
)
#: nested blocks: config key -> (column prefix, the core's dataclass by name)
_BLOCKS = {"endpoint_training": "endpoint_", "string": "string_", "curve": "curve_", "plane": "plane_"}


def _specs() -> dict[str, Any]:
    from landscape_core.mode_connectivity import CurveSpec, PlaneSpec
    from landscape_core.string_sampling import StringSpec
    from landscape_core.training import TrainSpec

    return {"endpoint_training": TrainSpec, "string": StringSpec, "curve": CurveSpec, "plane": PlaneSpec}


def _fields(block: str, cls) -> list[str]:
    skip = {"endpoint_training": "stop_loss", "string": "threshold"}.get(block)
    return [f.name for f in fields(cls) if f.name != skip]


def _block_columns() -> dict[str, str]:
    out = {}
    for block, cls in _specs().items():
        for f in fields(cls):
            out[f"{_BLOCKS[block]}{f.name}"] = _KINDS[type(f.default)] if f.default is not MISSING else "float64"
    return out


class ModeConnectivity(Experiment):
    """Mode connectivity of pairs of solutions by trained Bezier / polygonal curves.

    Grid axes (each optional but ``threshold``, which may also be ``experiment.threshold``;
    an axis not in the grid takes the experiment group's value): ``problem``
    (quadratic, relu_teacher, random_labels, digits), ``threshold`` (L0: endpoints are
    trained below string.alpha x L0), ``network`` (plain, skip), ``width``, ``depth``,
    ``activation``, ``n_train``. ``experiment.skip_neurons`` null: M = min(n_train, hidden
    neurons) for a skip cell (0 for a plain one).
    """

    name = "mode_connectivity"
    help = "threshold (required), problem, network (plain|skip), width, depth, activation, n_train"
    statuses = ("global", "not_converged", "diverged")
    tiny_budget = (
        "experiment.endpoint_training.max_iterations=40",
        "experiment.curve.steps=3",
        "experiment.string.max_rounds=1",
        "experiment.plane.points=5",
        "experiment.plane.low=-1.0",
        "experiment.plane.high=1.0",
        "experiment.n_test=20",
    )
    grid_axes = GridAxes(
        ("problem", "threshold", "network", "width", "depth", "activation", "n_train"),
        least="threshold (e.g. sweep.grid.threshold=[0.002])",
    )
    groups = ()
    experiment_keys = ("name", *_PLAIN_OPTIONS, *_BLOCKS, "fail_on_seeds")
    columns = {
        "endpoint_train_losses": FLOATS,
        "endpoint_test_losses": FLOATS,
        "endpoint_iterations": "list<int64>",
        "segment_losses": FLOATS,
        "segment_barrier": "float64",
        "segment_connected": "bool",
        **{
            f"{kind}_{what}": kind_type
            for kind in ("bezier", "polychain")
            for what, kind_type in (
                ("losses", FLOATS),
                ("barrier", "float64"),
                ("connected", "bool"),
                ("train_loss", "float64"),
                ("bend_offset", "float64"),
            )
        },
        "plane_third_loss": "float64",
        "plane_losses": "list<list<float64>>",
        "plane_barrier": "float64",
        "v3_holds": "bool",
        "dss_connected": "bool",
        "dss_beads": "int64",
        "dss_rounds": "int64",
        "dss_max_interp_loss": "float64",
        "dss_normalized_length": "float64",
        "dss_wall_s": "float64",
        "problem": "string",
        "threshold": "float64",
        "network": "string",
        "width": "int64",
        "depth": "int64",
        "activation": "string",
        "n_train": "int64",
        "n_test": "int64",
        "init": "string",
        "loss": "string",
        "input_dim": "int64",
        "teacher_width": "int64",
        "data_seed": "int64",
        "skip_neurons": "int64",
        "dss": "bool",
        **_block_columns(),
    }

    def cells(self, cfg) -> list[dict[str, Any]]:
        experiment, grid, fail_on_seeds = self.read_config(cfg)
        blocks = self._blocks(experiment)
        axes = self.grid_axes.check(grid, self.name)
        if "threshold" not in axes:
            if experiment.get("threshold") is None:
                raise ConfigError(
                    "sweep.grid.threshold", "required: the loss threshold L0 > 0 (e.g. sweep.grid.threshold=[0.002])"
                )
            axes["threshold"] = [experiment["threshold"]]
        for axis in self.grid_axes.names:
            axes.setdefault(axis, [experiment.get(axis)])

        def where(axis: str) -> str:
            return f"sweep.grid.{axis}" if axis in grid else f"experiment.{axis}"

        self._check_axes(axes, where)
        cells = []
        for values in grid_points(axes):
            params = {"experiment": self.name, **self._settings(experiment), **values}
            params["threshold"] = float(values["threshold"])
            params["skip_neurons"] = self._skip_neurons(experiment, params)
            for block, prefix in _BLOCKS.items():
                params.update({f"{prefix}{key}": value for key, value in blocks[block].items()})
            params["string_threshold"] = params["threshold"]
            params["endpoint_stop_loss"] = params["string_alpha"] * params["threshold"]
            try:
                from landscape_core.mode_connectivity import resolve_options

                resolve_options(**self.core_options(params))
            except OptionError as exc:
                raise ConfigError(self._path(exc.field, where), exc.message) from None
            params["fail_on_seeds"] = sorted(fail_on_seeds)
            cells.append(params)
        return cells

    @staticmethod
    def _path(field: str, where) -> str:
        head, _, rest = field.partition(".")
        if head in ("curve", "plane"):
            return f"experiment.{field}"
        if head == "optimizer":
            return f"experiment.endpoint_training.{'optimizer' if rest == 'name' else rest}"
        if field in ("problem", "threshold", "network", "width", "depth", "activation", "n_train"):
            return where(field)
        string_fields = {f.name for f in fields(_specs()["string"])}
        return f"experiment.string.{field}" if field in string_fields else f"experiment.{field}"

    def _blocks(self, experiment: dict) -> dict[str, dict]:
        """Each nested block with every core default explicit; unknown keys and types refused."""
        out = {}
        for block, cls in _specs().items():
            values = experiment.get(block) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"experiment.{block}", f"must be a mapping, got {values!r}")
            allowed = _fields(block, cls)
            for key in values:
                if key not in allowed:
                    raise ConfigError(f"experiment.{block}.{key}", f"unknown setting; allowed: {', '.join(allowed)}")
            check_types(f"experiment.{block}", values, cls)
            defaults = {f.name: f.default for f in fields(cls) if f.name in allowed}
            if block == "endpoint_training":
                defaults.update(ENDPOINT_DEFAULTS)
            floats = {f.name for f in fields(cls) if isinstance(f.default, float)}
            merged = {**defaults, **values}
            out[block] = {k: float(v) if k in floats and is_int(v) else v for k, v in merged.items()}
        return out

    def _settings(self, experiment: dict) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        for key, minimum in (("n_test", 1), ("input_dim", 1), ("teacher_width", 1), ("data_seed", 0)):
            value = experiment.get(key)
            if not is_int(value) or value < minimum:
                raise ConfigError(f"experiment.{key}", f"must be an integer >= {minimum}, got {value!r}")
            settings[key] = value
        for key, allowed in (("loss", LOSSES), ("init", INITS)):
            if experiment.get(key) not in allowed:
                raise ConfigError(f"experiment.{key}", f"{experiment.get(key)!r} is not one of {', '.join(allowed)}")
            settings[key] = experiment[key]
        if not isinstance(experiment.get("dss"), bool):
            raise ConfigError("experiment.dss", f"must be true or false, got {experiment.get('dss')!r}")
        settings["dss"] = experiment["dss"]
        return settings

    @staticmethod
    def _skip_neurons(experiment: dict, params: dict) -> int:
        if params["network"] != "skip":
            return 0
        value = experiment.get("skip_neurons")
        if value is None:
            return min(params["n_train"], params["width"] * (params["depth"] - 1))
        if not is_int(value) or value < 1:
            raise ConfigError("experiment.skip_neurons", f"must be null or an integer >= 1, got {value!r}")
        return value

    def _check_axes(self, axes: dict[str, list], where) -> None:
        for axis, allowed in (("problem", PROBLEMS), ("network", NETWORKS), ("activation", ACTIVATIONS)):
            for value in axes[axis]:
                if value not in allowed:
                    raise ConfigError(where(axis), f"unknown {axis} {value!r}; allowed: {', '.join(allowed)}")
        for value in axes["threshold"]:
            if not (is_number(value) and value > 0):
                raise ConfigError(where("threshold"), f"must be a number > 0 (the loss threshold L0), got {value!r}")
        for axis in ("width", "depth", "n_train"):
            for value in axes[axis]:
                if not is_int(value) or value < 1:
                    raise ConfigError(where(axis), f"must be an integer >= 1, got {value!r}")

    def core_options(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of the core's ``resolve_options`` of a cell's flat ``params``."""
        out: dict[str, Any] = {key: params[key] for key in _PLAIN_OPTIONS}
        for block, cls in _specs().items():
            out[block] = {name: params[f"{_BLOCKS[block]}{name}"] for name in _fields(block, cls)}
        return out

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.mode_connectivity import resolve_options, run_mode_connectivity

        return run_mode_connectivity(resolve_options(**self.core_options(params)), seeds=list(seeds), device=device)


EXPERIMENT = ModeConnectivity

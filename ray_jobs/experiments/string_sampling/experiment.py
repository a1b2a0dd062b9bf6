"""Dynamic String Sampling (Freeman & Bruna, ICLR 2017) as a sweep experiment (issue #6).

One run = one pair (seed) of one cell: train two models independently below
``alpha * threshold`` and try to join them by a string of beads whose straight segments
stay below ``pass_factor * threshold``
(:func:`landscape_core.string_sampling.run_string_sampling`); the pair's interpolation
probe (A -> B, initial point -> trained model) is recorded as arrays beside the DSS
outcome. protocols.md section 4; docs/string_sampling.md.

The cell's parameters are flat, named as the Parquet columns the core records
(``threshold``, ``width``, ``string_pass_factor``, ``endpoint_lr``, ``bead_max_iterations``...),
with every default explicit; :meth:`StringSampling.core_options` turns them back into the
core's arguments. Report: the per-cell table, normalized length and beads against the
threshold L0, connected fraction against the width (tables, CSVs and figures), one kept
string projected on its top-3 principal directions coloured by loss, and every kept
string's weights (``strings.npz``, indexed by ``strings.csv``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any

from landscape_core.errors import OptionError
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import ACTIVATIONS, Experiment, check_types, is_int, is_number
from ray_jobs.experiments.grid import GridAxes, grid_points

#: the core's problems, losses, initialisations and bead placements (a test keeps them equal);
#: listed here so that validating needs no torch import
PROBLEMS = ("quadratic", "relu_teacher", "counterexample")
LOSSES = ("mae", "mse")
INITS = ("uniform", "lecun", "he")
BEAD_INITS = ("midpoint", "argmax")
#: appendix E's fixed network and data (2-3-2 ReLU net without biases, three points):
#: what a counterexample cell records whatever the experiment group says
COUNTEREXAMPLE = {
    "width": 3,
    "depth": 2,
    "activation": "relu",
    "input_dim": 2,
    "n_train": 3,
    "n_test": 3,
    "init": "hand_built",
}
#: the core's defaults for endpoint training that differ from TrainSpec's (run_string_sampling)
ENDPOINT_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "max_iterations": 100_000, "grad_tol": 1e-12}


def _train_columns(prefix: str) -> dict[str, str]:
    from landscape_core.training import TrainSpec

    kinds = {bool: "bool", int: "int64", float: "float64", str: "string"}
    return {f"{prefix}{f.name}": kinds[type(f.default)] for f in fields(TrainSpec)}


def _string_columns() -> dict[str, str]:
    from landscape_core.string_sampling import StringSpec

    kinds = {bool: "bool", int: "int64", float: "float64", str: "string"}
    return {
        f"string_{f.name}": kinds[type(f.default)] if f.default is not MISSING else "float64"
        for f in fields(StringSpec)
    }


FLOATS = "list<float64>"


#: options of the core's ``resolve_options`` that a cell's params carry as they are (the
#: training and string options come nested, rebuilt by ``core_options``)
_PLAIN_OPTIONS = (
    "problem",
    "threshold",
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
    "probe_points",
    "keep_string",
)


class StringSampling(Experiment):
    """Sublevel-set connectivity by Dynamic String Sampling (protocols.md section 4).

    Grid axes (each optional but ``threshold``; an axis not in the grid takes the value of
    the experiment group's key of the same name): ``problem`` (quadratic, relu_teacher,
    counterexample), ``threshold`` (L0 > 0), ``width`` (hidden width), ``depth`` (weight
    layers), ``activation``, ``n_train``. The counterexample's network and data are fixed
    (appendix E): its cells record width 3, depth 2, relu, 3 points, and a grid over those
    axes is refused for it.
    """

    name = "string_sampling"
    help = "threshold (required), problem (quadratic|relu_teacher|counterexample), width, depth, activation, n_train"
    tiny_budget = (
        "experiment.endpoint_training.max_iterations=40",
        "++experiment.bead_training.max_iterations=40",
        "experiment.string.max_rounds=1",
        "experiment.n_train=300",
        "experiment.n_test=50",
        "experiment.probe_points=5",
    )
    # threshold may also come from experiment.threshold, so no grid axis is required
    grid_axes = GridAxes(
        ("problem", "threshold", "width", "depth", "activation", "n_train"),
        least="threshold (e.g. sweep.grid.threshold=[0.1,0.01])",
    )
    groups = ()
    #: keys allowed in the experiment group
    experiment_keys = ("name", *_PLAIN_OPTIONS, "endpoint_training", "bead_training", "string", "fail_on_seeds")
    columns = {
        # the pair's endpoints (status, final_loss = the worse endpoint's training loss, iterations
        # = both endpoints' steps, are contract columns)
        "endpoint_train_losses": FLOATS,
        "endpoint_test_losses": FLOATS,
        "endpoint_iterations": "list<int64>",
        # interpolation probe (every pair): A -> B, initial point -> trained model
        "probe_points": "int64",
        "interp_ab_losses": FLOATS,
        "interp_ab_max_loss": "float64",
        "interp_ab_barrier": "float64",
        "interp_init_a_losses": FLOATS,
        "interp_init_b_losses": FLOATS,
        "interp_init_max_rise": "float64",
        # DSS outcome (null where DSS did not run: status not_converged / diverged)
        "dss_connected": "bool",
        "dss_beads": "int64",
        "dss_rounds": "int64",
        "dss_beads_failed": "int64",
        "dss_max_interp_loss": "float64",
        "dss_segment_max_losses": FLOATS,
        "dss_normalized_length": "float64",
        "dss_endpoint_distance": "float64",
        "dss_endpoint_losses": FLOATS,
        "dss_bead_losses": FLOATS,
        "dss_threshold": "float64",
        "dss_wall_s": "float64",
        "dss_string": "list<list<float64>>",  # keep_string: the final string's weights (beads x parameters)
        "dss_string_losses": "list<list<float64>>",  # keep_string: its segment checks (segments x interp_points)
        # the cell's configuration (grid axes first)
        "problem": "string",
        "threshold": "float64",
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
        "keep_string": "bool",
        **_string_columns(),
        **_train_columns("endpoint_"),
        **_train_columns("bead_"),
    }

    # ------------------------------------------------------------------------- config
    def cells(self, cfg) -> list[dict[str, Any]]:
        experiment, grid, fail_on_seeds = self.read_config(cfg)
        endpoint, bead, string = self._training_and_string(experiment)
        settings = self._settings(experiment)

        axes = self.grid_axes.check(grid, self.name)
        if "threshold" not in axes:
            if experiment.get("threshold") is None:
                raise ConfigError(
                    "sweep.grid.threshold", "required: the loss threshold L0 > 0 (e.g. sweep.grid.threshold=[0.1,0.01])"
                )
            axes["threshold"] = [experiment["threshold"]]
        for axis in ("problem", "width", "depth", "activation", "n_train"):
            axes.setdefault(axis, [experiment.get(axis)])

        def where(axis: str) -> str:
            return f"sweep.grid.{axis}" if axis in grid else f"experiment.{axis}"

        self._check_axes(axes, where)
        if "counterexample" in axes["problem"]:
            for axis in ("width", "depth", "activation", "n_train"):
                if axis in grid:
                    raise ConfigError(
                        f"sweep.grid.{axis}",
                        "the counterexample's network and data are fixed (appendix E: "
                        "2-3-2 ReLU net without biases, three points); remove the axis",
                    )

        cells = []
        for values in grid_points(axes):
            params = {"experiment": self.name, **settings, **values, "threshold": float(values["threshold"])}
            if values["problem"] == "counterexample":
                params.update(COUNTEREXAMPLE)
            elif values["problem"] == "quadratic" and params["input_dim"] != 1:
                raise ConfigError(
                    "experiment.input_dim",
                    f"the quadratic problem has x ~ U[0, 1] (input_dim 1), "
                    f"got {params['input_dim']!r}; input_dim is for relu_teacher",
                )
            self._check_with_core(params, string, endpoint, bead, where)
            params.update({f"string_{key}": value for key, value in string.items()})
            params["string_threshold"] = params["threshold"]
            params.update({f"endpoint_{key}": value for key, value in endpoint.items()})
            params["endpoint_stop_loss"] = string["alpha"] * params["threshold"]  # what the core trains to
            params.update({f"bead_{key}": value for key, value in bead.items()})
            params["fail_on_seeds"] = sorted(fail_on_seeds)
            cells.append(params)
        return cells

    def _training_and_string(self, experiment: dict) -> tuple[dict, dict, dict]:
        """Endpoint training, bead training (endpoint values unless overridden), string
        settings, each with every core default explicit; types checked, unknown keys refused."""
        from landscape_core.string_sampling import StringSpec
        from landscape_core.training import TrainSpec

        train_fields = [f.name for f in fields(TrainSpec)]
        resolved = []
        for key in ("endpoint_training", "bead_training"):
            values = experiment.get(key) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"experiment.{key}", f"must be a mapping of training settings, got {values!r}")
            for name in values:
                if name == "stop_loss":
                    raise ConfigError(
                        f"experiment.{key}.stop_loss",
                        "set by the threshold (training stops below string.alpha x threshold); remove it",
                    )
                if name not in train_fields:
                    allowed = ", ".join(n for n in train_fields if n != "stop_loss")
                    raise ConfigError(f"experiment.{key}.{name}", f"unknown training setting; allowed: {allowed}")
            check_types(f"experiment.{key}", values, TrainSpec)
            resolved.append(values)
        defaults = {f.name: f.default for f in fields(TrainSpec) if f.name != "stop_loss"}
        endpoint = _as_field_types({**defaults, **ENDPOINT_DEFAULTS, **resolved[0]}, TrainSpec)
        bead = _as_field_types({**endpoint, **resolved[1]}, TrainSpec)
        string = experiment.get("string") or {}
        if not isinstance(string, dict):
            raise ConfigError("experiment.string", f"must be a mapping of DSS settings, got {string!r}")
        string_fields = [f.name for f in fields(StringSpec) if f.name != "threshold"]
        for name in string:
            if name == "threshold":
                raise ConfigError(
                    "experiment.string.threshold",
                    "the threshold is sweep.grid.threshold (or experiment.threshold); remove it here",
                )
            if name not in string_fields:
                raise ConfigError(
                    f"experiment.string.{name}", f"unknown DSS setting; allowed: {', '.join(string_fields)}"
                )
        check_types("experiment.string", string, StringSpec)
        for name in ("spring_weight", "plane_weight"):
            if name in string and not string[name] >= 0:
                raise ConfigError(f"experiment.string.{name}", f"must be a number >= 0, got {string[name]!r}")
        string = _as_field_types(
            {**{f.name: f.default for f in fields(StringSpec) if f.name != "threshold"}, **string}, StringSpec
        )
        return endpoint, bead, string

    def _settings(self, experiment: dict) -> dict[str, Any]:
        """The experiment group's scalar settings that are not grid axes, checked."""
        settings: dict[str, Any] = {}
        for key, minimum in (
            ("n_test", 1),
            ("input_dim", 1),
            ("teacher_width", 1),
            ("data_seed", 0),
            ("probe_points", 2),
        ):
            value = experiment.get(key)
            if not is_int(value) or value < minimum:
                extra = " (t = 0 and t = 1 included)" if key == "probe_points" else ""
                raise ConfigError(f"experiment.{key}", f"must be an integer >= {minimum}{extra}, got {value!r}")
            settings[key] = value
        for key, allowed in (("loss", LOSSES), ("init", INITS)):
            value = experiment.get(key)
            if value not in allowed:
                raise ConfigError(f"experiment.{key}", f"{value!r} is not one of {', '.join(allowed)}")
            settings[key] = value
        if not isinstance(experiment.get("keep_string"), bool):
            raise ConfigError("experiment.keep_string", f"must be true or false, got {experiment.get('keep_string')!r}")
        settings["keep_string"] = experiment["keep_string"]
        return settings

    def _check_axes(self, axes: dict[str, list], where) -> None:
        for value in axes["problem"]:
            if value not in PROBLEMS:
                raise ConfigError(where("problem"), f"unknown problem {value!r}; allowed: {', '.join(PROBLEMS)}")
        for value in axes["threshold"]:
            if not (is_number(value) and value > 0):
                raise ConfigError(where("threshold"), f"must be a number > 0 (the loss threshold L0), got {value!r}")
        for axis, minimum, meaning in (
            ("width", 1, "hidden units per layer"),
            ("depth", 1, "weight layers; 2 = one hidden layer"),
            ("n_train", 1, "training points"),
        ):
            for value in axes[axis]:
                if not is_int(value) or value < minimum:
                    raise ConfigError(where(axis), f"must be an integer >= {minimum} ({meaning}), got {value!r}")
        for value in axes["activation"]:
            if value not in ACTIVATIONS:
                raise ConfigError(
                    where("activation"), f"unknown activation {value!r}; allowed: {', '.join(ACTIVATIONS)}"
                )

    def _check_with_core(self, params: dict, string: dict, endpoint: dict, bead: dict, where) -> None:
        """The core's own checks of the string and training settings, mapped to config paths."""
        from landscape_core.string_sampling import StringSpec
        from landscape_core.training import TrainSpec

        try:
            StringSpec(threshold=params["threshold"], **string).validate()
        except OptionError as exc:
            field, message = exc.field, exc.message
            path = where("threshold") if field == "threshold" else f"experiment.string.{field}"
            raise ConfigError(path, message or str(exc)) from None
        for key, values in (("endpoint_training", endpoint), ("bead_training", bead)):
            try:
                TrainSpec(**values, stop_loss=string["alpha"] * params["threshold"]).validate()
            except OptionError as exc:
                field, message = exc.field, exc.message
                name = field.partition(".")[2]
                raise ConfigError(f"experiment.{key}.{'optimizer' if name == 'name' else name}", message) from None

    def core_options(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of the core's ``resolve_options`` (the options of ``run_string_sampling``) of a
        cell's flat ``params``."""
        from landscape_core.string_sampling import StringSpec
        from landscape_core.training import TrainSpec

        train_fields = [f.name for f in fields(TrainSpec) if f.name != "stop_loss"]
        return {
            **{key: params[key] for key in _PLAIN_OPTIONS},
            "endpoint_training": {name: params[f"endpoint_{name}"] for name in train_fields},
            "bead_training": {name: params[f"bead_{name}"] for name in train_fields},
            "string": {f.name: params[f"string_{f.name}"] for f in fields(StringSpec) if f.name != "threshold"},
        }

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.string_sampling import resolve_options, run_string_sampling

        return run_string_sampling(resolve_options(**self.core_options(params)), seeds=list(seeds), device=device)


def _as_field_types(values: dict, cls) -> dict:
    """``values`` with integers given for float fields of ``cls`` as floats (``lr: 1`` and
    ``lr: 1.0`` are the same cell)."""
    floats = {f.name for f in fields(cls) if isinstance(f.default, float)}
    return {key: float(value) if key in floats and is_int(value) else value for key, value in values.items()}


EXPERIMENT = StringSampling

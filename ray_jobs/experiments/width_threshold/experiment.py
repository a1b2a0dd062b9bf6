"""Width threshold of deep networks: the adapter to ``landscape_core.width_threshold``.

Grid axes, flat cell parameters (the core's resolved options), validation by the core's own
checks, and the batched run of a seed chunk; the report layout is in :mod:`.layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, cast

from landscape_core.errors import OptionError
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import ACTIVATIONS, Experiment, check_types, is_int, is_number
from ray_jobs.experiments.columns import TRAINED_MLP_COLUMNS
from ray_jobs.experiments.grid import Alternative, GridAxes, Ratio, grid_points

#: width = width_over_n x n_samples (an integer)
WIDTH_RATIO = Ratio("width_over_n", "width", "n_samples")


class WidthThreshold(Experiment):
    """Width threshold of deep networks (protocols.md section 2; survey sections IV-VI).

    Grid axes: either ``width`` (hidden width) or ``width_over_n`` (width = width_over_n x
    n_samples, which must be an integer), and ``depth`` (weight layers, >= 2),
    ``activation`` and ``n_samples`` (all four required). The cell's parameters are flat,
    named as the Parquet columns the core records (``width``, ``data_input_dim``,
    ``optimizer_grad_tol``, ``loss_tol``...; see
    :meth:`landscape_core.width_threshold.WidthThresholdOptions.columns`), with every core
    default made explicit; :meth:`core_options` turns them back into the core's arguments.
    """

    name = "width_threshold"
    help = "width or width_over_n, depth, activation, n_samples (all required); groups optimizer, data"
    tiny_budget = ("optimizer.max_iterations=20",)
    grid_axes = GridAxes(
        ("width", "width_over_n", "depth", "activation", "n_samples"),
        required={"depth": "[2,3]", "activation": "[relu,tanh]", "n_samples": "[16]"},
        alternatives=(Alternative("width", "width_over_n", "width = width_over_n x n_samples", "[0.5,1,2]"),),
    )
    groups = ("optimizer", "data")
    #: keys allowed in the experiment group
    experiment_keys = ("name", "loss", "init", "output_bias", "probes", "fail_on_seeds")
    columns = {
        # outcome and probes (status, final_loss, grad_norm, iterations are contract columns)
        "stalled": "bool",
        "min_eig": "float64",
        "max_eig": "float64",
        "hessian_method": "string",
        **{
            f"{prefix}{name}": kind
            for prefix in ("init_", "")
            for name, kind in (
                ("last_layer_rank", "int64"),
                ("last_layer_rank_loose", "int64"),
                ("last_layer_sigma_min", "float64"),
                ("last_layer_rank_tol", "float64"),
                ("last_layer_rank_tol_loose", "float64"),
                ("full_rank", "bool"),
            )
        },
        "ntk_gram_rank": "int64",
        "ntk_full_rank": "bool",
        # the cell's configuration (grid axes first)
        "width": "int64",
        "depth": "int64",
        "activation": "string",
        "n_samples": "int64",
        "width_over_n": "float64",
        **TRAINED_MLP_COLUMNS,
        "loss_tol": "float64",
        "eig_margin": "float64",
        "rank_rtol": "float64",
        "exact_hessian_max_params": "int64",
        "lanczos_steps": "int64",
        "ntk_rank": "bool",
    }

    def cells(self, cfg) -> list[dict[str, Any]]:
        from omegaconf import OmegaConf

        experiment, grid, fail_on_seeds = self.read_config(cfg)
        # config sections are DictConfigs: plain dicts with str keys
        optimizer = cast(dict[str, Any], OmegaConf.to_container(cfg.optimizer, resolve=True))
        data = cast(dict[str, Any], OmegaConf.to_container(cfg.data, resolve=True))
        probes = experiment.get("probes") or {}
        if not isinstance(probes, dict):
            raise ConfigError("experiment.probes", f"must be a mapping of probe settings, got {probes!r}")
        from ray_jobs.config import available_options

        for group, values in (("optimizer", optimizer), ("data", data)):
            if not isinstance(values.get("name"), str):  # e.g. ~optimizer leaves only a sweep's optimizer.* keys
                raise ConfigError(
                    group,
                    f"required by {self.name}: choose {group}=<option>; allowed: {', '.join(available_options(group))}",
                )
        self._check_group_types(experiment, probes, optimizer, data)

        axes = self.grid_axes.check(grid, self.name)
        self._check_axes(axes)
        width_axis = "width" if "width" in axes else "width_over_n"

        cells = []
        for values in grid_points(axes):
            n = values["n_samples"]
            width = values["width"] if width_axis == "width" else WIDTH_RATIO.resolve(values)
            options = self._resolve(
                width, values["depth"], values["activation"], n, experiment, probes, optimizer, data, width_axis
            )
            cells.append({"experiment": self.name, **options.columns(), "fail_on_seeds": sorted(fail_on_seeds)})
        return cells

    def _check_group_types(self, experiment: dict, probes: dict, optimizer: dict, data: dict) -> None:
        from landscape_core.data import DataSpec
        from landscape_core.training import TrainSpec
        from landscape_core.width_threshold import ProbeSpec

        for key, kind, ok in (
            ("loss", "a string", lambda v: isinstance(v, str)),
            ("init", "a string", lambda v: isinstance(v, str)),
            ("output_bias", "true or false", lambda v: isinstance(v, bool)),
        ):
            if key in experiment and not ok(experiment[key]):
                raise ConfigError(f"experiment.{key}", f"must be {kind}, got {experiment[key]!r}")
        check_types("experiment.probes", probes, ProbeSpec)
        check_types("optimizer", optimizer, TrainSpec, {"optimizer": "name"})
        if "n_samples" in data:
            raise ConfigError(
                "data.n_samples", "the number of samples is the grid axis sweep.grid.n_samples; remove it here"
            )
        check_types("data", data, DataSpec)

    def _check_axes(self, axes: dict[str, list]) -> None:
        for value in axes.get("width", []):
            if not is_int(value) or value < 1:
                raise ConfigError("sweep.grid.width", f"must be an integer >= 1, got {value!r}")
        for value in axes.get("width_over_n", []):
            if not (is_number(value) and value > 0):
                raise ConfigError("sweep.grid.width_over_n", f"must be a number > 0 (width / n_samples), got {value!r}")
        for value in axes["depth"]:
            if not is_int(value) or value < 2:
                raise ConfigError(
                    "sweep.grid.depth", f"must be an integer >= 2 (weight layers; 2 = one hidden layer), got {value!r}"
                )
        for value in axes["activation"]:
            if value not in ACTIVATIONS:
                raise ConfigError(
                    "sweep.grid.activation", f"unknown activation {value!r}; allowed: {', '.join(ACTIVATIONS)}"
                )
        for value in axes["n_samples"]:
            if not is_int(value) or value < 1:
                raise ConfigError("sweep.grid.n_samples", f"must be an integer >= 1, got {value!r}")

    def _resolve(self, width, depth, activation, n_samples, experiment, probes, optimizer, data, width_axis):
        """The core's resolved options of one cell; its ValueError mapped to the config path."""
        from landscape_core.width_threshold import resolve_options

        try:
            return resolve_options(
                width=width,
                depth=depth,
                activation=activation,
                n_samples=n_samples,
                data=data,
                optimizer=optimizer,
                probes=probes,
                loss=experiment.get("loss", "square"),
                init=experiment.get("init", "lecun"),
                output_bias=experiment.get("output_bias", False),
            )
        except OptionError as exc:
            field, message = exc.field, exc.message
            head, _, rest = field.partition(".")
            if head == "data":
                path = "sweep.grid.n_samples" if rest == "n_samples" else field
            elif head == "probes":
                path = f"experiment.{field}"
            elif head == "optimizer" or field in ("input_dim", "output_dim"):
                path = field if head == "optimizer" else f"data.{field}"
            elif field == "width":
                path = f"sweep.grid.{width_axis}"
            elif field in ("depth", "activation"):
                path = f"sweep.grid.{field}"
            elif field in ("loss", "init", "output_bias"):
                path = f"experiment.{field}"
            else:
                path = "experiment"
            raise ConfigError(path, message or str(exc)) from None

    def core_options(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of the core's ``resolve_options`` (the options of ``run_width_threshold``) of a
        cell's flat ``params``."""
        from landscape_core.data import DataSpec
        from landscape_core.training import TrainSpec
        from landscape_core.width_threshold import ProbeSpec

        data = {"name": params["data"]}
        data.update({f.name: params[f"data_{f.name}"] for f in fields(DataSpec) if f.name not in ("name", "n_samples")})
        optimizer = {"name": params["optimizer"]}
        optimizer.update({f.name: params[f"optimizer_{f.name}"] for f in fields(TrainSpec) if f.name != "optimizer"})
        return {
            **{
                key: params[key] for key in ("width", "depth", "activation", "n_samples", "loss", "init", "output_bias")
            },
            "data": data,
            "optimizer": optimizer,
            "probes": {f.name: params[f.name] for f in fields(ProbeSpec)},
        }

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.width_threshold import resolve_options, run_width_threshold

        return run_width_threshold(resolve_options(**self.core_options(params)), seeds=list(seeds), device=device)


EXPERIMENT = WidthThreshold

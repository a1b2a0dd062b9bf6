"""Skip-to-output networks (Nguyen, Mukkamala & Hein, ICLR 2019) as a sweep experiment.

protocols.md section 3; the science is :mod:`landscape_core.skip_networks`. One run = one
seed of one cell: draw a classification data set, a network of ``depth`` weight layers
of ``width`` neurons plus (``architecture=skip``) connections from M hidden neurons
straight to the outputs, train it (``mode=sgd``: every weight, SGD with Nesterov momentum
and a step schedule; ``mode=rand``: hidden weights random and fixed, the output weights
fitted, a convex problem), then record the training outcome, the test accuracy and the
numerical rank of Psi (N x M, the skip neurons' outputs on the N training points).

The report (M / N rank tables or the trainability table, figures) is in :mod:`.layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from landscape_core.errors import OptionError
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import ACTIVATIONS, Experiment, is_int, is_number
from ray_jobs.experiments.grid import Alternative, GridAxes, Ratio, grid_points

#: M = M_over_n x n_samples (an integer)
M_RATIO = Ratio("M_over_n", "M", "n_samples")


class SkipNetworks(Experiment):
    """Skip-to-output networks: Psi rank and trainability (protocols.md section 3).

    Grid axes: ``width``, ``depth`` (weight layers, >= 2), ``activation``, ``n_samples``
    (required); either ``M`` (skip neurons) or ``M_over_n`` (M = M_over_n x n_samples,
    an integer) or neither (then ``experiment.M``, default ``n_samples`` = the paper's
    M = N); ``architecture`` (skip | plain), ``mode`` (sgd | rand) and ``data`` (mixture |
    random_labels | digits), each defaulting to the experiment group's value. The cell's
    parameters are flat and named as the Parquet columns (``M``, ``M_over_n``,
    ``sgd_lr``, ``n_test``...), every core default explicit; :meth:`core_options` turns
    them back into the arguments of the core's ``resolve_options``.
    """

    name = "skip_networks"
    help = (
        "width, depth, activation, n_samples (required), M or M_over_n, architecture (skip|plain), "
        "mode (sgd|rand), data (mixture|random_labels|digits)"
    )
    tiny_budget = ("experiment.sgd.epochs=2", "experiment.rand_max_iterations=5", "experiment.data.n_test=20")
    grid_axes = GridAxes(
        ("width", "depth", "activation", "n_samples", "M", "M_over_n", "architecture", "mode", "data"),
        required={"width": "[16]", "depth": "[3,5]", "activation": "[sigmoid,relu]", "n_samples": "[32]"},
        alternatives=(Alternative("M", "M_over_n", "M = M_over_n x n_samples"),),
    )
    groups = ()
    #: keys allowed in the experiment group
    experiment_keys = (
        "name",
        "M",
        "skip_layers",
        "architecture",
        "mode",
        "data",
        "sgd",
        "rand_max_iterations",
        "rank_rtol",
        "fail_on_seeds",
    )
    #: keys allowed in experiment.data
    data_keys = ("name", "n_test", "input_dim", "classes", "separation")
    columns = {
        # outcome (status, final_loss, grad_norm, iterations are contract columns)
        "train_error": "float64",
        "zero_train_error": "bool",
        "test_accuracy": "float64",
        "epochs": "int64",
        # Psi probes, at initialisation and at the end
        **{
            f"{prefix}{name}": kind
            for prefix in ("init_", "")
            for name, kind in (
                ("psi_rank", "int64"),
                ("psi_rank_loose", "int64"),
                ("psi_sigma_min", "float64"),
                ("psi_full_rank", "bool"),
            )
        },
        "psi_rank_tol": "float64",
        # the cell's configuration (grid axes first)
        "width": "int64",
        "depth": "int64",
        "activation": "string",
        "n_samples": "int64",
        "M": "int64",
        "M_over_n": "float64",
        "architecture": "string",
        "mode": "string",
        "data": "string",
        "skip_layers": "list<int64>",
        "n_test": "int64",
        "input_dim": "int64",
        "classes": "int64",
        "separation": "float64",
        "sgd_lr": "float64",
        "sgd_momentum": "float64",
        "sgd_nesterov": "bool",
        "sgd_batch_size": "int64",
        "sgd_epochs": "int64",
        "sgd_milestones": "list<int64>",
        "sgd_gamma": "float64",
        "sgd_weight_decay": "float64",
        "rand_max_iterations": "int64",
        "rank_rtol": "float64",
    }

    # ------------------------------------------------------------------ validation
    def cells(self, cfg) -> list[dict[str, Any]]:
        from landscape_core.data import CLASSIFICATION_SETS
        from landscape_core.skip_networks import ARCHITECTURES, MODES

        experiment, grid, fail_on_seeds = self.read_config(cfg)
        data = experiment.get("data") or {}
        if not isinstance(data, dict):
            raise ConfigError(
                "experiment.data", f"must be a mapping of data settings ({', '.join(self.data_keys)}), got {data!r}"
            )
        for key in data:
            if key not in self.data_keys:
                raise ConfigError(f"experiment.data.{key}", f"unknown key; allowed: {', '.join(self.data_keys)}")
        sgd = experiment.get("sgd") or {}
        if not isinstance(sgd, dict):
            raise ConfigError("experiment.sgd", f"must be a mapping of SGD settings, got {sgd!r}")
        skip_layers = experiment.get("skip_layers")
        if skip_layers is not None and not isinstance(skip_layers, list):
            raise ConfigError(
                "experiment.skip_layers",
                f"must be a list of hidden layers (1-based) or null = all, got {skip_layers!r}",
            )

        axes = self.grid_axes.check(grid, self.name)
        self._check_axes(axes, ARCHITECTURES, MODES, CLASSIFICATION_SETS)

        cells = []
        for values in grid_points(axes):
            n = values["n_samples"]
            if "M_over_n" in values:
                M, M_source = M_RATIO.resolve(values), "sweep.grid.M_over_n"
            elif "M" in values:
                M, M_source = values["M"], "sweep.grid.M"
            else:
                M, M_source = experiment.get("M", "n_samples"), "experiment.M"
                if M != "n_samples" and not (is_int(M) and M >= 1):
                    raise ConfigError(
                        "experiment.M", f"must be an integer >= 1 or n_samples (M = N, the paper's choice), got {M!r}"
                    )
            options: dict[str, Any] = {
                "width": values["width"],
                "depth": values["depth"],
                "activation": values["activation"],
                "n_samples": n,
                "M": M,
                "skip_layers": skip_layers,
                "architecture": values.get("architecture", experiment.get("architecture", "skip")),
                "mode": values.get("mode", experiment.get("mode", "sgd")),
                "data": values.get("data", data.get("name", "mixture")),
                **{key: data[key] for key in ("n_test", "input_dim", "classes", "separation") if key in data},
                "sgd": sgd,
                **{key: experiment[key] for key in ("rand_max_iterations", "rank_rtol") if key in experiment},
            }
            cells.append(
                {
                    "experiment": self.name,
                    **self._resolve(options, axes, M_source),
                    "fail_on_seeds": sorted(fail_on_seeds),
                }
            )
        return cells

    def _check_axes(self, axes: dict[str, list], architectures, modes, data_sets) -> None:
        for axis in ("width", "n_samples", "M"):
            for value in axes.get(axis, []):
                if not is_int(value) or value < 1:
                    raise ConfigError(f"sweep.grid.{axis}", f"must be an integer >= 1, got {value!r}")
        for value in axes["depth"]:
            if not is_int(value) or value < 2:
                raise ConfigError(
                    "sweep.grid.depth", f"must be an integer >= 2 (weight layers; 2 = one hidden layer), got {value!r}"
                )
        for value in axes.get("M_over_n", []):
            if not is_number(value) or value <= 0:
                raise ConfigError(
                    "sweep.grid.M_over_n", f"must be a number > 0 (skip neurons M / samples N), got {value!r}"
                )
        for axis, allowed in (
            ("activation", ACTIVATIONS),
            ("architecture", architectures),
            ("mode", modes),
            ("data", data_sets),
        ):
            for value in axes.get(axis, []):
                if value not in allowed:
                    raise ConfigError(f"sweep.grid.{axis}", f"unknown {axis} {value!r}; allowed: {', '.join(allowed)}")

    def _resolve(self, options: dict, axes: dict, M_source: str) -> dict[str, Any]:
        """The flat cell parameters of ``options`` (the core's arguments), every default
        explicit, checked by the core's :func:`resolve_options`; its ValueError mapped to the
        config path at fault."""
        import inspect

        from landscape_core.skip_networks import resolve_options

        defaults = {
            name: p.default
            for name, p in inspect.signature(resolve_options).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        resolved = {**defaults, **options}
        try:
            core = resolve_options(**resolved)
        except OptionError as exc:
            field, message = exc.field, exc.message
            head, _, rest = field.partition(".")
            if field in ("width", "depth", "activation", "n_samples"):
                path = f"sweep.grid.{field}"
            elif field == "skip.M":
                path = M_source
            elif field == "skip.layers":
                path = "experiment.skip_layers"
            elif field in ("architecture", "mode"):
                path = f"sweep.grid.{field}" if field in axes else f"experiment.{field}"
            elif field == "data.name":
                path = "sweep.grid.data" if "data" in axes else "experiment.data.name"
            elif head in ("data", "sgd"):
                path = f"experiment.{field}"
            elif field in ("input_dim", "output_dim"):
                path = "experiment.data.input_dim" if field == "input_dim" else "experiment.data.classes"
            elif field in ("rand_max_iterations", "rank_rtol"):
                path = f"experiment.{field}"
            else:
                path = "experiment"
            raise ConfigError(path, message or str(exc)) from None
        spec, M, sgd_spec = core.model, core.M, core.sgd
        params = {
            "width": resolved["width"],
            "depth": resolved["depth"],
            "activation": resolved["activation"],
            "n_samples": resolved["n_samples"],
            "M": M,
            "M_over_n": M / resolved["n_samples"],
            "architecture": resolved["architecture"],
            "mode": resolved["mode"],
            "data": resolved["data"],
            "skip_layers": None if resolved["skip_layers"] is None else list(resolved["skip_layers"]),
            "n_test": resolved["n_test"],
            "input_dim": spec.input_dim,  # digits: 64 whatever experiment.data.input_dim says
            "classes": spec.output_dim,  # digits: 10
            "separation": float(resolved["separation"]),
            **{f"sgd_{f.name}": getattr(sgd_spec, f.name) for f in fields(sgd_spec)},
            "rand_max_iterations": resolved["rand_max_iterations"],
            "rank_rtol": float(resolved["rank_rtol"]),
        }
        params["sgd_milestones"] = list(params["sgd_milestones"])
        params["sgd_lr"], params["sgd_momentum"] = float(params["sgd_lr"]), float(params["sgd_momentum"])
        params["sgd_gamma"], params["sgd_weight_decay"] = float(params["sgd_gamma"]), float(params["sgd_weight_decay"])
        return params

    def core_options(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of the core's ``resolve_options`` (the options of ``run_skip_networks``) of a
        cell's flat ``params``."""
        from landscape_core.training import SGDSpec

        keys = (
            "width",
            "depth",
            "activation",
            "n_samples",
            "M",
            "skip_layers",
            "architecture",
            "mode",
            "data",
            "n_test",
            "input_dim",
            "classes",
            "separation",
            "rand_max_iterations",
            "rank_rtol",
        )
        return {**{key: params[key] for key in keys}, "sgd": {f.name: params[f"sgd_{f.name}"] for f in fields(SGDSpec)}}

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.skip_networks import resolve_options, run_skip_networks

        return run_skip_networks(resolve_options(**self.core_options(params)), seeds=list(seeds), device=device)

    # --------------------------------------------------------------------- report


EXPERIMENT = SkipNetworks

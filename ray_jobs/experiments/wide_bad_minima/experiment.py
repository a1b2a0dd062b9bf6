"""Sub-optimal minima at every width (Ding, Li & Sun 2019; survey IV-C): the adapter to
``landscape_core.wide_bad_minima`` (construction) and ``.wide_bad_minima_checks`` (tests).

Grid axes: ``width`` (last hidden layer, >= 2), ``depth`` (2 or 3 weight layers),
``activation`` (the construction's class, or ``linear``: Kawaguchi's control). The cell's
parameters are flat and named as the Parquet columns; :meth:`core_options` turns them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, cast

from landscape_core.errors import OptionError
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import Experiment, check_types
from ray_jobs.experiments.columns import OPTIMIZER_COLUMNS
from ray_jobs.experiments.grid import GridAxes, grid_points

CONSTRUCTION_KEYS = ("n_samples", "input_dim", "residual_rms", "output_scale", "draws", "curvature_safety")


class WideBadMinima(Experiment):
    """Constructed sub-optimal local minima at widths 2..1024 and the deep linear control."""

    name = "wide_bad_minima"
    help = "width (>= 2), depth (2 or 3), activation (sigmoid, tanh, softplus, ...; linear = control); group optimizer"
    tiny_budget = (
        "optimizer.max_iterations=5",
        "experiment.checks.train_starts=1",
        "experiment.checks.descent_starts=1",
        "experiment.checks.perturb_directions=2",
        "experiment.checks.radii=2",
        "experiment.checks.lanczos_steps=8",
    )
    grid_axes = GridAxes(
        ("width", "depth", "activation"),
        required={"width": "[2,4,8]", "depth": "[2,3]", "activation": "[sigmoid,tanh,linear]"},
    )
    statuses = ("suboptimal_min", "saddle", "global", "not_critical")
    groups = ("optimizer",)
    experiment_keys = ("name", *CONSTRUCTION_KEYS, "checks", "fail_on_seeds")
    columns = {
        "width": "int64",
        "depth": "int64",
        "activation": "string",
        "n_samples": "int64",
        "input_dim": "int64",
        "residual_rms": "float64",
        "output_scale": "float64",
        "draws": "int64",
        "curvature_safety": "float64",
        "point": "string",
        "num_params": "int64",
        "predicted_flat_dim": "int64",
        # construction certificate
        "condition_residual": "float64",
        "second_order_max_eig": "float64",
        "reduced_min_eig": "float64",
        "min_abs_phi2": "float64",
        "residual_rms_used": "float64",
        "draw": "int64",
        "condition_holds": "bool",
        # (b) sub-optimality
        "trained_best_loss": "float64",
        "trained_bad_fraction": "float64",
        "trained_above_point_fraction": "float64",
        "suboptimal": "bool",
        # (c) local-min evidence
        "min_eig": "float64",
        "max_eig": "float64",
        "hessian_method": "string",
        "perturb_min_change": "float64",
        "perturb_min_change_by_radius": "list<float64>",
        "perturb_decrease": "bool",
        "descent_min_loss": "float64",
        "descent_lower": "bool",
        "local_min_evidence": "bool",
        # (d) flat directions
        "tangent_residual": "float64",
        "normal_min_eig": "float64",
        "kernel_dim": "int64",
        "flat_as_predicted": "bool",
        # checks and optimizer settings
        "grad_tol": "float64",
        "eig_tol": "float64",
        "kernel_rtol": "float64",
        "perturb_directions": "int64",
        "radius_min": "float64",
        "radius_max": "float64",
        "radii": "int64",
        "perturb_tol": "float64",
        "descent_starts": "int64",
        "descent_radius": "float64",
        "descent_tol": "float64",
        "descent_grad_tol": "float64",
        "train_starts": "int64",
        "loss_tol": "float64",
        "gap_tol": "float64",
        "exact_hessian_max_params": "int64",
        "lanczos_steps": "int64",
        **OPTIMIZER_COLUMNS,
    }

    def cells(self, cfg) -> list[dict[str, Any]]:
        from omegaconf import OmegaConf

        from landscape_core.training import TrainSpec
        from landscape_core.wide_bad_minima import ConstructionSpec
        from landscape_core.wide_bad_minima_checks import CheckSpec

        experiment, grid, fail_on_seeds = self.read_config(cfg)
        optimizer = cast(dict[str, Any], OmegaConf.to_container(cfg.optimizer, resolve=True))
        if not isinstance(optimizer.get("name"), str):
            raise ConfigError("optimizer", f"required by {self.name}: choose optimizer=<option>")
        checks = experiment.get("checks") or {}
        if not isinstance(checks, dict):
            raise ConfigError("experiment.checks", f"must be a mapping of check settings, got {checks!r}")
        unknown = sorted(set(checks) - {f.name for f in fields(CheckSpec)})
        if unknown:
            allowed = ", ".join(f.name for f in fields(CheckSpec))
            raise ConfigError(f"experiment.checks.{unknown[0]}", f"unknown key; allowed: {allowed}")
        check_types("experiment.checks", checks, CheckSpec)
        check_types("optimizer", optimizer, TrainSpec, {"optimizer": "name"})
        construction = {k: experiment[k] for k in CONSTRUCTION_KEYS if k in experiment}
        check_types("experiment", construction, ConstructionSpec)
        axes = self.grid_axes.check(grid, self.name)
        cells = []
        for values in grid_points(axes):
            params = {
                "experiment": self.name,
                "width": values["width"],
                "depth": values["depth"],
                "activation": values["activation"],
                **construction,
                "checks": checks,
                "optimizer": optimizer,
            }
            spec, check_spec, train_spec = self._resolve(params)
            flat = {
                "experiment": self.name,
                **{f.name: getattr(spec, f.name) for f in fields(ConstructionSpec)},
                **{f.name: getattr(check_spec, f.name) for f in fields(CheckSpec)},
                **{
                    ("optimizer" if f.name == "optimizer" else f"optimizer_{f.name}"): getattr(train_spec, f.name)
                    for f in fields(TrainSpec)
                },
                "fail_on_seeds": fail_on_seeds,
            }
            cells.append(flat)
        return cells

    @staticmethod
    def _resolve(params: dict[str, Any]):
        """The core's specs of one cell (validated); OptionError mapped to the config path."""
        from landscape_core.training import TrainSpec
        from landscape_core.wide_bad_minima import ConstructionSpec
        from landscape_core.wide_bad_minima_checks import CheckSpec

        opt = dict(params["optimizer"])
        opt["optimizer"] = opt.pop("name")
        try:
            spec = ConstructionSpec(
                width=params["width"],
                depth=params["depth"],
                activation=params["activation"],
                **{k: params[k] for k in CONSTRUCTION_KEYS if k in params},
            )
            spec.validate()
            checks = CheckSpec(**params["checks"])
            checks.validate()
            train_spec = TrainSpec(**opt)
            train_spec.validate()
        except OptionError as exc:
            field = exc.field
            if field in ("width", "depth", "activation"):
                path = f"sweep.grid.{field}"
            elif field.startswith("optimizer."):
                path = field
            else:
                path = f"experiment.{field}"
            raise ConfigError(path, exc.message) from None
        return spec, checks, train_spec

    def core_options(self, params: dict[str, Any]):
        """(ConstructionSpec, CheckSpec, TrainSpec) of a cell's flat parameters."""
        from landscape_core.training import TrainSpec
        from landscape_core.wide_bad_minima import ConstructionSpec
        from landscape_core.wide_bad_minima_checks import CheckSpec

        spec = ConstructionSpec(**{f.name: params[f.name] for f in fields(ConstructionSpec)})
        checks = CheckSpec(**{f.name: params[f.name] for f in fields(CheckSpec)})
        train_spec = TrainSpec(
            **{
                f.name: params["optimizer" if f.name == "optimizer" else f"optimizer_{f.name}"]
                for f in fields(TrainSpec)
            }
        )
        return spec, checks, train_spec

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.wide_bad_minima_checks import run_wide_bad_minima

        spec, checks, train_spec = self.core_options(params)
        return run_wide_bad_minima(spec, checks, train_spec, seeds=list(seeds), device=device)


EXPERIMENT = WideBadMinima

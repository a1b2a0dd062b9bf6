"""Landscape probes (survey section V-A): the adapter to ``landscape_core.landscape_probes``.

One experiment with a ``probe`` axis (``interpolation``: Conjecture V.1, F along the
segment from the initial point to the solution and between two solutions; ``slice``:
Conjecture V.2, filter-normalized 2-D slices and their sub-optimal basins) rather than two
folders: both probes train the same networks (plain or skip MLPs, the data and optimizer
groups) with the same seeds, so an interpolation cell and a slice cell of the same grid
point probe the same solutions, and validation, columns and report live once. Grid axes,
flat cell parameters (the core's resolved options), validation by the core's own checks
(including the slice's memory estimate) and the batched run of a seed chunk; the report is
in :mod:`.layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, cast

from landscape_core.errors import OptionError
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import ACTIVATIONS, Experiment, check_types, is_int
from ray_jobs.experiments.columns import TRAINED_MLP_COLUMNS
from ray_jobs.experiments.grid import GridAxes, grid_points

PROBES = ("interpolation", "slice")
ARCHITECTURES = ("plain", "skip")


class LandscapeProbes(Experiment):
    """Monotone interpolation and 2-D slices (survey section V-A; Conjectures V.1 and V.2).

    Grid axes: ``width``, ``depth`` (weight layers, >= 2), ``activation``, ``n_samples``
    (required); ``architecture`` (plain | skip) and ``probe`` (interpolation | slice), each
    defaulting to the experiment group's value. The cell's parameters are flat, named as
    the Parquet columns (``surface`` settings under their own names: ``grid``, ``radius``,
    ``basin_tol``...), every core default explicit."""

    name = "landscape_probes"
    help = (
        "width, depth, activation, n_samples (required), architecture (plain|skip), "
        "probe (interpolation|slice); groups optimizer, data"
    )
    tiny_budget = ("optimizer.max_iterations=10", "experiment.surface.grid=7", "experiment.surface.points=11")
    grid_axes = GridAxes(
        ("width", "depth", "activation", "n_samples", "architecture", "probe"),
        required={"width": "[4,8]", "depth": "[2,3]", "activation": "[tanh,relu]", "n_samples": "[16]"},
    )
    statuses = ("monotone", "non_monotone", "basin_free", "basins", "diverged")
    groups = ("optimizer", "data")
    experiment_keys = ("name", "loss", "init", "output_bias", "architecture", "probe", "surface", "fail_on_seeds")
    columns = {
        "trained_global": "bool",
        # interpolation probe
        "init_loss": "float64",
        "monotone": "bool",
        "max_bump": "float64",
        "relative_bump": "float64",
        "bump_t": "float64",
        "interp_curve": "list<float64>",
        "pair_final_loss": "float64",
        "pair_barrier": "float64",
        "pair_curve": "list<float64>",
        # slice probe
        "slice_centre": "float64",
        "slice_max": "float64",
        "slice_min": "float64",
        "n_basins": "int64",
        "basin_free": "bool",
        "convex_fraction": "float64",
        "slice_values": "list<float64>",
        # the cell's configuration (grid axes first)
        "width": "int64",
        "depth": "int64",
        "activation": "string",
        "n_samples": "int64",
        "architecture": "string",
        "probe": "string",
        "skip_M": "int64",
        **TRAINED_MLP_COLUMNS,
        "points": "int64",
        "grid": "int64",
        "radius": "float64",
        "monotone_tol": "float64",
        "basin_tol": "float64",
        "convexity_tol": "float64",
        "bias_directions": "string",
        "grid_batch": "int64",
        "max_memory_mb": "float64",
        "keep_surfaces": "int64",
        "loss_tol": "float64",
    }

    def cells(self, cfg) -> list[dict[str, Any]]:
        from omegaconf import OmegaConf

        from landscape_core.landscape_probes import SurfaceSpec
        from ray_jobs.config import available_options

        experiment, grid, fail_on_seeds = self.read_config(cfg)
        optimizer = cast(dict[str, Any], OmegaConf.to_container(cfg.optimizer, resolve=True))
        data = cast(dict[str, Any], OmegaConf.to_container(cfg.data, resolve=True))
        for group, values in (("optimizer", optimizer), ("data", data)):
            if not isinstance(values.get("name"), str):
                raise ConfigError(
                    group,
                    f"required by {self.name}: choose {group}=<option>; allowed: {', '.join(available_options(group))}",
                )
        surface = experiment.get("surface") or {}
        if not isinstance(surface, dict):
            raise ConfigError("experiment.surface", f"must be a mapping of probe settings, got {surface!r}")
        check_types("experiment.surface", surface, SurfaceSpec)
        if "n_samples" in data:
            raise ConfigError("data.n_samples", "the number of samples is the grid axis sweep.grid.n_samples")
        axes = self.grid_axes.check(grid, self.name)
        self._check_axes(axes)
        cells = []
        for values in grid_points(axes):
            options = self._resolve(values, axes, experiment, surface, optimizer, data)
            cells.append({"experiment": self.name, **options.columns(), "fail_on_seeds": sorted(fail_on_seeds)})
        return cells

    def _check_axes(self, axes: dict[str, list]) -> None:
        for axis, minimum in (("width", 1), ("depth", 2), ("n_samples", 1)):
            for value in axes[axis]:
                if not is_int(value) or value < minimum:
                    raise ConfigError(f"sweep.grid.{axis}", f"must be an integer >= {minimum}, got {value!r}")
        for axis, allowed in (("activation", ACTIVATIONS), ("architecture", ARCHITECTURES), ("probe", PROBES)):
            for value in axes.get(axis, []):
                if value not in allowed:
                    raise ConfigError(f"sweep.grid.{axis}", f"unknown {axis} {value!r}; allowed: {', '.join(allowed)}")

    def _resolve(self, values, axes, experiment, surface, optimizer, data):
        """The core's resolved options of one cell; its OptionError mapped to the config path."""
        from landscape_core.landscape_probes import resolve_options

        try:
            return resolve_options(
                width=values["width"],
                depth=values["depth"],
                activation=values["activation"],
                n_samples=values["n_samples"],
                architecture=values.get("architecture", experiment.get("architecture", "plain")),
                probe=values.get("probe", experiment.get("probe", "interpolation")),
                data=data,
                optimizer=optimizer,
                surface=surface,
                loss=experiment.get("loss", "square"),
                init=experiment.get("init", "lecun"),
                output_bias=experiment.get("output_bias", False),
            )
        except OptionError as exc:
            field = exc.field
            head, _, rest = field.partition(".")
            if head == "data":
                path = "sweep.grid.n_samples" if rest == "n_samples" else field
            elif head == "optimizer":
                path = field
            elif head == "surface":
                path = f"experiment.{field}"
            elif field in ("input_dim", "output_dim"):
                path = f"data.{field}"
            elif field in ("width", "depth", "activation", "n_samples") or field in axes:
                path = f"sweep.grid.{field}"
            elif field in ("architecture", "probe", "loss", "init", "output_bias"):
                path = f"experiment.{field}"
            else:
                path = "experiment"
            raise ConfigError(path, exc.message) from None

    def core_options(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of the core's ``resolve_options`` of a cell's flat ``params``."""
        from landscape_core.data import DataSpec
        from landscape_core.landscape_probes import SurfaceSpec
        from landscape_core.training import TrainSpec

        data = {"name": params["data"]}
        data.update({f.name: params[f"data_{f.name}"] for f in fields(DataSpec) if f.name not in ("name", "n_samples")})
        optimizer = {"name": params["optimizer"]}
        optimizer.update({f.name: params[f"optimizer_{f.name}"] for f in fields(TrainSpec) if f.name != "optimizer"})
        keys = ("width", "depth", "activation", "n_samples", "architecture", "probe", "loss", "init", "output_bias")
        return {
            **{key: params[key] for key in keys},
            "data": data,
            "optimizer": optimizer,
            "surface": {f.name: params[f.name] for f in fields(SurfaceSpec)},
        }

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.landscape_probes import resolve_options, run_landscape_probes

        return run_landscape_probes(resolve_options(**self.core_options(params)), seeds=list(seeds), device=device)


EXPERIMENT = LandscapeProbes

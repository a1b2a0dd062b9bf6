"""Proposition IV.1 of the survey (section IV-A), the single-neuron table, as a sweep experiment.

protocols.md section 5; the science is :mod:`landscape_core.single_neuron`. One cell = one
activation and one example (x, y); one run = one seed = one random start (v, w) of gradient
descent on F(v, w) = (y - v phi(w x))^2, its endpoint classified global / suboptimal_min /
saddle / not_converged / diverged, beside the proposition's condition decided from phi
(``condition_bad_minima``, ``phi_zeros``, the same on every row of a cell). The report
(:mod:`.layout`) puts "condition says" beside "runs say" per activation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from landscape_core.errors import OptionError
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import Experiment, check_types
from ray_jobs.experiments.grid import GridAxes, grid_points

#: the core's options that are grid axes (the others are experiment settings)
AXES = ("activation", "x", "y")


class SingleNeuron(Experiment):
    """Proposition IV.1: grid axes ``activation`` (required; names of
    ``landscape_core.single_neuron.ACTIVATIONS``), ``x``, ``y`` (the example, nonzero; default
    the experiment group's). Every other option of ``SingleNeuronOptions`` is a setting of the
    experiment group, recorded in every row under its own name."""

    name = "single_neuron"
    help = "activation (required: relu, square, square_plus_one, sigmoid, tanh, ... figure2), x, y (nonzero)"
    grid_axes = GridAxes(AXES, required={"activation": "[relu,sigmoid,figure2]"})
    statuses = ("global", "suboptimal_min", "saddle", "not_converged", "diverged")
    tiny_budget = ("experiment.max_iterations=5", "experiment.scan_points=201", "experiment.perturb_directions=4")
    groups = ()
    experiment_keys = (
        "name",
        "fail_on_seeds",
        "x",
        "y",
        "init_scale",
        "lr",
        "max_step",
        "max_iterations",
        "line_search_steps",
        "grad_tol",
        "loss_tol",
        "eig_tol",
        "perturb_radii",
        "perturb_directions",
        "perturb_tol",
        "divergence_radius",
        "scan_range",
        "scan_points",
        "zero_tol",
        "side_radius",
    )
    columns = {
        "activation": "string",
        "x": "float64",
        "y": "float64",
        "v0": "float64",
        "w0": "float64",
        "v": "float64",
        "w": "float64",
        "min_eig": "float64",
        "perturb_min_change": "float64",
        "perturb_decreases": "int64",
        "condition_bad_minima": "bool",
        "phi_zeros": "string",
        "init_scale": "float64",
        "lr": "float64",
        "max_step": "float64",
        "max_iterations": "int64",
        "line_search_steps": "int64",
        "grad_tol": "float64",
        "loss_tol": "float64",
        "eig_tol": "float64",
        "perturb_radii": "list<float64>",
        "perturb_directions": "int64",
        "perturb_tol": "float64",
        "divergence_radius": "float64",
        "scan_range": "float64",
        "scan_points": "int64",
        "zero_tol": "float64",
        "side_radius": "float64",
    }

    def cells(self, cfg) -> list[dict[str, Any]]:
        from landscape_core.single_neuron import SingleNeuronOptions

        experiment, grid, fail_on_seeds = self.read_config(cfg)
        axes = self.grid_axes.check(grid, self.name)
        settings = {k: v for k, v in experiment.items() if k not in ("name", "fail_on_seeds")}
        if "perturb_radii" in settings and not isinstance(settings["perturb_radii"], list):
            raise ConfigError(
                "experiment.perturb_radii", f"must be a list of radii > 0, got {settings['perturb_radii']!r}"
            )
        typed = {k: v for k, v in settings.items() if k != "perturb_radii"}
        check_types("experiment", typed, SingleNeuronOptions)  # perturb_radii checked above and by the core
        cells = []
        for values in grid_points(axes):
            options = {**settings, **values}
            for key in ("x", "y"):
                if isinstance(options.get(key), int) and not isinstance(options.get(key), bool):
                    options[key] = float(options[key])
            if "perturb_radii" in options:
                options["perturb_radii"] = tuple(options["perturb_radii"])
            try:
                core = SingleNeuronOptions(**options).validate()
            except OptionError as exc:
                path = f"sweep.grid.{exc.field}" if exc.field in axes else f"experiment.{exc.field}"
                raise ConfigError(path, exc.message) from None
            cells.append({"experiment": self.name, **core.columns(), "fail_on_seeds": fail_on_seeds})
        return cells

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.single_neuron import SingleNeuronOptions, run_single_neuron

        names = {f.name for f in fields(SingleNeuronOptions)}
        options = {k: v for k, v in params.items() if k in names}
        options["perturb_radii"] = tuple(options["perturb_radii"])
        return run_single_neuron(SingleNeuronOptions(**options), seeds=list(seeds), device=device)


EXPERIMENT = SingleNeuron

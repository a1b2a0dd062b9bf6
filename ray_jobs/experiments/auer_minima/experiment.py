"""Auer, Herbster & Warmuth (1995) Theorem 3.4, exponentially many minima of one sigmoid
neuron, as a sweep experiment.

protocols.md section 5; the science is :mod:`landscape_core.auer_minima`. One cell = one
construction (n examples in R^d, ``auer_dataset(n, d)``) and one start design; one run = one
seed = one start of a modified Newton descent on E_S, its endpoint checked (strict minimum:
Hessian positive definite) and located (``final_w``, ``cell_index``). The distinct minima of a
cell are counted by the report (:mod:`.layout`), grouping the endpoints of all its units by
distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from landscape_core.errors import OptionError
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import Experiment, check_types
from ray_jobs.experiments.grid import Alternative, GridAxes, Ratio, grid_points

AXES = ("n", "n_over_d", "d", "starts")
#: n = n_over_d x d (an integer): a grid over examples per axis, valid for every d
N_RATIO = Ratio("n_over_d", "n", "d")


class AuerMinima(Experiment):
    """Theorem 3.4: grid axes ``d`` (required), either ``n`` (n >= d) or ``n_over_d``
    (n = n_over_d x d, an integer) and ``starts`` (log_uniform | cells; default the
    experiment group's). Every other option of
    ``AuerOptions`` is a setting of the experiment group, recorded in every row."""

    name = "auer_minima"
    help = "d (required), n or n_over_d (n >= d), starts (log_uniform|cells): one sigmoid neuron, Theorem 3.4"
    grid_axes = GridAxes(
        AXES, required={"d": "[1,2]"}, alternatives=(Alternative("n", "n_over_d", "n = n_over_d x d", example="[4,8]"),)
    )
    statuses = ("local_min", "saddle", "not_converged", "diverged")
    tiny_budget = ("experiment.max_iterations=3",)
    groups = ()
    experiment_keys = (
        "name",
        "fail_on_seeds",
        "y",
        "shrink",
        "interval",
        "starts",
        "start_spread",
        "max_iterations",
        "line_search_steps",
        "max_step",
        "eig_floor",
        "grad_tol",
        "eig_tol",
        "group_tol",
        "divergence_factor",
    )
    columns = {
        "n": "int64",
        "n_over_d": "float64",
        "d": "int64",
        "starts": "string",
        "start_w": "list<float64>",
        "final_w": "list<float64>",
        "min_eig": "float64",
        "cell_index": "int64",
        "start_cell": "int64",
        "predicted_minima": "int64",
        "minima_1d": "int64",
        "examples_x": "list<float64>",
        "margin_1d": "float64",
        "y": "float64",
        "shrink": "float64",
        "interval": "float64",
        "start_spread": "float64",
        "max_iterations": "int64",
        "line_search_steps": "int64",
        "max_step": "float64",
        "eig_floor": "float64",
        "grad_tol": "float64",
        "eig_tol": "float64",
        "group_tol": "float64",
        "divergence_factor": "float64",
    }

    def cells(self, cfg) -> list[dict[str, Any]]:
        from landscape_core.auer_minima import AuerOptions

        experiment, grid, fail_on_seeds = self.read_config(cfg)
        axes = self.grid_axes.check(grid, self.name)
        settings = {k: v for k, v in experiment.items() if k not in ("name", "fail_on_seeds")}
        check_types("experiment", settings, AuerOptions)
        cells = []
        for values in grid_points(axes):
            value = values["d"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError("sweep.grid.d", f"must be an integer >= 1, got {value!r}")
            if "n_over_d" in values:
                values = {**values, "n": N_RATIO.resolve(values)}
            elif isinstance(values["n"], bool) or not isinstance(values["n"], int) or values["n"] < 1:
                raise ConfigError("sweep.grid.n", f"must be an integer >= 1, got {values['n']!r}")
            n_over_d = values.pop("n_over_d", None)
            options = {**settings, **values}
            for key in ("y", "shrink", "interval", "start_spread", "max_step", "eig_floor", "grad_tol", "eig_tol"):
                if isinstance(options.get(key), int) and not isinstance(options.get(key), bool):
                    options[key] = float(options[key])
            try:
                core = AuerOptions(**options).validate()
            except OptionError as exc:
                field = "n_over_d" if exc.field == "n" and "n_over_d" in axes else exc.field
                path = f"sweep.grid.{field}" if field in axes else f"experiment.{field}"
                raise ConfigError(path, exc.message) from None
            ratio = float(n_over_d) if n_over_d is not None else core.n / core.d
            cells.append({"experiment": self.name, **core.columns(), "n_over_d": ratio, "fail_on_seeds": fail_on_seeds})
        return cells

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.auer_minima import AuerOptions, run_auer_minima

        names = {f.name for f in fields(AuerOptions)}
        options = AuerOptions(**{k: v for k, v in params.items() if k in names})
        return run_auer_minima(options, seeds=list(seeds), device=device)


EXPERIMENT = AuerMinima

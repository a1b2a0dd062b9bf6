"""The experiments the service can sweep, and what the service needs to know about each.

An :class:`Experiment` turns the composed config into one parameter dict per grid cell
(validating it), runs one chunk of seeds of a cell by calling ``landscape_core``, and
declares its Parquet columns, the columns that identify a cell in the report, and how
published reference tables map onto report columns. Adding an experiment = one subclass
here plus a ``conf/experiment/<name>.yaml``.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import pyarrow as pa

from ray_jobs.errors import ConfigError


class Experiment:
    """What the service needs from one kind of experiment (subclass per experiment)."""

    name: str = ""
    #: keys allowed under ``sweep.grid``
    axes: tuple[str, ...] = ()
    #: columns naming a cell in the report table, in display order
    table_axes: tuple[str, ...] = ()
    #: Parquet columns this experiment adds to the results contract (name -> Arrow type)
    columns: dict[str, pa.DataType] = {}
    #: published-table column -> (report column, scale factor to our units)
    reference_columns: dict[str, tuple[str, float]] = {}

    def cells(self, cfg) -> list[dict[str, Any]]:
        """One fully resolved parameter dict per grid cell; raises :class:`ConfigError`."""
        raise NotImplementedError

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        """Run ``seeds`` of the cell ``params`` as one batch; one record per seed, in order."""
        raise NotImplementedError

    def count_families(self, records: Sequence[dict], tol: float) -> int | None:
        """Number of distinct bad critical points among ``records`` of one cell (or None)."""
        return None


def _as_list(axis: str, value) -> list:
    """A grid axis value as a list (a scalar is a one-point axis); empty -> ConfigError."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError(f"sweep.grid.{axis}", "empty axis; give at least one value, e.g. [6, 7]")
    return values


class TeacherStudent(Experiment):
    """Safran & Shamir's teacher-student two-layer ReLU network (protocols.md section 1).

    Grid axes: ``k`` (teacher neurons, required), either ``n`` (student neurons, crossed
    with k) or ``n_minus_k`` (n = k + offset; default [0]), and optionally ``step`` and
    ``init_scale`` (override the protocol's value per cell). The cell's parameters are the
    experiment group (teacher, d, activation, keep_weights, fail_on_seeds) plus every key
    of the protocol group, passed to ``run_teacher_student`` as they are.
    """

    name = "teacher_student"
    axes = ("k", "n", "n_minus_k", "step", "init_scale")
    table_axes = ("k", "n")
    activations = ("relu",)
    #: experiment-group keys that are not options of the core function
    service_keys = ("name", "activation", "keep_weights", "fail_on_seeds")
    columns = {
        "k": pa.int64(),
        "n": pa.int64(),
        "d": pa.int64(),
        "teacher": pa.string(),
        "activation": pa.string(),
        "min_eig": pa.float64(),
        "max_eig": pa.float64(),
        "hessian_degenerate": pa.bool_(),
        "restarts": pa.int64(),
        "final_step": pa.float64(),
        "stopped_early": pa.bool_(),
        "init_scale": pa.float64(),
        "step": pa.float64(),
        "grad_tol": pa.float64(),
        "restart_grad_norm": pa.float64(),
        "max_iterations": pa.int64(),
        "bad_loss_threshold": pa.float64(),
        "eig_margin": pa.float64(),
        "early_stop_global": pa.bool_(),
        "monotone_rtol": pa.float64(),
        "max_restarts": pa.int64(),
        "final_weights": pa.list_(pa.float64()),
    }
    reference_columns = {
        "pct_runs_spurious": ("ref_frac_spurious", 0.01),
        "mean_min_eig": ("ref_mean_min_eig_spurious", 1.0),
        "mean_objective": ("ref_mean_objective_spurious", 1.0),
    }

    def cells(self, cfg) -> list[dict[str, Any]]:
        from omegaconf import OmegaConf

        experiment = OmegaConf.to_container(cfg.experiment, resolve=True)
        protocol = OmegaConf.to_container(cfg.protocol, resolve=True)
        grid = cfg.sweep.get("grid")
        grid = (OmegaConf.to_container(grid, resolve=True) if grid is not None else None) or {}
        activation = experiment.get("activation", "relu")
        if activation not in self.activations:
            raise ConfigError(
                "experiment.activation",
                f"unknown activation {activation!r} for {self.name}; allowed: {', '.join(self.activations)}",
            )
        fail_on_seeds = experiment.get("fail_on_seeds") or []
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in fail_on_seeds):
            raise ConfigError("experiment.fail_on_seeds", f"must be a list of integer seeds, got {fail_on_seeds!r}")
        if not grid:
            raise ConfigError("sweep.grid", f"empty grid; give at least the axis k, allowed axes: {', '.join(self.axes)}")
        for axis in grid:
            if axis not in self.axes:
                raise ConfigError(
                    f"sweep.grid.{axis}", f"unknown axis {axis!r} for {self.name}; allowed: {', '.join(self.axes)}"
                )
        if "k" not in grid:
            raise ConfigError("sweep.grid.k", f"required axis for {self.name} (e.g. sweep.grid.k=[6,7])")
        if "n" in grid and "n_minus_k" in grid:
            raise ConfigError("sweep.grid.n", "give either n or n_minus_k (n = k + offset), not both")
        axes = {axis: _as_list(axis, values) for axis, values in grid.items()}
        width_axis = "n" if "n" in axes else "n_minus_k"
        if width_axis == "n_minus_k":
            axes.setdefault("n_minus_k", [0])
        for offset in axes.get("n_minus_k", []):
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise ConfigError("sweep.grid.n_minus_k", f"must be integers (n = k + offset), got {offset!r}")

        names = list(axes)
        cells = []
        for point in itertools.product(*(axes[a] for a in names)):
            values = dict(zip(names, point))
            k = values["k"]
            n = values["n"] if width_axis == "n" else k + values["n_minus_k"] if isinstance(k, int) else None
            options = {key: value for key, value in experiment.items() if key not in self.service_keys}
            options.update(protocol)
            options.update({axis: values[axis] for axis in ("step", "init_scale") if axis in values})
            self._check_with_core(k, n, options, width_axis)
            params = {
                "experiment": self.name,
                "k": k,
                "n": n,
                **options,
                "d": options.get("d") if options.get("d") is not None else k,
                "activation": activation,
                "keep_weights": bool(experiment.get("keep_weights", True)),
                "fail_on_seeds": sorted(fail_on_seeds),
            }
            cells.append(params)
        return cells

    def _check_with_core(self, k, n, options: dict, width_axis: str) -> None:
        """Validate one cell with the core's own checks, naming the config path at fault."""
        from landscape_core.teacher_student import TeacherStudentProtocol

        try:
            unknown = set(options) - set(TeacherStudentProtocol.__dataclass_fields__)
            if unknown:
                allowed = ", ".join(sorted(TeacherStudentProtocol.__dataclass_fields__))
                raise ValueError(f"{sorted(unknown)[0]}: unknown teacher-student option (allowed: {allowed})")
            TeacherStudentProtocol(**options).validate(k=k, n=n)
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            if field == "k":
                path = "sweep.grid.k"
            elif field == "n":
                path = f"sweep.grid.{width_axis}"
                if width_axis == "n_minus_k":
                    message = f"n = k + n_minus_k {message} (k = {k})"
            elif field in ("d", "teacher"):
                path = f"experiment.{field}"
            else:
                path = f"protocol.{field}"
            raise ConfigError(path, message or str(exc)) from None

    def core_options(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword options of ``run_teacher_student`` held in a cell's ``params``."""
        from landscape_core.teacher_student import TeacherStudentProtocol

        return {key: params[key] for key in TeacherStudentProtocol.__dataclass_fields__ if key in params}

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.teacher_student import run_teacher_student

        return run_teacher_student(
            params["k"],
            params["n"],
            list(seeds),
            device=device,
            keep_weights=params["keep_weights"],
            **self.core_options(params),
        )

    def count_families(self, records: Sequence[dict], tol: float) -> int | None:
        from landscape_core.teacher_student import group_families

        spurious = [r for r in records if r["status"] == "spurious"]
        if any(r.get("final_weights") is None for r in spurious):
            return None  # weights not kept (experiment.keep_weights=false)
        return len(group_families(spurious, tol=tol, statuses=("spurious",)))


EXPERIMENTS: dict[str, Experiment] = {experiment.name: experiment for experiment in (TeacherStudent(),)}


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``; unknown -> ConfigError naming experiment.name."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ConfigError("experiment.name", f"unknown experiment {name!r}; allowed: {', '.join(EXPERIMENTS)}") from None

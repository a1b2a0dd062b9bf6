"""The experiments the service can sweep, and what the service needs to know about each.

An :class:`Experiment` turns the composed config into one parameter dict per grid cell
(validating it), runs one chunk of seeds of a cell by calling ``landscape_core``, and
declares its Parquet columns, the columns that identify a cell in the report, and how
published reference tables map onto report columns. Adding an experiment = one subclass
here (or in its own ``ray_jobs/<name>_experiment.py``, listed in :data:`EXPERIMENT_CLASSES`)
plus a ``conf/experiment/<name>.yaml``. An experiment also owns its report layout
(:meth:`Experiment.report_markdown`, :meth:`Experiment.report_files`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pyarrow as pa

from ray_jobs.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from ray_jobs.store import ResultsStore


def is_int(value) -> bool:
    """An integer config value (a YAML bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite number config value (a YAML bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
    #: config groups this experiment reads, among :data:`OPTIONAL_GROUPS` (the others must be absent)
    groups: tuple[str, ...] = ()
    #: boolean Parquet columns the report gives as a fraction with a Wilson interval
    #: (``n_<col>``, ``frac_<col>``, ``frac_<col>_lo`` / ``_hi``), beside the statuses
    fraction_columns: tuple[str, ...] = ()
    #: whether :meth:`count_families` means something (report column ``n_families``)
    has_families: bool = False
    #: display order of categorical table axes (values not listed sort after, alphabetically)
    axis_order: dict[str, tuple] = {}
    #: table axes the default markdown shows only when they vary between the table's cells
    optional_table_axes: tuple[str, ...] = ()

    #: keys allowed in the experiment group (None: the experiment checks them itself)
    experiment_keys: tuple[str, ...] | None = None

    def cells(self, cfg) -> list[dict[str, Any]]:
        """One fully resolved parameter dict per grid cell; raises :class:`ConfigError`."""
        raise NotImplementedError

    def read_config(self, cfg) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
        """The experiment group and the sweep grid as plain dicts, and the sorted
        fault-injection seeds (``experiment.fail_on_seeds``); unknown experiment keys (when
        :attr:`experiment_keys` is set) and non-integer seeds raise :class:`ConfigError`."""
        from omegaconf import OmegaConf

        experiment = OmegaConf.to_container(cfg.experiment, resolve=True)
        grid = cfg.sweep.get("grid")
        grid = (OmegaConf.to_container(grid, resolve=True) if grid is not None else None) or {}
        if self.experiment_keys is not None:
            for key in experiment:
                if key not in self.experiment_keys:
                    raise ConfigError(f"experiment.{key}", f"unknown key for {self.name}; allowed: {', '.join(self.experiment_keys)}")
        fail_on_seeds = experiment.get("fail_on_seeds") or []
        if not isinstance(fail_on_seeds, list) or not all(is_int(s) for s in fail_on_seeds):
            raise ConfigError("experiment.fail_on_seeds", f"must be a list of integer seeds, got {fail_on_seeds!r}")
        return experiment, grid, sorted(fail_on_seeds)

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        """Run ``seeds`` of the cell ``params`` as one batch; one record per seed, in order."""
        raise NotImplementedError

    def count_families(self, records: Sequence[dict], tol: float) -> int | None:
        """Number of distinct bad critical points among ``records`` of one cell (or None)."""
        return None

    def extra_aggregates(self, ran, *, confidence: float) -> dict[str, Any]:
        """Experiment-specific report columns of one cell from its rows that ran (a DataFrame);
        ``confidence`` is the report's level, for intervals."""
        return {}

    def report_markdown(self, table: "pd.DataFrame", *, sweep: str, confidence: float) -> str:
        """The report as GitHub markdown from the per-cell table (non-empty); default: the
        status table of :func:`ray_jobs.report.to_markdown`."""
        from ray_jobs.report import to_markdown

        return to_markdown(table, self, sweep=sweep, confidence=confidence)

    def report_files(self, table: "pd.DataFrame", store: "ResultsStore", *, sweep: str, confidence: float,
                     figure: bool) -> list[Path]:
        """Write the report's extra files (CSVs; figures when ``figure``) under
        ``store.report_dir`` from the per-cell table (non-empty); return their paths.
        ``table.md`` and ``table.csv`` are written by the caller."""
        return []


#: config groups that only some experiments use; :func:`ray_jobs.validate.validate` checks
#: that an experiment gets exactly the ones it declares in ``Experiment.groups``
OPTIONAL_GROUPS = ("protocol", "optimizer", "data")


def grid_axis_values(axis: str, value) -> list:
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
    table_axes = ("k", "n", "step", "init_scale")
    optional_table_axes = ("step", "init_scale")  # grid axes of a protocol comparison or search
    groups = ("protocol",)
    has_families = True
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

        experiment, grid, fail_on_seeds = self.read_config(cfg)
        protocol = OmegaConf.to_container(cfg.protocol, resolve=True)
        activation = experiment.get("activation", "relu")
        if activation not in self.activations:
            raise ConfigError(
                "experiment.activation",
                f"unknown activation {activation!r} for {self.name}; allowed: {', '.join(self.activations)}",
            )
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
        axes = {axis: grid_axis_values(axis, values) for axis, values in grid.items()}
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

    def report_files(self, table, store, *, sweep, confidence, figure) -> list[Path]:
        from ray_jobs.report import FIGURE_PNG, plot_spurious_fraction

        png = plot_spurious_fraction(table, store.report_dir / FIGURE_PNG, sweep=sweep, confidence=confidence) if figure else None
        return [png] if png is not None else []


#: activations of landscape_core.networks, in its order (a test keeps the two lists equal);
#: listed here so that validating and reporting need no torch import
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softplus", "swish", "silu", "gelu", "quadratic", "linear")


def _kind_of(default) -> tuple[str, Any]:
    """(description, check) of a config value whose core default is ``default``."""
    if isinstance(default, bool):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(default, int):
        return "an integer", is_int
    if isinstance(default, float):
        return "a finite number", is_number
    return "a string", lambda v: isinstance(v, str)


def check_types(path: str, values: dict, cls, rename: dict[str, str] | None = None) -> None:
    """Each value of ``values`` has the type of the core dataclass field it sets (else ConfigError)."""
    rename = rename or {}
    for f in fields(cls):
        key = rename.get(f.name, f.name)
        if key in values and f.default is not MISSING:
            kind, ok = _kind_of(f.default)
            if not ok(values[key]):
                raise ConfigError(f"{path}.{key}", f"must be {kind}, got {values[key]!r}")


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
    axes = ("width", "width_over_n", "depth", "activation", "n_samples")
    table_axes = ("activation", "depth", "n_samples", "width_over_n", "width")
    groups = ("optimizer", "data")
    fraction_columns = ("full_rank", "init_full_rank", "ntk_full_rank")
    axis_order = {"activation": ACTIVATIONS}
    #: keys allowed in the experiment group
    experiment_keys = ("name", "loss", "init", "output_bias", "probes", "fail_on_seeds")
    columns = {
        # outcome and probes (status, final_loss, grad_norm, iterations are contract columns)
        "stalled": pa.bool_(),
        "min_eig": pa.float64(),
        "max_eig": pa.float64(),
        "hessian_method": pa.string(),
        **{f"{prefix}{name}": kind for prefix in ("init_", "") for name, kind in (
            ("last_layer_rank", pa.int64()),
            ("last_layer_rank_loose", pa.int64()),
            ("last_layer_sigma_min", pa.float64()),
            ("last_layer_rank_tol", pa.float64()),
            ("last_layer_rank_tol_loose", pa.float64()),
            ("full_rank", pa.bool_()),
        )},
        "ntk_gram_rank": pa.int64(),
        "ntk_full_rank": pa.bool_(),
        # the cell's configuration (grid axes first)
        "width": pa.int64(),
        "depth": pa.int64(),
        "activation": pa.string(),
        "n_samples": pa.int64(),
        "width_over_n": pa.float64(),
        "num_params": pa.int64(),
        "input_dim": pa.int64(),
        "output_dim": pa.int64(),
        "loss": pa.string(),
        "init": pa.string(),
        "output_bias": pa.bool_(),
        "data": pa.string(),
        "data_input_dim": pa.int64(),
        "data_output_dim": pa.int64(),
        "data_classification": pa.bool_(),
        "data_teacher_width": pa.int64(),
        "data_teacher_depth": pa.int64(),
        "data_teacher_activation": pa.string(),
        "data_noise": pa.float64(),
        "optimizer": pa.string(),
        "optimizer_lr": pa.float64(),
        "optimizer_momentum": pa.float64(),
        "optimizer_nesterov": pa.bool_(),
        "optimizer_beta1": pa.float64(),
        "optimizer_beta2": pa.float64(),
        "optimizer_adam_eps": pa.float64(),
        "optimizer_history": pa.int64(),
        "optimizer_grad_tol": pa.float64(),
        "optimizer_stop_loss": pa.float64(),
        "optimizer_max_iterations": pa.int64(),
        "optimizer_compact_every": pa.int64(),
        "loss_tol": pa.float64(),
        "eig_margin": pa.float64(),
        "rank_rtol": pa.float64(),
        "exact_hessian_max_params": pa.int64(),
        "lanczos_steps": pa.int64(),
        "ntk_rank": pa.bool_(),
    }

    def cells(self, cfg) -> list[dict[str, Any]]:
        from omegaconf import OmegaConf

        experiment, grid, fail_on_seeds = self.read_config(cfg)
        optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
        data = OmegaConf.to_container(cfg.data, resolve=True)
        probes = experiment.get("probes") or {}
        if not isinstance(probes, dict):
            raise ConfigError("experiment.probes", f"must be a mapping of probe settings, got {probes!r}")
        from ray_jobs.config import available_options

        for group, values in (("optimizer", optimizer), ("data", data)):
            if not isinstance(values.get("name"), str):  # e.g. ~optimizer leaves only a sweep's optimizer.* keys
                raise ConfigError(group, f"required by {self.name}: choose {group}=<option>; "
                                         f"allowed: {', '.join(available_options(group))}")
        self._check_group_types(experiment, probes, optimizer, data)

        if not grid:
            raise ConfigError("sweep.grid", f"empty grid; give at least width (or width_over_n), depth, activation, "
                                            f"n_samples; allowed axes: {', '.join(self.axes)}")
        for axis in grid:
            if axis not in self.axes:
                raise ConfigError(f"sweep.grid.{axis}", f"unknown axis {axis!r} for {self.name}; allowed: {', '.join(self.axes)}")
        if "width" in grid and "width_over_n" in grid:
            raise ConfigError("sweep.grid.width", "give either width or width_over_n (width = width_over_n x n_samples), not both")
        if "width" not in grid and "width_over_n" not in grid:
            raise ConfigError("sweep.grid.width", f"required axis for {self.name}: width or width_over_n "
                                                  "(e.g. sweep.grid.width_over_n=[0.5,1,2])")
        for axis, example in (("depth", "[2,3]"), ("activation", "[relu,tanh]"), ("n_samples", "[16]")):
            if axis not in grid:
                raise ConfigError(f"sweep.grid.{axis}", f"required axis for {self.name} (e.g. sweep.grid.{axis}={example})")
        axes = {axis: grid_axis_values(axis, values) for axis, values in grid.items()}
        self._check_axes(axes)
        width_axis = "width" if "width" in axes else "width_over_n"

        names = list(axes)
        cells = []
        for point in itertools.product(*(axes[a] for a in names)):
            values = dict(zip(names, point))
            n = values["n_samples"]
            if width_axis == "width":
                width = values["width"]
            else:
                product = values["width_over_n"] * n
                width = round(product)
                if abs(product - width) > 1e-9 or width < 1:
                    raise ConfigError("sweep.grid.width_over_n", f"width = width_over_n x n_samples must be an integer >= 1, "
                                                                 f"got {values['width_over_n']!r} x {n} = {product:g}")
            options = self._resolve(width, values["depth"], values["activation"], n, experiment, probes, optimizer, data,
                                    width_axis)
            cells.append({"experiment": self.name, **options.columns(), "fail_on_seeds": sorted(fail_on_seeds)})
        return cells

    def _check_group_types(self, experiment: dict, probes: dict, optimizer: dict, data: dict) -> None:
        from landscape_core.data import DataSpec
        from landscape_core.training import TrainSpec
        from landscape_core.width_threshold import ProbeSpec

        for key, kind, ok in (("loss", "a string", lambda v: isinstance(v, str)),
                              ("init", "a string", lambda v: isinstance(v, str)),
                              ("output_bias", "true or false", lambda v: isinstance(v, bool))):
            if key in experiment and not ok(experiment[key]):
                raise ConfigError(f"experiment.{key}", f"must be {kind}, got {experiment[key]!r}")
        check_types("experiment.probes", probes, ProbeSpec)
        check_types("optimizer", optimizer, TrainSpec, {"optimizer": "name"})
        if "n_samples" in data:
            raise ConfigError("data.n_samples", "the number of samples is the grid axis sweep.grid.n_samples; remove it here")
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
                raise ConfigError("sweep.grid.depth", f"must be an integer >= 2 (weight layers; 2 = one hidden layer), got {value!r}")
        for value in axes["activation"]:
            if value not in ACTIVATIONS:
                raise ConfigError("sweep.grid.activation", f"unknown activation {value!r}; allowed: {', '.join(ACTIVATIONS)}")
        for value in axes["n_samples"]:
            if not is_int(value) or value < 1:
                raise ConfigError("sweep.grid.n_samples", f"must be an integer >= 1, got {value!r}")

    def _resolve(self, width, depth, activation, n_samples, experiment, probes, optimizer, data, width_axis):
        """The core's resolved options of one cell; its ValueError mapped to the config path."""
        from landscape_core.width_threshold import resolve_options

        try:
            return resolve_options(
                width=width, depth=depth, activation=activation, n_samples=n_samples, data=data, optimizer=optimizer,
                probes=probes, loss=experiment.get("loss", "square"), init=experiment.get("init", "lecun"),
                output_bias=experiment.get("output_bias", False),
            )
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
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
        """The keyword arguments of ``run_width_threshold`` (but seeds, device) of a cell's flat ``params``."""
        from landscape_core.data import DataSpec
        from landscape_core.training import TrainSpec
        from landscape_core.width_threshold import ProbeSpec

        data = {"name": params["data"]}
        data.update({f.name: params[f"data_{f.name}"] for f in fields(DataSpec) if f.name not in ("name", "n_samples")})
        optimizer = {"name": params["optimizer"]}
        optimizer.update({f.name: params[f"optimizer_{f.name}"] for f in fields(TrainSpec) if f.name != "optimizer"})
        return {
            **{key: params[key] for key in ("width", "depth", "activation", "n_samples", "loss", "init", "output_bias")},
            "data": data,
            "optimizer": optimizer,
            "probes": {f.name: params[f.name] for f in fields(ProbeSpec)},
        }

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.width_threshold import run_width_threshold

        return run_width_threshold(seeds=list(seeds), device=device, **self.core_options(params))

    def extra_aggregates(self, ran, *, confidence: float) -> dict[str, Any]:
        iterations = ran["iterations"].dropna()
        return {
            "iterations_max": int(iterations.max()) if len(iterations) else None,
            "n_stalled": int(ran["stalled"].fillna(False).astype(bool).sum()) if "stalled" in ran else 0,
            "mean_last_layer_rank": float(ran["last_layer_rank"].mean()) if len(ran) else math.nan,
        }

    def report_markdown(self, table, *, sweep, confidence) -> str:
        from ray_jobs.report import width_threshold_markdown

        return width_threshold_markdown(table, self, sweep=sweep, confidence=confidence)

    def report_files(self, table, store, *, sweep, confidence, figure) -> list[Path]:
        from ray_jobs.report import THRESHOLD_CSVS, THRESHOLD_PNG, plot_width_threshold, threshold_tables

        paths = []
        for name, grid in threshold_tables(table).items():
            path = store.report_dir / THRESHOLD_CSVS[name]
            store.save_text(path, grid.to_csv(index=False))
            paths.append(path)
        if figure:
            png = plot_width_threshold(table, store.report_dir / THRESHOLD_PNG, sweep=sweep, confidence=confidence)
            paths += [png] if png is not None else []
        return paths


#: every experiment of the service, as "module:Class" (imported on first use, so that a
#: per-experiment module may import this one)
EXPERIMENT_CLASSES = (
    "ray_jobs.experiments:TeacherStudent",
    "ray_jobs.experiments:WidthThreshold",
    "ray_jobs.skip_networks_experiment:SkipNetworks",
    "ray_jobs.string_sampling_experiment:StringSampling",
)
_REGISTRY: dict[str, Experiment] = {}


def registered_experiments() -> dict[str, Experiment]:
    """Name -> instance of every experiment in :data:`EXPERIMENT_CLASSES`."""
    if not _REGISTRY:
        import importlib

        for entry in EXPERIMENT_CLASSES:
            module, _, cls = entry.partition(":")
            experiment = getattr(importlib.import_module(module), cls)()
            _REGISTRY[experiment.name] = experiment
    return _REGISTRY


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``; unknown -> ConfigError naming experiment.name."""
    experiments = registered_experiments()
    try:
        return experiments[name]
    except (KeyError, TypeError):
        raise ConfigError("experiment.name", f"unknown experiment {name!r}; allowed: {', '.join(experiments)}") from None

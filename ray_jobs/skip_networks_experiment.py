"""Skip-to-output networks (Nguyen, Mukkamala & Hein, ICLR 2019) as a sweep experiment.

protocols.md section 3; the science is :mod:`landscape_core.skip_networks`. One run = one
seed of one cell: draw a classification data set, a network of ``depth`` weight layers
of ``width`` neurons plus (``architecture=skip``) connections from M hidden neurons
straight to the outputs, train it (``mode=sgd``: every weight, SGD with Nesterov momentum
and a step schedule; ``mode=rand``: hidden weights random and fixed, the output weights
fitted, a convex problem), then record the training outcome, the test accuracy and the
numerical rank of Psi (N x M, the skip neurons' outputs on the N training points).

Report layouts (chosen by what the grid varies):

- ``M_over_n`` takes several values (sweep ``skip_rank``): tables with one row per setting
  of the other varying axes (activation x depth) and one column per M / N: % of runs
  whose Psi has full rank N at initialisation (Lemma 3.2: almost surely when M >= N for
  analytic strictly increasing activations), the same at the looser tolerance, % full
  rank at the end (left out when every cell is ``rand``: it equals init), % reaching zero
  training error; a figure of the first two against M / N;
- otherwise (sweep ``skip_trainability``): one row per cell (architecture x mode x
  activation...): % reaching zero training error with its Wilson interval, the mean test
  accuracy with a Student-t interval over seeds, mean training loss and error; a figure.
Both also give the full per-cell table.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from ray_jobs.errors import ConfigError
from ray_jobs.experiments import ACTIVATIONS, Experiment, grid_axis_values, is_int, is_number

#: the paper's activations first, then the rest of the project's (display order)
ACTIVATION_ORDER = ("sigmoid", "softplus", "tanh", "relu", *(a for a in ACTIVATIONS if a not in ("sigmoid", "softplus", "tanh", "relu")))
#: report files of this experiment (under report/): the M / N tables (rank layout), one CSV
#: per table of RANK_TABLES
RANK_CSVS = {"init": "psi_full_rank_init.csv", "init_loose": "psi_full_rank_init_loose.csv", "end": "psi_full_rank_end.csv",
             "zero_train_error": "zero_train_error.csv"}
RANK_PNG = "psi_full_rank_vs_M_over_n.png"
#: per cell: zero training error and test accuracy with their intervals (both layouts)
SUMMARY_CSV = "skip_summary.csv"
TRAINABILITY_PNG = "trainability.png"


def t_interval(mean: float, std: float, count: int, confidence: float) -> tuple[float, float]:
    """Two-sided Student-t interval of a mean over ``count`` runs (sample std, ddof 1);
    NaNs when count < 2 (no spread to estimate)."""
    if count is None or not count >= 2 or not math.isfinite(mean) or not math.isfinite(std):
        return math.nan, math.nan
    from scipy.stats import t

    half = t.ppf(0.5 + confidence / 2, count - 1) * std / math.sqrt(count)
    return mean - half, mean + half


class SkipNetworks(Experiment):
    """Skip-to-output networks: Psi rank and trainability (protocols.md section 3).

    Grid axes: ``width``, ``depth`` (weight layers, >= 2), ``activation``, ``n_samples``
    (required); either ``M`` (skip neurons) or ``M_over_n`` (M = M_over_n x n_samples,
    an integer) or neither (then ``experiment.M``, default ``n_samples`` = the paper's
    M = N); ``architecture`` (skip | plain), ``mode`` (sgd | rand) and ``data`` (mixture |
    random_labels | digits), each defaulting to the experiment group's value. The cell's
    parameters are flat and named as the Parquet columns (``M``, ``M_over_n``,
    ``sgd_lr``, ``n_test``...), every core default explicit; :meth:`core_options` turns
    them back into ``run_skip_networks``'s arguments.
    """

    name = "skip_networks"
    axes = ("width", "depth", "activation", "n_samples", "M", "M_over_n", "architecture", "mode", "data")
    table_axes = ("data", "activation", "depth", "width", "n_samples", "architecture", "mode", "M_over_n", "M")
    groups = ()
    fraction_columns = ("psi_full_rank", "init_psi_full_rank", "zero_train_error")
    axis_order = {"activation": ACTIVATION_ORDER, "architecture": ("plain", "skip"), "mode": ("sgd", "rand")}
    #: keys allowed in the experiment group
    experiment_keys = ("name", "M", "skip_layers", "architecture", "mode", "data", "sgd", "rand_max_iterations",
                       "rank_rtol", "fail_on_seeds")
    #: keys allowed in experiment.data
    data_keys = ("name", "n_test", "input_dim", "classes", "separation")
    columns = {
        # outcome (status, final_loss, grad_norm, iterations are contract columns)
        "train_error": pa.float64(),
        "zero_train_error": pa.bool_(),
        "test_accuracy": pa.float64(),
        "epochs": pa.int64(),
        # Psi probes, at initialisation and at the end
        **{f"{prefix}{name}": kind for prefix in ("init_", "") for name, kind in (
            ("psi_rank", pa.int64()),
            ("psi_rank_loose", pa.int64()),
            ("psi_sigma_min", pa.float64()),
            ("psi_full_rank", pa.bool_()),
        )},
        "psi_rank_tol": pa.float64(),
        # the cell's configuration (grid axes first)
        "width": pa.int64(),
        "depth": pa.int64(),
        "activation": pa.string(),
        "n_samples": pa.int64(),
        "M": pa.int64(),
        "M_over_n": pa.float64(),
        "architecture": pa.string(),
        "mode": pa.string(),
        "data": pa.string(),
        "skip_layers": pa.list_(pa.int64()),
        "n_test": pa.int64(),
        "input_dim": pa.int64(),
        "classes": pa.int64(),
        "separation": pa.float64(),
        "sgd_lr": pa.float64(),
        "sgd_momentum": pa.float64(),
        "sgd_nesterov": pa.bool_(),
        "sgd_batch_size": pa.int64(),
        "sgd_epochs": pa.int64(),
        "sgd_milestones": pa.list_(pa.int64()),
        "sgd_gamma": pa.float64(),
        "sgd_weight_decay": pa.float64(),
        "rand_max_iterations": pa.int64(),
        "rank_rtol": pa.float64(),
    }

    # ------------------------------------------------------------------ validation
    def cells(self, cfg) -> list[dict[str, Any]]:
        from landscape_core.skip_networks import ARCHITECTURES, MODES
        from landscape_core.data import CLASSIFICATION_SETS

        experiment, grid, fail_on_seeds = self.read_config(cfg)
        data = experiment.get("data") or {}
        if not isinstance(data, dict):
            raise ConfigError("experiment.data", f"must be a mapping of data settings ({', '.join(self.data_keys)}), got {data!r}")
        for key in data:
            if key not in self.data_keys:
                raise ConfigError(f"experiment.data.{key}", f"unknown key; allowed: {', '.join(self.data_keys)}")
        sgd = experiment.get("sgd") or {}
        if not isinstance(sgd, dict):
            raise ConfigError("experiment.sgd", f"must be a mapping of SGD settings, got {sgd!r}")
        skip_layers = experiment.get("skip_layers")
        if skip_layers is not None and not isinstance(skip_layers, list):
            raise ConfigError("experiment.skip_layers", f"must be a list of hidden layers (1-based) or null = all, got {skip_layers!r}")

        if not grid:
            raise ConfigError("sweep.grid", f"empty grid; give at least width, depth, activation, n_samples; "
                                            f"allowed axes: {', '.join(self.axes)}")
        for axis in grid:
            if axis not in self.axes:
                raise ConfigError(f"sweep.grid.{axis}", f"unknown axis {axis!r} for {self.name}; allowed: {', '.join(self.axes)}")
        for axis, example in (("width", "[16]"), ("depth", "[3,5]"), ("activation", "[sigmoid,relu]"), ("n_samples", "[32]")):
            if axis not in grid:
                raise ConfigError(f"sweep.grid.{axis}", f"required axis for {self.name} (e.g. sweep.grid.{axis}={example})")
        if "M" in grid and "M_over_n" in grid:
            raise ConfigError("sweep.grid.M", "give either M or M_over_n (M = M_over_n x n_samples), not both")
        axes = {axis: grid_axis_values(axis, values) for axis, values in grid.items()}
        self._check_axes(axes, ARCHITECTURES, MODES, CLASSIFICATION_SETS)

        names = list(axes)
        cells = []
        for point in itertools.product(*(axes[a] for a in names)):
            values = dict(zip(names, point))
            n = values["n_samples"]
            if "M_over_n" in values:
                product = values["M_over_n"] * n
                M = round(product)
                if abs(product - M) > 1e-9 or M < 1:
                    raise ConfigError("sweep.grid.M_over_n", f"M = M_over_n x n_samples must be an integer >= 1, "
                                                             f"got {values['M_over_n']!r} x {n} = {product:g}")
                M_source = "sweep.grid.M_over_n"
            elif "M" in values:
                M, M_source = values["M"], "sweep.grid.M"
            else:
                M, M_source = experiment.get("M", "n_samples"), "experiment.M"
                if M != "n_samples" and not (is_int(M) and M >= 1):
                    raise ConfigError("experiment.M", f"must be an integer >= 1 or n_samples (M = N, the paper's choice), got {M!r}")
            options = {
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
            cells.append({"experiment": self.name, **self._resolve(options, axes, M_source),
                          "fail_on_seeds": sorted(fail_on_seeds)})
        return cells

    def _check_axes(self, axes: dict[str, list], architectures, modes, data_sets) -> None:
        for axis in ("width", "n_samples", "M"):
            for value in axes.get(axis, []):
                if not is_int(value) or value < 1:
                    raise ConfigError(f"sweep.grid.{axis}", f"must be an integer >= 1, got {value!r}")
        for value in axes["depth"]:
            if not is_int(value) or value < 2:
                raise ConfigError("sweep.grid.depth", f"must be an integer >= 2 (weight layers; 2 = one hidden layer), got {value!r}")
        for value in axes.get("M_over_n", []):
            if not is_number(value) or value <= 0:
                raise ConfigError("sweep.grid.M_over_n", f"must be a number > 0 (skip neurons M / samples N), got {value!r}")
        for axis, allowed in (("activation", ACTIVATIONS), ("architecture", architectures), ("mode", modes), ("data", data_sets)):
            for value in axes.get(axis, []):
                if value not in allowed:
                    raise ConfigError(f"sweep.grid.{axis}", f"unknown {axis} {value!r}; allowed: {', '.join(allowed)}")

    def _resolve(self, options: dict, axes: dict, M_source: str) -> dict[str, Any]:
        """The flat cell parameters of ``options`` (the core's arguments), every default
        explicit, checked by the core's :func:`check_options`; its ValueError mapped to the
        config path at fault."""
        import inspect

        from landscape_core.skip_networks import check_options

        defaults = {name: p.default for name, p in inspect.signature(check_options).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        resolved = {**defaults, **options}
        try:
            spec, M, sgd_spec = check_options(**resolved)
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
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
            "classes": spec.output_dim,   # digits: 10
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
        """The keyword arguments of ``run_skip_networks`` (but seeds, device) of a cell's flat ``params``."""
        from landscape_core.training import SGDSpec

        keys = ("width", "depth", "activation", "n_samples", "M", "skip_layers", "architecture", "mode", "data",
                "n_test", "input_dim", "classes", "separation", "rand_max_iterations", "rank_rtol")
        return {**{key: params[key] for key in keys},
                "sgd": {f.name: params[f"sgd_{f.name}"] for f in fields(SGDSpec)}}

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.skip_networks import run_skip_networks

        return run_skip_networks(seeds=list(seeds), device=device, **self.core_options(params))

    # --------------------------------------------------------------------- report
    def extra_aggregates(self, ran, *, confidence: float) -> dict[str, Any]:
        """Means over the runs of a cell that have the value (a diverged run has no test
        accuracy or training error, a non-finite Psi no rank): ``n_test_accuracy`` (runs
        with a test accuracy), ``mean_test_accuracy`` and ``std_test_accuracy`` (sample
        std over seeds; the report's t interval comes from these three), ``mean_train_error``,
        ``mean_final_loss``, ``mean_psi_rank`` / ``mean_init_psi_rank``,
        ``mean_psi_sigma_min`` / ``mean_init_psi_sigma_min``, and
        ``n_init_psi_full_rank_loose`` / ``frac_init_psi_full_rank_loose`` (rank at the
        looser tolerance sigma_max x rank_rtol == N, out of ``n_init_psi_rank_known`` runs
        with a finite Psi; the report adds the Wilson bounds); and the cell's ``rank_rtol``
        (for the report's titles)."""
        import numpy as np

        def finite(column):
            if column not in ran:
                return np.array([], dtype=float)
            values = ran[column].astype(float).to_numpy()
            return values[np.isfinite(values)]

        def mean(column):
            values = finite(column)
            return float(values.mean()) if len(values) else math.nan

        accuracy = finite("test_accuracy")
        loose = ran[["init_psi_rank_loose", "n_samples"]].dropna() if "init_psi_rank_loose" in ran else None
        out = {
            "rank_rtol": float(ran["rank_rtol"].iloc[0]) if "rank_rtol" in ran and len(ran) else math.nan,  # the cell's
            "n_test_accuracy": int(len(accuracy)),
            "mean_test_accuracy": float(accuracy.mean()) if len(accuracy) else math.nan,
            "std_test_accuracy": float(accuracy.std(ddof=1)) if len(accuracy) >= 2 else math.nan,
            "mean_train_error": mean("train_error"),
            "mean_final_loss": mean("final_loss"),
            "mean_psi_rank": mean("psi_rank"),
            "mean_init_psi_rank": mean("init_psi_rank"),
            "mean_psi_sigma_min": mean("psi_sigma_min"),
            "mean_init_psi_sigma_min": mean("init_psi_sigma_min"),
            "n_init_psi_rank_known": int(len(loose)) if loose is not None else 0,
            "n_init_psi_full_rank_loose": int((loose["init_psi_rank_loose"] == loose["n_samples"]).sum()) if loose is not None else 0,
            "frac_init_psi_full_rank_loose": float((loose["init_psi_rank_loose"] == loose["n_samples"]).mean())
            if loose is not None and len(loose) else math.nan,
        }
        lo, hi = t_interval(out["mean_test_accuracy"], out["std_test_accuracy"], out["n_test_accuracy"], confidence)
        # an accuracy lies in [0, 1]: the t bounds are clipped there (NaN when fewer than 2 runs)
        out["mean_test_accuracy_lo"], out["mean_test_accuracy_hi"] = (max(0.0, lo), min(1.0, hi)) if not _is_nan(lo) else (lo, hi)
        from ray_jobs.report import wilson_interval

        out["frac_init_psi_full_rank_loose_lo"], out["frac_init_psi_full_rank_loose_hi"] = wilson_interval(
            out["n_init_psi_full_rank_loose"], out["n_init_psi_rank_known"], confidence)
        return out

    def report_markdown(self, table, *, sweep, confidence) -> str:
        return skip_markdown(table, self, sweep=sweep, confidence=confidence)

    def report_files(self, table, store, *, sweep, confidence, figure) -> list[Path]:
        paths = []
        if is_rank_layout(table):
            for name, grid in rank_tables(table, self, confidence=confidence).items():
                path = store.report_dir / RANK_CSVS[name]
                store.save_text(path, grid.to_csv(index=False))
                paths.append(path)
            if figure:
                png = plot_rank(table, self, store.report_dir / RANK_PNG, sweep=sweep, confidence=confidence)
                paths += [png] if png is not None else []
        path = store.report_dir / SUMMARY_CSV
        store.save_text(path, trainability_table(table, self, confidence=confidence).to_csv(index=False))
        paths.append(path)
        if figure and not is_rank_layout(table):
            png = plot_trainability(table, self, store.report_dir / TRAINABILITY_PNG, sweep=sweep, confidence=confidence)
            paths += [png] if png is not None else []
        return paths


# ------------------------------------------------------------------------ report layout
#: the M / N tables: (key of RANK_CSVS, fraction column, title)
RANK_TABLES = (
    ("init", "frac_init_psi_full_rank", "Runs whose Psi (N x M) has full rank N at initialisation"),
    ("init_loose", "frac_init_psi_full_rank_loose",
     "Runs whose Psi has full rank N at initialisation at the looser tolerance sigma_max x rank_rtol"),
    ("end", "frac_psi_full_rank", "Runs whose Psi has full rank N at the end of training"),
    ("zero_train_error", "frac_zero_train_error", "Runs reaching zero training error"),
)


def _is_nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def varying_axes(table, experiment: Experiment, *, exclude: tuple[str, ...] = ()) -> list[str]:
    """Table axes taking more than one value in ``table`` (display order)."""
    return [axis for axis in experiment.table_axes if axis in table and axis not in exclude and table[axis].nunique(dropna=False) > 1]


def fixed_settings(table, experiment: Experiment) -> str:
    """``axis = value`` for each table axis with one value (the report's context line)."""
    fixed = [axis for axis in experiment.table_axes if axis in table and table[axis].nunique(dropna=False) == 1]
    return ", ".join(f"{axis} = {table[axis].iloc[0]:g}" if isinstance(table[axis].iloc[0], float) else f"{axis} = {table[axis].iloc[0]}"
                     for axis in fixed)


def is_rank_layout(table) -> bool:
    """The M / N layout when the table holds several values of M_over_n."""
    return "M_over_n" in table and table["M_over_n"].nunique() > 1


def rank_tables(table, experiment: Experiment, *, confidence: float) -> dict:
    """Per :data:`RANK_TABLES`: one row per setting of the varying axes other than M / N
    (table order), one column ``M/N=<r>`` per M / N (fraction 0..1) with ``_lo`` / ``_hi``
    Wilson bounds (at the report's ``confidence``, from the aggregation); the first cell
    when several share a position."""
    from ray_jobs.report import ratio_table

    keys = varying_axes(table, experiment, exclude=("M_over_n", "M")) or ["activation"]
    return {name: ratio_table(table, keys=keys, ratio="M_over_n", label="M/N", column=column)
            for name, column, _ in RANK_TABLES}


def trainability_table(table, experiment: Experiment, *, confidence: float):
    """Per cell: the varying axes, runs, the fraction reaching zero training error with its
    Wilson bounds, the mean test accuracy with its t bounds over seeds (clipped to [0, 1]), mean training
    error and loss, the fraction with full-rank Psi at initialisation, statuses."""
    import pandas as pd

    axes = varying_axes(table, experiment) or ["activation"]
    rows = []
    for row in table.to_dict("records"):
        lo, hi = row["mean_test_accuracy_lo"], row["mean_test_accuracy_hi"]  # (extra_aggregates, clipped to [0, 1])
        rows.append({
            "cell_id": row["cell_id"], **{axis: row[axis] for axis in axes}, "runs": row["runs"], "errors": row["errors"],
            **{f"frac_zero_train_error{s}": row[f"frac_zero_train_error{s}"] for s in ("", "_lo", "_hi")},
            "n_test_accuracy": row["n_test_accuracy"], "mean_test_accuracy": row["mean_test_accuracy"],
            "mean_test_accuracy_lo": lo, "mean_test_accuracy_hi": hi,
            "mean_train_error": row["mean_train_error"], "mean_final_loss": row["mean_final_loss"],
            "frac_init_psi_full_rank": row["frac_init_psi_full_rank"], "frac_psi_full_rank": row["frac_psi_full_rank"],
            "frac_diverged": row["frac_diverged"],
        })
    return pd.DataFrame(rows)


def _pct_ci(value, lo, hi) -> str:
    """``pct [lo, hi]`` in whole %; one decimal where whole % would show 0 or 100 for a
    fraction that is neither (299 of 300 is 99.7, not 100)."""
    if _is_nan(value):
        return ""
    digits = 1 if 0 < value < 1 and round(100 * value) in (0, 100) else 0
    return f"{100 * value:.{digits}f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def _acc_ci(value, lo, hi) -> str:
    if _is_nan(value):
        return ""
    return f"{100 * value:.1f}" + ("" if _is_nan(lo) else f" [{100 * lo:.1f}, {100 * hi:.1f}]")


def skip_markdown(table, experiment: Experiment, *, sweep: str, confidence: float) -> str:
    """The report as GitHub markdown: the M / N tables (when M / N varies) or the
    trainability table, then the per-cell table."""
    from ray_jobs.report import _num, _pct

    level = f"{100 * confidence:g}%"
    fixed = fixed_settings(table, experiment)
    lines = [f"# {sweep}", "", *([f"Fixed: {fixed}.", ""] if fixed else []),
             f"Fractions in % of the runs of a cell with the Wilson {level} interval in brackets; test accuracy in % "
             f"(mean over seeds, Student-t {level} interval over seeds; diverged runs have none).", ""]
    if is_rank_layout(table):
        ratios = sorted(table["M_over_n"].unique())
        tables = rank_tables(table, experiment, confidence=confidence)
        shared = int(table.duplicated([*(varying_axes(table, experiment, exclude=("M_over_n", "M")) or ["activation"]), "M_over_n"]).sum())
        if shared:
            lines += [f"Note: {shared} cells share a table position with another cell (other settings); the M / N tables "
                      "show the first, the per-cell table all.", ""]
        for name, _, title in RANK_TABLES:
            if name == "end" and (table["mode"] == "rand").all():
                continue  # rand keeps the hidden weights: Psi at the end is Psi at init (table.csv has both)
            grid = tables[name]
            keys = [c for c in grid.columns if not c.startswith("M/N=")]
            if "rank_rtol" in title and "rank_rtol" in table and table["rank_rtol"].nunique() == 1:
                title = title.replace("rank_rtol", f"{table['rank_rtol'].iloc[0]:g}")
            lines += [f"## {title}", ""]
            head = [*keys, *(f"M/N = {r:g}" for r in ratios)]
            lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            for row in grid.to_dict("records"):
                cells = [str(row[k]) for k in keys]
                cells += [_pct_ci(row[f"M/N={r:g}"], row[f"M/N={r:g}_lo"], row[f"M/N={r:g}_hi"]) for r in ratios]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    else:
        summary = trainability_table(table, experiment, confidence=confidence)
        axes = [c for c in summary.columns if c in experiment.table_axes]
        lines += ["## Trainability", ""]
        head = [*axes, "runs", f"zero training error % [{level}]", f"test accuracy % [{level} t]", "mean training error %",
                "mean training loss", "Psi full rank at init %", "diverged %"]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for row in summary.to_dict("records"):
            cells = [str(row[a]) for a in axes]
            cells += [str(row["runs"]),
                      _pct_ci(row["frac_zero_train_error"], row["frac_zero_train_error_lo"], row["frac_zero_train_error_hi"]),
                      _acc_ci(row["mean_test_accuracy"], row["mean_test_accuracy_lo"], row["mean_test_accuracy_hi"]),
                      _pct(row["mean_train_error"]), _num(row["mean_final_loss"]), _pct(row["frac_init_psi_full_rank"]),
                      _pct(row["frac_diverged"])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    axes = varying_axes(table, experiment) or ["activation"]
    head = [*axes, "runs", "global %", "not conv. %", "diverged %", f"Psi full rank at init % [{level}]",
            "Psi full rank at end %", "Psi full rank at init, loose tol %", "mean Psi rank init / end",
            "mean sigma_min(Psi) init / end", "mean test acc. %", "mean loss", "errors"]
    lines += ["## Per cell", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in table.to_dict("records"):
        cells = [f"{row[a]:g}" if isinstance(row[a], float) else str(row[a]) for a in axes]
        cells += [str(row["runs"]), _pct(row["frac_global"]), _pct(row["frac_not_converged"]), _pct(row["frac_diverged"]),
                  _pct_ci(row["frac_init_psi_full_rank"], row["frac_init_psi_full_rank_lo"], row["frac_init_psi_full_rank_hi"]),
                  _pct(row["frac_psi_full_rank"]), _pct(row["frac_init_psi_full_rank_loose"]),
                  f"{_num(row['mean_init_psi_rank'])} / {_num(row['mean_psi_rank'])}",
                  f"{_num(row['mean_init_psi_sigma_min'], 3)} / {_num(row['mean_psi_sigma_min'], 3)}",
                  _pct(row["mean_test_accuracy"]), _num(row["mean_final_loss"]), str(row["errors"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _bar(length: float) -> float:
    """An error-bar length in %: 0 when unknown, and never negative (a Wilson bound at a
    fraction of 0 or 1 can sit 1e-17 on the wrong side of it)."""
    return 0.0 if _is_nan(length) else max(0.0, 100 * float(length))


def plot_rank(table, experiment: Experiment, path: Path, *, sweep: str, confidence: float) -> Path | None:
    """% of runs with full-rank Psi at initialisation against M / N, one line per row of
    the M / N tables, Wilson intervals as error bars, a dashed line at M / N = 1; left at
    the default tolerance (sigma_max x max(N, M) x eps), right at sigma_max x rank_rtol."""
    grids = rank_tables(table, experiment, confidence=confidence)
    ratios = sorted(table["M_over_n"].unique())
    from ray_jobs.report import pyplot, save_figure

    plt = pyplot()
    fig, panels = plt.subplots(1, 2, figsize=(11.0, 4.6), sharey=True)
    rtol = ", ".join(f"{r:g}" for r in sorted(table["rank_rtol"].unique())) if "rank_rtol" in table else "rank_rtol"
    for ax, name, title in ((panels[0], "init", "default tolerance sigma_max x max(N, M) x eps"),
                            (panels[1], "init_loose", f"looser tolerance sigma_max x {rtol}")):
        grid = grids[name]
        keys = [c for c in grid.columns if not c.startswith("M/N=")]
        count = len(grid)
        for index, row in enumerate(grid.to_dict("records")):
            values = [row[f"M/N={r:g}"] for r in ratios]
            lo = [row[f"M/N={r:g}_lo"] for r in ratios]
            hi = [row[f"M/N={r:g}_hi"] for r in ratios]
            dodge = 0.01 * (index - (count - 1) / 2)  # keep the interval bars apart
            ax.errorbar([r + dodge for r in ratios], [100 * v for v in values],
                        yerr=[[_bar(v - l) for v, l in zip(values, lo)], [_bar(h - v) for v, h in zip(values, hi)]],
                        marker="o", markersize=4, capsize=2, label=", ".join(f"{k}={row[k]}" for k in keys))
        ax.axvline(1.0, color="red", linestyle="--", linewidth=1)
        ax.set_xlabel("M / N (skip neurons / training samples)")
        ax.set_title(f"full rank N at init, {title}", fontsize=9)
        ax.grid(alpha=0.3)
    panels[0].set_ylabel("runs with full-rank Psi (%)")
    panels[1].legend(fontsize=7, ncol=1, loc="center right")
    fig.suptitle(f"{sweep}: Psi = N x M skip-neuron outputs ({100 * confidence:g}% Wilson intervals)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_trainability(table, experiment: Experiment, path: Path, *, sweep: str, confidence: float) -> Path | None:
    """Two panels, one bar per cell: % reaching zero training error (Wilson interval) and
    mean test accuracy (t interval over seeds)."""
    summary = trainability_table(table, experiment, confidence=confidence)
    axes = [c for c in summary.columns if c in experiment.table_axes]
    labels = ["\n".join(f"{row[a]:g}" if isinstance(row[a], float) else str(row[a]) for a in axes)
              for row in summary.to_dict("records")]
    from ray_jobs.report import pyplot, save_figure

    plt = pyplot()
    import numpy as np

    x = np.arange(len(summary))
    fig, panels = plt.subplots(1, 2, figsize=(max(7.0, 0.65 * len(summary) * 2 + 2.0), 4.4))
    # one colour per setting of the axes other than the activation (e.g. architecture x mode)
    shades = [tuple(row[a] for a in axes if a != "activation") for row in summary.to_dict("records")]
    palette = {key: f"C{index % 10}" for index, key in enumerate(dict.fromkeys(shades))}
    for ax, column, title in ((panels[0], "frac_zero_train_error", f"reaching zero training error (%, Wilson {100 * confidence:g}%)"),
                              (panels[1], "mean_test_accuracy", f"test accuracy (%, mean, t {100 * confidence:g}%)")):
        values = summary[column].to_numpy(dtype=float)
        lo = summary[f"{column}_lo"].to_numpy(dtype=float)
        hi = summary[f"{column}_hi"].to_numpy(dtype=float)
        err = np.clip(np.nan_to_num(np.array([values - lo, hi - values]), nan=0.0), 0.0, None)
        colors = [palette[key] for key in shades]
        ax.bar(x, 100 * np.nan_to_num(values), yerr=100 * err, capsize=3, color=colors)
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylim(0, 105)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{sweep}: {' / '.join(axes)} per bar", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)

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

import itertools
import math
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pyarrow as pa

from ray_jobs.errors import ConfigError
from ray_jobs.experiments import ACTIVATIONS, Experiment, check_types, grid_axis_values, is_int, is_number

#: the core's problems, losses, initialisations and bead placements (a test keeps them equal);
#: listed here so that validating needs no torch import
PROBLEMS = ("quadratic", "relu_teacher", "counterexample")
LOSSES = ("mae", "mse")
INITS = ("uniform", "lecun", "he")
BEAD_INITS = ("midpoint", "argmax")
#: appendix E's fixed network and data (2-3-2 ReLU net without biases, three points):
#: what a counterexample cell records whatever the experiment group says
COUNTEREXAMPLE = {"width": 3, "depth": 2, "activation": "relu", "input_dim": 2, "n_train": 3, "n_test": 3,
                  "init": "hand_built"}
#: the core's defaults for endpoint training that differ from TrainSpec's (run_string_sampling)
ENDPOINT_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "max_iterations": 100_000, "grad_tol": 1e-12}

LENGTH_CSV = "length_vs_threshold.csv"
WIDTH_CSV = "connected_vs_width.csv"
LENGTH_PNG = "dss_length_vs_threshold.png"
WIDTH_PNG = "dss_connected_vs_width.png"
PCA_PNG = "dss_string_pca.png"
STRINGS_NPZ = "strings.npz"
STRINGS_CSV = "strings.csv"

#: the network / data columns that name a series (everything of a cell but the swept one)
_NET = ("problem", "activation", "depth", "n_train")


def _train_columns(prefix: str) -> dict[str, pa.DataType]:
    from landscape_core.training import TrainSpec

    kinds = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
    return {f"{prefix}{f.name}": kinds[type(f.default)] for f in fields(TrainSpec)}


def _string_columns() -> dict[str, pa.DataType]:
    from landscape_core.string_sampling import StringSpec

    kinds = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
    return {f"string_{f.name}": kinds[type(f.default)] if f.default is not MISSING else pa.float64()
            for f in fields(StringSpec)}


FLOATS = pa.list_(pa.float64())


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
    axes = ("problem", "threshold", "width", "depth", "activation", "n_train")
    table_axes = ("problem", "activation", "depth", "n_train", "width", "threshold")
    groups = ()
    fraction_columns = ("dss_connected",)
    axis_order = {"activation": ACTIVATIONS, "problem": PROBLEMS}
    #: keys allowed in the experiment group
    experiment_keys = ("name", "problem", "threshold", "width", "depth", "activation", "init", "loss", "n_train",
                       "n_test", "input_dim", "teacher_width", "data_seed", "probe_points", "keep_string",
                       "endpoint_training", "bead_training", "string", "fail_on_seeds")
    columns = {
        # the pair's endpoints (status, final_loss = the worse endpoint's training loss, iterations
        # = both endpoints' steps, are contract columns)
        "endpoint_train_losses": FLOATS,
        "endpoint_test_losses": FLOATS,
        "endpoint_iterations": pa.list_(pa.int64()),
        # interpolation probe (every pair): A -> B, initial point -> trained model
        "probe_points": pa.int64(),
        "interp_ab_losses": FLOATS,
        "interp_ab_max_loss": pa.float64(),
        "interp_ab_barrier": pa.float64(),
        "interp_init_a_losses": FLOATS,
        "interp_init_b_losses": FLOATS,
        "interp_init_max_rise": pa.float64(),
        # DSS outcome (null where DSS did not run: status not_converged / diverged)
        "dss_connected": pa.bool_(),
        "dss_beads": pa.int64(),
        "dss_rounds": pa.int64(),
        "dss_beads_failed": pa.int64(),
        "dss_max_interp_loss": pa.float64(),
        "dss_segment_max_losses": FLOATS,
        "dss_normalized_length": pa.float64(),
        "dss_endpoint_distance": pa.float64(),
        "dss_endpoint_losses": FLOATS,
        "dss_bead_losses": FLOATS,
        "dss_threshold": pa.float64(),
        "dss_wall_s": pa.float64(),
        "dss_string": pa.list_(FLOATS),  # keep_string: the final string's weights (beads x parameters)
        "dss_string_losses": pa.list_(FLOATS),  # keep_string: its segment checks (segments x interp_points)
        # the cell's configuration (grid axes first)
        "problem": pa.string(),
        "threshold": pa.float64(),
        "width": pa.int64(),
        "depth": pa.int64(),
        "activation": pa.string(),
        "n_train": pa.int64(),
        "n_test": pa.int64(),
        "init": pa.string(),
        "loss": pa.string(),
        "input_dim": pa.int64(),
        "teacher_width": pa.int64(),
        "data_seed": pa.int64(),
        "keep_string": pa.bool_(),
        **_string_columns(),
        **_train_columns("endpoint_"),
        **_train_columns("bead_"),
    }

    # ------------------------------------------------------------------------- config
    def cells(self, cfg) -> list[dict[str, Any]]:
        experiment, grid, fail_on_seeds = self.read_config(cfg)
        endpoint, bead, string = self._training_and_string(experiment)
        settings = self._settings(experiment)

        if not grid:
            raise ConfigError("sweep.grid", f"empty grid; give at least threshold (e.g. sweep.grid.threshold=[0.1,0.01]); "
                                            f"allowed axes: {', '.join(self.axes)}")
        for axis in grid:
            if axis not in self.axes:
                raise ConfigError(f"sweep.grid.{axis}", f"unknown axis {axis!r} for {self.name}; allowed: {', '.join(self.axes)}")
        axes = {axis: grid_axis_values(axis, values) for axis, values in grid.items()}
        if "threshold" not in axes:
            if experiment.get("threshold") is None:
                raise ConfigError("sweep.grid.threshold", "required: the loss threshold L0 > 0 "
                                                          "(e.g. sweep.grid.threshold=[0.1,0.01])")
            axes["threshold"] = [experiment["threshold"]]
        for axis in ("problem", "width", "depth", "activation", "n_train"):
            axes.setdefault(axis, [experiment.get(axis)])

        def where(axis: str) -> str:
            return f"sweep.grid.{axis}" if axis in grid else f"experiment.{axis}"

        self._check_axes(axes, where)
        if "counterexample" in axes["problem"]:
            for axis in ("width", "depth", "activation", "n_train"):
                if axis in grid:
                    raise ConfigError(f"sweep.grid.{axis}", "the counterexample's network and data are fixed (appendix E: "
                                                            "2-3-2 ReLU net without biases, three points); remove the axis")

        names = list(axes)
        cells = []
        for point in itertools.product(*(axes[a] for a in names)):
            values = dict(zip(names, point))
            params = {"experiment": self.name, **settings, **values, "threshold": float(values["threshold"])}
            if values["problem"] == "counterexample":
                params.update(COUNTEREXAMPLE)
            elif values["problem"] == "quadratic" and params["input_dim"] != 1:
                raise ConfigError("experiment.input_dim", f"the quadratic problem has x ~ U[0, 1] (input_dim 1), "
                                                          f"got {params['input_dim']!r}; input_dim is for relu_teacher")
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
                    raise ConfigError(f"experiment.{key}.stop_loss", "set by the threshold (training stops below "
                                                                     "string.alpha x threshold); remove it")
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
                raise ConfigError("experiment.string.threshold", "the threshold is sweep.grid.threshold (or "
                                                                 "experiment.threshold); remove it here")
            if name not in string_fields:
                raise ConfigError(f"experiment.string.{name}", f"unknown DSS setting; allowed: {', '.join(string_fields)}")
        check_types("experiment.string", string, StringSpec)
        for name in ("spring_weight", "plane_weight"):
            if name in string and not string[name] >= 0:
                raise ConfigError(f"experiment.string.{name}", f"must be a number >= 0, got {string[name]!r}")
        string = _as_field_types({**{f.name: f.default for f in fields(StringSpec) if f.name != "threshold"}, **string}, StringSpec)
        return endpoint, bead, string

    def _settings(self, experiment: dict) -> dict[str, Any]:
        """The experiment group's scalar settings that are not grid axes, checked."""
        settings = {}
        for key, minimum in (("n_test", 1), ("input_dim", 1), ("teacher_width", 1), ("data_seed", 0), ("probe_points", 2)):
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
        for axis, minimum, meaning in (("width", 1, "hidden units per layer"), ("depth", 1, "weight layers; 2 = one hidden layer"),
                                       ("n_train", 1, "training points")):
            for value in axes[axis]:
                if not is_int(value) or value < minimum:
                    raise ConfigError(where(axis), f"must be an integer >= {minimum} ({meaning}), got {value!r}")
        for value in axes["activation"]:
            if value not in ACTIVATIONS:
                raise ConfigError(where("activation"), f"unknown activation {value!r}; allowed: {', '.join(ACTIVATIONS)}")

    def _check_with_core(self, params: dict, string: dict, endpoint: dict, bead: dict, where) -> None:
        """The core's own checks of the string and training settings, mapped to config paths."""
        from landscape_core.string_sampling import StringSpec
        from landscape_core.training import TrainSpec

        try:
            StringSpec(threshold=params["threshold"], **string).validate()
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            path = where("threshold") if field == "threshold" else f"experiment.string.{field}"
            raise ConfigError(path, message or str(exc)) from None
        for key, values in (("endpoint_training", endpoint), ("bead_training", bead)):
            try:
                TrainSpec(**values, stop_loss=string["alpha"] * params["threshold"]).validate()
            except ValueError as exc:
                field, _, message = str(exc).partition(": ")
                name = field.partition(".")[2]
                raise ConfigError(f"experiment.{key}.{'optimizer' if name == 'name' else name}", message) from None

    def core_options(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of ``run_string_sampling`` (but seeds, device) of a cell's flat ``params``."""
        from landscape_core.string_sampling import StringSpec
        from landscape_core.training import TrainSpec

        train_fields = [f.name for f in fields(TrainSpec) if f.name != "stop_loss"]
        return {
            **{key: params[key] for key in ("problem", "threshold", "width", "depth", "activation", "init", "loss", "n_train",
                                            "n_test", "input_dim", "teacher_width", "data_seed", "probe_points", "keep_string")},
            "endpoint_training": {name: params[f"endpoint_{name}"] for name in train_fields},
            "bead_training": {name: params[f"bead_{name}"] for name in train_fields},
            "string": {f.name: params[f"string_{f.name}"] for f in fields(StringSpec) if f.name != "threshold"},
        }

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.string_sampling import run_string_sampling

        return run_string_sampling(seeds=list(seeds), device=device, **self.core_options(params))

    # ------------------------------------------------------------------------- report
    def extra_aggregates(self, ran, *, confidence: float) -> dict[str, Any]:
        """Over the connected pairs: normalized length (mean, median, max), beads (mean, max),
        rounds (mean); over the strung pairs that did not connect: beads and rounds (mean;
        at the budget when DSS gave up); over the strung pairs (status global): the final string's worst
        segment relative to L0, endpoint test loss, DSS seconds; over every pair that ran:
        the straight-line barrier between the endpoints and the largest rise of the
        initial-point lines (Conjecture V.1: 0)."""
        strung = ran[ran["status"] == "global"]
        certified = strung["dss_connected"].fillna(False).astype(bool) if "dss_connected" in strung else strung["status"].ne(strung["status"])
        connected, not_connected = strung[certified], strung[~certified]

        def stat(frame, column, how):
            values = frame[column].dropna() if column in frame else pd.Series([], dtype=float)
            return float(getattr(values, how)()) if len(values) else math.nan

        ratio = (strung["dss_max_interp_loss"] / strung["threshold"]) if len(strung) else pd.Series([], dtype=float)
        test_loss = strung["endpoint_test_losses"].dropna().map(lambda pair: sum(pair) / len(pair)) if len(strung) else pd.Series([], dtype=float)
        return {
            "mean_normalized_length": stat(connected, "dss_normalized_length", "mean"),
            "median_normalized_length": stat(connected, "dss_normalized_length", "median"),
            "max_normalized_length": stat(connected, "dss_normalized_length", "max"),
            "mean_beads": stat(connected, "dss_beads", "mean"),
            "max_beads": stat(connected, "dss_beads", "max"),
            "mean_rounds": stat(connected, "dss_rounds", "mean"),
            "mean_beads_not_connected": stat(not_connected, "dss_beads", "mean"),
            "mean_rounds_not_connected": stat(not_connected, "dss_rounds", "mean"),
            "mean_max_interp_over_threshold": float(ratio.mean()) if len(ratio.dropna()) else math.nan,
            "mean_endpoint_test_loss": float(test_loss.mean()) if len(test_loss) else math.nan,
            "mean_interp_ab_barrier": stat(ran, "interp_ab_barrier", "mean"),
            "mean_interp_init_max_rise": stat(ran, "interp_init_max_rise", "mean"),
            "dss_wall_s_mean": stat(strung, "dss_wall_s", "mean"),
        }

    def report_markdown(self, table, *, sweep, confidence) -> str:
        level = f"{100 * confidence:g}%"
        lines = [f"# {sweep}", "",
                 "Dynamic String Sampling (Freeman & Bruna 2017). Per cell: pairs that ran; pairs strung (both "
                 "endpoints below alpha x L0, status global); connected % of the strung pairs with the Wilson "
                 f"{level} interval; normalized length (string length / endpoint distance), beads and rounds over "
                 "the connected pairs.", ""]
        for title, grid in (("Normalized length and beads vs threshold L0", length_table(table)),
                            ("Connected fraction vs width", width_table(table))):
            if grid is None:
                continue
            head = [f"connected % [{level} CI]" if c == "frac_connected" else c for c in grid.columns
                    if c not in ("connected", "frac_connected_lo", "frac_connected_hi")]
            lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            for row in grid.to_dict("records"):
                lines.append("| " + " | ".join(_cell_text(column, row) for column in grid.columns
                                               if column not in ("connected", "frac_connected_lo", "frac_connected_hi")) + " |")
            lines.append("")
        head = ["problem", "activation", "depth", "n_train", "width", "L0", "pairs", "strung", f"connected % [{level} CI]",
                "norm. length mean / median / max", "beads mean / max", "rounds mean",
                "not connected: beads / rounds (mean)", "max interp. / L0 (mean)",
                "A-B line barrier (mean)", "init-line max rise (mean)", "test loss (mean)", "not conv. %", "diverged %", "errors"]
        lines += ["## Per cell", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        from ray_jobs.report import _num, _pct

        for row in table.to_dict("records"):
            cells = [str(row["problem"]), str(row["activation"]), str(row["depth"]), str(row["n_train"]), str(row["width"]),
                     f"{row['threshold']:g}", str(row["runs"]), str(row["n_global"]), _connected_text(row),
                     _joined(_num(row["mean_normalized_length"]), _num(row["median_normalized_length"]), _num(row["max_normalized_length"])),
                     _joined(_num(row["mean_beads"], 3), _int(row["max_beads"])), _num(row["mean_rounds"], 3),
                     _joined(_num(row["mean_beads_not_connected"], 3), _num(row["mean_rounds_not_connected"], 3)),
                     _num(row["mean_max_interp_over_threshold"]), _num(row["mean_interp_ab_barrier"]),
                     _num(row["mean_interp_init_max_rise"]), _num(row["mean_endpoint_test_loss"]),
                     _pct(row["frac_not_converged"]), _pct(row["frac_diverged"]), str(row["errors"])]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def report_files(self, table, store, *, sweep, confidence, figure) -> list[Path]:
        paths = []
        for name, grid in ((LENGTH_CSV, length_table(table)), (WIDTH_CSV, width_table(table))):
            if grid is not None:
                path = store.report_dir / name
                store.save_text(path, grid.to_csv(index=False))
                paths.append(path)
        if figure:
            for plot in (plot_length_vs_threshold, plot_connected_vs_width):
                path = plot(table, store.report_dir, sweep=sweep, confidence=confidence)
                paths += [path] if path is not None else []
        strings = kept_strings(store)
        if strings is not None:
            paths += save_strings(strings, store)
            if figure:
                path = plot_string_pca(strings, store.report_dir / PCA_PNG, sweep=sweep)
                paths += [path] if path is not None else []
        return paths


def _as_field_types(values: dict, cls) -> dict:
    """``values`` with integers given for float fields of ``cls`` as floats (``lr: 1`` and
    ``lr: 1.0`` are the same cell)."""
    floats = {f.name for f in fields(cls) if isinstance(f.default, float)}
    return {key: float(value) if key in floats and is_int(value) else value
            for key, value in values.items()}


# ------------------------------------------------------------------------- report helpers
def _int(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def _joined(*texts: str) -> str:
    """``a / b / c``, or empty when every part is (no pair to average over)."""
    return " / ".join(texts) if any(texts) else ""


def _pct_interval(value, lo, hi) -> str:
    from ray_jobs.report import _pct

    text = _pct(value)
    return f"{text} [{_pct(lo)}, {_pct(hi)}]" if text else ""


def _connected_text(row: dict) -> str:
    return _pct_interval(row["frac_dss_connected"], row["frac_dss_connected_lo"], row["frac_dss_connected_hi"])


def _cell_text(column: str, row: dict) -> str:
    """One cell of a focused table (length_table / width_table) in markdown."""
    from ray_jobs.report import _num

    value = row[column]
    if column == "frac_connected":
        return _pct_interval(value, row["frac_connected_lo"], row["frac_connected_hi"])
    if column in ("L0", "width / n_train"):
        return f"{value:g}"
    if column == "max beads":
        return _int(value)
    return _num(value) if isinstance(value, float) else str(value)


def _series(table: pd.DataFrame, swept: str) -> list[tuple[tuple, pd.DataFrame]]:
    """Groups of cells that differ only in ``swept`` (and have more than one value of it)."""
    keys = [axis for axis in ("problem", "activation", "depth", "n_train", "width", "threshold") if axis != swept]
    out = []
    for key, group in table.groupby(keys, sort=False):
        group = group.drop_duplicates(swept)  # cells of earlier invocations with other settings: the first
        if len(group) > 1:
            out.append((key, group.sort_values(swept, ascending=swept != "threshold")))
    return out


def length_table(table: pd.DataFrame) -> pd.DataFrame | None:
    """Normalized length and beads against L0 (thresholds decreasing), one block per series;
    None when no series has more than one threshold."""
    rows = []
    for _, group in _series(table, "threshold"):
        for row in group.to_dict("records"):
            rows.append({"problem": row["problem"], "activation": row["activation"], "depth": row["depth"],
                         "width": row["width"], "n_train": row["n_train"], "L0": row["threshold"], "pairs strung": row["n_global"],
                         **_connected_columns(row),
                         "normalized length mean": row["mean_normalized_length"],
                         "normalized length median": row["median_normalized_length"],
                         "normalized length max": row["max_normalized_length"],
                         "beads mean": row["mean_beads"], "max beads": row["max_beads"], "rounds mean": row["mean_rounds"]})
    return pd.DataFrame(rows) if rows else None


def width_table(table: pd.DataFrame) -> pd.DataFrame | None:
    """Connected fraction and normalized length against the width, one block per series;
    None when no series has more than one width."""
    rows = []
    for _, group in _series(table, "width"):
        for row in group.to_dict("records"):
            rows.append({"problem": row["problem"], "activation": row["activation"], "depth": row["depth"],
                         "n_train": row["n_train"], "L0": row["threshold"], "width": row["width"],
                         "width / n_train": row["width"] / row["n_train"], "pairs strung": row["n_global"],
                         **_connected_columns(row),
                         "normalized length mean": row["mean_normalized_length"],
                         "normalized length median": row["median_normalized_length"],
                         "beads mean": row["mean_beads"], "A-B line barrier mean": row["mean_interp_ab_barrier"]})
    return pd.DataFrame(rows) if rows else None


def _connected_columns(row: dict) -> dict:
    return {"connected": row["n_dss_connected"], "frac_connected": row["frac_dss_connected"],
            "frac_connected_lo": row["frac_dss_connected_lo"], "frac_connected_hi": row["frac_dss_connected_hi"]}


def _label(key: tuple, names: Sequence[str]) -> str:
    return ", ".join(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}" for name, value in zip(names, key))


def plot_length_vs_threshold(table: pd.DataFrame, report_dir: Path, *, sweep: str, confidence: float) -> Path | None:
    """Normalized length (mean, median) and mean beads of the connected pairs against L0."""
    series = _series(table, "threshold")
    if not series:
        return None
    from ray_jobs.report import pyplot, save_figure

    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    names = ("problem", "activation", "depth", "n_train", "width")
    for index, (key, group) in enumerate(series):
        color, label = f"C{index}", _label(key, names)
        left.plot(group["threshold"], group["mean_normalized_length"], marker="o", color=color, label=f"{label} (mean)")
        left.plot(group["threshold"], group["median_normalized_length"], marker="x", linestyle="--", color=color,
                  alpha=0.7, label=f"{label} (median)")
        right.plot(group["threshold"], group["mean_beads"], marker="o", color=color, label=label)
    for ax, ylabel in ((left, "normalized length (connected pairs)"), (right, "beads per connected pair (mean)")):
        ax.set_xscale("log")
        ax.invert_xaxis()  # lower loss to the right, as the paper's tables run
        ax.set_xlabel("threshold L0 (log scale, decreasing)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.legend(fontsize=7)
    fig.suptitle(f"{sweep}: normalized geodesic length and beads vs L0", fontsize=10)
    path = report_dir / LENGTH_PNG
    return save_figure(fig, path)


def plot_connected_vs_width(table: pd.DataFrame, report_dir: Path, *, sweep: str, confidence: float) -> Path | None:
    """Connected % of the strung pairs (Wilson interval) and normalized length against the width."""
    series = _series(table, "width")
    if not series:
        return None
    from ray_jobs.report import pyplot, save_figure

    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    names = ("problem", "activation", "depth", "n_train", "L0")
    for index, (key, group) in enumerate(series):
        color, label = f"C{index}", _label(key, names)
        frac = 100 * group["frac_dss_connected"]
        dodge = 2 ** (0.06 * (index - (len(series) - 1) / 2))  # keep overlapping series' bars apart (log axis)
        left.errorbar(group["width"] * dodge, frac, yerr=[frac - 100 * group["frac_dss_connected_lo"],
                                                  100 * group["frac_dss_connected_hi"] - frac],
                      marker="o", capsize=3, color=color, label=label)
        right.plot(group["width"], group["mean_normalized_length"], marker="o", color=color, label=f"{label} (mean)")
        right.plot(group["width"], group["median_normalized_length"], marker="x", linestyle="--", color=color, alpha=0.7,
                   label=f"{label} (median)")
        n = group["n_train"].iloc[0]
        for ax in (left, right):
            ax.axvline(n, color=color, linewidth=0.8, linestyle=":")
    left.set_ylim(-5, 105)
    left.set_ylabel(f"connected pairs (% of strung, {100 * confidence:g}% CI)")
    right.set_ylabel("normalized length (connected pairs)")
    right.axhline(1.0, color="grey", linewidth=0.8)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width (dotted: n_train)")
        ax.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    fig.suptitle(f"{sweep}: connectivity vs width", fontsize=10)
    path = report_dir / WIDTH_PNG
    return save_figure(fig, path)


def kept_strings(store) -> pd.DataFrame | None:
    """Rows (deduplicated) that carry a kept string, best first for the PCA figure: connected
    before not, most beads, lowest threshold, lowest seed; None when there are none."""
    from ray_jobs.report import deduplicate

    rows = store.read()
    if rows.num_rows == 0 or "dss_string" not in rows.column_names:
        return None
    wanted = ["cell_id", "seed", "status", "problem", "threshold", "string_pass_factor", "width", "depth", "activation", "dss_connected",
              "dss_beads", "dss_normalized_length", "dss_string", "dss_string_losses", "dss_bead_losses"]
    frame = deduplicate(rows.select([c for c in wanted if c in rows.column_names]).to_pandas())
    frame = frame[frame["dss_string"].notna()]
    if frame.empty:
        return None
    frame = frame.assign(_connected=frame["dss_connected"].fillna(False).astype(bool))
    frame = frame.sort_values(["_connected", "dss_beads", "threshold", "seed", "cell_id"],
                              ascending=[False, False, True, True, True], kind="stable")
    return frame.drop(columns="_connected").reset_index(drop=True)


def _string_array(value):
    import numpy as np

    return np.array([np.asarray(bead, dtype=float) for bead in value], dtype=float)


def save_strings(strings: pd.DataFrame, store) -> list[Path]:
    """Every kept string's weights in ``strings.npz`` (key ``<cell_id>_seed<seed>``: beads x
    parameters, endpoints first and last; ``<key>_bead_losses``: each model's training
    loss), indexed by ``strings.csv``."""
    import io

    import numpy as np

    arrays, index = {}, []
    for row in strings.to_dict("records"):
        key = f"{row['cell_id']}_seed{int(row['seed'])}"
        arrays[key] = _string_array(row["dss_string"])
        arrays[f"{key}_bead_losses"] = np.asarray(row["dss_bead_losses"], dtype=float)
        index.append({"key": key, **{c: row[c] for c in ("cell_id", "seed", "problem", "threshold", "width", "depth",
                                                         "activation", "dss_connected", "dss_beads", "dss_normalized_length")},
                      "parameters": arrays[key].shape[1]})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    npz = store.report_dir / STRINGS_NPZ
    npz.parent.mkdir(parents=True, exist_ok=True)
    staging = npz.with_name(f".{npz.name}.tmp")
    staging.write_bytes(buffer.getvalue())
    staging.replace(npz)
    csv = store.report_dir / STRINGS_CSV
    store.save_text(csv, pd.DataFrame(index).to_csv(index=False))
    return [npz, csv]


def string_projection(string, dims: int = 3):
    """Coordinates (B, dims) of a string's beads on its top principal directions (of the
    centred beads, endpoints included) and the fraction of variance each explains."""
    import numpy as np

    beads = np.asarray(string, dtype=float)  # (B, P)
    centred = beads - beads.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(dims, vt.shape[0])
    coords = np.zeros((beads.shape[0], dims))
    coords[:, :k] = centred @ vt[:k].T
    total = float((singular**2).sum())
    explained = np.zeros(dims)
    explained[:k] = singular[:k] ** 2 / total if total > 0 else 0.0
    return coords, explained


def plot_string_pca(strings: pd.DataFrame, path: Path, *, sweep: str) -> Path | None:
    """The first row's string on its top-3 principal directions; every segment drawn as its
    interpolation points coloured by the loss there (log scale), beads in black, A and B marked."""
    from ray_jobs.report import pyplot, save_figure

    plt = pyplot()
    import numpy as np
    from matplotlib.colors import LogNorm

    row = strings.iloc[0]
    coords, explained = string_projection(_string_array(row["dss_string"]))
    losses = row.get("dss_string_losses")
    points, values = [], []
    if losses is not None and len(losses) == len(coords) - 1:
        for i, segment in enumerate(losses):
            segment = np.asarray(segment, dtype=float)
            t = np.arange(len(segment)) / len(segment)  # the segment check's t = 0, 1/m, ..., (m - 1)/m
            points.append((1 - t)[:, None] * coords[i] + t[:, None] * coords[i + 1])
            values.append(segment)
        points.append(coords[-1:])
        values.append(np.asarray(row["dss_bead_losses"][-1:], dtype=float))
    else:
        points, values = [coords], [np.asarray(row["dss_bead_losses"], dtype=float)]
    points, values = np.concatenate(points), np.concatenate(values)
    positive = values[values > 0]
    # three decades below the highest loss at most (an exact solution's 1e-32 would flatten the scale)
    floor = max(positive.min(), 1e-3 * positive.max()) if len(positive) else 0.0
    norm = LogNorm(vmin=floor, vmax=positive.max()) if len(positive) and floor < positive.max() else None
    fig = plt.figure(figsize=(7, 5.6))
    ax = fig.add_subplot(projection="3d")
    image = ax.scatter(points[:, 0], points[:, 1], points[:, 2], c=np.clip(values, floor, None), cmap="viridis", norm=norm, s=4)
    ax.plot(coords[:, 0], coords[:, 1], coords[:, 2], color="grey", linewidth=0.6)
    ax.scatter(coords[1:-1, 0], coords[1:-1, 1], coords[1:-1, 2], color="black", s=14, label="beads")
    for index, name in ((0, "A"), (-1, "B")):
        ax.scatter(*coords[index], color="red", s=40)
        ax.text(*coords[index], f" {name}", color="red")
    for setter, k in ((ax.set_xlabel, 0), (ax.set_ylabel, 1), (ax.set_zlabel, 2)):
        setter(f"PC{k + 1} ({100 * explained[k]:.0f}%)")
    bar = fig.colorbar(image, ax=ax, shrink=0.7, pad=0.12, label="training loss (red: pass level)")
    level = row["string_pass_factor"] * row["threshold"]
    if floor <= level <= (positive.max() if len(positive) else 0.0):
        bar.ax.axhline(level, color="red", linewidth=1.5)
    state = "connected" if bool(row["dss_connected"]) else "not certified"
    ax.set_title(f"{sweep}: {row['problem']} pair seed {int(row['seed'])}, L0 = {row['threshold']:g}, width {int(row['width'])}\n"
                 f"{int(row['dss_beads'])} beads, {state}, normalized length {row['dss_normalized_length']:.3g}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)

"""An experiment from another installed package (docs/adding_an_experiment.md, second way).

A toy plugin package is written to a temporary directory: a module with its Experiment, a
``layout.py`` with its report layout (an aggregate, a file and a setting of its own), a
``conf/`` folder with its experiment group and a sweep (``conf/sweep/``), and a
``pyproject.toml`` registering it in the entry-point group ``landscape_sweeps.experiments``.
It is installed into this virtualenv (no registry: ``--no-deps --no-build-isolation``),
its sweep runs with ``landscape-sweep`` (local Ray), its report is rebuilt with
``landscape-report``, and it is uninstalled at the end, leaving the venv as it was.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
BIN = Path(sys.executable).parent
DIST = "landscape-toy-plugin"

PYPROJECT = f'''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "0.0.1"

[project.entry-points."landscape_sweeps.experiments"]
toy_plugin = "toy_landscape.experiment:ToyPlugin"

[tool.setuptools]
packages = ["toy_landscape"]

[tool.setuptools.package-data]
toy_landscape = ["conf/*/*.yaml"]
'''

EXPERIMENT = '''"""A toy experiment: x_{t+1} = x_t - 0.5 (x_t - a) from a seeded start, one run per seed."""
import random

from ray_jobs.experiments.base import Experiment
from ray_jobs.experiments.grid import GridAxes, grid_points


class ToyPlugin(Experiment):
    name = "toy_plugin"
    help = "a (required): the minimum of (x - a)^2"
    tiny_budget = ("experiment.steps=3",)
    grid_axes = GridAxes(("a",), required={"a": "[1,2]"})
    statuses = ("global", "not_converged")
    columns = {"a": "float64", "steps": "int64", "x": "float64"}

    def cells(self, cfg):
        experiment, grid, fail_on_seeds = self.read_config(cfg)
        return [{"experiment": self.name, "a": float(values["a"]), "steps": experiment["steps"],
                 "fail_on_seeds": fail_on_seeds} for values in grid_points(self.grid_axes.check(grid, self.name))]

    def run(self, params, seeds, device):
        a, steps, records = params["a"], params["steps"], []
        for seed in seeds:
            x = random.Random(seed).gauss(0.0, 1.0)
            for _ in range(steps):
                x -= 0.5 * (x - a)
            loss = (x - a) ** 2
            records.append({"seed": seed, "status": "global" if loss < 1e-12 else "not_converged", "final_loss": loss,
                            "grad_norm": abs(2 * (x - a)), "iterations": steps, "wall_s": 0.0, "device": device,
                            "x": x, "a": a, "steps": steps})
        return records


EXPERIMENT = ToyPlugin
'''

LAYOUT = '''"""The toy's report: the mean final x per cell, a CSV of it, a setting report.toy_digits."""
from ray_jobs.errors import ConfigError
from ray_jobs.report.layout import ReportLayout


class ToyLayout(ReportLayout):
    settings = {"toy_digits": 3}

    @classmethod
    def check_setting(cls, key, value):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"report.{key}", f"must be an integer >= 1, got {value!r}")

    def extra_aggregates(self, ran, *, confidence):
        return {"mean_x": float(ran["x"].mean())}

    def markdown(self, table, *, sweep, confidence):
        digits = self.values["toy_digits"]
        lines = [f"# {sweep} (toy)", "", "| a | runs | mean x |", "|---|---|---|"]
        lines += [f"| {row['a']:g} | {row['runs']} | {row['mean_x']:.{digits}f} |" for row in table.to_dict("records")]
        return "\\n".join(lines) + "\\n"

    def files(self, table, store, *, sweep, confidence, figure):
        path = store.report_dir / "toy.csv"
        store.save_text(path, table[["a", "mean_x"]].to_csv(index=False))
        return [path]


LAYOUT = ToyLayout
'''

EXPERIMENT_YAML = """# @package _global_
experiment:
  name: toy_plugin
  steps: 60   # halvings of the distance to a
  fail_on_seeds: []
report:
  toy_digits: 3   # digits of mean x in the toy's table (the toy layout's setting)
"""

SWEEP_YAML = """# @package _global_
defaults:
  - override /experiment: toy_plugin

sweep:
  name: toy_plugin_smoke
  description: "the toy plugin's sweep"
  grid:
    a: [1, 2]
  seeds: 4
"""


def _write_plugin(root: Path) -> Path:
    package = root / "toy_landscape"
    (package / "conf" / "experiment").mkdir(parents=True)
    (package / "conf" / "sweep").mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text('"""A toy landscape-sweeps experiment, installed as a plugin."""\n')
    (package / "experiment.py").write_text(EXPERIMENT)
    (package / "layout.py").write_text(LAYOUT)
    (package / "conf" / "experiment" / "toy_plugin.yaml").write_text(EXPERIMENT_YAML)
    (package / "conf" / "sweep" / "toy_plugin_smoke.yaml").write_text(SWEEP_YAML)
    return root


def _installed() -> bool:
    return subprocess.run([*PIP, "show", "-q", DIST], capture_output=True).returncode == 0


@pytest.fixture
def toy_plugin(tmp_path):
    """The toy plugin installed into this venv for the test, uninstalled after it."""
    assert not _installed(), f"{DIST} is installed already: uninstall it first"
    source = _write_plugin(tmp_path / "plugin")
    done = subprocess.run(
        [*PIP, "install", "-q", "--no-deps", "--no-build-isolation", "--no-cache-dir", str(source)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        yield tmp_path
    finally:
        subprocess.run([*PIP, "uninstall", "-q", "-y", DIST], capture_output=True, text=True, timeout=120)
        assert not _installed()


def _env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "PYTHONPATH")}


def test_an_experiment_of_another_package_runs_its_sweep_and_report(toy_plugin):
    import pandas as pd

    results = toy_plugin / "results"
    shown = subprocess.run(
        [str(BIN / "landscape-sweep"), "--help"],
        cwd=toy_plugin,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "toy_plugin        a (required)" in shown.stdout and "toy_plugin_smoke" in shown.stdout

    sweep = [str(BIN / "landscape-sweep"), "sweep=toy_plugin_smoke", "tracking=none"]
    done = subprocess.run(
        [*sweep, "cluster.num_cpus=1", f"results_dir={results}"],
        cwd=toy_plugin,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_parquet(results / "toy_plugin_smoke" / "runs")
    assert len(rows) == 8 and set(rows["status"]) == {"global"} and set(rows["experiment"]) == {"toy_plugin"}
    assert sorted(set(rows["a"])) == [1.0, 2.0] and (rows["x"] - rows["a"]).abs().max() < 1e-6
    report = results / "toy_plugin_smoke" / "report"
    table = [
        "# toy_plugin_smoke (toy)",
        "",
        "| a | runs | mean x |",
        "|---|---|---|",
        "| 1 | 4 | 1.000 |",
        "| 2 | 4 | 2.000 |",
    ]
    assert (report / "table.md").read_text().splitlines()[:6] == table
    assert pd.read_csv(report / "toy.csv")["mean_x"].round(6).tolist() == [1.0, 2.0]

    # the layout's own setting, from the command line of either tool; a bad value is its one-line error
    report_cli = [str(BIN / "landscape-report"), f"results_dir={results}", "sweep_name=toy_plugin_smoke"]
    again = subprocess.run(
        [*report_cli, "report.toy_digits=1"], cwd=toy_plugin, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "| 1 | 4 | 1.0 |" in (report / "table.md").read_text()
    bad = subprocess.run(
        [*sweep, "report.toy_digits=0", f"results_dir={toy_plugin / 'other'}"],
        cwd=toy_plugin,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "landscape-sweep: error: report.toy_digits: must be an integer >= 1, got 0"
    )
    assert not (toy_plugin / "other").exists()

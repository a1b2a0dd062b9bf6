"""The service's layout, proven from the code's own imports.

- Dependencies run one way: cli -> sweep / search -> session -> execution -> validate /
  worker -> experiments -> report -> store -> plan (config, tracking, provenance and errors
  beside them, see LAYERS); no import circle, counting imports inside functions and
  under ``if TYPE_CHECKING:`` too (an annotation's import is a dependency all the same).
- No module imports an experiment's folder but the experiment itself (the registry finds
  them by folder); no module outside an experiment's folder names it in code.
- A worker running one teacher-student unit (run_unit) imports that experiment only: no other
  experiment, no pandas, no pyarrow, no report, no MLflow.
- Every folder under ray_jobs/experiments/ is a registered experiment, registered as an
  entry point in pyproject.toml too, and no file of ray_jobs is over 420 lines.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "ray_jobs"

#: rank of each part of ray_jobs: a module may import only parts of a lower rank, or
#: modules of its own package (acyclically)
LAYERS = {
    "errors": 0,
    "plan": 0,
    "reaper": 0,
    "plugins": 0,
    "config": 1,
    "store": 1,
    "provenance": 2,
    "tracking": 2,
    "report": 2,
    "compaction": 2,
    "verify": 2,
    "experiments": 3,
    "worker": 4,
    "validate": 4,
    "execution": 5,
    "session": 6,
    "sweep": 7,
    "search": 7,
    "cli": 8,
    "console": 9,  # the console scripts' processes: the cli entry points, then the end of the process
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def part_of(module: str) -> str:
    """``ray_jobs.report.tables`` -> ``report``; ``ray_jobs`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def runtime_imports(module: str) -> set[str]:
    """ray_jobs modules ``module`` imports: at module level, inside functions and under
    ``if TYPE_CHECKING:`` alike (each is a dependency)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: runtime_imports(module) for module in MODULES}


def test_the_graph_is_read_from_every_module():
    assert {
        "ray_jobs.cli",
        "ray_jobs.session",
        "ray_jobs.execution",
        "ray_jobs.sweep",
        "ray_jobs.search.driver",
        "ray_jobs.experiments.registry",
        "ray_jobs.report.aggregate",
    } <= set(GRAPH)
    assert "ray_jobs.session" in GRAPH["ray_jobs.sweep"] and "ray_jobs.execution" in GRAPH["ray_jobs.search.driver"]
    assert {part_of(m) for m in MODULES} - {""} == set(LAYERS), "a part of ray_jobs without a layer"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_dependencies_run_one_way(module):
    mine = part_of(module)
    for target in GRAPH[module]:
        theirs = part_of(target)
        if theirs == mine or not theirs:
            continue
        assert LAYERS[theirs] < LAYERS[mine], (
            f"{module} imports {target}: {mine} (rank {LAYERS[mine]}) may not import {theirs} (rank {LAYERS[theirs]})"
        )


def test_no_import_circle():
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(target) :], target]))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def experiment_folders() -> list[str]:
    return sorted(path.parent.name for path in (PACKAGE / "experiments").glob("*/experiment.py"))


def test_every_experiment_folder_is_registered():
    from ray_jobs.experiments.registry import experiment_names, registered_experiments

    assert experiment_names() == experiment_folders()
    assert {"teacher_student", "width_threshold", "skip_networks", "string_sampling"} <= set(experiment_folders())
    assert all(experiment.name == name for name, experiment in registered_experiments().items())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_an_experiment_imports_its_folder(module):
    for target in GRAPH[module]:
        parts = target.split(".")
        if len(parts) > 3 and parts[1] == "experiments":  # ray_jobs.experiments.<name>.<module>
            assert module.startswith(".".join(parts[:3]) + "."), f"{module} imports the experiment module {target}"


def _code_strings(tree: ast.AST) -> set[str]:
    """String constants and names of a module's code (docstrings left out)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.add(node.value)
        elif isinstance(node, ast.Name):
            out.add(node.id)
    return out


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if not m.startswith("ray_jobs.experiments.") or m.count(".") < 3)
)
def test_no_module_outside_an_experiment_names_it(module):
    """The service knows no experiment: its name appears in no code outside its folder."""
    words = _code_strings(ast.parse(MODULES[module].read_text()))
    named = [name for name in experiment_folders() if any(name in word for word in words)]
    assert not named, f"{module} names the experiment(s) {named} in its code"


def test_a_worker_imports_only_the_experiment_it_runs(tmp_path):
    """A teacher-student unit run as a Ray task runs it: the modules loaded by then."""
    from ray_jobs.config import compose_config
    from ray_jobs.validate import validate

    _, cells = validate(
        compose_config(["sweep=smoke", "sweep.grid.k=[3]", "sweep.grid.n_minus_k=[0]", "protocol.max_iterations=50"])
    )
    code = (
        "import json, sys\n"
        "from ray_jobs.worker import run_unit\n"
        "records = run_unit('teacher_student', json.loads(sys.argv[1]), [0, 1], use_gpu=False, torch_threads=1)\n"
        "assert [r['seed'] for r in records] == [0, 1]\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cells[0])],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "ray_jobs.experiments.teacher_student.experiment" in loaded
    others = [
        m
        for m in loaded
        if m.startswith("ray_jobs.experiments.")
        and m.split(".")[2] in experiment_folders()
        and m.split(".")[2] != "teacher_student"
    ]
    assert others == []
    assert not {m for m in loaded if m.split(".")[0] in ("pandas", "pyarrow", "mlflow", "optuna", "matplotlib")}
    assert not {
        m
        for m in loaded
        if m.startswith(("ray_jobs.report", "ray_jobs.store", "ray_jobs.experiments.teacher_student.layout"))
    }


def test_every_shipped_experiment_is_an_entry_point():
    """pyproject.toml registers each experiment folder in the group landscape_sweeps.experiments,
    naming its class, and the installed metadata has them (pip install -e . after an edit)."""
    import tomllib

    from ray_jobs.plugins import GROUP, experiment_entry_points

    points = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["entry-points"][GROUP]
    assert sorted(points) == experiment_folders()
    assert all(value.startswith(f"ray_jobs.experiments.{name}.experiment:") for name, value in points.items())
    installed = experiment_entry_points()
    assert {name: installed[name].value for name in points if name in installed} == points


def test_no_file_of_the_service_is_over_420_lines():
    long = {
        str(path.relative_to(PROJECT_ROOT)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 420
    }
    assert long == {}


TOY_CORE = '''"""A toy science module: gradient descent on (x - a)^2 from a seeded start, one run per seed."""
import torch


def run_toy(*, a: float, steps: int, seeds, device: str = "cpu") -> list[dict]:
    starts = [torch.randn((), generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]
    x = torch.stack(starts)  # (seeds,)
    for _ in range(steps):
        x = x - 0.25 * 2 * (x - a)
    loss = (x - a) ** 2
    return [{"seed": s, "status": "global" if float(l) < 1e-12 else "not_converged", "final_loss": float(l),
             "grad_norm": float(abs(2 * (xi - a))), "iterations": steps, "wall_s": 0.0, "device": device,
             "x": float(xi), "a": a, "steps": steps}
            for s, l, xi in zip(seeds, loss, x)]
'''

TOY_EXPERIMENT = """from ray_jobs.experiments.base import Experiment
from ray_jobs.experiments.grid import GridAxes, grid_points


class Toy(Experiment):
    name = "toy"
    help = "a (required)"
    tiny_budget = ("experiment.steps=3",)
    grid_axes = GridAxes(("a",), required={"a": "[1,2]"})
    statuses = ("global", "not_converged")
    table_axes = ("a",)
    columns = {"a": "float64", "steps": "int64", "x": "float64"}

    def cells(self, cfg):
        experiment, grid, fail_on_seeds = self.read_config(cfg)
        return [{"experiment": self.name, "a": float(values["a"]), "steps": experiment["steps"],
                 "fail_on_seeds": fail_on_seeds} for values in grid_points(self.grid_axes.check(grid, self.name))]

    def run(self, params, seeds, device):
        from landscape_core.toy import run_toy

        return run_toy(a=params["a"], steps=params["steps"], seeds=list(seeds), device=device)


EXPERIMENT = Toy
"""

TOY_SWEEP = """# @package _global_
defaults:
  - override /experiment: toy

sweep:
  name: toy_smoke
  description: "a toy"
  grid:
    a: [1, 2]
  seeds: 4
"""


def test_an_experiment_added_by_the_how_to_runs_with_no_other_edit(tmp_path):
    """docs/adding_an_experiment.md followed in a copy of the project: new files only, then
    `landscape-sweep sweep=toy_smoke` runs it end to end (local Ray) and `--help` lists it."""
    import shutil

    root = tmp_path / "project"
    for part in ("ray_jobs", "landscape_core", "conf", "sweeps"):
        shutil.copytree(PROJECT_ROOT / part, root / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    before = {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}
    (root / "landscape_core" / "toy.py").write_text(TOY_CORE)
    (root / "ray_jobs" / "experiments" / "toy").mkdir()
    (root / "ray_jobs" / "experiments" / "toy" / "__init__.py").write_text('"""A toy experiment."""\n')
    (root / "ray_jobs" / "experiments" / "toy" / "experiment.py").write_text(TOY_EXPERIMENT)
    (root / "conf" / "experiment" / "toy.yaml").write_text(
        "name: toy\nsteps: 60   # GD steps of 0.25 x gradient\nfail_on_seeds: []\n"
    )
    (root / "sweeps" / "toy_smoke.yaml").write_text(TOY_SWEEP)
    assert all(path.read_bytes() == content for path, content in before.items())  # no existing file edited

    env = {key: value for key, value in __import__("os").environ.items() if key != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(root), LANDSCAPE_PROJECT_ROOT=str(root))
    code = "import sys; from ray_jobs.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    shown = subprocess.run(
        [sys.executable, "-c", code, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0 and "toy               a (required)" in shown.stdout and "toy_smoke" in shown.stdout
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "sweep=toy_smoke",
            "tracking=none",
            "cluster.num_cpus=1",
            f"results_dir={tmp_path / 'results'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    import pandas as pd

    rows = pd.read_parquet(tmp_path / "results" / "toy_smoke" / "runs")
    assert len(rows) == 8 and set(rows["status"]) == {"global"} and sorted(set(rows["a"])) == [1.0, 2.0]
    assert (rows["x"] - rows["a"]).abs().max() < 1e-6
    table = (tmp_path / "results" / "toy_smoke" / "report" / "table.md").read_text()
    assert "global % [99% CI]" in table and "| 1 | 4 | 100.0 [" in table  # the default status table

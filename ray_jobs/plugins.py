"""Experiments installed as plugins: the entry-point group ``landscape_sweeps.experiments``.

Each entry point names an experiment and its class (``toy = "toy_plugin.experiment:Toy"``);
the shipped experiments are registered the same way in the project's ``pyproject.toml``.
A plugin's package may hold a ``conf/`` folder beside the experiment's module: its config
groups (``conf/experiment/<name>.yaml``, groups of its own) and its sweeps
(``conf/sweep/*.yaml``), added to the Hydra search path by :mod:`ray_jobs.config`.

Reading the entry points imports nothing (the package metadata only), and a plugin's conf
folder is found from its module's path without importing it.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

#: the entry-point group of the experiments
GROUP = "landscape_sweeps.experiments"


@lru_cache(maxsize=1)
def experiment_entry_points() -> dict[str, EntryPoint]:
    """Name -> entry point of every installed experiment (the first of a name wins)."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=GROUP):
        found.setdefault(point.name, point)
    return found


def package_dir(module: str) -> Path | None:
    """The folder of the package holding ``module`` (``a.b.experiment`` -> ``.../a/b``), found
    without importing it; None for a top-level module or a package that is not installed."""
    package = module.rpartition(".")[0]
    if not package:
        return None
    top, *rest = package.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)


@lru_cache(maxsize=1)
def plugin_conf_dirs() -> tuple[Path, ...]:
    """The ``conf/`` folders of the installed experiments' packages (beside the module an
    entry point names), in entry-point order, each once; the shipped experiments have none."""
    dirs: list[Path] = []
    for point in experiment_entry_points().values():
        folder = package_dir(point.module)
        conf = folder / "conf" if folder is not None else None
        if conf is not None and conf.is_dir() and conf.resolve() not in dirs:
            dirs.append(conf.resolve())
    return tuple(dirs)

"""Compose the sweep configuration once, in the driver, with Hydra's compose API.

The config tree is ``conf/`` (primary ``conf/config.yaml``, one group per axis) and the
named sweeps in ``sweeps/``, which Hydra sees as the group ``sweep`` through the link
``conf/sweep -> ../sweeps``. An experiment installed from another package
(:mod:`ray_jobs.plugins`) adds its package's ``conf/`` folder to Hydra's search path: its
groups (``conf/experiment/<name>.yaml``, its own) and its sweeps (``conf/sweep/*.yaml``)
are then options like the project's. Command-line overrides use Hydra's grammar
(``sweep=smoke``, ``sweep.grid.k=[6,7]``, ``+protocol.foo=1``...). Composition errors are
turned into :class:`~ray_jobs.errors.ConfigError` naming the field at fault.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from ray_jobs.errors import ConfigError
from ray_jobs.plugins import plugin_conf_dirs

#: the project checkout holding conf/ and sweeps/ (override with LANDSCAPE_PROJECT_ROOT)
PROJECT_ROOT = Path(os.environ.get("LANDSCAPE_PROJECT_ROOT") or Path(__file__).resolve().parents[1])
CONF_DIR = PROJECT_ROOT / "conf"
SWEEPS_DIR = PROJECT_ROOT / "sweeps"
#: groups every run reads; every other group of conf/ belongs to the experiments that
#: declare it (``Experiment.groups``: protocol, optimizer, data...)
SERVICE_GROUPS = ("experiment", "resources", "tracking", "cluster")


def conf_dirs() -> tuple[Path, ...]:
    """The config trees: the project's conf/, then the conf/ folder of each installed
    experiment package that has one (:func:`ray_jobs.plugins.plugin_conf_dirs`)."""
    return (CONF_DIR, *(path for path in plugin_conf_dirs() if path != CONF_DIR.resolve()))


def sweeps_dirs() -> tuple[Path, ...]:
    """The folders of sweep files: the project's sweeps/, then each plugin's conf/sweep/."""
    return (SWEEPS_DIR, *(path / "sweep" for path in conf_dirs()[1:] if (path / "sweep").is_dir()))


def sweep_file(name: str) -> Path:
    """The file of the sweep ``name`` (the first folder of :func:`sweeps_dirs` holding it)."""
    for folder in sweeps_dirs():
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    return SWEEPS_DIR / f"{name}.yaml"


def experiment_groups() -> tuple[str, ...]:
    """The config groups of conf/ that only some experiments read (a folder each, sorted)."""
    return tuple(
        sorted(
            {
                path.name
                for conf in conf_dirs()
                for path in conf.iterdir()
                if path.is_dir() and path.name != "sweep" and path.name not in SERVICE_GROUPS
            }
        )
    )


#: Hydra groups of conf/ besides `sweep`: the experiment, the experiments' own groups, then
#: the service's resources, tracking and cluster
GROUPS = (SERVICE_GROUPS[0], *experiment_groups(), *SERVICE_GROUPS[1:])


class UnknownGridAxis(ConfigError):
    """An override of ``sweep.grid.<axis>`` that the sweep's grid lacks; ``overrides`` are
    the other overrides (to compose the config and name the experiment's axes)."""

    def __init__(self, axis: str, overrides: list[str]):
        super().__init__(f"sweep.grid.{axis}", f"unknown axis {axis!r}")
        self.axis, self.overrides = axis, overrides


def available_sweeps() -> list[str]:
    """Names of the sweeps (``sweeps/*.yaml``, and the plugins' ``conf/sweep/*.yaml``)."""
    return sorted({path.stem for folder in sweeps_dirs() for path in folder.glob("*.yaml")})


def available_searches() -> list[str]:
    """Names of the shipped searches: the sweeps whose file has a top-level ``search:`` block."""
    names = []
    for name in available_sweeps():
        try:
            if "search" in OmegaConf.load(sweep_file(name)):
                names.append(name)
        except Exception:  # a broken file is reported when it is used
            continue
    return names


def search_to_sweep(overrides: list[str]) -> tuple[list[str], bool]:
    """``search=<name>`` -> ``sweep=<name>`` (a search file is a sweep file with a ``search:``
    block); returns the overrides and whether a search was named. An unknown search or a
    sweep named with search= raises ConfigError listing the searches."""
    out, named = [], False
    for arg in overrides:
        if arg.startswith("search="):
            name = arg[len("search=") :]
            if name not in available_searches():
                raise ConfigError(
                    "search", f"unknown search {name!r}; allowed: {', '.join(available_searches()) or 'none'}"
                )
            out.append(f"sweep={name}")
            named = True
        else:
            out.append(arg)
    return out, named


def available_options(group: str) -> list[str]:
    """Options of a config group (``conf/<group>/*.yaml`` of every config tree)."""
    if group == "sweep":
        return available_sweeps()
    return sorted({path.stem for conf in conf_dirs() for path in (conf / group).glob("*.yaml")})


def _parse_overrides(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides=overrides)
    except OverrideParseException as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ConfigError("overrides", f"cannot parse the command line ({first_line}); use key=value") from None


def _check_group_choices(parsed) -> None:
    """Unknown or missing group options (``sweep=nope``) -> ConfigError listing the allowed ones."""
    chosen = {
        o.key_or_group: o.value()
        for o in parsed
        if o.key_or_group in (*GROUPS, "sweep") and not (o.is_delete() and o.key_or_group != "sweep")
    }
    if "sweep" not in chosen:
        raise ConfigError("sweep", f"required: sweep=<name>; allowed: {', '.join(available_sweeps())}")
    for group, value in chosen.items():
        if not isinstance(value, str) or value not in available_options(group):
            kind = "sweep" if group == "sweep" else f"{group} option"
            raise ConfigError(group, f"unknown {kind} {value!r}; allowed: {', '.join(available_options(group))}")


def compose_config(overrides: list[str]) -> DictConfig:
    """The composed, read-only config for ``overrides`` (Hydra command-line syntax).

    Raises ConfigError for an unknown sweep / group option, an unparsable override, or an
    override of a key that does not exist (an unknown grid axis is reported as such).
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    overrides = list(overrides)
    parsed = _parse_overrides(overrides)
    search_path = [f"file://{path}" for path in conf_dirs()[1:]]
    _check_group_choices(parsed)
    added = [o.key_or_group for o in parsed if (o.is_add() or o.is_force_add()) and _is_service_key(o.key_or_group)]
    if added:  # a key added to the service's sections must exist there already (a typo otherwise)
        base = compose_config([text for text in overrides if _override_key(text) not in added])
        for key in added:
            if OmegaConf.select(base, key, default=_MISSING) is _MISSING:
                raise ConfigError(key, unknown_key_message(key, base))
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="landscape_sweep"):
            extra = [f"hydra.searchpath=[{','.join(search_path)}]"] if search_path else []
            cfg = compose(config_name="config", overrides=[*overrides, *extra])
    except MissingConfigException as exc:
        raise ConfigError("sweep", str(exc).strip().splitlines()[0]) from None
    except ConfigCompositionException as exc:
        raise _composition_error(exc, overrides) from None
    except yaml.YAMLError as exc:  # a config or sweep file that is not YAML
        raise ConfigError(_file_field(exc), f"not valid YAML: {_yaml_problem(exc)}") from None
    if any(o.key_or_group == "sweep.grid" and o.value() in ({}, []) for o in parsed):
        raise ConfigError(
            "sweep.grid", "empty grid; give the axes to sweep (sweep.grid={} would keep the sweep's grid)"
        )
    OmegaConf.set_readonly(cfg, True)
    return cfg


_MISSING = object()

#: sections of the config whose keys are the service's (an experiment's groups check their own)
SERVICE_SECTIONS = ("sweep", "resources", "tracking", "cluster", "report", "fail_fast", "compaction")


def _is_service_key(key: str) -> bool:
    """A key of the service's sections or a top-level value (not a grid axis, not a group)."""
    head = key.split(".")[0]
    if "." not in key:
        return key not in (*GROUPS, "sweep")
    return head in SERVICE_SECTIONS and not key.startswith("sweep.grid.")


def _override_key(text: str) -> str:
    """The key of an override's text (``+sweep.seed=10`` -> ``sweep.seed``)."""
    return text.split("=", 1)[0].lstrip("+~")


def unknown_key_message(key: str, cfg) -> str:
    """``no such key ...`` naming the closest key of ``cfg`` and, in the service's sections,
    the keys allowed beside it; in an experiment's group, how to add a key."""
    import difflib

    service = _is_service_key(key)

    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    siblings = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
    hints = [f"did you mean {parent + '.' if parent else ''}{close[0]}?"] if close else []
    if not service:
        hints.append("a new key is added with +key=value")
    allowed = f"; allowed: {', '.join(siblings)}" if siblings and service else ""
    return f"no such key in the config{' (' + '; '.join(hints) + ')' if hints else ''}{allowed}"


def _file_field(exc: yaml.YAMLError) -> str:
    """``sweep`` for a file of sweeps/, ``<group>`` for one of conf/<group>/, else ``config``."""
    mark = getattr(exc, "problem_mark", None)
    path = Path(mark.name) if mark is not None else None
    if path is None or path.parent.name in ("", "conf"):
        return "config"
    return "sweep" if path.parent.resolve() in {folder.resolve() for folder in sweeps_dirs()} else path.parent.name


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``<file>, line L, column C: <problem>`` on one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(getattr(exc, "problem", None) or exc).split())


def _composition_error(exc: Exception, overrides: list[str]) -> ConfigError:
    """A one-line ConfigError for a failed override (most often: a key not in the config)."""
    text = f"{exc} {exc.__cause__ or ''}"
    match = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Could not append to config\. An item is already at '([^']+)'", text
    )
    key = match.group(1) if match else "overrides"
    if key.startswith("sweep.grid."):
        remaining = [o for o in overrides if not _override_key(o).startswith(key)]
        return UnknownGridAxis(key[len("sweep.grid.") :], remaining)
    if "not in struct" not in text:
        return ConfigError(key, str(exc).strip().splitlines()[0])
    try:  # the keys beside it, from the config without this override
        base = compose_config([o for o in overrides if _override_key(o) != key])
    except ConfigError:
        return ConfigError(key, "no such key in the config (add a new key with +key=value)")
    return ConfigError(key, unknown_key_message(key, base))


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (what is saved next to the results)."""
    return OmegaConf.to_yaml(cfg, resolve=True)

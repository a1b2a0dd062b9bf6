"""Validate a composed sweep config before anything is scheduled or written.

Every check raises :class:`~ray_jobs.errors.ConfigError` with the dotted field at fault
and what is allowed; the CLI prints it on one line and exits with code 2. The checks of
the science (k, n, step, tolerances, teacher...) are the core's own, run per cell by the
experiment (:meth:`ray_jobs.experiments.base.Experiment.cells`).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from ray_jobs.config import PROJECT_ROOT, UnknownGridAxis, available_options, compose_config, experiment_groups
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import Experiment, is_int, is_number
from ray_jobs.experiments.registry import get_experiment, layout_class

_SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: work units one sweep may have: the driver keeps its plan (cells x seed chunks) in memory
MAX_UNITS = 1_000_000


def _require_int(field: str, value, minimum: int) -> None:
    if not is_int(value) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}")


def _require_number(field: str, value, *, minimum: float, strict: bool) -> None:
    ok = is_number(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        raise ConfigError(field, f"must be a number {'>' if strict else '>='} {minimum:g}, got {value!r}")


def resolve_results_dir(cfg) -> Path:
    """``results_dir`` as an absolute path (relative paths are taken from the cwd); an empty
    or missing value is refused (it would write into the working directory)."""
    value = cfg.get("results_dir")
    if value is None or not str(value).strip():
        raise ConfigError("results_dir", f"empty; give a directory path (default: results), got {value!r}")
    return Path(str(value)).expanduser().resolve()


def resolve_reference(cfg) -> Path | None:
    """``sweep.reference`` as an absolute path (relative paths are taken from the project root)."""
    reference = cfg.sweep.get("reference")
    if not reference:
        return None
    path = Path(str(reference)).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def check_results_dir(path: Path) -> None:
    """``path`` must be a directory or not exist yet, under directories (not files)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "is a file" if candidate == path else f"is under the file {candidate}"
                raise ConfigError(
                    "results_dir", f"{str(path)!r} {what}; give a directory (or a path that does not exist yet)"
                )
            return


def check_writable(path: Path) -> None:
    """Prove that ``path`` (or, while it does not exist, its nearest existing parent) takes a
    new directory, by creating and removing one: permissions, a read-only or full file
    system, /proc. Leaves nothing behind."""
    existing = next(candidate for candidate in (path, *path.parents) if candidate.exists())
    try:
        probe = tempfile.mkdtemp(prefix=".landscape-write-check-", dir=existing)
        Path(probe, "probe").write_bytes(b"0" * 4096)
    except OSError as exc:
        raise ConfigError(
            "results_dir", f"cannot write under {existing}: {exc.strerror or exc}; give a writable directory"
        ) from None
    shutil.rmtree(probe, ignore_errors=True)


def preflight(cfg) -> None:
    """What must hold before a driver writes anything, beyond the config's own validity:
    the results directory is writable and the tracking server (if any) answers."""
    path = resolve_results_dir(cfg)
    check_results_dir(path)
    check_writable(path)
    sweep_dir = path / str(cfg.sweep.name)
    for folder in (sweep_dir, sweep_dir / "runs", sweep_dir / "report"):  # a read-only runs/ of a resumed sweep
        if folder.is_dir():
            check_writable(folder)
    check_local_resources(cfg)
    uri = cfg.tracking.get("uri") if cfg.tracking.get("enabled") else None
    if uri:
        check_tracking_uri(str(uri))
    if uri and str(uri).startswith(("http://", "https://")):
        from ray_jobs.tracking import check_server

        check_server(str(uri))


#: (Ray's resource, the resources.* field, what to do) of the per-task resources a node must offer
RESOURCE_HINTS = (
    ("CPU", "num_cpus", "lower resources.num_cpus, or cluster.num_cpus=N for a local cluster"),
    ("GPU", "num_gpus", "use resources=cpu, or cluster.num_gpus=N to declare GPUs of a local cluster"),
)


def check_local_resources(cfg) -> None:
    """Per-task ``resources.num_cpus`` / ``num_gpus`` that the local cluster this driver would
    start cannot offer, refused before Ray starts (one line in seconds, no Ray start-up
    lines): the cluster offers ``cluster.num_cpus`` / ``num_gpus``, or what Ray detects on
    this machine (its own functions). Ray is imported only for a task asking for more than
    one CPU or for a GPU. Skipped for a cluster address (``cluster.address``,
    ``RAY_ADDRESS``), Ray's resource override (``RAY_OVERRIDE_RESOURCES``) or a Ray session
    open in this process: :func:`ray_jobs.execution.check_feasible` checks those once connected."""
    if cfg.cluster.get("address") or os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_OVERRIDE_RESOURCES"):
        return
    for key, field, hint in RESOURCE_HINTS:
        asked, offered = float(cfg.resources.get(field) or 0), cfg.cluster.get(field)
        if asked <= (1 if key == "CPU" else 0) and offered is None:
            continue  # every machine offers one CPU
        import ray

        if ray.is_initialized():
            return
        if offered is None:
            try:
                offered = _detected(key)
            except Exception:  # Ray's detection failed here: left to the check once Ray is up
                continue
        if asked > float(offered):
            raise ConfigError(
                f"resources.{field}",
                f"each task asks for {asked:g} {key}s, but the largest node of the "
                f"local cluster offers {float(offered):g}; {hint}",
            )


def _detected(key: str) -> float:
    """The CPUs or GPUs Ray finds on this machine when it starts a local cluster (as
    ``ray._private.resource_and_label_spec`` does: GPUs capped by the visible devices)."""
    if key == "CPU":
        from ray._private.utils import get_num_cpus

        return float(get_num_cpus())
    from ray._private.accelerators import get_accelerator_manager_for_resource

    manager = get_accelerator_manager_for_resource("GPU")
    if manager is None:
        return 0.0
    count = manager.get_current_node_num_accelerators()
    visible = manager.get_current_process_visible_accelerator_ids()
    return float(count if visible is None else min(count, len(visible)))


#: schemes MLflow 3.17 registers for tracking stores only to refuse them (Unity Catalog is a model registry)
_REFUSED_TRACKING_SCHEMES = {"databricks-uc", "uc"}


def check_tracking_uri(uri: str) -> None:
    """``tracking.uri`` names a store MLflow can open, refused before anything is written: its
    scheme one MLflow registers a tracking store for (the registry of
    ``mlflow.tracking._tracking_service.utils``: http(s), sqlite / postgresql / mysql / mssql,
    file, databricks), and for a local store (sqlite, file, a path) a directory that exists
    and takes a file (MLflow would create missing directories, even at the file system's
    root, or fail after the driver started). Creates nothing."""
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    from mlflow.utils.uri import get_uri_scheme

    schemes = sorted(
        scheme for scheme in _tracking_store_registry._registry if scheme and scheme not in _REFUSED_TRACKING_SCHEMES
    )
    allowed = f"allowed schemes: {', '.join(schemes)} (or a local path), or tracking=sqlite / tracking=none"
    try:
        scheme = get_uri_scheme(uri)
    except Exception as exc:  # MLflow's own refusal of a malformed database URI
        raise ConfigError(
            "tracking.uri", f"{uri!r} is not a tracking URI ({' '.join(str(exc).split())[:200]}); {allowed}"
        ) from None
    if scheme and scheme not in schemes:
        raise ConfigError("tracking.uri", f"{uri!r}: MLflow has no tracking store for the scheme {scheme!r}; {allowed}")
    if scheme == "sqlite":
        database = uri.split(":///", 1)[1].split("?", 1)[0] if ":///" in uri else ""
        if database in ("", ":memory:"):
            raise ConfigError(
                "tracking.uri",
                f"{uri!r} is an in-memory database, which keeps nothing; give a file, "
                f"e.g. sqlite:////abs/path/mlflow.db, or tracking=sqlite",
            )
        _check_store_directory(uri, Path(database).expanduser().absolute().parent)
    elif scheme in ("", "file"):
        from mlflow.utils.file_utils import local_file_uri_to_path

        _check_store_directory(uri, Path(local_file_uri_to_path(uri)).expanduser().absolute().parent)


def _check_store_directory(uri: str, directory: Path) -> None:
    """The directory of a local tracking store exists and takes a file (created, then removed)."""
    if not directory.is_dir():
        raise ConfigError(
            "tracking.uri",
            f"{uri!r}: the directory {directory} does not exist; create it first, "
            f"or use tracking=sqlite (a store under results_dir)",
        )
    try:
        handle, probe = tempfile.mkstemp(prefix=".landscape-write-check-", dir=directory)
    except OSError as exc:
        raise ConfigError(
            "tracking.uri",
            f"{uri!r}: cannot write in {directory}: {exc.strerror or exc}; give a "
            f"writable directory, or tracking=sqlite (under results_dir)",
        ) from None
    os.close(handle)
    os.unlink(probe)


def check_unit_count(cells: int, seeds: int, chunk_size: int) -> None:
    """A plan the driver can hold: at most :data:`MAX_UNITS` work units."""
    units = cells * math.ceil(seeds / chunk_size)
    if units > MAX_UNITS:
        raise ConfigError(
            "sweep.seeds",
            f"{cells} cells x {seeds} seeds at resources.chunk_size={chunk_size} make {units} "
            f"work units; at most {MAX_UNITS} per sweep: raise resources.chunk_size "
            f"(>= {math.ceil(cells * seeds / MAX_UNITS)}) or lower sweep.seeds",
        )


def compose(overrides: list[str]) -> DictConfig:
    """:func:`ray_jobs.config.compose_config`, with an unknown grid axis named against the
    experiment's axes (``sweep.grid.width: unknown axis 'width' for teacher_student; allowed: ...``)."""
    try:
        return compose_config(overrides)
    except UnknownGridAxis as error:
        experiment = get_experiment(compose_config(error.overrides).experiment.name)
        raise ConfigError(
            error.field, f"{error.message} for {experiment.name}; allowed: {', '.join(experiment.axes)}"
        ) from None


def check_report(report, experiment: Experiment) -> None:
    """The report settings (``report.*``): a level in (0, 1), figure true / false, and the
    settings of the experiment's report layout, checked by the layout
    (:meth:`~ray_jobs.report.layout.ReportLayout.check_settings`)."""
    layout_class(experiment).check_settings(report)
    confidence = report.get("confidence")
    if not is_number(confidence) or not 0 < confidence < 1:
        raise ConfigError("report.confidence", f"must be a number in (0, 1), e.g. 0.99, got {confidence!r}")
    if not isinstance(report.get("figure"), bool):
        raise ConfigError("report.figure", f"must be true or false, got {report.get('figure')!r}")


def check_fail_fast(fail_fast) -> None:
    """``fail_fast.enabled`` true / false, ``first_units`` >= 1, ``max_failed_fraction`` in [0, 1)."""
    if not isinstance(fail_fast.get("enabled"), bool):
        raise ConfigError("fail_fast.enabled", f"must be true or false, got {fail_fast.get('enabled')!r}")
    _require_int("fail_fast.first_units", fail_fast.get("first_units"), 1)
    fraction = fail_fast.get("max_failed_fraction")
    if not is_number(fraction) or not 0 <= fraction < 1:
        raise ConfigError("fail_fast.max_failed_fraction", f"must be a number in [0, 1), e.g. 0.5, got {fraction!r}")


def check_compaction(compaction) -> None:
    """``compaction.after_sweep`` true / false; ``min_fragments`` >= 1; ``row_group_rows`` in [1, ``max_rows``]."""
    if compaction is None:
        raise ConfigError("compaction", "missing section; keys: after_sweep, min_fragments, max_rows, row_group_rows")
    if not isinstance(compaction.get("after_sweep"), bool):
        raise ConfigError("compaction.after_sweep", f"must be true or false, got {compaction.get('after_sweep')!r}")
    _require_int("compaction.min_fragments", compaction.get("min_fragments"), 1)
    _require_int("compaction.max_rows", compaction.get("max_rows"), 1)
    _require_int("compaction.row_group_rows", compaction.get("row_group_rows"), 1)
    if compaction.row_group_rows > compaction.max_rows:
        raise ConfigError(
            "compaction.row_group_rows",
            f"must be at most compaction.max_rows ({compaction.max_rows}), got {compaction.row_group_rows}",
        )


def check_groups(cfg, experiment: Experiment) -> None:
    """The experiment gets exactly the experiments' config groups it reads (protocol,
    optimizer, data...: ``Experiment.groups``), no other."""
    for group in experiment_groups():
        present = cfg.get(group) is not None
        if group in experiment.groups and not present:
            raise ConfigError(
                group,
                f"required by {experiment.name}: choose {group}=<option>; "
                f"allowed: {', '.join(available_options(group))}",
            )
        if present and group not in experiment.groups:
            uses = ", ".join(experiment.groups) or "none"
            raise ConfigError(
                group,
                f"not used by {experiment.name} (its groups: {uses}); "
                f"drop it (~{group} on the command line, `override /{group}: null` in a sweep)",
            )


def validate(cfg) -> tuple[Experiment, list[dict]]:
    """Check ``cfg``; return its experiment and the resolved parameters of every cell."""
    sweep = cfg.sweep
    name = sweep.get("name")
    if not isinstance(name, str) or not _SWEEP_NAME.match(name):
        raise ConfigError("sweep.name", f"must be a name of letters, digits, '_', '.', '-', got {name!r}")
    _require_int("sweep.seeds", sweep.get("seeds"), 1)
    _require_int("sweep.seed_start", sweep.get("seed_start", 0), 0)

    experiment = get_experiment(cfg.experiment.get("name"))
    check_groups(cfg, experiment)
    cells = experiment.cells(cfg)

    resources = cfg.resources
    _require_number("resources.num_cpus", resources.num_cpus, minimum=0, strict=False)
    _require_number("resources.num_gpus", resources.num_gpus, minimum=0, strict=False)
    _require_int("resources.chunk_size", resources.chunk_size, 1)
    if not is_int(resources.max_retries) or resources.max_retries < -1:
        raise ConfigError(
            "resources.max_retries", f"must be an integer >= 0 (or -1 = retry forever), got {resources.max_retries!r}"
        )
    _require_int("resources.torch_threads", resources.torch_threads, 1)
    check_unit_count(len(cells), int(sweep.seeds), int(resources.chunk_size))

    check_report(cfg.report, experiment)
    check_fail_fast(cfg.fail_fast)
    check_compaction(cfg.get("compaction"))

    cluster = cfg.cluster
    for key in ("num_cpus", "num_gpus"):
        value = cluster.get(key)
        if value is not None:
            _require_number(f"cluster.{key}", value, minimum=0, strict=False)
    if cluster.get("bind") not in (None, "127.0.0.1"):
        raise ConfigError(
            "cluster.bind", f"must be 127.0.0.1 (loopback only) or null (Ray's default), got {cluster.get('bind')!r}"
        )
    if cluster.get("object_store_memory") is not None:
        _require_int("cluster.object_store_memory", cluster.object_store_memory, 75 * 1024**2)

    reference = resolve_reference(cfg)
    if reference is not None and not reference.is_file():
        raise ConfigError(
            "sweep.reference", f"no such file {str(reference)!r}; give a CSV path (relative to the project) or null"
        )

    check_results_dir(resolve_results_dir(cfg))
    return experiment, cells

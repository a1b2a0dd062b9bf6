"""Console entry points: ``landscape-sweep``, ``landscape-report``, ``landscape-compact`` and
``landscape-verify`` (thin: parse, call, exit).

Exit codes: 0 done; 1 done but some units failed (recorded as `error` rows), or
``fail_fast`` stopped the sweep; 2 the invocation could not start (invalid configuration
or arguments, unwritable or locked results directory, unreachable service or cluster,
infeasible resources; nothing written); 3 the driver stopped on a storage fault (one
line) or crashed (an unexpected error, traceback printed); what was recorded stays;
130 interrupted (what was recorded stays, the same command resumes). A results file that
cannot be read back is a storage fault: one line naming it, exit 3 (the next
``landscape-sweep`` moves it to quarantine and runs its units again). ``landscape-verify``:
0 no problem, 1 problems found (listed), 2 invalid arguments.
"""

from __future__ import annotations

import signal
import sys
import traceback
from pathlib import Path

from omegaconf import OmegaConf

from ray_jobs.config import (
    CONF_DIR,
    GROUPS,
    available_options,
    available_searches,
    available_sweeps,
    search_to_sweep,
    sweep_file,
)
from ray_jobs.errors import ConfigError, CorruptFile, storage_fault

EXIT_OK, EXIT_UNITS_FAILED, EXIT_USAGE, EXIT_CRASHED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _sweep_descriptions(*, searches: bool = False) -> list[str]:
    """One line per shipped sweep (or per search, with ``searches``) with its description."""
    lines = []
    chosen = set(available_searches())
    for name in available_sweeps():
        if (name in chosen) != searches:
            continue
        try:
            description = OmegaConf.load(sweep_file(name)).sweep.get("description", "")
        except Exception:  # a broken sweep file must not break --help
            description = ""
        lines.append(f"  {name:<24} {description}")
    return lines


def _experiment_descriptions() -> str:
    """One line per registered experiment: its name and ``Experiment.help`` (grid axes)."""
    from ray_jobs.experiments.registry import registered_experiments

    return "\n".join(f"  {name:<17} {experiment.help}" for name, experiment in registered_experiments().items())


def sweep_help() -> str:
    groups = "\n".join(f"  {group:<11} {', '.join(available_options(group))}" for group in GROUPS)
    return f"""usage: landscape-sweep sweep=<name> [override ...]
       landscape-sweep search=<name> [override ...]

Run a sweep of loss-landscape experiments on Ray (a local cluster is started when no
cluster.address / RAY_ADDRESS is given), record one Parquet row per run under
<results_dir>/<sweep>/runs/, one MLflow parent run with a child per cell, and write the
report (<results_dir>/<sweep>/report/table.md, table.csv, figure). Running the same
command again runs only the work units not yet recorded (resume).

A search (search=<name>, a sweep file with a `search:` block) asks Optuna for trials
instead of running the whole grid: a width / size threshold or the best protocol per
setting of the other grid axes, seeds added in stages, each stage one work unit; the
study is kept in <results_dir>/<name>/optuna_journal.log (the same command resumes), one
MLflow child per trial, report/search.md with the answer and the runs spent.

sweeps:
{chr(10).join(_sweep_descriptions())}

searches:
{chr(10).join(_sweep_descriptions(searches=True))}

experiments (a sweep file picks one; its grid axes):
{_experiment_descriptions()}

config groups (choose with group=option):
{groups}

overrides (Hydra syntax), for example:
  sweep.grid.k=[6,7]         a grid axis of the sweep's experiment (the axes are listed above)
  experiment.sgd.lr=0.01  experiment.string.max_rounds=10   an experiment's settings (conf/experiment/<name>.yaml)
  search.trials=20  search.target=0.99  search.sampler=grid   a search's settings (search=<name>)
  optimizer=adam data=digits  an experiment's own config groups (above)
  optimizer.max_iterations=5000  data.input_dim=4  experiment.probes.ntk_rank=true
  sweep.seeds=100            runs per cell (seeds seed_start .. seed_start + seeds - 1)
  results_dir=PATH           results root (default ./results)
  protocol.early_stop_global=true  protocol.max_iterations=50000
  resources.chunk_size=25  resources.num_gpus=0.25  cluster.num_cpus=2
  cluster.address=HOST:6379  tracking.uri=http://127.0.0.1:5000  tracking=none
  retry_errors=true          run again the units recorded as `error`

exit codes: 0 done, 1 some units failed (recorded as error rows) or fail_fast stopped
the sweep, 2 the invocation could not start (invalid configuration, results directory
unwritable or in use by another driver, tracking server or cluster unreachable, resources
no node offers; nothing written), 3 stopped by a storage fault (one line) or crashed
(traceback printed); recorded units are kept, 130 interrupted (run the same command to resume).
"""


def report_help() -> str:
    return (
        """usage: landscape-report [results_dir=PATH] sweep_name=<name> [report.confidence=0.99] [report.<setting>=...]

Rebuild the report of a sweep from its Parquet rows: per cell the runs and the fraction of
each status with its Wilson interval, then what the sweep's experiment reports (its own
tables and figures), and the published values when the sweep names a reference. Writes
<results_dir>/<sweep>/report/table.md, table.csv and the experiment's files, and prints
the table. Settings not given are those saved in <results_dir>/<sweep>/config.yaml. An
experiment's report layout may have settings of its own, given the same way (the
teacher-student report's report.family_tol=1e-4: the distance within which two spurious
minima are one family).

The rebuilt report is also logged to the MLflow store of that config (tracking.*; nothing
with tracking=none): one run <sweep>-report@<UTC time> per rebuild in the sweep's
experiment, tagged landscape.role=report and landscape.sweep_run=<the sweep's latest
parent run>, with the report settings and code version as params, the cells and runs as
metrics (and the experiment's headline series as histories), the table as an MLflow table
(report/table.json), the report files (figures also as images) and the config as
artifacts. Rebuilds with other settings then compare like runs. A tracking server that
does not answer is refused with one line before anything is rebuilt (exit 2), so is a
results directory that cannot be written; a results file that cannot be read back is named
in one line (exit 3): the sweep's command moves it to quarantine and runs its units again.

sweeps:
"""
        + "\n".join(_sweep_descriptions())
        + "\n"
    )


def _fail(program: str, error: ConfigError) -> int:
    print(f"{program}: error: {error}", file=sys.stderr)
    return EXIT_USAGE


def _crashed(program: str, exc: BaseException) -> int:
    """An unexpected error: the traceback, then one line saying what crashed; exit 3."""
    traceback.print_exc()
    message = " ".join(str(exc).split())
    print(
        f"{program}: crashed: {type(exc).__name__}: {message} (recorded units are kept; exit {EXIT_CRASHED})",
        file=sys.stderr,
    )
    return EXIT_CRASHED


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def sweep_main(argv: list[str] | None = None) -> int:
    """``landscape-sweep sweep=<name> [overrides]``."""
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help", "help") for arg in argv):
        print(sweep_help())
        return EXIT_OK
    from ray_jobs.execution import Timings
    from ray_jobs.search import is_search
    from ray_jobs.search.driver import SearchResult, run_search_sweep
    from ray_jobs.sweep import SweepResult, run_sweep
    from ray_jobs.tracking.links import print_sweep_link
    from ray_jobs.validate import compose

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # `kill` stops as cleanly as Ctrl-C
    timings = Timings()  # the invocation's phases (ray_jobs.execution.timing), compose first
    result: SearchResult | SweepResult
    try:
        with timings.phase("compose"):
            argv, _ = search_to_sweep(argv)
            cfg = compose(argv)
        if is_search(cfg):  # validates before anything is written, like run_sweep
            result = run_search_sweep(cfg, timings=timings)
        else:
            result = run_sweep(cfg, timings=timings)
    except ConfigError as error:
        return _fail("landscape-sweep", error)
    except KeyboardInterrupt:
        print(
            "landscape-sweep: interrupted; recorded units are kept, run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an environment failure: its own exit code, never 1 (= failed units)
        fault = storage_fault(exc)
        if fault is None:
            return _crashed("landscape-sweep", exc)
        print(
            f"landscape-sweep: stopped: {fault}; the units recorded before are kept and valid, fix the storage "
            f"and run the same command again to resume (exit {EXIT_CRASHED})",
            file=sys.stderr,
        )  # the environment, not a bug: one line
        return EXIT_CRASHED
    print_sweep_link(cfg, result.results_dir, result.parent_run_id)  # the runs table, in the model-training view
    if isinstance(result, SearchResult):  # is_search(cfg)
        print(result.markdown)
        print(
            f"{result.plan.sweep}: {len(result.studies)} studies, "
            f"{sum(s.runs_computed for s in result.studies)} runs computed, {result.units_failed} failed units; "
            f"{result.wall_s:.1f} s. Report: {result.results_dir / result.plan.sweep / 'report'}",
            file=sys.stderr,
        )
        return EXIT_UNITS_FAILED if result.units_failed else EXIT_OK
    print(result.report.markdown)
    print(
        f"{result.plan.sweep}: {result.units_scheduled} units scheduled, {result.units_skipped} already recorded, "
        f"{result.units_failed} failed; {result.wall_s:.1f} s. "
        f"Report: {result.results_dir / result.plan.sweep / 'report'}",
        file=sys.stderr,
    )
    if result.stopped:
        print(f"landscape-sweep: stopped early: {result.stopped}", file=sys.stderr)
    return EXIT_UNITS_FAILED if result.units_failed or result.stopped else EXIT_OK


def _report_config(argv: list[str], *, section: str | None = "report"):
    """The saved config of the sweep named in ``argv``, with ``section``.* overrides applied (``report`` for
    landscape-report, ``compaction`` for landscape-compact, None for landscape-verify)."""
    from ray_jobs.validate import resolve_results_dir

    try:
        args = OmegaConf.from_dotlist(argv)
    except Exception as exc:  # omegaconf's grammar errors
        raise ConfigError("arguments", f"cannot parse {argv!r} ({exc}); use key=value") from None
    unknown = set(args) - {"results_dir", "sweep_name", section}
    if unknown:
        keys = {
            "report": ", report.confidence, report.figure, report.<a setting of the experiment's report layout>",
            "compaction": ", compaction.max_rows, compaction.row_group_rows",
            None: "",
        }[section]
        raise ConfigError(sorted(unknown)[0], f"unknown argument; allowed: results_dir, sweep_name{keys}")
    results_dir = resolve_results_dir(OmegaConf.create({"results_dir": args.get("results_dir", "results")}))
    present = sorted(path.parent.name for path in results_dir.glob("*/config.yaml"))
    name = args.get("sweep_name")
    if name is None and len(present) == 1:
        name = present[0]
    if name not in present:
        given = "required" if name is None else f"no results for {name!r} under {results_dir}"
        raise ConfigError("sweep_name", f"{given}; sweeps with results there: {', '.join(present) or 'none'}")
    cfg = OmegaConf.load(results_dir / name / "config.yaml")
    cfg = OmegaConf.merge(cfg, {"results_dir": str(results_dir)}, {section: args.get(section) or {}} if section else {})
    return cfg


def report_main(argv: list[str] | None = None) -> int:
    """``landscape-report results_dir=PATH sweep_name=<name>``."""
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help", "help") for arg in argv):
        print(report_help())
        return EXIT_OK
    from ray_jobs.experiments.registry import get_experiment, get_layout
    from ray_jobs.provenance import code_version
    from ray_jobs.report import build_report
    from ray_jobs.store import ResultsStore
    from ray_jobs.tracking import SweepTracker, log_report
    from ray_jobs.validate import check_report, check_writable, resolve_reference

    try:
        cfg = _report_config(argv)
        experiment = get_experiment(cfg.experiment.name)
        check_report(cfg.report, experiment)
        layout = get_layout(experiment, cfg.report)
        reference = resolve_reference(cfg)
        store = ResultsStore(Path(cfg.results_dir), cfg.sweep.name)
        check_writable(store.report_dir)  # a read-only results directory: one line, before anything is read
        tracked = cfg.get("tracking") is not None and cfg.tracking.get("enabled", False)
        tracker = (
            SweepTracker.from_config(cfg, Path(cfg.results_dir)) if tracked else None
        )  # a dead server: refused here
    except ConfigError as error:
        return _fail("landscape-report", error)
    try:
        problems = store.problems()  # footers only: a damaged file is named, not a traceback
        if problems:
            more = f" (and {len(problems) - 1} more: landscape-verify lists them)" if len(problems) > 1 else ""
            raise CorruptFile(
                problems[0][0],
                f"{problems[0][1]}{more}; run the sweep's command again: it moves "
                f"such files to {store.quarantine_dir} and runs their units again",
            )
        report = build_report(
            store,
            layout,
            sweep=cfg.sweep.name,
            confidence=float(cfg.report.confidence),
            reference=reference,
            figure=bool(cfg.report.figure),
        )
        logged = ""
        if tracker is not None:
            settings = {"confidence": cfg.report.confidence, **layout.values, "figure": cfg.report.figure}
            run_id = log_report(
                tracker,
                sweep=cfg.sweep.name,
                results_dir=Path(cfg.results_dir),
                params={**settings, "code_version": code_version()},
                table=report.table,
                series=layout.headline_series(report.table) if not report.table.empty else {},
                paths=report.paths,
                config_path=store.config_path,
            )
            logged = f"; MLflow run {run_id} in {tracker.tracking_uri}"
    except Exception as exc:
        fault = storage_fault(exc)
        if fault is None:
            return _crashed("landscape-report", exc)
        print(f"landscape-report: stopped: {fault} (exit {EXIT_CRASHED})", file=sys.stderr)  # the data, not a bug
        return EXIT_CRASHED
    print(report.markdown)
    print(f"Report: {store.report_dir}{logged}", file=sys.stderr)
    return EXIT_OK


def compact_help() -> str:
    return """usage: landscape-compact [results_dir=PATH] sweep_name=<name> \
[compaction.max_rows=1000000] [compaction.row_group_rows=100000]

Merge the loose Parquet fragments of a sweep (one per work unit) into files of up to
max_rows rows per cell, <results_dir>/<sweep>/runs/compacted/<cell_id>/part-*.parquet,
with a manifest of the units each file holds (runs/_manifest.json). Units with error rows
stay loose (a retry_errors rerun replaces them). Takes the sweep's driver lock: refused
while a driver runs the sweep. Safe to kill at any moment: the next driver or compaction
finishes or undoes what it left, nothing is lost or counted twice. A sweep compacts by
itself after running when it leaves compaction.min_fragments (default 1000) fragments.
"""


def compact_main(argv: list[str] | None = None) -> int:
    """``landscape-compact results_dir=PATH sweep_name=<name>``."""
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help", "help") for arg in argv):
        print(compact_help())
        return EXIT_OK
    from ray_jobs.compaction import compact
    from ray_jobs.store import ResultsStore
    from ray_jobs.validate import check_compaction

    try:
        cfg = _report_config(argv, section="compaction")
        defaults = OmegaConf.load(CONF_DIR / "config.yaml").compaction  # for a sweep saved before compaction existed
        compaction = OmegaConf.merge(defaults, cfg.get("compaction") or {})
        check_compaction(compaction)
        store = ResultsStore(Path(cfg.results_dir), cfg.sweep.name)
        store.prepare()  # the driver lock (refused while a driver runs), then recovery
    except ConfigError as error:
        return _fail("landscape-compact", error)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        result = compact(store, max_rows=int(compaction.max_rows), row_group_rows=int(compaction.row_group_rows))
    except KeyboardInterrupt:
        print("landscape-compact: interrupted; nothing lost (the next run finishes the job)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        fault = storage_fault(exc)
        if fault is not None:
            print(f"landscape-compact: stopped: {fault}", file=sys.stderr)
            return EXIT_CRASHED
        return _crashed("landscape-compact", exc)
    finally:
        store.close()
    print(result.line(), file=sys.stderr)
    return EXIT_OK


def verify_help() -> str:
    return """usage: landscape-verify [results_dir=PATH] sweep_name=<name>

Check every file of a sweep's results without running anything: each compacted part the
manifest lists and each loose fragment is read whole and must hold the key columns and its
units' rows, one per seed of each unit's seed range (the plan of the saved config.yaml).
Prints one line per problem (<path>: <what is wrong>), then a summary line. Moves nothing:
the next landscape-sweep of the sweep moves files that cannot be read to
<results_dir>/<sweep>/quarantine/ and runs their units again.

exit codes: 0 no problem, 1 problems found (listed), 2 invalid arguments or no such sweep.
"""


def verify_main(argv: list[str] | None = None) -> int:
    """``landscape-verify results_dir=PATH sweep_name=<name>``."""
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help", "help") for arg in argv):
        print(verify_help())
        return EXIT_OK
    from ray_jobs.plan import plan_sweep
    from ray_jobs.search import is_search
    from ray_jobs.store import ResultsStore
    from ray_jobs.validate import validate
    from ray_jobs.verify import verify

    try:
        cfg = _report_config(argv, section=None)
        units = None  # a search's units are chosen as it runs: each unit's seeds checked to be a range
        if not is_search(cfg):
            experiment, cells = validate(cfg)
            units = {unit.unit_id: unit for unit in plan_sweep(cfg, experiment.name, cells).units}
    except ConfigError as error:
        return _fail("landscape-verify", error)
    try:
        result = verify(ResultsStore(Path(cfg.results_dir), cfg.sweep.name), units)
    except Exception as exc:
        return _crashed("landscape-verify", exc)
    for problem in result.problems:
        print(problem)
    print(f"landscape-verify: {cfg.sweep.name}: {result.line()}", file=sys.stderr)
    return EXIT_UNITS_FAILED if result.problems else EXIT_OK


if __name__ == "__main__":  # python -m ray_jobs.cli sweep=smoke
    sys.exit(sweep_main())

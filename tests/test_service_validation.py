"""Invalid configurations: one-line error naming the field and what is allowed, exit code 2,
nothing written (no results directory, no MLflow database, no Ray)."""

from __future__ import annotations

import pytest

from ray_jobs.cli import EXIT_USAGE, sweep_main
from tests.conftest import TINY_SWEEP, assert_usage_error, run_cli

CASES = {
    "missing sweep": ([], "sweep: required", "safran_shamir_table1"),
    "unknown sweep": (
        ["sweep=nope"],
        "sweep: unknown sweep 'nope'",
        "safran_shamir_table1, safran_shamir_table1_proven, safran_shamir_table2, ",
    ),
    "unknown axis": (
        [*TINY_SWEEP, "sweep.grid.width=[4]"],
        "sweep.grid.width: unknown axis 'width'",
        "allowed: k, n, n_minus_k",
    ),
    "unknown axis added": (
        [*TINY_SWEEP, "+sweep.grid.depth=[2]"],
        "sweep.grid.depth: unknown axis 'depth'",
        "allowed: k, n, n_minus_k",
    ),
    "certify_runs not a bool": (
        [*TINY_SWEEP, "experiment.certify_runs=maybe"],
        "experiment.certify_runs: must be true or false",
        "got 'maybe'",
    ),
    "certify_runs without weights": (
        [*TINY_SWEEP, "experiment.certify_runs=true", "experiment.keep_weights=false"],
        "experiment.certify_runs: needs the final weights",
        "keep_weights=true",
    ),
    "compaction rows": (
        [*TINY_SWEEP, "compaction.max_rows=10", "compaction.row_group_rows=20"],
        "compaction.row_group_rows: must be at most compaction.max_rows (10)",
        "got 20",
    ),
    "empty grid": (
        [*TINY_SWEEP, "~sweep.grid.k", "~sweep.grid.n_minus_k"],
        "sweep.grid: empty grid",
        "allowed axes: k",
    ),
    "no grid": ([*TINY_SWEEP, "sweep.grid=null"], "sweep.grid: empty grid", "allowed axes: k"),
    "empty axis": ([*TINY_SWEEP, "sweep.grid.k=[]"], "sweep.grid.k: empty axis", "at least one value"),
    "k < 1": ([*TINY_SWEEP, "sweep.grid.k=[0,2]"], "sweep.grid.k: must be an integer >= 1", "got 0"),
    "n < 1 (offset)": (
        [*TINY_SWEEP, "sweep.grid.n_minus_k=[-3]"],
        "sweep.grid.n_minus_k: n = k + n_minus_k must be an integer >= 1",
        "got -1",
    ),
    "n < 1 (axis)": (
        [*TINY_SWEEP, "~sweep.grid.n_minus_k", "+sweep.grid.n=[0]"],
        "sweep.grid.n: must be an integer >= 1",
        "got 0",
    ),
    "seeds < 1": ([*TINY_SWEEP, "sweep.seeds=0"], "sweep.seeds: must be an integer >= 1", "got 0"),
    "step = 0": ([*TINY_SWEEP, "protocol.step=0"], "protocol.step: must be a positive finite number", "got 0"),
    "step < 0 on an axis": (
        [*TINY_SWEEP, "+sweep.grid.step=[0.1,-0.5]"],
        "protocol.step: must be a positive finite number",
        "got -0.5",
    ),
    "grad_tol = 0": (
        [*TINY_SWEEP, "protocol.grad_tol=0"],
        "protocol.grad_tol: must be a positive finite number",
        "got 0",
    ),
    "bad-loss threshold < 0": (
        [*TINY_SWEEP, "protocol.bad_loss_threshold=-1e-3"],
        "protocol.bad_loss_threshold: must be a positive",
        "got -0.001",
    ),
    "eig margin < 0": ([*TINY_SWEEP, "protocol.eig_margin=-1"], "protocol.eig_margin: must be a number >= 0", "got -1"),
    "unknown activation": (
        [*TINY_SWEEP, "experiment.activation=tanh"],
        "experiment.activation: unknown activation 'tanh'",
        "allowed: relu",
    ),
    "unknown teacher": (
        [*TINY_SWEEP, "experiment.teacher=random"],
        "experiment.teacher: 'random' is not one of",
        "identity",
    ),
    "unknown key": ([*TINY_SWEEP, "protocol.stepsize=0.1"], "protocol.stepsize: no such key", "+key=value"),
    "unknown group option": (
        [*TINY_SWEEP, "resources=tpu"],
        "resources: unknown resources option 'tpu'",
        "allowed: cpu, gpu",
    ),
    "chunk_size = 0": (
        [*TINY_SWEEP, "resources.chunk_size=0"],
        "resources.chunk_size: must be an integer >= 1",
        "got 0",
    ),
    "unparsable override": ([*TINY_SWEEP, "sweep.grid.k=[2,"], "overrides: cannot parse", "key=value"),
    # typos are refused whatever the prefix, naming the closest key (issue 11)
    "sweep key typo": ([*TINY_SWEEP, "sweep.seed=10"], "sweep.seed: no such key", "did you mean sweep.seeds?"),
    "sweep key typo added": ([*TINY_SWEEP, "+sweep.seed=10"], "sweep.seed: no such key", "did you mean sweep.seeds?"),
    "cluster key typo added": (
        [*TINY_SWEEP, "+cluster.adress=127.0.0.1:6379"],
        "cluster.adress: no such key",
        "did you mean cluster.address?",
    ),
    "resources key typo added": (
        [*TINY_SWEEP, "+resources.chunk=5"],
        "resources.chunk: no such key",
        "did you mean resources.chunk_size?",
    ),
    "tracking key typo added": (
        [*TINY_SWEEP, "+tracking.url=http://127.0.0.1:5000"],
        "tracking.url: no such key",
        "did you mean tracking.uri?",
    ),
    "report key typo added": (
        [*TINY_SWEEP, "+report.confidance=0.9"],
        "report.confidance: no such key",
        "did you mean report.confidence?",
    ),
    "top-level typo added": (
        [*TINY_SWEEP, "+retry_error=true"],
        "retry_error: no such key",
        "did you mean retry_errors?",
    ),
    "grid set to empty": ([*TINY_SWEEP, "sweep.grid={}"], "sweep.grid: empty grid", "give the axes"),
}


@pytest.mark.parametrize("args,field_message,allowed", CASES.values(), ids=list(CASES))
def test_invalid_config_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, field_message, allowed):
    assert_usage_error(args, field_message, allowed, tmp_path, capsys)
    assert list(tmp_path.iterdir()) == []


def test_results_dir_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("not a directory")
    code = sweep_main([*TINY_SWEEP, f"results_dir={blocker}"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE
    assert "results_dir:" in err and "is a file" in err and len(err.splitlines()) == 1
    assert blocker.read_text() == "not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]

    code = sweep_main([*TINY_SWEEP, f"results_dir={blocker / 'below'}"])
    assert code == EXIT_USAGE
    assert "is under the file" in capsys.readouterr().err


def test_exit_code_of_the_real_process(tmp_path):
    """The console-script path: a separate interpreter exits with status 2."""
    proc = run_cli([*TINY_SWEEP, "sweep.grid.k=[0]", f"results_dir={tmp_path / 'r'}"])
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("landscape-sweep: error: sweep.grid.k: must be an integer >= 1")
    )
    assert not (tmp_path / "r").exists()


def test_help_lists_the_sweeps(capsys):
    assert sweep_main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("safran_shamir_table1", "safran_shamir_table2", "smoke"):
        assert name in out
    assert "usage: landscape-sweep sweep=<name>" in out
    from ray_jobs.cli import report_main

    assert report_main(["--help"]) == 0
    assert "usage: landscape-report" in capsys.readouterr().out


@pytest.mark.parametrize("typo", ["sweep.seed=10", "+sweep.seed=10", "+cluster.adress=127.0.0.1:6379"])
def test_a_typo_in_the_service_sections_is_not_told_to_add_the_key(tmp_path, capsys, typo):
    """The error for a mistyped key of the service's own sections names the key meant, and
    does not suggest adding it with `+` (that is how a typo used to pass)."""
    assert sweep_main([*TINY_SWEEP, typo, f"results_dir={tmp_path / 'results'}"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "did you mean" in err and "+key=value" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_empty_results_dir_is_refused(tmp_path, capsys, monkeypatch):
    """``results_dir=`` would write into the working directory: refused before anything is written."""
    monkeypatch.chdir(tmp_path)
    assert sweep_main([*TINY_SWEEP, "results_dir="]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "results_dir: empty; give a directory path" in err
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_file_that_is_not_yaml_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    """A syntax error in a sweep file: exit 2, one line with the file, line and problem (no ParserError traceback)."""
    import shutil

    import ray_jobs.config as config
    from tests.conftest import PROJECT_ROOT

    for part in ("conf", "sweeps"):
        shutil.copytree(PROJECT_ROOT / part, tmp_path / "project" / part, symlinks=True)
    (tmp_path / "project" / "sweeps" / "broken.yaml").write_text("sweep:\n  name: broken\n  grid: [k: 1\n")
    monkeypatch.setattr(config, "CONF_DIR", tmp_path / "project" / "conf")
    monkeypatch.setattr(config, "SWEEPS_DIR", tmp_path / "project" / "sweeps")
    assert sweep_main(["sweep=broken", f"results_dir={tmp_path / 'results'}"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("landscape-sweep: error: sweep: not valid YAML: ") and "broken.yaml, line 4" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "setting,message",
    [
        ("report.confidence=2", "report.confidence: must be a number in (0, 1)"),
        ("report.family_tol=-1", "report.family_tol: must be a number >= 0"),
        ("report.figure=maybe", "report.figure: must be true or false"),
    ],
)
def test_landscape_report_refuses_bad_report_settings_in_one_line(tmp_path, capsys, setting, message):
    from ray_jobs.cli import report_main
    from ray_jobs.config import compose_config, to_yaml

    sweep_dir = tmp_path / "results" / "smoke"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "config.yaml").write_text(to_yaml(compose_config(["sweep=smoke"])))
    assert report_main([f"results_dir={tmp_path / 'results'}", "sweep_name=smoke", setting]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["config.yaml"]  # no report written


def test_a_crash_has_its_own_exit_code(tmp_path, capsys, monkeypatch):
    """An unexpected error in the driver is exit 3 (not 1, which means 'done, some units failed'),
    with the traceback and one closing line naming it."""
    import ray_jobs.sweep
    from ray_jobs.cli import EXIT_CRASHED

    def crash(cfg, **_):  # run_sweep also takes the invocation's timings
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ray_jobs.sweep, "run_sweep", crash)
    assert sweep_main([*TINY_SWEEP, f"results_dir={tmp_path / 'results'}"]) == EXIT_CRASHED == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith(
        "landscape-sweep: crashed: RuntimeError: disk on fire"
    )

"""Damaged results and bad tracking URIs, tried for real (issue 24, items 1, 2 and 7).

- Fragments overwritten with random bytes, truncated, replaced by another schema or by
  another unit's rows, and a compacted part overwritten: the next run moves each to
  ``<sweep>/quarantine/`` with one warning line naming it, runs its units again, and ends
  with the same rows as the uninterrupted run; ``landscape-report`` names the bad file in
  one line (exit 3); ``landscape-verify`` lists every problem (exit 1), nothing once healed.
- ``tracking.uri`` with a scheme MLflow has no tracking store for, or a sqlite database in
  a directory that does not exist: one line naming ``tracking.uri``, exit 2, nothing written
  in results_dir nor at the bad path.
- ``+experiment.foo=1`` named ``experiment.foo``; resources a local cluster cannot offer
  refused in one line, before Ray starts; ``landscape-report`` on a read-only results
  directory: one line naming it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.cli import EXIT_CRASHED, EXIT_OK, EXIT_UNITS_FAILED, EXIT_USAGE, report_main, sweep_main, verify_main
from ray_jobs.config import compose_config
from ray_jobs.errors import CorruptFile
from ray_jobs.store import ResultsStore, footer_problem
from ray_jobs.sweep import run_sweep
from tests.conftest import PROJECT_ROOT, TINY_SWEEP, TINY_UNITS, assert_usage_error, run_cli

#: columns that differ between two runs of the same rows (where and when they ran)
VOLATILE = ["wall_s", "hostname", "node_id", "gpu_ids", "code_version"]


def rows_of(results: Path) -> pd.DataFrame:
    """Every row of the tiny sweep, in (cell, seed) order, without the volatile columns."""
    table = ResultsStore(results, "smoke").read()
    frame = table.to_pandas().drop(columns=VOLATILE)
    return frame.sort_values(["cell_id", "seed"]).reset_index(drop=True)


def assert_same_rows(results: Path, reference: pd.DataFrame) -> None:
    rows = rows_of(results)
    assert not rows.duplicated(["cell_id", "seed"]).any()
    pd.testing.assert_frame_equal(rows[reference.columns], reference, check_exact=True)


def one_line(err: str, prefix: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


# --- the footer check, file by file (no Ray) ---------------------------------------------


def _fragment(unit: str, seeds: range) -> pa.Table:
    return pa.table(
        {
            "cell_id": ["c"] * len(seeds),
            "unit_id": [unit] * len(seeds),
            "seed": pa.array(list(seeds), pa.int64()),
            "status": ["global"] * len(seeds),
        }
    )


def test_the_footer_check_names_each_kind_of_damage(tmp_path):
    good = tmp_path / "u1.parquet"
    pq.write_table(_fragment("u1", range(0, 3)), good)
    data = good.read_bytes()
    cases = {
        "random": os.urandom(3000),
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "bad footer": data[:-30] + data[-8:],
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.parquet"
        path.write_bytes(content)
        assert footer_problem(path, unit_id="u1") is not None, name
    assert "magic bytes" in footer_problem(tmp_path / "random.parquet", unit_id="u1")
    assert footer_problem(tmp_path / "empty.parquet") == "Parquet file size is 0 bytes"
    other_schema = tmp_path / "schema.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), other_schema)
    no_keys = "none of the columns cell_id, unit_id, seed, status (not rows of this dataset)"
    assert footer_problem(other_schema) == no_keys
    pq.write_table(_fragment("u1", range(0, 3)).set_column(2, "seed", pa.array(["0", "1", "2"])), other_schema)
    assert footer_problem(other_schema) == "column seed is string, not int64"
    assert footer_problem(good, unit_id="u1") is None
    assert footer_problem(good, unit_id="u2") == "holds rows of unit u1, not only of u2"
    assert footer_problem(good, rows=4) == "3 rows, the manifest lists 4"
    pq.write_table(pa.concat_tables([_fragment("u1", range(0, 3)), _fragment("u1", range(2, 3))]), good)
    assert footer_problem(good, unit_id="u1") == "4 rows for the seeds 0..2"


def test_a_page_damaged_under_a_sound_footer_is_named_when_read_and_moved_aside_by_the_driver(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.prepare()
    table = _fragment("u1", range(0, 1000)).append_column("x", pa.array([float(i) for i in range(1000)]))
    path = store.write_fragment("u1", table)
    data = bytearray(path.read_bytes())
    data[8:200] = b"\0" * 192  # the first data pages; the footer stays whole
    path.write_bytes(bytes(data))
    assert store.problems() == []  # the footer check cannot see it
    warnings: list[str] = []
    store.warn = warnings.append
    moved = store.quarantine_dir / "u1.parquet"
    with pytest.raises(CorruptFile, match=rf"cannot read {path}: .*; moved to {moved}: run the same command again"):
        store.read()
    assert not path.exists() and (store.quarantine_dir / "u1.parquet").exists()
    assert store.completed_unit_ids() == set()
    assert len(warnings) == 1 and warnings[0].startswith(f"{path} cannot be read (")
    store.close()


# --- damaged fragments and parts of a real sweep -------------------------------------------


@pytest.fixture(scope="module")
def reference(ray_session, tmp_path_factory):
    """The tiny sweep run once, uninterrupted: its results directory and its rows."""
    results = tmp_path_factory.mktemp("reference") / "results"
    assert sweep_main([*TINY_SWEEP, f"results_dir={results}", "tracking=none"]) == EXIT_OK
    return results, rows_of(results)


def _copy(results: Path, to: Path) -> Path:
    subprocess.run(["cp", "-a", str(results), str(to)], check=True)
    return to


def test_damaged_fragments_are_quarantined_named_and_run_again_to_the_same_rows(reference, tmp_path, capsys):
    source, expected = reference
    results = _copy(source, tmp_path / "results")
    store = ResultsStore(results, "smoke")
    fragments = store.fragment_paths()
    assert len(fragments) == TINY_UNITS
    fragments[0].write_bytes(os.urandom(3000))  # the fault: 3,000 random bytes
    fragments[1].write_bytes(fragments[1].read_bytes()[:-100])  # truncated
    pq.write_table(pa.table({"a": [1, 2, 3]}), fragments[2])  # another schema
    fragments[3].write_bytes(fragments[4].read_bytes())  # another unit's rows under its name
    damaged = fragments[:4]
    capsys.readouterr()

    # the report and the verifier name the files, one line each, no traceback
    assert report_main([f"results_dir={results}", "sweep_name=smoke"]) == EXIT_CRASHED
    line = one_line(capsys.readouterr().err, "landscape-report: stopped: cannot read ")
    assert str(fragments[0]) in line and "(and 3 more: landscape-verify lists them)" in line
    assert verify_main([f"results_dir={results}", "sweep_name=smoke"]) == EXIT_UNITS_FAILED
    out, err = capsys.readouterr()
    assert sorted(line.split(": ")[0] for line in out.strip().splitlines()) == sorted(map(str, damaged))
    assert err.strip() == (
        "landscape-verify: smoke: 8 files, 4 units (4 units of the plan not recorded yet), 12 rows checked: 4 problems"
    )

    started = time.monotonic()
    result = run_sweep(compose_config([*TINY_SWEEP, f"results_dir={results}", "tracking=none"]))
    assert (result.units_scheduled, result.units_skipped, result.units_failed) == (4, 4, 0)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 4, err[-3000:]
    for path in damaged:
        (line,) = [line for line in warnings if line.startswith(f"warning: {path} cannot be read (")]
        assert line.endswith(f"moved to {store.quarantine_dir / path.name}, its unit runs again")
        assert (store.quarantine_dir / path.name).exists()
    assert_same_rows(results, expected)
    assert verify_main([f"results_dir={results}", "sweep_name=smoke"]) == EXIT_OK
    assert capsys.readouterr().err.strip() == "landscape-verify: smoke: 8 files, 8 units, 24 rows checked: no problems"
    print(f"4 damaged fragments healed in {time.monotonic() - started:.1f} s")


def test_a_damaged_compacted_part_is_quarantined_and_its_units_run_again(reference, tmp_path, capsys):
    source, expected = reference
    results = _copy(source, tmp_path / "results")
    store = ResultsStore(results, "smoke")
    store.prepare()
    from ray_jobs.compaction import compact

    compact(store)
    store.close()
    parts = sorted(store.manifest().parts)
    assert len(parts) == 4 and store.fragment_paths() == []
    part = store.runs_dir / parts[0]
    units = store.manifest().parts[parts[0]]["units"]
    part.write_bytes(os.urandom(3000))
    capsys.readouterr()

    assert report_main([f"results_dir={results}", "sweep_name=smoke"]) == EXIT_CRASHED
    assert str(part) in one_line(capsys.readouterr().err, "landscape-report: stopped: cannot read ")
    assert verify_main([f"results_dir={results}", "sweep_name=smoke"]) == EXIT_UNITS_FAILED
    assert capsys.readouterr().out.strip().startswith(f"{part}: Parquet magic bytes not found")

    args = [*TINY_SWEEP, f"results_dir={results}", "tracking=none", "compaction.min_fragments=1"]
    result = run_sweep(compose_config(args))
    assert (result.units_scheduled, result.units_skipped) == (len(units), TINY_UNITS - len(units))
    err = capsys.readouterr().err
    target = store.quarantine_dir / parts[0].replace("/", "__")
    (warning,) = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warning.startswith(f"warning: {part} cannot be read (Parquet magic bytes not found")
    assert warning.endswith(f"moved to {target}, {len(units)} units run again") and target.exists()
    assert parts[0] not in store.manifest().parts and set(units) <= set(store.manifest().unit_part)  # compacted again
    assert_same_rows(results, expected)
    assert verify_main([f"results_dir={results}", "sweep_name=smoke"]) == EXIT_OK


# --- bad tracking URIs, refused in the preflight -------------------------------------------


def _local_env() -> dict:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


ALLOWED = "allowed schemes: databricks, file, http, https, mssql, mysql, postgresql, sqlite (or a local path)"


@pytest.mark.parametrize(
    ("uri", "line", "bad_path"),
    [
        (
            "ftp://nowhere",
            f"tracking.uri: 'ftp://nowhere': MLflow has no tracking store for the scheme 'ftp'; {ALLOWED}",
            None,
        ),
        (
            "sqlite:////proc/x/mlflow.db",
            "tracking.uri: 'sqlite:////proc/x/mlflow.db': the directory /proc/x does not exist",
            "/proc/x",
        ),
        (
            "sqlite:////nonexistent_dir/mlflow.db",
            "tracking.uri: 'sqlite:////nonexistent_dir/mlflow.db': the directory /nonexistent_dir does not exist",
            "/nonexistent_dir",
        ),
    ],
)
def test_bad_tracking_uris_are_refused_in_one_line_before_anything_is_written(tmp_path, uri, line, bad_path):
    results = tmp_path / "results"
    started = time.monotonic()
    proc = run_cli([*TINY_SWEEP, f"results_dir={results}", f"tracking.uri={uri}"], env=_local_env(), timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == EXIT_USAGE, proc.stderr[-3000:]
    assert one_line(proc.stderr, "landscape-sweep: error: ").startswith(f"landscape-sweep: error: {line}")
    assert not results.exists() and list(tmp_path.iterdir()) == []
    if bad_path is not None:
        assert not Path(bad_path).exists()
    assert elapsed < 60  # no Ray, no MLflow store: the interpreter, compose and MLflow's import
    print(f"{uri}: refused in {elapsed:.1f} s")


# --- smaller ones ------------------------------------------------------------------------


def test_an_unknown_experiment_key_is_named_experiment_not_protocol(tmp_path, capsys):
    assert_usage_error(
        [*TINY_SWEEP, "+experiment.foo=1"],
        "experiment.foo: unknown teacher-student option",
        "allowed: ",
        tmp_path,
        capsys,
    )


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["resources.num_cpus=64", "cluster.num_cpus=1"],
            "resources.num_cpus: each task asks for 64 CPUs, but the largest node of the local cluster offers 1",
        ),
        (
            ["resources=gpu", "cluster.num_cpus=1"],
            "resources.num_gpus: each task asks for 0.25 GPUs, but the largest node of the local cluster offers 0",
        ),
        (
            ["resources.num_cpus=4096"],
            "resources.num_cpus: each task asks for 4096 CPUs, but the largest node of the local cluster",
        ),
    ],
)
def test_resources_a_local_cluster_cannot_offer_are_one_line_without_rays_start_lines(tmp_path, overrides, line):
    results = tmp_path / "results"
    started = time.monotonic()
    proc = run_cli([*TINY_SWEEP, *overrides, f"results_dir={results}"], env=_local_env(), timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == EXIT_USAGE, proc.stderr[-3000:]
    assert one_line(proc.stderr, f"landscape-sweep: error: {line}")  # no "Started a local Ray instance" before it
    assert not results.exists()
    print(f"{overrides}: refused in {elapsed:.1f} s")


def _can_bind_mount() -> str | None:
    if os.geteuid() != 0:
        return "needs root to bind-mount a read-only copy"
    probe = Path(tempfile.mkdtemp(prefix="landscape-ro-probe-"))
    try:
        if subprocess.run(["mount", "--bind", str(probe), str(probe)], capture_output=True).returncode != 0:
            return "mount(8) is not permitted here"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    finally:
        probe.rmdir()


RO_SKIP = _can_bind_mount()


@pytest.mark.skipif(RO_SKIP is not None, reason=RO_SKIP or "")
def test_report_on_a_read_only_results_dir_is_one_line_naming_it(reference, tmp_path, capsys):
    source, _ = reference
    _copy(source, tmp_path / "source")
    mountpoint = tmp_path / "ro"
    mountpoint.mkdir()
    subprocess.run(["mount", "--bind", str(tmp_path / "source"), str(mountpoint)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mountpoint)], check=True)
        capsys.readouterr()
        assert report_main([f"results_dir={mountpoint}", "sweep_name=smoke"]) == EXIT_USAGE
        assert one_line(capsys.readouterr().err, "landscape-report: error: ") == (
            f"landscape-report: error: results_dir: cannot write under {mountpoint}/smoke/report: "
            f"Read-only file system; give a writable directory"
        )
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_resume_reads_the_footers_of_new_or_changed_fragments_only(tmp_path, monkeypatch):
    from ray_jobs.store import health

    store = ResultsStore(tmp_path, "s")
    store.prepare()
    for index in range(5):
        store.write_fragment(f"u{index}", _fragment(f"u{index}", range(3 * index, 3 * index + 3)))
    store.close()
    read: list[str] = []
    real = health.footer_problem

    def counted(path, **kwargs):
        read.append(path.name)
        return real(path, **kwargs)

    monkeypatch.setattr(health, "footer_problem", counted)
    store.prepare()  # the first check after the fragments were written reads them all
    store.close()
    assert sorted(read) == [f"u{index}.parquet" for index in range(5)]
    read.clear()
    time.sleep(0.05)  # file-system timestamps are coarse (a few ms)
    store.prepare()
    store.close()
    assert read == []  # checked before, unchanged since
    time.sleep(0.05)
    store.fragment_path("u3").write_bytes(os.urandom(3000))  # damaged after the check: a newer mtime
    store.prepare()
    store.close()
    assert read == ["u3.parquet"] and (store.quarantine_dir / "u3.parquet").exists()
    assert store.completed_unit_ids() == {"u0", "u1", "u2", "u4"}
    assert all(path.name.endswith(".parquet") for path in store.runs_dir.iterdir())  # nothing else in runs/
    assert (store.sweep_dir / ".footers_checked").is_file() and not list(store.sweep_dir.glob(".footers_checked.*"))

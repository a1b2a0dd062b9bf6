"""The teacher-student benchmark's pairs mode (``--pairs``): runs, compares classifications,
prints one ratio per round (a tiny cell; speed itself is measured by ``make bench``, not here)."""

from __future__ import annotations

from benchmarks.bench_teacher_student import main


def test_pairs_mode_prints_a_ratio_per_round_and_compares_classifications(capsys):
    assert main(["--k", "3", "--n", "3", "--seeds", "4", "--workers", "1", "--pairs", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("round ")]
    assert len(lines) == 2
    for line in lines:
        assert "4 seeds" in line and "0 classifications differ" in line and "x," in line

"""Slow: the shipped Table 1 sweep, cut to its first cells, reproduces the published
percentages (each inside our 99% Wilson interval). Run by `make test-all`."""

from __future__ import annotations

import pandas as pd
import pytest

from ray_jobs.config import compose_config
from ray_jobs.report import TABLE_CSV
from ray_jobs.sweep import run_sweep


@pytest.mark.slow
def test_table1_first_cells_inside_published_intervals(ray_session, tmp_path):
    cfg = compose_config(["sweep=safran_shamir_table1", "sweep.grid.k=[6,7,8,9]", f"results_dir={tmp_path}"])
    result = run_sweep(cfg)
    assert result.units_failed == 0
    table = pd.read_csv(tmp_path / "safran_shamir_table1" / "report" / TABLE_CSV)
    assert list(table["k"]) == [6, 7, 8, 9] and (table["runs"] == 1000).all()
    assert table["ref_inside_ci"].astype(bool).all(), table[
        ["k", "frac_spurious", "frac_spurious_lo", "frac_spurious_hi", "ref_frac_spurious"]
    ]

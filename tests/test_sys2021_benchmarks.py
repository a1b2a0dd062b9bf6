"""The 2021 study's helpers (issue 27): the cost model's power-law fits and estimate
(``benchmarks.sys2021_cost``) and the study's table and figure from report tables
(``benchmarks.sys2021_study``), on synthetic inputs with known answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmarks import sys2021_cost, sys2021_study


def test_power_fit_recovers_a_power_law():
    ks = [6, 8, 10, 13, 20]
    a, b = sys2021_cost.power_fit(ks, [3.0 * k**2.5 for k in ks])
    assert a == pytest.approx(3.0, rel=1e-10) and b == pytest.approx(2.5, rel=1e-10)


def test_the_estimate_is_runs_times_iterations_times_cost_plus_the_hessian():
    table = pd.DataFrame(
        {"k": [6, 10, 20, 10], "n": [6, 10, 20, 11], "runs": [500, 500, 50, 500], "wall_s": 1.0}
    ).assign(iterations_mean=lambda t: 11.0 * t["k"] ** 2.0 + 1000 * (t["n"] - t["k"]))  # n = k + 1 ignored
    measured = {k: (1e-6 * k**2, 1e-5 * k**4) for k in (10, 20, 50)}
    est = sys2021_cost.estimate(table, measured).set_index("k")
    expected = 500 * (11.0 * 100**2 * 1e-6 * 100**2 + 1e-5 * 100**4) / 3600
    assert est.loc[100, "compute-hours / 500 runs"] == pytest.approx(expected, abs=0.01)
    assert est.loc[30, "iterations / run (fit)"] == round(11.0 * 30**2)


def _report(path, rows):
    (path / "report").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path / "report" / "table.csv", index=False)


def test_the_study_table_and_figure(tmp_path):
    def row(k, n, g, lo, hi):
        return dict(
            k=k, n=n, runs=500, frac_global=g, frac_global_lo=lo, frac_global_hi=hi, frac_spurious=1 - g,
            frac_certified_spurious=1 - g, n_families=2, frac_not_converged=0.0, frac_diverged=0.0,
            iterations_mean=845.6, wall_s=3.8,
        )  # fmt: skip

    _report(tmp_path / "a", [row(10, 10, 0.624, 0.567, 0.678), row(8, 8, 0.864, 0.820, 0.899)])
    _report(tmp_path / "b", [row(8, 9, 1.0, 0.987, 1.0)])
    table = sys2021_study.read([tmp_path / "a", tmp_path / "b"])
    assert list(zip(table["k"], table["n"])) == [(8, 8), (10, 10), (8, 9)]  # n = k first, by k
    text = sys2021_study.markdown(sys2021_study.summary(table))
    assert "| 8 | 8 | 500 | **86.4** [82.0, 89.9] | 13.6 | 13.6 | 2 | 0.0 | 0.0 | 846 | 4 |" in text
    old = tmp_path / "table1.csv"
    pd.DataFrame({"k": [8, 10], "n": [8, 10], "frac_global": [0.865, 0.653]}).to_csv(old, index=False)
    compared = sys2021_study.summary(sys2021_study.with_2018(table, [old]))
    assert compared["2018 reproduction: global %"].tolist()[:2] == [86.5, 65.3]
    assert math.isnan(compared["2018 reproduction: global %"].tolist()[2])  # no 2018 row at (8, 9)
    sys2021_study.figure(sys2021_study.with_2018(table, [old]), tmp_path / "global.png")
    assert (tmp_path / "global.png").stat().st_size > 1000
    assert math.isclose(table["wall_s"].sum(), 11.4)

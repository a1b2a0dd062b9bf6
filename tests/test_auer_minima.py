"""Auer, Herbster & Warmuth (1995) Theorem 3.4: the d = 1 construction is certified example by
example, the lift has floor(n/d)^d strict minima (counted by descent from one start per
product cell, grouped by distance as the report does), derivatives = autograd, batched =
plain loop, and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from landscape_core.auer_minima import (
    AuerOptions,
    auer_dataset,
    auer_examples_1d,
    error,
    error_derivatives,
    minima_1d,
    run_auer_minima,
)
from landscape_core.errors import OptionError
from ray_jobs.config import compose_config
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.auer_minima.layout import group_endpoints
from ray_jobs.validate import validate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("m", [1, 2, 3, 5, 7])
def test_one_dimensional_construction_has_exactly_m_minima(m):
    one = auer_examples_1d(m)
    assert len(one["x"]) == m and min(one["margins"]) > 1e-3  # each interval minimum-containing
    assert all(a > b for a, b in zip(one["x"], one["x"][1:]))  # inputs added smaller and smaller
    mu = minima_1d(one["x"], 0.75)
    assert len(mu) == m
    for (a, b), w in zip(one["intervals"], mu):  # one minimum per certified interval
        assert a < w < b


def test_dataset_layout():
    X, Y, one = auer_dataset(7, 2)
    assert X.shape == (7, 2) and torch.all(Y == 0.75)
    assert torch.equal(X[:3, 0], torch.tensor(one["x"], dtype=torch.float64)) and torch.all(X[:3, 1] == 0)
    assert torch.equal(X[3:6, 1], torch.tensor(one["x"], dtype=torch.float64)) and torch.all(X[3:6, 0] == 0)
    assert torch.all(X[6] == 0)  # the leftover example: a constant term
    # separable: E(w) = f(w_1) + f(w_2) + (y - 1/2)^2
    w = torch.tensor([[1.3, 17.0]], dtype=torch.float64)
    f = [error(torch.tensor([[v]], dtype=torch.float64), X[:3, :1], Y[:3]) for v in (1.3, 17.0)]
    assert float(error(w, X, Y)) == pytest.approx(float(f[0] + f[1]) + 0.25**2, rel=1e-14)


def test_derivatives_equal_autograd():
    X, Y, _ = auer_dataset(9, 3)
    w = torch.tensor([[1.0, 12.0, 150.0], [-0.5, 3.0, 40.0]], dtype=torch.float64)
    E, g, H = error_derivatives(w, X, Y)
    for i in range(2):
        assert torch.allclose(g[i], torch.func.grad(lambda q: error(q, X, Y))(w[i]), rtol=1e-12, atol=1e-16)
        assert torch.allclose(H[i], torch.func.hessian(lambda q: error(q, X, Y))(w[i]), rtol=1e-10, atol=1e-18)


@pytest.mark.parametrize(("n", "d"), [(3, 1), (4, 2), (7, 2), (6, 3), (8, 4)])
def test_minimum_count_equals_the_theorem(n, d):
    m = n // d
    predicted = m**d
    records = run_auer_minima(AuerOptions(n=n, d=d, starts="cells"), seeds=range(2 * predicted))
    assert all(r["status"] == "local_min" and r["min_eig"] > 1e-8 for r in records)
    points = np.array([r["final_w"] for r in records])
    labels = group_endpoints(points, 1e-4)
    assert len(set(labels.tolist())) == predicted
    assert {r["cell_index"] for r in records} == set(range(predicted))
    mu = minima_1d(auer_examples_1d(m)["x"], 0.75)
    for r in records:
        for k, w in enumerate(r["final_w"]):
            digit = (r["cell_index"] // m**k) % m
            assert w == pytest.approx(mu[digit], rel=1e-6)


def test_random_starts_find_every_minimum_of_a_small_case():
    records = run_auer_minima(AuerOptions(n=6, d=2), seeds=range(200))
    assert {r["cell_index"] for r in records if r["status"] == "local_min"} == set(range(9))


def test_batched_equals_plain_loop():
    options = AuerOptions(n=6, d=2)
    batched = run_auer_minima(options, seeds=range(5))
    for record in batched:
        (alone,) = run_auer_minima(options, seeds=[record["seed"]])
        assert alone["status"] == record["status"] and alone["cell_index"] == record["cell_index"]
        assert alone["start_w"] == record["start_w"]
        assert np.allclose(alone["final_w"], record["final_w"], rtol=1e-10)


def test_grouping_by_distance():
    points = np.array([[1.0, 10.0], [1.00001, 10.0001], [1.0, 100.0], [5.0, 10.0]])
    assert group_endpoints(points, 1e-4).tolist() == [0, 0, 1, 2]


def test_bad_options_name_the_field():
    with pytest.raises(OptionError) as err:
        auer_dataset(2, 3)
    assert err.value.field == "n"
    with pytest.raises(OptionError) as err:
        AuerOptions(n=4, d=1, y=0.3).validate()
    assert err.value.field == "y"
    with pytest.raises(OptionError) as err:
        AuerOptions(n=4, d=1, starts="grid").validate()
    assert err.value.field == "starts"
    assert math.isclose(auer_examples_1d(1)["centers"][0], math.log(3.0))


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("sweep.grid.n=[1]", "sweep.grid.n"),
        ("+sweep.grid.starts=[grid]", "sweep.grid.starts"),
        ("experiment.y=0.4", "experiment.y"),
    ],
)
def test_service_refuses_bad_cells(override, field):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(["sweep=auer_minima_smoke", override]))
    assert err.value.field == field


def test_report_counts_distinct_minima_across_rows():
    import pandas as pd

    from ray_jobs.experiments.auer_minima.layout import AuerMinimaLayout

    layout = AuerMinimaLayout(axes=("n", "d", "starts"), statuses=("local_min", "saddle"))
    rows = pd.DataFrame(
        {
            "status": ["local_min", "local_min", "local_min", "saddle"],
            "final_w": [[1.0, 13.0], [1.00000001, 13.0], [13.0, 13.0], [5.0, 5.0]],
            "cell_index": [2, 2, 3, -1],
            "predicted_minima": [4] * 4,
            "minima_1d": [2] * 4,
            "group_tol": [1e-4] * 4,
        }
    )
    out = layout.extra_aggregates(rows, confidence=0.99)
    assert out["found_minima"] == 2 and out["found_cells"] == 2 and out["smallest_basin_runs"] == 1
    assert out["count_equals_theorem"] is False and out["smallest_basin_frac"] == 0.25

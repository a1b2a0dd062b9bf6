"""Landscape probes (landscape_core.loss_surfaces, landscape_core.landscape_probes): filter
normalization on a hand-made case, the batched slice and segment against a per-point loop
and against the ``loss-landscapes`` package's ``random_plane`` / ``linear_interpolation`` on
the same model, directions and grid (float64, 1e-10), bumps / basins / convexity on
hand-made curves and grids, chunk independence, the memory refusal, and the report."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from landscape_core.errors import OptionError
from landscape_core.landscape_probes import (
    loss_function,
    model_forward,
    model_shapes,
    resolve_options,
    run_landscape_probes,
    to_dict,
    to_flat,
)
from landscape_core.loss_surfaces import (
    bumps,
    convex_fraction,
    count_basins,
    filter_normalize,
    grid_coordinates,
    line_losses,
    plane_losses,
)
from landscape_core.networks import MLPSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

f64 = torch.float64


def _model(architecture: str = "plain", seed: int = 0):
    """A small network with non-zero biases, data and its loss."""
    spec = MLPSpec(3, 5, 3, 2, "tanh")
    shapes = model_shapes(spec, architecture)
    g = torch.Generator().manual_seed(seed)
    theta = torch.cat([0.7 * torch.randn(math.prod(s), generator=g, dtype=f64) for s in shapes.values()])
    X = torch.randn(7, 3, generator=g, dtype=f64)
    Y = torch.randn(7, 2, generator=g, dtype=f64)
    return spec, shapes, theta, X, Y, loss_function(spec, architecture, "square")


def test_filter_normalization_hand_made():
    theta = {"W1": torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=f64), "b1": torch.tensor([2.0, -1.0], dtype=f64)}
    d = {"W1": torch.tensor([[1.0, 0.0], [0.0, -2.0]], dtype=f64), "b1": torch.tensor([5.0, 5.0], dtype=f64)}
    out = filter_normalize(d, theta, bias="zero")
    # row 1: (1, 0) scaled to theta's row norm 5; row 2: (0, -2) scaled to norm 1
    assert torch.equal(out["W1"], torch.tensor([[5.0, 0.0], [0.0, -1.0]], dtype=f64))
    assert torch.equal(out["b1"], torch.zeros(2, dtype=f64))
    assert torch.equal(filter_normalize(d, theta, bias="copy")["b1"], theta["b1"])
    assert torch.equal(d["W1"], torch.tensor([[1.0, 0.0], [0.0, -2.0]], dtype=f64))  # input untouched
    # batched over runs: each run normalized against its own theta
    batched = filter_normalize(
        {k: torch.stack([v, 2 * v]) for k, v in d.items()}, {k: torch.stack([v, 3 * v]) for k, v in theta.items()}
    )
    assert torch.allclose(batched["W1"][1], 3 * out["W1"])
    with pytest.raises(OptionError, match="surface.bias_directions"):
        filter_normalize(d, theta, bias="scale")


@pytest.mark.parametrize("architecture", ["plain", "skip"])
def test_plane_and_line_equal_a_per_point_loop(architecture):
    spec, shapes, theta, X, Y, loss_fn = _model(architecture)
    g = torch.Generator().manual_seed(1)
    d1, d2 = torch.randn(2, theta.numel(), generator=g, dtype=f64)
    coords = grid_coordinates(5, 0.8)
    batched = plane_losses(loss_fn, theta[None], d1[None], d2[None], coords, X[None], Y[None], grid_batch=7)[0]
    for k, (a, b) in enumerate(coords.tolist()):  # an independent loop: one forward pass per point
        out = model_forward(to_dict(theta + a * d1 + b * d2, shapes), X, spec)
        assert abs(float(batched[k]) - float(0.5 * ((out - Y) ** 2).sum(-1).mean())) < 1e-12
    ts = torch.linspace(0, 1, 9, dtype=f64)
    line = line_losses(loss_fn, theta[None], (theta + d1)[None], ts, X[None], Y[None], grid_batch=4)[0]
    expected = [float(loss_fn((1 - t) * theta + t * (theta + d1), X, Y)) for t in ts.tolist()]
    assert torch.allclose(line, torch.tensor(expected, dtype=f64), rtol=0, atol=1e-12)


def _torch_model(spec: MLPSpec, theta: torch.Tensor, shapes) -> torch.nn.Module:
    params = to_dict(theta, shapes)
    layers: list[torch.nn.Module] = []
    for layer in range(1, spec.depth + 1):
        W = params[f"W{layer}"]
        linear = torch.nn.Linear(W.shape[1], W.shape[0], bias=f"b{layer}" in params, dtype=f64)
        with torch.no_grad():
            linear.weight.copy_(W)
            if f"b{layer}" in params:
                linear.bias.copy_(params[f"b{layer}"])
        layers += [linear] + ([torch.nn.Tanh()] if layer < spec.depth else [])
    return torch.nn.Sequential(*layers)


def _square(out, Y):
    return 0.5 * ((out - Y) ** 2).sum(-1).mean()


def test_slice_equals_loss_landscapes_random_plane():
    pytest.importorskip(
        "loss_landscapes", reason="loss-landscapes not installed (pip install --no-deps loss-landscapes)"
    )
    import loss_landscapes
    from loss_landscapes.metrics import Loss
    from loss_landscapes.model_interface.model_parameters import orthogonal_to, rand_u_like
    from loss_landscapes.model_interface.model_wrapper import wrap_model

    spec, shapes, theta, X, Y, loss_fn = _model()
    model = _torch_model(spec, theta, shapes)
    steps, distance = 6, 0.5
    # the package's directions, drawn as random_plane draws them (same RNG state), filter
    # normalized and scaled by its own code
    torch.manual_seed(3)
    start = wrap_model(copy.deepcopy(model)).get_module_parameters()
    dirs = [rand_u_like(start)]
    dirs.append(orthogonal_to(dirs[0]))
    for d in dirs:  # loss-landscapes 3.0.6 scales each direction to ||theta|| / distance / steps
        d.filter_normalize_(start)
        d.mul_(((start.model_norm() / distance) / steps) / d.model_norm())
    d1, d2 = (torch.cat([p.reshape(-1) for p in d.parameters]) for d in dirs)
    torch.manual_seed(3)
    theirs = loss_landscapes.random_plane(
        model, Loss(_square, X, Y), distance=distance, steps=steps, normalization="filter", deepcopy_model=True
    )
    # their grid (a snake walk): row i at (i - steps/2) d1; even rows at (j + 1 - steps/2) d2, odd rows at (j - steps/2)
    coords = torch.tensor(
        [[i - steps / 2, j + (1 if i % 2 == 0 else 0) - steps / 2] for i in range(steps) for j in range(steps)],
        dtype=f64,
    )
    ours = plane_losses(loss_fn, theta[None], d1[None], d2[None], coords, X[None], Y[None])[0].reshape(steps, steps)
    assert torch.allclose(ours, torch.as_tensor(theirs, dtype=f64), rtol=0, atol=1e-10)
    # and our filter normalization of their raw weight directions equals theirs (weights; their
    # biases are scaled elementwise to |b_i|, ours follow Li et al.'s code: zero or copy)
    torch.manual_seed(4)
    raw = rand_u_like(start)
    ours_fn = filter_normalize(
        {f"W{i + 1}": p for i, p in enumerate(raw.parameters[::2])},
        {f"W{i + 1}": p for i, p in enumerate(start.parameters[::2])},
    )
    raw.filter_normalize_(start)
    for i, p in enumerate(raw.parameters[::2]):
        assert torch.allclose(ours_fn[f"W{i + 1}"], p, rtol=0, atol=1e-12)


def test_interpolation_equals_loss_landscapes_linear_interpolation():
    pytest.importorskip(
        "loss_landscapes", reason="loss-landscapes not installed (pip install --no-deps loss-landscapes)"
    )
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    spec, shapes, theta, X, Y, loss_fn = _model()
    end = _model(seed=1)[2]
    steps = 20
    theirs = loss_landscapes.linear_interpolation(
        _torch_model(spec, theta, shapes), _torch_model(spec, end, shapes), Loss(_square, X, Y), steps=steps,
        deepcopy_model=True,
    )  # fmt: skip
    ts = torch.arange(1, steps + 1, dtype=f64) / steps  # their points: start + k (end - start) / steps, k = 1..steps
    ours = line_losses(loss_fn, theta[None], end[None], ts, X[None], Y[None])[0]
    assert torch.allclose(ours, torch.as_tensor(theirs, dtype=f64), rtol=0, atol=1e-10)


def test_bumps_basins_and_convexity_on_hand_made_cases():
    ts = torch.linspace(0, 1, 6, dtype=f64)
    height, at = bumps(torch.tensor([[3.0, 2.0, 2.5, 1.0, 1.2, 0.0], [5, 4, 3, 2, 1, 0]], dtype=f64), ts)
    assert height.tolist() == [0.5, 0.0] and at.tolist()[0] == pytest.approx(0.4)
    grid = torch.full((1, 7, 7), 5.0, dtype=f64)
    grid[0, 3, 3] = 0.0  # the centre (global)
    grid[0, 1, 5] = 2.0  # a sub-optimal basin
    grid[0, 5, 1] = 0.0005  # a grid minimum within basin_tol of the centre: not sub-optimal
    grid[0, 0, 0] = -1.0  # on the edge: never counted
    assert count_basins(grid, torch.tensor([0.0], dtype=f64), tol=1e-3).tolist() == [1]
    coords = grid_coordinates(9, 1.0)
    a, b = coords[:, 0].reshape(1, 9, 9), coords[:, 1].reshape(1, 9, 9)
    assert convex_fraction(a**2 + b**2, 0.25, tol=1e-9).tolist() == [1.0]
    assert convex_fraction(a**2 - b**2, 0.25, tol=1e-9).tolist() == [0.0]


def test_records_do_not_depend_on_the_chunk_and_flat_round_trips():
    opts = dict(width=4, depth=2, activation="tanh", n_samples=6, data={"name": "random_labels", "input_dim": 2},
                optimizer={"name": "lbfgs", "max_iterations": 10}, surface={"grid": 5, "points": 7})  # fmt: skip
    for probe, architecture in (("interpolation", "skip"), ("slice", "plain")):
        options = resolve_options(**opts, probe=probe, architecture=architecture)
        both = run_landscape_probes(options, seeds=[0, 1])
        alone = run_landscape_probes(options, seeds=[1])
        assert both[1]["status"] == alone[0]["status"]
        for key in ("final_loss", "max_bump", "pair_barrier", "n_basins", "slice_max"):
            if key in alone[0]:
                assert both[1][key] == pytest.approx(alone[0][key], rel=1e-9, abs=1e-12), key
        if probe == "slice":
            assert both[0]["slice_values"] is not None and len(both[0]["slice_values"]) == 25
    spec, shapes, theta, *_ = _model("skip")
    assert torch.equal(to_flat(to_dict(theta, shapes), shapes), theta)


def test_a_slice_too_large_for_memory_is_refused_up_front():
    with pytest.raises(OptionError, match=r"surface.grid: a 20001 x 20001 slice needs about \d+ MB per run"):
        resolve_options(width=8, depth=2, activation="tanh", n_samples=8, probe="slice", surface={"grid": 20001})
    # the interpolation probe evaluates no grid
    resolve_options(width=8, depth=2, activation="tanh", n_samples=8, probe="interpolation", surface={"grid": 20001})


def test_service_refuses_the_grid_in_one_line():
    from ray_jobs.config import compose_config
    from ray_jobs.errors import ConfigError
    from ray_jobs.validate import validate

    cfg = compose_config(["sweep=landscape_probes_smoke", "experiment.surface.grid=20001"])
    with pytest.raises(ConfigError) as exc:
        validate(cfg)
    assert str(exc.value).startswith("experiment.surface.grid: a 20001 x 20001 slice needs about")
    assert "\n" not in str(exc.value)
    cfg = compose_config(["sweep=landscape_probes_smoke", "sweep.grid.probe=[curve]"])
    with pytest.raises(ConfigError, match="sweep.grid.probe: unknown probe 'curve'; allowed: interpolation, slice"):
        validate(cfg)


def test_report_thresholds_c1_c2_and_tables():
    import pandas as pd

    from ray_jobs.experiments.landscape_probes.layout import by_width, probes_markdown, thresholds, width_threshold

    assert width_threshold([4, 8, 16, 32], [0.5, 1.0, 0.9, 1.0], 0.95) == 32  # 16 dips below: not from 8 on
    assert width_threshold([4, 8, 16], [0.96, 0.97, 1.0], 0.95) == 4
    assert width_threshold([4, 8], [1.0, 0.5], 0.95) is None
    rows = []
    for arch, fractions in (("plain", [0.2, 0.6, 0.95, 1.0]), ("skip", [0.5, 1.0, 1.0, 1.0])):
        for width, frac in zip([4, 8, 16, 32], fractions):
            for probe in ("slice", "interpolation"):
                rows.append(
                    dict(probe=probe, data="random_labels", optimizer="lbfgs", architecture=arch, activation="tanh",
                         depth=2, n_samples=16, width=width, runs=20, frac_basin_free=frac, frac_basin_free_lo=0.0,
                         frac_basin_free_hi=1.0, frac_monotone=1 - frac, frac_monotone_lo=0.0, frac_monotone_hi=1.0,
                         frac_trained_global=1.0, errors=0)
                )  # fmt: skip
    table = pd.DataFrame(rows)
    limits = thresholds(table)
    assert limits[["c1_plain", "c2_skip"]].values.tolist() == [[16, 8]]
    assert by_width(table, "monotone", "interpolation")["8"].tolist() == [0.4, 0.0]
    text = probes_markdown(table, sweep="t", confidence=0.95)
    assert "| random_labels | lbfgs | tanh | 2 | 16 | 16 | 8 | 4,8,16,32 |" in text


def test_figures_from_rows(tmp_path):
    """The report's figures from real rows of both probes (a stand-in for the results store:
    the figures read only its schema, its rows and its report directory)."""
    import pyarrow as pa

    from ray_jobs.experiments.landscape_probes.figures import probe_figures

    opts = dict(width=4, depth=2, activation="tanh", n_samples=6, data={"name": "random_labels", "input_dim": 2},
                optimizer={"name": "lbfgs", "max_iterations": 5}, surface={"grid": 5, "points": 7})  # fmt: skip
    rows = []
    for probe in ("interpolation", "slice"):
        rows += [
            {**r, "cell_id": probe} for r in run_landscape_probes(resolve_options(**opts, probe=probe), seeds=[0, 1])
        ]
    keys = sorted({key for row in rows for key in row})
    table = pa.Table.from_pylist([{key: row.get(key) for key in keys} for row in rows])

    class Store:
        report_dir = tmp_path

        def schema(self):
            return table.schema

        def read(self, columns):
            return table.select(columns)

    paths = probe_figures(Store(), sweep="t")
    assert sorted(p.name for p in paths if p.parent == tmp_path) == [
        "interpolation_plain_tanh.png",
        "slice_plain_tanh.png",
    ]
    assert all(p.stat().st_size > 1000 for p in paths)
    # one figure per cell (here the cell ids are the probes), for the cells' MLflow children
    from ray_jobs.report.layout import ReportLayout

    layout = ReportLayout(axes=("probe",), statuses=("converged",))
    assert layout.cell_files(None, Store(), paths) == {
        "interpolation": [tmp_path / "cells" / "interpolation.png"],
        "slice": [tmp_path / "cells" / "slice.png"],
    }

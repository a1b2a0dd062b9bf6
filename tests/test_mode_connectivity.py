"""Mode connectivity (landscape_core.mode_connectivity; issue 26 item 3): the science against
closed forms, loops and brute force, the pairs against the string-sampling protocol's, and
the service side (validation, report tables) on rows built by hand.

- a Bezier curve with its control point at the midpoint, and a polygonal chain with its
  bend there, equal the segment; curve ends are the endpoints bit for bit;
- the barrier is max - mean of the ends;
- curve training batched over pairs equals a loop of single pairs; training lowers the
  sampled loss of a curve on a hand-made problem whose segment has a barrier;
- the minimax path equals a brute-force bottleneck (threshold + flood fill) on random grids;
- the plane losses are F at s A + t B + (1 - s - t) C, point by point;
- the endpoints and DSS's verdict of a plain pair are run_string_sampling's, bit for bit;
- the batched run equals per-seed runs (a record does not depend on its chunk);
- bad options exit 2 with one line naming the field.
"""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest
import torch

from landscape_core import mode_connectivity as mc
from landscape_core.errors import OptionError
from tests.conftest import assert_usage_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
#: a cheap cell: ReLU teacher, 16 points, width 6, curves of 30 steps, a 9 x 9 plane
CHEAP = dict(
    problem="relu_teacher",
    threshold=0.01,
    width=6,
    n_train=16,
    n_test=8,
    endpoint_training={"lr": 0.02, "max_iterations": 3000},
    curve={"steps": 30, "eval_points": 11},
    plane={"points": 9, "low": -1.0, "high": 1.0},
    string={"max_rounds": 2},
)


def _random_pair(S=3, P=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(S, P, generator=g, dtype=F64) for _ in range(2)]


def test_bezier_and_chain_with_midpoint_bend_equal_the_segment():
    A, B = _random_pair()
    t = torch.linspace(0, 1, 61, dtype=F64)
    segment = mc.curve_points("segment", A, A, B, t)  # (S, 61, P)
    for kind in mc.CURVES:
        on_curve = mc.curve_points(kind, A, 0.5 * (A + B), B, t)
        torch.testing.assert_close(on_curve, segment, rtol=0, atol=1e-14)
    by_hand = (1 - t)[None, :, None] * A[:, None] + t[None, :, None] * B[:, None]
    torch.testing.assert_close(segment, by_hand, rtol=0, atol=1e-15)


def test_curve_ends_are_the_endpoints_bit_for_bit_and_the_bend_is_on_the_chain():
    A, B = _random_pair()
    C = torch.randn_like(A)
    t = torch.linspace(0, 1, 61, dtype=F64)
    for kind in (*mc.CURVES, "segment"):
        pts = mc.curve_points(kind, A, C, B, t)
        assert torch.equal(pts[:, 0], A) and torch.equal(pts[:, -1], B)
    chain = mc.curve_points("polychain", A, C, B, t)
    assert torch.equal(chain[:, 30], C)  # t = 1/2 is the bend
    bez = mc.curve_points("bezier", A, C, B, torch.tensor([0.5], dtype=F64))[:, 0]
    torch.testing.assert_close(bez, 0.25 * A + 0.5 * C + 0.25 * B, rtol=0, atol=1e-15)
    with pytest.raises(OptionError, match="curve"):
        mc.curve_points("spline", A, C, B, t)


def test_barrier_is_max_minus_mean_of_ends():
    losses = torch.tensor([[1.0, 3.0, 2.0], [0.5, 0.2, 0.1]], dtype=F64)
    assert mc.barrier(losses).tolist() == pytest.approx([3.0 - 1.5, 0.5 - 0.3], abs=1e-15)


def _ring(theta, X, Y):
    """F(x, y) = (x^2 + y^2 - 1)^2 (+ 0 * data): a ring of minima; the segment between
    (-1, 0) and (1, 0) crosses the bump F(0, 0) = 1, a curve can follow the ring."""
    return (theta[0] ** 2 + theta[1] ** 2 - 1) ** 2 + 0 * X.sum() * Y.sum()


def test_curve_training_batched_equals_loop_and_lowers_the_barrier():
    X, Y = torch.zeros(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64)
    A = torch.tensor([[-1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    B = torch.tensor([[1.0, 0.0], [0.99, 0.1]], dtype=F64)
    draws = torch.rand(2, 300, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.linspace(0, 1, 61, dtype=F64)
    for kind in mc.CURVES:
        C, last = mc.train_curves(_ring, kind, A, B, draws, X, Y, lr=0.05)
        for i in range(2):
            Ci, li = mc.train_curves(_ring, kind, A[i : i + 1], B[i : i + 1], draws[i : i + 1], X, Y, lr=0.05)
            torch.testing.assert_close(Ci[0], C[i], rtol=0, atol=1e-13)
            torch.testing.assert_close(li[0], last[i], rtol=0, atol=1e-13)
        seg = mc.barrier(mc.path_losses(_ring, "segment", A, A, B, t, X, Y))
        curve = mc.barrier(mc.path_losses(_ring, kind, A, C, B, t, X, Y))
        assert seg[0].item() == pytest.approx(1.0)
        # pair 0 is symmetric about y = 0: the y-gradient vanishes and the bend stays on the
        # segment (a saddle of the curve objective); pair 1 is not, and its curve bends around the bump
        assert C[0, 1].item() == 0.0 and curve[0] > 0.99
        assert curve[1] < 0.3 * seg[1], (kind, curve, seg)  # a one-bend chain cuts the ring: ~0.25
        assert C[1, 1].abs() > 0.3
    C0, _ = mc.train_curves(_ring, "bezier", A, B, draws[:, :0], X, Y, lr=0.05)
    assert torch.equal(C0, 0.5 * (A + B))  # zero steps: the midpoint


def _bottleneck_brute(values, start, end):
    """Smallest level whose sublevel set (8-connected flood fill) joins start and end."""
    rows, cols = len(values), len(values[0])
    for level in sorted({v for row in values for v in row}):
        if values[start[0]][start[1]] > level:
            continue
        seen, todo = {start}, [start]
        while todo:
            i, j = todo.pop()
            for a in range(i - 1, i + 2):
                for b in range(j - 1, j + 2):
                    if 0 <= a < rows and 0 <= b < cols and (a, b) not in seen and values[a][b] <= level:
                        seen.add((a, b))
                        todo.append((a, b))
        if end in seen:
            return level
    return math.inf


def test_minimax_path_equals_brute_force():
    rng = random.Random(3)
    for _ in range(20):
        rows, cols = rng.randint(2, 7), rng.randint(2, 7)
        values = [[rng.random() for _ in range(cols)] for _ in range(rows)]
        start, end = (rng.randrange(rows), rng.randrange(cols)), (rng.randrange(rows), rng.randrange(cols))
        assert mc.minimax_path(values, start, end) == _bottleneck_brute(values, start, end)
    wall = [[0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0]]
    assert mc.minimax_path(wall, (0, 0), (2, 2)) == 5.0
    wall[1][1] = 1.0
    assert mc.minimax_path(wall, (0, 0), (2, 2)) == 1.0


def test_plane_losses_point_by_point():
    X = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    Y = X.sum(-1, keepdim=True)

    def loss(theta, X, Y):
        return ((X @ theta[:2] - Y[:, 0] + theta[2] * theta[0]) ** 2).mean()

    A, B, C = torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    spec = mc.PlaneSpec(points=5, low=-0.5, high=1.5)
    spec.validate()
    grid = spec.grid()
    values = mc.plane_losses(loss, A, B, C, grid, X, Y)
    for i, s in enumerate(grid):
        for j, t in enumerate(grid):
            torch.testing.assert_close(values[i, j], loss(s * A + t * B + (1 - s - t) * C, X, Y), rtol=1e-13, atol=0)
    assert (spec.node(1.0), spec.node(0.0)) == (3, 1)
    with pytest.raises(OptionError, match="plane.points"):
        mc.PlaneSpec(points=6, low=-0.5, high=1.5).validate()  # 0 and 1 not grid nodes


def test_pairs_and_dss_verdict_are_the_string_sampling_protocols():
    from landscape_core.string_sampling import resolve_options as dss_options
    from landscape_core.string_sampling import run_string_sampling

    options = mc.resolve_options(**CHEAP)
    ours = mc.run_mode_connectivity(options, seeds=[0, 1])
    theirs = run_string_sampling(
        dss_options(
            problem="relu_teacher",
            threshold=0.01,
            width=6,
            depth=2,
            activation="relu",
            init="lecun",
            loss="mse",
            n_train=16,
            n_test=8,
            input_dim=2,
            teacher_width=4,
            endpoint_training={"lr": 0.02, "max_iterations": 3000},
            string={"max_rounds": 2},
        ),
        seeds=[0, 1],
    )
    for a, b in zip(ours, theirs):
        assert a["status"] == b["status"] == "global"
        for key in ("endpoint_train_losses", "endpoint_test_losses", "endpoint_iterations"):
            assert a[key] == b[key]  # bit for bit
        for key in ("dss_connected", "dss_beads", "dss_rounds", "dss_max_interp_loss", "dss_normalized_length"):
            assert a[key] == b[key]
        assert a["segment_losses"][0] == a["endpoint_train_losses"][0]  # the ends are the endpoints
        assert a["bezier_connected"] == (a["bezier_barrier"] < options.curve.barrier_tol)
        assert a["plane_barrier"] <= a["segment_barrier"] + 1e-12  # the grid's diagonal is the segment


def test_batched_run_equals_per_seed_runs_skip_network():
    options = mc.resolve_options(**{**CHEAP, "network": "skip", "skip_neurons": 4, "dss": False})
    both = mc.run_mode_connectivity(options, seeds=[3, 4])
    for rec in both:
        (alone,) = mc.run_mode_connectivity(options, seeds=[rec["seed"]])
        for key in ("endpoint_train_losses", "bezier_barrier", "polychain_barrier", "segment_barrier", "plane_barrier"):
            assert alone[key] == pytest.approx(rec[key], rel=1e-9, abs=1e-13), key
        assert "dss_connected" not in rec


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"network": "resnet"}, "network"),
        ({"problem": "cifar"}, "problem"),
        ({"network": "skip", "skip_neurons": 99}, "skip_neurons"),
        ({"curve": {"eval_points": 1}}, "curve.eval_points"),
        ({"curve": {"barrier_tol": -1.0}}, "curve.barrier_tol"),
        ({"plane": {"points": 2}}, "plane.points"),
        ({"init": "orthogonal"}, "init"),
    ],
)
def test_core_options_refused(kwargs, field):
    with pytest.raises(OptionError) as info:
        mc.resolve_options(**{**CHEAP, **kwargs})
    assert info.value.field == field


def test_service_lists_match_the_core():
    from ray_jobs.experiments.mode_connectivity import experiment as adapter

    assert (adapter.PROBLEMS, adapter.NETWORKS, adapter.LOSSES) == (mc.PROBLEMS, mc.NETWORKS, mc.LOSSES)


@pytest.mark.parametrize(
    ("override", "field_message", "allowed"),
    [
        ("sweep.grid.network=[plain,dense]", "sweep.grid.network: unknown network 'dense'", "plain, skip"),
        ("experiment.curve.eval_points=1", "experiment.curve.eval_points: must be an integer >= 2", ""),
        ("experiment.plane.points=6", "experiment.plane.points: s, t = 0 and 1 must be grid nodes", "e.g."),
        ("++experiment.curve.knots=3", "experiment.curve.knots: unknown setting", "barrier_tol"),
        ("experiment.endpoint_training.lr=-1", "experiment.endpoint_training.lr: must be a positive number", ""),
    ],
)
def test_bad_config_exits_2_with_one_line(override, field_message, allowed, tmp_path, capsys):
    assert_usage_error(["sweep=mode_connectivity_smoke", override], field_message, allowed, tmp_path, capsys)


def test_report_tables_from_rows():
    from ray_jobs.experiments.mode_connectivity.layout import LAYOUT, agreement_counts

    ran = pd.DataFrame(
        {
            "status": ["global"] * 5 + ["not_converged"],
            "bezier_connected": [True, True, False, False, True, None],
            "dss_connected": [True, False, True, False, None, None],
            "bezier_barrier": [1e-4, 2e-4, 0.1, 0.2, 3e-4, None],
            "wall_s": [1.0] * 6,
        }
    )
    counts = agreement_counts(ran)
    assert counts == {
        "n_both_connected": 1,
        "n_curve_only": 1,
        "n_dss_only": 1,
        "n_neither": 1,
        "n_compared": 4,
        "frac_agree": 0.5,
    }
    layout = LAYOUT(axes=("width",), statuses=("global", "not_converged", "diverged"))
    out = layout.extra_aggregates(ran, confidence=0.99)
    assert out["pairs_strung"] == 5
    assert out["mean_bezier_barrier"] == pytest.approx((1e-4 + 2e-4 + 0.1 + 0.2 + 3e-4) / 5)
    assert out["max_bezier_barrier"] == 0.2


def test_report_of_in_process_units(tmp_path):
    """Two cells of the smoke sweep run in this process (tiny budget), written as the
    service writes fragments, reported: the three tables, pairs.csv, the planes and the
    barrier figure, the counts equal to the rows'."""
    from ray_jobs.config import compose_config
    from ray_jobs.experiments.registry import get_layout
    from ray_jobs.plan import plan_sweep
    from ray_jobs.report import build_report
    from ray_jobs.store import ResultsStore, columns_of, unit_table
    from ray_jobs.validate import validate

    cheap = ["experiment.string.max_rounds=1", "experiment.curve.steps=5", "experiment.plane.points=5"]
    cheap += ["experiment.plane.low=-1.0", "experiment.plane.high=1.0", "experiment.n_test=10"]
    cheap += ["sweep.grid.threshold=[0.03]", "experiment.n_train=12"]
    cfg = compose_config(["sweep=mode_connectivity_smoke", *cheap])
    experiment, cells = validate(cfg)
    plan = plan_sweep(cfg, experiment.name, cells)
    store = ResultsStore(tmp_path, plan.sweep)
    store.prepare()
    units = [u for u in plan.units if u.cell.params["width"] == 8]  # plain and skip, width 8
    for unit in units:
        records = experiment.run(unit.cell.params, list(unit.seeds), "cpu")
        table = unit_table(
            unit,
            columns_of(records),
            experiment=experiment.name,
            column_types=experiment.columns,
            sweep=plan.sweep,
            code_version="test",
        )
        store.write_fragment(unit.unit_id, table)
    store.close()
    layout = get_layout(experiment, {})
    report = build_report(store, layout, sweep=plan.sweep, confidence=0.99, reference=None, figure=True)
    for heading in ("Agreement with Dynamic String Sampling", "Conjecture V.3"):
        assert heading in report.markdown
    rows = pd.read_parquet(tmp_path / plan.sweep / "runs")
    pairs = pd.read_csv(store.report_dir / "pairs.csv")
    assert len(pairs) == len(rows) == 4 and sorted(pairs["network"].unique()) == ["plain", "skip"]
    for network, row in report.table.set_index("network").iterrows():
        mine = rows[(rows["network"] == network) & (rows["status"] == "global")]
        assert row["n_bezier_connected"] == int(mine["bezier_connected"].sum())
        both = int((mine["bezier_connected"] & mine["dss_connected"]).sum())
        assert row["n_both_connected"] == both
        assert row["mean_segment_barrier"] == pytest.approx(mine["segment_barrier"].mean())
    planes = pd.read_csv(store.report_dir / "planes.csv")
    assert len(planes) == 2 and all((store.report_dir / name).exists() for name in planes["file"])
    assert (store.report_dir / "connectivity.csv").exists()

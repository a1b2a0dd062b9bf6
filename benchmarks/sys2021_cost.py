"""What the 2021 study costs per k (issue 27 item 3): iterations per run grow with k, and so
does the cost of one iteration (n (n + k) d per run) and of the final Hessian check
((n d)^3 per run). Fits the mean iterations per run against k from recorded sweeps, measures
the per-run cost of one descent iteration and of one Hessian classification at a few k on
this machine, and prints the estimated compute per k up to 100 (500 runs each); with
``--figure`` also draws the curves.

    python -m benchmarks.sys2021_cost docs/results/sys2021_global_rates.csv \\
        --measure 10,20,30,50,70,100 --figure docs/results/sys2021_cost.png

Inputs are report tables (``table.csv`` of a teacher-student sweep, or the committed
``docs/results/sys2021_global_rates.csv``): columns ``k``, ``n``, ``iterations_mean``, ``runs``,
``wall_s`` (summed run time). Fit: least squares of log(iterations_mean) on log k over the cells
with n = k (a power law, iterations ~ a k^b); per-iteration and Hessian costs: a power law
through the measured points. Estimates are for one CPU core at the measured speed: a machine
shared with other jobs measures slower than an idle one.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.sys2021_study import markdown

#: k of the printed estimate
ESTIMATE_K = (6, 8, 10, 13, 16, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100)
PROTOCOL_2021 = dict(
    step_times_k=5, init_variance="1/k", stopping_norm="frobenius", grad_tol=1e-12, restart_grad_norm=None
)


def power_fit(x, y, weights=None) -> tuple[float, float]:
    """(a, b) of y ~ a x^b, least squares in log-log (``weights``: per point, e.g. sqrt(runs))."""
    b, log_a = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1, w=weights)
    return float(math.exp(log_a)), float(b)


def iterations_fit(table: pd.DataFrame) -> tuple[float, float]:
    """Mean iterations per run ~ a k^b over the cells with n = k, each weighted by sqrt(runs)
    (the mean of a heavy-tailed count: a 50-run cell's mean is ~3x noisier than a 500-run one's)."""
    square = table[table["n"] == table["k"]]
    return power_fit(square["k"], square["iterations_mean"], np.sqrt(square["runs"].to_numpy(float)))


def measure_iteration(k: int, n: int, iterations: int = 64) -> float:
    """Seconds per run and iteration of the batched 2021 descent at (k, n) (50 runs from their
    initial points up to k = 30, 10 above; ``iterations`` steps, none converging)."""
    runs = 50 if k <= 30 else 10
    from landscape_core.teacher_student import TeacherStudentProtocol, gradient_descent, initial_points

    protocol = TeacherStudentProtocol(**{**PROTOCOL_2021, "grad_tol": 1e-300}, max_iterations=iterations)
    W0, V = initial_points(k, n, range(runs), protocol)
    start = time.perf_counter()
    gradient_descent(W0, V, protocol)
    return (time.perf_counter() - start) / (runs * iterations)


def measure_hessian(k: int, n: int, runs: int = 2) -> float:
    """Seconds per run of the final classification (analytic Hessian and eigvalsh) at (k, n)."""
    from landscape_core.teacher_student import TeacherStudentProtocol, hessian_extreme_eigenvalues, initial_points

    W0, V = initial_points(k, n, range(runs), TeacherStudentProtocol(**PROTOCOL_2021))
    start = time.perf_counter()
    hessian_extreme_eigenvalues(W0, V, chunk_size=1)
    return (time.perf_counter() - start) / runs


def read_tables(paths: list[Path]) -> pd.DataFrame:
    frames = [pd.read_csv(path) for path in paths]
    table = pd.concat(frames, ignore_index=True)
    return table[["k", "n", "runs", "iterations_mean", "wall_s"]]


def estimate(table: pd.DataFrame, measured: dict[int, tuple[float, float]], runs: int = 500) -> pd.DataFrame:
    """Estimated cost per k (n = k) of ``runs`` runs from the fitted curves."""
    a, b = iterations_fit(table)
    ks = sorted(measured)
    ia, ib = power_fit(ks, [measured[k][0] for k in ks])
    ha, hb = power_fit(ks, [measured[k][1] for k in ks])
    rows = []
    for k in ESTIMATE_K:
        iters = a * k**b
        per_run = iters * ia * k**ib + ha * k**hb
        rows.append(
            {
                "k": k,
                "iterations / run (fit)": round(iters),
                "s / iteration / run": f"{ia * k**ib:.3g}",
                "Hessian check s / run": f"{ha * k**hb:.3g}",
                f"compute-hours / {runs} runs": round(runs * per_run / 3600, 2),
            }
        )
    print(
        f"fit: iterations_mean = {a:.4g} k^{b:.3f}; s / iteration / run = {ia:.3g} k^{ib:.3f}; "
        f"Hessian s / run = {ha:.3g} k^{hb:.3f}"
    )
    return pd.DataFrame(rows)


def figure(table: pd.DataFrame, est: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    square = table[table["n"] == table["k"]]
    a, b = iterations_fit(table)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.loglog(square["k"], square["iterations_mean"], "o", label="recorded cells (mean per run)")
    ks = np.array(ESTIMATE_K, float)
    left.loglog(ks, a * ks**b, "-", label=f"fit {a:.3g} k^{b:.2f}")
    left.set_xlabel("k (= n)")
    left.set_ylabel("iterations per run")
    left.legend(fontsize=8)
    right.semilogy(est["k"], est[est.columns[-1]], "s-")
    right.set_xlabel("k (= n)")
    right.set_ylabel("compute-hours / 500 runs")
    fig.suptitle("2021 protocol, full: cost per k (estimate)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", type=Path, nargs="+", help="report table.csv files (columns k, n, iterations_mean)")
    parser.add_argument("--measure", default="10,20,30,50", help="k at which to time one iteration and one Hessian")
    parser.add_argument("--figure", type=Path, default=None, help="write the cost curves here (PNG)")
    parser.add_argument(
        "--measured", default=None, help="skip the timing: k:s_per_iteration:s_per_hessian,... from an earlier run"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    measured = {}
    if args.measured:
        for item in args.measured.split(","):
            k, per_iteration, per_hessian = item.split(":")
            measured[int(k)] = (float(per_iteration), float(per_hessian))
    for k in () if args.measured else (int(x) for x in args.measure.split(",")):
        measured[k] = (measure_iteration(k, k), measure_hessian(k, k))
        print(f"k = {k}: {measured[k][0]:.3g} s / iteration / run, {measured[k][1]:.3g} s / Hessian check", flush=True)
    table = read_tables(args.tables)
    est = estimate(table, measured)
    print(markdown(est))
    if args.figure is not None:
        figure(table, est, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())

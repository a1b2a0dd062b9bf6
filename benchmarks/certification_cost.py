"""What certifying a teacher-student sweep costs, beside what training it cost (issue 13 item 2).

For every cell of a finished sweep's results (the Parquet dataset under
``<results_dir>/<sweep>/runs``), this times what the report does once per cell for its
``certified spurious %`` column: grouping the cell's spurious runs into families under the
full symmetry group (:func:`landscape_core.families.group_points`, as the report calls it)
and one certificate per family (the report's own step, ``teacher_student.families._family``:
:func:`landscape_core.certification.certify_family` from the family's representative), and
sets it against the cell's training compute (the rows' ``wall_s`` summed: each unit's wall
time spread over its runs). Both are timed on the machine that ran them; run this on a
quiet machine, and read the sweep's compute with the load it ran under in mind.

    python -m benchmarks.certification_cost RESULTS_DIR/SWEEP_NAME
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import pyarrow.dataset as ds
    import torch

    from landscape_core.families import group_points
    from ray_jobs.experiments.teacher_student.families import _family

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="<results_dir>/<sweep name>")
    parser.add_argument("--tol", type=float, default=1e-4, help="family tolerance (the report's report.family_tol)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = args.sweep_dir / "runs"
    if not runs.is_dir():
        parser.error(f"sweep_dir: no runs/ under {args.sweep_dir}")
    table = ds.dataset(runs, format="parquet").to_table(
        columns=[
            "cell_id",
            "k",
            "n",
            "d",
            "seed",
            "status",
            "wall_s",
            "final_weights",
            "final_loss",
            "min_eig",
            "bad_loss_threshold",
        ]
    )
    rows = table.to_pandas()
    print(
        "| k | n | runs | spurious | families | training compute s | grouping s | certificates s "
        "| certified families | certification / training |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    totals = np.zeros(3)
    for (k, n), cell in sorted(rows.groupby(["k", "n"]), key=lambda item: item[0]):
        d = int(cell["d"].iloc[0])
        bad = cell[cell["status"] == "spurious"]
        compute = float(cell["wall_s"].sum())
        points = [np.asarray(w, dtype=np.float64).reshape(n, d) for w in bad["final_weights"]]  # (n, d) each
        start = time.perf_counter()
        groups = group_points(points, tol=args.tol, objectives=list(bad["final_loss"]), min_eigs=list(bad["min_eig"]))
        grouping = time.perf_counter() - start
        start = time.perf_counter()
        threshold = float(cell["bad_loss_threshold"].iloc[0] or 1e-3)  # as the report: the row's, else 1e-3
        records = bad[["seed"]].to_dict("records")
        certified = sum(
            _family(index, group, records, points, threshold)["certified"] for index, group in enumerate(groups)
        )
        certifying = time.perf_counter() - start
        totals += (compute, grouping, certifying)
        share = (grouping + certifying) / compute if compute else float("nan")
        print(
            f"| {k} | {n} | {len(cell)} | {len(bad)} | {len(groups)} | {compute:.1f} | {grouping:.1f} "
            f"| {certifying:.1f} | {certified} | {100 * share:.1f}% |"
        )
    compute, grouping, certifying = totals
    print(
        f"\nall cells: training compute {compute:.0f} s, grouping {grouping:.1f} s, certificates {certifying:.1f} s: "
        f"certification adds {100 * (grouping + certifying) / compute:.1f}% "
        f"(certificates alone {100 * certifying / compute:.1f}%)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

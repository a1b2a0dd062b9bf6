"""Command line: one cell, printed (no Ray, no MLflow; the service runs sweeps).

``python -m landscape_core.teacher_student --k 8 --n 8 --seeds 300 --published 12.6``
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from landscape_core.statistics import clopper_pearson_interval
from landscape_core.teacher_student.families import group_records
from landscape_core.teacher_student.run import run_teacher_student

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m landscape_core.teacher_student --k 8 --n 8 --seeds 300``: run one cell with
    the published protocol and print the status counts, the spurious fraction with its exact
    99% interval (and the published value when given), and the families of spurious minima
    under the full symmetry group (student neurons and input coordinates)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--seed-start", type=int, default=0)
    parser.add_argument("--published", type=float, default=None, help="published spurious percentage, to compare")
    parser.add_argument("--family-tol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    records = run_teacher_student(args.k, args.n, range(args.seed_start, args.seed_start + args.seeds))
    wall = time.perf_counter() - start
    counts = Counter(r["status"] for r in records)
    spurious = counts.get("spurious", 0)
    lo, hi = clopper_pearson_interval(spurious, len(records), 0.99)
    print(
        f"k = {args.k}, n = {args.n}, seeds {args.seed_start}..{args.seed_start + args.seeds - 1}: "
        f"{dict(sorted(counts.items()))} in {wall:.1f} s"
    )
    line = (
        f"spurious: {spurious}/{len(records)} = {100 * spurious / len(records):.1f}%, "
        f"exact 99% interval [{100 * lo:.1f}%, {100 * hi:.1f}%]"
    )
    if args.published is not None:
        inside = lo <= args.published / 100 <= hi
        line += f"; published {args.published}%: {'inside' if inside else 'OUTSIDE'}"
    print(line)
    families = group_records(records, tol=args.family_tol)
    print(
        f"{len(families)} families of spurious minima (up to student-neuron and input-coordinate permutations, "
        f"tol {args.family_tol}):"
    )
    print("family  multiplicity  objective    min_eig      seeds")
    for fam in families:
        seeds = ", ".join(map(str, fam["seeds"][:6])) + (", ..." if len(fam["seeds"]) > 6 else "")
        print(f"{fam['family']:>6}  {fam['multiplicity']:>12}  {fam['objective']:.8f}  {fam['min_eig']:.8f}  {seeds}")
    return 0

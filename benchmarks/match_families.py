"""Our families of spurious minima matched to the authors' representatives (issue 13 item 1).

For every cell of a teacher-student sweep whose report wrote ``report/families.csv``, each
family's representative (the final point of its first seed) is compared with every
representative the authors published for that (k, n) (``safran_shamir_2018_minima.npz``)
under the full symmetry group (:func:`landscape_core.families.symmetric_distance`:
student-neuron x coordinate permutations). A family *is* an authors' family when the
distance is below ``--tol`` (default 1e-4, the report's family tolerance; distinct minima
are O(0.1) apart). Prints a markdown table: per cell, our families with their runs, the
authors' family each one matches and its runs, and the authors' families nobody reached.

    python -m benchmarks.match_families RESULTS/safran_shamir_table1 \
[--minima sweeps/reference/safran_shamir_2018_minima.npz]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from landscape_core.symmetry import symmetric_distance

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MINIMA = PROJECT_ROOT / "sweeps" / "reference" / "safran_shamir_2018_minima.npz"


def match(sweep_dir: Path, minima: Path, tol: float) -> pd.DataFrame:
    """One row per cell: k, n, ours ("runs -> authors' family #i (their runs, distance)"),
    unmatched authors' families."""
    families = pd.read_csv(sweep_dir / "report" / "families.csv")
    rows = pd.read_parquet(sweep_dir / "runs", columns=["k", "n", "d", "seed", "status", "final_weights"])
    rows = rows[rows["status"] == "spurious"].set_index(["k", "n", "seed"])
    reference = np.load(minima)
    out = []
    for (k, n), cell in families.groupby(["k", "n"], sort=True):
        key = f"W_k{k}_n{n}"
        theirs = reference[key] if key in reference else np.zeros((0, n, k))
        counts = reference[f"count_k{k}_n{n}"].tolist() if key in reference else []
        matched, described = set(), []
        for family in cell.sort_values("multiplicity", ascending=False).itertuples():
            seed = int(str(family.seeds).split()[0])
            ours = np.asarray(rows.loc[(k, n, seed), "final_weights"], dtype=np.float64).reshape(n, -1)
            distances = [symmetric_distance(ours, their).distance for their in theirs]
            best = int(np.argmin(distances)) if distances else -1
            if best >= 0 and distances[best] < tol:
                matched.add(best)
                described.append(f"{family.multiplicity} = #{best} ({counts[best]}; {distances[best]:.0e})")
            else:
                nearest = f"nearest {min(distances):.2g}" if distances else "none published"
                described.append(f"{family.multiplicity} = new ({nearest})")
        missing = [f"#{i} ({counts[i]})" for i in range(len(counts)) if i not in matched]
        out.append(
            {
                "k": k,
                "n": n,
                "our families": len(cell),
                "authors' families": len(counts),
                "ours: runs = authors' family (its runs; distance)": "; ".join(described),
                "authors' families not reached": ", ".join(missing) or "-",
            }
        )
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="<results_dir>/<sweep> of a teacher-student sweep with its report")
    parser.add_argument("--minima", type=Path, default=MINIMA, help="the authors' representatives (.npz)")
    parser.add_argument("--tol", type=float, default=1e-4, help="distance under which two points are one minimum")
    args = parser.parse_args(argv)
    table = match(args.sweep_dir, args.minima, args.tol)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: batched teacher-student protocol vs the one-run-at-a-time loop.

Same cell (default k = n = 10, published protocol), same seeds, one command, one machine:

- ``per-run loop``: :mod:`landscape_core.teacher_student_reference`, numpy, one run at a
  time (the style of the authors' code), in one process;
- ``batched``: :func:`landscape_core.teacher_student.run_teacher_student`, all seeds as one
  tensor program, one process, one thread;
- ``batched x W workers`` / ``per-run loop x W workers``: the seeds split into W chunks
  run by W worker processes (one thread each), which is how the sweep service uses a
  machine's cores (one Ray task per chunk);
- ``batched + proven outcomes`` (1 and W workers): the batched run with
  ``early_stop_global=True, stop_when_proven=True``: global runs end once F < 1e-3 (monotone),
  spurious runs once a certified ball proves where gradient descent ends
  (:class:`landscape_core.teacher_student.SpuriousProver`). Its statuses must equal the
  per-run loop's (full protocol) seed by seed; iteration counts differ by design.

Every variant runs in fresh spawned processes, so its peak resident memory (ru_maxrss of
the worker, which includes the interpreter and torch, ~0.3 GB) is its own. Statuses are
compared seed by seed between the per-run loop and the batched run.

    python -m benchmarks.bench_teacher_student [--k 10] [--n 10] [--seeds 200] [--workers 2]
        [--write docs/benchmarks.md] [--pairs ROUNDS]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks import cpu_and_memory


def _markers(k: int, n: int, seeds: int) -> tuple[str, str]:
    """Markdown comment markers of this configuration's section (one section per config)."""
    key = f"bench_teacher_student k={k} n={n} seeds={seeds}"
    return f"<!-- {key}:begin -->", f"<!-- {key}:end -->"


def _worker(args):
    """Run one chunk of seeds with one implementation; return (statuses, wall, peak_rss_mb)."""
    impl, k, n, seeds = args
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    if impl == "batched":
        from landscape_core.teacher_student import run_teacher_student

        recs = run_teacher_student(k, n, seeds, keep_weights=False)
    elif impl == "proven":
        from landscape_core.teacher_student import run_teacher_student

        recs = run_teacher_student(k, n, seeds, keep_weights=False, early_stop_global=True, stop_when_proven=True)
    else:
        from landscape_core.teacher_student_reference import run_teacher_student_reference

        recs = run_teacher_student_reference(k, n, seeds)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB -> MiB on Linux
    return [(r["seed"], r["status"], r["iterations"], r.get("proven_iteration")) for r in recs], wall, peak


def run_variant(impl: str, k: int, n: int, seeds: list[int], workers: int) -> dict:
    chunks = [seeds[i::workers] for i in range(workers)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(_noop, range(workers))  # start the interpreters before the clock starts
        start = time.perf_counter()
        results = pool.map(_worker, [(impl, k, n, c) for c in chunks])
        wall = time.perf_counter() - start
    rows = sorted(row for res in results for row in res[0])
    return {
        "impl": impl,
        "workers": workers,
        "wall_s": wall,
        "runs_per_s": len(seeds) / wall,
        "peak_rss_mb": max(res[2] for res in results),
        "statuses": {seed: status for seed, status, _, _ in rows},
        "iterations": {seed: it for seed, _, it, _ in rows},
        "proven": sum(proven is not None for _, _, _, proven in rows),
    }


def run_pairs(k: int, n: int, seeds: list[int], workers: int, rounds: int) -> int:
    """Alternate the per-run loop (1 process) and proven outcomes (``workers`` processes);
    print each round's walls and ratio. Returns 1 if any classification differs."""
    differ = 0
    for r in range(rounds):
        loop, proven = run_variant("per_run", k, n, seeds, 1), run_variant("proven", k, n, seeds, workers)
        bad = sum(proven["statuses"][s] != loop["statuses"][s] for s in seeds)
        differ += bad
        print(
            f"round {r}: k = n = {k}, {len(seeds)} seeds: per-run loop {loop['wall_s']:.2f} s, proven outcomes "
            f"({workers} workers) {proven['wall_s']:.2f} s, {loop['wall_s'] / proven['wall_s']:.1f}x, "
            f"{bad} classifications differ",
            flush=True,
        )
    return 1 if differ else 0


def _noop(_):
    import torch  # noqa: F401  (import cost is not part of the measurement)

    import landscape_core.certification  # noqa: F401  (nor that of the prover's modules)
    import landscape_core.families  # noqa: F401

    return None


def machine_description() -> str:
    import torch

    return (
        f"{cpu_and_memory()}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.system()} {platform.release()}"
    )


def code_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "landscape_core"], capture_output=True, text=True)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no-proven", action="store_true", help="skip the 'batched + proven outcomes' variants")
    parser.add_argument("--write", type=Path, default=None, help="markdown file to update (between markers)")
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only alternate the per-run loop (1 process) and proven outcomes (--workers) ROUNDS "
        "times and print each round's ratio: on a machine whose speed drifts, a ratio "
        "taken minutes apart scatters less than the table's",
    )
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds))
    if args.pairs:
        return run_pairs(args.k, args.n, seeds, args.workers, args.pairs)

    variants = [run_variant("per_run", args.k, args.n, seeds, 1), run_variant("batched", args.k, args.n, seeds, 1)]
    if args.workers > 1:
        variants.append(run_variant("per_run", args.k, args.n, seeds, args.workers))
        variants.append(run_variant("batched", args.k, args.n, seeds, args.workers))
    if not args.no_proven:
        variants.append(run_variant("proven", args.k, args.n, seeds, 1))
        if args.workers > 1:
            variants.append(run_variant("proven", args.k, args.n, seeds, args.workers))
    ref = variants[0]
    full = [v for v in variants if v["impl"] != "proven"]
    proven = [v for v in variants if v["impl"] == "proven"]
    identical = all(v["statuses"] == ref["statuses"] for v in full)
    same_iterations = all(v["iterations"] == ref["iterations"] for v in full)
    counts = Counter(ref["statuses"].values())
    total_iterations = sum(ref["iterations"].values())

    lines = [
        f"Cell k = n = {args.k if args.k == args.n else f'{args.k}, n = {args.n}'}, {args.seeds} seeds, published "
        f"protocol (step 0.1, tolerance 1e-9, float64); statuses {dict(sorted(counts.items()))}; "
        f"{total_iterations:,} gradient steps in all (max {max(ref['iterations'].values()):,} for one run).",
        "",
        "| implementation | worker processes | wall (s) | runs / s | speed-up vs per-run loop (1 process) "
        "| peak RSS per worker (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for v in variants:
        name = {
            "per_run": "per-run loop (numpy)",
            "batched": "batched (torch)",
            "proven": "batched + proven outcomes (torch)",
        }[v["impl"]]
        lines.append(
            f"| {name} | {v['workers']} | {v['wall_s']:.2f} | {v['runs_per_s']:.1f} | "
            f"{ref['wall_s'] / v['wall_s']:.1f}x | {v['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"Identical classifications for every seed: **{'yes' if identical else 'NO'}**; "
        f"identical iteration counts: **{'yes' if same_iterations else 'NO'}**.",
    ]
    for v in proven:
        differ = sum(v["statuses"][s] != ref["statuses"][s] for s in seeds)
        lines.append(
            f"Batched + proven outcomes ({v['workers']} worker{'s' if v['workers'] > 1 else ''}): classifications "
            f"identical to the per-run loop (full protocol): **{'yes' if differ == 0 else 'NO'} ({differ} differ)**; "
            f"{v['proven']} runs ended as proven spurious, {sum(v['iterations'].values()):,} gradient steps in all "
            f"(max {max(v['iterations'].values()):,}); speed-up vs per-run loop (1 process): "
            f"**{ref['wall_s'] / v['wall_s']:.1f}x**."
        )
        identical = identical and differ == 0
    body = "\n".join(lines)
    print(body)

    if args.write:
        MARK_BEGIN, MARK_END = _markers(args.k, args.n, args.seeds)
        command = "python -m benchmarks.bench_teacher_student " + " ".join(argv if argv is not None else sys.argv[1:])
        section = "\n".join(
            [
                MARK_BEGIN,
                f"### k = {args.k}, n = {args.n}, {args.seeds} seeds",
                "",
                f"Machine: {machine_description()}. Code: {code_version()}. "
                f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
                f"Command: `{command.strip()}` (or `make bench`).",
                "",
                body,
                MARK_END,
            ]
        )
        text = args.write.read_text() if args.write.exists() else ""
        if MARK_BEGIN in text and MARK_END in text:
            head, rest = text.split(MARK_BEGIN, 1)
            tail = rest.split(MARK_END, 1)[1]
            text = head + section + tail
        else:
            text = (text.rstrip() + "\n\n" if text else "") + section + "\n"
        args.write.write_text(text)
        print(f"wrote {args.write}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())

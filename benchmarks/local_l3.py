"""How loose is the third-derivative bound that limits proven outcomes? (issue 13 item 3)

:class:`landscape_core.teacher_student.SpuriousProver` can stop a run only once it is within
R = lambda / (2 L3) of a certified minimum (``_PROOF_BALL_FRACTION``), with L3 the third-derivative bound \
of the protocol
notes (:func:`landscape_core.certification.l3_bound`). This script measures, at the minimum a
given run ends at (full protocol, then 3 Newton steps), how fast the smallest Hessian
eigenvalue actually falls along random unit directions u:

    slope(rho) = (lambda_min(H(x*)) - min_u lambda_min(H(x* + rho u))) / rho,

an estimate (not a bound: random directions are not the worst one) of the local L3, next to the
notes' bound at x*. Float64 eigenvalues (``eigvalsh``); nothing here is part of a proof.

    python -m benchmarks.local_l3 [--k 10] [--seed 188] [--directions 20]
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from landscape_core.certification import l3_bound, newton_polish
    from landscape_core.teacher_student import population_hessian, run_teacher_student

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=10, help="k = n = d, identity teacher")
    parser.add_argument(
        "--seed", type=int, default=188, help="a seed whose run ends spurious (188: the slowest of 0..199 at k = 10)"
    )
    parser.add_argument("--directions", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    k = args.k
    run = run_teacher_student(k, k, [args.seed])[0]
    if run["status"] != "spurious":
        print(f"seed {args.seed} at k = n = {k} ends {run['status']}, not spurious: choose another seed")
        return 1
    V = np.eye(k)
    x = newton_polish(np.array(run["final_weights"]).reshape(k, k), V, steps=3)  # (n, d)

    def lambda_min(P: np.ndarray) -> float:
        H = population_hessian(torch.from_numpy(P)[None], torch.from_numpy(V)[None])[0]  # (n, d, n, d)
        return float(torch.linalg.eigvalsh(H.reshape(k * k, k * k))[0])

    lam = lambda_min(x)
    norms = np.linalg.norm(x, axis=1)
    bound = l3_bound(n=k, k=k, w_min=float(norms.min()), w_max=float(norms.max()), v_max=1.0, rho=0.0)
    print(
        f"k = n = {k}, seed {args.seed}: F = {run['final_loss']:.6g}, lambda_min = {lam:.6g}, "
        f"steps (full protocol) = {run['iterations']}"
    )
    print(f"notes' L3 bound at x*: {float(bound.b):.4g}")
    rng = np.random.default_rng(0)
    print("| rho | min over directions of lambda_min | slope (local L3 estimate) |")
    print("|---|---|---|")
    for rho in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1):
        worst = lam
        for _ in range(args.directions):
            u = rng.standard_normal(x.shape)
            worst = min(worst, lambda_min(x + rho * u / np.linalg.norm(u)))
        print(f"| {rho:g} | {worst:.6g} | {(lam - worst) / rho:.3g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: a filter-normalized 2-D loss slice, batched (ours) vs the ``loss-landscapes``
package's per-point loop (``random_plane``), on the same machine in one command.

The model (issue 26 item 4): a width-64, depth-3 tanh MLP (d = 10 inputs, 1 output, hidden
biases), the square loss on 1,000 samples, a 51 x 51 grid, float64. Rounds alternate
"theirs" and "ours" so that both see the same load on a shared machine; each round prints
grid points per second of both and their ratio, and the maximum difference of the two
slices (ours evaluated at the package's own directions and grid, as in
tests/test_landscape_probes.py). ``--runs R`` also times our slice of R runs at once (seeds
as the batch dimension: the sweep's case), reported per grid point of all runs.

    python -m benchmarks.bench_slices [--grid 51] [--width 64] [--depth 3] [--samples 1000]
        [--rounds 3] [--threads 1] [--grid-batch 256] [--runs 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import time

import torch

from landscape_core.landscape_probes import loss_function, model_shapes, to_dict
from landscape_core.loss_surfaces import plane_losses
from landscape_core.networks import MLPSpec


def _square(out, Y):
    return 0.5 * ((out - Y) ** 2).sum(-1).mean()


def _torch_model(spec: MLPSpec, theta: torch.Tensor) -> torch.nn.Module:
    params = to_dict(theta, model_shapes(spec, "plain"))
    layers: list[torch.nn.Module] = []
    for layer in range(1, spec.depth + 1):
        W = params[f"W{layer}"]
        linear = torch.nn.Linear(W.shape[1], W.shape[0], bias=f"b{layer}" in params, dtype=theta.dtype)
        with torch.no_grad():
            linear.weight.copy_(W)
            if f"b{layer}" in params:
                linear.bias.copy_(params[f"b{layer}"])
        layers += [linear] + ([torch.nn.Tanh()] if layer < spec.depth else [])
    return torch.nn.Sequential(*layers).to(theta.device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=51)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid-batch", type=int, default=256)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import loss_landscapes
    from loss_landscapes.metrics import Loss
    from loss_landscapes.model_interface.model_parameters import orthogonal_to, rand_u_like
    from loss_landscapes.model_interface.model_wrapper import wrap_model

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    f64 = torch.float64
    spec = MLPSpec(10, args.width, args.depth, 1, "tanh")
    g = torch.Generator().manual_seed(0)
    shapes = model_shapes(spec, "plain")
    theta = torch.cat([torch.randn(math.prod(s), generator=g, dtype=f64) / math.sqrt(s[-1]) for s in shapes.values()])
    X = torch.randn(args.samples, 10, generator=g, dtype=f64)
    Y = torch.randn(args.samples, 1, generator=g, dtype=f64)
    theta, X, Y = theta.to(dev), X.to(dev), Y.to(dev)
    loss_fn = loss_function(spec, "plain", "square")
    model = _torch_model(spec, theta)
    metric = Loss(_square, X, Y)
    steps, distance = args.grid, 1.0
    points = steps * steps

    # the package's directions (its own code, same RNG state as random_plane) and its grid
    torch.manual_seed(1)
    start = wrap_model(copy.deepcopy(model)).get_module_parameters()
    dirs = [rand_u_like(start)]
    dirs.append(orthogonal_to(dirs[0]))
    for d in dirs:
        d.filter_normalize_(start)
        d.mul_(((start.model_norm() / distance) / steps) / d.model_norm())
    d1, d2 = (torch.cat([p.reshape(-1) for p in d.parameters]).to(dev) for d in dirs)
    coords = torch.tensor(
        [[i - steps / 2, j + (1 if i % 2 == 0 else 0) - steps / 2] for i in range(steps) for j in range(steps)],
        dtype=f64,
        device=dev,
    )
    R = args.runs

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch thread(s), "
        f"device {dev}; torch {torch.__version__}; model width {args.width} depth {args.depth}, "
        f"{theta.numel()} parameters, {args.samples} samples, {steps} x {steps} grid, float64"
    )
    ratios, ours_rates, theirs_rates = [], [], []
    for round_no in range(1, args.rounds + 1):
        torch.manual_seed(1)
        sync()
        t0 = time.perf_counter()
        theirs = loss_landscapes.random_plane(
            model, metric, distance=distance, steps=steps, normalization="filter", deepcopy_model=True
        )
        sync()
        t_theirs = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = plane_losses(
            loss_fn, theta[None], d1[None], d2[None], coords, X[None], Y[None], grid_batch=args.grid_batch
        )
        sync()
        t_ours = time.perf_counter() - t0
        diff = float((ours[0].reshape(steps, steps).cpu() - torch.as_tensor(theirs, dtype=f64)).abs().max())
        line = (
            f"round {round_no}: theirs {points / t_theirs:,.0f} points/s ({t_theirs:.2f} s), "
            f"ours {points / t_ours:,.0f} points/s ({t_ours:.2f} s), ratio {t_theirs / t_ours:.1f}x, "
            f"max |difference| {diff:.1e}"
        )
        if R > 1:
            t0 = time.perf_counter()
            rep = lambda t: t[None].expand(R, *t.shape).contiguous()  # noqa: E731
            plane_losses(loss_fn, rep(theta), rep(d1), rep(d2), coords, rep(X), rep(Y), grid_batch=args.grid_batch)
            sync()
            t_runs = time.perf_counter() - t0
            line += f"; ours x {R} runs {R * points / t_runs:,.0f} points/s ({t_runs:.2f} s)"
        print(line, flush=True)
        ratios.append(t_theirs / t_ours)
        ours_rates.append(points / t_ours)
        theirs_rates.append(points / t_theirs)
    print(
        f"median: theirs {statistics.median(theirs_rates):,.0f} points/s, ours {statistics.median(ours_rates):,.0f} "
        f"points/s, ratio {statistics.median(ratios):.1f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

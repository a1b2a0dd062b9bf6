"""Skip-to-output networks (Nguyen, Mukkamala & Hein, ICLR 2019).

protocols.md section 3. A fully connected network of the project plus independent
connections from M of its hidden neurons (drawn at random, seeded, from all hidden layers
or from named ones) straight to the m outputs:

    f_skip(x) = f_plain(x) + V psi(x),   psi(x) = the M chosen hidden neurons' outputs (M,)

Parameters are the plain network's dict plus ``V`` (m, M): a plain network and its skip
version share every weight but ``V``, so they can be compared seed by seed, and with
V = 0 they compute the same function (tested).

Psi(U) is the N x M matrix of psi on the N training points; with M >= N and real-analytic
strictly increasing activations it has rank N for almost all hidden weights U (Lemma 3.2),
and then the cross-entropy loss has no bad local valley (Theorem 3.3).

Two training modes, as in the paper:
- ``sgd``: every weight trained, minibatch SGD with Nesterov momentum and a step schedule;
- ``rand``: hidden weights U random and fixed; only the output weights (W_L, and V for the
  skip network) are fitted, a convex problem (cross-entropy of a linear function of the
  fixed features [Z_{L-1}(X), 1, Psi(X)]), solved by full-batch L-BFGS, warm-started at the
  least-squares interpolant of scaled one-hot logits, until the mean cross-entropy is below
  ln(2) / N (which implies zero training error: every sample's probability of its label
  is then above 1/2) or the iteration cap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch.func import vmap

from landscape_core.data import CLASSIFICATION_SETS, make_classification_split
from landscape_core.errors import OptionError
from landscape_core.networks import MLPSpec, flatten, forward, hidden_features, init_parameters, unflatten
from landscape_core.probes import numerical_ranks
from landscape_core.seeding import run_generator
from landscape_core.training import SGDSpec, TrainSpec, train, train_sgd

MODES = ("sgd", "rand")
ARCHITECTURES = ("skip", "plain")
#: images in scikit-learn's digits data set
DIGITS_SAMPLES = 1797


def choose_skip_neurons(
    spec: MLPSpec, M: int, *, generator: torch.Generator, layers: Iterable[int] | None = None
) -> torch.Tensor:
    """M distinct hidden neurons drawn uniformly without replacement, as flat indices into
    the concatenation of hidden layers ``layers`` (1-based; all hidden layers when None).
    Returns (M,) int64 indices into ``torch.cat(hidden_features, -1)`` order."""
    hidden = list(range(1, spec.depth))
    chosen_layers = hidden if layers is None else [int(layer) for layer in layers]
    for layer in chosen_layers:
        if layer not in hidden:
            raise OptionError("skip.layers", f"{layer} is not a hidden layer (allowed: {hidden})")
    pool = torch.cat([torch.arange((l - 1) * spec.width, l * spec.width) for l in chosen_layers])
    if isinstance(M, bool) or not isinstance(M, int) or not 1 <= M <= pool.numel():
        raise OptionError("skip.M", f"must be an integer in [1, {pool.numel()}] (hidden neurons available), got {M!r}")
    return pool[torch.randperm(pool.numel(), generator=generator)[:M]].sort().values


def psi(params: dict[str, torch.Tensor], X: torch.Tensor, spec: MLPSpec, skip_index: torch.Tensor) -> torch.Tensor:
    """Psi(X): the chosen hidden neurons' outputs, (N, M)."""
    H = torch.cat(hidden_features(params, X, spec), dim=-1)  # (N, width * (depth - 1))
    return H[:, skip_index]


def skip_forward(
    params: dict[str, torch.Tensor], X: torch.Tensor, spec: MLPSpec, skip_index: torch.Tensor
) -> torch.Tensor:
    """f_plain(X) + Psi(X) V^T, (N, m). ``params`` holds the plain weights plus ``V`` (m, M)."""
    return forward(params, X, spec) + psi(params, X, spec, skip_index) @ params["V"].T


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SkipNetworksOptions:
    """Every option of one cell, resolved and validated (see :func:`resolve_options`).

    ``model``'s input and output sizes come from the data (digits: 64 and 10, whatever
    ``input_dim`` / ``classes`` said); ``M`` is resolved (``"n_samples"`` -> N); the other
    fields are the arguments as given (``skip_layers`` as a tuple, None = all hidden layers).
    """

    model: MLPSpec
    M: int
    sgd: SGDSpec
    n_samples: int
    skip_layers: tuple[int, ...] | None
    architecture: str
    mode: str
    data: str
    n_test: int
    separation: float
    rand_max_iterations: int
    rank_rtol: float


def resolve_options(
    *,
    width: int,
    depth: int,
    activation: str,
    n_samples: int,
    M: int | str = "n_samples",
    skip_layers: Iterable[int] | None = None,
    architecture: str = "skip",
    mode: str = "sgd",
    data: str = "mixture",
    n_test: int = 500,
    input_dim: int = 10,
    classes: int = 3,
    separation: float = 3.0,
    sgd: dict | None = None,
    rand_max_iterations: int = 2000,
    rank_rtol: float = 1e-6,
) -> SkipNetworksOptions:
    """Validate the options of :func:`run_skip_networks` and resolve their defaults (the
    one place they are checked); nothing runs.

    Returns the :class:`SkipNetworksOptions` of the cell; raises OptionError(field, message)
    with the field names ``width``, ``depth``, ``activation``, ``n_samples``, ``skip.M``,
    ``skip.layers``, ``architecture``, ``mode``, ``data.<name|n_test|input_dim|classes|separation>``,
    ``sgd.<key>``, ``rand_max_iterations``, ``rank_rtol``.
    """
    if mode not in MODES:
        raise OptionError("mode", f"{mode!r} is not one of {', '.join(MODES)}")
    if architecture not in ARCHITECTURES:
        raise OptionError("architecture", f"{architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    if data not in CLASSIFICATION_SETS:
        raise OptionError("data.name", f"{data!r} is not one of {', '.join(CLASSIFICATION_SETS)}")
    if not _is_int(n_samples) or n_samples < 1:
        raise OptionError("n_samples", f"must be an integer >= 1, got {n_samples!r}")
    if not _is_int(n_test) or n_test < 0:
        raise OptionError("data.n_test", f"must be an integer >= 0, got {n_test!r}")
    if data == "digits" and n_samples + n_test > DIGITS_SAMPLES:
        raise OptionError(
            "n_samples", f"digits has {DIGITS_SAMPLES} images, n_samples + n_test = {n_samples} + {n_test}"
        )
    if data != "digits":
        if not _is_int(input_dim) or input_dim < 1:
            raise OptionError("data.input_dim", f"must be an integer >= 1, got {input_dim!r}")
        if not _is_int(classes) or classes < 2:
            raise OptionError("data.classes", f"must be an integer >= 2, got {classes!r}")
        if not _is_number(separation) or separation < 0:
            raise OptionError("data.separation", f"must be a number >= 0, got {separation!r}")
    d = 64 if data == "digits" else input_dim
    m = 10 if data == "digits" else classes
    spec = MLPSpec(d, width, depth, m, activation, output_bias=True)
    spec.validate()
    if depth < 2:
        raise OptionError("depth", f"a skip network needs a hidden layer (depth >= 2), got {depth}")
    hidden = list(range(1, depth))
    layers = hidden if skip_layers is None else list(skip_layers)
    if (
        not layers
        or any(not _is_int(layer) or layer not in hidden for layer in layers)
        or len(set(layers)) < len(layers)
    ):
        raise OptionError(
            "skip.layers", f"must be distinct hidden layers among {hidden} (or null = all), got {skip_layers!r}"
        )
    available = width * len(layers)
    M_value = n_samples if M == "n_samples" else M
    if isinstance(M_value, bool) or not isinstance(M_value, int) or not 1 <= M_value <= available:
        raise OptionError(
            "skip.M", f"must be an integer in [1, {available}] (hidden neurons available), got {M_value!r}"
        )
    sgd = dict(sgd or {})
    allowed = [f.name for f in fields(SGDSpec)]
    for key in sgd:
        if key not in allowed:
            raise OptionError(f"sgd.{key}", f"unknown option (allowed: {', '.join(allowed)})")
    milestones = sgd.get("milestones", ())
    if not isinstance(milestones, (list, tuple)) or not all(_is_int(e) and e >= 0 for e in milestones):
        raise OptionError("sgd.milestones", f"must be a list of epochs (integers >= 0), got {milestones!r}")
    for key in ("lr", "momentum", "gamma", "weight_decay"):
        if key in sgd and not _is_number(sgd[key]):
            raise OptionError(f"sgd.{key}", f"must be a finite number, got {sgd[key]!r}")
    if "nesterov" in sgd and not isinstance(sgd["nesterov"], bool):
        raise OptionError("sgd.nesterov", f"must be true or false, got {sgd['nesterov']!r}")
    sgd_spec = SGDSpec(**{**sgd, "milestones": tuple(milestones)})
    sgd_spec.validate()
    if not _is_int(rand_max_iterations) or rand_max_iterations < 1:
        raise OptionError("rand_max_iterations", f"must be an integer >= 1, got {rand_max_iterations!r}")
    if not _is_number(rank_rtol) or not 0 < rank_rtol < 1:
        raise OptionError("rank_rtol", f"must be a number in (0, 1), got {rank_rtol!r}")
    return SkipNetworksOptions(
        model=spec,
        M=M_value,
        sgd=sgd_spec,
        n_samples=n_samples,
        skip_layers=None if skip_layers is None else tuple(layers),
        architecture=architecture,
        mode=mode,
        data=data,
        n_test=n_test,
        separation=separation,
        rand_max_iterations=rand_max_iterations,
        rank_rtol=rank_rtol,
    )


def _psi_probe(P: torch.Tensor, rank_rtol: float) -> list[dict]:
    """Per run: Psi's numerical rank at the default tolerance (sigma_max * max(N, M) * eps)
    and at ``rank_rtol`` (sigma_max * rank_rtol, "loose"), its smallest singular value
    (the min(N, M)-th) and the default tolerance; all None for a run whose Psi holds a
    non-finite value (a diverged run)."""
    finite = torch.isfinite(P).all(dim=-1).all(dim=-1)
    default, loose = numerical_ranks(
        torch.where(finite[:, None, None], P, torch.zeros_like(P)), rtols=(None, rank_rtol)
    )
    out: list[dict] = []
    for i in range(P.shape[0]):
        if not bool(finite[i]):
            out.append(dict(rank=None, rank_loose=None, sigma_min=None, tol=None))
        else:
            out.append(
                dict(
                    rank=int(default.rank[i]),
                    rank_loose=int(loose.rank[i]),
                    sigma_min=float(default.sigma_min[i]),
                    tol=float(default.tol[i]),
                )
            )
    return out


def run_skip_networks(
    options: SkipNetworksOptions, *, seeds: Iterable[int], device: str | torch.device = "cpu"
) -> list[dict]:
    """Train one cell's seeds (plain or skip, sgd or rand) as one batch; one record per seed.

    ``M="n_samples"`` is the paper's M = N. Each seed draws its own data (generator seeded
    by the data settings and the seed), hidden weights and skip neurons (seeded by the
    architecture and the seed, not by ``architecture`` or ``mode``, so plain and skip, sgd
    and rand start from the same U for the same seed). Records: ``final_loss`` (training
    cross-entropy), ``train_error``, ``zero_train_error``, ``test_accuracy``, ``epochs`` or
    ``iterations``, Psi probes (``psi_rank``, ``psi_rank_loose``, ``psi_sigma_min``,
    ``psi_rank_tol``, ``psi_full_rank`` = rank == N; ``init_`` versions), and ``status``:
    ``global`` (zero training error), ``not_converged`` (training errors left),
    ``diverged`` (non-finite loss; its ``train_error`` and ``test_accuracy`` are NaN, its
    Psi probes None when Psi itself is non-finite). ``options``: the cell, resolved and
    validated by :func:`resolve_options`. Three lines from a notebook::

        options = resolve_options(width=16, depth=4, activation="sigmoid", n_samples=48, mode="rand")
        records = run_skip_networks(options, seeds=range(3))
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise OptionError("seeds", "must be a non-empty list of integers")
    if not isinstance(options, SkipNetworksOptions):
        got = type(options).__name__
        raise OptionError("options", f"must be the SkipNetworksOptions of resolve_options(), got {got}")
    spec, M_value, sgd_spec = options.model, options.M, options.sgd
    width, depth, activation, n_samples = spec.width, spec.depth, spec.activation, options.n_samples
    architecture, mode, data, n_test = options.architecture, options.mode, options.data, options.n_test
    skip_layers, separation = options.skip_layers, options.separation
    rand_max_iterations, rank_rtol = options.rand_max_iterations, options.rank_rtol
    d, m = spec.input_dim, spec.output_dim
    dev = torch.device(device)
    start = time.perf_counter()

    data_key = ("skip.data", data, n_samples, n_test, d, m, separation)
    arch_key = ("skip.init", d, width, depth, m, activation)
    Xs, ys, Xts, yts, thetas, skips, gens = [], [], [], [], [], [], []
    for seed in seeds:
        X, y, Xt, yt = make_classification_split(
            data,
            n_train=n_samples,
            n_test=n_test,
            input_dim=d,
            classes=m,
            separation=separation,
            generator=run_generator(*data_key, seed),
        )
        g = run_generator(*arch_key, seed)
        params = init_parameters(spec, generator=g)
        idx = choose_skip_neurons(spec, M_value, generator=g, layers=skip_layers)
        params["V"] = torch.randn(m, M_value, generator=g, dtype=torch.float64) / math.sqrt(M_value)
        if architecture == "plain":
            params["V"] = torch.zeros_like(params["V"])
        Xs.append(X)
        ys.append(y)
        Xts.append(Xt)
        yts.append(yt)
        skips.append(idx)
        thetas.append(torch.cat([flatten(params, spec), params["V"].reshape(-1)]))
        gens.append(run_generator("skip.sgd", *arch_key, seed))
    X, y = torch.stack(Xs).to(dev), torch.stack(ys).to(dev)
    Xt, yt = torch.stack(Xts).to(dev), torch.stack(yts).to(dev)
    theta0 = torch.stack(thetas).to(dev)
    skip_index = torch.stack(skips).to(dev)  # (S, M)
    P_plain = spec.num_parameters()

    def split(theta):
        params = unflatten(theta[:P_plain], spec)
        params["V"] = theta[P_plain:].reshape(m, M_value)
        return params

    def logits(theta, X, idx):
        params = split(theta)
        if architecture == "plain":
            return forward(params, X, spec)
        return skip_forward(params, X, spec, idx)

    def ce(theta, X, y, idx):
        return F.cross_entropy(logits(theta, X, idx), y)

    psi_fn = vmap(lambda t, x, i: psi(split(t), x, spec, i))
    init_psi = _psi_probe(psi_fn(theta0, X, skip_index), rank_rtol)

    iterations = torch.zeros(len(seeds), dtype=torch.int64)
    if mode == "sgd":
        theta = train_sgd(ce, theta0, X, y, skip_index, spec=sgd_spec, generators=gens)
        epochs = sgd_spec.epochs
    else:
        # convex fit of the output weights on fixed features
        feats = vmap(lambda t, x, i: _output_features(split(t), x, spec, i, architecture))(theta0, X, skip_index)
        K = feats.shape[-1]
        # Warm start (the problem is convex, so the start changes the path, not the answer):
        # the least-squares fit of logits g * (onehot - 1/m), g = ln((m - 1) N / ln 2) + 1.
        # When the features have rank N the fit is exact, every sample's logit gap is g and
        # the mean cross-entropy log(1 + (m - 1) e^-g) is already below ln(2) / N.
        gap = math.log((m - 1) * n_samples / math.log(2.0)) + 1.0
        targets = gap * (F.one_hot(y, m).to(feats.dtype) - 1.0 / m)  # (S, N, m)
        # SVD-based driver (gelsd): the QR-based default truncates the tiny singular values of
        # deep sigmoid features (sigma_min ~ 1e-6) and misses the interpolant; CPU-only driver.
        w0 = torch.linalg.lstsq(feats.cpu(), targets.cpu(), driver="gelsd").solution
        w0 = w0.transpose(-1, -2).reshape(len(seeds), m * K).to(dev)

        def convex_loss(w, Phi, yy):
            return F.cross_entropy(Phi @ w.reshape(m, K).T, yy)

        tspec = TrainSpec(
            optimizer="lbfgs",
            lr=1.0,
            grad_tol=1e-10,
            stop_loss=math.log(2.0) / n_samples,
            max_iterations=rand_max_iterations,
        )
        res = train(convex_loss, w0, feats, y, spec=tspec)
        iterations = res.iterations.cpu()
        theta = _with_output_weights(theta0, res.theta, spec, P_plain, m, M_value, architecture)
        epochs = 0

    train_logits = vmap(logits)(theta, X, skip_index)  # (S, N, m)
    final_loss = F.cross_entropy(train_logits.transpose(1, 2), y, reduction="none").mean(-1)  # = ce per run
    train_error = (train_logits.argmax(-1) != y).to(torch.float64).mean(-1)
    test_acc = (vmap(logits)(theta, Xt, skip_index).argmax(-1) == yt).to(torch.float64).mean(-1) if n_test else None
    end_psi = _psi_probe(psi_fn(theta, X, skip_index), rank_rtol)
    wall = time.perf_counter() - start

    records = []
    for i, seed in enumerate(seeds):
        loss_i = float(final_loss[i])
        err = float(train_error[i])
        diverged = not math.isfinite(loss_i)
        status = "diverged" if diverged else ("global" if err == 0.0 else "not_converged")
        if diverged:  # non-finite logits: the classifier is undefined, so are its error rates
            err = float("nan")
        rec = {
            "seed": seed,
            "status": status,
            "final_loss": loss_i,
            "train_error": err,
            "zero_train_error": status == "global",
            "test_accuracy": float(test_acc[i]) if test_acc is not None and not diverged else float("nan"),
            "epochs": epochs,
            "iterations": int(iterations[i])
            if mode == "rand"
            else epochs * (n_samples // min(sgd_spec.batch_size, n_samples)),
            "grad_norm": float("nan"),
            "width": width,
            "depth": depth,
            "activation": activation,
            "n_samples": n_samples,
            "M": M_value,
            "M_over_n": M_value / n_samples,
            "skip_layers": None if skip_layers is None else list(skip_layers),
            "architecture": architecture,
            "mode": mode,
            "data": data,
            "n_test": n_test,
            "input_dim": d,
            "classes": m,
            "separation": separation,
            **{f"sgd_{k}": (list(v) if isinstance(v, tuple) else v) for k, v in asdict(sgd_spec).items()},
            "rand_max_iterations": rand_max_iterations,
            "rank_rtol": rank_rtol,
            "init_psi_rank": init_psi[i]["rank"],
            "init_psi_rank_loose": init_psi[i]["rank_loose"],
            "init_psi_sigma_min": init_psi[i]["sigma_min"],
            "init_psi_full_rank": None if init_psi[i]["rank"] is None else init_psi[i]["rank"] == n_samples,
            "psi_rank": end_psi[i]["rank"],
            "psi_rank_loose": end_psi[i]["rank_loose"],
            "psi_sigma_min": end_psi[i]["sigma_min"],
            "psi_rank_tol": end_psi[i]["tol"],
            "psi_full_rank": None if end_psi[i]["rank"] is None else end_psi[i]["rank"] == n_samples,
            "wall_s": wall / len(seeds),
            "device": str(dev),
        }
        records.append(rec)
    return records


def _output_features(params, X, spec: MLPSpec, idx, architecture: str) -> torch.Tensor:
    """[Z_{L-1}(X), 1, Psi(X)] (N, K): the features the output weights act on."""
    Z = hidden_features(params, X, spec)[-1]
    parts = [Z, torch.ones_like(Z[:, :1])]
    if architecture == "skip":
        parts.append(psi(params, X, spec, idx))
    return torch.cat(parts, dim=-1)


def _with_output_weights(theta0, w, spec: MLPSpec, P_plain: int, m: int, M: int, architecture: str) -> torch.Tensor:
    """Write the fitted output weights [W_L | b_L | V] (S, m * K) back into theta (S, P)."""
    S = theta0.shape[0]
    width = spec.width
    K = width + 1 + (M if architecture == "skip" else 0)
    Wfit = w.reshape(S, m, K)
    params = unflatten(theta0[:, :P_plain], spec)
    params = {k: v.clone() for k, v in params.items()}
    L = spec.depth
    params[f"W{L}"] = Wfit[:, :, :width]
    params[f"b{L}"] = Wfit[:, :, width]
    V = Wfit[:, :, width + 1 :] if architecture == "skip" else theta0[:, P_plain:].reshape(S, m, M)
    return torch.cat([flatten(params, spec), V.reshape(S, -1)], dim=-1)

"""Fully connected networks as functions of a parameter dict (survey, sections IV-VI).

    f(x) = W_L phi( ... phi(W_1 x + b_1) ... ) (+ b_L when ``output_bias``)

``depth`` L counts weight layers (L = 2 is one hidden layer). Parameters are a
``dict[str, Tensor]`` named ``W1, b1, ..., WL[, bL]`` (matched by name, never by
position); a batch of models is the same dict with a leading seed dimension, and every
function here is written for one model and batched with ``torch.func.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from landscape_core.errors import OptionError

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, negative_slope=0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": F.softplus,
    "swish": F.silu,
    "silu": F.silu,
    "gelu": F.gelu,
    "quadratic": lambda z: z * z,
    "linear": lambda z: z,
}


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called ``name``; OptionError (``activation``) naming the allowed values otherwise."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise OptionError("activation", f"{name!r} is not one of {', '.join(ACTIVATIONS)}") from None


@dataclass(frozen=True)
class MLPSpec:
    """Architecture of a fully connected network."""

    input_dim: int
    width: int  # every hidden layer's width
    depth: int  # number of weight layers L >= 1 (L - 1 hidden layers)
    output_dim: int = 1
    activation: str = "relu"
    output_bias: bool = False  # the survey's f has no output bias
    bias: bool = True  # hidden-layer biases b_1 .. b_{L-1}

    def validate(self) -> None:
        for name in ("input_dim", "width", "depth", "output_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(name, f"must be an integer >= 1, got {value!r}")
        activation_fn(self.activation)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes, in forward order."""
        dims = [self.input_dim] + [self.width] * (self.depth - 1) + [self.output_dim]
        out: dict[str, tuple[int, ...]] = {}
        for layer in range(1, self.depth + 1):
            out[f"W{layer}"] = (dims[layer], dims[layer - 1])
            if (layer < self.depth and self.bias) or (layer == self.depth and self.output_bias):
                out[f"b{layer}"] = (dims[layer],)
        return out

    def num_parameters(self) -> int:
        return sum(math.prod(s) for s in self.shapes().values())


def init_parameters(
    spec: MLPSpec, *, generator: torch.Generator, dtype=torch.float64, init: str = "lecun"
) -> dict[str, torch.Tensor]:
    """One model's parameters, drawn on the CPU from ``generator``.

    ``init``: ``lecun`` (W ~ N(0, 1/fan_in), b = 0), ``he`` (N(0, 2/fan_in)),
    ``uniform`` (U[-1, 1] for weights and biases, the DSS protocol's choice).
    """
    params = {}
    for name, shape in spec.shapes().items():
        if init == "uniform":
            params[name] = torch.rand(shape, generator=generator, dtype=dtype) * 2.0 - 1.0
        elif name.startswith("W"):
            scale = {"lecun": 1.0, "he": 2.0}.get(init)
            if scale is None:
                raise OptionError("init", f"{init!r} is not one of lecun, he, uniform")
            params[name] = torch.randn(shape, generator=generator, dtype=dtype) * math.sqrt(scale / shape[1])
        else:
            params[name] = torch.zeros(shape, dtype=dtype)
    return params


def hidden_features(params: dict[str, torch.Tensor], X: torch.Tensor, spec: MLPSpec) -> list[torch.Tensor]:
    """Post-activation matrices Z_1(X), ..., Z_{L-1}(X) of one model; X: (n, d) -> each (n, width)."""
    phi = activation_fn(spec.activation)
    Z = X
    out = []
    for layer in range(1, spec.depth):
        Z = Z @ params[f"W{layer}"].T
        if spec.bias:
            Z = Z + params[f"b{layer}"]
        Z = phi(Z)  # (n, width)
        out.append(Z)
    return out


def last_hidden(params: dict[str, torch.Tensor], X: torch.Tensor, spec: MLPSpec) -> torch.Tensor:
    """Z_{L-1}(X), (n, width); X itself for a depth-1 (linear) model."""
    feats = hidden_features(params, X, spec)
    return feats[-1] if feats else X


def forward(params: dict[str, torch.Tensor], X: torch.Tensor, spec: MLPSpec) -> torch.Tensor:
    """f(X) for one model; X: (n, d) -> (n, output_dim)."""
    Z = last_hidden(params, X, spec)
    out = Z @ params[f"W{spec.depth}"].T
    if spec.output_bias:
        out = out + params[f"b{spec.depth}"]
    return out


# ------------------------------------------------------------------- flat parameter vectors
def flatten(params: dict[str, torch.Tensor], spec: MLPSpec) -> torch.Tensor:
    """Concatenate parameters in ``spec.shapes()`` order along the last axis.

    Works for one model (-> (P,)) or a batch with a leading seed dimension (-> (S, P)).
    """
    shapes = spec.shapes()
    lead = params[next(iter(shapes))].shape[: params[next(iter(shapes))].dim() - len(next(iter(shapes.values())))]
    return torch.cat([params[name].reshape(*lead, -1) for name in shapes], dim=-1)


def unflatten(theta: torch.Tensor, spec: MLPSpec) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten`: (..., P) -> dict of (..., *shape) views."""
    out, offset = {}, 0
    lead = theta.shape[:-1]
    for name, shape in spec.shapes().items():
        size = math.prod(shape)
        out[name] = theta[..., offset : offset + size].reshape(*lead, *shape)
        offset += size
    if offset != theta.shape[-1]:
        raise OptionError("theta", f"expected {offset} parameters, got {theta.shape[-1]}")
    return out

"""Grid expansion and its validation, the same for every experiment.

An experiment declares its grid axes as a :class:`GridAxes`: the axes allowed under
``sweep.grid``, the required ones, pairs of which at most one may be given (``n`` or
``n_minus_k``; ``width`` or ``width_over_n``), and ratio axes (``width_over_n``: width =
width_over_n x n_samples, an integer). :meth:`GridAxes.check` turns ``sweep.grid`` into
validated value lists (a :class:`~ray_jobs.errors.ConfigError` naming ``sweep.grid.<axis>``
otherwise), :func:`grid_points` crosses them, :meth:`Ratio.resolve` gives a ratio axis'
integer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ray_jobs.errors import ConfigError


def grid_axis_values(axis: str, value) -> list:
    """A grid axis value as a list (a scalar is a one-point axis); empty -> ConfigError."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError(f"sweep.grid.{axis}", "empty axis; give at least one value, e.g. [6, 7]")
    return values


@dataclass(frozen=True)
class Alternative:
    """Two axes of which at most one may be given (``how`` says how they relate); with
    ``example``, one of them is required (the example is one for ``other``)."""

    axis: str
    other: str
    how: str
    example: str | None = None


@dataclass(frozen=True)
class Ratio:
    """``target`` = ``axis`` x ``base``, which must be an integer >= 1 (``width_over_n`` x
    ``n_samples`` = ``width``)."""

    axis: str
    target: str
    base: str

    def resolve(self, values: dict[str, Any]) -> int:
        """The integer ``target`` of a grid point; ConfigError naming ``sweep.grid.<axis>`` otherwise."""
        ratio, base = values[self.axis], values[self.base]
        product = ratio * base
        target = round(product)
        if abs(product - target) > 1e-9 or target < 1:
            raise ConfigError(
                f"sweep.grid.{self.axis}",
                f"{self.target} = {self.axis} x {self.base} must be an integer >= 1, "
                f"got {ratio!r} x {base} = {product:g}",
            )
        return target


@dataclass(frozen=True)
class GridAxes:
    """The grid axes of an experiment and their rules, checked in this order: a grid is
    given, every axis is known, alternatives (not both; one when required), required axes,
    no empty axis."""

    names: tuple[str, ...]
    #: axis -> an example value list for the error message (``"[6,7]"``)
    required: dict[str, str] = field(default_factory=dict)
    alternatives: tuple[Alternative, ...] = ()
    #: what an empty grid must at least give (default: the required axes and alternatives)
    least: str | None = None

    def check(self, grid: dict[str, Any] | None, experiment: str) -> dict[str, list]:
        """``sweep.grid`` (a plain dict) as axis -> list of values, validated."""
        allowed = ", ".join(self.names)
        if not grid:
            least = self.least or ", ".join(
                [*(f"{a.axis} (or {a.other})" for a in self.alternatives if a.example), *self.required]
            )
            raise ConfigError("sweep.grid", f"empty grid; give at least {least}; allowed axes: {allowed}")
        for axis in grid:
            if axis not in self.names:
                raise ConfigError(f"sweep.grid.{axis}", f"unknown axis {axis!r} for {experiment}; allowed: {allowed}")
        for alternative in self.alternatives:
            a, b = alternative.axis, alternative.other
            if a in grid and b in grid:
                raise ConfigError(f"sweep.grid.{a}", f"give either {a} or {b} ({alternative.how}), not both")
            if alternative.example and a not in grid and b not in grid:
                raise ConfigError(
                    f"sweep.grid.{a}",
                    f"required axis for {experiment}: {a} or {b} (e.g. sweep.grid.{b}={alternative.example})",
                )
        for axis, example in self.required.items():
            if axis not in grid:
                raise ConfigError(
                    f"sweep.grid.{axis}", f"required axis for {experiment} (e.g. sweep.grid.{axis}={example})"
                )
        return {axis: grid_axis_values(axis, values) for axis, values in grid.items()}


def grid_points(axes: dict[str, list]) -> Iterator[dict[str, Any]]:
    """Every combination of the axes' values (the first axis varies slowest), as dicts."""
    names = list(axes)
    for point in itertools.product(*(axes[name] for name in names)):
        yield dict(zip(names, point))

"""Data sets for landscape experiments: all generated or shipped, nothing downloaded.

Every generator takes an explicit ``torch.Generator`` and returns float64 ``X (n, d)`` and
targets ``Y`` (``(n, m)`` regression targets, or ``(n,)`` int64 class labels for
cross-entropy).

- ``teacher``: x ~ N(0, I_d), y = a random teacher MLP's output (width, depth, activation).
- ``random_labels``: x ~ N(0, I_d), y ~ N(0, I_m) (regression) or uniform classes.
- ``distinct``: the survey's construction (section VI): inputs whose first coordinate takes
  n distinct values, so that one coordinate separates all samples; other coordinates
  Gaussian; random labels.
- ``digits``: scikit-learn's 8x8 digits (1,797 images shipped inside the package),
  subsampled to n without replacement, pixels standardised; one-hot targets for the
  square loss, class labels for cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from landscape_core.errors import OptionError
from landscape_core.networks import MLPSpec, forward, init_parameters

DATASETS = ("teacher", "random_labels", "distinct", "digits")


@dataclass(frozen=True)
class DataSpec:
    """Which data set, and its size."""

    name: str = "teacher"
    n_samples: int = 20
    input_dim: int = 10  # ignored by digits (64 pixels)
    output_dim: int = 1  # regression targets; number of classes for cross-entropy
    classification: bool = False  # integer labels for cross-entropy
    teacher_width: int = 5
    teacher_depth: int = 2
    teacher_activation: str = "relu"
    noise: float = 0.0  # Gaussian label noise added to teacher outputs

    def validate(self) -> None:
        if self.name not in DATASETS:
            raise OptionError("data.name", f"{self.name!r} is not one of {', '.join(DATASETS)}")
        for field in ("n_samples", "input_dim", "output_dim", "teacher_width", "teacher_depth"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"data.{field}", f"must be an integer >= 1, got {value!r}")
        if self.noise < 0:
            raise OptionError("data.noise", f"must be >= 0, got {self.noise!r}")
        if self.name == "digits" and self.n_samples > 1797:
            raise OptionError("data.n_samples", f"digits has 1797 samples, got {self.n_samples}")
        if self.classification and self.name == "teacher":
            raise OptionError("data.classification", "the teacher data set is regression only")

    def feature_dim(self) -> int:
        return 64 if self.name == "digits" else self.input_dim

    def target_dim(self) -> int:
        return 10 if self.name == "digits" else self.output_dim


def make_dataset(spec: DataSpec, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one data set; see the module docstring for each ``spec.name``."""
    spec.validate()
    n, d, m = spec.n_samples, spec.input_dim, spec.output_dim
    f64 = torch.float64
    if spec.name == "digits":
        return _digits(n, classification=spec.classification, generator=generator)
    X = torch.randn(n, d, generator=generator, dtype=f64)  # (n, d)
    if spec.name == "distinct":
        # one coordinate separating all samples: n distinct, well spaced values in [-1, 1]
        X[:, 0] = torch.linspace(-1.0, 1.0, n, dtype=f64)[torch.randperm(n, generator=generator)]
    if spec.name == "teacher":
        teacher = MLPSpec(d, spec.teacher_width, spec.teacher_depth, m, spec.teacher_activation)
        teacher.validate()
        params = init_parameters(teacher, generator=generator, dtype=f64)
        Y = forward(params, X, teacher)  # (n, m)
        if spec.noise > 0:
            Y = Y + spec.noise * torch.randn(Y.shape, generator=generator, dtype=f64)
        return X, Y
    if spec.classification:
        return X, torch.randint(0, m, (n,), generator=generator)
    return X, torch.randn(n, m, generator=generator, dtype=f64)


def _digits(n: int, *, classification: bool, generator: torch.Generator):
    from sklearn.datasets import load_digits  # ships its data inside the package

    digits = load_digits()
    X_all = torch.as_tensor(digits.data, dtype=torch.float64)  # (1797, 64)
    y_all = torch.as_tensor(digits.target, dtype=torch.int64)  # (1797,)
    idx = torch.randperm(X_all.shape[0], generator=generator)[:n]
    X = X_all[idx]
    X = (X - X_all.mean(0)) / X_all.std(0).clamp_min(1e-12)  # standardise with full-set stats
    y = y_all[idx]
    if classification:
        return X, y
    return X, torch.nn.functional.one_hot(y, 10).to(torch.float64)


CLASSIFICATION_SETS = ("mixture", "random_labels", "digits")


def make_classification_split(
    name: str,
    *,
    n_train: int,
    n_test: int,
    input_dim: int,
    classes: int,
    separation: float = 3.0,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A train / test split for classification: (X_train, y_train, X_test, y_test).

    - ``mixture``: ``classes`` Gaussian components in R^input_dim with means drawn
      N(0, separation^2 I / input_dim) (so the typical distance between two means is about
      ``separation * sqrt(2)``) and unit covariance; balanced labels drawn uniformly;
    - ``random_labels``: x ~ N(0, I), labels uniform and independent of x (test accuracy
      is chance by construction; training error measures memorisation);
    - ``digits``: scikit-learn's digits (64 pixels, 10 classes), ``n_train`` + ``n_test``
      images without replacement, standardised with full-set statistics.
    Labels are int64 in [0, classes).
    """
    if name not in CLASSIFICATION_SETS:
        raise OptionError("data.name", f"{name!r} is not one of {', '.join(CLASSIFICATION_SETS)}")
    for field, value in (("n_train", n_train), ("n_test", n_test), ("input_dim", input_dim), ("classes", classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if field == "n_test" else 1):
            raise OptionError(f"data.{field}", f"must be a positive integer, got {value!r}")
    f64 = torch.float64
    total = n_train + n_test
    if name == "digits":
        if total > 1797:
            raise OptionError("data.n_train", f"digits has 1797 samples, n_train + n_test = {total}")
        X, y = _digits(total, classification=True, generator=generator)
    else:
        if classes < 2:
            raise OptionError("data.classes", f"must be >= 2, got {classes!r}")
        y = torch.randint(0, classes, (total,), generator=generator)
        X = torch.randn(total, input_dim, generator=generator, dtype=f64)
        if name == "mixture":
            means = torch.randn(classes, input_dim, generator=generator, dtype=f64) * (separation / input_dim**0.5)
            X = X + means[y]
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]

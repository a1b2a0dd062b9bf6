"""OptionError: the science core names the invalid option in ``field`` and says what is
wrong in ``message``; ``str(exc)`` stays ``"field: message"`` (the text the service and the
older tests read), and the exception is still a ValueError."""

from __future__ import annotations

import pathlib
import re

import pytest

import landscape_core
from landscape_core import networks, skip_networks, string_sampling, teacher_student, width_threshold
from landscape_core.data import DataSpec, make_classification_split
from landscape_core.errors import OptionError
from landscape_core.training import SGDSpec, TrainSpec

CORE = pathlib.Path(landscape_core.__file__).parent

CASES = {
    "teacher_student.step": (
        lambda: teacher_student.TeacherStudentProtocol(step=-1).validate(k=3, n=3),
        "step",
        "must be a positive finite number, got -1",
    ),
    "teacher_student.k": (
        lambda: teacher_student.TeacherStudentProtocol().validate(k=0, n=3),
        "k",
        "must be an integer >= 1, got 0",
    ),
    "teacher_student.unknown": (  # field computed: sorted(unknown)[0]
        lambda: teacher_student.run_teacher_student(3, 3, [0], zeta=1, alpha=2),
        "alpha",
        "unknown teacher-student option (allowed: bad_loss_threshold, compact_every, d, early_stop_global, "
        "eig_margin, grad_tol, init_scale, init_variance, max_iterations, max_restarts, monotone_rtol, "
        "restart_grad_norm, step, step_times_k, stop_when_proven, stopping_norm, teacher)",
    ),
    "teacher_student.seeds": (
        lambda: teacher_student.run_teacher_student(3, 3, []),
        "seeds",
        "must be a non-empty list of integers",
    ),
    "width_threshold.optimizer.name": (
        lambda: width_threshold.resolve_options(
            width=3, depth=2, activation="relu", n_samples=5, optimizer={"name": "sgdx"}
        ),
        "optimizer.name",
        "'sgdx' is not one of gd, momentum, adam, lbfgs",
    ),
    "width_threshold.optimizer.lr": (  # field computed: f"optimizer.{name}"
        lambda: width_threshold.resolve_options(
            width=3, depth=2, activation="relu", n_samples=5, optimizer={"lr": -0.5}
        ),
        "optimizer.lr",
        "must be a positive number, got -0.5",
    ),
    "width_threshold.unknown_field": (  # field computed: f"{group}.{unknown[0]}"
        lambda: width_threshold.resolve_options(
            width=3, depth=2, activation="relu", n_samples=5, probes={"rank_tol": 1e-3}
        ),
        "probes.rank_tol",
        None,  # message checked by prefix below (lists every probe field)
    ),
    "width_threshold.loss": (
        lambda: width_threshold.resolve_options(width=3, depth=2, activation="relu", n_samples=5, loss="hinge"),
        "loss",
        "'hinge' is not one of square, cross_entropy",
    ),
    "data.name": (
        lambda: DataSpec(name="mnist").validate(),
        "data.name",
        "'mnist' is not one of teacher, random_labels, distinct, digits",
    ),
    "data.n_samples": (  # field computed: f"data.{field}"
        lambda: DataSpec(n_samples=0).validate(),
        "data.n_samples",
        "must be an integer >= 1, got 0",
    ),
    "data.classification_split": (
        lambda: make_classification_split("mixture", n_train=4, n_test=2, input_dim=2, classes=1, generator=None),
        "data.classes",
        "must be >= 2, got 1",
    ),
    "networks.activation": (
        lambda: networks.activation_fn("no_such_activation"),
        "activation",
        "'no_such_activation' is not one of " + ", ".join(networks.ACTIVATIONS),
    ),
    "networks.width": (  # field computed: f"{name}"
        lambda: networks.MLPSpec(input_dim=2, width=0, depth=2).validate(),
        "width",
        "must be an integer >= 1, got 0",
    ),
    "training.sgd.gamma": (lambda: SGDSpec(gamma=0.0).validate(), "sgd.gamma", "must be in (0, 1], got 0.0"),
    "training.optimizer.beta2": (
        lambda: TrainSpec(beta2=1.0).validate(),
        "optimizer.beta2",
        "must be in [0, 1), got 1.0",
    ),
    "skip_networks.mode": (
        lambda: skip_networks.resolve_options(width=4, depth=2, activation="relu", n_samples=10, mode="adam"),
        "mode",
        "'adam' is not one of sgd, rand",
    ),
    "skip_networks.M": (
        lambda: skip_networks.resolve_options(width=4, depth=2, activation="relu", n_samples=10, M=5000),
        "skip.M",
        "must be an integer in [1, 4] (hidden neurons available), got 5000",
    ),
    "skip_networks.sgd_key": (  # field computed: f"sgd.{key}"
        lambda: skip_networks.resolve_options(width=4, depth=2, activation="relu", n_samples=2, sgd={"momentum": "x"}),
        "sgd.momentum",
        "must be a finite number, got 'x'",
    ),
    "string_sampling.threshold": (
        lambda: string_sampling.StringSpec(threshold=-1.0).validate(),
        "threshold",
        "must be > 0, got -1.0",
    ),
    "string_sampling.run_threshold": (
        lambda: string_sampling.resolve_options(threshold=0.0),
        "threshold",
        "must be > 0, got 0.0",
    ),
    "string_sampling.max_beads": (  # field computed: f"{name}"
        lambda: string_sampling.resolve_options(threshold=1.0, string={"max_beads": 0}),
        "max_beads",
        "must be an integer >= 1, got 0",
    ),
    "string_sampling.problem": (
        lambda: string_sampling.resolve_options(threshold=1.0, problem="cubic"),
        "problem",
        "'cubic' is not one of " + ", ".join(string_sampling.PROBLEMS),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_option_raises_option_error_naming_the_field(case):
    call, field, message = CASES[case]
    with pytest.raises(OptionError) as info:
        call()
    exc = info.value
    assert type(exc) is OptionError
    assert isinstance(exc, ValueError)
    assert exc.field == field
    if message is None:
        assert exc.message.startswith("unknown field (allowed: ")
    else:
        assert exc.message == message
    assert str(exc) == f"{field}: {message if message is not None else exc.message}"
    assert exc.args == (str(exc),)


def test_option_error_is_a_value_error_for_existing_callers():
    with pytest.raises(ValueError, match=r"^step: must be a positive finite number"):
        teacher_student.TeacherStudentProtocol(step=0.0).validate(k=2, n=2)
    exc = OptionError("data.n_samples", "must be an integer >= 1, got 0")
    assert (exc.field, exc.message, str(exc)) == (
        "data.n_samples",
        "must be an integer >= 1, got 0",
        "data.n_samples: must be an integer >= 1, got 0",
    )


def test_activation_error_suppresses_the_key_error_context():
    with pytest.raises(OptionError) as info:
        networks.activation_fn("no_such_activation")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_option_error_is_exported():
    assert landscape_core.OptionError is OptionError
    assert "OptionError" in landscape_core.__all__


# ``raise ValueError("<field>: ...")`` with a literal or computed field (``data.{field}``,
# ``{name}``, ``{sorted(unknown)[0]}``) or a list of fields (``spring_weight, plane_weight``).
_FIELD = r"[A-Za-z_{][A-Za-z0-9_.{}\[\]()]*"
_OLD_STYLE = re.compile(rf'raise ValueError\(f?"{_FIELD}(?:, {_FIELD})*: ')


@pytest.mark.parametrize(
    "line",
    [
        'raise ValueError(f"data.{field}: must be an integer >= 1, got {value!r}")',
        'raise ValueError(f"{name}: must be a positive finite number, got {value!r}")',
        'raise ValueError(f"{sorted(unknown)[0]}: unknown teacher-student option (allowed: {allowed})")',
        'raise ValueError("seeds: must be a non-empty list of integers")',
        'raise ValueError("spring_weight, plane_weight: must be >= 0")',
    ],
)
def test_old_style_pattern_finds_field_message_value_errors(line):
    assert _OLD_STYLE.search(line)
    assert not _OLD_STYLE.search(line.replace("ValueError(", "OptionError("))


def test_no_field_message_value_error_left_in_the_core():
    sources = sorted(CORE.glob("*.py"))
    assert len(sources) > 5
    left = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if _OLD_STYLE.search(line)
    ]
    assert left == []


def test_no_core_code_parses_error_text():
    """Nothing in the core catches a ValueError and splits its message to find the field."""
    for path in sorted(CORE.glob("*.py")):
        text = path.read_text()
        assert "except ValueError" not in text, path.name
        assert 'partition(": ")' not in text and 'split(": ")' not in text, path.name

"""Safran & Shamir's teacher-student experiment: the adapter to ``landscape_core.teacher_student``.

Grid axes, columns, cell validation (by the core's own checks) and the batched run of a
seed chunk; the report layout (and its setting ``report.family_tol``) is in :mod:`.layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from landscape_core.errors import OptionError
from ray_jobs.errors import ConfigError
from ray_jobs.experiments.base import Experiment
from ray_jobs.experiments.grid import Alternative, GridAxes, grid_points


class TeacherStudent(Experiment):
    """Safran & Shamir's teacher-student two-layer ReLU network (protocols.md section 1).

    Grid axes: ``k`` (teacher neurons, required), either ``n`` (student neurons, crossed
    with k) or ``n_minus_k`` (n = k + offset; default [0]), and optionally ``step`` and
    ``init_scale`` (override the protocol's value per cell). The cell's parameters are the
    experiment group (teacher, d, activation, keep_weights, fail_on_seeds) plus every key
    of the protocol group, passed to ``run_teacher_student`` as they are: a key enters a
    cell only when the protocol file (or an override) sets it, so the 2021 keys
    (``step_times_k``, ``init_variance``, ``stopping_norm``) leave the cells, and the ids, of
    every 2018 sweep as they were. Values that depend on the grid are explicit forms, never
    code: ``step_times_k`` (step = step_times_k / k, instead of ``step``), ``init_variance``
    ("1/d" or "1/k"); each row records the effective ``step`` and ``init_variance_value``.
    """

    name = "teacher_student"
    help = "k (required), n or n_minus_k (n = k + offset), step, init_scale; group protocol"
    tiny_budget = ("protocol.max_iterations=300",)
    grid_axes = GridAxes(
        ("k", "n", "n_minus_k", "step", "init_scale"),
        required={"k": "[6,7]"},
        alternatives=(Alternative("n", "n_minus_k", "n = k + offset"),),
    )
    groups = ("protocol",)
    activations = ("relu",)
    #: experiment-group keys that are not options of the core function
    service_keys = ("name", "activation", "keep_weights", "fail_on_seeds", "certify_runs")
    columns = {
        "k": "int64",
        "n": "int64",
        "d": "int64",
        "teacher": "string",
        "activation": "string",
        "min_eig": "float64",
        "max_eig": "float64",
        "hessian_degenerate": "bool",
        "restarts": "int64",
        "final_step": "float64",
        "stopped_early": "bool",
        "init_scale": "float64",
        "step": "float64",  # the effective step (5 / k with step_times_k = 5)
        "step_times_k": "float64",  # null unless the step was given as step_times_k / k
        "init_variance": "string",  # "1/d" (2018) or "1/k" (2021), times init_scale^2
        "init_variance_value": "float64",  # the effective initial variance of each coordinate
        "stopping_norm": "string",  # "max_neuron" (2018) or "frobenius" (2021); grad_norm is in it
        "grad_tol": "float64",
        "restart_grad_norm": "float64",  # null: no restart rule (2021)
        "max_iterations": "int64",
        "bad_loss_threshold": "float64",
        "eig_margin": "float64",
        "early_stop_global": "bool",
        "monotone_rtol": "float64",
        "max_restarts": "int64",
        "stop_when_proven": "bool",  # runs end once proven spurious (issue 13 item 3); default false
        "proven_iteration": "int64",  # iteration where the run was proven spurious; null otherwise
        # what a proven run's proof rests on (issue 27; landscape_core...prover.ProofRecord), null otherwise
        "proven_contraction": "float64",  # upper bound on one step's contraction factor towards x*, < 1
        "proven_step_curvature": "float64",  # upper bound on step * lambda_max(Hessian) on the ball, < 2
        "proven_min_eig_lo": "float64",  # lower bound on lambda_min(Hessian) on the ball, > eig_margin
        "proven_steps_left": "int64",  # upper bound on the iterations the full protocol still takes
        "proven_distance": "float64",  # upper bound on the run's distance to its minimum when proven
        "final_weights": "list<float64>",
        # per-run certificates of spurious runs with experiment.certify_runs (null otherwise; with_certificates)
        "certified": "bool",
        "certified_lambda_lo": "float64",
        "certified_radius": "float64",
        "certified_reason": "string",
    }

    def cells(self, cfg) -> list[dict[str, Any]]:
        from omegaconf import OmegaConf

        experiment, grid, fail_on_seeds = self.read_config(cfg)
        protocol = cast(dict[str, Any], OmegaConf.to_container(cfg.protocol, resolve=True))  # a DictConfig section
        activation = experiment.get("activation", "relu")
        if activation not in self.activations:
            raise ConfigError(
                "experiment.activation",
                f"unknown activation {activation!r} for {self.name}; allowed: {', '.join(self.activations)}",
            )
        certify_runs = experiment.get("certify_runs", False)
        if not isinstance(certify_runs, bool):
            raise ConfigError("experiment.certify_runs", f"must be true or false, got {certify_runs!r}")
        if certify_runs and not experiment.get("keep_weights", True):
            raise ConfigError("experiment.certify_runs", "needs the final weights: keep experiment.keep_weights=true")
        axes = self.grid_axes.check(grid, self.name)
        width_axis = "n" if "n" in axes else "n_minus_k"
        if width_axis == "n_minus_k":
            axes.setdefault("n_minus_k", [0])
        for offset in axes.get("n_minus_k", []):
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise ConfigError("sweep.grid.n_minus_k", f"must be integers (n = k + offset), got {offset!r}")

        cells = []
        for values in grid_points(axes):
            k = values["k"]
            n = values["n"] if width_axis == "n" else k + values["n_minus_k"] if isinstance(k, int) else None
            options = {key: value for key, value in experiment.items() if key not in self.service_keys}
            options.update(protocol)
            options.update({axis: values[axis] for axis in ("step", "init_scale") if axis in values})
            if options.get("step") is None and options.get("step_times_k") is None:
                raise ConfigError(
                    "protocol.step",
                    "no step: give protocol.step (a number) or protocol.step_times_k (step = step_times_k / k)",
                )
            if "step" in options and options["step"] is None:
                del options["step"]  # step given as step_times_k: `step: null` says only that
            from_experiment = {key for key in experiment if key not in self.service_keys and key not in protocol}
            self._check_with_core(
                k, n, options, width_axis, grid_step="step" in values, from_experiment=from_experiment
            )
            params = {
                "experiment": self.name,
                "k": k,
                "n": n,
                **options,
                "d": options.get("d") if options.get("d") is not None else k,
                "activation": activation,
                "keep_weights": bool(experiment.get("keep_weights", True)),
                "fail_on_seeds": sorted(fail_on_seeds),
            }
            if certify_runs:  # only when on: the cell ids of sweeps without it stay as they were
                params["certify_runs"] = True
            cells.append(params)
        return cells

    def _check_with_core(
        self,
        k,
        n,
        options: dict,
        width_axis: str,
        grid_step: bool = False,
        from_experiment: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        """Validate one cell with the core's own checks, naming the config path at fault
        (``from_experiment``: the options given as ``experiment.*``, the others ``protocol.*``)."""
        from landscape_core.teacher_student import TeacherStudentProtocol

        try:
            unknown = set(options) - set(TeacherStudentProtocol.__dataclass_fields__)
            if unknown:
                allowed = ", ".join(sorted(TeacherStudentProtocol.__dataclass_fields__))
                raise OptionError(sorted(unknown)[0], f"unknown teacher-student option (allowed: {allowed})")
            TeacherStudentProtocol(**options).validate(k=k, n=n)
        except OptionError as exc:
            field, message = exc.field, exc.message
            if field == "k":
                path = "sweep.grid.k"
            elif field == "n":
                path = f"sweep.grid.{width_axis}"
                if width_axis == "n_minus_k":
                    message = f"n = k + n_minus_k {message} (k = {k})"
            elif field in ("d", "teacher") or field in from_experiment:
                path = f"experiment.{field}"
            elif field == "step_times_k" and grid_step:
                path = "sweep.grid.step"  # the grid's step meets the protocol's step_times_k
            else:
                path = f"protocol.{field}"
            raise ConfigError(path, message or str(exc)) from None

    def core_options(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword options of ``run_teacher_student`` held in a cell's ``params``."""
        from landscape_core.teacher_student import TeacherStudentProtocol

        return {key: params[key] for key in TeacherStudentProtocol.__dataclass_fields__ if key in params}

    def run(self, params: dict[str, Any], seeds: Sequence[int], device: str) -> list[dict]:
        from landscape_core.teacher_student import run_teacher_student

        records = run_teacher_student(
            params["k"],
            params["n"],
            list(seeds),
            device=device,
            keep_weights=params["keep_weights"],
            **self.core_options(params),
        )
        return with_certificates(records, params) if params.get("certify_runs") else records


#: Frobenius distance within which two spurious points of one unit are one family for the
#: per-run certificates (the report's default ``report.family_tol``, :mod:`.layout`; a certificate's ball
#: covers every member whatever their spread, so this only decides how many are issued)
CERTIFICATE_FAMILY_TOL = 1e-4
_NO_CERTIFICATE = {"certified": None, "certified_lambda_lo": None, "certified_radius": None, "certified_reason": None}


def with_certificates(records: list[dict], params: dict[str, Any]) -> list[dict]:
    """``records`` with the per-run certificate columns: for each spurious run with kept
    weights and the identity teacher (the authors' setting, d = k), its family's
    certificate (:func:`landscape_core.certification.certify_points`: the unit's spurious
    points grouped under the full symmetry group, one rigorous certificate per family):
    ``certified`` (a proven strict local minimum with F >= bad_loss_threshold covers the
    run's point), ``certified_lambda_lo``, ``certified_radius``, ``certified_reason``; null
    for every other run. Records are not modified (new dicts)."""
    out = [{**record, **_NO_CERTIFICATE} for record in records]
    spurious = [
        i
        for i, record in enumerate(records)
        if record["status"] == "spurious" and record.get("final_weights") is not None
    ]
    if not spurious or params.get("teacher", "identity") != "identity" or params["d"] != params["k"]:
        return out
    import numpy as np

    from landscape_core.certification import certify_points

    n, d = int(params["n"]), int(params["d"])
    points = [np.asarray(records[i]["final_weights"], dtype=np.float64).reshape(n, d) for i in spurious]  # (n, d) each
    certificates = certify_points(
        points,
        tol=CERTIFICATE_FAMILY_TOL,
        objectives=[records[i]["final_loss"] for i in spurious],
        min_eigs=[records[i]["min_eig"] for i in spurious],
        bad_loss_threshold=float(params.get("bad_loss_threshold", 1e-3)),
    )
    for i, certificate in zip(spurious, certificates):
        out[i].update({key: certificate[key] for key in _NO_CERTIFICATE})
    return out


EXPERIMENT = TeacherStudent

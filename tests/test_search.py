"""Adaptive search engine (Optuna 5, journal storage) on a synthetic experiment with a known answer."""

from __future__ import annotations

import hashlib

import optuna
import pytest

from ray_jobs.errors import ConfigError
from ray_jobs.search.engine import InProcessEvaluator, run_search, wilson_interval
from ray_jobs.search.spec import SearchSpec

TRUE_THRESHOLD = 12


def success_probability(width: int) -> float:
    """Known success curve: certain from width 12 on, 0.85 at 11, 0.5 below."""
    return 1.0 if width >= TRUE_THRESHOLD else (0.85 if width == TRUE_THRESHOLD - 1 else 0.5)


def _uniform(*parts) -> float:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") / 2**64


def stub_experiment(params, seeds):
    p = success_probability(int(params["width"]))
    return [{"seed": s, "status": "global" if _uniform(params["width"], s) < p else "spurious"} for s in seeds]


def _spec(**over):
    raw = dict(
        name="width_threshold_stub",
        kind="threshold",
        axes={"width": {"type": "int", "low": 4, "high": 32}},
        fixed={"depth": 2},
        target=0.95,
        trials=14,
        seeds_per_stage=25,
        max_stages=4,
        sampler="tpe",
        parallel_trials=2,
    )
    raw.update(over)
    return SearchSpec.from_dict(raw)


def test_threshold_found_within_one_step_with_fewer_runs_than_grid(tmp_path):
    spec = _spec()
    outcome = run_search(spec, InProcessEvaluator(stub_experiment), storage_path=tmp_path / "journal.log")
    assert outcome.reached
    assert abs(outcome.best["threshold"] - TRUE_THRESHOLD) <= 1
    grid_runs = (32 - 4 + 1) * spec.seeds_per_stage * spec.max_stages  # the grid at the same per-cell precision
    assert outcome.runs_spent < grid_runs
    # early decisions: a trial whose interval clears the target stops before its last stage
    assert any(t["stages"] < spec.max_stages and t["decision"] in ("feasible", "infeasible") for t in outcome.trials)


def test_grid_sampler_for_comparison_visits_every_value_once(tmp_path):
    spec = _spec(name="grid", sampler="grid", axes={"width": {"type": "int", "low": 9, "high": 14}}, trials=100)
    outcome = run_search(spec, InProcessEvaluator(stub_experiment), storage_path=tmp_path / "j.log")
    assert sorted(t["params"]["width"] for t in outcome.trials) == [9, 10, 11, 12, 13, 14]
    assert outcome.best["threshold"] == TRUE_THRESHOLD


def test_killed_search_resumes_from_journal_without_evaluating_twice(tmp_path):
    spec = _spec(name="resume")
    cache: dict = {}
    calls: list = []

    class Killed(Exception):
        pass

    def counting(params, seeds):
        calls.append((params["width"], seeds[0]))
        if len(calls) == 9:
            raise Killed()  # the driver dies in the middle of a trial
        return stub_experiment(params, seeds)

    with pytest.raises(Killed):
        run_search(spec, InProcessEvaluator(counting, cache=cache), storage_path=tmp_path / "journal.log")
    completed_before = {
        t.number
        for t in optuna.load_study(
            study_name="resume",
            storage=optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
            ),
        ).get_trials()
        if t.state == optuna.trial.TrialState.COMPLETE
    }
    outcome = run_search(spec, InProcessEvaluator(counting, cache=cache), storage_path=tmp_path / "journal.log")
    assert len(calls) == len(set(calls)) + 1  # only the request that died is ever asked again
    assert {t["number"] for t in outcome.trials} >= completed_before  # finished trials kept, not re-run
    assert outcome.reached and abs(outcome.best["threshold"] - TRUE_THRESHOLD) <= 1


def test_infeasible_target_is_a_result_not_an_error(tmp_path):
    spec = _spec(name="infeasible", axes={"width": {"type": "int", "low": 4, "high": 10}}, trials=6)
    outcome = run_search(spec, InProcessEvaluator(stub_experiment), storage_path=tmp_path / "j.log")
    assert not outcome.reached and outcome.best is None
    assert outcome.message.startswith("not reached within budget")


def test_protocol_search_minimises_failure_fraction(tmp_path):
    def experiment(params, seeds):  # failure probability falls with step: best step is the largest
        p = 0.6 - params["step"]
        return [{"seed": s, "status": "spurious" if _uniform(params["step"], s) < p else "global"} for s in seeds]

    spec = SearchSpec.from_dict(
        dict(
            name="protocol",
            kind="protocol",
            axes={"step": {"type": "float", "low": 0.05, "high": 0.5}},
            trials=10,
            seeds_per_stage=40,
            max_stages=2,
            sampler="tpe",
        )
    )
    outcome = run_search(spec, InProcessEvaluator(experiment), storage_path=tmp_path / "j.log")
    assert outcome.best["params"]["step"] > 0.3
    assert outcome.runs_spent <= 10 * 80


@pytest.mark.parametrize(
    "over,field",
    [
        (dict(kind="bisect"), "search.kind"),
        (dict(axes={}), "search.axes"),
        (dict(axes={"width": {"type": "int", "low": 10, "high": 4}}), "search.axes.width.low"),
        (dict(axes={"width": {"type": "float", "low": 1.0, "high": 4.0}}), "search.axes"),
        (dict(trials=0), "search.trials"),
        (dict(sampler="cmaes"), "search.sampler"),
        (dict(target=1.5), "search.target"),
    ],
)
def test_invalid_search_configs_name_the_field(over, field):
    with pytest.raises(ConfigError) as err:
        _spec(**over)
    assert err.value.field == field


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(641, 1000, 0.99)
    assert (round(lo, 4), round(hi, 4)) == (0.6011, 0.679)
    assert wilson_interval(0, 0, 0.99) == (0.0, 1.0)


def test_threshold_search_closes_the_bracket_and_stops(tmp_path):
    """Once the value below the smallest feasible one is decided infeasible, no more trials start,
    and values the sampler repeats are answered from the finished trial (no runs)."""
    spec = _spec(name="bracket", trials=30, sampler="random")
    calls: list = []

    def counting(params, seeds):
        calls.append((params["width"], seeds[0]))
        return stub_experiment(params, seeds)

    outcome = run_search(spec, InProcessEvaluator(counting), storage_path=tmp_path / "j.log")
    decided = {t["params"]["width"]: t["decision"] for t in outcome.trials if "repeat_of" not in t}
    assert (
        outcome.best["threshold"] == TRUE_THRESHOLD and outcome.best["largest_infeasible_below"] == TRUE_THRESHOLD - 1
    )
    assert decided[TRUE_THRESHOLD - 1].startswith("infeasible")
    assert len(decided) < 32 - 4 + 1  # stopped before trying every width
    assert len(calls) == len(set(calls))  # no (width, stage) evaluated twice
    assert sum(t["runs"] for t in outcome.trials if "repeat_of" in t) == 0


def test_two_drivers_share_a_study_without_taking_over_live_trials(tmp_path):
    """A second driver started while the first has trials in flight leaves those trials alone
    (their driver is alive), sees the first one's finished trials, and neither evaluates a
    (width, stage) twice."""
    spec = _spec(name="shared", trials=8, parallel_trials=2)
    journal = tmp_path / "j.log"
    cache: dict = {}
    calls: list = []
    second: list = []

    def counting(params, seeds):
        calls.append((params["width"], seeds[0]))
        if len(calls) == 3 and not second:  # driver B starts while A has trials in flight
            second.append(run_search(spec, InProcessEvaluator(counting, cache=cache), storage_path=journal))
        return stub_experiment(params, seeds)

    first = run_search(spec, InProcessEvaluator(counting, cache=cache), storage_path=journal)
    trials = optuna.load_study(
        study_name="shared",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))),
    ).trials
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING)]
    assert len(calls) == len(set(calls))  # the shared cache stands for the shared Parquet store
    assert second and second[0].reached and first.reached
    assert first.best["threshold"] == second[0].best["threshold"] == TRUE_THRESHOLD


def test_enqueued_baseline_is_the_first_trial(tmp_path):
    def experiment(params, seeds):
        p = 0.6 - params["step"]
        return [{"seed": s, "status": "spurious" if _uniform(params["step"], s) < p else "global"} for s in seeds]

    spec = SearchSpec.from_dict(
        dict(
            name="baseline",
            kind="protocol",
            axes={"step": {"type": "float", "low": 0.05, "high": 0.5}},
            trials=4,
            seeds_per_stage=40,
            max_stages=2,
            parallel_trials=1,
            enqueue=[{"step": 0.1}],
        )
    )
    outcome = run_search(spec, InProcessEvaluator(experiment), storage_path=tmp_path / "j.log")
    first = min(outcome.trials, key=lambda t: t["number"])
    assert first["params"] == {"step": 0.1} and first["runs"] == 80
    with pytest.raises(ConfigError) as err:
        SearchSpec.from_dict(
            dict(
                name="b",
                kind="protocol",
                axes={"step": {"type": "float", "low": 0.05, "high": 0.5}},
                enqueue=[{"step": 0.9}],
            )
        )
    assert err.value.field == "search.enqueue.step"


@pytest.mark.parametrize("sampler", ["tpe", "gp", "random", "grid"])
def test_every_sampler_finds_the_threshold(tmp_path, sampler):
    spec = _spec(name=sampler, sampler=sampler, trials=40)
    outcome = run_search(spec, InProcessEvaluator(stub_experiment), storage_path=tmp_path / "j.log")
    assert outcome.best["threshold"] == TRUE_THRESHOLD
    assert outcome.runs_spent <= (32 - 4 + 1) * spec.seeds_per_stage * spec.max_stages


def test_a_value_whose_runs_all_fail_is_reported_undecided_and_not_asked_again(tmp_path):
    calls: list = []

    def failing_at_11(params, seeds):
        calls.append(params["width"])
        if params["width"] == TRUE_THRESHOLD - 1:
            return [{"seed": s, "status": "error"} for s in seeds]
        return stub_experiment(params, seeds)

    spec = _spec(name="errors", trials=30)
    outcome = run_search(spec, InProcessEvaluator(failing_at_11), storage_path=tmp_path / "j.log")
    assert calls.count(TRUE_THRESHOLD - 1) == 1  # a failed value is not bisected again and again
    assert outcome.best["threshold"] == TRUE_THRESHOLD and outcome.best["undecided_below"] == [TRUE_THRESHOLD - 1]
    assert "undecided, every run failed: width = [11]" in outcome.message
    assert any(t["decision"] == "error" for t in outcome.trials)  # error trials stay in the outcome (trials table)
    # a later invocation with retry_errors asks for that value again
    again = run_search(spec, InProcessEvaluator(stub_experiment), storage_path=tmp_path / "j.log", retry_errors=True)
    assert again.best["largest_infeasible_below"] == TRUE_THRESHOLD - 1 and not again.best["undecided_below"]


def test_every_trial_failing_is_a_result(tmp_path):
    spec = _spec(name="all_fail", trials=3, parallel_trials=1, sampler="random")
    outcome = run_search(
        spec,
        InProcessEvaluator(lambda p, seeds: [{"seed": s, "status": "error"} for s in seeds]),
        storage_path=tmp_path / "j.log",
    )
    assert not outcome.reached and outcome.message.startswith("every trial failed")


def test_total_runs_is_never_exceeded(tmp_path):
    spec = SearchSpec.from_dict(
        dict(
            name="budget",
            kind="protocol",
            axes={"step": {"type": "float", "low": 0.05, "high": 0.5}},
            trials=10,
            seeds_per_stage=25,
            max_stages=4,
            total_runs=125,
            parallel_trials=2,
        )
    )

    def coin(p, seeds):  # undecided
        return [{"seed": s, "status": "spurious" if s % 2 else "global"} for s in seeds]

    outcome = run_search(spec, InProcessEvaluator(coin), storage_path=tmp_path / "j.log")
    assert 0 < outcome.runs_spent <= 125


def test_grid_of_a_float_axis_stays_in_range_without_float_noise():
    spec = SearchSpec.from_dict(
        dict(
            name="g",
            kind="protocol",
            sampler="grid",
            axes={"step": {"type": "float", "low": 0.1, "high": 1.0, "step": 0.35}},
        )
    )
    assert [p["step"] for p in spec.grid_points()] == [0.1, 0.45, 0.8]


@pytest.mark.parametrize(
    "axes,over,field",
    [
        ({"step": {"type": "float", "low": 0.1, "high": 1.0, "step": 0}}, {}, "search.axes.step.step"),
        ({"step": {"type": "float", "low": 0.1, "high": 1.0, "step": "a"}}, {}, "search.axes.step.step"),
        ({"step": {"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1}}, {}, "search.axes.step.step"),
        ({"step": {"type": "float", "low": 0.1, "high": 1.0}}, {"sampler": "grid"}, "search.axes.step.step"),
        ({"step": {"type": "float", "low": 0.1, "high": 1.0}}, {"target": "x"}, "search.target"),
        (
            {"step": {"type": "float", "low": 0.1, "high": 1.0}},
            {"failure_statuses": "spurious"},
            "search.failure_statuses",
        ),
        ({"step": {"type": "float", "low": 0.1, "high": 1.0}}, {"total_runs": 50}, "search.total_runs"),
        ({"step": {"type": "float", "low": 0.1, "high": 1.0}}, {"seed_start": -1}, "search.seed_start"),
    ],
)
def test_invalid_axis_and_budget_settings_name_the_field(axes, over, field):
    with pytest.raises(ConfigError) as err:
        SearchSpec.from_dict(dict(name="bad", kind="protocol", axes=axes, seeds_per_stage=25, max_stages=4, **over))
    assert err.value.field == field

"""Adaptive searches through the service (`landscape-sweep search=<name>`) on the session's Ray cluster.

- every shipped search composes, validates (plan_search) and runs a corner cell with a tiny budget;
- `search=search_smoke` end to end: rows with study / trial / stage, each unit computed once,
  each trial's fraction equal to an independent count of its Parquet rows, the report files,
  one MLflow child per trial and Optuna's figures on the parent; running it again computes nothing;
- a SIGKILL'd search resumes from its journal: finished units are read, never recomputed;
- an infeasible target ends with "not reached within budget" (exit 0); invalid search configs
  exit 2 naming the field, with nothing written.
"""

from __future__ import annotations

import optuna
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ray_jobs.cli import EXIT_OK, EXIT_USAGE, sweep_main
from ray_jobs.config import available_searches, compose_config, search_to_sweep
from ray_jobs.experiments.registry import get_experiment
from ray_jobs.search.driver import JOURNAL, run_search_sweep
from ray_jobs.search.plan import plan_search
from ray_jobs.search.report import SEARCH_MD, TRIALS_CSV
from ray_jobs.store import ResultsStore
from tests.conftest import children_of, mlflow_client, sigkill_driver_when

SMOKE = ["search=search_smoke"]


def compose(*overrides: str):
    return compose_config(search_to_sweep(list(overrides))[0])


def read_rows(results, name="search_smoke") -> pd.DataFrame:
    return ResultsStore(results, name).read().to_pandas()


# ----------------------------------------------------------------------------- configs
def test_shipped_searches():
    assert {"search_smoke", "search_teacher_student_threshold", "search_teacher_student_protocol"} <= set(
        available_searches()
    )


@pytest.mark.parametrize("name", available_searches())
def test_every_search_plans_and_runs_a_corner_cell_with_a_tiny_budget(name):
    budget = {"teacher_student": ("protocol.max_iterations=300",), "width_threshold": ("optimizer.max_iterations=300",)}
    experiment = compose(f"search={name}").experiment.name
    # another experiment's searches run on its own tiny budget (at most 300 iterations too)
    plan = plan_search(compose(f"search={name}", *budget.get(experiment, get_experiment(experiment).tiny_budget)))
    assert plan.settings and all(s.study.startswith(f"{name}[") for s in plan.settings)
    corner = {axis.name: (axis.choices[0] if axis.type == "categorical" else axis.low) for axis in plan.spec.axes}
    cell = plan.cells.cell_for({**plan.settings[0].values, **corner})
    records = plan.experiment.run(cell.params, [0, 1], "cpu")
    assert [r["seed"] for r in records] == [0, 1] and all(r["iterations"] <= 300 for r in records)
    values = {**plan.settings[0].values, **corner}
    for key, value in values.items():
        if key in records[0]:
            assert records[0][key] == pytest.approx(value)
    if "n_minus_k" in values:
        assert records[0]["n"] == values["k"] + values["n_minus_k"]


def test_threshold_grid_file_has_the_search_cells_and_units():
    """The comparison grid and the threshold search share cells and seed chunks (same unit ids)."""
    from ray_jobs.plan import make_unit, plan_sweep
    from ray_jobs.validate import validate

    cfg = compose_config(["sweep=teacher_student_threshold_grid"])
    experiment, cells = validate(cfg)
    grid_units = {unit.unit_id for unit in plan_sweep(cfg, experiment.name, cells).units}
    plan = plan_search(compose("search=search_teacher_student_threshold"))
    spp = plan.spec.seeds_per_stage
    for setting in plan.settings:
        for value in range(plan.spec.axes[0].low, plan.spec.axes[0].high + 1):
            cell = plan.cells.cell_for({**setting.values, "n_minus_k": value})
            for stage in range(plan.spec.max_stages):
                assert make_unit(cell, stage * spp, (stage + 1) * spp).unit_id in grid_units
    assert len(grid_units) == len(plan.settings) * 7 * plan.spec.max_stages


# ------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def smoke_search(ray_session, tmp_path_factory):
    results = tmp_path_factory.mktemp("search")
    return results, run_search_sweep(compose(*SMOKE, f"results_dir={results}"))


def test_rows_are_each_trials_runs_once_with_study_trial_stage(smoke_search):
    results, result = smoke_search
    rows = read_rows(results)
    assert {"study", "trial", "stage"} <= set(rows.columns)
    assert not rows.duplicated(["cell_id", "seed"]).any()
    assert len(rows) == sum(s.runs_computed for s in result.studies) > 0
    spp = result.plan.spec.seeds_per_stage
    checked = 0
    for study in result.studies:
        assert set(rows.loc[rows["study"] == study.setting.study, "k"]) == {study.setting.values["k"]}
        for trial in study.outcome.trials:
            if "repeat_of" in trial:
                continue
            cell = result.plan.cells.cell_for({**study.setting.values, **trial["params"]})
            mine = rows[(rows["cell_id"] == cell.cell_id) & (rows["seed"] < trial["stages"] * spp)]
            assert len(mine) == trial["runs"] == trial["stages"] * spp
            assert mine["n"].iloc[0] == study.setting.values["k"] + trial["params"]["n_minus_k"]
            assert (mine["status"] == "global").sum() == round(trial["fraction"] * trial["runs"])
            checked += 1
    assert checked >= 2 * len(result.studies)


def test_threshold_answer_is_the_smallest_feasible_value(smoke_search):
    _, result = smoke_search
    target = result.plan.spec.target
    for study in result.studies:
        outcome = study.outcome
        decided = {t["params"]["n_minus_k"]: t for t in outcome.trials if "repeat_of" not in t}
        if outcome.reached:
            best = outcome.best["threshold"]
            assert decided[best]["fraction"] >= target
            assert all(not t["decision"].startswith("feasible") for v, t in decided.items() if v < best)
            # the bracket is closed: the value below is decided infeasible, or the threshold is the axis' low end
            assert best == result.plan.spec.axes[0].low or best - 1 in decided


def test_report_files_and_markdown(smoke_search):
    results, result = smoke_search
    report = results / "search_smoke" / "report"
    for name in (SEARCH_MD, TRIALS_CSV, "table.md", "table.csv", "optuna_history_0.png", "optuna_history_1.png"):
        assert (report / name).is_file(), name
    trials = pd.read_csv(report / TRIALS_CSV)
    assert len(trials) == sum(len(s.outcome.trials) for s in result.studies)
    markdown = (report / SEARCH_MD).read_text()
    for study in result.studies:
        assert f"| {study.setting.label} | " in markdown
    assert (results / "search_smoke" / JOURNAL).is_file()


def test_mlflow_child_per_trial_and_optuna_figures_on_the_parent(smoke_search):
    results, result = smoke_search
    client = mlflow_client(results)
    children = children_of(client, result.parent_run_id, role="trial")
    assert (
        client.get_experiment(client.get_run(result.parent_run_id).info.experiment_id).name == "landscape-search_smoke"
    )
    assert len(children) == sum(len(s.outcome.trials) for s in result.studies)
    some = children[0]
    assert {"fraction", "fraction_lo", "fraction_hi", "runs", "objective"} <= set(some.data.metrics)
    assert {"study", "trial", "n_minus_k", "k"} <= set(some.data.params)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/search.md", "report/trials.csv", "report/optuna_history_0.png"} <= artifacts


def test_trial_children_are_named_by_their_setting_trial_and_values(smoke_search):
    # `k=6 trial 3 n_minus_k=2`: the setting first, so the studies' trial 3 are told apart in the UI
    results, result = smoke_search
    client = mlflow_client(results)
    children = children_of(client, result.parent_run_id, role="trial")
    names = {child.info.run_name for child in children}
    assert len(names) == len(children)  # no two trials share a name across studies
    for child in children:
        params = child.data.params
        assert child.info.run_name == f"k={params['k']} trial {params['trial']} n_minus_k={params['n_minus_k']}"
        # the grid axes also as metrics, which sort as numbers (MLflow params are strings)
        assert child.data.metrics["axis/k"] == float(params["k"])
    assert len({child.data.params["k"] for child in children}) == len(result.studies) >= 2


def test_second_invocation_computes_nothing_and_gives_the_same_answers(smoke_search):
    results, first = smoke_search
    again = run_search_sweep(compose(*SMOKE, f"results_dir={results}"))
    assert sum(s.runs_computed for s in again.studies) == 0
    assert [s.outcome.best for s in again.studies] == [s.outcome.best for s in first.studies]


def test_infeasible_target_is_a_result_with_exit_0(ray_session, tmp_path, capsys):
    # n = k - 2, k - 1 < k: the student cannot fit the teacher, no run ends global
    code = sweep_main(
        [
            *SMOKE,
            "sweep.grid.k=[4]",
            "search.axes.n_minus_k.low=-2",
            "search.axes.n_minus_k.high=-1",
            "protocol.max_iterations=2000",
            f"results_dir={tmp_path}",
        ]
    )
    assert code == EXIT_OK
    assert "not reached within budget" in (tmp_path / "search_smoke" / "report" / SEARCH_MD).read_text()


# ----------------------------------------------------------------------- kill, resume
#: slow units: at n = k + 1 without the early-global rule most runs go to max_iterations
SLOW = [
    *SMOKE,
    "sweep.grid.k=[3]",
    "protocol.early_stop_global=false",
    "protocol.max_iterations=40000",
    "search.seeds_per_stage=4",
    "search.max_stages=2",
]


@pytest.mark.slow  # 23 s alone, ~1 min beside other work: `make test-all`
def test_killed_search_resumes_without_recomputing_a_unit(driver_env, tmp_path):
    runs_dir = tmp_path / "search_smoke" / "runs"
    sigkill_driver_when(
        [*SLOW, f"results_dir={tmp_path}"], env=driver_env, ready=lambda: list(runs_dir.glob("*.parquet"))
    )
    before = {path.name: (path.stat().st_mtime_ns, pq.read_table(path).num_rows) for path in runs_dir.glob("*.parquet")}
    assert before

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "search_smoke" / JOURNAL))
    )
    study = plan_search(compose(*SLOW, f"results_dir={tmp_path}")).settings[0].study
    running = [
        t
        for t in optuna.load_study(study_name=study, storage=storage).trials
        if t.state == optuna.trial.TrialState.RUNNING
    ]
    assert running  # the killed driver left its trials in flight

    resumed = run_search_sweep(compose(*SLOW, f"results_dir={tmp_path}"))
    after = {path.name: (path.stat().st_mtime_ns, pq.read_table(path).num_rows) for path in runs_dir.glob("*.parquet")}
    assert all(after[name] == before[name] for name in before)  # nothing recorded is rewritten
    rows = read_rows(tmp_path)
    assert not rows.duplicated(["cell_id", "seed"]).any()
    assert len(rows) == sum(n for _, n in before.values()) + resumed.studies[0].runs_computed
    trials = optuna.load_study(study_name=study, storage=storage).trials
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert {tuple(t.params.items()) for t in failed} == {tuple(t.params.items()) for t in running}


# --------------------------------------------------------------------------- invalid
@pytest.mark.parametrize(
    "args,field",
    [
        (["search=nope"], "search"),
        ([*SMOKE, "search.kind=bisect"], "search.kind"),
        ([*SMOKE, "search.trials=0"], "search.trials"),
        ([*SMOKE, "search.sampler=cmaes"], "search.sampler"),
        ([*SMOKE, "search.target=1.5"], "search.target"),
        ([*SMOKE, "search.success_statuses=[won]"], "search.success_statuses"),
        ([*SMOKE, "+search.axes.depth={type:int,low:1,high:3}"], "search.axes"),  # threshold: one axis
        ([*SMOKE, "search.axes.n_minus_k.low=-9"], "search.axes.n_minus_k"),  # n = 3 - 9 < 1
        ([*SMOKE, "search.axes.n_minus_k.low=5"], "search.axes.n_minus_k.low"),  # low > high
        (
            [
                "search=search_teacher_student_protocol",
                "~search.enqueue",
                "+search.axes.nope={type:float,low:1,high:2}",
            ],
            "search.axes.nope",
        ),
        (["search=search_teacher_student_protocol", "search.axes.step.low=-1.0"], "search.axes.step.low"),  # log axis
        ([*SMOKE, "+search.pruner=median"], "search.pruner"),
        (
            [
                "search=search_width_threshold",
                "~search.axes.width",
                "+search.axes.optimizer={type:categorical,choices:[adam]}",
                "search.kind=protocol",
                "++sweep.grid.width=[8]",
            ],
            "search.axes.optimizer",
        ),
    ],
)
def test_invalid_search_config_exits_2_naming_the_field(tmp_path, capsys, args, field):
    results = tmp_path / "results"
    assert sweep_main([*args, f"results_dir={results}"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"landscape-sweep: error: {field}:"), err
    assert not results.exists()


def test_a_new_question_gets_a_new_study_and_a_new_budget_does_not():
    base = plan_search(compose(*SMOKE)).settings
    for change in (
        "search.target=0.5",
        "search.confidence=0.5",
        "search.seeds_per_stage=4",
        "search.axes.n_minus_k.high=2",
        "protocol.max_iterations=10000",
        "+search.success_statuses=[global,saddle]",
    ):
        other = plan_search(compose(*SMOKE, change)).settings
        assert [s.study for s in other] != [s.study for s in base], change
    for same in (
        "search.trials=9",
        "search.total_runs=400",
        "search.parallel_trials=1",
        "search.sampler=random",
        "resources.chunk_size=3",
        "tracking=none",
    ):
        assert [s.study for s in plan_search(compose(*SMOKE, same)).settings] == [s.study for s in base], same


def test_every_categorical_choice_is_validated_before_anything_runs(tmp_path, capsys):
    results = tmp_path / "r"
    code = sweep_main(
        [
            "search=search_width_threshold",
            "~search.axes.width",
            "search.kind=protocol",
            "++sweep.grid.width=[8]",
            "~sweep.grid.activation",
            "+search.axes.activation={type:categorical,choices:[relu,nope,tanh]}",
            f"results_dir={results}",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == EXIT_USAGE and len(err) == 1 and err[0].startswith("landscape-sweep: error: search.axes.activation:")
    ), err
    assert "'nope'" in err[0] and not results.exists()

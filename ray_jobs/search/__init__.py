"""Adaptive searches (Optuna) through the service: ``landscape-sweep search=<name>``.

- :mod:`ray_jobs.search.spec`    the ``search:`` block (kind, axes, target, stages, budget, sampler)
- :mod:`ray_jobs.search.engine`  the Searcher: Optuna ask / tell with staged seeds and interval
  decisions; knows nothing of Ray (it proposes requests, whoever runs them tells it the records)
- :mod:`ray_jobs.search.trials`  requests, proposals, a trial's state, the in-process evaluator
- :mod:`ray_jobs.search.plan`    settings (one study each) and the cell of a trial
- :mod:`ray_jobs.search.result`  SearchOutcome (a study's answer), StudyResult (a study as run)
- :mod:`ray_jobs.search.driver`  the studies as a unit source of the shared execution loop, on the session
- :mod:`ray_jobs.search.report`  search.md, trials.csv, Optuna figures
"""


def is_search(cfg) -> bool:
    """Whether the composed config is a search (its sweep file has a ``search:`` block)."""
    return cfg.get("search") is not None

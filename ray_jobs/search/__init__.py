"""Adaptive searches (Optuna) through the service: ``landscape-sweep search=<name>``.

- :mod:`ray_jobs.search.spec`    the ``search:`` block (kind, axes, target, stages, budget, sampler)
- :mod:`ray_jobs.search.engine`  Optuna ask / tell with staged seeds and interval decisions;
  knows nothing of Ray (an evaluator runs its requests)
- :mod:`ray_jobs.search.plan`    settings (one study each) and the cell of a trial
- :mod:`ray_jobs.search.driver`  the search on the shared session and execution loop
- :mod:`ray_jobs.search.report`  search.md, trials.csv, Optuna figures
"""


def is_search(cfg) -> bool:
    """Whether the composed config is a search (its sweep file has a ``search:`` block)."""
    return cfg.get("search") is not None

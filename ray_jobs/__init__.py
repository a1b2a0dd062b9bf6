"""Orchestration of landscape sweeps: plan -> execute -> record -> report.

Every Ray, MLflow, Hydra and Parquet call of the project lives in this package, one
module per concern (docs/architecture.md has the picture; dependencies run one way):

- :mod:`ray_jobs.cli`          the `landscape-sweep` / `landscape-report` entry points
- :mod:`ray_jobs.sweep`        the grid driver; :mod:`ray_jobs.search` the Optuna searches
- :mod:`ray_jobs.session`      what every invocation shares: store, config, MLflow parent, report
- :mod:`ray_jobs.execution`    the Ray cluster, the one submit / ray.wait / retry loop (grids and
  searches), the invocation's phase timings
- :mod:`ray_jobs.worker`       the Ray task body: one unit -> records (calls landscape_core)
- :mod:`ray_jobs.validate`     check a composed config; one-line errors naming the field
- :mod:`ray_jobs.experiments`  one folder per experiment (or a plugin package), found by the registry
- :mod:`ray_jobs.plugins`      the entry-point group ``landscape_sweeps.experiments``, plugins' conf/
- :mod:`ray_jobs.report`       per-cell aggregation, tables, figures, the ReportLayout interface
- :mod:`ray_jobs.store`        the Parquet results store (atomic fragments, resume)
- :mod:`ray_jobs.tracking`     MLflow parent / child runs
- :mod:`ray_jobs.config`       compose the Hydra config (conf/ + sweeps/) once, in the driver
- :mod:`ray_jobs.plan`         grid -> cells -> work units with stable ids
"""

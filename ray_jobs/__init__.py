"""Orchestration of landscape sweeps: plan -> schedule -> record -> report.

Every Ray, MLflow, Hydra and Parquet call of the project lives in this package, one
module per concern:

- :mod:`ray_jobs.config`      compose the Hydra config (conf/ + sweeps/) once, in the driver
- :mod:`ray_jobs.validate`    check a composed config; one-line errors naming the field
- :mod:`ray_jobs.experiments` what each experiment's grid axes, columns and runner are
- :mod:`ray_jobs.plan`        grid -> cells -> work units with stable ids
- :mod:`ray_jobs.worker`      the Ray task body: one unit -> records (calls landscape_core)
- :mod:`ray_jobs.schedule`    Ray start/connect, submission, the ray.wait loop, progress
- :mod:`ray_jobs.store`       the Parquet results store (atomic fragments, resume)
- :mod:`ray_jobs.tracking`    MLflow parent / child runs
- :mod:`ray_jobs.report`      per-cell aggregation, Wilson intervals, table and figure
- :mod:`ray_jobs.cli`         the `landscape-sweep` / `landscape-report` entry points
"""

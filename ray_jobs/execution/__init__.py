"""Execution on Ray: the cluster, the one loop every driver runs units with, and phase timings.

- :mod:`ray_jobs.execution.cluster`  start of or connection to the Ray cluster, refused early
- :mod:`ray_jobs.execution.loop`     :class:`Execution` (submit / ray.wait / retry / close) and
  :func:`run_units`, the loop over a :class:`UnitSource` (a grid's units, a search's proposals)
- :mod:`ray_jobs.execution.timing`   :class:`Timings`: the invocation's phases, measured by the service
"""

from ray_jobs.execution.cluster import check_feasible, check_reachable, loopback_only, ray_cluster, session_owned
from ray_jobs.execution.loop import (
    Execution,
    ListSource,
    UnitOutcome,
    UnitSource,
    describe_failure,
    run_units,
    unit_task,
)
from ray_jobs.execution.timing import Timings

__all__ = [
    "Execution",
    "ListSource",
    "Timings",
    "UnitOutcome",
    "UnitSource",
    "check_feasible",
    "check_reachable",
    "describe_failure",
    "loopback_only",
    "ray_cluster",
    "run_units",
    "session_owned",
    "unit_task",
]

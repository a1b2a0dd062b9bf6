"""Dynamic String Sampling as a sweep experiment (issue #6; being written)."""

from __future__ import annotations

from ray_jobs.experiments import Experiment


class StringSampling(Experiment):
    """Freeman & Bruna (2017) Dynamic String Sampling (placeholder until wired)."""

    name = "string_sampling"

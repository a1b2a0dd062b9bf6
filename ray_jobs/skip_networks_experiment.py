"""Skip-to-output networks as a sweep experiment (issue #5; being written)."""

from __future__ import annotations

from ray_jobs.experiments import Experiment


class SkipNetworks(Experiment):
    """Nguyen, Mukkamala & Hein (2019) skip networks (placeholder until wired)."""

    name = "skip_networks"

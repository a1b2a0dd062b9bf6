"""The width_threshold experiment: ``experiment.py`` (adapter to landscape_core), ``layout.py`` (its report)."""

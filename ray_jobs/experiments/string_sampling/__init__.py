"""The string_sampling experiment: ``experiment.py`` (adapter to landscape_core), ``layout.py`` (its report)."""

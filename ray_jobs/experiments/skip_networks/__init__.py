"""The skip_networks experiment: ``experiment.py`` (adapter to landscape_core), ``layout.py`` (its report)."""

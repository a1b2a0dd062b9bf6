"""The teacher_student experiment: ``experiment.py`` (adapter to landscape_core), ``layout.py`` (its report)."""

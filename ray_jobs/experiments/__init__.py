"""The experiments of the service, one folder each.

- :mod:`ray_jobs.experiments.base`      the Experiment interface
- :mod:`ray_jobs.experiments.grid`      grid expansion and its validation
- :mod:`ray_jobs.experiments.registry`  experiments found by entry point or folder, imported on first use
- ``<name>/experiment.py``               the adapter to ``landscape_core`` (axes, columns, cells, run)
- ``<name>/layout.py``                   its report layout (``LAYOUT``: a ReportLayout subclass)

This package imports nothing by itself, so that importing one experiment loads no other.
"""

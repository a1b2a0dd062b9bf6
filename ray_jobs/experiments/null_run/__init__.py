"""The null_run experiment: no work, one deterministic record per seed at once (scale benchmarks of the service)."""

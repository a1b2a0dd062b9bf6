"""Landscape probes: monotone linear interpolation (Conjecture V.1) and filter-normalized 2-D
slices and their basins (Conjecture V.2)."""

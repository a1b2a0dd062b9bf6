"""Sub-optimal local minima at every width (Ding, Li & Sun 2019) and the deep linear control."""

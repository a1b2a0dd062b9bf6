"""Exponentially many minima of one sigmoid neuron (Auer, Herbster & Warmuth 1995, Theorem 3.4)."""

"""The single-neuron activation table (survey Proposition IV.1, Figure 2) as a sweep experiment."""

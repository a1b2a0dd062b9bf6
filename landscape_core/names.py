"""Names the core and the service share, in a module that imports nothing (no torch).

The service validates configs and lays out reports with these names without importing
torch; the core's modules use the same tuples (:data:`ACTIVATION_NAMES` orders
:data:`landscape_core.networks.ACTIVATIONS`, a test keeps the two equal).
"""

#: outcomes of a run, in report order (teacher-student's statuses; other experiments
#: record a subset of them)
RUN_STATUSES = ("global", "spurious", "saddle", "not_converged", "diverged")

#: activations of :mod:`landscape_core.networks`, in its order
ACTIVATION_NAMES = ("relu", "leaky_relu", "sigmoid", "tanh", "softplus", "swish", "silu", "gelu", "quadratic", "linear")

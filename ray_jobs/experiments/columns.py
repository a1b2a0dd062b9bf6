"""Parquet columns shared by the experiments whose runs train an MLP with
``landscape_core.training`` on a ``landscape_core.data`` set (width threshold, landscape
probes): the network's size and output, the data set's settings and the optimizer's (the
last also alone, :data:`OPTIMIZER_COLUMNS`: wide_bad_minima), as the
core's records carry them (``landscape_core.data.data_columns``, the optimizer options).
An experiment splices :data:`TRAINED_MLP_COLUMNS` into its ``columns`` at the place it wants
them (the order is the Parquet schema's)."""

from __future__ import annotations

#: the optimizer's settings (``conf/optimizer``), as every experiment that trains records them
OPTIMIZER_COLUMNS: dict[str, str] = {
    "optimizer": "string",
    "optimizer_lr": "float64",
    "optimizer_momentum": "float64",
    "optimizer_nesterov": "bool",
    "optimizer_beta1": "float64",
    "optimizer_beta2": "float64",
    "optimizer_adam_eps": "float64",
    "optimizer_history": "int64",
    "optimizer_grad_tol": "float64",
    "optimizer_stop_loss": "float64",
    "optimizer_max_iterations": "int64",
    "optimizer_compact_every": "int64",
}

#: network size and output, loss, initialisation, data set, optimizer (in this order)
TRAINED_MLP_COLUMNS: dict[str, str] = {
    "num_params": "int64",
    "input_dim": "int64",
    "output_dim": "int64",
    "loss": "string",
    "init": "string",
    "output_bias": "bool",
    "data": "string",
    "data_input_dim": "int64",
    "data_output_dim": "int64",
    "data_classification": "bool",
    "data_teacher_width": "int64",
    "data_teacher_depth": "int64",
    "data_teacher_activation": "string",
    "data_noise": "float64",
    **OPTIMIZER_COLUMNS,
}

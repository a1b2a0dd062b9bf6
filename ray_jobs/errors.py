"""The one exception type the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid sweep configuration, detected before anything is scheduled or written.

    ``field`` is the dotted config path at fault (``sweep.grid.k``, ``protocol.step``,
    ``results_dir``...); ``message`` says what is wrong and what is allowed.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

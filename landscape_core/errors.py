"""Errors of the science core.

The core checks its options itself and raises :class:`OptionError` for an invalid one, so
that a caller (the service, a notebook) can tell which option is wrong without parsing
the message: ``exc.field`` is the option's name, ``exc.message`` what is wrong with it.
``str(exc)`` is ``"field: message"``, and ``OptionError`` is a ``ValueError``, so code
that catches ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["OptionError"]


class OptionError(ValueError):
    """An invalid option of a science routine: ``field`` is the option's name as the core
    knows it (``step``, ``data.n_samples``, ``optimizer.lr``, ``probes.rank_rtol``...),
    ``message`` what is wrong and what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

"""Figures of reports: matplotlib on the Agg backend, written to files, never shown."""

from __future__ import annotations

from pathlib import Path

from ray_jobs.errors import StorageError


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (reports are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parent directories created), close it, return ``path``;
    :class:`~ray_jobs.errors.StorageError` naming ``path`` when the write fails."""
    import matplotlib.pyplot as plt

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    except OSError as exc:  # a full disk: matplotlib's write error names no file
        raise StorageError(path, exc.strerror or str(exc)) from exc
    finally:
        plt.close(fig)
    return path

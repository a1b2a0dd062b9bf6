"""Which code produced a row: ``code_version`` = git description of the checkout (with a
``-dirty`` suffix for uncommitted changes), or the installed package version."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata

from ray_jobs.config import PROJECT_ROOT


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe --always --dirty`` of the project, else ``landscape-sweeps <version>``."""
    try:
        described = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if described:
            return f"git:{described}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        version = metadata.version("landscape-sweeps")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"landscape-sweeps {version} (no git commit)"

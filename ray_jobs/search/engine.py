
from __future__ import annotations

import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna

from landscape_core.statistics import wilson_interval as _wilson
from ray_jobs.search.spec import SearchSpec


def wilson_interval(successes: int, runs: int, confidence: float) -> tuple[float, float]:
    """The report's Wilson interval; (0, 1) before any run (nothing known yet)."""
    return (0.0, 1.0) if runs == 0 else _wilson(successes, runs, confidence)



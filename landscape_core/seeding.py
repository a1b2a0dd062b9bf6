"""Stable seeding: every random draw of a run comes from a generator seeded from what
defines the run's distribution and its seed, never from chunking, task or device."""

from __future__ import annotations

import hashlib

import torch


def stable_seed(*parts: object) -> int:
    """A 63-bit integer derived from ``parts`` by BLAKE2b of their ``repr``.

    Python's ``hash`` is salted per process; this is not, so the same parts give the
    same seed on every machine and in every process.
    """
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def run_generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`stable_seed` of ``parts``.

    Draws are made on the CPU and then moved, so a run's initial point is bitwise the
    same whichever device later trains it.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(stable_seed(*parts))
    return generator

"""Per-job seeds: stable across runs and machines, and free of heavy imports (the Snakefile uses it)."""

from __future__ import annotations

import hashlib


def derive_seed(base: int, *keys: str) -> int:
    """A stable 31-bit seed from the base seed and the job's wildcards."""
    text = "/".join([str(base), *keys])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF

"""Example plugin blocks for the DII recipes."""

from __future__ import annotations

#: hook name without ``register_`` -> block classes
BLOCKS: dict[str, list[type]] = {}

"""Dataset sources: named, shipped or generated data for demos, tests and benchmarks.

``load(**options) -> dict[str, numpy.ndarray]``; nothing is downloaded at run time.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, ClassVar

import numpy as np

from .base import Block, not_implemented


class DatasetSource(Block):
    """Base of dataset sources."""

    kind: ClassVar[str] = "dataset"
    summary: ClassVar[str] = ""

    def load(self, **options: Any) -> dict[str, np.ndarray]:
        raise not_implemented(self, "load")


def shipped_file(filename: str):
    """Path-like handle of a data file shipped in ``infoblocks/blocks/datasets_files``."""
    return resources.files("infoblocks.blocks").joinpath("datasets_files", filename)


__all__ = ["DatasetSource", "shipped_file"]

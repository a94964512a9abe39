"""The 8×8 handwritten digits shipped with infoblocks (1,797 images × 64 pixels, labels 0–9).

Source: "Optical Recognition of Handwritten Digits" (E. Alpaydin, C. Kaynak), UCI Machine
Learning Repository, https://doi.org/10.24432/C50P49, licensed CC BY 4.0.  The 1,797-image
test subset is the one distributed with scikit-learn; it was extracted once and stored as a
compressed ``.npz`` of ``uint8`` (pixel counts 0–16), so loading needs numpy only.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from .datasets import DatasetSource, shipped_file

#: file under ``infoblocks/blocks/datasets_files``
DIGITS_FILE = "digits.npz"


@attrs.define
class Digits(DatasetSource):
    """``load() -> {"data": (1797, 64) float32 in [0, 16], "target": (1797,) int64}``."""

    name: ClassVar[str] = "digits"
    summary: ClassVar[str] = "8x8 UCI handwritten digits, 1,797 x 64 with labels 0-9 (CC BY 4.0)"

    def load(self, **options) -> dict[str, np.ndarray]:
        with shipped_file(DIGITS_FILE).open("rb") as handle:
            archive = np.load(handle)
            return {"data": archive["data"].astype(np.float32),
                    "target": archive["target"].astype(np.int64)}


__all__ = ["Digits"]

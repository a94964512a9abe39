"""The held-out split of the MI recipes as a global: ``random_split`` is a relation whose
``compute(x)`` returns the item indices of one part of a seeded random permutation."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np
import torch

from ..errors import ValidationError
from ..relations import Relation
from ..validators import non_negative_int, one_of


def _fraction(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValidationError(f"`{attribute.name}` must be in [0, 1) (0: no held-out set), "
                              f"got {value!r}.")


def split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    """``(n_train, n_test)`` with n_test = round(test_fraction · n)."""
    n_test = int(round(test_fraction * n))
    return n - n_test, n_test


@attrs.define
class RandomSplit(Relation):
    """Indices of one ``part`` of a random split of the n items of the input (any array with a
    leading item axis): the permutation of ``numpy.random.default_rng(seed)``; the first
    round(test_fraction · n) items are ``"test"``, the rest ``"train"``; ``"all"`` is the whole
    permutation.  Returns a long tensor (a per-item global, e.g. a sampler's ``index_key``)."""

    name: ClassVar[str] = "random_split"
    lazy_rows: ClassVar[bool] = True  # reads only len(data): rows on disk stay there
    test_fraction: float = attrs.field(default=0.5, validator=_fraction)
    part: str = attrs.field(default="train", validator=one_of("train", "test", "all"))
    seed: int = attrs.field(default=0, validator=non_negative_int)

    def compute(self, data: Any, **kwargs: Any) -> torch.Tensor:
        n = len(data)
        _, n_test = split_sizes(n, self.test_fraction)
        order = torch.from_numpy(np.random.default_rng(self.seed).permutation(n))
        if self.part == "test":
            return order[:n_test]
        return order[n_test:] if self.part == "train" else order


__all__ = ["RandomSplit", "split_sizes"]

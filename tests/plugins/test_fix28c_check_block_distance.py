"""author29-7: check_block on a distance that returns negative values raised a bare
`AssertionError: distances must be finite, >= 0`, naming neither the block nor the entry."""

from typing import ClassVar

import attrs
import pytest
import torch

from infoblocks.blocks.distances import Distance
from infoblocks.plugins.testing import check_block


@attrs.define(frozen=True)
class ModeDistance(Distance):
    """Euclidean, or a broken variant of it (`mode`)."""

    name: ClassVar[str] = "f28c_mode_distance"
    mode: str = "ok"

    def pairwise(self, a, b=None):
        d = torch.cdist(a, a if b is None else b)
        if self.mode == "negative":  # a similarity passed as a distance
            return -d
        if self.mode == "nan":
            return d.index_put((torch.tensor([1]), torch.tensor([2])), torch.tensor(float("nan")))
        if self.mode == "row_sums":
            return d.sum(1)
        return d

    def paired(self, a, b):
        d = (a - b).norm(dim=1)
        return d + 1.0 if self.mode == "shifted_pairs" else d


def test_a_good_distance_passes():
    assert check_block(ModeDistance).mode == "ok"


@pytest.mark.parametrize("mode, message", [
    ("negative", r"distance 'f28c_mode_distance' \(.*test_fix28c_check_block_distance"
                 r"\.ModeDistance\): pairwise\(a, b\) returned 20 of 20 values that are NaN, inf "
                 r"or negative \(the first d\[0, 0\] = -[0-9.]+\) .*a similarity s is not a "
                 r"distance \(use 1 - s"),
    ("nan", r"distance 'f28c_mode_distance' .*returned 1 of 20 .*the first d\[1, 2\] = nan"),
    ("row_sums", r"distance 'f28c_mode_distance' .*pairwise\(a, b\) of a \(5, 3\) and b \(4, 3\)"
                 r" must return the \(n, m\) = \(5, 4\) distances, got \(5,\)"),
    ("shifted_pairs", r"distance 'f28c_mode_distance' .*paired\(a, b\)\[0\] = [0-9.]+ but "
                      r"pairwise\(a, b\)\[0, 0\] = [0-9.]+: paired\(a, b\)\[i\] must be"),
])
def test_a_bad_distance_is_named_with_the_entry_and_the_fix(mode, message):
    with pytest.raises(AssertionError, match=message):
        check_block(ModeDistance, {"mode": mode})

"""DII refuses a space B without neighbours and steps of two points, where it fitted and
returned a DII that means nothing (baduser19 F9)."""

import numpy as np
import pytest

from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes import DII

A = np.random.default_rng(0).normal(size=(40, 4))


def test_a_constant_data_b_is_refused():
    # fitted before: DII 0.92, the weights wandering from their start
    with pytest.raises(ValidationError, match="`data_B` is the same row for all 40 points"):
        DII(epochs=1).fit(A, np.ones((40, 2)))
    DII(epochs=1).fit(A, np.c_[A[:, 0], np.ones(40)])  # one constant column of B is fine


@pytest.mark.parametrize("distances", [np.ones((40, 40)) - np.eye(40), np.zeros((40, 40))],
                         ids=["ones", "zeros"])
def test_distances_b_that_are_the_same_for_every_pair_are_refused(distances):
    with pytest.raises(ValidationError, match="`distances_B` is [01] for every pair of points"):
        DII(epochs=1).fit(A, distances_B=distances)


def test_steps_of_two_points_are_refused():
    # each point's only neighbour is the other: rank 1 always, the weights exactly unchanged
    with pytest.raises(ValidationError, match=r"Each step sees only 2 points \(2 points / 1 "
                                              r"batches\).*at least two neighbours"):
        DII(epochs=1).fit(A[:2], A[:2, :2])
    with pytest.raises(ValidationError, match=r"only 2 points \(40 points / 20 batches\)"):
        DII(epochs=1, lambda_init=1.0, batches_per_epoch=20).fit(A, A[:, :2])
    assert not np.allclose(DII(epochs=2).fit(A[:3], A[:3, :2]).weights_, 0.1)


def test_a_boolean_mask_of_features_is_named_with_the_conversion():
    dii = DII(epochs=1).fit(A, A[:, :2])
    with pytest.raises(ValidationError, match=r"a boolean mask; pass its indices, "
                                              r"np.flatnonzero\(mask\)"):
        dii.information_imbalance(features=np.array([True, False, True, True]))
    assert dii.information_imbalance(features=np.flatnonzero([True, False, True, True])) \
        == dii.information_imbalance(features=[0, 2, 3])

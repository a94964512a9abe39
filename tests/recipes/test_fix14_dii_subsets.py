"""DII feature subsets given in a way that did nothing or something else than meant (user13):
a repeated index in ``information_imbalance(features=...)``, an ``n_best`` (the beam width)
larger than any size's number of subsets, read as a number of features."""

from __future__ import annotations

import numpy as np
import pytest

from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes import DII


@pytest.fixture(scope="module")
def dii():
    a = np.random.default_rng(0).normal(size=(40, 4))
    return DII(epochs=1).fit(a, a[:, :2])


def test_information_imbalance_of_a_repeated_feature_is_refused(dii):
    # was: [0, 0] computed the imbalance of feature 0 alone, silently
    with pytest.raises(ValidationError, match=r"names feature\(s\) \[0\] more than once"):
        dii.information_imbalance(features=[0, 0])
    assert dii.information_imbalance(features=[1, 0]) == dii.information_imbalance(features=[0, 1])


def test_select_features_n_best_beyond_every_subset_is_refused(dii):
    # 4 weights: at most C(4, 2) = 6 subsets of one size; n_best = 10 read as "10 features"
    with pytest.raises(ValidationError, match=r"`n_best` = 10 is the beam width.*at most 6"):
        dii.select_features(n_best=10)

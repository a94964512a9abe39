"""warm_start=True on data with another number of rows, in memory as after load (author29-5).

Before, an in-memory ParametricUMAP refused a warm fit on more rows ("warm_start=True continues
the fitted network on data of the same shape ... Set warm_start=False") while the same model
saved and loaded took it."""

from __future__ import annotations

import pytest
import torch

from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes import ParametricUMAP

pytestmark = pytest.mark.filterwarnings("ignore:parametric_umap. after the init phase")


def _data(n: int):
    from infoblocks.plugins import get_registry

    return get_registry().build("dataset", "digits").load()["data"][:n]


def _umap(**options) -> ParametricUMAP:
    return ParametricUMAP(layout_epochs=2, epochs=1, init_epochs=1, transform_epochs=0, seed=0,
                          **options)


def test_in_memory_warm_fit_takes_more_rows():
    recipe = _umap(warm_start=True).fit(_data(150))
    recipe.fit(_data(190))
    assert recipe.embedding_.shape == (190, 2)
    assert recipe.routine_.dataset.n_items == 190
    # the new routine's network started from the fitted one, not afresh: it differs from a
    # cold fit on the same rows with the same seed, which would start from the seed's weights
    cold = _umap().fit(_data(190)).routine_.models["main"].state_dict()
    warm = recipe.routine_.models["main"].state_dict()
    assert any(not torch.equal(warm[k], cold[k]) for k in warm)


def test_warm_fit_on_other_features_is_refused_with_the_fix():
    recipe = _umap(warm_start=True).fit(_data(150))
    with pytest.raises(ValidationError, match=r"warm_start=True continues the fitted network, "
                       r"fitted on 64 features; `X` has 32\. Set warm_start=False"):
        recipe.fit(_data(150)[:, :32])

"""A model added under [models] beside UMAP's own keeps its own sizes (author29-6).

Before, every [models.*] table got the encoder's in_dim (the data's width) and out_dim
(n_components) where it left them out: a decoder block's own `in_dim = 2` default became 64 and
its first forward failed ("mat1 and mat2 shapes cannot be multiplied (3500x2 and 64x64)")."""

from __future__ import annotations

import types
from typing import ClassVar

import attrs
import pytest
import torch

from infoblocks.blocks.errors import ConfigError
from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.blocks.models import Model
from infoblocks.plugins import hookimpl
from infoblocks.recipes import ParametricUMAP

# (one init epoch on 150 rows leaves the network far from the layout: said, not the point here)
pytestmark = pytest.mark.filterwarnings("ignore:parametric_umap. after the init phase")


@attrs.define
class Decoder(Model):
    """Linear map from the embedding back to the data; in_dim defaults to a 2-D embedding."""
    name: ClassVar[str] = "fix28d_sized_decoder"
    in_dim: int = 2
    out_dim: int = attrs.field(kw_only=True)

    def build(self):
        return torch.nn.Linear(self.in_dim, self.out_dim)


@attrs.define(kw_only=True)
class Reconstruction(Loss):
    name: ClassVar[str] = "fix28d_sized_recon"
    consumes: ClassVar[frozenset[str]] = frozenset({"data"})

    def required_models(self):
        return frozenset({"main", "decoder"})

    def __call__(self, batch, models, state):
        x = batch["data"].float()
        return LossOutput(torch.nn.functional.mse_loss(models["decoder"](models["main"](x)), x),
                          {})


@pytest.fixture
def plugin(infoblocks_plugin):
    module = types.ModuleType("fix28d_sized")
    module.register_models = hookimpl(lambda: [Decoder])
    module.register_losses = hookimpl(lambda: [Reconstruction])
    return infoblocks_plugin(module, name="fix28d_sized")


def _data(n: int = 150):
    from infoblocks.plugins import get_registry

    return get_registry().build("dataset", "digits").load()["data"][:n]


def _umap(decoder: dict) -> ParametricUMAP:
    return ParametricUMAP(
        layout_epochs=2, epochs=1, init_epochs=1, transform_epochs=0, seed=0,
        models={"decoder": {"name": "fix28d_sized_decoder", **decoder}},
        phases=[{"name": "main", "trainable": ["main", "decoder"], "loss": {
            "name": "compound", "weights": [1.0, 1.0],
            "losses": [{"name": "relation"}, {"name": "fix28d_sized_recon"}]}}])


def test_added_model_keeps_its_own_in_dim(plugin):
    recipe = _umap({"out_dim": 64}).fit(_data())
    decoder = recipe.routine_.models["decoder"]
    assert tuple(decoder.weight.shape) == (64, 2)  # (out, in): its own in_dim = 2, not 64
    # the recipe's own models still get the data's sizes
    assert recipe.transform(_data(5), refine=False).shape == (5, 2)


def test_added_model_without_its_required_size_is_named(plugin):
    with pytest.raises(ConfigError, match=r"field `out_dim` is required: add `out_dim = \.\.\.` "
                       r"to the table at parametric_umap\.models\.decoder"):
        _umap({}).fit(_data())

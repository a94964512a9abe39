"""A model a phase does not train but whose parameters get a gradient is named (author29-3).

Before, ParametricUMAP with a ``[models.decoder]`` read by a plugin reconstruction loss in the
main phase (whose ``trainable = ["main"]`` keeps the layout fixed) never trained the decoder:
reconstruction MSE 57.8 against 11.8 with ``trainable = ["main", "decoder"]``, no message."""

from __future__ import annotations

import types
import warnings
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks.contracts import NoGradientWarning, UntrainedModelWarning
from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.blocks.models import Model
from infoblocks.plugins import hookimpl
from infoblocks.recipes import ParametricUMAP


class _Linear(torch.nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(in_dim, out_dim)

    def forward(self, y):
        return self.lin(y)


@attrs.define
class Decoder(Model):
    name: ClassVar[str] = "fix28d_decoder"
    in_dim: int = 2
    out_dim: int | None = None

    def build(self):
        return _Linear(self.in_dim, self.out_dim)


@attrs.define(kw_only=True)
class Reconstruction(Loss):
    name: ClassVar[str] = "fix28d_recon"
    reports: ClassVar[frozenset[str]] = frozenset({"recon"})
    consumes: ClassVar[frozenset[str]] = frozenset({"data"})

    def required_models(self):
        return frozenset({"main", "decoder"})

    def __call__(self, batch, models, state):
        x = batch["data"].float()
        value = torch.nn.functional.mse_loss(models["decoder"](models["main"](x)), x)
        return LossOutput(value, {"recon": value.detach()})


@pytest.fixture
def plugin(infoblocks_plugin):
    module = types.ModuleType("fix28d_recon_plugin")
    module.register_models = hookimpl(lambda: [Decoder])
    module.register_losses = hookimpl(lambda: [Reconstruction])
    return infoblocks_plugin(module, name="fix28d_recon_plugin")


def _data(n: int = 200) -> np.ndarray:
    from infoblocks.plugins import get_registry

    return get_registry().build("dataset", "digits").load()["data"][:n]


def _umap(**main):
    return ParametricUMAP(
        layout_epochs=2, epochs=2, init_epochs=1, transform_epochs=0, seed=0,
        models={"decoder": {"name": "fix28d_decoder", "in_dim": 2, "out_dim": 64}},
        phases=[{"name": "main", **main, "loss": {
            "name": "compound", "weights": [1.0, 1.0],
            "losses": [{"name": "relation"}, {"name": "fix28d_recon"}]}}])


def _fit(recipe):
    x = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recipe.fit(x)
    return [str(w.message) for w in caught if issubclass(w.category, UntrainedModelWarning)]


def test_decoder_left_out_of_trainable_is_named(plugin):
    recipe = _umap()
    initial = {k: v.clone() for k, v in recipe.build(_data()).models["decoder"]
               .state_dict().items()}
    found = _fit(recipe)
    assert len(found) == 1  # the main phase's first step only (not the layout, not init)
    assert found[0].startswith(
        "Phase 'main': `models.decoder` (model 'fix28d_decoder', plugin 'fix28d_recon_plugin') "
        "got a gradient from loss 'fix28d_recon' (plugin 'fix28d_recon_plugin') on the first "
        "step (2 parameter tensor(s)), but the phase does not train it "
        "(`phases.main.trainable` = ['main'])")
    assert "`trainable = ['main', 'decoder']`" in found[0]
    # what it warns about: the decoder is still at its initialisation
    after = recipe.routine_.models["decoder"].state_dict()
    assert all(torch.equal(after[k], initial[k]) for k in initial)


def test_trained_decoder_is_not_named_and_moves(plugin):
    recipe = _umap(trainable=["main", "decoder"])
    initial = {k: v.clone() for k, v in recipe.build(_data()).models["decoder"]
               .state_dict().items()}
    assert _fit(recipe) == []
    after = recipe.routine_.models["decoder"].state_dict()
    assert not torch.equal(after["lin.weight"], initial["lin.weight"])


def test_default_umap_fit_names_nothing():
    # the layout (read detached as the anchor in the main phase, a target under no_grad in
    # init) gets no gradient there, and its own phase's gradient is not carried over
    x = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ParametricUMAP(layout_epochs=2, epochs=2, init_epochs=2, transform_epochs=0,
                       seed=0).fit(x)
    assert [str(w.message) for w in caught
            if issubclass(w.category, (UntrainedModelWarning, NoGradientWarning))] == []

"""A model that a phase trains but whose parameters get no gradient is named (author27-B).

Before, an InfoMax encoder whose forward ended in ``.detach()`` trained silently: only the
critic learnt, the encoder stayed at its initialisation, no message."""

from __future__ import annotations

import types
import warnings
from typing import ClassVar

import attrs
import pytest
import torch
from torch import nn

from infoblocks.blocks.contracts import NoGradientWarning
from infoblocks.blocks.embedding.layout import FreePositions
from infoblocks.blocks.losses import PositionLoss
from infoblocks.blocks.models import MLP, Model
from infoblocks.blocks.phases import TrainingPhase
from infoblocks.blocks.routine import Routine
from infoblocks.blocks.samplers import ItemSampler
from infoblocks.plugins import hookimpl
from infoblocks.recipes.infomax import InfoMax, sanity_problem


class _Detached(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        return torch.tanh(self.lin(x)).detach()  # the bug: no gradient reaches lin


@attrs.define
class DetachedEncoder(Model):
    name: ClassVar[str] = "fix27b_detached_encoder"
    in_dim: int = 1
    out_dim: int = 1

    def build(self):
        return _Detached(self.in_dim, self.out_dim)


def _features():
    return sanity_problem(0, n=200)[1]


def _no_gradient(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, NoGradientWarning)]


def test_detached_plugin_encoder_is_named(infoblocks_plugin):
    module = types.ModuleType("fix27b_detached")
    module.register_models = hookimpl(lambda: [DetachedEncoder])
    infoblocks_plugin(module, name="fix27b_detached")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = InfoMax(n_components=2, epochs=2, models={
            "encoder": {"name": "fix27b_detached_encoder"}}).fit(_features())
    found = _no_gradient(caught)
    assert len(found) == 1  # the first step only
    assert found[0].startswith(
        "Phase 'train': `models.encoder` (model 'fix27b_detached_encoder', plugin "
        "'fix27b_detached') has 2 trainable parameter tensor(s) and none got a gradient from "
        "loss 'infomax' on the first step")
    assert "`phases.train.trainable` (= ['critic'])" in found[0]
    # what it warns about: the encoder never moved (its weights are still the initial ones)
    assert all(p.grad is None for p in model.routine_.models["encoder"].parameters())


@pytest.mark.parametrize("options", [{}, {"linear_lr": 0.0}, {"residual_init": 0.0},
                                     {"critic": "joint", "epochs": 1}])
def test_built_in_infomax_settings_do_not_warn(options):
    # linear_lr = 0 freezes the linear path (requires_grad False), residual_init = 0 starts the
    # residual's last layer at zero (zero gradients below it, not None): the encoder trains
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        InfoMax(n_components=2, **{"epochs": 2, **options}).fit(_features())
    assert _no_gradient(caught) == []


def _layout_routine(trainable):
    # phase 1 of a two-model routine: `main` learns the positions of the `layout` model, read
    # under no_grad (position's target_model) — the layout is held fixed here on purpose
    data = torch.randn(40, 3)
    loss = PositionLoss(model="main", input="data", target_model="layout")
    phase = TrainingPhase(name="fit", sampler=ItemSampler(batch_size=20), loss=loss, epochs=1,
                          trainable=trainable)
    models = {"main": MLP(in_dim=3, out_dim=2, hidden_dims=(8,)),
              "layout": FreePositions(n_items=40, init=None)}
    return Routine(dataset={"data": data}, models=models, phases=[phase], seed=0)


def test_a_model_read_under_no_grad_warns_unless_the_phase_lists_trainable():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _layout_routine(None).train()
    found = _no_gradient(caught)
    assert len(found) == 1 and "`models.layout`" in found[0] and "loss 'position'" in found[0]
    assert "`phases.fit.trainable` (= ['main'])" in found[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _layout_routine(["main"]).train()
    assert _no_gradient(caught) == []

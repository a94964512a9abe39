"""The sampler contract (docs/plugins.md, "When a batch is drawn"): the engine iterates
``batches(state)`` lazily, so batch k is drawn after step k - 1's optimizer step and a sampler
that reads ``state.models`` (a miner) sees the weights its batch is trained with (author25-5:
relied on by a PML-style miner written as a sampler; measured, not documented)."""

from __future__ import annotations

import types
from typing import ClassVar

import attrs
import numpy as np
import torch

from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.blocks.samplers import ItemSampler
from infoblocks.plugins import hookimpl
from infoblocks.plugins.registry import recipe_from_dict

DRAWN: list[torch.Tensor] = []
TRAINED: list[torch.Tensor] = []


def _weights(state_or_models) -> torch.Tensor:
    models = getattr(state_or_models, "models", state_or_models)
    return torch.cat([p.detach().reshape(-1) for p in models["main"].parameters()]).clone()


@attrs.define
class WeightsAtDraw(ItemSampler):
    """items batches; records the network's weights when each batch is drawn."""
    name: ClassVar[str] = "f25c_weights_at_draw"

    def batches(self, state):
        for batch in super().batches(state):
            DRAWN.append(_weights(state))  # (a miner would encode the batch here)
            yield batch


@attrs.define(kw_only=True)
class WeightsAtStep(Loss):
    """Squared output; records the weights each batch is trained with."""
    name: ClassVar[str] = "f25c_weights_at_step"
    reports: ClassVar[frozenset[str]] = frozenset()
    consumes: ClassVar[frozenset[str]] = frozenset({"data"})
    model: str = "main"

    def __call__(self, batch, models, state):
        TRAINED.append(_weights(models))
        return LossOutput(models[self.model](batch["data"]).pow(2).mean(), {})


def test_batch_k_is_drawn_after_step_k_minus_1(infoblocks_plugin):
    module = types.ModuleType("f25c_lazy")
    module.register_samplers = hookimpl(lambda: [WeightsAtDraw])
    module.register_losses = hookimpl(lambda: [WeightsAtStep])
    infoblocks_plugin(module, name="f25c_lazy")
    DRAWN.clear(), TRAINED.clear()
    recipe_from_dict({
        "recipe": "routine", "arrays": ["data"], "output_model": "main", "seed": 0,
        "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [4]}},
        "phases": [{"name": "t", "epochs": 2, "learning_rate": 0.1,
                    "sampler": {"name": "f25c_weights_at_draw", "batch_size": 8},
                    "loss": "f25c_weights_at_step"}]}).fit(
        np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32))
    assert len(DRAWN) == len(TRAINED) == 8  # 2 epochs x 4 batches
    for k in range(8):  # drawn with the weights it is trained with: after the last step
        assert torch.equal(DRAWN[k], TRAINED[k]), k
    for k in range(1, 8):  # and every step moved them (an epoch drawn up front would not see it)
        assert not torch.equal(TRAINED[k], TRAINED[k - 1]), k

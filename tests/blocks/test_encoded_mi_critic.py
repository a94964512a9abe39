"""encoded_mi with its defaults names the encoder as its bound's critic; that fails before
the first step with a message naming the fix (it was torch's "Sequential.forward() takes 2
positional arguments" from deep inside the bound, fix23a's note)."""

from __future__ import annotations

import numpy as np
import pytest

from infoblocks.blocks import Routine, TrainingPhase
from infoblocks.blocks.errors import ContractError
from infoblocks.blocks.models import MLP
from infoblocks.plugins.registry import get_registry


def _routine(bound):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    x = (np.eye(3)[labels] + 0.1 * rng.normal(size=(60, 3))).astype(np.float32)
    models = {"main": MLP(in_dim=3, out_dim=2, hidden_dims=(8,))}
    if bound.get("critic") == "critic":
        models["critic"] = get_registry().build(
            "model", {"name": "separable_critic", "x_dim": 2, "y_dim": 3})
    return Routine(dataset={"data": x, "labels": labels}, models=models, seed=0, phases=[
        TrainingPhase(name="fit", epochs=20, learning_rate=0.01, loss={
            "name": "encoded_mi", "classes": 3, "bound": bound},
            sampler={"name": "items", "batch_size": 60})])


def test_the_encoder_as_its_own_critic_is_refused_before_training():
    routine = _routine({"name": "infonce_loss"})
    with pytest.raises(ContractError, match=r"encoded_mi: its bound 'infonce_loss' scores pairs "
                       r"with the critic 'main', the encoder itself.*critic = \"critic\""):
        routine.train()
    assert len(routine.history) == 0


def test_with_a_critic_of_its_own_it_trains():
    routine = _routine({"name": "infonce_loss", "critic": "critic"}).train()
    mi = [row["mi"] for row in routine.history.rows]
    assert mi[-1] > mi[0] and mi[-1] > 0.5 * np.log(3)  # three classes: at most log 3

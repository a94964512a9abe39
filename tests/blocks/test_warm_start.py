"""``train(warm_start=True)`` continues a run: two warm runs of E epochs at a constant learning
rate equal one run of 2E epochs (weights, Adam's state, the sampler's draws, the history)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infoblocks.blocks import Routine, TrainingPhase
from infoblocks.blocks.data import intra_op_threads
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.models import MLP


def _routine(epochs: int) -> Routine:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, 4)) * [3, 2, 1, .5]).astype(np.float32)
    data = {"data": x, "positions": np.tanh(x[:, :2]).astype(np.float32)}
    phase = TrainingPhase(name="fit", epochs=epochs, loss="position", learning_rate=1e-2,
                          sampler={"name": "items", "batch_size": 50})
    return Routine(dataset=data, phases=[phase], seed=2,
                   models={"main": MLP(in_dim=4, out_dim=2, hidden_dims=(16,))})


def test_two_warm_runs_equal_one_run_of_twice_the_epochs():
    with intra_op_threads(1):
        once = _routine(6).train()
        twice = _routine(3).train()
        first = {k: v.clone() for k, v in twice.models.state_dict().items()}
        twice.train(warm_start=True)
    for key, value in once.models.state_dict().items():
        assert torch.equal(value, twice.models.state_dict()[key]), key
        assert not torch.equal(first[key], value), f"{key} did not train on"
    assert [r["epoch"] for r in twice.history.rows] == list(range(6))
    np.testing.assert_array_equal(twice.history.column("loss"), once.history.column("loss"))


def test_a_cold_second_run_restarts_the_optimizer_and_differs():
    with intra_op_threads(1):
        once = _routine(6).train()
        cold = _routine(3).train().train()
    weights = once.models.state_dict()
    assert any(not torch.equal(v, weights[k]) for k, v in cold.models.state_dict().items())


def test_warm_start_and_resume_together_is_a_clear_error(tmp_path):
    routine = _routine(1)
    with pytest.raises(ValidationError, match="pass one of them"):
        routine.train(warm_start=True, resume=True, checkpoint=tmp_path)
    with pytest.raises(ValidationError, match="warm_start"):
        routine.train(warm_start="yes")

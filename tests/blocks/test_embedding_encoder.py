"""The embedding encoder (standardised inputs, optional PCA) and the cached front end."""

import numpy as np
import pytest
import torch

from infoblocks.blocks.data import Dataset
from infoblocks.blocks.embedding import (ModifiedCauchyTransform, NegativeEdgeSampler,
                                         RelationLoss, StandardizedMLP)
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.relations import SparseRelations
from infoblocks.blocks.state import TrainState


def _state(x, models=None, **globals_):
    return TrainState(models=torch.nn.ModuleDict(models or {}), dataset=Dataset(data=x),
                      globals=globals_, device=torch.device("cpu"),
                      generator=torch.Generator().manual_seed(0), rng=np.random.default_rng(0))


def _fitted(x, pca_dims):
    torch.manual_seed(0)
    module = StandardizedMLP(in_dim=x.shape[1], out_dim=2, hidden_dims=(8,),
                             pca_dims=pca_dims).build()
    module.on_phase_start(_state(x))
    return module


@pytest.mark.parametrize("pca_dims", [None, 3])
def test_the_unit_of_the_data_does_not_reach_the_network(pca_dims):
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(200, 6)) * [5, 3, 2, 1, 1, .5] + 7).float()
    outputs = [_fitted(x * unit, pca_dims)(x * unit) for unit in (1.0, 1 / 16, 1000.0)]
    front = _fitted(x, pca_dims).front_end(x)
    # centred, one scale: the entries' root mean square is 1
    assert float(front.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-5)
    assert front.shape == (200, 6 if pca_dims is None else 3)
    for other in outputs[1:]:
        assert torch.allclose(other, outputs[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValidationError, match="pca_dims"):
        StandardizedMLP(in_dim=4, out_dim=2, pca_dims=5)


def test_cached_front_end_outputs_give_the_models_loss_and_gradient():
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(80, 10))).float()
    module = _fitted(x, 4)
    rows = torch.as_tensor(rng.integers(0, 80, 300))
    graph = SparseRelations(rows, torch.as_tensor(rng.integers(0, 80, 300)),
                            torch.rand(300), (80, 80))
    state = _state(x, {"main": module}, graph=graph)
    batch = next(iter(NegativeEdgeSampler(batch_size=16, batches_per_epoch=1).batches(state)))
    results = []
    for cached in (True, False):
        loss = RelationLoss(kernel=ModifiedCauchyTransform(), cache_front_end=cached)
        loss.on_phase_start(state)
        assert (loss._cache is not None) == cached  # noqa: SLF001
        module.zero_grad()
        value = loss(batch, state.models, state).value
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in module.parameters()]))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    # the cache lets the sampler skip the data rows; without it they are needed
    bare = {k: v for k, v in batch.items() if k != "data"}
    loss = RelationLoss(cache_front_end=False)
    with pytest.raises(ValidationError, match="keys = None"):
        loss(bare, state.models, state)


def test_interpolation_moves_each_source_toward_its_target():
    from infoblocks.blocks.embedding.training import _interpolated

    x = torch.tensor([[0.0, 0.0], [4.0, 8.0], [1.0, 1.0], [9.0, 9.0]])
    batch = {"pos_source": torch.tensor([0, 2]), "pos_target": torch.tensor([1, 3]),
             "pos_mix": torch.tensor([0.25, 0.0])}
    moved = _interpolated(x, batch)
    # source 0 a quarter of the way to 1; source 2 stays (mix 0); targets untouched
    assert torch.equal(moved, torch.tensor([[1.0, 2.0], [4.0, 8.0], [1.0, 1.0], [9.0, 9.0]]))
    assert _interpolated(x, {}) is x

"""The network against a fixed layout: ``anchored_relation`` (umap-learn's transform objective
as a loss) and ``knn_placement`` (distilled k-NN placement)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infoblocks.blocks.embedding import (ConnectivityBasedRescale, FreePositions,
                                         ModifiedCauchyTransform)
from infoblocks.blocks.embedding.anchored import AnchoredRelationLoss, KNNPlacementLoss
from infoblocks.blocks.embedding.training import RelationLoss
from infoblocks.blocks.relations import SparseRelations
from infoblocks.blocks.state import TrainState
from infoblocks.plugins.registry import get_registry


def _state(models, dataset=None, **globals_):
    return TrainState(models=models, dataset=dataset, globals=globals_,
                      device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                      rng=np.random.default_rng(0))


def _layout(points):
    table = FreePositions(n_items=len(points), init=None).build()
    with torch.no_grad():
        table.positions.copy_(torch.as_tensor(points, dtype=torch.float32))
    return table


def test_anchored_loss_is_the_transform_objective_with_fixed_partners():
    kernel = ModifiedCauchyTransform(min_dist=0.1, spread=1.0)
    layout = _layout([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    main = torch.nn.Linear(2, 2)
    models = torch.nn.ModuleDict({"main": main, "layout": layout})
    data = torch.tensor([[0.5, 0.1], [0.2, -0.3], [1.0, 1.0], [-1.0, 0.4]])
    # items 0..3 of the batch are items [2, 0, 1, 3]; edges (2 -> 0), (0 -> 1); 2 negatives each
    batch = {"items": torch.tensor([2, 0, 1, 3]), "data": data[[2, 0, 1, 3]],
             "pos_source": torch.tensor([0, 1]), "pos_target": torch.tensor([1, 2]),
             "neg_source": torch.tensor([0, 1, 0, 1]), "neg_target": torch.tensor([3, 2, 2, 3])}
    loss = AnchoredRelationLoss(kernel=kernel, repulsion_strength=0.7, cache_front_end=False)
    out = loss(batch, models, _state(models))
    y = main(data[[2, 0]]).detach()  # the sources, through the network
    anchor = layout.positions.detach()
    z = lambda a, b: kernel.logit((a - b).pow(2).sum())  # noqa: E731
    attraction = (F.softplus(-z(y[0], anchor[0])) + F.softplus(-z(y[1], anchor[1]))) / 2
    repulsion = (F.softplus(z(y[0], anchor[3])) + F.softplus(z(y[1], anchor[1]))
                 + F.softplus(z(y[0], anchor[1])) + F.softplus(z(y[1], anchor[3]))) / 2
    assert float(out.value.detach()) == pytest.approx(float(attraction + 0.7 * repulsion), rel=1e-5)
    out.value.backward()
    assert layout.positions.grad is None  # the partners are constants
    assert main.weight.grad is not None and float(main.weight.grad.abs().sum()) > 0
    # the same term inside UMAP's loss (`relation` with `anchor_model`, the recipe's default
    # with a layout phase): L = L_umap + anchor_strength × L_anchored
    combined = RelationLoss(kernel=kernel, repulsion_strength=0.7, cache_front_end=False,
                            anchor_model="layout", anchor_strength=0.25)
    plain = RelationLoss(kernel=kernel, repulsion_strength=0.7, cache_front_end=False)
    both = combined(batch, models, _state(models))
    assert float(both.metrics["anchoring"]) == pytest.approx(float(out.value.detach()), rel=1e-5)
    assert float(both.value.detach()) == pytest.approx(
        float(plain(batch, models, _state(models)).value.detach())
        + 0.25 * float(out.value.detach()), rel=1e-5)
    assert combined.required_models() == {"main", "layout"}


def test_anchored_training_places_new_points_among_their_neighbours_positions():
    """Two blobs, a fixed layout that puts them at (−5, 0) and (5, 0): a network trained with
    the anchored loss sends new points of each blob to its blob's place."""
    from infoblocks.blocks.phases import TrainingPhase
    from infoblocks.blocks.routine import GlobalRelation, Routine

    rng = np.random.default_rng(0)
    x = torch.tensor(np.concatenate([rng.normal(size=(60, 5)), rng.normal(size=(60, 5)) + 6.0]),
                     dtype=torch.float32)
    blob = torch.arange(120) >= 60
    start = torch.tensor(rng.normal(scale=0.5, size=(120, 2)), dtype=torch.float32)
    start[:, 0] += torch.where(blob, 5.0, -5.0)
    layout = _layout(start)  # fixed: only the network is trained
    torch.manual_seed(0)  # the network's initial weights (else: whatever ran before)
    routine = Routine(
        dataset={"data": x},
        models={"main": torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.ReLU(),
                                            torch.nn.Linear(32, 2)), "layout": layout},
        global_relations={"graph": GlobalRelation(
            relation={"name": "neighbor_pdist", "n_neighbors": 10},
            transforms=["connectivity_rescale", "symmetrize"])},
        phases=[TrainingPhase(
            name="main", epochs=20, trainable=["main"], learning_rate=1e-2,
            sampler={"name": "negative_edges", "batch_size": 128, "batches_per_epoch": 10,
                     "negatives": "uniform"},
            loss={"name": "anchored_relation", "anchor_model": "layout"})],
        seed=0)
    routine.train()
    losses = [r["loss"] for r in routine.history.rows]
    assert losses[-1] < 0.85 * losses[0]  # measured: 3.72 -> 2.70 (negatives of its own blob)
    assert torch.equal(routine.models["layout"].positions.detach(), start)  # not trained
    new = torch.tensor(np.concatenate([rng.normal(size=(20, 5)), rng.normal(size=(20, 5)) + 6]),
                       dtype=torch.float32)
    with torch.no_grad():
        y = routine.models["main"](new)
    centre = torch.tensor([[-5.0, 0.0]] * 20 + [[5.0, 0.0]] * 20)
    off = (y - centre).norm(dim=1)
    # every new point on its blob's side, near its blob's place (measured: median 1.5 away,
    # held off the layout points by the repulsion of their own blob; the places are 10 apart)
    assert bool((y[:20, 0] < -1.5).all()) and bool((y[20:, 0] > 1.5).all())
    assert float(off.median()) < 2.5


def test_knn_placement_target_is_the_membership_weighted_mean_of_the_nearest_positions():
    rng = np.random.default_rng(1)
    n, k = 40, 5
    x = torch.tensor(rng.normal(size=(n, 3)), dtype=torch.float32)
    d = torch.cdist(x.double(), x.double())
    nearest = d.topk(k + 1, largest=False).indices[:, 1:]  # the k-NN graph, self excluded
    rows = torch.arange(n).repeat_interleave(k)
    graph = SparseRelations(rows, nearest.reshape(-1), torch.ones(n * k), (n, n))
    y_layout = torch.tensor(rng.normal(size=(n, 2)), dtype=torch.float32)
    models = torch.nn.ModuleDict({"main": torch.nn.Identity(), "layout": _layout(y_layout)})
    loss = KNNPlacementLoss(n_neighbors=k, max_candidates=k, cache_front_end=False,
                            input="data")
    loss.on_phase_start(_state(models, dataset={"data": x}, graph=graph))
    source, target = torch.tensor([0, 7, 12]), nearest[[0, 7, 12], 0]
    batch = {"items": torch.cat([source, target]), "pos_source": torch.arange(3),
             "pos_target": torch.arange(3, 6), "pos_mix": torch.tensor([0.0, 0.25, 0.5]),
             "neg_source": torch.arange(3), "neg_target": torch.arange(3, 6)}
    inputs, goal = loss.placement(batch, models)
    moved = x[source] + batch["pos_mix"][:, None] * (x[target] - x[source])
    assert torch.allclose(inputs, moved)
    # by brute force: the k nearest of every moved point among ALL items, UMAP memberships
    dist = torch.cdist(moved.double(), x.double())
    dk, ik = dist.topk(k, largest=False)
    rho, sigma = ConnectivityBasedRescale().calibrate(dk)
    w = torch.exp(-(dk - rho[:, None]).clamp_min(0) / sigma[:, None])
    expected = (w[:, :, None] * y_layout[ik].double()).sum(1) / w.sum(1, keepdim=True)
    assert torch.allclose(goal.double(), expected, atol=1e-5)


def test_the_losses_are_registered_by_name():
    registry = get_registry()
    assert registry.entry("loss", "anchored_relation").block is AnchoredRelationLoss
    assert registry.entry("loss", "knn_placement").block is KNNPlacementLoss
    with pytest.raises(Exception, match="objective"):
        KNNPlacementLoss(objective="l1")
    assert math.isfinite(AnchoredRelationLoss().repulsion_strength)

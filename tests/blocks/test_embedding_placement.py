"""New points among fixed training positions (``placement``), the closed-form UMAP edge loss
(``umap_loss``), the cross k-NN search and the layout sampler's per-epoch edge schedule."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infoblocks.blocks.distances import Euclidean
from infoblocks.blocks.embedding import ModifiedCauchyTransform, StudentTTransform
from infoblocks.blocks.embedding.placement import (CrossEntropyPlacement, PlacementContext,
                                                   memberships, place, spread)
from infoblocks.blocks.embedding.training import NegativeEdgeSampler, RelationLoss
from infoblocks.blocks.embedding.umap_loss import edge_cross_entropy, log_form
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.neighbors import query_knn
from infoblocks.blocks.relations import SparseRelations
from infoblocks.blocks.state import TrainState


def _batch(n, edges, negatives, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"pos_source": torch.randint(0, n, (edges,), generator=g),
            "pos_target": torch.randint(0, n, (edges,), generator=g),
            "neg_source": torch.randint(0, n, (negatives,), generator=g),
            "neg_target": torch.randint(0, n, (negatives,), generator=g)}


@pytest.mark.parametrize("kernel", [ModifiedCauchyTransform(min_dist=0.05),
                                    ModifiedCauchyTransform(min_dist=0.5, spread=2.0),
                                    StudentTTransform()])
def test_closed_form_edge_loss_is_autograd_of_the_dense_formula(kernel):
    torch.manual_seed(0)
    y0 = torch.randn(200, 3, dtype=torch.float64) * 2
    y0[7] = y0[8]  # a coinciding pair: below the floor, no gradient
    batch = _batch(200, 80, 400)
    batch["pos_source"][0], batch["pos_target"][0] = 7, 8
    gamma = 0.7
    fused = y0.clone().requires_grad_()
    value, attraction, repulsion = edge_cross_entropy(fused, batch, *log_form(kernel), gamma)
    value.backward(torch.tensor(1.3, dtype=torch.float64))
    dense = y0.clone().requires_grad_()
    z_pos = kernel.logit((dense[batch["pos_source"]] - dense[batch["pos_target"]]).pow(2).sum(1))
    z_neg = kernel.logit((dense[batch["neg_source"]] - dense[batch["neg_target"]]).pow(2).sum(1))
    a, r = F.softplus(-z_pos).sum() / 80, F.softplus(z_neg).sum() / 80
    (a + gamma * r).backward(torch.tensor(1.3, dtype=torch.float64))
    a, r = a.detach(), r.detach()
    assert math.isclose(float(value.detach()), float(a + gamma * r), rel_tol=1e-12)
    assert math.isclose(float(attraction), float(a), rel_tol=1e-12)
    assert math.isclose(float(repulsion), float(r), rel_tol=1e-12)
    torch.testing.assert_close(fused.grad, dense.grad, rtol=1e-10, atol=1e-14)
    assert float(fused.grad.abs().sum()) > 0


@pytest.mark.parametrize("layout", ["2-D", "2-D float32", "2-D strided", "1-D", "4-D"])
def test_closed_form_edge_loss_in_every_layout_of_y(layout):
    """A 2-D embedding is gathered as complex numbers (one element a point): the same value
    and gradient as autograd through the dense formula, in float32 and float64, and a strided
    view (which cannot be viewed as complex) takes the rows' path."""
    kernel = ModifiedCauchyTransform(min_dist=0.1)
    width = {"1-D": 1, "4-D": 4}.get(layout, 2)
    dtype = torch.float32 if "float32" in layout else torch.float64
    torch.manual_seed(1)
    base = torch.randn(150, 3 if "strided" in layout else width, dtype=dtype) * 2
    batch = _batch(150, 60, 300, seed=1)
    grads, values = [], []
    for fused in (True, False):
        leaf = base.clone().requires_grad_()
        y = leaf[:, :2] if "strided" in layout else leaf
        if fused:
            value = edge_cross_entropy(y, batch, *log_form(kernel), 0.8)[0]
        else:
            z_pos = kernel.logit((y[batch["pos_source"]] - y[batch["pos_target"]]).pow(2).sum(1))
            z_neg = kernel.logit((y[batch["neg_source"]] - y[batch["neg_target"]]).pow(2).sum(1))
            value = (F.softplus(-z_pos).sum() + 0.8 * F.softplus(z_neg).sum()) / 60
        value.backward()
        grads.append(leaf.grad)
        values.append(float(value.detach()))
    # float32 rounding of the two forms differs by up to ~5e-8 on gradients of 1e-3 to 0.2: the
    # tolerances sit 20x above it (a wrong term moves them by 1e-3 or more)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-11
    assert math.isclose(values[0], values[1], rel_tol=tolerance)
    torch.testing.assert_close(grads[0], grads[1], rtol=tolerance * 10, atol=tolerance * 0.1)
    assert float(grads[0].abs().sum()) > 0
    if "strided" in layout:
        assert float(grads[0][:, 2].abs().sum()) == 0.0


def test_relation_loss_takes_the_closed_form_only_where_the_kernel_states_it():
    assert log_form(ModifiedCauchyTransform(a=2.0, b=0.8)) == (-math.log(2.0), 0.8)
    assert log_form(StudentTTransform()) == (0.0, 1.0)
    assert log_form(StudentTTransform(dof=2.0)) is None  # autograd path
    assert log_form(object()) is None  # a plugin kernel without the method
    y = torch.randn(50, 2, requires_grad=True)
    batch = {**_batch(50, 20, 100), "items": torch.arange(50)}
    models = {"layout": lambda items: y.index_select(0, items)}
    out = {}
    for fused in (True, False):
        loss = RelationLoss(model="layout", input="items", kernel="modified_cauchy",
                            fused=fused, cache_front_end=False)
        state = TrainState(models=models, dataset=None, globals={}, device=torch.device("cpu"),
                           generator=torch.Generator().manual_seed(0),
                           rng=np.random.default_rng(0))
        loss.on_phase_start(state)
        result = loss(batch, models, state)
        (grad,) = torch.autograd.grad(result.value, y)
        out[fused] = (float(result.value.detach()), grad, float(result.metrics["attraction"]))
    assert math.isclose(out[True][0], out[False][0], rel_tol=1e-5)
    assert math.isclose(out[True][2], out[False][2], rel_tol=1e-5)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-4, atol=1e-6)


def test_free_coordinates_are_indexed_in_their_table_with_the_same_loss_and_gradient():
    """The layout's loss indexes pairs of items in the free coordinates' table directly: the
    value and the positions' gradient are those of embedding the batch's items first; a
    subclass whose forward is not the lookup keeps the embedding path."""
    from infoblocks.blocks.embedding.layout import FreePositions, _FreePositionsModule

    class Shifted(_FreePositionsModule):
        def forward(self, index):
            return super().forward(index) + 1.0

    torch.manual_seed(0)
    items = torch.randint(0, 60, (40,))  # repeated items, as a batch's sources and negatives
    batch = {**_batch(40, 15, 75), "items": items}
    calls = []
    for cls in (FreePositions(n_items=60).build().__class__, Shifted):
        module = cls(60, 2, None, None)
        with torch.no_grad():
            module.positions.copy_(torch.randn(60, 2, generator=torch.Generator().manual_seed(1)))
        results = []
        for table in (True, False):
            loss = RelationLoss(model="layout", input="items", kernel="modified_cauchy",
                                cache_front_end=False)
            if not table:  # the embedding path: the model's forward at the items
                loss._lookup_table = lambda model, batch: None
            module.positions.grad = None
            calls.clear()
            hook = module.register_forward_hook(lambda m, inputs, out: calls.append(len(inputs[0])))
            out = loss(batch, {"layout": module}, None)
            hook.remove()
            handed = out.gradients is not None  # the engine may assign them, no backward
            assert handed == (table and cls is not Shifted)
            out.value.backward()
            if handed:
                torch.testing.assert_close(out.gradients[0][1], module.positions.grad)
            results.append((float(out.value.detach()), module.positions.grad.clone(), calls[:]))
        (v_table, g_table, forwards), (v_embed, g_embed, _) = results
        assert math.isclose(v_table, v_embed, rel_tol=1e-6)
        torch.testing.assert_close(g_table, g_embed, rtol=1e-5, atol=1e-7)
        assert float(g_table.abs().sum()) > 0
        # the batch's 40 items embedded only where forward is not the lookup; else the
        # first batch's check of the table against forward at 8 items
        assert forwards == ([40] if cls is Shifted else [8])


class _Table(torch.nn.Module):
    """A plugin's table model: ``forward(i) = 2 w[i]``; ``table`` chooses what
    ``lookup_table()`` returns (author16's cases)."""

    def __init__(self, table):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(60, 2, generator=torch.Generator()
                                                     .manual_seed(1)))
        self.register_buffer("frozen", self.weight.detach() * 2)
        self.table = table

    def forward(self, index):
        return (self.weight * 2).index_select(0, index)

    def lookup_table(self):
        return {"computed": lambda: self.weight * 2, "detached": lambda: self.weight.detach() * 2,
                "buffer": lambda: self.frozen, "transposed": lambda: (self.weight * 2).T,
                "other": lambda: self.weight}[self.table]()


def test_a_computed_lookup_table_trains_its_parameters_as_forward_does():
    # author16 F6: lookup_table() = 2 w (a tensor computed from the parameter) left w
    # untrained, silently: its gradient was assigned to the table, not passed on
    batch = {**_batch(40, 15, 75), "items": torch.randint(0, 60, (40,))}
    grads = []
    for table in ("computed", None):
        module = _Table("computed")
        if table is None:
            module.lookup_table = lambda: None  # the forward path
        out = RelationLoss(model="layout", input="items", kernel="modified_cauchy",
                           cache_front_end=False)(batch, {"layout": module}, None)
        assert out.gradients is None  # not a leaf: autograd carries it to w
        out.value.backward()
        grads.append(module.weight.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    assert float(grads[0].abs().sum()) > 0


@pytest.mark.parametrize("table, message", [
    ("detached", "does not require grad"), ("buffer", "does not require grad"),
    ("transposed", "not what the model's forward returns"),
    ("other", "not what the model's forward returns")])
def test_a_lookup_table_that_breaks_its_contract_names_the_model(table, message):
    # author16 F4 / F5: a raw torch error, or an IndexError blamed on the built-in loss; and a
    # table other than forward's lookup would train other coordinates than embedding_, silently
    from infoblocks.blocks.errors import ContractError

    batch = {**_batch(40, 15, 75), "items": torch.randint(0, 60, (40,))}
    with pytest.raises(ContractError, match=rf"models\.layout \(_Table\)'s lookup_table.*{message}"):
        RelationLoss(model="layout", input="items", kernel="modified_cauchy",
                     cache_front_end=False)(batch, {"layout": _Table(table)}, None)


def test_query_knn_finds_the_nearest_reference_rows():
    rng = np.random.default_rng(0)
    reference = torch.tensor(rng.normal(size=(300, 6)), dtype=torch.float32)
    queries = torch.tensor(rng.normal(size=(40, 6)), dtype=torch.float32)
    queries[0] = reference[17]  # a copy of a reference row: its own nearest, at distance 0
    index, dist = query_knn(queries, reference, 5, Euclidean(), chunk_elements=2_000)
    full = torch.cdist(queries.double(), reference.double())
    expected = full.topk(5, largest=False)
    assert torch.equal(index, expected.indices)
    torch.testing.assert_close(dist.double(), expected.values, rtol=1e-5, atol=1e-5)
    assert int(index[0, 0]) == 17 and float(dist[0, 0]) < 1e-3
    with pytest.raises(ValidationError, match="lower n_neighbors"):
        query_knn(queries, reference[:3], 5, Euclidean())


def test_memberships_are_umaps_calibration_normalised():
    d = torch.tensor([[0.5, 1.0, 2.0, 4.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    w = memberships(d, local_connectivity=1.0)
    torch.testing.assert_close(w.sum(1), torch.ones(2), rtol=0, atol=1e-6)
    assert float(w[0, 0]) > float(w[0, 1]) > float(w[0, 2]) > float(w[0, 3])  # nearer: more
    torch.testing.assert_close(w[1], torch.full((4,), 0.25))  # ties: equal
    # local_connectivity 0 (umap-learn's transform): the nearest is not pinned at membership 1
    assert float(memberships(d, 0.0)[0, 0]) < float(w[0, 0])


def test_place_moves_new_points_to_their_neighbours_positions():
    """Two clusters of training positions at (−6, 0) and (6, 0); new points started at the
    origin, each with neighbours in one cluster, end in their cluster, and a point's place does
    not depend on the other rows of the call."""
    rng = np.random.default_rng(0)
    positions = torch.tensor(np.concatenate([rng.normal(size=(50, 2)) + [-6, 0],
                                             rng.normal(size=(50, 2)) + [6, 0]]),
                             dtype=torch.float32)
    neighbours = torch.tensor(np.concatenate([rng.integers(0, 50, (10, 8)),
                                              rng.integers(50, 100, (10, 8))]))
    weights = torch.full((20, 8), 1 / 8)
    start = torch.zeros(20, 2)
    kernel = ModifiedCauchyTransform(min_dist=0.1)
    y = place(start, neighbours, weights, positions, kernel, epochs=100, learning_rate=0.2)
    assert bool((y[:10, 0] < -3).all()) and bool((y[10:, 0] > 3).all())
    centre = positions[neighbours].mean(1)
    off = (y - centre).norm(dim=1)  # measured: median 1.3, max 2.2 (clusters of sd 1, 12 apart)
    assert float(off.median()) < 1.8 and float(off.max()) < 3.0
    alone = place(start[13:14], neighbours[13:14], weights[13:14], positions, kernel,
                  epochs=100, learning_rate=0.2)
    torch.testing.assert_close(alone[0], y[13])
    assert torch.equal(place(start, neighbours, weights, positions, kernel, epochs=0), start)
    with pytest.raises(ValidationError, match="one row per new point"):
        place(start, neighbours[:5], weights[:5], positions, kernel)


def test_the_cross_entropy_placement_steps_in_units_of_the_maps_spread():
    """A t-SNE-sized map (clusters of sd 10 at x = ±60): the default placement (300 steps of
    0.05 × the spread) brings points started at the origin into their cluster, as it does on a
    map 10 times smaller; 300 steps of 0.05 kernel units do not."""
    rng = np.random.default_rng(1)
    base = np.concatenate([rng.normal(size=(50, 2)) + [-6, 0], rng.normal(size=(50, 2)) + [6, 0]])
    neighbours = torch.tensor(np.concatenate([rng.integers(0, 50, (10, 8)),
                                              rng.integers(50, 100, (10, 8))]))
    distances = torch.linspace(1.0, 2.0, 8).repeat(20, 1)
    start = torch.zeros(20, 2)
    context = PlacementContext(kernel=StudentTTransform(), seed=0)
    assert spread(torch.zeros(1, 2)) == 1.0 and spread(torch.zeros(5, 2)) == 1.0
    for scale in (1.0, 10.0):
        positions = torch.tensor(base * scale, dtype=torch.float32)
        assert spread(positions) == pytest.approx(float(positions.double().var(0, unbiased=False)
                                                        .mean().sqrt()))
        y = CrossEntropyPlacement().place(start, neighbours, distances, positions, context)
        centre = positions[neighbours].mean(1)
        assert bool((y[:10, 0] < -3 * scale).all()) and bool((y[10:, 0] > 3 * scale).all())
        # measured: median 0.41 (scale 1) and 0.12 (scale 10) spreads from the neighbours'
        # centre; with steps of 0.05 kernel units (below) 1.2 at scale 10
        assert float((y - centre).norm(dim=1).median()) < 0.6 * spread(positions)
    fixed = CrossEntropyPlacement(learning_rate=0.05 / spread(positions))  # 0.05 kernel units
    y = fixed.place(start, neighbours, distances, positions, context)
    assert float(y[:, 0].abs().max()) < 30.0  # measured 7.8: not even halfway to its cluster


def _sampler_state(weights):
    n = len(weights)
    rows = torch.arange(n)
    graph = SparseRelations(rows, (rows + 1) % n, torch.tensor(weights, dtype=torch.float32),
                            (n, n))
    return TrainState(models={}, dataset=None, globals={"graph": graph},
                      device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                      rng=np.random.default_rng(0))


@pytest.mark.parametrize("batch_size", [4096, 64])  # per-epoch schedule; independent draws
def test_edge_draws_follow_the_weights(batch_size):
    weights = [1.0, 2.0, 3.0, 4.0] * 50  # 200 edges
    state = _sampler_state(weights)
    sampler = NegativeEdgeSampler(batch_size=batch_size, batches_per_epoch=2,
                                  negatives="batch", keys=[])
    sampler.setup(state)
    counts = torch.zeros(200)
    epochs = 40 if batch_size == 4096 else 400
    for _ in range(epochs):
        for batch in sampler.batches(state):
            assert batch["pos_source"].numel() == batch_size
            counts += torch.bincount(batch["items"][:batch_size], minlength=200)
    share = counts.view(50, 4).sum(0) / counts.sum()
    torch.testing.assert_close(share, torch.tensor([0.1, 0.2, 0.3, 0.4]), rtol=0, atol=0.01)


def test_epoch_draws_edges_caps_an_epoch_at_the_graphs_undirected_edges():
    state = _sampler_state([1.0] * 60)  # 60 stored edges: 30 draws per epoch at most
    capped = NegativeEdgeSampler(batch_size=4096, batches_per_epoch=4, negatives="batch",
                                 keys=[], epoch_draws="edges")
    capped.setup(state)
    sizes = [b["pos_source"].numel() for b in capped.batches(state)]
    assert sizes == [8, 8, 8, 8]  # ⌈60 / (2 · 4)⌉ per batch
    big = _sampler_state([1.0] * 100_000)  # a large graph: the batch size binds
    wide = NegativeEdgeSampler(batch_size=64, batches_per_epoch=2, negatives="batch", keys=[],
                               epoch_draws="edges")
    wide.setup(big)
    assert [b["pos_source"].numel() for b in wide.batches(big)] == [64, 64]
    with pytest.raises(ValidationError, match="epoch_draws"):
        NegativeEdgeSampler(epoch_draws="all")


def test_the_neighbors_start_ignores_the_network_and_lands_between_two_clusters_members():
    """start = "neighbors": umap-learn's start, the membership-weighted mean of the neighbours'
    positions; the network's guess does not matter, and a point whose neighbours all sit in
    one cluster ends in that cluster wherever the network put it."""
    from infoblocks.blocks.embedding.placement import CrossEntropyPlacement, PlacementContext

    g = torch.Generator().manual_seed(0)
    positions = torch.cat([torch.randn(50, 2, generator=g) * 0.3,
                           torch.randn(50, 2, generator=g) * 0.3 + 10.0])
    neighbours = torch.stack([torch.arange(50, 60), torch.arange(0, 10)])  # cluster 2, 1
    distances = torch.linspace(0.5, 1.5, 10).expand(2, -1).contiguous()
    far = torch.tensor([[-30.0, -30.0], [40.0, 40.0]])  # the network's (wrong) guesses
    context = PlacementContext(kernel=ModifiedCauchyTransform(min_dist=0.05))
    placed = CrossEntropyPlacement(start="neighbors").place(far, neighbours, distances,
                                                            positions, context)
    again = CrossEntropyPlacement(start="neighbors").place(far * 0, neighbours, distances,
                                                           positions, context)
    assert torch.equal(placed, again)
    assert torch.linalg.norm(placed[0] - 10.0) < 2.0 and torch.linalg.norm(placed[1]) < 2.0
    from_network = CrossEntropyPlacement(epochs=0).place(far, neighbours, distances,
                                                         positions, context)
    assert torch.equal(from_network, far)


@pytest.mark.parametrize("metric", [Euclidean(), "cosine"])
def test_query_knn_reads_a_reference_on_disk_a_chunk_at_a_time(tmp_path, monkeypatch, metric):
    from infoblocks.blocks import data as data_module
    from infoblocks.blocks.data import LazyRows
    from infoblocks.plugins.registry import get_registry

    metric = get_registry().build("distance", metric) if isinstance(metric, str) else metric
    g = torch.Generator().manual_seed(0)
    reference, queries = torch.randn(500, 6, generator=g), torch.randn(40, 6, generator=g)
    np.save(tmp_path / "r.npy", reference.numpy())
    lazy = LazyRows(np.load(tmp_path / "r.npy", mmap_mode="r"))
    taken = []
    monkeypatch.setattr(data_module, "LAZY_CHUNK_ROWS", 37)  # 14 chunks, the last of 19 rows
    original = LazyRows.take
    monkeypatch.setattr(LazyRows, "take", lambda self, index: taken.append(index) or
                        original(self, index))
    index, dist = query_knn(queries, lazy, 15, metric)
    expected_index, expected_dist = query_knn(queries, reference, 15, metric)
    assert torch.equal(index, expected_index)
    torch.testing.assert_close(dist, expected_dist)
    assert len(taken) == 14 and all(i.stop - i.start <= 37 for i in taken)  # never all rows

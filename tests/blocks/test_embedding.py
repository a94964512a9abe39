"""UMAP / t-SNE blocks against direct small-n computations."""

import math

import numpy as np
import pytest
import scipy.spatial.distance
import torch

from infoblocks.blocks.data import Dataset
from infoblocks.blocks.embedding import (ConnectivityBasedRescale, FreePositions, KLLoss,
                                         ModifiedCauchyTransform, NegativeEdgeSampler, PCAInit,
                                         PerplexityBasedRescale, RelationLoss, RowMatrix,
                                         SpectralInit, StudentTTransform)
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.neighbors import NeighborBasedPDist
from infoblocks.blocks.relations import DenseRelations, EdgeRelations, SparseRelations
from infoblocks.blocks.state import TrainState
from infoblocks.blocks.transforms import Symmetrize


def _knn(n=200, k=15, d=5, seed=0):
    x = torch.tensor(np.random.default_rng(seed).normal(size=(n, d))).float()
    return x, NeighborBasedPDist(n_neighbors=k).compute(x)


def _state(models=None, dataset=None, **globals_):
    gen = torch.Generator().manual_seed(0)
    return TrainState(models=models or torch.nn.ModuleDict(), dataset=dataset, globals=globals_,
                      device=torch.device("cpu"), generator=gen, rng=np.random.default_rng(0))


# ----------------------------------------------------------------------------- UMAP graph


def test_sigma_calibration_hits_log2_k_per_row():
    _, knn = _knn(k=15)
    rescale = ConnectivityBasedRescale()
    layout = RowMatrix.from_sparse(knn)
    rho, sigma = rescale.calibrate(layout.values)
    psum = torch.exp(-(layout.values - rho[:, None]).clamp_min(0) / sigma[:, None]).sum(1)
    # the defining equation of σ_i: Σ_j exp(−max(0, d_ij − ρ_i)/σ_i) = log2 k
    assert torch.allclose(psum, torch.full_like(psum, math.log2(15)), atol=1e-4, rtol=0)
    assert torch.allclose(rho, layout.values[:, 0])  # local_connectivity 1: nearest distance


def test_local_connectivity_interpolates_rho():
    _, knn = _knn(k=10)
    layout = RowMatrix.from_sparse(knn)
    rho, _ = ConnectivityBasedRescale(local_connectivity=1.5).calibrate(layout.values)
    d = layout.values
    assert torch.allclose(rho, d[:, 0] + 0.5 * (d[:, 1] - d[:, 0]))


def _reference_umap_graph(x: np.ndarray, k: int) -> np.ndarray:
    """Direct dense computation, one row at a time (a test may loop)."""
    n = len(x)
    d = scipy.spatial.distance.cdist(x, x)
    np.fill_diagonal(d, np.inf)
    p = np.zeros((n, n))
    for i in range(n):
        nbrs = np.argsort(d[i])[:k]
        di = d[i, nbrs]
        rho = di.min()
        lo, hi = 0.0, 1e3
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if np.exp(-np.maximum(di - rho, 0) / mid).sum() > math.log2(k):
                hi = mid
            else:
                lo = mid
        p[i, nbrs] = np.exp(-np.maximum(di - rho, 0) / mid)
    return p + p.T - p * p.T


def test_symmetrized_graph_matches_direct_computation():
    x, knn = _knn(n=80, k=8, d=3, seed=3)
    graph = Symmetrize(subtract_product=True)(ConnectivityBasedRescale()(knn))
    expected = _reference_umap_graph(x.double().numpy(), 8)
    assert np.allclose(graph.to_dense().values.numpy(), expected, atol=1e-5)
    assert graph.shape == (80, 80)


def test_symmetrize_when_last_point_is_nobodys_neighbour():
    # paraDime crashes here (its sparse matrix infers a non-square shape); rows of point 3
    # exist, but no entry points *to* point 3
    rows = torch.tensor([0, 1, 2, 3, 3])
    cols = torch.tensor([1, 0, 1, 0, 2])
    vals = torch.tensor([0.5, 0.4, 1.0, 0.3, 0.2])
    sparse = SparseRelations(rows, cols, vals, (4, 4))
    out = Symmetrize(subtract_product=True)(sparse)
    dense = sparse.to_dense().values
    expected = dense + dense.T - dense * dense.T
    assert out.shape == (4, 4)
    assert torch.allclose(out.to_dense().values, expected)
    # and through the whole UMAP chain on data where the last point is an outlier
    x = torch.cat([torch.randn(50, 2), torch.tensor([[100.0, 100.0]])])
    knn = NeighborBasedPDist(n_neighbors=5).compute(x)
    assert not (knn.cols == 50).any()
    graph = Symmetrize()(ConnectivityBasedRescale()(knn))
    assert graph.shape == (51, 51) and (graph.rows == 50).any() and (graph.cols == 50).any()


def test_rescale_rejects_edge_relations():
    with pytest.raises(ValidationError, match="accepts"):
        ConnectivityBasedRescale()(EdgeRelations(torch.tensor([0]), torch.tensor([1]),
                                                 torch.tensor([1.0]), (2, 2)))


# ----------------------------------------------------------------------------- t-SNE graph


def test_perplexity_calibration_sparse_and_dense():
    x, knn = _knn(n=150, k=60)
    p = PerplexityBasedRescale(perplexity=12)(knn)
    layout = RowMatrix.from_sparse(p)
    probs = torch.where(torch.isfinite(layout.values), layout.values, 0.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-300))).sum(1)
    assert torch.allclose(probs.sum(1), torch.ones(150, dtype=probs.dtype), atol=1e-5)
    assert torch.allclose(entropy, torch.full_like(entropy, math.log(12)), atol=1e-3)
    dense = PerplexityBasedRescale(perplexity=12)(DenseRelations(torch.cdist(x, x)))
    q = dense.to_dense().values.double()
    assert torch.allclose(q.diagonal(), torch.zeros(150, dtype=q.dtype))
    h = -(q * torch.log(q.clamp_min(1e-300))).sum(1)
    assert torch.allclose(h, torch.full_like(h, math.log(12)), atol=1e-3)


def test_perplexity_too_large_for_the_graph():
    _, knn = _knn(n=60, k=10)
    with pytest.warns(UserWarning, match="lower the perplexity"):  # (a warning: author28-5)
        p = PerplexityBasedRescale(perplexity=30)(knn)  # falls back to perplexity 9
    layout = RowMatrix.from_sparse(p)
    probs = torch.where(torch.isfinite(layout.values), layout.values, 0.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-300))).sum(1)
    assert torch.allclose(entropy, torch.full_like(entropy, math.log(9)), atol=1e-3)
    with pytest.raises(ValidationError, match="perplexity"):
        PerplexityBasedRescale(perplexity=0)


def test_perplexity_calibration_with_a_block_of_duplicates():
    # 40 copies of one point among 160 others, k = 15: each copy's 15 neighbours are at
    # distance 0, and a point whose 15 nearest are copies sees them all at one distance; such
    # rows are uniform (every β gives the same row); the others are calibrated
    x = torch.tensor(np.random.default_rng(3).normal(size=(160, 5))).float()
    x = torch.cat([x, x[:1].repeat(40, 1)])
    knn = NeighborBasedPDist(n_neighbors=15).compute(x)
    dists = RowMatrix.from_sparse(knn).values
    beta, p = PerplexityBasedRescale(perplexity=5).calibrate(dists)
    assert torch.isfinite(beta).all() and torch.isfinite(p).all()
    assert torch.allclose(p.sum(1), torch.ones(200, dtype=p.dtype), atol=1e-6)
    tied = dists.max(1).values == dists.min(1).values
    assert tied[0] and tied[160:].all() and int(tied.sum()) < 50
    assert torch.allclose(p[tied], torch.full_like(p[tied], 1 / 15))
    others = ~tied
    entropy = -(p[others] * torch.log(p[others].clamp_min(1e-300))).sum(1)
    assert torch.allclose(entropy, torch.full_like(entropy, math.log(5)), atol=1e-3)
    # points at equal non-zero distances (a simplex): uniform too, and finite
    dense = DenseRelations(torch.ones(6, 6) - torch.eye(6))
    q = PerplexityBasedRescale(perplexity=2)(dense).values
    assert torch.allclose(q, (torch.ones(6, 6) - torch.eye(6)) / 5)


@pytest.mark.parametrize("rescale", [ConnectivityBasedRescale(), PerplexityBasedRescale(5)])
def test_a_graph_of_zero_distances_is_refused(rescale):
    # constant data: every k-NN distance is 0, the graph is an arbitrary choice among ties
    knn = NeighborBasedPDist(n_neighbors=10).compute(torch.ones(30, 4))
    with pytest.raises(ValidationError, match=r"distance 0 .*np.unique"):
        rescale(knn)
    with pytest.raises(ValidationError, match="distance 0"):
        rescale(DenseRelations(torch.zeros(8, 8)))
    # two distinct points each repeated more than k times: also nothing but ties
    two = torch.cat([torch.zeros(15, 4), torch.ones(15, 4)])
    with pytest.raises(ValidationError, match="distance 0"):
        rescale(NeighborBasedPDist(n_neighbors=10).compute(two))


# ----------------------------------------------------------------------------- kernels


def test_modified_cauchy_ab_as_umap_learn():
    kernel = ModifiedCauchyTransform(min_dist=0.1, spread=1.0)
    # umap-learn's find_ab_params(1.0, 0.1) = (1.5769, 0.8951)
    assert kernel.a == pytest.approx(1.5769, abs=1e-3)
    assert kernel.b == pytest.approx(0.8951, abs=1e-3)
    sq = torch.tensor([0.01, 0.5, 4.0])
    q = 1 / (1 + kernel.a * sq ** kernel.b)
    assert torch.allclose(torch.exp(kernel.log_kernel(sq)), q, atol=1e-6)
    assert torch.allclose(torch.sigmoid(kernel.logit(sq)), q, atol=1e-6)
    with pytest.raises(ValidationError, match="min_dist"):
        ModifiedCauchyTransform(min_dist=2.0, spread=1.0)


def test_student_t_kernel():
    sq = torch.tensor([0.0, 1.0, 9.0])
    assert torch.allclose(torch.exp(StudentTTransform().log_kernel(sq)), 1 / (1 + sq))
    t3 = StudentTTransform(dof=3.0)
    assert torch.allclose(torch.exp(t3.log_kernel(sq)), (1 + sq / 3) ** -2)
    q = torch.exp(t3.log_kernel(sq[1:]))
    assert torch.allclose(torch.sigmoid(t3.logit(sq[1:])), q, atol=1e-6)


# ----------------------------------------------------------------------------- sampler


def test_negative_edge_sampler_draws_edges_by_weight():
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    graph = SparseRelations(torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 0]), weights, (5, 5))
    dataset = Dataset(data=torch.randn(5, 3))
    state = _state(dataset=dataset, graph=graph)
    sampler = NegativeEdgeSampler(batch_size=1000, neg_sampling_rate=3, batches_per_epoch=20)
    sampler.setup(state)
    batches = list(sampler.batches(state))
    assert len(batches) == 20
    b = batches[0]
    assert b["items"].shape == (2000,) and b["data"].shape == (2000, 3)
    assert b["neg_source"].shape == b["neg_target"].shape == (3000,)
    assert int(b["neg_target"].max()) < 2000  # partners are rows of the batch
    sources = torch.cat([x["items"][:1000] for x in batches])
    freq = torch.bincount(sources, minlength=5).double() / sources.numel()
    # 20,000 draws: frequencies within 0.01 of weight / Σ weight (std ≈ 0.003)
    assert torch.allclose(freq[:4], (weights / weights.sum()).double(), atol=0.01)
    assert freq[4] == 0
    # same seed, same batches
    again = list(sampler.batches(_state(dataset=dataset, graph=graph)))
    assert torch.equal(again[0]["items"], b["items"])


def test_min_batch_size_gives_a_small_graph_fewer_batches_not_smaller_ones():
    """genemb22-1: the recipe's 10 batches per epoch made 6,000 layout and 500 main steps on
    150 items (iris 4.2 s CPU against umap-learn's 0.2 s).  With ``min_batch_size`` an epoch
    has at most ⌈(undirected edges) / min_batch_size⌉ batches; a large graph keeps its count."""
    n = 60
    source = torch.arange(n).repeat_interleave(10)
    target = (source + torch.arange(1, 11).repeat(n)) % n
    graph = SparseRelations(source, target, torch.ones(n * 10), (n, n))  # 600 entries: 300 edges
    state = _state(dataset=Dataset(data=torch.randn(n, 3)), graph=graph)

    def counts(**options):
        sampler = NegativeEdgeSampler(batches_per_epoch=10, keys=[], **options)
        batches = list(sampler.batches(state))
        return sampler.num_batches(state), len(batches), batches[0]["pos_source"].numel()

    assert counts(batch_size=50) == (10, 10, 50)  # without it: 10 batches, 500 draws
    assert counts(batch_size=50, min_batch_size=50) == (6, 6, 50)  # ⌈300 / 50⌉
    assert counts(batch_size=50, min_batch_size=1000) == (1, 1, 50)
    # the layout's form: an epoch's draws (300) spread over its batches, each ≤ batch_size
    assert counts(batch_size=4096, epoch_draws="edges", min_batch_size=128) == (3, 3, 100)
    assert counts(batch_size=4096, epoch_draws="edges") == (10, 10, 30)
    assert counts(batch_size=50, min_batch_size=1) == (10, 10, 50)  # capped by batches_per_epoch
    with pytest.raises(ValidationError, match="min_batch_size"):
        NegativeEdgeSampler(min_batch_size=0)


def test_umap_on_a_small_data_set_takes_fewer_steps_at_the_same_quality():
    """150 digits: the layout's epochs are 2 batches (⌈undirected edges / 1,024⌉), the main
    phase's 3 (⌈edges / batch_size⌉) instead of 10 each; trustworthiness stays (measured
    0.970 against 0.970 at 10 batches; the defaults on iris, wine, 300 / 600 digits and breast
    cancer, 3 seeds: in-sample trust@15 within 0.003)."""
    from infoblocks.blocks.embedding_quality import trustworthiness
    from infoblocks.plugins.registry import get_registry
    from infoblocks.recipes import ParametricUMAP

    x = get_registry().build("dataset", "digits").load()["data"][:150].astype(np.float32)
    fitted = ParametricUMAP(seed=0, layout_epochs=200, init_epochs=10, epochs=20).fit(x)
    batches = {p.name: p.sampler.num_batches(fitted.routine_.state) for p in fitted.routine_.phases
               if p.name in ("layout", "main")}
    assert batches["layout"] <= 3 and batches["main"] <= 4, batches
    assert trustworthiness(x, fitted.embedding_, k=15) >= 0.95


def test_uniform_negatives_and_missing_graph():
    graph = SparseRelations(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.ones(2), (40, 40))
    state = _state(dataset=Dataset(data=torch.randn(40, 2)), graph=graph)
    sampler = NegativeEdgeSampler(batch_size=8, neg_sampling_rate=2, negatives="uniform",
                                  batches_per_epoch=1)
    b = next(iter(sampler.batches(state)))
    assert b["items"].shape == (32,) and torch.equal(b["neg_target"], torch.arange(16, 32))
    with pytest.raises(ValidationError, match="negatives"):
        NegativeEdgeSampler(negatives="random")
    with pytest.raises(ValidationError, match="nope"):
        NegativeEdgeSampler(relation="nope").setup(state)


# ----------------------------------------------------------------------------- losses


def test_relation_loss_is_the_fuzzy_cross_entropy_and_stable():
    kernel = ModifiedCauchyTransform()
    y = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    model = torch.nn.Identity()
    batch = {"data": y, "pos_source": torch.tensor([0]), "pos_target": torch.tensor([1]),
             "neg_source": torch.tensor([0, 2]), "neg_target": torch.tensor([2, 3])}
    out = RelationLoss(kernel=kernel)(batch, torch.nn.ModuleDict({"main": model}), _state())
    q = lambda sq: 1 / (1 + kernel.a * sq ** kernel.b)  # noqa: E731
    naive_attraction = -math.log(q(torch.tensor(1.0)))
    naive_repulsion = -math.log(1 - q(torch.tensor(4.0)))
    # the coinciding pair (2, 3) is finite: q = 1 is never logged
    assert math.isfinite(float(out.value))
    assert float(out.metrics["attraction"]) == pytest.approx(naive_attraction, rel=1e-5)
    assert float(out.metrics["repulsion"]) > naive_repulsion  # plus the coinciding pair


def test_kl_loss_matches_direct_kl():
    torch.manual_seed(0)
    n = 12
    p = torch.rand(n, n)
    p = p + p.T
    p.fill_diagonal_(0)
    p = p / p.sum()
    y = torch.randn(n, 2)
    state = _state(P=DenseRelations(p).to_sparse())
    batch = {"data": y, "index": torch.arange(n)}
    out = KLLoss()(batch, torch.nn.ModuleDict({"main": torch.nn.Identity()}), state)
    w = 1 / (1 + torch.cdist(y, y) ** 2)
    w.fill_diagonal_(0)
    q = w / w.sum()
    mask = p > 0
    kl = (p[mask] * torch.log(p[mask] / q[mask])).sum()
    assert float(out.metrics["kl"]) == pytest.approx(float(kl), rel=1e-4)
    # a batch sees P restricted to it, renormalised
    sub = KLLoss().batch_p(torch.tensor([3, 7, 1]), state)
    expected = p[[3, 7, 1]][:, [3, 7, 1]]
    assert torch.allclose(sub, expected / expected.sum())


# ----------------------------------------------------------------------------- init


def test_spectral_init_of_a_ring_is_a_circle():
    n = 40
    i = torch.arange(n)
    rows = torch.cat([i, i])
    cols = torch.cat([(i + 1) % n, (i - 1) % n])
    y = SpectralInit()(SparseRelations(rows, cols, torch.ones(2 * n), (n, n)))
    # the two leading non-trivial Laplacian eigenvectors of a ring are cos and sin
    radius = y.norm(dim=1)
    assert y.shape == (n, 2) and float(radius.std() / radius.mean()) < 0.01
    assert float(y[:, 0].std(unbiased=False)) == pytest.approx(1.0, rel=1e-3)


def test_spectral_init_sparse_solver_matches_dense():
    _, knn = _knn(n=400, k=10, d=3, seed=5)
    graph = Symmetrize()(ConnectivityBasedRescale()(knn))
    y = SpectralInit()(graph).double()
    a = graph.to_dense().values.double()
    a = (a + a.T) / 2
    inv = torch.diag(a.sum(1) ** -0.5)
    _, vecs = torch.linalg.eigh(inv @ a @ inv)
    ref = vecs[:, -3:-1].flip(1)  # the two leading non-trivial eigenvectors
    # same subspace: projecting y onto span(ref) keeps (almost) all of it
    coef = torch.linalg.lstsq(ref, y - y.mean(0)).solution
    residual = (y - y.mean(0)) - ref @ coef
    assert float(residual.norm() / (y - y.mean(0)).norm()) < 0.05


def test_spectral_init_of_a_disconnected_graph():
    # two rings plus an isolated pair: the per-component fallback
    def ring(n, offset):
        i = torch.arange(n)
        return torch.cat([i, i]) + offset, torch.cat([(i + 1) % n, (i - 1) % n]) + offset
    r1, c1 = ring(60, 0)
    r2, c2 = ring(40, 60)
    rows = torch.cat([r1, r2, torch.tensor([100, 101])])
    cols = torch.cat([c1, c2, torch.tensor([101, 100])])
    y = SpectralInit()(SparseRelations(rows, cols, torch.ones(rows.numel()), (102, 102)))
    assert y.shape == (102, 2) and torch.isfinite(y).all()
    centre_1, centre_2 = y[:60].mean(0), y[60:100].mean(0)
    spread_1 = (y[:60] - centre_1).norm(dim=1).max()
    assert (centre_1 - centre_2).norm() > spread_1  # components do not overlap


def test_spectral_init_needs_more_nodes_than_components():
    pair = SparseRelations(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.ones(2), (2, 2))
    with pytest.raises(ValidationError, match=r"n_components = 2 needs at least 3 nodes"):
        SpectralInit(n_components=2)(pair)  # was a (2, 1) layout
    assert SpectralInit(n_components=1)(pair).shape == (2, 1)


def test_pca_init_matches_svd():
    x = torch.randn(100, 6) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    y = PCAInit(scale=2.0)(x)
    xc = (x - x.mean(0)).double().numpy()
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    ref = u[:, :2] * s[:2]
    ref = ref / ref[:, 0].std() * 2.0
    assert np.allclose(np.abs(y.numpy()), np.abs(ref), atol=1e-4)
    with pytest.raises(ValidationError, match="accepts"):
        PCAInit()(EdgeRelations(torch.tensor([0]), torch.tensor([1]), torch.ones(1), (2, 2)))


def test_connectivity_rescale_dense_equals_sparse_with_all_neighbours():
    x = torch.randn(30, 3)
    d = torch.cdist(x, x)
    dense = ConnectivityBasedRescale()(DenseRelations(d)).values
    sparse = ConnectivityBasedRescale()(NeighborBasedPDist(n_neighbors=29).compute(x))
    assert torch.allclose(dense, sparse.to_dense().values, atol=1e-5)


def test_blocks_pass_the_plugin_conformance_check():
    from infoblocks.blocks.digits import Digits
    from infoblocks.plugins.testing import check_block

    for cls in (ConnectivityBasedRescale, PerplexityBasedRescale, ModifiedCauchyTransform,
                StudentTTransform, NegativeEdgeSampler, RelationLoss, KLLoss, SpectralInit,
                PCAInit, NeighborBasedPDist, Digits):
        check_block(cls)
    check_block(FreePositions, {"n_items": 7})
    data = Digits().load()
    assert data["data"].shape == (1797, 64) and data["data"].max() == 16
    assert np.bincount(data["target"]).tolist()[:3] == [178, 182, 177]  # UCI class counts


# ----------------------------------------------------------------------------- free layout


def _two_blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(n // 2, 5)), rng.normal(size=(n // 2, 5)) + 6.0])
    return torch.tensor(x).float()


def test_free_positions_start_from_a_global_and_index():
    start = torch.arange(12.0).reshape(6, 2)
    module = FreePositions(n_items=6, init="start", scale=2.0).build()
    module.on_phase_start(_state(start=start))
    y = module.positions.detach()
    assert torch.allclose(y.mean(0), torch.zeros(2), atol=1e-6)
    assert float(y[:, 0].std()) == pytest.approx(2.0, rel=1e-5)  # first axis scaled to `scale`
    assert torch.allclose(module(torch.tensor([4, 1])), y[[4, 1]])
    module.on_phase_start(_state(start=torch.zeros(6, 2)))  # set up once: a later phase keeps training
    assert torch.equal(module.positions.detach(), y)
    with pytest.raises(ValidationError, match="shape"):
        FreePositions(n_items=5, init="start").build().on_phase_start(_state(start=start))
    with pytest.raises(ValidationError, match="scale"):
        FreePositions(n_items=5, scale=0.0)


def test_free_layout_phase_lowers_the_umap_loss_and_separates_blobs():
    from infoblocks.blocks.phases import TrainingPhase
    from infoblocks.blocks.routine import GlobalRelation, Routine

    x = _two_blobs()
    routine = Routine(
        dataset={"data": x},
        models={"main": torch.nn.Linear(5, 2), "layout": FreePositions(n_items=120, scale=1.0)},
        global_relations={
            "graph": GlobalRelation(relation={"name": "neighbor_pdist", "n_neighbors": 10},
                                    transforms=["connectivity_rescale", "symmetrize"]),
            "positions": GlobalRelation(input="data", transforms=[{"name": "pca_init"}])},
        phases=[TrainingPhase(
            name="layout", epochs=30, trainable=["layout"], learning_rate=0.1,
            sampler={"name": "negative_edges", "batch_size": 256, "batches_per_epoch": 10,
                     "negatives": "uniform", "keys": []},
            loss={"name": "relation", "model": "layout", "input": "items"})])
    before = routine.compute_global_relations()["positions"].clone()
    main_before = routine.models["main"].weight.detach().clone()
    routine.train()
    losses = [r["loss"] for r in routine.history.rows]
    y = routine.models["layout"].positions.detach()
    d = torch.cdist(y, y).fill_diagonal_(math.inf)
    same_blob = ((d.topk(10, largest=False).indices < 60) == (torch.arange(120) < 60)[:, None])
    assert losses[-1] < 0.8 * losses[0]  # measured: 4.22 -> 2.34
    assert not torch.allclose(y / y[:, 0].std(), before / before[:, 0].std(), atol=0.1)
    assert float(same_blob.double().mean()) == 1.0  # every point's 10 nearest: its own blob
    assert torch.equal(routine.models["main"].weight, main_before)  # not trained here


def test_position_loss_targets_another_models_output():
    from infoblocks.blocks.losses import PositionLoss

    table = FreePositions(n_items=4, init=None).build()
    with torch.no_grad():
        table.positions.copy_(torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]))
    models = torch.nn.ModuleDict({"main": torch.nn.Identity(), "layout": table})
    batch = {"data": torch.zeros(2, 2), "index": torch.tensor([1, 3])}
    out = PositionLoss(target_model="layout")(batch, models, _state())
    assert float(out.value) == pytest.approx((4 + 9 + 36 + 49) / 2)
    out.value.requires_grad and out.value.backward()
    assert table.positions.grad is None  # targets are constants
    # author10 A10-3: an encoder of the wrong width was named neither by slot nor by width
    batch["data"] = torch.zeros(2, 3)
    with pytest.raises(ValidationError, match=r"output of models.main \(Identity\) has shape "
                                              r"\(2, 3\) but its target 'layout' has shape "
                                              r"\(2, 2\): the model must map to 2 columns"):
        PositionLoss(target_model="layout")(batch, models, _state())


def test_mlp_pca_front_end_projects_on_the_principal_axes():
    from infoblocks.blocks.models import MLP

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(300, 8)) * np.arange(1, 9)[::-1]).float()
    net = MLP(in_dim=8, out_dim=2, hidden_dims=(4,), pca_dims=3).build()
    net.on_phase_start(_state(dataset=Dataset(data=x)))
    projected = net[0](x)
    centred = (x - x.mean(0)).double()
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:3].T
    # the same subspace, axes up to sign
    assert torch.allclose(projected.double().abs(), reference.abs(), atol=1e-3)
    assert net(x).shape == (300, 2)
    assert list(net[1][0].weight.shape) == [4, 3]  # the first layer sees 3 inputs
    with pytest.raises(ValidationError, match="pca_dims"):
        MLP(in_dim=8, out_dim=2, pca_dims=9)
    unfitted = MLP(in_dim=8, out_dim=2, hidden_dims=(4,), pca_dims=3).build()
    with pytest.raises(ValidationError, match="fitted on the dataset array 'data'"):
        unfitted.on_phase_start(_state(dataset=Dataset(x=x)))  # no silent truncation to 3 columns


# ----------------------------------------------------------------------------- contracts


def test_declared_contracts_of_the_sampler_and_losses():
    from infoblocks.blocks.embedding import ITEM_EDGES

    graph = SparseRelations(torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]), torch.ones(3),
                            (3, 3))
    positions = torch.arange(6.0).reshape(3, 2)
    state = _state(dataset=Dataset(data=torch.randn(3, 4), labels=torch.arange(3)),
                   graph=graph, positions=positions)
    sampler = NegativeEdgeSampler(batch_size=4, neg_sampling_rate=2, batches_per_epoch=1,
                                  keys=["data"], gather=["positions"])
    assert sampler.batch_type is ITEM_EDGES
    assert sampler.required_globals() == {"graph", "positions"}
    fields = sampler.batch_fields(state)
    assert fields == {"items", "pos_source", "pos_target", "neg_source", "neg_target", "data",
                      "positions"}
    sampler.setup(state)
    batch = next(iter(sampler.batches(state)))
    assert set(batch) == fields  # the declaration is what the batches hold
    assert torch.equal(batch["positions"], positions[batch["items"]])
    assert set(NegativeEdgeSampler(keys=[]).batch_fields(state)) == ITEM_EDGES.fields
    relation = RelationLoss(model="layout", input="items")
    assert relation.required_fields() == {"items", "pos_source", "pos_target", "neg_source",
                                          "neg_target"}
    assert relation.required_models() == {"layout"}
    assert relation.reports == {"attraction", "repulsion", "anchoring"}
    kl = KLLoss(relation="P2")
    assert kl.required_fields() == {"data", "index"} and kl.required_globals() == {"P2"}
    assert kl.reports == {"kl"}
    with pytest.raises(ValidationError, match="gathers 'graph'"):
        NegativeEdgeSampler(gather=["graph"]).setup(state)


def test_losses_check_the_kernel_protocol():
    from infoblocks.blocks.transforms import Normalize

    with pytest.raises(ValidationError, match=r"kernel.logit\(sq_dist\)"):
        RelationLoss(kernel=Normalize())
    with pytest.raises(ValidationError, match=r"kernel.log_kernel\(sq_dist\)"):
        KLLoss(kernel="normalize")


def test_kl_loss_owns_its_cache_and_resets_it_at_phase_start():
    p = torch.rand(6, 6)
    p = (p + p.T).fill_diagonal_(0)
    loss = KLLoss()
    first = _state(P=DenseRelations(p / p.sum()).to_sparse())
    loss.on_phase_start(first)
    before = loss.batch_p(torch.arange(6), first)
    assert not hasattr(first, "scratch")  # no shared scratch memory
    q = torch.ones(6, 6).fill_diagonal_(0)
    second = _state(P=DenseRelations(q / q.sum()).to_sparse())
    assert torch.equal(loss.batch_p(torch.arange(6), second), before)  # cached within a phase
    loss.on_phase_start(second)  # a new phase reads P again
    assert torch.allclose(loss.batch_p(torch.arange(6), second), q / q.sum())

"""Blocks of the (Differentiable) Information Imbalance: distances, ranks, softmax, loss,
feature weights, sampler, chunked full-data values and the classic imbalance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infoblocks.blocks.contracts import ROWS_COLS
from infoblocks.blocks.data import Dataset
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.imbalance import (DIILoss, FeatureWeightedDistance, FeatureWeights, GaussianSoftmax, Ranks,
                                         RowsColumnsSampler, WeightedSquaredEuclidean,
                                         chunked_dii, data_unit, diagonal_mask,
                                         exclusion_logits,
                                         expected_ranks, information_imbalance, neighbour_index,
                                         periods_tensor, rank_rows, softmax_coefficients,
                                         squared_differences)
from infoblocks.blocks.relations import DenseRelations
from infoblocks.blocks.state import TrainState
from infoblocks.plugins.registry import get_registry
from infoblocks.plugins.testing import check_block

TWO_PI = 2 * math.pi


def make_state(**arrays) -> TrainState:
    models = torch.nn.ModuleDict({"weights": FeatureWeights(
        n_features=arrays["data_A"].shape[1]).build()})
    return TrainState(models=models, dataset=Dataset(**arrays), globals={},
                      device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                      rng=np.random.default_rng(0))


def dense_dii(a: np.ndarray, b: np.ndarray, w: np.ndarray, k: int = 1) -> float:
    """The DII formula written out densely in float64 (reference for the loss)."""
    n = len(a)
    d2 = (((a[:, None, :] - a[None, :, :]) * w) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    lam = 0.1 * np.sort(d2, axis=1)[:, k - 1]
    logits = -d2 / lam[:, None]
    c = np.exp(logits - logits.max(1, keepdims=True))
    c /= c.sum(1, keepdims=True)
    db = ((b[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(db, -np.inf)
    ranks = np.argsort(np.argsort(db, axis=1), axis=1).astype(float)  # self 0, nearest 1
    return 2.0 / n ** 2 * float((c * ranks).sum())


# ----------------------------------------------------------------------------- registry


def test_blocks_are_registered_by_name():
    names = {(e.kind, e.name) for e in get_registry().entries()}
    for entry in [("distance", "weighted_sqeuclidean"), ("transform", "ranks"),
                  ("transform", "gaussian_softmax"), ("loss", "dii"),
                  ("model", "feature_weights"), ("sampler", "rows_columns")]:
        assert entry in names


@pytest.mark.parametrize("cls, example", [
    (WeightedSquaredEuclidean, {"weights": [1.0, 2.0, 0.5], "periods": [None, 1.0, 0]}),
    (Ranks, None), (GaussianSoftmax, {"k": 2}), (FeatureWeights, {"n_features": 3}),
    (RowsColumnsSampler, {"batches_per_epoch": 2}), (DIILoss, {"k_init": 3}),
])
def test_conformance(cls, example):
    check_block(cls, example)


# ----------------------------------------------------------------------------- distances


def test_periodic_difference_wraps_an_angle():
    a = torch.tensor([[0.1, 0.1]])
    b = torch.tensor([[TWO_PI - 0.1, TWO_PI - 0.1]])
    sq = squared_differences(a, b, periods_tensor([TWO_PI, None], 2))
    # first feature wraps: the angles are 0.2 apart; the second is not periodic
    assert sq[0, 0, 0].item() == pytest.approx(0.04, rel=1e-4)
    assert sq[0, 0, 1].item() == pytest.approx((TWO_PI - 0.2) ** 2, rel=1e-5)


def test_weighted_distance_matches_formula_and_chunks():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(9, 3, generator=gen) * 4, torch.rand(7, 3, generator=gen) * 4
    w = [2.0, 0.5, 1.0]
    dist = WeightedSquaredEuclidean(weights=w, periods=[None, 3.0, None])
    d = dist.pairwise(a, b)
    diff = (a[:, None] - b[None]).numpy()
    diff[..., 1] -= 3.0 * np.round(diff[..., 1] / 3.0)
    expected = (diff ** 2 * np.array(w) ** 2).sum(-1)
    np.testing.assert_allclose(d.numpy(), expected, rtol=1e-5)
    # a tiny chunk budget (one row at a time) gives the same matrix
    small = WeightedSquaredEuclidean(weights=w, periods=[None, 3.0, None], max_elements=1)
    np.testing.assert_allclose(small.pairwise(a, b).numpy(), d.numpy(), rtol=1e-6)
    np.testing.assert_allclose(dist.paired(a[:7], b).numpy(), np.diag(expected[:7]), rtol=1e-5)


def test_data_unit_is_the_power_of_two_nearest_the_spread():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(300, 4)), dtype=torch.float32)
    assert data_unit(x) == 1.0                       # unit-scale data: left exactly as it is
    assert data_unit(x * 1e-6) == 2.0 ** -20
    assert data_unit(x * 1e30) == 2.0 ** 100
    assert data_unit(x * 1e30) < float("inf")        # the spread of 1e30 data, no overflow
    assert data_unit(torch.ones(10, 3)) == 1.0       # constant data: nothing to scale by
    assert data_unit(torch.zeros(1, 3)) == 1.0


def test_a_unit_divides_the_differences_exactly_in_every_path():
    # d = Σ w² (Δ / unit)², periods in the data's units; a power-of-two unit rescales exactly,
    # so the data at 2^40 × their scale with unit 2^40 give the unit-scale numbers bit for bit
    rng = np.random.default_rng(0)
    a = torch.tensor(rng.uniform(0, TWO_PI, size=(12, 3)), dtype=torch.float32)
    w = torch.tensor([0.5, 1.0, 2.0])
    unit = 2.0 ** 40
    plain = WeightedSquaredEuclidean(periods=[TWO_PI, None, None])
    scaled = WeightedSquaredEuclidean(periods=[TWO_PI * unit, None, None], unit=unit)
    big = a * unit
    exclude = diagonal_mask(12, 12)
    assert torch.equal(scaled.weighted_pairwise(big, big, w), plain.weighted_pairwise(a, a, w))
    assert torch.equal(scaled.pairwise(big), plain.pairwise(a))
    assert torch.equal(scaled.paired(big, big.flip(0)), plain.paired(a, a.flip(0)))
    assert torch.equal(scaled.combine(scaled.prepare(big, big, exclude), w),
                       plain.combine(plain.prepare(a, a, exclude), w))
    out, work = torch.empty(12, 12), torch.empty(12, 12)
    assert torch.equal(scaled.pairwise_into(big, big, w, out.clone(), work),
                       plain.pairwise_into(a, a, w, out.clone(), work))
    parts = big.view(3, 4, 3)
    assert torch.equal(scaled.pairwise_batches(parts), plain.pairwise_batches(a.view(3, 4, 3)))
    batched = scaled.prepare_batches(parts, diagonal_mask(4, 4))
    reference = plain.prepare_batches(a.view(3, 4, 3), diagonal_mask(4, 4))
    assert all(torch.equal(scaled.combine(t, w), plain.combine(r, w))
               for t, r in zip(batched, reference))
    with pytest.raises(ValidationError, match="`unit` must be a positive number"):
        WeightedSquaredEuclidean(unit=0.0)


def test_periods_of_wrong_length_are_rejected():
    with pytest.raises(ValidationError, match="`periods_A` has 2 entries but the data has 3"):
        periods_tensor([1.0, None], 3, "periods_A")
    with pytest.raises(ValidationError, match="positive numbers or None"):
        periods_tensor([1.0, -2.0], 2, "periods_A")


# ----------------------------------------------------------------------------- ranks


def test_ranks_one_is_nearest_and_self_is_excluded():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    d = WeightedSquaredEuclidean().pairwise(x, x)
    ranks = Ranks()(DenseRelations(d)).values
    # row 0: neighbours 1 (d=1), 2 (d=9), 3 (d=49); row 2: 1 (d=4), 0 (d=9), 3 (d=16)
    expected = [[0, 1, 2, 3], [1, 0, 2, 3], [2, 1, 0, 3], [3, 2, 1, 0]]
    assert ranks.tolist() == expected


def test_rank_rows_rectangular_rows_first():
    # rows are the first columns: (i, i) is "the point itself"
    d = torch.tensor([[0.0, 5.0, 1.0], [2.0, 0.0, 3.0]])
    ranks = rank_rows(d, diagonal_mask(2, 3))
    assert ranks.tolist() == [[0.0, 2.0, 1.0], [1.0, 0.0, 2.0]]


# ----------------------------------------------------------------------------- softmax


def test_gaussian_softmax_rows_sum_to_one_self_zero_and_lambda():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, generator=gen)
    d2 = WeightedSquaredEuclidean().pairwise(x, x)
    c = GaussianSoftmax(k=2)(DenseRelations(d2)).values
    assert torch.allclose(c.sum(1), torch.ones(8))
    assert torch.all(torch.diagonal(c) == 0)
    # λ_i = 0.1 × squared distance to the 2nd neighbour, by hand for row 0
    row = d2[0].clone()
    row[0] = float("inf")
    lam = 0.1 * row.sort().values[1]
    expected = torch.softmax(-row / lam, 0)
    assert torch.allclose(c[0], expected, atol=1e-6)
    fixed = GaussianSoftmax(lambda_value=0.5)(DenseRelations(d2)).values
    row_fixed = torch.softmax(-row / 0.5, 0)
    assert torch.allclose(fixed[0], row_fixed, atol=1e-6)


@pytest.mark.parametrize("point_adaptive", [True, False])
@pytest.mark.parametrize("lambda_value", [None, 0.3])
def test_fused_expected_ranks_gradient_matches_autograd(point_adaptive, lambda_value):
    # the fused backward must equal autograd through softmax, including the path through λ
    gen = torch.Generator().manual_seed(3)
    n = 9
    d = torch.rand(n, n, generator=gen, dtype=torch.float64) * 2
    d = (d + d.T) / 2
    d.fill_diagonal_(0)
    d.requires_grad_(True)
    ranks = torch.rand(n, n, generator=gen, dtype=torch.float64) * n
    exclude = diagonal_mask(n, n)
    logits_mask = exclusion_logits(exclude).double()
    fused = expected_ranks(d, ranks, logits_mask, k=2, lambda_value=lambda_value,
                           point_adaptive=point_adaptive).sum()
    index = neighbour_index(d, logits_mask, 2)
    if lambda_value is None:
        raw = 0.1 * d.gather(1, index).squeeze(1)
        lam = raw if point_adaptive else raw.mean().expand_as(raw)
    else:
        lam = torch.full((n,), lambda_value, dtype=torch.float64)
    reference = (softmax_coefficients(d, lam, exclude) * ranks).sum()
    g_fused, = torch.autograd.grad(fused, d)
    g_ref, = torch.autograd.grad(reference, d)
    assert fused.item() == pytest.approx(reference.item(), rel=1e-12)
    assert torch.allclose(g_fused, g_ref, atol=1e-12)


def test_k_larger_than_the_batch_is_an_error():
    d = torch.rand(4, 4)
    with pytest.raises(ValidationError, match="`k` = 4 but each row has only 4 columns"):
        neighbour_index(d, exclusion_logits(diagonal_mask(4, 4)), 4)


# ----------------------------------------------------------------------------- feature weights


def test_feature_weights_groups_rescale_and_soft_threshold():
    module = FeatureWeights(n_features=5, groups=[2, 3], params_init=[0.3, 0.4]).build()
    assert module.feature_weights().tolist() == pytest.approx([0.3, 0.3, 0.4, 0.4, 0.4])
    with torch.no_grad():
        module.weights.copy_(torch.tensor([3.0, 4.0]))
    module.after_optimizer_step(lr=0.1)
    # rescaled to the initial norm 0.5
    assert module.weights.tolist() == pytest.approx([0.3, 0.4], rel=1e-6)
    l1 = FeatureWeights(n_features=3, params_init=[0.6, 0.0, 0.8], l1_strength=1.0).build()
    with torch.no_grad():
        l1.weights.copy_(torch.tensor([0.6, 0.05, 0.8]))
    l1.after_optimizer_step(lr=0.1)
    # threshold lr × strength = 0.1 zeroes the small weight; the rest keep norm 1
    w = l1.weights.detach()
    assert w[1].item() == 0.0
    assert w.norm().item() == pytest.approx(1.0, rel=1e-6)


def test_feature_weights_validation():
    with pytest.raises(ValidationError, match="group sizes must add up"):
        FeatureWeights(n_features=5, groups=[2, 2])
    with pytest.raises(ValidationError, match="`params_init` has 3 entries but 2 weights"):
        FeatureWeights(n_features=5, groups=[2, 3], params_init=[1, 1, 1])
    with pytest.raises(ValidationError, match="not all zero"):
        FeatureWeights(n_features=2, params_init=[0, 0])


# ----------------------------------------------------------------------------- sampler


def test_rows_columns_sampler_modes():
    state = make_state(data_A=np.zeros((10, 2)), data_B=np.zeros((10, 1)))
    full = RowsColumnsSampler()
    full.setup(state)
    first, second = next(full.batches(state)), next(full.batches(state))
    assert first["rows"] is second["rows"]  # static: cached tables stay valid
    mini = RowsColumnsSampler(batches_per_epoch=3)
    mini.setup(state)
    parts = list(mini.batches(state))
    assert len(parts) == 3
    covered = torch.cat([p["rows"] for p in parts]).sort().values
    assert covered.tolist() == list(range(10))  # every point once per epoch
    assert all(p["rows"] is p["cols"] for p in parts)
    sub = RowsColumnsSampler(num_points_rows=4)
    sub.setup(state)
    batch = next(sub.batches(state))
    assert batch["rows"].numel() == 4 and batch["cols"].numel() == 10
    assert torch.equal(batch["cols"][:4], batch["rows"])  # rows first: (i, i) is self
    with pytest.raises(ValidationError, match="`num_points_rows` = 10 must be smaller"):
        RowsColumnsSampler(num_points_rows=10).setup(state)


# ----------------------------------------------------------------------------- loss


def test_dii_loss_equals_dense_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 3))
    b = a * np.array([3.0, 1.0, 0.2])
    state = make_state(data_A=a, data_B=b)
    idx = torch.arange(40)
    out = DIILoss(k_init=2, k_final=2)({"rows": idx, "cols": idx}, state.models, state)
    expected = dense_dii(a.astype(np.float32).astype(float), b, np.full(3, 0.1), k=2)
    assert out.value.item() == pytest.approx(expected, rel=1e-4)
    assert out.metrics["dii"].item() == pytest.approx(expected, rel=1e-4)


def test_dii_loss_with_user_distance_matrix_equals_features():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 2))
    b = rng.normal(size=(30, 2))
    state = make_state(data_A=a, data_B=b)
    dist_b = torch.cdist(torch.tensor(b, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    state.globals["distances_B"] = dist_b
    idx = torch.arange(30)
    batch = {"rows": idx, "cols": idx}
    from_features = DIILoss()(batch, state.models, state).value
    from_matrix = DIILoss(distances_key="distances_B")(batch, state.models, state).value
    assert from_matrix.item() == pytest.approx(from_features.item(), rel=1e-6)


def test_k_schedule_is_a_cosine_from_k_init_to_k_final():
    loss = DIILoss(k_init=10, k_final=2)
    state = make_state(data_A=np.zeros((3, 1)), data_B=np.zeros((3, 1)))
    state.n_epochs, state.total_steps = 5, 10  # set by the phase: epochs x batches
    ks = []
    for step in range(11):
        state.step = step
        ks.append(loss.current_k(state))
    assert ks[0] == 10 and ks[-1] == 2 and ks[5] == 6  # half way: the mean
    assert ks == sorted(ks, reverse=True)


# ----------------------------------------------------------------------------- full-data values


def test_chunked_dii_matches_dense_and_excludes_close_pairs():
    rng = np.random.default_rng(2)
    a = torch.tensor(rng.normal(size=(50, 2)), dtype=torch.float32)
    b = a * torch.tensor([5.0, 1.0])
    w = torch.tensor([0.5, 0.5])
    idx = torch.arange(50)
    per_row = chunked_dii(a, w, idx, idx, k=1, data_B=b, max_elements=300)
    assert per_row.mean().item() == pytest.approx(
        dense_dii(a.double().numpy(), b.double().numpy(), w.double().numpy()), rel=1e-4)
    # excluding |i − j| ≤ 2 changes which neighbours count; all-pairs values stay finite
    close = chunked_dii(a, w, idx, idx, k=1, data_B=b, discard_close_ind=2, normalization=46)
    assert torch.isfinite(close).all() and close.mean().item() != per_row.mean().item()


def test_classic_information_imbalance_limits():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    same = information_imbalance(x, x)
    # identical spaces: each nearest neighbour has rank 1, Δ = 2/N
    assert same == pytest.approx((2 / 400, 2 / 400))
    shuffled = information_imbalance(x, x[rng.permutation(400)])
    # unrelated spaces: the neighbour's rank is uniform on 1..N-1, Δ ≈ 1
    assert shuffled[0] == pytest.approx(1.0, abs=0.1) and shuffled[1] == pytest.approx(1.0, abs=0.1)
    # B a function of A's first feature: A predicts B much better than B predicts A
    a_to_b, b_to_a = information_imbalance(x, x[:, :1])
    assert a_to_b < 0.3 and b_to_a > 2 * a_to_b
    with pytest.raises(ValidationError, match="Mismatched numbers of samples"):
        information_imbalance(x, x[:10])


def test_epoch_tables_equal_per_batch_tables():
    # equal mini-batches are prepared for the whole epoch at once; the loss must not change
    rng = np.random.default_rng(4)
    a = rng.normal(size=(60, 3))
    b = np.column_stack([np.mod(a[:, 0], 1.0), a[:, 1]])
    state = make_state(data_A=a, data_B=b)
    sampler = RowsColumnsSampler(batches_per_epoch=3)
    sampler.setup(state)
    loss = DIILoss(k_init=2, k_final=2,
                   distance_A={"name": "weighted_sqeuclidean", "periods": [None, 2.0, None]},
                   distance_B={"name": "weighted_sqeuclidean", "periods": [1.0, None]})
    for batch in sampler.batches(state):
        assert "epoch_parts" in batch
        together = loss(batch, state.models, state).value
        alone = loss({"rows": batch["rows"].clone(), "cols": batch["cols"].clone()},
                     state.models, state).value
        assert together.item() == pytest.approx(alone.item(), rel=1e-6)


def test_ranks_from_data_with_a_metric_through_the_registry():
    # "ranks of B from data and a metric": a pdist relation followed by the ranks transform
    from infoblocks.blocks.routine import GlobalRelation

    x = np.array([[0.0, 0.0], [0.9, 0.0], [0.0, 2.0], [5.0, 5.0]])
    relation = GlobalRelation(
        relation={"name": "pdist", "metric": {"name": "weighted_sqeuclidean",
                                              "periods": [1.0, None]}},
        transforms=["ranks"], input="data_B")
    state = make_state(data_A=x, data_B=x)
    ranks = relation.compute(state).values
    # with period 1 on the first feature, point 1 (x = 0.9) is 0.1 from point 0
    assert ranks[0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert ranks[1, 0].item() == 1.0


# ----------------------------------------------------------------------------- slots and contracts


class PlainSquaredEuclidean(FeatureWeightedDistance):
    """Only the required method of the distance protocol: the defaults do the rest."""

    name = "test_plain_sqeuclidean"

    def weighted_pairwise(self, a, b, weights):
        diff = a[:, None, :] - b[None, :, :]
        return (diff * diff) @ (weights * weights) if weights is not None \
            else (diff * diff).sum(-1)


def test_sampler_and_loss_declare_their_contracts():
    assert RowsColumnsSampler.batch_type is ROWS_COLS
    state = make_state(data_A=np.zeros((6, 2)), data_B=np.zeros((6, 1)))
    assert RowsColumnsSampler(batches_per_epoch=2).batch_fields(state) == {"rows", "cols"}
    loss = DIILoss()
    assert loss.required_fields() == {"rows", "cols"} and loss.reports == {"dii", "dii_last_batch"}
    assert loss.required_globals() == {"data_A", "data_B"}
    assert DIILoss(distances_key="dist").required_globals() == {"data_A", "dist"}
    assert loss.required_models() == {"weights"}


def test_the_loss_owns_its_tables_and_resets_them_at_phase_start():
    rng = np.random.default_rng(0)
    state = make_state(data_A=rng.normal(size=(20, 2)), data_B=rng.normal(size=(20, 1)))
    idx = torch.arange(20)
    loss = DIILoss()
    first = loss({"rows": idx, "cols": idx}, state.models, state).value
    cached = loss._batch_tables
    assert cached is not None and cached[0] is idx
    loss({"rows": idx, "cols": idx}, state.models, state)
    assert loss._batch_tables is cached  # same batch tensors: the tables are reused
    loss.on_phase_start(state)
    assert loss._batch_tables is None and loss._epoch_tables is None
    again = loss({"rows": idx, "cols": idx}, state.models, state).value
    assert again.item() == first.item()
    assert not hasattr(state, "scratch")


def test_a_distance_with_only_weighted_pairwise_gives_the_built_in_numbers():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(30, 3))
    b = a * np.array([3.0, 1.0, 0.2])
    idx = torch.arange(30)
    values, grads = [], []
    for distance in ("weighted_sqeuclidean", PlainSquaredEuclidean()):
        state = make_state(data_A=a, data_B=b)
        out = DIILoss(k_init=2, k_final=2, distance_A=distance)(
            {"rows": idx, "cols": idx}, state.models, state).value
        out.backward()
        values.append(out.item())
        grads.append(state.models["weights"].weights.grad.clone())
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)
    # the row chunks of the final DII and the classic imbalance take it too
    x, y = torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    w = torch.tensor([0.5, 0.2, 0.1])
    built_in = chunked_dii(x, w, idx, idx, k=2, data_B=y)
    plain = chunked_dii(x, w, idx, idx, k=2, data_B=y, distance_A=PlainSquaredEuclidean(),
                        max_elements=500)
    assert torch.allclose(built_in, plain, rtol=1e-5)
    assert information_imbalance(a, b, weights_A=[0.5, 0.2, 0.1]) == information_imbalance(
        a, b, weights_A=[0.5, 0.2, 0.1], distance_A=PlainSquaredEuclidean())


def test_distance_a_must_take_the_weights():
    with pytest.raises(ValidationError, match="distance that takes the learnable feature weights"):
        DIILoss(distance_A="euclidean")


def test_batched_epoch_tables_match_the_protocol_defaults():
    # the built-in's batched prepare_batches / pairwise_batches = the per-batch defaults
    rng = np.random.default_rng(6)
    a = torch.tensor(rng.normal(size=(3, 8, 2)), dtype=torch.float32)
    exclude = diagonal_mask(8, 8)
    built_in = WeightedSquaredEuclidean(periods=[0.0, 1.5])
    w = torch.tensor([0.7, 0.3])
    batched = built_in.prepare_batches(a, exclude)
    for i in range(3):
        alone = built_in.combine(built_in.prepare(a[i], a[i], exclude), w)
        assert torch.equal(built_in.combine(batched[i], w), alone)
    by_loop = torch.stack([built_in.pairwise(x, x) for x in a])
    assert torch.equal(built_in.pairwise_batches(a), by_loop)
    plain = PlainSquaredEuclidean()
    tables = plain.prepare_batches(a, exclude)
    generic = plain.combine(tables[1], w)
    fast = built_in.combine(built_in.prepare(a[1], a[1], exclude), torch.tensor([0.7, 0.3]))
    reference = WeightedSquaredEuclidean().combine(
        WeightedSquaredEuclidean().prepare(a[1], a[1], exclude), w)
    assert torch.allclose(generic[~exclude], reference[~exclude], rtol=1e-5)
    # excluded pairs: far beyond every real distance (finite), on either path
    assert generic[exclude].min() > 1e15 and reference[exclude].min() > 1e15
    assert torch.isfinite(generic).all() and torch.isfinite(fast).all()
    assert plain.pairwise_batches(a).shape == (3, 8, 8)


@pytest.mark.parametrize("batches, rows", [(1, None), (1, 23), (3, None)])
def test_shards_average_to_the_batch_loss_and_gradient(batches, rows):
    # what the engine does under torchrun, in one process: each rank's shard (rows
    # rank::world against all columns) scaled by the world size; their mean must be the
    # whole batch's DII and gradient (point-adaptive λ: no collective is needed)
    from infoblocks.blocks.distributed import Distributed

    rng = np.random.default_rng(1)
    a = rng.normal(size=(61, 3))
    state = make_state(data_A=a, data_B=a * [4.0, 1.0, 0.2])
    sampler = RowsColumnsSampler(batches_per_epoch=batches, num_points_rows=rows)
    sampler.setup(state)
    state.total_steps, state.n_epochs = batches, 1
    loss = DIILoss(k_init=3, k_final=3)
    w = state.models["weights"].weights
    batch = next(iter(sampler.batches(state)))
    whole = loss(batch, state.models, state).value
    (grad_whole,) = torch.autograd.grad(whole, w)
    for world in (2, 3):  # 61 rows (or 23, or 20): unequal shards
        values, grads = [], []
        for rank in range(world):
            state.dist = Distributed(rank=rank, world_size=world)
            value = loss(sampler.shard(batch, rank, world), state.models, state).value
            values.append(value)
            grads.append(torch.autograd.grad(value, w)[0])
        state.dist = Distributed()
        assert float(torch.stack(values).mean().detach()) == pytest.approx(float(whole.detach()),
                                                                      rel=1e-5)
        torch.testing.assert_close(torch.stack(grads).mean(0), grad_whole, rtol=1e-4,
                                   atol=1e-7)
    assert float(grad_whole.abs().max()) > 1e-3  # a gradient that can disagree


def test_feature_weights_of_the_wrong_length_name_the_model():
    # author10 A10-3: a plugin weights module with D - 1 weights failed as a matmul error
    # "inside its distance 'weighted_sqeuclidean'" (blamed the built-in distance)
    import numpy as np

    from infoblocks.blocks.errors import ContractError, PluginError
    from infoblocks.recipes.dii import DII

    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 5))
    routine = DII(epochs=2).build(a, a)
    weights = routine.models["weights"]
    weights.feature_index = weights.feature_index[:4]
    weights.grouped = True
    with pytest.raises((ContractError, PluginError),
                       match=r"models.weights \(FeatureWeightsModule\): `feature_weights\(\)` "
                             r"must return one weight per column of 'data_A' \(5,\), got \(4,\)"):
        routine.train()

"""Blocks of the MI family: samplers, critics, bounds and the all-pairs final estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from infoblocks.blocks.data import Dataset
from infoblocks.blocks.errors import ConfigError, NumericalError, ValidationError
from infoblocks.blocks.contracts import MARGINAL_PAIRS
from infoblocks.blocks.mutual_information import (
    BOUND_FUNCTIONS, JOINT_PAIRS, REFERENCE_PAIRS, BatchScores, DVLoss, InBatchSampler, InfoNCELoss, JointCritic,
    MarginalSampler, MINEELoss, MINELoss, NWJLoss, RandomSplit, ReferenceSampler,
    SeparableCritic, SMILELoss, dv_bound, log_mean_exp, pair_scores, shifts_for)
from infoblocks.blocks.state import TrainState
from infoblocks.plugins.registry import get_registry
from infoblocks.plugins.testing import check_block

RHO = 0.6
TRUE_MI = -0.5 * math.log(1 - RHO ** 2)  # Gaussian MI, nats


def gaussian(n: int, seed: int = 0, rho: float = RHO) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=gen)
    y = rho * x + math.sqrt(1 - rho ** 2) * torch.randn(n, 1, generator=gen)
    return x, y


class OptimalCritic(nn.Module):
    """t*(x, y) = log p(x, y) / (p(x) p(y)) for the unit-variance Gaussian with correlation ρ."""

    def __init__(self, rho: float = RHO, offset: float = 0.0) -> None:
        super().__init__()
        self.rho, self.offset = rho, offset
        self.dummy = nn.Parameter(torch.zeros(()))  # so that the optimiser has something

    def forward(self, x, y):
        r = self.rho
        x, y = x.squeeze(-1), y.squeeze(-1)
        quad = (r * r * x * x - 2 * r * x * y + r * r * y * y) / (2 * (1 - r * r))
        return -0.5 * math.log(1 - r * r) - quad + self.offset + 0 * self.dummy


def make_state(n: int = 200, seed: int = 0, **globals_) -> TrainState:
    x, y = gaussian(n, seed)
    return TrainState(models=nn.ModuleDict(), dataset=Dataset(x=x, y=y), globals=dict(globals_),
                      device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed),
                      rng=np.random.default_rng(seed))


# ---------------------------------------------------------------- registry / conformance


def test_blocks_registered_under_their_names():
    registry = get_registry()
    for kind, name in [("sampler", "marginal_pairs"), ("sampler", "reference"),
                       ("model", "joint_critic"), ("model", "separable_critic"),
                       ("loss", "dv"), ("loss", "mine_loss"), ("loss", "nwj_loss"),
                       ("loss", "infonce_loss"), ("loss", "smile_loss"), ("loss", "minee_loss")]:
        assert (kind, name) in registry, (kind, name)


@pytest.mark.parametrize("cls, example", [
    (MarginalSampler, None), (ReferenceSampler, None), (InBatchSampler, None),
    (RandomSplit, None), (DVLoss, None), (MINELoss, None),
    (NWJLoss, None), (InfoNCELoss, None), (SMILELoss, None), (MINEELoss, None),
    (JointCritic, {"x_dim": 2, "y_dim": 3}), (SeparableCritic, {"x_dim": 2, "y_dim": 3}),
])
def test_conformance(cls, example):
    check_block(cls, example)


# ---------------------------------------------------------------- samplers


def test_marginal_sampler_pairs_are_off_diagonal_and_sized():
    state = make_state(100)
    sampler = MarginalSampler(batch_size=20, marginal_factor=2.5)
    sampler.setup(state)
    batches = list(sampler.batches(state))
    assert len(batches) == 5  # one pass over 100 items in batches of 20
    x = state.dataset["x"]
    for b in batches:
        assert b["x"].shape == (20, 1) and b["x_marginal"].shape == (50, 1)  # n' = 2.5 b
        assert len(set(b["index"].tolist())) == 20  # without replacement inside a batch
        # (x_J, y_K) with J != K: x_marginal row is never paired with its own y
        j = (x[:, 0][None, :] == b["x_marginal"][:, 0][:, None]).float().argmax(1)
        k = (state.dataset["y"][:, 0][None, :] == b["y_marginal"][:, 0][:, None]).float().argmax(1)
        assert (j != k).all()


def test_marginal_sampler_pool_and_fixed_batches():
    state = make_state(100, train=torch.arange(10, 40))
    sampler = MarginalSampler(batch_size=None, index_key="train", fixed=True,
                              marginal_factor=3, replacement=True)
    sampler.setup(state)
    first, second = list(sampler.batches(state)), list(sampler.batches(state))
    assert len(first) == 1 and first[0]["x"].shape == (30, 1)  # whole pool, one batch
    assert ((first[0]["index"] >= 10) & (first[0]["index"] < 40)).all()
    assert torch.equal(first[0]["x_marginal"], second[0]["x_marginal"])  # fixed: same draws


@pytest.mark.parametrize("sampler, batch_type", [
    (InBatchSampler(batch_size=10, index_key="train"), JOINT_PAIRS),
    (MarginalSampler(batch_size=10, index_key="train"), MARGINAL_PAIRS),
    (ReferenceSampler(batch_size=10, index_key="train"), REFERENCE_PAIRS),
])
def test_samplers_declare_their_batches(sampler, batch_type):
    state = make_state(100, train=torch.arange(50))
    assert sampler.batch_type is batch_type
    assert sampler.required_globals() == {"x", "y", "train"}  # the split: a declared global
    sampler.setup(state)
    fields = sampler.batch_fields(state)
    assert batch_type.fields <= fields
    for batch in sampler.batches(state):
        assert set(batch) == fields  # exactly the declared fields, every batch
        assert (batch["index"] < 50).all()  # drawn from the pool only


def test_in_batch_sampler_and_split():
    state = make_state(100)
    split = {part: RandomSplit(test_fraction=0.3, part=part, seed=2).compute(state.dataset["x"])
             for part in ("train", "test", "all")}
    assert len(split["test"]) == 30 and len(split["train"]) == 70
    assert torch.equal(torch.cat([split["test"], split["train"]]), split["all"])
    assert sorted(split["all"].tolist()) == list(range(100))
    with pytest.raises(ValidationError, match="test_fraction"):
        RandomSplit(test_fraction=1.0)
    state.globals["test"] = split["test"]
    sampler = InBatchSampler(batch_size=8, index_key="test", fixed=True, fixed_seed=1)
    sampler.setup(state)
    first, again = list(sampler.batches(state)), list(sampler.batches(state))
    assert len(first) == 3 and all(torch.equal(a["x"], b["x"]) for a, b in zip(first, again))
    # a bound on an in-batch batch scores all b(b − 1) off-diagonal pairs
    models = nn.ModuleDict({"main": OptimalCritic()})
    scores = DVLoss().scores(first[0], models)
    assert scores.matrix.shape == (8, 8) and scores.negatives.shape == (56,)


def test_batch_scores_reduce_over_the_last_axis():
    # one bound definition serves a batch (1-D) and a bootstrap over resampled rows (2-D)
    joint, negatives = torch.randn(50).double(), torch.randn(200).double()
    single = dv_bound(BatchScores(joint, negatives))
    rows = torch.stack([joint, joint.flip(0)]), torch.stack([negatives, negatives.flip(0)])
    both = dv_bound(BatchScores(*rows))
    assert both.shape == (2,) and torch.allclose(both, single.expand(2))


def test_marginal_sampler_rejects_oversized_batch():
    state = make_state(30)
    with pytest.raises(ValidationError, match="exceeds the 30 items"):
        MarginalSampler(batch_size=50).setup(state)
    with pytest.raises(ValidationError, match="marginal_factor"):
        MarginalSampler(marginal_factor=0)


def test_all_pairs_refuses_a_batch_of_one():
    # user13 U13-6: MINE(negatives="all_pairs", batch_size=1) and InfoMax(batch_size=1) failed
    # in the first step with "loss 'mine_loss' raised ValueError: math domain error" (no
    # off-diagonal pair to take the negatives from)
    with pytest.raises(ValidationError, match="`batch_size` = 1: all_pairs"):
        InBatchSampler(batch_size=1)
    InBatchSampler(batch_size=2), InBatchSampler(batch_size=None)


def test_reference_sampler_uniform_and_gaussian():
    state = make_state(2000)
    uniform = ReferenceSampler(batch_size=100, reference="uniform", reference_factor=2)
    uniform.setup(state)
    b = next(iter(uniform.batches(state)))
    x = state.dataset["x"]
    assert b["x_reference"].shape == (200, 1)
    assert (b["x_reference"] >= x.min()).all() and (b["x_reference"] <= x.max()).all()
    # entropy of U[lo, hi] is log(hi - lo)
    assert uniform.reference_x.entropy() == pytest.approx(float(torch.log(x.max() - x.min())),
                                                          rel=1e-5)
    gauss = ReferenceSampler(reference="gaussian")
    gauss.setup(state)
    xr, yr = gauss.draw(50_000, torch.Generator().manual_seed(1), torch.device("cpu"))
    # moment-matched: mean and variance of the data (standard normal here), within MC error
    assert float(xr.mean()) == pytest.approx(float(x.mean()), abs=0.03)
    assert float(xr.var()) == pytest.approx(float(x.var()), rel=0.03)
    # h(N(0, σ²)) = ½ ln(2πe σ²)
    assert gauss.reference_x.entropy() == pytest.approx(
        0.5 * math.log(2 * math.pi * math.e * float(x.var())), abs=1e-3)


def test_reference_sampler_callable_and_bad_reference():
    state = make_state(100)
    fn = lambda n, g: (torch.zeros(n, 1), torch.ones(n, 1))  # noqa: E731
    sampler = ReferenceSampler(reference=fn, batch_size=10)
    sampler.setup(state)
    b = next(iter(sampler.batches(state)))
    assert torch.equal(b["y_reference"], torch.ones(10, 1))
    assert sampler.reference_x.entropy() is None  # unknown for a user callable
    bad = ReferenceSampler(reference=lambda n, g: (torch.zeros(n, 3), torch.zeros(n, 1)))
    with pytest.raises(ValidationError, match="must return finite arrays of shapes"):
        bad.setup(state)
        next(iter(bad.batches(state)))
    with pytest.raises(ValidationError, match="'uniform', 'gaussian' or a callable"):
        ReferenceSampler(reference="laplace")
    # user13 U13-23: fit(sampler=fn)'s order, fn(generator, n), was "PluginError: ... sampler
    # 'reference' raised TypeError: zeros() takes 1 positional argument but 2 were given"
    swapped = ReferenceSampler(reference=lambda g, n: (torch.zeros(n, 1), torch.zeros(n, 1)))
    swapped.setup(state)
    with pytest.raises(ValidationError, match=r"`reference_fn`\) is called as fn\(n, generator\)"
                       r".*zeros\(\) takes"):
        next(iter(swapped.batches(state)))


# ---------------------------------------------------------------- critics


@pytest.mark.parametrize("spec", [
    {"name": "joint_critic", "x_dim": 3, "y_dim": 5, "hidden_dims": [16]},
    {"name": "separable_critic", "x_dim": 3, "y_dim": 5, "hidden_dims": [16], "embed_dim": 4},
])
def test_critics_paired_and_pairwise_agree(spec):
    critic = get_registry().build("model", spec).build()
    x, y = torch.randn(7, 3), torch.randn(4, 5)
    matrix = critic.pairwise(x, y)
    assert matrix.shape == (7, 4)
    assert critic(x[:4], y).shape == (4,)
    # entry (i, j) of pairwise is t(x_i, y_j)
    assert torch.allclose(matrix[2, 3], critic(x[2:3], y[3:4])[0], atol=1e-5)


def test_joint_critic_init_std():
    critic = JointCritic(x_dim=1, y_dim=1, init_std=0.02).build()
    first = critic.net[0]
    assert float(first.weight.detach().std()) < 0.05 and float(first.bias.detach().abs().max()) == 0.0
    with pytest.raises(ValidationError, match="activation"):
        JointCritic(x_dim=1, y_dim=1, activation="swish2")
    with pytest.raises(ValidationError, match="x_dim"):
        JointCritic(x_dim=0, y_dim=1)


def test_joint_critic_dropout_acts_in_training_only():
    critic = JointCritic(x_dim=2, y_dim=2, hidden_dims=(64,), dropout=0.5).build()
    x, y = torch.randn(50, 2), torch.randn(50, 2)
    torch.manual_seed(0)
    critic.train()
    assert not torch.equal(critic(x, y), critic(x, y))  # a new mask per call
    critic.eval()  # validation and the final estimate
    assert torch.equal(critic(x, y), critic(x, y))
    for bad in (1.0, -0.1, "0.1"):
        with pytest.raises(ValidationError, match="dropout"):
            JointCritic(x_dim=1, y_dim=1, dropout=bad)


# ---------------------------------------------------------------- losses


def batch_from(n: int = 4000, seed: int = 0, factor: int = 1) -> dict[str, torch.Tensor]:
    x, y = gaussian(n, seed)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    return {"x": x, "y": y, "x_marginal": x.repeat(factor, 1),
            "y_marginal": y[perm].repeat(factor, 1)}


@pytest.mark.parametrize("loss, offset", [(DVLoss(), 0.0), (NWJLoss(), 1.0),
                                          (SMILELoss(clip=20.0), 0.0)])
def test_bounds_at_the_optimal_critic_equal_the_true_mi(loss, offset):
    # the DV optimum is t*, the NWJ optimum 1 + t*: both bounds are tight there
    models = nn.ModuleDict({"main": OptimalCritic(offset=offset)})
    out = loss(batch_from(), models, make_state())
    assert float(out.metrics["mi"]) == pytest.approx(TRUE_MI, abs=0.04)  # MC error at n=4000


def test_infonce_is_capped_by_log_batch():
    models = nn.ModuleDict({"main": OptimalCritic()})
    x, y = gaussian(500)
    out = InfoNCELoss()({"x": x, "y": y}, models, make_state())
    # InfoNCE <= log b; with b = 500 ≫ e^I it is close to I (bias O(e^I / b))
    assert float(out.metrics["mi"]) <= math.log(500)
    assert float(out.metrics["mi"]) == pytest.approx(TRUE_MI, abs=0.06)

    class Memoriser(nn.Module):  # huge on the diagonal: InfoNCE saturates at log b
        def pairwise(self, x, y):
            return 1e3 * torch.eye(len(x))
    out = InfoNCELoss()({"x": x[:64], "y": y[:64]}, nn.ModuleDict({"main": Memoriser()}),
                        make_state())
    assert float(out.metrics["mi"]) == pytest.approx(math.log(64), abs=1e-4)


def test_mine_loss_is_finite_for_a_drifted_offset_and_gradient_is_corrected():
    # t + 1e4 would overflow exp in float32; the log-domain average never exponentiates t
    models = nn.ModuleDict({"main": OptimalCritic(offset=1e4)})
    state = make_state()
    batch = batch_from(1000)
    loss = MINELoss(ma_rate=0.1)
    out = loss(batch, models, state)
    assert torch.isfinite(out.value) and float(out.metrics["mi"]) == pytest.approx(
        float(DVLoss()(batch, models, state).metrics["mi"]), abs=1e-4)  # DV is offset-invariant
    # second step: log m̄ = logaddexp(log 0.9 + a_0, log 0.1 + a_1)
    a0 = loss.log_average.clone()  # the average lives on the loss block
    batch2 = batch_from(1000, seed=5)
    loss(batch2, models, state)
    a1 = log_mean_exp(models["main"](batch2["x_marginal"], batch2["y_marginal"])).detach()
    expected = torch.logaddexp(a0 + math.log(0.9), a1 + math.log(0.1))
    assert float(loss.log_average) == pytest.approx(float(expected.detach()), rel=1e-6)
    with torch.no_grad():  # validation does not move the average
        loss(batch, models, state)
    assert float(loss.log_average) == pytest.approx(float(expected.detach()), rel=1e-6)
    loss.on_phase_start(state)  # a new phase starts a new average
    assert loss.log_average is None and not hasattr(state, "scratch")


def test_mine_gradient_matches_the_corrected_formula():
    lin = nn.Linear(2, 1)
    critic = nn.ModuleDict({"main": _Concat(lin)})
    state = make_state()
    batch = batch_from(300)
    loss = MINELoss(ma_rate=0.5)
    loss.log_average = torch.tensor(0.3)
    out = loss(batch, critic, state)
    out.value.backward()
    got = lin.weight.grad.clone()
    lin.weight.grad = None
    # reference: −∇ mean t(joint) + ∇ mean e^{t(marg)} / m̄, with m̄ the updated average
    t_joint = lin(torch.cat([batch["x"], batch["y"]], 1)).mean()
    e_marg = torch.exp(lin(torch.cat([batch["x_marginal"], batch["y_marginal"]], 1))).mean()
    m_bar = 0.5 * math.exp(0.3) + 0.5 * float(e_marg.detach())
    (-t_joint + e_marg / m_bar).backward()
    assert torch.allclose(got, lin.weight.grad, rtol=1e-4)


class _Concat(nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x, y):
        return self.lin(torch.cat([x, y], -1)).squeeze(-1)


def test_smile_value_is_clipped_dv_and_gradient_is_js():
    lin = nn.Linear(2, 1)
    models = nn.ModuleDict({"main": _Concat(lin)})
    batch = batch_from(200)
    out = SMILELoss(clip=0.5)(batch, models, make_state())
    tj = lin(torch.cat([batch["x"], batch["y"]], 1)).squeeze(-1)
    tm = lin(torch.cat([batch["x_marginal"], batch["y_marginal"]], 1)).squeeze(-1)
    clipped_dv = tj.mean() - log_mean_exp(tm.clamp(-0.5, 0.5))
    assert float(out.value.detach()) == pytest.approx(-float(clipped_dv.detach()), abs=1e-5)
    out.value.backward()
    got = lin.weight.grad.clone()
    lin.weight.grad = None
    js = -nn.functional.softplus(-tj).mean() - nn.functional.softplus(tm).mean()
    (-js).backward()
    assert torch.allclose(got, lin.weight.grad, atol=1e-6)


def test_all_pairs_negatives_use_the_off_diagonal():
    x, y = gaussian(6)
    models = nn.ModuleDict({"main": OptimalCritic()})
    # a batch without explicit negative pairs (the all_pairs sampler): all off-diagonal pairs
    out = DVLoss()({"x": x, "y": y}, models, make_state())
    t = models["main"].forward(x.repeat_interleave(6, 0), y.repeat(6, 1)).view(6, 6)
    off = t[~torch.eye(6, dtype=torch.bool)]
    expected = t.diagonal().mean() - (torch.logsumexp(off, 0) - math.log(30))
    assert float(out.metrics["mi"]) == pytest.approx(float(expected.detach()), abs=1e-5)


def test_minee_loss_three_divergences():
    x, y = gaussian(500)
    gen = torch.Generator().manual_seed(3)
    batch = {"x": x, "y": y, "x_reference": torch.randn(500, 1, generator=gen),
             "y_reference": torch.randn(500, 1, generator=gen)}

    class Zero(nn.Module):
        def forward(self, *a):
            return torch.zeros(len(a[0]), requires_grad=True)
    models = nn.ModuleDict({"main": OptimalCritic(), "critic_x": Zero(), "critic_y": Zero()})
    out = MINEELoss()(batch, models, make_state())
    # zero marginal critics give D_x = D_y = 0; the joint one is the DV of t* vs the product
    assert float(out.metrics["d_x"]) == 0.0 and float(out.metrics["d_y"]) == 0.0
    assert float(out.metrics["mi"]) == pytest.approx(TRUE_MI, abs=0.08)
    with pytest.raises(ValidationError, match="ma_rate"):
        MINEELoss(ma_rate=0)


def test_missing_critic_model_is_named():
    with pytest.raises(ValidationError, match="needs a model named 'main'"):
        DVLoss()(batch_from(10), nn.ModuleDict(), make_state())


def test_losses_built_from_dicts_reject_bad_values():
    with pytest.raises(ConfigError, match="ma_rate"):
        get_registry().build("loss", {"name": "mine_loss", "ma_rate": 1.5})
    with pytest.raises(ConfigError, match="clip"):
        get_registry().build("loss", {"name": "smile_loss", "clip": -1})


# ---------------------------------------------------------------- final estimator


def test_shifts_cover_every_off_diagonal_pair_once():
    n = 7
    s = shifts_for(n)
    pairs = {(i, (i + int(k)) % n) for k in s for i in range(n)}
    assert len(pairs) == n * (n - 1) and all(i != j for i, j in pairs)
    assert len(shifts_for(1000, max_pairs=10_000)) == 10  # evenly spaced subset above the cap


@pytest.mark.parametrize("kind", ["dv", "nwj", "infonce", "smile"])
def test_pair_scores_bound_matches_brute_force(kind):
    x, y = gaussian(40, seed=2)
    critic = OptimalCritic()
    scores = pair_scores(critic, x, y, chunk_pairs=50)  # many small chunks
    t = critic(x.repeat_interleave(40, 0), y.repeat(40, 1)).view(40, 40).double()
    off = t[~torch.eye(40, dtype=torch.bool)]
    diag = t.diagonal()
    if kind == "dv":
        expected = diag.mean() - (torch.logsumexp(off, 0) - math.log(off.numel()))
    elif kind == "smile":
        c = off.clamp(-1.0, 1.0)
        expected = diag.mean() - (torch.logsumexp(c, 0) - math.log(c.numel()))
    elif kind == "nwj":
        expected = diag.mean() - torch.exp(off).mean() / math.e
    else:
        expected = (diag - torch.logsumexp(t, 1) + math.log(40)).mean()
    options = {"clip": 1.0} if kind == "smile" else {}
    assert scores.bound(kind, **options) == pytest.approx(float(expected.detach()), abs=1e-4)
    # the bound blocks' own functions give the same value (one definition per bound)
    block = {"dv": DVLoss(), "nwj": NWJLoss(), "infonce": InfoNCELoss(),
             "smile": SMILELoss(clip=1.0)}[kind]
    assert scores.bound(block) == pytest.approx(float(expected.detach()), abs=1e-4)


def test_pair_scores_is_chunked_for_n_20000():
    calls = []

    class Recording(nn.Module):
        def forward(self, x, y):
            calls.append(len(x))
            return (x * y).sum(-1)

    n = 20_000
    x, y = gaussian(n)
    scores = pair_scores(Recording(), x, y, max_pairs=600_000, chunk_pairs=100_000)
    assert max(calls) <= 100_000 < n * n  # no call ever sees an n×n block
    assert scores.marginal.shape == (30, n)  # 6e5 / n evenly spaced shifts
    assert math.isfinite(scores.bound("dv"))
    lo, hi = scores.interval("dv", n_subsamples=10)  # the shifted-pairs weighted path
    assert lo <= scores.bound("dv") <= hi


def test_pair_scores_estimate_and_interval():
    x, y = gaussian(1000, seed=4)
    scores = pair_scores(OptimalCritic(), x, y)
    value = scores.bound("dv")
    assert value == pytest.approx(TRUE_MI, abs=0.06)  # optimal critic: MC error only
    lo, hi = scores.interval("dv", level=0.9, n_subsamples=100, seed=0)
    assert lo < value < hi and 0.01 < hi - lo < 0.2  # ±~0.03 at n = 1000
    assert (lo, hi) == scores.interval("dv", level=0.9, n_subsamples=100, seed=0)  # seeded
    with pytest.raises(ValidationError, match="ci"):
        scores.interval(level=1.5)
    assert all(math.isnan(v) for v in pair_scores(OptimalCritic(), x[:3], y[:3]).interval())


def _weighted_brute_force(t: torch.Tensor, keep: torch.Tensor, kind: str) -> float:
    """The bound on the sub-matrix of the kept items (the estimator on that subset)."""
    sub = t[keep][:, keep]
    m = len(keep)
    diag, off = sub.diagonal(), sub[~torch.eye(m, dtype=torch.bool)]
    if kind == "dv":
        return float(diag.mean() - (torch.logsumexp(off, 0) - math.log(off.numel())))
    return float((diag - torch.logsumexp(sub, 1) + math.log(m)).mean())


@pytest.mark.parametrize("kind", ["dv", "infonce"])
def test_subsample_weights_give_the_bound_of_the_subset(kind):
    # 0/1 weights are the estimator on the kept items: every kept item's negatives are the
    # other kept items (no duplicates), exactly as on a sample of that size
    x, y = gaussian(30, seed=5)
    critic = OptimalCritic()
    scores = pair_scores(critic, x, y)
    with torch.no_grad():
        t = critic(x.repeat_interleave(30, 0), y.repeat(30, 1)).view(30, 30).double()
    keep = torch.tensor([0, 3, 4, 8, 11, 12, 17, 20, 21, 25, 29])
    w = torch.zeros(2, 30, dtype=torch.float64)
    w[0, keep] = 1.0
    w[1] = 1.0
    values = BOUND_FUNCTIONS[kind](scores.weighted(w))
    assert float(values[0]) == pytest.approx(_weighted_brute_force(t, keep, kind), abs=1e-9)
    assert float(values[1]) == pytest.approx(scores.bound(kind), abs=1e-12)


def test_scores_spanning_thousands_of_nats_stay_finite():
    # a separable critic at high MI scores pairs from −2600 to +1400 (measured, issue 11): a
    # single global shift underflowed whole InfoNCE rows to log 0 (estimate +inf, interval nan)
    x, y = gaussian(200, seed=6, rho=0.9999)
    scale = 400.0

    class Steep(nn.Module):
        def forward(self, x, y):
            return scale * (x * y).sum(-1) - 0.5 * scale * (y * y).sum(-1)

    critic = Steep()
    scores = pair_scores(critic, x, y)
    t = critic(x.repeat_interleave(200, 0), y.repeat(200, 1)).view(200, 200).double()
    assert float(scores.marginal.max() - scores.marginal.min()) > 2000
    expected = float((t.diagonal() - torch.logsumexp(t, 1) + math.log(200)).mean())
    assert scores.bound("infonce") == pytest.approx(expected, rel=1e-6)
    off = t[~torch.eye(200, dtype=torch.bool)]
    expected_dv = float(t.diagonal().mean() - torch.logsumexp(off, 0) + math.log(off.numel()))
    assert scores.bound("dv") == pytest.approx(expected_dv, rel=1e-6)
    for kind in ("infonce", "dv"):
        lo, hi = scores.interval(kind, n_subsamples=50)
        assert math.isfinite(lo) and math.isfinite(hi) and lo <= scores.bound(kind) <= hi


def test_infonce_interval_contains_its_estimate_at_high_mi():
    # issue 11: resampling items *with* replacement duplicates rows, and a duplicate of y_i is a
    # negative of x_i scoring as high as the positive: every bootstrap value fell below the
    # estimate (an interval that excluded it).  Half-size subsets without replacement do not.
    rho = 0.9999  # I = 4.26 nats, below InfoNCE's cap log(400) = 5.99
    x, y = gaussian(400, seed=7, rho=rho)
    scores = pair_scores(OptimalCritic(rho=rho), x, y)
    value = scores.bound("infonce")
    assert value == pytest.approx(-0.5 * math.log(1 - rho ** 2), abs=0.3)
    lo, hi = scores.interval("infonce", level=0.95, n_subsamples=200)
    assert lo < value < hi
    assert 0.02 < hi - lo < 0.5


@pytest.mark.parametrize("kind", ["dv", "infonce"])
def test_interval_covers_the_truth_with_the_optimal_critic(kind):
    # calibration of the interval alone (no training): the optimal critic on 60 fresh
    # Gaussian samples of n = 300, ρ = 0.8 (I = 0.511 nats); measured coverage of the 90 %
    # interval: dv 0.92, infonce 0.92 (with-replacement bootstrap: infonce 0.0x, see docs/mi.md)
    rho, n, reps = 0.8, 300, 60
    truth = -0.5 * math.log(1 - rho ** 2)
    critic = OptimalCritic(rho=rho)
    covered = 0
    for rep in range(reps):
        x, y = gaussian(n, seed=100 + rep, rho=rho)
        lo, hi = pair_scores(critic, x, y).interval(kind, level=0.9, n_subsamples=100,
                                                   seed=rep)
        covered += lo <= truth <= hi
    assert covered / reps >= 0.8, covered / reps


def test_pair_scores_rejects_non_finite_critic_output():
    class Broken(nn.Module):
        def forward(self, x, y):
            return torch.full((len(x),), float("nan"))
    x, y = gaussian(20)
    with pytest.raises(NumericalError, match="non-finite"):
        pair_scores(Broken(), x, y)
    with pytest.raises(ValidationError, match="at least 2 samples"):
        pair_scores(Broken(), x[:1], y[:1])


def test_encoded_mi_scores_each_item_once_against_its_target():
    from infoblocks.blocks.mutual_information.encoded import EncodedMILoss

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    data = torch.nn.functional.one_hot(labels, 4).float() + 0.1 * torch.randn(40, 4,
                                                                              generator=gen)
    torch.manual_seed(0)  # the critic's initialisation (untrained: its bound is near 0)
    models = nn.ModuleDict({"main": nn.Identity(), "critic": get_registry().build(
        "model", {"name": "separable_critic", "x_dim": 4, "y_dim": 4}).build()})
    loss = EncodedMILoss(classes=4, bound={"name": "infonce_loss", "critic": "critic"})
    assert loss.required_models() == {"main", "critic"}
    # (check_block's critic scores one label column: the raw labels, not one-hot classes)
    check_block(EncodedMILoss, {"bound": {"name": "infonce_loss", "critic": "critic"}})
    once = loss({"data": data, "labels": labels, "items": torch.arange(40)}, models, None)
    # an edge batch names items again (sources, targets, negatives): each counts once
    repeat = torch.cat([torch.arange(40), torch.arange(0, 40, 3)])
    twice = loss({"data": data[repeat], "labels": labels[repeat], "items": repeat}, models,
                 None)
    torch.testing.assert_close(twice.value, once.value)
    # an untrained critic: near 0 (either sign), and never above InfoNCE's cap log b
    assert -0.5 < float(once.metrics["mi"]) <= math.log(40)
    with pytest.raises(ValidationError, match="`classes` = 3 but .* labels 0..3"):
        EncodedMILoss(classes=3, bound={"name": "infonce_loss", "critic": "critic"})(
            {"data": data, "labels": labels}, models, None)


def test_row_mean_negatives_averages_each_rows_other_columns():
    # author7 A7-4: Poole et al.'s interpolated bound needs each item's own negatives' mean
    from infoblocks.blocks.mutual_information import BatchScores

    matrix = torch.arange(9.0).reshape(3, 3)
    torch.testing.assert_close(BatchScores.from_matrix(matrix).row_mean_negatives(),
                               torch.tensor([1.5, 4.0, 6.5]))  # the diagonal left out
    shifted = BatchScores.from_matrix(matrix, torch.tensor([1, 2, 0]))  # joint columns given
    torch.testing.assert_close(shifted.row_mean_negatives(torch.exp),
                               (matrix.exp().sum(1) - matrix.exp()[[0, 1, 2], [1, 2, 0]]) / 2)
    with pytest.raises(ValidationError, match="needs row-structured negatives"):
        BatchScores(torch.zeros(3), torch.zeros(6)).row_mean_negatives()


def test_row_mean_negatives_of_the_final_estimates_pairs():
    # author11 A11-1: a bound written with row_mean_negatives trained, then failed in the
    # final all-pairs estimate (PairScores had no such reduction)
    from infoblocks.blocks.mutual_information import BatchScores, PairScores

    n = 7
    matrix = torch.randn(n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shifts = torch.arange(1, n)
    rows = torch.arange(n)
    marginal = matrix[rows[None, :], (rows[None, :] + shifts[:, None]) % n]  # (K, n)
    pairs = PairScores(torch.diagonal(matrix), marginal, shifts)
    torch.testing.assert_close(pairs.row_mean_negatives(torch.exp),
                               BatchScores.from_matrix(matrix).row_mean_negatives(torch.exp))
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.float64)  # a half-sample's items
    sub = keep.bool()
    weighted = pairs.weighted(keep[None]).row_mean_negatives()[0]
    torch.testing.assert_close(weighted[sub],
                               BatchScores.from_matrix(matrix[sub][:, sub]).row_mean_negatives())
    assert bool((weighted[~sub] == 0).all())


def test_row_mean_negatives_over_leading_axes():
    # author11 A11-7: InfoMax's nested bound hands a bound stacked prefixes (d, b, c) under
    # torchrun; row_mean_negatives unpacked `b, c = values.shape` ('too many values to unpack')
    from types import SimpleNamespace

    from infoblocks.blocks.mutual_information import BatchScores
    from infoblocks.blocks.mutual_information.infomax import _ShardScores

    m = torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(0))
    stacked = BatchScores(torch.diagonal(m, dim1=-2, dim2=-1), m, m)
    per = [BatchScores.from_matrix(m[k]).row_mean_negatives(torch.exp) for k in range(3)]
    torch.testing.assert_close(stacked.row_mean_negatives(torch.exp), torch.stack(per))
    # a rank's rows (rank 1 of 2: rows 1, 3 of a batch of 4): each row leaves out its own
    # joint column 1 + 2 i, not the diagonal
    full = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(1))
    shard = SimpleNamespace(size=4, dist=SimpleNamespace(rank=1, world_size=2, active=False))
    rows = _ShardScores.of_rows(full[:, 1::2], shard)
    want = torch.stack([BatchScores.from_matrix(full[k]).row_mean_negatives()[1::2]
                        for k in range(3)])
    torch.testing.assert_close(rows.row_mean_negatives(), want)
    torch.testing.assert_close(rows.prefix(2).row_mean_negatives(), want[2])


def test_pair_sampler_shard_splits_the_documented_negatives_of_any_subclass():
    # author12 A12-3: a plugin PairSampler yielding MARGINAL_PAIRS' fields, relying on the
    # base shard, kept x_marginal / y_marginal / x_all whole on each rank (0.679 -> 0.539 nats
    # on 2 ranks); the base shard now splits them, and refuses a pair-sized field it cannot
    from typing import ClassVar

    from infoblocks.blocks.errors import ContractError
    from infoblocks.blocks.mutual_information.samplers import PairSampler

    class Shifted(PairSampler):
        name: ClassVar[str] = "shifted"

    b = 6
    x, y = torch.arange(b * 2.0).view(b, 2), -torch.arange(b * 2.0).view(b, 2)
    batch = {"index": torch.arange(b), "x": x, "y": y, "x_marginal": x,
             "y_marginal": y.roll(1, 0)}
    batch.update(x_all=torch.cat([x, batch["x_marginal"]]),
                 y_all=torch.cat([y, batch["y_marginal"]]))
    parts = [Shifted().shard(batch, rank, 2) for rank in (0, 1)]
    for rank, part in enumerate(parts):
        torch.testing.assert_close(part["x_marginal"], x[rank::2])
        torch.testing.assert_close(part["y_marginal"], y.roll(1, 0)[rank::2])
        torch.testing.assert_close(part["x_all"], torch.cat([x[rank::2], x[rank::2]]))
        assert len(part["y_all"]) == b  # its 3 joint rows, then its 3 negatives
    with pytest.raises(ContractError, match=r"sampler 'shifted' yields `weight`, sized like "
                                            r"the batch's pairs.*Override `shard"):
        Shifted().shard({**batch, "weight": torch.ones(b)}, 0, 2)


def test_a_bound_or_critic_of_the_wrong_shape_is_named(infoblocks_plugin):
    # author11 A11-5: a bound returning one value per item, or a critic returning (n, n) for n
    # pairs, ended in torch's "grad can be implicitly created only for scalar outputs" from
    # the engine's backward (or "only one element tensors ..." in the final estimate),
    # naming neither the block nor its contract; check_block passed both
    from typing import ClassVar

    import attrs

    from infoblocks.blocks.errors import ContractError
    from infoblocks.blocks.models import Model
    from infoblocks.blocks.mutual_information import MIBound
    from infoblocks.plugins import hookimpl
    from infoblocks.plugins.registry import recipe_from_dict

    @attrs.define
    class PerItemBound(MIBound):
        name: ClassVar[str] = "test_per_item_bound"

        def bound(self, scores):
            return scores.joint - scores.log_mean_exp()

    class PairNet(nn.Module):
        def __init__(self, x_dim, y_dim):
            super().__init__()
            self.lin = nn.Linear(x_dim + y_dim, 1)

        def forward(self, x, y):
            t = self.lin(torch.cat([x, y], -1))
            return t + t.T  # (n, n)

    @attrs.define(kw_only=True)
    class PairCritic(Model):
        name: ClassVar[str] = "test_pair_critic"
        x_dim: int = 1
        y_dim: int = 1

        def build(self):
            return PairNet(self.x_dim, self.y_dim)

    class Plugin:
        @hookimpl
        def register_losses(self):
            return [PerItemBound]

        @hookimpl
        def register_models(self):
            return [PairCritic]

    infoblocks_plugin(Plugin(), "test_shapes")
    r = np.random.default_rng(0)
    x = r.standard_normal((300, 2)).astype(np.float32)
    y = (0.8 * x + 0.6 * r.standard_normal((300, 2))).astype(np.float32)
    per_item = r"loss 'test_per_item_bound' \(plugin 'test_shapes'\): `bound\(scores\)` " \
               r"returned a tensor of shape \((\d+),\) in {}, where an MI bound returns a scalar"
    for recipe in ("mine", "infonce"):
        with pytest.raises(ContractError, match=per_item.format("a training or validation "
                                                                "batch")):
            recipe_from_dict({"recipe": recipe, "epochs": 1, "phases": [
                {"name": "train", "loss": "test_per_item_bound"}]}).fit(x, y)
    with pytest.raises(ContractError, match=per_item.format("the final estimate")):
        recipe_from_dict({"recipe": "mine", "epochs": 1,
                          "evaluation": {"bound": "test_per_item_bound"}}).fit(x, y)
    for recipe in ("mine", "infonce"):  # explicit negatives, then in-batch ones
        with pytest.raises(ContractError, match=r"The critic `models.main` = model "
                                                r"'test_pair_critic' \(plugin 'test_shapes'\) "
                                                r"\(PairNet\) returned shape \((\d+), \1\) from "
                                                r"`forward\(x, y\)`, expected \(\1,\): an MI "
                                                r"critic's forward"):
            recipe_from_dict({"recipe": recipe, "epochs": 1,
                              "models": {"main": {"name": "test_pair_critic"}}}).fit(x, y)
    with pytest.raises(ContractError, match=r"bound\(scores\)` returned a tensor of shape \(5,\)"):
        check_block(PerItemBound)
    with pytest.raises(ContractError, match=r"model 'test_pair_critic' \(PairNet\) returned "
                                            r"shape \(4, 4\)"):
        check_block(PairCritic, {"x_dim": 2, "y_dim": 2})

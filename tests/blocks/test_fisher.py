"""Fisher blocks: statistics, the IMNN objective, summaries by jvp, chunked gradients, and the
simulation sampler (simulator with autograd / numerical derivatives, fixed arrays)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infoblocks.blocks import fisher as fisher_module
from infoblocks.blocks.contracts import SIMULATIONS
from infoblocks.blocks.errors import ContractError, NumericalError, ValidationError
from infoblocks.blocks.fisher import (DERIVATIVE, FIDUCIAL, FIDUCIAL_SAMPLE, NUMERICAL,
                                      FisherLoss, SimulationSampler, SummaryMLP, _mlp_jvp,
                                      fisher_statistics, imnn_objective, network_summaries,
                                      regularisation_rate)
from infoblocks.blocks.models import MLP
from infoblocks.blocks.state import TrainState
from infoblocks.plugins.registry import get_registry
from infoblocks.plugins.testing import check_block


def gaussian(generator, theta):
    """10 points d = μ + √Σ z: the imnn tutorial's simulator, batched."""
    z = torch.randn(theta.shape[0], 10, generator=generator, dtype=theta.dtype)
    return theta[:, :1] + theta[:, 1:2].sqrt() * z


def oracle(x):
    """Exact sufficient statistics (Σd, Σd²)."""
    return torch.stack([x.sum(-1), (x ** 2).sum(-1)], -1)


class Oracle(torch.nn.Module):
    def forward(self, x):
        return oracle(x)


def make_state(seed=0):
    return TrainState(models=torch.nn.ModuleDict(), dataset=None, globals={},
                      device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed),
                      rng=np.random.default_rng(seed))


def analytic_batch(n_s=200, n_d=150, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_s, 10, generator=g, dtype=dtype)
    der = torch.stack([torch.ones(n_d, 10, dtype=dtype), z[:n_d] / 2], 1)  # ∂d/∂(μ, Σ) at (0, 1)
    return {FIDUCIAL: z, DERIVATIVE: der}


def small_mlp(in_dim=10, out_dim=2, seed=0):
    torch.manual_seed(seed)
    return MLP(in_dim=in_dim, out_dim=out_dim, hidden_dims=(16, 16),
               activation="leaky_relu").build()


# ---------------------------------------------------------------------- constants and formulas

def test_alpha_matches_reference_formula():
    # issue 6: α = −ln(ε(λ−1) + ε²/(1+ε))/ε = 0.953 for λ = 10, ε = 0.1
    assert regularisation_rate(10.0, 0.1) == pytest.approx(0.9531, abs=1e-4)
    assert FisherLoss().alpha == pytest.approx(0.9531, abs=1e-4)


def test_alpha_undefined_is_an_error():
    with pytest.raises(ValidationError, match="lambda_reg > 1"):
        regularisation_rate(0.01, 0.5)


def test_oracle_fisher_matches_analytic():
    # F = diag(n/Σ, n/(2Σ²)) = diag(10, 5) at (0, 1); 40,000 simulations -> det F within ~3 %
    batch = analytic_batch(40_000, 40_000, dtype=torch.float64)
    s, ds = network_summaries(Oracle(), batch)
    stats = fisher_statistics(s, ds)
    assert torch.allclose(torch.diagonal(stats.F), torch.tensor([10.0, 5.0], dtype=torch.float64),
                          rtol=0.04)
    assert float(torch.linalg.det(stats.F)) == pytest.approx(50.0, rel=0.05)


def test_regulariser_uses_non_squared_frobenius_norms():
    # C = 2I (m = 2): ‖C − I‖_F = √2, ‖C⁻¹ − I‖_F = √(2·0.25); r = λΛ₂/(Λ₂ + exp(−αΛ₂))
    s = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) * math.sqrt(3.0)
    ds = torch.tensor([[[1.0, 0.0]]])  # one derivative, one parameter
    stats = fisher_statistics(s, ds)
    assert torch.allclose(stats.C, 2 * torch.eye(2))
    value, metrics = imnn_objective(stats, 10.0, 0.9531)
    lambda2 = math.sqrt(2) + math.sqrt(0.5)
    r = 10 * lambda2 / (lambda2 + math.exp(-0.9531 * lambda2))
    assert float(metrics["Lambda2"]) == pytest.approx(lambda2, rel=1e-5)
    assert float(metrics["r"]) == pytest.approx(r, rel=1e-5)
    assert float(value) == pytest.approx(-math.log(0.5) + r * lambda2, rel=1e-5)  # F = 1/2


def test_quasi_ml_estimate_of_oracle_summaries():
    # with (Σd, Σd²) the one-step estimate is μ̂ = mean d, Σ̂ = mean d² (exactly, at fid (0, 1))
    batch = analytic_batch(20_000, 20_000, dtype=torch.float64)
    stats = fisher_statistics(*network_summaries(Oracle(), batch))
    data = torch.randn(5, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    theta = stats.estimate(oracle(data), torch.tensor([0.0, 1.0], dtype=torch.float64))
    expected = torch.stack([data.mean(1), (data ** 2).mean(1)], 1)
    assert torch.allclose(theta, expected, atol=0.05)


def test_singular_covariance_is_reported():
    s = torch.ones(50, 2)  # constant summaries: C = 0
    stats = fisher_statistics(s, torch.ones(10, 2, 2))
    with pytest.raises(NumericalError, match="covariance of the summaries .* singular"):
        stats.check("test")


# ---------------------------------------------------------------------- summaries

@pytest.mark.parametrize("activation", ["leaky_relu", "relu", "tanh", "softplus", "elu", "silu",
                                        "gelu", "sigmoid"])
def test_mlp_fast_path_equals_functional_jvp_and_finite_differences(activation):
    torch.manual_seed(0)
    net = MLP(in_dim=10, out_dim=2, hidden_dims=(16, 16), activation=activation).build().double()
    assert fisher_module._is_plain_mlp(net)
    batch = analytic_batch(40, 40, dtype=torch.float64)
    x, dx = batch[FIDUCIAL], batch[DERIVATIVE]
    s, ds = _mlp_jvp(net, x, dx)
    params = list(net.parameters())

    def grads_of(value):  # biases before a piecewise-linear activation get no gradient
        found = torch.autograd.grad(value, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]

    grads = grads_of(ds.square().sum())  # through the activation slope
    for k in range(2):
        _, ref = torch.func.jvp(net, (x,), (dx[:, k],))
        assert torch.allclose(ds[:, k], ref, atol=1e-12)
        h = 1e-6  # central differences along ∂d/∂θ_k
        fd = (net(x + h * dx[:, k]) - net(x - h * dx[:, k])) / (2 * h)
        assert torch.allclose(ds[:, k], fd, atol=1e-6)
    assert torch.allclose(s, net(x))
    ref = torch.func.vmap(lambda t: torch.func.jvp(net, (x,), (t,))[1], in_dims=1, out_dims=1)(dx)
    ref_grads = grads_of(ref.square().sum())
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-10)


def test_custom_module_uses_functional_jvp():
    class Quadratic(torch.nn.Module):  # not a plain Sequential: generic vmap(jvp) path
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.0, 0.5]))

        def forward(self, x):
            return self.w * oracle(x)

    batch = analytic_batch(30, 30, dtype=torch.float64)
    s, ds = network_summaries(Quadratic().double(), batch)
    x = batch[FIDUCIAL]
    # ∂(w₀Σd)/∂μ = 10 w₀; ∂(w₁Σd²)/∂Σ = w₁ Σ 2d · d/2 = w₁ Σ d²
    assert torch.allclose(ds[:, 0, 0], torch.full((30,), 10.0, dtype=torch.float64))
    assert torch.allclose(ds[:, 1, 1], 0.5 * (x ** 2).sum(1))


@pytest.mark.parametrize("numerical", [False, True])
def test_chunked_gradient_equals_unchunked(numerical):
    # aggregated mode must give the unchunked gradient up to float rounding
    torch.manual_seed(0)
    net = small_mlp().double()
    if numerical:
        g = torch.Generator().manual_seed(1)
        batch = {FIDUCIAL: torch.randn(53, 10, generator=g, dtype=torch.float64),
                 NUMERICAL: torch.randn(31, 2, 2, 10, generator=g, dtype=torch.float64),
                 "delta_theta": torch.tensor([0.1, 0.2], dtype=torch.float64)}
    else:
        batch = analytic_batch(53, 31, dtype=torch.float64)
    models = torch.nn.ModuleDict({"main": net})
    grads = []
    for chunk in (None, 7):
        net.zero_grad()
        out = FisherLoss(chunk_size=chunk)(batch, models, make_state())
        out.value.backward()
        grads.append([p.grad.clone() for p in net.parameters()])
        values = float(out.value.detach())
    reference = FisherLoss()(batch, models, make_state()).value
    assert values == pytest.approx(float(reference.detach()), rel=1e-12)
    scale = max(float(g.abs().max()) for g in grads[0])  # the output bias gets ~0 (shift-invariant)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10 * scale)


# ---------------------------------------------------------------------- sampler

def test_sampler_autograd_derivatives_are_analytic():
    sampler = SimulationSampler(theta_fid=(0.0, 1.0), simulator=gaussian, n_s=300, n_d=200,
                                fresh=False, seed=5)
    state = make_state()
    sampler.setup(state)
    batch = next(iter(sampler.batches(state)))
    fid, der = batch[FIDUCIAL], batch[DERIVATIVE]
    assert fid.shape == (300, 10) and der.shape == (200, 2, 10)
    # ∂d/∂μ = 1 and ∂d/∂Σ = z/(2√Σ) = d/2 at (0, 1), for the same random numbers
    assert torch.allclose(der[:, 0], torch.ones(200, 10))
    assert torch.allclose(der[:, 1], fid[:200] / 2, atol=1e-6)
    # own seed: a second setup draws the identical (fixed) validation set
    sampler.setup(make_state(seed=99))
    assert torch.equal(next(iter(sampler.batches(state)))[FIDUCIAL], fid)


def test_sampler_numerical_derivatives_are_seed_matched():
    sampler = SimulationSampler(theta_fid=(0.0, 1.0), simulator=gaussian, n_s=100, n_d=100,
                                derivative_mode="numerical", delta_theta=(0.1, 0.02),
                                fresh=False, seed=5)
    state = make_state()
    sampler.setup(state)
    batch = next(iter(sampler.batches(state)))
    sims = batch[NUMERICAL]
    assert sims.shape == (100, 2, 2, 10)
    fd = (sims[:, 1] - sims[:, 0]) / batch["delta_theta"].reshape(1, 2, 1)
    # seed-matched: the noise cancels; ∂d/∂μ = 1 exactly, ∂d/∂Σ ≈ d/2 (O(δ²) error)
    assert torch.allclose(fd[:, 0], torch.ones(100, 10), atol=1e-4)
    assert torch.allclose(fd[:, 1], batch[FIDUCIAL] / 2, atol=1e-3)


def test_sampler_fresh_draws_change_and_per_simulation_simulator_works():
    sampler = SimulationSampler(theta_fid=(0.0, 1.0), simulator=gaussian, n_s=20, n_d=10)
    state = make_state()
    sampler.setup(state)
    a = next(iter(sampler.batches(state)))[FIDUCIAL]
    b = next(iter(sampler.batches(state)))[FIDUCIAL]
    assert not torch.equal(a, b)  # a new set of simulations each epoch

    def one(generator, theta):  # per simulation: theta (p,) -> (10,)
        return theta[0] + theta[1].sqrt() * torch.randn(10, generator=generator)

    slow = SimulationSampler(theta_fid=(0.0, 1.0), simulator=one, batched=False, n_s=20, n_d=10)
    slow.setup(state)
    batch = next(iter(slow.batches(state)))
    assert batch[DERIVATIVE].shape == (10, 2, 10)
    assert torch.allclose(batch[DERIVATIVE][:, 1], batch[FIDUCIAL][:10] / 2, atol=1e-6)


def test_sampler_arrays_and_flatten():
    fid = np.random.default_rng(0).normal(size=(30, 2, 5))
    der = np.ones((20, 3, 2, 5))
    sampler = SimulationSampler(theta_fid=(0, 1, 2), fiducial=fid, derivative=der, flatten=True)
    state = make_state()
    sampler.setup(state)
    batch = next(iter(sampler.batches(state)))
    assert batch[FIDUCIAL].shape == (30, 10) and batch[DERIVATIVE].shape == (20, 3, 10)


# ---------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"fiducial": np.zeros((30, 10)), "derivative": np.zeros((20, 3, 10))}, ValidationError,
     r"`derivative` must have shape \(n_d, p, \.\.\.\) = \(n_d, 2, 10\)"),
    ({"fiducial": np.zeros((30, 10)), "derivative": np.zeros((40, 2, 10))}, ValidationError,
     "n_d ≤ n_s"),
    ({"fiducial": np.zeros((30, 10)), "numerical_derivative": np.zeros((20, 2, 10))},
     ValidationError, "delta_theta"),
    ({"fiducial": np.zeros((30, 10)), "numerical_derivative": np.zeros((20, 2, 10)),
      "delta_theta": (0.1, 0.1)}, ValidationError, r"\(n_d, 2, p, \.\.\.\)"),
    ({"fiducial": np.full((30, 10), np.nan), "derivative": np.zeros((20, 2, 10))},
     ValidationError, "non-finite"),
    ({"simulator": gaussian, "fiducial": np.zeros((30, 10)), "derivative": np.zeros((3, 2, 10))},
     ValidationError, "not both"),
    ({"simulator": gaussian, "n_s": 10, "n_d": 20}, ValidationError, "exceeds `n_s`"),
])
def test_sampler_rejects_bad_inputs(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        SimulationSampler(theta_fid=(0.0, 1.0), **kwargs)


def test_sampler_without_a_source_fails_at_setup_and_takes_one_with_source():
    sampler = SimulationSampler(theta_fid=(0.0, 1.0), n_s=30, n_d=20)  # configuration only
    with pytest.raises(ValidationError, match="needs a `simulator` or `fiducial`"):
        sampler.setup(make_state())
    fed = sampler.with_source(simulator=gaussian)
    assert fed is not sampler and not sampler.has_source and fed.n_s == 30
    state = make_state()
    fed.setup(state)
    assert next(iter(fed.batches(state)))[FIDUCIAL].shape == (30, 10)
    with pytest.raises(ValidationError, match=r"`derivative` must have shape"):
        sampler.with_source(fiducial=np.zeros((30, 10)), derivative=np.zeros((20, 3, 10)))


def test_contracts_are_declared():
    # the batch fields follow the source; the loss consumes fiducial and reports det_F
    state = make_state()
    auto = SimulationSampler(theta_fid=(0.0, 1.0), simulator=gaussian)
    numerical = SimulationSampler(theta_fid=(0.0, 1.0), simulator=gaussian,
                                  derivative_mode="numerical", delta_theta=(0.1, 0.1))
    assert auto.batch_type is SIMULATIONS
    assert auto.batch_fields(state) == {FIDUCIAL, DERIVATIVE}
    assert numerical.batch_fields(state) == {FIDUCIAL, NUMERICAL, "delta_theta"}
    assert FisherLoss.consumes == {FIDUCIAL} and "det_F" in FisherLoss.reports
    assert FisherLoss().required_models() == {"main"}
    # a batch with neither derivative form is a contract error, not a KeyError
    with pytest.raises(ContractError, match="either `derivative`"):
        network_summaries(Oracle(), {FIDUCIAL: torch.zeros(5, 10)})


def test_summary_mlp_flattens_whitens_once_and_takes_the_fast_path():
    torch.manual_seed(0)
    net = SummaryMLP(in_dim=10, out_dim=2, hidden_dims=(16, 16)).build().double()
    assert isinstance(net[0], torch.nn.Flatten) and fisher_module._is_plain_mlp(net)
    batch = analytic_batch(300, 200, dtype=torch.float64)
    shaped = {FIDUCIAL: batch[FIDUCIAL].reshape(300, 2, 5),
              DERIVATIVE: batch[DERIVATIVE].reshape(200, 2, 2, 5)}
    # (n, 2, 5) simulations: the Flatten is taken into the written-out jvp
    fast = network_summaries(net, shaped)
    generic = torch.func.vmap(lambda t: torch.func.jvp(net, (shaped[FIDUCIAL][:200],), (t,)),
                              in_dims=1, out_dims=(None, 1))(shaped[DERIVATIVE])
    assert torch.allclose(fast[1], generic[1], atol=1e-10)
    state = make_state()
    with pytest.raises(ValidationError, match="fiducial_sample"):
        net.on_phase_start(state)
    state.globals[FIDUCIAL_SAMPLE] = shaped[FIDUCIAL]
    net.on_phase_start(state)
    s = net(shaped[FIDUCIAL]).detach()
    assert torch.allclose(torch.cov(s.T), torch.eye(2, dtype=s.dtype), atol=1e-8)
    assert bool(net.whitened) and "whitened" in net.state_dict()
    before = [p.clone() for p in net.parameters()]
    net.on_phase_start(state)  # once: a second phase (or a re-fit) keeps the weights
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    plain = SummaryMLP(in_dim=10, out_dim=2, whiten=False).build()
    plain.on_phase_start(make_state())  # no whitening, no global needed


def test_simulator_problems_are_reported():
    state = make_state()

    def nan_sim(generator, theta):
        return gaussian(generator, theta) * float("nan")

    with pytest.raises(ValidationError, match="non-finite"):
        next(iter(SimulationSampler(theta_fid=(0.0, 1.0), simulator=nan_sim, n_s=10,
                                    n_d=5).batches(state)))

    def wrong_rows(generator, theta):
        return torch.zeros(3, 10)

    with pytest.raises(ValidationError, match=r"shape \(n, \.\.\.\) with n = 5"):
        next(iter(SimulationSampler(theta_fid=(0.0, 1.0), simulator=wrong_rows, n_s=10,
                                    n_d=5).batches(state)))

    def detached(generator, theta):  # ignores theta: no derivative for autograd
        return torch.randn(theta.shape[0], 10, generator=generator)

    with pytest.raises(ValidationError, match="derivative_mode='numerical'"):
        next(iter(SimulationSampler(theta_fid=(0.0, 1.0), simulator=detached, n_s=10,
                                    n_d=5).batches(state)))

    with pytest.raises(ValidationError, match="theta_fid"):
        SimulationSampler(theta_fid=("a", 1.0), simulator=gaussian)


# ---------------------------------------------------------------------- registry

def test_blocks_are_registered_and_conform():
    registry = get_registry()
    assert registry.get("sampler", "simulations") is SimulationSampler
    assert registry.get("loss", "fisher") is FisherLoss
    assert registry.get("model", "summary_mlp") is SummaryMLP
    check_block(SummaryMLP, {"in_dim": 10, "out_dim": 2})
    loss = check_block(FisherLoss, {"lambda_reg": 5.0, "chunk_size": 100})
    assert loss.describe() == {"name": "fisher", "model": "main", "lambda_reg": 5.0,
                               "epsilon": 0.1, "chunk_size": 100}
    sampler = registry.build("sampler", {"name": "simulations", "theta_fid": [0, 1],
                                         "simulator": gaussian})
    assert "simulator" not in sampler.describe()  # live objects are not data

"""Likelihood-free inference blocks on the reference problem (10 points, θ = (μ, Σ)) with the
exact sufficient statistics as the compression: θ̂ = (mean d, mean d²), F = diag(10, 5) at
θ_fid = (0, 1).  ABC and PMC are checked against the exact posterior on a grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.fisher.inference import (abc_rejection, check_prior, fisher_distance,
                                                gaussian_posterior, population_monte_carlo,
                                                posterior_plot, prior_log_prob)
from infoblocks.recipes.imnn_problem import exact_posterior, gaussian_simulator

#: the exact Fisher matrix of the reference problem at θ_fid = (0, 1)
F_EXACT = torch.tensor([[10.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
LOW, HIGH = (-1.5, 0.1), (1.5, 3.0)
PRIOR = torch.distributions.Uniform(torch.tensor(LOW), torch.tensor(HIGH))


def compress(data):
    """The quasi-ML estimate of the exact statistics at θ_fid = (0, 1): (mean d, mean d²)."""
    return torch.stack([data.mean(1), (data ** 2).mean(1)], 1).double()


@pytest.fixture(scope="module")
def target():
    # a target drawn at θ = (0, 1) (seed 7: mean d 0.06, mean d² 1.09)
    data = gaussian_simulator(torch.Generator().manual_seed(7), torch.tensor([[0.0, 1.0]]))[0]
    return data, compress(data[None])[0]


def test_gaussian_approximation_is_n_of_the_estimate_and_inverse_fisher(target):
    _, estimate = target
    post = gaussian_posterior(estimate, F_EXACT, n_samples=40_000)
    # F⁻¹ = diag(0.1, 0.2): standard deviations 0.316, 0.447 (4σ of 40,000 draws: 1.4 %)
    np.testing.assert_allclose(post.std(), [math.sqrt(0.1), math.sqrt(0.2)], rtol=0.015)
    np.testing.assert_allclose(post.mean(), estimate.numpy(), atol=0.01)
    # a prior that cuts the Gaussian at μ > 0.06 weights those draws 0
    cut = torch.distributions.Uniform(torch.tensor([-5.0, 0.0]),
                                      torch.tensor([float(estimate[0]), 5.0]))
    half = gaussian_posterior(estimate, F_EXACT, cut, n_samples=40_000)
    assert np.all(half.weights[half.samples[:, 0] > float(estimate[0])] == 0)
    assert half.mean()[0] == pytest.approx(float(estimate[0]) - math.sqrt(0.1 * 2 / math.pi),
                                           abs=0.01)  # half-normal mean below the estimate


def test_abc_and_pmc_find_the_exact_posterior(target, tmp_path):
    data, estimate = target
    mean, std = exact_posterior(data.numpy(), LOW, HIGH)  # (0.06, 1.60), (0.40, 0.60)
    abc = abc_rejection(compress, gaussian_simulator, PRIOR, estimate, F_EXACT,
                        n_simulations=100_000, accept_fraction=0.01)
    assert len(abc.samples) == 1000 and abc.n_simulations == 100_000
    assert np.all(abc.distances <= abc.epsilon)
    # 1000 samples: the mean to ~3 SE (0.04 / 0.06), the std to ~10 %
    assert np.all(np.abs(abc.mean() - mean) < 3 * std / math.sqrt(1000) + 0.02), abc.mean()
    np.testing.assert_allclose(abc.std(), std, rtol=0.1)
    low, high = abc.interval(0.95).T
    assert np.all(low < [0.0, 1.0]) and np.all(high > [0.0, 1.0])  # covers the truth
    pmc = population_monte_carlo(compress, gaussian_simulator, PRIOR, estimate, F_EXACT,
                                 n_points=500, n_initial=5000, max_simulations=100_000)
    # the tolerance shrinks round by round, and every particle is within the last one
    assert pmc.rounds > 2 and pmc.epsilons[-1] < 0.6 * pmc.epsilons[0]
    assert list(pmc.epsilons) == sorted(pmc.epsilons, reverse=True)
    assert np.all(pmc.distances < pmc.epsilon)
    assert pmc.effective_size > 250
    assert np.all(np.abs(pmc.mean() - mean) < 3 * std / math.sqrt(250) + 0.02), pmc.mean()
    np.testing.assert_allclose(pmc.std(), std, rtol=0.15)
    fig = posterior_plot({"ABC": abc, "PMC": pmc}, truth=(0.0, 1.0), labels=["μ", "Σ"],
                         path=tmp_path / "corner.png")
    assert (tmp_path / "corner.png").stat().st_size > 10_000 and len(fig.axes) == 4


def test_fisher_distance_and_prior_support():
    F = torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    rows = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    np.testing.assert_allclose(fisher_distance(rows, torch.zeros(2, dtype=torch.float64), F),
                               [2.0, 3.0])  # √(4·1²), √(1·3²)
    log_prob = prior_log_prob(PRIOR, torch.tensor([[0.0, 1.0], [0.0, 5.0]], dtype=torch.float64))
    assert log_prob[0] == pytest.approx(-math.log(3.0 * 2.9)) and log_prob[1] == -math.inf


def test_bad_inference_arguments_are_named(target):
    _, estimate = target
    with pytest.raises(ValidationError, match="exactly one of `accept_fraction`"):
        abc_rejection(compress, gaussian_simulator, PRIOR, estimate, F_EXACT,
                      n_simulations=100, accept_fraction=None)
    with pytest.raises(ValidationError, match="accepted none of 100 simulations"):
        abc_rejection(compress, gaussian_simulator, PRIOR, estimate, F_EXACT,
                      n_simulations=100, accept_fraction=None, epsilon=1e-9)
    with pytest.raises(ValidationError, match="`n_initial` = 10 must be at least"):
        population_monte_carlo(compress, gaussian_simulator, PRIOR, estimate, F_EXACT,
                               n_points=100, n_initial=10)
    with pytest.raises(ValidationError, match="at least one PosteriorSamples"):
        posterior_plot([])
    # user13 U13-7: n_simulations=0 was a raw IndexError, n_points=0 blamed
    # `accept_fraction` (derived from it), n_samples=0 an empty sample; the prior-shape
    # message printed a literal "{p}"
    with pytest.raises(ValidationError, match="`n_simulations` must be a positive integer"):
        abc_rejection(compress, gaussian_simulator, PRIOR, estimate, F_EXACT, n_simulations=0)
    with pytest.raises(ValidationError, match="`n_points` must be a positive integer"):
        population_monte_carlo(compress, gaussian_simulator, PRIOR, estimate, F_EXACT,
                               n_points=0, n_initial=1000)
    with pytest.raises(ValidationError, match="`n_samples` must be a positive integer"):
        gaussian_posterior(estimate, F_EXACT, n_samples=0)
    three = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValidationError, match=r"batch or event shape \(2,\)"):
        check_prior(three, 2)

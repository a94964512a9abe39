"""Likelihood-free inference with IMNN summaries: a Gaussian approximation of the posterior,
approximate Bayesian computation by rejection, and population Monte Carlo.

The summaries are used through the quasi-maximum-likelihood estimate they give,
``θ̂(d) = θ_fid + F⁻¹ (∂μ/∂θ)ᵀ C⁻¹ (s(d) − μ)`` (``compress``, ``(n, *S) -> (n, p)``), and the
distance between a simulation and the target is the Fisher distance of their estimates,

    ρ(d, d*) = √((θ̂(d) − θ̂(d*))ᵀ F (θ̂(d) − θ̂(d*))),

dimensionless: ρ = 1 is one standard deviation of the estimate at θ_fid.  ``prior`` is a
``torch.distributions.Distribution`` over the p parameters (event shape ``(p,)``, or batch
shape ``(p,)`` of independent ones such as ``Uniform(low, high)``), ``simulate(generator,
theta (n, p)) -> (n, *S)`` the batched simulator.  Every method returns
:class:`PosteriorSamples`; :func:`posterior_plot` draws several of them as a corner plot.

* :func:`gaussian_posterior` — N(θ̂(d*), F⁻¹) times the prior (samples weighted by the prior
  density, so draws outside its support get weight 0): the Laplace approximation that the
  Fisher matrix gives without a simulation.
* :func:`abc_rejection` — θ ~ prior, d ~ simulator(θ); keep the draws with the smallest ρ
  (``accept_fraction``) or ρ < ``epsilon``.
* :func:`population_monte_carlo` — ABC-PMC (Beaumont et al. 2009): particles from a rejection
  round, then rounds that shrink ε to a quantile of the particles' distances, move particles
  by a Gaussian kernel of twice their weighted covariance and re-weight by prior / proposal
  density; stops when a round accepts fewer than ``min_acceptance`` of its simulations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import torch

from ..errors import ValidationError
from ..figures import save_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: simulations compressed per call (bounds memory: 10⁴ × the simulation size)
INFERENCE_BATCH = 10_000


@attrs.frozen
class PosteriorSamples:
    """Weighted samples of a posterior over p parameters.

    ``samples`` (n, p); ``weights`` (n,), normalised to sum 1; ``distances`` (n,) the Fisher
    distance of each accepted simulation to the target (ABC, PMC; None for the Gaussian
    approximation); ``epsilon`` the last tolerance; ``n_simulations`` the simulator calls
    spent; ``method`` "gaussian", "abc" or "pmc"."""

    samples: np.ndarray
    weights: np.ndarray
    method: str
    distances: np.ndarray | None = None
    epsilon: float | None = None
    n_simulations: int = 0
    rounds: int = 0
    #: the tolerance of each round (PMC: round 0's rejection, then the shrinking quantiles)
    epsilons: tuple[float, ...] = ()

    def mean(self) -> np.ndarray:
        """Weighted mean, (p,)."""
        return self.weights @ self.samples

    def cov(self) -> np.ndarray:
        """Weighted covariance, (p, p)."""
        centred = self.samples - self.mean()
        return (centred * self.weights[:, None]).T @ centred / (1.0 - np.sum(self.weights ** 2))

    def std(self) -> np.ndarray:
        """Weighted standard deviations, (p,)."""
        return np.sqrt(np.diag(self.cov()))

    def interval(self, level: float = 0.95) -> np.ndarray:
        """Equal-tailed weighted credible interval of each parameter, (p, 2)."""
        tail = (1.0 - level) / 2
        out = []
        for column in self.samples.T:
            order = np.argsort(column)
            cumulative = np.cumsum(self.weights[order])
            out.append([column[order][np.searchsorted(cumulative, tail)],
                        column[order][min(np.searchsorted(cumulative, 1 - tail),
                                          len(column) - 1)]])
        return np.asarray(out)

    @property
    def effective_size(self) -> float:
        """Kish's effective sample size 1 / Σ w²."""
        return float(1.0 / np.sum(self.weights ** 2))


# ---------------------------------------------------------------------- the prior

def prior_log_prob(prior: Any, theta: torch.Tensor) -> torch.Tensor:
    """log prior density of rows ``theta`` (n, p) -> (n,); −inf outside the support."""
    inside = prior.support.check(theta).reshape(len(theta), -1).all(-1)
    if not bool(inside.any()):
        return torch.full((len(theta),), -math.inf, dtype=theta.dtype, device=theta.device)
    # rows outside the support are evaluated at an inside row (a validating distribution
    # raises outside it) and then set to −inf
    safe = torch.where(inside[:, None], theta, theta[inside][:1])
    log_prob = prior.log_prob(safe).to(theta.dtype)
    if log_prob.ndim == 2:  # independent parameters: batch shape (p,)
        log_prob = log_prob.sum(-1)
    return torch.where(inside, log_prob, torch.full_like(log_prob, -math.inf))


def check_prior(prior: Any, p: int) -> None:
    """A torch distribution whose draws are (n, p) rows (a clear error otherwise)."""
    if not isinstance(prior, torch.distributions.Distribution):
        raise ValidationError(
            f"`prior` must be a torch.distributions.Distribution over the {p} parameters, got "
            f"{type(prior).__name__}; e.g. torch.distributions.Uniform(low=torch.tensor([...]), "
            "high=torch.tensor([...])).")
    draw = prior.sample((2,))
    if tuple(draw.shape) != (2, p):
        raise ValidationError(
            f"`prior` draws have shape {tuple(draw.shape[1:])} per sample, but there are {p} "
            f"parameters: give it batch or event shape ({p},), e.g. Uniform(low, high) with "
            f"tensors of {p} values.")


def _check_count(value: Any, name: str, what: str) -> None:
    """``value`` (the argument ``name``: ``what`` it counts) is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValidationError(f"`{name}` must be a positive integer ({what}), got {value!r}.")


def _draw_prior(prior: Any, n: int, generator: torch.Generator) -> torch.Tensor:
    """n prior draws, reproducible: the global RNG is forked and seeded from ``generator``."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return prior.sample((n,)).double()


# ---------------------------------------------------------------------- distances

def fisher_distance(estimates: torch.Tensor, target: torch.Tensor, F: torch.Tensor
                    ) -> torch.Tensor:
    """√((θ̂ − θ̂*)ᵀ F (θ̂ − θ̂*)) of rows ``estimates`` (n, p) to ``target`` (p,) -> (n,)."""
    diff = estimates - target
    return torch.einsum("ni,ij,nj->n", diff, F, diff).clamp_min(0).sqrt()


def _distances(compress: Callable[[torch.Tensor], torch.Tensor],
               simulate: Callable[[torch.Generator, torch.Tensor], torch.Tensor],
               theta: torch.Tensor, target: torch.Tensor, F: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
    out = []
    for start in range(0, len(theta), INFERENCE_BATCH):
        rows = theta[start:start + INFERENCE_BATCH]
        with torch.no_grad():
            data = simulate(generator, rows)
            out.append(fisher_distance(compress(data).double(), target, F))
    return torch.cat(out) if out else theta.new_zeros(0)


# ---------------------------------------------------------------------- the three methods

def gaussian_posterior(estimate: torch.Tensor, F: torch.Tensor, prior: Any = None,
                       n_samples: int = 10_000, generator: torch.Generator | None = None
                       ) -> PosteriorSamples:
    """Samples of N(θ̂, F⁻¹), weighted by the prior density (uniform weights without one)."""
    _check_count(n_samples, "n_samples", "the number of posterior samples")
    generator = generator or torch.Generator().manual_seed(0)
    F = F.double()
    cov = torch.linalg.inv(F)
    chol = torch.linalg.cholesky((cov + cov.T) / 2)
    z = torch.randn(n_samples, len(estimate), generator=generator, dtype=torch.float64)
    samples = estimate.double() + z @ chol.T
    weights = torch.ones(n_samples, dtype=torch.float64)
    if prior is not None:
        check_prior(prior, len(estimate))
        log_prob = prior_log_prob(prior, samples)
        if not bool(torch.isfinite(log_prob).any()):
            raise ValidationError("The Gaussian approximation N(θ̂, F⁻¹) has no mass inside the "
                                  "prior's support: widen the prior or check the target.")
        weights = torch.exp(log_prob - log_prob[torch.isfinite(log_prob)].max())
    return PosteriorSamples(samples=samples.numpy(), weights=(weights / weights.sum()).numpy(),
                            method="gaussian")


def abc_rejection(compress: Callable[[torch.Tensor], torch.Tensor],
                  simulate: Callable[[torch.Generator, torch.Tensor], torch.Tensor],
                  prior: Any, target: torch.Tensor, F: torch.Tensor, *,
                  n_simulations: int = 100_000, accept_fraction: float | None = 0.01,
                  epsilon: float | None = None, generator: torch.Generator | None = None
                  ) -> PosteriorSamples:
    """Rejection ABC: ``n_simulations`` prior draws, simulated and compressed; the accepted
    ones are the ``accept_fraction`` closest to the target (or those within ``epsilon``)."""
    _check_count(n_simulations, "n_simulations", "prior draws to simulate")
    generator = generator or torch.Generator().manual_seed(0)
    if (accept_fraction is None) == (epsilon is None):
        raise ValidationError("ABC needs exactly one of `accept_fraction` (keep the closest "
                              "fraction of the simulations) and `epsilon` (keep ρ < epsilon).")
    if accept_fraction is not None and not 0 < accept_fraction <= 1:
        raise ValidationError(f"`accept_fraction` must be in (0, 1], got {accept_fraction!r}.")
    theta = _draw_prior(prior, n_simulations, generator)
    rho = _distances(compress, simulate, theta, target, F.double(), generator)
    if epsilon is None:
        keep = max(1, int(round(accept_fraction * n_simulations)))
        order = torch.argsort(rho)[:keep]
        epsilon = float(rho[order[-1]])
    else:
        order = torch.nonzero(rho < epsilon).flatten()
        if len(order) == 0:
            raise ValidationError(
                f"ABC accepted none of {n_simulations} simulations at epsilon = {epsilon} "
                f"(the closest was at ρ = {float(rho.min()):.3g}): raise `epsilon` or "
                "`n_simulations`, or pass `accept_fraction` instead.")
    n = len(order)
    return PosteriorSamples(samples=theta[order].numpy(), weights=np.full(n, 1.0 / n),
                            distances=rho[order].numpy(), epsilon=float(epsilon),
                            method="abc", n_simulations=n_simulations, rounds=1,
                            epsilons=(float(epsilon),))


def population_monte_carlo(compress: Callable[[torch.Tensor], torch.Tensor],
                           simulate: Callable[[torch.Generator, torch.Tensor], torch.Tensor],
                           prior: Any, target: torch.Tensor, F: torch.Tensor, *,
                           n_points: int = 1000, n_initial: int = 10_000,
                           quantile: float = 0.5, min_acceptance: float = 0.02,
                           max_rounds: int = 20, max_simulations: int = 2_000_000,
                           generator: torch.Generator | None = None) -> PosteriorSamples:
    """ABC population Monte Carlo (see the module docstring).

    Round 0 keeps the ``n_points`` closest of ``n_initial`` prior simulations.  Each later
    round sets ε to the ``quantile`` of the particles' distances and draws ``n_points`` new
    particles: a particle chosen by weight, moved by N(0, 2 Σ_w) (Σ_w the weighted particle
    covariance), simulated, kept when ρ < ε and inside the prior; weights ∝ prior(θ) /
    Σ_j w_j N(θ; θ_j, 2 Σ_w).  Stops when a round's acceptance (kept / simulated) falls
    below ``min_acceptance``, after ``max_rounds``, or at ``max_simulations``."""
    _check_count(n_points, "n_points", "particles per round")
    _check_count(n_initial, "n_initial", "prior simulations of round 0")
    _check_count(max_rounds, "max_rounds", "rounds at most")
    _check_count(max_simulations, "max_simulations", "simulations at most")
    generator = generator or torch.Generator().manual_seed(0)
    if not 0 < quantile < 1:
        raise ValidationError(f"`quantile` must be in (0, 1), got {quantile!r}.")
    if n_initial < n_points:
        raise ValidationError(f"`n_initial` = {n_initial} must be at least `n_points` = "
                              f"{n_points} (round 0 keeps the closest n_points of n_initial).")
    F = F.double()
    first = abc_rejection(compress, simulate, prior, target, F, n_simulations=n_initial,
                          accept_fraction=n_points / n_initial, generator=generator)
    theta = torch.as_tensor(first.samples)
    rho = torch.as_tensor(first.distances)
    weights = torch.full((n_points,), 1.0 / n_points, dtype=torch.float64)
    spent, rounds, epsilon = n_initial, 1, first.epsilon
    rate = n_points / n_initial  # acceptance estimate: sizes the proposal batches
    epsilons = [epsilon]
    while rounds < max_rounds and spent < max_simulations:
        epsilon = float(torch.quantile(rho, quantile))
        chol = torch.linalg.cholesky(2 * _weighted_cov(theta, weights))
        new_theta, new_rho, tried = [], [], 0
        accepted = 0
        while accepted < n_points and spent + tried < max_simulations:
            # enough proposals for the missing particles at the acceptance seen so far
            m = min(int(1.2 * (n_points - accepted) / max(rate, 1e-4)) + 16, INFERENCE_BATCH * 10,
                    max_simulations - spent - tried + 16)
            parents = torch.multinomial(weights, m, replacement=True, generator=generator)
            z = torch.randn(m, theta.shape[1], generator=generator, dtype=torch.float64)
            proposal = theta[parents] + z @ chol.T
            inside = torch.isfinite(prior_log_prob(prior, proposal))
            proposal = proposal[inside]  # outside the prior: rejected without a simulation
            tried += len(proposal)
            distance = _distances(compress, simulate, proposal, target, F, generator)
            keep = distance < epsilon
            new_theta.append(proposal[keep])
            new_rho.append(distance[keep])
            accepted += int(keep.sum())
            rate = max(accepted, 1) / max(tried, 1)
        spent += tried
        if accepted < n_points:  # the budget ran out inside the round: keep the last one
            break
        theta_next = torch.cat(new_theta)[:n_points]
        rho_next = torch.cat(new_rho)[:n_points]
        # importance weights: prior over the mixture of kernels the particles came from
        log_kernel = _log_normal(theta_next[:, None, :] - theta[None, :, :], chol)  # (n, n)
        log_proposal = torch.logsumexp(log_kernel + weights.log()[None, :], dim=1)
        log_w = prior_log_prob(prior, theta_next) - log_proposal
        weights = torch.softmax(log_w, 0)
        theta, rho = theta_next, rho_next
        rounds += 1
        epsilons.append(epsilon)
        if n_points / tried < min_acceptance:
            break
    return PosteriorSamples(samples=theta.numpy(), weights=weights.numpy(),
                            distances=rho.numpy(), epsilon=epsilons[-1], method="pmc",
                            n_simulations=spent, rounds=rounds, epsilons=tuple(epsilons))


def _log_normal(x: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, LLᵀ) over the last axis (torch's MultivariateNormal costs a sympy import
    on its first use, seconds)."""
    z = torch.linalg.solve_triangular(chol, x.reshape(-1, x.shape[-1]).T, upper=False)
    log_det = torch.log(torch.diagonal(chol)).sum()
    p = x.shape[-1]
    return (-0.5 * (z ** 2).sum(0) - log_det - 0.5 * p * math.log(2 * math.pi)).reshape(
        x.shape[:-1])


def _weighted_cov(theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    mean = weights @ theta
    centred = theta - mean
    cov = (centred * weights[:, None]).T @ centred / (1 - (weights ** 2).sum())
    return (cov + cov.T) / 2 + 1e-12 * torch.eye(len(mean), dtype=cov.dtype)


# ---------------------------------------------------------------------- the corner plot

#: colours of the posteriors in one corner plot, in order
POSTERIOR_COLOURS = ("C0", "C1", "C2", "C3", "C4")


def _named_posteriors(posteriors: Any) -> dict[str, PosteriorSamples]:
    """Legend name -> samples: a dict as given; a list by method, repeats numbered ("abc",
    "abc 2": two ABC posteriors were one, the first dropped silently)."""
    items = list(posteriors.items()) if isinstance(posteriors, dict) else \
        [(None, post) for post in posteriors]
    named: dict[str, PosteriorSamples] = {}
    for k, (name, post) in enumerate(items):
        if not isinstance(post, PosteriorSamples):
            raise ValidationError(
                f"posterior_plot takes PosteriorSamples (what gaussian_posterior, abc and pmc "
                f"return), got {type(post).__name__} for {name if name is not None else k!r}.")
        if name is None:
            name, count = post.method, 2
            while name in named:
                name, count = f"{post.method} {count}", count + 1
        named[str(name)] = post
    return named


def posterior_plot(posteriors: Sequence[PosteriorSamples] | dict[str, PosteriorSamples],
                   truth: Sequence[float] | None = None, labels: Sequence[str] | None = None,
                   path: str | Path | None = None, bins: int = 30) -> Figure:
    """Corner plot: weighted histograms of each parameter on the diagonal, the 68 % and 95 %
    regions of each pair below it (weighted 2-D histograms), one colour per posterior, the
    true values as lines.  ``posteriors``: a list, or a dict ``{legend name: samples}``."""
    from matplotlib.figure import Figure

    named = _named_posteriors(posteriors)
    if not named:
        raise ValidationError("posterior_plot needs at least one PosteriorSamples.")
    p = next(iter(named.values())).samples.shape[1]
    widths = {name: post.samples.shape[1] for name, post in named.items()}
    if len(set(widths.values())) > 1:
        raise ValidationError(f"posterior_plot: the posteriors are over different numbers of "
                              f"parameters ({widths}); plot those of one problem together.")
    labels = list(labels) if labels is not None else [f"θ{i}" for i in range(p)]
    for given, name in ((labels, "labels"), (truth, "truth")):
        if given is not None and len(given) != p:  # (an IndexError, or values ignored)
            raise ValidationError(f"posterior_plot: `{name}` has {len(given)} entries for {p} "
                                  "parameters; give one per parameter.")
    stacked = np.concatenate([s.samples[s.weights > 0] for s in named.values()])
    low, high = np.percentile(stacked, 0.5, 0), np.percentile(stacked, 99.5, 0)
    pad = 0.05 * (high - low)
    ranges = list(zip(low - pad, high + pad))
    fig = Figure(figsize=(2.6 * p + 0.6, 2.6 * p), constrained_layout=True)
    axes = np.asarray(fig.subplots(p, p, squeeze=False))
    for k, (name, post) in enumerate(named.items()):
        colour = POSTERIOR_COLOURS[k % len(POSTERIOR_COLOURS)]
        for i in range(p):
            axes[i, i].hist(post.samples[:, i], bins=bins, range=ranges[i],
                            weights=post.weights, density=True, histtype="step",
                            color=colour, label=name)
            for j in range(i):
                _contours(axes[i, j], post.samples[:, j], post.samples[:, i], post.weights,
                          (ranges[j], ranges[i]), bins, colour)
    for i in range(p):
        for j in range(p):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            ax.set_xlim(*ranges[j])
            if j < i:
                ax.set_ylim(*ranges[i])
            if truth is not None:
                ax.axvline(truth[j], color="k", lw=0.8, ls="--")
                if j < i:
                    ax.axhline(truth[i], color="k", lw=0.8, ls="--")
            if i == p - 1:
                ax.set_xlabel(labels[j])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i])
    axes[0, 0].legend(fontsize=8, loc="upper right")
    if path is not None:
        save_figure(fig, path, dpi=90)
    return fig


def _contours(ax: Any, x: np.ndarray, y: np.ndarray, weights: np.ndarray, ranges: Any,
              bins: int, colour: str) -> None:
    """The 68 % and 95 % highest-density regions of a weighted 2-D histogram, smoothed by a
    one-bin Gaussian (a thousand samples give ragged contours otherwise)."""
    from scipy.ndimage import gaussian_filter

    hist, xe, ye = np.histogram2d(x, y, bins=bins, range=ranges, weights=weights)
    hist = gaussian_filter(hist, sigma=1.0)
    flat = np.sort(hist.ravel())[::-1]
    cumulative = np.cumsum(flat) / max(flat.sum(), 1e-300)
    levels = sorted({flat[min(np.searchsorted(cumulative, q), len(flat) - 1)]
                     for q in (0.95, 0.68)})
    if len(levels) < 2 or levels[-1] <= 0:
        ax.scatter(x, y, s=1, color=colour, alpha=0.3)
        return
    centres = ((xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2)
    ax.contour(*centres, hist.T, levels=levels, colors=colour, linewidths=1)


__all__ = ["PosteriorSamples", "gaussian_posterior", "abc_rejection", "population_monte_carlo",
           "posterior_plot", "fisher_distance", "prior_log_prob", "check_prior",
           "INFERENCE_BATCH"]

"""The reference problem of the imnn tutorial, used by the IMNN demo, tests and benchmarks:
10 points d_i ~ N(μ, Σ) at θ_fid = (μ, Σ) = (0, 1); the exact Fisher matrix there is
diag(n/Σ, n/(2Σ²)) = diag(10, 5), det F = 50.  Also the history plot of a fitted IMNN.
(A helper module: no recipe is defined here.)"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from infoblocks.blocks.data import as_tensor
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.figures import save_figure
from infoblocks.blocks.fisher import fisher_statistics, network_summaries

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .imnn import IMNN

DEMO_POINTS = 10
DEMO_THETA_FID = (0.0, 1.0)
DEMO_EXACT_DET_F = 50.0
#: the demo's inference: a target drawn at θ_fid with this seed (mean d 0.06, mean d² 1.09)
#: and a uniform prior on [low, high]
DEMO_TARGET_SEED = 7
DEMO_PRIOR = ((-1.5, 0.1), (1.5, 3.0))


def gaussian_simulator(generator: torch.Generator, theta: torch.Tensor) -> torch.Tensor:
    """Batched simulator of the reference problem: theta (n, 2) = (μ, Σ) -> (n, 10) points
    d = μ + √Σ · z, z ~ N(0, 1); differentiable in θ (forward-mode autograd)."""
    noise = torch.randn(theta.shape[0], DEMO_POINTS, generator=generator, device=theta.device,
                        dtype=theta.dtype)
    return theta[:, :1] + theta[:, 1:2].sqrt() * noise


def gaussian_simulations(n: int, seed: int, theta: tuple[float, float] = DEMO_THETA_FID
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Fixed simulations of the reference problem: fiducial (n, 10) and ∂d/∂θ (n, 2, 10)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, DEMO_POINTS, generator=generator, dtype=torch.float64)
    mu, sigma = theta
    fiducial = mu + math.sqrt(sigma) * z
    derivative = torch.stack([torch.ones_like(z), z / (2 * math.sqrt(sigma))], 1)
    return fiducial.float().numpy(), derivative.float().numpy()


class OracleSummaries(torch.nn.Module):
    """The exact sufficient statistics of the reference problem: (Σ d_i, Σ d_i²)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.sum(-1), (x ** 2).sum(-1)], -1)


def oracle_det_F(fiducial: Any, derivative: Any) -> float:
    """det F of the exact sufficient statistics (Σd, Σd²) on the given reference simulations:
    the best any network can score on that finite set (≈ 50 ± 3.3 for 1000 simulations)."""
    fid = as_tensor(fiducial, "fiducial", ndim=2, dtype=torch.float64)
    der = as_tensor(derivative, "derivative", ndim=3, dtype=torch.float64)
    s, ds = network_summaries(OracleSummaries(), {"fiducial": fid, "derivative": der})
    return float(torch.linalg.det(fisher_statistics(s, ds).F))


def exact_posterior(target: Any, low: tuple[float, float], high: tuple[float, float],
                    grid: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the exact posterior of (μ, Σ) given one simulation
    ``target`` (10 points) under a uniform prior on the box [low, high] (a grid of
    ``grid`` × ``grid`` values): what ABC on the reference problem should find."""
    d = np.asarray(target, dtype=np.float64).reshape(-1)
    mu = np.linspace(low[0], high[0], grid)[:, None]
    sigma = np.linspace(max(low[1], 1e-9), high[1], grid)[None, :]
    squares = ((d[None, None, :] - mu[..., None]) ** 2).sum(-1)  # (grid, 1)
    log_post = -0.5 * len(d) * np.log(sigma) - squares / (2 * sigma)
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    mu_marginal, sigma_marginal = post.sum(1), post.sum(0)
    mean = np.array([mu_marginal @ mu[:, 0], sigma_marginal @ sigma[0]])
    var = np.array([mu_marginal @ mu[:, 0] ** 2, sigma_marginal @ sigma[0] ** 2]) - mean ** 2
    return mean, np.sqrt(var)


def plot_history(imnn: IMNN, expected_detF: float | None = None,
                 path: str | Path | None = None, label: str = "") -> Figure:
    """det F (train and validation), det C / det C⁻¹, Λ₂ and r per epoch of a fitted IMNN."""
    from matplotlib.figure import Figure

    number = (int, float, np.integer, np.floating)
    if expected_detF is not None and (isinstance(expected_detF, bool) or not isinstance(
            expected_detF, number) or not np.isfinite(expected_detF)):
        raise ValidationError(f"`expected_detF` must be a finite number (the det F the problem "
                              f"allows) or None, got {expected_detF!r}.")
    h = imnn.history_
    fig = Figure(figsize=(6, 8), constrained_layout=True)
    ax = fig.subplots(3, 1, sharex=True)
    it = h["epoch"]
    ax[0].plot(it, h["det_F"], color="C0", alpha=0.6, label=f"{label} train".strip())
    val = np.asarray(h["val_det_F"], dtype=float)
    seen = np.isfinite(val)  # validated every `validation_every` epochs
    ax[0].plot(np.asarray(it)[seen], val[seen], color="C1", label=f"{label} validation".strip())
    if expected_detF is not None:
        ax[0].axhline(expected_detF, color="k", ls="--", lw=1, label="expected")
    if imnn.best_epoch_ is not None:
        ax[0].axvline(imnn.best_epoch_, color="gray", ls=":", lw=1, label="best")
    ax[0].set_ylabel(r"$|\mathbf{F}|$")
    ax[0].legend(fontsize=8)
    ax[1].semilogy(it, h["det_C"], color="C0", label=r"$|\mathbf{C}|$")
    ax[1].semilogy(it, h["det_invC"], color="C2", label=r"$|\mathbf{C}^{-1}|$")
    ax[1].axhline(1, color="k", ls="--", lw=1)
    ax[1].legend(fontsize=8)
    ax[2].plot(it, h["Lambda2"], color="C0", label=r"$\Lambda_2$")
    twin = ax[2].twinx()
    twin.plot(it, h["r"], color="C3", label="r")
    twin.set_ylabel("r")
    ax[2].set_ylabel(r"$\Lambda_2$")
    ax[2].set_xlabel("epoch")
    if path is not None:
        save_figure(fig, path, dpi=90)
    return fig


__all__ = ["DEMO_POINTS", "DEMO_THETA_FID", "DEMO_EXACT_DET_F", "DEMO_TARGET_SEED", "DEMO_PRIOR",
           "gaussian_simulator",
           "gaussian_simulations", "OracleSummaries", "oracle_det_F", "exact_posterior",
           "plot_history"]

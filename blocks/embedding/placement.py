"""New points placed among the fixed training positions: umap-learn's ``transform`` step.

A parametric embedding maps a new point x' through its network, f(x').  The network is fitted
to the training points; between them it interpolates, and what it puts between clusters is
its own guess.  :func:`place` refines that guess against the map itself: x''s k nearest
training points j (in the data's metric), their fuzzy memberships w_j (UMAP's calibration,
Σ_j w_j = log2 k, normalised to sum 1), and y' moved to minimise UMAP's cross-entropy against
the FIXED training positions Y:

    L(y') = Σ_j w_j softplus(−z(‖y' − Y_j‖²)) + γ Σ_j w_j Σ_{r ≤ R} softplus(z(‖y' − Y_{k_jr}‖²))

(z = the kernel's logit, k_jr uniform negatives among the training points — one draw per step
shared by all new points —, R = the negative sampling rate), by Adam with a cosine-decayed step
from y' = f(x').  Every new point moves alone (the training positions do not): a point's place
depends on the seed and its own neighbours, not on the other rows of the call.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ValidationError
from ..optim import LeanAdam
from .affinities import ConnectivityBasedRescale

#: new points refined at once (memory ~ rows × k × (R + 1) × d floats)
ROWS_PER_CHUNK = 16_384


def memberships(distances: torch.Tensor, local_connectivity: float = 1.0) -> torch.Tensor:
    """UMAP's fuzzy memberships of each row of distances ``(m, k)`` to its neighbours
    (ρ, σ calibrated as for the training graph), normalised to sum 1 per row."""
    rho, sigma = ConnectivityBasedRescale(local_connectivity=local_connectivity).calibrate(
        distances.double())
    w = torch.exp(-(distances.double() - rho[:, None]).clamp_min(0.0) / sigma[:, None])
    return (w / w.sum(1, keepdim=True).clamp_min(1e-300)).float()


def place(start: torch.Tensor, neighbours: torch.Tensor, weights: torch.Tensor,
          positions: torch.Tensor, kernel: Any, *, epochs: int = 100,
          learning_rate: float = 0.2, neg_sampling_rate: int = 5,
          repulsion_strength: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Refined positions ``(m, d)`` of new points started at ``start`` ``(m, d)``, with
    ``neighbours`` ``(m, k)`` indices into the fixed training ``positions`` ``(n, d)`` and
    their normalised memberships ``weights`` ``(m, k)`` (module docstring)."""
    if start.shape[0] != neighbours.shape[0] or neighbours.shape != weights.shape:
        raise ValidationError(f"place: start {tuple(start.shape)}, neighbours "
                              f"{tuple(neighbours.shape)} and weights {tuple(weights.shape)} "
                              "must have one row per new point (and k columns).")
    if epochs <= 0 or start.shape[0] == 0:
        return start.detach().clone()
    fixed = positions.detach()
    out = []
    for lo in range(0, start.shape[0], ROWS_PER_CHUNK):  # every chunk: the same draws
        hi = min(lo + ROWS_PER_CHUNK, start.shape[0])
        generator = torch.Generator(device=positions.device).manual_seed(seed)
        out.append(_place_chunk(start[lo:hi], neighbours[lo:hi], weights[lo:hi], fixed, kernel,
                                epochs, learning_rate, neg_sampling_rate, repulsion_strength,
                                generator))
    return torch.cat(out)


def _place_chunk(start, neighbours, weights, fixed, kernel, epochs, learning_rate,
                 neg_sampling_rate, repulsion_strength, generator) -> torch.Tensor:
    m, k = neighbours.shape
    anchors = fixed[neighbours]  # (m, k, d)
    y = torch.nn.Parameter(start.detach().clone().to(fixed))
    optimizer = LeanAdam([y], lr=learning_rate)
    for epoch in range(epochs):
        optimizer.param_groups[0]["lr"] = \
            learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        z_pos = kernel.logit((y[:, None, :] - anchors).pow(2).sum(-1))  # (m, k)
        # one set of negatives per step for every point: a point's place depends on the seed
        # and its own neighbours only, not on the other rows of the call (copies coincide)
        negatives = fixed[torch.randint(0, fixed.shape[0], (k * neg_sampling_rate,),
                                        generator=generator, device=fixed.device)]
        z_neg = kernel.logit((y[:, None, :] - negatives[None]).pow(2).sum(-1)).view(
            m, k, neg_sampling_rate)
        loss = (weights * F.softplus(-z_pos)).sum() + repulsion_strength * (
            weights[:, :, None] * F.softplus(z_neg)).sum()
        y.grad = None
        loss.backward()
        optimizer.step()
    return y.detach()


__all__ = ["ROWS_PER_CHUNK", "memberships", "place"]

"""The shared numerics layer: one chunked top-k, one periodic convention, one PCA, one cosine
schedule and one chunk-size setting, used by every family (exact kNN, the quality measures,
DII's evaluation, the PCA front end and init, learning-rate and k schedules).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

#: elements of one block of a pairwise matrix in every chunked computation (64 MB of float32)
CHUNK_ELEMENTS = 16_000_000


def rows_per_chunk(width: int, chunk_elements: int = CHUNK_ELEMENTS, buffers: int = 1) -> int:
    """Rows of a ``(rows, width)`` block so that ``buffers`` such blocks fit the budget."""
    return max(1, chunk_elements // max(1, width * buffers))


def squared_euclidean_scores(block: torch.Tensor, reference: torch.Tensor,
                             reference_sq_norms: torch.Tensor | None = None) -> torch.Tensor:
    """‖r‖² − 2 b·r: orders the rows of ``reference`` like ‖b − r‖² with one matrix product
    (add ‖b‖² for the distances themselves)."""
    if reference_sq_norms is None:
        reference_sq_norms = (reference * reference).sum(1)
    return reference_sq_norms[None, :] - 2.0 * (block @ reference.T)


def chunked_topk(queries: torch.Tensor, reference: torch.Tensor | None, k: int,
                 scores: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Indices ``(n, k)`` of the k rows of ``reference`` with the smallest ``scores(block,
    reference)`` for each row of ``queries``, smallest first, computed one block of rows at a
    time (no n×m matrix).  ``reference=None`` searches ``queries`` itself and leaves each point
    out of its own neighbours.  ``scores`` defaults to the squared-Euclidean ranking scores."""
    self_search = reference is None
    ref = queries if self_search else reference
    if scores is None:
        norms = (ref * ref).sum(1)
        scores = lambda block, r: squared_euclidean_scores(block, r, norms)  # noqa: E731
    step = rows_per_chunk(ref.shape[0], chunk_elements)
    out = torch.empty((queries.shape[0], k), dtype=torch.long, device=queries.device)
    for start in range(0, queries.shape[0], step):
        stop = min(start + step, queries.shape[0])
        block = scores(queries[start:stop], ref)
        if self_search:
            rows = torch.arange(stop - start, device=block.device)
            block[rows, rows + start] = float("inf")
        out[start:stop] = torch.topk(block, k, dim=1, largest=False, sorted=True).indices
    return out


def wrap_periodic(diff: torch.Tensor, periods: torch.Tensor | None) -> torch.Tensor:
    """The one periodic convention: the signed minimum-image difference
    diff − P·round(diff / P) for features with a period P > 0 (finite); other features (period
    0, inf or None) unchanged.  ``|wrap_periodic(x − y, P)| = min(|x − y| mod P, P − ...)``."""
    if periods is None:
        return diff
    periods = torch.as_tensor(periods, dtype=diff.dtype, device=diff.device)
    periodic = (periods > 0) & torch.isfinite(periods)
    safe = torch.where(periodic, periods, torch.ones_like(periods))
    return diff - torch.where(periodic, torch.round(diff / safe) * safe, torch.zeros_like(diff))


@torch.no_grad()
def pca_axes(x: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean ``(d,)`` and the leading principal axes ``(d, n_components)`` of ``x``
    ``(n, d)``, each axis signed so that its largest loading is positive (deterministic).
    Exact (eigh of the d×d scatter) up to 4,096 features, randomized above."""
    x = x.detach().double()
    mean = x.mean(0)
    centred = x - mean
    if x.shape[1] <= 4096:
        _, vecs = torch.linalg.eigh(centred.T @ centred)
        axes = vecs[:, -n_components:].flip(1)
    else:
        q = min(n_components + 10, *x.shape)
        _, _, v = torch.pca_lowrank(centred, q=q, center=False, niter=6)
        axes = v[:, :n_components]
    signs = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    return mean, axes * torch.where(signs == 0, torch.ones_like(signs), signs)


def cosine_factor(step: int, total_steps: int) -> float:
    """1 at step 0 -> 0 at ``total_steps`` on a half cosine (clamped past the end)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def cosine_schedule(start: float, final: float, step: int, total_steps: int) -> float:
    """``start`` at step 0 -> ``final`` at ``total_steps`` on a half cosine (learning rates,
    DII's k)."""
    return final + (start - final) * cosine_factor(step, total_steps)


__all__ = ["CHUNK_ELEMENTS", "rows_per_chunk", "squared_euclidean_scores", "chunked_topk",
           "wrap_periodic", "pca_axes", "cosine_factor", "cosine_schedule"]

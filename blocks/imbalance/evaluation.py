"""Full-data values of the (Differentiable) Information Imbalance, in row chunks: the final
DII (:func:`chunked_dii`, what ``DII.final_dii`` and ``select_features`` compute, with the
recipe's evaluation blocks) and the classic imbalance (:func:`information_imbalance`).
Nothing here builds an n × n matrix for the whole data set: a chunk's buffers hold at most
``max_elements`` numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..data import DEFAULT_DTYPE, as_tensor
from ..errors import ValidationError
from .distances import (CHUNK_ELEMENTS, WeightedSquaredEuclidean, _chunk_rows,
                        is_feature_weighted, periods_tensor, squared_distances,
                        weighted_squared_distances)
from .ranks import _argsort_rows
from .softmax import _EXP_FLOOR, _LAMBDA_FLOOR, LAMBDA_FACTOR, GaussianSoftmax

@torch.no_grad()
def chunked_dii(
    data_A: torch.Tensor,
    weights: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    *,
    k: int,
    data_B: torch.Tensor | None = None,
    distances_B: torch.Tensor | None = None,
    distance_A: Any = None,
    distance_B: Any = None,
    softmax: Any = None,
    periods_A: torch.Tensor | None = None,
    periods_B: torch.Tensor | None = None,
    point_adaptive: bool = True,
    lambda_factor: float = LAMBDA_FACTOR,
    lambda_value: float | None = None,
    discard_close_ind: int = 0,
    normalization: float | None = None,
    max_elements: int = CHUNK_ELEMENTS,
    row_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-row DII terms 2/norm · Σ_j c_ij r_ij over ``rows`` × ``cols``, in row chunks: (r,).

    ``distance_A`` (the protocol of :mod:`.distances`; default the weighted squared Euclidean
    with ``periods_A``) gives d^A under ``weights`` (D,); ``softmax`` (default a
    :class:`GaussianSoftmax` with ``point_adaptive`` / ``lambda_factor``) the coefficients —
    another block's ``coefficients`` is called per row chunk, so it must act row by row;
    ``distance_B`` (default squared Euclidean with ``periods_B``) or the matrix
    ``distances_B`` the ranks.  The pair i = j and, with ``discard_close_ind`` = t, the 2t + 1
    items of the window [i − t, i + t] (item indices; moved inside [0, N − 1] at the ends, as
    DADApy's mask does, so that every row keeps N − 2t − 1 candidates) are excluded from both
    the softmax and the ranking.  ``normalization`` defaults to
    the number of columns.  No (n, n) matrix is formed: a chunk holds at most
    ``max_elements`` numbers.  ``row_mean`` (default ``Tensor.mean``) averages the rows'
    k-th neighbour distances for a global λ; rows spread over processes pass a reduction.
    """
    if (data_B is None) == (distances_B is None):
        raise ValidationError("chunked_dii needs exactly one of `data_B` and `distances_B`.")
    if distance_A is None:
        distance_A = WeightedSquaredEuclidean(
            periods=None if periods_A is None else periods_A.tolist())
    if distance_B is None and data_B is not None:
        distance_B = WeightedSquaredEuclidean(
            periods=None if periods_B is None else periods_B.tolist())
    fused = softmax is None or type(softmax) is GaussianSoftmax
    if softmax is not None and fused:
        point_adaptive, lambda_factor = softmax.point_adaptive, softmax.lambda_factor
        lambda_value = softmax.lambda_value if lambda_value is None else lambda_value
    step = min(_chunk_rows(cols.numel(), max_elements), rows.numel())
    n_items = int(max(int(rows.max()), int(cols.max()))) + 1 if rows.numel() else 0
    norm = float(cols.numel() if normalization is None else normalization)
    buffers = _ChunkBuffers(step, cols.numel(), data_A.device)
    a_cols = data_A[cols]

    def chunk(s: int) -> tuple[torch.Tensor, _ChunkBuffers]:
        r = rows[s:s + step]
        buf = buffers.rows(r.numel())
        if discard_close_ind > 0:  # DADApy's window: 2t + 1 columns of every row, [i − t, i + t]
            # moved inside [0, N − 1] at the ends, so every row keeps N − 2t − 1 candidates
            low = (r - discard_close_ind).clamp_(0, max(n_items - 2 * discard_close_ind - 1, 0))
            torch.sub(cols[None, :], low[:, None], out=buf.index_gap)
            torch.logical_and(buf.index_gap >= 0, buf.index_gap <= 2 * discard_close_ind,
                              out=buf.exclude)
        else:
            torch.sub(r[:, None], cols[None, :], out=buf.index_gap)
            torch.eq(buf.index_gap, 0, out=buf.exclude)
        distance_A.pairwise_into(data_A[r], a_cols, weights, out=buf.dist_a, work=buf.work)
        return r, buf

    def kth_distance(buf: _ChunkBuffers) -> torch.Tensor:
        masked = buf.work.copy_(buf.dist_a).masked_fill_(buf.exclude, float("inf"))
        if k == 1:
            return masked.min(dim=1).values
        return torch.topk(masked, k, dim=1, largest=False).values[:, k - 1]

    lam_global = None
    if fused and lambda_value is None and not point_adaptive:  # first pass: mean k-th distance
        kth = torch.cat([kth_distance(chunk(s)[1]) for s in range(0, rows.numel(), step)])
        lam_global = lambda_factor * (kth.mean() if row_mean is None else row_mean(kth))
    out = []
    for s in range(0, rows.numel(), step):
        r, buf = chunk(s)
        if distances_B is not None:
            buf.dist_b.copy_(distances_B[r][:, cols])
        elif is_feature_weighted(distance_B):
            distance_B.pairwise_into(data_B[r], data_B[cols], None, out=buf.dist_b,
                                     work=buf.ranks)
        else:
            buf.dist_b.copy_(distance_B.pairwise(data_B[r], data_B[cols]))
        order = _argsort_rows(buf.dist_b.masked_fill_(buf.exclude, float("inf")))
        buf.ranks.scatter_(1, order, buffers.positions.expand(r.numel(), -1))
        if not fused:  # a plugin's coefficients, row chunk by row chunk
            c = softmax.coefficients(buf.dist_a, buf.exclude, k=k, lambda_value=lambda_value)
            out.append(2.0 / norm * (c * buf.ranks).masked_fill_(buf.exclude, 0.0).sum(1))
            continue
        if lambda_value is not None:
            lam = torch.full((r.numel(),), float(lambda_value), device=data_A.device)
        elif lam_global is not None:
            lam = lam_global.expand(r.numel())
        else:
            lam = lambda_factor * kth_distance(buf)
        # softmax in place: work = exp(logit − max), normalised by its row sum at the end
        logits = torch.mul(buf.dist_a, (-1.0 / lam.clamp_min(_LAMBDA_FLOOR))[:, None],
                           out=buf.work).masked_fill_(buf.exclude, float("-inf"))
        logits.sub_(logits.max(dim=1, keepdim=True).values).clamp_min_(_EXP_FLOOR)
        weights_c = logits.exp_().masked_fill_(buf.exclude, 0.0)
        total = weights_c.sum(1)
        out.append(2.0 / norm * weights_c.mul_(buf.ranks).sum(1) / total)
    return torch.cat(out)


class _ChunkBuffers:
    """(rows, cols) work buffers of :func:`chunked_dii`, allocated once and reused by every
    chunk: the same few blocks instead of fresh ones per chunk, which the allocator fragmented
    (the resident size grew by ~5 MB per chunk at N = 20,000)."""

    def __init__(self, n_rows: int, n_cols: int, device: torch.device | str,
                 parent: _ChunkBuffers | None = None, count: int | None = None) -> None:
        if parent is not None:
            for name in ("dist_a", "dist_b", "work", "ranks", "exclude", "index_gap"):
                setattr(self, name, getattr(parent, name)[:count])
            self.positions = parent.positions
            return
        shape = (n_rows, n_cols)
        self.dist_a = torch.empty(shape, dtype=DEFAULT_DTYPE, device=device)
        self.dist_b = torch.empty(shape, dtype=DEFAULT_DTYPE, device=device)
        self.work = torch.empty(shape, dtype=DEFAULT_DTYPE, device=device)
        self.ranks = torch.empty(shape, dtype=DEFAULT_DTYPE, device=device)
        self.exclude = torch.empty(shape, dtype=torch.bool, device=device)
        self.index_gap = torch.empty(shape, dtype=torch.long, device=device)
        self.positions = torch.arange(1, n_cols + 1, dtype=DEFAULT_DTYPE, device=device)

    def rows(self, count: int) -> _ChunkBuffers:
        """The first ``count`` rows of every buffer (the last chunk may be shorter)."""
        return _ChunkBuffers(0, 0, "cpu", parent=self, count=count)


@torch.no_grad()
def nearest_neighbour_ranks(
    source: torch.Tensor,
    target: torch.Tensor,
    *,
    k: int = 1,
    periods_source: torch.Tensor | None = None,
    periods_target: torch.Tensor | None = None,
    weights_source: torch.Tensor | None = None,
    max_elements: int = CHUNK_ELEMENTS,
    distance_source: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    distance_target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Ranks in ``target`` of each point's k nearest neighbours in ``source``: (n, k).

    r = 1 + #{l ≠ i : d^target_il < d^target_ij}; in row chunks, without any (n, n) matrix.
    ``distance_source`` / ``distance_target`` are ``(c, D), (n, D) -> (c, n)`` callables;
    by default weighted (``weights_source``) squared Euclidean with the periods.
    """
    if distance_source is None:
        w2 = None if weights_source is None else weights_source ** 2

        def distance_source(x, y):
            return weighted_squared_distances(x, y, w2, periods_source)
    if distance_target is None:
        def distance_target(x, y):
            return squared_distances(x, y, periods_target)
    n = source.shape[0]
    step = _chunk_rows(n, max_elements)
    idx = torch.arange(n, device=source.device)
    out = []
    for s in range(0, n, step):
        r = idx[s:s + step]
        self_mask = r[:, None] == idx[None, :]
        d_s = distance_source(source[r], source).masked_fill(self_mask, float("inf"))
        nn_idx = torch.topk(d_s, k, dim=1, largest=False).indices  # (c, k)
        d_t = distance_target(target[r], target).masked_fill(self_mask, float("inf"))
        at_nn = torch.gather(d_t, 1, nn_idx)  # (c, k)
        out.append(1 + (d_t[:, None, :] < at_nn[:, :, None]).sum(-1))
    return torch.cat(out).to(DEFAULT_DTYPE)


def information_imbalance(
    data_A: Any,
    data_B: Any,
    *,
    k: int = 1,
    periods_A: Any = None,
    periods_B: Any = None,
    weights_A: Any = None,
    max_elements: int = CHUNK_ELEMENTS,
    distance_A: Any = None,
    distance_B: Any = None,
) -> tuple[float, float]:
    """The classic (non-differentiable) information imbalance (Δ(A→B), Δ(B→A)).

    Δ(A→B) = 2/n · mean over points i and their k nearest neighbours j in A of the rank r^B_ij
    (≈ 0: A predicts B's neighbourhoods; ≈ 1: no information).  ``distance_A`` (the protocol
    of :mod:`.distances`, under ``weights_A``) and ``distance_B`` default to the squared
    Euclidean with ``periods_A`` / ``periods_B``.  ``(n, D_A), (n, D_B) -> two floats``.
    """
    from ..data import check_same_length

    a = as_tensor(data_A, "data_A", ndim=2)
    b = as_tensor(data_B, "data_B", ndim=2)
    n = check_same_length(data_A=a, data_B=b)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValidationError(f"`k` must be an integer in [1, {n - 1}] for {n} points, got {k!r}.")
    if distance_A is None:
        pa = periods_tensor(periods_A, a.shape[1], "periods_A")
        distance_A = WeightedSquaredEuclidean(periods=None if pa is None else pa.tolist())
    if distance_B is None:
        pb = periods_tensor(periods_B, b.shape[1], "periods_B")
        distance_B = WeightedSquaredEuclidean(periods=None if pb is None else pb.tolist())
    wa = None
    if weights_A is not None:
        wa = as_tensor(np.asarray(weights_A, dtype=float).reshape(-1), "weights_A", ndim=1)
        if wa.numel() != a.shape[1]:
            raise ValidationError(
                f"`weights_A` has {wa.numel()} entries but data_A has {a.shape[1]} features."
            )

    def dist_a(x, y):
        return distance_A.weighted_pairwise(x, y, wa)

    def dist_b(x, y):
        return distance_B.pairwise(x, y)

    a_to_b = nearest_neighbour_ranks(a, b, k=k, distance_source=dist_a, distance_target=dist_b,
                                     max_elements=max_elements)
    b_to_a = nearest_neighbour_ranks(b, a, k=k, distance_source=dist_b, distance_target=dist_a,
                                     max_elements=max_elements)
    return float(2.0 / n * a_to_b.mean()), float(2.0 / n * b_to_a.mean())

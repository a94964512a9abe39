"""k-nearest-neighbour relations: the sparse graph behind parametric UMAP and t-SNE.

Below ``exact_threshold`` items the k nearest neighbours are found exactly with torch, a block
of rows at a time (no n × n array, no numba compilation); above it with pynndescent's
approximate search (which pays a one-off numba compilation of ~30 s per process).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np
import torch

from .base import block_field
from .distances import Euclidean, SquaredEuclidean
from .errors import ValidationError
from .numerics import CHUNK_ELEMENTS, chunked_topk
from .relations import Relation, SparseRelations, _data_tensor
from .validators import positive_int

#: below this many items the exact chunked torch search is used.  Measured on 2 CPU cores
#: (784-D): exact search of 20,000 items takes ~6 s, while pynndescent's first call in a process
#: costs 30-50 s of numba compilation; umap-learn switches at 4,096.
EXACT_THRESHOLD = 20_000
#: distances pynndescent knows natively, by our registry name
_PYNNDESCENT_METRICS = {"euclidean": "euclidean", "sqeuclidean": "sqeuclidean", "cosine": "cosine"}


def _pair_distances(metric: Any, block: torch.Tensor, x: torch.Tensor,
                    indices: torch.Tensor) -> torch.Tensor:
    """d(block_i, x_{indices[i, j]}): ``(c, d), (n, d), (c, k) -> (c, k)``."""
    neighbours = x[indices]  # (c, k, d)
    if isinstance(metric, (Euclidean, SquaredEuclidean)):
        sq = (neighbours - block[:, None, :]).pow_(2).sum(-1)
        return sq if isinstance(metric, SquaredEuclidean) else sq.sqrt_()
    c, k = indices.shape
    return metric.paired(block[:, None, :].expand_as(neighbours).reshape(c * k, -1),
                         neighbours.reshape(c * k, -1)).reshape(c, k)


def exact_knn(x: torch.Tensor, k: int, metric: Any,
              chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours of every row of ``x`` (self excluded), rows in blocks (the
    shared :func:`~infoblocks.blocks.numerics.chunked_topk`).

    ``(n, d) -> indices (n, k) int64, distances (n, k)`` sorted by distance.
    """
    n = x.shape[0]
    # (squared) Euclidean: the shared ranking scores ‖x‖² − 2 a·x of one matrix product; the
    # exact distances of the chosen pairs are recomputed below
    scores = None if isinstance(metric, (Euclidean, SquaredEuclidean)) else metric.pairwise
    indices = chunked_topk(x, None, k, scores, chunk_elements)
    # exact distances of the chosen pairs, one block of rows at a time
    pair_rows = max(1, chunk_elements // max(k * x.shape[1], 1))
    dists = torch.cat([_pair_distances(metric, x[s:s + pair_rows], x, indices[s:s + pair_rows])
                       for s in range(0, n, pair_rows)])
    # exact distances may reorder near-ties of the fast scores: sort each row again
    dists, order = torch.sort(dists, dim=1)
    return torch.gather(indices, 1, order), dists


def approximate_knn(x: torch.Tensor, k: int, metric_name: str,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours by pynndescent (self excluded): ``(n, d) -> (n, k), (n, k)``."""
    from pynndescent import NNDescent  # imported lazily: numba compilation is expensive

    data = x.detach().cpu().numpy().astype(np.float32)
    n = data.shape[0]
    n_trees = min(64, 5 + int(round(np.sqrt(n) / 20.0)))  # umap-learn's heuristic
    n_iters = max(5, int(round(np.log2(n))))
    index = NNDescent(data, n_neighbors=k + 1, metric=metric_name, n_trees=n_trees,
                      n_iters=n_iters, max_candidates=60, random_state=seed,
                      low_memory=True, verbose=False)
    idx, dist = index.neighbor_graph
    idx, dist = torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(dist.astype(np.float32))
    # drop the point itself; where the search missed it, drop the farthest candidate instead
    is_self = idx == torch.arange(n)[:, None]
    drop = is_self.clone()
    drop[:, -1] |= ~is_self.any(1)
    keep = ~drop
    # rows with duplicated self entries (cannot happen in pynndescent) would break the reshape
    keep &= torch.cumsum(keep.long(), 1) <= k
    return idx[keep].reshape(n, k).to(x.device), dist[keep].reshape(n, k).to(x.device)


@torch.no_grad()
def query_knn(queries: torch.Tensor, reference: Any, k: int, metric: Any,
              chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest rows of ``reference`` for every row of ``queries`` (new points: nothing
    is left out), in blocks of query rows: ``(m, d), (n, d) -> indices (m, k), distances (m, k)``
    sorted by distance.  ``metric`` is a distance block, as for :func:`exact_knn`.  A
    ``reference`` on disk (:class:`~infoblocks.blocks.data.LazyRows`: a memory-mapped array, a
    torch Dataset) is read a chunk of rows at a time, the running k best merged per chunk."""
    if k > reference.shape[0]:
        raise ValidationError(f"{k} neighbours asked among {reference.shape[0]} reference rows; "
                              "lower n_neighbors or fit on more data.")
    if not isinstance(reference, torch.Tensor):  # rows on disk: one chunk in memory at a time
        best_i = best_d = None
        start = 0
        for chunk in reference.chunks():
            chunk = chunk.to(queries)
            index, dist = query_knn(queries, chunk, min(k, chunk.shape[0]), metric,
                                    chunk_elements)
            index = index + start
            start += chunk.shape[0]
            if best_i is not None:
                index, dist = torch.cat([best_i, index], 1), torch.cat([best_d, dist], 1)
            # a stable sort: ties keep the earlier rows first (one chunk: its own order)
            dist, order = torch.sort(dist, dim=1, stable=True)
            best_i, best_d = torch.gather(index, 1, order[:, :k]), dist[:, :k]
        return best_i, best_d
    scores = None if isinstance(metric, (Euclidean, SquaredEuclidean)) else metric.pairwise
    indices = chunked_topk(queries, reference, k, scores, chunk_elements)
    pair_rows = max(1, chunk_elements // max(k * reference.shape[1], 1))
    dists = torch.cat([_pair_distances(metric, queries[s:s + pair_rows], reference,
                                       indices[s:s + pair_rows])
                       for s in range(0, queries.shape[0], pair_rows)])
    dists, order = torch.sort(dists, dim=1)
    return torch.gather(indices, 1, order), dists


@attrs.define
class NeighborBasedPDist(Relation):
    """Distances to the k nearest neighbours: ``(n, d) -> SparseRelations (n, n)``, k per row.

    Entry (i, j) holds d(x_i, x_j) for the k nearest neighbours j ≠ i of i.  Exact (torch,
    chunked) below ``exact_threshold`` items or for distances pynndescent does not know;
    approximate (pynndescent) above.  Memory: O(n k) plus one block of ``chunk_elements``.
    """

    name: ClassVar[str] = "neighbor_pdist"
    lazy_rows: ClassVar[bool] = True  # rows on disk: read whole (the k-NN search needs all)
    n_neighbors: int = attrs.field(default=15, validator=positive_int)
    metric: Any = block_field("distance", default="euclidean")
    exact_threshold: int = attrs.field(default=EXACT_THRESHOLD, validator=positive_int)
    chunk_elements: int = attrs.field(default=CHUNK_ELEMENTS, validator=positive_int)
    key: str = "data"
    seed: int = 0

    def neighbors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices and distances ``(n, k)`` of each row's k nearest neighbours, ascending."""
        n = x.shape[0]
        if n <= self.n_neighbors:
            raise ValidationError(
                f"`n_neighbors` = {self.n_neighbors} needs more than {self.n_neighbors} items, "
                f"got {n}; lower n_neighbors or pass more data."
            )
        native = _PYNNDESCENT_METRICS.get(self.metric.name)
        if n <= self.exact_threshold or native is None:
            return exact_knn(x, self.n_neighbors, self.metric, self.chunk_elements)
        return approximate_knn(x, self.n_neighbors, native, self.seed)

    def compute(self, data, **kwargs) -> SparseRelations:
        x = _data_tensor(data, self.key)
        if not x.is_floating_point():
            x = x.float()
        with torch.no_grad():
            idx, dist = self.neighbors(x)
        n, k = idx.shape
        rows = torch.arange(n, device=idx.device).repeat_interleave(k)
        return SparseRelations(rows, idx.reshape(-1), dist.reshape(-1), (n, n))


__all__ = ["NeighborBasedPDist", "exact_knn", "approximate_knn", "query_knn", "EXACT_THRESHOLD"]

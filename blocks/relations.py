"""Relation data (dense / sparse / edges) and the Relation blocks that compute them.

* :class:`DenseRelations` — an ``(n, m)`` tensor; only for small n.
* :class:`SparseRelations` — an ``(n, m)`` matrix stored as COO triplets (rows, cols, values);
  never densified above :data:`DENSE_LIMIT` elements without saying so.
* :class:`EdgeRelations` — a list of pairs ``(source, target, values)``; the form that samplers
  draw from and that distance-between-pairs relations produce.

A Relation block turns data into one of these: ``compute(data) -> RelationData``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np
import scipy.sparse
import torch

from .base import Block, block_field, not_implemented
from .data import Dataset, LazyRows, as_tensor
from .errors import SizeLimitError, ValidationError

#: largest number of elements a sparse relation is densified to without an explicit limit
#: (10^8 float32 = 400 MB; a 10,000 × 10,000 matrix)
DENSE_LIMIT = 100_000_000


class RelationData:
    """Base of the three relation containers."""

    shape: tuple[int, int]

    def to_dense(self, max_elements: int = DENSE_LIMIT) -> DenseRelations:
        raise not_implemented(self, "to_dense")

    def to_sparse(self) -> SparseRelations:
        raise not_implemented(self, "to_sparse")

    def to_edges(self) -> EdgeRelations:
        return self.to_sparse().to_edges()

    def restrict(self, index: torch.Tensor) -> torch.Tensor:
        """The relation among a batch's items: ``(B, B)`` dense, entry ``(a, b)`` the value
        at ``(index[a], index[b])`` (0 where a sparse relation has none); ``index`` ``(B,)``
        is the item sampler's ``batch["index"]``.  How a loss reads a pairwise global
        (``state.lookup(name)``, declared in ``required_globals``) at step time: a
        per-item global goes into the batch by ``gather`` instead.  O(B²) memory for the
        result; a sparse relation costs O(nnz) gathers, never an (n, n) matrix."""
        sparse = self.to_sparse()
        items, where = torch.unique(index.to(sparse.rows.device).long(), return_inverse=True)
        size = items.numel()  # (an item named twice: the same row and column twice)
        r, c = positions_within(sparse.rows, sparse.cols, self.shape[0], items)
        inside = ((r >= 0) & (c >= 0)).nonzero().squeeze(1)
        out = torch.zeros(size * size, dtype=sparse.values.dtype, device=items.device)
        out.index_add_(0, r[inside] * size + c[inside], sparse.values[inside])
        return out.view(size, size).index_select(0, where).index_select(1, where)


def positions_within(rows: torch.Tensor, cols: torch.Tensor, n: int, index: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The entries ``(rows, cols)`` of an (n × n) relation as positions in ``index`` ``(B,)``
    (distinct items), −1 where an end is not in it: a batch's part of a sparse relation in
    O(nnz) gathers, never an (n, n) matrix."""
    slot = torch.full((n,), -1, dtype=torch.long, device=index.device)
    slot[index] = torch.arange(index.numel(), device=index.device)
    return slot[rows], slot[cols]


def _check_dense_size(shape: tuple[int, int], max_elements: int) -> None:
    if shape[0] * shape[1] > max_elements:
        raise SizeLimitError(
            f"Converting a {shape[0]} x {shape[1]} sparse relation to dense needs "
            f"{shape[0] * shape[1]:,} elements, above the limit of {max_elements:,}. Keep it sparse "
            "(use a sparse-aware transform), or pass a larger `max_elements` if memory allows."
        )


@attrs.define(eq=False)
class DenseRelations(RelationData):
    """An ``(n, m)`` tensor of relations (distances, affinities, ranks ...)."""

    values: torch.Tensor

    def __attrs_post_init__(self) -> None:
        if self.values.ndim != 2:
            raise ValidationError(
                f"DenseRelations needs a 2-D tensor, got shape {tuple(self.values.shape)}."
            )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)  # type: ignore[return-value]

    def to_dense(self, max_elements: int = DENSE_LIMIT) -> DenseRelations:
        return self

    def to_sparse(self) -> SparseRelations:
        rows, cols = torch.nonzero(self.values, as_tuple=True)
        return SparseRelations(rows, cols, self.values[rows, cols], self.shape)

    def restrict(self, index: torch.Tensor) -> torch.Tensor:
        index = index.to(self.values.device).long()
        return self.values.index_select(0, index).index_select(1, index)


@attrs.define(eq=False)
class SparseRelations(RelationData):
    """An ``(n, m)`` matrix in COO form: ``values[k]`` sits at ``(rows[k], cols[k])``."""

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int] = attrs.field(converter=lambda s: (int(s[0]), int(s[1])))

    def __attrs_post_init__(self) -> None:
        if not (self.rows.shape == self.cols.shape == self.values.shape) or self.rows.ndim != 1:
            raise ValidationError(
                "SparseRelations needs 1-D rows, cols and values of equal length, got shapes "
                f"{tuple(self.rows.shape)}, {tuple(self.cols.shape)}, {tuple(self.values.shape)}."
            )
        if self.rows.numel() and (int(self.rows.max()) >= self.shape[0]
                                  or int(self.cols.max()) >= self.shape[1]):
            raise ValidationError(
                f"SparseRelations indices exceed its shape {self.shape}; pass the full shape "
                "(n, n) even when the last items have no entries."
            )

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def to_dense(self, max_elements: int = DENSE_LIMIT) -> DenseRelations:
        _check_dense_size(self.shape, max_elements)
        dense = torch.zeros(self.shape, dtype=self.values.dtype, device=self.values.device)
        dense.index_put_((self.rows, self.cols), self.values, accumulate=True)
        return DenseRelations(dense)

    def to_sparse(self) -> SparseRelations:
        return self

    def to_edges(self) -> EdgeRelations:
        return EdgeRelations(self.rows, self.cols, self.values, self.shape)

    def to_scipy(self) -> scipy.sparse.csr_matrix:
        """A scipy CSR matrix (duplicates summed)."""
        return scipy.sparse.csr_matrix(
            (self.values.detach().cpu().numpy(),
             (self.rows.cpu().numpy(), self.cols.cpu().numpy())),
            shape=self.shape,
        )

    @classmethod
    def from_scipy(cls, matrix: Any, dtype: torch.dtype = torch.float32) -> SparseRelations:
        coo = scipy.sparse.coo_matrix(matrix)
        return cls(
            torch.from_numpy(coo.row.astype(np.int64)),
            torch.from_numpy(coo.col.astype(np.int64)),
            torch.from_numpy(coo.data).to(dtype),
            coo.shape,
        )

    def coalesce(self) -> SparseRelations:
        """Sum duplicate entries and sort by (row, col)."""
        # indices were validated in __attrs_post_init__, so skip torch's invariant checks
        t = torch.sparse_coo_tensor(torch.stack([self.rows, self.cols]), self.values,
                                    self.shape, check_invariants=False).coalesce()
        idx = t.indices()
        return SparseRelations(idx[0], idx[1], t.values(), self.shape)

    def transpose(self) -> SparseRelations:
        return SparseRelations(self.cols, self.rows, self.values, (self.shape[1], self.shape[0]))


@attrs.define(eq=False)
class EdgeRelations(RelationData):
    """Pairs ``(source[k], target[k])`` with ``values[k]``; ``shape`` bounds the indices."""

    source: torch.Tensor
    target: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int] = attrs.field(converter=lambda s: (int(s[0]), int(s[1])))

    def __attrs_post_init__(self) -> None:
        if not (self.source.shape == self.target.shape == self.values.shape):
            raise ValidationError(
                "EdgeRelations needs source, target and values of equal length, got shapes "
                f"{tuple(self.source.shape)}, {tuple(self.target.shape)}, "
                f"{tuple(self.values.shape)}."
            )

    def to_sparse(self) -> SparseRelations:
        return SparseRelations(self.source, self.target, self.values, self.shape)

    def to_dense(self, max_elements: int = DENSE_LIMIT) -> DenseRelations:
        return self.to_sparse().to_dense(max_elements)

    def to_edges(self) -> EdgeRelations:
        return self


# ----------------------------------------------------------------------------- relation blocks


class Relation(Block):
    """Base of blocks that compute relations from data: ``compute(data) -> RelationData``."""

    kind: ClassVar[str] = "relation"

    def compute(self, data: torch.Tensor | Dataset, **kwargs: Any) -> RelationData:
        raise not_implemented(self, "compute")


def _data_tensor(data: torch.Tensor | Dataset, key: str) -> torch.Tensor:
    if isinstance(data, Dataset):
        data = data[key]
    if isinstance(data, LazyRows):  # rows on disk: a relation of all items reads them whole
        return data.take(slice(None))
    if isinstance(data, torch.Tensor) and data.ndim == 2:
        return data  # (as the dataset holds it: no copy, no dtype change)
    return as_tensor(data, key, ndim=2)  # a 1-D tensor too: the message names the reshape


@attrs.define
class PDist(Relation):
    """All pairwise distances: ``(n, d) -> DenseRelations (n, n)``.  Small n only."""

    name: ClassVar[str] = "pdist"
    lazy_rows: ClassVar[bool] = True  # rows on disk: read whole (an n x n relation needs all)
    metric: Any = block_field("distance", default="euclidean")
    key: str = "data"
    max_elements: int = DENSE_LIMIT

    def compute(self, data, **kwargs):
        x = _data_tensor(data, self.key)
        n = x.shape[0]
        if n * n > self.max_elements:
            raise SizeLimitError(
                f"PDist on {n} items builds an {n} x {n} matrix ({n * n:,} elements), above "
                f"`max_elements` = {self.max_elements:,}. Use a neighbour-based relation "
                "(NeighborBasedPDist) for large data."
            )
        from .neighbors import checked_distance

        return DenseRelations(checked_distance(self.metric, "pairwise", x, x))


@attrs.define
class DistsFromTo(Relation):
    """Distances between given pairs: ``(n, d)`` + pairs ``(source, target)`` -> EdgeRelations."""

    name: ClassVar[str] = "dists_from_to"
    lazy_rows: ClassVar[bool] = True  # rows on disk: read whole by _data_tensor
    metric: Any = block_field("distance", default="euclidean")
    key: str = "data"

    def compute(self, data, source=None, target=None, **kwargs):
        if source is None or target is None:
            raise ValidationError("DistsFromTo.compute needs `source` and `target` index tensors.")
        x = _data_tensor(data, self.key)
        source = torch.as_tensor(source, device=x.device).long()
        target = torch.as_tensor(target, device=x.device).long()
        if source.shape != target.shape:
            raise ValidationError(
                f"`source` and `target` differ in shape: {tuple(source.shape)} vs "
                f"{tuple(target.shape)}."
            )
        n = x.shape[0]
        return EdgeRelations(source, target, self.metric.paired(x[source], x[target]), (n, n))


__all__ = [
    "DENSE_LIMIT", "RelationData", "DenseRelations", "SparseRelations", "EdgeRelations",
    "Relation", "PDist", "DistsFromTo", "positions_within",
]

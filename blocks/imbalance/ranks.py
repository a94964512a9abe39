"""Ranks of the DII: r_ij = 1 + #{l ≠ i : d_il < d_ij}, 1 = nearest.

The rank transform of the DII loss acts *row by row* on a :class:`DenseRelations` of
distances of space B; excluded pairs (a point and itself) arrive as +inf distances, so their
rank is past the last (their coefficient c_ij is 0 anyway).  The loss may stack the rows of
several batches into one call.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np
import torch

from ..data import DEFAULT_DTYPE
from ..relations import DenseRelations
from ..transforms import Transform

def diagonal_mask(n: int, m: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n, m) boolean mask of the entries (i, i), i < min(n, m): "a point and itself"."""
    idx = torch.arange(n, device=device)
    return idx[:, None] == torch.arange(m, device=device)[None, :]


def _argsort_rows(d: torch.Tensor) -> torch.Tensor:
    """Row-wise argsort; numpy's introsort on CPU (about 2× torch's sort on these sizes)."""
    if d.device.type == "cpu":
        return torch.from_numpy(np.argsort(d.detach().numpy(), axis=1))
    return torch.argsort(d, dim=1)


def rank_rows(distances: torch.Tensor, exclude: torch.Tensor | None = None,
              excluded_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Ranks along each row, 1 = nearest, as floats: ``(n, m) -> (n, m)``.

    Entries where ``exclude`` is True (a point and itself, temporally close pairs) are left out
    of the ranking and get rank 0.  Ties are broken arbitrarily.  ``excluded_logits`` (the
    −inf / 0 form of ``exclude``, :func:`exclusion_logits`) may be given instead to save a pass;
    the excluded entries then keep a rank past the last (their weight c_ij is 0 anyway).
    """
    if excluded_logits is not None:
        d = distances - excluded_logits
    elif exclude is not None:
        d = distances.masked_fill(exclude, float("inf"))
    else:
        d = distances
    order = _argsort_rows(d)
    positions = torch.arange(1, d.shape[1] + 1, dtype=DEFAULT_DTYPE, device=d.device)
    ranks = torch.empty(d.shape, dtype=DEFAULT_DTYPE, device=d.device)
    ranks.scatter_(1, order, positions.expand(d.shape[0], -1))
    return ranks if exclude is None or excluded_logits is not None \
        else ranks.masked_fill(exclude, 0.0)


@attrs.define
class Ranks(Transform):
    """Distances -> ranks within each row: r_ij = 1 + #{l ≠ i : d_il < d_ij}; r_ii = 0.

    Accepts a :class:`DenseRelations` of distances — from data through ``PDist`` with any
    metric, or a user distance matrix — ``(n, m) -> (n, m)``.  With ``exclude_self`` the entries
    (i, i), i < min(n, m), are "the point itself" (rows are the first columns).
    """

    name: ClassVar[str] = "ranks"
    accepts: ClassVar[tuple[type, ...]] = (DenseRelations,)
    exclude_self: bool = True

    def apply(self, relations):
        d = relations.values
        exclude = diagonal_mask(*d.shape, device=d.device) if self.exclude_self else None
        return DenseRelations(rank_rows(d, exclude))


# ----------------------------------------------------------------------------- Gaussian softmax

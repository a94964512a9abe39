"""Distances of the DII: periodic differences, the weighted squared Euclidean distance, and
the protocol every distance of space A follows (:class:`FeatureWeightedDistance`).

The distance protocol of space A
--------------------------------
The DII learns per-feature weights ``w`` (D,) of space A.  The loss and the final DII do not
scale the data by ``w`` themselves: they hand the weights to the distance, which decides what
they mean (``Σ_f w_f² Δ_f²`` for the built-in, ``Σ_f |w_f| |Δ_f|`` for an l1 distance ...).
A distance of space A derives from :class:`FeatureWeightedDistance` and implements

``weighted_pairwise(a, b, weights) -> (n, m)``  (required)
    ``(n, D), (m, D), (D,) or None -> (n, m)``, differentiable in ``weights`` (None: all 1).
    The value is what the softmax turns into coefficients: the ``gaussian_softmax`` takes
    c_ij ∝ exp(−d_ij / λ_i) and λ from the k-th smallest d_ij, so the paper's DII needs the
    *squared* distance here.

and may override these fast paths (their defaults call ``weighted_pairwise``):

``prepare(a, b, exclude) -> table``
    what does not depend on the weights for one (rows, cols) batch; the loss caches it while
    the batch's index tensors stay the same (a full batch: the whole phase).
``combine(table, weights) -> (n, m)``
    the distances from the table; entries where ``exclude`` is True (a point and itself) must
    come out far beyond any real distance and finite (the default: :data:`SELF_DISTANCE`;
    the built-in: SELF_DISTANCE × Σ w²), so that the softmax gives them 0 and the
    k-th-neighbour search skips them without a mask pass.
``pairwise_into(a, b, weights, out, work) -> out``
    no gradient, written into the (n, m) buffer ``out`` (``work`` is a scratch buffer of the
    same shape): the row chunks of ``final_dii`` reuse their buffers.
``prepare_batches(a, exclude) -> list of tables`` and ``pairwise_batches(a) -> (P, b, b)``
    ``prepare`` / ``pairwise`` of the P equal batches (P, b, D) of a mini-batch epoch at once
    (each batch its own rows and columns); the built-in does each in a few batched operations.

``pairwise`` / ``paired`` (the plain :class:`~infoblocks.blocks.distances.Distance` contract)
use the block's own weights (all 1 by default), so the same block also serves as the distance
of space B, where ranks are all that matter.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import numpy as np
import torch

from ..base import not_implemented
from ..data import DEFAULT_DTYPE, is_lazy
from ..distances import Distance, _check_pair
from ..errors import ValidationError
from ..numerics import CHUNK_ELEMENTS, rows_per_chunk, wrap_periodic
from ..validators import positive

#: distance stored for "a point and itself" in the training tables: far beyond any neighbour,
#: so the k-th-neighbour search and the softmax skip it without a mask pass (DADApy sets
#: max + 1e6); finite, so that 0 × it stays 0 in the backward pass
SELF_DISTANCE = 1e20


# ----------------------------------------------------------------------------- units


def data_unit(x: Any) -> float:
    """The length unit of a data set: the power of two nearest the root mean square of its
    per-feature standard deviations (1.0 for constant or empty data).

    Distances measured in this unit are of order one whatever the unit the data came in
    (1e-6 or 1e30), so that no absolute floor, sentinel or float32 range decides the result;
    a power of two rescales exactly, so data already near unit scale give the same numbers
    bit for bit.  ``(n, D) -> float``.
    """
    if is_lazy(x):  # rows read on demand: a chunked scan
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] == 0:
            return 1.0
        spread = x.moments()[1].to(torch.float64).square().mean().sqrt().item()
    else:
        t = torch.as_tensor(x).detach()
        if t.ndim != 2 or t.shape[0] < 2 or t.numel() == 0:
            return 1.0
        spread = t.to(torch.float64).std(dim=0, correction=0).square().mean().sqrt().item()
    if not math.isfinite(spread) or spread <= 0:
        return 1.0
    return float(2.0 ** round(math.log2(spread)))


# ----------------------------------------------------------------------------- periods, differences


def periods_tensor(periods: Any, n_features: int, name: str = "periods",
                   device: torch.device | str | None = None) -> torch.Tensor | None:
    """Periods as a (D,) tensor, 0 for a non-periodic feature; ``None`` when none is periodic.

    ``periods`` is None, one number for every feature, or one entry per feature (None or 0
    for a non-periodic one).
    """
    if periods is None:
        return None
    values = list(periods) if isinstance(periods, (list, tuple, np.ndarray)) \
        else [periods] * n_features
    if len(values) != n_features:
        raise ValidationError(
            f"`{name}` has {len(values)} entries but the data has {n_features} features; give one "
            "period per feature (None or 0 for a non-periodic feature)."
        )
    out = []
    for p in values:
        if p is None:
            out.append(0.0)
            continue
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) \
                or not math.isfinite(p) or p < 0:
            raise ValidationError(
                f"`{name}` entries must be positive numbers or None, got {p!r} in {list(values)}."
            )
        out.append(float(p))
    if not any(out):
        return None
    return torch.tensor(out, dtype=DEFAULT_DTYPE, device=device)


def squared_differences(a: torch.Tensor, b: torch.Tensor,
                        periods: torch.Tensor | None = None) -> torch.Tensor:
    """Per-feature squared differences ``(n, D), (m, D) -> (n, m, D)``.

    On a feature of period P > 0 the difference is wrapped to [−P/2, P/2] first.
    """
    _check_pair(a, b)
    diff = a[:, None, :] - b[None, :, :]
    if periods is not None:
        diff = wrap_periodic(diff, periods)
    return diff * diff


def feature_major_squared_differences(a: torch.Tensor, b: torch.Tensor,
                                      periods: torch.Tensor | None = None) -> torch.Tensor:
    """Per-feature squared differences laid out feature-major: ``(n, D), (m, D) -> (D, n, m)``.

    The layout of the per-step product Σ_f w_f² Δ_f² (one matrix-vector product)."""
    _check_pair(a, b)
    diff = a.T[:, :, None] - b.T[:, None, :]
    if periods is not None:
        diff = wrap_periodic(diff, periods[:, None, None])
    return diff * diff


def squared_distances(a: torch.Tensor, b: torch.Tensor,
                      periods: torch.Tensor | None = None) -> torch.Tensor:
    """Unweighted squared Euclidean distances (periodic-aware), exact differences (no
    ‖a‖² + ‖b‖² − 2ab cancellation, which would reorder near ties): ``-> (n, m)``."""
    if periods is None:
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    return squared_differences(a, b, periods).sum(-1)


def weighted_squared_distances(a: torch.Tensor, b: torch.Tensor,
                               weights_sq: torch.Tensor | None = None,
                               periods: torch.Tensor | None = None,
                               out: torch.Tensor | None = None,
                               work: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_f w_f² Δ_f² accumulated feature by feature: ``(n, D), (m, D) -> (n, m)``.

    Never forms the (n, m, D) difference tensor; with ``out`` and ``work`` ((n, m) buffers)
    it allocates nothing of size n × m.
    """
    _check_pair(a, b)
    period_list = [0.0] * a.shape[1] if periods is None else periods.tolist()
    shape = (a.shape[0], b.shape[0])
    if out is None:
        out = torch.empty(shape, dtype=a.dtype, device=a.device)
    if work is None:
        work = torch.empty(shape, dtype=a.dtype, device=a.device)
    for f, period in enumerate(period_list):
        diff = torch.sub(a[:, f, None], b[None, :, f], out=work)
        if period > 0:
            diff.sub_(torch.round(diff / period).mul_(period))
        sq = diff.square_()
        if weights_sq is not None:
            sq.mul_(weights_sq[f])
        if f == 0:
            out.copy_(sq)
        else:
            out.add_(sq)
    return out


def _as_tuple_or_none(value: Any) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return (value,)
    return tuple(None if v is None else float(v) for v in value)


def _paired_sq(a: torch.Tensor, b: torch.Tensor, periods: torch.Tensor | None) -> torch.Tensor:
    diff = a - b
    if periods is not None:
        diff = wrap_periodic(diff, periods)
    return diff * diff


# ----------------------------------------------------------------------------- ranks

#: (rows, cols) buffers alive at once in a chunk of the full-data computations
_BUFFERS_PER_CHUNK = 8


def _chunk_rows(n_cols: int, max_elements: int) -> int:
    """Rows per chunk so that the chunk's buffers hold at most ``max_elements`` numbers."""
    return rows_per_chunk(n_cols, max_elements, _BUFFERS_PER_CHUNK)


# ----------------------------------------------------------------------------- the protocol


class FeatureWeightedDistance(Distance):
    """Base of the distances of space A: a distance that takes per-feature weights.

    Subclasses implement :meth:`weighted_pairwise`; see the module docstring for the
    protocol the DII loss and ``final_dii`` call (``prepare`` / ``combine`` /
    ``pairwise_into`` are optional fast paths).

    ``per_feature_weights = False`` (a class variable) declares a distance that takes the
    weights model's ``feature_weights()`` whatever its shape — a (r, D) matrix or a flat
    low-rank map, d = ‖L(x − y)‖² — and checks it itself: the loss then hands it over
    untouched instead of requiring one weight per feature of A.
    """

    #: False: ``weights`` may have any shape (a learnt linear map); True: (D,)
    per_feature_weights: ClassVar[bool] = True

    def weighted_pairwise(self, a: torch.Tensor, b: torch.Tensor,
                          weights: torch.Tensor | None) -> torch.Tensor:
        """``(n, D), (m, D), (D,) | None -> (n, m)``, differentiable in ``weights``."""
        raise not_implemented(self, "weighted_pairwise")

    def prepare(self, a: torch.Tensor, b: torch.Tensor, exclude: torch.Tensor | None) -> Any:
        """Weight-independent table of one (rows, cols) batch (default: the inputs)."""
        return (a, b, exclude)

    def combine(self, table: Any, weights: torch.Tensor) -> torch.Tensor:
        """(n, m) distances of a prepared batch; excluded entries far beyond any real one
        (here :data:`SELF_DISTANCE`)."""
        a, b, exclude = table
        d = self.weighted_pairwise(a, b, weights)
        return d if exclude is None else d.masked_fill(exclude, SELF_DISTANCE)

    def pairwise_into(self, a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None,
                      out: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
        """No-gradient distances written into ``out`` (``work``: scratch of the same shape)."""
        return out.copy_(self.weighted_pairwise(a, b, weights))

    def prepare_batches(self, a: torch.Tensor, exclude: torch.Tensor | None) -> list[Any]:
        """:meth:`prepare` of P equal batches at once, each its own rows and columns:
        ``(P, b, D) -> P tables`` (the loss's mini-batch epochs)."""
        return [self.prepare(x, x, exclude) for x in a]

    def pairwise_batches(self, a: torch.Tensor) -> torch.Tensor:
        """:meth:`pairwise` (own weights) within each of P batches: ``(P, b, D) -> (P, b, b)``
        (B's distances of a mini-batch epoch)."""
        return torch.stack([self.pairwise(x, x) for x in a])

    def _own_weights(self, a: torch.Tensor) -> torch.Tensor | None:
        weights = getattr(self, "weights", None)
        if weights is None:
            return None
        if len(weights) != a.shape[-1]:
            raise ValidationError(
                f"`weights` has {len(weights)} entries but the data has {a.shape[-1]} features.")
        return torch.tensor(weights, dtype=a.dtype, device=a.device)

    def pairwise(self, a, b=None):
        b = a if b is None else b
        _check_pair(a, b)
        return self.weighted_pairwise(a, b, self._own_weights(a))

    def paired(self, a, b):
        _check_pair(a, b)
        w = self._own_weights(a)
        return torch.stack([self.weighted_pairwise(a[i:i + 1], b[i:i + 1], w)[0, 0]
                            for i in range(a.shape[0])]) if a.shape[0] else a.new_zeros(0)


def is_feature_weighted(distance: Any) -> bool:
    """True when ``distance`` follows the protocol (a subclass, or duck-typed)."""
    return isinstance(distance, FeatureWeightedDistance) or all(
        callable(getattr(distance, m, None))
        for m in ("weighted_pairwise", "prepare", "combine", "pairwise_into", "prepare_batches",
                  "pairwise_batches"))


def check_feature_weighted(instance: Any, attribute: Any, value: Any) -> None:
    """attrs validator: the distance of space A must take the weights."""
    if not is_feature_weighted(value):
        raise ValidationError(
            f"`{attribute.name}` must be a distance that takes the learnable feature weights "
            f"(derive from FeatureWeightedDistance and implement weighted_pairwise(a, b, "
            f"weights)); got {type(value).__name__}.")


@attrs.define(frozen=True)
class WeightedSquaredEuclidean(FeatureWeightedDistance):
    """d(x, y)² = Σ_f w_f² Δ_f², Δ periodic-aware (``periods``: None or 0 = not periodic).

    The default distance of both spaces of the DII.  ``weights`` (None: all 1) are the block's
    own, used by ``pairwise`` / ``paired``; the DII passes its learnt weights to
    :meth:`weighted_pairwise` / :meth:`combine` / :meth:`pairwise_into` instead.  Pairwise works
    in row chunks of at most ``max_elements`` entries.  ``(n, D), (m, D) -> (n, m)``.

    ``unit`` (default 1): differences are measured in this unit of the data (the DII sets it
    to :func:`data_unit` of the data), d = Σ_f w_f² (Δ_f / unit)², so that the values stay of
    order one at any scale of the data; ``periods`` stay in the data's own units.  A distance
    of another block may opt in the same way: an attrs field ``unit`` and the class variable
    ``unit_power`` (its values scale as unit^−unit_power; a fixed λ is converted with it).
    """

    #: d scales as unit^−2: a λ given in the data's units is divided by unit² (the DII)
    unit_power: ClassVar[float] = 2.0

    name: ClassVar[str] = "weighted_sqeuclidean"
    weights: tuple | None = attrs.field(default=None, converter=_as_tuple_or_none)
    periods: tuple | None = attrs.field(default=None, converter=_as_tuple_or_none)
    max_elements: int = CHUNK_ELEMENTS
    unit: float = attrs.field(default=1.0, validator=positive)

    def _periods(self, a: torch.Tensor) -> torch.Tensor | None:
        if self.periods is None:
            return None
        periods = periods_tensor(self.periods, a.shape[-1], "periods", a.device)
        return periods if periods is None or self.unit == 1.0 else periods / self.unit

    def _in_unit(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in units of ``unit`` (unchanged, not copied, at unit 1)."""
        return x if self.unit == 1.0 else x / self.unit

    def weighted_pairwise(self, a, b, weights):
        _check_pair(a, b)
        periods = self._periods(a)
        a, b = self._in_unit(a), self._in_unit(b)
        if weights is None or not weights.requires_grad:  # no gradient: in row chunks
            w2 = None if weights is None else weights * weights
            if not (a.requires_grad or b.requires_grad):
                step = _chunk_rows(b.shape[0], self.max_elements)
                return torch.cat([weighted_squared_distances(a[s:s + step], b, w2, periods)
                                  for s in range(0, a.shape[0], step)])
        sq = squared_differences(a, b, periods)
        return sq.sum(-1) if weights is None else sq @ (weights * weights)

    def prepare(self, a, b, exclude):
        """Per-feature squared differences laid out (D, n·m), excluded entries at
        :data:`SELF_DISTANCE`: one matrix-vector product per step."""
        _check_pair(a, b)
        sq = feature_major_squared_differences(self._in_unit(a), self._in_unit(b),
                                               self._periods(a))
        if exclude is not None:
            sq = sq.masked_fill_(exclude, SELF_DISTANCE)
        return sq.view(a.shape[1], -1), (a.shape[0], b.shape[0])

    def combine(self, table, weights):
        sq, shape = table
        return ((weights * weights) @ sq).view(shape)

    def pairwise_into(self, a, b, weights, out, work):
        w2 = None if weights is None else weights * weights
        return weighted_squared_distances(self._in_unit(a), self._in_unit(b), w2,
                                          self._periods(a), out=out, work=work)

    def prepare_batches(self, a, exclude):
        """All batches' feature-major tables in a few batched operations."""
        n_parts, size, d = a.shape
        xt = self._in_unit(a).transpose(1, 2)  # (P, D, b)
        diff = xt[:, :, :, None] - xt[:, :, None, :]
        periods = self._periods(a)
        if periods is not None:
            diff = wrap_periodic(diff, periods[None, :, None, None])
        sq = diff * diff
        if exclude is not None:
            sq = sq.masked_fill_(exclude, SELF_DISTANCE)
        sq = sq.reshape(n_parts, d, size * size)
        return [(sq[i], (size, size)) for i in range(n_parts)]

    @torch.no_grad()
    def pairwise_batches(self, a):
        """Feature by feature, as :func:`weighted_squared_distances` (the same rounding)."""
        periods = self._periods(a)
        w = self._own_weights(a)
        a = self._in_unit(a)
        out = None
        for f in range(a.shape[-1]):
            diff = a[:, :, None, f] - a[:, None, :, f]
            if periods is not None and periods[f] > 0:
                diff = diff - torch.round(diff / periods[f]) * periods[f]
            sq = diff.square_()
            if w is not None:
                sq = sq.mul_(w[f] * w[f])
            out = sq if out is None else out.add_(sq)
        return out

    def paired(self, a, b):
        _check_pair(a, b)
        w = self._own_weights(a)
        sq = _paired_sq(self._in_unit(a), self._in_unit(b), self._periods(a))
        return sq.sum(-1) if w is None else sq @ (w * w)

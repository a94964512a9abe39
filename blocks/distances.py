"""Distance blocks: ``pairwise(a, b) -> (n, m)`` and ``paired(a, b) -> (n,)``.

All work on torch tensors of shape ``(n, d)`` and are differentiable, so they serve both the
global relations (computed once) and the batch relations computed from model outputs.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch

from .base import Block, not_implemented
from .errors import ValidationError
from .numerics import wrap_periodic

#: floor under squared distances before a square root, so that gradients stay finite at 0
_SQRT_FLOOR = 1e-12


class Distance(Block):
    """Base of distances between rows of two ``(n, d)`` tensors."""

    kind: ClassVar[str] = "distance"

    def pairwise(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """All pairs: ``(n, d), (m, d) -> (n, m)``; ``b=None`` means ``b = a``."""
        raise not_implemented(self, "pairwise")

    def paired(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row by row: ``(n, d), (n, d) -> (n,)``."""
        raise not_implemented(self, "paired")


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValidationError(
            f"Distance between points of different dimension: {a.shape[-1]} vs {b.shape[-1]}."
        )


@attrs.define(frozen=True)
class SquaredEuclidean(Distance):
    """d(x, y) = ‖x − y‖²."""

    name: ClassVar[str] = "sqeuclidean"

    def pairwise(self, a, b=None):
        b = a if b is None else b
        _check_pair(a, b)
        # ‖a‖² + ‖b‖² − 2 a·b is fast but loses precision for close points; clamp at 0
        sq = (a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2.0 * (a @ b.T)
        return sq.clamp_min(0.0)

    def paired(self, a, b):
        _check_pair(a, b)
        return ((a - b) ** 2).sum(-1)


@attrs.define(frozen=True)
class Euclidean(Distance):
    """d(x, y) = ‖x − y‖."""

    name: ClassVar[str] = "euclidean"

    def pairwise(self, a, b=None):
        b = a if b is None else b
        _check_pair(a, b)
        if a.is_floating_point() and not a.requires_grad and not b.requires_grad:
            return torch.cdist(a, b)
        return SquaredEuclidean().pairwise(a, b).clamp_min(_SQRT_FLOOR).sqrt()

    def paired(self, a, b):
        return SquaredEuclidean().paired(a, b).clamp_min(_SQRT_FLOOR).sqrt()


def _periods_tensor(periods, like: torch.Tensor) -> torch.Tensor:
    """Periods as a tensor; ``None`` (or 0) entries mean a non-periodic column (inf)."""
    values = [float("inf") if p is None or p == 0 else float(p) for p in periods]
    if len(values) != like.shape[-1]:
        raise ValidationError(
            f"`periods` has {len(values)} entries but the data has {like.shape[-1]} features; "
            "give one period per feature (None for a non-periodic feature)."
        )
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def periodic_difference(diff: torch.Tensor, periods: torch.Tensor) -> torch.Tensor:
    """Shortest unsigned difference on a circle, min(|Δ| mod P, P − |Δ| mod P), per feature
    (the one convention of :func:`infoblocks.blocks.numerics.wrap_periodic`)."""
    return wrap_periodic(diff, periods).abs()


def _validate_periods(instance, attribute, value) -> None:
    for p in value:
        if p is not None and (not isinstance(p, (int, float)) or p < 0):
            raise ValidationError(
                f"`periods` entries must be positive numbers or None, got {p!r}."
            )


@attrs.define(frozen=True)
class Periodic(Distance):
    """Euclidean (or squared) distance with per-feature periods: Δ = min(|x−y|, P−|x−y|).

    ``periods`` has one entry per feature; ``None`` marks a non-periodic feature.
    """

    name: ClassVar[str] = "periodic"
    periods: tuple = attrs.field(converter=tuple, validator=_validate_periods)
    squared: bool = False

    def pairwise(self, a, b=None):
        b = a if b is None else b
        _check_pair(a, b)
        periods = _periods_tensor(self.periods, a)
        delta = periodic_difference(a[:, None, :] - b[None, :, :], periods)
        sq = (delta ** 2).sum(-1)
        return sq if self.squared else sq.clamp_min(_SQRT_FLOOR).sqrt()

    def paired(self, a, b):
        _check_pair(a, b)
        delta = periodic_difference(a - b, _periods_tensor(self.periods, a))
        sq = (delta ** 2).sum(-1)
        return sq if self.squared else sq.clamp_min(_SQRT_FLOOR).sqrt()


@attrs.define(frozen=True)
class Cosine(Distance):
    """d(x, y) = 1 − x·y / (‖x‖ ‖y‖)."""

    name: ClassVar[str] = "cosine"
    eps: float = 1e-12

    def pairwise(self, a, b=None):
        b = a if b is None else b
        _check_pair(a, b)
        an = a / a.norm(dim=-1, keepdim=True).clamp_min(self.eps)
        bn = b / b.norm(dim=-1, keepdim=True).clamp_min(self.eps)
        return (1.0 - an @ bn.T).clamp_min(0.0)

    def paired(self, a, b):
        _check_pair(a, b)
        return 1.0 - torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=self.eps)


__all__ = ["Distance", "Euclidean", "SquaredEuclidean", "Periodic", "Cosine",
           "periodic_difference"]

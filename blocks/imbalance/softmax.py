"""The Gaussian softmax of the DII and its fused product with the ranks.

c_ij = exp(−d_ij / λ_i) / Σ_{l≠i} exp(−d_il / λ_i), with d the distance of space A (the
squared weighted distance for the built-in) and λ_i = ``lambda_factor`` × d_{i,(k)} (the k-th
neighbour's distance; gradient through it), its mean over rows, or a given value.

The coefficients protocol (the ``softmax`` slot of the DII loss and of ``final_dii``):
``coefficients(sq_dist, exclude, k=None, lambda_value=None, excluded_logits=None) -> (n, m)``,
rows summing to 1 over the columns not excluded, 0 at excluded entries, differentiable in
``sq_dist``.  ``k`` / ``lambda_value`` are the loss's schedules (they override the block's
fields); ``excluded_logits`` is the cached −inf / 0 form of ``exclude``.  A
:class:`GaussianSoftmax` itself (the exact type) takes a fused path with the same numbers.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
from attrs.validators import optional
import torch

from ..data import DEFAULT_DTYPE
from ..errors import ValidationError
from ..relations import DenseRelations
from ..transforms import Transform
from ..validators import positive, positive_int
from .ranks import diagonal_mask

#: default lambda_factor: λ_i = 0.1 × squared distance to the k-th neighbour (DADApy's value)
LAMBDA_FACTOR = 0.1
#: floor under λ so that duplicated points (k-th distance 0) do not divide by zero
_LAMBDA_FLOOR = 1e-12
#: logits are floored here before exp: float32 exp underflows below ≈ −87.3, and torch's exp
#: takes a ~10× slower path there; e^−87 ≈ 1.6e-38 is far below float32 resolution of a sum ≥ 1
_EXP_FLOOR = -87.0

def neighbour_lambdas(sq_dist: torch.Tensor, exclude: torch.Tensor | None, k: int,
                      lambda_factor: float, point_adaptive: bool,
                      excluded_logits: torch.Tensor | None = None) -> torch.Tensor:
    """λ (n,) = factor × squared distance to the k-th neighbour (per row, or its row mean).

    The neighbour is found without gradient; λ is then gathered from ``sq_dist`` so that the
    gradient flows through it (as in the reference implementation) at the cost of n elements.
    """
    if excluded_logits is None and exclude is not None:
        excluded_logits = exclusion_logits(exclude)
    index = neighbour_index(sq_dist, excluded_logits, k)
    lam = lambda_factor * sq_dist.gather(1, index).squeeze(1)
    if not point_adaptive:
        lam = lam.mean().expand_as(lam)
    return lam


def exclusion_logits(exclude: torch.Tensor) -> torch.Tensor:
    """−inf where ``exclude`` is True, 0 elsewhere: added to logits to drop those columns."""
    return torch.zeros(exclude.shape, dtype=DEFAULT_DTYPE, device=exclude.device).masked_fill(
        exclude, float("-inf"))


def softmax_coefficients(sq_dist: torch.Tensor, lambdas: torch.Tensor,
                         exclude: torch.Tensor | None,
                         excluded_logits: torch.Tensor | None = None) -> torch.Tensor:
    """c_ij = softmax_j(−d_ij² / λ_i) over the columns not excluded: ``(n, m), (n,) -> (n, m)``.

    ``excluded_logits`` (from :func:`exclusion_logits`) may be passed to reuse it across steps.
    """
    scale = -1.0 / lambdas.clamp_min(_LAMBDA_FLOOR)[:, None]
    if excluded_logits is None and exclude is not None:
        excluded_logits = exclusion_logits(exclude)
    if excluded_logits is None:
        logits = sq_dist * scale
    else:  # one fused pass: mask + d * (−1/λ)
        logits = torch.addcmul(excluded_logits, sq_dist, scale)
    return torch.softmax(logits, dim=1)


@attrs.define
class GaussianSoftmax(Transform):
    """Squared distances -> c_ij = exp(−d_ij²/λ_i) / Σ_{l≠i} exp(−d_il²/λ_i); ``(n, m) -> (n, m)``.

    λ: ``lambda_value`` when given (global, fixed); else ``lambda_factor`` × the squared
    distance to the ``k``-th neighbour, per point (``point_adaptive``) or averaged over rows.
    The entries (i, i), i < min(n, m), are excluded with ``exclude_self``.
    """

    name: ClassVar[str] = "gaussian_softmax"
    accepts: ClassVar[tuple[type, ...]] = (DenseRelations,)
    k: int = attrs.field(default=1, validator=positive_int)
    point_adaptive: bool = True
    lambda_factor: float = attrs.field(default=LAMBDA_FACTOR, validator=positive)
    lambda_value: float | None = attrs.field(default=None, validator=optional(positive))
    exclude_self: bool = True

    def coefficients(self, sq_dist: torch.Tensor, exclude: torch.Tensor | None,
                     k: int | None = None, lambda_value: float | None = None,
                     excluded_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The main computation, with ``k`` / ``lambda_value`` overriding the fields (schedules)
        and ``excluded_logits`` a cached :func:`exclusion_logits` of ``exclude``."""
        lam_value = self.lambda_value if lambda_value is None else lambda_value
        if lam_value is not None:
            lam = torch.full((sq_dist.shape[0],), float(lam_value), dtype=sq_dist.dtype,
                             device=sq_dist.device)
        else:
            lam = neighbour_lambdas(sq_dist, exclude, self.k if k is None else k,
                                    self.lambda_factor, self.point_adaptive, excluded_logits)
        return softmax_coefficients(sq_dist, lam, exclude, excluded_logits)

    def apply(self, relations):
        d = relations.values
        exclude = diagonal_mask(*d.shape, device=d.device) if self.exclude_self else None
        return DenseRelations(self.coefficients(d, exclude))


def neighbour_index(sq_dist: torch.Tensor, excluded_logits: torch.Tensor | None,
                    k: int) -> torch.Tensor:
    """Column of each row's k-th nearest neighbour (excluded entries skipped): (n, 1), no grad."""
    if k > sq_dist.shape[1] - (0 if excluded_logits is None else 1):
        raise ValidationError(
            f"`k` = {k} but each row has only {sq_dist.shape[1]} columns (itself included); "
            "lower k or use larger batches."
        )
    with torch.no_grad():
        masked = sq_dist.detach()
        if excluded_logits is not None:
            masked = masked - excluded_logits
        if k == 1:
            return masked.argmin(dim=1, keepdim=True)
        return torch.topk(masked, k, dim=1, largest=False).indices[:, k - 1:k]


class _ExpectedRanks(torch.autograd.Function):
    """out_i = Σ_j c_ij R_ij, c_ij = softmax_j(M_ij − d_ij / λ_i), with λ either given or
    factor × d_{i, index_i} (per point, or its mean): one fused forward / backward.

    Backward: ∂out_i/∂z_ij = c_ij (R_ij − out_i); z = M − d/λ gives ∂/∂d_ij = −(·)/λ_i and
    ∂/∂λ_i = Σ_j (·) d_ij / λ_i², and λ's gradient goes back to d at the neighbour's column.
    Autograd would spend about twice the passes over the (n, m) matrix.
    """

    @staticmethod
    def forward(ctx, sq_dist, ranks, excluded_logits, index, lambdas, factor, point_adaptive):
        if index is not None:
            raw = sq_dist.gather(1, index).squeeze(1)
            lambdas = factor * (raw if point_adaptive else raw.mean().expand_as(raw))
        lam = lambdas.clamp_min(_LAMBDA_FLOOR)
        scale = -1.0 / lam
        if excluded_logits is None:
            logits = sq_dist * scale[:, None]
        else:
            logits = torch.addcmul(excluded_logits, sq_dist, scale[:, None])
        c = torch.softmax(logits, dim=1)
        out = torch.linalg.vecdot(c, ranks, dim=1)
        ctx.save_for_backward(sq_dist, ranks, c, out, lam, index)
        ctx.factor, ctx.point_adaptive = factor, point_adaptive
        ctx.given_lambdas = index is None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        sq_dist, ranks, c, out, lam, index = ctx.saved_tensors
        g = ranks - out[:, None]
        g.mul_(c).mul_(grad_out[:, None])                      # ∂L/∂z
        grad_lam = torch.linalg.vecdot(g, sq_dist, dim=1) / (lam * lam)
        g.mul_((-1.0 / lam)[:, None])                          # ∂L/∂d, direct part
        grad_lambdas = None
        if ctx.given_lambdas:
            grad_lambdas = grad_lam
        else:
            through = ctx.factor * (grad_lam if ctx.point_adaptive
                                    else grad_lam.sum().expand_as(grad_lam) / grad_lam.numel())
            g.scatter_add_(1, index, through[:, None])
        return g, None, None, None, grad_lambdas, None, None


def expected_ranks(sq_dist: torch.Tensor, ranks: torch.Tensor,
                   excluded_logits: torch.Tensor | None, *, k: int | None = None,
                   lambda_value: float | None = None, lambda_factor: float = LAMBDA_FACTOR,
                   point_adaptive: bool = True, lambdas: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Σ_j c_ij r_ij per row (n,), c the Gaussian softmax of ``sq_dist`` (see
    :class:`GaussianSoftmax`); differentiable in ``sq_dist`` (through λ too).  ``lambdas``
    (n,): λ computed by the caller (e.g. a mean over processes), the gradient flowing back
    through it."""
    if lambdas is not None:
        return _ExpectedRanks.apply(sq_dist, ranks, excluded_logits, None, lambdas,
                                    lambda_factor, point_adaptive)
    if lambda_value is not None:
        lam = torch.full((sq_dist.shape[0],), float(lambda_value), dtype=sq_dist.dtype,
                         device=sq_dist.device)
        return _ExpectedRanks.apply(sq_dist, ranks, excluded_logits, None, lam, lambda_factor,
                                    point_adaptive)
    index = neighbour_index(sq_dist, excluded_logits, 1 if k is None else k)
    return _ExpectedRanks.apply(sq_dist, ranks, excluded_logits, index, None, lambda_factor,
                                point_adaptive)

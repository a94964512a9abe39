"""Embedding kernels: the similarity q of two embedded points, as the losses call it."""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from ..base import not_implemented
from ..errors import ContractError, ValidationError
from ..relations import DenseRelations, EdgeRelations, SparseRelations
from ..transforms import Transform
from ..validators import non_negative, positive

#: floor under squared embedding distances inside log(): keeps the gradient of the repulsion
#: bounded for coinciding points (umap-learn clips q to [1e-4, 1] for the same reason)
SQ_DIST_FLOOR = 1e-8


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


# ----------------------------------------------------------------------------- kernels


class EmbeddingKernel(Transform):
    """Base of embedding kernels: the similarity q ∈ (0, 1] of two embedded points.

    **Protocol** (what the losses call; a plugin kernel subclasses this class, declares a
    ``name`` and implements at least :meth:`log_kernel`):

    - ``log_kernel(sq_dist) -> log q``: elementwise on a tensor of *squared* embedding
      distances ‖y_i − y_j‖² (any shape, ≥ 0, zeros included), differentiable, ≤ 0.  Called by
      :class:`~infoblocks.blocks.embedding.KLLoss` (t-SNE's w_ij, normalised over the batch).
    - ``logit(sq_dist) -> log q − log(1 − q)``: same input, same shape; the cross-entropy of
      :class:`~infoblocks.blocks.embedding.RelationLoss` is softplus(−logit) for an edge and
      softplus(logit) for a negative, so it never takes the log of a rounded 0 or 1.  The
      default derives it from :meth:`log_kernel`; override it where a closed form is stabler
      (UMAP's kernel: −log a − b log d²).
    - optional ``logit_log_form() -> (c, b) | None``: where logit(d²) = c − b log max(d², 1e-8)
      exactly, :class:`~infoblocks.blocks.embedding.RelationLoss` computes its gradient in
      closed form (:mod:`~infoblocks.blocks.embedding.umap_loss`; the same numbers, faster).
    - optional ``student_t_dof() -> ν | None``: where log_kernel(d²) = −(ν + 1)/2 ·
      log(1 + d²/ν) exactly, :class:`~infoblocks.blocks.embedding.KLLoss` computes the batch KL
      and its gradient in closed form (:mod:`~infoblocks.blocks.embedding.tsne_loss`; the same
      numbers, faster).
    - ``apply(relations)``: as a transform, maps relation values that are distances d (not
      squared) to q(d), so a kernel can also sit in a ``globals`` transform list.

    A kernel is a ``loss.kernel`` field of a phase (``[[phases]] name = "main"
    loss = { kernel = { name = "my_kernel" } }``); the kernel is stateless.
    """

    accepts: ClassVar[tuple[type, ...]] = (DenseRelations, SparseRelations, EdgeRelations)

    def log_kernel(self, sq_dist: torch.Tensor) -> torch.Tensor:
        raise not_implemented(self, "log_kernel")

    def logit(self, sq_dist: torch.Tensor) -> torch.Tensor:
        """log q − log(1 − q), so that −log q = softplus(−logit), −log(1−q) = softplus(logit)."""
        log_q = self.log_kernel(sq_dist).clamp_max(-1e-12)
        return log_q - torch.log(-torch.expm1(log_q))

    def apply(self, relations):
        values = relations.values
        return attrs.evolve(relations, values=torch.exp(self.log_kernel(values * values)))


def check_kernel(kernel: EmbeddingKernel) -> None:
    """Raise :class:`ContractError` naming the kernel and the method if ``log_kernel`` or
    ``logit`` does not return a finite tensor of its input's shape (elementwise).  A scalar
    (a sum) broadcasts silently in the losses: 500 digits trained to trustworthiness 0.909
    instead of 0.976.  Called once per phase by the losses that hold a kernel."""
    sq = torch.tensor([[0.0, 0.25, 1.0], [2.0, 4.0, 9.0]])
    name = getattr(kernel, "name", type(kernel).__name__)
    for method in ("log_kernel", "logit"):
        fn = getattr(kernel, method, None)
        if fn is None:
            continue
        out = fn(sq)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(sq.shape):
            raise ContractError(
                f"kernel {name!r}: `{method}(sq_dist)` must be elementwise — a tensor of "
                f"sq_dist's shape — but returned {shape} for sq_dist of shape "
                f"{tuple(sq.shape)} (a sum or a mean over the entries?).")
        if not bool(torch.isfinite(out[sq > 0]).all()):
            raise ContractError(f"kernel {name!r}: `{method}(sq_dist)` is not finite at "
                                f"sq_dist = 0.25 ... 9: {out.tolist()}.")
    if getattr(kernel, "log_kernel", None) is not None:
        _check_log_q(kernel, name)


#: squared distances at which log_kernel is checked to be a log-similarity: ≤ 0, not rising
#: (0 to far beyond an embedding's span)
CHECK_SQ_DISTS = (0.0, 1e-4, 0.01, 0.25, 1.0, 2.0, 4.0, 9.0, 25.0, 100.0, 1e3, 1e4)
#: rounding allowed above 0 and between neighbouring values (float32 log of a q near 1)
LOG_Q_TOLERANCE = 1e-5


def _check_log_q(kernel: EmbeddingKernel, name: str) -> None:
    """``log_kernel`` on :data:`CHECK_SQ_DISTS` is log q of a similarity q ∈ (0, 1] that
    does not grow with the distance: ≤ 0 and non-increasing (the protocol).  A kernel of
    log1p(d²) (> 0, rising) trained t-SNE's layout of 300 digits to trustworthiness 0.47
    (0.99 with the built-in kernel) with no message."""
    sq = torch.tensor(CHECK_SQ_DISTS)
    with torch.no_grad():
        log_q = kernel.log_kernel(sq).detach().double()
    finite = torch.isfinite(log_q)
    values = ", ".join(f"{d:g}: {v:.3g}" for d, v in zip(CHECK_SQ_DISTS, log_q.tolist()))
    if bool((log_q[finite] > LOG_Q_TOLERANCE).any()):
        raise ContractError(
            f"kernel {name!r}: `log_kernel(sq_dist)` must be log q of a similarity q in (0, 1], "
            f"so <= 0, but it is positive at some squared distances (sq_dist: log_kernel = "
            f"{values}). Return log q, e.g. -log1p(sq_dist) for the Cauchy kernel.")
    steps = log_q[1:] - log_q[:-1]
    if bool((steps[torch.isfinite(steps)] > LOG_Q_TOLERANCE).any()):
        raise ContractError(
            f"kernel {name!r}: `log_kernel(sq_dist)` must not grow with the distance (near "
            f"points are the similar ones), but it rises (sq_dist: log_kernel = {values}).")


def fit_ab(min_dist: float, spread: float) -> tuple[float, float]:
    """a, b of 1 / (1 + a d^{2b}) fitted by least squares to the target curve
    1 for d < min_dist, exp(−(d − min_dist)/spread) beyond, on 300 points of [0, 3·spread]
    (the procedure of umap-learn)."""
    from scipy.optimize import curve_fit

    def curve(x, a, b):
        return 1.0 / (1.0 + a * x ** (2 * b))

    xv = np.linspace(0, spread * 3, 300)
    yv = np.where(xv < min_dist, 1.0, np.exp(-(xv - min_dist) / spread))
    (a, b), _ = curve_fit(curve, xv, yv)
    return float(a), float(b)


@attrs.define
class ModifiedCauchyTransform(EmbeddingKernel):
    """UMAP's embedding kernel q(d) = 1 / (1 + a d^{2b}).

    a, b are fitted from (``min_dist``, ``spread``) as umap-learn does unless given
    (min_dist 0.1, spread 1 -> a ≈ 1.577, b ≈ 0.895).  logit q = −log a − b log d².
    """

    name: ClassVar[str] = "modified_cauchy"
    min_dist: float = attrs.field(default=0.1, validator=non_negative)
    spread: float = attrs.field(default=1.0, validator=positive)
    a: float | None = None
    b: float | None = None

    def __attrs_post_init__(self) -> None:
        _check(self.min_dist <= self.spread,
               f"`min_dist` ({self.min_dist}) must not exceed `spread` ({self.spread}); "
               "lower min_dist or raise spread.")
        if self.a is None or self.b is None:
            a, b = fit_ab(self.min_dist, self.spread)
            self.a = a if self.a is None else self.a
            self.b = b if self.b is None else self.b
        _check(self.a > 0 and self.b > 0, f"`a` and `b` must be positive, got {self.a}, {self.b}.")

    def logit(self, sq_dist):
        return -math.log(self.a) - self.b * torch.log(sq_dist.clamp_min(SQ_DIST_FLOOR))

    def logit_log_form(self) -> tuple[float, float]:
        """(c, b) of logit = c − b log max(d², floor): the losses' closed-form gradients."""
        return -math.log(self.a), float(self.b)

    def log_kernel(self, sq_dist):
        return -F.softplus(-self.logit(sq_dist))


@attrs.define
class _CauchyAtOne(EmbeddingKernel):
    """A kernel family with one shape parameter ``dof`` that is t-SNE's Cauchy kernel
    1 / (1 + d²) at ``dof`` = 1 (Student-t's ν, Kobak et al.'s α): there the logit is exactly
    −log d², with the losses' closed forms; any other ``dof`` goes through the kernel."""

    dof: float = attrs.field(default=1.0, validator=positive)

    def logit(self, sq_dist):
        if self.dof == 1.0:  # exact: q / (1 − q) = 1 / d²
            return -torch.log(sq_dist.clamp_min(SQ_DIST_FLOOR))
        return super().logit(sq_dist)

    def logit_log_form(self) -> tuple[float, float] | None:
        """(0, 1) at ``dof`` = 1 (logit = −log d²); None otherwise (no such closed form)."""
        return (0.0, 1.0) if self.dof == 1.0 else None


@attrs.define
class StudentTTransform(_CauchyAtOne):
    """t-SNE's kernel q(d) = (1 + d²/ν)^{−(ν+1)/2}; ν = ``dof`` = 1 gives 1 / (1 + d²).

    ``dof`` is Student-t's ν (tail d^{−(ν+1)}), not the ``dof`` of openTSNE and of Kobak et
    al. (2019), α in (1 + d²/α)^{−α} (tail d^{−2α}): the two agree at 1 only (ν = 0.5 has the
    tail d^{−1.5}, their α = 0.5 d^{−1}).  Their kernel is :class:`HeavyTailedTransform`
    (``heavy_tailed``)."""

    name: ClassVar[str] = "student_t"

    def log_kernel(self, sq_dist):
        return -0.5 * (self.dof + 1.0) * torch.log1p(sq_dist / self.dof)

    def student_t_dof(self) -> float:
        """ν: the batch KL's closed form applies (:meth:`EmbeddingKernel` protocol)."""
        return self.dof


@attrs.define
class HeavyTailedTransform(_CauchyAtOne):
    """Kobak et al. (2019)'s heavy-tailed t-SNE kernel q(d) = (1 + d²/α)^{−α}, α = ``dof`` —
    openTSNE's ``TSNE(dof=α)``: α = 1 is t-SNE's Cauchy kernel, α < 1 heavier tails (d^{−2α};
    finer clusters), α → ∞ the Gaussian exp(−d²).  Not :class:`StudentTTransform`'s ν, whose
    tail is d^{−(ν+1)}: openTSNE's ``dof=0.5`` is ``{ name = "heavy_tailed", dof = 0.5 }``,
    not ``student_t`` with ``dof = 0.5`` (author28-4)."""

    name: ClassVar[str] = "heavy_tailed"

    def log_kernel(self, sq_dist):
        return -self.dof * torch.log1p(sq_dist / self.dof)

    def student_t_dof(self) -> float | None:
        """1 for α = 1 (Student-t's ν = 1: the closed forms apply); None otherwise."""
        return 1.0 if self.dof == 1.0 else None


__all__ = ["EmbeddingKernel", "ModifiedCauchyTransform", "StudentTTransform",
           "HeavyTailedTransform", "fit_ab", "SQ_DIST_FLOOR"]

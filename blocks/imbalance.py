"""Blocks of the (Differentiable) Information Imbalance.

Space A is described by features ``x`` (n, D_A) scaled by learnable weights ``w``; space B by
features ``y`` (n, D_B) or by a user distance matrix.  With d_ij the distance in A and r_ij
the rank of j among the neighbours of i in B (1 = nearest, i itself excluded):

    c_ij = exp(−d_ij² / λ_i) / Σ_{l≠i} exp(−d_il² / λ_i)          (GaussianSoftmax)
    DII  = 2 / (n_rows · n_cols) · Σ_i Σ_{j≠i} c_ij r_ij          (DIILoss)
    Δ(A→B) = 2 / n · mean_i r_{i, nn_A(i)}                        (information_imbalance)

Distances in A are weighted *squared* Euclidean, periodic-aware:
d_ij² = Σ_f w_f² Δ_f(x_if, x_jf)², Δ = x − y − P·round((x − y)/P) on a feature of period P.
λ_i is ``lambda_factor`` × (squared distance of i to its k-th neighbour) (point-adaptive), its
mean over the rows (global), or a given value; the gradient flows through λ.

Memory: nothing here builds an n × n matrix for the whole data set.  A training step sees a
batch of rows × columns (:class:`RowsColumnsSampler`) and ranks B *within that batch*; the
final DII and the classic imbalance work through row chunks whose size is set by
``max_elements``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import numpy as np
import torch
from torch import nn

from .base import block_field
from .callbacks import Callback
from .data import DEFAULT_DTYPE, as_tensor
from .distances import Distance, _check_pair
from .errors import NumericalError, ValidationError
from .losses import Loss, LossOutput, get_model
from .models import Model
from .relations import DenseRelations
from .samplers import Sampler
from .state import TrainState
from .transforms import Transform
from .validators import non_negative, positive, positive_int

#: default lambda_factor: λ_i = 0.1 × squared distance to the k-th neighbour (DADApy's value)
LAMBDA_FACTOR = 0.1
#: default initial weight of every feature (DADApy's default params_init)
WEIGHT_INIT = 0.1
#: floor under λ so that duplicated points (k-th distance 0) do not divide by zero
_LAMBDA_FLOOR = 1e-12
#: squared difference stored for "a point and itself" in the training tables: far beyond any
#: neighbour, so the k-th-neighbour search and the softmax skip it without a mask pass
#: (DADApy sets max + 1e6); finite, so that 0 × it stays 0 in the backward pass
_SELF_DISTANCE = 1e20
#: logits are floored here before exp: float32 exp underflows below ≈ −87.3, and torch's exp
#: takes a ~10× slower path there; e^−87 ≈ 1.6e-38 is far below float32 resolution of a sum ≥ 1
_EXP_FLOOR = -87.0
#: largest epoch (batches × b × b × (D_A + 2) numbers) whose tables are prepared in one go;
#: beyond it each batch prepares its own, so that memory stays one batch's (16 MB float32)
EPOCH_TABLE_ELEMENTS = 4_000_000
#: numbers the buffers of one chunk of a full-data computation may hold (64 MB float32)
CHUNK_ELEMENTS = 16_000_000


# ----------------------------------------------------------------------------- periods, distances


def periods_tensor(periods: Any, n_features: int, name: str = "periods",
                   device: torch.device | str | None = None) -> torch.Tensor | None:
    """Periods as a (D,) tensor, 0 for a non-periodic feature; ``None`` when none is periodic.

    ``periods`` is None, one number for every feature, or one entry per feature (None or 0
    for a non-periodic one).
    """
    if periods is None:
        return None
    values = list(periods) if isinstance(periods, (list, tuple, np.ndarray)) else [periods] * n_features
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


def _wrap(diff: torch.Tensor, periods: torch.Tensor) -> torch.Tensor:
    """diff − P·round(diff / P) where P > 0 (periods broadcast against diff); else diff."""
    periodic = periods > 0
    safe = torch.where(periodic, periods, torch.ones_like(periods))
    return diff - torch.where(periodic, torch.round(diff / safe) * periods, torch.zeros_like(diff))


def squared_differences(a: torch.Tensor, b: torch.Tensor,
                        periods: torch.Tensor | None = None) -> torch.Tensor:
    """Per-feature squared differences ``(n, D), (m, D) -> (n, m, D)``.

    On a feature of period P > 0 the difference is wrapped to [−P/2, P/2] first.
    """
    _check_pair(a, b)
    diff = a[:, None, :] - b[None, :, :]
    if periods is not None:
        diff = _wrap(diff, periods)
    return diff * diff


def feature_major_squared_differences(a: torch.Tensor, b: torch.Tensor,
                                      periods: torch.Tensor | None = None) -> torch.Tensor:
    """Per-feature squared differences laid out feature-major: ``(n, D), (m, D) -> (D, n, m)``.

    The layout of the per-step product Σ_f w_f² Δ_f² (one matrix-vector product)."""
    _check_pair(a, b)
    diff = a.T[:, :, None] - b.T[:, None, :]
    if periods is not None:
        p = periods[:, None, None]
        periodic = p > 0
        safe = torch.where(periodic, p, torch.ones_like(p))
        diff = diff - torch.where(periodic, torch.round(diff / safe) * p, torch.zeros_like(diff))
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


@attrs.define(frozen=True)
class WeightedSquaredEuclidean(Distance):
    """d(x, y)² = Σ_f w_f² Δ_f², Δ periodic-aware (``periods``: None or 0 = not periodic).

    ``weights=None`` means all 1.  Pairwise works in row chunks of at most ``max_elements``
    entries of the (n, m, D) difference tensor.  ``(n, D), (m, D) -> (n, m)``.
    """

    name: ClassVar[str] = "weighted_sqeuclidean"
    weights: tuple | None = attrs.field(default=None, converter=_as_tuple_or_none)
    periods: tuple | None = attrs.field(default=None, converter=_as_tuple_or_none)
    max_elements: int = CHUNK_ELEMENTS

    def _tables(self, a: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        d = a.shape[-1]
        periods = None if self.periods is None else periods_tensor(self.periods, d, "periods",
                                                                   a.device)
        weights = None
        if self.weights is not None:
            if len(self.weights) != d:
                raise ValidationError(
                    f"`weights` has {len(self.weights)} entries but the data has {d} features."
                )
            weights = torch.tensor(self.weights, dtype=a.dtype, device=a.device) ** 2
        return periods, weights

    def pairwise(self, a, b=None):
        b = a if b is None else b
        _check_pair(a, b)
        periods, w2 = self._tables(a)
        if a.requires_grad or b.requires_grad:  # differentiable: no in-place accumulation
            sq = squared_differences(a, b, periods)
            return sq.sum(-1) if w2 is None else sq @ w2
        step = _chunk_rows(b.shape[0], self.max_elements)
        return torch.cat([weighted_squared_distances(a[s:s + step], b, w2, periods)
                          for s in range(0, a.shape[0], step)])

    def paired(self, a, b):
        _check_pair(a, b)
        periods, w2 = self._tables(a)
        sq = _paired_sq(a, b, periods)
        return sq.sum(-1) if w2 is None else sq @ w2


def _paired_sq(a: torch.Tensor, b: torch.Tensor, periods: torch.Tensor | None) -> torch.Tensor:
    diff = a - b
    if periods is not None:
        diff = _wrap(diff, periods)
    return diff * diff


# ----------------------------------------------------------------------------- ranks


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
                   point_adaptive: bool = True) -> torch.Tensor:
    """Σ_j c_ij r_ij per row (n,), c the Gaussian softmax of ``sq_dist`` (see
    :class:`GaussianSoftmax`); differentiable in ``sq_dist`` (through λ too)."""
    if lambda_value is not None:
        lam = torch.full((sq_dist.shape[0],), float(lambda_value), dtype=sq_dist.dtype,
                         device=sq_dist.device)
        return _ExpectedRanks.apply(sq_dist, ranks, excluded_logits, None, lam, lambda_factor,
                                    point_adaptive)
    index = neighbour_index(sq_dist, excluded_logits, 1 if k is None else k)
    return _ExpectedRanks.apply(sq_dist, ranks, excluded_logits, index, None, lambda_factor,
                                point_adaptive)


def cosine_schedule(start: float, final: float, step: int, total_steps: int) -> float:
    """start at step 0 -> final at ``total_steps`` on a half cosine (DADApy's k schedule)."""
    x = math.pi * step / max(total_steps, 1)
    return (start - final) * (math.cos(x) + 1.0) / 2.0 + final


# ----------------------------------------------------------------------------- feature weights


class FeatureWeightsModule(nn.Module):
    """Learnable weights ``w`` (n_params,) expanded to the D features by ``groups``.

    ``forward(x) = x ⊙ w_expanded``.  After each optimizer step the weights are rescaled to
    their initial norm; with ``l1_strength`` a soft threshold lr × strength is applied between
    two rescalings (proximal l1, as DADApy does).
    """

    def __init__(self, init: torch.Tensor, groups: tuple[int, ...] | None, l1_strength: float):
        super().__init__()
        self.weights = nn.Parameter(init.clone())
        self.register_buffer("norm_init", init.norm())
        repeats = torch.tensor(groups if groups is not None else [1] * init.numel())
        self.register_buffer("feature_index", torch.repeat_interleave(
            torch.arange(init.numel()), repeats))
        self.l1_strength = float(l1_strength)
        self.grouped = groups is not None

    def feature_weights(self) -> torch.Tensor:
        """Weights per feature (D,), with gradient."""
        return self.weights[self.feature_index] if self.grouped else self.weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.feature_weights()

    @torch.no_grad()
    def after_optimizer_step(self, lr: float, state: TrainState | None = None) -> None:
        w = self.weights
        w.mul_(self.norm_init / w.norm())
        if self.l1_strength > 0:
            threshold = lr * self.l1_strength
            w.copy_(torch.sign(w) * (w.abs() - threshold).clamp_min(0.0))
            w.mul_(self.norm_init / w.norm())  # all zero -> NaN, reported after the epoch


def _groups(instance, attribute, value) -> None:
    if value is None:
        return
    if not value or any(isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1
                        for g in value):
        raise ValidationError(f"`groups` must hold positive integers, got {list(value)}.")
    if sum(value) != instance.n_features:
        raise ValidationError(
            f"`groups` {list(value)} covers {sum(value)} features but the data has "
            f"{instance.n_features}; the group sizes must add up to the number of features."
        )


def _params_init(instance, attribute, value) -> None:
    if value is None:
        return
    n_params = instance.n_features if instance.groups is None else len(instance.groups)
    if len(value) != n_params:
        raise ValidationError(
            f"`params_init` has {len(value)} entries but {n_params} weights are learned "
            "(one per feature, or one per group when `groups` is set)."
        )
    if not all(math.isfinite(v) for v in value) or not any(v != 0 for v in value):
        raise ValidationError(
            f"`params_init` must be finite and not all zero, got {list(value)}."
        )


@attrs.define
class FeatureWeights(Model):
    """One learnable weight per feature (or per group of features): ``(n, D) -> (n, D)``.

    ``params_init`` defaults to 0.1 for every weight; ``groups`` = sizes of consecutive groups
    of features sharing one weight; ``l1_strength`` is applied as a proximal soft threshold.
    """

    name: ClassVar[str] = "feature_weights"
    n_features: int = attrs.field(validator=positive_int)
    groups: tuple[int, ...] | None = attrs.field(
        default=None, converter=lambda g: None if g is None else tuple(int(v) for v in g),
        validator=_groups)
    params_init: tuple[float, ...] | None = attrs.field(
        default=None, converter=lambda p: None if p is None else tuple(float(v) for v in p),
        validator=_params_init)
    l1_strength: float = attrs.field(default=0.0, validator=non_negative)

    @property
    def n_params(self) -> int:
        return self.n_features if self.groups is None else len(self.groups)

    def initial_weights(self) -> torch.Tensor:
        if self.params_init is None:
            return torch.full((self.n_params,), WEIGHT_INIT, dtype=DEFAULT_DTYPE)
        return torch.tensor(self.params_init, dtype=DEFAULT_DTYPE)

    def build(self) -> FeatureWeightsModule:
        return FeatureWeightsModule(self.initial_weights(), self.groups, self.l1_strength)


class FeatureWeightsHistory(Callback):
    """Records |w| of a :class:`FeatureWeightsModule` at the start and after every epoch.

    One host transfer per epoch.  ``rows`` is a list of (n_params,) numpy arrays.
    """

    def __init__(self, model: str = "weights") -> None:
        self.model = model
        self.rows: list[np.ndarray] = []

    def _record(self, state: TrainState) -> None:
        self.rows.append(state.models[self.model].weights.detach().abs().cpu().numpy().copy())

    def on_phase_start(self, state, phase):
        self._record(state)

    def on_epoch_end(self, state, metrics):
        self._record(state)


# ----------------------------------------------------------------------------- sampler


@attrs.define
class RowsColumnsSampler(Sampler):
    """Batches of (rows, cols) item indices for the rows × columns blocks of the DII.

    ``batches_per_epoch = 1``: one static batch — ``num_points_rows`` random rows (all when
    None) against all columns, the rows first, so that (i, i) is "a point and itself".  More
    batches: every epoch the rows are shuffled and split into ``batches_per_epoch`` parts; each
    part is both rows and columns of its step (DADApy's mini-batches).
    Yields ``{"rows": (r,), "cols": (c,)}`` on ``state.device``; with equal parts also
    ``"epoch_parts"`` (batches, r), the whole epoch, and ``"part"`` (int), this batch's row.
    """

    name: ClassVar[str] = "rows_columns"
    batches_per_epoch: int = attrs.field(default=1, validator=positive_int)
    num_points_rows: int | None = attrs.field(default=None, validator=optional(positive_int))
    _rows: torch.Tensor | None = attrs.field(init=False, default=None, repr=False)
    _cols: torch.Tensor | None = attrs.field(init=False, default=None, repr=False)

    def setup(self, state):
        if state.dataset is None:
            raise ValidationError("RowsColumnsSampler needs a dataset; the routine was given none.")
        n = state.dataset.n_items
        dev = state.device
        if self.num_points_rows is not None:
            if self.num_points_rows >= n:
                raise ValidationError(
                    f"`num_points_rows` = {self.num_points_rows} must be smaller than the {n} "
                    "points of the data set (or None for all rows)."
                )
            perm = torch.randperm(n, generator=state.generator, device=dev)
            rows, rest = perm[:self.num_points_rows], perm[self.num_points_rows:]
            self._rows, self._cols = rows, torch.cat([rows, rest])
        else:
            self._rows = torch.arange(n, device=dev)
            self._cols = self._rows
        if self.batches_per_epoch > self._rows.numel():
            raise ValidationError(
                f"`batches_per_epoch` = {self.batches_per_epoch} exceeds the {self._rows.numel()} "
                "rows available; use fewer batches."
            )

    def points_per_batch(self) -> int:
        """Rows of the smallest batch (after :meth:`setup`)."""
        if self._rows is None:
            raise ValidationError("RowsColumnsSampler.setup(state) has not been called.")
        return self._rows.numel() // self.batches_per_epoch

    def num_batches(self, state):
        return self.batches_per_epoch

    def batches(self, state) -> Iterator[dict[str, torch.Tensor]]:
        if self._rows is None:
            self.setup(state)
        if self.batches_per_epoch == 1:
            yield {"rows": self._rows, "cols": self._cols}
            return
        n = self._rows.numel()
        order = self._rows[torch.randperm(n, generator=state.generator, device=state.device)]
        if n % self.batches_per_epoch:
            for part in torch.tensor_split(order, self.batches_per_epoch):
                yield {"rows": part, "cols": part}
            return
        # equal parts: the loss may prepare the tables of the whole epoch in one go
        parts = order.view(self.batches_per_epoch, -1)
        for i in range(self.batches_per_epoch):
            yield {"rows": parts[i], "cols": parts[i], "epoch_parts": parts, "part": i}


# ----------------------------------------------------------------------------- loss


def target_ranks(rows: torch.Tensor, cols: torch.Tensor, excluded_logits: torch.Tensor,
                 state: TrainState, target: str, distances_key: str | None,
                 periods: torch.Tensor | None) -> torch.Tensor:
    """Ranks in B of the (rows, cols) block: from the user's B distance matrix when
    ``distances_key`` is set, else from the features ``target`` (squared, periodic-aware)."""
    if distances_key is not None:
        dist = state.lookup(distances_key)
        dist = dist[rows][:, cols]
    else:
        y = state.lookup(target)
        dist = squared_distances(y[rows], y[cols], periods)
    return rank_rows(dist, excluded_logits=excluded_logits)


@attrs.define
class DIILoss(Loss):
    """DII = 2 / (n_rows · n_cols) · Σ_ij c_ij(w) r_ij over the batch's rows × columns.

    c from the :class:`GaussianSoftmax` ``softmax`` of the weighted squared distances in A
    (dataset array ``input``, model ``model`` a :class:`FeatureWeightsModule`, ``periods_A``);
    r = ranks in B within the batch, from the dataset array ``target`` (``periods_B``) or from
    the global distance matrix ``distances_key``.  k goes from ``k_init`` to ``k_final`` (and a
    fixed λ from ``lambda_init`` to ``lambda_final``) on a cosine over
    epochs × ``steps_per_epoch`` steps.  A static batch (same index tensors every step) has its
    tables cached for the phase.  Batch: ``{"rows": (r,), "cols": (c,)}``.
    """

    name: ClassVar[str] = "dii"
    model: str = "weights"
    input: str = "data_A"
    target: str = "data_B"
    distances_key: str | None = None
    periods_A: tuple | None = attrs.field(default=None, converter=_as_tuple_or_none)
    periods_B: tuple | None = attrs.field(default=None, converter=_as_tuple_or_none)
    softmax: Any = block_field("transform", default="gaussian_softmax")
    k_init: int = attrs.field(default=1, validator=positive_int)
    k_final: int = attrs.field(default=1, validator=positive_int)
    lambda_init: float | None = attrs.field(default=None, validator=optional(positive))
    lambda_final: float | None = attrs.field(default=None, validator=optional(positive))
    steps_per_epoch: int = attrs.field(default=1, validator=positive_int)

    def current_k(self, state: TrainState) -> int:
        total = state.n_epochs * self.steps_per_epoch
        return int(round(cosine_schedule(self.k_init, self.k_final, state.step, total)))

    def current_lambda(self, state: TrainState) -> float | None:
        if self.lambda_init is None:
            return None
        final = self.lambda_init if self.lambda_final is None else self.lambda_final
        return cosine_schedule(self.lambda_init, final, state.step,
                               state.n_epochs * self.steps_per_epoch)

    def tables(self, rows: torch.Tensor, cols: torch.Tensor, state: TrainState
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-batch constants: squared differences in A laid out (D_A, r·c) for one
        matrix-vector product per step (a point and itself at ``_SELF_DISTANCE``), ranks in
        B (r, c), the self mask (r, c) and its −inf logits.  Cached while the batch's index
        tensors stay the same objects."""
        cached = state.scratch.get("dii_tables")
        if cached is not None and cached[0] is rows and cached[1] is cols:
            return cached[2:]
        x = state.lookup(self.input)
        exclude = rows[:, None] == cols[None, :]
        pa = periods_tensor(self.periods_A, x.shape[1], "periods_A", x.device)
        sq = feature_major_squared_differences(x[rows], x[cols], pa)
        sq = sq.masked_fill_(exclude, _SELF_DISTANCE).view(x.shape[1], -1)
        pb = None
        if self.distances_key is None:
            y = state.lookup(self.target)
            pb = periods_tensor(self.periods_B, y.shape[1], "periods_B", y.device)
        excluded_logits = exclusion_logits(exclude)
        ranks = target_ranks(rows, cols, excluded_logits, state, self.target, self.distances_key,
                             pb)
        tables = (sq, ranks, exclude, excluded_logits)
        state.scratch["dii_tables"] = (rows, cols, *tables)
        return tables

    def epoch_tables(self, parts: torch.Tensor, state: TrainState) -> list[tuple]:
        """:meth:`tables` of every batch of an epoch of equal parts (batches, b) at once:
        a few batched operations instead of a few per step.  Cached for the epoch."""
        cached = state.scratch.get("dii_epoch_tables")
        if cached is not None and cached[0] is parts:
            return cached[1]
        n_parts, size = parts.shape
        x = state.lookup(self.input)
        pa = periods_tensor(self.periods_A, x.shape[1], "periods_A", x.device)
        xt = x[parts].transpose(1, 2)  # (batches, D, b)
        diff = xt[:, :, :, None] - xt[:, :, None, :]
        if pa is not None:
            diff = _wrap(diff, pa[None, :, None, None])
        exclude = diagonal_mask(size, size, device=x.device)
        sq = (diff * diff).masked_fill_(exclude, _SELF_DISTANCE)
        sq = sq.reshape(n_parts, x.shape[1], size * size)
        excluded_logits = exclusion_logits(exclude)
        if self.distances_key is not None:
            dist = state.lookup(self.distances_key)[parts[:, :, None], parts[:, None, :]]
        else:
            y = state.lookup(self.target)
            pb = periods_tensor(self.periods_B, y.shape[1], "periods_B", y.device)
            yb = y[parts]
            if pb is None:
                dist = torch.cdist(yb, yb, compute_mode="donot_use_mm_for_euclid_dist") ** 2
            else:
                dy = _wrap(yb[:, :, None, :] - yb[:, None, :, :], pb)
                dist = (dy * dy).sum(-1)
        ranks = rank_rows((dist - excluded_logits).reshape(n_parts * size, size))
        ranks = ranks.view(n_parts, size, size)
        tables = [(sq[i], ranks[i], exclude, excluded_logits) for i in range(n_parts)]
        state.scratch["dii_epoch_tables"] = (parts, tables)
        return tables

    def __call__(self, batch, models, state):
        rows, cols = batch["rows"], batch["cols"]
        parts = batch.get("epoch_parts")
        if parts is not None and parts.numel() * parts.shape[1] * (
                state.lookup(self.input).shape[1] + 2) <= EPOCH_TABLE_ELEMENTS:
            sq, ranks, exclude, excluded_logits = self.epoch_tables(parts, state)[batch["part"]]
        else:
            sq, ranks, exclude, excluded_logits = self.tables(rows, cols, state)
        w = get_model(models, self.model).feature_weights()
        sq_dist = ((w * w) @ sq).view(rows.numel(), cols.numel())
        k, lam = self.current_k(state), self.current_lambda(state)
        if type(self.softmax) is GaussianSoftmax:  # the fused path (same numbers, fewer passes)
            # self entries hold _SELF_DISTANCE: no mask needed (c = 0 there, never k-th)
            total = expected_ranks(sq_dist, ranks, None, k=k, lambda_value=(
                lam if lam is not None else self.softmax.lambda_value),
                lambda_factor=self.softmax.lambda_factor,
                point_adaptive=self.softmax.point_adaptive).sum()
        else:  # any transform with the coefficients(...) signature, e.g. from a plugin
            c = self.softmax.coefficients(sq_dist, exclude, k=k, lambda_value=lam,
                                          excluded_logits=excluded_logits)
            total = torch.dot(c.reshape(-1), ranks.reshape(-1))
        value = 2.0 / (rows.numel() * cols.numel()) * total
        return LossOutput(value, {"dii": value.detach()})


# ----------------------------------------------------------------------------- full-data values


#: (rows, cols) buffers alive at once in a chunk of the full-data computations
_BUFFERS_PER_CHUNK = 8


def _chunk_rows(n_cols: int, max_elements: int) -> int:
    """Rows per chunk so that the chunk's buffers hold at most ``max_elements`` numbers."""
    return max(1, max_elements // max(1, n_cols * _BUFFERS_PER_CHUNK))


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
    periods_A: torch.Tensor | None = None,
    periods_B: torch.Tensor | None = None,
    point_adaptive: bool = True,
    lambda_factor: float = LAMBDA_FACTOR,
    lambda_value: float | None = None,
    discard_close_ind: int = 0,
    normalization: float | None = None,
    max_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Per-row DII terms 2/norm · Σ_j c_ij r_ij over ``rows`` × ``cols``, in row chunks: (r,).

    Pairs with |i − j| ≤ ``discard_close_ind`` (item indices) and i = j are excluded from both
    the softmax and the ranking.  ``normalization`` defaults to the number of columns.  No
    (n, n) matrix is formed: a chunk holds at most ``max_elements`` differences.
    """
    if (data_B is None) == (distances_B is None):
        raise ValidationError("chunked_dii needs exactly one of `data_B` and `distances_B`.")
    step = min(_chunk_rows(cols.numel(), max_elements), rows.numel())
    w2 = weights * weights
    norm = float(cols.numel() if normalization is None else normalization)
    buffers = _ChunkBuffers(step, cols.numel(), data_A.device)

    def chunk(s: int) -> tuple[torch.Tensor, _ChunkBuffers]:
        r = rows[s:s + step]
        buf = buffers.rows(r.numel())
        torch.sub(r[:, None], cols[None, :], out=buf.index_gap)
        torch.le(buf.index_gap.abs_(), discard_close_ind, out=buf.exclude)
        weighted_squared_distances(data_A[r], data_A[cols], w2, periods_A, out=buf.dist_a,
                                   work=buf.work)
        return r, buf

    def kth_distance(buf: _ChunkBuffers) -> torch.Tensor:
        masked = buf.work.copy_(buf.dist_a).masked_fill_(buf.exclude, float("inf"))
        if k == 1:
            return masked.min(dim=1).values
        return torch.topk(masked, k, dim=1, largest=False).values[:, k - 1]

    lam_global = None
    if lambda_value is None and not point_adaptive:  # first pass: mean k-th distance
        lam_global = lambda_factor * torch.cat(
            [kth_distance(chunk(s)[1]) for s in range(0, rows.numel(), step)]).mean()
    out = []
    for s in range(0, rows.numel(), step):
        r, buf = chunk(s)
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
        if distances_B is not None:
            buf.dist_b.copy_(distances_B[r][:, cols])
        else:
            weighted_squared_distances(data_B[r], data_B[cols], None, periods_B,
                                       out=buf.dist_b, work=buf.ranks)
        order = _argsort_rows(buf.dist_b.masked_fill_(buf.exclude, float("inf")))
        buf.ranks.scatter_(1, order, buffers.positions.expand(r.numel(), -1))
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
) -> torch.Tensor:
    """Ranks in ``target`` of each point's k nearest neighbours in ``source``: (n, k).

    r = 1 + #{l ≠ i : d^target_il < d^target_ij}; in row chunks, without any (n, n) matrix.
    """
    n = source.shape[0]
    step = _chunk_rows(n, max_elements)
    w2 = None if weights_source is None else weights_source ** 2
    idx = torch.arange(n, device=source.device)
    out = []
    for s in range(0, n, step):
        r = idx[s:s + step]
        self_mask = r[:, None] == idx[None, :]
        d_s = weighted_squared_distances(source[r], source, w2, periods_source)
        d_s = d_s.masked_fill(self_mask, float("inf"))
        nn_idx = torch.topk(d_s, k, dim=1, largest=False).indices  # (c, k)
        d_t = squared_distances(target[r], target, periods_target)
        d_t = d_t.masked_fill(self_mask, float("inf"))
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
) -> tuple[float, float]:
    """The classic (non-differentiable) information imbalance (Δ(A→B), Δ(B→A)).

    Δ(A→B) = 2/n · mean over points i and their k nearest neighbours j in A of the rank r^B_ij
    (≈ 0: A predicts B's neighbourhoods; ≈ 1: no information).  Distances are Euclidean
    (periodic-aware; ``weights_A`` scales A's features).  ``(n, D_A), (n, D_B) -> two floats``.
    """
    from .data import check_same_length

    a = as_tensor(data_A, "data_A", ndim=2)
    b = as_tensor(data_B, "data_B", ndim=2)
    n = check_same_length(data_A=a, data_B=b)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValidationError(f"`k` must be an integer in [1, {n - 1}] for {n} points, got {k!r}.")
    pa = periods_tensor(periods_A, a.shape[1], "periods_A")
    pb = periods_tensor(periods_B, b.shape[1], "periods_B")
    wa = None
    if weights_A is not None:
        wa = as_tensor(np.asarray(weights_A, dtype=float).reshape(-1), "weights_A", ndim=1)
        if wa.numel() != a.shape[1]:
            raise ValidationError(
                f"`weights_A` has {wa.numel()} entries but data_A has {a.shape[1]} features."
            )
    a_to_b = nearest_neighbour_ranks(a, b, k=k, periods_source=pa, periods_target=pb,
                                     weights_source=wa, max_elements=max_elements)
    b_to_a = nearest_neighbour_ranks(b, a if wa is None else a * wa, k=k, periods_source=pb,
                                     periods_target=pa if wa is None else (
                                         None if pa is None else pa * wa.abs()),
                                     max_elements=max_elements)
    return float(2.0 / n * a_to_b.mean()), float(2.0 / n * b_to_a.mean())


def check_weights_finite(weights: torch.Tensor, hint: Callable[[], str]) -> None:
    """Raise a :class:`NumericalError` with ``hint()`` when the weights are NaN or all zero."""
    if not bool(torch.isfinite(weights).all()) or not bool((weights != 0).any()):
        raise NumericalError(hint())


__all__ = [
    "CHUNK_ELEMENTS", "EPOCH_TABLE_ELEMENTS", "LAMBDA_FACTOR", "WEIGHT_INIT", "WeightedSquaredEuclidean", "Ranks",
    "GaussianSoftmax", "DIILoss", "FeatureWeights", "FeatureWeightsModule",
    "FeatureWeightsHistory", "RowsColumnsSampler", "chunked_dii", "cosine_schedule",
    "diagonal_mask", "exclusion_logits", "expected_ranks", "neighbour_index", "feature_major_squared_differences", "information_imbalance", "nearest_neighbour_ranks", "neighbour_lambdas",
    "periods_tensor", "rank_rows", "softmax_coefficients", "squared_differences", "squared_distances", "weighted_squared_distances",
    "target_ranks", "check_weights_finite",
]

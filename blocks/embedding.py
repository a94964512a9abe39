"""Blocks of neighbour-embedding methods (parametric UMAP and t-SNE).

Global side (computed once): calibrations of a k-NN distance graph into affinities
(:class:`ConnectivityBasedRescale` for UMAP, :class:`PerplexityBasedRescale` for t-SNE) and
initial positions (:class:`SpectralInit`, :class:`PCAInit`).  Training side: the embedding
kernels (:class:`ModifiedCauchyTransform`, :class:`StudentTTransform`), the edge sampler
(:class:`NegativeEdgeSampler`) and the losses (:class:`RelationLoss`, :class:`KLLoss`).
Everything is vectorised over points; binary searches run on all rows at once.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
import torch
import torch.nn.functional as F

from .base import block_field
from .errors import ValidationError
from .losses import Loss, LossOutput, get_model
from .models import Model
from .relations import DenseRelations, EdgeRelations, RelationData, SparseRelations
from .samplers import Sampler
from .state import TrainState
from .transforms import Transform
from .validators import non_negative, positive, positive_int

log = logging.getLogger(__name__)

#: umap-learn's tolerance on |Σ_j p_{j|i} − log2 k| and its floor on σ_i (× mean distance)
SMOOTH_K_TOLERANCE = 1e-5
MIN_K_DIST_SCALE = 1e-3
#: floor under squared embedding distances inside log(): keeps the gradient of the repulsion
#: bounded for coinciding points (umap-learn clips q to [1e-4, 1] for the same reason)
SQ_DIST_FLOOR = 1e-8


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


# ----------------------------------------------------------------------------- row matrices


@attrs.frozen
class RowMatrix:
    """A sparse relation laid out as padded rows: ``values[i, p]`` is the p-th entry of row i
    (ascending), ``inf`` where row i has fewer entries.  ``rows``/``cols``/``slots`` map the
    padded layout back to COO entries."""

    values: torch.Tensor  # (n, K) float64
    cols: torch.Tensor  # (n, K) long, -1 in the padding
    rows: torch.Tensor  # (E,) rows of the entries, sorted
    slots: torch.Tensor  # (E,) position of each entry in its row
    counts: torch.Tensor  # (n,)

    @classmethod
    def from_sparse(cls, rel: SparseRelations) -> RowMatrix:
        n = rel.shape[0]
        values = rel.values.double()
        order = torch.argsort(values, stable=True)
        order = order[torch.argsort(rel.rows[order], stable=True)]  # by row, then by value
        rows, cols, values = rel.rows[order], rel.cols[order], values[order]
        counts = torch.bincount(rows, minlength=n)
        starts = torch.cumsum(counts, 0) - counts
        slots = torch.arange(rows.numel(), device=rows.device) - starts[rows]
        width = int(counts.max()) if rows.numel() else 0
        matrix = torch.full((n, width), math.inf, dtype=torch.float64, device=rows.device)
        matrix[rows, slots] = values
        col_matrix = torch.full((n, width), -1, dtype=torch.long, device=rows.device)
        col_matrix[rows, slots] = cols
        return cls(matrix, col_matrix, rows, slots, counts)

    def to_sparse(self, values: torch.Tensor, shape: tuple[int, int],
                  dtype: torch.dtype = torch.float32) -> SparseRelations:
        """COO relation with ``values[i, p]`` at the entries of this layout."""
        return SparseRelations(self.rows, self.cols[self.rows, self.slots],
                               values[self.rows, self.slots].to(dtype), shape)


def _as_row_matrix(relations: RelationData, who: str) -> tuple[RowMatrix | None, torch.Tensor]:
    """Padded ascending rows of a sparse relation, or the dense matrix with its diagonal set to
    inf (a point is not its own neighbour)."""
    if isinstance(relations, SparseRelations):
        layout = RowMatrix.from_sparse(relations)
        return layout, layout.values
    dense = relations.values.double().clone()
    _check(dense.shape[0] == dense.shape[1], f"{who} needs a square relation, got {dense.shape}.")
    dense.fill_diagonal_(math.inf)
    return None, dense


def _back_to_relation(layout: RowMatrix | None, values: torch.Tensor,
                      relations: RelationData) -> RelationData:
    if layout is None:
        out = values.float()
        out.fill_diagonal_(0.0)
        return DenseRelations(out)
    return layout.to_sparse(values, relations.shape)


# ----------------------------------------------------------------------------- UMAP graph


@attrs.define
class ConnectivityBasedRescale(Transform):
    """UMAP's fuzzy membership of k-NN distances (sparse ``(n, n)`` -> same pattern).

    p_{j|i} = exp(−max(0, d_ij − ρ_i) / σ_i), with ρ_i the distance to the
    ``local_connectivity``-th nearest neighbour (interpolated) and σ_i found by a binary search,
    vectorised over all rows, so that Σ_j p_{j|i} = bandwidth · log2(k), k = the number of
    neighbours per row (``n_neighbors`` overrides it).
    """

    name: ClassVar[str] = "connectivity_rescale"
    local_connectivity: float = attrs.field(default=1.0, validator=non_negative)
    bandwidth: float = attrs.field(default=1.0, validator=positive)
    n_neighbors: int | None = attrs.field(default=None, validator=optional(positive_int))
    n_iter: int = attrs.field(default=64, validator=positive_int)
    tolerance: float = attrs.field(default=SMOOTH_K_TOLERANCE, validator=positive)

    def calibrate(self, dists: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ρ and σ of every row of distances ``(n, K)`` (inf = no entry): ``(n,), (n,)``."""
        finite = torch.isfinite(dists)
        counts = finite.sum(1)
        k = self.n_neighbors or max(int(counts.max()), 1)
        target = math.log2(k) * self.bandwidth
        rho = self._rho(torch.sort(dists, 1).values, finite)  # rows in any order
        excess = (dists - rho[:, None]).clamp_min(0.0)  # inf stays inf -> exp(-inf) = 0
        lo = torch.zeros_like(rho)
        hi = torch.full_like(rho, math.inf)
        mid = torch.ones_like(rho)
        for _ in range(self.n_iter):
            psum = torch.exp(-excess / mid[:, None]).sum(1)
            done = (psum - target).abs() < self.tolerance
            if bool(done.all()):
                break
            above = (psum > target) & ~done
            below = (psum <= target) & ~done
            hi = torch.where(above, mid, hi)
            lo = torch.where(below, mid, lo)
            mid = torch.where(done, mid,
                              torch.where(torch.isinf(hi), mid * 2.0, 0.5 * (lo + hi)))
        safe = torch.where(finite, dists, torch.zeros_like(dists))
        row_mean = safe.sum(1) / counts.clamp_min(1)
        all_mean = safe.sum() / counts.sum().clamp_min(1)
        floor = MIN_K_DIST_SCALE * torch.where(rho > 0, row_mean, all_mean)
        return rho, torch.maximum(mid, floor)

    def _rho(self, dists: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
        """Distance to the ``local_connectivity``-th nearest non-identical neighbour."""
        n, width = dists.shape
        if width == 0:
            return torch.zeros(n, dtype=dists.dtype, device=dists.device)
        zeros = (dists == 0).sum(1)
        n_nonzero = finite.sum(1) - zeros
        index = int(math.floor(self.local_connectivity))
        interp = self.local_connectivity - index

        def nonzero(j: int) -> torch.Tensor:  # j-th non-zero distance (clamped into the row)
            col = (zeros + j).clamp(max=width - 1)[:, None]
            return dists.gather(1, col)[:, 0]

        if index > 0:
            low = nonzero(index - 1)
            step = nonzero(index) - low
            step = torch.where(torch.isfinite(step) & (interp > SMOOTH_K_TOLERANCE), step,
                               torch.zeros_like(step))
            rho = low + interp * step
        else:
            rho = interp * nonzero(0)
        largest = torch.where(finite, dists, torch.zeros_like(dists)).max(1).values
        rho = torch.where(n_nonzero >= self.local_connectivity, rho, largest)
        return torch.where(n_nonzero > 0, rho, torch.zeros_like(rho))

    accepts: ClassVar[tuple[type, ...]] = (SparseRelations, DenseRelations)

    def apply(self, relations):
        layout, dists = _as_row_matrix(relations, "ConnectivityBasedRescale")
        rho, sigma = self.calibrate(dists)
        weights = torch.exp(-(dists - rho[:, None]).clamp_min(0.0) / sigma[:, None])
        return _back_to_relation(layout, weights, relations)


# ----------------------------------------------------------------------------- t-SNE graph


@attrs.define
class PerplexityBasedRescale(Transform):
    """t-SNE's conditional probabilities (sparse or dense ``(n, n)`` -> same pattern).

    p_{j|i} = exp(−β_i d_ij²) / Σ_k exp(−β_i d_ik²) (``square_distances=False``: d_ij instead
    of d_ij²), with β_i from a binary search on all rows at once so that the entropy
    −Σ_j p_{j|i} ln p_{j|i} equals ln(perplexity).  Rows sum to 1; the diagonal is excluded.
    A row with no more than ``perplexity`` entries uses (entries − 1) instead, with a warning.
    """

    name: ClassVar[str] = "perplexity_rescale"
    perplexity: float = attrs.field(default=30.0, validator=positive)
    square_distances: bool = True
    n_iter: int = attrs.field(default=100, validator=positive_int)
    tolerance: float = attrs.field(default=1e-5, validator=positive)

    def calibrate(self, dists: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """β per row and the conditional probabilities ``(n, K)`` of ascending rows."""
        finite = torch.isfinite(dists)
        counts = finite.sum(1)
        short = counts.double() <= self.perplexity
        if bool(short.any()):
            log.warning("perplexity %g needs more than %g neighbours per point, but %d rows have "
                        "as few as %d; those rows use perplexity = neighbours - 1. Use at least "
                        "3 x perplexity neighbours or lower the perplexity.", self.perplexity,
                        self.perplexity, int(short.sum()), int(counts.min()))
        perplexity = torch.clamp(counts.double() - 1.0, min=1.0).clamp(max=self.perplexity)
        d = dists ** 2 if self.square_distances else dists.clone()
        d = d - torch.where(finite, d, torch.full_like(d, math.inf)).min(1, keepdim=True).values
        target = torch.log(perplexity)
        scale = torch.where(finite, d, torch.zeros_like(d)).sum(1) / counts.clamp_min(1)
        log_beta = -torch.log(scale.clamp_min(1e-300))  # β ~ 1 / typical distance
        lo = torch.full_like(log_beta, -math.inf)
        hi = torch.full_like(log_beta, math.inf)
        d_inf = torch.where(finite, d, math.inf)  # exp(−β·inf) = 0 for missing entries
        d_zero = torch.where(finite, d, 0.0)
        for _ in range(self.n_iter):
            beta = torch.exp(log_beta)
            logits = d_inf * -beta[:, None]
            log_z = torch.logsumexp(logits, 1)
            p = torch.exp(logits - log_z[:, None])
            entropy = log_z + beta * (d_zero * p).sum(1)
            done = (entropy - target).abs() < self.tolerance
            if bool(done.all()):
                break
            too_flat = (entropy > target) & ~done  # too spread out: increase β
            lo = torch.where(too_flat, log_beta, lo)
            hi = torch.where(~too_flat & ~done, log_beta, hi)
            step = torch.where(torch.isinf(hi), log_beta + 1.0,
                               torch.where(torch.isinf(lo), log_beta - 1.0, 0.5 * (lo + hi)))
            log_beta = torch.where(done, log_beta, step)
        return torch.exp(log_beta), p

    accepts: ClassVar[tuple[type, ...]] = (SparseRelations, DenseRelations)

    def apply(self, relations):
        layout, dists = _as_row_matrix(relations, "PerplexityBasedRescale")
        _, p = self.calibrate(dists)
        return _back_to_relation(layout, p, relations)


# ----------------------------------------------------------------------------- kernels


class EmbeddingKernel(Transform):
    """Similarity q(d) of embedded points; ``log_kernel`` / ``logit`` take *squared* distances
    (what a loss has), ``apply`` maps relation values that are distances d to q(d)."""

    accepts: ClassVar[tuple[type, ...]] = (DenseRelations, SparseRelations, EdgeRelations)

    def log_kernel(self, sq_dist: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logit(self, sq_dist: torch.Tensor) -> torch.Tensor:
        """log q − log(1 − q), so that −log q = softplus(−logit), −log(1−q) = softplus(logit)."""
        log_q = self.log_kernel(sq_dist).clamp_max(-1e-12)
        return log_q - torch.log(-torch.expm1(log_q))

    def apply(self, relations):
        values = relations.values
        return attrs.evolve(relations, values=torch.exp(self.log_kernel(values * values)))


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

    def log_kernel(self, sq_dist):
        return -F.softplus(-self.logit(sq_dist))


@attrs.define
class StudentTTransform(EmbeddingKernel):
    """t-SNE's kernel q(d) = (1 + d²/ν)^{−(ν+1)/2}; ν = ``dof`` = 1 gives 1 / (1 + d²)."""

    name: ClassVar[str] = "student_t"
    dof: float = attrs.field(default=1.0, validator=positive)

    def log_kernel(self, sq_dist):
        return -0.5 * (self.dof + 1.0) * torch.log1p(sq_dist / self.dof)

    def logit(self, sq_dist):
        if self.dof == 1.0:  # exact: q / (1 − q) = 1 / d²
            return -torch.log(sq_dist.clamp_min(SQ_DIST_FLOOR))
        return super().logit(sq_dist)


# ----------------------------------------------------------------------------- sampler


@attrs.define
class NegativeEdgeSampler(Sampler):
    """Edges of a global graph drawn ∝ weight, plus ``neg_sampling_rate`` negatives each.

    A batch embeds ``items`` (source block, target block[, uniform negatives]) once and says
    which rows form pairs: ``pos_source``/``pos_target`` (positions in ``items``, the sampled
    edges) and ``neg_source``/``neg_target`` (each positive's source paired with random items).
    ``negatives="batch"`` draws the negative partners among the batch's own items (no extra
    forward pass; items of the batch are drawn ∝ degree), ``"uniform"`` draws them uniformly
    from all items.  The cumulative weight table is built once in :meth:`setup`; an epoch's
    draws are one ``searchsorted``.
    """

    name: ClassVar[str] = "negative_edges"
    relation: str = "graph"
    batch_size: int = attrs.field(default=512, validator=positive_int)
    neg_sampling_rate: int = attrs.field(default=5, validator=positive_int)
    batches_per_epoch: int | None = attrs.field(default=None, validator=optional(positive_int))
    negatives: str = attrs.field(default="batch")
    keys: tuple[str, ...] | None = attrs.field(
        default=None, converter=lambda k: None if k is None else tuple(k))
    _table: Any = attrs.field(init=False, default=None, repr=False)

    @negatives.validator
    def _check_negatives(self, attribute, value):
        _check(value in ("batch", "uniform"),
               f"`negatives` must be 'batch' or 'uniform', got {value!r}.")

    def setup(self, state: TrainState) -> None:
        graph = state.lookup(self.relation)
        _check(isinstance(graph, RelationData),
               f"NegativeEdgeSampler: global {self.relation!r} is a {type(graph).__name__}, not "
               "a relation; point `relation` at the graph (e.g. 'graph').")
        edges = graph.to_edges()
        keep = edges.values > 0
        _check(bool(keep.any()), f"NegativeEdgeSampler: the graph {self.relation!r} has no "
                                 "positive-weight edges to sample.")
        cumulative = torch.cumsum(edges.values[keep].double(), 0)
        self._table = (edges.source[keep].to(state.device), edges.target[keep].to(state.device),
                       (cumulative / cumulative[-1]).to(state.device), graph.shape[0])

    def num_batches(self, state):
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        if self._table is None:
            self.setup(state)
        return max(1, -(-self._table[0].numel() // self.batch_size))  # about one pass over edges

    def batches(self, state):
        if self._table is None:
            self.setup(state)
        source, target, cumulative, n = self._table
        count, size, rate, dev = self.num_batches(state), self.batch_size, self.neg_sampling_rate, \
            state.device
        draws = torch.rand(count * size, generator=state.generator, device=dev,
                           dtype=torch.float64)
        edges = torch.searchsorted(cumulative, draws).clamp_max(cumulative.numel() - 1)
        src, tgt = source[edges].view(count, size), target[edges].view(count, size)
        positions = torch.arange(size, device=dev)
        neg_source = positions.repeat(rate)
        if self.negatives == "batch":
            partners = torch.randint(2 * size, (count, size * rate), generator=state.generator,
                                     device=dev)
            extra = None
        else:
            extra = torch.randint(n, (count, size * rate), generator=state.generator, device=dev)
            partners = (2 * size + torch.arange(size * rate, device=dev)).expand(count, -1)
        for b in range(count):
            parts = [src[b], tgt[b]] + ([extra[b]] if extra is not None else [])
            items = torch.cat(parts)
            batch = {"items": items, "pos_source": positions, "pos_target": positions + size,
                     "neg_source": neg_source, "neg_target": partners[b]}
            if state.dataset is not None:
                batch.update(state.dataset.take(items, self.keys))
            yield batch


# ----------------------------------------------------------------------------- losses


def _pair_sq(y: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # index_select: its backward is an index_add, ~2x faster on CPU than y[a]'s index_put
    return (y.index_select(0, a) - y.index_select(0, b)).pow(2).sum(-1)


@attrs.define
class RelationLoss(Loss):
    """UMAP's fuzzy-set cross-entropy on sampled edges (batches of :class:`NegativeEdgeSampler`).

    With q = kernel(‖y_i − y_j‖²) and logit z = log q − log(1 − q):
    L = (1/B) [Σ_pos −log q + γ Σ_neg −log(1 − q)] = (1/B) [Σ_pos softplus(−z) + γ Σ_neg softplus(z)]
    (positives are drawn ∝ p_ij, so their target is 1; negatives have target 0), γ =
    ``repulsion_strength``.  The softplus form never takes the log of a rounded 0 or 1.
    """

    name: ClassVar[str] = "relation"
    model: str = "main"
    input: str = "data"
    kernel: Any = block_field("transform", default="modified_cauchy")
    repulsion_strength: float = attrs.field(default=1.0, validator=non_negative)

    def __call__(self, batch, models, state):
        y = get_model(models, self.model)(batch[self.input])
        z_pos = self.kernel.logit(_pair_sq(y, batch["pos_source"], batch["pos_target"]))
        z_neg = self.kernel.logit(_pair_sq(y, batch["neg_source"], batch["neg_target"]))
        size = z_pos.numel()
        attraction = F.softplus(-z_pos).sum() / size
        repulsion = F.softplus(z_neg).sum() / size
        value = attraction + self.repulsion_strength * repulsion
        return LossOutput(value, {"attraction": attraction.detach(),
                                  "repulsion": repulsion.detach()})


@attrs.define
class KLLoss(Loss):
    """t-SNE's KL(P‖Q) on a batch of items (from an item sampler with ``index``).

    P is the global joint-probability relation ``relation`` restricted to the batch and
    renormalised; Q_ij = w_ij / Σ_{k≠l} w_kl with w = kernel(‖y_i − y_j‖²) over the batch.
    L = −α Σ P_ij log w_ij + log Σ_{k≠l} w_kl (= KL(P‖Q) − Σ P log P for α = ``exaggeration`` = 1).
    """

    name: ClassVar[str] = "kl"
    model: str = "main"
    input: str = "data"
    relation: str = "P"
    kernel: Any = block_field("transform", default="student_t")
    exaggeration: float = attrs.field(default=1.0, validator=positive)

    def _edges(self, state: TrainState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        cache = state.scratch.get(("kl", self.relation))
        if cache is None:  # the entries of P on the training device, once per phase
            p = state.lookup(self.relation).to_sparse()
            cache = (p.rows.to(state.device), p.cols.to(state.device),
                     p.values.to(state.device), p.shape[0])
            state.scratch[("kl", self.relation)] = cache
        return cache

    def batch_p(self, index: torch.Tensor, state: TrainState) -> torch.Tensor:
        """P restricted to ``index`` and renormalised: ``(B,) -> (B, B)``; O(nnz) gathers."""
        rows, cols, values, n = self._edges(state)
        size = len(index)
        slot = torch.full((n,), -1, dtype=torch.long, device=index.device)
        slot[index] = torch.arange(size, device=index.device)
        r, c = slot[rows], slot[cols]
        inside = (r >= 0) & (c >= 0) & (r != c)
        p = torch.zeros(size * size, dtype=values.dtype, device=values.device)
        p.index_add_(0, (r * size + c)[inside], values[inside])
        p = p.view(size, size)
        return p / p.sum().clamp_min(1e-12)

    def __call__(self, batch, models, state):
        y = get_model(models, self.model)(batch[self.input])
        p = self.batch_p(batch["index"].to(y.device), state).to(y.dtype)
        sq = (y[:, None, :] - y[None, :, :]).pow(2).sum(-1)
        log_w = self.kernel.log_kernel(sq)
        diagonal = torch.eye(len(y), dtype=torch.bool, device=y.device)
        log_z = torch.logsumexp(log_w.masked_fill(diagonal, -math.inf).reshape(-1), 0)
        cross = -(p * log_w).sum()
        value = self.exaggeration * cross + log_z
        with torch.no_grad():
            entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
            kl = cross + log_z - entropy
        return LossOutput(value, {"kl": kl})


# ----------------------------------------------------------------------------- free layout


class _FreePositionsModule(torch.nn.Module):
    """``index (m,) -> positions[index] (m, d)``; ``on_phase_start`` copies the start layout once."""

    def __init__(self, n_items: int, n_components: int, init: str | None,
                 scale: float | None) -> None:
        super().__init__()
        self.positions = torch.nn.Parameter(torch.zeros(n_items, n_components))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.init, self.scale = init, scale

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.positions.index_select(0, index.long())  # backward: index_add

    @torch.no_grad()
    def on_phase_start(self, state: TrainState) -> None:
        if bool(self.initialised) or self.init is None:
            return
        start = torch.as_tensor(state.lookup(self.init)).to(self.positions)
        _check(tuple(start.shape) == tuple(self.positions.shape),
               f"FreePositions: the start layout {self.init!r} has shape {tuple(start.shape)}, "
               f"expected {tuple(self.positions.shape)}.")
        if self.scale is not None:
            start = start - start.mean(0)
            start = start * (self.scale / start[:, 0].std().clamp_min(1e-12))
        self.positions.copy_(start)
        self.initialised.fill_(True)


@attrs.define
class FreePositions(Model):
    """Free coordinates of the items, the parameters themselves: ``index -> Y[index]``.

    A non-parametric layout (UMAP's own optimisation of Y, n × ``n_components``) trained with
    the same losses as a network: a loss with ``input="items"`` (or ``"index"``) embeds the
    indices of a batch.  At the start of the first phase that trains it the coordinates are
    copied from the global ``init`` (e.g. the spectral layout ``"positions"``), centred and
    scaled so that the first coordinate has standard deviation ``scale`` (None: as given).
    """

    name: ClassVar[str] = "free_positions"
    n_items: int = attrs.field(validator=positive_int)
    n_components: int = attrs.field(default=2, validator=positive_int)
    init: str | None = "positions"
    scale: float | None = attrs.field(default=None, validator=optional(positive))

    def build(self) -> torch.nn.Module:
        return _FreePositionsModule(self.n_items, self.n_components, self.init, self.scale)


# ----------------------------------------------------------------------------- initialisation


def _standardize(y: np.ndarray, scale: float) -> np.ndarray:
    y = y - y.mean(0)
    return y / max(float(y[:, 0].std()), 1e-12) * scale


def _spectral_component(adjacency: scipy.sparse.csr_matrix, dim: int,
                        rng: np.random.Generator) -> np.ndarray:
    """The ``dim`` leading non-trivial eigenvectors of D^{-1/2} A D^{-1/2} (= the smallest of
    the normalized Laplacian I − D^{-1/2} A D^{-1/2}) of one connected graph: ``(m, dim)``."""
    m = adjacency.shape[0]
    degree = np.asarray(adjacency.sum(1)).ravel()
    inv_sqrt = scipy.sparse.diags(1.0 / np.sqrt(np.maximum(degree, 1e-300)))
    normalized = (inv_sqrt @ adjacency @ inv_sqrt).tocsr()
    k = dim + 1
    if m <= 4 * k + 50:  # tiny graphs: dense solver
        _, vecs = np.linalg.eigh(normalized.toarray())
        return vecs[:, -k:][:, ::-1][:, 1:]
    v0 = rng.uniform(0.5, 1.0, m)
    try:
        vals, vecs = scipy.sparse.linalg.eigsh(
            normalized, k, which="LA", ncv=max(2 * k + 1, int(np.sqrt(m))), tol=1e-4, v0=v0,
            maxiter=m * 5)
    except (scipy.sparse.linalg.ArpackError, scipy.sparse.linalg.ArpackNoConvergence):
        log.info("eigsh did not converge; trying lobpcg")
        x0 = rng.normal(size=(m, k))
        vals, vecs = scipy.sparse.linalg.lobpcg(normalized, x0, largest=True, tol=1e-6,
                                                maxiter=m * 5)
    order = np.argsort(vals)[::-1]
    return vecs[:, order[1:k]]


@attrs.define
class SpectralInit(Transform):
    """Spectral embedding of a graph: ``SparseRelations (n, n) -> tensor (n, n_components)``.

    The eigenvectors of the smallest non-zero eigenvalues of the normalized Laplacian
    I − D^{-1/2} A D^{-1/2} of A = (P + Pᵀ)/2 (scipy ``eigsh``, ``lobpcg`` if it fails).  A
    disconnected graph is embedded per component, components placed at random centres far
    apart (tiny components at random around theirs).  The result is centred and scaled so that
    the first coordinate has standard deviation ``scale``.
    """

    name: ClassVar[str] = "spectral_init"
    n_components: int = attrs.field(default=2, validator=positive_int)
    scale: float = attrs.field(default=1.0, validator=positive)
    seed: int = 0

    accepts: ClassVar[tuple[type, ...]] = (SparseRelations,)  # a dense graph: `.to_sparse()` first

    def apply(self, relations):
        _check(relations.shape[0] == relations.shape[1],
               f"SpectralInit needs a square graph, got shape {relations.shape}.")
        graph = relations.to_sparse().to_scipy().astype(np.float64)
        graph = ((graph + graph.T) * 0.5).tocsr()
        rng = np.random.default_rng(self.seed)
        dim = self.n_components
        count, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
        if count == 1:
            y = _spectral_component(graph, dim, rng)
        else:
            y = self._per_component(graph, labels, count, rng)
        return torch.from_numpy(_standardize(np.asarray(y, dtype=np.float64), self.scale)).float()

    def _per_component(self, graph, labels, count, rng) -> np.ndarray:
        dim = self.n_components
        y = np.zeros((graph.shape[0], dim))
        # centres on a sphere of radius ~ the number of components, so that components start
        # apart; each component's own layout is unit sized
        centres = rng.normal(size=(count, dim))
        centres *= 3.0 * np.sqrt(count) / np.linalg.norm(centres, axis=1, keepdims=True)
        for c in range(count):  # a loop over components, not points
            members = np.flatnonzero(labels == c)
            if members.size > 2 * dim + 2:
                local = _spectral_component(graph[members][:, members], dim, rng)
                local = local - local.mean(0)
                local /= max(float(np.abs(local).max()), 1e-12)
            else:
                local = rng.normal(scale=0.1, size=(members.size, dim))
            y[members] = centres[c] + local
        log.info("graph has %d connected components; spectral layout per component", count)
        return y


@attrs.define
class PCAInit(Transform):
    """Principal components of data: ``tensor (n, d) -> tensor (n, n_components)``.

    Projection of the centred data on its leading principal axes (sign fixed so that the
    largest loading of each axis is positive), scaled so that the first coordinate has standard
    deviation ``scale``; relative variances are kept.
    """

    name: ClassVar[str] = "pca_init"
    n_components: int = attrs.field(default=2, validator=positive_int)
    scale: float = attrs.field(default=1.0, validator=positive)

    accepts: ClassVar[tuple[type, ...]] = (torch.Tensor,)  # data, not a relation

    def apply(self, relations):
        x = relations.detach().double()
        _check(x.ndim == 2 and x.shape[1] >= self.n_components,
               f"PCAInit needs (n, d) data with d >= n_components = {self.n_components}, got "
               f"shape {tuple(x.shape)}.")
        x = x - x.mean(0)
        if x.shape[1] <= 4096:
            _, vecs = torch.linalg.eigh(x.T @ x)
            axes = vecs[:, -self.n_components:].flip(1)
        else:
            _, _, v = torch.pca_lowrank(x, q=self.n_components + 10, center=False, niter=6)
            axes = v[:, :self.n_components]
        signs = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
        y = (x @ (axes * signs)).cpu().numpy()  # (n, n_components)
        return torch.from_numpy(_standardize(y, self.scale)).float()


__all__ = [
    "ConnectivityBasedRescale", "PerplexityBasedRescale", "EmbeddingKernel",
    "ModifiedCauchyTransform", "StudentTTransform", "NegativeEdgeSampler", "RelationLoss",
    "KLLoss", "SpectralInit", "PCAInit", "FreePositions", "RowMatrix", "fit_ab",
]

"""Affinities of a k-NN distance graph: UMAP's fuzzy memberships and t-SNE's conditional
probabilities (both vectorised over rows: one bisection for all points at once).

A transform of this kind maps a sparse (or dense) relation of distances to one of affinities with
the same pattern; it sits in ``globals.graph.transforms`` of the embedding recipes, where a
plugin's affinity replaces it by name.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import attrs
from attrs.validators import optional
import torch

from ..errors import ValidationError
from ..neighbors import suspect_distance
from ..relations import DenseRelations, RelationData, SparseRelations
from ..transforms import Transform
from ..validators import non_negative, positive, positive_int


#: umap-learn's tolerance on |Σ_j p_{j|i} − log2 k| and its floor on σ_i (× mean distance)
SMOOTH_K_TOLERANCE = 1e-5
MIN_K_DIST_SCALE = 1e-3
#: largest ln β of the perplexity search (exp stays finite in float64, so 0 · β is 0, not NaN)
LOG_BETA_MAX = 700.0


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


def _check_informative(dists: torch.Tensor, who: str) -> None:
    """Refuse a distance graph whose every entry is 0: X is constant (or every point has at
    least as many exact duplicates as neighbours), so the graph is an arbitrary choice among
    ties and an embedding of it would show nothing of the data."""
    finite = torch.isfinite(dists)
    if bool(finite.any()) and not bool((dists[finite] > 0).any()):
        width = int(finite.sum(1).max())
        # a plugin's distance that gives 0 to rows that differ is as likely (author29-2)
        suspect = suspect_distance()
        raise ValidationError(
            f"{who}: every point's {width} nearest neighbours are at distance 0 (`X` is "
            f"constant, or each row has at least {width} exact duplicates"
            + (f"; or the graph's {suspect} returns 0 for rows that differ" if suspect else "")
            + "), so the neighbour graph carries no information to embed. Remove the duplicate "
            "rows (fit on np.unique(X, axis=0), then transform(X) maps every copy to the same "
            "point) or check the data"
            + (f"; check that {suspect} is 0 only between equal rows" if suspect else "")
            + ".")


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
    neighbours per row (``n_neighbors`` overrides it).  Zero distances (duplicates) get
    membership 1; a graph whose every distance is 0 is refused (ValidationError).
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
        safe = torch.where(finite, dists, torch.zeros_like(dists))
        row_mean = safe.sum(1) / counts.clamp_min(1)
        all_mean = safe.sum() / counts.sum().clamp_min(1)
        scale = torch.where(row_mean > 0, row_mean, all_mean)
        lo = torch.zeros_like(rho)
        hi = torch.full_like(rho, math.inf)
        # the search starts at the row's mean distance (umap-learn: at 1): every step is then
        # in proportion to the unit of X, and X and 1000 · X find the same σ / unit
        mid = torch.where(scale > 0, scale, torch.ones_like(scale))
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
        _check_informative(dists, "ConnectivityBasedRescale")
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
    A row whose distances are all equal (a point with at least k exact duplicates) is uniform;
    a graph whose every distance is 0 is refused (ValidationError).
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
        if bool(short.any()):  # (a warning, not a log line: catchable, -W error; author28-5)
            fewest = int(counts.min())
            warnings.warn(
                f"perplexity_rescale: perplexity = {self.perplexity:g} needs more than "
                f"{self.perplexity:g} neighbours per row, but {int(short.sum())} rows have as "
                f"few as {fewest}: they use perplexity = neighbours − 1 = "
                f"{max(fewest - 1, 1):g}. Give the k-NN relation at least 3 × perplexity = "
                f"{math.ceil(3 * self.perplexity)} neighbours (t-SNE: leave n_neighbors unset, "
                "or set it so), or lower the perplexity.", UserWarning, stacklevel=2)
        perplexity = torch.clamp(counts.double() - 1.0, min=1.0).clamp(max=self.perplexity)
        d = dists ** 2 if self.square_distances else dists.clone()
        d = d - torch.where(finite, d, torch.full_like(d, math.inf)).min(1, keepdim=True).values
        target = torch.log(perplexity)
        scale = torch.where(finite, d, torch.zeros_like(d)).sum(1) / counts.clamp_min(1)
        # a row whose distances are all equal (e.g. a point with >= k exact duplicates: all 0)
        # has the uniform distribution at every β; it is calibrated as it stands (β = 1)
        flat = ~(scale > 0)
        log_beta = torch.where(flat, torch.zeros_like(scale),
                               -torch.log(scale.clamp_min(1e-300)))  # β ~ 1 / typical distance
        lo = torch.full_like(log_beta, -math.inf)
        hi = torch.full_like(log_beta, math.inf)
        d_inf = torch.where(finite, d, math.inf)  # exp(−β·inf) = 0 for missing entries
        d_zero = torch.where(finite, d, 0.0)
        for _ in range(self.n_iter):
            beta = torch.exp(log_beta.clamp(max=LOG_BETA_MAX))
            logits = d_inf * -beta[:, None]
            log_z = torch.logsumexp(logits, 1)
            p = torch.exp(logits - log_z[:, None])
            entropy = log_z + beta * (d_zero * p).sum(1)
            done = flat | ((entropy - target).abs() < self.tolerance)
            if bool(done.all()):
                break
            too_flat = (entropy > target) & ~done  # too spread out: increase β
            lo = torch.where(too_flat, log_beta, lo)
            hi = torch.where(~too_flat & ~done, log_beta, hi)
            step = torch.where(torch.isinf(hi), log_beta + 1.0,
                               torch.where(torch.isinf(lo), log_beta - 1.0, 0.5 * (lo + hi)))
            log_beta = torch.where(done, log_beta, step)
        return torch.exp(log_beta.clamp(max=LOG_BETA_MAX)), p

    accepts: ClassVar[tuple[type, ...]] = (SparseRelations, DenseRelations)

    def apply(self, relations):
        layout, dists = _as_row_matrix(relations, "PerplexityBasedRescale")
        _check_informative(dists, "PerplexityBasedRescale")
        _, p = self.calibrate(dists)
        return _back_to_relation(layout, p, relations)


__all__ = ["RowMatrix", "ConnectivityBasedRescale", "PerplexityBasedRescale",
           "SMOOTH_K_TOLERANCE", "MIN_K_DIST_SCALE"]

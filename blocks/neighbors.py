"""k-nearest-neighbour relations: the sparse graph behind parametric UMAP and t-SNE.

Below ``exact_threshold`` items the k nearest neighbours are found exactly with torch, a block
of rows at a time (no n × n array, no numba compilation; candidates ranked in float32, chosen
by their float64 distances, ties by index); above it with pynndescent's
approximate search (which pays a one-off numba compilation of ~30 s per process).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, ClassVar

import attrs
import numpy as np
import torch

from .base import BUILTIN, _provider, block_field, block_origin
from .distances import Euclidean, SquaredEuclidean
from .errors import ContractError, PluginError, ValidationError
from .numerics import CHUNK_ELEMENTS, chunked_topk, squared_euclidean_scores
from .relations import Relation, SparseRelations, _data_tensor
from .validators import positive_int

#: below this many items the exact chunked torch search is used.  Measured on 2 CPU cores
#: (784-D): exact search of 20,000 items takes ~6 s, while pynndescent's first call in a process
#: costs 30-50 s of numba compilation; umap-learn switches at 4,096.
EXACT_THRESHOLD = 20_000
#: distances pynndescent knows natively, by our registry name
_PYNNDESCENT_METRICS = {"euclidean": "euclidean", "sqeuclidean": "sqeuclidean", "cosine": "cosine"}


#: candidates per row ranked by the fast scores beyond the k kept: their exact distances
#: (float64) settle the order near the k-th, so rounding of the fast scores (‖r‖² − 2b·r in
#: float32) does not decide which neighbours are kept
CANDIDATE_MARGIN = 8
#: gathered neighbour rows per block of the exact distances: small enough to stay in cache
#: (MNIST-5k's pairs: 0.1 s in blocks of 262,144 elements, 0.6 s in blocks of 16 M)
PAIR_CHUNK_ELEMENTS = 262_144


def _is_euclidean(metric: Any) -> bool:
    return isinstance(metric, (Euclidean, SquaredEuclidean))


#: a negative value of a distance that is not infoblocks' own within this fraction of the
#: largest |value| its search has seen is rounding (1 − cos of equal rows in float32 is
#: −1.2e-7; a squared distance expanded as ‖a‖² + ‖b‖² − 2a·b loses ~1e-4 of the scale far
#: from the origin), not a wrong sign (a similarity passed as a distance: negative values of
#: the order of the scale)
NEGATIVE_DISTANCE_TOLERANCE = 1e-3


class DistanceCheck:
    """The values of one search's distance that is not infoblocks' own (a plugin's, a user's
    class): finite and ≥ 0 (to :data:`NEGATIVE_DISTANCE_TOLERANCE` of the largest |value| seen
    so far in the search), else a :class:`PluginError` naming the distance, its plugin, the
    method, how many values and the fix.  A NaN or a negative distance was taken as it is: the
    exact k-NN search ranked a row of NaN in an arbitrary order, so that row got arbitrary
    neighbours, silently (author29-1); a similarity passed as a distance was reported as
    duplicate rows (author29-2).  The built-in distances are not re-checked (``active``
    False): their values cost no check."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.active = block_origin(metric) != BUILTIN
        self.scale = 0.0

    def __call__(self, out: torch.Tensor, method: str) -> None:
        if not self.active or not out.numel() or not out.is_floating_point():
            return
        finite = torch.isfinite(out)
        all_finite = bool(finite.all())
        values = out if all_finite else out[finite]
        if values.numel():
            self.scale = max(self.scale, float(values.abs().max()))
        negative = out < -NEGATIVE_DISTANCE_TOLERANCE * self.scale
        bad = negative if all_finite else negative | ~finite
        if all_finite and not bool(negative.any()):
            return
        first = tuple(int(i) for i in bad.nonzero()[0])
        n_nan, n_neg = int((~finite).sum()), int(negative.sum())
        found = " and ".join(part for part in (
            f"{n_nan} NaN or inf" if n_nan else "",
            f"{n_neg} negative value(s) (below −{NEGATIVE_DISTANCE_TOLERANCE:g} × the largest "
            f"|distance| {self.scale:.3g})" if n_neg else "") if part)
        where = ", ".join(str(i) for i in first)
        source, path = _SOURCE_DISTANCE.get()
        raise PluginError(
            (f"{path}.relation.metric: " if path and source is self.metric else "")
            + f"distance {getattr(self.metric, 'name', type(self.metric).__name__)!r}"
            f"{_provider(self.metric)}: `{method}(a, b)` returned {found} among {out.numel()} "
            f"(first at [{where}]: {out[first].item():g}). The k-NN search needs distances that "
            "are finite and ≥ 0 (0 for equal rows): a NaN or a negative value gives its row "
            "arbitrary neighbours. Fix the block: a similarity s is not a distance (use 1 − s, "
            "or max(s) − s); a NaN comes from a division by 0 (the norm or standard deviation "
            "of a constant row?) or a NaN in the data.")


#: (distance block, its config path) of the relation whose global the routine computes now
#: (:func:`distances_by`): :class:`DistanceCheck` names the path, and a transform's error
#: blaming the distances' values names a distance that is not infoblocks' own as a possible
#: cause (author29-2)
_SOURCE_DISTANCE: ContextVar[Any] = ContextVar("infoblocks_source_distance",
                                               default=(None, ""))


@contextlib.contextmanager
def distances_by(relation: Any, where: str = "") -> Iterator[None]:
    """Run the body (a global's computation, ``where`` its path: ``globals.graph``) with
    ``relation``'s ``metric`` (if any) as the distance behind its values
    (:func:`suspect_distance`)."""
    token = _SOURCE_DISTANCE.set((getattr(relation, "metric", None), where))
    try:
        yield
    finally:
        _SOURCE_DISTANCE.reset(token)


def suspect_distance() -> str:
    """``distance 'x' (plugin 'p')``: the distance behind the running global's values where it
    is not infoblocks' own (a plugin's, a user's class), else ''."""
    metric = _SOURCE_DISTANCE.get()[0]
    if metric is None or not hasattr(metric, "pairwise") or block_origin(metric) == BUILTIN:
        return ""
    return f"distance {getattr(metric, 'name', type(metric).__name__)!r}{_provider(metric)}"


def checked_distance(metric: Any, method: str, a: torch.Tensor, b: torch.Tensor,
                     check: DistanceCheck | None = None) -> torch.Tensor:
    """``metric.pairwise(a, b)`` (n, m) or ``metric.paired(a, b)`` (n,), refused with a
    :class:`ContractError` naming the distance and the method where the shape is another (a
    plugin's distance that returns a row of sums would otherwise fail deep in the k-NN search,
    naming the relation instead); the values of a distance that is not infoblocks' own by
    ``check`` (one :class:`DistanceCheck` per search; None: a new one for this call)."""
    out = getattr(metric, method)(a, b)
    want = (a.shape[0], b.shape[0]) if method == "pairwise" else (a.shape[0],)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ContractError(
            f"distance {getattr(metric, 'name', type(metric).__name__)!r}: `{method}(a, b)` "
            f"must return {'(n, m)' if method == 'pairwise' else '(n,)'} = {want} for a of "
            f"{a.shape[0]} and b of {b.shape[0]} rows, got {got}.")
    (check or DistanceCheck(metric))(out, method)
    return out


def _pair_distances(metric: Any, block: torch.Tensor, x: torch.Tensor,
                    indices: torch.Tensor, check: DistanceCheck | None = None) -> torch.Tensor:
    """d(block_i, x_{indices[i, j]}) as float64: ``(c, d), (n, d), (c, k) -> (c, k)``.

    (Squared) Euclidean: the differences summed in float64, exact for integer-valued data at
    any unit (X, X / 16 and 1000 · X give the same ties); the squared distance for both (the
    caller takes the root).  Another distance: its own ``paired`` on float64 rows (a plugin's
    Euclidean distance then gives the built-in's values and ties)."""
    neighbours = x[indices]  # (c, k, d)
    if _is_euclidean(metric):
        # float32 differences are exact for integer-valued data (and between close values)
        return neighbours.sub_(block[:, None, :]).double().pow_(2).sum(-1)
    c, k = indices.shape
    return checked_distance(metric, "paired",
                            block[:, None, :].expand_as(neighbours).reshape(c * k, -1).double(),
                            neighbours.reshape(c * k, -1).double(),
                            check).reshape(c, k).double()


def _smallest(dist: torch.Tensor, index: torch.Tensor, k: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest (distance, index) pairs of each row, ascending: equal distances in the
    order of their index, so that the choice among ties does not depend on rounding."""
    by_index = torch.argsort(index, dim=1)
    dist, index = dist.gather(1, by_index), index.gather(1, by_index)
    order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
    return index.gather(1, order), dist.gather(1, order)


def _knn(queries: torch.Tensor, reference: torch.Tensor | None, k: int, metric: Any,
         chunk_elements: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest rows of ``reference`` (None: ``queries`` itself, self excluded):
    indices ``(m, k)`` and float64 distances (squared for the Euclidean metrics), ordered by
    (distance, index).

    The fast scores rank ``k + CANDIDATE_MARGIN`` candidates per row.  The exact distances of
    the first k + 1 choose the k where no point outside them can be as near as the k-th (for
    the Euclidean scores: not within their float32 rounding bound); the other rows (near-ties,
    exact ties at the k-th) are decided on all the candidates, and a row where even those do
    not settle it (a tie reaching past them) on every reference row whose fast score is within
    the bound of the k-th (a distance's own ``pairwise`` values for the other metrics).  So
    the neighbours are the exact ones, ties broken by index: the same graph at any unit of X.
    """
    self_search = reference is None
    ref = queries if self_search else reference
    n_ref = ref.shape[0] - (1 if self_search else 0)
    m = min(k + CANDIDATE_MARGIN, n_ref)
    euclidean = _is_euclidean(metric)
    # a plugin's values checked as they are computed, once per search (not the built-ins')
    check = DistanceCheck(metric)
    bound = torch.zeros(queries.shape[0], dtype=torch.float64, device=queries.device)
    if euclidean:
        # centred (any common shift keeps the distances): the fast scores ‖r‖² − 2b·r lose
        # less to rounding
        mean = ref.mean(0, dtype=torch.float64).to(ref.dtype)
        r = ref - mean
        q = r if self_search else queries - mean
        candidates = chunked_topk(q, None if self_search else r, m, None, chunk_elements)
        # |rounding of a float32 score| <= (d + 4) u (‖b‖ + max ‖r‖)² (the centred copies'
        # rounding included): a point outside the candidates is at d² >= the largest
        # candidate's − 2 × that
        unit = torch.finfo(ref.dtype).eps / 2
        r_max = torch.linalg.vector_norm(r, dim=1, dtype=torch.float64).max()
        q_norm = torch.linalg.vector_norm(q, dim=1, dtype=torch.float64)
        bound = 2 * (ref.shape[1] + 4) * unit * (q_norm + r_max) ** 2
        r_sq = (r * r).sum(1)
    else:
        candidates = chunked_topk(queries, reference, m,
                                  lambda a, b: checked_distance(metric, "pairwise", a, b, check),
                                  chunk_elements)
        # the distance's own values in the data's dtype rank the candidates: a point outside
        # them may be as near as the k-th within their rounding (relative, a few units of it)
        relative_bound = 16 * torch.finfo(queries.dtype).eps

    def choose(rows: torch.Tensor, columns: torch.Tensor, valid: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, ...]:
        """The k of ``columns`` (candidate indices of ``rows``; ``valid``: which of them count)
        and which rows stay unsure."""
        per_block = max(1, min(chunk_elements, PAIR_CHUNK_ELEMENTS)
                        // max(columns.shape[1] * ref.shape[1], 1))
        d = torch.cat([_pair_distances(metric, queries[rows[s:s + per_block]], ref,
                                       columns[s:s + per_block], check)
                       for s in range(0, rows.numel(), per_block)])
        if valid is not None:
            d = torch.where(valid, d, math.inf)
        index, dist = _smallest(d, columns, k)
        if valid is not None or columns.shape[1] >= n_ref:  # every possible neighbour seen
            return index, dist, torch.zeros_like(rows, dtype=torch.bool)
        margin = bound[rows] if euclidean else relative_bound * dist[:, -1].abs()
        return index, dist, d.max(1).values - dist[:, -1] <= margin

    rows = torch.arange(queries.shape[0], device=queries.device)
    index, dist, unsure = choose(rows, candidates[:, :k + 1])
    rows = rows[unsure]
    if rows.numel():
        index[rows], dist[rows], unsure = choose(rows, candidates[rows])
        rows = rows[unsure]
    # the rows still open (ties reaching past the candidates): a fresh pass over every
    # reference row, a block of rows at a time
    everything = torch.arange(ref.shape[0], device=queries.device)
    per_block = max(1, chunk_elements // max(ref.shape[0], 1))
    for s in range(0, rows.numel(), per_block):
        block = rows[s:s + per_block]
        if not euclidean:  # the distance's own values in float64 decide, ties by index
            d = checked_distance(metric, "pairwise", queries[block].double(),
                                 ref.double(), check).double()
            if self_search:
                d[torch.arange(block.numel()), block] = math.inf
            index[block], dist[block] = _smallest(d, everything.expand(block.numel(), -1), k)
            continue
        # every row within the rounding bound of the k-th found so far (a true neighbour is
        # no farther than it), then their exact distances
        scores = squared_euclidean_scores(q[block], r, r_sq).double()
        if self_search:
            scores[torch.arange(block.numel()), block] = math.inf
        b_sq = (q[block].double() ** 2).sum(1)
        near = scores <= (dist[block, -1] - b_sq + bound[block])[:, None]
        width = max(k, int(near.sum(1).max()))  # the k found so far are within the bound
        columns = torch.topk(torch.where(near, scores, math.inf), width, dim=1,
                             largest=False).indices
        index[block], dist[block], _ = choose(block, columns, valid=near.gather(1, columns))
    return index, dist


def _as_distances(metric: Any, dist: torch.Tensor) -> torch.Tensor:
    """``_knn``'s float64 distances as the metric's (the root of the squared Euclidean)."""
    return dist.sqrt() if isinstance(metric, Euclidean) else dist


def exact_knn(x: torch.Tensor, k: int, metric: Any,
              chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours of every row of ``x`` (self excluded), rows in blocks (the
    shared :func:`~infoblocks.blocks.numerics.chunked_topk` ranks candidates, their exact
    distances in float64 choose; ties in the order of the index: see :func:`_knn`).

    ``(n, d) -> indices (n, k) int64, distances (n, k) float64`` sorted by distance (float64:
    X and 1000 · X then give the graph's memberships to float rounding of float64).
    """
    index, dist = _knn(x, None, k, metric, chunk_elements)
    return index, _as_distances(metric, dist)


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
            index, dist = _knn(queries, chunk, min(k, chunk.shape[0]), metric, chunk_elements)
            index = index + start
            start += chunk.shape[0]
            if best_i is not None:
                index, dist = torch.cat([best_i, index], 1), torch.cat([best_d, dist], 1)
            # a stable sort: ties keep the earlier rows (the lower index) first
            dist, order = torch.sort(dist, dim=1, stable=True)
            best_i, best_d = torch.gather(index, 1, order[:, :k]), dist[:, :k]
        return best_i, _as_distances(metric, best_d).to(queries.dtype)
    index, dist = _knn(queries, reference, k, metric, chunk_elements)
    return index, _as_distances(metric, dist).to(queries.dtype)


#: name of the routine constant that holds a k-NN graph given as data (the embeddings'
#: ``fit(X, knn=(indices, distances))``): the ``input`` of a graph global whose relation is
#: :class:`PrecomputedKNN`
KNN_KEY = "knn"


def _accepted_forms(n_reference: int | None) -> str:
    """The two forms ``knn`` takes, for its messages."""
    square = ("a square (n, n) distance matrix D, D[i, j] the distance of rows i and j of X "
              "(umap-learn's `metric=\"precomputed\"`; the diagonal is ignored)"
              if n_reference is None else
              f"an (m, {n_reference}) distance matrix D, D[i, j] the distance of new row i "
              "to training row j")
    return (f"a pair (indices, distances), each ({'n' if n_reference is None else 'm'}, k): "
            "each row's k nearest rows and their distances (umap-learn's `precomputed_knn`), "
            f"or {square}")


def _is_matrix(knn: Any) -> bool:
    """Whether ``knn`` is one 2-D array (a distance matrix), not a pair (indices, distances):
    a pair is a tuple, or a list of two parts that are not rows of numbers."""
    if isinstance(knn, tuple):
        return False
    if isinstance(knn, list):
        return not (len(knn) == 2 and np.ndim(knn[0]) != 1)
    return getattr(knn, "ndim", None) == 2 or (hasattr(knn, "shape") and len(knn.shape) == 2)


def _matrix_neighbors(knn: Any, k: int, n_rows: int | None, n_reference: int | None,
                      argument: str, chunk_elements: int = CHUNK_ELEMENTS
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k nearest columns of a distance matrix, the built-in search's way:
    ``D (n, n) -> indices (n, k) int64, distances (n, k) float64`` (``n_reference`` None: the
    diagonal left out, a row is not its own neighbour) or ``D (m, n_reference) -> (m, k)``
    (new rows among the training rows), ascending, equal distances in the order of the index
    (as :func:`exact_knn` breaks ties); rows a block at a time (no float64 copy of all of D).
    Refused naming ``argument``: another shape (both accepted forms said), entries that are
    not real numbers, not finite or negative."""
    if callable(getattr(knn, "toarray", None)):  # a scipy sparse matrix
        raise ValidationError(
            f"`{argument}` is a sparse matrix ({type(knn).__name__} {tuple(knn.shape)}), whose "
            "missing entries are no distances: pass its dense form `D.toarray()` (every pair's "
            "distance), or each row's neighbours as a pair (indices, distances), each (n, k).")
    try:
        d = knn.detach().cpu() if isinstance(knn, torch.Tensor) else \
            torch.from_numpy(np.asarray(knn))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"`{argument}` could not be read as a distance matrix "
                              f"({str(exc).rstrip('.')}). Pass "
                              f"{_accepted_forms(n_reference)}.") from None
    n = d.shape[0] if d.ndim else 0
    want = (n_rows if n_rows is not None else n,
            n_reference if n_reference is not None else (n_rows if n_rows is not None else n))
    if d.ndim != 2 or tuple(d.shape) != want:
        rows = "X's" if n_reference is None else "the"
        raise ValidationError(
            f"`{argument}` is an array of shape {tuple(d.shape)}, not one of the forms it "
            f"takes for {rows} {want[0]}{'' if n_reference is None else ' new'} rows: "
            f"{_accepted_forms(n_reference)}; here D would be {want}.")
    if d.is_complex() or d.dtype == torch.bool or not (d.is_floating_point() or d.dtype in (
            torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise ValidationError(f"`{argument}` distance matrix must hold real numbers, got "
                              f"{d.dtype}.")
    m, width = want
    per_block = max(1, chunk_elements // max(width, 1))
    kept = max(0, min(k, width - (1 if n_reference is None else 0)))
    indices, distances = [], []
    for s in range(0, m, per_block):
        block = d[s:s + per_block].to(torch.float64, copy=True)  # (D itself is left alone)
        rows = torch.arange(s, s + block.shape[0])
        if n_reference is None:  # the diagonal is no neighbour (its value is not read)
            block[rows - s, rows] = 0.0
        bad = ~torch.isfinite(block) | (block < 0)
        if bool(bad.any()):
            r, c = (int(v) for v in bad.nonzero()[0])
            raise ValidationError(
                f"`{argument}` distance matrix entries must be finite and non-negative; "
                f"D[{s + r}, {c}] = {block[r, c].item():g} ({int(bad.sum())} such entries in "
                f"rows {s}-{s + block.shape[0] - 1}). A similarity (cosine similarity, a "
                "kernel) is not a distance: pass e.g. 1 − s; a pair with no distance needs "
                "one (e.g. the largest distance).")
        if n_reference is None:
            block[rows - s, rows] = math.inf
        if not kept:
            continue
        # the k-th smallest value, then every column within it: ties at the k-th by index
        kth = torch.topk(block, kept, dim=1, largest=False).values[:, -1:]
        near = block <= kth
        count = int(near.sum(1).max())
        candidates = torch.topk(torch.where(near, block, math.inf), count, dim=1,
                                largest=False).indices
        index, dist = _smallest(block.gather(1, candidates), candidates, kept)
        indices.append(index)
        distances.append(dist)
    if not indices:
        return torch.zeros(m, 0, dtype=torch.long), torch.zeros(m, 0, dtype=torch.double)
    return torch.cat(indices), torch.cat(distances)


def _knn_arrays(knn: Any, argument: str, n_reference: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``knn`` = (indices, distances) as (int64, float64) tensors of one 2-D shape."""
    if not (isinstance(knn, (tuple, list)) and len(knn) == 2):
        got = f"an array of shape {tuple(knn.shape)}" if hasattr(knn, "shape") else \
            type(knn).__name__
        raise ValidationError(f"`{argument}` must be {_accepted_forms(n_reference)}; got "
                              f"{got}.")
    arrays = []
    for part, value in zip(("indices", "distances"), knn):
        try:
            t = value.detach().cpu() if isinstance(value, torch.Tensor) else \
                torch.from_numpy(np.asarray(value))
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"`{argument}` {part} could not be read as an array: "
                                  f"{exc}.") from None
        if t.ndim != 2:
            raise ValidationError(f"`{argument}` {part} must be 2-D (n, k), one row of "
                                  f"neighbours per point; got shape {tuple(t.shape)}.")
        arrays.append(t)
    indices, distances = arrays
    if tuple(indices.shape) != tuple(distances.shape):
        raise ValidationError(f"`{argument}` indices {tuple(indices.shape)} and distances "
                              f"{tuple(distances.shape)} differ in shape; give one distance per "
                              "neighbour, both (n, k).")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise ValidationError(f"`{argument}` indices must be integers (row numbers), got "
                              f"{indices.dtype}; pass them as np.int64 (e.g. `idx.astype(int)`).")
    if not (distances.is_floating_point() or distances.dtype in (
            torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise ValidationError(f"`{argument}` distances must be real numbers, got "
                              f"{distances.dtype}.")
    return indices.long(), distances.double()


def precomputed_neighbors(knn: Any, k: int, *, n_rows: int | None = None,
                          n_reference: int | None = None, argument: str = "knn",
                          need: str = "", fix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """A k-NN graph given as data, checked and brought to the built-in search's form:
    ``(indices (n, K), distances (n, K)) -> indices (n, k) int64, distances (n, k) float64``,
    each row's k nearest, ascending (equal distances in the order given).

    ``n_reference`` None: the graph of the n rows among themselves (``fit``): indices in
    [0, n), and a row's own index is dropped as the built-in search leaves it out — where some
    row holds its own index (umap-learn's graphs count the point itself) every row loses one
    neighbour, its own index or, where that is missing, its farthest (as pynndescent's graph
    is read).  Otherwise the neighbours of new rows among ``n_reference`` training rows
    (``transform``): indices in [0, n_reference).  Refused with a :class:`ValidationError`
    naming ``argument``: another shape (``n_rows``: the rows the graph must have), indices
    that are not integers, out of range or repeated in a row, distances not finite or
    negative, fewer than ``k`` neighbours per row (``need`` says what needs k, ``fix`` how to
    lower it).  ``knn`` may instead be a distance matrix D, ``(n, n)`` (``fit``; its diagonal
    not read) or ``(n, n_reference)`` (``transform``): each row's k nearest entries
    (:func:`_matrix_neighbors`)."""
    if _is_matrix(knn):
        indices, distances = _matrix_neighbors(knn, k, n_rows, n_reference, argument)
    else:
        indices, distances = _knn_arrays(knn, argument, n_reference)
    n, width = indices.shape
    if n_rows is not None and n != n_rows:
        raise ValidationError(
            f"`{argument}` has {n} rows but `X` has {n_rows}"
            + (": give every row of X its neighbours" if n_reference is None else
               " new rows: give every new row its nearest training rows")
            + f", in the order of X's rows, ({n_rows}, k).")
    bound = n if n_reference is None else n_reference
    what = "X's rows" if n_reference is None else f"the {n_reference} training rows"
    if indices.numel():
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= bound:
            bad = low if low < 0 else high
            raise ValidationError(
                f"`{argument}` indices must be row numbers of {what}, in [0, {bound}); got "
                f"{bad}. Give each row's neighbours as indices into the rows of "
                + ("X." if n_reference is None else "the X the model was fitted on (not "
                   "into the new rows)."))
    bad = ~torch.isfinite(distances) | (distances < 0)
    if bool(bad.any()):
        row = int(bad.any(1).nonzero()[0])
        raise ValidationError(
            f"`{argument}` distances must be finite and non-negative; row {row} has "
            f"{distances[row][bad[row]][0].item():g} ({int(bad.sum())} such entries). A "
            "similarity (cosine similarity, a kernel) is not a distance: pass e.g. 1 − s.")
    ordered = indices.sort(1).values
    repeated = (ordered[:, 1:] == ordered[:, :-1]).any(1)
    if bool(repeated.any()):
        row = int(repeated.nonzero()[0])
        raise ValidationError(
            f"`{argument}` row {row} names a neighbour twice ({indices[row].tolist()[:12]}"
            f"{' ...' if width > 12 else ''}); each row must list distinct rows.")
    dropped = False
    if n_reference is None:
        is_self = indices == torch.arange(n)[:, None]
        if bool(is_self.any()):  # the graph counts each point itself: one column less
            drop = is_self.clone()
            far = distances.masked_fill(is_self, -math.inf).argmax(1)
            missing = ~is_self.any(1)
            drop[missing, far[missing]] = True
            keep = ~drop
            indices = indices[keep].reshape(n, width - 1)
            distances = distances[keep].reshape(n, width - 1)
            width, dropped = width - 1, True
    if width < k:
        own = " (after each row's own index is dropped)" if dropped else ""
        raise ValidationError(
            f"`{argument}` holds {width} neighbours per row{own}, but {need or f'k = {k}'} "
            f"needs {k}: pass at least {k} per row{', or ' + fix if fix else ''}.")
    order = torch.sort(distances, dim=1, stable=True).indices[:, :k]
    return indices.gather(1, order), distances.gather(1, order)


@attrs.define
class PrecomputedKNN(Relation):
    """A k-NN graph given as data: ``(indices (n, K), distances (n, K)) -> SparseRelations
    (n, n)``, entry (i, j) the distance of each of i's ``n_neighbors`` nearest j ≠ i (float64),
    the form :class:`NeighborBasedPDist` gives (:func:`precomputed_neighbors`: a row's own
    index dropped, K ≥ ``n_neighbors``, the nearest kept).

    Its input is the pair itself: in the embeddings the routine constant ``knn`` that
    ``fit(X, knn=(indices, distances))`` supplies (``[globals.graph] input = "knn"``)."""

    name: ClassVar[str] = "precomputed_knn"
    n_neighbors: int = attrs.field(default=15, validator=positive_int)

    def compute(self, data, **kwargs) -> SparseRelations:
        idx, dist = precomputed_neighbors(data, self.n_neighbors,
                                          need=f"`n_neighbors` = {self.n_neighbors}")
        n, k = idx.shape
        if n <= k:
            raise ValidationError(f"`n_neighbors` = {k} needs more than {k} items, got {n}; "
                                  "lower n_neighbors or pass more data.")
        rows = torch.arange(n).repeat_interleave(k)
        return SparseRelations(rows, idx.reshape(-1), dist.reshape(-1), (n, n))


@attrs.define
class NeighborBasedPDist(Relation):
    """Distances to the k nearest neighbours: ``(n, d) -> SparseRelations (n, n)``, k per row.

    Entry (i, j) holds d(x_i, x_j) (float64) for the k nearest neighbours j ≠ i of i.  Exact
    (torch, chunked; equal distances kept in the order of the index, so that the graph does
    not depend on the unit of X) below ``exact_threshold`` items or for distances pynndescent
    does not know; approximate (pynndescent) above.  Memory: O(n k) plus one block of
    ``chunk_elements``.
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
        # float64 either way (the exact search's own; pynndescent's float32 widened)
        return SparseRelations(rows, idx.reshape(-1), dist.double().reshape(-1), (n, n))


__all__ = ["NeighborBasedPDist", "PrecomputedKNN", "precomputed_neighbors", "KNN_KEY",
           "exact_knn", "approximate_knn", "query_knn", "EXACT_THRESHOLD"]

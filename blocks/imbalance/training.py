"""Training blocks of the DII: the rows × columns sampler and the DII loss.

The loss calls four replaceable blocks (each a registry name in TOML): ``distance_A`` (the
protocol of :mod:`.distances`: it takes the learnt weights), ``softmax`` (the coefficients
protocol of :mod:`.softmax`), ``distance_B`` (any distance: only its order matters) and
``ranks`` (a row-wise transform of :mod:`.ranks`).  The per-batch tables (A's prepared
distances, B's ranks) are the loss's own state, cached by the identity of the batch's index
tensors and reset in :meth:`DIILoss.on_phase_start`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import torch

from ..base import block_field
from ..contracts import ROWS_COLS, BatchType
from ..errors import ContractError, ValidationError
from ..losses import Loss, LossOutput, get_model
from ..relations import DenseRelations
from ..samplers import Sampler
from ..state import TrainState
from ..validators import positive, positive_int
from .distances import check_feature_weighted, is_feature_weighted
from .ranks import diagonal_mask
from ..numerics import cosine_schedule
from .softmax import (GaussianSoftmax, exclusion_logits, expected_ranks,
                      neighbour_index)

#: largest epoch (batches × b × b × (D_A + 2) numbers) whose tables are prepared in one go;
#: beyond it each batch prepares its own, so that memory stays one batch's (16 MB float32)
EPOCH_TABLE_ELEMENTS = 4_000_000


def rows_of(array: Any, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (any shape) of a tensor, or of lazily read rows (a memory-mapped array
    or a torch Dataset behind ``LazyRows.take``): only those rows are read."""
    if isinstance(array, torch.Tensor):
        return array[index]
    flat = array.take(index.reshape(-1))
    return flat.to(index.device).reshape(*index.shape, *flat.shape[1:])



def check_k_below_points(k_init: int, k_final: int, lambda_init: Any, points: int,
                         batch: str, detail: str = "") -> None:
    """Refuse batches of ``points`` columns where the largest k of the schedule is not below
    them (unless λ is fixed: ``lambda_init``): each point's k-th neighbour would be itself (the
    self entry holds ``SELF_DISTANCE``), so λ is huge, the softmax uniform and the weights never
    move (author26-12: DII 1.0000 and the initial weights, silently, for 100 batches of 5
    points with k = 5 set in the sampler's table).  ``batch`` describes the batch for the
    message ("this step's batch has only", "each step sees only"), ``detail`` what follows
    the count."""
    if lambda_init is None and max(k_init, k_final) >= points:
        raise ValidationError(
            f"`k_init` / `k_final` = {k_init} / {k_final} but {batch} {points} points{detail} "
            f"(each point has {points - 1} neighbours in it); k must be below {points}: lower k or "
            "use fewer, larger batches (the sampler's `batches_per_epoch`).")

@attrs.define
class RowsColumnsSampler(Sampler):
    """Batches of (rows, cols) item indices for the rows × columns blocks of the DII.

    ``batches_per_epoch = 1``: one static batch — ``num_points_rows`` random rows (all when
    None) against all columns, the rows first, so that (i, i) is "a point and itself".  More
    batches: every epoch the rows are shuffled and split into ``batches_per_epoch`` parts; each
    part is both rows and columns of its step (DADApy's mini-batches).

    Batches (:data:`~infoblocks.blocks.contracts.ROWS_COLS`), on ``state.device``:

    - ``rows`` (r,) long: item indices of the rows;
    - ``cols`` (c,) long: item indices of the columns; wherever ``rows[i]`` is also a column
      it is ``cols[i]`` (rows first), so (i, i) is "a point and itself";
    - only with equal mini-batches (N divisible by ``batches_per_epoch``): ``epoch_parts``
      (batches, r), every batch of the epoch, and ``part`` (int), this batch's row of it — a
      loss may prepare the whole epoch's tables at once.  Not declared: not in every batch;
    - only in a shard (torch.distributed, :meth:`shard`): ``rows_total`` (int), the rows of
      the whole batch, of which this rank holds every ``world_size``-th (the columns are
      all the batch's, this rank's rows first).

    The same index tensors come back every step of a static (full) batch, so a loss may cache
    per-batch tables by identity.
    """

    name: ClassVar[str] = "rows_columns"
    batch_type: ClassVar[BatchType] = ROWS_COLS
    batches_per_epoch: int = attrs.field(default=1, validator=positive_int)
    num_points_rows: int | None = attrs.field(default=None, validator=optional(positive_int))
    _rows: torch.Tensor | None = attrs.field(init=False, default=None, repr=False, eq=False)
    _cols: torch.Tensor | None = attrs.field(init=False, default=None, repr=False, eq=False)
    _shard: tuple | None = attrs.field(init=False, default=None, repr=False, eq=False)

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
        self._shard = None
        if self.batches_per_epoch > self._rows.numel():
            raise ValidationError(
                f"`batches_per_epoch` = {self.batches_per_epoch} exceeds the {self._rows.numel()} "
                "rows available; use fewer batches."
            )

    def shard(self, batch: dict[str, Any], rank: int, world_size: int) -> dict[str, Any]:
        """This rank's rows ``rows[rank::world_size]`` against all the batch's columns (its
        rows first), with ``rows_total`` (the batch's row count) so that the loss normalises
        by the whole batch.

        The DII is a mean over rows of per-row terms (a row's λ, softmax and B-ranks need only
        its own row of the table), so the ranks' losses scaled by ``world_size`` average to the
        full batch's loss, and the engine's gradient average is the full batch's gradient —
        exactly, even for unequal shards.  The epoch's equal parts are dropped (the loss then
        prepares each shard's own tables); a static batch's shard is the same tensor every
        step, so the loss's per-batch cache still holds."""
        rows, cols = batch["rows"], batch["cols"]
        cached = self._shard
        if cached is not None and cached[0] is rows and cached[1] == (rank, world_size):
            return cached[2]
        # rows first again: the shard's rows, then the other columns (their order is free,
        # the DII sums over them), so that (i, i) stays "a point and itself" for any block
        mine = torch.arange(rank, rows.numel(), world_size, device=rows.device)
        others = torch.ones(cols.numel(), dtype=torch.bool, device=cols.device)
        others[mine] = False
        part = {"rows": rows[mine], "cols": torch.cat([cols[mine], cols[others]]),
                "rows_total": int(rows.numel())}
        if self.batches_per_epoch == 1:
            self._shard = (rows, (rank, world_size), part)
        return part

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


@attrs.define
class DIILoss(Loss):
    """DII = 2 / (n_rows · n_cols) · Σ_ij c_ij(w) r_ij over the batch's rows × columns.

    c = ``softmax`` of ``distance_A`` between the rows and columns of the dataset array
    ``input`` under the weights ``feature_weights()`` of model ``model``; r = ``ranks`` of the
    ``distance_B`` distances of the dataset array ``target`` *within the batch*, or of the
    (N, N) global / constant ``distances_key`` (a tensor or DenseRelations).  k goes from
    ``k_init`` to ``k_final`` (and a fixed λ from ``lambda_init`` to ``lambda_final``) on a
    cosine over the phase's steps (``state.total_steps``: epochs × the sampler's batches).

    Contract: consumes ``rows``, ``cols`` (:data:`~infoblocks.blocks.contracts.ROWS_COLS`);
    needs ``input`` and ``target`` (or ``distances_key``) among the dataset arrays / globals
    and the model ``model``; reports ``dii`` (the batch's DII: its epoch mean is the
    history's ``dii``) and ``dii_last_batch`` (b × the DII on the epoch's last of b batches,
    0 on the others: its epoch mean is the last batch's DII, DADApy's per-epoch value).
    """

    name: ClassVar[str] = "dii"
    consumes: ClassVar[frozenset[str]] = frozenset({"rows", "cols"})
    reports: ClassVar[frozenset[str]] = frozenset({"dii", "dii_last_batch"})
    #: a shard's rows are normalised by the whole batch's row count
    shard_fields: ClassVar[frozenset[str]] = frozenset({"rows_total"})
    model: str = "weights"
    input: str = "data_A"
    target: str = "data_B"
    distances_key: str | None = None
    distance_A: Any = block_field("distance", default="weighted_sqeuclidean",
                                  validator=check_feature_weighted)
    distance_B: Any = block_field("distance", default="weighted_sqeuclidean")
    softmax: Any = block_field("transform", default="gaussian_softmax")
    ranks: Any = block_field("transform", default="ranks")
    k_init: int = attrs.field(default=1, validator=positive_int)
    k_final: int = attrs.field(default=1, validator=positive_int)
    lambda_init: float | None = attrs.field(default=None, validator=optional(positive))
    lambda_final: float | None = attrs.field(default=None, validator=optional(positive))
    #: the loss's own state: the tables of the last static batch / of the current epoch
    _batch_tables: tuple | None = attrs.field(init=False, default=None, repr=False, eq=False)
    _epoch_tables: tuple | None = attrs.field(init=False, default=None, repr=False, eq=False)

    def required_globals(self):
        return frozenset({self.input, self.distances_key or self.target})

    def on_phase_start(self, state: TrainState) -> None:
        self._batch_tables = self._epoch_tables = None

    def current_k(self, state: TrainState) -> int:
        return int(round(cosine_schedule(self.k_init, self.k_final, state.step,
                                         state.total_steps)))

    def current_lambda(self, state: TrainState) -> float | None:
        if self.lambda_init is None:
            return None
        final = self.lambda_init if self.lambda_final is None else self.lambda_final
        return cosine_schedule(self.lambda_init, final, state.step, state.total_steps)

    # ------------------------------------------------------------------ tables

    def target_distances(self, rows: torch.Tensor, cols: torch.Tensor,
                         state: TrainState) -> torch.Tensor:
        """Distances in B of the (rows, cols) block: (r, c)."""
        if self.distances_key is not None:
            dist = state.lookup(self.distances_key)
            dist = dist.values if isinstance(dist, DenseRelations) else dist
            return dist[rows][:, cols]
        y = state.lookup(self.target, lazy=True)
        with torch.no_grad():
            y_rows = rows_of(y, rows)  # a mini-batch is its own columns: read once
            return self.distance_B.pairwise(y_rows, y_rows if cols is rows else rows_of(y, cols))

    def target_ranks(self, dist: torch.Tensor, excluded_logits: torch.Tensor) -> torch.Tensor:
        """``ranks`` of B's distances, excluded pairs at +inf; (r, c) or (batches, r, c)."""
        shape = dist.shape
        masked = (dist - excluded_logits).reshape(-1, shape[-1])
        return self.ranks(DenseRelations(masked)).values.reshape(shape)

    def tables(self, rows: torch.Tensor, cols: torch.Tensor, state: TrainState
               ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-batch constants: ``distance_A.prepare`` of the batch, ranks in B (r, c), the
        self mask (r, c) and its −inf logits.  Cached while the batch's index tensors stay
        the same objects."""
        cached = self._batch_tables
        if cached is not None and cached[0] is rows and cached[1] is cols:
            return cached[2]
        self._batch_tables = cached = None  # freed before the next batch's are built
        x = state.lookup(self.input, lazy=True)
        exclude = rows[:, None] == cols[None, :]
        excluded_logits = exclusion_logits(exclude)
        ranks = self.target_ranks(self.target_distances(rows, cols, state), excluded_logits)
        x_rows = rows_of(x, rows)
        prepared = self.distance_A.prepare(x_rows, x_rows if cols is rows else rows_of(x, cols),
                                           exclude)
        tables = (prepared, ranks, exclude, excluded_logits)
        self._batch_tables = (rows, cols, tables)
        return tables

    def epoch_tables(self, parts: torch.Tensor, state: TrainState) -> list[tuple]:
        """:meth:`tables` of every batch of an epoch of equal parts (batches, b), B ranked in
        one call.  Cached for the epoch."""
        cached = self._epoch_tables
        if cached is not None and cached[0] is parts:
            return cached[1]
        x = state.lookup(self.input, lazy=True)
        exclude = diagonal_mask(parts.shape[1], parts.shape[1], device=x.device)
        excluded_logits = exclusion_logits(exclude)
        if self.distances_key is None and is_feature_weighted(self.distance_B):
            y = state.lookup(self.target, lazy=True)
            dist = self.distance_B.pairwise_batches(rows_of(y, parts))
        else:
            dist = torch.stack([self.target_distances(p, p, state) for p in parts])
        ranks = self.target_ranks(dist, excluded_logits)
        prepared = self.distance_A.prepare_batches(rows_of(x, parts), exclude)
        tables = [(prepared[i], ranks[i], exclude, excluded_logits)
                  for i in range(parts.shape[0])]
        self._epoch_tables = (parts, tables)
        return tables

    # ------------------------------------------------------------------ the value

    def __call__(self, batch, models, state):
        rows, cols = batch["rows"], batch["cols"]
        self._check_k(cols.numel())
        # a shard of the batch (torch.distributed): normalised by the whole batch's rows and
        # scaled by the world size, so that the ranks' mean is the batch's DII (and the
        # engine's mean gradient the batch's gradient)
        sharded = "rows_total" in batch
        n_rows = int(batch["rows_total"]) if sharded else rows.numel()
        scale = state.dist.world_size if sharded else 1
        parts = batch.get("epoch_parts")
        if parts is not None and parts.numel() * parts.shape[1] * (
                state.lookup(self.input, lazy=True).shape[1] + 2) <= EPOCH_TABLE_ELEMENTS:
            table, ranks, exclude, excluded_logits = self.epoch_tables(parts, state)[batch["part"]]
        else:
            table, ranks, exclude, excluded_logits = self.tables(rows, cols, state)
        w = get_model(models, self.model).feature_weights()
        columns = state.lookup(self.input, lazy=True).shape[1]
        per_feature = getattr(self.distance_A, "per_feature_weights", True)
        if not isinstance(w, torch.Tensor) or (per_feature and tuple(w.shape) != (columns,)):
            # (a plugin's weights module: its length named, not a matmul error in the distance)
            got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ContractError(
                f"models.{self.model} ({type(get_model(models, self.model)).__name__}): "
                f"`feature_weights()` must return one weight per column of {self.input!r} "
                f"({columns},), got {got}"
                + ("." if not isinstance(w, torch.Tensor) else
                   f"; a learnt map (a matrix, a low-rank map) needs a distance_A that takes it "
                   f"(class variable `per_feature_weights = False`), which "
                   f"{getattr(self.distance_A, 'name', type(self.distance_A).__name__)!r} "
                   "does not declare."))
        dist = self.distance_A.combine(table, w)
        k, lam = self.current_k(state), self.current_lambda(state)
        if type(self.softmax) is GaussianSoftmax:  # the fused path (same numbers, fewer passes)
            softmax = self.softmax
            lam = lam if lam is not None else softmax.lambda_value
            lambdas = None
            if sharded and lam is None and not softmax.point_adaptive:
                lambdas = self.global_lambdas(dist, k, n_rows, state)
            # excluded entries hold SELF_DISTANCE: no mask needed (c = 0 there, never k-th)
            total = expected_ranks(dist, ranks, None, k=k, lambda_value=lam, lambdas=lambdas,
                                   lambda_factor=softmax.lambda_factor,
                                   point_adaptive=softmax.point_adaptive).sum()
        else:  # any block with the coefficients(...) protocol, e.g. from a plugin
            c = self.softmax.coefficients(dist, exclude, k=k, lambda_value=lam,
                                          excluded_logits=excluded_logits)
            total = torch.dot(c.reshape(-1), ranks.reshape(-1))
        value = 2.0 * scale / (n_rows * cols.numel()) * total
        dii = value.detach()
        per_epoch = max(state.total_steps // max(state.n_epochs, 1), 1)
        last = dii * per_epoch if state.step % per_epoch == per_epoch - 1 else torch.zeros_like(dii)
        return LossOutput(value, {"dii": dii, "dii_last_batch": last})

    def _check_k(self, points: int) -> None:
        """:func:`check_k_below_points` for this step's batch of ``points`` columns."""
        check_k_below_points(self.k_init, self.k_final, self.lambda_init, points,
                             "this step's batch has only")

    def global_lambdas(self, dist: torch.Tensor, k: int, n_rows: int, state: TrainState
                       ) -> torch.Tensor:
        """λ = factor × mean over *all* ranks' rows of the k-th neighbour's distance, (r,):
        the rows' sum is all-reduced differentiably, so that the gradient through λ reaches
        every rank's rows as in one process (``point_adaptive=False`` under sharding)."""
        index = neighbour_index(dist, None, k)
        raw = dist.gather(1, index).sum()
        mean = state.dist.differentiable_sum(raw) / n_rows
        return (self.softmax.lambda_factor * mean).expand(dist.shape[0])

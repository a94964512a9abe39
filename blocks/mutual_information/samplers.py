"""Negative samplers of the MI estimators: what one step of a bound sees.

Every sampler yields joint pairs ``x``, ``y`` (the rows of the dataset arrays ``x_key``,
``y_key`` at item indices ``index``) drawn from a pool — all items, or the global index tensor
``index_key`` (the recipes' ``train_index`` / ``test_index``), declared as a required global
and resolved once per phase in :meth:`setup`.  They differ in their negatives:

=================  ===================  =================================================
registry name      batch type           fields of every batch
=================  ===================  =================================================
``all_pairs``      ``joint_pairs``      ``index``, ``x``, ``y`` — negatives are the b(b−1)
                                        off-diagonal pairs of the batch (in-batch)
``marginal_pairs`` ``marginal_pairs``   + ``x_marginal``, ``y_marginal`` (n' pairs of the
                                        product of the marginals) and ``x_all``, ``y_all``
                                        (joint then negative rows, one critic call)
``reference``      ``reference_pairs``  + ``x_reference``, ``y_reference`` (i.i.d. draws
                                        from a known reference P_X' × P_Y'; MI-NEE)
=================  ===================  =================================================

A new negative sampler subclasses :class:`PairSampler` and overrides :meth:`generate`
(yield ``x_marginal`` / ``y_marginal`` for explicit negative pairs) and ``batch_type``.
"""

from __future__ import annotations

import contextvars
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import torch

from ..contracts import MARGINAL_PAIRS, BatchType
from ..errors import ContractError, ValidationError
from ..samplers import Sampler
from ..state import TrainState
from ..validators import positive, positive_int

#: joint pairs only: the negatives are the other pairs of the batch
JOINT_PAIRS = BatchType("joint_pairs", {"index", "x", "y"},
                        "joint pairs; negatives are the off-diagonal pairs of the batch")
#: joint pairs and i.i.d. draws from a reference distribution (MI-NEE)
REFERENCE_PAIRS = BatchType("reference_pairs",
                            {"index", "x", "y", "x_reference", "y_reference"},
                            "joint pairs and reference draws x' ~ P_X', y' ~ P_Y'")


def draw_positions(n: int, size: int, replacement: bool, generator: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    """``size`` positions in ``range(n)``: uniform with replacement, or slices of random
    permutations (each position once per permutation) without."""
    if replacement:
        return torch.randint(n, (size,), generator=generator, device=device)
    reps = -(-size // n)
    return torch.cat([torch.randperm(n, generator=generator, device=device)
                      for _ in range(reps)])[:size]


def gather_rows(state: TrainState, key: str, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (any shape) of dataset array ``key``, shaped ``index.shape + row``,
    through :meth:`Dataset.take`: a memory-mapped or torch-Dataset array (``LazyRows``) reads
    only these rows."""
    rows = state.dataset.take(index.reshape(-1), (key,))[key]
    return rows.to(state.device).view(*index.shape, *rows.shape[1:])


def _shard_rows(batch: dict[str, torch.Tensor], keys: tuple[str, ...], rank: int,
                world_size: int) -> dict[str, torch.Tensor]:
    return {k: batch[k][rank::world_size] for k in keys if k in batch}


#: the fields :meth:`PairSampler.shard` splits, rebuilds or adds
_PAIR_FIELDS = frozenset({"index", "x", "y", "x_marginal", "y_marginal", "x_reference",
                          "y_reference", "x_all", "y_all", "y_columns", "columns", "shard"})

#: inside the outermost ``shard`` a PairSampler subclass defines: ``{"reached": bool}``, set
#: True when that call reaches :meth:`PairSampler.shard` (through ``super().shard``)
_SUBCLASS_SHARD: contextvars.ContextVar[dict[str, bool] | None] = contextvars.ContextVar(
    "infoblocks_pair_shard", default=None)


def _checking_pair_fields(cls: type) -> Callable[..., Any]:
    """``cls``'s own ``shard`` (kept as ``cls._own_shard``, where attrs' slotted classes fix
    its ``super()``), followed, when it reached :meth:`PairSampler.shard`, by the check of the
    pair-sized fields it returns whole (author12: a subclass that added a per-pair ``weight``
    and delegated to ``super().shard`` kept it whole on every rank, unchecked).

    Why here and not in the engine after ``shard`` returns: the check holds for ``shard``
    called by anyone (a plugin's own test calls it directly, tests/blocks/
    test_shard_pair_fields.py), and from ``(batch, part)`` alone the engine cannot tell a
    ``shard`` that reached PairSampler.shard from one of its own, which is trusted."""

    def shard(self: PairSampler, batch: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        own = cls.__dict__["_own_shard"]
        if _SUBCLASS_SHARD.get() is not None:  # an outer subclass's shard checks the result
            return own(self, batch, *args, **kwargs)
        call = {"reached": False}
        token = _SUBCLASS_SHARD.set(call)
        try:
            out = own(self, batch, *args, **kwargs)
        finally:
            _SUBCLASS_SHARD.reset(token)
        if call["reached"] and isinstance(out, dict):
            self._refuse_unknown_pair_fields(batch, out)
        return out

    functools.update_wrapper(shard, cls.__dict__["_own_shard"])
    shard.checks_pair_fields = True  # type: ignore[attr-defined]
    return shard


@attrs.define
class PairSampler(Sampler):
    """Base of the MI samplers (not registered; a plugin's negative sampler derives from it):
    joint batches of ``batch_size`` items of the pool, yielded by :meth:`generate`; as it
    stands the negatives of a bound are all off-diagonal pairs of the batch (b(b − 1) critic
    evaluations: InfoNCE's negatives), and a subclass adds explicit ones.

    ``batch_size=None`` is the whole pool (one batch); ``batches_per_epoch`` (default: one
    pass, pool // batch_size); ``replacement`` draws uniformly, else slices of random
    permutations (each item at most once per slice); ``fixed=True`` draws the batches once from
    ``fixed_seed`` and yields the same ones every epoch (a stable validation set).

    **Fresh samples.** With ``simulator`` (a callable ``fn(generator, n) -> (x, y)``, arrays of
    n rows; transient: set by the recipes' ``fit(sampler=fn)``, not part of the data form) the
    pool of every epoch is a new draw of ``batches_per_epoch · batch_size`` pairs from it, made
    with the routine's generator; the dataset is then not read (no pair is ever seen twice).
    """

    batch_type: ClassVar[BatchType] = JOINT_PAIRS
    batch_size: int | None = attrs.field(default=100, validator=optional(positive_int))
    batches_per_epoch: int | None = attrs.field(default=None, validator=optional(positive_int))
    replacement: bool = False
    index_key: str | None = None
    x_key: str = "x"
    y_key: str = "y"
    fixed: bool = False
    fixed_seed: int = 0
    simulator: Any = attrs.field(default=None, repr=False, eq=False,
                                 metadata={"transient": True})
    _pool: torch.Tensor | None = attrs.field(init=False, default=None, repr=False, eq=False)
    _fresh: dict[str, torch.Tensor] | None = attrs.field(init=False, default=None, repr=False,
                                                         eq=False)
    _cache: list[dict[str, torch.Tensor]] | None = attrs.field(init=False, default=None,
                                                               repr=False, eq=False)
    #: (rank, world size) under torch.distributed, set in :meth:`setup`: a sampler that reads
    #: only its own shard's rows uses it (then :meth:`shard` has nothing left to split)
    _local: tuple[int, int] | None = attrs.field(init=False, default=None, repr=False,
                                                 eq=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's own ``shard`` is checked like the inherited one when it calls
        ``super().shard``: after it returns, a field sized like the pairs that it left whole
        is refused (:func:`_checking_pair_fields`); one that splits its fields passes."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("shard")
        if own is not None and not getattr(own, "checks_pair_fields", False):
            cls._own_shard = own
            cls.shard = _checking_pair_fields(cls)

    def required_globals(self) -> frozenset[str]:
        return frozenset({self.x_key, self.y_key, *([self.index_key] if self.index_key else [])})

    def shard(self, batch, rank, world_size):
        """torch.distributed: this rank's joint pairs ``rank::world_size``; the in-batch
        negatives stay those of the whole batch (``y_columns``: every y of the batch,
        ``columns``: the joint column of each kept row), so a bound sees the rows of the
        one-process batch and its reductions sum over the ranks (:class:`BatchScores`)."""
        b = batch["index"].shape[0]
        out = dict(batch)
        out.update(_shard_rows(batch, ("index", "x", "y"), rank, world_size))
        out["y_columns"] = batch["y"]
        out["columns"] = torch.arange(b, device=batch["index"].device)[rank::world_size]
        # the documented explicit negatives (MARGINAL_PAIRS, MI-NEE's reference draws) are
        # split alike, whichever sampler yields them
        out.update(_shard_rows(batch, ("x_marginal", "y_marginal", "x_reference",
                                       "y_reference"), rank, world_size))
        if "x_all" in batch and "x_marginal" in batch:
            out["x_all"] = torch.cat([out["x"], out["x_marginal"]])
        if "y_all" in batch and "y_marginal" in batch:
            out["y_all"] = torch.cat([out["y"], out["y_marginal"]])
        call = _SUBCLASS_SHARD.get()
        if call is not None:  # a subclass's shard: its result is checked when it returns
            call["reached"] = world_size > 1
        elif world_size > 1:
            self._refuse_unknown_pair_fields(batch, out)
        return out

    def _refuse_unknown_pair_fields(self, batch: dict[str, Any], out: dict[str, Any]) -> None:
        """A field of the whole ``batch`` that this shard does not know, sized like the
        batch's pairs and still whole in the shard ``out``, would stay whole on every rank
        beside the rank's part of x and y: the loss would pair the wrong rows.  (Checked on
        what the sampler's own ``shard`` returns when it calls ``super().shard``.)"""
        b = batch["index"].shape[0]
        sizes = {b, *(len(batch[k]) for k in ("x_marginal", "x_reference") if k in batch)}
        if "x_marginal" in batch:
            sizes.add(b + len(batch["x_marginal"]))
        unknown = sorted(k for k, v in batch.items()
                         if k not in _PAIR_FIELDS and isinstance(v, torch.Tensor)
                         and v.ndim >= 1 and v.shape[0] in sizes
                         and isinstance(out.get(k), torch.Tensor) and out[k].ndim >= 1
                         and out[k].shape[0] == v.shape[0])
        if not unknown:
            return
        fields = ', '.join(f'`{k}`' for k in unknown)
        own = type(self).shard is not PairSampler.shard
        fix = (f"Its own `shard` calls PairSampler.shard (super().shard) and returns {fields} "
               "whole: keep this rank's part of them too, e.g. "
               f"out[{unknown[0]!r}] = batch[{unknown[0]!r}][rank::world_size], as x and y"
               if own else "Override `shard(batch, rank, world_size)` to keep this rank's "
               "part of them too")
        raise ContractError(
            f"sampler {getattr(self, 'name', type(self).__name__)!r} yields {fields}, sized "
            "like the batch's pairs, which PairSampler.shard does not know how to split under "
            "torchrun (it splits index, x, y, x_marginal, y_marginal, x_reference, y_reference "
            f"and rebuilds x_all, y_all). {fix} (docs/plugins.md, 'The batches of the MI "
            "samplers').")

    def batch_fields(self, state: TrainState) -> frozenset[str]:
        return self.batch_type.fields

    # ------------------------------------------------------------------ the pool

    def pool(self, state: TrainState) -> torch.Tensor:
        """Item indices to draw from (resolved in :meth:`setup`)."""
        if self._pool is None:
            self._pool = self._resolve_pool(state)
        return self._pool

    def _resolve_pool(self, state: TrainState) -> torch.Tensor:
        if self.simulator is not None:
            return torch.arange(self._fresh_size(), device=state.device)
        if state.dataset is None:
            raise ValidationError(f"{type(self).__name__} needs a dataset with arrays "
                                  f"{self.x_key!r} and {self.y_key!r}.")
        if self.index_key is None:
            return torch.arange(state.dataset.n_items, device=state.device)
        return torch.as_tensor(state.lookup(self.index_key), device=state.device).long()

    def _fresh_size(self) -> int:
        if self.batch_size is None or self.batches_per_epoch is None:
            raise ValidationError(
                f"{type(self).__name__} with a `simulator` (fresh samples) needs `batch_size` and "
                f"`batches_per_epoch`, got {self.batch_size!r} and {self.batches_per_epoch!r}.")
        return self.batch_size * self.batches_per_epoch

    def draw_fresh(self, state: TrainState, generator: torch.Generator) -> None:
        """A new pool from :attr:`simulator`: ``batches_per_epoch · batch_size`` pairs drawn
        with ``generator``, checked (shapes, finite values), on the state's device."""
        n = self._fresh_size()
        out = self.simulator(generator, n)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValidationError(f"The fresh-sample `sampler` must return a pair (x, y) of "
                                  f"arrays with {n} rows, got {type(out).__name__}.")
        rows = {}
        for key, name, value in ((self.x_key, "x", out[0]), (self.y_key, "y", out[1])):
            t = torch.as_tensor(value, dtype=torch.float32, device=state.device)
            t = t.reshape(-1, 1) if t.ndim == 1 else t
            if t.ndim != 2 or len(t) != n or not bool(torch.isfinite(t).all()):
                raise ValidationError(
                    f"The fresh-sample `sampler` must return finite arrays of {n} rows (1-D: one "
                    f"feature); its {name} has shape {tuple(t.shape)}"
                    + ("" if t.ndim != 2 or len(t) != n else " and non-finite values") + ".")
            if state.dataset is not None and key in state.dataset and \
                    tuple(state.dataset[key].shape[1:]) != tuple(t.shape[1:]):
                raise ValidationError(
                    f"The fresh-sample `sampler`'s {name} has {t.shape[1]} column(s), the "
                    f"evaluation draw {tuple(state.dataset[key].shape[1:])}; return the same "
                    "shape for every n.")
            rows[key] = t
        self._fresh = rows

    def rows(self, state: TrainState, key: str, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` of array ``key``: of this epoch's fresh draw, else of the dataset."""
        if self.simulator is not None:
            return self._fresh[key][index]
        return gather_rows(state, key, index)

    def sizes(self, state: TrainState) -> tuple[torch.Tensor, int, int]:
        """``(pool, pool size n, batch size)``."""
        pool = self.pool(state)
        n = int(pool.numel())
        return pool, n, (n if self.batch_size is None else self.batch_size)

    # ------------------------------------------------------------------ the sampler protocol

    def setup(self, state):
        self._local = (state.dist.rank, state.dist.world_size) if state.dist.active else None
        self._pool = self._resolve_pool(state)
        pool, n, size = self.sizes(state)
        if n < 2:
            raise ValidationError(f"{type(self).__name__} needs at least 2 items to pair, the "
                                  f"pool has {n}.")
        self.prepare(state, pool, n)
        if size > n and not self.replacement:
            raise ValidationError(
                f"`batch_size` = {size} exceeds the {n} items available when sampling without "
                "replacement; lower batch_size or set replacement=True.")
        self._cache = None
        if self.fixed:
            generator = torch.Generator(device=state.device).manual_seed(self.fixed_seed)
            if self.simulator is not None:
                self.draw_fresh(state, generator)
            self._cache = list(self.generate(state, generator))

    def prepare(self, state: TrainState, pool: torch.Tensor, n: int) -> None:
        """Subclass checks and fitting before the first batch."""

    def num_batches(self, state):
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        _, n, size = self.sizes(state)
        return max(1, n // size)

    def batches(self, state):
        if self._cache is not None:
            yield from self._cache
            return
        if self.simulator is not None:
            self.draw_fresh(state, state.generator)
        yield from self.generate(state, state.generator)

    def joint_indices(self, state: TrainState, generator: torch.Generator) -> torch.Tensor:
        """``(num_batches, batch_size)`` item indices of the epoch's joint pairs."""
        pool, n, size = self.sizes(state)
        count = self.num_batches(state)
        positions = draw_positions(n, count * size, self.replacement, generator, state.device)
        return pool[positions].view(count, size)

    def generate(self, state: TrainState, generator: torch.Generator
                 ) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of one epoch, drawn with ``generator``."""
        joint = self.joint_indices(state, generator)
        x, y = self.rows(state, self.x_key, joint), self.rows(state, self.y_key, joint)
        for b in range(len(joint)):
            yield {"index": joint[b], "x": x[b], "y": y[b]}


@attrs.define
class InBatchSampler(PairSampler):
    """``all_pairs``: the joint batches of :class:`PairSampler` alone, the negatives in-batch
    (InfoNCE's default)."""

    name: ClassVar[str] = "all_pairs"

    def __attrs_post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 2:
            raise ValidationError(
                f"`batch_size` = {self.batch_size}: all_pairs takes a batch's negatives from its "
                "other rows (the b(b − 1) off-diagonal pairs), none in a batch of 1; use "
                "batch_size >= 2 (or the negatives 'marginal_pairs').")


@attrs.define
class MarginalSampler(PairSampler):
    """Joint batches plus product-of-marginals pairs drawn by resampling indices.

    Each batch: ``x``, ``y`` at joint indices I (b,) and ``x_marginal = x[J]``,
    ``y_marginal = y[K]`` (also side by side with the joint rows as ``x_all``, ``y_all``
    (b + n', d)) with n' = min(round(marginal_factor · b), max_marginal) index pairs (J, K),
    J ≠ K, so that (x_J, y_K) ~ P_X × P_Y.  Otherwise as :class:`PairSampler`.
    """

    name: ClassVar[str] = "marginal_pairs"
    batch_type: ClassVar[BatchType] = MARGINAL_PAIRS
    marginal_factor: float = attrs.field(default=1.0, validator=positive)
    max_marginal: int | None = attrs.field(default=None, validator=optional(positive_int))

    def batch_fields(self, state):
        return MARGINAL_PAIRS.fields | {"index", "x_all", "y_all"}

    def shard(self, batch, rank, world_size):
        """torch.distributed: joint pairs and product-of-marginals pairs ``rank::world_size``;
        a bound's reductions then sum over the ranks, so every rank sees the whole batch's
        value.  Under torch.distributed :meth:`generate` already drew every batch whole (the
        same generator draws on every rank) and read only this rank's rows — a memory-mapped
        input is read, and standardised, once per pair across the ranks — so nothing is left
        to split here; a batch made outside (whole) is split as the in-batch sampler does."""
        if self._local == (rank, world_size) and batch.get("shard") is not None:
            return batch
        return super().shard(batch, rank, world_size)

    def generate(self, state, generator):
        pool, n, size = self.sizes(state)
        count = self.num_batches(state)
        n_marg = max(1, round(self.marginal_factor * size))
        if self.max_marginal is not None:
            n_marg = min(n_marg, self.max_marginal)
        dev = state.device
        # one draw for the whole epoch, then slices: few kernel launches per step
        joint = draw_positions(n, count * size, self.replacement, generator, dev)
        joint = joint.view(count, size)
        first = draw_positions(n, count * n_marg, self.replacement, generator, dev)
        second = draw_positions(n, count * n_marg, self.replacement, generator, dev)
        # a coincident pair (J = K) is a joint sample: move K to a uniformly chosen other item
        offset = torch.randint(1, n, second.shape, generator=generator, device=dev)
        second = torch.where(second == first, (first + offset) % n, second)
        joint = pool[joint]
        marginal_x, marginal_y = pool[first].view(count, n_marg), pool[second].view(count, n_marg)
        extra = {}
        if self._local is not None:  # torch.distributed: read only this rank's pairs
            rank, world = self._local
            joint, marginal_x, marginal_y = (t[:, rank::world]
                                             for t in (joint, marginal_x, marginal_y))
            extra = {"shard": torch.tensor([rank, world], device=dev)}
        size = joint.shape[1]
        # gather the whole epoch at once, joint rows then marginal rows of each batch side by
        # side: a batch is a view, and ``x_all`` / ``y_all`` feed the critic in one call
        rows_x = torch.cat([joint, marginal_x], 1)
        rows_y = torch.cat([joint, marginal_y], 1)
        x_all, y_all = self.rows(state, self.x_key, rows_x), self.rows(state, self.y_key, rows_y)
        parts = [size, x_all.shape[1] - size]
        # the views of every batch from few calls (a step of a small critic is ~2 ms)
        for index, xb, yb in zip(joint.unbind(0), x_all.unbind(0), y_all.unbind(0)):
            x, x_marginal = xb.split_with_sizes(parts)  # no Tensor.split wrapper
            y, y_marginal = yb.split_with_sizes(parts)
            yield {"index": index, "x": x, "y": y, "x_marginal": x_marginal,
                   "y_marginal": y_marginal, "x_all": xb, "y_all": yb, **extra}


class ReferenceDistribution:
    """A known reference P_X' (fitted to data): ``"uniform"`` on the data's bounding box
    (enlarged by ``margin`` of its width on each side), ``"gaussian"`` with the data's mean and
    covariance, or a user callable ``fn(n, generator) -> (n, d)`` array (entropy unknown)."""

    def __init__(self, kind: str | Callable, data: torch.Tensor, margin: float = 0.0,
                 entropy: float | None = None) -> None:
        self.kind, self.dim = kind, data.shape[1]
        self._entropy = entropy
        if kind == "uniform":
            lo, hi = data.min(0).values, data.max(0).values
            width = (hi - lo).clamp_min(torch.finfo(data.dtype).eps)
            self.low, self.width = lo - margin * width, width * (1 + 2 * margin)
        elif kind == "gaussian":
            self.mean = data.mean(0)
            centred = data - self.mean
            cov = centred.T @ centred / max(len(data) - 1, 1)
            cov = cov + 1e-6 * torch.eye(self.dim, device=data.device, dtype=data.dtype)
            try:
                self.chol = torch.linalg.cholesky(cov.double()).to(data.dtype)
            except RuntimeError:
                raise ValidationError("The Gaussian reference needs a non-singular covariance; "
                                      "a column is (nearly) a linear combination of others. "
                                      "Drop it or use reference='uniform'.") from None
        elif not callable(kind):
            raise ValidationError(f"`reference` must be 'uniform', 'gaussian' or a callable "
                                  f"fn(n, generator) -> (n, d) array, got {kind!r}.")

    def sample(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """``(n, d)`` i.i.d. draws."""
        if self.kind == "uniform":
            u = torch.rand(n, self.dim, generator=generator, device=device)
            return self.low + u * self.width
        if self.kind == "gaussian":
            z = torch.randn(n, self.dim, generator=generator, device=device)
            return self.mean + z @ self.chol.T
        out = torch.as_tensor(self.kind(n, generator), dtype=torch.float32, device=device)
        if out.shape != (n, self.dim) or not bool(torch.isfinite(out).all()):
            raise ValidationError(
                f"The reference callable must return a finite ({n}, {self.dim}) array, got "
                f"shape {tuple(out.shape)}.")
        return out

    def entropy(self) -> float | None:
        """Differential entropy of the reference in nats (None when unknown)."""
        if self.kind == "uniform":
            return float(torch.log(self.width.double()).sum())
        if self.kind == "gaussian":
            logdet = 2 * torch.log(torch.diagonal(self.chol).double()).sum()
            return float(0.5 * (self.dim * math.log(2 * math.pi * math.e) + logdet))
        return self._entropy


@attrs.define
class ReferenceSampler(PairSampler):
    """Joint batches plus i.i.d. reference draws ``x_reference ~ P_X'``, ``y_reference ~ P_Y'``
    (independent, so that (x', y') ~ P_X' × P_Y'); no resampling of the data.

    ``reference`` is ``"uniform"`` (bounding box of the pool, widened by ``margin``),
    ``"gaussian"`` (mean and covariance of the pool, per variable) or a callable
    ``fn(n, generator) -> (x_ref, y_ref)``.  A batch holds b joint rows and
    min(round(reference_factor · b), max_reference) reference rows.  After :meth:`setup`,
    :attr:`reference_x` / :attr:`reference_y` are the fitted :class:`ReferenceDistribution` s
    (:meth:`fit_reference` fits them to other data first, e.g. to all items).
    """

    name: ClassVar[str] = "reference"
    batch_type: ClassVar[BatchType] = REFERENCE_PAIRS
    reference: Any = attrs.field(default="gaussian")
    reference_factor: float = attrs.field(default=1.0, validator=positive)
    max_reference: int | None = attrs.field(default=None, validator=optional(positive_int))
    margin: float = 0.0
    reference_x: ReferenceDistribution | None = attrs.field(init=False, default=None, repr=False,
                                                            eq=False)
    reference_y: ReferenceDistribution | None = attrs.field(init=False, default=None, repr=False,
                                                            eq=False)

    @reference.validator
    def _check_reference(self, attribute, value):
        if not (value in ("uniform", "gaussian") or callable(value)):
            raise ValidationError(f"`reference` must be 'uniform', 'gaussian' or a callable "
                                  f"fn(n, generator) -> (x_ref, y_ref), got {value!r}.")

    def prepare(self, state, pool, n):
        if self.reference_x is None:
            if self.simulator is not None:
                raise ValidationError("The reference sampler with fresh samples needs its "
                                      "reference fitted first (fit_reference); MINEE.fit does it.")
            self.fit_reference(gather_rows(state, self.x_key, pool),
                               gather_rows(state, self.y_key, pool))

    def shard(self, batch, rank, world_size):
        """torch.distributed: joint pairs and reference draws ``rank::world_size``."""
        return super().shard(batch, rank, world_size)

    def fit_reference(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Fit the reference distributions to ``x`` (n, d_x) and ``y`` (n, d_y)."""
        if callable(self.reference):
            fn = self.reference
            self.reference_x = ReferenceDistribution(lambda n, g: fn(n, g)[0], x)
            self.reference_y = ReferenceDistribution(lambda n, g: fn(n, g)[1], y)
            self.reference_x.dim, self.reference_y.dim = x.shape[1], y.shape[1]
        else:
            self.reference_x = ReferenceDistribution(self.reference, x, self.margin)
            self.reference_y = ReferenceDistribution(self.reference, y, self.margin)

    def reference_entropies(self) -> tuple[float | None, float | None]:
        """The differential entropies (nats) of the fitted P_X' and P_Y' (None: unknown, e.g.
        for a callable reference)."""
        return self.reference_x.entropy(), self.reference_y.entropy()

    def draw(self, n: int, generator: torch.Generator, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` reference pairs ``(x', y')``, each ``(n, d)``."""
        if callable(self.reference):
            try:
                xr, yr = self.reference(n, generator)
            except TypeError as exc:  # e.g. written in fit(sampler=fn)'s order, fn(generator, n)
                raise ValidationError(
                    f"The reference callable (MINEE's `reference_fn`) is called as fn(n, "
                    f"generator) -> (x_ref, y_ref), here fn({n}, <torch.Generator>), and raised "
                    f"TypeError: {exc}. (fit(sampler=fn) takes the other order, fn(generator, "
                    "n).)") from exc
            xr = torch.as_tensor(xr, dtype=torch.float32, device=device)
            yr = torch.as_tensor(yr, dtype=torch.float32, device=device)
            dx, dy = self.reference_x.dim, self.reference_y.dim
            if xr.shape != (n, dx) or yr.shape != (n, dy) or not (
                    bool(torch.isfinite(xr).all()) and bool(torch.isfinite(yr).all())):
                raise ValidationError(
                    f"The reference callable must return finite arrays of shapes ({n}, {dx}) and "
                    f"({n}, {dy}); got {tuple(xr.shape)} and {tuple(yr.shape)}.")
            return xr, yr
        return (self.reference_x.sample(n, generator, device),
                self.reference_y.sample(n, generator, device))

    def generate(self, state, generator):
        pool, n, size = self.sizes(state)
        count = self.num_batches(state)
        n_ref = max(1, round(self.reference_factor * size))
        if self.max_reference is not None:
            n_ref = min(n_ref, self.max_reference)
        joint = self.joint_indices(state, generator)
        xr, yr = self.draw(count * n_ref, generator, state.device)
        x, y = self.rows(state, self.x_key, joint), self.rows(state, self.y_key, joint)
        for b in range(count):
            part = slice(b * n_ref, (b + 1) * n_ref)
            yield {"index": joint[b], "x": x[b], "y": y[b],
                   "x_reference": xr[part], "y_reference": yr[part]}


__all__ = ["PairSampler", "InBatchSampler", "MarginalSampler", "ReferenceSampler",
           "ReferenceDistribution", "JOINT_PAIRS", "REFERENCE_PAIRS", "draw_positions",
           "gather_rows"]

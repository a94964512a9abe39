"""Samplers decide what one training step sees: ``batches(state)`` yields dicts of tensors.

A sampler draws with ``state.generator`` (seeded by the routine) so that the same seed gives
the same batches; it creates index tensors directly on ``state.device``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import attrs
from attrs.validators import optional
import torch

from .base import Block, not_implemented
from .contracts import ITEMS, SIMULATIONS, BatchType
from .errors import ValidationError
from .state import TrainState
from .validators import positive_int


class Sampler(Block):
    """Base of samplers: :meth:`num_batches` and :meth:`batches` for one epoch.

    Contract: ``batch_type`` names what every batch holds (see
    :mod:`infoblocks.blocks.contracts`); :meth:`batch_fields` lists the keys of the batches
    this configured sampler yields on ``state`` (``None``: undeclared, not checked) and
    :meth:`required_globals` the globals it reads.  Both are checked against the phase's loss
    before the first step.
    """

    kind: ClassVar[str] = "sampler"
    #: the type of batch this sampler yields (None: undeclared)
    batch_type: ClassVar[BatchType | None] = None

    def setup(self, state: TrainState) -> None:
        """Called once when a phase starts: validate against the data, precompute tables."""

    def batch_fields(self, state: TrainState) -> frozenset[str] | None:
        """The keys of every batch (``batch_type.fields`` unless a sampler adds more)."""
        return None if self.batch_type is None else self.batch_type.fields

    def required_globals(self) -> frozenset[str]:
        """Names of the globals (or dataset arrays) this sampler reads."""
        return frozenset()

    def draws_own_data(self) -> bool:
        """Whether this sampler makes its batches without the routine's dataset (simulations
        or pairs it draws itself): a ``routine`` whose samplers all do trains with no arrays
        (``fit()``, ``infoblocks run`` without ``--data``).  By default a simulation sampler
        (``batch_type`` SIMULATIONS) without ``with_source`` — how IMNN's self-drawing samplers
        say it — and no other; override it to return True for another kind of own draws."""
        return self.batch_type is SIMULATIONS and not hasattr(self, "with_source")

    def shard(self, batch: dict[str, torch.Tensor], rank: int, world_size: int
              ) -> dict[str, torch.Tensor]:
        """This rank's part of a batch that every rank drew alike (torch.distributed).  A
        sampler that cannot be split says so; override to make it shardable."""
        raise ValidationError(
            f"Sampler {self.name!r} cannot be sharded across {world_size} processes: it has no "
            "shard(batch, rank, world_size). Implement it (each rank's part of a batch every "
            "rank drew alike; docs/plugins.md, 'Testing a plugin'), or run in one process.")

    def num_batches(self, state: TrainState) -> int:
        raise not_implemented(self, "num_batches")

    def batches(self, state: TrainState) -> Iterator[dict[str, torch.Tensor]]:
        raise not_implemented(self, "batches")


@attrs.define
class ItemSampler(Sampler):
    """Batches of item indices plus the rows of the dataset arrays at those indices.

    Yields :data:`~infoblocks.blocks.contracts.ITEMS` batches: ``index`` plus the dataset
    arrays named in ``keys`` (all when None) and the per-item globals named in ``gather``
    (e.g. ``gather=["positions"]``: ``batch["positions"] = positions[index]``), so a loss
    never looks a global up at step time.

    ``batch_size=None`` is the full data set.  Without replacement an epoch covers every item
    once (the last batch may be short unless ``drop_last``); ``batches_per_epoch`` caps or, with
    replacement, fixes the number of batches.  ``index_key`` names a global index tensor
    (e.g. a training split) to sample from instead of all items.
    """

    name: ClassVar[str] = "items"
    batch_type: ClassVar[BatchType] = ITEMS
    batch_size: int | None = attrs.field(default=None, validator=optional(positive_int))
    shuffle: bool = True
    replacement: bool = False
    batches_per_epoch: int | None = attrs.field(default=None, validator=optional(positive_int))
    drop_last: bool = False
    keys: tuple[str, ...] | None = attrs.field(default=None,
                                              converter=lambda k: None if k is None else tuple(k))
    index_key: str | None = None
    #: per-item globals gathered into each batch at ``index``
    gather: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def shard(self, batch, rank, world_size):
        """Items ``rank::world_size`` and their rows (equal shards when the batch size is a
        multiple of the world size)."""
        n = batch["index"].shape[0]
        return {k: v[rank::world_size] if isinstance(v, torch.Tensor) and v.ndim and
                v.shape[0] == n else v for k, v in batch.items()}

    def batch_fields(self, state):
        data = set()
        if state.dataset is not None:
            data = set(state.dataset) if self.keys is None else set(self.keys)
        return frozenset({"index", *data, *self.gather})

    def required_globals(self):
        return frozenset({*self.gather, *([self.index_key] if self.index_key else [])})

    def _pool(self, state: TrainState) -> torch.Tensor | None:
        if self.index_key is None:
            return None
        return torch.as_tensor(state.lookup(self.index_key), device=state.device).long()

    def _n(self, state: TrainState) -> int:
        pool = self._pool(state)
        if pool is not None:
            return int(pool.numel())
        if state.dataset is None:
            raise ValidationError("ItemSampler needs a dataset; the routine was given none.")
        return state.dataset.n_items

    def setup(self, state):
        n = self._n(state)
        for key in self.gather:
            value = state.lookup(key)
            if not isinstance(value, torch.Tensor) or value.ndim == 0 or \
                    (state.dataset is not None and value.shape[0] != state.dataset.n_items):
                raise ValidationError(
                    f"ItemSampler gathers {key!r} per item, but it is not a tensor with one row "
                    f"per item (got {type(value).__name__} "
                    f"{tuple(getattr(value, 'shape', ()))}).")
        if self.batch_size is not None and self.batch_size > n and not self.replacement:
            raise ValidationError(
                f"`batch_size` = {self.batch_size} exceeds the {n} items available when sampling "
                "without replacement; lower batch_size or set replacement=True."
            )

    def _size(self, n: int) -> int:
        return n if self.batch_size is None else min(self.batch_size, n) if not self.replacement \
            else self.batch_size

    def num_batches(self, state):
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        n = self._n(state)
        size = self._size(n)
        return n // size if self.drop_last else -(-n // size)

    def batches(self, state):
        n = self._n(state)
        size = self._size(n)
        pool = self._pool(state)
        count = self.num_batches(state)
        dev = state.device
        if self.replacement:
            order = torch.randint(n, (count * size,), generator=state.generator, device=dev)
        else:
            reps = -(-(count * size) // n)  # enough permutations for the requested batches
            if self.shuffle:
                order = torch.cat([torch.randperm(n, generator=state.generator, device=dev)
                                   for _ in range(reps)])
            else:
                order = torch.arange(n, device=dev).repeat(reps)
            if self.batches_per_epoch is None:
                order = order[:n]
        for b in range(count):
            idx = order[b * size:(b + 1) * size]
            if idx.numel() == 0 or (self.drop_last and idx.numel() < size):
                return
            items = idx if pool is None else pool[idx]
            batch = {"index": items}
            if state.dataset is not None:
                batch.update(state.dataset.take(items, self.keys))
            for key in self.gather:
                batch[key] = state.globals[key][items]
            yield batch


__all__ = ["Sampler", "ItemSampler"]

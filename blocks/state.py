"""What a training step can see: the models, the data, the global relations, the RNG."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch

from .data import Dataset, LazyRows
from .distributed import Distributed


@attrs.define(eq=False)
class TrainState:
    """Mutable state of a running routine, handed to samplers, losses and callbacks.

    ``globals`` holds what was computed once before training (global relations, initial
    positions, index splits).  There is no shared scratch memory: a block that keeps state
    (MINE's moving average, a loss's cached tables) owns it and resets it in its
    ``on_phase_start``.

    What a plugin block may use (the rest is the engine's): :meth:`lookup` (a global or a
    dataset array by name, a tensor), ``dataset.take(index, keys)`` (rows ``index`` of the
    named dataset arrays as tensors: the way a sampler reads rows, only those rows are read
    from disk), ``dataset.n_items``, ``globals`` (read only), ``generator`` (a
    ``torch.Generator`` on ``device``: every random draw, so that one seed gives the same
    batches), ``rng`` (its numpy twin), ``device``, ``phase``, ``epoch``, ``n_epochs``,
    ``step``, ``total_steps``, ``models`` (read in a loss) and ``dist`` (rank, world size
    and reductions under torchrun).
    """

    models: torch.nn.ModuleDict
    dataset: Dataset | None
    globals: dict[str, Any]
    device: torch.device
    generator: torch.Generator
    rng: np.random.Generator
    phase: str = ""
    epoch: int = 0
    #: epochs of this phase run before (warm start): history numbers epochs from here
    epoch_offset: int = 0
    n_epochs: int = 0
    #: optimizer steps of the running phase (epochs × batches per epoch), for schedules
    total_steps: int = 0
    step: int = 0
    stop: bool = False
    #: rank and world size under torch.distributed (one process: rank 0 of 1)
    dist: Distributed = attrs.field(factory=Distributed)
    #: the registered block name each model was built from (None: a torch module given
    #: as it is), for errors that name a model
    model_blocks: dict[str, str | None] = attrs.field(factory=dict)
    #: the blocks that compute each global relation (its relation, then its transforms), for
    #: errors about a global's value that name the block that made it
    global_blocks: dict[str, list[Any]] = attrs.field(factory=dict)
    #: arrays on disk that :meth:`lookup` read whole (once) for a block that wants a tensor
    _whole: dict[str, torch.Tensor] = attrs.field(init=False, factory=dict, repr=False)

    def lookup(self, key: str, lazy: bool = False) -> Any:
        """A global value by name, else a dataset array by name (clear error otherwise).

        An array held on disk (:class:`~infoblocks.blocks.data.LazyRows`: a memory-mapped
        ``--data`` file, a torch Dataset) is read whole into a tensor, once, unless ``lazy``:
        a block that reads rows on disk itself (``take``, ``chunks``) passes ``lazy=True``.
        To read only some rows use ``dataset.take(index, keys)``."""
        if key in self.globals:
            value = self.globals[key]
        elif self.dataset is not None and key in self.dataset:
            value = self.dataset[key]
        else:
            from .errors import ValidationError

            have = sorted(self.globals) + (sorted(self.dataset) if self.dataset is not None
                                           else [])
            hint = "" if self.dataset is not None else (
                " This routine holds no data (a loaded routine keeps the weights and the "
                "blocks, not the rows): give it the data, Routine.load(path, dataset={...}), "
                "or compute the value from the data in your own code.")
            raise ValidationError(
                f"No global relation or dataset array named {key!r}; available: {have}.{hint}"
            )
        if lazy or not isinstance(value, LazyRows):
            return value
        if key not in self._whole:
            self._whole[key] = value.take(slice(None))
        return self._whole[key]


__all__ = ["TrainState"]

"""What a training step can see: the models, the data, the global relations, the RNG."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch

from .data import Dataset
from .distributed import Distributed


@attrs.define(eq=False)
class TrainState:
    """Mutable state of a running routine, handed to samplers, losses and callbacks.

    ``globals`` holds what was computed once before training (global relations, initial
    positions, index splits).  There is no shared scratch memory: a block that keeps state
    (MINE's moving average, a loss's cached tables) owns it and resets it in its
    ``on_phase_start``.
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

    def lookup(self, key: str) -> Any:
        """A global value by name, else a dataset array by name (clear error otherwise)."""
        if key in self.globals:
            return self.globals[key]
        if self.dataset is not None and key in self.dataset:
            return self.dataset[key]
        from .errors import ValidationError

        have = sorted(self.globals) + (sorted(self.dataset) if self.dataset is not None else [])
        raise ValidationError(
            f"No global relation or dataset array named {key!r}; available: {have}."
        )


__all__ = ["TrainState"]

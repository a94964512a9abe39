"""Example plugin blocks for the IMNN recipe: a summary network as a model block.

``MomentSummaries`` (model ``"example_moment_summaries"``) is used by name in the built-in
``imnn`` recipe from TOML — ``[models.main] name = "example_moment_summaries"`` — with no
subclass: the recipe fills ``in_dim`` (values per simulation) and ``out_dim``
(``n_summaries``) into the block's fields, the Fisher loss differentiates through it with
forward-mode AD, and its ``on_phase_start`` declares the same whitened start as the built-in
network (from the ``fiducial_sample`` global the recipe provides).  Class-level counters show
that it really ran.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import nn

from infoblocks.blocks.fisher import FIDUCIAL_SAMPLE, whiten_output_layer
from infoblocks.blocks.models import Model


class MomentNetwork(nn.Module):
    """Fixed moment features ``f = [mean d, mean d², …, mean d^k]`` of each flattened
    simulation, one hidden SiLU layer ``h(f)``, and a linear output on ``[h(f), f]`` (the
    features also pass straight through; the ``h`` part of the output starts at zero):
    ``(n, *S) -> (n, out_dim)``."""

    def __init__(self, moments: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.moments = moments
        self.hidden = nn.Sequential(nn.Linear(moments, hidden), nn.SiLU())
        self.out = nn.Linear(hidden + moments, out_dim)
        with torch.no_grad():  # start from linear summaries of the moments; the MLP adds on
            self.out.weight[:, :hidden].zero_()
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        MomentSummaries.forwards += 1
        x = x.flatten(1)
        features = torch.stack([x.pow(k).mean(-1) for k in range(1, self.moments + 1)], -1)
        return self.out(torch.cat([self.hidden(features), features], -1))

    def on_phase_start(self, state) -> None:
        """Declared data-dependent start: whitened summaries on the fiducial sample, once."""
        sample = state.globals.get(FIDUCIAL_SAMPLE)
        if sample is not None and not bool(self.whitened):
            whiten_output_layer(self, sample, last=self.out)
            self.whitened.fill_(True)


@attrs.define
class MomentSummaries(Model):
    """IMNN summary network block: moment features of order 1..``moments``, one hidden
    layer of width ``hidden`` and a linear output (:class:`MomentNetwork`).  ``builds`` /
    ``forwards`` count its use."""

    name: ClassVar[str] = "example_moment_summaries"
    builds: ClassVar[int] = 0
    forwards: ClassVar[int] = 0
    in_dim: int
    out_dim: int
    moments: int = 2
    hidden: int = 32

    def build(self) -> MomentNetwork:
        MomentSummaries.builds += 1
        return MomentNetwork(self.moments, self.hidden, self.out_dim)


#: hook name without ``register_`` -> block classes
BLOCKS: dict[str, list[type]] = {"models": [MomentSummaries]}

"""Example plugin blocks for the UMAP / t-SNE recipes, each used by name from TOML.

- :class:`GaussianMembership` (transform ``gaussian_membership``): an *affinity* that replaces
  UMAP's ``connectivity_rescale`` in ``[globals.graph] transforms``: a self-tuning Gaussian
  p_{j|i} = exp(−d_ij² / (σ_i σ_j)) with σ_i = ``bandwidth`` × the mean distance of i to its
  neighbours (Zelnik-Manor & Perona, 2004).
- :class:`ResidualMLP` (model ``residual_mlp``): an *encoder* for ``[models.main]``: a
  linear stem, ``blocks`` residual blocks x + W₂ σ(W₁ x), a linear head.  The recipe fills
  ``in_dim`` / ``out_dim`` from the data and ``n_components``.
- :class:`NeighborMeanPlacement` (placement ``neighbor_mean``): how ``transform`` puts new
  points among the training positions, for ``[evaluation] placement``: each new point at the
  inverse-distance weighted mean of the positions of its k nearest training rows (no
  optimisation; openTSNE's "weighted" initialisation of new points).

- :class:`EdgeInfoNCE` (loss ``edge_infonce``): a *loss* over UMAP's sampled edges, each edge
  against its r negatives as an InfoNCE classification (docs/plugins.md, "Add a loss to
  UMAP"); ``model`` / ``input`` say what it embeds, so it can train the layout (``"layout"``,
  ``"items"``) or the network (``"main"``, ``"data"``).

All count their calls in a class attribute (``calls``) so a test can prove that they ran.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import nn

from infoblocks.blocks.embedding.placement import Placement
from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.blocks.models import ACTIVATIONS, Model
from infoblocks.blocks.relations import SparseRelations
from infoblocks.blocks.transforms import Transform


@attrs.define
class GaussianMembership(Transform):
    """Self-tuning Gaussian affinity of a sparse k-NN distance relation (same pattern out).

    p_{j|i} = exp(−d_ij² / (σ_i σ_j)), σ_i = ``bandwidth`` × mean_j d_ij over i's entries.
    """

    name: ClassVar[str] = "gaussian_membership"
    accepts: ClassVar[tuple[type, ...]] = (SparseRelations,)
    #: how many times :meth:`apply` ran (a test's proof that the block was used)
    calls: ClassVar[int] = 0
    bandwidth: float = attrs.field(default=1.0)

    @bandwidth.validator
    def _positive(self, attribute, value):
        if not value > 0:
            raise ValueError(f"`bandwidth` must be positive, got {value!r}.")

    def apply(self, relations):
        GaussianMembership.calls += 1
        n = relations.shape[0]
        d = relations.values.double()
        sums = torch.zeros(n, dtype=d.dtype).index_add_(0, relations.rows, d)
        counts = torch.bincount(relations.rows, minlength=n).clamp_min(1)
        sigma = (self.bandwidth * sums / counts).clamp_min(1e-12)
        p = torch.exp(-d ** 2 / (sigma[relations.rows] * sigma[relations.cols]))
        return attrs.evolve(relations, values=p.float())


class _ResidualNet(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, width: int, blocks: int,
                 activation: str) -> None:
        super().__init__()
        self.stem = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(ACTIVATIONS[activation](), nn.Linear(width, width),
                          ACTIVATIONS[activation](), nn.Linear(width, width))
            for _ in range(blocks))
        self.head = nn.Sequential(ACTIVATIONS[activation](), nn.Linear(width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ResidualMLP.calls += 1
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


@attrs.define
class ResidualMLP(Model):
    """``(n, in_dim) -> (n, out_dim)``: stem, ``blocks`` residual blocks of ``width``, head."""

    name: ClassVar[str] = "residual_mlp"
    #: forward passes of every network built from this block
    calls: ClassVar[int] = 0
    in_dim: int = attrs.field()
    out_dim: int = attrs.field()
    width: int = 64
    blocks: int = 2
    activation: str = attrs.field(default="relu")

    @activation.validator
    def _known(self, attribute, value):
        if value not in ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got {value!r}.")

    def build(self) -> nn.Module:
        return _ResidualNet(self.in_dim, self.out_dim, self.width, self.blocks, self.activation)


@attrs.define(kw_only=True)
class NeighborMeanPlacement(Placement):
    """New point i at Σ_j w_ij Y_j / Σ_j w_ij over its k nearest training rows j, with
    w_ij = 1 / (d_ij + ``eps``); the network's f(x') is not used."""

    name: ClassVar[str] = "neighbor_mean"
    #: how many times :meth:`place` ran
    calls: ClassVar[int] = 0
    eps: float = attrs.field(default=1e-6)

    def place(self, start, neighbours, distances, positions, context):
        NeighborMeanPlacement.calls += 1
        w = 1.0 / (distances + self.eps)
        return (w[:, :, None] * positions[neighbours]).sum(1) / w.sum(1, keepdim=True)


@attrs.define(kw_only=True)
class EdgeInfoNCE(Loss):
    """Each sampled edge's logit −‖y_s − y_t‖² / τ against those of its r negatives."""

    name: ClassVar[str] = "edge_infonce"
    reports: ClassVar[frozenset[str]] = frozenset({"accuracy"})
    #: how many times the loss ran
    calls: ClassVar[int] = 0
    temperature: float = 1.0
    model: str = "main"       # what it embeds: "layout" (free coordinates) or "main" (network)
    input: str = "data"       # its batch key: "items" for the layout, "data" for the network

    def required_fields(self):
        return frozenset({self.input, "pos_source", "pos_target", "neg_source", "neg_target"})

    def __call__(self, batch, models, state):
        EdgeInfoNCE.calls += 1
        y = models[self.model](batch[self.input])       # one row per entry of batch["items"]

        def logits(a, b):
            return -(y[a] - y[b]).pow(2).sum(-1) / self.temperature

        pos = logits(batch["pos_source"], batch["pos_target"])                       # (B,)
        neg = logits(batch["neg_source"], batch["neg_target"]).view(-1, pos.numel())  # (r, B)
        scores = torch.cat([pos[None], neg]).T                                        # (B, 1 + r)
        target = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
        value = torch.nn.functional.cross_entropy(scores, target)
        accuracy = (scores.argmax(1) == 0).float().mean()
        return LossOutput(value, {"accuracy": accuracy.detach()})


#: hook name without ``register_`` -> block classes
BLOCKS: dict[str, list[type]] = {"transforms": [GaussianMembership], "models": [ResidualMLP],
                                 "placements": [NeighborMeanPlacement], "losses": [EdgeInfoNCE]}

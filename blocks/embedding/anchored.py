"""The network against a fixed layout: umap-learn's ``transform`` objective as a training loss."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch
import torch.nn.functional as F

from ..errors import ValidationError
from ..losses import LossOutput, get_model
from ..relations import RelationData
from ..state import TrainState
from ..validators import non_negative, one_of, positive_int
from .affinities import RowMatrix
from .placement import memberships
from .training import RelationLoss, anchored_terms


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


@attrs.define
class AnchoredRelationLoss(RelationLoss):
    """UMAP's fuzzy cross-entropy of the network's points against a fixed layout.

    For a sampled edge (i, j) only y_i = f(x_i) moves; its partner is the FIXED position
    Y_j of ``anchor_model`` (e.g. the free coordinates of the ``layout`` phase), and so are
    the negatives Y_k:
    L = (1/B) [Σ_pos softplus(−z(‖f(x_i) − Y_j‖²)) + γ Σ_neg softplus(z(‖f(x_i) − Y_k‖²))],
    z = the kernel's logit.  This is the objective umap-learn minimises to place a new point
    among the layout positions of its neighbours (``UMAP.transform``), here learned by the
    network for every training point at once — a point is asked to sit among its neighbours'
    places, not on its own place (:class:`~infoblocks.blocks.losses.PositionLoss`).

    Contract: batches of :class:`NegativeEdgeSampler` (``items`` and the four pair fields);
    embeds only the ``B`` sources through ``model`` (cached front-end outputs when the model
    has a fixed front end, else ``batch[input]``); reads ``anchor_model`` (detached) at
    ``items``; reports ``attraction`` and ``repulsion``.  (Fields shared with
    :class:`RelationLoss`: ``kernel``, ``repulsion_strength``, ``cache_front_end``; its
    ``anchor_strength`` is not used here.)  Measured alone on MNIST-5k it placed new points
    better than a regression onto the layout but lost in-sample quality; the recipe's default
    adds it to UMAP's loss instead (``relation`` with ``anchor_model``; docs/umap.md).
    """

    name: ClassVar[str] = "anchored_relation"
    #: the model whose outputs at the batch's items are the fixed partners (``index -> Y``)
    anchor_model: str = "layout"
    #: w: each source is also attracted to its own anchor, w softplus(−z(‖f(x_i) − Y_i‖²))
    #: per edge (the point as its own neighbour of membership w); 0: neighbours only
    self_weight: float = attrs.field(default=0.0, validator=non_negative)

    def required_fields(self):
        fields = {"items", "pos_source", "pos_target", "neg_source", "neg_target"}
        return frozenset(fields if self.cache_front_end else {*fields, self.input})

    def required_models(self):
        return frozenset({self.model, self.anchor_model})

    def _embed_sources(self, batch, model, sources):
        if self._cache is not None:
            return model.network(self._cache.index_select(0, batch["items"].index_select(
                0, sources)))
        return model(batch[self.input].index_select(0, sources))

    def __call__(self, batch, models, state):
        model = get_model(models, self.model)
        items = batch["items"]
        # every negative's source is an edge's source: embed the B source rows once
        sources = batch["pos_source"]
        y = self._embed_sources(batch, model, sources)  # (B, d), row e = edge e's source
        with torch.no_grad():
            anchors = get_model(models, self.anchor_model)(items)  # (m, d), fixed
        size = sources.numel()
        slot = torch.empty(items.numel(), dtype=torch.long, device=items.device)
        slot[sources] = torch.arange(size, device=items.device)  # item position -> row of y
        source_row = slot.index_select(0, batch["neg_source"])
        attraction, repulsion = anchored_terms(self.kernel, y, y.index_select(0, source_row),
                                               anchors, batch)
        attraction, repulsion = attraction / size, repulsion / size
        if self.self_weight:
            z_self = self.kernel.logit(
                (y - anchors.index_select(0, sources)).pow(2).sum(-1))
            attraction = attraction + self.self_weight * F.softplus(-z_self).sum() / size
        value = attraction + self.repulsion_strength * repulsion
        return LossOutput(value, {"attraction": attraction.detach(),
                                  "repulsion": repulsion.detach()})


@attrs.define
class KNNPlacementLoss(RelationLoss):
    """Distil umap-learn's placement of a new point: f(x') regressed onto the membership-weighted
    mean of the layout positions of x''s nearest training points.

    x' = x_i + t (x_j − x_i) for a sampled edge (i, j) and t = ``pos_mix`` of the sampler
    (``interpolation`` > 0; t = 0 without it): points between graph neighbours, so that the
    network learns the k-NN placement on the data manifold, not only at the training points.
    The ``n_neighbors`` nearest of x' are searched among the candidates {i, j} ∪ N(i) ∪ N(j)
    (N = the ``max_candidates`` strongest graph neighbours; Euclidean distances of the
    front-end outputs, or of ``input`` without a front end), their memberships
    w_m = exp(−max(0, d_m − ρ)/σ) are calibrated as UMAP's (Σ w = log2 k), and
    L = mean ‖f(x') − Σ_m w_m Y_m / Σ_m w_m‖², Y = ``anchor_model``'s fixed positions.

    Contract: batches of :class:`NegativeEdgeSampler` (its negatives are used by
    ``objective="cross_entropy"`` only); reads the global ``relation`` (the graph: candidates)
    and ``anchor_model`` (detached); reports ``placement``.  Screened on MNIST-5k, not a
    default: the held-out figures stayed at those of ``anchored_relation`` (docs/umap.md).
    """

    name: ClassVar[str] = "knn_placement"
    reports: ClassVar[frozenset[str]] = frozenset({"placement"})
    anchor_model: str = "layout"
    relation: str = "graph"
    n_neighbors: int = attrs.field(default=15, validator=positive_int)
    #: graph neighbours per endpoint considered as candidates (the strongest memberships)
    max_candidates: int = attrs.field(default=30, validator=positive_int)
    #: "regression": ‖f(x') − Σ w Y / Σ w‖²; "cross_entropy": the transform objective at x',
    #: (1/B) Σ [Σ_m w̄_m softplus(−z(‖f(x') − Y_m‖²)) + γ Σ_neg softplus(z(‖f(x') − Y_k‖²))]
    #: with w̄ = w / Σ w and the sampler's negatives Y_k
    objective: str = attrs.field(default="regression",
                                 validator=one_of("regression", "cross_entropy"))
    #: of the memberships' calibration (UMAP's: the nearest candidate gets membership 1)
    local_connectivity: float = attrs.field(default=1.0, validator=non_negative)
    _neighbours: Any = attrs.field(init=False, default=None, repr=False, eq=False)
    _features: Any = attrs.field(init=False, default=None, repr=False, eq=False)

    def required_fields(self):
        return frozenset({"items", "pos_source", "pos_target", "neg_source", "neg_target"})

    def required_models(self):
        return frozenset({self.model, self.anchor_model})

    def required_globals(self):
        return frozenset({self.relation})

    def on_phase_start(self, state: TrainState) -> None:
        super().on_phase_start(state)
        graph = state.lookup(self.relation)
        _check(isinstance(graph, RelationData),
               f"KNNPlacementLoss: global {self.relation!r} is a {type(graph).__name__}, not a "
               "relation; point `relation` at the k-NN graph (e.g. 'graph').")
        rows = RowMatrix.from_sparse(graph.to_sparse())
        weights = torch.where(rows.cols >= 0, rows.values, torch.full_like(rows.values, -1.0))
        width = min(self.max_candidates, weights.shape[1])
        strongest = weights.topk(width, dim=1).indices
        cols = rows.cols.gather(1, strongest)
        own = torch.arange(cols.shape[0], device=cols.device)[:, None].expand_as(cols)
        self._neighbours = torch.where(cols >= 0, cols, own).to(state.device)  # pad: itself
        if self._cache is not None:
            self._features = self._cache
        else:
            data = state.dataset[self.input] if state.dataset is not None else None
            _check(isinstance(data, torch.Tensor),
                   "KNNPlacementLoss searches neighbours among the training rows: it needs the "
                   "model's cached front end or an in-memory dataset array "
                   f"{self.input!r}.")
            self._features = data.to(state.device)

    def _neighbourhoods(self, batch, models):
        """(x' (B, w), chosen anchors (B, k, d), normalised memberships (B, k))."""
        items = batch["items"]
        source = items.index_select(0, batch["pos_source"])
        target = items.index_select(0, batch["pos_target"])
        feats = self._features
        xs, xt = feats.index_select(0, source), feats.index_select(0, target)
        mix = batch.get("pos_mix")
        x = xs if mix is None else xs + mix.to(xs.dtype)[:, None] * (xt - xs)  # (B, w)
        nbr = self._neighbours
        cand = torch.cat([source[:, None], nbr.index_select(0, source),
                          target[:, None], nbr.index_select(0, target)], 1)  # (B, C)
        cand, _ = cand.sort(1)
        repeated = torch.zeros_like(cand, dtype=torch.bool)
        repeated[:, 1:] = cand[:, 1:] == cand[:, :-1]
        with torch.no_grad():
            d = (feats.index_select(0, cand.reshape(-1)).view(*cand.shape, -1)
                 - x[:, None, :]).double().pow(2).sum(-1).sqrt()
            d = d.masked_fill(repeated, math.inf)
            d, nearest = d.topk(min(self.n_neighbors, cand.shape[1]), dim=1, largest=False)
            chosen = cand.gather(1, nearest)
            w = memberships(d, self.local_connectivity)  # repeated candidates (inf): 0
            anchors = get_model(models, self.anchor_model)(chosen.reshape(-1)).view(
                *chosen.shape, -1)
        return x, anchors, w

    def placement(self, batch, models) -> tuple[torch.Tensor, torch.Tensor]:
        """The network inputs x' ``(B, w)`` of a batch and their k-NN placements
        Σ w_m Y_m / Σ w_m ``(B, d)`` (the regression targets)."""
        x, anchors, w = self._neighbourhoods(batch, models)
        return x, (w[:, :, None] * anchors).sum(1)

    def __call__(self, batch, models, state):
        model, items = get_model(models, self.model), batch["items"]
        x, anchors, w = self._neighbourhoods(batch, models)
        y = model.network(x) if self._cache is not None else model(x)
        if self.objective == "regression":
            value = (y - (w[:, :, None] * anchors).sum(1)).pow(2).sum(-1).mean()
            return LossOutput(value, {"placement": value.detach()})
        size = y.shape[0]
        z_pos = self.kernel.logit((y[:, None, :] - anchors).pow(2).sum(-1))  # (B, k)
        slot = torch.empty(items.numel(), dtype=torch.long, device=items.device)
        slot[batch["pos_source"]] = torch.arange(size, device=items.device)
        with torch.no_grad():
            negatives = get_model(models, self.anchor_model)(
                items.index_select(0, batch["neg_target"]))
        z_neg = self.kernel.logit((y.index_select(0, slot.index_select(0, batch["neg_source"]))
                                   - negatives).pow(2).sum(-1))
        value = ((w * F.softplus(-z_pos)).sum() + self.repulsion_strength
                 * F.softplus(z_neg).sum()) / size
        return LossOutput(value, {"placement": value.detach()})


__all__ = ["AnchoredRelationLoss", "KNNPlacementLoss"]

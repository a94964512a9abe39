"""The training side of the embeddings: the edge sampler and the losses."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import numpy as np
from attrs.validators import optional
import torch
import torch.nn.functional as F

from ..base import block_field
from ..contracts import BatchType
from ..errors import ContractError, ValidationError
from ..losses import Loss, LossOutput, get_model
from ..relations import RelationData
from ..samplers import Sampler
from ..state import TrainState
from ..validators import fraction, non_negative, positive, positive_int
from .kernels import check_kernel
from .tsne_loss import (batch_edges, batch_rows, check_joint_probabilities, row_index,
                        student_t_kl)
from .umap_loss import edge_cross_entropy, log_form, table_edge_cross_entropy

#: batches of :class:`NegativeEdgeSampler`: ``items`` (long, the item indices embedded once per
#: step) and four long tensors of *positions in* ``items``: ``pos_source`` / ``pos_target``
#: (the B sampled edges) and ``neg_source`` / ``neg_target`` (B × rate negative pairs); plus
#: the dataset arrays at ``items`` (``data`` ...) and the per-item globals it gathers
ITEM_EDGES = BatchType("item_edges", {"items", "pos_source", "pos_target", "neg_source",
                                      "neg_target"},
                       "edges of a graph and negative pairs, as positions in the embedded items",
                       positions=[(k, "items") for k in ("pos_source", "pos_target",
                                                         "neg_source", "neg_target")])


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


# ----------------------------------------------------------------------------- sampler


def _flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """The indices where the 1-D ``mask`` is true (``mask.nonzero()``, ascending); on CPU by
    numpy, 7x faster than torch's at a layout's 100,000 edges."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.nonzero().squeeze(1)


@attrs.define
class NegativeEdgeSampler(Sampler):
    """Edges of a global graph drawn ∝ weight, plus ``neg_sampling_rate`` negatives each.

    A batch embeds ``items`` (source block, target block[, uniform negatives]) once and says
    which rows form pairs: ``pos_source``/``pos_target`` (positions in ``items``, the sampled
    edges) and ``neg_source``/``neg_target`` (each positive's source paired with random items).
    ``negatives="batch"`` draws the negative partners among the batch's own items (no extra
    forward pass; items of the batch are drawn ∝ degree), ``"uniform"`` draws them uniformly
    from all items.  The cumulative weight table is built once in :meth:`setup`; an epoch's
    draws are one ``searchsorted``.

    Contract: yields :data:`ITEM_EDGES` batches — ``items`` (m,) item indices with m = 2B
    (``"batch"``) or 2B + B·rate (``"uniform"``); ``pos_source``, ``pos_target`` (B,) and
    ``neg_source``, ``neg_target`` (B·rate,), positions into ``items``; the dataset arrays named
    in ``keys`` (all when None, none for ``keys = []``) at ``items``, e.g. ``data`` (m, d); and
    the per-item globals named in ``gather`` at ``items`` (e.g. ``positions`` (m, 2)).  Reads
    the global ``relation``.
    """

    name: ClassVar[str] = "negative_edges"
    batch_type: ClassVar[BatchType] = ITEM_EDGES
    relation: str = "graph"
    batch_size: int = attrs.field(default=512, validator=positive_int)
    neg_sampling_rate: int = attrs.field(default=5, validator=positive_int)
    batches_per_epoch: int | None = attrs.field(default=None, validator=optional(positive_int))
    negatives: str = attrs.field(default="batch")
    keys: tuple[str, ...] | None = attrs.field(
        default=None, converter=lambda k: None if k is None else tuple(k))
    #: per-item globals gathered into each batch at ``items``
    gather: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: > 0: each edge's source is moved toward its target by a fraction drawn uniformly from
    #: [0, interpolation] (batch field ``pos_mix``; the loss interpolates the network inputs):
    #: points between neighbours, so the network learns the map between the training points
    interpolation: float = attrs.field(default=0.0)
    #: "fixed": ``batch_size`` edges per batch; "edges": at most that, and per epoch no more
    #: draws than the graph has undirected edges (half its stored entries), spread evenly over
    #: the epoch's batches — a small graph then takes smaller steps, not more passes
    epoch_draws: str = attrs.field(default="fixed")
    #: > 0: an epoch of a small graph has fewer batches instead — at most as many as its
    #: undirected edges (half its stored entries) fill with this many draws each, so a fit on
    #: a few hundred items takes fewer steps, not smaller ones or more passes over its graph
    #: (iris: the recipe's 6,500 steps -> 1,350, the same quality); None: ``batches_per_epoch``
    min_batch_size: int | None = attrs.field(default=None, validator=optional(positive_int))
    _table: Any = attrs.field(init=False, default=None, repr=False)
    #: (draws per epoch, the edges drawn ⌊total p_e⌋ times, the remainders total p_e − ⌊·⌋):
    #: the part of :meth:`_draw_edges`' schedule that is the same every epoch
    _schedule: Any = attrs.field(init=False, default=None, repr=False)

    @epoch_draws.validator
    def _check_epoch_draws(self, attribute, value):
        _check(value in ("fixed", "edges"),
               f"`epoch_draws` must be 'fixed' or 'edges', got {value!r}.")

    @interpolation.validator
    def _check_interpolation(self, attribute, value):
        _check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1,
               f"`interpolation` must be a fraction in [0, 1], got {value!r}.")

    def batch_fields(self, state):
        data = set()
        if state.dataset is not None:
            data = set(state.dataset) if self.keys is None else set(self.keys)
        mix = {"pos_mix"} if self.interpolation > 0 else set()
        return frozenset({*ITEM_EDGES.fields, *data, *self.gather, *mix})

    def required_globals(self):
        return frozenset({self.relation, *self.gather})

    @negatives.validator
    def _check_negatives(self, attribute, value):
        _check(value in ("batch", "uniform"),
               f"`negatives` must be 'batch' or 'uniform', got {value!r}.")

    def setup(self, state: TrainState) -> None:
        graph = state.lookup(self.relation)
        _check(isinstance(graph, RelationData),
               f"NegativeEdgeSampler: global {self.relation!r} is a {type(graph).__name__}, not "
               "a relation; point `relation` at the graph (e.g. 'graph').")
        edges = graph.to_edges()
        keep = edges.values > 0
        _check(bool(keep.any()), f"NegativeEdgeSampler: the graph {self.relation!r} has no "
                                 "positive-weight edges to sample.")
        cumulative = torch.cumsum(edges.values[keep].double(), 0)
        self._schedule = None
        self._table = (edges.source[keep].to(state.device), edges.target[keep].to(state.device),
                       (cumulative / cumulative[-1]).to(state.device), graph.shape[0])
        for key in self.gather:
            value = state.lookup(key)
            _check(isinstance(value, torch.Tensor) and value.ndim > 0
                   and value.shape[0] == graph.shape[0],
                   f"NegativeEdgeSampler gathers {key!r} per item, but it is not a tensor with "
                   f"one row per item of the graph (got {type(value).__name__} "
                   f"{tuple(getattr(value, 'shape', ()))}).")

    def shard(self, batch, rank, world_size):
        """Edges ``rank::world_size`` of a batch every rank drew alike, with their negatives
        (negative j belongs to edge j mod B) and only the items those pairs use, positions
        renumbered.  The union over the ranks is the one-process batch and, with equal shards
        (``batch_size`` a multiple of ``world_size``), the mean of the ranks' losses — each a
        sum over its pairs divided by its number of edges — is the one-process loss."""
        size = batch["pos_source"].shape[0]
        m = batch["items"].shape[0]
        dev = batch["items"].device
        edges = torch.arange(rank, size, world_size, device=dev)
        rate = batch["neg_source"].shape[0] // max(size, 1)
        negatives = (edges[None, :] + size * torch.arange(rate, device=dev)[:, None]).reshape(-1)
        pairs = {k: batch[k].index_select(0, edges) for k in ("pos_source", "pos_target")}
        pairs.update({k: batch[k].index_select(0, negatives) for k in ("neg_source", "neg_target")})
        per_edge = {"pos_mix": batch["pos_mix"].index_select(0, edges)} if "pos_mix" in batch \
            else {}
        used = torch.zeros(m, dtype=torch.bool, device=dev)
        for value in pairs.values():
            used[value] = True
        keep = used.nonzero().squeeze(1)  # ascending: this rank's items in the batch's order
        renumber = torch.full((m,), -1, dtype=torch.long, device=dev)
        renumber[keep] = torch.arange(keep.numel(), device=dev)
        out = {k: v.index_select(0, keep) if isinstance(v, torch.Tensor) and v.ndim and
               v.shape[0] == m and k not in pairs and k not in per_edge else v
               for k, v in batch.items()}
        out.update({k: renumber[v] for k, v in pairs.items()})
        out.update(per_edge)
        # the ranks' items overlap (an item of this rank's edges may be another's negative):
        # each batch item is owned by the lowest rank that uses it, so that a whole-batch
        # statistic over items sums over owned rows (one process: every item counts)
        owner = torch.full((m,), world_size, dtype=torch.long, device=dev)
        pos_rank = torch.arange(size, device=dev) % world_size
        neg_rank = pos_rank.repeat(rate)
        for key, ranks in (("pos_source", pos_rank), ("pos_target", pos_rank),
                           ("neg_source", neg_rank), ("neg_target", neg_rank)):
            owner.scatter_reduce_(0, batch[key], ranks, reduce="amin")
        out["owned"] = owner.index_select(0, keep) == rank
        return out

    def num_batches(self, state):
        if self.batches_per_epoch is not None and self.min_batch_size is None:
            return self.batches_per_epoch
        if self._table is None:
            self.setup(state)
        if self.batches_per_epoch is None:
            return max(1, -(-self._table[0].numel() // self.batch_size))  # about one pass
        undirected = -(-self._table[0].numel() // 2)
        return max(1, min(self.batches_per_epoch, -(-undirected // self.min_batch_size)))

    def _draw_edges(self, total: int, state: TrainState) -> torch.Tensor:
        """``total`` edge indices drawn ∝ weight, in random order.  Where an epoch draws at
        least 1/8 as many edges as the graph has (the layout phase), each edge e is drawn
        ⌊total p_e⌋ times plus once more with probability of the remainder (umap-learn's
        per-epoch edge schedule, randomised: every edge's expected count, less variance, one
        O(E) pass instead of ``total`` binary searches, 2.5x faster at 40,960 draws of 120,000
        edges); fewer draws: independent draws by binary search of the cumulative weights."""
        _source, _target, cumulative, _n = self._table
        dev, edges = state.device, cumulative.numel()
        if total * 8 >= edges:
            if self._schedule is None or self._schedule[0] != total:  # once per phase
                expected = torch.diff(cumulative, prepend=cumulative.new_zeros(1)) * total
                whole = expected.floor()
                self._schedule = (total, torch.repeat_interleave(
                    torch.arange(edges, device=dev), whole.long()), expected - whole)
            _total, fixed, remainder = self._schedule
            extra = torch.rand(edges, generator=state.generator, device=dev,
                               dtype=torch.float64) < remainder
            picked = torch.cat([fixed, _flat_nonzero(extra)])
            short = total - picked.numel()
            if short > 0:  # the rounding drew fewer: the rest independently
                more = torch.rand(short, generator=state.generator, device=dev,
                                  dtype=torch.float64)
                picked = torch.cat([picked, torch.searchsorted(cumulative, more)
                                    .clamp_max(edges - 1)])
            order = torch.randperm(picked.numel(), generator=state.generator, device=dev)
            return picked.index_select(0, order[:total])
        draws = torch.rand(total, generator=state.generator, device=dev, dtype=torch.float64)
        return torch.searchsorted(cumulative, draws).clamp_max(edges - 1)

    def batches(self, state):
        if self._table is None:
            self.setup(state)
        source, target, cumulative, n = self._table
        count, size, rate, dev = self.num_batches(state), self.batch_size, self.neg_sampling_rate, \
            state.device
        if self.epoch_draws == "edges":  # ⌈E / 2⌉ draws per epoch at most
            size = min(size, max(1, -(-cumulative.numel() // (2 * count))))
        edges = self._draw_edges(count * size, state)
        src, tgt = source.index_select(0, edges), target.index_select(0, edges)
        positions = torch.arange(size, device=dev)
        targets, neg_source = positions + size, positions.repeat(rate)
        # int32 draws: the same numbers as int64's from the same generator, a third faster
        if self.negatives == "batch":
            partners = torch.randint(2 * size, (count, size * rate), generator=state.generator,
                                     device=dev, dtype=torch.int32).long()
            parts = [src.view(count, size), tgt.view(count, size)]
        else:
            extra = torch.randint(n, (count, size * rate), generator=state.generator, device=dev,
                                  dtype=torch.int32).long()
            partners = (2 * size + torch.arange(size * rate, device=dev)).expand(count, -1)
            parts = [src.view(count, size), tgt.view(count, size), extra]
        every_items = torch.cat(parts, dim=1)  # row b: batch b's items
        mix = None if self.interpolation == 0 else self.interpolation * torch.rand(
            count, size, generator=state.generator, device=dev)
        for b in range(count):
            items = every_items[b]
            batch = {"items": items, "pos_source": positions, "pos_target": targets,
                     "neg_source": neg_source, "neg_target": partners[b]}
            if mix is not None:
                batch["pos_mix"] = mix[b]
            if state.dataset is not None:
                batch.update(state.dataset.take(items, self.keys))
            for key in self.gather:
                batch[key] = state.globals[key].index_select(0, items)
            yield batch


# ----------------------------------------------------------------------------- losses


def _kernel_has(kernel: Any, method: str, loss: str) -> None:
    _check(callable(getattr(kernel, method, None)),
           f"The {loss!r} loss calls `kernel.{method}(sq_dist)`; {type(kernel).__name__} has no "
           "such method. Use an embedding kernel (a subclass of "
           "infoblocks.blocks.embedding.EmbeddingKernel, e.g. 'modified_cauchy', 'student_t').")


def _pair_sq(y: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # index_select: its backward is an index_add, ~2x faster on CPU than y[a]'s index_put
    return (y.index_select(0, a) - y.index_select(0, b)).pow(2).sum(-1)


#: largest cache of front-end outputs (n × width float32) a RelationLoss keeps per phase
FRONT_END_CACHE_BYTES = 1 << 30


def front_end_of(model: torch.nn.Module) -> torch.nn.Module | None:
    """The fixed front end of a model that declares one (``front_end`` and ``network``
    attributes, e.g. :class:`~infoblocks.blocks.embedding.StandardizedMLP`'s), else None."""
    front = getattr(model, "front_end", None)
    if front is None or getattr(model, "network", None) is None:
        return None
    if any(p.requires_grad for p in front.parameters()):
        return None  # a trained front end cannot be cached
    return front


@torch.no_grad()
def _front_end_outputs(front: torch.nn.Module, data: Any) -> torch.Tensor | None:
    """``front(data)`` for every item ``(n, width)``, in chunks (rows on disk are read once),
    or None where it would exceed :data:`FRONT_END_CACHE_BYTES`."""
    n = data.shape[0]
    first = front(data[:1] if isinstance(data, torch.Tensor) else data.take([0]))
    if n * first.shape[1] * first.element_size() > FRONT_END_CACHE_BYTES:
        return None
    if isinstance(data, torch.Tensor):
        return front(data)
    return torch.cat([front(chunk) for chunk in data.chunks()])


def _interpolated(inputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``inputs`` with each edge's source row moved toward its target's by ``pos_mix`` (when
    the sampler interpolates; the front end is affine, so mixing its outputs mixes the data)."""
    mix = batch.get("pos_mix")
    if mix is None or not inputs.is_floating_point():
        return inputs
    source, target = batch["pos_source"], batch["pos_target"]
    start = inputs.index_select(0, source)
    moved = start + mix.to(inputs.dtype)[:, None] * (inputs.index_select(0, target) - start)
    return inputs.index_copy(0, source, moved)


@attrs.define
class RelationLoss(Loss):
    """UMAP's fuzzy-set cross-entropy on sampled edges (batches of :class:`NegativeEdgeSampler`).

    With q = kernel(‖y_i − y_j‖²) and logit z = log q − log(1 − q):
    L = (1/B) [Σ_pos −log q + γ Σ_neg −log(1 − q)] = (1/B) [Σ_pos softplus(−z) + γ Σ_neg softplus(z)]
    (positives are drawn ∝ p_ij, so their target is 1; negatives have target 0), γ =
    ``repulsion_strength``.  The softplus form never takes the log of a rounded 0 or 1.

    Contract: consumes ``batch[input]`` (the model's input at the batch's items: ``data``, or
    ``items`` for free coordinates) and the four pair fields of :data:`ITEM_EDGES`; uses the
    model ``model``; calls ``kernel.logit`` (see
    :class:`~infoblocks.blocks.embedding.EmbeddingKernel`); reports ``attraction`` and
    ``repulsion``.

    ``cache_front_end``: when the model has a fixed front end (:func:`front_end_of`, e.g. the
    standardisation and PCA projection of ``standardized_mlp``) and ``input`` is a dataset
    array, the front end's outputs for all items are computed once per phase and a step embeds
    ``network(cached[items])`` — the model's function without projecting every batch again;
    ``batch[input]`` is then not read (a sampler with ``keys = []`` need not gather it).
    """

    name: ClassVar[str] = "relation"
    reports: ClassVar[frozenset[str]] = frozenset({"attraction", "repulsion", "anchoring"})
    model: str = "main"
    input: str = "data"
    kernel: Any = block_field("transform", default="modified_cauchy",
                              validator=lambda s, a, v: _kernel_has(v, "logit", "relation"))
    repulsion_strength: float = attrs.field(default=1.0, validator=non_negative)
    #: fraction of the phase's optimizer steps over which the repulsion rises linearly from 0
    #: to ``repulsion_strength`` (then held); 0: full repulsion from the first step.  A layout
    #: started from a compact spectral init and pushed apart at full strength at once tears a
    #: manifold into strands (the swiss roll); a warm-up lets the attraction settle it first
    repulsion_warmup: float = attrs.field(default=0.0, validator=fraction)
    cache_front_end: bool = True
    #: a model of fixed positions (e.g. the ``layout`` phase's free coordinates): the loss adds
    #: ``anchor_strength`` × the same cross-entropy of each edge's source y_i against the FIXED
    #: positions Y_j of its partner and Y_k of its negatives (umap-learn's ``transform``
    #: objective; :class:`~infoblocks.blocks.embedding.anchored.AnchoredRelationLoss`),
    #: reported as ``anchoring``.  None: UMAP's loss alone
    anchor_model: str | None = None
    anchor_strength: float = attrs.field(default=0.25, validator=non_negative)
    #: with a kernel that states its ``logit_log_form`` (UMAP's, t-SNE's Cauchy): the edge and
    #: negative terms and their gradient in closed form, one autograd node
    #: (:mod:`.umap_loss`); the same value and gradient to float rounding, faster steps.  A
    #: model with a ``lookup_table()`` (free coordinates) and ``input = "items"`` is then
    #: indexed pair by pair in its table, without embedding the batch's items first
    fused: bool = True
    _cache: Any = attrs.field(init=False, default=None, repr=False, eq=False)
    #: the model's ``lookup_table()`` was checked against its forward in this phase
    _table_checked: bool = attrs.field(init=False, default=False, repr=False, eq=False)

    def _gamma(self, state: TrainState) -> float:
        """``repulsion_strength``, times the warm-up's ramp at this step of the phase."""
        if self.repulsion_warmup <= 0 or state.total_steps <= 0:
            return self.repulsion_strength
        ramp = state.step / (self.repulsion_warmup * state.total_steps)
        return self.repulsion_strength * min(1.0, ramp)

    def required_fields(self):
        pairs = {"pos_source", "pos_target", "neg_source", "neg_target"}
        fields = {*pairs, "items"} if self.cache_front_end else {*pairs, self.input}
        return frozenset(fields | ({"items"} if self.anchor_model else set()))

    def required_models(self):
        return frozenset({self.model} | ({self.anchor_model} if self.anchor_model else set()))

    def caches_inputs(self, model: torch.nn.Module, state: TrainState) -> bool:
        """Whether this loss embeds cached front-end outputs of ``model`` on ``state``."""
        return (self.cache_front_end and front_end_of(model) is not None
                and state.dataset is not None and self.input in state.dataset)

    def on_phase_start(self, state: TrainState) -> None:
        check_kernel(self.kernel)
        self._cache, self._table_checked = None, False
        model = state.models[self.model] if self.model in state.models else None
        if model is not None and self.caches_inputs(model, state):
            self._cache = _front_end_outputs(front_end_of(model), state.dataset[self.input])

    def _embed(self, batch, model):
        if self._cache is not None:
            return model.network(_interpolated(self._cache.index_select(0, batch["items"]), batch))
        if self.input not in batch:
            raise ValidationError(
                f"RelationLoss embeds batch[{self.input!r}], which the sampler did not gather "
                "(no front-end cache for this model); let the sampler gather it (keys = None) "
                "or set cache_front_end = false.")
        return model(_interpolated(batch[self.input], batch))

    def _lookup_table(self, model: torch.nn.Module, batch) -> torch.Tensor | None:
        """The model's lookup table (free coordinates' ``lookup_table()``) where this loss may
        index its pairs there directly: input ``items``, no anchoring, no interpolation."""
        if self.input != "items" or self.anchor_model is not None or "pos_mix" in batch:
            return None
        lookup = getattr(model, "lookup_table", None)
        table = lookup() if callable(lookup) else None
        if table is not None and not self._table_checked:
            self._check_table(model, table, batch["items"])
            self._table_checked = True
        return table

    def _check_table(self, model: torch.nn.Module, table: Any, items: torch.Tensor) -> None:
        """On a phase's first batch: ``lookup_table()`` is a tensor whose rows at the batch's
        first items are what the model's forward returns there, and it carries the gradient
        to the model's trainable parameters (a detached copy or a buffer would train nothing)."""
        label = f"models.{self.model} ({type(model).__name__})"
        fix = ("lookup_table() must return the tensor T with model(index) == "
               "T.index_select(0, index) (a Parameter, or a tensor computed from the "
               "model's parameters), or None to be embedded through forward "
               "(docs/plugins.md, the contracts table)")
        if not isinstance(table, torch.Tensor) or table.ndim != 2:
            raise ContractError(
                f"The relation loss indexes {label}'s lookup_table(), which returned "
                f"{type(table).__name__} {tuple(getattr(table, 'shape', ()))}, not a 2-D "
                f"tensor: {fix}.")
        sample = items[:8]
        with torch.no_grad():
            expected = model(sample)
            try:
                got = table.index_select(0, sample)
            except (IndexError, RuntimeError):
                got = None
        if got is None or got.shape != expected.shape or not torch.allclose(
                got, expected.to(got.dtype), rtol=1e-6, atol=1e-6):
            raise ContractError(
                f"The relation loss indexes {label}'s lookup_table() (shape "
                f"{tuple(table.shape)}), but its rows at the batch's items are not what the "
                f"model's forward returns there (shape {tuple(expected.shape)}): {fix}.")
        if torch.is_grad_enabled() and not table.requires_grad and any(
                p.requires_grad for p in model.parameters()):
            raise ContractError(
                f"The relation loss indexes {label}'s lookup_table(), a tensor that does not "
                "require grad (a detached copy or a buffer) while the model has trainable "
                f"parameters: the phase would train nothing. {fix}.")

    def __call__(self, batch, models, state):
        model = get_model(models, self.model)
        form = log_form(self.kernel) if self.fused else None
        table = None if form is None else self._lookup_table(model, batch)
        gamma = self._gamma(state)
        if table is not None:  # free coordinates: y = table[items] is never formed
            value, attraction, repulsion, grad = table_edge_cross_entropy(
                table, batch, *form, gamma)
            # a table computed from the parameters (not a leaf): its gradient flows on
            # through ``value.backward()``; a leaf's the engine may assign directly
            return LossOutput(value, {"attraction": attraction.detach(),
                                      "repulsion": repulsion.detach()},
                              gradients=[(table, grad)] if grad is not None and table.is_leaf
                              else None)
        y = self._embed(batch, model)
        if form is not None:
            value, attraction, repulsion = edge_cross_entropy(y, batch, *form, gamma)
        else:
            z_pos = self.kernel.logit(_pair_sq(y, batch["pos_source"], batch["pos_target"]))
            z_neg = self.kernel.logit(_pair_sq(y, batch["neg_source"], batch["neg_target"]))
            size = z_pos.numel()
            attraction = F.softplus(-z_pos).sum() / size
            repulsion = F.softplus(z_neg).sum() / size
            value = attraction + gamma * repulsion
        metrics = {"attraction": attraction.detach(), "repulsion": repulsion.detach()}
        if self.anchor_model is not None:
            anchoring = self._anchoring(y, batch, models)
            value = value + self.anchor_strength * anchoring
            metrics["anchoring"] = anchoring.detach()
        return LossOutput(value, metrics)

    def _anchoring(self, y, batch, models):
        """The cross-entropy of the sources y_i against the fixed positions of their partners."""
        with torch.no_grad():
            fixed = get_model(models, self.anchor_model)(batch["items"])
        attraction, repulsion = anchored_terms(
            self.kernel, y.index_select(0, batch["pos_source"]),
            y.index_select(0, batch["neg_source"]), fixed, batch)
        return (attraction + self.repulsion_strength * repulsion) / batch["pos_source"].numel()


def anchored_terms(kernel: Any, sources: torch.Tensor, negative_sources: torch.Tensor,
                   fixed: torch.Tensor, batch: dict[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """umap-learn's ``transform`` objective of a :class:`NegativeEdgeSampler` batch, summed:
    Σ_e softplus(−z(‖s_e − Y_{pos_target e}‖²)) and Σ_k softplus(z(‖s'_k − Y_{neg_target k}‖²))
    with ``sources`` (B, d) the embedded sources of the edges, ``negative_sources`` those of
    the negatives, ``fixed`` the FIXED positions of the batch's items and z the kernel's
    logit (shared by ``relation``'s anchoring and ``anchored_relation``)."""
    z_pos = kernel.logit((sources - fixed.index_select(0, batch["pos_target"])).pow(2).sum(-1))
    z_neg = kernel.logit((negative_sources - fixed.index_select(0, batch["neg_target"]))
                         .pow(2).sum(-1))
    return F.softplus(-z_pos).sum(), F.softplus(z_neg).sum()


def _whole_batch(index: torch.Tensor, y: torch.Tensor, state: TrainState
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch every rank drew, from this rank's shard ``rank::world_size`` (an item
    sampler's): its indices ``(B,)`` and embedding ``(B, d)``, the latter through a
    differentiable sum over the ranks.  The KL of the whole batch is then the same on every
    rank, and the engine's gradient average over the ranks is its one-process gradient (see
    :meth:`~infoblocks.blocks.distributed.Distributed.differentiable_sum`)."""
    dist = state.dist
    size = int(dist.sum(torch.tensor([index.numel()], device=index.device))[0])
    slots = torch.arange(dist.rank, size, dist.world_size, device=index.device)
    whole = dist.sum(torch.zeros(size, dtype=torch.long, device=index.device)
                     .index_copy(0, slots, index.long()))
    y = dist.differentiable_sum(y.new_zeros(size, y.shape[1]).index_copy(0, slots, y))
    return whole, y


@attrs.define
class KLLoss(Loss):
    """t-SNE's KL(P‖Q) on a batch of items (from an item sampler with ``index``).

    P is the global joint-probability relation ``relation`` restricted to the batch and
    renormalised; Q_ij = w_ij / Σ_{k≠l} w_kl with w = kernel(‖y_i − y_j‖²) over the batch.
    L = −α Σ P_ij log w_ij + log Σ_{k≠l} w_kl (= KL(P‖Q) − Σ P log P for α = ``exaggeration`` = 1).

    Contract: consumes ``batch[input]`` and ``index`` (an item sampler's batches); needs the
    global ``relation`` (a relation of joint probabilities, e.g. ``P``); calls
    ``kernel.log_kernel``; reports ``kl``.  The entries of P on the training device are the
    loss's own state: read once in :meth:`on_phase_start` (lazily when called outside a
    phase) and dropped at the next phase start.
    """

    name: ClassVar[str] = "kl"
    whole_batch: ClassVar[bool] = True
    reports: ClassVar[frozenset[str]] = frozenset({"kl"})
    model: str = "main"
    input: str = "data"
    relation: str = "P"
    kernel: Any = block_field("transform", default="student_t",
                              validator=lambda s, a, v: _kernel_has(v, "log_kernel", "kl"))
    exaggeration: float = attrs.field(default=1.0, validator=positive)
    #: with a Student-t kernel: the loss and its gradient in closed form (one B × B array,
    #: P on the batch's sparse edges; :mod:`.tsne_loss`) instead of autograd through the
    #: dense formulas; the same value and gradient to float rounding, several times faster
    fused: bool = True
    _p: Any = attrs.field(init=False, default=None, repr=False, eq=False)
    _csr: Any = attrs.field(init=False, default=None, repr=False, eq=False)

    def required_fields(self):
        return frozenset({self.input, "index"})

    def required_globals(self):
        return frozenset({self.relation})

    def on_phase_start(self, state: TrainState) -> None:
        check_kernel(self.kernel)
        self._p = None
        self._edges(state)
        # t-SNE's P contract (≥ 0, sums to 1, symmetric): author28-2
        check_joint_probabilities(state.lookup(self.relation), state, self.relation, self.name)

    def _edges(self, state: TrainState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        if self._p is None:  # the entries of P on the training device, once per phase
            p = state.lookup(self.relation)
            _check(isinstance(p, RelationData),
                   f"KLLoss: global {self.relation!r} is a {type(p).__name__}, not a relation; "
                   "point `relation` at the joint probabilities (e.g. 'P').")
            p = p.to_sparse()
            self._p = (p.rows.to(state.device), p.cols.to(state.device),
                       p.values.to(state.device), p.shape[0])
        return self._p

    def batch_p(self, index: torch.Tensor, state: TrainState) -> torch.Tensor:
        """P restricted to ``index`` and renormalised: ``(B,) -> (B, B)``; O(nnz) gathers."""
        src, dst, values = batch_edges(*self._edges(state), index)
        size = len(index)
        p = torch.zeros(size * size, dtype=values.dtype, device=values.device)
        return p.index_add_(0, src * size + dst, values).view(size, size)

    def __call__(self, batch, models, state):
        y = get_model(models, self.model)(batch[self.input])
        index = batch["index"].to(y.device)
        if state.dist.active:  # each rank embedded its shard: the loss is the whole batch's
            index, y = _whole_batch(index, y, state)
        dof = getattr(self.kernel, "student_t_dof", None) if self.fused else None
        dof = dof() if callable(dof) else None
        if dof is not None:  # a kernel that states it is Student-t's: the closed form
            return self._fused(index, y, state, dof)
        p = self.batch_p(index, state).to(y.dtype)
        sq = (y[:, None, :] - y[None, :, :]).pow(2).sum(-1)
        log_w = self.kernel.log_kernel(sq)
        diagonal = torch.eye(len(y), dtype=torch.bool, device=y.device)
        log_z = torch.logsumexp(log_w.masked_fill(diagonal, -math.inf).reshape(-1), 0)
        cross = -(p * log_w).sum()
        value = self.exaggeration * cross + log_z
        with torch.no_grad():
            entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
            kl = cross + log_z - entropy
        return LossOutput(value, {"kl": kl})

    def _fused(self, index: torch.Tensor, y: torch.Tensor, state: TrainState, dof: float
               ) -> LossOutput:
        edges = self._edges(state)
        if self._csr is None or self._csr[0] is not edges:  # P by rows, once per phase
            self._csr = (edges, row_index(*edges))
        src, dst, p = batch_rows(*self._csr[1], index)
        value, cross = student_t_kl(y, src, dst, p, self.exaggeration, float(dof))
        with torch.no_grad():
            entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
            kl = cross + (value.detach() - self.exaggeration * cross) - entropy
        return LossOutput(value, {"kl": kl})


__all__ = ["NegativeEdgeSampler", "RelationLoss", "KLLoss", "anchored_terms"]

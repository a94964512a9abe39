"""Parametric t-SNE: a non-parametric t-SNE layout, and a network that learns it.

Global relations: the k-NN distances (k = 3 × perplexity by default), conditional
probabilities p_{j|i} calibrated to the perplexity (PerplexityBasedRescale), P = (P + Pᵀ)/2
normalised to sum 1, and a PCA layout of the data.  Phases: ``layout`` (``layout_epochs`` > 0,
the default) optimises free coordinates Y, started from the PCA layout, by the full gradient of
KL(P‖Q) with Q_ij ∝ (1 + ‖y_i − y_j‖²)⁻¹ over ALL pairs (``all_pairs_kl``: exact repulsion up
to 2,000 items, FFT-interpolated above, FIt-SNE; the first ``layout_exaggeration_epochs``
exaggerated by ``early_exaggeration``) with t-SNE's gains-and-momentum step
(``delta_bar_delta``) — openTSNE's algorithm; ``init`` regresses the network onto the layout
(PositionLoss); ``main`` (``epochs`` > 0) minimises KL(P_B‖Q_B) of the network on random
batches B, P restricted to the batch and renormalised (van der Maaten, 2009).  The layout is
``embedding_``; ``transform`` places new points among its positions.  Without a layout
(``layout_epochs=0``) ``init`` regresses the network onto the PCA layout and ``exaggerate`` /
``main`` train it on batch KL alone.

As for UMAP the routine is data: ``globals`` (``P`` = k-NN relation + affinity transforms,
``positions`` = the init), ``models`` (``main`` = the encoder, ``layout`` = free coordinates)
and the phases, each block a registry name (``infoblocks config parametric_tsne --full``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, ClassVar

import attrs
from attrs.validators import optional

from infoblocks.blocks.data import as_rows
from infoblocks.blocks.embedding.affinities import PerplexityBasedRescale
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.schedules import schedule_data, schedule_spec
from infoblocks.blocks.validators import non_negative_int, one_of, positive, positive_int

from .umap import EmbeddingRecipe, _hidden

#: full-gradient steps per epoch of the ``layout`` phases (fewer per-epoch costs; as UMAP's
#: layout phase)
LAYOUT_STEPS_PER_EPOCH = 10
#: the default perplexity (30) needs k = 90 neighbours and 91 rows; on fewer rows it is
#: lowered to (N − 1) / 3, as openTSNE does, but not below this (3 rows: p = 0.67 is below
#: the one neighbour a perplexity counts at least)
MIN_LOWERED_PERPLEXITY = 1.0


@attrs.define(kw_only=True)
class ParametricTSNE(EmbeddingRecipe):
    """Parametric t-SNE (see the module docstring for the method).

    ``perplexity`` sets the effective number of neighbours; ``n_neighbors`` (default
    3 × perplexity) the sparse graph it is computed on.  The layout's first
    ``layout_exaggeration_epochs`` (without a layout: the ``exaggerate`` phase's
    ``exaggeration_epochs``) multiply the attraction by ``early_exaggeration``.

    Defaults (measured on MNIST-5k, digits 4-9 of MNIST, the 8×8 digits and blobs,
    docs/umap.md):
    openTSNE's optimisation of the layout (α = 12 for 100 steps, then 200; learning rate
    N/α, momentum 0.8, gains) in 300 full-gradient steps instead of 750, the network (3 × 256
    behind a PCA-64 front end) regressed onto it for 30 epochs.

    A ``batch_size`` / ``init_batch_size`` above the number of rows N runs batches of all N
    rows, a ``pca_dims`` above the features all features; the fit records them as
    ``batch_size_`` / ``init_batch_size_`` / ``pca_dims_`` (as ``perplexity_``:
    :attr:`EmbeddingRecipe.fitted_caps`), and the routine's sections after the fit
    (``routine_spec()``, ``to_toml(full=True)``, the saved model) show them, so that they run
    as written, e.g. as ``recipe = "routine"``.
    """

    #: "network": the network alone on batch KL (no layout; the defaults before the layout
    #: phase): MNIST-5k trust@15 / 10-NN 0.965 / 0.928 in-sample, 0.912 / 0.869 held out
    #: (docs/umap.md)
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "network": dict(layout_epochs=0, init_epochs=10, init_learning_rate=1e-3,
                        exaggeration_epochs=50, epochs=300),
    }

    name: ClassVar[str] = "parametric_tsne"
    summary: ClassVar[str] = ("Parametric t-SNE: openTSNE's layout (KL over all pairs), and a "
                              "network regressed onto it")
    graph_name: ClassVar[str] = "P"
    fitted_caps: ClassVar[dict[str, str]] = {**EmbeddingRecipe.fitted_caps,
                                             "batch_size": "rows", "init_batch_size": "rows"}
    #: ``transform`` places a new point among the positions of its 15 nearest training rows
    #: (round 3, the network alone: held-out MNIST-5k 10-NN / trust@15 0.869 / 0.912 against
    #: the network's 0.811 / 0.893; 30: 0.857 / 0.913; with the layout: 0.895 / 0.924;
    #: docs/umap.md), with the fit's Student-t kernel
    placement_neighbors: ClassVar[int | None] = 15

    perplexity: float = attrs.field(default=30.0, validator=positive)
    #: the perplexity of the fit (of its graph P): ``perplexity``, or (the default on fewer
    #: than 91 rows) (N − 1) / 3 with a warning; n_neighbors − 1 where ``n_neighbors`` ≤
    #: perplexity (its rows can take no more; a warning says so); a plugin affinity's own
    perplexity_: float | None = attrs.field(init=False, default=None, repr=False)
    n_neighbors: int | None = attrs.field(default=None, validator=optional(positive_int))
    #: the encoder's hidden layers: 3 × 256 (UMAP's 3 × 100 underfits t-SNE's map: MNIST-5k
    #: trust@15 0.956 -> 0.964 at 200 epochs; 2 × 512 reached 0.957)
    hidden_dims: tuple[int, ...] = attrs.field(default=(256, 256, 256), converter=tuple,
                                              validator=_hidden)
    #: the encoder's fixed PCA front end (k leading axes; None: the raw features): the same
    #: quality as the raw 784 pixels on MNIST-5k at a cheaper first layer
    pca_dims: int | None = attrs.field(default=64, validator=optional(positive_int))
    #: Student-t's ν of the kernel (1 + d²/ν)^−(ν+1)/2 — not openTSNE's ``dof`` α of
    #: (1 + d²/α)^−α, which is the kernel ``heavy_tailed`` (docs/umap.md)
    dof: float = attrs.field(default=1.0, validator=positive)
    init: str = attrs.field(default="pca", validator=one_of("pca", "spectral", "none"))
    init_scale: float = attrs.field(default=5.0, validator=positive)
    #: the network regressed onto the layout: 30 epochs of batches of 500, Adam 1e-2 with
    #: cosine decay (60: the network's own map 0.964 / 0.914 instead of 0.932 / 0.878 on
    #: MNIST-5k, held out through the placement the same; docs/umap.md)
    init_epochs: int = attrs.field(default=30, validator=non_negative_int)
    init_batch_size: int = attrs.field(default=500, validator=positive_int)
    init_learning_rate: float = attrs.field(default=1e-2, validator=positive)
    #: openTSNE's / scikit-learn's α = 12, for 50 epochs (α = 4 for 20: MNIST-5k 10-NN 0.917
    #: instead of 0.928 with the encoder above)
    early_exaggeration: float = attrs.field(default=12.0, validator=positive)
    #: epochs of the network's ``exaggerate`` phase; only without a layout phase (with one,
    #: the layout is exaggerated: ``layout_exaggeration_epochs``)
    exaggeration_epochs: int = attrs.field(default=50, validator=non_negative_int)
    #: epochs of the ``layout`` phase: free coordinates (no network) started from the init,
    #: each epoch LAYOUT_STEPS_PER_EPOCH full-gradient steps of t-SNE's KL over ALL pairs
    #: (``all_pairs_kl``: exact repulsion up to 2,000 items, FFT interpolation above; FIt-SNE /
    #: openTSNE's non-parametric t-SNE); the network is then regressed onto the layout, which
    #: is ``embedding_`` and what ``transform`` places new points among.  0: no layout (the
    #: network alone on mini-batch KL)
    layout_epochs: int = attrs.field(default=30, validator=non_negative_int)
    #: the first epochs of the layout: the attraction × ``early_exaggeration`` (epochs, whatever
    #: batches per epoch the layout's sampler yields: the loss's ``exaggeration_epochs``)
    layout_exaggeration_epochs: int = attrs.field(default=10, validator=non_negative_int)
    #: the layout's step: t-SNE's gradient descent with momentum 0.8 and gains
    #: (``delta_bar_delta``, one optimizer through the exaggeration's end: resetting its
    #: state there cost MNIST-5k trust@15 0.001); 0.25 is openTSNE's "auto" N/α (the loss's
    #: gradient is n × KL's, 4 × openTSNE's, and divided by α while exaggerated)
    layout_learning_rate: float = attrs.field(default=0.25, validator=positive)
    #: standard deviation of the first coordinate of the layout's start (openTSNE's 1e-4)
    layout_scale: float = attrs.field(default=1e-4, validator=positive)
    #: the layout's repulsion over all pairs: "auto" (exact up to 2,000 items), "exact", "fft"
    repulsion: str = attrs.field(default="auto", validator=one_of("auto", "exact", "fft"))
    #: epochs of the network's batch KL after ``init``: none with the layout (50 epochs moved
    #: the network off the layout: held-out MNIST-5k trust@15 / 10-NN 0.912 / 0.837 instead
    #: of 0.923 / 0.889);
    #: without a layout 300 (preset "network"; quality still rose from 100 to 400 epochs)
    epochs: int = attrs.field(default=0, validator=non_negative_int)
    batch_size: int = attrs.field(default=1000, validator=positive_int)
    #: the batch sizes of the fit: ``batch_size`` / ``init_batch_size``, at most the number of
    #: rows (a larger batch is the whole data set); what ``to_toml(full=True)`` writes after
    #: the fit, so that its sections run as they are (author22-5: 1000 written for the 600
    #: rows that ran, and `recipe = "routine"` refused it)
    batch_size_: int | None = attrs.field(init=False, default=None, repr=False)
    init_batch_size_: int | None = attrs.field(init=False, default=None, repr=False)
    learning_rate: float = attrs.field(default=1e-2, validator=positive)
    lr_schedule: str | dict[str, Any] = attrs.field(
        default="cos", converter=schedule_data, validator=schedule_spec)

    def __attrs_post_init__(self) -> None:
        if self.layout_epochs and self.init == "none":
            raise ValidationError(
                "`layout_epochs` > 0 (the default) starts the layout from the init positions; "
                "use init='pca' or 'spectral', or layout_epochs=0 with init='none'.")
        default = attrs.fields(type(self)).layout_exaggeration_epochs.default
        if 0 < self.layout_epochs < self.layout_exaggeration_epochs != default:
            raise ValidationError(
                f"`layout_exaggeration_epochs` = {self.layout_exaggeration_epochs} exceeds "
                f"`layout_epochs` = {self.layout_epochs}: the whole layout would be exaggerated, "
                "with no epochs left to relax it. Set it below layout_epochs (the defaults: 10 "
                "of 30).")

    @property
    def has_layout(self) -> bool:
        """Whether the fit optimises a free-coordinate layout before the network."""
        return bool(self.layout_epochs)

    @property
    def fit_perplexity(self) -> float:
        """The perplexity P is calibrated to: ``perplexity_`` once fitted (lowered on a small
        data set), else ``perplexity``."""
        return self.perplexity if self.perplexity_ is None else self.perplexity_

    @property
    def fit_batch_size(self) -> int:
        """The batch of the ``main`` / ``exaggerate`` phases: ``batch_size_`` once fitted (at
        most the rows), else ``batch_size``."""
        return self.fitted("batch_size")

    @property
    def fit_init_batch_size(self) -> int:
        """The batch of the ``init`` phase: ``init_batch_size_`` once fitted, else
        ``init_batch_size``."""
        return self.fitted("init_batch_size")

    def neighbors(self) -> int:
        """k of the sparse P: ``n_neighbors`` or 3 × perplexity (as in Barnes-Hut t-SNE)."""
        return self.n_neighbors or int(math.ceil(3 * self.fit_perplexity))

    def build(self, X: Any, *, knn: Any = None) -> Any:
        """As the embeddings' (:meth:`EmbeddingRecipe.build`), the perplexity of the fit set
        first: the default lowered on fewer rows than it needs (:meth:`_perplexity_for`)."""
        x = as_rows(X, "X", ndim=2)
        n = int(x.shape[0])
        with self._record_kept_if_refused():  # (a perplexity refused for n: the last fit's)
            self.perplexity_ = None
            self._record_fit(n, int(x.shape[1]), knn is not None)
            self.perplexity_ = self._perplexity_for(n)
            routine = super().build(x, knn=knn)
            self.perplexity_ = self._ran_perplexity(routine)  # (a globals.P of one's own: its)
        return routine

    def _fit_record(self) -> dict[str, Any]:
        """As the embeddings', with the perplexity of the fit (``perplexity_``)."""
        return {**super()._fit_record(), "perplexity_": self.perplexity_}

    def _spec_perplexity(self) -> float | None:
        """The perplexity the routine's graph is calibrated to (its ``perplexity_rescale``
        transform's, or a plugin affinity's in its place: the first with a ``perplexity``;
        None without one)."""
        graph = self.routine_spec()["globals"].get(self.graph_name) or {}
        values = [t.get("perplexity") for t in graph.get("transforms") or []
                  if isinstance(t, dict) and "perplexity" in t]
        return float(values[0]) if values and isinstance(values[0], (int, float)) else None

    def _ran_perplexity(self, routine: Any) -> float | None:
        """The perplexity P is calibrated to, as ``routine`` runs it: its graph's first
        transform with a ``perplexity`` (``perplexity_rescale``, or a plugin affinity in its
        place: the built block's value, its own default included — author28-11: None for a
        plugin's); where ``perplexity_rescale`` runs on k-NN rows of k ≤ perplexity
        neighbours, the k − 1 its rows use (author28-5: n_neighbors = 15 ran at 14 while
        ``perplexity_`` said 30).  The spec's value (:meth:`_spec_perplexity`) without one."""
        graph = getattr(routine, "global_relations", {}).get(self.graph_name)
        values = [t for t in getattr(graph, "transforms", None) or []
                  if isinstance(getattr(t, "perplexity", None), (int, float))
                  and not isinstance(t.perplexity, bool)]
        if not values:
            return self._spec_perplexity()
        value = float(values[0].perplexity)
        relation = (self.routine_spec()["globals"].get(self.graph_name) or {}).get("relation")
        k = relation.get("n_neighbors") if isinstance(relation, dict) else None
        if isinstance(values[0], PerplexityBasedRescale) and isinstance(k, int) and k <= value:
            return max(float(k - 1), 1.0)  # (PerplexityBasedRescale.calibrate's rule)
        return value

    @classmethod
    def load(cls, path: str | Path, encoder: Any = None, device: Any = "cpu") -> Any:
        """As the embeddings' (:meth:`EmbeddingRecipe.load`), with ``perplexity_`` (the
        saved routine's, e.g. lowered on a small data set)."""
        recipe = super().load(path, encoder=encoder, device=device)
        recipe.perplexity_ = recipe._ran_perplexity(recipe.routine_)
        return recipe

    def _knn_need(self, k: int) -> tuple[str, str]:
        if self.n_neighbors is not None:
            return super()._knn_need(k)
        return (f"perplexity = {self.fit_perplexity:g} (k = ⌈3 × perplexity⌉ = {k})",
                "lower perplexity to at most a third of them, or set n_neighbors")

    def _perplexity_for(self, n: int) -> float | None:
        """openTSNE's rule for the default perplexity on a small data set: on N rows, fewer
        than the ⌈3 × 30⌉ + 1 = 91 it needs, (N − 1) / 3 (k = N − 1 neighbours), with a
        warning naming it; None (``perplexity`` as given) otherwise.  A perplexity the user
        set that N rows cannot take is a :class:`ValidationError` naming the largest they
        can; ``n_neighbors`` or a ``globals.P`` of one's own are left to the size check."""
        default = attrs.fields(type(self)).perplexity.default
        k = self.neighbors()
        if self.n_neighbors is not None or k < n:
            return None
        relation = (self.routine_spec()["globals"].get(self.graph_name) or {}).get("relation")
        if not isinstance(relation, dict) or relation.get("n_neighbors") != k:
            return None
        largest = (n - 1) / 3
        while math.ceil(3 * largest) > n - 1:  # (float rounding: k must stay N − 1)
            largest = math.nextafter(largest, 0.0)
        shown = math.floor(largest * 100) / 100  # (rounded down: a value the rows can take)
        if largest < MIN_LOWERED_PERPLEXITY:
            return None  # (3 rows or fewer: the size check says what they lack)
        if self.perplexity != default:
            raise ValidationError(
                f"`X` has {n} samples; {type(self).__name__} with perplexity = "
                f"{self.perplexity:g} needs at least {k + 1} (k = ⌈3 × perplexity⌉ = {k} "
                f"neighbours, and k + 1 points): lower perplexity to at most (samples − 1) / 3 "
                f"= {shown:g}, or set n_neighbors.")
        warnings.warn(
            f"{self.name}: X has {n} samples, fewer than the {k + 1} the default perplexity = "
            f"{default:g} needs (k = ⌈3 × perplexity⌉ = {k} neighbours); this fit uses "
            f"perplexity = (samples − 1) / 3 = {largest:.4g} (`perplexity_`), as openTSNE "
            f"does. Set perplexity (at most {shown:g}) to choose it yourself.",
            UserWarning, stacklevel=4)
        return largest

    def _size_needs(self, spec: dict[str, Any] | None = None) -> list[tuple[int, str]]:
        """As the embeddings', the k-NN graph's size said in terms of ``perplexity`` where k
        is derived from it (``n_neighbors`` None and the graph's k left at 3 × perplexity)."""
        needs = super()._size_needs(spec)
        k = self.neighbors()
        if self.n_neighbors is not None:
            return needs
        return [(need, f"perplexity = {self.fit_perplexity:g} needs k = ⌈3 × perplexity⌉ = {k} "
                       f"neighbours, and k + 1 points: lower perplexity to at most (samples − 1)"
                       " / 3, or set n_neighbors")
                if why.startswith(f"n_neighbors = {k} ") else (need, why)
                for need, why in needs]

    def default_globals(self) -> dict[str, dict[str, Any]]:
        """``P``: k-NN distances -> conditional probabilities at the perplexity -> (P + Pᵀ)/2
        -> normalised to sum 1; ``positions``: the PCA of the data (or the spectral layout of
        ``P``) unless ``init="none"``."""
        out = {"P": {
            "input": "data", "relation": self._knn_spec(self.neighbors()),
            "transforms": [{"name": "perplexity_rescale", "perplexity": self.fit_perplexity},
                           {"name": "symmetrize", "subtract_product": False},
                           {"name": "normalize"}]}}
        positions = self._init_spec(self.init, self.init_scale, "P")
        if positions is not None:
            out["positions"] = positions
        return out

    def default_models(self) -> dict[str, Any]:
        models = super().default_models()
        if self.has_layout:  # n_items is filled from the data
            models["layout"] = {"name": "free_positions", "n_components": self.n_components,
                                "init": "positions", "scale": self.layout_scale}
        return models

    def _layout_phase(self) -> dict[str, Any]:
        """Full-gradient steps of the free coordinates (every item in every batch), the
        first ``layout_exaggeration_epochs`` exaggerated."""
        return {"name": "layout", "epochs": self.layout_epochs, "trainable": ["layout"],
                "sampler": {"name": "items", "shuffle": False, "keys": [],
                            "batches_per_epoch": LAYOUT_STEPS_PER_EPOCH},
                "loss": {"name": "all_pairs_kl", "relation": "P",
                         "exaggeration": self.early_exaggeration,
                         # epochs, whatever the sampler yields per epoch (author28-1)
                         "exaggeration_epochs": min(self.layout_exaggeration_epochs,
                                                    self.layout_epochs),
                         "repulsion": self.repulsion,
                         "kernel": {"name": "student_t", "dof": self.dof}},
                "optimizer": "delta_bar_delta", "learning_rate": self.layout_learning_rate}

    def _kl_phase(self, name: str, epochs: int, exaggeration: float) -> dict[str, Any]:
        return {"name": name, "epochs": epochs,
                "sampler": {"name": "items", "batch_size": self.fit_batch_size, "drop_last": True},
                "loss": {"name": "kl", "relation": "P", "exaggeration": exaggeration,
                         "kernel": {"name": "student_t", "dof": self.dof}},
                "optimizer": "adam", "learning_rate": self.learning_rate}

    def default_phases(self) -> list[dict[str, Any]]:
        phases = []
        layout = self.has_layout
        if layout:
            phases.append(self._layout_phase())
        if self.init != "none":
            phases.append({
                "name": "init", "epochs": self.init_epochs,
                "sampler": {"name": "items", "batch_size": self.fit_init_batch_size,
                            "gather": ["positions"]},
                "loss": ({"name": "position", "target_model": "layout"} if layout
                         else {"name": "position", "target": "positions"}),
                "optimizer": "adam", "learning_rate": self.init_learning_rate,
                **({"trainable": ["main"], "lr_schedule": "cos"} if layout else {})})
        if self.exaggeration_epochs > 0 and not layout:
            phases.append(self._kl_phase("exaggerate", self.exaggeration_epochs,
                                         self.early_exaggeration))
        main = self._kl_phase("main", self.epochs, 1.0)
        main["lr_schedule"] = self.lr_schedule
        if layout:
            main["trainable"] = ["main"]
        phases.append(main)
        return phases

    @classmethod
    def demo(cls, out_dir: Path, quick: bool = False) -> dict[str, Any]:
        """Embed the shipped 8×8 digits; print trustworthiness@15 and 10-NN accuracy."""
        recipe = cls(layout_epochs=15, init_epochs=10) if quick else cls()
        return cls._demo(recipe, out_dir, "tsne_digits.png")


__all__ = ["ParametricTSNE"]

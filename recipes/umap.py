"""Parametric UMAP: a neural network that maps data to a low-dimensional embedding.

Global relations (computed once): the k-NN graph of the data (exact torch search below
20,000 items, pynndescent above), UMAP's fuzzy memberships p_{j|i} = exp(−max(0, d_ij − ρ_i)/σ_i)
(σ_i by binary search to Σ_j p_{j|i} = log2 k), the fuzzy union p_ij = p_{j|i} + p_{i|j} −
p_{j|i} p_{i|j}, and a spectral (or PCA) layout of the graph.  Phases: ``layout``
(``layout_epochs`` > 0, the default) optimises free coordinates Y, started from that layout,
with the main phase's loss (non-parametric UMAP, no network); ``init`` regresses the network
onto the layout (PositionLoss); ``main`` minimises the fuzzy cross-entropy between p and
q_ij = 1 / (1 + a‖y_i − y_j‖^{2b}) on edges drawn ∝ p_ij with negatives, plus
``anchor_strength`` × the same cross-entropy of each edge's source f(x_i) against the fixed
layout positions of its partner and negatives (umap-learn's ``transform`` objective).

The routine is data, in the sections of :class:`~infoblocks.blocks.recipe.Recipe`:
``globals`` (``graph`` = k-NN relation + affinity transforms, ``positions`` = the init),
``models`` (``main`` = the encoder, ``layout`` = free coordinates), ``phases`` (sampler, loss
with its kernel, optimizer per phase).  The shortcuts (``n_neighbors``, ``min_dist`` ...) fill
the defaults; every block is a registry name that a plugin can replace from TOML
(``infoblocks config parametric_umap --full`` prints them all).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

import attrs
from attrs.validators import optional
import numpy as np
import torch

from infoblocks.blocks.assembly import ShortcutWarning, cap_fields, warn_once
from infoblocks.blocks.base import naming_blocks
from infoblocks.blocks.callbacks import Callback
from infoblocks.blocks.contracts import ITEMS
from infoblocks.blocks.data import (Dataset, LazyRows, as_rows, check_feature_names,
                                    feature_names, intra_op_threads, resolve_device, rows_for)
from infoblocks.blocks.embedding.placement import Placement, PlacementContext
from infoblocks.blocks.embedding.training import NegativeEdgeSampler, RelationLoss, front_end_of
from infoblocks.blocks.errors import ConfigError, NotFittedError, PluginError, ValidationError
from infoblocks.blocks.figures import save_figure
from infoblocks.blocks.losses import CompoundLoss
from infoblocks.blocks.neighbors import (KNN_KEY, PrecomputedKNN, precomputed_neighbors,
                                         query_knn)
from infoblocks.blocks.recipe import (EXPANDED_KEY, WRITTEN_SECTIONS_KEY, Recipe,
                                     check_saved_recipe, transient_field)
from infoblocks.blocks.routine import SPEC_FILE, Routine
from infoblocks.blocks.schedules import schedule_data, schedule_spec
from infoblocks.blocks.validators import device as valid_device
from infoblocks.blocks.validators import (fraction, non_negative, non_negative_int, one_of, positive,
                                          positive_int)
from infoblocks.plugins.registry import get_registry

#: sub-directory of ``run``'s output that holds the saved model
MODEL_DIR = "model"
#: largest data set read from disk whole for ``run``'s trustworthiness (n² ranks in blocks)
TRUSTWORTHINESS_MAX_ITEMS = 50_000
#: optimizer steps per epoch of the free-coordinate ``layout`` phase
LAYOUT_BATCHES_PER_EPOCH = 10
#: the layout's and the main phase's epochs of a small graph have fewer batches: at least this
#: many edges each in the layout (whose batch is the epoch's draws / its batches, ≤
#: ``layout_batch_size``), at least ``batch_size`` in the main phase — so an epoch is at most
#: about one pass over the graph's edges (iris: 4.2 -> 1.4 s CPU, the same quality; the graphs
#: of the digits and larger keep 10 batches)
LAYOUT_MIN_BATCH = 1024
#: file of a save directory with the training rows and positions that new points are placed
#: among (:meth:`ParametricUMAP.transform`)
REFERENCE_FILE = "reference.pt"
#: ... and the training rows when they were on disk (a memory-mapped ``.npy``, read lazily)
REFERENCE_ROWS_FILE = "reference_rows.npy"


class _PhaseTimer(Callback):
    """Wall seconds of every phase of the last ``train`` (the fit's ``timings_``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = 0.0

    def on_phase_start(self, state, phase) -> None:
        self._start = time.perf_counter()

    def on_phase_end(self, state, phase) -> None:
        self.seconds[phase.name] = time.perf_counter() - self._start


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


def _known_metric(instance, attribute, value) -> None:
    _check(isinstance(value, str), f"`metric` must be a distance name, got {value!r}.")
    get_registry().entry("distance", value)  # RegistryError lists the known distances


def _hidden(instance, attribute, value) -> None:
    _check(all(not isinstance(h, bool) and isinstance(h, int) and h > 0 for h in value),
           f"`hidden_dims` must hold positive integers, got {list(value)}.")


def _module_or_none(instance, attribute, value) -> None:
    _check(value is None or isinstance(value, torch.nn.Module),
           f"`encoder` must be a torch.nn.Module (or None for the `models.main` block, an MLP by "
           f"default), got {type(value).__name__}.")


def _saved_extra(path: Path) -> dict[str, Any] | None:
    """The recipe's ``extra`` of a save directory, or None where it cannot be read (then
    :meth:`Routine.load` says why)."""
    try:
        extra = json.loads((path / SPEC_FILE).read_text()).get("extra")
    except Exception:  # noqa: BLE001 - any damage is reported by Routine.load
        return None
    return extra if isinstance(extra, dict) else None


def _saved_custom_encoder(path: Path) -> bool:
    """Whether the save at ``path`` holds ``models.main`` as a custom torch module (no block
    spec: ``encoder=`` at fit); False where the save cannot be read (Routine.load says why)."""
    try:
        models = json.loads((path / SPEC_FILE).read_text()).get("models")
    except Exception:  # noqa: BLE001 - any damage is reported by Routine.load
        return False
    return isinstance(models, dict) and "main" in models and models["main"] is None


def _without_none(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if v is not None}


def _written_as_run(written: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    """The sections of one's own (``expanded_from.sections`` of a full form) with the
    values a fit capped as the full form has them (an items batch, ``pca_dims``): read
    back, they then agree with the fitted shortcuts beside them instead of conflicting."""
    written = copy.deepcopy(written)
    ran = {p.get("name"): p for p in full.get("phases") or [] if isinstance(p, dict)}
    for phase in written.get("phases") or []:
        sampler = phase.get("sampler") if isinstance(phase, dict) else None
        now = (ran.get(phase.get("name")) or {}).get("sampler") if isinstance(
            sampler, dict) else None
        if isinstance(now, dict) and isinstance(sampler.get("batch_size"), int) and \
                isinstance(now.get("batch_size"), int):
            sampler["batch_size"] = now["batch_size"]
    for name, model in (written.get("models") or {}).items():
        now = (full.get("models") or {}).get(name)
        if isinstance(model, dict) and isinstance(model.get("pca_dims"), int) and \
                isinstance(now, dict) and isinstance(now.get("pca_dims"), int):
            model["pca_dims"] = now["pca_dims"]
    return written


def _parts(loss: Any) -> list[Any]:
    """The losses a phase's loss is made of (the parts of a ``compound``, else itself)."""
    return list(loss.losses) if isinstance(loss, CompoundLoss) else [loss]


@attrs.define(kw_only=True)
class EmbeddingRecipe(Recipe):
    """Shared scikit-learn style API of the parametric embeddings (no ``name``: not registered).

    Subclasses define :meth:`default_globals` and :meth:`default_phases`; the encoder
    ``models.main`` (an MLP from ``hidden_dims`` / ``activation`` / ``pca_dims``) is shared.
    :meth:`build` builds every block of :meth:`routine_spec` through the registry, with the
    data's sizes (``in_dim``, ``out_dim`` = ``n_components``, ``n_items``) filled in.
    """

    #: the arrays of `infoblocks run` in order (an .npz named after them is reordered)
    run_inputs: ClassVar[tuple[str, ...]] = ("X|data", "labels|y")

    #: name of the global relation whose k-NN relation sets the smallest data set
    graph_name: ClassVar[str] = "graph"
    #: the shortcuts a fit lowers to the data's size, with the size that caps them: an items
    #: sampler's batch above the rows runs all rows ("rows"), a PCA front end wider than the
    #: features all features ("features").  The fit records each as ``<name>_``
    #: (``pca_dims_`` ...: None before a fit, as ``perplexity_``), and the sections after it
    #: (``routine_spec()``, ``to_toml(full=True)``, the saved model) hold what ran, so that
    #: they run as written, e.g. as ``recipe = "routine"`` (author22-5: a batch of 500 written
    #: for 400 rows was refused there)
    fitted_caps: ClassVar[dict[str, str]] = {"pca_dims": "features"}
    #: the full form writes every block's defaults (every knob; :attr:`Recipe.full_defaults`)
    full_defaults: ClassVar[bool] = True

    n_components: int = attrs.field(default=2, validator=positive_int)
    metric: str = attrs.field(default="euclidean", validator=_known_metric)
    metric_kwds: dict[str, Any] | None = None
    hidden_dims: tuple[int, ...] = attrs.field(default=(100, 100, 100), converter=tuple,
                                              validator=_hidden)
    activation: str = "relu"
    #: k: the default MLP starts with a fixed projection on the data's k leading principal
    #: axes (cheaper steps for wide inputs); None: the raw features
    pca_dims: int | None = attrs.field(default=None, validator=optional(positive_int))
    exact_neighbors_threshold: int = attrs.field(default=20_000, validator=positive_int)
    seed: int = attrs.field(default=0, validator=non_negative_int)
    #: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available)
    device: str = attrs.field(default="cpu", validator=valid_device)
    #: torch intra-op threads while training (small networks on CPU train fastest on one
    #: thread; two threads ran 3x slower on a loaded 2-core machine); None keeps torch's setting
    threads: int | None = attrs.field(default=1, validator=optional(positive_int))
    verbose: bool = False
    #: a second ``fit`` on data of the same shape continues the fitted network and each
    #: phase's optimizer state for the phases' epochs again (scikit-learn's convention)
    warm_start: bool = False
    #: any ``torch.nn.Module`` mapping (n, d) -> (n, n_components), used instead of the
    #: ``models.main`` block (Python only: not part of the data form)
    encoder: Any = transient_field(default=None, validator=_module_or_none)
    #: Adam steps of :meth:`transform`'s placement: each new point, started at the network's
    #: f(x'), moves among the fixed training positions of its nearest training rows (umap-learn's
    #: ``transform`` objective; blocks/embedding/placement.py).  0: the network's points as they
    #: are (then no training rows are kept).  300 instead of 100: held-out trust@15 +0.002
    #: (UMAP) and +0.013 (t-SNE) on MNIST-5k (docs/umap.md)
    transform_epochs: int = attrs.field(default=300, validator=non_negative_int)
    #: the placement's Adam step in units of the training positions' spread (RMS of the axes'
    #: standard deviations): 0.05 is ~0.2 on a UMAP map of MNIST and ~1 on a t-SNE map
    transform_learning_rate: float = attrs.field(default=0.05, validator=positive)

    routine_: Routine | None = attrs.field(init=False, default=None, repr=False)
    embedding_: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    history_: list[dict[str, Any]] | None = attrs.field(init=False, default=None, repr=False)
    n_features_in_: int | None = attrs.field(init=False, default=None, repr=False)
    #: the column names of a DataFrame fitted on (all strings), as scikit-learn keeps them;
    #: ``transform`` refuses a DataFrame whose names differ or are in another order
    feature_names_in_: np.ndarray | None = attrs.field(init=False, default=None, repr=False,
                                                       eq=False)
    timings_: dict[str, float] | None = attrs.field(init=False, default=None, repr=False)
    #: the encoder's PCA front end of the fit: ``pca_dims``, at most the features
    pca_dims_: int | None = attrs.field(init=False, default=None, repr=False)
    #: what the last fit ran on: {"rows", "features", "knn" (a graph given as data)}; the
    #: sections after the fit are capped by it (:meth:`routine_spec`)
    _fitted_on: dict[str, Any] | None = attrs.field(init=False, default=None, repr=False,
                                                    eq=False)
    #: (training rows, their fixed positions) that :meth:`transform` places new points
    #: among (recipes that refine new points; kept with :meth:`save`)
    _reference: tuple[Any, torch.Tensor] | None = attrs.field(init=False, default=None,
                                                              repr=False, eq=False)

    # ------------------------------------------------------------------ the assembly

    def _metric_spec(self) -> Any:
        if not self.metric_kwds:
            return self.metric
        try:  # (an unknown metric name is reported where the block is built)
            cls = get_registry().get("distance", self.metric)
        except Exception:  # noqa: BLE001
            cls = None
        if cls is not None and attrs.has(cls):
            fields = sorted(f.alias or f.name for f in attrs.fields(cls) if f.init)
            unknown = sorted(set(self.metric_kwds) - set(fields))
            _check(not unknown,
                   f"`metric_kwds` key(s) {unknown} are not fields of distance "
                   f"{self.metric!r} (its fields: {fields or 'none'}); remove them or use a "
                   "distance that takes them.")
        return {"name": self.metric, **self.metric_kwds}

    def _knn_spec(self, n_neighbors: int) -> dict[str, Any]:
        return {"name": "neighbor_pdist", "n_neighbors": n_neighbors,
                "metric": self._metric_spec(), "seed": self.seed,
                "exact_threshold": self.exact_neighbors_threshold}

    def _init_spec(self, init: str, scale: float, graph: str) -> dict[str, Any] | None:
        """The ``positions`` global: spectral layout of ``graph`` or PCA of the data."""
        if init == "spectral":
            return {"input": graph, "transforms": [
                {"name": "spectral_init", "n_components": self.n_components, "scale": scale,
                 "seed": self.seed}]}
        if init == "pca":
            return {"input": "data", "transforms": [
                {"name": "pca_init", "n_components": self.n_components, "scale": scale}]}
        return None

    def default_models(self) -> dict[str, Any]:
        """``main``: the MLP encoder (``in_dim`` / ``out_dim`` filled from the data), unless
        a torch module is given as ``encoder``."""
        if self.encoder is not None:
            return {}
        return {"main": _without_none({
            "name": "standardized_mlp", "hidden_dims": list(self.hidden_dims),
            "activation": self.activation, "pca_dims": self.fitted("pca_dims")})}

    # ------------------------------------------------------------------ what a fit ran

    def fitted(self, name: str) -> Any:
        """The value of the shortcut ``name`` that the last fit ran (its ``<name>_`` record,
        lowered to the data's size: :attr:`fitted_caps`), else the value as set."""
        value = getattr(self, f"{name}_", None)
        return getattr(self, name) if value is None else value

    def _record_fit(self, n_rows: int, n_features: int, knn: bool) -> None:
        """Record what a fit on ``n_rows`` × ``n_features`` (a graph given as data: ``knn``)
        runs: every shortcut of :attr:`fitted_caps` at most its size."""
        sizes = {"rows": n_rows, "features": n_features}
        for name, size in self.fitted_caps.items():
            value = getattr(self, name)
            setattr(self, f"{name}_", value if value is None else min(value, sizes[size]))
        self._fitted_on = {**sizes, "knn": knn}

    def _fit_record(self) -> dict[str, Any]:
        """What :meth:`_record_fit` sets, by attribute name (the ``<name>_`` of
        :attr:`fitted_caps` and what the fit ran on)."""
        return {name: getattr(self, name)
                for name in [f"{cap}_" for cap in self.fitted_caps] + ["_fitted_on"]}

    @contextlib.contextmanager
    def _record_kept_if_refused(self):
        """The record of the last fit (:meth:`_fit_record`) back as it was where the block
        inside raises: a fit refused (``X`` too small for the settings, a bad ``knn``, a
        perplexity the rows cannot take) or failing in training leaves ``routine_`` the last
        fit's, so ``fitted_caps`` / ``pca_dims_`` ..., ``to_toml(full=True)`` and the save stay
        its too (they had been the refused data's)."""
        before = self._fit_record()
        try:
            yield
        except BaseException:
            for name, value in before.items():
                setattr(self, name, value)
            raise

    def routine_spec(self) -> dict[str, Any]:
        """As every recipe's; after a fit, the sections as it ran them (:meth:`_as_run`): a
        batch of items at most the rows, ``pca_dims`` at most the features — in sections of
        one's own and plugins' blocks too — and the graph given as data where it was."""
        spec = super().routine_spec()
        fitted = self._fitted_on
        if not isinstance(fitted, dict) or not all(
                isinstance(fitted.get(k), int) for k in ("rows", "features")):
            return spec
        return self._as_run(spec, fitted["rows"], fitted["features"], bool(fitted.get("knn")))

    def _as_run(self, spec: dict[str, Any], rows: int, features: int, knn: bool
                ) -> dict[str, Any]:
        """``spec`` as a fit on ``rows`` × ``features`` runs it: item batches larger than the
        data set are the whole data set, a front end wider than the features all features
        (capped in the spec, so a plugin's items sampler with a `batch_size` field and any
        model block with a `pca_dims` field get what the built-ins get), and with ``knn`` the
        graph's k-NN relation reads the graph given as data (:meth:`_graph_from_knn`)."""
        phases = [{**p, "sampler": cap_fields("sampler", p["sampler"], {"batch_size": rows},
                                              batch_types=(ITEMS,))}
                  if isinstance(p, dict) and "sampler" in p else p for p in spec["phases"]]
        models = {name: cap_fields("model", model, {"pca_dims": features})
                  if isinstance(model, (str, dict)) else model
                  for name, model in spec["models"].items()}
        spec = {**spec, "phases": phases, "models": models}
        if knn:
            spec["globals"] = self._graph_from_knn(spec["globals"])
        return spec

    def _graph_from_knn(self, globals_: dict[str, Any]) -> dict[str, Any]:
        """The globals with the graph's k-NN relation replaced by the graph given as data:
        ``input = "knn"`` (the routine constant ``fit(X, knn=...)`` supplies) and relation
        ``precomputed_knn`` with the same ``n_neighbors``.  A relation of one's own there is
        left as it is (:meth:`build` refuses it with ``knn``)."""
        graph = globals_.get(self.graph_name)
        relation = graph.get("relation") if isinstance(graph, dict) else None
        name = relation.get("name") if isinstance(relation, dict) else relation
        if name not in ("neighbor_pdist", "precomputed_knn"):
            return globals_
        k = relation.get("n_neighbors") if isinstance(relation, dict) else None
        knn = {"name": "precomputed_knn", **({"n_neighbors": k} if isinstance(k, int) else {})}
        return {**globals_, self.graph_name: {**graph, "input": KNN_KEY, "relation": knn}}

    def _reads_knn(self, spec: dict[str, Any]) -> bool:
        """Whether the spec's graph reads the graph given as data."""
        graph = spec["globals"].get(self.graph_name)
        relation = graph.get("relation") if isinstance(graph, dict) else None
        name = relation.get("name") if isinstance(relation, dict) else relation
        return name == "precomputed_knn" or (isinstance(graph, dict)
                                             and graph.get("input") == KNN_KEY)

    def _knn_need(self, k: int) -> tuple[str, str]:
        """(what needs k neighbours, how to need fewer), for ``knn``'s messages."""
        return f"n_neighbors = {k}", "lower n_neighbors"

    def _checked_knn(self, knn: Any, n_rows: int, spec: dict[str, Any]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``knn`` as the graph's relation reads it: each row's k nearest (k: the relation's
        ``n_neighbors``), checked (:func:`~infoblocks.blocks.neighbors.precomputed_neighbors`)."""
        graph = spec["globals"].get(self.graph_name)
        relation = graph.get("relation") if isinstance(graph, dict) else None
        if not self._reads_knn(spec):
            name = relation.get("name") if isinstance(relation, dict) else relation
            raise ConfigError(
                f"{self.name}.globals.{self.graph_name}.relation is {name!r}, not the built-in "
                "k-NN search (\"neighbor_pdist\"): `knn` replaces that search with the graph "
                "you give. Drop `knn` to run your relation, or your relation to use the graph.")
        k = relation.get("n_neighbors") if isinstance(relation, dict) else None
        if not isinstance(k, int):
            k = attrs.fields(PrecomputedKNN).n_neighbors.default
        need, fix = self._knn_need(k)
        return precomputed_neighbors(knn, k, n_rows=n_rows, need=need, fix=fix)

    def _size_needs(self, spec: dict[str, Any] | None = None) -> list[tuple[int, str]]:
        """(smallest number of items, why) of every constraint on the data set's size."""
        spec = self.routine_spec() if spec is None else spec
        relation = (spec["globals"].get(self.graph_name) or {}).get("relation")
        k = relation.get("n_neighbors") if isinstance(relation, dict) else None
        needs = [(self.n_components + 1, f"n_components = {self.n_components} needs more "
                                         "points than dimensions")]
        if isinstance(k, int):
            needs.append((k + 1, f"n_neighbors = {k} needs k + 1 points for the k-NN graph"))
        return needs

    def min_items(self, spec: dict[str, Any] | None = None) -> int:
        """Smallest data set the routine accepts: k + 1 for the k-NN relation of the graph and
        ``n_components`` + 1 (more points than dimensions, as the spectral init needs)."""
        return max(need for need, _ in self._size_needs(spec))

    # ------------------------------------------------------------------ building

    def _encoder_module(self, in_dim: int, context: str = "") -> torch.nn.Module:
        """``encoder``, checked once on a (2, ``in_dim``) input (in eval mode, so that batch
        statistics are not touched): it must return (2, ``n_components``)."""
        module = self.encoder
        param = next(module.parameters(), None)
        probe = torch.zeros(2, in_dim, device=param.device if param is not None else "cpu")
        training = module.training
        module.eval()
        try:
            with torch.no_grad():  # check the user's module once, with a clear message
                out = module(probe)
        except Exception as exc:  # noqa: BLE001 - any failure of user code
            raise ValidationError(f"`encoder` failed on a (2, {in_dim}) input{context}: {exc}. It "
                                  f"must map (n, {in_dim}) to (n, {self.n_components}).") from None
        finally:
            module.train(training)
        _check(isinstance(out, torch.Tensor) and tuple(out.shape) == (2, self.n_components),
               f"`encoder` must map (n, {in_dim}) to (n, {self.n_components}){context}; on a "
               f"(2, {in_dim}) input it returned {tuple(getattr(out, 'shape', ()))}.")
        return module

    def build_models(self, spec: dict[str, Any], n_items: int, in_dim: int) -> dict[str, Any]:
        """Every model of ``spec["models"]`` with the data's sizes filled in (``encoder``, when
        given, is ``main``): ``n_items`` into any model, ``in_dim`` / ``out_dim`` (the data's
        width, ``n_components``) into the recipe's own only — a model added under ``models``
        states them."""
        models = {}
        if self.encoder is not None:
            if "main" in spec["models"]:
                raise ConfigError(f"{self.name}: `encoder` (a torch module) and `models.main` "
                                  "both set the encoder; remove one of them.")
            models["main"] = self._encoder_module(in_dim)
        own = set(self.default_models()) | {"main"}
        for name, model in spec["models"].items():  # (pca_dims at most in_dim: _as_run)
            # an added model (a decoder) states its own in_dim / out_dim: the encoder's are
            # rarely its own (author29-6: a decoder's `in_dim = 2` default became the data's 64)
            sizes = ({"in_dim": in_dim, "out_dim": self.n_components} if name in own
                     else {})
            models[name] = self.build_model(name, {"models": {name: model}}, n_items=n_items,
                                            **sizes)
        if "main" not in models:
            raise ConfigError(f"{self.name}: the routine needs an encoder `models.main` (a model "
                              "block such as \"mlp\") or `encoder` (a torch module).")
        return models

    def build(self, X: Any, *, knn: Any = None) -> Routine:
        """The :class:`Routine` that :meth:`fit` trains on ``X`` ``(n, d)``: every block of
        :meth:`routine_spec` built through the registry, as a fit on ``X`` runs it (batches
        and the front end capped at the data's size, recorded: :attr:`fitted_caps`; with
        ``knn`` the graph given as data)."""
        x = as_rows(X, "X", ndim=2)
        with self._record_kept_if_refused():  # (the record is the spec's: set, then checked)
            self._record_fit(int(x.shape[0]), int(x.shape[1]), knn is not None)
            spec = self.routine_spec()  # (as this fit runs it: _as_run)
            x = self._validate(x, spec)
            constants = None
            if knn is not None:
                constants = {KNN_KEY: self._checked_knn(knn, int(x.shape[0]), spec)}
            elif self._reads_knn(spec):
                raise ValidationError(
                    f"{self.name}.globals.{self.graph_name} reads a k-NN graph given as data "
                    f"(input = \"{KNN_KEY}\", relation \"precomputed_knn\": a config written "
                    "after fit(X, knn=...)): pass it again, fit(X, knn=(indices, distances)), "
                    "or remove those two keys to search the neighbours of X.")
            phases = self.build_phases(spec)
            routine = Routine(
                dataset=Dataset(data=x), models=self.build_models(spec, x.shape[0], x.shape[1]),
                global_relations=self.build_globals(spec), phases=phases, constants=constants,
                device=self.device, seed=self.seed, verbose=self.verbose)
            self._check_anchor(phases)
            self._check_schedule_shortcut(spec)
        for phase in phases:  # losses that embed cached front-end outputs need no data rows
            losses, sampler = _parts(phase.loss), phase.sampler
            if isinstance(sampler, NegativeEdgeSampler) and sampler.keys is None and all(
                    isinstance(loss, RelationLoss) and loss.model in routine.models
                    and loss.cache_front_end and front_end_of(routine.models[loss.model])
                    for loss in losses):
                sampler.keys = ()
        return routine

    def _check_init_reach(self, routine: Routine, positions: torch.Tensor) -> None:
        """A warning where the network could not reach the layout in the ``init`` phase (its
        last mean squared distance above a quarter of the layout's variance): f then starts
        the main phase far from ``embedding_``'s frame (author7: a tanh output reached 30 of
        the layout's 43 — f(X) trust@15 0.817 against 0.954 with the default output)."""
        rows = [r for r in routine.history.rows if r.get("phase") == "init" and "loss" in r]
        if not rows or "layout" not in routine.models:
            return
        layout = positions.double()
        spread = float((layout - layout.mean(0)).pow(2).sum(1).mean())
        residual = float(rows[-1]["loss"])
        if spread > 0 and residual > 0.25 * spread:
            spec = routine.model_specs.get("main") or {}
            network = f"the network {spec['name']!r}" if spec.get("name") else "the network"
            # the output layer: the last leaf module (a tanh hidden layer before a Linear one
            # is not a bounded output — author19 F7: the advice blamed one)
            leaves = [m for m in routine.models["main"].modules() if not list(m.children())]
            bounded = bool(leaves) and isinstance(
                leaves[-1], (torch.nn.Tanh, torch.nn.Sigmoid, torch.nn.Hardtanh)) or \
                spec.get("output_activation") in ("tanh", "sigmoid")
            fix = ("Its bounded output (tanh / sigmoid) cannot reach the layout's scale: use "
                   "the identity output." if bounded else
                   "Give the init phase more epochs (`init_epochs`) or a larger "
                   "`init_learning_rate`, or the network more capacity.")
            warnings.warn(
                f"{self.name}: after the init phase {network} (models.main) is {residual:.3g} "
                f"(mean squared distance) from the layout, whose variance is {spread:.3g}: it "
                f"cannot reach the layout, and f(X) / `transform` start far from `embedding_`. "
                f"{fix}", UserWarning, stacklevel=3)

    def _check_schedule_shortcut(self, spec: dict[str, Any]) -> None:
        """A ``ShortcutWarning`` where ``lr_schedule``, set away from its default, fills only
        phases that run no epoch: t-SNE's shortcut fills ``phases.main``, which has 0 epochs
        with a layout (the default), so the schedule reached nothing, silently (author16 F9).
        UMAP's fills ``main`` too, which trains by default; its layout phase keeps "cos"
        (docs/plugins.md, "Add a learning-rate schedule")."""
        field = attrs.fields_dict(type(self)).get("lr_schedule")
        if field is None or self.lr_schedule == field.default:
            return
        try:
            unset = attrs.evolve(self, lr_schedule=field.default).default_phases()
        except Exception:  # noqa: BLE001 - not comparable: nothing to say
            return
        before = {p.get("name"): p.get("lr_schedule") for p in unset}
        filled = [p["name"] for p in self.default_phases()
                  if p.get("lr_schedule") != before.get(p.get("name"))]
        epochs = {p.get("name"): p.get("epochs", 0) for p in spec["phases"]}
        if not filled or any(epochs.get(name, 0) > 0 for name in filled):
            return
        trained = [p for p in spec["phases"] if p.get("epochs", 0) > 0]
        training = [f"{p.get('name')!r} (lr_schedule {p.get('lr_schedule', 'none')!r})"
                    for p in trained]
        where = ", ".join(f"`phases.{name}`" for name in filled)
        first = trained[0].get("name") if trained else "layout"
        warn_once(self, ShortcutWarning(
            f"{self.name}: `lr_schedule` = {self.lr_schedule!r} reaches no phase that trains: "
            f"it fills {where}, which runs 0 epochs"
            + (f"; the phases that train are {', '.join(training)}" if training else "")
            + f". Set the schedule on the phase that should follow it (`[[phases]] name = "
            f"\"{first}\"` with `lr_schedule = ...`), or give {where} epochs (`epochs` > 0)."),
            stacklevel=4)

    def _check_anchor(self, phases: list[Any]) -> None:
        """A ``ShortcutWarning`` where the recipe anchors the network to the layout
        (``anchor_strength`` > 0) but the main phase's loss reads no layout: f then learns a
        map in a frame of its own, and ``transform`` (its start, and ``refine=False``) is not
        comparable with ``embedding_`` (author7: held-out digits' 10-NN 0.650 against 0.937)."""
        by_name = {phase.name: phase for phase in phases}
        if getattr(self, "anchor_strength", 0) <= 0 or "layout" not in by_name or \
                "main" not in by_name:
            return
        loss = by_name["main"].loss
        if "layout" in loss.required_models():
            return
        name = getattr(loss, "name", type(loss).__name__)
        warn_once(self, ShortcutWarning(
            f"{self.name}: `anchor_strength` = {self.anchor_strength} reaches no block: the "
            f"main phase's loss {name!r} does not read the layout, so the network f learns a "
            "map in a frame of its own and `transform` (its start, and `refine=False`) is not "
            "comparable with `embedding_`. Keep the anchor beside your loss: `loss = { name = "
            f"\"compound\", losses = [{{ name = \"{name}\" }}, {{ name = \"anchored_relation\", "
            f"anchor_model = \"layout\" }}], weights = [1.0, {self.anchor_strength}] }}`, or "
            "set `anchor_strength = 0` to train f on its own (docs/plugins.md, \"Which phase\")."),
            stacklevel=4)

    def _validate(self, X: Any, spec: dict[str, Any] | None = None) -> torch.Tensor | LazyRows:
        x = as_rows(X, "X", ndim=2)  # a memory-mapped array / torch Dataset stays on disk
        needs = self._size_needs(spec)
        need = max(n for n, _ in needs)
        _check(x.shape[0] >= need, f"`X` has {x.shape[0]} samples; {type(self).__name__} with "
                                   f"these settings needs at least {need} ("
                                   + "; ".join(why for n, why in needs if n > x.shape[0]) + ").")
        return x

    # ------------------------------------------------------------------ scikit-learn API

    def fit(self, X: Any, y: Any = None, *, knn: Any = None,
            checkpoint: str | Path | None = None,
            resume: bool | str | Path = False) -> EmbeddingRecipe:
        """Learn the embedding of ``X`` ``(n, d)``; ``y`` is accepted for scikit-learn
        compatibility and ignored (with a warning).  Returns ``self``.

        ``X`` may be a memory-mapped array (``np.load(path, mmap_mode="r")``) or a torch
        ``Dataset`` of rows: training batches read only their rows (the k-NN graph reads it
        whole once).  ``checkpoint``: a directory that keeps the whole training state
        (written atomically every epoch); ``resume=True`` (or ``resume=DIR``) continues a
        killed fit from it.  ``warm_start=True``: a second fit on the same data continues the
        network with its last training phase (UMAP's ``main``; t-SNE's network regression
        onto the layout) and that phase's optimizer state, for its epochs again; on other data
        of the same shape the data's graph and layout are computed afresh and every phase runs,
        the network starting from its fitted weights.

        ``knn=(indices, distances)``, each ``(n, k)``: the k-NN graph of ``X``'s rows computed
        elsewhere (any distance; umap-learn's ``precomputed_knn``) in place of the search by
        ``metric``: row i's nearest rows and their distances, at least the k the graph needs
        (``n_neighbors``; t-SNE: ⌈3 × perplexity⌉); a row's own index is dropped, as the
        search leaves it out.  Or ``knn=D``, a square ``(n, n)`` distance matrix (umap-learn's
        ``metric="precomputed"``): each row's k nearest entries, the diagonal left out.
        ``transform`` then places new rows given their neighbours among the training rows,
        ``transform(X_new, knn=...)`` (docs/umap.md)."""
        if y is not None:  # (author22-2: umap-learn's fit(X, y) is supervised; this one is not)
            warn_once(self, UserWarning(
                f"{self.name}: `y` is ignored — the fit is unsupervised (y is accepted for "
                "scikit-learn pipelines). To train with labels, write a routine: `recipe = "
                "\"routine\"`, `arrays = [\"data\", \"labels\"]` and a loss that reads "
                "`labels` (docs/plugins.md, \"A routine of your own\")."), stacklevel=2)
        resolve_device(self.device)
        start = time.perf_counter()
        refines = self.refines  # the placement block is built (and checked) before training
        warm = self.warm_start and self.routine_ is not None
        names = feature_names(X)
        if warm:  # the fitted network reads the columns by position
            check_feature_names(self.feature_names_in_, X, type(self).__name__)
        with self._record_kept_if_refused():  # (until routine_ is this fit's)
            routine = self._continued(X, knn) if warm else None
            if routine is None:  # a new fit (or other data: the fitted network carried over)
                previous = self.routine_ if warm else None
                routine = self.build(X, knn=knn)
                if previous is not None:
                    routine.models["main"].load_state_dict(previous.models["main"].state_dict())
                warm = False
            routine.compute_global_relations()
            relations_done = time.perf_counter()
            timer = _PhaseTimer()
            routine.callbacks = [c for c in routine.callbacks if not isinstance(c, _PhaseTimer)]
            routine.callbacks.append(timer)
            with intra_op_threads(self.threads):
                # a warm start continues the network's last training phase, not the earlier
                self.train_routine(routine, checkpoint=checkpoint, resume=resume,
                                   warm_start=warm,
                                   phases=[self._continued_phase(routine)] if warm else None)
        trained = time.perf_counter()
        self.routine_ = routine
        self.n_features_in_ = int(routine.dataset["data"].shape[1])
        self.feature_names_in_ = names
        positions = self._training_positions(routine)
        self.embedding_ = positions.numpy()
        self._reference = (routine.dataset["data"], positions) if refines else None
        self.history_ = routine.history.rows
        self._check_init_reach(routine, positions)
        self.timings_ = {"relations_s": relations_done - start, "train_s": trained - relations_done,
                         **{f"{name}_s": value for name, value in timer.seconds.items()},
                         "total_s": time.perf_counter() - start}
        return self

    def _continued(self, X: Any, knn: Any = None) -> Routine | None:
        """The fitted routine (warm start on the same data and graph), or None for other data
        with the fitted number of features, any number of rows (a new routine then starts
        from the fitted network: graph and layout afresh), in memory as after ``load``
        (author29-5: in memory another number of rows was refused, a loaded model took it)."""
        routine = self.routine_
        x = self._validate(X)
        fitted = (self.n_features_in_ if routine.dataset is None  # (load keeps no data)
                  else int(routine.dataset["data"].shape[1]))
        _check(fitted is None or x.shape[1] == fitted,
               f"warm_start=True continues the fitted network, fitted on {fitted} features; "
               f"`X` has {x.shape[1]}. Set warm_start=False for a new fit on these features.")
        if routine.dataset is None:  # X is new data, its graph and layout made afresh
            return None
        before = routine.dataset["data"]
        if tuple(x.shape) != tuple(before.shape):  # other rows: as a loaded model's warm fit
            return None
        same = x is before or (isinstance(x, torch.Tensor) and isinstance(before, torch.Tensor)
                               and torch.equal(x, before))
        graph = routine.constants.get(KNN_KEY)
        if same and (graph is None) != (knn is None):
            return None  # the graph searched, now given (or the other way): a new routine
        if same and knn is not None:
            spec = self._as_run(super().routine_spec(), x.shape[0], x.shape[1], True)
            given = self._checked_knn(knn, int(x.shape[0]), spec)
            same = all(torch.equal(a, b) for a, b in zip(given, graph))
        return routine if same else None

    @staticmethod
    def _continued_phase(routine: Routine) -> str:
        """The last phase with epochs that trains the network (``main``)."""
        for phase in reversed(routine.phases):
            if phase.epochs > 0 and (phase.trainable is None or "main" in phase.trainable):
                return phase.name
        raise ValidationError("warm_start=True: no phase trains the network (every phase that "
                              "trains `main` has 0 epochs); give one epochs, or set "
                              "warm_start=False.")

    def _embed(self, x: torch.Tensor | LazyRows, batch_size: int = 4096) -> torch.Tensor:
        """The trained network on ``x`` in batches (lazily read rows a chunk at a time)."""
        if isinstance(x, LazyRows):
            return torch.cat([self.routine_.apply(chunk, batch_size=batch_size)
                              for chunk in x.chunks()])
        return self.routine_.apply(x, batch_size=batch_size)

    #: neighbours of a new point in the placement: None = the graph relation's k
    placement_neighbors: ClassVar[int | None] = None
    #: local connectivity of the placement's memberships (umap-learn's transform: the fit's − 1)
    placement_connectivity: ClassVar[float] = 0.0
    #: ``[evaluation] placement``: the block (kind ``placement``) that :meth:`transform` places
    #: new points with; a plugin's by name (docs/plugins.md)
    evaluation_kinds: ClassVar[dict[str, str]] = {"placement": "placement"}
    #: the placement is built from the settings at every fit and transform
    warm_fit_reads: ClassVar[frozenset[str]] = frozenset({"evaluation"})

    def default_evaluation(self) -> dict[str, Any]:
        """``placement``: umap-learn's ``transform`` objective with the fit's kernel
        (``cross_entropy``; ``transform_epochs`` / ``transform_learning_rate`` fill its steps);
        none with ``transform_epochs=0`` (new points are the network's)."""
        if not self.transform_epochs:
            return {}
        return {"placement": _without_none({
            "name": "cross_entropy", "epochs": self.transform_epochs,
            "learning_rate": self.transform_learning_rate,
            "n_neighbors": self.placement_neighbors,
            "local_connectivity": self.placement_connectivity})}

    @property
    def refines(self) -> bool:
        """Whether :meth:`transform` places the network's points among the training ones
        (an ``[evaluation] placement`` block: by default while ``transform_epochs`` > 0)."""
        return self._placement() is not None

    def _placement(self) -> Placement | None:
        """The ``[evaluation] placement`` block, or None."""
        spec = self.routine_spec()
        if spec["evaluation"].get("placement") is None:
            return None
        return self.build_evaluation("placement", spec)

    def _training_positions(self, routine: Routine) -> torch.Tensor:
        """The in-sample embedding ``embedding_``, what new points are placed among: the free
        coordinates of the ``layout`` model where a phase trained them (the layout phase:
        umap-learn's / openTSNE's embedding), else the network on the training data."""
        layout = routine.models["layout"] if "layout" in routine.models else None
        trained = any(phase.epochs > 0 and "layout" in (phase.trainable or ())
                      for phase in routine.phases)
        if not trained or layout is None:
            return self._embed(routine.dataset["data"])
        # the layout model, built-in or a plugin's: index (m,) -> (m, n_components)
        n = routine.dataset.n_items
        was_training = layout.training
        layout.eval()
        with torch.no_grad():
            index = torch.arange(n, device=routine.device)
            positions = torch.cat([layout(index[i:i + 65536]) for i in range(0, n, 65536)])
        layout.train(was_training)
        _check(tuple(positions.shape) == (n, self.n_components),
               f"The layout model gives positions of shape {tuple(positions.shape)} for the "
               f"{n} items; `models.layout` must map the item indices (m,) to (m, "
               f"{self.n_components}) (docs/plugins.md, the layout slot).")
        return positions.detach().cpu().float()

    def _default_kernel(self) -> Any:
        """The kernel spec of the placement when the fit's last phase has none with a logit."""
        return "student_t"

    def _placement_blocks(self, placement: Placement, metric_needed: bool = True
                          ) -> tuple[Any, int, Any]:
        """(distance block, k, kernel) of the fit: the graph's k-NN relation (k: the
        placement's ``n_neighbors`` if it sets one) and the layout's kernel, else the last
        phase's (plugins' blocks included), else those of the recipe's settings.  The
        distance is None unless ``metric_needed`` (new rows' neighbours given)."""
        relation = self._graph_relation()
        k = getattr(relation, "n_neighbors", None)
        metric = self._placement_metric(relation) if metric_needed else None
        registry = get_registry()
        if not isinstance(k, int):
            k = getattr(self, "n_neighbors", None) or 15
        wanted = getattr(placement, "n_neighbors", None)
        if wanted is not None:
            k = wanted
        # the kernel the map was made with: the layout phase's (new points are placed among
        # its positions), else the last phase's
        phases = self.routine_.phases
        kernels = [loss.kernel for phase in [p for p in phases if p.name == "layout"]
                   + phases[-1:] for loss in _parts(phase.loss)
                   if callable(getattr(getattr(loss, "kernel", None), "logit", None))]
        kernel = kernels[0] if kernels else registry.build("transform", self._default_kernel())
        return metric, k, kernel

    def _placement_metric(self, relation: Any) -> Any:
        """The distance block new rows' neighbours are found by: the graph relation's
        ``metric``, else the recipe's (with a warning where the relation has neither a metric
        nor a ``query``)."""
        metric = getattr(relation, "metric", None)
        registry = get_registry()
        if metric is not None and not callable(getattr(metric, "pairwise", None)):
            # a relation's `metric` field holding a distance's name (the recipe fills its
            # `metric` shortcut in as one) or its table: the block it names
            where = f"{self.name}.globals.{self.graph_name}.relation.metric"
            if isinstance(metric, dict) or (isinstance(metric, str)
                                            and ("distance", metric) in registry):
                metric = registry.build("distance", metric, path=where)
            else:
                warnings.warn(
                    f"{type(self).__name__}.transform: `{where}` holds {metric!r}, not a "
                    "distance block or a registered distance's name, so new points' "
                    f"neighbours are found by the recipe's metric ({self._metric_spec()!r}).",
                    stacklevel=4)
                metric = registry.build("distance", self._metric_spec())
        if metric is None and relation is not None and not callable(
                getattr(relation, "query", None)):
            warnings.warn(
                f"{type(self).__name__}.transform: the graph's relation "
                f"{getattr(relation, 'name', relation)!r} has neither a `metric` field nor a "
                "`query(x_new, rows, k)` method, so new points' neighbours are found by the "
                f"recipe's metric ({self._metric_spec()!r}); give the relation one of them "
                "(docs/plugins.md, the relation slot).", stacklevel=4)
        if metric is None:
            metric = registry.build("distance", self._metric_spec())
        return metric

    def _graph_relation(self) -> Any:
        """The fit's k-NN relation block (the ``graph`` global's), or None."""
        graph = (self.routine_.global_relations or {}).get(self.graph_name)
        return getattr(graph, "relation", None)

    def _fitted_on_knn(self) -> bool:
        """Whether the fit's graph was given as data (``fit(X, knn=...)``)."""
        graph = (self.routine_.global_relations or {}).get(self.graph_name)
        return getattr(graph, "input", None) == KNN_KEY

    def _neighbours(self, x: torch.Tensor, rows: torch.Tensor | LazyRows, k: int, metric: Any
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` nearest training rows of each new point: the graph relation's own
        ``query(x_new, rows, k) -> (indices (m, k) long, distances (m, k))`` where it has one
        (a plugin's k-NN search), else an exact or pynndescent search by ``metric``."""
        relation = self._graph_relation()
        if not callable(getattr(relation, "query", None)):
            return query_knn(x, rows, k, metric)
        where = f"{self.name}.globals.{self.graph_name}.relation"
        with naming_blocks(where):  # an error inside the plugin's query names it
            out = relation.query(x, rows_for(relation, rows), k)
        ok = isinstance(out, (tuple, list)) and len(out) == 2 and all(
            isinstance(t, torch.Tensor) and tuple(t.shape) == (len(x), k) for t in out)
        if not ok:
            raise PluginError(f"{where}: relation {relation.name!r}.query(x_new, rows, k) must "
                              f"return (indices, distances), each ({len(x)}, {k}).")
        return out[0].long(), out[1].float()

    def _refine(self, x: torch.Tensor | LazyRows, y: torch.Tensor, knn: Any = None
                ) -> torch.Tensor:
        """New points ``y = f(x)`` placed among the training positions by the ``[evaluation]
        placement`` block, given their k nearest training rows (the fit's distance, or
        ``knn``: given as data) and the fit's kernel (by default
        :class:`~infoblocks.blocks.embedding.placement.CrossEntropyPlacement`: umap-learn's
        ``transform`` objective)."""
        placement = self._placement()
        if placement is None:
            return y
        if self._reference is None:
            warnings.warn(f"{type(self).__name__}.transform: this model keeps no training rows "
                          "(saved without them), so new points are the network's, unrefined; "
                          "refit to refine them, or pass refine=False to silence this.",
                          stacklevel=3)
            return y
        if knn is None and self._fitted_on_knn():
            warnings.warn(
                f"{type(self).__name__}.transform: the model was fitted on a k-NN graph given "
                "as data (fit(X, knn=...)), so the neighbours of the new rows among the training "
                "rows are unknown: these are the network's points, not placed among the "
                "training positions. Pass transform(X_new, knn=(indices, distances)) — each new "
                "row's nearest training rows, in the graph's distance — to place them, or "
                "refine=False for the network's points without this warning.", stacklevel=3)
            return y
        rows, positions = self._reference  # training rows on disk stay there (read in chunks)
        rows = rows if isinstance(rows, LazyRows) else rows.float().cpu()
        x = x.take(slice(None)) if isinstance(x, LazyRows) else x
        metric, k, kernel = self._placement_blocks(placement, metric_needed=knn is None)
        k = min(k, rows.shape[0])
        if knn is None:
            neighbours, distances = self._neighbours(x.float().cpu(), rows, k, metric)
        else:
            neighbours, distances = precomputed_neighbors(
                knn, k, n_rows=int(x.shape[0]), n_reference=int(rows.shape[0]),
                need=f"the placement of new rows among k = {k} training rows",
                fix="pass refine=False for the network's points")
            distances = distances.float()
        context = PlacementContext(kernel=kernel, seed=self.seed,
                                   neg_sampling_rate=getattr(self, "neg_sampling_rate", 5),
                                   repulsion_strength=getattr(self, "repulsion_strength", 1.0))
        start = y.float()
        try:
            out = placement.place(start, neighbours, distances, positions.float(), context)
        except (ValidationError, ConfigError):
            raise
        except Exception as exc:
            raise PluginError(f"{self.name}.evaluation.placement: placement "
                              f"{placement.name!r}.place failed ({type(exc).__name__}: {exc}); "
                              "see docs/plugins.md for its arguments, or pass refine=False "
                              "for the network's points.") from exc
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(start.shape):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise PluginError(f"{self.name}.evaluation.placement: placement {placement.name!r} "
                              f"returned {shape} for {tuple(start.shape)} new points; place() "
                              "must return one position per new point, (m, n_components).")
        if not torch.isfinite(out).all():
            raise PluginError(f"{self.name}.evaluation.placement: placement {placement.name!r} "
                              "returned non-finite positions; check its arithmetic (or pass "
                              "refine=False for the network's points).")
        return out.detach().to(y.dtype)

    def transform(self, X: Any, batch_size: int = 4096, refine: bool | None = None, *,
                  knn: Any = None) -> np.ndarray:
        """Embed new data ``(m, d) -> (m, n_components)`` with the trained network, in batches
        (a memory-mapped array or torch Dataset is read a chunk at a time); recipes that
        refine new points among the training positions do so unless ``refine=False``.

        ``knn=(indices, distances)``, each ``(m, k)``: each new row's nearest TRAINING rows
        (indices into the X of the fit) and their distances, in place of the search by the
        fit's distance — needed to place new rows after ``fit(X, knn=...)``, where without it
        the network's points are returned with a warning; k at least the placement's (the
        graph's ``n_neighbors``; t-SNE: 15); or ``knn=D``, the ``(m, n)`` distances of the new
        rows to the n training rows (its k nearest per row are taken).  Unused with
        ``refine=False``."""
        self._check_fitted()
        _check(refine is None or isinstance(refine, (bool, np.bool_)),
               f"`refine` must be True, False or None (the recipe's default), got {refine!r}.")
        check_feature_names(self.feature_names_in_, X, type(self).__name__)
        x = as_rows(X, "X", ndim=2)
        _check(x.shape[1] == self.n_features_in_,
               f"`X` has {x.shape[1]} features but the model was fitted on "
               f"{self.n_features_in_}; pass data with the same columns.")
        y = self._embed(x, batch_size)
        if refine is None or refine:
            y = self._refine(x, y, knn)
        return y.numpy()

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """:meth:`fit` then the embedding of ``X`` ``(n, n_components)``."""
        return self.fit(X, y).embedding_

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write the trained network and the recipe's expanded routine (``to_dict(full=True)``:
        every block of every slot) into directory ``path``; :meth:`load` rebuilds both."""
        self._check_fitted()
        path = self.routine_.save(path, extra={"recipe": self.to_dict(full=True),
                                               "n_features_in": self.n_features_in_,
                                               "feature_names_in": None if self.feature_names_in_
                                               is None else list(self.feature_names_in_),
                                               "fitted_on": self._fitted_on})
        if self._reference is not None and self.routine_.dist.is_main:
            rows, positions = self._reference
            saved = {"positions": positions.detach().cpu()}
            if isinstance(rows, LazyRows):  # rows on disk: copied a chunk at a time, loaded mmap
                tmp_rows = path / (REFERENCE_ROWS_FILE + ".tmp.npy")
                out = np.lib.format.open_memmap(tmp_rows, mode="w+", dtype=np.float32,
                                                shape=tuple(rows.shape))
                start = 0
                for chunk in rows.chunks():
                    out[start:start + chunk.shape[0]] = chunk.float().numpy()
                    start += chunk.shape[0]
                out.flush()
                del out
                tmp_rows.replace(path / REFERENCE_ROWS_FILE)
                saved["rows_file"] = REFERENCE_ROWS_FILE
            else:
                saved["rows"] = rows.detach().cpu()
            tmp = path / (REFERENCE_FILE + ".tmp")
            torch.save(saved, tmp)
            tmp.replace(path / REFERENCE_FILE)
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: torch.nn.Module | None = None,
             device: str | torch.device = "cpu") -> EmbeddingRecipe:
        """A fitted recipe from :meth:`save` (pass ``encoder`` again if it was a custom module:
        it is checked up front to map the saved number of features to ``n_components``)."""
        path = Path(path)
        check_saved_recipe(cls, path)  # another recipe's save: named, with its loader
        resolve_device(device)
        _module_or_none(None, None, encoder)
        extra = _saved_extra(path) if encoder is not None else None
        if extra is not None and "recipe" in extra and "n_features_in" in extra:
            try:
                saved = cls.from_dict(extra["recipe"])
                in_dim = int(extra["n_features_in"])
            except Exception:  # noqa: BLE001 - a damaged save: reported below, as without encoder
                saved = None
            if saved is not None:
                saved.encoder = encoder
                saved._encoder_module(in_dim, context=f" (the model saved in {path} maps "
                                                      f"{in_dim} features to "
                                                      f"{saved.n_components})")
        if encoder is None and _saved_custom_encoder(path):  # (Routine.load's names its own)
            raise ValidationError(
                f"{path}: the encoder was a custom torch module (`encoder=` at fit), which a "
                f"save keeps the weights of, not the code; pass it again: "
                f"{cls.__name__}.load(path, encoder=module), with a module of the same "
                "architecture (its weights are loaded from the save).")
        routine = Routine.load(path, models=None if encoder is None else {"main": encoder},
                               device=device)
        extra = getattr(routine, "saved_extra", {})
        if "recipe" not in extra:
            raise ValidationError(f"{path} holds a routine but no {cls.name!r} settings; was it "
                                  f"written by {cls.__name__}.save?")
        recipe = cls.from_dict(extra["recipe"])
        recipe.encoder = encoder
        recipe.routine_ = routine
        recipe.history_ = routine.history.rows
        recipe.n_features_in_ = int(extra["n_features_in"])
        if extra.get("feature_names_in") is not None:
            recipe.feature_names_in_ = np.asarray(extra["feature_names_in"], dtype=object)
        recipe._restore_record(extra)
        if recipe.refines and (path / REFERENCE_FILE).exists():
            try:
                saved = torch.load(path / REFERENCE_FILE, map_location="cpu", weights_only=True)
                positions = saved["positions"]
                if "rows_file" in saved:  # training rows that were on disk: read lazily again
                    rows = LazyRows(np.load(path / str(saved["rows_file"]), mmap_mode="r"))
                    _check(tuple(rows.shape[:1]) == tuple(positions.shape[:1]),
                           f"{saved['rows_file']} has {rows.shape[0]} rows for "
                           f"{positions.shape[0]} positions")
                else:
                    rows = saved["rows"]
            except Exception as exc:  # noqa: BLE001 - any damage: one clear message
                why = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise ValidationError(f"{path / REFERENCE_FILE} (the training rows and positions "
                                      f"that transform places new points among) cannot be read "
                                      f"({why}). Save the model again, or delete the file to "
                                      "load the network alone (transform then warns).") from None
            recipe._reference = (rows, positions)
            recipe.embedding_ = positions.numpy()
        return recipe

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        """As every recipe's; with ``full`` after a fit the sections hold what ran
        (:meth:`routine_spec`), and the ``expanded_from`` table the fitted shortcuts
        (``pca_dims_`` ...: :attr:`fitted_caps`) they were expanded from: the file reads back
        without a conflict with a value set above the data's size, and its hyperparameters as
        set are the ones a new fit starts from."""
        out = super().to_dict(full)
        expanded = out.get(EXPANDED_KEY) if full else None
        for name in self.fitted_caps if isinstance(expanded, dict) else ():
            fitted = getattr(self, f"{name}_", None)
            if fitted is not None and name in expanded:
                expanded[name] = fitted
        written = expanded.get(WRITTEN_SECTIONS_KEY) if isinstance(expanded, dict) else None
        if isinstance(written, dict) and self._fitted_on is not None:
            expanded[WRITTEN_SECTIONS_KEY] = _written_as_run(written, out)
        return out

    def _restore_record(self, extra: dict[str, Any]) -> None:
        """The record of the fit from a save's ``extra`` (:meth:`save`): the fitted shortcuts
        from the full form's ``expanded_from`` (see :meth:`to_dict`), what it ran on."""
        expanded = (extra.get("recipe") or {}).get(EXPANDED_KEY) or {}
        for name in self.fitted_caps:
            if isinstance(expanded.get(name), int) and not isinstance(expanded[name], bool):
                setattr(self, f"{name}_", expanded[name])
        fitted = extra.get("fitted_on")
        self._fitted_on = fitted if isinstance(fitted, dict) else None

    # ------------------------------------------------------------------ figures

    def plot(self, path: str | Path, X: Any = None, labels: Any = None,
             title: str | None = None) -> Path:
        """Scatter plot of the embedding (of ``X`` if given, else of the training data),
        coloured by ``labels``, written as a PNG to ``path``."""
        from matplotlib.figure import Figure

        self._check_fitted()
        y = self.embedding_ if X is None else self.transform(X)
        if y is None:
            raise NotFittedError("No stored embedding (a loaded model): pass `X` to plot().")
        fig = Figure(figsize=(6, 5.5), dpi=100)
        ax = fig.add_subplot()
        colours, names = self._label_colours(labels, len(y))
        points = ax.scatter(y[:, 0], y[:, 1] if y.shape[1] > 1 else np.zeros(len(y)),
                            c=colours, cmap="tab10" if colours is not None else None, s=3,
                            alpha=0.8, linewidths=0)
        if colours is not None and len(np.unique(colours)) <= 20:
            bar = fig.colorbar(points, ax=ax, ticks=np.unique(colours))
            if names is not None:
                bar.set_ticklabels([str(name) for name in names])
        ax.set_title(title or f"{type(self).__name__}")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.tight_layout()
        return save_figure(fig, path)

    @staticmethod
    def _label_colours(labels: Any, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``labels`` as the scatter's colours: one per point (a column vector flattened);
        labels that are not numbers (class names) as codes, with their names for the colour
        bar; NaN refused (matplotlib raised on each of these)."""
        if labels is None:
            return None, None
        colours = np.asarray(labels)
        if colours.ndim == 2 and colours.shape[1] == 1:
            colours = colours.reshape(-1)
        _check(colours.ndim == 1 and len(colours) == n,
               f"`labels` must hold one label per point ({n}), got shape {colours.shape}.")
        if not (np.issubdtype(colours.dtype, np.number) or colours.dtype == bool):
            names, codes = np.unique(colours.astype(str), return_inverse=True)
            return codes, names
        bad = int((~np.isfinite(colours.astype(float))).sum())
        _check(bad == 0, f"`labels` has {bad} NaN / inf entries; give every point a label (or "
                         "plot the labelled points only).")
        return colours, None

    # ------------------------------------------------------------------ command line

    def run(self, data: list[np.ndarray], out_dir: Path, **fit_options: Any) -> dict[str, Any]:
        """Fit on ``data[0]`` (``data[1]``, if given, are labels for the figure and the k-NN
        accuracy); save the model, ``embedding.npy`` and ``embedding.png`` into ``out_dir``.
        ``fit_options`` (``checkpoint``, ``resume``) go to :meth:`fit`."""
        from infoblocks.blocks.embedding_quality import labelled_knn_accuracy, trustworthiness

        _check(1 <= len(data) <= 2, f"{self.name} takes one array (X) and optionally labels, "
                                    f"got {len(data)} arrays.")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        labels = None if len(data) < 2 else np.asarray(data[1])
        if labels is not None:  # checked before training, not after it
            n = len(data[0])
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels.reshape(-1)
            _check(labels.ndim == 1 and len(labels) == n,
                   f"the second --data of {self.name} are labels for the figure and the 10-NN "
                   f"accuracy, one per row of X ({n} rows); got shape {labels.shape}. Pass X "
                   "alone, or one label per row.")
            self._label_colours(labels, n)  # NaN labels: refused before the fit, not after
        self.fit(data[0], **fit_options)
        self.save(out_dir / MODEL_DIR)
        np.save(out_dir / "embedding.npy", self.embedding_)
        self.plot(out_dir / "embedding.png", labels=labels)
        x = as_rows(data[0], "X", ndim=2)
        summary = {"n_items": int(x.shape[0]), "n_features": int(x.shape[1]),
                   "fit_seconds": round(self.timings_["total_s"], 2),
                   "model": str(out_dir / MODEL_DIR), "embedding": str(out_dir / "embedding.npy")}
        if not isinstance(x, LazyRows) or x.shape[0] <= TRUSTWORTHINESS_MAX_ITEMS:
            # all-pairs ranks: read whole, so only for data of a size that fits
            x = x.take(slice(None)) if isinstance(x, LazyRows) else x
            summary["trustworthiness_15"] = trustworthiness(x, self.embedding_, k=15)
            network = self.transform(x, refine=False)
            if not np.allclose(network, self.embedding_, atol=1e-5):
                # a layout phase made embedding_: the network that embeds new points is scored
                # too (a loss in phases.main changes only this one; docs/plugins.md)
                summary["network_trustworthiness_15"] = trustworthiness(x, network, k=15)
        if labels is not None:
            # (labels < 0: unlabelled, left out; knn_scored_rows says how many were scored)
            summary.update(labelled_knn_accuracy(self.embedding_, labels, k=10))
        return summary

    @classmethod
    def _demo(cls, recipe: EmbeddingRecipe, out_dir: Path, figure: str) -> dict[str, Any]:
        from infoblocks.blocks.embedding_quality import knn_accuracy, trustworthiness

        digits = get_registry().build("dataset", "digits").load()
        x, labels = digits["data"], digits["target"]
        recipe.fit(x)
        out_dir = Path(out_dir)
        path = recipe.plot(out_dir / figure, labels=labels,
                           title=f"{cls.__name__} of the 8x8 digits (1,797 x 64)")
        return {"trustworthiness_15": round(trustworthiness(x, recipe.embedding_, k=15), 4),
                "knn_accuracy_10": round(knn_accuracy(recipe.embedding_, labels, k=10), 4),
                "fit_seconds": round(recipe.timings_["total_s"], 2), "figure": str(path)}

    @property
    def graph_(self) -> Any:
        """The global relations of the fit (e.g. the UMAP graph), by name."""
        self._check_fitted()
        return self.routine_.compute_global_relations()


@attrs.define(kw_only=True)
class ParametricUMAP(EmbeddingRecipe):
    """Parametric UMAP (see the module docstring for the method).

    ``n_neighbors`` nearest neighbours (the point itself not counted), ``min_dist`` / ``spread``
    set a, b of q = 1/(1 + a d^{2b}); ``init`` "spectral" | "pca" | "none" is learned for
    ``init_epochs``; the main phase draws ``batch_size`` edges ∝ p_ij per step with
    ``neg_sampling_rate`` negatives each, ``batches_per_epoch`` steps per epoch.

    Slots (``infoblocks config parametric_umap --full``): ``globals.graph.relation`` (k-NN,
    its ``metric`` a distance), ``globals.graph.transforms`` (affinities),
    ``globals.positions.transforms`` (init), ``models.main`` (encoder), ``models.layout``
    (free coordinates, with ``layout_epochs`` > 0), and per phase ``sampler``, ``loss``,
    ``loss.kernel``.
    """

    name: ClassVar[str] = "parametric_umap"
    fitted_caps: ClassVar[dict[str, str]] = {**EmbeddingRecipe.fitted_caps,
                                             "init_batch_size": "rows"}
    summary: ClassVar[str] = "Parametric UMAP: a network trained on UMAP's fuzzy k-NN graph"
    #: "quality": a non-parametric layout of free coordinates (3,000 Adam steps of 4,096
    #: edges), the network regressed onto it (1,500 steps of 500 items, PCA-64 front end), no
    #: further main phase (fine-tuning it lowered both measures); umap-learn's in-sample quality
    #: on MNIST 5,000 × 784, but new points placed worst of all (docs/umap.md)
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        #: the network alone on UMAP's loss (no layout phase) behind the cached PCA-64 front
        #: end; new points placed among its training embedding: about half the fit time on
        #: MNIST-5k, for 0.929 / 0.842 instead of 0.968 / 0.916 (trust@15 / 10-NN; fit on
        #: 4,000, held out 0.845 / 0.930 instead of 0.887 / 0.935, seeds 0-1; docs/umap.md)
        "fast": dict(pca_dims=64, min_dist=0.1, layout_epochs=0, init_epochs=10,
                     init_learning_rate=1e-3, epochs=200, learning_rate=3e-3),
        "quality": dict(n_neighbors=15, min_dist=0.05, layout_epochs=300, layout_batch_size=4096,
                        layout_learning_rate=0.1, layout_scale=3.0, init_epochs=150,
                        init_learning_rate=1e-2, init_batch_size=500, epochs=0, pca_dims=64),
    }

    #: the encoder's fixed PCA-64 front end (cached): cheaper steps, measured at the same
    #: quality with the layout phase (docs/umap.md); None: the raw features
    pca_dims: int | None = attrs.field(default=64, validator=optional(positive_int))
    n_neighbors: int = attrs.field(default=15, validator=positive_int)
    #: 0.0 (a = 1.933, b = 0.790): tighter clusters; against 0.05 the in-sample 10-NN rises on
    #: MNIST-5k (0.920 / 0.916), MNIST 4-9 and the digits, held out as good or better, same
    #: cost (docs/umap.md, round 6; 0.05 had beaten 0.1 in round 2)
    min_dist: float = attrs.field(default=0.0, validator=non_negative)
    spread: float = attrs.field(default=1.0, validator=positive)
    local_connectivity: float = attrs.field(default=1.0, validator=non_negative)
    init: str = attrs.field(default="spectral", validator=one_of("spectral", "pca", "none"))
    init_scale: float = attrs.field(default=1.0, validator=positive)
    #: with a layout phase: a short regression of the network onto the layout (a start; the
    #: main phase does the rest)
    init_epochs: int = attrs.field(default=30, validator=non_negative_int)
    init_batch_size: int = attrs.field(default=500, validator=positive_int)
    #: the init phase's batch of the fit: ``init_batch_size``, at most the rows
    init_batch_size_: int | None = attrs.field(init=False, default=None, repr=False)
    init_learning_rate: float = attrs.field(default=1e-2, validator=positive)
    #: epochs of the ``layout`` phase: free coordinates (no network), started from the init
    #: layout, optimised with the main phase's loss and sampler (non-parametric UMAP: cheap
    #: steps); the init phase regresses the network onto them and the main phase anchors the
    #: network's points to them (``anchor_strength``).  0: no layout phase (the network
    #: learns the init layout itself).  600 (round 7): against 500, MNIST's held-out trust@15
    #: 0.9387 / 0.9374 over 8 fits (issue 13's 0.938), the digits' in-sample 10-NN 0.9775 /
    #: 0.9761, the rest within 0.002, for +11 % of MNIST-5k's fit (docs/umap.md)
    layout_epochs: int = attrs.field(default=600, validator=non_negative_int)
    layout_batch_size: int = attrs.field(default=4096, validator=positive_int)
    layout_learning_rate: float = attrs.field(default=0.1, validator=positive)
    #: standard deviation of the first coordinate of the layout's start (kernel units)
    layout_scale: float = attrs.field(default=3.0, validator=positive)
    epochs: int = attrs.field(default=50, validator=non_negative_int)
    batch_size: int = attrs.field(default=500, validator=positive_int)
    batches_per_epoch: int | None = attrs.field(default=10, validator=optional(positive_int))
    neg_sampling_rate: int = attrs.field(default=5, validator=positive_int)
    negatives: str = attrs.field(default="batch", validator=one_of("batch", "uniform"))
    #: data augmentation of the main phase: each edge's source input moved toward its
    #: neighbour by a fraction drawn from [0, interpolation] (new points between neighbours)
    interpolation: float = attrs.field(default=0.0, validator=non_negative)
    repulsion_strength: float = attrs.field(default=1.0, validator=non_negative)
    #: fraction of the layout phase over which its repulsion rises linearly from 0 to
    #: ``repulsion_strength``: at full strength from the first step the layout tore the swiss
    #: roll into strands (held-out trust@15 0.979 against umap-learn's 0.995); 0.5 keeps it
    #: whole (0.995) at MNIST-5k's held-out quality (docs/umap.md); 0: no warm-up
    layout_repulsion_warmup: float = attrs.field(default=0.5, validator=fraction)
    #: w: with a layout phase, the main phase's loss is UMAP's loss of the network plus w times
    #: the same cross-entropy of each edge's source f(x_i) against the FIXED layout positions
    #: of its partner and of its negatives (umap-learn's ``transform`` objective); 0: the UMAP
    #: loss alone.  Unused without a layout phase.  0.25 and 0.5 measured alike (MNIST-5k and
    #: digits, seeds 0-2); 0.25 kept held-out trust@15 at the network-alone level (docs/umap.md)
    anchor_strength: float = attrs.field(default=0.25, validator=non_negative)
    #: 1e-2 with cosine decay, with the layout anchoring the network (the network alone:
    #: 3e-3, preset "fast"; docs/umap.md)
    learning_rate: float = attrs.field(default=1e-2, validator=positive)
    lr_schedule: str | dict[str, Any] = attrs.field(
        default="cos", converter=schedule_data, validator=schedule_spec)

    def __attrs_post_init__(self) -> None:
        _check(self.min_dist <= self.spread, f"`min_dist` ({self.min_dist}) must not exceed "
                                             f"`spread` ({self.spread}).")
        _check(self.layout_epochs == 0 or self.init != "none",
               "`layout_epochs` > 0 (the default) starts the layout from the init positions; "
               "use init='spectral' or 'pca', or layout_epochs=0 with init='none'.")

    # ------------------------------------------------------------------ the assembly

    def default_globals(self) -> dict[str, dict[str, Any]]:
        """``graph``: k-NN distances -> fuzzy memberships -> fuzzy union; ``positions``: the
        spectral layout of ``graph`` (or the PCA of the data) unless ``init="none"``."""
        out = {"graph": {
            "input": "data", "relation": self._knn_spec(self.n_neighbors),
            "transforms": [{"name": "connectivity_rescale",
                            "local_connectivity": self.local_connectivity},
                           {"name": "symmetrize", "subtract_product": True}]}}
        positions = self._init_spec(self.init, self.init_scale, "graph")
        if positions is not None:
            out["positions"] = positions
        return out

    def default_models(self) -> dict[str, Any]:
        models = super().default_models()
        if self.layout_epochs:  # n_items is filled from the data
            models["layout"] = {"name": "free_positions", "n_components": self.n_components,
                                "init": "positions", "scale": self.layout_scale}
        return models

    def _kernel(self) -> dict[str, Any]:
        return {"name": "modified_cauchy", "min_dist": self.min_dist, "spread": self.spread}

    def _default_kernel(self) -> Any:
        return self._kernel()

    @property
    def placement_connectivity(self) -> float:  # type: ignore[override]
        """umap-learn's transform calibrates with local_connectivity − 1 (0 by default): the
        nearest training point does not get membership 1, the point settles among its
        neighbours (held-out trust@15 on MNIST-5k 0.935 against 0.930; docs/umap.md)."""
        return max(0.0, self.local_connectivity - 1.0)

    def _main_loss(self, layout: bool) -> dict[str, Any]:
        """UMAP's loss of the network (``relation``), plus ``anchor_strength`` × the network's
        points against the fixed layout positions when there is a layout phase."""
        loss = {"name": "relation", "kernel": self._kernel(),
                "repulsion_strength": self.repulsion_strength}
        if layout and self.anchor_strength > 0:
            loss.update(anchor_model="layout", anchor_strength=self.anchor_strength)
        return loss

    def default_phases(self) -> list[dict[str, Any]]:
        phases = []
        layout = bool(self.layout_epochs)
        if layout:  # non-parametric UMAP on free coordinates: cheap steps, no network
            phases.append({
                "name": "layout", "epochs": self.layout_epochs, "trainable": ["layout"],
                "sampler": {"name": "negative_edges", "relation": "graph",
                            "batch_size": self.layout_batch_size,
                            "neg_sampling_rate": self.neg_sampling_rate,
                            "batches_per_epoch": LAYOUT_BATCHES_PER_EPOCH,
                            "min_batch_size": min(LAYOUT_MIN_BATCH, self.layout_batch_size),
                            "negatives": "uniform", "keys": [], "epoch_draws": "edges"},
                "loss": {"name": "relation", "model": "layout", "input": "items",
                         "kernel": self._kernel(),
                         "repulsion_strength": self.repulsion_strength,
                         "repulsion_warmup": self.layout_repulsion_warmup},
                "optimizer": "adam", "optimizer_options": {"fused": True},
                "learning_rate": self.layout_learning_rate,
                "lr_schedule": "cos"})
        if self.init != "none":
            phases.append({
                "name": "init", "epochs": self.init_epochs,
                # positions gathered with a layout too: a plugin loss that regresses onto
                # them (docs/plugins.md) fits in this slot either way
                "sampler": {"name": "items", "batch_size": self.fitted("init_batch_size"),
                            "gather": ["positions"]},
                "loss": ({"name": "position", "target_model": "layout"} if layout
                         else {"name": "position", "target": "positions"}),
                "optimizer": "adam", "optimizer_options": {"fused": True},
                "learning_rate": self.init_learning_rate,
                **({"trainable": ["main"], "lr_schedule": "cos"} if layout else {})})
        phases.append({
            "name": "main", "epochs": self.epochs,
            "sampler": _without_none({
                "name": "negative_edges", "relation": "graph", "batch_size": self.batch_size,
                "neg_sampling_rate": self.neg_sampling_rate,
                "batches_per_epoch": self.batches_per_epoch, "negatives": self.negatives,
                "min_batch_size": self.batch_size if self.batches_per_epoch else None,
                "interpolation": self.interpolation or None}),
            "loss": self._main_loss(layout),
            "optimizer": "adam", "optimizer_options": {"fused": True},
            "learning_rate": self.learning_rate,
            "lr_schedule": self.lr_schedule, **({"trainable": ["main"]} if layout else {})})
        return phases

    # ------------------------------------------------------------------ new points

    @classmethod
    def demo(cls, out_dir: Path, quick: bool = False) -> dict[str, Any]:
        """Embed the shipped 8×8 digits; print trustworthiness@15 and 10-NN accuracy
        with scikit-learn's measures (umap-learn: 0.987 / 0.978 on this set, docs/umap.md)."""
        recipe = cls(layout_epochs=100, epochs=50) if quick else cls()
        return cls._demo(recipe, out_dir, "umap_digits.png")


#: the named settings of :meth:`ParametricUMAP.preset` (``ParametricUMAP.presets``)
PRESETS = ParametricUMAP.presets

__all__ = ["EmbeddingRecipe", "ParametricUMAP", "PRESETS"]

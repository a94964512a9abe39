"""Tools for plugin authors: a conformance check for blocks and a pytest fixture.

``check_block(cls)`` verifies that a block class can be registered, described as data and
rebuilt from that data, and exercises its main method where that can be done generically.
The fixture ``infoblocks_plugin`` registers a plugin object for the duration of one test;
it is opt-in (installing infoblocks does not make every pytest run import torch): add
``pytest_plugins = ["infoblocks.plugins.testing"]`` to your ``conftest.py`` (or run
``pytest -p infoblocks.plugins.testing``)::

    def test_my_loss(infoblocks_plugin):
        registry = infoblocks_plugin(my_plugin_module)
        assert registry.get("loss", "my_loss")

``check_block`` needs no pytest.  ``torchrun(script_text, *args)`` runs a script in 2
processes (``torch.distributed.run``, gloo, one thread each) — how a plugin sampler's
``shard`` or a loss's reduction is tested against the one-process run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import torch

try:  # the fixture needs pytest; check_block does not (pytest is only a dev extra)
    import pytest
except ImportError:  # pragma: no cover - exercised without pytest installed
    pytest = None

from infoblocks.blocks.contracts import BatchType
from infoblocks.blocks.data import LazyRows, rows_for
from infoblocks.blocks.errors import InfoblocksError, PluginError
from infoblocks.blocks.relations import (DenseRelations, EdgeRelations, RelationData,
                                         SparseRelations)

from .manager import InfoblocksPlugins, get_plugin_manager, reset_plugin_manager
from .registry import BASE_FOR_KIND, Registry


#: the methods each kind's base leaves to its subclasses (a block must define them)
_LEFT_TO_SUBCLASSES = {"loss": ("__call__",), "relation": ("compute",), "model": ("build",),
                       "sampler": ("num_batches", "batches"), "distance": ("pairwise", "paired"),
                       "placement": ("place",), "schedule": ("factor",)}


def _kind_of(cls: type) -> str:
    for kind, base in BASE_FOR_KIND.items():
        if isinstance(cls, type) and issubclass(cls, base):
            return kind
    raise AssertionError(f"{cls!r} derives from none of the block bases "
                         f"{[b.__name__ for b in BASE_FOR_KIND.values()]}.")


def check_block(cls: type, example: dict[str, Any] | None = None, *,
                labels: int | Callable[[int], Any] | None = None,
                batch: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Any:
    """Assert that ``cls`` is a well-formed block; return the instance it built.

    ``example`` holds constructor arguments for blocks without defaults.  Checks: it derives
    from a kind base and declares ``name``; it is an attrs class; ``describe()`` round-trips
    through a fresh registry; distances and transforms give correctly shaped finite output; a
    relation's ``compute`` and a transform that takes data are run on a tensor and on rows on
    disk (``LazyRows``) as the engine hands them (see :func:`_check_takes_data`); a model's
    ``build()`` is a torch module mapping (4, in_dim) to (4, out_dim) — an MI critic's (with
    ``x_dim`` / ``y_dim``) maps x (4, x_dim), y (4, y_dim) to (4,) scores, its ``pairwise``
    to (4, 3) —; an MI bound's ``bound(scores)`` on a 5 × 5 batch is a scalar; an optimizer's
    ``build(params, lr)`` is a torch optimizer whose steps descend; a schedule's
    ``factor(step, total_steps)`` is a finite float ≥ 0 at every step of a few lengths, not 0
    throughout, and the same for the block rebuilt from its description (a function of the
    step and its fields: what an exact resume needs); ``own_fields`` names fields the block
    has.  An embedding kernel's ``log_kernel`` is elementwise, finite, ≤ 0 and non-increasing
    on d² = 0 … 10⁴; a transform that accepts no dense relation (a graph affinity, an init)
    runs on a (12, 12) k-NN graph (finite output of its shape, or a row per item); a sampler
    whose batches hold reference pairs has MI-NEE's ``fit_reference`` / ``draw`` /
    ``reference_entropies`` and they give the documented shapes; a DII weights model (an
    ``n_features`` field, no ``in_dim``) builds a module with ``weights`` and a
    ``feature_weights()`` of (n_features,) finite weights with a gradient.  A method the block
    must define and does not raises ``NotImplementedError`` naming it.

    A sampler of a built-in batch type is run on a small state of that type
    (:func:`_kits`): ``setup``, ``num_batches`` ≥ 1, its first batch holds the declared
    fields with finite values and one row per item / pair where the type says so
    (:func:`_check_sampler_batches`); a ``with_source`` simulation sampler that refuses the
    state's arrays gets a small simulator (:func:`_with_check_source`); a sampler with its own
    ``shard`` has that batch cut for 2 ranks and checked as torchrun's first step checks it
    (:func:`_check_sampler_shard`).  A loss is called on the first batch of a built-in
    sampler whose batch has its ``required_fields``, with the globals and models it names:
    a ``LossOutput`` whose value is a finite scalar with a gradient reaching the models; a
    Fisher loss's ``statistics`` has the documented shapes (:func:`_check_loss_call`).  A
    loss that reads a per-item array no built-in batch has — a supervised loss's ``labels``
    (its ``required_fields``) — is run on ``items`` (else ``item_edges``) batches of a
    dataset that holds that array, which the samplers gather per item: ``labels`` says what
    it holds, class indices 0 … K − 1 for an int K (cycling over the items; by default K is
    the block's ``classes`` where it declares that many classes, as ``encoded_mi`` does, else
    3) or ``labels(n)``, an array of n rows (of one or several columns), for a function.  The
    critic model ``critic`` of those states scores (code, label row) pairs of the width the
    block gives it: ``classes`` one-hot columns where it declares them, else the labels'
    columns.  Only a field named as labels are (``labels``, ``label``, ``target``,
    ``targets``, ``class`` ...: :func:`_label_like`) is filled so without ``labels=``: a field
    of another name (a triplet's ``anchor`` / ``positive`` / ``negative`` positions, a second
    view) is not invented.  ``batch`` builds the batch a loss is called on: a function of the
    first batch of a built-in state (a dict of tensors; ``items``: ``data`` (40, 3),
    ``positions`` (40, 2), ``index``) returning the batch (``{**b, "anchor": ...}``); the
    loss runs on the first built-in state with its globals and models whose batch, so
    built, holds its ``required_fields``.  A loss that fails on a field check_block filled
    is told which field and with what.

    Not exercised, with a :class:`NotExercisedWarning` saying what and why (test them with a
    tiny fit of a recipe that uses them): a sampler of a batch type of its own or of none, a
    loss that declares no ``required_fields`` or needs what no built-in state has, a sampler
    or loss that refuses the built-in state with infoblocks' own error.  Not exercised
    silently: a relation or transform that refuses the generic input with infoblocks' own
    error, a sampler's ``generate`` other than through ``batches``.
    """
    kind = _kind_of(cls)
    assert cls.__dict__.get("name"), f"{cls.__qualname__} must declare a `name` class attribute"
    assert attrs.has(cls), f"{cls.__qualname__} must be an attrs class (@attrs.define)"
    registry = Registry()
    registry.add(kind, cls, plugin="conformance-check")
    if kind == "recipe":
        block = cls(**(example or {}))
        again = registry.build("recipe", block.to_dict())
        assert again.to_dict() == block.to_dict(), "to_dict/from_dict does not round-trip"
        _check_recipe_names(block)
        return block
    fields = {f.alias or f.name for f in attrs.fields(cls) if f.init}
    unknown = sorted(set(getattr(cls, "own_fields", ())) - fields)
    assert not unknown, (f"{cls.__qualname__}.own_fields names {unknown}, which are not fields "
                         f"of the block (its fields: {sorted(fields)})")
    block = registry.build(kind, {"name": cls.name, **(example or {})})
    description = block.describe()
    assert description["name"] == cls.name
    _check_contracts(kind, block)
    for method in _LEFT_TO_SUBCLASSES.get(kind, ()):
        if getattr(cls, method) is getattr(BASE_FOR_KIND[kind], method):
            from infoblocks.blocks.base import not_implemented

            raise not_implemented(block, method)
    if kind == "distance":
        _check_distance(block)
    elif kind == "relation":
        _check_takes_data(block, block.compute, "compute(data)")
    elif kind == "transform" and any(issubclass(torch.Tensor, t) or issubclass(LazyRows, t)
                                     for t in cls.accepts):  # takes data: an init
        _check_takes_data(block, block, "__call__(data)")
    elif kind == "transform" and callable(getattr(block, "coefficients", None)) and \
            getattr(type(block), "apply", None) is getattr(_transform_base(), "apply"):
        _check_coefficients(block)  # a DII softmax written to its protocol alone
    elif kind == "transform" and DenseRelations in cls.accepts:
        from infoblocks.blocks.embedding.kernels import EmbeddingKernel, check_kernel

        if isinstance(block, EmbeddingKernel):  # its elementwise methods and log q's range
            check_kernel(block)
        rel = DenseRelations(torch.rand(6, 6, generator=torch.Generator().manual_seed(0)))
        _check_relation_output(type(block).__qualname__, block(rel), rel,
                               "a (6, 6) dense relation of values in [0, 1)")
    elif kind == "transform" and any(t in cls.accepts for t in (SparseRelations, EdgeRelations)):
        _check_sparse_transform(block)
    elif kind == "sampler" and _yields_references(cls):
        _check_reference_protocol(block)
    elif kind == "model":
        _check_model(block)
    elif kind == "loss" and callable(getattr(block, "bound", None)) and \
            hasattr(block, "objective"):  # an MI bound: bound(scores) is one value
        from infoblocks.blocks.mutual_information.scores import BatchScores, check_bound_value

        scores = BatchScores.from_matrix(torch.randn(5, 5, generator=torch.Generator()
                                                     .manual_seed(0)))
        check_bound_value(block, block.bound(scores), (), "check_block's 5 x 5 batch")
    elif kind == "optimizer":
        _check_optimizer(block)
    elif kind == "schedule":
        _check_schedule(block, registry)
    elif kind == "placement":
        from infoblocks.blocks.embedding.kernels import StudentTTransform
        from infoblocks.blocks.embedding.placement import PlacementContext

        gen = torch.Generator().manual_seed(0)
        positions, start = torch.randn(30, 2, generator=gen), torch.randn(7, 2, generator=gen)
        neighbours = torch.randint(0, 30, (7, 5), generator=gen)
        distances = torch.rand(7, 5, generator=gen).sort(1).values + 0.1
        out = block.place(start, neighbours, distances, positions,
                          PlacementContext(kernel=StudentTTransform()))
        assert isinstance(out, torch.Tensor) and tuple(out.shape) == (7, 2), \
            f"place must return one position per new point (7, 2), got {out!r:.80}"
        assert torch.isfinite(out).all(), "place must return finite positions"
    if kind == "sampler":
        _check_sampler_batches(block)
    elif kind == "loss":
        _check_loss_call(block, labels, batch)
    return block


def _check_recipe_names(recipe: Any) -> None:
    """Every block the recipe's default routine names is registered (in some kind): the
    globals' relations and transforms, the models, each phase's sampler, loss, optimizer and
    validation blocks, the evaluation slots."""
    from infoblocks.blocks.base import BLOCK_KINDS
    from infoblocks.blocks.errors import ValidationError
    from infoblocks.blocks.phases import optimizer_class

    from .registry import get_registry

    known = get_registry()
    spec = recipe.routine_spec()

    def check(value: Any, where: str) -> None:
        name = value if isinstance(value, str) else (
            value.get("name") if isinstance(value, dict) else None)
        if isinstance(name, str) and not any((k, name) in known for k in BLOCK_KINDS):
            raise AssertionError(f"{type(recipe).__qualname__}: its default routine names "
                                 f"{name!r} at {where}, which no plugin registers")

    for key, entry in (spec.get("globals") or {}).items():
        if isinstance(entry, dict):
            check(entry.get("relation"), f"globals.{key}.relation")
            for k, t in enumerate(entry.get("transforms") or []):
                check(t, f"globals.{key}.transforms[{k}]")
    for key, entry in (spec.get("models") or {}).items():
        check(entry, f"models.{key}")
    for phase in spec.get("phases") or []:
        where = f"phases.{phase.get('name')}"
        for slot in ("sampler", "loss", "lr_schedule"):
            check(phase.get(slot), f"{where}.{slot}")
        optimizer = phase.get("optimizer")
        if isinstance(optimizer, str):
            try:  # the engine's own, a registered block, or a torch.optim name
                optimizer_class(optimizer)
            except ValidationError:
                raise AssertionError(f"{type(recipe).__qualname__}: its default routine names "
                                     f"the optimizer {optimizer!r} at {where}.optimizer, which "
                                     "is neither registered nor in torch.optim") from None
        validation = phase.get("validation") or {}
        if isinstance(validation, dict):
            for slot in ("sampler", "loss"):
                check(validation.get(slot), f"{where}.validation.{slot}")
    for key, entry in (spec.get("evaluation") or {}).items():
        check(entry, f"evaluation.{key}")


def _check_model(block: Any) -> None:
    """``build()`` gives a torch module; a block with ``in_dim`` / ``out_dim`` fields (the
    ones recipes fill from the data) maps (4, in_dim) to (4, out_dim) finite outputs."""
    name = type(block).__qualname__
    module = block.build()
    assert isinstance(module, torch.nn.Module), \
        f"{name}.build() must return a torch.nn.Module, got {type(module).__name__}"
    x_dim, y_dim = getattr(block, "x_dim", None), getattr(block, "y_dim", None)
    if isinstance(x_dim, int) and isinstance(y_dim, int):  # an MI critic: forward(x, y) -> (n,)
        from infoblocks.blocks.mutual_information.scores import critic_output

        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(4, x_dim, generator=gen), torch.randn(4, y_dim, generator=gen)
        critic_output(module, module(x, y), (4,), "forward(x, y)", f"model {block.name!r}")
        if callable(getattr(module, "pairwise", None)):
            critic_output(module, module.pairwise(x, y[:3]), (4, 3), "pairwise(x, y)",
                          f"model {block.name!r}")
    in_dim, out_dim = getattr(block, "in_dim", None), getattr(block, "out_dim", None)
    n_features = getattr(block, "n_features", None)
    if isinstance(n_features, int) and n_features > 0 and in_dim is None and x_dim is None:
        _check_feature_weights(block, module)
    if not isinstance(in_dim, int) or not isinstance(out_dim, int):
        return  # not a (n, d) -> (n, k) network (a positions table, a critic of two inputs)
    out = module(torch.randn(4, in_dim, generator=torch.Generator().manual_seed(0)))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (4, out_dim), \
        (f"{name}: the built module maps (4, in_dim={in_dim}) to "
         f"{tuple(getattr(out, 'shape', ()))}, not (4, out_dim={out_dim})")
    assert torch.isfinite(out).all(), f"{name}: the built module's outputs are not finite"


#: items and neighbours per item of the k-NN graph a sparse-only transform is run on
CHECK_GRAPH_ITEMS, CHECK_GRAPH_NEIGHBOURS = 12, 3


def _knn_graph() -> SparseRelations:
    """A (12, 12) k-NN relation as the graph's relation gives it: each row's 3 nearest other
    items, values their distances (> 0, ascending per row)."""
    x = torch.randn(CHECK_GRAPH_ITEMS, 3, generator=torch.Generator().manual_seed(0))
    d = torch.cdist(x, x).fill_diagonal_(float("inf"))
    values, cols = d.topk(CHECK_GRAPH_NEIGHBOURS, dim=1, largest=False)
    rows = torch.arange(CHECK_GRAPH_ITEMS).repeat_interleave(CHECK_GRAPH_NEIGHBOURS)
    return SparseRelations(rows, cols.reshape(-1), values.reshape(-1),
                           (CHECK_GRAPH_ITEMS, CHECK_GRAPH_ITEMS))


def _check_sparse_transform(block: Any) -> None:
    """A transform that accepts no dense relation (a graph affinity) on a small k-NN graph
    (:func:`_knn_graph`; as edges where it accepts only those): RelationData of the graph's
    shape, or an init's tensor of a row per item, with finite values.  One that refuses it with infoblocks' own error (it needs other
    input) is not exercised further."""
    name = type(block).__qualname__
    graph = _knn_graph()
    if SparseRelations not in type(block).accepts:
        graph = graph.to_edges()
    try:
        out = block(graph)
    except InfoblocksError:
        return
    except Exception as exc:  # noqa: BLE001 - reported as the conformance failure
        raise AssertionError(f"{name} raised {type(exc).__name__}: {exc} on a "
                             f"({CHECK_GRAPH_ITEMS}, {CHECK_GRAPH_ITEMS}) k-NN graph of "
                             f"{CHECK_GRAPH_NEIGHBOURS} neighbours per row "
                             f"({type(graph).__name__})") from exc
    if isinstance(out, torch.Tensor):  # an init (spectral_init): a row per item
        assert out.ndim >= 1 and len(out) == CHECK_GRAPH_ITEMS, \
            (f"{name} gave a tensor of shape {tuple(out.shape)} for a graph of "
             f"{CHECK_GRAPH_ITEMS} items: an init gives one row per item")
        assert not out.is_floating_point() or torch.isfinite(out).all(), \
            (f"{name} returned non-finite values on a k-NN graph (distances > 0): "
             f"{out.reshape(-1).tolist()[:6]} ...")
    else:
        _check_relation_output(name, out, graph, "a k-NN graph (distances > 0)")


def _check_distance(block: Any) -> None:
    """A distance's ``pairwise`` (5, 4) and ``paired`` (4,) on random rows (5, 3) and (4, 3):
    the shapes, finite values ≥ 0 and ``paired`` = the diagonal of ``pairwise``.  Each failure
    names the distance, its plugin and class, the method, the first bad entry and the fix
    (author29-7: a bare "distances must be finite, >= 0")."""
    from infoblocks.blocks.base import _provider

    cls = type(block)
    who = f"distance {cls.name!r}{_provider(block)} ({cls.__module__}.{cls.__qualname__})"
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=gen), torch.randn(4, 3, generator=gen)
    d = block.pairwise(a, b)
    assert isinstance(d, torch.Tensor) and tuple(d.shape) == (5, 4), \
        (f"{who}: pairwise(a, b) of a (5, 3) and b (4, 3) must return the (n, m) = (5, 4) "
         f"distances, got {tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__}")
    bad = ~torch.isfinite(d) | (d < -1e-6)
    if bool(bad.any()):
        i, j = (int(k) for k in bad.nonzero()[0])
        raise AssertionError(
            f"{who}: pairwise(a, b) returned {int(bad.sum())} of 20 values that are NaN, inf or "
            f"negative (the first d[{i}, {j}] = {float(d[i, j]):g}) on random rows (5, 3) and "
            "(4, 3). A distance must be finite and >= 0 (0 for equal rows): a similarity s is "
            "not a distance (use 1 - s, or max(s) - s); a NaN comes from a division by 0 (the "
            "norm or standard deviation of a row?).")
    p = block.paired(a[:4], b)
    assert isinstance(p, torch.Tensor) and tuple(p.shape) == (4,), \
        (f"{who}: paired(a, b) of a (4, 3) and b (4, 3) must return the (n,) = (4,) "
         f"distances of row i to row i, got "
         f"{tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__}")
    diagonal = torch.diagonal(d[:4])
    if not torch.allclose(p, diagonal, atol=1e-4):
        i = int((p - diagonal).abs().argmax())
        raise AssertionError(
            f"{who}: paired(a, b)[{i}] = {float(p[i]):g} but pairwise(a, b)[{i}, {i}] = "
            f"{float(diagonal[i]):g}: paired(a, b)[i] must be pairwise(a, b)[i, i], the "
            "distance of row i of a to row i of b (the k-NN search uses pairwise, the "
            "samplers' pairs paired).")


def _check_relation_output(name: str, out: Any, given: RelationData, what: str) -> None:
    """A transform's output for the relation ``given`` (described as ``what``): RelationData
    of its shape with finite values."""
    assert isinstance(out, RelationData), \
        f"{name} must return RelationData, got {type(out).__name__} for {what}"
    assert tuple(out.shape) == tuple(given.shape), \
        f"{name} turned a relation of shape {tuple(given.shape)} into {tuple(out.shape)}"
    values = out.values
    bad = int((~torch.isfinite(values)).sum()) if values.is_floating_point() else 0
    assert not bad, (f"{name} returned non-finite values on {what} ({bad} of "
                     f"{values.numel()}): check its divisions, logs and normalisations")


def _yields_references(cls: type) -> bool:
    batch_type = getattr(cls, "batch_type", None)
    return "x_reference" in getattr(batch_type, "fields", ())


#: the MI-NEE reference protocol (docs/plugins.md, "The batches of the MI samplers")
REFERENCE_METHODS = ("fit_reference", "draw", "reference_entropies")


def _check_reference_protocol(block: Any) -> None:
    """A sampler whose batches hold reference pairs (MI-NEE's) carries the reference: its
    ``fit_reference(x, y)`` on (40, 2) and (40, 1) rows, ``draw(7, generator, device)`` gives
    finite (7, 2) and (7, 1) draws, ``reference_entropies()`` two floats or None."""
    name = type(block).__qualname__
    missing = [m for m in REFERENCE_METHODS if not callable(getattr(block, m, None))]
    assert not missing, \
        (f"{name} yields reference pairs (x_reference, y_reference), so MI-NEE reads its "
         f"reference through {', '.join(REFERENCE_METHODS)}; it has no "
         f"{', '.join(missing)} (docs/plugins.md, \"The batches of the MI samplers\")")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 2, generator=gen), torch.randn(40, 1, generator=gen)
    block.fit_reference(x, y)
    drawn = block.draw(7, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert isinstance(drawn, tuple) and len(drawn) == 2 and all(
        isinstance(d, torch.Tensor) for d in drawn), \
        f"{name}.draw(n, generator, device) must return a pair (x', y') of tensors, got {drawn!r:.80}"
    assert tuple(drawn[0].shape) == (7, 2) and tuple(drawn[1].shape) == (7, 1), \
        (f"{name}.draw(7, ...) after fit_reference on x (40, 2), y (40, 1) gave shapes "
         f"{tuple(drawn[0].shape)}, {tuple(drawn[1].shape)}, not (7, 2), (7, 1)")
    assert all(torch.isfinite(d).all() for d in drawn), f"{name}.draw gave non-finite draws"
    entropies = block.reference_entropies()
    assert isinstance(entropies, tuple) and len(entropies) == 2 and all(
        h is None or isinstance(h, float) for h in entropies), \
        (f"{name}.reference_entropies() must return (h_x', h_y'), floats in nats or None, "
         f"got {entropies!r}")


def _check_feature_weights(block: Any, module: torch.nn.Module) -> None:
    """A DII weights model (a block with an ``n_features`` field and no network sizes): the
    module has the learnt ``weights`` and ``feature_weights()`` gives (n_features,) finite
    weights with a gradient (docs/plugins.md, DII's ``models.weights``)."""
    name, n = type(block).__qualname__, block.n_features
    fix = ("the DII loss reads models.weights through them (docs/plugins.md, DII: "
           "`models.weights`)")
    missing = [what for what, ok in (
        ("a tensor `weights` (the learnt parameter)",
         isinstance(getattr(module, "weights", None), torch.Tensor)),
        ("`feature_weights()`", callable(getattr(module, "feature_weights", None)))) if not ok]
    assert not missing, (f"{name}: the built module ({type(module).__name__}) lacks "
                         f"{' and '.join(missing)}: {fix}")
    weights = module.feature_weights()
    assert isinstance(weights, torch.Tensor) and tuple(weights.shape) == (n,), \
        (f"{name}: feature_weights() must give one weight per feature, ({n},) for n_features "
         f"= {n}, got {tuple(getattr(weights, 'shape', ())) or type(weights).__name__}")
    assert torch.isfinite(weights).all(), f"{name}: feature_weights() are not finite"
    assert weights.requires_grad, \
        f"{name}: feature_weights() carry no gradient: the DII loss could not train them"


# ------------------------------------------------------------------ samplers and losses run

class NotExercisedWarning(UserWarning):
    """``check_block`` could not run a block's main method (a sampler's ``batches``, a loss's
    ``__call__``): no built-in state fits its declared contract.  The message says why; test
    that method with a tiny fit of a recipe that uses the block."""


#: items of the small built-in states a sampler or loss is run on; pairs of the MI states
#: (more than the MI samplers' default batch of 100)
CHECK_ITEMS, CHECK_PAIRS = 40, 256


def _who(block: Any) -> str:
    """``sampler 'x' (mypkg.plugin.MySampler, plugin 'p')``: the block, its class and the
    plugin that registers it (its module where no registry holds it)."""
    from infoblocks.blocks.base import BUILTIN, block_origin

    cls = type(block)
    origin = block_origin(block)
    source = (f"plugin {origin!r}" if origin not in (None, BUILTIN) else
              "built-in" if origin == BUILTIN else f"module {cls.__module__}")
    return f"{block.kind} {getattr(block, 'name', cls.__name__)!r} ({cls.__qualname__}, {source})"


def _kits() -> dict[str, Callable[[], dict[str, Any]]]:
    """Per built-in batch type (its name): a function giving a small state's ``dataset`` and
    ``globals``, a built-in ``sampler`` of that batch type, and ``models`` by the names the
    built-in losses of that batch type read (``main``, ``critic_x`` ...)."""
    from infoblocks.blocks.data import Dataset
    from infoblocks.plugins.registry import get_registry

    registry = get_registry()

    def model(name: str, **fields: Any) -> torch.nn.Module:
        return registry.build("model", {"name": name, **fields}).build()

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    def layout(n_items: int) -> torch.nn.Module:  # free positions, spread (a recipe sets them)
        module = model("free_positions", n_items=n_items)
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=gen()))
        return module

    def label_critic() -> torch.nn.Module:  # of (the encoder's 2-D code, a label column)
        return model("separable_critic", x_dim=2, y_dim=1, embed_dim=4, hidden_dims=(8,))

    def items() -> dict[str, Any]:
        g = gen()
        data = torch.randn(CHECK_ITEMS, 3, generator=g)
        positions = torch.randn(CHECK_ITEMS, 2, generator=g)
        p = torch.rand(CHECK_ITEMS, CHECK_ITEMS, generator=g).fill_diagonal_(0)
        p = (p + p.T) / (p + p.T).sum()  # t-SNE's joint probabilities P
        return dict(dataset=Dataset(data=data, positions=positions),
                    globals={"P": DenseRelations(p)},
                    sampler=registry.build("sampler", "items"),  # (all-pairs losses: all)
                    models={"main": model("mlp", in_dim=3, out_dim=2, hidden_dims=(8,)),
                            "layout": layout(CHECK_ITEMS), "critic": label_critic()})

    def pairs(sampler: str, **options: Any) -> Callable[[], dict[str, Any]]:
        def kit() -> dict[str, Any]:
            g = gen()
            x = torch.randn(CHECK_PAIRS, 2, generator=g)
            y = x[:, :1] + 0.5 * torch.randn(CHECK_PAIRS, 1, generator=g)
            return dict(dataset=Dataset(x=x, y=y), globals={},
                        sampler=registry.build("sampler", {"name": sampler, "batch_size": 8,
                                                           **options}),
                        models={"main": model("separable_critic", x_dim=2, y_dim=1, embed_dim=4,
                                              hidden_dims=(8,)),
                                "critic_x": model("mlp", in_dim=2, out_dim=1, hidden_dims=(8,)),
                                "critic_y": model("mlp", in_dim=1, out_dim=1, hidden_dims=(8,)),
                                # InfoMax's: codes of x, a critic of (code, code)
                                "encoder": model("mlp", in_dim=2, out_dim=2, hidden_dims=(8,)),
                                "critic": model("separable_critic", x_dim=2, y_dim=2,
                                                embed_dim=4, hidden_dims=(8,))})
        return kit

    def edges() -> dict[str, Any]:
        data = torch.randn(CHECK_GRAPH_ITEMS, 3, generator=gen())
        return dict(dataset=Dataset(data=data), globals={"graph": _knn_graph()},
                    sampler=registry.build("sampler", {"name": "negative_edges", "batch_size": 8,
                                                       "neg_sampling_rate": 2}),
                    models={"main": model("mlp", in_dim=3, out_dim=2, hidden_dims=(8,)),
                            "layout": layout(CHECK_GRAPH_ITEMS), "critic": label_critic()})

    def rows_cols() -> dict[str, Any]:
        g = gen()
        a = torch.randn(CHECK_ITEMS, 3, generator=g)
        b = a[:, :2] + 0.1 * torch.randn(CHECK_ITEMS, 2, generator=g)
        return dict(dataset=Dataset(data_A=a, data_B=b), globals={},
                    sampler=registry.build("sampler", "rows_columns"),
                    models={"weights": model("feature_weights", n_features=3)})

    def simulations() -> dict[str, Any]:
        from infoblocks.blocks.fisher.sampler import SimulationSampler

        g = gen()
        fiducial = torch.randn(20, 4, generator=g)
        derivative = torch.randn(20, 2, 4, generator=g) * 0.1 + torch.eye(2, 4)
        sampler = SimulationSampler(theta_fid=(0.0, 1.0), fiducial=fiducial,
                                    derivative=derivative)
        return dict(dataset=None, globals={}, sampler=sampler,
                    models={"main": model("mlp", in_dim=4, out_dim=2, hidden_dims=(8,))})

    # (in this order: a loss runs on the first that gives what it declares)
    return {"items": items, "marginal_pairs": pairs("marginal_pairs"),
            "joint_pairs": pairs("all_pairs"), "reference_pairs": pairs("reference"),
            "item_edges": edges, "rows_cols": rows_cols, "simulations": simulations,
            # InfoMax's batches: joint pairs whose y is x (its loss refuses another y)
            "self_pairs": pairs("all_pairs", x_key="x", y_key="x")}


def _state(kit: dict[str, Any]) -> Any:
    import numpy as np

    from infoblocks.blocks.state import TrainState

    return TrainState(models=torch.nn.ModuleDict(kit["models"]), dataset=kit["dataset"],
                      globals=dict(kit["globals"]), device=torch.device("cpu"),
                      generator=torch.Generator().manual_seed(0), rng=np.random.default_rng(0),
                      phase="check_block", n_epochs=1, total_steps=1)


def _not_exercised(block: Any, what: str, why: str) -> None:
    import warnings

    warnings.warn(f"check_block: {_who(block)}: {what} was not run: {why}. Test it with a "
                  "tiny fit of a recipe that uses the block.", NotExercisedWarning, stacklevel=4)  # (at the call of check_block)


class _Refused(Exception):
    """A block refused check_block's built-in state with infoblocks' own error."""


def _first_batch(block: Any, state: Any) -> dict[str, Any]:
    """``setup``, ``num_batches`` ≥ 1 and the first batch of ``block`` on ``state``."""
    who = _who(block)
    call = "setup(state)"
    try:
        block.setup(state)
        call = "num_batches(state)"
        count = block.num_batches(state)
        assert isinstance(count, int) and not isinstance(count, bool) and count >= 1, \
            (f"{who}: num_batches(state) = {count!r} on a {_describe(state)}; an epoch needs "
             "at least one batch (return an int >= 1)")
        call = "batches(state)"
        batch = next(iter(block.batches(state)), None)
    except InfoblocksError as exc:  # it needs another state: said, not failed
        raise _Refused(f"{who} refused check_block's {_describe(state)} with "
                       f"{type(exc).__name__}: {str(exc).rstrip('.')}") from exc
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as the conformance failure
        raise AssertionError(f"{who}: {call} raised {type(exc).__name__}: {exc} on a "
                             f"{_describe(state)}") from exc
    assert isinstance(batch, dict), \
        (f"{who}: batches(state) must yield dicts of tensors (field -> tensor), got "
         f"{'nothing' if batch is None else type(batch).__name__}")
    return batch


def _describe(state: Any) -> str:
    data = "no dataset" if state.dataset is None else "dataset " + ", ".join(
        f"{k} {tuple(v.shape)}" for k, v in state.dataset.items())
    extra = f", globals {sorted(state.globals)}" if state.globals else ""
    return f"state of {data}{extra}"


#: per built-in batch type: groups of fields that hold one row per item / pair (same length)
_ROWS_TOGETHER = {"items": (("index", "@dataset"),),
                  "joint_pairs": (("index", "x", "y"),),
                  "marginal_pairs": (("x", "y"), ("x_marginal", "y_marginal")),
                  "reference_pairs": (("index", "x", "y"), ("x_reference", "y_reference")),
                  "item_edges": (("items", "@dataset"), ("pos_source", "pos_target"),
                                 ("neg_source", "neg_target"))}


def _check_sampler_batches(block: Any) -> None:
    """A sampler of a built-in batch type on that type's small state (:func:`_kits`): setup,
    ``num_batches`` ≥ 1, the first batch holds every field ``batch_fields`` declares, the
    fields of one row per item (per pair) agree in length, position fields index their
    target, floating values are finite.  A simulation sampler that draws its own runs
    without a dataset; one taking a source (``with_source``) is given arrays."""
    from infoblocks.blocks.contracts import ContractError, _check_simulation_shapes

    batch_type = type(block).batch_type
    kits = _kits()
    if batch_type is None or batch_type.name not in kits:
        _not_exercised(block, "batches(state)",
                       "it declares no batch_type" if batch_type is None else
                       f"its batch type {batch_type.name!r} is none of the built-in ones "
                       f"({', '.join(kits)}), so check_block has no state to draw it from")
        return
    kit = kits[batch_type.name]()
    state = _state(kit)
    who = _who(block)
    if batch_type.name == "simulations":
        if block.draws_own_data():
            state.dataset = None
        elif callable(getattr(block, "with_source", None)):
            block = _with_check_source(block, kit["sampler"])
            if block is None:
                return
    if callable(getattr(block, "fit_reference", None)):  # MI-NEE fits the reference first
        block.fit_reference(state.dataset["x"], state.dataset["y"])
    try:
        batch = _first_batch(block, state)
    except _Refused as exc:
        _not_exercised(block, "batches(state)", str(exc))
        return
    declared = block.batch_fields(state)
    missing = sorted(set(declared or ()) - set(batch))
    assert not missing, \
        (f"{who}: its first batch on a {_describe(state)} holds {sorted(batch)}, not the "
         f"declared field(s) {missing} (batch_type {batch_type.name!r} / batch_fields): yield "
         "them, or declare only the fields the sampler yields")
    for field, value in batch.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert bool(torch.isfinite(value).all()), \
                (f"{who}: its first batch's `{field}` holds non-finite values "
                 f"({value.reshape(-1)[~torch.isfinite(value.reshape(-1))][:3].tolist()} ...) "
                 f"on a {_describe(state)} of finite rows")
    data = tuple(state.dataset) if state.dataset is not None else ()
    for group in _ROWS_TOGETHER.get(batch_type.name, ()):
        names = [f for g in group for f in (data if g == "@dataset" else (g,))
                 if isinstance(batch.get(f), torch.Tensor) and batch[f].ndim]
        lengths = {f: batch[f].shape[0] for f in names}
        assert len(set(lengths.values())) <= 1, \
            (f"{who}: {', '.join(f'`{f}` has {n}' for f, n in lengths.items())} rows; in a "
             f"{batch_type.name!r} batch they hold one row per item (pair) each: give them the "
             "same length")
    for field, target in batch_type.positions:
        index, into = batch.get(field), batch.get(target)
        if isinstance(index, torch.Tensor) and hasattr(into, "__len__") and index.numel():
            low, high = int(index.min()), int(index.max())
            assert 0 <= low and high < len(into), \
                (f"{who}: `{field}` holds positions {low}..{high} in `{target}`, which has "
                 f"{len(into)} entries: `{field}` indexes `{target}`")
    if batch_type.name == "simulations":
        class _Phase:  # what _check_simulation_shapes reads of a phase
            name, sampler = "check_block", block
        try:
            _check_simulation_shapes(_Phase, batch)
        except ContractError as exc:
            raise AssertionError(str(exc)) from exc
    _check_sampler_shard(block, batch, batch_type)


def _check_simulator(generator: torch.Generator, theta: torch.Tensor) -> torch.Tensor:
    """check_block's simulator for a ``with_source`` sampler that refuses arrays: 4 values
    per simulation, θ₀ + θ₁ · noise (differentiable in θ), as the state's arrays have."""
    noise = torch.randn(theta.shape[0], 4, generator=generator, dtype=theta.dtype)
    return theta[:, :1] + theta[:, 1:2] * noise


def _with_check_source(block: Any, source: Any) -> Any:
    """``block.with_source(...)`` given the built-in state's arrays, else (refused with
    infoblocks' own error) :func:`_check_simulator`; refused both ways: None, with a
    :class:`NotExercisedWarning` (author26-13: a simulator-only sampler's own
    ValidationError failed check_block)."""
    refusals = []
    for given in ({"fiducial": source.fiducial, "derivative": source.derivative},
                  {"simulator": _check_simulator}):
        try:
            return block.with_source(**given)
        except InfoblocksError as exc:
            refusals.append(f"with_source({', '.join(given)}=...) raised "
                            f"{type(exc).__name__}: {str(exc).rstrip('.')}")
    _not_exercised(block, "batches(state)", "; ".join(refusals))
    return None


def _shard_fields_needed(batch: dict[str, Any]) -> dict[str, frozenset[str]]:
    """The registered losses that read this batch (their ``consumes`` are in it) and declare
    ``shard_fields`` (DII's ``rows_total``): loss name -> the fields a shard must carry."""
    from infoblocks.plugins.registry import get_registry

    needed = {}
    for entry in get_registry().entries("loss"):
        fields = getattr(entry.block, "shard_fields", frozenset())
        consumes = getattr(entry.block, "consumes", None)
        if fields and isinstance(consumes, frozenset) and consumes and consumes <= set(batch):
            needed[entry.name] = frozenset(fields)
    return needed


def _check_sampler_shard(block: Any, batch: dict[str, Any], batch_type: Any) -> None:
    """A sampler with its own ``shard(batch, rank, world_size)``: its first batch cut for 2
    ranks as the engine does under torchrun (no process group needed), checked as the engine
    checks the first sharded step (blocks/contracts.py ``check_shard``): each part is a dict
    that carries the ``shard_fields`` of the losses that read this batch (``rows_total`` for
    the ``dii`` loss), no rank's part is empty, the two parts differ (author26-8: a shard
    dropping ``rows_total``, or one giving every rank the whole batch, passed here and was
    refused at the first step of every ``--nproc 2`` run).  A sampler without ``shard`` runs
    in one process only and is not checked; a batch drawn per rank (a ``shard`` field) is
    not cut."""
    from infoblocks.blocks.samplers import Sampler

    if getattr(type(block), "shard", None) is getattr(Sampler, "shard") or "shard" in batch:
        return
    who, world = _who(block), 2
    parts = []
    for rank in range(world):
        try:
            part = block.shard(dict(batch), rank, world)
        except InfoblocksError as exc:  # it refuses this batch (e.g. too small): said
            _not_exercised(block, "shard(batch, rank, world_size)",
                           f"it refused the first batch for rank {rank} of {world} with "
                           f"{type(exc).__name__}: {str(exc).rstrip('.')}")
            return
        except Exception as exc:  # noqa: BLE001 - reported as the conformance failure
            raise AssertionError(f"{who}: shard(batch, {rank}, {world}) raised "
                                 f"{type(exc).__name__}: {exc} on its first batch "
                                 f"({_shapes(batch)})") from exc
        assert isinstance(part, dict), \
            (f"{who}: shard(batch, {rank}, {world}) must return the rank's part as a dict "
             f"(field -> tensor), got {type(part).__name__}")
        parts.append(part)
    for loss, fields in sorted(_shard_fields_needed(batch).items()):
        missing = sorted(fields - set(parts[0]))
        assert not missing, \
            (f"{who}: shard(batch, rank, world_size) returns no "
             f"{', '.join(f'`{f}`' for f in missing)}, which loss {loss!r} needs in a shard "
             "(its `shard_fields`) to treat the rank's part as part of the whole batch; under "
             "torchrun the first step refuses it. Add it to the shard (docs/plugins.md)")
    rows = {k: v.shape[0] for k, v in batch.items() if isinstance(v, torch.Tensor) and v.ndim}
    for rank, part in enumerate(parts):
        empty = sorted(k for k, n in rows.items() if n >= world and isinstance(
            part.get(k), torch.Tensor) and part[k].ndim and part[k].shape[0] == 0)
        assert not empty, \
            (f"{who}: shard(batch, {rank}, {world}) gives rank {rank} no rows of "
             f"{', '.join(f'`{k}`' for k in empty)} from a first batch of "
             f"{', '.join(f'{rows[k]}' for k in empty)} rows: each rank keeps its own part "
             "(e.g. rows `rank::world_size`)")
    shared = sorted(set(parts[0]) & set(parts[1]))
    same = bool(shared) and all(
        torch.is_tensor(parts[0][k]) and torch.is_tensor(parts[1][k])
        and parts[0][k].shape == parts[1][k].shape and bool(torch.equal(parts[0][k], parts[1][k]))
        for k in shared if torch.is_tensor(parts[0][k]) or torch.is_tensor(parts[1][k]))
    if same and max(rows.values(), default=0) > 1:
        raise AssertionError(
            f"{who}: shard(batch, rank, world_size) gives both of {world} ranks the same part "
            f"of the first batch ({_shapes(batch)}). Each rank must keep its own part, the union "
            "over the ranks being the batch (e.g. rows `rank::world_size`); the whole batch on "
            f"every rank trains each row {world} times where a loss sums over the ranks")


#: the per-item arrays check_block adds for a loss that reads them: class indices 0 … K − 1
CHECK_CLASSES = 3
#: the built-in batch types whose samplers gather every dataset array per item (in order)
_GATHERING = ("items", "item_edges")


def _declared_classes(block: Any) -> int | None:
    """The number of classes ``block`` declares (an int ``classes`` field, as ``encoded_mi``
    has), else None."""
    classes = getattr(block, "classes", None)
    return classes if isinstance(classes, int) and not isinstance(classes, bool) and \
        classes > 0 else None


#: words a batch field holding per-item class labels is named by (a part of its name, split at
#: "_"): the fields check_block fills with class indices without being told (``labels=``)
_LABEL_WORDS = frozenset({"label", "labels", "target", "targets", "class", "classes"})


def _label_like(field: str) -> bool:
    """Whether the batch field ``field`` is named as per-item class labels are
    (``labels``, ``class_label``, ``targets``), not as positions (``anchor``) or rows."""
    return bool(_LABEL_WORDS & set(field.lower().split("_")))


def _unknown_fields(fields: set[str], kits: dict[str, Any]) -> list[str]:
    """The fields of ``fields`` that no built-in sampler's batch holds."""
    given = {f for kit in kits.values() for f in
             (kit["sampler"].batch_fields(_state(kit)) or ())}
    return sorted(fields - given)


def _filled_fields(fields: set[str], kits: dict[str, Any],
                   labels: int | Callable[[int], Any] | None) -> list[str]:
    """The unknown fields check_block fills with labels: all of them when it was given
    ``labels``, else those named as labels are (:func:`_label_like`) — never a triplet's
    ``anchor`` or a second view, which class indices are not (author25-2)."""
    extra = _unknown_fields(fields, kits)
    return extra if labels is not None else [f for f in extra if _label_like(f)]


def _per_item_arrays(fields: set[str], kits: dict[str, Any],
                     labels: int | Callable[[int], Any] | None,
                     block: Any = None) -> dict[str, Any]:
    """The kits of :data:`_GATHERING` with an array for each of ``fields`` that no built-in
    batch holds and check_block fills (a supervised loss's ``labels``,
    :func:`_filled_fields`) added to their dataset: the ``labels`` check_block was given,
    else class indices of the ``classes`` the block declares (see :func:`check_block`); their
    critic ``critic`` takes label rows of the width the block scores (``classes`` one-hot
    columns, else the labels' columns)."""
    import numpy as np

    from infoblocks.blocks.data import Dataset
    from infoblocks.plugins.registry import get_registry

    declared = _declared_classes(block)
    extra = _filled_fields(fields, kits, labels)
    if not extra:
        return {}
    out = {}
    for name in _GATHERING:
        kit = dict(kits[name])
        n = kit["dataset"].n_items
        if callable(labels):
            values = torch.as_tensor(np.asarray(labels(n)))
            assert values.ndim >= 1 and values.shape[0] == n, \
                (f"check_block: labels({n}) must return an array of {n} rows (one per item), "
                 f"got shape {tuple(values.shape)}")
        else:
            classes = int(labels) if labels is not None else declared or CHECK_CLASSES
            values = torch.arange(n) % classes
        kit["dataset"] = Dataset(**dict(kit["dataset"].items()), **{f: values for f in extra})
        width = declared or (values.reshape(n, -1).shape[1] if n else 1)
        if width != 1 and "critic" in kit["models"]:  # (the kits' critic takes one column)
            kit["models"] = {**kit["models"], "critic": get_registry().build("model", {
                "name": "separable_critic", "x_dim": 2, "y_dim": width, "embed_dim": 4,
                "hidden_dims": (8,)}).build()}
        out[name] = kit
    return out


def _check_loss_call(block: Any, labels: int | Callable[[int], Any] | None = None,
                     batch: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
    """A loss on the first batch of a built-in sampler whose batch has the fields it
    declares (``required_fields``), on that batch type's state (:func:`_kits`), with models
    of the names it needs: a ``LossOutput`` whose ``value`` is a finite scalar and whose
    gradient reaches the models' parameters; fields no built-in batch has are per-item
    arrays added to the dataset (``labels``, :func:`_per_item_arrays`) where check_block
    fills them (:func:`_filled_fields`), or come from the caller's ``batch`` function.  A
    Fisher loss's ``statistics(model, batch)`` is run on a simulation batch (μ (m,),
    C (m, m), ∂μ/∂θ (m, p), F (p, p), finite)."""
    fields = block.required_fields()
    if fields is None:
        _not_exercised(block, "__call__(batch, models, state)",
                       "it declares no required_fields (consumes), so check_block cannot tell "
                       "which batch it reads")
        return
    needed_globals, needed_models = set(block.required_globals()), set(block.required_models())
    kits = {name: make() for name, make in _kits().items()}
    filled = _filled_fields(set(fields), kits, labels)
    labelled = _per_item_arrays(set(fields), kits, labels, block)
    # (first the built-in states as they are; then those that gather a dataset's arrays per
    # item, with the arrays the loss reads and no batch holds): the loss runs on the first
    # that gives what it reads and that it does not refuse with infoblocks' own error
    refused = None
    for kind_name, kit in [*kits.items(), *labelled.items()]:
        state = _state(kit)
        available = set(state.globals) | set(state.dataset or ())
        if not (needed_globals <= available and needed_models <= set(kit["models"])):
            continue
        if batch is None:
            if not set(fields) <= set(kit["sampler"].batch_fields(state) or ()):
                continue
            drawn = _first_batch(kit["sampler"], state)
        else:
            try:
                drawn = _built_batch(batch, _first_batch(kit["sampler"], state), kind_name)
            except _Refused:
                continue
            if not set(fields) <= set(drawn):
                continue
        ran = _call_loss(block, drawn, state, kit, kind_name, labelled, filled, labels, batch)
        if ran is True:
            return
        refused = refused or ran
    if refused:
        _not_exercised(block, "__call__(batch, models, state)", refused)
        return
    unknown = sorted(set(_unknown_fields(set(fields), kits)) - set(filled))
    _not_exercised(block, "__call__(batch, models, state)",
                   _why_not_called(fields, needed_globals, needed_models, unknown, batch))


def _call_loss(block: Any, drawn: dict[str, Any], state: Any, kit: dict[str, Any],
               kind_name: str, labelled: dict[str, Any], filled: list[str], labels: Any,
               batch: Any) -> bool | str:
    """The loss called on ``drawn`` and its output checked (:func:`_check_loss_output`):
    True, or why it refused the batch with infoblocks' own error (another state may suit
    it: InfoMax's loss refuses a batch whose `y` is not its `x`)."""
    who = _who(block)
    sampler = kit["sampler"]
    models = state.models
    needed_models = set(block.required_models())
    # the fields check_block made up (not the caller): a failure on them may be check_block's
    invented = sorted(set(filled) & set(block.required_fields())) \
        if kind_name in labelled and labels is None and batch is None else []
    note = (f" (check_block filled {', '.join(f'`{f}`' for f in invented)} itself, with class "
            f"indices 0 … {(_declared_classes(block) or CHECK_CLASSES) - 1} cycling over the "
            "items, as it does for a field named as labels: if the loss reads something else "
            "there, pass check_block(cls, labels=...) or batch=lambda b: {**b, ...})"
            if invented else "")
    try:
        block.on_phase_start(state)
        out = block(drawn, models, state)
    except InfoblocksError as exc:  # it needs another state: said, not failed
        return (f"it refused the first batch of the built-in sampler {sampler.name!r} "
                f"({kind_name!r} batches: {sorted(drawn)}) on a {_describe(state)} with "
                f"{type(exc).__name__}: {str(exc).rstrip('.')}{note}")
    except Exception as exc:  # noqa: BLE001 - reported as the conformance failure
        raise AssertionError(
            f"{who}: __call__(batch, models, state) raised {type(exc).__name__}: {exc} on the "
            f"first {kind_name!r} batch of the built-in sampler {sampler.name!r} "
            f"({_shapes(drawn)}){note}") from exc
    try:
        _check_loss_output(block, out, models, needed_models, kind_name, sampler)
    except AssertionError as exc:
        if not note:
            raise
        raise AssertionError(f"{exc}{note}") from None
    if kind_name == "simulations" and callable(getattr(block, "statistics", None)):
        _check_fisher_statistics(block, models, drawn, kit)
    return True


def _built_batch(build: Callable[[dict[str, Any]], dict[str, Any]], drawn: dict[str, Any],
                 kind_name: str) -> dict[str, Any]:
    """The caller's ``batch=`` function applied to a built-in state's first batch."""
    built = build(dict(drawn))
    assert isinstance(built, dict), \
        (f"check_block: batch= must return the batch the loss is called on, a dict of field "
         f"-> tensor (e.g. {{**b, 'anchor': ...}}), got {type(built).__name__} for the first "
         f"{kind_name!r} batch ({_shapes(drawn)})")
    return built


def _shapes(batch: dict[str, Any]) -> str:
    return ", ".join(f"`{k}` {tuple(v.shape)}" if isinstance(v, torch.Tensor) else f"`{k}`"
                     for k, v in sorted(batch.items()))


def _why_not_called(fields: Any, needed_globals: set[str], needed_models: set[str],
                    unknown: list[str], batch: Any) -> str:
    """Why a loss was not called: what it needs that no built-in state gives."""
    if batch is not None:
        return (f"no built-in state with its globals {sorted(needed_globals)} and models "
                f"{sorted(needed_models)} has a first batch that batch= turns into one holding "
                f"its fields {sorted(fields)}")
    if unknown:
        return (f"it reads {', '.join(f'`{f}`' for f in unknown)}, which no built-in batch "
                "holds, and check_block fills with class indices only a field named as labels "
                f"are ({', '.join(sorted(_LABEL_WORDS))}); pass check_block(cls, labels=K or "
                "a function of n) if they are per-item labels, or batch=lambda b: {**b, "
                f"{unknown[0]!r}: ...}} to build them from a built-in batch (`items`: `data` "
                f"({CHECK_ITEMS}, 3), `positions`, `index`)")
    return (f"no built-in state gives its batch fields {sorted(fields)}, globals "
            f"{sorted(needed_globals)} and models {sorted(needed_models)} together")


def _check_loss_output(block: Any, out: Any, models: Any, needed_models: set[str],
                       kind_name: str, sampler: Any) -> None:
    """A loss's output on a check_block batch: a ``LossOutput`` whose ``value`` is a finite
    scalar with a finite gradient reaching the parameters of the models it names."""
    from infoblocks.blocks.losses import LossOutput

    who = _who(block)
    assert isinstance(out, LossOutput), \
        (f"{who}: __call__(batch, models, state) must return a LossOutput(value, metrics) "
         f"(infoblocks.blocks.losses), got {type(out).__name__}")
    value = out.value
    assert isinstance(value, torch.Tensor) and value.ndim == 0, \
        (f"{who}: LossOutput.value is "
         + (f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor)
            else type(value).__name__)
         + f" on {kind_name!r} batches; a loss's value is a scalar (a 0-d tensor): reduce it "
         "over the batch (e.g. `.mean()`)")
    assert bool(torch.isfinite(value)), \
        (f"{who}: LossOutput.value = {float(value.detach())} on the first {kind_name!r} batch of the "
         f"built-in sampler {sampler.name!r} (finite inputs, fresh models): it must be finite")
    params = [p for name in sorted(needed_models) for p in models[name].parameters()
              if p.requires_grad]
    reached = False
    if value.requires_grad and params:
        grads = torch.autograd.grad(value, params, allow_unused=True)
        reached = any(g is not None and bool((g != 0).any()) for g in grads)
        assert all(g is None or bool(torch.isfinite(g).all()) for g in grads), \
            f"{who}: the gradient of LossOutput.value has non-finite entries"
    assert reached or not params, \
        (f"{who}: LossOutput.value carries no gradient to the parameters of model(s) "
         f"{sorted(needed_models)} on {kind_name!r} batches (is it detached, computed under "
         "no_grad or from .item()?): the optimizer would not train them")


def _check_fisher_statistics(block: Any, models: Any, batch: dict[str, Any],
                             kit: dict[str, Any]) -> None:
    who = _who(block)
    model = models[getattr(block, "model", "main")]
    stats = block.statistics(model, batch)
    m, p = 2, len(kit["sampler"].theta_fid)
    for field, shape in (("mu", (m,)), ("C", (m, m)), ("dmu_dtheta", (m, p)), ("F", (p, p))):
        value = getattr(stats, field, None)
        assert isinstance(value, torch.Tensor) and tuple(value.shape) == shape, \
            (f"{who}: statistics(model, batch) gives `{field}` of shape "
             f"{tuple(getattr(value, 'shape', ())) or type(value).__name__}, not {shape} for "
             f"{m} summaries of {p} parameters (a FisherStatistics: mu (m,), C (m, m), "
             "dmu_dtheta (m, p), F (p, p))")
        assert bool(torch.isfinite(value).all()), f"{who}: statistics' `{field}` is not finite"


def _check_optimizer(block: Any) -> None:
    """``build(params, lr)`` gives a ``torch.optim.Optimizer`` whose ``step`` moves a
    parameter down a gradient and stays finite."""
    name = type(block).__qualname__
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = block.build([weight], lr=0.1)
    assert isinstance(optimizer, torch.optim.Optimizer), \
        f"{name}.build(params, lr) must return a torch.optim.Optimizer, got " \
        f"{type(optimizer).__name__}"
    for _ in range(3):
        optimizer.zero_grad()
        (weight ** 2).sum().backward()
        optimizer.step()
    assert torch.isfinite(weight).all() and float((weight.detach() ** 2).sum()) < 3.0, \
        f"{name}: three steps on |w|^2 from w = 1 did not lower it (w = {weight.tolist()})"


#: phase lengths (optimizer steps) a schedule is exercised over
CHECK_SCHEDULE_STEPS = (1, 7, 250)


def _check_schedule(block: Any, registry: Registry) -> None:
    """``factor(step, total_steps)`` at every step of phases of :data:`CHECK_SCHEDULE_STEPS`
    steps: a finite float ≥ 0, not 0 at every step, and equal (to the bit) for a second call
    and for the block rebuilt from ``describe()`` — the factor is a function of the step and
    the block's fields, so a resumed phase follows the schedule exactly."""
    import math
    import numbers

    name = type(block).__qualname__
    again = registry.build("schedule", block.describe())
    for total in CHECK_SCHEDULE_STEPS:
        factors = []
        for step in range(total):
            try:
                value = block.factor(step, total)
            except Exception as exc:  # noqa: BLE001 - reported as the conformance failure
                raise AssertionError(
                    f"{name}.factor({step}, {total}) raised {type(exc).__name__}: {exc} (the "
                    "engine calls factor(step, total_steps) at every optimizer step 0 .. "
                    "total_steps - 1 of a phase: it must return a finite float >= 0 there)"
                ) from exc
            assert isinstance(value, numbers.Real) and not isinstance(value, bool) and \
                math.isfinite(value) and value >= 0, \
                (f"{name}.factor({step}, {total}) must return a finite float >= 0 (the "
                 f"multiplier of the learning rate), got {value!r}")
            assert block.factor(step, total) == value == again.factor(step, total), \
                (f"{name}.factor({step}, {total}) differs between calls or for the block "
                 "rebuilt from describe(): it must depend on the step and the fields only (no "
                 "state; a checkpoint keeps none)")
            factors.append(value)
        assert any(f > 0 for f in factors), \
            f"{name}.factor is 0 at every step of a {total}-step phase: nothing would train"


def _transform_base() -> type:
    from infoblocks.blocks.transforms import Transform

    return Transform


def _check_coefficients(block: Any) -> None:
    """DII's softmax protocol (docs/plugins.md): ``coefficients(d, exclude, k=, lambda_value=,
    excluded_logits=) -> (n, m)``, rows summing to 1 over the columns not excluded, 0 where
    excluded, finite, differentiable in ``d``."""
    gen = torch.Generator().manual_seed(0)
    d = (torch.rand(6, 8, generator=gen) * 4).requires_grad_(True)
    exclude = torch.zeros(6, 8, dtype=torch.bool)
    exclude[torch.arange(6), torch.arange(6)] = True
    logits = torch.zeros(6, 8).masked_fill(exclude, float("-inf"))
    for kwargs in ({}, {"k": 2}, {"k": 2, "excluded_logits": logits}, {"lambda_value": 0.5}):
        c = block.coefficients(d, exclude, **kwargs)
        assert isinstance(c, torch.Tensor) and tuple(c.shape) == (6, 8), \
            f"coefficients must return (n, m) = (6, 8), got {getattr(c, 'shape', type(c))}"
        assert torch.isfinite(c).all(), f"coefficients({kwargs}) are not finite"
        assert torch.allclose(c.sum(1), torch.ones(6), atol=1e-4), \
            f"coefficients({kwargs}): rows must sum to 1 over the columns not excluded"
        assert (c[exclude] == 0).all(), f"coefficients({kwargs}) must be 0 where excluded"
    (grad,) = torch.autograd.grad((c * d).sum(), d)
    assert torch.isfinite(grad).all(), "coefficients must be differentiable in d"


#: rows of the data a relation / data transform is exercised on (more than the default 15
#: neighbours of a k-NN relation)
CHECK_ROWS = 40


def _check_takes_data(block: Any, method: Callable[[Any], Any], call: str) -> None:
    """``method`` (a relation's compute, a data transform) on data as the engine hands it under
    ``infoblocks run``: a memory-mapped file is :class:`LazyRows`, given as it is to a block
    that declares ``lazy_rows = True`` and read into a tensor for any other
    (:func:`~infoblocks.blocks.data.rows_for`), and as a tensor (a Python ``fit``).  Both must
    give the same kind of finite output.  A block that refuses generic data with infoblocks'
    own error (it needs more items, keyword arguments) is not exercised further."""
    name = type(block).__qualname__
    x = torch.randn(CHECK_ROWS, 3, generator=torch.Generator().manual_seed(0))
    outputs = []
    for data in (x, rows_for(block, LazyRows(x.numpy(), "data"))):
        try:
            outputs.append(method(data))
        except InfoblocksError:
            return
        except Exception as exc:  # noqa: BLE001 - reported as the conformance failure
            lazy = isinstance(data, LazyRows)
            raise AssertionError(
                f"{name}.{call} raised {type(exc).__name__}: {exc} on "
                + ("LazyRows (it declares lazy_rows = True: read rows with data.take(index) / "
                   "data.chunks(), or drop the declaration to get a tensor)" if lazy
                   else f"a ({CHECK_ROWS}, 3) tensor")) from exc
    for out in outputs:
        values = out.to_dense().values if isinstance(out, RelationData) else out
        assert isinstance(values, torch.Tensor), \
            f"{name}.{call} must return RelationData or a tensor, got {type(out).__name__}"
        assert not values.is_floating_point() or torch.isfinite(values).all(), \
            f"{name}.{call} returned non-finite values"
    assert type(outputs[0]) is type(outputs[1]) and \
        tuple(outputs[0].shape) == tuple(outputs[1].shape), \
        (f"{name}.{call} gives {type(outputs[0]).__name__} {tuple(outputs[0].shape)} for a "
         f"tensor but {type(outputs[1]).__name__} {tuple(outputs[1].shape)} for rows on disk")


def _check_contracts(kind: str, block: Any) -> None:
    """Declared contracts have the documented types (None: undeclared)."""
    name = type(block).__qualname__
    if kind == "sampler":
        batch_type = type(block).batch_type
        assert batch_type is None or isinstance(batch_type, BatchType), \
            f"{name}.batch_type must be an infoblocks.blocks.contracts.BatchType"
    if kind == "loss":
        for attribute in ("required_fields", "required_globals", "required_models"):
            value = getattr(block, attribute)()
            assert value is None or (isinstance(value, (set, frozenset)) and all(
                isinstance(v, str) for v in value)), \
                f"{name}.{attribute}() must return a set of names or None, got {value!r}"
        reports = block.reports  # (what the contract check reads; compound's: its parts')
        assert reports is None or (isinstance(reports, frozenset)
                                   and all(isinstance(v, str) for v in reports)), \
            f"{name}.reports must be a frozenset of metric names or None"


def _fixture(function: Callable[..., Any]) -> Callable[..., Any]:
    return pytest.fixture(function) if pytest is not None else function


@_fixture
def infoblocks_plugin() -> Iterator[Callable[..., Registry]]:
    """Register plugin objects for one test: ``infoblocks_plugin(obj, name=None)`` returns
    the resulting registry; the process-wide manager is restored afterwards."""
    previous = get_plugin_manager()
    manager = InfoblocksPlugins(strict=True).load()
    reset_plugin_manager(manager)

    def register(plugin: Any, name: str | None = None) -> Registry:
        if not manager.register(plugin, name or getattr(plugin, "__name__", repr(plugin))):
            raise PluginError(str(manager.failures[-1]))
        return manager.registry

    try:
        yield register
    finally:
        reset_plugin_manager(previous)


#: what a worker prints when gloo's threads abort it (SIGABRT) at teardown
EXIT_ABORT = "terminate called without an active exception"
#: launches again after such an abort
TEARDOWN_RETRIES = 2


def torchrun(script: str, *args: Any, directory: str | Path, nproc: int = 2,
             timeout: float = 600, check: bool = True, retry: bool = True
             ) -> subprocess.CompletedProcess:
    """Run the Python source ``script`` (written to ``directory/script.py``) with ``args``
    under ``python -m torch.distributed.run --standalone --nproc_per_node=nproc`` (gloo on the
    CPU, ``OMP_NUM_THREADS=1``).  With ``check`` a non-zero exit raises ``AssertionError``
    with the end of its stderr.  The ranks share stdout: write per-rank results to files
    (or parse records, not lines).  A launch that fails only by a worker's gloo teardown abort
    (:data:`EXIT_ABORT`, SIGABRT; seen about once in 60 launches on a 2-core machine) is run
    again, up to :data:`TEARDOWN_RETRIES` times, unless ``retry=False``: scripts must be
    re-runnable (write results atomically, or resume)."""
    path = Path(directory) / "script.py"
    path.write_text(script)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", str(path), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    for _ in range(TEARDOWN_RETRIES if retry else 0):
        if run.returncode == 0 or EXIT_ABORT not in run.stderr:
            break
        # a known, rare gloo teardown abort of a worker (SIGABRT, "terminate called without
        # an active exception"; about 1 in 60 launches here, twice in a row once under a
        # load of 4 on 2 cores): the launch runs again
        run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if check and run.returncode != 0:
        raise AssertionError(f"torchrun of {path} failed (exit {run.returncode}):\n"
                             f"{run.stderr[-3000:]}")
    return run


__all__ = ["NotExercisedWarning", "check_block", "infoblocks_plugin", "torchrun"]

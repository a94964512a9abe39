"""Any slot of any built-in recipe takes a plugin's block by name.

For every built-in recipe, a tiny fit records each block the recipe builds through the
registry.  Then, slot by slot, the recipe's full routine spec is handed back (through its full
TOML config) with that one block renamed to a plugin's: a subclass of the built-in block,
registered under a new name by a plugin object.  The fit must build the plugin's block in that
slot and reach the same result (the subclass behaves as the built-in).  Nested blocks (a
loss's kernel, a relation's metric) are slots too.  A recipe that ignored its spec, or built a
slot's block directly instead of through the registry, fails here.

The second test puts a block written against the documented protocol only in each slot: it
derives from the kind's abstract base, not from the built-in, and forwards to a built-in it
holds just the base's methods and the ones docs/plugins.md names; its fields cannot be set
after it is built.  A recipe that type-checks for its built-in block, calls an undocumented
method, or changes a block after building it fails there.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks.base import BLOCK_KINDS
from infoblocks.plugins import hookimpl
from infoblocks.plugins.registry import Registry, get_registry, recipe_from_dict

ROOT = Path(__file__).resolve().parents[2]

#: the hook of each kind a spy is registered through
HOOKS = {"distance": "register_distances", "relation": "register_relations",
         "transform": "register_transforms", "sampler": "register_samplers",
         "loss": "register_losses", "model": "register_models",
         "placement": "register_placements", "optimizer": "register_optimizers",
         "schedule": "register_schedules"}
#: kinds whose slot is one key of a phase: a ``"none"`` elsewhere (InfoMax's `whitening`) is a
#: setting that shares a schedule's name, not a schedule
SLOT_KEY = {"schedule": "lr_schedule"}


def _kinds(name: str, registry: Registry, key: Any) -> list[str]:
    """The kinds with a block ``name`` that a slot under ``key`` may hold."""
    return [k for k in BLOCK_KINDS if k in HOOKS and (k, name) in registry
            and SLOT_KEY.get(k, key) == key]


def _digits(n: int) -> np.ndarray:
    return get_registry().build("dataset", "digits").load()["data"][:n].astype(np.float32)


def _pairs(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return x, (x + 0.5 * rng.normal(size=(n, 2))).astype(np.float32)


def _fresh_pairs(generator: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 2, generator=generator)
    return x, x + 0.5 * torch.randn(n, 2, generator=generator)


def _imnn_data():
    from infoblocks.recipes.imnn import gaussian_simulations
    return gaussian_simulations(300, seed=0)


def _fit(name: str, recipe: Any) -> Any:
    """A tiny fit of ``recipe``, then whatever it evaluates; returns numbers to compare."""
    name, _, mode = name.partition("/")
    if name in ("parametric_umap", "parametric_tsne"):
        x = _digits(300)[:, 8:56]  # 48 features: fewer than the encoder's pca_dims (64)
        recipe.fit(x)
        return np.concatenate([recipe.embedding_, recipe.transform(x[:5])])
    if name == "infomax":
        x = _digits(300) / 16.0
        recipe.fit(x)
        return recipe.transform(x[:5])
    if name == "dii":
        x, y = _pairs(200)
        recipe.fit(x, y)  # the evaluation's blocks: the final DII (softmax, both distances)
        return np.append(np.asarray(recipe.weights_), recipe.final_dii()[0])
    if name == "imnn":
        if mode == "simulator":  # fresh simulations every epoch, through the samplers' with_source
            from infoblocks.recipes.imnn_problem import gaussian_simulator
            recipe.fit(simulator=gaussian_simulator)
            return np.asarray(recipe.F_)
        fid, der = _imnn_data()
        recipe.fit(fid, der)
        return np.asarray(recipe.F_)
    if mode == "fresh":  # fit(sampler=fn): a new draw every epoch, the sampler's spec has fn
        recipe.fit(sampler=_fresh_pairs, n_eval=200)
        return np.asarray(recipe.estimate().value)
    x, y = _pairs()
    recipe.fit(x, y)
    return np.asarray(recipe.estimate().value if hasattr(recipe.estimate(), "value")
                      else recipe.estimate())


#: the smallest settings that still run every phase (and its validation) of each recipe;
#: ``recipe/preset`` runs a preset's other routine (UMAP without a layout: the network on the
#: graph behind a cached front end; t-SNE's network alone)
TINY: dict[str, dict[str, Any]] = {
    "parametric_umap": dict(layout_epochs=2, init_epochs=1, epochs=1, transform_epochs=2),
    "parametric_umap/fast": dict(layout_epochs=0, init_epochs=1, epochs=2, transform_epochs=2,
                                 pca_dims=16, min_dist=0.1),
    "parametric_tsne": dict(perplexity=5, layout_epochs=2, init_epochs=1, epochs=1,
                            transform_epochs=2),
    "parametric_tsne/network": dict(perplexity=5, layout_epochs=0, init_epochs=1, epochs=2,
                                    exaggeration_epochs=1, transform_epochs=2),
    "infomax": dict(n_components=2, epochs=2),
    "dii": dict(epochs=2),
    "imnn": dict(n_summaries=2, theta_fid=(0.0, 1.0), epochs=2, min_epochs=0),
    # (the settings a simulator fit would otherwise take from its mode, set: one config)
    "imnn/simulator": dict(n_summaries=2, theta_fid=(0.0, 1.0), epochs=2, min_epochs=0,
                           n_s=200, n_d=200, n_validation=400, validation_every=1,
                           activation="silu", lr_schedule="cos", patience=2),
    "mine": dict(epochs=2), "mine/fresh": dict(epochs=2, batch_size=50),
    "minee": dict(epochs=2), "nwj": dict(epochs=2),
    "smile": dict(epochs=2), "infonce": dict(epochs=2),
}


class _Recorder:
    """Every ``Registry.build`` of a fit: (kind, name, path)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        original = Registry.build

        def build(registry, kind, spec, path=None):
            name = spec if isinstance(spec, str) else (
                spec.get("name") if isinstance(spec, dict) else None)
            self.calls.append((kind, name, path))
            return original(registry, kind, spec, path)

        monkeypatch.setattr(Registry, "build", build)


def _slots(spec: Any, registry: Registry, path: tuple = ()) -> list[tuple[tuple, str, str]]:
    """(path in the spec, kind, name) of every block spec (a table with a registered
    ``name``, or a string naming a block of exactly one kind) below ``spec``."""
    found = []
    if isinstance(spec, dict):
        name = spec.get("name")
        a_phase = len(path) == 2 and path[0] == "phases"  # its name is the phase's, not a block's
        if isinstance(name, str) and path and not a_phase:
            kinds = _kinds(name, registry, path[-1])
            if len(kinds) == 1:
                found.append((path, kinds[0], name))
        for key, value in spec.items():
            if key == "name":
                continue
            if isinstance(value, str) and key not in ("input", "relation", "model", "init"):
                kinds = _kinds(value, registry, key)
                if len(kinds) == 1:
                    found.append((path + (key,), kinds[0], value))
            else:
                found.extend(_slots(value, registry, path + (key,)))
    elif isinstance(spec, list):
        for i, value in enumerate(spec):
            found.extend(_slots(value, registry, path + (i,)))
    return found


def _spy(cls: type) -> type:
    """A subclass of the built-in block ``cls`` under the name ``spy_<name>``."""
    spy = type(f"Spy{cls.__name__}", (cls,), {"__module__": __name__,
                                              "name": f"spy_{cls.name}"})
    spy.__annotations__ = {"name": ClassVar[str]}
    return attrs.define(kw_only=True)(spy) if attrs.has(cls) else spy


def _renamed(spec: dict[str, Any], path: tuple, new: str) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    parent = spec
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent[path[-1]], dict):
        parent[path[-1]]["name"] = new
    else:
        parent[path[-1]] = new
    return spec


def _cases() -> list[tuple[str, tuple, str, str]]:
    registry = get_registry()
    cases = []
    for name in TINY:
        cls = registry.get("recipe", name.split("/")[0])
        for path, kind, block in _slots(cls(**TINY[name]).routine_spec(), registry):
            slot = ".".join(map(str, path))
            cases.append(pytest.param(name, path, kind, block, id=f"{name}:{slot}"))
    return cases


def _spec_of(case: str, recipe_cls: type) -> dict[str, Any]:
    """The full routine spec of a case, as a user would save it after a fit (in fresh mode
    the MI evaluation draw's index depends on the fit)."""
    recipe = recipe_cls(**TINY[case])
    if case.endswith("/fresh"):
        recipe.sampler_ = _fresh_pairs
    return recipe.routine_spec()


@pytest.fixture(scope="module")
def baselines():
    return {}


def _base(cls: type) -> type:
    """The abstract base a plugin derives from: the nearest ancestor without a ``name``."""
    return next(c for c in cls.__mro__[1:] if not c.__dict__.get("name"))


def _protocol(base: type) -> dict[str, Any]:
    """The public methods and properties ``base`` (and its bases) define: the protocol."""
    names: dict[str, Any] = {}
    for c in reversed(base.__mro__[:-1]):
        for key, value in c.__dict__.items():
            if (key.startswith("_") and key != "__call__") or isinstance(
                    value, (staticmethod, classmethod)):
                continue
            if callable(value) or isinstance(value, property):
                names[key] = value
    return names


#: the methods docs/plugins.md names (``name(``): a slot's documented protocol beyond the base
DOCUMENTED = frozenset(re.findall(r"(\w+)\(", (ROOT / "docs" / "plugins.md").read_text()))


def _delegate(cls: type) -> type:
    """A plugin's block written against the documented protocol only: it derives from the
    abstract base (not from ``cls``), has ``cls``'s fields (read-only after construction) and
    class declarations, and forwards to a ``cls`` it holds exactly the base's public methods and
    those of ``cls`` that docs/plugins.md names.  A recipe that type-checks for the built-in,
    calls anything undocumented, or sets a block's field after building it fails with it (or
    gives other numbers)."""
    base = _base(cls)
    attrs.resolve_types(cls)
    fields = {f.name: attrs.field(default=f.default, validator=f.validator,
                                  converter=f.converter, type=f.type, alias=f.alias,
                                  kw_only=True, on_setattr=attrs.setters.frozen,
                                  metadata=f.metadata)
              for f in attrs.fields(cls) if f.init}
    body: dict[str, Any] = {"__module__": __name__}
    for key in dir(cls):  # class-level declarations: batch_type, consumes, reports, accepts ...
        value = getattr(cls, key)
        if key.startswith("_") or key in fields or key == "name" or callable(value) or any(
                isinstance(c.__dict__.get(key), property) for c in cls.__mro__):
            continue
        body[key] = value
    documented = {key: getattr(cls, key) for key in DOCUMENTED
                  if not key.startswith("_") and callable(getattr(cls, key, None))}
    for key, value in {**documented, **_protocol(base)}.items():
        if key in fields:
            continue
        body[key] = (property(lambda self, key=key: getattr(self._inner, key))
                     if isinstance(value, property) else
                     (lambda self, *args, key=key, **kwargs:
                      getattr(self._inner, key)(*args, **kwargs)))

    def __attrs_post_init__(self) -> None:
        inner = cls(**{f.alias or f.name: getattr(self, f.name)
                       for f in attrs.fields(cls) if f.init})
        object.__setattr__(self, "_inner", inner)

    body["__attrs_post_init__"] = __attrs_post_init__
    shell = type(f"Delegate{cls.__name__}", (base,), body)
    shell.__annotations__ = {"name": ClassVar[str]}
    made = attrs.make_class(shell.__name__, fields, bases=(shell,), slots=False, kw_only=True)
    made.name = f"delegate_{cls.name}"
    made.__module__ = __name__
    return made


@pytest.mark.parametrize("make", [_spy, _delegate], ids=["subclass", "protocol_only"])
@pytest.mark.parametrize("recipe_name, path, kind, block", _cases())
def test_a_plugin_block_fills_the_slot(recipe_name, path, kind, block, make, monkeypatch,
                                       infoblocks_plugin, baselines):
    """``make``: the plugin's block, a registered subclass of the built-in (:func:`_spy`) or
    one that knows only the documented protocol (:func:`_delegate`)."""
    registry = get_registry()
    recipe_cls = registry.get("recipe", recipe_name.split("/")[0])
    if recipe_name not in baselines:
        torch.manual_seed(0)
        baselines[recipe_name] = _fit(recipe_name, recipe_cls(**TINY[recipe_name]))
    plugin_block = make(registry.get(kind, block))

    class _Plugin:
        pass

    setattr(_Plugin, HOOKS[kind], hookimpl(lambda self: [plugin_block]))
    infoblocks_plugin(_Plugin(), f"{plugin_block.name}_{kind}")
    spec = _renamed(_spec_of(recipe_name, recipe_cls), path, plugin_block.name)
    # a shortcut of the slot's own name that the tiny settings set (IMNN simulator's
    # `lr_schedule`) gives way to the section that names the plugin's block
    tiny = {k: v for k, v in TINY[recipe_name].items() if k != path[-1]}
    recipe = recipe_cls(**tiny, **{section: spec[section] for section in spec})
    recipe = recipe_from_dict(tomllib.loads(recipe.to_toml(full=True)))  # by name, from TOML
    recorder = _Recorder(monkeypatch)
    torch.manual_seed(0)
    result = _fit(recipe_name, recipe)
    assert any(k == kind and n == plugin_block.name for k, n, _ in recorder.calls), (
        f"{recipe_name}: the plugin's {kind} {plugin_block.name!r} at {path} was never built")
    # the same numbers (to rounding: the MI recipes' hand-written step serves their exact
    # built-in bounds only; a plugin's bound trains through autograd)
    np.testing.assert_allclose(result, baselines[recipe_name], rtol=1e-3, atol=1e-5)

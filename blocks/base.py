"""The root of every block: a small attrs class with a registry ``name`` and a ``kind``.

Each kind (distance, relation, transform, sampler, loss, model, recipe, dataset, callback,
placement, optimizer, schedule) has one abstract base in its own module.  A concrete block declares
``name`` on its class; that is the key it is registered under.  Blocks are plain data (attrs fields) plus one main method, so that
they can be described as ``{"name": ..., **fields}`` and rebuilt by the registry.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs

#: the kinds of blocks, in the order the registry lists them
BLOCK_KINDS: tuple[str, ...] = (
    "distance", "relation", "transform", "sampler", "loss", "model", "dataset", "recipe",
    "callback", "placement", "optimizer", "schedule",
)


@functools.cache
def _init_keywords(cls: type) -> frozenset[str] | None:
    """The keywords of ``cls``'s attrs-generated ``__init__`` (None where ``cls`` is not an
    attrs class or defines its own ``__init__``: it then decides what it takes)."""
    init = getattr(cls, "__init__", None)
    code = getattr(init, "__code__", None)
    if not attrs.has(cls) or code is None or "<attrs generated" not in code.co_filename:
        return None
    return frozenset(f.alias or f.name for f in attrs.fields(cls) if f.init)


class CheckedKeywords:
    """Base of the attrs classes a user builds from Python (blocks, a
    :class:`~infoblocks.blocks.phases.TrainingPhase`): a keyword the class does not have is an
    :class:`~infoblocks.blocks.errors.UnknownParameterError` with the close matches
    (``TrainingPhase(epoch=2)``: "Did you mean 'epochs'?"), as for a recipe or a TOML key,
    instead of attrs' bare ``TypeError``.  Checked in ``__new__``, before attrs' ``__init__``
    runs, so that no subclass needs a metaclass or its own check."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            names = _init_keywords(cls)
            unknown = [] if names is None else [k for k in kwargs if k not in names]
            if unknown:
                from .config import check_arguments

                check_arguments(cls, {unknown[0]: None})  # raises, with the close matches
        return super().__new__(cls)


class Block(CheckedKeywords):
    """Base of all blocks.  Subclasses are ``@attrs.define`` classes."""

    kind: ClassVar[str] = "block"
    #: registry key; concrete blocks override it
    name: ClassVar[str] = ""
    #: whether the block's main method takes rows on disk
    #: (:class:`~infoblocks.blocks.data.LazyRows`: a memory-mapped ``--data`` array, a torch
    #: Dataset) as they are.  False (the default, every plugin block unless it says so): the
    #: engine reads such an input whole into a tensor before handing it to the block, so a
    #: relation's ``compute`` or an init transform sees the same type under ``infoblocks run``
    #: as under a Python ``fit``.  True: the block reads them itself (``take``, ``chunks``).
    lazy_rows: ClassVar[bool] = False
    #: fields a recipe's shortcuts never fill: names the block shares with a recipe setting
    #: but gives its own meaning (a network's ``whiten`` flag beside IMNN's ``whiten_init``);
    #: only the block's table sets them
    own_fields: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., **fields}``; nested blocks are described recursively."""
        return {"name": self.name, **_fields_as_data(self)}


def _as_data(value: Any) -> Any:
    if isinstance(value, Block):
        return value.describe()
    if attrs.has(type(value)):  # e.g. a phase's Validation: its fields, blocks by name
        return _fields_as_data(value)
    if isinstance(value, (list, tuple)):
        return [_as_data(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_data(v) for k, v in value.items()}
    return value


def _fields_as_data(block: Any) -> dict[str, Any]:
    if not attrs.has(type(block)):
        return {}
    return {
        f.name: _as_data(getattr(block, f.name))
        for f in attrs.fields(type(block))
        if f.init and not f.metadata.get("transient", False)
    }


def resolve_block(kind: str, spec: Any) -> Any:
    """A block of ``kind`` from an instance, a registry name or ``{"name": ..., **params}``.

    Names are looked up in the plugin registry (imported lazily: blocks do not depend on the
    plugin layer at import time, but a user may write ``PDist(metric="cosine")``).
    """
    if isinstance(spec, Block) or spec is None:
        return spec
    if isinstance(spec, (str, dict)):
        from infoblocks.plugins.registry import get_registry

        return get_registry().build(kind, spec)
    return spec  # e.g. a plain callable or module; the block's own validator decides


def block_field(kind: str, *, many: bool = False, **kwargs: Any) -> Any:
    """An attrs field that holds a block of ``kind`` (or, with ``many``, a list of them).

    Names and dicts are converted through the registry, so that
    ``{"name": "compound", "losses": [{"name": "position"}]}`` works as data.
    """
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["block_kind"] = kind
    if many:
        converter = lambda specs: [resolve_block(kind, s) for s in specs]  # noqa: E731
    else:
        converter = lambda spec: resolve_block(kind, spec)  # noqa: E731
    return attrs.field(metadata=metadata, converter=converter, **kwargs)


def is_abstract(cls: type) -> bool:
    """True for base classes that should not be registered (no own ``name``)."""
    return not cls.__dict__.get("name")


def not_implemented(obj: Any, method: str) -> NotImplementedError:
    """The error of a base-class method a subclass must define: it names the class, the
    block it registers as, the method and the base whose docstring says what it returns
    (instead of a bare ``NotImplementedError`` with no message)."""
    cls = type(obj)
    base = next((c for c in cls.__mro__[1:] if method in c.__dict__), cls)
    name = getattr(cls, "name", "")
    label = cls.__qualname__ + (f" ({getattr(cls, 'kind', 'block')} {name!r})"
                                if isinstance(name, str) and name else "")
    return NotImplementedError(
        f"{label} does not define {method}(), which its base {base.__qualname__} leaves to "
        f"subclasses: define it (what it takes and returns: help({base.__qualname__}."
        f"{method}); docs/plugins.md, the slot's row).")


#: the plugin name under which infoblocks registers its own blocks
BUILTIN = "builtin"


def block_origin(block: Any) -> str | None:
    """Who registered ``block``'s class: :data:`BUILTIN` for infoblocks' own blocks, the
    plugin's name for a plugin's, None for a class no registry entry holds (a user's own
    block passed as an object, or a subclass of a registered one)."""
    try:
        from infoblocks.plugins.registry import get_registry

        entry = get_registry().entry(block.kind, block.name)
    except Exception:  # noqa: BLE001 - informative only (an unregistered block)
        return None
    return entry.plugin if entry.block is type(block) else None


def _provider(block: Block) -> str:
    """`` (plugin 'x')`` for a block a plugin other than the built-ins registered, else ''."""
    origin = block_origin(block)
    return "" if origin in (None, BUILTIN) else f" (plugin {origin!r})"


def _blocks_in(traceback: Any) -> list[Block]:
    """The blocks whose methods the traceback passes through, outermost first."""
    found: list[Block] = []
    while traceback is not None:
        owner = traceback.tb_frame.f_locals.get("self")
        if isinstance(owner, Block) and owner.kind != "recipe" and \
                (not found or owner is not found[-1]):
            found.append(owner)
        traceback = traceback.tb_next
    return found


def _module_in(traceback: Any) -> Any:
    """The outermost torch module whose method the traceback passes through (a model a loss
    calls, where a shape mismatch is usually raised), else None."""
    import torch

    while traceback is not None:
        owner = traceback.tb_frame.f_locals.get("self")
        if isinstance(owner, torch.nn.Module):
            return owner
        traceback = traceback.tb_next
    return None


def _model_slot(traceback: Any, module: Any) -> tuple[str, str | None, str | None] | None:
    """``(slot, block name, plugin)`` of the model ``module`` belongs to — the key of the
    training state's ``models`` (``"layout"``), the model block that built it (None: a torch
    module passed as it is) and who registered that block (:data:`BUILTIN`, a plugin's name,
    None) — where a frame of the traceback holds the phase's state (a ``state`` local, as in
    ``TrainingPhase.run``), else None."""
    from .state import TrainState

    while traceback is not None:
        state = traceback.tb_frame.f_locals.get("state")
        if isinstance(state, TrainState) and state.models is not None:
            for slot, model in state.models.items():
                if model is module or any(m is module for m in model.modules()):
                    block = (state.model_blocks or {}).get(slot)
                    origin = None
                    if block is not None:
                        try:
                            from infoblocks.plugins.registry import get_registry

                            origin = get_registry().entry("model", block).plugin
                        except Exception:  # noqa: BLE001 - informative only
                            origin = None
                    return slot, block, origin
            return None
        traceback = traceback.tb_next
    return None


def _own_module(module: Any) -> bool:
    """Whether a torch module is one of infoblocks' (a model block built it), not a user's."""
    return type(module).__module__.startswith(("infoblocks.", "torch."))


def block_failure(exc: BaseException, where: str) -> Exception | None:
    """A :class:`~infoblocks.blocks.errors.BlockError` naming the block that raised ``exc``
    (a non-infoblocks exception) and ``where`` it ran (``"phase 'main'"``), or None when
    ``exc`` is infoblocks' own error or no block's method is on its traceback.  A
    :class:`~infoblocks.blocks.errors.PluginError` (a BlockError) where code that is not
    infoblocks' own took part — a plugin's block, a user's block class or torch module — and
    a plain BlockError, the block called ``built-in``, where only infoblocks' blocks did.

    Called only once an exception was caught (no cost while nothing raises): the block is the
    outermost one whose method the traceback passes through (the slot the engine called),
    and the innermost one too when they differ (a loss's distance, a relation's metric)."""
    from .errors import BlockError, InfoblocksError, PluginError

    if isinstance(exc, InfoblocksError) or not isinstance(exc, Exception):
        return None
    found = _blocks_in(exc.__traceback__)
    if not found:
        return None
    outer, inner = found[0], found[-1]
    module = _module_in(exc.__traceback__)
    # the model slot and block the module belongs to (author16 F7: a plugin model's forward
    # that raised was named by its module class only)
    slot = _model_slot(exc.__traceback__, module) if module is not None else None
    builtin = all(block_origin(b) == BUILTIN for b in found) and \
        (module is None or _own_module(module)) and (slot is None or slot[2] == BUILTIN)
    label = "built-in " if builtin else ""
    inside = f", inside its {inner.kind} {inner.name!r}{_provider(inner)}" \
        if inner is not outer else ""
    if slot is not None:
        key, block, origin = slot
        made = "a torch module passed as it is" if block is None else (
            f"model {block!r}" + ("" if origin in (None, BUILTIN) else f" (plugin {origin!r})"))
        module = f"; in the forward of models.{key}, {made}, module {type(module).__name__}"
    elif module is not None:
        module = f"; in the forward of the model module {type(module).__name__}"
    else:
        module = ""
    hint = ""
    if isinstance(exc, KeyError) and outer.kind == "loss":
        hint = (" A loss that reads a batch field declares it in required_fields(), so that "
                "the phase checks the sampler yields it before the first step.")
    text = str(exc) or "(no message)"
    message = (f"{where}: {label}{outer.kind} {outer.name!r}{_provider(outer)}{inside} raised "
               f"{type(exc).__name__}: {text} ({_raised_at(exc.__traceback__)}{module}).{hint}")
    return failure_like(BlockError if builtin else PluginError, exc, message)


def _raised_at(traceback: Any) -> str:
    """``at FILE:LINE in FUNCTION``: the last frame outside torch (the command line prints
    the message without the traceback, so the message says where)."""
    import os

    import torch

    torch_dir = os.path.dirname(torch.__file__)
    place = None
    while traceback is not None:
        code = traceback.tb_frame.f_code
        if place is None or not code.co_filename.startswith(torch_dir):
            place = f"at {code.co_filename}:{traceback.tb_lineno} in {code.co_name}"
        traceback = traceback.tb_next
    return place or "at an unknown place"


@functools.cache
def failure_like(base: type, exc: BaseException, message: str) -> BaseException:
    """``base(message)`` that is also an instance of ``exc``'s type (:func:`_failure_class`),
    built without that type's own ``__init__``; plain ``base(message)`` where it cannot be."""
    cls = _failure_class(base, type(exc))
    try:
        failure = cls.__new__(cls, message)
        BaseException.__init__(failure, message)
    except Exception:  # noqa: BLE001 - an exception class with its own constructor rules
        failure = base(message)
    return failure


def _failure_class(base: type, original: type) -> type:
    """``base`` (:class:`~infoblocks.blocks.errors.BlockError` or its PluginError) that is
    also an ``original`` (so that ``except RuntimeError`` around a fit still catches a
    RuntimeError raised in a block), or plain ``base`` where the two cannot be combined."""
    try:
        return type(base.__name__, (base, original),
                    {"__module__": base.__module__, "__str__": _first_arg,
                     "__doc__": base.__doc__})
    except TypeError:  # e.g. a final class, or an instance layout that does not combine
        return base


def _first_arg(self: BaseException) -> str:  # KeyError's own __str__ would quote the message
    return str(self.args[0]) if self.args else ""


@contextlib.contextmanager
def naming_blocks(where: str) -> Iterator[None]:
    """Run the body; a non-infoblocks exception raised inside a block's method becomes the
    :func:`block_failure` naming ``where`` and the block (``raise ... from`` the original).
    Free while nothing raises: put it around a phase or a computation, not inside a step."""
    try:
        yield
    except Exception as exc:
        failure = block_failure(exc, where)
        if failure is None:
            raise
        raise failure from exc


def as_data(value: Any) -> Any:
    """The data form of a block, an attrs object (fields), a list or a dict."""
    return _as_data(value)


def default_data(field: Any) -> Any:
    """The data form of an attrs ``field``'s default (a factory called), or ``attrs.NOTHING``
    where it has none that stands alone (no default, or a factory that takes the instance)."""
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:
            return attrs.NOTHING
        default = default.factory()
    return default if default is attrs.NOTHING else as_data(default)


__all__ = ["BLOCK_KINDS", "BUILTIN", "Block", "CheckedKeywords", "as_data", "block_failure",
           "block_field", "block_origin", "default_data", "is_abstract", "naming_blocks",
           "not_implemented", "resolve_block"]

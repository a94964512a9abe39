"""Losses: ``loss(batch, models, state) -> LossOutput(value, metrics)``.

``value`` is the scalar that is minimised; ``metrics`` are detached scalars recorded in the
history (averaged over the batches of an epoch).  Metric tensors stay on the device: the
engine moves them to the host once per epoch, never inside a step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import torch

from .base import Block, block_field, not_implemented
from .errors import ValidationError
from .state import TrainState


@attrs.define(frozen=True)
class LossOutput:
    """A scalar loss ``value`` (with graph) and named detached scalar ``metrics``.

    ``gradients`` (optional): ``[(parameter, ∂value/∂parameter), ...]`` already computed by the
    loss (the MI bounds' hand-written step).  ``value``'s graph hands the same gradients to
    the parameters; the engine assigns them directly instead, skipping autograd's backward
    (~0.09 ms of a 0.6 ms step), when it adds nothing to ``value``."""

    value: torch.Tensor
    metrics: dict[str, torch.Tensor] = attrs.field(factory=dict)
    gradients: list[tuple[torch.Tensor, torch.Tensor]] | None = None


class HandGradients(torch.autograd.Function):
    """``apply(value, grads, *params)``: ``value`` as a node of the graph whose backward hands
    ``grads`` (already computed, one per param, in order; no None) to the parameters, times
    the incoming gradient; so ``value.backward()`` fills ``p.grad`` as if autograd had traced
    the whole computation — the ``value`` of a :class:`LossOutput` with ``gradients``.  One
    backward only: the grads are released by it.  A subclass names its way back to autograd's
    path in ``second_order_error``."""

    second_order_error: ClassVar[str] = (
        "This loss value carries hand-computed gradients (LossOutput.gradients): a gradient of "
        "its gradient (create_graph=True) needs autograd's path.")

    @staticmethod
    def forward(ctx, value, grads, *params):
        ctx.grads = grads
        return value

    @classmethod
    def backward(cls, ctx, grad):
        if ctx.grads is None:
            raise RuntimeError("These hand-computed gradients were handed over already: "
                               "backward through this value runs once (no retain_graph).")
        if torch.is_grad_enabled():
            raise RuntimeError(cls.second_order_error)
        grads, ctx.grads = ctx.grads, None
        if grad.numel() != 1 or float(grad) != 1.0:
            grads = [g * grad for g in grads]
        return (None, None, *grads)


class Loss(Block):
    """Base of losses.

    Contract, checked before the first step: :meth:`required_fields` (batch keys consumed),
    :meth:`required_globals`, :meth:`required_models` and ``reports`` (the metric names of
    :attr:`LossOutput.metrics`).  ``None`` means undeclared (not checked).  A loss that keeps
    running statistics owns them and resets them in :meth:`on_phase_start`.
    """

    kind: ClassVar[str] = "loss"
    #: batch fields this loss reads (None: undeclared); override :meth:`required_fields`
    #: when they depend on the configuration
    consumes: ClassVar[frozenset[str] | None] = None
    #: metric names this loss reports (None: undeclared)
    reports: ClassVar[frozenset[str] | None] = None
    #: the value is the whole batch's on every rank under torchrun (the loss reduces its sums
    #: over the ranks itself, ``state.dist.differentiable_sum``); declared, the engine checks
    #: on each phase's first step that every rank got the same value.  False: a per-rank
    #: value whose mean over the ranks is the whole batch's (UMAP's mean over its edges)
    whole_batch: ClassVar[bool] = False
    #: fields a shard of the batch must carry under torchrun beyond the consumed ones (DII's
    #: ``rows_total``: the whole batch's row count, which its normalisation needs); the engine
    #: checks them on each phase's first sharded batch and names the sampler otherwise
    shard_fields: ClassVar[frozenset[str]] = frozenset()

    def required_fields(self) -> frozenset[str] | None:
        return self.consumes

    def required_globals(self) -> frozenset[str]:
        return frozenset()

    def required_models(self) -> frozenset[str]:
        model = getattr(self, "model", None)
        return frozenset([model]) if isinstance(model, str) else frozenset()

    def on_phase_start(self, state: TrainState) -> None:
        """Reset the loss's own state (moving averages, caches) at the start of a phase."""

    def checkpoint_state(self) -> dict[str, Any]:
        """The state this loss owns that a resumed run needs (tensors and plain data; caches
        that are recomputed need not be included).  Default: the block's public attrs fields
        set after construction (``init=False``, no leading underscore) that hold a tensor or
        a number — a moving average kept on the block — so a plugin loss that keeps one is
        resumed with it; override to save other state."""
        if not attrs.has(type(self)):
            return {}
        return {f.name: value for f in attrs.fields(type(self))
                if not f.init and not f.name.startswith("_")
                and isinstance(value := getattr(self, f.name), (torch.Tensor, int, float))}

    def restore_state(self, saved: dict[str, Any]) -> None:
        """Put back what :meth:`checkpoint_state` returned (after ``on_phase_start``);
        default: the fields the default :meth:`checkpoint_state` saved."""
        names = {f.name for f in attrs.fields(type(self))} if attrs.has(type(self)) else set()
        for name, value in saved.items():
            if name in names:
                current = getattr(self, name)
                if isinstance(current, torch.Tensor) and isinstance(value, torch.Tensor):
                    value = value.to(current.device)
                object.__setattr__(self, name, value)

    def __call__(self, batch: dict[str, torch.Tensor], models: torch.nn.ModuleDict,
                 state: TrainState) -> LossOutput:
        raise not_implemented(self, "__call__")


def get_model(models: torch.nn.ModuleDict, name: str) -> torch.nn.Module:
    """``models[name]`` with an error that lists the routine's models."""
    if name not in models:
        raise ValidationError(f"The loss needs a model named {name!r}; the routine has "
                              f"{sorted(models.keys())}.")
    return models[name]


#: argument types keyed by value in a shared forward's key (tensors are keyed by identity)
_PLAIN_ARGUMENTS = (bool, int, float, str, type(None), torch.dtype, torch.device)
#: an argument (or call) that is not keyed: the call runs as written
_UNSHARED = object()


def _argument_key(value: Any, keep: list[torch.Tensor]) -> Any:
    """A hashable key of one argument of a model call, or ``_UNSHARED`` where the call must
    run as written: a tensor by identity, ``_version`` (an in-place change is a new input),
    dtype, device and shape (kept alive in ``keep`` so that its id is not reused while the
    cache lives), a plain value by value, a tuple / list item by item."""
    if isinstance(value, torch.Tensor):
        keep.append(value)
        return ("tensor", id(value), value._version, value.dtype, value.device, value.shape,
                torch.is_autocast_enabled(value.device.type))
    if isinstance(value, _PLAIN_ARGUMENTS):
        return (type(value), value)
    if isinstance(value, (tuple, list)):
        items = tuple(_argument_key(v, keep) for v in value)
        return _UNSHARED if _UNSHARED in items else (type(value), items)
    return _UNSHARED


def _output_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or a tuple / list / dict of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _output_tensors(v)]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _output_tensors(v)]
    return []


class SharedForwardModels(Mapping):
    """What a :class:`CompoundLoss` hands its parts for ONE evaluation: ``models`` with each
    entry behind a caching ``__call__``, so parts that call a model on the same input share
    one forward.  ``view[name]`` is the real module to everything but its call (attributes,
    methods, ``parameters()``, ``training``, ``isinstance`` and ``type(...).__name__``): an
    instance of a subclass of the module's class that registers nothing and is never saved.
    Other attributes (``train()``, ``parameters()``, ``state_dict()``) are ``models``'s;
    ``unshared`` is ``models`` itself.  A call is shared when the module, its parameters
    (identity and ``_version``), every argument (tensors by identity and ``_version``, plain
    values by value), the grad / inference mode and ``module.training`` are the same, and
    the first output was not modified in place since; anything else runs as written.
    :meth:`close` drops every output (the compound calls it when the evaluation ends)."""

    def __init__(self, models: Mapping[str, torch.nn.Module]):
        self._models = models
        self._views: dict[str, torch.nn.Module] = {}
        self._entries: dict[tuple, tuple[list[torch.Tensor], Any, list[tuple[Any, int]]]] = {}
        self._tables: dict[int, list[dict[str, Any]]] = {}
        self._closed = False

    @property
    def unshared(self) -> Mapping[str, torch.nn.Module]:
        return self._models

    def __getitem__(self, name: str) -> torch.nn.Module:
        view = self._views.get(name)
        if view is None:
            module = self._models[name]
            view = self._views[name] = _shared_view(module, name, self)
        return view

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self):
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._models, name)

    def __repr__(self) -> str:
        return f"SharedForwardModels({self._models!r})"

    def close(self) -> None:
        """Drop the cached outputs; later calls run as written."""
        self._closed = True
        self._entries.clear()
        self._views.clear()
        self._tables.clear()

    def call(self, name: str, module: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
        """``module(*args, **kwargs)``, or the output of the same call earlier in this
        evaluation."""
        if self._closed:
            return module(*args, **kwargs)
        keep: list[torch.Tensor] = []
        key = (name, id(module), module.training, torch.is_grad_enabled(),
               torch.is_inference_mode_enabled(), self._parameters_key(module),
               _argument_key(args, keep),
               _argument_key(tuple(sorted(kwargs.items())), keep) if kwargs else ())
        if _UNSHARED in key:
            return module(*args, **kwargs)
        entry = self._entries.get(key)
        if entry is not None and all(t._version == v for t, v in entry[2]):
            return entry[1]
        out = module(*args, **kwargs)
        self._entries[key] = (keep, out, [(t, t._version) for t in _output_tensors(out)])
        return out

    def _parameters_key(self, module: torch.nn.Module) -> tuple:
        """Each parameter of ``module`` by identity and ``_version``: a parameter swapped
        (``torch.func.functional_call``) or changed in place between two calls makes them
        different calls.  The modules' parameter tables are listed once per evaluation."""
        tables = self._tables.get(id(module))
        if tables is None:
            tables = self._tables[id(module)] = [m._parameters for m in module.modules()]
        return tuple((id(p), p._version) for table in tables for p in table.values()
                     if p is not None)


#: the attributes a shared view keeps for itself; every other one is its module's
_VIEW_OWN = frozenset({"_shared_module", "_shared_name", "_shared_models", "__class__"})


class _SharedForwardView:
    """The mix-in of a shared view's class (:func:`_shared_view`): its call goes through the
    evaluation's cache, every attribute read / write to the module."""

    def __getattribute__(self, name):
        if name in _VIEW_OWN:
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "_shared_module"), name)

    def __setattr__(self, name, value):
        setattr(object.__getattribute__(self, "_shared_module"), name, value)

    def __delattr__(self, name):
        delattr(object.__getattribute__(self, "_shared_module"), name)

    def __call__(self, *args, **kwargs):
        get = object.__getattribute__
        return get(self, "_shared_models").call(get(self, "_shared_name"),
                                                get(self, "_shared_module"), args, kwargs)

    def __repr__(self):
        return repr(object.__getattribute__(self, "_shared_module"))

    def __dir__(self):
        return dir(object.__getattribute__(self, "_shared_module"))


_VIEW_CLASSES: dict[type, type | None] = {}


def _shared_view(module: torch.nn.Module, name: str, models: SharedForwardModels
                 ) -> torch.nn.Module:
    """``module`` behind the cache of ``models``: an instance of a subclass of its class (so
    ``isinstance`` and ``type(view).__name__`` are the module's), built without ``__init__``
    and holding nothing of its own; the module itself where no such subclass can be made (a
    metaclass that refuses it) — then its calls are not shared."""
    cls = type(module)
    if cls not in _VIEW_CLASSES:
        try:
            _VIEW_CLASSES[cls] = type(cls.__name__, (_SharedForwardView, cls),
                                      {"__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})
        except Exception:  # noqa: BLE001 - any class that cannot be subclassed so
            _VIEW_CLASSES[cls] = None
    view_cls = _VIEW_CLASSES[cls]
    if view_cls is None:
        return module
    view = object.__new__(view_cls)
    object.__setattr__(view, "_shared_module", module)
    object.__setattr__(view, "_shared_name", name)
    object.__setattr__(view, "_shared_models", models)
    return view


@attrs.define
class PositionLoss(Loss):
    """Mean squared distance between model outputs and target positions.

    L = mean_i ‖f(x_i) − y_i‖²; x from ``batch[input]``, y from ``batch[target]`` (an item
    sampler with ``gather=["positions"]`` puts the global per-item positions there).  With
    ``target_model`` the targets are that model's outputs at ``batch["index"]`` (detached), e.g.
    the free coordinates of a layout optimised in an earlier phase.
    """

    name: ClassVar[str] = "position"
    reports: ClassVar[frozenset[str]] = frozenset({"position"})
    model: str = "main"
    input: str = "data"
    target: str = "positions"
    target_model: str | None = None

    def required_fields(self):
        return frozenset({self.input, "index" if self.target_model else self.target})

    def required_models(self):
        return frozenset({self.model, *([self.target_model] if self.target_model else [])})

    def __call__(self, batch, models, state):
        out = get_model(models, self.model)(batch[self.input])
        if self.target_model is not None:
            with torch.no_grad():
                target = get_model(models, self.target_model)(batch["index"].to(out.device))
        else:
            target = batch[self.target]
        if target.shape != out.shape:
            raise ValidationError(
                f"PositionLoss: the output of models.{self.model} "
                f"({type(models[self.model]).__name__}) has shape "
                f"{tuple(out.shape)} but its target "
                f"{self.target_model or self.target!r} has shape {tuple(target.shape)}: the "
                f"model must map to {target.shape[-1]} columns (its `out_dim`; a recipe's "
                "`n_components`).")
        value = ((out - target) ** 2).sum(-1).mean()
        return LossOutput(value, {"position": value.detach()})


def _weights_match(instance, attribute, value) -> None:
    if value is not None and len(value) != len(instance.losses):
        raise ValidationError(
            f"CompoundLoss has {len(instance.losses)} losses but {len(value)} weights."
        )
    for k, w in enumerate(value or ()):
        # a NaN / inf weight (TOML reads `nan`, `inf`) made the first step's loss NaN, then a
        # NumericalError blaming the learning rate (author29-16); a negative weight is allowed
        # (it maximises that part: an adversarial term)
        if isinstance(w, bool) or not isinstance(w, numbers.Real) \
                or not math.isfinite(w):
            raise ValidationError(
                f"CompoundLoss: `weights[{k}]` = {w!r} must be a finite number (the weight of "
                f"losses[{k}]); to leave that loss out, give it weight 0 or remove it.")


@attrs.define
class CompoundLoss(Loss):
    """L = Σ_k w_k L_k; every part's value and metrics are kept, prefixed with its position
    and name: ``"0.relation"``, ``"0.relation.attraction"``, ``"1.encoded_mi.mi"`` (what a
    phase's ``validation.metric`` names).

    ``share_forward`` (default True): within one evaluation (one step's loss) the parts share
    each forward — a model called again on the same input tensor object (same ``_version``,
    same other arguments, grad mode and ``training`` flag) returns the first call's output
    instead of running again, so a step runs the model once, not once per part, and backward
    sums the parts' gradients through that one graph (the same gradient as two forwards of a
    deterministic model).  The parts then see ONE forward, as one loss would: one dropout
    mask, one batch-norm running-statistics update per step (two before), one draw of any
    randomness inside ``forward`` — the gradient of Σ_k w_k L_k at one sample of the noise.
    ``share_forward = false``: one forward per part, as before.  Parts need no change: they
    receive a view of ``models`` whose entries are the real modules behind a thin caching
    ``__call__`` (attributes, methods, parameters and ``isinstance`` are the module's; nothing
    is registered or saved); a nested compound shares the outer cache; the cache is dropped
    when the evaluation ends.  A part that embeds a fresh tensor (``x.index_select(...)``,
    ``model.network(cached[items])``) gets no hit: only the same tensor object is shared.
    """

    name: ClassVar[str] = "compound"
    losses: list[Any] = block_field("loss", many=True)
    weights: list[float] | None = attrs.field(default=None, validator=_weights_match)
    share_forward: bool = True

    def required_fields(self):
        parts = [loss.required_fields() for loss in self.losses]
        return None if any(p is None for p in parts) else frozenset().union(*parts)

    def required_globals(self):
        return frozenset().union(*(loss.required_globals() for loss in self.losses))

    def required_models(self):
        return frozenset().union(*(loss.required_models() for loss in self.losses))

    @property
    def reports(self) -> frozenset[str] | None:  # type: ignore[override]
        """What :meth:`__call__` records: ``"<k>.<part>"`` and ``"<k>.<part>.<metric>"`` for
        each part's declared metrics (None where a part declares none), so a misspelt
        ``validation.metric`` is refused before the first step (author22-9)."""
        names: set[str] = set()
        for k, loss in enumerate(self.losses):
            declared = getattr(loss, "reports", None)
            if declared is None:
                return None
            prefix = f"{k}.{loss.name}"
            names |= {prefix, *(f"{prefix}.{m}" for m in declared)}
        return frozenset(names)

    @property
    def whole_batch(self) -> bool:  # the sum is the whole batch's where every part's is
        return all(getattr(loss, "whole_batch", False) for loss in self.losses)

    @property
    def shard_fields(self) -> frozenset[str]:
        return frozenset().union(*(getattr(loss, "shard_fields", frozenset())
                                   for loss in self.losses))

    def on_phase_start(self, state):
        for loss in self.losses:
            loss.on_phase_start(state)

    def checkpoint_state(self):
        return {str(k): loss.checkpoint_state() for k, loss in enumerate(self.losses)}

    def restore_state(self, saved):
        for k, loss in enumerate(self.losses):
            loss.restore_state(saved.get(str(k), {}))

    def __call__(self, batch, models, state):
        if isinstance(models, SharedForwardModels):  # a nested compound: the outer's cache
            return self._sum(batch, models if self.share_forward else models.unshared, state)
        if not self.share_forward:
            return self._sum(batch, models, state)
        shared = SharedForwardModels(models)
        try:
            return self._sum(batch, shared, state)
        finally:  # no output outlives the evaluation, also on an exception
            shared.close()

    def _sum(self, batch, models, state):
        weights = self.weights or [1.0] * len(self.losses)
        total, metrics = 0.0, {}
        for k, (loss, w) in enumerate(zip(self.losses, weights)):
            part = loss(batch, models, state)
            total = total + w * part.value
            prefix = f"{k}.{loss.name}"
            metrics[prefix] = part.value.detach()
            metrics.update({f"{prefix}.{m}": v for m, v in part.metrics.items()})
        return LossOutput(total, metrics)


__all__ = ["Loss", "LossOutput", "PositionLoss", "CompoundLoss", "SharedForwardModels",
           "get_model"]

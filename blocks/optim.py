"""A lean fused Adam for small models: torch's fused Adam / AdamW update without the per-step
wrappers of ``torch.optim.Optimizer.step``.

For a critic of a few thousand weights the update itself (one ``torch._fused_adam_`` kernel
over all parameters) takes ~0.06 ms, but ``torch.optim.Adam(fused=True).step()`` costs ~0.55 ms
on one CPU thread: the profiler record and hook dispatch of the step wrapper, a fresh grouping
of the parameters, gradients and state by device and dtype, and the state look-ups — every step
(``benchmarks/mi_bench.py --only floor``).  :class:`LeanAdam` *is* a ``torch.optim.Adam``
(same ``param_groups``, same per-parameter state ``step`` / ``exp_avg`` / ``exp_avg_sq``, so
``state_dict`` / ``load_state_dict``, checkpoints, warm starts and ``param_groups[i]["lr"]``
schedules work, and its checkpoints load into torch's Adam and back) whose ``step`` keeps the
flat lists of parameters and state from one step to the next and calls the same kernel with the
same arguments: the weights are those of ``torch.optim.Adam(fused=True)`` to the last bit
(``tests/blocks/test_optim.py``).

:func:`make_adam` is what the engine calls: the lean step where it is exact (fused semantics
asked for, no AMSGrad / maximize / capturable / differentiable / foreach options, one device of
type cpu or cuda and one floating dtype), torch's own optimizer otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import attrs
import torch
from torch.optim import optimizer as torch_optimizer

from .base import Block
from .errors import ValidationError

#: the Adam keywords the lean step implements exactly (with ``fused=True``); anything else
#: (``amsgrad=True``, ``maximize=True``, ``capturable``, ``differentiable``, ``foreach``) goes
#: to torch's optimizer
LEAN_OPTIONS = frozenset({"fused", "betas", "eps"})
#: devices the fused kernel runs on
LEAN_DEVICES = ("cpu", "cuda")


class LeanAdam(torch.optim.Adam):
    """Adam (or AdamW with ``decoupled_weight_decay=True``) with torch's fused update and no
    per-step wrappers.

    ``step()``: θ ← fused Adam(θ, ∇θ, m, v, t) with the group's ``lr``, ``betas``, ``eps``,
    ``weight_decay`` read at every step (so a schedule that writes ``param_groups[i]["lr"]``
    is honoured).  The flat lists of parameters and state are built at the first step where
    every parameter has a gradient and kept until ``load_state_dict`` / ``add_param_group``.
    A step where a parameter has no gradient, a tensor ``lr``, parameters of mixed devices or
    dtypes, or registered step hooks take torch's own ``Adam.step`` (the same numbers).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, decoupled_weight_decay: bool = False) -> None:
        self._plans: list[tuple[Any, ...]] | None = None
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         fused=True, decoupled_weight_decay=decoupled_weight_decay)

    # torch wraps the class's ``step`` in its profiler / hook wrapper here; the lean step is
    # left unwrapped (hooks, when registered, are honoured by falling back to the wrapped step)
    def _patch_step_function(self) -> None:
        self._zero_grad_profile_name = f"Optimizer.zero_grad#{type(self).__name__}.zero_grad"

    # torch's ``add_param_group``, ``state_dict`` and ``load_state_dict`` are wrapped in
    # ``torch._disable_dynamo``, whose first call in a process imports ``torch._dynamo``: 1.5-4 s
    # on this machine, more than a whole small fit.  This optimizer runs eagerly, so it calls
    # the methods underneath the wrapper (the same code).
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _eager(torch.optim.Optimizer.add_param_group)(self, param_group)
        self._plans = None

    def state_dict(self) -> dict[str, Any]:
        return _eager(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """torch's ``load_state_dict`` (a checkpoint of ``torch.optim.Adam`` / ``AdamW``, fused
        or not, or of this class); the groups stay fused and the step counts are moved to the
        parameters' device as float32, as the fused kernel needs."""
        _eager(torch.optim.Optimizer.load_state_dict)(self, state_dict)
        for group in self.param_groups:
            group["fused"], group["foreach"] = True, None
            for p in group["params"]:
                state = self.state.get(p)
                if state and "step" in state:
                    state["step"] = state["step"].to(dtype=torch.float32, device=p.device)
        self._plans = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._plans = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            super().zero_grad(set_to_none=False)
            return
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _has_hooks(self) -> bool:
        return bool(self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                    or torch_optimizer._global_optimizer_pre_hooks
                    or torch_optimizer._global_optimizer_post_hooks)

    def _build_plans(self) -> list[tuple[Any, ...]] | None:
        """Per group: the lists (exp_avgs, exp_avg_sqs, steps) and the tensor ``counts`` whose
        elements the steps are, the state created as torch's fused Adam creates it; None where
        the lean step does not apply."""
        plans = []
        for group in self.param_groups:
            params = group["params"]
            if group["amsgrad"] or group["maximize"] or group["capturable"] \
                    or group["differentiable"] or isinstance(group["lr"], torch.Tensor):
                return None
            if len({(p.device, p.dtype) for p in params}) > 1 or any(
                    p.device.type not in LEAN_DEVICES or not p.is_floating_point()
                    or p.is_complex() for p in params):
                return None
            for p in params:
                state = self.state[p]
                if not state:  # torch's lazy initialisation for fused Adam
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p,
                                                           memory_format=torch.preserve_format)
            # the step counts become views of one tensor: one ``add_`` per step counts them
            # all (a ``_foreach_add_`` over a list of scalars cost more than the Adam kernel)
            counts = torch.stack([self.state[p]["step"].to(torch.float32) for p in params])
            for i, p in enumerate(params):
                self.state[p]["step"] = counts[i]
            plans.append(([self.state[p]["exp_avg"] for p in params],
                          [self.state[p]["exp_avg_sq"] for p in params],
                          [self.state[p]["step"] for p in params], counts))
        return plans

    def step(self, closure: Any = None) -> Any:
        if self._has_hooks():
            return _torch_step(self, closure)
        grads = [[p.grad for p in group["params"]] for group in self.param_groups]
        if any(g is None or g.is_sparse for gs in grads for g in gs):
            return _torch_step(self, closure)  # torch skips parameters without a gradient
        if self._plans is None:
            self._plans = self._build_plans()
            if self._plans is None:
                return _torch_step(self, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # grad mode off without ``torch.no_grad()``'s context object (~20 µs of a 2 ms step)
        grad_enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            for group, group_grads, (exp_avgs, exp_avg_sqs, steps, counts) in zip(
                    self.param_groups, grads, self._plans):
                beta1, beta2 = group["betas"]
                counts.add_(1)  # every parameter's ``step`` (its views)
                update = torch._fused_adamw_ if group["decoupled_weight_decay"] \
                    else torch._fused_adam_
                update(group["params"], group_grads, exp_avgs, exp_avg_sqs, [], steps,
                       amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                       weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                       grad_scale=None, found_inf=None)
        finally:
            torch._C._set_grad_enabled(grad_enabled)
        return loss


class DeltaBarDelta(torch.optim.Optimizer):
    """Gradient descent with momentum and per-coordinate gains (Jacobs, 1988), t-SNE's update
    (van der Maaten, 2008; FIt-SNE, openTSNE).

    Per coordinate: the gain g grows by ``gain_increase`` where the gradient's sign differs
    from the last update's (the step still runs downhill), else shrinks by the factor
    ``gain_decay`` (floored at ``min_gain``); the update u ← μ u − lr · g · ∇ (μ =
    ``momentum``), then θ ← θ + u.  ``max_step_norm``: a row's update (the step of one point
    of a (n, d) embedding) is shrunk to that Euclidean norm (openTSNE's safeguard against
    points thrown far away by a close pair; None: no limit).  State per parameter: ``gains``
    and ``update`` (checkpointed with ``state_dict``).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1.0, momentum: float = 0.8,
                 gain_increase: float = 0.2, gain_decay: float = 0.8, min_gain: float = 0.01,
                 max_step_norm: float | None = 5.0) -> None:
        for name, value in (("lr", lr), ("gain_increase", gain_increase), ("min_gain", min_gain)):
            if not value > 0:
                raise ValueError(f"DeltaBarDelta: `{name}` must be positive, got {value!r}.")
        if not 0 <= momentum < 1 or not 0 < gain_decay <= 1:
            raise ValueError(f"DeltaBarDelta: `momentum` must lie in [0, 1) and `gain_decay` in "
                             f"(0, 1], got {momentum!r} and {gain_decay!r}.")
        if max_step_norm is not None and not max_step_norm > 0:
            raise ValueError(f"DeltaBarDelta: `max_step_norm` must be positive or None, got "
                             f"{max_step_norm!r}.")
        super().__init__(params, dict(lr=lr, momentum=momentum, gain_increase=gain_increase,
                                      gain_decay=gain_decay, min_gain=min_gain,
                                      max_step_norm=max_step_norm))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["gains"] = torch.ones_like(p)
                    state["update"] = torch.zeros_like(p)
                gains, update = state["gains"], state["update"]
                same = torch.sign(grad) == torch.sign(update)  # uphill: the last step overshot
                gains.copy_(torch.where(same, gains * group["gain_decay"],
                                        gains + group["gain_increase"]))
                gains.clamp_(min=group["min_gain"])
                update.mul_(group["momentum"]).addcmul_(gains, grad, value=-group["lr"])
                if group["max_step_norm"] is not None and p.ndim >= 1:
                    rows = update.reshape(update.shape[0], -1) if p.ndim > 1 else update[:, None]
                    norms = rows.norm(dim=1, keepdim=True)
                    rows.mul_((group["max_step_norm"] / norms.clamp_min(1e-30)).clamp_(max=1.0))
                p.add_(update)
        return loss


@attrs.define
class OptimizerBlock(Block):
    """Base of the ``optimizer`` kind: an optimizer a phase names (``optimizer = NAME``, its
    ``optimizer_options`` the block's fields), registered like any block (hook
    ``register_optimizers``).  ``build(params, lr, weight_decay)`` returns the torch optimizer;
    by default the class ``optimizer`` called with the block's fields as keywords (and
    ``weight_decay`` when the phase sets one).  ``adam`` / ``adamw`` / ``sgd`` (the engine's
    own fast paths) and torch.optim's classes by name need no block."""

    kind: ClassVar[str] = "optimizer"
    #: the ``torch.optim.Optimizer`` subclass :meth:`build` makes (or override ``build``)
    optimizer: ClassVar[type[torch.optim.Optimizer] | None] = None

    def build(self, params: list[torch.nn.Parameter], lr: float,
              weight_decay: float = 0.0) -> torch.optim.Optimizer:
        cls = type(self).optimizer
        if cls is None:
            raise NotImplementedError(f"{type(self).__name__}: set the class attribute "
                                      "`optimizer` or override build().")
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise ValidationError(
                f"{type(self).__name__} (optimizer {self.name!r}): its class attribute "
                f"`optimizer` must be a torch.optim.Optimizer subclass, got {cls!r}; set it to "
                "one, or override build(params, lr, weight_decay) to return an optimizer.")
        decay = {"weight_decay": weight_decay} if weight_decay else {}
        return cls(params, lr=lr, **decay, **attrs.asdict(self, recurse=False))


@attrs.define
class DeltaBarDeltaOptimizer(OptimizerBlock):
    """t-SNE's gains-and-momentum update, :class:`DeltaBarDelta`, by name."""

    name: ClassVar[str] = "delta_bar_delta"
    optimizer: ClassVar[type[torch.optim.Optimizer]] = DeltaBarDelta

    momentum: float = 0.8
    gain_increase: float = 0.2
    gain_decay: float = 0.8
    min_gain: float = 0.01
    max_step_norm: float | None = 5.0


def _eager(method: Any) -> Any:
    """``method`` without its ``torch._disable_dynamo`` wrapper (functools' ``__wrapped__``)."""
    return getattr(method, "__wrapped__", method)


def _torch_step(optimizer: LeanAdam, closure: Any = None) -> Any:
    """torch's own ``Adam.step`` behind its profiler / hook wrapper (the exact fallback)."""
    step = torch.optim.Adam.step
    if getattr(step, "hooked", False):  # torch wrapped the class's step at its first instance
        step = step.__wrapped__
    return torch.optim.Optimizer.profile_hook_step(step)(optimizer, closure)


def lean_applies(params: list[torch.Tensor], options: Mapping[str, Any]) -> bool:
    """Whether :class:`LeanAdam` is exactly torch's Adam with these ``optimizer_options``:
    fused asked for, only the options it implements, one cpu / cuda device, one float dtype."""
    if options.get("fused") is not True or not set(options) <= LEAN_OPTIONS or not params:
        return False
    kinds = {(p.device, p.dtype) for p in params}
    if len(kinds) != 1:
        return False
    device, dtype = next(iter(kinds))
    return device.type in LEAN_DEVICES and dtype.is_floating_point and not dtype.is_complex


def make_adam(params: list[torch.Tensor], *, lr: float, weight_decay: float, decoupled: bool,
              options: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Adam (``decoupled=False``) or AdamW: :class:`LeanAdam` where it is exact, else torch's
    ``Adam`` / ``AdamW`` with ``options`` (its keywords)."""
    if lean_applies(params, options):
        extra = {k: v for k, v in options.items() if k != "fused"}
        return LeanAdam(params, lr=lr, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled, **extra)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay, **options)


__all__ = ["LeanAdam", "DeltaBarDelta", "DeltaBarDeltaOptimizer", "OptimizerBlock", "make_adam",
           "lean_applies",
           "LEAN_OPTIONS"]

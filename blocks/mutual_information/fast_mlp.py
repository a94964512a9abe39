"""A plain MLP (``Linear`` and elementwise activations, as :class:`~infoblocks.blocks.models.MLP`
builds it) run without ``nn.Module.__call__``: :func:`mlp_plan` reads the layers once,
:func:`plan_forward` runs them.

A MINE step evaluates a 2 → 100 → 100 → 1 critic on 200 rows; the arithmetic is small, so the
five modules' ``__call__`` (hooks, tracing and dispatch in Python) is a visible share of the
forward.  :func:`plan_forward` calls the same aten ops the modules call (``linear`` and the
activation's own kernel), so autograd records the same graph and the values and gradients are
the module's bit for bit — except a narrow first layer (≤ :data:`NARROW_INPUT` inputs, as
[x, y] of two scalars), which multiplies by a contiguous copy of Wᵀ so that autograd takes
MKL's fast kernel for that weight's gradient: the same dot products, equal to float rounding
(on the MINE notebook problem the trained weights came out identical).  :func:`plan_usable`
declines what the shortcut would get wrong: hooks and dropout while training.

:class:`MLPFunction` runs the whole MLP as ONE autograd node with a hand-written backward.  It
is exact (to float rounding, ``gradcheck`` in float64) but not faster here: its Python
``forward`` / ``backward`` cost as much as the autograd nodes they replace (docs/mi.md, "Where
a step's time goes"); ``benchmarks/mi_bench.py --only floor`` measures it beside the rest.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

from ..losses import HandGradients as LossHandGradients

aten = torch.ops.aten


class _Activation(NamedTuple):
    """forward(z) -> a, and backward(grad_a, z, a) -> grad_z with autograd's own kernel;
    ``inplace(z) -> a`` overwrites z where the backward needs only the result a (None: it
    needs z, or the activation has no in-place kernel)."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None
    inplace: Callable[[torch.Tensor], torch.Tensor] | None = None


def _activation(module: nn.Module) -> _Activation | None:
    """The fast forward / backward of an activation module (None: not supported)."""
    kind = type(module)
    if kind is nn.ELU:
        alpha = float(module.alpha)
        if alpha < 0:  # the backward from the result needs alpha >= 0
            return _Activation(lambda z: torch._C._nn.elu(z, alpha),
                               lambda g, z, a: aten.elu_backward(g, alpha, 1.0, 1.0, False, z))
        return _Activation(lambda z: torch._C._nn.elu(z, alpha),
                           lambda g, z, a: aten.elu_backward(g, alpha, 1.0, 1.0, True, a),
                           lambda z: torch._C._nn.elu_(z, alpha))
    if kind is nn.ReLU:
        return _Activation(torch.relu, lambda g, z, a: aten.threshold_backward(g, a, 0),
                           torch.relu_)
    if kind is nn.LeakyReLU:
        slope = float(module.negative_slope)
        return _Activation(lambda z: torch._C._nn.leaky_relu(z, slope),
                           lambda g, z, a: aten.leaky_relu_backward(g, z, slope, False))
    if kind is nn.SiLU:
        return _Activation(torch._C._nn.silu, lambda g, z, a: aten.silu_backward(g, z))
    if kind is nn.Tanh:
        return _Activation(torch.tanh, lambda g, z, a: aten.tanh_backward(g, a), torch.tanh_)
    if kind is nn.Sigmoid:
        return _Activation(torch.sigmoid, lambda g, z, a: aten.sigmoid_backward(g, a),
                           torch.sigmoid_)
    if kind is nn.GELU:
        approx = module.approximate
        return _Activation(lambda z: torch._C._nn.gelu(z, approximate=approx),
                           lambda g, z, a: aten.gelu_backward(g, z, approximate=approx))
    if kind is nn.Softplus:
        beta, threshold = module.beta, module.threshold
        return _Activation(lambda z: torch._C._nn.softplus(z, beta, threshold),
                           lambda g, z, a: aten.softplus_backward(g, z, beta, threshold))
    if kind is nn.Identity:
        return _Activation(lambda z: z, None)
    return None


#: the weight gradient of a layer with at most this many inputs is best formed as (hᵀg)ᵀ: 8 µs
#: instead of 25 µs for (200, 2) × (200, 100) with MKL on one thread (gᵀh with a narrow h,
#: autograd's choice for ``linear``, takes a slow kernel); the same dot products.
#: :func:`plan_forward` gets it from autograd by a contiguous Wᵀ, :class:`MLPFunction` directly
NARROW_INPUT = 8


class MLPPlan(NamedTuple):
    """A Sequential read as ``[(linear, activation or None), ...]``; ``modules`` all of its
    layers (for the hook check), ``dropouts`` its Dropout layers (identity in eval mode)."""

    layers: tuple[tuple[nn.Linear, _Activation | None], ...]
    modules: tuple[nn.Module, ...]
    dropouts: tuple[nn.Dropout, ...]


def mlp_plan(net: nn.Module) -> MLPPlan | None:
    """Read ``net`` as Linear (activation) (Dropout) ... Linear (activation); None when it is
    anything else (another layer, an in-place activation, a subclass of a known layer)."""
    if type(net) is not nn.Sequential or len(net) == 0 or type(net[0]) is not nn.Linear:
        return None
    layers: list[list] = []
    dropouts = []
    for module in net:
        if type(module) is nn.Linear:
            layers.append([module, None])
        elif type(module) is nn.Dropout:
            dropouts.append(module)
        elif layers[-1][1] is None and not getattr(module, "inplace", False) \
                and (act := _activation(module)) is not None:
            layers[-1][1] = act
        else:
            return None
    return MLPPlan(tuple(map(tuple, layers)), tuple(net), tuple(dropouts))


def plan_usable(plan: MLPPlan | None) -> bool:
    """The plan computes ``net(x)`` now: no hooks (module or global, forward or backward) that
    the modules' ``__call__`` would run, and no dropout that is active (training with p > 0)."""
    if plan is None or any(_GLOBAL_HOOKS):
        return False
    for module in plan.modules:
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks \
                or module._backward_pre_hooks:
            return False
    return not any(d.training and d.p > 0 for d in plan.dropouts)


def plan_forward(plan: MLPPlan, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` for ``(..., in_dim) -> (..., out_dim)`` by the ops the modules call (check
    :func:`plan_usable` first); a narrow first layer (see :data:`NARROW_INPUT`) multiplies by
    a contiguous Wᵀ."""
    h = x
    for i, (layer, act) in enumerate(plan.layers):
        if i == 0 and layer.in_features <= NARROW_INPUT and h.dim() == 2:
            w_t = layer.weight.t().contiguous()
            h = torch.mm(h, w_t) if layer.bias is None else torch.addmm(layer.bias, h, w_t)
        else:
            h = _linear(h, layer.weight, layer.bias)
        if act is not None:
            h = act.forward(h)
    return h


#: rows per block of :func:`blocked_forward`: a block's activations (rows × width floats) stay
#: in the core's cache; 12,500 rows of the 2-100-100-1 critic run 1.7-1.8× faster in blocks of
#: 512-2,048 than in one call (docs/mi.md, "Where a fit's time goes")
FORWARD_BLOCK_ROWS = 1024


def blocked_forward(plan: MLPPlan, x: torch.Tensor, rows: int = FORWARD_BLOCK_ROWS
                    ) -> torch.Tensor:
    """``net(x)`` for ``(n, in_dim)`` without a graph, ``rows`` rows at a time: each block runs
    every layer before the next block starts, activations in place where the activation has an
    in-place kernel.  The same kernels as :func:`plan_forward` on row blocks (each output row
    is the same dot products; equal to it to float rounding, bit for bit with MKL here).  For
    grad mode off (validation, final estimates); check :func:`plan_usable` first."""
    n = len(x)
    layers = plan.layers
    weights = []
    for i, (layer, _) in enumerate(layers):
        w = layer.weight
        weights.append((w.t().contiguous() if i == 0 and layer.in_features <= NARROW_INPUT
                        else w.t(), layer.bias))
    out = x.new_empty((n, layers[-1][0].out_features))
    last = len(layers) - 1
    for start in range(0, n, rows):
        h = x[start:start + rows]
        for i, (_, act) in enumerate(layers):
            w_t, b = weights[i]
            if i == last and act is None:
                if b is None:
                    torch.mm(h, w_t, out=out[start:start + rows])
                else:
                    torch.addmm(b, h, w_t, out=out[start:start + rows])
                break
            h = torch.mm(h, w_t) if b is None else torch.addmm(b, h, w_t)
            if act is not None:
                h = act.inplace(h) if act.inplace is not None else act.forward(h)
        else:
            out[start:start + rows] = h
    return out


_linear = torch._C._nn.linear
#: torch's registries of global module hooks (mutated in place, never rebound)
_GLOBAL_HOOKS = tuple(getattr(nn.modules.module, name) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
    "_global_backward_pre_hooks"))


# ====================================================================== one autograd node


class MLPFunction(torch.autograd.Function):
    """The MLP as one autograd node: ``apply(x, acts, w_1, b_1, ..., w_L, b_L)`` with ``acts``
    the plan's activations and ``b`` possibly None; ``(n, d_in) -> (n, d_out)``.

    The forward keeps each layer's input, pre-activation and output on ``ctx`` (they are
    neither inputs nor outputs) and the weights in ``save_for_backward`` (an in-place change
    between forward and backward is an error, as with autograd's own nodes); the backward
    calls the kernels autograd would (``mm``, ``sum``, ``elu_backward``, ...).  Differentiable
    once: a gradient of its gradient raises."""

    @staticmethod
    def forward(ctx, x, acts, *params):
        saved, h = [], x
        for i, act in enumerate(acts):
            w, b = params[2 * i], params[2 * i + 1]
            z = torch.mm(h, w.t()) if b is None else torch.addmm(b, h, w.t())
            a = z if act is None else act.forward(z)
            saved.append([h, z, a])
            h = a
        saved[-1][2] = None  # the output goes through save_for_backward: no reference cycle
        ctx.acts, ctx.saved = acts, saved
        ctx.has_bias = [b is not None for b in params[1::2]]
        ctx.save_for_backward(h, *params[0::2])
        return h

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            raise RuntimeError(SECOND_ORDER_ERROR)
        acts, saved, has_bias = ctx.acts, ctx.saved, ctx.has_bias
        out, *weights = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grads: list[torch.Tensor | None] = [None] * (2 * len(acts))
        for i in range(len(acts) - 1, -1, -1):
            h, z, a = saved[i]
            act = acts[i]
            if act is not None and act.backward is not None:
                grad = act.backward(grad, z, out if a is None else a)
            if needs[2 + 2 * i]:  # see NARROW_INPUT: the fast orientation for a narrow h
                grads[2 * i] = torch.mm(h.t(), grad).t().contiguous() \
                    if h.shape[1] <= NARROW_INPUT else torch.mm(grad.t(), h)
            if has_bias[i] and needs[3 + 2 * i]:
                grads[2 * i + 1] = grad.sum(0)
            if i == 0 and not needs[0]:
                break
            grad = torch.mm(grad, weights[i])
        return (grad if needs[0] else None, None, *grads)


SECOND_ORDER_ERROR = ("MLPFunction is differentiable once: a gradient of its gradient "
                      "(create_graph=True, a gradient penalty) needs the module itself.")


HAND_SECOND_ORDER_ERROR = (
    "This loss value carries hand-computed gradients (the MI bounds' fast path): a gradient of "
    "its gradient (create_graph=True) needs autograd's path; call the bound's `scores` and "
    "`objective` instead of the block.")


def one_node_forward(plan: MLPPlan, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` for ``(n, in_dim)`` as one :class:`MLPFunction` node (check
    :func:`plan_usable` first)."""
    acts = tuple(act for _, act in plan.layers)
    params = []
    for layer, _ in plan.layers:
        params += [layer.weight, layer.bias]
    return MLPFunction.apply(x, acts, *params)


# ====================================================================== no autograd at all


def hand_parameters(plan: MLPPlan) -> list[torch.Tensor | None]:
    """``[w_1, b_1, ..., w_L, b_L]`` of the plan's layers as they are now (None: no bias), the
    order :func:`hand_forward` and :func:`hand_backward` take and give."""
    out = []
    for layer, _ in plan.layers:
        params = layer._parameters
        out += [params["weight"], params["bias"]]
    return out


def hand_forward(plan: MLPPlan, params: list, z: torch.Tensor) -> tuple[torch.Tensor, list]:
    """``net(z)`` for ``(n, in_dim)`` without recording a graph (``params`` from
    :func:`hand_parameters`), and what :func:`hand_backward` needs: each layer's input,
    pre-activation (kept only where the activation's backward reads it) and output.  An
    activation whose backward needs only its result overwrites the pre-activation in place.
    Call it with grad mode off (check :func:`plan_usable` first)."""
    saved, h = [], z
    for i, (_, act) in enumerate(plan.layers):
        w, b = params[2 * i], params[2 * i + 1]
        w_t = w.t().contiguous() if i == 0 and w.shape[1] <= NARROW_INPUT else w.t()
        pre = torch.mm(h, w_t) if b is None else torch.addmm(b, h, w_t)
        if act is None:
            out, pre = pre, None
        elif act.backward is None:
            out, pre = act.forward(pre), None
        elif act.inplace is not None:
            out, pre = act.inplace(pre), None
        else:
            out = act.forward(pre)
        saved.append((h, pre, out))
        h = out
    return h, saved


def hand_backward(plan: MLPPlan, params: list, saved: list,
                  grad: torch.Tensor) -> list[torch.Tensor | None]:
    """The gradients ``[∂w_1, ∂b_1, ..., ∂w_L, ∂b_L]`` (None for a layer without bias) of
    Σ grad ⊙ net(z), from :func:`hand_forward`'s ``saved``, by the kernels autograd calls
    (``mm``, ``sum``, the activation's backward); the input's gradient is not formed.  Equal to
    autograd's gradients to float rounding (``tests/blocks/test_fast_mlp.py``: float64)."""
    layers = plan.layers
    grads: list[torch.Tensor | None] = [None] * (2 * len(layers))
    for i in range(len(layers) - 1, -1, -1):
        act = layers[i][1]
        h, pre, out = saved[i]
        if act is not None and act.backward is not None:
            grad = act.backward(grad, pre, out)
        # see NARROW_INPUT: the fast orientation for a narrow h
        grads[2 * i] = torch.mm(h.t(), grad).t().contiguous() \
            if h.shape[1] <= NARROW_INPUT else torch.mm(grad.t(), h)
        if params[2 * i + 1] is not None:
            grads[2 * i + 1] = grad.sum(0)
        if i > 0:
            grad = torch.mm(grad, params[2 * i])
    return grads


class HandGradients(LossHandGradients):
    """:class:`~infoblocks.blocks.losses.HandGradients` of the MI bounds' fast path."""

    second_order_error = HAND_SECOND_ORDER_ERROR


__all__ = ["MLPPlan", "mlp_plan", "plan_usable", "plan_forward", "blocked_forward",
           "FORWARD_BLOCK_ROWS", "MLPFunction",
           "one_node_forward", "hand_forward", "hand_backward", "hand_parameters",
           "HandGradients", "NARROW_INPUT"]

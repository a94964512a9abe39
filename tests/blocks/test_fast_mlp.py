"""The plain-MLP shortcuts of the MI critics: ``plan_forward`` (the modules' ops without their
``__call__``) and ``MLPFunction`` (the MLP as one autograd node)."""

import pytest
import torch
from torch import nn

from infoblocks.blocks.mutual_information import JointCritic, SeparableCritic, SeparableCriticNet
from infoblocks.blocks.mutual_information.fast_mlp import (
    NARROW_INPUT, MLPFunction, mlp_plan, one_node_forward, plan_forward, plan_usable)
from infoblocks.blocks.models import ACTIVATIONS, MLP

ACTIVATION_NAMES = sorted(ACTIVATIONS)


def _net(activation: str, bias: bool = True, dtype=torch.float64, in_dim: int = 2,
         output_activation: str | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    net = MLP(in_dim=in_dim, out_dim=3, hidden_dims=(7, 5), activation=activation,
              output_activation=output_activation).build()
    if not bias:
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.bias = None
    return net.to(dtype)


def _grads(net, forward, x):
    net.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = forward(x)
    # a fixed, non-uniform cotangent so that every output counts differently
    (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), [x.grad] + [p.grad for p in net.parameters()]


def _assert_same(a, b, dtype):
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else {}
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, **tol)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_plan_forward_and_one_node_match_the_module(activation, bias, dtype):
    net = _net(activation, bias, dtype, output_activation="tanh")
    plan = mlp_plan(net)
    assert plan is not None and plan_usable(plan)
    x = torch.randn(11, 2, dtype=dtype)
    ref_out, ref_grads = _grads(net, net, x)
    for forward in (lambda z: plan_forward(plan, z), lambda z: one_node_forward(plan, z)):
        out, grads = _grads(net, forward, x)
        _assert_same([out], [ref_out], dtype)
        _assert_same(grads, ref_grads, dtype)


@pytest.mark.parametrize("activation", ["elu", "relu", "tanh"])
def test_plan_forward_of_a_wide_input_is_the_module_bit_for_bit(activation):
    """Above NARROW_INPUT inputs plan_forward calls exactly the modules' ops."""
    net = _net(activation, dtype=torch.float32, in_dim=NARROW_INPUT + 1)
    x = torch.randn(11, NARROW_INPUT + 1)
    ref = _grads(net, net, x)
    fast = _grads(net, lambda z: plan_forward(mlp_plan(net), z), x)
    for u, v in zip([fast[0], *fast[1]], [ref[0], *ref[1]]):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("bias", [True, False])
def test_one_node_gradcheck(activation, bias):
    net = _net(activation, bias, in_dim=12)  # a wide first layer too (no NARROW_INPUT path)
    plan = mlp_plan(net)
    acts = tuple(act for _, act in plan.layers)
    params = []
    for layer, _ in plan.layers:
        params += [layer.weight, layer.bias]
    x = torch.randn(6, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: MLPFunction.apply(x, acts, *p),
                                    (x, *params))


def test_one_node_refuses_a_second_derivative():
    net = _net("elu")
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    out = one_node_forward(mlp_plan(net), x).sum()
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(out, x, create_graph=True)


def test_plan_forward_keeps_second_derivatives():
    """Same ops as the module: a gradient penalty differentiates through it."""
    net = _net("tanh")
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    penalties = []
    for forward in (net, lambda z: plan_forward(mlp_plan(net), z)):
        (g,) = torch.autograd.grad(forward(x).sum(), x, create_graph=True)
        penalties.append(torch.autograd.grad(g.square().sum(), net[0].weight)[0])
    torch.testing.assert_close(penalties[0], penalties[1], rtol=1e-12, atol=1e-14)


def test_plan_declines_other_networks_and_active_dropout():
    assert mlp_plan(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))) is None
    assert mlp_plan(nn.Sequential(nn.Linear(2, 3), nn.ReLU(inplace=True), nn.Linear(3, 1))) \
        is None
    assert mlp_plan(nn.Sequential(nn.ReLU(), nn.Linear(2, 1))) is None
    assert mlp_plan(nn.Linear(2, 1)) is None  # not a Sequential

    class Custom(nn.Linear):
        pass

    assert mlp_plan(nn.Sequential(Custom(2, 1))) is None
    net = MLP(in_dim=2, out_dim=1, hidden_dims=(4,), dropout=0.5).build()
    plan = mlp_plan(net)
    assert plan is not None and not plan_usable(plan)  # training: dropout is active
    net.eval()
    assert plan_usable(plan)
    handle = net[0].register_forward_hook(lambda *args: None)
    assert not plan_usable(plan)
    handle.remove()
    assert plan_usable(plan)
    handle = net[2].register_full_backward_hook(lambda *args: None)
    assert not plan_usable(plan)
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda *args: None)
    assert not plan_usable(plan)
    handle.remove()
    assert plan_usable(plan)


def test_joint_critic_state_dict_and_values_unchanged():
    critic = JointCritic(x_dim=1, y_dim=2, init_std=0.02).build()
    # the saved layout of earlier versions: the MLP under ``net``
    assert list(critic.state_dict()) == [f"net.{i}.{p}" for i in (0, 2, 4)
                                         for p in ("weight", "bias")]
    x, y = torch.randn(9, 1), torch.randn(9, 2)
    t = critic(x, y)
    t.sum().backward()
    fast_grads = [p.grad.clone() for p in critic.parameters()]
    critic.zero_grad(set_to_none=True)
    ref = critic.net(torch.cat([x, y], -1)).squeeze(-1)
    ref.sum().backward()
    torch.testing.assert_close(t, ref)  # a narrow first layer: equal to float rounding
    for a, p in zip(fast_grads, critic.parameters()):
        torch.testing.assert_close(a, p.grad)
    torch.testing.assert_close(critic.pairwise(x, y).diagonal(), t)


def test_joint_critic_reads_a_replaced_layer_and_honours_hooks():
    critic = JointCritic(x_dim=1, y_dim=1, hidden_dims=(4,)).build()
    x, y = torch.randn(5, 1), torch.randn(5, 1)
    critic(x, y)
    critic.net[1] = nn.Sigmoid()  # the plan is read again
    torch.testing.assert_close(critic(x, y), critic.net(torch.cat([x, y], -1)).squeeze(-1))
    calls = []
    critic.net[0].register_forward_hook(lambda *args: calls.append(1))
    critic(x, y)
    assert calls == [1]


def test_separable_critic_state_dict_and_values_unchanged():
    critic = SeparableCritic(x_dim=1, y_dim=2, embed_dim=3, hidden_dims=(5,)).build()
    assert list(critic.state_dict()) == [f"{m}.{i}.{p}" for m in "hg" for i in (0, 2)
                                         for p in ("weight", "bias")]
    x, y = torch.randn(9, 1), torch.randn(9, 2)
    t = critic(x, y)
    ref = (critic.h(x) / critic.temperature * critic.g(y)).sum(-1)
    torch.testing.assert_close(t, ref)
    slow = SeparableCriticNet(critic.h, critic.g, critic.temperature, fast=False)
    grads = []
    for net in (critic, slow):
        net.zero_grad(set_to_none=True)
        net.pairwise(x, y).square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)

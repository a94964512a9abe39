"""The plain-MLP shortcuts of the MI critics: ``plan_forward`` (the modules' ops without their
``__call__``) and ``MLPFunction`` (the MLP as one autograd node)."""

import pytest
import torch
from torch import nn

from infoblocks.blocks.mutual_information import JointCritic, SeparableCritic, SeparableCriticNet
from infoblocks.blocks.mutual_information.fast_mlp import (
    FORWARD_BLOCK_ROWS, NARROW_INPUT, MLPFunction, blocked_forward, mlp_plan, one_node_forward,
    plan_forward, plan_usable)
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
@pytest.mark.parametrize("output_activation", [None, "tanh"])
@pytest.mark.parametrize("in_dim", [2, NARROW_INPUT + 3])
def test_blocked_forward_is_plan_forward_on_every_row(activation, output_activation, in_dim):
    """The validation / final-estimate forward in row blocks: the same rows as one call (a
    last block shorter than the others included), in float64 to rounding and in float32 to
    the float32 rounding of the same dot products; the input is left untouched."""
    for dtype in (torch.float64, torch.float32):
        net = _net(activation, dtype=dtype, in_dim=in_dim, output_activation=output_activation)
        plan = mlp_plan(net)
        x = torch.randn(2 * 7 + 3, in_dim, dtype=dtype)
        before = x.clone()
        with torch.no_grad():
            ref = plan_forward(plan, x)
            for rows in (1, 7, 100):
                out = blocked_forward(plan, x, rows=rows)
                assert out.shape == ref.shape == (17, 3) and out.dtype == dtype
                _assert_same([out], [ref], dtype)
        assert torch.equal(x, before)


def test_critic_runs_many_rows_in_blocks_without_a_graph_only():
    """The joint critic takes the blocked path for more than FORWARD_BLOCK_ROWS rows with grad
    mode off (validation, the final estimate): the values of the module, a bound's held-out
    value unchanged; with grad mode on it keeps the one-call graph (gradients flow)."""
    critic = JointCritic(x_dim=1, y_dim=1).build()
    n = 2 * FORWARD_BLOCK_ROWS + 5
    x, y = torch.randn(n, 1), torch.randn(n, 1)
    with torch.no_grad():
        fast = critic(x, y)
        ref = critic.net(torch.cat([x, y], -1)).squeeze(-1)
    assert fast.shape == (n,) and not fast.requires_grad
    torch.testing.assert_close(fast, ref)
    t = critic(x, y)
    assert t.requires_grad
    torch.testing.assert_close(t.detach(), fast)


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


# ---------------------------------------------------------------- the hand-written step


from infoblocks.blocks.losses import LossOutput  # noqa: E402
from infoblocks.blocks.mutual_information import (  # noqa: E402
    DVLoss, MINELoss, NWJLoss, SMILELoss, MIBound)
from infoblocks.blocks.mutual_information.fast_mlp import (  # noqa: E402
    HandGradients, hand_backward, hand_forward, hand_parameters)

HAND_BOUNDS = [MINELoss, DVLoss, NWJLoss, SMILELoss]


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("in_dim", [2, NARROW_INPUT + 3])
def test_hand_forward_and_backward_equal_autograd_in_float64(activation, bias, in_dim):
    net = _net(activation, bias, in_dim=in_dim, output_activation="tanh")
    plan = mlp_plan(net)
    x = torch.randn(11, in_dim, dtype=torch.float64)
    cotangent = torch.linspace(-1, 2, 33, dtype=torch.float64).view(11, 3)
    ref_out, ref_grads = _grads(net, net, x)
    params = hand_parameters(plan)
    with torch.no_grad():
        out, saved = hand_forward(plan, params, x.clone())
        grads = hand_backward(plan, params, saved, cotangent)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-14)
    got = [g for g in grads if g is not None]
    assert len(got) == len(ref_grads) - 1  # no gradient of the input
    for g, r in zip(got, ref_grads[1:]):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-14)


def _hand_setup(x_dim=1, y_dim=1, activation="elu", dtype=torch.float64, b=30, m=45, seed=0):
    torch.manual_seed(seed)
    critic = JointCritic(x_dim=x_dim, y_dim=y_dim, activation=activation, init_std=0.5,
                         hidden_dims=(16, 8)).build().to(dtype)
    x, y = torch.randn(b + m, x_dim, dtype=dtype), torch.randn(b + m, y_dim, dtype=dtype)
    batch = {"x": x[:b], "y": y[:b], "x_marginal": x[b:], "y_marginal": y[b:],
             "x_all": x, "y_all": y}
    return critic, nn.ModuleDict({"main": critic}), batch


def _step(loss, models, batch, hand: bool):
    critic = models["main"]
    critic.fast = hand  # fast=False: the module itself, through autograd
    critic.zero_grad(set_to_none=True)
    out = loss(batch, models, None)
    out.value.backward()
    critic.fast = True
    return out, [p.grad.clone() for p in critic.parameters()]


@pytest.mark.parametrize("bound", HAND_BOUNDS)
@pytest.mark.parametrize("activation", ["elu", "relu", "tanh", "gelu"])
@pytest.mark.parametrize("dims", [(1, 1), (5, 25)])
def test_hand_step_of_each_bound_equals_autograd_in_float64(bound, activation, dims):
    """value, metrics and every parameter's gradient of the hand path = autograd's path (the
    module through autograd) to float64 rounding; MINE's moving average moves alike."""
    critic, models, batch = _hand_setup(*dims, activation=activation)
    results = []
    for hand in (True, False):
        loss = bound()
        if bound is MINELoss:
            loss.log_average = torch.tensor(0.3, dtype=torch.float64)
        out, grads = _step(loss, models, batch, hand)
        results.append((out, grads, loss))
    (hand_out, hand_grads, hand_loss), (ref_out, ref_grads, ref_loss) = results
    assert type(hand_out.value.grad_fn).__name__ == "HandGradientsBackward"
    assert hand_out.gradients is not None and ref_out.gradients is None
    assert float(hand_out.value.detach()) == pytest.approx(float(ref_out.value.detach()),
                                                            rel=1e-12, abs=1e-12)
    assert set(hand_out.metrics) == set(ref_out.metrics)
    for key in ref_out.metrics:
        assert float(hand_out.metrics[key]) == pytest.approx(float(ref_out.metrics[key]),
                                                             rel=1e-12, abs=1e-12)
    scale = max(float(g.abs().max()) for g in ref_grads)
    assert scale > 1e-3  # a gradient that can be wrong
    for g, r in zip(hand_grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12 * scale)
    # the pairs the engine assigns are the same gradients
    for (p, g), q in zip(hand_out.gradients, critic.parameters()):
        assert p is q
    if bound is MINELoss:
        assert float(hand_loss.log_average) == pytest.approx(float(ref_loss.log_average),
                                                             rel=1e-12)


def test_hand_step_in_float32_is_autograd_to_rounding():
    critic, models, batch = _hand_setup(dtype=torch.float32)
    (a, ga), (b, gb) = (_step(MINELoss(), models, batch, hand) for hand in (True, False))
    assert float(a.value.detach()) == pytest.approx(float(b.value.detach()), rel=1e-5)
    for g, r in zip(ga, gb):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_hand_step_declines_what_it_cannot_compute():
    critic, models, batch = _hand_setup()
    loss = MINELoss()
    assert loss._hand_call(batch, models, None) is not None
    with torch.no_grad():  # validation: autograd's (graph-free) path
        assert loss._hand_call(batch, models, None) is None
    assert loss._hand_call({k: v for k, v in batch.items() if k != "x_marginal"}, models,
                           None) is None  # in-batch negatives
    needs_grad = {**batch, "x_all": batch["x_all"].clone().requires_grad_()}
    assert loss._hand_call(needs_grad, models, None) is None  # an encoder upstream
    critic.net[0].weight.requires_grad_(False)
    assert loss._hand_call(batch, models, None) is None  # a frozen layer
    critic.net[0].weight.requires_grad_(True)
    handle = critic.net[2].register_forward_hook(lambda *args: None)
    assert loss._hand_call(batch, models, None) is None
    handle.remove()
    dropout = JointCritic(x_dim=1, y_dim=1, dropout=0.2).build().double()
    assert loss._hand_call(batch, nn.ModuleDict({"main": dropout}), None) is None
    dropout.eval()
    assert loss._hand_call(batch, nn.ModuleDict({"main": dropout}), None) is not None

    class Shifted(MINELoss):  # changes the objective, inherits hand_gradients: autograd's
        def objective(self, scores, mi, state):
            return super().objective(scores, mi, state) + scores.mean_joint() ** 2

    out = Shifted()(batch, models, None)
    assert out.gradients is None and type(out.value.grad_fn).__name__ != \
        "HandGradientsBackward"
    assert "hand_gradients" not in MIBound.__dict__  # a plugin bound opts in by defining it


def test_hand_gradients_node_runs_once_and_scales():
    critic, models, batch = _hand_setup()
    out = MINELoss()(batch, models, None)
    (2.5 * out.value).backward()  # the incoming gradient scales the hand gradients
    scaled = [p.grad.clone() for p in critic.parameters()]
    for (p, g), s in zip(out.gradients, scaled):
        torch.testing.assert_close(s, 2.5 * g)
    with pytest.raises(RuntimeError, match="runs once"):
        out.value.backward()
    out = MINELoss()(batch, models, None)
    with pytest.raises(RuntimeError, match="gradient of its gradient"):
        torch.autograd.grad(out.value, list(critic.parameters()), create_graph=True)
    # autograd.grad gets the same gradients as the engine's assignment
    out = MINELoss()(batch, models, None)
    got = torch.autograd.grad(out.value, [p for p, _ in out.gradients])
    for g, (_, h) in zip(got, out.gradients):
        torch.testing.assert_close(g, h)


def test_engine_takes_the_hand_path_and_an_l1_term_adds_to_it():
    """A MINE fit takes the hand path on every step and ends where autograd's path ends (to
    float32 rounding); an l1 term the engine adds goes through the hand node's backward."""
    from infoblocks.blocks.mutual_information import bounds
    from infoblocks.recipes.mi import MINE

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 1, generator=gen)
    y = 0.8 * x + 0.6 * torch.randn(400, 1, generator=gen)
    calls = {"hand": 0}
    original = bounds.MIBound._hand_call

    def counting(self, *args):
        out = original(self, *args)
        calls["hand"] += out is not None
        return out

    estimates = []
    try:
        for hand in (True, False):
            bounds.MIBound._hand_call = counting if hand else (lambda self, *args: None)
            est = MINE(epochs=60, seed=0, patience=None).fit(x, y)
            estimates.append(float(est.estimate()))
    finally:
        bounds.MIBound._hand_call = original
    assert calls["hand"] >= 60 * 2  # every training step of the first fit
    assert abs(estimates[0] - 0.511) < 0.15  # near the truth (n = 400) ...
    assert estimates[0] == pytest.approx(estimates[1], abs=2e-3)  # ... as autograd's path did
    # an l1 term added by the engine: value.backward() through the hand node adds both parts
    critic, models, batch = _hand_setup()
    out = MINELoss()(batch, models, None)
    params = [p for p, _ in out.gradients]
    critic.zero_grad(set_to_none=True)
    (out.value + 0.1 * sum(p.abs().sum() for p in params)).backward()
    for p, g in out.gradients:
        torch.testing.assert_close(p.grad, g + 0.1 * torch.sign(p.detach()))

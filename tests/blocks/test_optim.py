"""LeanAdam: torch's fused Adam / AdamW to the last bit, without the per-step wrappers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.optim import LeanAdam, lean_applies, make_adam
from infoblocks.blocks.phases import TrainingPhase


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.ELU(), nn.Linear(16, 16), nn.ELU(),
                         nn.Linear(16, 1))


def _batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 3, generator=g), torch.randn(32, 1, generator=g)) for _ in range(n)]


def _train(net: nn.Module, optimizer: torch.optim.Optimizer, batches, lr_factors=None) -> None:
    for i, (x, y) in enumerate(batches):
        if lr_factors is not None:
            for group in optimizer.param_groups:
                group["lr"] = 1e-2 * lr_factors[i]
        optimizer.zero_grad(set_to_none=True)
        ((net(x) - y) ** 2).mean().backward()
        optimizer.step()


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("decoupled, weight_decay", [(False, 0.0), (False, 0.05), (True, 0.05)])
def test_steps_are_bit_identical_to_torch_fused_adam(decoupled, weight_decay, device):
    batches = [(x.to(device), y.to(device)) for x, y in _batches(60)]
    ours, theirs = _net().to(device), _net().to(device)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    reference = cls(theirs.parameters(), lr=1e-2, weight_decay=weight_decay, fused=True)
    lean = LeanAdam(ours.parameters(), lr=1e-2, weight_decay=weight_decay,
                    decoupled_weight_decay=decoupled)
    _train(ours, lean, batches)
    _train(theirs, reference, batches)
    assert _same(ours, theirs)  # the weights, to the last bit
    assert lean._plans is not None  # ... by the lean step, not torch's fallback
    start = _net().to(device)
    moved = [(p - q).detach() for p, q in zip(ours.parameters(), start.parameters())]
    assert max(float(d.abs().max()) for d in moved) > 1e-2  # the steps did move the weights
    for p, q in zip(ours.parameters(), theirs.parameters()):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(lean.state[p][key], reference.state[q][key])


def test_a_learning_rate_schedule_written_into_param_groups_is_honoured():
    batches = _batches(40)
    factors = [0.5 ** (i // 10) for i in range(40)]
    ours, theirs, constant = _net(), _net(), _net()
    _train(ours, LeanAdam(ours.parameters(), lr=1e-2), batches, factors)
    _train(theirs, torch.optim.Adam(theirs.parameters(), lr=1e-2, fused=True), batches, factors)
    _train(constant, LeanAdam(constant.parameters(), lr=1e-2), batches)
    assert _same(ours, theirs)
    assert not _same(ours, constant)


def test_checkpoints_load_into_torch_adam_and_back():
    batches = _batches(30)
    straight = _net()
    _train(straight, torch.optim.Adam(straight.parameters(), lr=1e-2, fused=True), batches)
    # 10 steps lean -> torch's Adam for 10 -> lean again for 10: the same run
    net = _net()
    lean = LeanAdam(net.parameters(), lr=1e-2)
    _train(net, lean, batches[:10])
    torch_adam = torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)
    torch_adam.load_state_dict(lean.state_dict())
    _train(net, torch_adam, batches[10:20])
    lean = LeanAdam(net.parameters(), lr=1e-2)
    lean.load_state_dict(torch_adam.state_dict())
    _train(net, lean, batches[20:])
    assert _same(net, straight)
    assert float(lean.state[next(net.parameters())]["step"]) == 30.0


def test_a_parameter_without_gradient_takes_torch_step_and_stays_exact():
    ours, theirs = _net(), _net()
    lean = LeanAdam(ours.parameters(), lr=1e-2)
    reference = torch.optim.Adam(theirs.parameters(), lr=1e-2, fused=True)
    for net, opt in ((ours, lean), (theirs, reference)):
        for i, (x, y) in enumerate(_batches(12)):
            opt.zero_grad()
            out = net[:2](x).sum() if i % 3 == 0 else ((net(x) - y) ** 2).mean()
            out.backward()
            opt.step()
    assert _same(ours, theirs)
    assert len(lean.state) == len(reference.state)


def test_step_hooks_are_still_called():
    net = _net()
    lean = LeanAdam(net.parameters(), lr=1e-2)
    calls = []
    lean.register_step_post_hook(lambda opt, args, kwargs: calls.append(1))
    _train(net, lean, _batches(3))
    assert len(calls) == 3


def test_the_engine_uses_the_lean_step_only_where_it_is_exact():
    params = list(_net().parameters())
    assert isinstance(make_adam(params, lr=1e-3, weight_decay=0.0, decoupled=False,
                                options={"fused": True}), LeanAdam)
    for options in ({}, {"fused": True, "amsgrad": True}, {"foreach": True}):
        opt = make_adam(params, lr=1e-3, weight_decay=0.0, decoupled=False, options=options)
        assert type(opt) is torch.optim.Adam
    assert not lean_applies(params + [torch.zeros(2, dtype=torch.float64, requires_grad=True)],
                            {"fused": True})
    phase = TrainingPhase(name="p", epochs=1, sampler=None, loss=None, optimizer="adamw",
                          weight_decay=0.1, optimizer_options={"fused": True})
    opt = phase.make_optimizer(params)
    assert isinstance(opt, LeanAdam) and opt.param_groups[0]["decoupled_weight_decay"]
    assert opt.param_groups[0]["weight_decay"] == 0.1


def test_optimizer_options_are_checked_when_the_phase_is_built():
    # user13 U13-8: with the default adam / sgd / adamw a misspelt option or `lr` failed at the
    # first fit step with a raw TypeError from torch ("Adam.__init__() got an unexpected
    # keyword argument 'betaz'", "got multiple values for keyword argument 'lr'")
    blocks = {"name": "p", "epochs": 1, "sampler": None, "loss": None}
    with pytest.raises(ValidationError, match=r"`optimizer_options`: torch.optim.Adam .*'betaz'"
                       r".*did you mean 'betas'"):
        TrainingPhase(**blocks, optimizer_options={"betaz": (0.9, 0.99)})
    with pytest.raises(ValidationError, match="sets 'lr'.*set `learning_rate` = 1.0 instead"):
        TrainingPhase(**blocks, optimizer_options={"lr": 1.0})
    with pytest.raises(ValidationError, match="sets 'momentum'.*set `momentum`"):
        TrainingPhase(**blocks, optimizer="sgd", optimizer_options={"momentum": 0.9})
    with pytest.raises(ValidationError, match="sets 'weight_decay'"):
        TrainingPhase(**blocks, optimizer="adamw", optimizer_options={"weight_decay": 0.1})
    # a value torch refuses names the options; options the phase does not pass still work
    phase = TrainingPhase(**blocks, optimizer_options={"betas": (0.9, 2.0)})
    with pytest.raises(ValidationError, match="`optimizer_options`.*Invalid beta"):
        phase.make_optimizer(list(_net().parameters()))
    for optimizer, options in (("rmsprop", {"momentum": 0.9}), ("RAdam", {"weight_decay": 0.1})):
        phase = TrainingPhase(**blocks, optimizer=optimizer, optimizer_options=options)
        assert phase.make_optimizer(list(_net().parameters())).defaults[next(iter(options))] \
            == next(iter(options.values()))


def test_a_fit_step_and_checkpoint_do_not_import_torch_dynamo():
    # torch's add_param_group / state_dict / load_state_dict sit behind torch._disable_dynamo,
    # whose first call imports torch._dynamo: 1.5-4 s per process on the test machine, more
    # than a small MI fit.  LeanAdam runs the methods underneath (a fresh interpreter checks).
    code = ("import sys, torch\n"
            "from infoblocks.blocks.optim import LeanAdam\n"
            "net = torch.nn.Linear(3, 1)\n"
            "opt = LeanAdam(net.parameters(), lr=1e-2)\n"
            "net(torch.randn(4, 3)).sum().backward()\n"
            "opt.step(); opt.load_state_dict(opt.state_dict()); opt.zero_grad()\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"

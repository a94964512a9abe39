"""The learning-rate schedule is a block (kind ``schedule``): the built-ins keep the numbers
of the engine's old hard-coded schedules, ``lr_schedule`` takes a registered name or a table
(a plugin's too), the engine follows it step by step and checks each factor, and a resumed
phase continues it exactly."""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks import Routine, TrainingPhase
from infoblocks.blocks.callbacks import Callback
from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.blocks.models import MLP
from infoblocks.blocks.numerics import cosine_factor
from infoblocks.blocks.schedules import Schedule
from infoblocks.plugins import hookimpl
from infoblocks.plugins.registry import get_registry
from infoblocks.plugins.testing import check_block

_BLOCKS = {"sampler": "items", "loss": "position"}


def _old_factor(schedule, step, total, rate=0.5, steps=10, staircase=True):
    """The engine's schedule before it was a block (TrainingPhase.lr_factor, verbatim)."""
    if schedule == "cos":
        return cosine_factor(step, total)
    if schedule == "exp":
        steps = max(steps, 1)
        return rate ** (step // steps if staircase else step / steps)
    return 1.0


@pytest.mark.parametrize("schedule, decay", [
    ("none", {}), ("cos", {}), ("exp", {}),
    ("exp", {"lr_decay_rate": 0.3, "lr_decay_steps": 7, "lr_decay_staircase": False}),
    ("exp", {"lr_decay_steps": 0})])
def test_the_built_in_schedules_keep_their_numbers_bit_for_bit(schedule, decay):
    phase = TrainingPhase(name="p", epochs=1, lr_schedule=schedule, **decay, **_BLOCKS)
    old = {k.removeprefix("lr_decay_"): v for k, v in decay.items()}
    for total in (1, 37, 500):
        for step in range(total + 1):
            assert phase.lr_factor(step, total) == _old_factor(schedule, step, total, **old)


def test_exp_given_as_a_table_takes_its_own_fields_and_the_phase_fills_the_rest():
    phase = TrainingPhase(name="p", epochs=1, lr_decay_rate=0.9, lr_decay_steps=3,
                          lr_schedule={"name": "exp", "rate": 0.2}, **_BLOCKS)
    built = phase.make_schedule()
    assert (built.rate, built.steps, built.staircase) == (0.2, 3, True)
    assert phase.lr_factor(7, 100) == 0.2 ** 2


def test_warmup_cos_warms_up_linearly_then_decays_on_a_half_cosine():
    phase = TrainingPhase(name="p", epochs=1, lr_schedule={"name": "warmup_cos",
                                                           "warmup_steps": 4}, **_BLOCKS)
    assert [phase.lr_factor(s, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert phase.lr_factor(4, 14) == 1.0 and phase.lr_factor(9, 14) == pytest.approx(0.5)
    check_block(get_registry().get("schedule", "warmup_cos"))


@pytest.mark.parametrize("spec, error, message", [
    ("coss", ValidationError, r"`lr_schedule` must be one of the registered schedules.*"
                              r"No schedule named 'coss'. Did you mean 'cos'"),
    ({"name": "exp", "rat": 0.1}, ConfigError, r"lr_schedule \(schedule 'exp'\).*"
                                               r"Did you mean 'rate' for 'rat'"),
    ({"rate": 0.1}, ValidationError, r"`lr_schedule` must name a learning-rate schedule"),
    ({"name": "exp", "rate": -1.0}, ConfigError, r"`rate` must be a positive number"),
    (3, ValidationError, r"`lr_schedule` must name a learning-rate schedule.*got 3")])
def test_a_wrong_schedule_is_refused_when_the_phase_is_built(spec, error, message):
    with pytest.raises(error, match=message):
        TrainingPhase(name="p", epochs=1, lr_schedule=spec, **_BLOCKS)


# ---------------------------------------------------------------------------- a plugin's


@attrs.define
class Halving(Schedule):
    """Halves the factor at every ``every``-th step."""

    name: ClassVar[str] = "test_halving"
    every: int = 1

    def factor(self, step, total_steps):
        return 0.5 ** (step // self.every)


@attrs.define
class Broken(Schedule):
    name: ClassVar[str] = "test_broken"

    def factor(self, step, total_steps):
        return float("nan") if step == 2 else 1.0


@attrs.define
class Counting(Schedule):
    """Not a function of the step: it counts its calls (what a checkpoint would not keep)."""

    name: ClassVar[str] = "test_counting"
    calls: int = attrs.field(default=0, init=False)

    def factor(self, step, total_steps):
        self.calls += 1
        return 1.0 / self.calls


class _Plugin:
    @hookimpl
    def register_schedules(self):
        return [Halving, Broken, Counting]


class _RecordLR(Callback):
    """The rate of every epoch's last step (history's ``lr``)."""

    def __init__(self):
        self.rates = []

    def on_epoch_end(self, state, metrics):
        self.rates.append(metrics["lr"])


def _routine(schedule, epochs=6, callbacks=(), batches=1, seed=0):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    phase = TrainingPhase(name="main", epochs=epochs, learning_rate=0.1, lr_schedule=schedule,
                          loss="position", sampler={"name": "items", "batch_size": 16,
                                                    "batches_per_epoch": batches})
    return Routine(dataset={"data": x, "positions": x[:, :2].copy()}, phases=[phase],
                   models={"main": MLP(in_dim=3, out_dim=2, hidden_dims=(8,))}, seed=seed,
                   callbacks=list(callbacks))


def test_a_plugin_schedule_drives_the_learning_rate_step_by_step(infoblocks_plugin):
    infoblocks_plugin(_Plugin(), "test_schedules")
    check_block(Halving)
    record = _RecordLR()
    _routine({"name": "test_halving", "every": 2}, callbacks=[record]).train()
    # one step per epoch: the rate of epoch e's step is 0.1 * 0.5 ** (e // 2)
    assert record.rates == [0.1 * 0.5 ** (e // 2) for e in range(6)]


def test_a_schedule_giving_a_non_finite_factor_is_named(infoblocks_plugin):
    infoblocks_plugin(_Plugin(), "test_schedules")
    with pytest.raises(ValidationError, match=r"Phase 'main': schedule 'test_broken' \(plugin 'test_schedules'\) gave the "
                                              r"learning-rate factor nan at step 2 of 6"):
        _routine("test_broken").train()


def test_check_block_refuses_a_schedule_that_is_not_a_function_of_the_step():
    with pytest.raises(AssertionError, match="must depend on the step and the fields only"):
        check_block(Counting)
    with pytest.raises(AssertionError, match="finite float >= 0"):
        check_block(Broken)
    for name in get_registry().names("schedule"):
        check_block(get_registry().get("schedule", name))


@attrs.define
class _Remaining(Schedule):
    """1 / (steps left): defined on the documented steps 0 .. total − 1 only."""

    name: ClassVar[str] = "test_remaining"

    def factor(self, step, total_steps):
        return 1.0 / (total_steps - step)


def test_a_schedule_is_called_on_its_documented_steps_only():
    # author16 F2: the engine called factor(total_steps, total_steps) after the last step
    # (torch's LambdaLR steps once more), a ZeroDivisionError after the whole training
    record = _RecordLR()
    _routine(_Remaining(), epochs=4, callbacks=[record]).train()
    assert record.rates == pytest.approx([0.1 / (4 - e) for e in range(4)], rel=1e-12)


def test_none_builds_no_scheduler_and_keeps_the_rate():
    record = _RecordLR()
    _routine("none", epochs=3, callbacks=[record]).train()
    assert record.rates == [0.1, 0.1, 0.1]
    assert get_registry().get("schedule", "none").constant


class _Epochs(Callback):
    def __init__(self):
        self.started = []

    def on_epoch_start(self, state):
        self.started.append(state.epoch)


class _Interrupt(Callback):
    def on_epoch_end(self, state, metrics):
        if state.epoch == 3:
            raise KeyboardInterrupt


def test_a_run_with_a_plugin_schedule_resumes_exactly(tmp_path, infoblocks_plugin):
    """A schedule is a function of the step: a run stopped after epoch 3 (its checkpoint is
    epoch 2's) and resumed follows it as the uninterrupted run does, to the bit."""
    infoblocks_plugin(_Plugin(), "test_schedules")
    spec = {"name": "test_halving", "every": 3}
    reference = _routine(spec, epochs=7, batches=2).train()
    with pytest.raises(KeyboardInterrupt):
        _routine(spec, epochs=7, batches=2, callbacks=[_Interrupt()]).train(checkpoint=tmp_path)
    epochs = _Epochs()
    resumed = _routine(spec, epochs=7, batches=2, callbacks=[epochs]).train(checkpoint=tmp_path,
                                                                            resume=True)
    assert epochs.started == [3, 4, 5, 6]  # continued after the checkpoint of epoch 2
    assert resumed.history.rows == reference.history.rows
    assert [r["lr"] for r in reference.history.rows] == \
        [0.1 * 0.5 ** ((2 * e + 1) // 3) for e in range(7)]  # epoch e's last step: 2e + 1
    expected, got = reference.models.state_dict(), resumed.models.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_table_valued_schedule_round_trips_through_the_phase_description():
    phase = TrainingPhase(name="p", epochs=2, lr_schedule={"name": "warmup_cos",
                                                           "warmup_steps": 3}, **_BLOCKS)
    from infoblocks.blocks.assembly import build_phase

    again = build_phase(phase.describe(), "phases.p")
    assert again.lr_schedule == {"name": "warmup_cos", "warmup_steps": 3}
    assert math.isclose(again.lr_factor(1, 10), 2 / 3)

"""A run killed mid-phase (a real SIGKILL of the child process) resumes from its checkpoint
and ends bit-identical to an uninterrupted run with the same seed (CPU, one process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from infoblocks.blocks.data import intra_op_threads
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.resume import NothingToResumeWarning
from infoblocks.plugins.testing import torchrun

BUILD = textwrap.dedent('''
    import numpy as np
    from infoblocks.blocks import Routine, TrainingPhase, Validation
    from infoblocks.blocks.callbacks import Callback
    from infoblocks.blocks.models import MLP

    class KillAt(Callback):
        def __init__(self, phase, epoch):
            self.phase, self.epoch = phase, epoch
        def on_epoch_end(self, state, metrics):
            if (state.phase, state.epoch) == (self.phase, self.epoch):
                import os, signal
                os.kill(os.getpid(), signal.SIGKILL)

    def build(kill=None):
        rng = np.random.default_rng(0)
        x = (rng.normal(size=(300, 5)) * [3, 2, 1, .5, .1]).astype(np.float32)
        target = np.tanh(x[:, :2]).astype(np.float32)
        data = {"data": x, "positions": target}
        phases = [
            TrainingPhase(name="warm", epochs=3, loss="position", learning_rate=1e-2,
                          sampler={"name": "items", "batch_size": 64}),
            TrainingPhase(name="main", epochs=8, loss="position", learning_rate=1e-2,
                          lr_schedule="cos", optimizer="adamw", weight_decay=1e-3,
                          sampler={"name": "items", "batch_size": 32, "batches_per_epoch": 4,
                                   "replacement": True},
                          validation=Validation(sampler={"name": "items"}, loss="position",
                                                metric="position"),
                          patience=100)]
        return Routine(dataset=data, phases=phases, seed=3,
                       models={"main": MLP(in_dim=5, out_dim=2, hidden_dims=(16, 16),
                                           dropout=0.1)},
                       callbacks=[] if kill is None else [KillAt(*kill)])
''')


def _build(kill=None):
    namespace = {}
    exec(BUILD, namespace)  # noqa: S102 - the same routine here and in the child process
    return namespace["build"](kill)


def _weights(routine):
    return {k: v.clone() for k, v in routine.models.state_dict().items()}


def _killed_run(tmp_path: Path, phase: str, epoch: int) -> Path:
    directory = tmp_path / "ckpt"
    script = BUILD + f"\nbuild(kill=({phase!r}, {epoch})).train(checkpoint={str(directory)!r})\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == -signal.SIGKILL, out.stderr
    return directory


@pytest.fixture(autouse=True)
def _one_thread():
    """The child processes run on one thread (OMP_NUM_THREADS=1): so does the comparison."""
    with intra_op_threads(1):
        yield


@pytest.mark.parametrize("phase, epoch", [("main", 4), ("warm", 2)])
def test_a_killed_run_resumes_bit_identically(tmp_path, phase, epoch):
    reference = _build().train()
    directory = _killed_run(tmp_path, phase, epoch)
    resumed = _build().train(checkpoint=directory, resume=True)
    expected, got = _weights(reference), _weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert resumed.history.rows == reference.history.rows


def test_resume_without_a_checkpoint_starts_afresh_and_checks_its_arguments(tmp_path):
    with pytest.warns(NothingToResumeWarning, match="none"):  # a typo is not a resume
        fresh = _weights(_build().train(checkpoint=tmp_path / "none", resume=True))
    plain = _weights(_build().train())
    assert all(torch.equal(fresh[k], plain[k]) for k in plain)
    assert (tmp_path / "none" / "train_state.pt").exists()
    with pytest.raises(ValidationError, match="needs the `checkpoint` directory"):
        _build().train(resume=True)
    with pytest.raises(ValidationError, match="`checkpoint_every` must be a positive integer"):
        _build().train(checkpoint=tmp_path / "c", checkpoint_every=0)
    # user13 U13-14: a file was pathlib's raw FileExistsError, True a raw TypeError
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValidationError, match="`checkpoint` = .*afile' is a file"):
        _build().train(checkpoint=tmp_path / "afile")
    with pytest.raises(ValidationError, match="`checkpoint` must be a directory path.*resume=True"):
        _build().train(checkpoint=True)


def test_moving_averages_are_part_of_the_checkpoint():
    """MINE's log moving average (and MI-NEE's three) travel with the checkpoint."""
    from infoblocks.plugins.registry import get_registry

    registry = get_registry()
    mine = registry.build("loss", "mine_loss")
    assert mine.checkpoint_state() == {}
    mine.log_average = torch.tensor(0.25)
    again = registry.build("loss", "mine_loss")
    again.restore_state(mine.checkpoint_state())
    assert torch.equal(again.log_average, torch.tensor(0.25))
    minee = registry.build("loss", "minee_loss")
    minee.log_averages = {"xy": torch.tensor(1.5)}
    other = registry.build("loss", "minee_loss")
    other.restore_state(minee.checkpoint_state())
    assert torch.equal(other.log_averages["xy"], torch.tensor(1.5))


def test_a_checkpoint_of_other_models_is_named(tmp_path):
    from infoblocks.blocks import Routine
    from infoblocks.blocks.models import MLP

    _build().train(checkpoint=tmp_path / "c")
    other = _build()
    other = Routine(dataset={"data": other.dataset["data"], "positions": other.dataset["positions"]},
                    phases=other.phases, seed=3,
                    models={"main": MLP(in_dim=5, out_dim=2, hidden_dims=(8,))})
    with pytest.raises(ValidationError, match=r"written by a routine configured otherwise "
                                              r"\(.*models.main.hidden_dims: \[16, 16\] then, "
                                              r"\[8\] now"):
        other.train(checkpoint=tmp_path / "c", resume=True)


def test_a_resume_with_other_globals_or_other_data_is_refused(tmp_path):
    # author10 A10-1: a UMAP resumed with n_neighbors 10 instead of 15 (the graph is a global
    # relation, recomputed from the new configuration) or on other rows of the same shape ran
    # to the end: an embedding of neither run, and recipe.toml recording the second
    from infoblocks.blocks import GlobalRelation, Routine

    def routine(n_neighbors, data=None):
        base = _build()
        data = data if data is not None else base.dataset["data"]
        return Routine(dataset={"data": data, "positions": base.dataset["positions"]},
                       phases=base.phases, seed=3, models=base.models,
                       global_relations={"graph": GlobalRelation(relation={
                           "name": "neighbor_pdist", "n_neighbors": n_neighbors})})

    routine(15).train(checkpoint=tmp_path / "c")
    with pytest.raises(ValidationError, match=r"configured otherwise \(.*globals.graph.relation"
                                              r".n_neighbors: 15 then, 10 now"):
        routine(10).train(checkpoint=tmp_path / "c", resume=True)
    other = _build().dataset["data"].flip(0)  # the same shape, other rows first
    with pytest.raises(ValidationError, match=r"configured otherwise \(data.data: "):
        routine(15, other).train(checkpoint=tmp_path / "c", resume=True)
    routine(15).train(checkpoint=tmp_path / "c", resume=True)  # the same: resumes


def test_a_resume_with_another_optimizer_or_sampler_is_refused_by_key(tmp_path):
    # resuming would mix two configurations: a raw KeyError of torch's optimizer state, or
    # (another sampler) silently a run of neither configuration
    _build().train(checkpoint=tmp_path / "c")
    import attrs

    for change, key in (({"optimizer": "sgd"}, r"phases\[main\].optimizer: adamw then, sgd now"),
                        ({"sampler": {"name": "items", "batch_size": 7}},
                         r"phases\[main\].sampler.batch_size: 32 then, 7 now")):
        other = _build()
        other.phases[-1] = attrs.evolve(other.phases[-1], **change)
        with pytest.raises(ValidationError, match=key):
            other.train(checkpoint=tmp_path / "c", resume=True)


TORCHRUN = BUILD + textwrap.dedent('''
    import os, sys
    import torch
    torch.set_num_threads(1)
    directory, out, marker = sys.argv[1:4]
    kill = None
    if marker != "-" and not os.path.exists(marker) and os.environ["RANK"] == "1":
        open(marker, "w").close()  # killed once: the relaunched workers run to the end
        kill = ("main", 4)
    build(kill=kill).train(checkpoint=directory, resume=True).save(out)
''')


def test_two_processes_killed_mid_phase_resume_from_rank_0s_checkpoint(tmp_path):
    """Rank 1 is SIGKILLed in the middle of the main phase, torchrun stops the job; launched
    again, both workers resume from rank 0's checkpoint and end with the weights of an
    uninterrupted 2-process run (1e-6 relative)."""
    from infoblocks.blocks import Routine

    def launch(name, marker, retry=True):
        return torchrun(TORCHRUN, tmp_path / f"{name}-ckpt", tmp_path / name, marker,
                        directory=tmp_path, check=False, retry=retry)

    whole = launch("whole", "-")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = launch("cut", str(tmp_path / "killed-once"), retry=False)
    assert killed.returncode != 0 and (tmp_path / "killed-once").exists()
    assert "SIGKILL" in killed.stderr or "-9" in killed.stderr
    saved = torch.load(tmp_path / "cut-ckpt" / "train_state.pt", weights_only=True)
    assert saved["phase"] == "main" and not saved["complete"]
    resumed = launch("cut", str(tmp_path / "killed-once"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = Routine.load(tmp_path / "whole"), Routine.load(tmp_path / "cut")
    for key, value in a.models.state_dict().items():
        assert torch.allclose(value, b.models.state_dict()[key], rtol=1e-6, atol=1e-7), key
    assert [r["epoch"] for r in b.history.rows] == [r["epoch"] for r in a.history.rows]


def test_a_loss_keeps_its_moving_average_through_a_checkpoint_by_default():
    # a plugin loss that keeps a running statistic on the block, as the bound protocol
    # describes, resumes with it without writing checkpoint_state (a cache stays out)
    from typing import ClassVar

    import attrs

    from infoblocks.blocks.losses import Loss

    @attrs.define
    class Averaging(Loss):
        name: ClassVar[str] = "averaging_test_loss"
        rate: float = 0.1
        running: torch.Tensor | None = attrs.field(init=False, default=None)
        steps: int = attrs.field(init=False, default=0)
        _cache: torch.Tensor | None = attrs.field(init=False, default=None)

    loss = Averaging()
    loss.running, loss.steps, loss._cache = torch.tensor([0.25]), 7, torch.ones(3)
    saved = loss.checkpoint_state()
    assert set(saved) == {"running", "steps"}  # not `rate` (a setting), not the cache
    fresh = Averaging()
    fresh.restore_state(saved)
    assert torch.equal(fresh.running, torch.tensor([0.25])) and fresh.steps == 7
    assert fresh._cache is None

"""``fit(..., resume=DIR)`` / ``Routine.train(resume=True)`` where DIR holds no checkpoint
(user13: a mistyped path started afresh silently, passing for a resume): training still
starts from scratch — the same command line starts a run and continues it after a kill —
with a NothingToResumeWarning naming the directory."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infoblocks.blocks import Routine, TrainingPhase
from infoblocks.blocks.resume import NothingToResumeWarning
from infoblocks.plugins import get_registry

PHASE = dict(name="fit", epochs=1, sampler={"name": "items", "batch_size": 20}, loss="position")


def _routine():
    a = np.random.default_rng(0).normal(size=(40, 4))
    model = get_registry().build("model", {"name": "mlp", "in_dim": 4, "out_dim": 2})
    return Routine(dataset={"data": a, "positions": a[:, :2]}, models={"main": model},
                   phases=[TrainingPhase(**PHASE)], seed=0)


def test_resume_from_a_directory_without_a_checkpoint_warns_and_starts_afresh(tmp_path):
    empty = tmp_path / "typo"
    with pytest.warns(NothingToResumeWarning, match=r"'.*typo' holds no training checkpoint.*"
                                                    r"does not exist yet.*from scratch"):
        _routine().train(checkpoint=empty, resume=True)
    assert (empty / "train_state.pt").exists()  # the run writes its checkpoint there
    with warnings.catch_warnings():
        warnings.simplefilter("error", NothingToResumeWarning)
        _routine().train(checkpoint=empty, resume=True)  # a checkpoint now: no warning


def test_recipe_fit_with_resume_dir_and_no_checkpoint_warns(tmp_path):
    from infoblocks.recipes import DII

    a = np.random.default_rng(0).normal(size=(40, 4))
    with pytest.warns(NothingToResumeWarning, match="ckpt"):
        DII(epochs=1).fit(a, a[:, :2], resume=tmp_path / "ckpt")

"""Under torchrun, infoblocks' own warnings are shown by rank 0 only (author24-5: each rank
printed the same MIConvergenceWarning, two copies with 2 processes); a warning of other code
(a plugin's block, the user's script: it may concern one rank's shard) still shows on every
rank, and INFOBLOCKS_WARN_ALL_RANKS=1 shows infoblocks' on every rank too."""

from __future__ import annotations

import textwrap
import warnings

import pytest

from infoblocks.blocks import distributed
from infoblocks.blocks.assembly import ShortcutWarning
from infoblocks.plugins.testing import torchrun

SCRIPT = textwrap.dedent('''
    import warnings
    import numpy as np
    import torch
    from infoblocks.blocks import Routine, TrainingPhase
    from infoblocks.blocks.models import MLP

    if __name__ == "__main__":
        torch.set_num_threads(1)
        x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
        routine = Routine(dataset={"data": x, "positions": x[:, :2].copy()}, seed=1,
                          models={"main": MLP(in_dim=3, out_dim=2, hidden_dims=(4,),
                                              batch_norm=True)},
                          phases=[TrainingPhase(name="fit", epochs=1, loss="position",
                                                sampler={"name": "items", "batch_size": 32})])
        routine.train()  # infoblocks warns of the batch norm, on every rank
        warnings.warn(f"my shard on rank {routine.dist.rank}")  # the script's own
''')


@pytest.mark.parametrize("all_ranks", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_infoblocks_warnings_come_from_rank_0_only_under_torchrun(tmp_path, monkeypatch,
                                                                  all_ranks):
    if all_ranks:
        monkeypatch.setenv("INFOBLOCKS_WARN_ALL_RANKS", "1")
    else:
        monkeypatch.delenv("INFOBLOCKS_WARN_ALL_RANKS", raising=False)
    err = torchrun(SCRIPT, directory=tmp_path).stderr
    assert err.count("models.main has batch normalisation") == (2 if all_ranks else 1), err
    assert "my shard on rank 0" in err and "my shard on rank 1" in err


def _warn_from_infoblocks():
    from infoblocks.blocks.assembly import warn_once

    class Recipe:  # warn_once keys on the instance
        pass

    warn_once(Recipe(), ShortcutWarning("test_fix25a: a shortcut reaches no block"))


def test_a_rank_above_0_hides_only_infoblocks_own_warnings(monkeypatch):
    monkeypatch.delenv("INFOBLOCKS_WARN_ALL_RANKS", raising=False)
    with warnings.catch_warnings(record=True) as shown:  # what reaches showwarning
        warnings.simplefilter("always")
        assert not distributed.quiet_other_ranks(0)  # rank 0 shows everything
        _warn_from_infoblocks()
        assert [str(w.message) for w in shown] == ["test_fix25a: a shortcut reaches no block"]
        assert distributed.quiet_other_ranks(1)
        assert distributed.quiet_other_ranks(1)  # once: not wrapped twice
        _warn_from_infoblocks()
        warnings.warn("test_fix25a: the script's own")
        assert [str(w.message) for w in shown[1:]] == ["test_fix25a: the script's own"]
        warnings.simplefilter("error", ShortcutWarning)  # filters still apply first
        with pytest.raises(ShortcutWarning):
            _warn_from_infoblocks()
    # catch_warnings put the old showwarning back: this process shows them again
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        _warn_from_infoblocks()
        assert len(shown) == 1


def test_warn_all_ranks_keeps_every_rank_s_warnings(monkeypatch):
    monkeypatch.setenv("INFOBLOCKS_WARN_ALL_RANKS", "1")
    with warnings.catch_warnings():
        shown = warnings.showwarning
        assert not distributed.quiet_other_ranks(1)
        assert warnings.showwarning is shown


@pytest.mark.slow
def test_the_command_line_prints_a_recipe_warning_once_with_two_processes(tmp_path):
    """The launcher reads the config before the launch (its warnings are rank 0's too) and
    rank 1 leaves them to rank 0: one ShortcutWarning, not three."""
    import os
    import subprocess
    import sys

    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", x + rng.normal(size=x.shape).astype(np.float32))
    (tmp_path / "nwj.toml").write_text('recipe = "nwj"\nepochs = 2\nembed_dim = 8\n'
                                       'batch_size = 50\n')
    env = {k: v for k, v in os.environ.items() if k != "INFOBLOCKS_WARN_ALL_RANKS"}
    run = subprocess.run([sys.executable, "-m", "infoblocks.recipes.cli", "run",
                          str(tmp_path / "nwj.toml"), "--data", str(tmp_path / "x.npy"),
                          "--data", str(tmp_path / "y.npy"), "--out", str(tmp_path / "out"),
                          "--nproc", "2"], capture_output=True, text=True, timeout=600,
                         env={**env, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("`embed_dim` = 8 reaches no block") == 1, run.stderr[-3000:]

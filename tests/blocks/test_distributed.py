"""Under torchrun (gloo, 2 processes on this CPU) a routine follows the one-process run with
the same total batch: the same weights up to reduction order, the same history, one save."""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pytest
import torch

from infoblocks.blocks.data import intra_op_threads
from infoblocks.blocks.distributed import Distributed, from_environment
from infoblocks.blocks.errors import ValidationError
from infoblocks.plugins.testing import torchrun

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import torch
    from infoblocks.blocks import Routine, TrainingPhase, Validation
    from infoblocks.blocks.models import MLP

    def build(**options):
        rng = np.random.default_rng(0)
        x = (rng.normal(size=(256, 5)) * [3, 2, 1, .5, .1]).astype(np.float32)
        data = {"data": x, "positions": np.tanh(x[:, :2]).astype(np.float32)}
        # SGD: Adam divides by sqrt(v), so on near-zero gradient components it turns the
        # reduction-order rounding of the two runs into full-size steps of either sign
        phase = TrainingPhase(name="fit", epochs=6, loss="position", learning_rate=0.05,
                              optimizer="sgd", momentum=0.9, lr_schedule="cos",
                              sampler={"name": "items", "batch_size": 64},
                              validation=Validation(sampler={"name": "items"}, loss="position",
                                                    metric="position"), patience=50)
        return Routine(dataset=data, phases=[phase], seed=1,
                       models={"main": MLP(in_dim=5, out_dim=2, hidden_dims=(16,))}, **options)

    if __name__ == "__main__":
        torch.set_num_threads(1)
        routine = build().train()
        routine.save(sys.argv[1])
        print(json.dumps({"rank": routine.dist.rank, "world": routine.dist.world_size}))
''')


def _namespace():
    namespace = {"__name__": "infoblocks_test_distributed"}
    exec(SCRIPT, namespace)  # noqa: S102 - the same routine in both runs
    return namespace


def test_two_processes_follow_one_process_with_the_same_total_batch(tmp_path):
    out = torchrun(SCRIPT, tmp_path / "model", directory=tmp_path)
    # the ranks share stdout: their lines may interleave, so find the records, not lines
    ranks = sorted(int(r) for r in re.findall(r'"rank": (\d+)', out.stdout))
    assert ranks == [0, 1]
    with intra_op_threads(1):
        single = _namespace()["build"]().train()
    from infoblocks.blocks import Routine

    both = Routine.load(tmp_path / "model")
    for key, value in single.models.state_dict().items():
        other = both.models.state_dict()[key]
        assert torch.allclose(value, other, rtol=1e-4, atol=1e-6), key
    saved = json.loads((tmp_path / "model" / "routine.json").read_text())["history"]
    assert [r["epoch"] for r in saved] == list(range(6))
    np.testing.assert_allclose([r["val_position"] for r in saved],
                               single.history.column("val_position"), rtol=1e-4)


def test_one_process_is_not_distributed_and_asking_for_it_says_how(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert from_environment("auto", torch.device("cpu")) == Distributed()
    with pytest.raises(ValidationError, match="launch with `torchrun"):
        from_environment(True, torch.device("cpu"))
    with pytest.raises(ValidationError, match="`distributed` must be True, False or 'auto'"):
        from_environment("yes", torch.device("cpu"))


def test_a_batch_norm_model_under_torchrun_warns_naming_the_slot():
    # author12 A12-5: batch norm trained silently on per-rank statistics under torchrun
    # (UMAP with mlp's batch_norm = true: an embedding 110 % away from one process)
    from infoblocks.blocks import Routine
    from infoblocks.blocks.distributed import Distributed
    from infoblocks.blocks.models import MLP

    routine = Routine(dataset={"data": np.zeros((8, 3), np.float32)}, distributed=False,
                      models={"main": MLP(in_dim=3, out_dim=2, hidden_dims=(4,),
                                          batch_norm=True),
                              "plain": MLP(in_dim=3, out_dim=2, hidden_dims=(4,))})
    routine._warn_batch_statistics()  # one process: nothing to say
    routine.dist = Distributed(rank=0, world_size=2)
    with pytest.warns(UserWarning, match=r"models.main has batch normalisation "
                                         r"\(BatchNorm1d\): under torchrun each of the 2 ranks"
                      ) as caught:
        routine._warn_batch_statistics()
    assert not [w for w in caught if "models.plain" in str(w.message)]

"""IMNN under torchrun (gloo, 2 processes on this CPU): the simulations are sharded, the Fisher
statistics are sums reduced before the loss, so the loss — and, after the engine's average over
processes, the gradient — is the one of the whole set; det F of a 2-process fit equals the
one-process fit on a fixed budget."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import torch

from infoblocks.blocks.data import intra_op_threads
from infoblocks.blocks.fisher import SimulationSampler
from infoblocks.recipes.imnn import gaussian_simulations
from infoblocks.plugins.testing import torchrun

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import torch
    from infoblocks.blocks.distributed import from_environment
    from infoblocks.blocks.fisher import FisherLoss, SimulationSampler, SummaryMLP
    from infoblocks.blocks.state import TrainState
    from infoblocks.recipes.imnn import IMNN, gaussian_simulations

    def fitted():
        fid, der = gaussian_simulations(400, seed=0)
        val_fid, val_der = gaussian_simulations(400, seed=1)
        imnn = IMNN(theta_fid=[0.0, 1.0], hidden_dims=(32, 32), epochs=25, min_epochs=25,
                    patience=25, seed=3)
        return imnn.fit(fid, der, validation_fiducial=val_fid, validation_derivative=val_der)

    def gradients(batch, rank, world, chunk_size):
        """The gradient of the Fisher loss, flattened: the whole batch in one process
        (rank None), or this rank's shard reduced and averaged as the engine does."""
        model = SummaryMLP(in_dim=10, out_dim=2, hidden_dims=(16,)).build()
        torch.manual_seed(0)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.3)
        loss = FisherLoss(chunk_size=chunk_size)
        models = torch.nn.ModuleDict({"main": model})
        if rank is None:
            loss(batch, models, None).value.backward()
        else:
            cpu = torch.device("cpu")
            state = TrainState(models=models, dataset=None, globals={}, device=cpu,
                               generator=torch.Generator(), rng=np.random.default_rng(0),
                               dist=from_environment("auto", cpu))
            shard = SimulationSampler(theta_fid=[0.0, 1.0]).shard(batch, rank, world)
            loss(shard, models, state).value.backward()
            state.dist.average_gradients(list(model.parameters()))
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    if __name__ == "__main__":
        torch.set_num_threads(1)
        dist = from_environment("auto", torch.device("cpu"))
        fid, der = gaussian_simulations(64, seed=5)
        batch = {"fiducial": torch.as_tensor(fid), "derivative": torch.as_tensor(der[:40])}
        errors = []
        for chunk in (None, 16):
            one = gradients(batch, None, 1, chunk)
            both = gradients(batch, dist.rank, dist.world_size, chunk)
            errors.append(float((both - one).norm() / one.norm()))
        imnn = fitted()
        with open(f"{sys.argv[1]}/rank{dist.rank}.json", "w") as out:  # (stdout interleaves)
            json.dump({"rank": dist.rank, "world": dist.world_size, "grad_errors": errors,
                       "best": imnn.best_val_det_F_, "F": imnn.F_.tolist(),
                       "val_det_F": imnn.history_["val_det_F"]}, out)
''')


def _namespace():
    namespace = {"__name__": "infoblocks_test_imnn_distributed"}
    exec(SCRIPT, namespace)  # noqa: S102 - the same fit in both runs
    return namespace


def test_sharded_simulations_keep_derivatives_with_their_rows():
    fid, der = gaussian_simulations(7, seed=0)
    batch = {"fiducial": torch.as_tensor(fid), "derivative": torch.as_tensor(der[:5])}
    sampler = SimulationSampler(theta_fid=[0.0, 1.0])
    shards = [sampler.shard(batch, r, 2) for r in range(2)]
    # rank 0: the fiducial rows 0, 2, 4 of its derivatives first, then row 5 of the other two
    assert torch.equal(shards[0]["fiducial"], batch["fiducial"][[0, 2, 4, 5]])
    assert torch.equal(shards[1]["fiducial"], batch["fiducial"][[1, 3, 6]])
    assert torch.equal(shards[1]["derivative"], batch["derivative"][[1, 3]])
    numerical = {"fiducial": batch["fiducial"], "numerical_derivative": torch.randn(5, 2, 2, 10),
                 "delta_theta": torch.tensor([0.1, 0.1])}
    half = sampler.shard(numerical, 1, 2)
    assert torch.equal(half["numerical_derivative"], numerical["numerical_derivative"][1::2])
    assert torch.equal(half["delta_theta"], numerical["delta_theta"])


def test_two_processes_give_the_one_process_gradient_and_det_F(tmp_path):
    torchrun(SCRIPT, tmp_path, directory=tmp_path)
    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert sorted(r["rank"] for r in rows) == [0, 1] and rows[0]["world"] == 2
    for row in rows:  # the reduced loss's gradient, averaged over ranks = the whole set's
        assert max(row["grad_errors"]) < 1e-5, row["grad_errors"]
    assert rows[0]["best"] == rows[1]["best"]  # every rank computes the loss of the whole set
    with intra_op_threads(1):
        single = _namespace()["fitted"]()
    # a fixed budget of 25 epochs: det F of the whole validation set after each, to 1e-3
    np.testing.assert_allclose(rows[0]["val_det_F"], single.history_["val_det_F"], rtol=1e-3)
    np.testing.assert_allclose(rows[0]["best"], single.best_val_det_F_, rtol=1e-3)
    np.testing.assert_allclose(rows[0]["F"], single.F_, rtol=1e-3, atol=1e-3)
    assert single.best_val_det_F_ > 10  # it trained: det F at the start is ≈ 1

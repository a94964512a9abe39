"""InfoMax under torchrun (gloo, 2 processes on this CPU): each rank encodes its shard of the
batch and one differentiable all-reduce gathers the codes, so the channel's statistics (the
whitening, the critic's scale from the channel, the in-batch negatives, the nested bound,
decorrelation, saturation, the penalties' least squares) are the whole batch's, its noise is
the one-process draw, and the engine's gradient average is the one-process gradient."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from infoblocks.blocks.data import intra_op_threads
from infoblocks.blocks.distributed import Distributed
from infoblocks.blocks.errors import ValidationError
from infoblocks.plugins.testing import torchrun

SCRIPT = textwrap.dedent('''
    import json, sys
    import attrs
    import numpy as np
    import torch
    from typing import ClassVar
    from infoblocks.blocks.data import Dataset
    from infoblocks.blocks.distributed import Distributed, from_environment
    from infoblocks.blocks.losses import Loss, LossOutput, get_model
    from infoblocks.blocks.models import MLP, Model
    from infoblocks.blocks.mutual_information.infomax import (GaussianChannelCritic,
                                                             LinearResidualMLP)
    from infoblocks.blocks.mutual_information.samplers import InBatchSampler, MarginalSampler
    from infoblocks.blocks.state import TrainState
    from infoblocks.plugins import hookimpl
    from infoblocks.plugins.manager import InfoblocksPlugins, reset_plugin_manager
    from infoblocks.plugins.registry import get_registry

    @attrs.define
    class CodeVariancePenalty(Loss):
        """A plugin penalty on a whole-batch statistic: weight × Σ_k (var c_k − target)²."""
        name: ClassVar[str] = "code_variance_penalty"
        reports: ClassVar[frozenset] = frozenset({"code_variance"})
        weight: float = 1.0
        target: float = 0.2

        def required_fields(self):
            return frozenset({"code"})

        def required_models(self):
            return frozenset()

        def __call__(self, batch, models, state):
            var = batch["code"].var(0)
            return LossOutput(self.weight * (var - self.target).pow(2).sum(),
                              {"code_variance": var.mean().detach()})

    class BilinearNet(torch.nn.Module):
        """A plugin critic without pairwise(): t(z, x) = z W x + b (n,)."""
        def __init__(self, x_dim, y_dim):
            super().__init__()
            self.w = torch.nn.Parameter(0.3 * torch.randn(x_dim, y_dim))
            self.b = torch.nn.Parameter(torch.zeros(()))

        def forward(self, z, x):
            return ((z @ self.w) * x).sum(-1) + self.b

    @attrs.define
    class BilinearCritic(Model):
        name: ClassVar[str] = "bilinear_test_critic"
        x_dim: int = 1
        y_dim: int = 1

        def build(self):
            return BilinearNet(self.x_dim, self.y_dim)

    class Plugin:
        @staticmethod
        @hookimpl
        def register_losses():
            return [CodeVariancePenalty]

        @staticmethod
        @hookimpl
        def register_models():
            return [BilinearCritic]

    def register_plugin():
        manager = InfoblocksPlugins(strict=True).load()
        manager.register(Plugin, "infomax_distributed_test_plugin")
        reset_plugin_manager(manager)

    #: (loss spec, encoder, critic, sampler, batch size): the recipe's defaults (JSD, nested);
    #: Cholesky whitening, decorrelation, saturation, MINE's moving average and the built-in
    #: penalties; InfoNCE's rows, not nested; a joint critic network on the data with
    #: InfoNCE, nested (prefix masks, the objective per prefix); standardisation with a plugin
    #: critic on the data, a plugin penalty and explicit negatives, on uneven shards (25 rows:
    #: 13 and 12)
    CASES = {
        "defaults": ({"name": "infomax", "bound": {"name": "js_divergence"},
                      "input_noise": 0.3, "output_noise": 0.1, "whitening": "none"},
                     "linear_residual", "gaussian", "all_pairs", 24),
        "cholesky": ({"name": "infomax", "bound": {"name": "mine_loss", "ma_rate": 0.5},
                      "input_noise": 0.2, "output_noise": 0.3, "whitening": "cholesky",
                      "decorrelation": 0.5, "saturation": 1.0, "saturation_bound": 0.3,
                      "penalties": [{"name": "linear_reconstruction", "weight": 0.3},
                                    {"name": "parameter_l2", "weight": 0.01, "prefix": ""}]},
                     "mlp", "gaussian", "all_pairs", 24),
        "infonce": ({"name": "infomax", "bound": {"name": "infonce_loss"}, "input_noise": 0.5,
                     "output_noise": 0.2, "whitening": "none", "nested": False},
                    "linear_residual", "gaussian", "all_pairs", 24),
        "joint": ({"name": "infomax", "bound": {"name": "infonce_loss"}, "critic_input": "data",
                   "input_noise": 0.2, "output_noise": 0.2, "whitening": "none"},
                  "linear_residual", "joint_critic", "all_pairs", 24),
        "plugin": ({"name": "infomax", "bound": {"name": "dv"}, "critic_input": "data",
                    "input_noise": 0.2, "output_noise": 0.2, "whitening": "standardize",
                    "penalties": [{"name": "code_variance_penalty"},
                                  {"name": "linear_reconstruction", "weight": 0.5,
                                   "scale": "log"}]},
                   "mlp", "bilinear_test_critic", "marginal_pairs", 25),
    }
    D, DIM = 6, 3

    def case_gradient(case, dist, steps=2):
        """(loss values, metrics, flat gradient of encoder + critic) after ``steps`` calls
        (the second after an optimiser-free reuse: MINE's average and the critic's scale are
        set on the first) — one process (``dist`` inactive) or this rank's shard."""
        spec, encoder_kind, critic_kind, sampler_kind, b = CASES[case]
        rng = np.random.default_rng(0)
        scales = [3, 2, 1, .5, .3, .1]
        data = torch.as_tensor(rng.normal(size=(80, D)) * scales, dtype=torch.float32)
        torch.manual_seed(0)
        if encoder_kind == "linear_residual":  # started at the data's PCA, as in a fit
            enc = LinearResidualMLP(in_dim=D, out_dim=DIM, hidden_dims=(8,), residual_init=1.0,
                                    whiten=False).build()
            enc.on_phase_start(TrainState(
                models=torch.nn.ModuleDict(), dataset=Dataset(x=data), globals={},
                device=torch.device("cpu"), generator=torch.Generator(), rng=rng))
        else:
            enc = MLP(in_dim=D, out_dim=DIM, hidden_dims=(8,), output_activation="tanh"
                      if case == "cholesky" else "identity").build()
        if critic_kind == "gaussian":
            critic = GaussianChannelCritic(x_dim=DIM, y_dim=DIM, init_scale=1.0,
                                           init_from_data=True).build()
        else:
            critic = get_registry().build("model", {"name": critic_kind, "x_dim": DIM,
                                                    "y_dim": D, **({"hidden_dims": [8]} if
                                                    critic_kind == "joint_critic" else {})}
                                          ).build()
        models = torch.nn.ModuleDict({"encoder": enc, "critic": critic})
        loss = get_registry().build("loss", spec)
        state = TrainState(models=models, dataset=None, globals={}, device=torch.device("cpu"),
                           generator=torch.Generator().manual_seed(7), rng=rng, dist=dist)
        loss.on_phase_start(state)
        values, metrics, grads = [], [], []
        for step in range(steps):
            index = torch.as_tensor(rng.permutation(80)[:b])
            batch = {"index": index, "x": data[index], "y": data[index]}
            if sampler_kind == "all_pairs":
                sampler = InBatchSampler(batch_size=b)
            else:
                sampler = MarginalSampler(batch_size=b)
                first = torch.as_tensor(rng.permutation(80)[:b])
                second = torch.as_tensor(rng.permutation(80)[:b])
                batch.update(x_marginal=data[first], y_marginal=data[second])
                batch.update(x_all=torch.cat([batch["x"], batch["x_marginal"]]),
                             y_all=torch.cat([batch["y"], batch["y_marginal"]]))
            if dist.active:
                batch = sampler.shard(batch, dist.rank, dist.world_size)
            models.zero_grad()
            out = loss(batch, models, state)
            out.value.backward()
            params = [p for p in models.parameters() if p.requires_grad]
            state.dist.average_gradients(params)
            values.append(float(out.value.detach()))
            metrics.append({k: float(v) for k, v in out.metrics.items()})
            grads.append(torch.cat([p.grad.reshape(-1) for p in params]).tolist())
        with torch.no_grad():  # validation: the fixed noise seed, the same on every rank
            batch = {"index": torch.arange(b), "x": data[:b], "y": data[:b]}
            if sampler_kind == "marginal_pairs":
                batch.update(x_marginal=data[b:2 * b], y_marginal=data[2 * b:3 * b])
                batch.update(x_all=torch.cat([batch["x"], batch["x_marginal"]]),
                             y_all=torch.cat([batch["y"], batch["y_marginal"]]))
            if dist.active:
                batch = (InBatchSampler(batch_size=b) if sampler_kind == "all_pairs"
                         else MarginalSampler(batch_size=b)).shard(batch, dist.rank,
                                                                   dist.world_size)
            values.append(float(loss(batch, models, state).value))
        return {"values": values, "metrics": metrics, "grads": grads}

    def fitted_with(epochs):
        """A short fit of the recipe (benchmarks/infomax_bench.py's semi 19/0.05, seed 0)."""
        import time
        from infoblocks.recipes.infomax import InfoMax
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, 600)
        feats = np.stack([x ** (i - 1) - x ** i for i in range(1, 20)], 1)
        feats = feats + 0.05 * rng.standard_normal(feats.shape)
        start = time.perf_counter()
        model = InfoMax(n_components=3, epochs=epochs, batch_size=128,
                        batches_per_epoch=4, seed=0).fit(feats[:540])
        return {"bound": model.bound_nats_, "best_epoch": model.best_epoch_,
                "val_mi": [r["val_mi"] for r in model.history_],
                "mi": [r["mi"] for r in model.history_],
                "codes": model.transform(feats[540:]).tolist(),
                "seconds": time.perf_counter() - start}

    if __name__ == "__main__":
        torch.set_num_threads(1)
        register_plugin()
        dist = from_environment("auto", torch.device("cpu"))
        out = {"rank": dist.rank, "world": dist.world_size}
        out["cases"] = {case: case_gradient(case, dist) for case in CASES}
        if int(sys.argv[2]) > 0:
            out["fit"] = fitted_with(int(sys.argv[2]))
        with open(f"{sys.argv[1]}/rank{dist.rank}.json", "w") as f:  # (stdout interleaves)
            json.dump(out, f)
''')


def _namespace():
    namespace = {"__name__": "infoblocks_test_infomax_distributed"}
    exec(SCRIPT, namespace)  # noqa: S102 - the same computations in this process
    return namespace


def _one_process(namespace, epochs):
    from infoblocks.plugins.manager import get_plugin_manager, reset_plugin_manager

    previous = get_plugin_manager()
    namespace["register_plugin"]()
    try:
        with intra_op_threads(1):
            cases = {c: namespace["case_gradient"](c, Distributed()) for c in namespace["CASES"]}
            fit = namespace["fitted_with"](epochs) if epochs else None
    finally:
        reset_plugin_manager(previous)
    return cases, fit


def _check_cases(two, one):
    for case, expected in one.items():
        for rank in two:
            got = rank["cases"][case]
            # the gathered codes are the one-process codes (the encoder's matmuls on fewer rows
            # round differently) and the channel noise is its draw: measured <= 4e-7 relative
            # (another noise draw or a shard's statistics move the value by O(1))
            np.testing.assert_allclose(got["values"], expected["values"], rtol=1e-5,
                                       err_msg=case)
            for g, e in zip(got["metrics"], expected["metrics"]):
                assert g.keys() == e.keys()
                np.testing.assert_allclose([g[k] for k in e], list(e.values()), rtol=1e-4,
                                           atol=1e-7, err_msg=case)  # measured <= 2e-6
            # the averaged gradient is the one-process gradient (reduction order aside;
            # measured <= 1e-6 relative)
            for g, e in zip(got["grads"], expected["grads"]):
                g, e = np.asarray(g), np.asarray(e)
                assert np.linalg.norm(e) > 1e-3  # a gradient to compare
                assert np.linalg.norm(g - e) <= 1e-5 * np.linalg.norm(e), case


class OneRank(Distributed):
    """A 'distributed' run of one rank (the collectives are the identity): the sharded code
    path in this process."""

    @property
    def active(self) -> bool:
        return True

    def sum(self, values):
        return values.detach().clone()

    def differentiable_sum(self, values):
        return values

    def mean(self, values):
        return values

    def average_gradients(self, params):
        pass


def test_the_sharded_path_of_one_rank_is_the_one_process_loss():
    # the rows-against-columns scores, the stacked prefixes and the reductions of _ShardScores
    # against the one-process path (in-process: no launch)
    namespace = _namespace()
    one, _ = _one_process(namespace, 0)
    from infoblocks.plugins.manager import get_plugin_manager, reset_plugin_manager

    previous = get_plugin_manager()
    namespace["register_plugin"]()
    try:
        sharded = {c: namespace["case_gradient"](c, OneRank(0, 1)) for c in namespace["CASES"]}
    finally:
        reset_plugin_manager(previous)
    _check_cases([{"cases": sharded}], one)


def test_a_bound_that_does_not_reduce_the_last_axis_is_named_under_torchrun():
    from infoblocks.blocks.data import Dataset
    from infoblocks.blocks.mutual_information import MIBound
    from infoblocks.blocks.mutual_information.infomax import GaussianChannelCritic, InfoMaxLoss
    from infoblocks.blocks.state import TrainState

    class Flat(MIBound):  # breaks the protocol: a mean over every axis
        name = "flat_test_bound"

        def bound(self, scores):
            return scores.joint.mean() - scores.log_mean_exp().mean()

    x = torch.randn(16, 4)
    models = torch.nn.ModuleDict({"encoder": torch.nn.Linear(4, 2), "critic":
                                  GaussianChannelCritic(x_dim=2, y_dim=2).build()})
    state = TrainState(models=models, dataset=Dataset(x=x), globals={},
                       device=torch.device("cpu"), generator=torch.Generator(),
                       rng=np.random.default_rng(0), dist=OneRank(0, 1))
    batch = {"x": x, "index": torch.arange(16), "y_columns": x, "columns": torch.arange(16)}
    loss = InfoMaxLoss(bound=Flat(), whitening="none")
    with pytest.raises(ValidationError, match="Flat gave shape \\(\\) for the 2 prefixes"):
        loss(batch, models, state)
    loss = InfoMaxLoss(bound=Flat(), whitening="none", nested=False)  # one code: no prefixes
    assert torch.isfinite(loss(batch, models, state).value)


def test_linear_reconstruction_alone_refuses_torchrun():
    from types import SimpleNamespace

    from infoblocks.blocks.mutual_information.infomax import LinearReconstructionLoss

    state = SimpleNamespace(dist=Distributed(rank=0, world_size=2))
    models = torch.nn.ModuleDict({"encoder": torch.nn.Linear(3, 2)})
    with pytest.raises(ValidationError, match="penalties"):
        LinearReconstructionLoss()({"x": torch.randn(8, 3)}, models, state)


def test_two_processes_give_the_one_process_gradients(tmp_path):
    """Five channels (above), each two training steps and one validation call: the value, the
    metrics and the averaged gradient of 2 processes (real gloo collectives: a gradient off by
    the world size or a shard's statistic fails here) against one."""
    torchrun(SCRIPT, tmp_path, 0, directory=tmp_path)
    two = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in two] == [2, 2]
    one, _ = _one_process(_namespace(), 0)
    _check_cases(two, one)


@pytest.mark.slow
def test_two_process_fit_follows_one_process(tmp_path):
    """A short fit of the recipe on benchmarks/infomax_bench.py's semi 19/0.05 data: the
    held-out bound per epoch, the restored epoch and the codes of 2 processes against one."""
    epochs = 10
    torchrun(SCRIPT, tmp_path, epochs, directory=tmp_path)
    two = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    one, fit = _one_process(_namespace(), epochs)
    _check_cases(two, one)
    for rank in two:  # measured: 1.7e-6 relative on the bound per epoch, 1.4e-6 on the codes;
        # Adam can turn reduction-order rounding into larger steps, hence the margin
        assert rank["fit"]["best_epoch"] == fit["best_epoch"]
        np.testing.assert_allclose(rank["fit"]["val_mi"], fit["val_mi"], rtol=1e-4)
        assert abs(rank["fit"]["bound"] - fit["bound"]) <= 1e-4 * abs(fit["bound"])
        np.testing.assert_allclose(rank["fit"]["codes"], fit["codes"], atol=1e-4)

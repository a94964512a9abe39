"""author26-5: an IMNN loss from `Loss` that forms F from its rank's shard and declares no
`whole_batch` trained another objective on two ranks (det F 44.19 against 43.97) with no
message; now a IMNNWarning names the loss and `whole_batch`.  Built-ins, FisherLoss subclasses
and a loss declaring `whole_batch = False` stay silent."""
import pytest

from infoblocks.blocks.fisher import FisherLoss
from infoblocks.blocks.fisher.loss import undeclared_reduction
from infoblocks.blocks.losses import CompoundLoss, Loss
from infoblocks.plugins.testing import torchrun

SCRIPT = """
import sys, warnings
from typing import ClassVar
import attrs, torch
from infoblocks.blocks.fisher import fisher_statistics, imnn_objective, network_summaries
from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.plugins import hookimpl
from infoblocks.plugins.manager import get_plugin_manager
from infoblocks.recipes.imnn import IMNN, IMNNWarning, gaussian_simulations


@attrs.define
class LocalFisher(Loss):  # F from the rank's shard, how it reduces left unsaid
    name: ClassVar[str] = "local_fisher"
    consumes: ClassVar[frozenset[str]] = frozenset({"fiducial", "derivative"})
    reports: ClassVar[frozenset[str]] = frozenset({"det_F"})

    def required_models(self):
        return frozenset({"main"})

    def __call__(self, batch, models, state):
        stats = fisher_statistics(*network_summaries(models["main"], batch))
        value, metrics = imnn_objective(stats, 10.0, 0.953)
        return LossOutput(value, {"det_F": metrics["det_F"]})


@attrs.define
class LocalDeclared(LocalFisher):  # says a per-rank value is meant
    name: ClassVar[str] = "local_declared"
    whole_batch: ClassVar[bool] = False


class _Plugin:
    @hookimpl
    def register_losses(self):
        return [LocalFisher, LocalDeclared]


get_plugin_manager().register(_Plugin(), "test_fix26c")
fid, der = gaussian_simulations(200, seed=0)
lines = []
for loss in ["fisher", "local_fisher", "local_declared"]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        IMNN(theta_fid=[0.0, 1.0], hidden_dims=(8,), epochs=1, seed=0,
             phases=[{"name": "fit", "loss": loss}]).fit(fid, der)
    found = [str(w.message) for w in caught if issubclass(w.category, IMNNWarning)]
    lines.append(f"{loss}: " + (found[0] if found else "silent"))
if torch.distributed.get_rank() == 0:
    open(f"{sys.argv[1]}/reduction.txt", "w").write("\\n".join(lines))
"""


@pytest.mark.slow  # two processes, three fits: ~13 s
def test_an_undeclared_imnn_loss_under_torchrun_warns(tmp_path):
    torchrun(SCRIPT, tmp_path, directory=tmp_path)
    results = dict(line.split(": ", 1) for line in
                   (tmp_path / "reduction.txt").read_text().splitlines())
    assert results["fisher"] == "silent"
    assert results["local_declared"] == "silent"
    message = results["local_fisher"]
    assert "loss 'local_fisher' (phases.fit.loss) does not declare `whole_batch`" in message
    assert "differentiable_sum" in message and "2 ranks" in message


def test_which_losses_declare_how_they_reduce():
    class Plain(Loss):
        name = "plain"

    class Declared(Loss):
        name = "declared"
        whole_batch = False

    class Sub(FisherLoss):
        name = "sub"

    assert undeclared_reduction(FisherLoss()) == []
    assert undeclared_reduction(Sub()) == []
    assert undeclared_reduction(Declared()) == []
    assert undeclared_reduction(Plain()) == ["plain"]
    assert undeclared_reduction(CompoundLoss(losses=[FisherLoss(), Plain()])) == ["plain"]
    assert undeclared_reduction(CompoundLoss(losses=[FisherLoss(), Declared()])) == []

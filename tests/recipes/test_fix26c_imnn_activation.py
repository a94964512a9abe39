"""author26-4: after a simulator fit with a plugin summary network (no `activation` field),
to_toml(full=True) / save() / `infoblocks run` warned "`activation` = 'silu' reaches no block
... remove `activation`" for a mode default the user never set."""
import types
import warnings
from typing import ClassVar

import attrs
import pytest
import torch
from torch import nn

from infoblocks.blocks.assembly import ShortcutWarning
from infoblocks.blocks.models import Model
from infoblocks.plugins import hookimpl


class _Moments(nn.Module):
    def __init__(self, out_dim):
        super().__init__()
        self.out = nn.Linear(2, out_dim)

    def forward(self, x):
        x = x.flatten(1)
        return self.out(torch.stack([x.mean(-1), (x * x).mean(-1)], -1))


@attrs.define
class Moments(Model):
    name: ClassVar[str] = "t26c_moments"
    in_dim: int
    out_dim: int

    def build(self):
        return _Moments(self.out_dim)


@pytest.fixture
def plugin(infoblocks_plugin):
    module = types.ModuleType("t26c")
    module.register_models = hookimpl(lambda: [Moments])
    return infoblocks_plugin(module, name="t26c")


def _sim(g, theta):
    return theta[:, :1] + theta[:, 1:2].sqrt() * torch.randn(theta.shape[0], 10, generator=g)


def test_no_shortcut_warning_for_an_unset_activation(plugin, tmp_path):
    from infoblocks.recipes import IMNN
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = IMNN(n_summaries=2, theta_fid=(0.0, 1.0), epochs=2, min_epochs=1, n_s=50, n_d=50,
                 n_validation=50, models={"main": {"name": "t26c_moments"}}).fit(simulator=_sim)
        text = m.to_toml(full=True)          # what save() and `infoblocks run` do after the fit
        m.save(tmp_path / "model")
    shortcut = [str(w.message) for w in caught if issubclass(w.category, ShortcutWarning)]
    assert shortcut == []
    assert "activation" not in text and 'lr_schedule = "cos"' in text  # the others written
    # a shortcut the user did set and that reaches no block still warns
    with pytest.warns(ShortcutWarning, match="`activation` = 'tanh' reaches no block"):
        IMNN(n_summaries=2, theta_fid=(0.0, 1.0), epochs=1, n_s=50, n_d=50, n_validation=50,
             activation="tanh", models={"main": {"name": "t26c_moments"}}).fit(simulator=_sim)

"""InfoMax's `critic_hidden_dims` with the Gaussian-channel critic (no network) warns as every
other shortcut that reaches no block (author27-2). Before, `InfoMax(critic_hidden_dims=[16])`
dropped the sizes with no message, with the default critic or a plugin critic in
[models.critic]."""

from __future__ import annotations

import types
import warnings
from typing import ClassVar

import attrs
import torch

from infoblocks.blocks.assembly import ShortcutWarning
from infoblocks.blocks.models import Model
from infoblocks.plugins import hookimpl
from infoblocks.recipes.infomax import InfoMax


class _Bilinear(torch.nn.Module):
    def __init__(self, x_dim, y_dim):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(x_dim, y_dim))

    def forward(self, x, y):
        return ((x @ self.w) * y).sum(-1)


@attrs.define
class Bilinear(Model):
    name: ClassVar[str] = "fix27b_bilinear"
    x_dim: int = 1
    y_dim: int = 1

    def build(self):
        return _Bilinear(self.x_dim, self.y_dim)


def _shortcut_warnings(**options) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        full = InfoMax(**options).to_dict(full=True)
    assert "hidden_dims" not in full["models"]["critic"]  # the sizes go nowhere indeed
    return [str(w.message) for w in caught if issubclass(w.category, ShortcutWarning)]


def test_critic_sizes_with_the_gaussian_critic_warn():
    assert _shortcut_warnings(critic_hidden_dims=[16]) == [
        "infomax: `critic_hidden_dims` = (16,) reaches no block: it sizes the critic network "
        "of critic = \"joint\" or \"separable\", and `critic` is \"gaussian\" "
        "(gaussian_channel_critic: no network, one learnt scale per prefix). Set critic = "
        "\"joint\" or \"separable\" to train a critic network, or remove `critic_hidden_dims`."]


def test_critic_sizes_with_a_plugin_critic_name_it(infoblocks_plugin):
    module = types.ModuleType("fix27b_critic")
    module.register_models = hookimpl(lambda: [Bilinear])
    infoblocks_plugin(module, name="fix27b_critic")
    found = _shortcut_warnings(critic_hidden_dims=[16], models={"critic": "fix27b_bilinear"})
    assert len(found) == 1 and "[models.critic] names 'fix27b_bilinear' (plugin " \
        "'fix27b_critic'), which the shortcut does not fill" in found[0]


def test_critic_sizes_that_reach_a_network_do_not_warn():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        full = InfoMax(critic="joint", critic_hidden_dims=[16]).to_dict(full=True)
        InfoMax().to_dict(full=True)  # the default sizes with the default critic: silent
    assert full["models"]["critic"]["hidden_dims"] == [16]
    assert not [w for w in caught if issubclass(w.category, ShortcutWarning)]

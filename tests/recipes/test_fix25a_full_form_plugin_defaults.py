"""``to_toml(full=True)`` / ``infoblocks config FILE --full`` write a plugin block's own fields
with their defaults (author24-5: `alpha_tuba` was written with `alpha = 0.5` but without
`baseline = 1.0`), and the round trip stays identical."""

import tomllib
import warnings
from typing import ClassVar

import attrs
import numpy as np
import pytest

from infoblocks.blocks.mutual_information.bounds import MIBound
from infoblocks.blocks.mutual_information.samplers import MarginalSampler
from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.recipes import MINE, ParametricUMAP


@attrs.define(kw_only=True)
class _Tuba(MIBound):
    name: ClassVar[str] = "test_fix25a_tuba"
    alpha: float = 0.5
    baseline: float = 1.0

    def bound(self, scores):
        return scores.mean_joint() - scores.log_mean_exp()


@attrs.define(kw_only=True)
class _KPairs(MarginalSampler):  # inherits x_key, index_key, batch_size ... (filled by recipes)
    name: ClassVar[str] = "test_fix25a_k_pairs"
    k: int = 3


@pytest.fixture
def tuba(infoblocks_plugin):
    from infoblocks.plugins import hookimpl

    class Plugin:
        @hookimpl
        def register_losses(self):
            return [_Tuba]

        @hookimpl
        def register_samplers(self):
            return [_KPairs]

    infoblocks_plugin(Plugin(), "test_fix25a")
    return _Tuba.name


def _round_trip(recipe):
    text = recipe.to_toml(full=True)
    again = recipe_from_dict(tomllib.loads(text))
    assert again.to_toml(full=True) == text
    return tomllib.loads(text), again


def test_a_plugin_bound_is_written_with_its_defaulted_fields(tuba):
    recipe = MINE(epochs=1, batch_size=50, phases=[{"name": "train",
                                                     "loss": {"name": tuba, "alpha": 0.25}}])
    full, again = _round_trip(recipe)
    train = full["phases"][0]
    assert train["loss"] == {"name": tuba, "alpha": 0.25, "baseline": 1.0}
    # the built-in sampler the recipe sets is as before: no block defaults added
    assert "batches_per_epoch" not in train["sampler"]
    # a plugin sampler: its own k, not the fields it shares with the built-ins (x_key ...)
    sampled = MINE(phases=[{"name": "train", "sampler": "test_fix25a_k_pairs"}])
    sampler = _round_trip(sampled)[0]["phases"][0]["sampler"]
    assert sampler["k"] == 3 and "x_key" not in sampler and "fixed" not in sampler
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = (x + rng.normal(size=x.shape)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = recipe.fit(x, y).estimate()
        b = again.fit(x, y).estimate()
    assert a == b


def test_example_plugin_blocks_get_their_own_defaults_not_the_fields_a_fit_fills():
    recipe = ParametricUMAP(models={"main": {"name": "residual_mlp"}},
                            evaluation={"placement": "neighbor_mean"})
    full, _ = _round_trip(recipe)
    # width / blocks are residual_mlp's own; in_dim / out_dim (no default) come from the data
    assert full["models"]["main"] == {"name": "residual_mlp", "activation": "relu",
                                      "width": 64, "blocks": 2}
    assert full["evaluation"]["placement"] == {"name": "neighbor_mean", "eps": 1e-6}

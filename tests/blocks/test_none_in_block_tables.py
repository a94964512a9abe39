"""A block option set to None inside a section's table survives the data form.

TOML has no null and an option left out reads back as the block's default: the MI sampler's
``batch_size = None`` (the whole pool in one batch) came back as 100 through ``to_dict`` /
``to_toml`` / ``save``, so a re-run trained on batches of 100, silently."""
from __future__ import annotations

import numpy as np
import pytest

from infoblocks.recipes import MINE

WHOLE_POOL = [{"name": "train", "sampler": {"name": "marginal_pairs", "batch_size": None}}]


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 2))
    return x, x + rng.normal(size=(240, 2))


@pytest.mark.parametrize("full", [False, True])
def test_none_option_round_trips_through_to_dict(full):
    recipe = MINE(epochs=1, phases=WHOLE_POOL)
    data = recipe.to_dict(full=full)
    back = MINE.from_dict(data)
    assert back.to_dict(full=full) == data
    assert back.fit(*_data()).routine_.phases[0].sampler.batch_size is None


def test_none_option_round_trips_through_toml_and_save(tmp_path):
    x, y = _data()
    recipe = MINE(epochs=1, phases=WHOLE_POOL).fit(x, y)
    assert recipe.routine_.phases[0].sampler.batch_size is None
    path = tmp_path / "mine.toml"
    recipe.to_toml(path)
    assert 'batch_size = "none"' in path.read_text()
    assert MINE.from_toml(path).fit(x, y).routine_.phases[0].sampler.batch_size is None
    recipe.save(tmp_path / "model")
    loaded = MINE.load(tmp_path / "model")
    assert loaded.routine_.phases[0].sampler.batch_size is None
    assert loaded.fit(x, y).routine_.phases[0].sampler.batch_size is None


def test_none_where_the_default_is_none_is_left_out():
    recipe = MINE(phases=[{"name": "train", "sampler": {"name": "marginal_pairs",
                                                          "batches_per_epoch": None}}])
    assert recipe.to_dict()["phases"] == [{"name": "train",
                                           "sampler": {"name": "marginal_pairs"}}]

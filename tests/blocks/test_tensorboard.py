"""Callbacks are blocks: ``callbacks = ["tensorboard"]`` in a recipe (or its TOML) writes every
metric of ``history_`` per epoch to TensorBoard."""

from __future__ import annotations

import numpy as np
import pytest

from infoblocks.blocks.callbacks import TensorBoard
from infoblocks.blocks.errors import RegistryError
from infoblocks.plugins.registry import get_registry, recipe_from_dict


def _data():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(200, 4)) * [3, 2, 1, .5]).astype(np.float32)


def test_a_recipe_names_the_tensorboard_callback_and_every_metric_is_written(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = {"recipe": "pca_regression", "epochs": 5,
              "callbacks": [{"name": "tensorboard", "log_dir": str(tmp_path / "runs")}]}
    recipe = recipe_from_dict(config)
    recipe.fit(_data())
    events = EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    tags = events.Tags()["scalars"]
    history = recipe.routine_.history.rows
    assert sorted(tags) == sorted(f"regression/{k}" for k in history[0] if k not in
                                  ("phase", "epoch"))
    written = [e.value for e in events.Scalars("regression/loss")]
    np.testing.assert_allclose(written, [r["loss"] for r in history], rtol=1e-6)
    assert [e.step for e in events.Scalars("regression/loss")] == list(range(5))
    assert not recipe.routine_.callbacks  # built per fit, not left on the routine


def test_unknown_callbacks_and_wrong_forms_are_named():
    with pytest.raises(RegistryError, match=r"callbacks\[0\].*Did you mean 'tensorboard'"):
        recipe_from_dict({"recipe": "pca_regression", "callbacks": ["tensorbord"]}).fit(_data())
    assert get_registry().build("callback", "tensorboard") == TensorBoard()


def test_the_epoch_timer_writes_one_line_per_epoch(tmp_path):
    import json

    recipe = recipe_from_dict({"recipe": "pca_regression", "epochs": 4, "callbacks": [
        {"name": "epoch_timer", "path": str(tmp_path / "t.jsonl")}]})
    recipe.fit(_data())
    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert all(r["seconds"] > 0 and r["peak_rss_mib"] > 10 and r["world_size"] == 1
               for r in rows)

"""Saved routines: atomic writes, and a clear error (never torch's advice to unpickle) for
every kind of damaged save directory; bad inputs to apply."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
import torch

from infoblocks.blocks import Routine, TrainingPhase
from infoblocks.blocks.data import as_tensor
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.models import MLP


def _routine():
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    return Routine(dataset={"data": x, "positions": x[:, :2]},
                   models={"main": MLP(in_dim=3, out_dim=2, hidden_dims=(4,))},
                   phases=[TrainingPhase(name="fit", epochs=1, loss="position",
                                         sampler={"name": "items", "batch_size": 30})]).train()


@pytest.fixture
def saved(tmp_path):
    return _routine().save(tmp_path / "model")


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "routine.json").write_text("{not json"), r"routine.json is not JSON"),
    (lambda p: (p / "routine.json").write_text("[1, 2]"), r"holds a list, not a table"),
    (lambda p: (p / "routine.json").write_text('{"format": 1}'), r"lacks the key\(s\) \['models'\]"),
    (lambda p: (p / "routine.json").write_bytes(b"\xff\xfe\x00garbage"), r"is not JSON"),
    (lambda p: (p / "weights.pt").write_bytes(b""), r"weights.pt cannot be read"),
    (lambda p: (p / "weights.pt").write_bytes(np.random.default_rng(0).bytes(300)),
     r"weights.pt cannot be read"),
    (lambda p: torch.save({"other": {}}, p / "weights.pt"), r"no weights for model 'main'"),
    (lambda p: torch.save({"main": {"net.0.weight": torch.zeros(9, 9)}}, p / "weights.pt"),
     r"do not fit its architecture"),
])
def test_a_damaged_save_gives_a_clear_error(saved, damage, message):
    damage(saved)
    with pytest.raises(ValidationError, match=message) as info:
        Routine.load(saved)
    assert "weights_only" not in str(info.value)


def test_non_finite_weights_are_refused_on_load(saved):
    weights = torch.load(saved / "weights.pt", weights_only=True)
    key = next(iter(weights["main"]))
    weights["main"][key][0] = float("nan")
    torch.save(weights, saved / "weights.pt")
    with pytest.raises(ValidationError, match=r"contain NaN or inf"):
        Routine.load(saved)


def test_an_interrupted_save_leaves_the_previous_model(saved):
    before = Routine.load(saved).apply(np.ones((2, 3), np.float32))
    routine = _routine()
    with mock.patch("torch.save", side_effect=KeyboardInterrupt), \
            pytest.raises(KeyboardInterrupt):
        routine.save(saved)
    assert torch.equal(Routine.load(saved).apply(np.ones((2, 3), np.float32)), before)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model"]  # no debris
    assert json.loads((saved / "routine.json").read_text())["format"] == 1


def test_save_into_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValidationError, match="it is a file"):
        _routine().save(tmp_path / "f")


def test_save_never_replaces_a_folder_that_is_not_a_saved_model(tmp_path, saved):
    # docs7: `infoblocks run` of an MI recipe saved into --out itself, and the atomic swap
    # deleted what else the folder held (the CLI's checkpoint, the user's files)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "keep.txt").write_text("mine")
    with pytest.raises(ValidationError, match=r"results is a folder that is not a saved model "
                                              r"\(it holds keep.txt\).*new or empty folder"):
        _routine().save(tmp_path / "results")
    assert (tmp_path / "results" / "keep.txt").read_text() == "mine"
    _routine().save(saved)  # a saved model is replaced, an empty folder is filled
    (tmp_path / "empty").mkdir()
    _routine().save(tmp_path / "empty")
    assert (tmp_path / "empty" / "routine.json").exists()


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_apply_refuses_a_bad_batch_size(size):
    with pytest.raises(ValidationError, match="`batch_size` must be a positive integer"):
        _routine().apply(np.ones((3, 3), np.float32), batch_size=size)


@pytest.mark.parametrize("x", [np.ones((3, 2), complex), torch.ones(3, 2, dtype=torch.cfloat)])
def test_complex_input_is_refused(x):
    with pytest.raises(ValidationError, match=r"`X` is complex.*x.real and x.imag"):
        as_tensor(x, "X")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", 3.5, "meta"])
def test_an_unknown_device_is_named(device):
    from infoblocks.blocks.data import resolve_device

    with pytest.raises(ValidationError, match=r"`device` = .*'cpu', 'cuda'"):
        resolve_device(device)


def test_values_beyond_float32_are_named_not_called_non_finite():
    x = np.ones((4, 2)) * 1e40
    with pytest.raises(ValidationError, match=r"`X` holds values up to 1e\+40, beyond the range "
                                              r"of torch.float32.*rescale"):
        as_tensor(x, "X")


def test_a_model_saved_with_a_plugin_block_names_the_plugin_when_it_is_missing(
        tmp_path, infoblocks_plugin):
    import attrs
    from typing import ClassVar

    from infoblocks.plugins import hookimpl
    from infoblocks.plugins.manager import (InfoblocksPlugins, get_plugin_manager,
                                            reset_plugin_manager)

    @attrs.define(kw_only=True)
    class WideMLP(MLP):
        name: ClassVar[str] = "wide_mlp_of_a_plugin"

    class _Plugin:
        @hookimpl
        def register_models(self):
            return [WideMLP]

    infoblocks_plugin(_Plugin(), "wide_models")
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    routine = Routine(dataset={"data": x, "positions": x[:, :2]},
                      models={"main": WideMLP(in_dim=3, out_dim=2, hidden_dims=(4,))},
                      phases=[TrainingPhase(name="fit", epochs=1, loss="position",
                                            sampler={"name": "items", "batch_size": 30})])
    path = routine.train().save(tmp_path / "model")
    assert json.loads((path / "routine.json").read_text())["plugin_blocks"] == {
        "model 'wide_mlp_of_a_plugin'": "wide_models"}
    loaded = Routine.load(path)  # the plugin is there
    assert torch.equal(loaded.models["main"][0].weight, routine.models["main"][0].weight)
    spec = json.loads((path / "routine.json").read_text())  # saved under another version
    spec["plugin_blocks"]["model 'wide_mlp_of_a_plugin'"] = "wide_models (wide-models==0.1)"
    (path / "routine.json").write_text(json.dumps(spec))
    with pytest.warns(UserWarning, match=r"saved with model 'wide_mlp_of_a_plugin' of "
                                         r"wide_models \(wide-models==0.1\); this Python has "
                                         r"wide_models"):
        Routine.load(path)
    with_plugin = get_plugin_manager()
    reset_plugin_manager(InfoblocksPlugins(strict=True).load())  # a Python without it
    try:
        with pytest.raises(ValidationError, match=r"saved with plugin blocks this Python does "
                                                  r"not have: model 'wide_mlp_of_a_plugin' "
                                                  r"from plugin wide_models \(wide-models=="
                                                  r"0\.1\)\. Install the plugin \(pip install "
                                                  r"wide-models==0\.1\)"):
            Routine.load(path)
    finally:
        reset_plugin_manager(with_plugin)

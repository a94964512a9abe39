"""A plugin author's findings on schedules and plugin models (author16 F3, F7, F9, F10): a
schedule's bad factor names its plugin, ``check_block`` names a factor that raises, an
embedding's ``lr_schedule`` shortcut that reaches only phases running 0 epochs is a
``ShortcutWarning``, and a plugin model whose forward raises is named by its slot, its block
and its plugin."""

import re
import types
import warnings
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks.assembly import ShortcutWarning
from infoblocks.blocks.errors import BlockError, PluginError, ValidationError
from infoblocks.blocks.models import Model
from infoblocks.blocks.schedules import Schedule
from infoblocks.plugins import hookimpl
from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.plugins.testing import check_block


@attrs.define
class Faulty(Schedule):
    """1 before step ``at``, then NaN (``mode = "nan"``), -0.5 (``"neg"``) or a ValueError."""

    name: ClassVar[str] = "fix17_faulty"
    mode: str = "nan"
    at: int = 1

    def factor(self, step, total_steps):
        if step < self.at:
            return 1.0
        if self.mode == "raise":
            raise ValueError("fix17 schedule bug")
        return float("nan") if self.mode == "nan" else -0.5


class _Raising(torch.nn.Module):
    def __init__(self, n, d):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(n, d))

    def forward(self, index):
        raise RuntimeError("fix17 model bug")


@attrs.define
class RaisingCoords(Model):
    """Free coordinates whose module's forward raises (a plugin's own module class)."""

    name: ClassVar[str] = "fix17_raising_coords"
    n_items: int = 0
    out_dim: int = 2

    def build(self):
        return _Raising(self.n_items, self.out_dim)


@attrs.define
class WrongLinear(Model):
    """A network made of torch's own modules only, built for the wrong input width: torch's
    Linear raises the shape mismatch (no class of the plugin's on the traceback)."""

    name: ClassVar[str] = "fix17_wrong_linear"
    in_dim: int = 0
    out_dim: int = 2

    def build(self):
        return torch.nn.Sequential(torch.nn.Linear(self.in_dim + 3, self.out_dim))


def _register(infoblocks_plugin):
    module = types.ModuleType("fix17")
    module.register_schedules = hookimpl(lambda: [Faulty])
    module.register_models = hookimpl(lambda: [RaisingCoords, WrongLinear])
    infoblocks_plugin(module, name="fix17")


def _mine(schedule):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 2)).astype("float32")
    y = (x[:, :1] + 0.5 * rng.normal(size=(100, 1))).astype("float32")
    recipe = recipe_from_dict({"recipe": "mine", "epochs": 3, "patience": 100, "batch_size": 50,
                               "hidden_dims": [8], "phases": [{"name": "train",
                                                               "lr_schedule": schedule}]})
    return recipe, x, y


def _digits(n=100):
    from sklearn.datasets import load_digits

    return load_digits().data[:n].astype("float32")


# ---------------------------------------------------------------- F3, F10: schedules


@pytest.mark.parametrize("mode", ["nan", "neg"])
def test_a_bad_factor_names_the_schedule_and_its_plugin(infoblocks_plugin, mode):
    _register(infoblocks_plugin)
    recipe, x, y = _mine({"name": "fix17_faulty", "mode": mode})
    with pytest.raises(ValidationError, match=r"schedule 'fix17_faulty' \(plugin 'fix17'\) gave "
                                              r"the learning-rate factor (nan|-0.5) at step 1"):
        recipe.fit(x, y)


def test_a_raising_factor_names_the_schedule_and_its_plugin_too(infoblocks_plugin):
    _register(infoblocks_plugin)
    recipe, x, y = _mine({"name": "fix17_faulty", "mode": "raise"})
    with pytest.raises(PluginError, match=r"schedule 'fix17_faulty' \(plugin 'fix17'\) raised "
                                          r"ValueError: fix17 schedule bug"):
        recipe.fit(x, y)


def test_check_block_names_a_schedule_whose_factor_raises():
    with pytest.raises(AssertionError, match=re.escape(
            "Faulty.factor(1, 7) raised ValueError: fix17 schedule bug")) as info:
        check_block(Faulty, {"mode": "raise", "at": 1})
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(AssertionError, match=re.escape("Faulty.factor(0, 1) raised ValueError")):
        check_block(Faulty, {"mode": "raise", "at": 0})


# ---------------------------------------------------------------- F9: the shortcut's reach


def _shortcut_warnings(spec):
    recipe = recipe_from_dict(spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recipe.fit(_digits())
    return recipe, [str(w.message) for w in caught if w.category is ShortcutWarning]


def test_tsne_lr_schedule_reaching_only_the_untrained_main_phase_warns():
    recipe, caught = _shortcut_warnings({"recipe": "parametric_tsne", "layout_epochs": 2,
                                         "init_epochs": 1, "lr_schedule": "warmup_cos"})
    assert [p["epochs"] for p in recipe.routine_spec()["phases"]
            if p["name"] == "main"] == [0]
    assert len(caught) == 1, caught
    assert "`lr_schedule` = 'warmup_cos' reaches no phase that trains: it fills " \
        "`phases.main`, which runs 0 epochs; the phases that train are 'layout' (lr_schedule " \
        "'none'), 'init' (lr_schedule 'cos')" in caught[0]
    assert '[[phases]] name = "layout"' in caught[0]


@pytest.mark.parametrize("spec", [
    {"lr_schedule": "warmup_cos", "epochs": 1},     # the main phase trains
    {},                                              # the default schedule: nothing set
    {"phases": [{"name": "layout", "lr_schedule": "warmup_cos"}]},  # the phase's own key
])
def test_tsne_lr_schedule_that_reaches_a_training_phase_does_not_warn(spec):
    recipe, caught = _shortcut_warnings({"recipe": "parametric_tsne", "layout_epochs": 2,
                                         "init_epochs": 1, **spec})
    assert not caught
    if "phases" in spec:  # the layout phase follows the schedule: the rate changes
        rates = [row["lr"] for row in recipe.routine_.history.rows if row["phase"] == "layout"]
        assert len(set(rates)) == 2, rates


def test_umap_lr_schedule_warns_only_when_its_main_phase_does_not_train():
    _, caught = _shortcut_warnings({"recipe": "parametric_umap", "layout_epochs": 2,
                                    "init_epochs": 1, "epochs": 0, "lr_schedule": "warmup_cos"})
    assert len(caught) == 1 and "it fills `phases.main`, which runs 0 epochs" in caught[0]
    assert "'layout' (lr_schedule 'cos')" in caught[0]


# ---------------------------------------------------------------- F7: a plugin model raising


def test_a_plugin_model_whose_forward_raises_is_named_by_slot_block_and_plugin(
        infoblocks_plugin):
    _register(infoblocks_plugin)
    recipe = recipe_from_dict({"recipe": "parametric_umap", "epochs": 1, "layout_epochs": 1,
                               "init_epochs": 1,
                               "models": {"layout": {"name": "fix17_raising_coords"}}})
    with pytest.raises(PluginError, match=re.escape(
            "in the forward of models.layout, model 'fix17_raising_coords' (plugin 'fix17'), "
            "module _Raising)")) as info:
        recipe.fit(_digits())
    assert isinstance(info.value, RuntimeError) and "fix17 model bug" in str(info.value)


def test_a_plugin_model_of_torch_modules_that_raises_is_not_called_built_in(infoblocks_plugin):
    """Only torch's own classes on the traceback, but the model block is the plugin's: a
    PluginError naming it, not a BlockError blaming the built-in loss."""
    _register(infoblocks_plugin)
    recipe = recipe_from_dict({
        "recipe": "routine", "arrays": ["data"], "output_model": "main",
        "models": {"main": {"name": "fix17_wrong_linear", "out_dim": 64}},
        "phases": [{"name": "fit", "epochs": 1, "sampler": {"name": "items", "batch_size": 50},
                    "loss": {"name": "position", "target": "data"}}]})
    with pytest.raises(BlockError) as info:
        recipe.fit(_digits())
    message = str(info.value)
    assert isinstance(info.value, PluginError), message
    assert "built-in" not in message
    assert "in the forward of models.main, model 'fix17_wrong_linear' (plugin 'fix17'), " \
        "module Sequential" in message, message

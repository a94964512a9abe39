"""``Cls.load(path)`` of a model another recipe saved names the recipe that saved it and its
loader (user13 U13-15: ``DII.load(<a Routine.save>)`` was a raw ``KeyError: 'weights'``,
``IMNN.load(<a MINE save>)`` a raw ``KeyError: 'recipe'``, ``RoutineRecipe.load(<a MINE save>)``
said "saved by 'no recipe'", ``DII.load(<a UMAP save>)`` printed the whole settings dict), and
``Recipe.load(path)`` on the base class loads any recipe's save with that recipe's ``load``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import infoblocks.recipes as recipes
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.recipe import Recipe


@pytest.fixture(scope="module")
def saves(tmp_path_factory):
    """Small saves of four recipes and of a README-tour ``Routine.save`` (one epoch or two:
    the layouts matter, not the fits)."""
    from infoblocks.blocks import Routine, TrainingPhase
    from infoblocks.plugins import get_registry

    root = tmp_path_factory.mktemp("saves")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 4))
    x = rng.normal(size=(200, 2))
    recipes.DII(epochs=1).fit(a, a[:, :2]).save(root / "dii")
    recipes.MINE(epochs=1, batch_size=50).fit(x, x + rng.normal(size=x.shape)).save(root / "mine")
    phase = {"name": "fit", "epochs": 1, "sampler": {"name": "items", "batch_size": 20},
             "loss": "position"}
    recipes.RoutineRecipe(models={"main": {"name": "mlp", "out_dim": 2}}, phases=[phase],
                          arrays=["data", "positions"]).fit(a, a[:, :2]).save(root / "routine")
    mlp = get_registry().build("model", {"name": "mlp", "in_dim": 4, "out_dim": 2})
    Routine(dataset={"data": a, "positions": a[:, :2]}, models={"main": mlp},
            phases=[TrainingPhase(**phase)], seed=0).train().save(root / "bare")
    return root


@pytest.mark.parametrize("loader, saved, saver", [
    ("DII", "mine", "MINE"), ("DII", "routine", "RoutineRecipe"),
    ("IMNN", "mine", "MINE"), ("IMNN", "dii", "DII"), ("InfoMax", "dii", "DII"),
    ("ParametricUMAP", "mine", "MINE"), ("ParametricTSNE", "dii", "DII"),
    ("SMILE", "mine", "MINE"),
    ("RoutineRecipe", "mine", "MINE"), ("MINE", "routine", "RoutineRecipe"),
])
def test_load_of_another_recipes_save_names_its_loader(saves, loader, saved, saver):
    with pytest.raises(ValidationError, match=rf"saved by {saver} .*load it with "
                                              rf"{saver}\.load\(path\)"):
        getattr(recipes, loader).load(saves / saved)


def test_load_by_the_mi_base_class_names_another_recipes_loader(saves):
    from infoblocks.recipes.mi import NeuralMIEstimator

    with pytest.raises(ValidationError, match=r"saved by DII .*load it with DII\.load"):
        NeuralMIEstimator.load(saves / "dii")


@pytest.mark.parametrize("loader", ["DII", "IMNN", "MINE", "RoutineRecipe", "ParametricUMAP"])
def test_load_of_a_bare_routine_save_says_routine_load(saves, loader):
    with pytest.raises(ValidationError, match=r"without a recipe's settings.*Routine\.load\(path\)"):
        getattr(recipes, loader).load(saves / "bare")


@pytest.mark.parametrize("saved, cls", [("dii", "DII"), ("mine", "MINE"),
                                        ("routine", "RoutineRecipe")])
def test_recipe_load_on_the_base_class_loads_any_recipe(saves, saved, cls):
    loaded = Recipe.load(saves / saved)
    assert type(loaded) is getattr(recipes, cls)
    assert loaded.routine_ is not None


def test_load_by_a_base_class_of_the_saver_works(saves):
    from infoblocks.recipes.mi import NeuralMIEstimator

    # the MI estimators' common base reads every MI save (as it did before)
    assert type(NeuralMIEstimator.load(saves / "mine")) is recipes.MINE


def test_load_of_a_recipe_that_is_not_installed_says_so(saves, tmp_path):
    moved = shutil.copytree(saves / "routine", tmp_path / "plugin_save")
    spec = json.loads((moved / "routine.json").read_text())
    spec["extra"]["recipe"]["recipe"] = "gone_plugin_recipe"  # as a plugin recipe would save
    (moved / "routine.json").write_text(json.dumps(spec))
    with pytest.raises(ValidationError, match="'gone_plugin_recipe'.*install the plugin"):
        recipes.DII.load(moved)


def test_recipe_load_dispatches_to_a_plugin_recipe_that_keeps_the_base_load(saves, tmp_path):
    pytest.importorskip("infoblocks_example_plugin")
    from infoblocks.plugins.registry import recipe_from_dict

    x = np.random.default_rng(0).normal(size=(60, 4))
    recipe_from_dict({"recipe": "pca_regression", "epochs": 1}).fit(x).save(tmp_path / "pca")
    loaded = Recipe.load(tmp_path / "pca")  # PCARegression does not define load
    assert type(loaded).name == "pca_regression" and loaded.routine_ is not None
    with pytest.raises(ValidationError, match=r"saved by PCARegression \(recipe "
                                              r"'pca_regression'\), not by DII"):
        recipes.DII.load(tmp_path / "pca")
    with pytest.raises(ValidationError, match=r"saved by DII .*load it with DII\.load"):
        type(loaded).load(saves / "dii")


def test_the_base_recipe_is_importable_where_the_recipes_are(saves):
    # author24-5: ``from infoblocks.recipes import Recipe`` failed ("no attribute 'Recipe'")
    # although README points at ``Recipe.load``; it is the core's base class, served lazily
    assert recipes.Recipe is Recipe
    assert type(recipes.Recipe.load(saves / "dii")).__name__ == "DII"

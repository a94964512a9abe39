"""The third-party plugin in tests/example_plugin (installed by the test command) adds a loss
and a recipe that work by name from Python and from a TOML config, with no core change."""

import json
import tomllib

import numpy as np
import pytest

from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.plugins.registry import get_registry, recipe_from_dict
from infoblocks.recipes.cli import main

pytest.importorskip("infoblocks_example_plugin",
                    reason="install it: pip install ./tests/example_plugin")


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 4)) * [3.0, 1.5, 0.5, 0.1]).astype(np.float32)


def test_the_plugin_is_found_through_its_entry_point():
    registry = get_registry()
    assert registry.entry("loss", "huber_position").plugin == "example"
    assert registry.entry("recipe", "pca_regression").plugin == "example"


def test_plugin_recipe_and_loss_from_python():
    recipe = get_registry().build("recipe", {"recipe": "pca_regression", "epochs": 40})
    recipe.fit(_data())
    # an MLP reproduces a linear projection closely: relative squared error below 2 %
    assert recipe.relative_error(_data()) < 0.02
    assert recipe.routine_.phases[0].loss.name == "huber_position"


def test_plugin_recipe_from_a_toml_config(tmp_path):
    config = tmp_path / "pca.toml"
    config.write_text('recipe = "pca_regression"\nepochs = 40\nloss = "position"\n')
    np.save(tmp_path / "x.npy", _data())
    assert main(["run", str(config), "--data", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["relative_error"] < 0.02
    assert (tmp_path / "out" / "model" / "weights.pt").exists()
    assert "loss = \"position\"" in (tmp_path / "out" / "recipe.toml").read_text()
    # the base Recipe's load: the plugin recipe back, fitted, with its settings and weights
    recipe_class = get_registry().get("recipe", "pca_regression")
    loaded = recipe_class.load(tmp_path / "out" / "model")
    assert type(loaded) is recipe_class and loaded.loss == "position" and loaded.epochs == 40
    with pytest.raises(ValidationError, match=r"This routine holds no data \(a loaded "
                                              r"routine keeps the weights"):
        loaded.relative_error(_data())  # its globals need the rows: the message says so
    refit = recipe_class(epochs=40, loss="position").fit(_data())  # the same fit in-process
    assert np.allclose(loaded.routine_.apply(_data()), refit.routine_.apply(_data()), atol=1e-5)
    with pytest.raises((ConfigError, ValidationError), match="pca_regression"):
        get_registry().get("recipe", "parametric_umap").load(tmp_path / "out" / "model")


def test_recipe_dict_roundtrip_and_unknown_key_path():
    recipe = recipe_from_dict({"recipe": "pca_regression", "hidden_dims": [8, 8]})
    assert recipe_from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()
    with pytest.raises(ConfigError, match=r"extra fields found \(epoch\)"):
        recipe_from_dict({"recipe": "pca_regression", "epoch": 3})
    with pytest.raises(ConfigError, match=r"hidden_dims\[1\]"):
        recipe_from_dict({"recipe": "pca_regression", "hidden_dims": [8, "wide"]})


def test_a_new_recipe_from_existing_blocks_runs_from_its_full_toml(tmp_path, capsys):
    """`infoblocks config pca_regression --full` prints every block by name; edited (another
    activation, the built-in position loss) and run from TOML, it trains the edited routine."""
    assert main(["config", "pca_regression", "--full"]) == 0
    text = capsys.readouterr().out
    assert "[globals.positions]" in text and "[models.main]" in text and "[[phases]]" in text
    text = text.replace('name = "huber_position"', 'name = "position"')
    text = text.replace('loss = "huber_position"', 'loss = "position"')
    config = tomllib.loads(text)
    config["models"]["main"]["activation"] = "tanh"
    recipe = recipe_from_dict(config)
    recipe.fit(_data())
    assert recipe.relative_error(_data()) < 0.02
    assert any(type(m).__name__ == "Tanh" for m in recipe.routine_.models["main"].modules())
    assert recipe.routine_.phases[0].loss.name == "position"


def test_the_docs_huber_loss_runs_in_umaps_init_phase():
    """docs/plugins.md: a plugin loss named in parametric UMAP's init phase reads the
    positions the init phase's item sampler gathers (the contract holds before the first
    step) and learns the spectral layout."""
    digits = get_registry().build("dataset", "digits").load()
    x = digits["data"][:400]
    text = ('recipe = "parametric_umap"\nepochs = 1\ninit_epochs = 40\nlayout_epochs = 0\n'
            '[[phases]]\nname = "init"\nloss = { name = "huber_position", delta = 0.5 }\n')
    recipe = recipe_from_dict(tomllib.loads(text))
    recipe.fit(x)
    init = [row for row in recipe.history_ if row.get("phase") == "init"]
    assert recipe.routine_.phases[0].loss.name == "huber_position"
    assert init[-1]["huber"] < 0.5 * init[0]["huber"]


def test_the_plugin_recipes_model_slot_takes_any_model_with_sizes():
    # the recipe passes in_dim and out_dim as context, so a model named in the slot alone gets
    # both (the documented pattern; with out_dim in the default spec it was "required")
    recipe = recipe_from_dict({"recipe": "pca_regression", "epochs": 40,
                               "models": {"main": {"name": "standardized_mlp",
                                                   "hidden_dims": [32]}}}).fit(_data())
    assert recipe.routine_.apply(_data()).shape == (len(_data()), 2)
    assert recipe.relative_error(_data()) < 0.02  # measured 2.7e-4 (the default mlp: 2.2e-4)

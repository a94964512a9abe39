"""The example plugin's embedding blocks, used by name inside the built-in parametric UMAP from
a TOML config, with no subclass: an affinity (``gaussian_membership`` in place of
``connectivity_rescale``) and an encoder model (``residual_mlp`` as ``models.main``)."""

import json
import tomllib

import numpy as np
import pytest

from infoblocks.blocks.embedding_quality import trustworthiness
from infoblocks.plugins.registry import get_registry, recipe_from_dict
from infoblocks.recipes.cli import main

plugin = pytest.importorskip("infoblocks_example_plugin.embedding",
                             reason="install it: pip install ./tests/example_plugin")

CONFIG = """
recipe = "parametric_umap"
epochs = 60
layout_epochs = 50

[globals.graph]
transforms = [{ name = "gaussian_membership", bandwidth = 1.0 }, { name = "symmetrize" }]

[models.main]
name = "residual_mlp"
width = 64
"""


@pytest.fixture(scope="module")
def digits():
    x = get_registry().build("dataset", "digits").load()["data"].astype(np.float32)
    return x[:1000]  # a subset and a short layout keep the fit near 5 s on one thread


def test_the_blocks_are_registered_by_the_plugin():
    registry = get_registry()
    assert registry.entry("transform", "gaussian_membership").plugin == "example"
    assert registry.entry("model", "residual_mlp").plugin == "example"
    from infoblocks.plugins.testing import check_block

    check_block(plugin.GaussianMembership)
    check_block(plugin.ResidualMLP, {"in_dim": 5, "out_dim": 2})


def test_affinity_and_encoder_by_name_from_toml(digits):
    affinity, encoder = plugin.GaussianMembership.calls, plugin.ResidualMLP.calls
    recipe = recipe_from_dict(tomllib.loads(CONFIG))
    spec = recipe.routine_spec()
    assert spec["globals"]["graph"]["relation"]["name"] == "neighbor_pdist"  # kept
    assert spec["models"]["main"] == {"name": "residual_mlp", "width": 64}  # replaced whole
    recipe.fit(digits)
    assert plugin.GaussianMembership.calls > affinity  # the graph was built with it
    assert plugin.ResidualMLP.calls > encoder  # the network that was trained
    routine = recipe.routine_
    assert type(routine.global_relations["graph"].transforms[0]) is plugin.GaussianMembership
    assert routine.model_specs["main"]["in_dim"] == 64  # filled from the data
    # measured 0.960 (seed 0) / 0.966 (seed 1); the built-in graph and MLP: 0.968 / 0.974
    assert trustworthiness(digits, recipe.embedding_, k=15) >= 0.94


def test_the_same_config_through_the_cli(digits, tmp_path):
    from infoblocks.recipes.umap import ParametricUMAP

    config = tmp_path / "umap.toml"
    config.write_text(CONFIG)
    np.save(tmp_path / "x.npy", digits)
    calls = plugin.ResidualMLP.calls
    assert main(["run", str(config), "--data", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["trustworthiness_15"] >= 0.94 and plugin.ResidualMLP.calls > calls
    written = tomllib.loads((tmp_path / "out" / "recipe.toml").read_text())
    assert written["globals"]["graph"]["transforms"][0]["name"] == "gaussian_membership"
    assert written["models"]["main"]["name"] == "residual_mlp"
    loaded = ParametricUMAP.load(tmp_path / "out" / "model")  # rebuilt through the registry
    embedding = np.load(tmp_path / "out" / "embedding.npy")
    assert np.allclose(loaded.embedding_, embedding)  # the training positions travel along
    # new points (here the first 20 training rows again) are placed among those positions
    moved = np.linalg.norm(loaded.transform(digits[:20]) - embedding[:20], axis=1)
    assert np.median(moved) < 0.5 * embedding.std()

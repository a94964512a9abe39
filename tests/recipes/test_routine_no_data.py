"""A ``routine`` whose samplers draw their own data trains with no arrays: ``fit()`` and
``infoblocks run`` without ``--data`` (author11: it needed a dummy array); a routine whose
sampler reads the dataset says which one when it is given none."""

import json
import tomllib

import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.recipes.cli import main

#: samplers drawing the imnn tutorial problem themselves (conftest.py, own_gaussian_sims)
CONFIG = """
recipe = "routine"
arrays = []
output_model = ""

[models.main]
name = "summary_mlp"
hidden_dims = [16]
whiten = false
out_dim = 2

[[phases]]
name = "fit"
epochs = 15
learning_rate = 0.03
sampler = { name = "test_own_gaussian_sims", n_s = 200, n_d = 200 }
loss = "fisher"

[phases.validation]
sampler = { name = "test_own_gaussian_sims", n_s = 200, n_d = 200, seed = 1 }
loss = "fisher"
metric = "det_F"
mode = "max"
"""


def test_a_routine_of_self_drawing_samplers_fits_without_arrays(own_gaussian_sims):
    recipe = recipe_from_dict(tomllib.loads(CONFIG))
    assert recipe.draws_own_simulations()
    recipe.fit()
    assert recipe.routine_.dataset is None
    first = next(m for m in recipe.routine_.models["main"].modules()
                 if isinstance(m, torch.nn.Linear))
    assert first.in_features == 10  # the size of one simulation (simulation_shape)
    # the same training as with a dummy array (what author11 had to pass)
    dummy = recipe_from_dict({**tomllib.loads(CONFIG), "arrays": ["data"]})
    dummy.fit(np.zeros((5, 10), np.float32))
    assert recipe.history_ == dummy.history_
    # it trained on its own draws: det F rose (0.12 -> 0.62 in 15 epochs; exact 50)
    assert recipe.history_[-1]["val_det_F"] > 3 * recipe.history_[0]["val_det_F"]


def test_infoblocks_run_needs_no_data_for_self_drawing_samplers(own_gaussian_sims, tmp_path):
    (tmp_path / "own.toml").write_text(CONFIG)
    assert main(["run", str(tmp_path / "own.toml"), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["epochs_run"] == 15 and summary["outputs"] is None
    assert (tmp_path / "out" / "model").is_dir()


def test_a_routine_that_reads_the_dataset_names_its_sampler_when_given_no_arrays(
        own_gaussian_sims, tmp_path, capsys):
    config = tomllib.loads(CONFIG)
    config["phases"][0]["validation"]["sampler"] = {"name": "items"}
    recipe = recipe_from_dict(config)
    assert not recipe.draws_own_simulations()
    with pytest.raises(ValidationError, match=r"routine.fit was given no arrays, but "
                                              r"phases.fit.validation.sampler 'items' reads the "
                                              r"dataset: pass the arrays"):
        recipe.fit()
    (tmp_path / "items.toml").write_text(
        CONFIG.replace('arrays = []', 'arrays = ["data"]')
        .replace('sampler = { name = "test_own_gaussian_sims", n_s = 200, n_d = 200 }',
                 'sampler = "items"'))
    assert main(["run", str(tmp_path / "items.toml"), "--out", str(tmp_path / "out")]) != 0
    assert "give its input with --data" in capsys.readouterr().err


def test_globals_need_arrays(own_gaussian_sims):
    config = tomllib.loads(CONFIG)
    config["globals"] = {"graph": {"input": "data", "relation": "pdist"}}
    with pytest.raises(ConfigError, match=r"\[globals\] \['graph'\] are computed from the "
                                          r"arrays, and fit was given none"):
        recipe_from_dict(config).fit()

"""The example plugin's IMNN summary network, used by name inside the built-in ``imnn``
recipe from a TOML config (no subclass, no override), on the imnn tutorial problem
(10 Gaussian points, θ = (μ, Σ), fiducial (0, 1), exact det F = 50)."""

from __future__ import annotations

import json
import time
import tomllib

import pytest

from infoblocks.plugins.registry import get_registry, recipe_from_dict
from infoblocks.recipes.imnn import DEMO_EXACT_DET_F, gaussian_simulations, oracle_det_F

pytest.importorskip("infoblocks_example_plugin",
                    reason="install it: pip install ./tests/example_plugin")

CONFIG = """
recipe = "imnn"
theta_fid = [0.0, 1.0]
n_summaries = 2
learning_rate = 0.001
epochs = 150
min_epochs = 50
patience = 20

[models.main]
name = "example_moment_summaries"
hidden = 16
"""


def test_summary_network_from_the_plugin_by_name():
    from infoblocks_example_plugin.fisher import MomentSummaries

    assert get_registry().entry("model", "example_moment_summaries").plugin == "example"
    fid, der = gaussian_simulations(1000, seed=0)
    val_fid, val_der = gaussian_simulations(1000, seed=1)
    imnn = recipe_from_dict(tomllib.loads(CONFIG))
    assert imnn.routine_spec()["models"]["main"] == {"name": "example_moment_summaries",
                                                     "hidden": 16}
    builds, forwards = MomentSummaries.builds, MomentSummaries.forwards
    start = time.perf_counter()
    imnn.fit(fid, der, validation_fiducial=val_fid, validation_derivative=val_der)
    seconds = time.perf_counter() - start
    assert MomentSummaries.builds == builds + 1 and MomentSummaries.forwards > forwards + 50
    network = imnn.routine_.models["main"]
    assert type(network).__name__ == "MomentNetwork" and bool(network.whitened)
    assert network.hidden[0].in_features == 2 and network.out.out_features == 2
    # moments (mean d, mean d²) are sufficient here and pass linearly at the start: the best
    # validation det F is what the exact statistics score on these 1000 simulations (49.45
    # measured, exact 50), in < 2 s
    best = imnn.best_val_det_F_
    assert best >= 0.9 * DEMO_EXACT_DET_F, best
    assert best >= 0.95 * oracle_det_F(val_fid, val_der), best
    assert seconds < 30, seconds


def test_a_sampler_that_draws_its_own_simulations_needs_no_data(own_gaussian_sims, tmp_path,
                                                                capsys):
    # author7 A7-5: the docs said "fit must then be called without data", but fit() asked for
    # simulations and `infoblocks run` for --data; now both run on the sampler's own draws
    # (the tutorial problem, drawn with its own formulas: conftest.py, own_gaussian_sims)
    from infoblocks.blocks.errors import ConfigError
    from infoblocks.recipes.cli import main

    config = ('recipe = "imnn"\ntheta_fid = [0.0, 1.0]\nepochs = 30\nlearning_rate = 0.003\n'
              'lr_schedule = "none"\nn_validation = 2000\nvalidation_every = 5\n'
              '[[phases]]\nname = "fit"\nsampler = "test_own_gaussian_sims"\n')
    imnn = recipe_from_dict(tomllib.loads(config))
    assert imnn.draws_own_simulations()
    # the default validation sampler simulates from fit's data: it must be named too
    with pytest.raises(ConfigError, match=r"validation.sampler: sampler 'simulations' .*"
                                          r"given nothing.*draws its own here too"):
        imnn.fit()
    config += 'validation = { sampler = { name = "test_own_gaussian_sims", seed = 1 } }\n'
    imnn = recipe_from_dict(tomllib.loads(config))
    imnn.fit()
    assert imnn.best_val_det_F_ > 0.5 * DEMO_EXACT_DET_F  # exact 50; it trained on its draws
    (tmp_path / "own.toml").write_text(config)
    assert main(["run", str(tmp_path / "own.toml"), "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["best_val_det_F"] > 20
    (tmp_path / "umap.toml").write_text('recipe = "parametric_umap"\n')  # a recipe that needs data
    assert main(["run", str(tmp_path / "umap.toml"), "--out", str(tmp_path / "out2")]) != 0
    assert "give its input with --data" in capsys.readouterr().err

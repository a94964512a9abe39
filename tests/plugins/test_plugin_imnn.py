"""The example plugin's IMNN summary network, used by name inside the built-in ``imnn``
recipe from a TOML config (no subclass, no override), on the imnn tutorial problem
(10 Gaussian points, θ = (μ, Σ), fiducial (0, 1), exact det F = 50)."""

from __future__ import annotations

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

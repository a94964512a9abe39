"""fix23c: author24's findings in the MI recipes and InfoMax (a torch-mist user's slots)."""
import warnings

import numpy as np
import pytest

from infoblocks.blocks.errors import ConfigError
from infoblocks.plugins.registry import recipe_from_dict


def gauss(rho, n, seed=0, d=2):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, d))
    y = rho * x + np.sqrt(1 - rho ** 2) * r.normal(size=(n, d))
    return x.astype(np.float32), y.astype(np.float32)


def _fit(cfg, *data):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = recipe_from_dict(cfg).fit(*data)
    return m, [str(q.message) for q in w]


# ---------------------------------------------------------------- author24-1


def test_a_row_bound_beside_explicit_negatives_is_refused_naming_both():
    # author24-1: infonce_loss (rows = True) under marginal_pairs scored the in-batch pairs
    # and dropped the sampler's x_marginal / y_marginal unread: marginal_factor (a plugin
    # sampler's k = 1 or 8) gave the same bits, no message
    x, y = gauss(0.5, 400)
    cfg = {"recipe": "mine", "hidden_dims": [8], "batch_size": 50, "epochs": 2, "seed": 0,
           "phases": [{"name": "train", "loss": "infonce_loss"}]}
    with pytest.raises(ConfigError) as info:
        recipe_from_dict(cfg).fit(x, y)
    msg = str(info.value)
    assert msg.startswith("mine.phases.train: the bound 'infonce_loss' has `rows = True`")
    assert "`negatives` = 'marginal_pairs'" in msg and 'negatives = "all_pairs"' in msg
    # the fix it names runs: in-batch negatives for the row bound
    m, _ = _fit({**cfg, "negatives": "all_pairs"}, x, y)
    assert np.isfinite(float(m.estimate()))


def test_infonce_with_marginal_pairs_and_infomax_with_explicit_negatives_are_refused():
    x, y = gauss(0.5, 300)
    with pytest.raises(ConfigError, match=r"^infonce\.phases\.train: the bound 'infonce_loss'"):
        recipe_from_dict({"recipe": "infonce", "hidden_dims": [8], "epochs": 1,
                          "negatives": "marginal_pairs"}).fit(x, y)
    with pytest.raises(ConfigError, match=r"^infomax\.phases\.train: the bound 'infonce_loss' "
                                          r".*`negatives` = 'marginal_pairs' yields"):
        recipe_from_dict({"recipe": "infomax", "n_components": 1, "epochs": 1,
                          "bound": "infonce", "negatives": "marginal_pairs"}).fit(x)

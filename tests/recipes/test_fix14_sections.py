"""Section entries that would be silently ignored or explained by the wrong rule (user13
U13-10): a model nothing reads, a misspelt global or model given as a partial table, a
misspelt key inside a DII evaluation block (refused at fit, not after training)."""

from __future__ import annotations

import numpy as np
import pytest

from infoblocks.blocks.errors import ConfigError
from infoblocks.recipes import DII, MINE, ParametricUMAP

QUICK_UMAP = dict(n_neighbors=5, layout_epochs=2, init_epochs=1, epochs=1)


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    return x, x + rng.normal(size=x.shape)


def test_a_model_nothing_reads_is_refused_naming_the_recipes_models(xy):
    # was: built beside the default critic, never trained, the estimate the default's
    with pytest.raises(ConfigError, match=r"nothing reads model 'critc'.*models are \['main'\]"):
        MINE(epochs=1, batch_size=50,
             models={"critc": {"name": "joint_critic", "hidden_dims": [8]}}).fit(*xy)


def test_an_unread_model_with_a_close_name_gets_the_match():
    a = np.random.default_rng(0).normal(size=(40, 4))
    with pytest.raises(ConfigError, match="Did you mean 'weights'"):
        DII(epochs=1, models={"weigths": {"name": "feature_weights"}}).fit(a, a[:, :2])


def test_an_added_model_a_loss_names_is_accepted(xy):
    # the critic replaced by a model of another name that the loss is pointed at
    mine = MINE(epochs=1, batch_size=50, models={"other": {"name": "joint_critic"}},
                phases=[{"name": "train", "loss": {"critic": "other"}}])
    assert "other" in mine.routine_spec()["models"]
    mine.build_phases()  # no ConfigError: the loss reads it


def test_a_misspelt_global_given_as_a_partial_table_gets_the_close_match():
    # was: "globals.grph.relation: a relation given as a table needs a 'name' key"
    x = np.random.default_rng(0).normal(size=(60, 4))
    with pytest.raises(ConfigError, match=r"no global 'grph'.*graph, positions.*did you mean "
                                          r"'graph'\? A new one needs a full spec"):
        ParametricUMAP(**QUICK_UMAP, globals={"grph": {"relation": {"metric": "cosine"}}}).fit(x)


def test_a_misspelt_model_given_as_a_partial_table_gets_the_close_match(xy):
    with pytest.raises(ConfigError, match=r"no model 'mian'.*did you mean 'main'"):
        MINE(epochs=1, models={"mian": {"hidden_dims": [8]}}).routine_spec()


def test_a_new_global_with_a_full_spec_is_not_a_misspelling():
    umap = ParametricUMAP(**QUICK_UMAP, globals={"grph": {"relation": {"name": "neighbor_pdist",
                                                                         "n_neighbors": 5}}})
    assert "grph" in umap.routine_spec()["globals"]


def test_a_misspelt_key_of_a_dii_evaluation_block_is_refused_at_fit(monkeypatch):
    # was: the whole fit ran, and final_dii() / select_features() refused it afterwards
    a = np.random.default_rng(0).normal(size=(40, 4))
    trained = []
    monkeypatch.setattr(DII, "train_routine", lambda self, *args, **kw: trained.append(1))
    with pytest.raises(ConfigError, match="Did you mean 'lambda_factor'"):
        DII(epochs=3, evaluation={"softmax": {"lambda_factr": 3.0}}).fit(a, a[:, :2])
    assert not trained

"""A warm fit after ``set_params`` of a setting that the fitted models and phases do not show
(fix28w): before, only the models / phases data were compared, so such a change was accepted
and ignored while ``get_params()`` reported it — InfoMax's ``scaling`` kept the first fit's
``mean_`` / ``scale_``, a ``test_fraction`` or ``seed`` kept the split, MINE's
``standardize`` the first fit's ranks, UMAP / t-SNE's ``n_neighbors`` / ``perplexity`` the
graph, DII's and the routine's ``seed`` the generator, a phase UMAP / t-SNE's warm fit does not
run its old epochs.  Each is now a ConfigError naming it (then / now) and the fix, and what a warm
fit does take still runs: ``epochs`` / ``learning_rate`` and the settings the recipe's
``warm_fit_reads`` names (MI's ``n_subsamples``, DII's ``dii_per_epoch``, the routine's
``output_model``, UMAP's ``transform_epochs``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infoblocks.blocks.errors import ConfigError
from infoblocks.plugins.registry import recipe_from_dict
from infoblocks.recipes.dii import DII
from infoblocks.recipes.imnn import IMNN, gaussian_simulations
from infoblocks.recipes.infomax import InfoMax
from infoblocks.recipes.mi import MINE
from infoblocks.recipes.tsne import ParametricTSNE
from infoblocks.recipes.umap import ParametricUMAP

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 6)).astype(np.float32)
X[:, 0] *= 10
A = RNG.normal(size=(200, 2)).astype(np.float32)
B = (A + RNG.normal(size=A.shape)).astype(np.float32)
#: small embeddings: a few epochs of each phase
UMAP_SMALL = dict(epochs=2, init_epochs=1, layout_epochs=1, batches_per_epoch=2, pca_dims=None,
                  n_neighbors=10, seed=0, warm_start=True)
TSNE_SMALL = dict(init_epochs=2, layout_epochs=2, layout_exaggeration_epochs=1, pca_dims=None,
                  perplexity=5.0, seed=0, warm_start=True)


def fit(model, *data, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (short fits: convergence warnings)
        return model.fit(*data, **options)


def refused(model, *data, match, **options):
    with pytest.raises(ConfigError, match=match):
        fit(model, *data, **options)


FIX = r".*warm_start=False for a new fit"


# ---------------------------------------------------------------------------- InfoMax


@pytest.mark.parametrize("key, value, then", [("scaling", "features", "'global'"),
                                              ("test_fraction", 0.3, "0.1"),
                                              ("n_init", 2, "1")])
def test_infomax_refuses_a_setting_its_warm_fit_would_ignore(key, value, then):
    model = fit(InfoMax(n_components=2, epochs=2, seed=0, warm_start=True), X)
    scale = model.scale_.copy()
    model.set_params(**{key: value})
    refused(model, X, match=rf"but `{key}` changed since the last fit.*`{key}`: {then} then, "
                            rf"{value!r} now, of which a warm fit keeps what the last fit made"
                            + FIX)
    assert len(model.history_) == 2 and np.array_equal(model.scale_, scale)  # (nothing ran)
    model.set_params(**{key: InfoMax().get_params()[key]})  # set back: continues
    fit(model, X)
    assert len(model.history_) == 4


def test_infomax_warm_fit_takes_a_new_epochs_with_a_changed_setting_refused_beside_it():
    model = fit(InfoMax(n_components=2, epochs=2, seed=0, warm_start=True), X)
    model.set_params(epochs=3, scaling="none")
    refused(model, X, match=r"but `scaling` changed.*it takes a changed `epochs` or "
                            r"`learning_rate` only")
    model.set_params(scaling="global")
    fit(model, X)
    assert len(model.history_) == 2 + 3


# ---------------------------------------------------------------------------- MI


@pytest.mark.parametrize("key, value", [("standardize", True), ("test_fraction", 0.3),
                                        ("max_pairs", 500)])
def test_mine_refuses_a_setting_its_warm_fit_would_ignore(key, value):
    model = fit(MINE(epochs=2, seed=0, warm_start=True), A, B)
    model.set_params(**{key: value})
    refused(model, A, B, match=rf"mine.fit\(warm_start=True\).*`{key}`: .* then, {value!r} now"
                               r".*it takes a changed `epochs`, `learning_rate`, `n_subsamples` "
                               r"or `split_at` only" + FIX)


def test_mine_warm_fit_takes_a_new_n_subsamples():
    model = fit(MINE(epochs=2, seed=0, warm_start=True, n_subsamples=50), A, B)
    model.set_params(n_subsamples=20, epochs=1)
    fit(model, A, B)
    assert len(model.history_) == 2 + 1
    interval = model.estimate(ci=0.9)
    expected = model.scores_.interval(model.bound_, level=0.9, n_subsamples=20, seed=0)
    assert (interval.low, interval.high) == pytest.approx(expected)


# ---------------------------------------------------------------------------- DII


def test_dii_refuses_a_new_seed_and_takes_a_new_dii_per_epoch():
    a = RNG.normal(size=(120, 4)).astype(np.float32)
    b = a[:, :2] * 2
    model = fit(DII(epochs=2, batches_per_epoch=2, seed=0, warm_start=True), a, b)
    model.set_params(seed=5)
    refused(model, a, b, match=r"`seed`: 0 then, 5 now, of which a warm fit keeps" + FIX)
    model.set_params(seed=0, dii_per_epoch="last_batch", epochs=1)  # read again: taken
    fit(model, a, b)
    rows = model.routine_.history.rows
    assert len(rows) == 2 + 1
    assert model.dii_history_[1:] == pytest.approx([row["dii_last_batch"] for row in rows])
    assert not np.allclose([row["dii"] for row in rows], model.dii_history_[1:])


# ---------------------------------------------------------------------------- IMNN


def test_imnn_warm_fit_takes_what_it_rebuilds_and_still_refuses_a_new_width():
    """IMNN rebuilds its phases and statistics block from the settings on every fit: a new
    ``chunk_size`` (both) and ``epochs`` are taken; its network is continued, so a new
    ``n_summaries`` (a setting the sections do not show) is refused before training."""
    from infoblocks.blocks.errors import ValidationError

    fid, der = gaussian_simulations(200, seed=0)
    options = dict(theta_fid=(0, 1), hidden_dims=(16,), min_epochs=0, restore_best=False)
    model = fit(IMNN(n_summaries=2, epochs=2, warm_start=True, **options), fid, der)
    model.set_params(n_summaries=3)
    with pytest.raises((ConfigError, ValidationError), match=r"n_summaries = 3|`n_summaries`"):
        fit(model)
    assert model.F_.shape == (2, 2)
    model.set_params(n_summaries=2, epochs=3, chunk_size=50)
    fit(model)  # the same simulations
    assert model.n_epochs_ == 2 + 3 and model.routine_.phases[0].loss.chunk_size == 50


# ---------------------------------------------------------------------------- UMAP / t-SNE


def test_umap_refuses_graph_settings_on_the_same_data_and_takes_them_on_other_data():
    model = fit(ParametricUMAP(**UMAP_SMALL), X)
    graph = model.routine_.compute_global_relations()["graph"]
    model.set_params(n_neighbors=5)
    refused(model, X, match=r"`n_neighbors`: 10 then, 5 now, of which a warm fit keeps" + FIX)
    # a phase the warm fit does not run (it continues `main`): its change went nowhere
    model.set_params(n_neighbors=10, layout_epochs=3)
    refused(model, X, match=r"phases\.layout\.epochs: 1 then, 3 now, a phase this warm fit "
                            r"does not run: it continues 'main'")
    # other data of the same shape: a new graph and layout, every phase, from the network
    model.set_params(n_neighbors=5, layout_epochs=1)
    fit(model, X[::-1].copy())
    assert model.routine_.compute_global_relations()["graph"] is not graph
    assert model.routine_.global_relations["graph"].describe()["relation"]["n_neighbors"] == 5


def test_umap_warm_fit_takes_its_epochs_and_the_placement_settings():
    model = fit(ParametricUMAP(**UMAP_SMALL, transform_epochs=2), X)
    model.set_params(epochs=1, transform_epochs=5)
    fit(model, X)
    assert [row["phase"] for row in model.history_].count("main") == 2 + 1
    assert model._placement().epochs == 5


def test_tsne_refuses_a_new_perplexity_on_the_same_data_and_takes_the_continued_epochs():
    model = fit(ParametricTSNE(**TSNE_SMALL), X)
    model.set_params(perplexity=8.0)
    refused(model, X, match=r"parametric_tsne.*`perplexity`: 5\.0 then, 8\.0 now" + FIX)
    model.set_params(perplexity=5.0, init_epochs=3)  # the phase it continues: `init`
    fit(model, X)
    assert [row["phase"] for row in model.history_].count("init") == 2 + 3


# ---------------------------------------------------------------------------- routine


def _routine(epochs=2):
    return {
        "recipe": "routine", "arrays": ["data"], "output_model": "main", "seed": 0,
        "globals": {"positions": {"input": "data", "transforms": [
            {"name": "pca_init", "n_components": 2}]}},
        "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [8]}},
        "phases": [{"name": "regress", "epochs": epochs, "learning_rate": 0.01,
                    "sampler": {"name": "items", "batch_size": 100, "gather": ["positions"]},
                    "loss": {"name": "position", "target": "positions"}}]}


def test_routine_refuses_a_new_seed_or_global_and_takes_new_epochs():
    model = fit(recipe_from_dict(_routine()), X)
    model.set_params(seed=3)
    refused(model, X, warm_start=True, match=r"routine.fit\(warm_start=True\).*`seed`: 0 then, "
                                             r"3 now.*`output_model` only" + FIX)
    model.set_params(seed=0, globals={"positions": {"input": "data", "transforms": [
        {"name": "pca_init", "n_components": 2, "scale": 3.0}]}})
    refused(model, X, warm_start=True, match=r"`globals`: .* then, .* now")
    spec = _routine(epochs=3)
    model.set_params(globals=spec["globals"], phases=spec["phases"], output_model="")
    fit(model, X, warm_start=True)
    assert len(model.history_) == 2 + 3 and model.output_model == ""

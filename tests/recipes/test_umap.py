"""ParametricUMAP: accuracy on the shipped digits, the scikit-learn API, data form, errors."""

import json

import numpy as np
import pytest
import torch

from infoblocks.blocks.embedding_quality import knn_accuracy, trustworthiness
from infoblocks.blocks.errors import (ConfigError, NotFittedError, RegistryError,
                                      ValidationError)
from infoblocks.plugins.registry import get_registry, recipe_from_dict
from infoblocks.recipes.umap import ParametricUMAP


@pytest.fixture(scope="module")
def digits():
    d = get_registry().build("dataset", "digits").load()
    return d["data"], d["target"]


@pytest.fixture(scope="module")
def fitted(digits):
    x, _ = digits
    return ParametricUMAP().fit(x)


def test_digits_quality_with_defaults(fitted, digits):
    x, labels = digits
    y = fitted.embedding_
    assert y.shape == (1797, 2) and np.isfinite(y).all()
    # umap-learn reaches 0.987 / 0.986 here; the issue asks for >= 0.975 / >= 0.97
    assert trustworthiness(x, y, k=15) >= 0.975
    assert knn_accuracy(y, labels, k=10) >= 0.97
    assert [r["phase"] for r in fitted.history_].count("main") == fitted.epochs
    assert np.allclose(fitted.transform(x), y, atol=1e-5)


def test_transform_places_unseen_points_near_their_class(digits):
    x, labels = digits
    rng = np.random.default_rng(0)
    held_out = rng.permutation(len(x))[:300]
    train = np.setdiff1d(np.arange(len(x)), held_out)
    model = ParametricUMAP(epochs=80, learning_rate=1e-2, seed=1).fit(x[train])
    new = model.transform(x[held_out])
    # classify each unseen point by its 10 nearest training points in the embedding
    d = ((new[:, None, :] - model.embedding_[None, :, :]) ** 2).sum(-1)
    votes = labels[train][np.argsort(d, 1)[:, :10]]
    predicted = np.array([np.bincount(v, minlength=10).argmax() for v in votes])
    assert (predicted == labels[held_out]).mean() >= 0.93  # umap-learn's transform: ~0.95


def test_save_load_round_trip(fitted, digits, tmp_path):
    x, _ = digits
    fitted.save(tmp_path / "m")
    loaded = ParametricUMAP.load(tmp_path / "m")
    assert loaded.to_dict() == fitted.to_dict()
    assert np.allclose(loaded.transform(x[:50]), fitted.transform(x[:50]), atol=1e-6)
    assert len(loaded.history_) == len(fitted.history_)
    saved = json.loads((tmp_path / "m" / "routine.json").read_text())
    assert saved["extra"]["recipe"]["recipe"] == "parametric_umap"


def test_plot_writes_png(fitted, digits, tmp_path):
    _, labels = digits
    path = fitted.plot(tmp_path / "e.png", labels=labels)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recipe_is_data_and_phases_are_overridable(tmp_path):
    recipe = ParametricUMAP(n_neighbors=10, hidden_dims=(32, 16),
                            phases=[{"name": "main", "epochs": 3,
                                     "sampler": {"neg_sampling_rate": 2}}])
    again = ParametricUMAP.from_toml(_write(recipe.to_toml(), tmp_path / "u.toml"))
    assert again.to_dict() == recipe.to_dict()
    assert recipe_from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()
    specs = {s["name"]: s for s in again.phase_specs()}
    assert list(specs) == ["init", "main"]
    assert specs["main"]["epochs"] == 3
    assert specs["main"]["sampler"]["neg_sampling_rate"] == 2
    assert specs["main"]["sampler"]["batch_size"] == recipe.batch_size  # merged, not replaced
    routine = again.build(np.random.default_rng(0).normal(size=(60, 5)))
    assert [p.name for p in routine.phases] == ["init", "main"]
    assert routine.phases[1].sampler.neg_sampling_rate == 2


def test_layout_phase_is_present_and_overridable(tmp_path, digits):
    x, labels = digits
    x = x / 16.0
    # the "quality" preset, shortened: 1,000 layout steps, 400 init steps, no main phase
    recipe = ParametricUMAP.preset("quality", n_neighbors=10, layout_epochs=50, init_epochs=100,
                                   layout_batch_size=2048, phases=[{"name": "layout",
                                                                    "epochs": 100}])
    specs = {s["name"]: s for s in recipe.phase_specs()}
    assert list(specs) == ["layout", "init", "main"]
    assert specs["layout"]["epochs"] == 100 and specs["layout"]["trainable"] == ["layout"]
    assert specs["layout"]["sampler"]["negatives"] == "uniform"
    assert specs["init"]["loss"]["target_model"] == "layout"
    again = ParametricUMAP.from_toml(_write(recipe.to_toml(), tmp_path / "u.toml"))
    assert again.to_dict() == recipe.to_dict()
    model = recipe.fit(x)
    phases = [r["phase"] for r in model.history_]
    assert phases.count("layout") == 100 and phases.count("init") == 100
    layout = [r["loss"] for r in model.history_ if r["phase"] == "layout"]
    assert layout[-1] < 0.5 * layout[0]  # measured: 2.67 -> 0.80
    y = model.embedding_
    # measured 0.967 / 0.970 (the full preset: 0.982 / 0.984; defaults 0.979 / 0.986)
    assert trustworthiness(x, y, k=15) >= 0.955 and knn_accuracy(y, labels, k=10) >= 0.95
    model.save(tmp_path / "m")  # the free coordinates and the PCA front end travel along
    loaded = ParametricUMAP.load(tmp_path / "m")
    assert np.allclose(loaded.transform(x[:50]), y[:50], atol=1e-5)
    with pytest.raises(ValidationError, match="layout_epochs"):
        ParametricUMAP(layout_epochs=5, init="none")
    with pytest.raises(ConfigError, match="quality"):
        ParametricUMAP.preset("fast")
    assert ParametricUMAP.preset("quality", seed=3).seed == 3


def _write(text, path):
    path.write_text(text)
    return path


def test_custom_encoder_module(tmp_path):
    x = np.random.default_rng(0).normal(size=(120, 6)).astype(np.float32)
    encoder = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    model = ParametricUMAP(n_neighbors=5, encoder=encoder, epochs=2, init_epochs=1).fit(x)
    assert model.embedding_.shape == (120, 2)
    assert "encoder" not in model.to_dict()  # a live module is not data
    model.save(tmp_path / "m")
    with pytest.raises(ValidationError, match="custom torch module"):
        ParametricUMAP.load(tmp_path / "m")
    fresh = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    loaded = ParametricUMAP.load(tmp_path / "m", encoder=fresh)
    assert np.allclose(loaded.transform(x), model.transform(x), atol=1e-6)


def test_demo_quick_and_run(tmp_path):
    out = ParametricUMAP.demo(tmp_path, quick=True)
    assert out["trustworthiness_15"] > 0.95 and (tmp_path / "umap_digits.png").exists()
    x = np.random.default_rng(0).normal(size=(80, 4))
    labels = (x[:, 0] > 0).astype(int)
    summary = ParametricUMAP(n_neighbors=5, epochs=3, init_epochs=1).run([x, labels],
                                                                         tmp_path / "run")
    assert summary["n_items"] == 80 and 0 <= summary["knn_accuracy_10"] <= 1
    assert (tmp_path / "run" / "embedding.npy").exists()
    json.dumps(summary)  # JSON-able for the CLI


def test_bad_inputs_get_clear_errors(fitted):
    with pytest.raises(ValidationError, match="non-finite"):
        ParametricUMAP().fit(np.array([[0.0, np.nan]] * 30))
    with pytest.raises(ValidationError, match="reshape"):
        ParametricUMAP().fit(np.zeros(30))
    with pytest.raises(ValidationError, match="at least 16"):
        ParametricUMAP().fit(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ValidationError, match="min_dist"):
        ParametricUMAP(min_dist=2.0)
    with pytest.raises(ValidationError, match="n_neighbors"):
        ParametricUMAP(n_neighbors=0)
    with pytest.raises(ValidationError, match="init"):
        ParametricUMAP(init="random")
    with pytest.raises(RegistryError, match="euclidean"):
        ParametricUMAP(metric="euclidian")
    with pytest.raises(NotFittedError, match="fit"):
        ParametricUMAP().transform(np.zeros((3, 64)))
    with pytest.raises(ValidationError, match="64 features|fitted on 64"):
        fitted.transform(np.zeros((3, 5)))
    with pytest.raises(ValidationError, match="encoder"):
        ParametricUMAP(encoder="mlp")
    with pytest.raises(ValidationError, match=r"\(n, 2\)"):
        ParametricUMAP(encoder=torch.nn.Linear(3, 5)).build(np.zeros((30, 3)))
    with pytest.raises(ConfigError, match="phases"):
        ParametricUMAP(phases=[{"epochs": 3}]).phase_specs()
    with pytest.raises(ConfigError, match="Phase keys"):
        ParametricUMAP(phases=[{"name": "main", "epoch": 3}]).build(np.zeros((30, 3)) +
                                                                    np.arange(30)[:, None])
    with pytest.raises(ConfigError, match="n_neighbours"):
        ParametricUMAP.from_dict({"n_neighbours": 3})

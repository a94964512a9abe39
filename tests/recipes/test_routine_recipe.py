"""The ``routine`` recipe: a routine of one's own written block by block as data — trained,
saved, loaded and run from the command line like any recipe, with no plugin recipe to write."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest

from infoblocks.blocks.embedding_quality import trustworthiness
from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.plugins.registry import get_registry, recipe_from_dict
from infoblocks.recipes import ParametricUMAP
from infoblocks.recipes.cli import main
from infoblocks.recipes.routine import RoutineRecipe


@pytest.fixture(scope="module")
def digits():
    return get_registry().build("dataset", "digits").load()["data"].astype(np.float32)[:600]


def _umap_as_data(epochs: int = 40) -> tuple[ParametricUMAP, dict]:
    """The fast UMAP preset's routine, written out as a `routine` config."""
    umap = ParametricUMAP.preset("fast", epochs=epochs)
    spec = umap.routine_spec()
    spec["models"]["main"]["out_dim"] = 2  # (the UMAP recipe fills it from n_components)
    return umap, {"recipe": "routine", **{k: spec[k] for k in ("globals", "models", "phases")}}


def test_a_recipe_written_out_as_a_routine_trains_to_the_same_network(digits):
    umap, config = _umap_as_data()
    routine = recipe_from_dict(tomllib.loads(recipe_from_dict(config).to_toml()))
    codes = routine.fit(digits).transform(digits)
    # the same blocks, seed and data: the recipe's network to the bit (measured 0.0)
    np.testing.assert_array_equal(codes, umap.fit(digits).transform(digits, refine=False))
    assert trustworthiness(digits, codes, k=15) > 0.95  # measured 0.976
    assert [r["phase"] for r in routine.history_][-1] == "main"


def test_save_load_and_the_command_line(digits, tmp_path):
    _, config = _umap_as_data(epochs=5)
    fitted = recipe_from_dict(config).fit(digits)
    fitted.save(tmp_path / "m")
    again = RoutineRecipe.load(tmp_path / "m")
    np.testing.assert_array_equal(again.transform(digits), fitted.transform(digits))
    np.save(tmp_path / "x.npy", digits)
    (tmp_path / "r.toml").write_text(recipe_from_dict(config).to_toml())
    assert main(["run", str(tmp_path / "r.toml"), "--data", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["epochs_run"] == len(fitted.history_)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "outputs.npy"),
                               fitted.transform(digits), rtol=0, atol=1e-6)


def test_named_arrays_and_bad_input_are_named(digits):
    _, config = _umap_as_data(epochs=1)
    with pytest.raises(ConfigError, match="write at least one model"):
        RoutineRecipe().fit(digits)
    with pytest.raises(ValidationError, match="got 2 arrays but `arrays` names 1"):
        recipe_from_dict(config).fit(digits, digits)
    two = {**config, "arrays": ["data", "labels"]}  # author8 A8-2: named in the error now
    with pytest.raises(ValidationError, match=r"\['labels'\] was not given"):
        recipe_from_dict(two).fit(digits)
    with pytest.raises(ValidationError, match=r"got \['label'\] by name, which `arrays`"):
        recipe_from_dict(two).fit(digits, label=np.zeros(len(digits)))
    with pytest.raises(ValidationError, match="one row per item"):
        recipe_from_dict({**config, "arrays": ["data", "y"]}).fit(digits, digits[:10])
    with pytest.raises(ValidationError, match="distinct names"):
        RoutineRecipe(arrays=["data", "data"])
    with pytest.raises(ConfigError, match="`output_model` = 'encoder' is not among"):
        recipe_from_dict({**config, "output_model": "encoder"}).fit(digits)
    # a second array by name reaches the dataset (a loss may read it)
    fitted = recipe_from_dict({**config, "arrays": ["data", "labels"]}).fit(
        digits, np.arange(len(digits)) % 10)
    assert fitted.routine_.dataset["labels"].shape == (len(digits),)
    # user13 U13-11: another number of columns was torch's "mat1 and mat2 shapes cannot be
    # multiplied (100x63 and 64x100)"; the routine's own apply says it too (README's tour)
    with pytest.raises(ValidationError, match="`X` has 63 features .* built for 64"):
        fitted.transform(digits[:, :63])
    with pytest.raises(ValidationError, match="`x` has 63 features .* built for 64"):
        fitted.routine_.apply(digits[:, :63].tolist())


def _with_label_mi(config: dict, weight: float) -> dict:
    """UMAP's main loss plus `weight` × an InfoNCE term between the code and the labels."""
    phases = [dict(p) for p in config["phases"]]
    phases[-1]["loss"] = {"name": "compound", "weights": [1.0, weight], "losses": [
        phases[-1]["loss"], {"name": "encoded_mi", "target": "labels", "classes": 10,
                             "bound": {"name": "infonce_loss", "critic": "critic"}}]}
    return {**config, "arrays": ["data", "labels"], "phases": phases, "models": {
        **config["models"], "critic": {"name": "separable_critic", "x_dim": 2, "y_dim": 10}}}


@pytest.mark.slow
def test_a_umap_encoder_with_an_mi_term_towards_the_labels(digits):
    # two families in one compound loss, from data (author8's composition, which had needed
    # an adapter loss of their own): the MI term pulls the classes apart at equal trust
    pytest.importorskip("sklearn")
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = get_registry().build("dataset", "digits").load()["target"][:len(digits)]
    _, config = _umap_as_data(epochs=30)
    scores = {}
    for weight in (0.0, 0.5):
        cfg = _with_label_mi(config, weight) if weight else {**config, "arrays": ["data",
                                                                              "labels"]}
        fitted = recipe_from_dict(cfg).fit(digits, labels)
        codes = fitted.transform(digits)
        scores[weight] = (trustworthiness(digits, codes, k=15), cross_val_score(
            KNeighborsClassifier(10), codes, labels, cv=5).mean(), fitted.history_[-1])
    # measured: trust 0.966 -> 0.979, 10-NN 0.852 -> 0.953 (1,000 digits, 100 epochs:
    # 0.981 -> 0.980, 0.946 -> 0.980)
    assert scores[0.5][2]["1.encoded_mi.mi"] > 0.8 * np.log(10)  # the bound on the batch
    assert scores[0.5][1] > scores[0.0][1] + 0.01  # 10-NN up
    assert scores[0.5][0] > scores[0.0][0] - 0.01  # trust kept


def test_config_says_where_the_sections_come_from(capsys):
    assert main(["config", "routine"]) == 0
    out = capsys.readouterr().out
    assert "# The sections are the routine" in out and "config parametric_umap --full" in out
    assert tomllib.loads(out)["recipe"] == "routine"  # comments: it still parses


def test_a_routine_whose_model_takes_two_arrays_runs_without_outputs(bilinear_critic,
                                                                     tmp_path):
    # author11 A11-4: `infoblocks run` of a routine training an MI critic (forward(x, y))
    # saved it, then ended in a raw "TypeError: forward() missing 1 required positional
    # argument: 'y'" writing outputs.npy; output_model could not be switched off
    r = np.random.default_rng(0)
    x = r.standard_normal((200, 2)).astype(np.float32)
    y = (0.8 * x + 0.6 * r.standard_normal((200, 2))).astype(np.float32)
    config = {"recipe": "routine", "arrays": ["x", "y"],
              "models": {"main": {"name": bilinear_critic, "x_dim": 2, "y_dim": 2}},
              "phases": [{"name": "train", "epochs": 2, "learning_rate": 0.01,
                          "sampler": {"name": "all_pairs", "batch_size": 50},
                          "loss": "infonce_loss"}]}
    with pytest.raises(ConfigError, match=r"saved in .*model, but `output_model` = 'main' "
                                          r"\(Bilinear\) could not be applied to the first "
                                          r"--data array 'x' .*TypeError.*set `output_model = "
                                          r"\"\"` to write no outputs"):
        recipe_from_dict(config).run([x, y], tmp_path / "a")
    assert (tmp_path / "a" / "model").exists()
    summary = recipe_from_dict({**config, "output_model": ""}).run([x, y], tmp_path / "b")
    assert summary["outputs"] is None and not (tmp_path / "b" / "outputs.npy").exists()
    assert summary["epochs_run"] == 2 and np.isfinite(summary["last"]["mi"])
    with pytest.raises(ConfigError, match=r"`output_model` = \"\" names no model"):
        RoutineRecipe.load(tmp_path / "b" / "model").transform(x)

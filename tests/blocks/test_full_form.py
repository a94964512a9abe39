"""A full form (``to_dict(full=True)``, ``infoblocks config --full``) edited and read back:
every value is in the file, and a shortcut edited there still reaches every key it fills."""

from __future__ import annotations

import tomllib

import pytest
import tomli_w

from infoblocks.blocks.errors import ConfigError
from infoblocks.blocks.recipe import EXPANDED_KEY
from infoblocks.recipes import MINE, ParametricUMAP


def written(recipe) -> dict:
    """The full form as a file holds it (through TOML)."""
    return tomllib.loads(tomli_w.dumps(recipe.to_dict(full=True)))


def test_the_full_form_of_the_defaults_reads_back_as_the_defaults():
    data = written(ParametricUMAP())
    assert data[EXPANDED_KEY]["n_neighbors"] == 15 and data["phases"]  # everything is written
    again = ParametricUMAP.from_dict(data)
    # nothing differs from what the shortcuts give: no section is left, so set_params on a
    # shortcut reaches the routine as on a recipe built in Python
    assert (again.globals, again.models, again.phases, again.evaluation) == (None,) * 4
    assert again.routine_spec() == ParametricUMAP().routine_spec()


def test_a_shortcut_edited_in_the_file_reaches_every_key_it_filled():
    data = written(ParametricUMAP())
    data.update(n_neighbors=30, min_dist=0.1, local_connectivity=0.5, layout_epochs=0)
    spec = ParametricUMAP.from_dict(data).routine_spec()
    # the graph's k, both kernels, the transform list's entry, the placement, and the layout
    # phase that layout_epochs = 0 removes: as if the shortcuts had been set in Python
    assert spec == ParametricUMAP(n_neighbors=30, min_dist=0.1, local_connectivity=0.5,
                                  layout_epochs=0).routine_spec()
    graph = spec["globals"]["graph"]
    assert graph["relation"]["n_neighbors"] == 30
    assert graph["transforms"][0]["local_connectivity"] == 0.5  # a list entry: before, 1.0
    assert [p["name"] for p in spec["phases"]] == ["init", "main"]


def test_an_edited_key_stays_and_a_block_of_ones_own_follows_the_shortcuts():
    recipe = MINE(phases=[{"name": "train", "sampler": "shifted"}], epochs=3)
    data = written(recipe)
    assert data["phases"][0]["sampler"]["batch_size"] == 100  # the recipe's, carried at write
    data["batch_size"] = 64  # the shortcut edited
    data["phases"][0]["validation"]["every"] = 2  # a key no shortcut fills, edited
    again = MINE.from_dict(data)
    phase = again.routine_spec()["phases"][0]
    assert phase["sampler"]["name"] == "shifted" and phase["sampler"]["batch_size"] == 64
    assert phase["validation"]["every"] == 2 and phase["epochs"] == 3
    assert again.routine_spec() == MINE(
        phases=[{"name": "train", "sampler": "shifted", "validation": {"every": 2}}],
        epochs=3, batch_size=64).routine_spec()


def test_a_shortcut_and_a_key_it_fills_both_edited_is_a_conflict():
    data = written(ParametricUMAP())
    data["n_neighbors"] = 30
    data["globals"]["graph"]["relation"]["n_neighbors"] = 20
    with pytest.raises(ConfigError, match="`n_neighbors` = 30 and "
                       "`globals.graph.relation.n_neighbors` = 20"):
        ParametricUMAP.from_dict(data)
    # the key alone edited: the file's value runs
    data["n_neighbors"] = 15
    spec = ParametricUMAP.from_dict(data).routine_spec()
    assert spec["globals"]["graph"]["relation"]["n_neighbors"] == 20


def test_a_broken_table_of_written_shortcuts_is_named():
    data = written(ParametricUMAP())
    data[EXPANDED_KEY]["n_neigbors"] = 15
    with pytest.raises(ConfigError, match=r"expanded_from: \['n_neigbors'\] are not settings"):
        ParametricUMAP.from_dict(data)
    data[EXPANDED_KEY] = 3
    with pytest.raises(ConfigError, match="expanded_from must be the table"):
        ParametricUMAP.from_dict(data)


BUILT_IN = ["parametric_umap", "parametric_tsne", "dii", "mine", "minee", "infonce", "nwj",
            "smile", "infomax", "imnn"]


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_recipes_full_form_reads_back_to_its_routine(name):
    from infoblocks.plugins.registry import get_registry

    cls = get_registry().get("recipe", name)
    settings = {"theta_fid": (0.0, 1.0)} if name == "imnn" else {}
    recipe = cls(**settings, epochs=7)
    again = cls.from_dict(written(recipe))
    assert again.routine_spec() == recipe.routine_spec()
    edited = written(recipe)
    edited["epochs"] = 9  # every recipe has the shortcut; it reaches the phases it filled
    assert cls.from_dict(edited).routine_spec() == cls(**settings, epochs=9).routine_spec()


def test_an_edited_key_is_applied_to_the_recipe_as_written():
    # author6 F1: the full form writes InfoMax's validation loss out (it follows the trained
    # loss); a key of the trained loss edited in the file must reach the validation loss as the
    # same edit in a short config does, not leave the written copy behind
    from infoblocks.recipes import InfoMax

    data = written(InfoMax())
    train = data["phases"][0]
    assert train["validation"]["loss"]["input_noise"] == train["loss"]["input_noise"] == 3.0
    train["loss"]["input_noise"] = 2.0
    spec = InfoMax.from_dict(data).routine_spec()
    assert spec == InfoMax(phases=[{"name": "train", "loss": {"input_noise": 2.0}}]
                           ).routine_spec()
    assert spec["phases"][0]["validation"]["loss"]["input_noise"] == 2.0
    # the recipe's own sections are written with it and kept (a validation loss of its own)
    own = InfoMax(phases=[{"name": "train", "validation": {"loss": {"input_noise": 1.0}}}])
    data = written(own)
    data["phases"][0]["loss"]["input_noise"] = 2.0
    spec = InfoMax.from_dict(data).routine_spec()["phases"][0]
    assert spec["loss"]["input_noise"] == 2.0 and spec["validation"]["loss"]["input_noise"] == 1.0


def test_an_edit_of_a_phase_the_edited_shortcuts_remove_is_named():
    # author6 A6-7: t-SNE's `network` preset has an `exaggerate` phase only without a layout;
    # bringing the layout back at the top while that phase was edited read the edit as a new
    # phase ("fields `sampler`, `loss` are required")
    from infoblocks.recipes import ParametricTSNE

    data = written(ParametricTSNE.preset("network"))
    exaggerate = next(p for p in data["phases"] if p["name"] == "exaggerate")
    written_epochs, exaggerate["epochs"] = exaggerate["epochs"], 3
    data["layout_epochs"] = 20
    with pytest.raises(ConfigError, match=r"phases.exaggerate: the file edits this phase.*"
                                          r"`layout_epochs` = 20 \(written 0\)"):
        ParametricTSNE.from_dict(data)
    exaggerate["epochs"] = written_epochs  # the edit undone: the shortcut alone is fine
    assert ParametricTSNE.from_dict(data).routine_spec() == ParametricTSNE.preset(
        "network", layout_epochs=20).routine_spec()

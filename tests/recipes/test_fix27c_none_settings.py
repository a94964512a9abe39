"""A setting set to None where its default is not None survives the data form (author27-1).

TOML has no null and ``to_dict`` dropped None, so ``patience=None`` (no early stopping) read
back as the default (InfoMax 100, MINE 50) through ``to_dict(full=True)`` / ``to_toml`` /
``from_dict`` / ``save`` + ``load`` and ``infoblocks run``'s recipe.toml: the run early-stopped
(200 -> 169 epochs measured).  Such a setting is now written ``"none"`` and read back as None;
a file without the key still reads the default."""

from __future__ import annotations

import tomllib
import warnings

import attrs
import numpy as np
import pytest

from infoblocks.blocks.config import spells_none
from infoblocks.blocks.errors import ConfigError
from infoblocks.blocks.recipe import _none_is_not_default
from infoblocks.plugins.registry import get_registry, recipe_from_dict

#: the recipe settings of every built-in recipe whose None is not their default
NONE_SETTINGS = [(name, f.name) for name in sorted(get_registry().names("recipe"))
                 for f in attrs.fields(get_registry().get("recipe", name))
                 if f.init and not f.metadata.get("transient")
                 and _none_is_not_default(get_registry().get("recipe", name), f)]

#: settings a recipe needs to be written at all
REQUIRED = {"imnn": dict(n_summaries=2, theta_fid=(0.0, 1.0))}


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_the_settings_found():
    """The ones author27-1 names, and the others of the same kind (threads, pca_dims,
    batches_per_epoch), are all covered."""
    found = set(NONE_SETTINGS)
    assert {("infomax", "patience"), ("mine", "patience"), ("minee", "patience"),
            ("infonce", "patience"), ("nwj", "patience"), ("smile", "patience"),
            ("infomax", "batches_per_epoch"), ("parametric_umap", "pca_dims"),
            ("parametric_umap", "batches_per_epoch"), ("parametric_tsne", "pca_dims"),
            ("dii", "threads"), ("imnn", "threads"), ("routine", "threads")} <= found


@pytest.mark.parametrize("recipe,setting", NONE_SETTINGS, ids=[f"{r}.{s}" for r, s in
                                                                   NONE_SETTINGS])
@pytest.mark.parametrize("full", [True, False], ids=["full", "short"])
def test_none_round_trips_through_toml(recipe, setting, full):
    cls = get_registry().get("recipe", recipe)
    if recipe == "routine":
        pytest.skip("a routine recipe needs a routine of its own to be written")
    original = quiet(cls, **{**REQUIRED.get(recipe, {}), setting: None})
    text = quiet(original.to_toml, full=full)
    assert f'{setting} = "none"' in text
    again = quiet(recipe_from_dict, tomllib.loads(text))
    assert getattr(again, setting) is None
    assert quiet(again.to_toml, full=full) == text  # byte-identical round trip


def test_a_file_without_the_key_reads_the_default():
    for recipe, setting in NONE_SETTINGS:
        if recipe == "routine":
            continue
        cls = get_registry().get("recipe", recipe)
        data = quiet(cls(**REQUIRED.get(recipe, {})).to_dict)
        data.pop(setting, None)
        default = attrs.fields_dict(cls)[setting].default
        assert getattr(quiet(recipe_from_dict, data), setting) == default, (recipe, setting)


def test_other_strings_are_refused_naming_none():
    with pytest.raises(ConfigError, match=r'expected an integer or "none"') as info:
        recipe_from_dict({"recipe": "mine", "patience": "off"})
    assert 'expected an integer or "none" (None), got \'off\'' in str(info.value)
    assert "mine.patience" in str(info.value)


def test_the_spelling_only_where_no_string_is_a_value():
    from typing import Literal

    assert spells_none(int | None) and spells_none(list[int] | None)
    assert not spells_none(str | None) and not spells_none(Literal["none", "auto"] | None)
    assert not spells_none(int)


def test_infomax_patience_none_survives_save_and_load(tmp_path):
    from infoblocks.recipes.infomax import InfoMax

    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    model = quiet(InfoMax(n_components=2, epochs=2, seed=0, patience=None).fit, x)
    model.save(tmp_path / "m")
    loaded = quiet(InfoMax.load, tmp_path / "m")
    assert loaded.patience is None
    assert np.array_equal(loaded.transform(x), model.transform(x))


def test_mine_patience_none_survives_save_and_load(tmp_path):
    from infoblocks.recipes.mi import MINE

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    y = (x + rng.normal(size=x.shape)).astype(np.float32)
    model = quiet(MINE(epochs=2, seed=0, patience=None).fit, x, y)
    model.save(tmp_path / "m")
    loaded = quiet(MINE.load, tmp_path / "m")
    assert loaded.patience is None and loaded.estimate_nats_ == model.estimate_nats_


def test_patience_none_in_a_run_config_is_no_early_stop():
    """The round-tripped config trains as the original: no early stop."""
    from infoblocks.recipes.mi import MINE

    data = MINE(patience=None, epochs=3).to_dict(full=True)
    again = recipe_from_dict(tomllib.loads(__import__("tomli_w").dumps(data)))
    assert again.patience is None
    phases = again.routine_spec()["phases"]
    assert all(p.get("patience") is None for p in phases)

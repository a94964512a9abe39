"""Every registered recipe is an assembled routine as data: it prints a usable full config,
that config round-trips, every block in it is a registry name, and scikit-learn's ``clone``
works on it."""

from __future__ import annotations

import tomllib

import pytest

from infoblocks.blocks.assembly import SECTIONS
from infoblocks.blocks.errors import ConfigError
from infoblocks.plugins.registry import get_registry, recipe_from_dict


def _recipes():
    return [e.name for e in get_registry().entries("recipe")]


def _block_names(value, found):
    if isinstance(value, dict):
        if isinstance(value.get("name"), str):
            found.append(value["name"])
        for v in value.values():
            _block_names(v, found)
    elif isinstance(value, list):
        for v in value:
            _block_names(v, found)
    return found


@pytest.mark.parametrize("name", _recipes())
def test_full_config_round_trips(name):
    cls = get_registry().get("recipe", name)
    recipe = cls()
    text = recipe.to_toml(full=True)
    data = tomllib.loads(text)
    again = recipe_from_dict(data)
    assert again.routine_spec() == recipe.routine_spec()
    assert again.to_dict(full=True) == recipe.to_dict(full=True)


@pytest.mark.parametrize("name", _recipes())
def test_every_phase_block_is_a_registry_name(name):
    if name == "routine":
        pytest.skip("the routine recipe has no default blocks: its sections are the routine "
                    "(tests/recipes/test_routine_recipe.py)")
    recipe = get_registry().get("recipe", name)()
    spec = recipe.routine_spec()
    registry = get_registry()
    assert spec["phases"] and spec["models"], "the routine is shown as data"
    for phase in spec["phases"]:
        for slot in ("sampler", "loss"):
            block = phase[slot]
            block_name = block if isinstance(block, str) else block["name"]
            assert (slot, block_name) in registry, (name, phase["name"], slot)
    for model in spec["models"].values():
        model_name = model if isinstance(model, str) else model["name"]
        assert ("model", model_name) in registry


@pytest.mark.parametrize("name", _recipes())
def test_sklearn_clone(name):
    base = pytest.importorskip("sklearn.base")
    recipe = get_registry().get("recipe", name)()
    twin = base.clone(recipe)
    assert twin is not recipe
    assert set(twin.get_params()) >= set(SECTIONS)
    assert twin.to_dict(full=True) == recipe.to_dict(full=True)


@pytest.mark.parametrize("name", _recipes())
def test_sklearn_checks_fitted_and_reads_the_tags(name):
    # user13 U13-13: with scikit-learn >= 1.6, check_is_fitted (and so Pipeline.transform with
    # a recipe last) raised "AttributeError: 'InfoMax' object has no attribute
    # '__sklearn_tags__'"; an unfitted recipe must be sklearn's NotFittedError
    validation = pytest.importorskip("sklearn.utils.validation")
    exceptions = pytest.importorskip("sklearn.exceptions")
    recipe = get_registry().get("recipe", name)()
    with pytest.raises(exceptions.NotFittedError):
        validation.check_is_fitted(recipe)
    utils = pytest.importorskip("sklearn.utils")
    if hasattr(utils, "get_tags"):  # scikit-learn >= 1.6
        tags = utils.get_tags(recipe)
        assert (tags.transformer_tags is not None) == hasattr(recipe, "transform")
        assert tags.requires_fit and not tags.target_tags.required


@pytest.mark.parametrize("name", _recipes())
def test_a_misspelt_evaluation_slot_is_refused(name):
    # user13 U13-10: DII(evaluation={"softmx": ...}), MINE(evaluation={"bund": ...}), UMAP's
    # "placment" were accepted and ignored (the default block ran); a recipe with fixed slots
    # names them and the close match
    recipe = get_registry().get("recipe", name)()
    slots = sorted(recipe.routine_spec()["evaluation"])
    if not slots:
        return  # no fixed slots (routine, infomax): nothing to check against
    typo = slots[0][1:]
    recipe.evaluation = {typo: {}}
    with pytest.raises(ConfigError, match=rf"no slot \['{typo}'\].*Did you mean '{slots[0]}'"):
        recipe.routine_spec()


@pytest.mark.parametrize("recipe, name, suggested", [
    ("parametric_umap", "random_state", "'seed'"),
    ("parametric_umap", "n_epochs", "'layout_epochs', 'epochs'"),
    ("dii", "num_epochs", "'epochs'"),
    ("mine", "lr", "'learning_rate'"),
])
def test_another_librarys_name_for_a_setting_suggests_ours(recipe, name, suggested):
    # user13: umap-learn's random_state got "Did you mean 'warm_start'?"
    from infoblocks.blocks.errors import UnknownParameterError

    cls = get_registry().get("recipe", recipe)
    with pytest.raises(UnknownParameterError, match=rf"no parameter '{name}'\. Did you mean "
                                                    rf"{suggested}\? \(infoblocks' name"):
        cls(**{name: 1})


def test_wrong_arguments_to_the_recipe_helpers_are_named(tmp_path):
    # user13: to_toml(<a directory>) was a raw IsADirectoryError, from_dict([1, 2]) a raw
    # TypeError, cross_fit("mine", x, y) a raw AttributeError
    from infoblocks.blocks.errors import ConfigError, ValidationError
    from infoblocks.recipes import MINE
    from infoblocks.recipes.mi_crossfit import cross_fit

    with pytest.raises(ValidationError, match="to_toml writes a file; .* is a directory"):
        MINE().to_toml(tmp_path)
    # a file in a folder that does not exist yet: made, as save() makes its folder (was a raw
    # FileNotFoundError; baduser19)
    MINE().to_toml(tmp_path / "new" / "deeper" / "mine.toml")
    assert MINE.from_toml(tmp_path / "new" / "deeper" / "mine.toml").to_dict() == MINE().to_dict()
    with pytest.raises(ConfigError, match=r"MINE.from_dict takes a dict of settings"):
        MINE.from_dict([1, 2])
    with pytest.raises(ValidationError, match=r"cross_fit takes an unfitted MI estimator"):
        cross_fit("mine", [[1.0]], [[1.0]])

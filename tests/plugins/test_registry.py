from typing import ClassVar

import attrs
import pytest

from infoblocks.blocks.errors import ConfigError, PluginError, RegistryError
from infoblocks.blocks.losses import CompoundLoss, Loss, PositionLoss
from infoblocks.plugins.registry import Registry, get_registry, override


def test_unknown_name_lists_close_matches():
    with pytest.raises(RegistryError, match="Did you mean 'position'") as info:
        get_registry().build("loss", "positoin")
    known = str(info.value).split("Known (loss): ")[1].split(".")[0].split(", ")
    assert known == sorted(known) and {"compound", "position", "relation"} <= set(known)


def test_unknown_kind_is_an_error():
    with pytest.raises(RegistryError, match="Unknown block kind 'losses'"):
        get_registry().names("losses")


def test_build_from_name_dict_and_nested_dicts():
    registry = get_registry()
    loss = registry.build("loss", {"name": "compound", "weights": [1.0, 2.0],
                                   "losses": ["position", {"name": "position", "target": "pca"}]})
    assert isinstance(loss, CompoundLoss)
    assert isinstance(loss.losses[1], PositionLoss) and loss.losses[1].target == "pca"
    assert loss.describe()["losses"][1] == {"name": "position", "model": "main",
                                            "input": "data", "target": "pca",
                                            "target_model": None}


def test_bad_parameters_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"the known keys are \['input', 'model', 'target', "
                                          r"'target_model'\]\. Did you mean 'target' for 'targte'"):
        get_registry().build("loss", {"name": "position", "targte": "pca"})
    with pytest.raises(ConfigError, match="needs a 'name' key"):
        get_registry().build("loss", {"target": "pca"})
    with pytest.raises(ConfigError, match="CompoundLoss has 1 losses but 2 weights"):
        get_registry().build("loss", {"name": "compound", "losses": ["position"],
                                      "weights": [1, 2]})


@attrs.define
class _MyPosition(Loss):
    name: ClassVar[str] = "position"


def test_duplicates_name_both_plugins_and_override_is_explicit():
    registry = Registry()
    registry.add("loss", PositionLoss, plugin="builtin")
    with pytest.raises(RegistryError, match="plugin 'mine'.*and plugin 'builtin'"):
        registry.add("loss", _MyPosition, plugin="mine")
    registry.add("loss", override(_MyPosition), plugin="mine")
    assert registry.get("loss", "position") is _MyPosition
    assert registry.entry("loss", "position").plugin == "mine"


def test_registration_must_be_a_block_of_the_kind_with_a_name():
    registry = Registry()
    with pytest.raises(PluginError, match="not a subclass of .*Distance"):
        registry.add("distance", PositionLoss, plugin="oops")

    class Nameless(Loss):
        pass

    with pytest.raises(PluginError, match="without a `name`"):
        registry.add("loss", Nameless, plugin="oops")


def test_every_builtin_block_is_attributed_to_the_builtin_plugin():
    entries = get_registry().entries("transform")
    assert {e.name for e in entries} >= {"normalize", "normalize_rows", "symmetrize",
                                          "zero_diagonal", "functional"}
    assert all(e.plugin == "builtin" for e in entries if e.block.__module__.startswith(
        "infoblocks.blocks"))

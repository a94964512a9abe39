"""Plugin loading: broken plugins are reported by name, misspelt hooks are errors."""

from importlib import metadata
from typing import ClassVar

import attrs
import pytest

from infoblocks.blocks.errors import PluginError
from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.plugins import hookimpl
from infoblocks.plugins.manager import InfoblocksPlugins, PluginFailureWarning


def _with_entry_points(monkeypatch, *extra):
    real = metadata.entry_points

    def fake(**kwargs):
        found = list(real(**kwargs))
        if kwargs.get("group") == "infoblocks":
            found += list(extra)
        return found

    monkeypatch.setattr(metadata, "entry_points", fake)


BROKEN = metadata.EntryPoint(name="broken", value="infoblocks_no_such_module", group="infoblocks")


def test_plugin_that_fails_to_import_is_reported_by_name_and_the_rest_loads(monkeypatch):
    _with_entry_points(monkeypatch, BROKEN)
    with pytest.warns(PluginFailureWarning, match="plugin 'broken'.*ModuleNotFoundError"):
        manager = InfoblocksPlugins(strict=False).load()
    assert [f.name for f in manager.failures] == ["broken"]
    assert "position" in manager.registry.names("loss")  # built-ins still there


def test_strict_mode_raises_on_a_broken_plugin(monkeypatch):
    _with_entry_points(monkeypatch, BROKEN)
    with pytest.raises(PluginError, match="plugin 'broken'"):
        InfoblocksPlugins(strict=True).load()


class _Misspelt:
    @hookimpl
    def register_lossess(self):  # one 's' too many
        return []


def test_misspelt_hook_is_an_error_not_a_silent_no_op():
    manager = InfoblocksPlugins(strict=True).load(entry_points=False)
    with pytest.raises(PluginError, match="register_lossess.*known hooks: register_callbacks, register_datasets"):
        manager.register(_Misspelt(), "typo")
    lenient = InfoblocksPlugins(strict=False).load(entry_points=False)
    with pytest.warns(PluginFailureWarning, match="plugin 'typo'"):
        assert not lenient.register(_Misspelt(), "typo")


@attrs.define
class _ShoutLoss(Loss):
    name: ClassVar[str] = "shout_test"

    def __call__(self, batch, models, state):
        value = models["main"](batch["data"]).pow(2).mean()
        return LossOutput(value)


class _ShoutPlugin:
    @hookimpl
    def register_losses(self):
        return [_ShoutLoss]


class _Clash:
    @hookimpl
    def register_losses(self):
        @attrs.define
        class Position(Loss):
            name: ClassVar[str] = "position"
        return [Position]


def test_fixture_registers_a_plugin_for_one_test(infoblocks_plugin):
    registry = infoblocks_plugin(_ShoutPlugin(), name="shout")
    assert registry.entry("loss", "shout_test").plugin == "shout"


def test_fixture_registration_is_gone_afterwards():
    from infoblocks.plugins.registry import get_registry

    assert "shout_test" not in get_registry().names("loss")


def test_duplicate_from_a_plugin_names_both_plugins():
    manager = InfoblocksPlugins(strict=False).load(entry_points=False)
    manager.register(_Clash(), "clash")
    with pytest.warns(PluginFailureWarning, match="plugin 'clash'.*and plugin 'builtin'"):
        registry = manager.registry
    assert registry.entry("loss", "position").plugin == "builtin"

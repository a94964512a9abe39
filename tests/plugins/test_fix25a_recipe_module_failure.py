"""One broken recipe module does not unregister every recipe (author24-8): each module of
``infoblocks.recipes`` is imported on its own; a module that fails is reported by name, with
the exception, its file:line and the fix, and the other recipes stay registered."""

import sys
import warnings

import pytest

import infoblocks.recipes as recipes_package
from infoblocks.blocks.errors import PluginError, RegistryError
from infoblocks.plugins.manager import InfoblocksPlugins, PluginFailureWarning
from infoblocks.recipes.plugin import _scan

BROKEN_SOURCE = '''
from typing import ClassVar

from infoblocks.recipes.mi import MINE


class ZzRecipe(MINE):
    name: ClassVar[str] = "zz_recipe"


x = [y for y in (1, 2]  # a half-edited line
'''


@pytest.fixture
def broken_module(tmp_path, monkeypatch):
    """A recipe module ``infoblocks.recipes.zz_broken`` with a SyntaxError at line 11."""
    (tmp_path / "zz_broken.py").write_text(BROKEN_SOURCE)
    monkeypatch.setattr(recipes_package, "__path__", [*recipes_package.__path__, str(tmp_path)])
    _scan.cache_clear()
    yield tmp_path / "zz_broken.py"
    sys.modules.pop("infoblocks.recipes.zz_broken", None)
    _scan.cache_clear()


def _manager(strict=False):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manager = InfoblocksPlugins(strict=strict).load()
        manager.registry  # noqa: B018 - built here, warnings caught
    return manager, [str(w.message) for w in caught if w.category is PluginFailureWarning]


def test_a_recipe_module_with_a_syntax_error_leaves_the_other_recipes_registered(broken_module):
    manager, warned = _manager()
    names = manager.registry.names("recipe")
    assert {"mine", "nwj", "parametric_umap", "parametric_tsne"} <= set(names)
    assert "zz_recipe" not in names
    # reported once, as a plugin failure is: the module, the exception, its file:line, the fix
    assert len(warned) == 1, warned
    assert len(manager.failures) == 1
    message = warned[0]
    assert message.startswith("plugin 'recipes' (package infoblocks) failed: module "
                              "infoblocks.recipes.zz_broken raised SyntaxError")
    assert f"{broken_module}:11" in message
    assert "its blocks are not registered, the plugin's other blocks are. Fix or revert the " \
           "edit there" in message
    with pytest.raises(RegistryError, match=r"No recipe named 'zz_recipe'.*1 plugin\(s\) failed "
                                            r"to load.*module infoblocks\.recipes\.zz_broken "
                                            r"raised SyntaxError"):
        manager.registry.get("recipe", "zz_recipe")
    assert manager.registry.get("recipe", "mine").__name__ == "MINE"


def test_strict_mode_stops_at_a_broken_recipe_module(broken_module):
    with pytest.raises(PluginError, match="module infoblocks.recipes.zz_broken raised SyntaxError"):
        _manager(strict=True)


def test_a_recipe_module_whose_import_fails_is_named_and_the_others_resolve(monkeypatch):
    """The t-SNE module fails to import: parametric_tsne is missing and says why; mine and
    parametric_umap (the module t-SNE builds on) still resolve."""
    _scan.cache_clear()
    monkeypatch.setitem(sys.modules, "infoblocks.recipes.tsne", None)  # import -> ImportError
    try:
        manager, warned = _manager()
        assert [w for w in warned if "infoblocks.recipes.tsne raised ModuleNotFoundError" in w], warned
        assert manager.registry.get("recipe", "mine").__name__ == "MINE"
        assert manager.registry.get("recipe", "parametric_umap").__name__ == "ParametricUMAP"
        with pytest.raises(RegistryError, match="No recipe named 'parametric_tsne'.*module "
                                                "infoblocks.recipes.tsne raised ModuleNotFoundError"):
            manager.registry.get("recipe", "parametric_tsne")
    finally:
        _scan.cache_clear()


def test_a_missing_optional_dependency_is_named_with_its_fix(tmp_path, monkeypatch):
    (tmp_path / "zz_optional.py").write_text("import infoblocks_no_such_optional_dependency\n")
    monkeypatch.setattr(recipes_package, "__path__", [*recipes_package.__path__, str(tmp_path)])
    _scan.cache_clear()
    try:
        manager, warned = _manager()
    finally:
        _scan.cache_clear()
    assert warned == [f"plugin 'recipes' (package infoblocks) failed: module "
                      f"infoblocks.recipes.zz_optional raised ModuleNotFoundError: No module named "
                      f"'infoblocks_no_such_optional_dependency' (at {tmp_path / 'zz_optional.py'}"
                      f":1); its blocks are not registered, the plugin's other blocks are. "
                      f"Install the package that provides "
                      f"'infoblocks_no_such_optional_dependency' (an optional dependency of these "
                      f"recipes), or fix the import there"]
    assert "mine" in manager.registry.names("recipe")


def test_the_command_line_list_prints_the_failed_module(broken_module, monkeypatch, capsys):
    from infoblocks.plugins import manager as manager_module
    from infoblocks.recipes.cli import main

    monkeypatch.setattr(manager_module, "_MANAGER", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginFailureWarning)
        assert main(["list", "recipe"]) == 0
    out, err = capsys.readouterr()
    assert "mine" in out and "zz_recipe" not in out
    assert "FAILED plugin 'recipes' (package infoblocks) failed: module " \
           "infoblocks.recipes.zz_broken raised SyntaxError" in err


def test_a_third_party_plugin_reports_one_failed_part_once(monkeypatch):
    """``unavailable()`` from a plugin's hook: its other blocks register; the part is reported
    once, even when the registry is rebuilt (another plugin registered later)."""
    from infoblocks.blocks.losses import Loss
    from infoblocks.plugins import hookimpl, unavailable

    class Fine(Loss):
        name = "zz_fine_loss"

    class Parts:
        @hookimpl
        def register_losses(self):
            try:
                raise RuntimeError("no GPU kernels built")
            except RuntimeError as exc:
                return [Fine, unavailable("module zzpkg.fast", exc, "Build them with make.")]

    manager = InfoblocksPlugins(strict=False).load(entry_points=False)
    manager.register(Parts(), "zzparts", package=("zzpkg", "1.0"))
    with pytest.warns(PluginFailureWarning, match=r"plugin 'zzparts' \(package zzpkg\) failed: "
                                                  r"module zzpkg\.fast raised RuntimeError: no GPU "
                                                  r"kernels built \(at .*test_fix25a_recipe_module"
                                                  r"_failure\.py:\d+\); its blocks are not "
                                                  r"registered, the plugin's other blocks are\. "
                                                  r"Build them with make\.$"):
        assert manager.registry.get("loss", "zz_fine_loss") is Fine
    manager.register(type("Other", (), {})(), "zzother")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginFailureWarning)
        assert "zz_fine_loss" in manager.registry.names("loss")  # rebuilt, not reported again
    assert [f.name for f in manager.failures] == ["zzparts"]

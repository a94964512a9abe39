"""docs/plugins.md is what a plugin author reads: its TOML examples parse and describe valid
recipes (every block named in them is registered, here or by the example plugin), and its
Python examples compile."""

import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from infoblocks.plugins.registry import get_registry, recipe_from_dict

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
TOML = re.findall(r"```toml\n(.*?)```", DOC, flags=re.S)
PYTHON = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)


@pytest.mark.parametrize("text", TOML, ids=[f"toml{k}" for k in range(len(TOML))])
def test_toml_examples_are_valid(text):
    data = tomllib.loads(text)
    assert data, "an empty TOML example"
    if "recipe" not in data or data["recipe"] not in get_registry().names("recipe"):
        return  # a fragment (pyproject entry point) or a plugin-defined recipe
    recipe = recipe_from_dict(data)
    spec = recipe.routine_spec()
    assert recipe.name == data["recipe"] and spec["phases"]
    for phase in data.get("phases", []):  # each phase the example names is in the routine
        assert phase["name"] in [p["name"] for p in spec["phases"]]


@pytest.mark.parametrize("text", PYTHON, ids=[f"python{k}" for k in range(len(PYTHON))])
def test_python_examples_compile(text):
    code = compile(textwrap.dedent(text), "docs/plugins.md", "exec")
    assert code.co_names, "a Python example that names nothing"

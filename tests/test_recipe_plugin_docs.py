"""docs/plugins.md's recipe section and docs/architecture.md say what a recipe plugin gets
from the base class and what it writes itself (author20 F13 / F14)."""

from pathlib import Path


def test_docs_say_what_a_recipe_gets_and_writes():
    # F13 / F14: the recipe section left these out; architecture.md named a transform's
    # main method __call__ (the base requires apply)
    docs = Path(__file__).resolve().parents[1] / "docs"
    text = (docs / "plugins.md").read_text()
    section = text[text.index("## A new recipe from existing blocks"):
                   text.index("## The slots of the built-in")]
    for needed in ("routine = self.routine_ if warm_start and self.routine_ is not None",
                   "UnsavedStateWarning", "presets", "def transform", "history_",
                   "NotFittedError", "infoblocks.blocks.data.as_tensor", "run_inputs",
                   "evaluation_kinds", "required_settings", "PluginError"):
        assert needed in section, needed
    row = next(line for line in (docs / "architecture.md").read_text().splitlines()
               if line.startswith("| transform |"))
    assert "`apply(RelationData)" in row


"""author28's documentation findings, as the pages now say them: t-SNE's 300 layout steps at a
low perplexity (author28-7), the history's KL, the import of ``recipe_from_dict`` and two hook
functions of one name (author28-9)."""

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _flat(name: str) -> str:
    return re.sub(r"\s+", " ", (DOCS / name).read_text())


def test_low_perplexity_needs_openTSNEs_750_steps():
    text = _flat("umap.md")
    assert "300 steps reach the quality of openTSNE's 750 — at the default perplexity 30" in text
    assert ("`layout_epochs = 75, layout_exaggeration_epochs = 25`, reach KL 0.971" in text)


def test_history_kl_and_plugin_docs():
    umap = _flat("umap.md")
    assert "is the mean over an epoch's 10 steps: the last row's 0.7763" in umap
    plugins = _flat("plugins.md")
    assert ("`recipe_from_dict(tomllib.load(f)).to_toml(full=True)`, with `from "
            "infoblocks.plugins.registry import recipe_from_dict`") in plugins
    assert ("a second `def register_transforms()` in the same module rebinds the name, so only "
            "the second one's blocks register") in plugins


def test_opentsne_held_out_figures_are_the_corrected_ones():
    # author28-10: the bench scored openTSNE's new points against the map before `transform`
    # moved it (0.777 / 0.942); re-measured 0.907 (MNIST-5k split 0) / 0.983 (digits split 0)
    umap = _flat("umap.md")
    assert "is far above openTSNE's `transform` (MNIST-5k 0.895 against 0.777" not in umap
    assert "the digits / 16 ours 0.977 / 0.964 against openTSNE's 0.980 / 0.962" in umap
    readme = re.sub(r"\s+", " ", (DOCS.parent / "README.md").read_text())
    assert "(openTSNE 0.777 / 0.928)" not in readme
    assert "held out 0.977 / 0.964 (openTSNE 0.980 / 0.962)" in readme

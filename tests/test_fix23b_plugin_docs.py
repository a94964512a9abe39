"""docs/plugins.md says what the embedding recipes do (author23-3, -7, and the merge rules of
author23-1 / -5).  The behaviour itself is tested beside the code: the placement's kernel in
tests/recipes/test_tsne.py (`_placement_blocks(...)[2].dof == 0.5`, the layout's), the
merge rules in tests/blocks/test_fix23b_shortcut_reach.py."""

from pathlib import Path

import pytest

DOC = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("said", [
    # author23-3: `transform` places new points with the layout phase's kernel (the code's
    # `_placement_blocks`); the docs said the main phase's, twice
    "handed to the `evaluation.placement` block with the layout phase's `loss.kernel`",
    "the placement with the layout phase's kernel (yours)",
    # author23-7: a Gaussian kernel in t-SNE's losses is symmetric SNE, not TorchDR's SNE
    "a Gaussian kernel (`log_kernel` = −γ d²) gives *symmetric* SNE",
    # author23-1 / -5: the merge rules the code follows now
    "the first entry of a block of your own with that field (t-SNE's `perplexity = 10`",
    "one that reaches some block but not another it gives its own value under its own name",
    # t-SNE's perplexity lowered on a small data set reaches a listed affinity
    "the value the fit itself sets in the default entry (t-SNE's perplexity lowered",
])
def test_plugins_md_says_it(said):
    assert _flat(said) in _flat(DOC)


def test_plugins_md_no_longer_says_the_main_phases_kernel_places_points():
    assert "with the main phase's `loss.kernel`" not in _flat(DOC)
    assert "the placement with the main phase's kernel" not in _flat(DOC)

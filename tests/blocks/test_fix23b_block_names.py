"""An unknown block name is refused where the sections are expanded (author23-8): `config
--full` and `to_toml(full=True)` wrote `kernel = "gaussian"` back with no complaint; only `fit`
refused it."""

from __future__ import annotations

import pytest

from infoblocks.blocks.errors import RegistryError
from infoblocks.plugins.registry import recipe_from_dict


@pytest.mark.parametrize("spec, where, close", [
    ({"recipe": "parametric_umap", "phases": [{"name": "layout", "loss": {"kernel": "gausian"}}]},
     "parametric_umap.phases.layout.loss.kernel: No transform named 'gausian'", "modified_cauchy"),
    ({"recipe": "parametric_tsne", "globals": {"P": {"transforms": ["perplexity_rescal",
                                                                    "normalize"]}}},
     "parametric_tsne.globals.P.transforms[0]: No transform named 'perplexity_rescal'",
     "perplexity_rescale"),
    ({"recipe": "parametric_umap", "phases": [{"name": "main", "loss": {
        "name": "compound", "losses": [{"name": "relaton"}]}}]},
     "parametric_umap.phases.main.loss.losses[0]: No loss named 'relaton'", "relation"),
    ({"recipe": "parametric_umap", "models": {"main": "mlpp"}},
     "parametric_umap.models.main: No model named 'mlpp'", "mlp"),
    ({"recipe": "parametric_umap", "evaluation": {"placement": "cross_entropi"}},
     "parametric_umap.evaluation.placement: No placement named 'cross_entropi'",
     "cross_entropy"),
])
def test_an_unknown_block_name_is_refused_by_the_full_config(spec, where, close):
    recipe = recipe_from_dict(spec)  # reading and expanding it is allowed (a placeholder
    recipe.routine_spec()            # name in the docs; a plugin installed later)
    with pytest.raises(RegistryError) as caught:
        recipe.to_toml(full=True)
    assert str(caught.value).startswith(where)
    assert "Known (" in str(caught.value) and close in str(caught.value)  # the names to use


def test_registered_names_in_every_slot_pass():
    full = recipe_from_dict({"recipe": "parametric_umap", "phases": [
        {"name": "main", "loss": {"name": "compound", "losses": [{"name": "relation"}]}}],
        "evaluation": {"placement": "neighbor_mean"}}).to_dict(full=True)
    # (a plugin block named in the sections is written with its own fields' defaults)
    assert full["evaluation"]["placement"] == {"name": "neighbor_mean", "eps": 1e-6}
    assert full["phases"][-1]["loss"]["name"] == "compound"

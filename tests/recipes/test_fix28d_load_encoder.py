"""ParametricUMAP.load of a model fitted with a custom encoder names its own call (author29-15).

Before, ParametricUMAP.load(path) without `encoder=` said "pass it again: Routine.load(path,
models={'main': module})", the routine's route, not the recipe's documented
ParametricUMAP.load(path, encoder=module)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes import ParametricUMAP

pytestmark = pytest.mark.filterwarnings("ignore:parametric_umap. after the init phase")


def _data(n: int):
    from infoblocks.plugins import get_registry

    return get_registry().build("dataset", "digits").load()["data"][:n]


def test_load_without_the_custom_encoder_names_the_recipe_call(tmp_path):
    encoder = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                  torch.nn.Linear(16, 2))
    ParametricUMAP(layout_epochs=2, epochs=1, init_epochs=1, transform_epochs=0, seed=0,
                   encoder=encoder).fit(_data(150)).save(tmp_path / "model")
    with pytest.raises(ValidationError, match=r"pass it again: ParametricUMAP\.load\(path, "
                       r"encoder=module\)") as caught:
        ParametricUMAP.load(tmp_path / "model")
    assert "Routine.load" not in str(caught.value)
    again = ParametricUMAP.load(tmp_path / "model", encoder=torch.nn.Sequential(
        torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)))
    x = _data(10)
    assert np.allclose(again.transform(x, refine=False), encoder(torch.as_tensor(
        x, dtype=torch.float32)).detach().numpy(), atol=1e-5)

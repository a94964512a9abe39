"""What docs/plugins.md tells a PML user (author25-4, author25-7): the shipped digits as data
for `infoblocks run`, and per-batch augmentation written into a sampler — both run as written."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import ClassVar

import attrs
import numpy as np
import torch

from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.blocks.samplers import ItemSampler
from infoblocks.plugins import get_registry, hookimpl
from infoblocks.plugins.registry import recipe_from_dict

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()


def _block(marker: str) -> str:
    return next(b for b in re.findall(r"```python\n(.*?)```", DOC, re.S) if marker in b)


def test_the_digits_as_the_docs_give_them(tmp_path, infoblocks_plugin):
    assert 'get_registry().build("dataset", "digits").load()' in DOC
    d = get_registry().build("dataset", "digits").load()
    assert d["data"].shape == (1797, 64) and d["data"].dtype == np.float32
    assert d["data"].min() == 0 and d["data"].max() == 16
    assert d["target"].shape == (1797,) and sorted(set(d["target"].tolist())) == list(range(10))
    # the .npz the docs write, read by name by `infoblocks run` for arrays = ["data", "labels"]
    from infoblocks.recipes.cli import main

    np.savez(tmp_path / "digits.npz", labels=d["target"][:64], data=d["data"][:64])
    (tmp_path / "cfg.toml").write_text(
        'recipe = "routine"\narrays = ["data", "labels"]\noutput_model = "main"\n'
        '[models.main]\nname = "mlp"\nout_dim = 2\nhidden_dims = [8]\n'
        '[[phases]]\nname = "t"\nepochs = 1\nsampler = { name = "items", batch_size = 32 }\n'
        'loss = "f25c_labelled"\n')

    @attrs.define(kw_only=True)
    class Labelled(Loss):
        """Checks that `labels` arrived as the labels (ints 0-9), not the pixels."""
        name: ClassVar[str] = "f25c_labelled"
        reports: ClassVar[frozenset[str]] = frozenset()
        consumes: ClassVar[frozenset[str]] = frozenset({"data", "labels"})
        model: str = "main"

        def __call__(self, batch, models, state):
            assert batch["labels"].ndim == 1 and int(batch["labels"].max()) <= 9
            return LossOutput(models[self.model](batch["data"]).pow(2).mean(), {})

    module = types.ModuleType("f25c_labelled")
    module.register_losses = hookimpl(lambda: [Labelled])
    infoblocks_plugin(module, name="f25c_labelled")
    assert main(["run", str(tmp_path / "cfg.toml"), "--data", str(tmp_path / "digits.npz"),
                 "--out", str(tmp_path / "out")]) == 0
    assert np.load(tmp_path / "out" / "outputs.npy").shape == (64, 2)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())


@attrs.define(kw_only=True)
class TwoViewLoss(Loss):
    """The mean squared distance of the two views' codes (a toy two-view objective)."""
    name: ClassVar[str] = "f25c_two_view_loss"
    reports: ClassVar[frozenset[str]] = frozenset({"gap"})
    consumes: ClassVar[frozenset[str]] = frozenset({"data", "view"})
    model: str = "main"

    def __call__(self, batch, models, state):
        gap = (batch["data"] - batch["view"]).abs().mean()
        z, w = models[self.model](batch["data"]), models[self.model](batch["view"])
        return LossOutput((z - w).pow(2).sum(1).mean(), {"gap": gap.detach()})


def test_the_augmentation_example_runs(infoblocks_plugin):
    scope = {"attrs": attrs, "ClassVar": ClassVar, "torch": torch, "ItemSampler": ItemSampler}
    exec(_block("class TwoViews(ItemSampler)"), scope)  # noqa: S102 - the docs' example
    module = types.ModuleType("f25c_two_views")
    module.register_samplers = hookimpl(lambda: [scope["TwoViews"]])
    module.register_losses = hookimpl(lambda: [TwoViewLoss])
    infoblocks_plugin(module, name="f25c_two_views")
    recipe = recipe_from_dict({
        "recipe": "routine", "arrays": ["data"], "output_model": "main", "seed": 0,
        "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [8]}},
        "phases": [{"name": "t", "epochs": 2,
                    "sampler": {"name": "two_views", "batch_size": 16, "noise": 0.1},
                    "loss": "f25c_two_view_loss"}]})
    recipe.fit(np.zeros((32, 3), np.float32))
    gap = recipe.routine_.history.column("gap")[-1]
    # two independent N(0, 0.1²) jitters: E|a - b| = 0.1 · √2 · √(2/π) ≈ 0.113
    assert 0.08 < gap < 0.15

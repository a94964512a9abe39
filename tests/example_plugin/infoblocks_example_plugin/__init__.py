"""Example third-party infoblocks plugin: one block per recipe family, each used by name
inside a built-in recipe, plus a Huber position loss, a learning-rate schedule and a
PCA-regression recipe.

It only uses the public hooks and the registry; the core knows nothing about it.  Each family
module (``embedding``, ``imbalance``, ``mutual_information``, ``fisher``, ``schedules``) lists
its blocks in ``BLOCKS = {"losses": [...], "models": [...], ...}``; the hooks below return
them.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import attrs
import torch

from infoblocks.blocks import Routine
from infoblocks.blocks.data import as_tensor
from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.blocks.recipe import Recipe
from infoblocks.plugins import hookimpl


@attrs.define
class HuberPositionLoss(Loss):
    """mean_i huber_δ(f(x_i) − y_i): a position loss that is robust to outlying targets."""

    name: ClassVar[str] = "huber_position"
    reports: ClassVar[frozenset[str]] = frozenset({"huber"})
    delta: float = 1.0
    model: str = "main"
    input: str = "data"
    target: str = "positions"

    def required_fields(self):
        return frozenset({self.input, self.target})

    def __call__(self, batch, models, state):
        out = models[self.model](batch[self.input])
        value = torch.nn.functional.huber_loss(out, batch[self.target], delta=self.delta)
        return LossOutput(value, {"huber": value.detach()})


@attrs.define(kw_only=True)
class PCARegression(Recipe):
    """Train an MLP to reproduce the leading principal components of the data.

    A new recipe from existing blocks: a ``positions`` global (the built-in ``pca_init``
    transform of the data), a ``main`` model (the built-in ``mlp``) and one phase whose item
    sampler gathers the positions for the loss.  Every block is a registry name, so a config
    can swap any of them (``[models.main] name = ...``) without touching this class.
    """

    name: ClassVar[str] = "pca_regression"
    summary: ClassVar[str] = "MLP regression onto the leading principal components (example plugin)"
    n_components: int = 2
    hidden_dims: list[int] = attrs.field(factory=lambda: [32])
    loss: str = "huber_position"
    epochs: int = 60
    batch_size: int = 50
    learning_rate: float = 1e-2
    seed: int = 0

    def default_globals(self):
        return {"positions": {"input": "data", "transforms": [
            {"name": "pca_init", "n_components": self.n_components}]}}

    def default_models(self):
        return {"main": {"name": "mlp", "hidden_dims": list(self.hidden_dims)}}

    def default_phases(self):
        return [{"name": "regression", "epochs": self.epochs, "learning_rate": self.learning_rate,
                 "sampler": {"name": "items", "batch_size": self.batch_size,
                             "gather": ["positions"]},
                 "loss": self.loss}]

    def build(self, x):
        x = as_tensor(x, "x", ndim=2)
        spec = self.routine_spec()
        return Routine(dataset={"data": x}, global_relations=self.build_globals(spec),
                       models={"main": self.build_model("main", spec, in_dim=x.shape[1],
                                                        out_dim=self.n_components)},
                       phases=self.build_phases(spec), seed=self.seed)

    def fit(self, x, *, checkpoint=None, resume=False):
        # train_routine: the run options every recipe's fit takes (checkpoint / resume)
        self.routine_ = self.train_routine(self.build(x), checkpoint=checkpoint, resume=resume)
        return self

    def relative_error(self, x) -> float:
        self._check_fitted()
        routine = self.routine_
        target = routine.compute_global_relations()["positions"]
        pred = routine.apply(x)
        return float(((pred - target) ** 2).sum() / (target ** 2).sum())

    def run(self, data, out_dir: Path, **fit_options):
        self.fit(data[0], **fit_options)
        self.save(Path(out_dir) / "model")  # PCARegression.load(out_dir / "model") reads it
        return {"relative_error": self.relative_error(data[0])}


def _family_blocks(hook: str) -> list[type]:
    from . import embedding, fisher, imbalance, mutual_information, schedules

    return [cls for module in (embedding, imbalance, mutual_information, fisher, schedules)
            for cls in module.BLOCKS.get(hook, [])]


@hookimpl
def register_distances():
    return _family_blocks("distances")


@hookimpl
def register_relations():
    return _family_blocks("relations")


@hookimpl
def register_transforms():
    return _family_blocks("transforms")


@hookimpl
def register_samplers():
    return _family_blocks("samplers")


@hookimpl
def register_losses():
    return [HuberPositionLoss, *_family_blocks("losses")]


@hookimpl
def register_models():
    return _family_blocks("models")


@hookimpl
def register_recipes():
    return [PCARegression, *_family_blocks("recipes")]


@hookimpl
def register_placements():
    return _family_blocks("placements")


@hookimpl
def register_schedules():
    return _family_blocks("schedules")

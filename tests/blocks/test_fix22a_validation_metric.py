"""A misspelt ``validation.metric`` is refused before training, also for a ``compound``
validation loss and for a loss that declares no ``reports`` (author22-9: a compound's typo
ran every epoch, ignored `patience` and restored no best weights, silently)."""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np
import pytest

from infoblocks.blocks.errors import ContractError
from infoblocks.blocks.losses import CompoundLoss, PositionLoss
from infoblocks.plugins import hookimpl
from infoblocks.plugins.registry import recipe_from_dict

X = np.random.default_rng(0).normal(size=(120, 6)).astype("float32")
PART = {"name": "position", "target": "positions"}


def _routine(metric, loss):
    return {
        "recipe": "routine", "arrays": ["data"], "output_model": "main", "seed": 0,
        "globals": {"positions": {"input": "data", "transforms": [
            {"name": "pca_init", "n_components": 2}]}},
        "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [8]}},
        "phases": [{"name": "regress", "epochs": 2, "patience": 1,
                    "sampler": {"name": "items", "batch_size": 60, "gather": ["positions"]},
                    "loss": {"name": "compound", "losses": [PART]},
                    "validation": {"sampler": {"name": "items", "gather": ["positions"]},
                                   "loss": loss, "metric": metric}}]}


def test_compound_reports_its_parts_metrics():
    loss = CompoundLoss(losses=[PositionLoss(), PositionLoss(target="pca")])
    assert loss.reports == {"0.position", "0.position.position", "1.position",
                            "1.position.position"}


@pytest.mark.parametrize("metric", ["no_such_metric", "position"])
def test_a_compound_validation_metric_is_checked_before_the_first_step(metric):
    with pytest.raises(ContractError, match=r"0\.position\.position"):
        recipe_from_dict(_routine(metric, {"name": "compound", "losses": [PART]})).fit(X)


def test_the_compound_part_metric_is_accepted():
    rec = recipe_from_dict(_routine("0.position.position",
                                    {"name": "compound", "losses": [PART]})).fit(X)
    assert "val_0.position.position" in rec.routine_.history.rows[-1]


@attrs.define
class UndeclaredPosition(PositionLoss):
    name: ClassVar[str] = "fix22a_undeclared_position"
    reports: ClassVar[None] = None  # declares nothing: the contract check cannot see the typo


class _Plugin:
    @hookimpl
    def register_losses(self):
        return [UndeclaredPosition]


def test_a_metric_a_loss_never_records_is_refused_at_the_first_validation(infoblocks_plugin):
    infoblocks_plugin(_Plugin(), "fix22a_undeclared")
    cfg = _routine("no_such_metric", {"name": UndeclaredPosition.name, "target": "positions"})
    with pytest.raises(ContractError, match="records only loss, position"):
        recipe_from_dict(cfg).fit(X)

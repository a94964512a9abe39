"""Routine.apply(x, method=...) calls a model's other head (author22-8: a hybrid model's
`classify` could be reached only through routine_.models["main"].classify)."""

from __future__ import annotations

import pytest
import torch

from infoblocks.blocks import Routine
from infoblocks.blocks.errors import ValidationError


class TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.trunk(x)[:, :2]

    def classify(self, x):
        return self.trunk(x)[:, 2:].softmax(-1)


def test_apply_calls_the_named_method_in_batches():
    module = TwoHeads()
    routine = Routine(models={"main": module})
    x = torch.randn(10, 3)
    with torch.no_grad():
        torch.testing.assert_close(routine.apply(x, batch_size=3, method="classify"),
                                   module.classify(x))
        torch.testing.assert_close(routine.apply(x), module(x))
    with pytest.raises(ValidationError, match="has no method 'clasify'"):
        routine.apply(x, method="clasify")

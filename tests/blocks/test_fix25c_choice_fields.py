"""A block field typed as a choice (``Literal[...]``, an ``Enum``, a union of them), as a
plugin declares PML's ``reducer`` / ``type_of_triplets``: a value outside it is a ConfigError
naming the TOML path, the value and the choices (author25-1: a bare
``cattrs.errors.CattrsError`` traceback from ``infoblocks run``; a str Enum's non-member and a
union of Literals passed unchecked)."""

from __future__ import annotations

import enum
import types
from typing import ClassVar, Literal

import attrs
import numpy as np
import pytest

from infoblocks.blocks.config import _check_values
from infoblocks.blocks.errors import ConfigError
from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.plugins import hookimpl
from infoblocks.plugins.registry import recipe_from_dict


class Triplets(str, enum.Enum):
    ALL = "all"
    HARD = "hard"
    SEMIHARD = "semihard"


@attrs.define(kw_only=True)
class Reduced(Loss):
    name: ClassVar[str] = "f25c_reduced"
    reports: ClassVar[frozenset[str]] = frozenset()
    model: str = "main"
    reducer: Literal["mean", "avg_nonzero", "sum"] = "mean"
    type_of_triplets: Triplets = Triplets.ALL
    power: Literal[1, 2] | None = None

    def required_fields(self):
        return frozenset({"data"})

    def __call__(self, batch, models, state):
        y = models[self.model](batch["data"]).pow(2).sum(-1)
        return LossOutput(y.mean() if self.reducer == "mean" else y.sum(), {})


def _fit(infoblocks_plugin, **loss):
    module = types.ModuleType("f25c_reduced")
    module.register_losses = hookimpl(lambda: [Reduced])
    infoblocks_plugin(module, name="f25c_reduced")
    cfg = {"recipe": "routine", "arrays": ["data"], "output_model": "main",
           "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [4]}},
           "phases": [{"name": "t", "epochs": 1, "sampler": {"name": "items", "batch_size": 8},
                       "loss": {"name": "f25c_reduced", **loss}}]}
    return recipe_from_dict(cfg).fit(np.zeros((16, 3), np.float32))


def test_a_literal_field_given_another_value_names_path_value_and_choices(infoblocks_plugin):
    with pytest.raises(ConfigError, match=r"expected one of 'mean', 'avg_nonzero', 'sum', got "
                       r"'avg_non_zero' @ routine\.phases\.t\.loss\.reducer"):
        _fit(infoblocks_plugin, reducer="avg_non_zero")


def test_a_str_enum_field_refuses_a_non_member(infoblocks_plugin):
    # before: "semi_hard" reached the loss as it was (a str Enum took any string)
    with pytest.raises(ConfigError, match=r"expected one of 'all', 'hard', 'semihard' "
                       r"\(Triplets\), got 'semi_hard' @ routine\.phases\.t\.loss\.type_of"):
        _fit(infoblocks_plugin, type_of_triplets="semi_hard")


def test_good_choices_run_and_an_enum_member_is_built(infoblocks_plugin):
    recipe = _fit(infoblocks_plugin, reducer="sum", type_of_triplets="hard", power=2)
    loss = recipe.routine_.phases[0].loss
    assert (loss.reducer, loss.type_of_triplets, loss.power) == ("sum", Triplets.HARD, 2)


@pytest.mark.parametrize(("type_", "value", "message"), [
    (Literal[1, 2] | None, True, "expected one of 1, 2 or None (leave the key out), got True"),
    (Literal["a"] | Literal["b"], "c", "expected one of 'a', 'b', got 'c'"),  # was unchecked
    (Literal["a"] | int, "c", "expected one of 'a' or an integer, got 'c'"),
    (Literal["a", "b"] | list[str], "c", "expected one of 'a', 'b' or a list, got 'c'"),
    (list[Literal["a", "b"]], ["a", "c"], "expected one of 'a', 'b', got 'c' @ p.k[1]"),
    (Triplets, "c", "expected one of 'all', 'hard', 'semihard' (Triplets), got 'c'"),
])
def test_choice_typing_forms(type_, value, message):
    values, problems = _check_values({"k": value}, {"k": type_}, "p")
    assert values == {} and len(problems) == 1 and problems[0].startswith(message)


def test_choice_typing_forms_that_fit():
    types_ = {"a": Literal["a"] | int, "b": Triplets, "c": Literal["x", "y"] | list[str],
              "d": Literal[1, 2]}
    values, problems = _check_values({"a": 3, "b": "hard", "c": ["z"], "d": 2}, types_, "p")
    assert problems == [] and values == {"a": 3, "b": Triplets.HARD, "c": ["z"], "d": 2}

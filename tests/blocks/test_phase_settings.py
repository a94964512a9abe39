"""A phase's settings without a check are checked: a ``patience`` below 1 (an early stop
at the first validation), a negative ``min_epochs`` or ``momentum`` and ``report_every = 0``
were accepted silently; a ``validation`` given as a string was a bare AttributeError from
cattrs, as a number "invalid value for type" (baduser19 F18)."""

import pytest

from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.blocks.phases import TrainingPhase
from infoblocks.plugins.registry import recipe_from_dict

BASE = {"name": "fit", "epochs": 1, "sampler": {"name": "items", "batch_size": 10},
        "loss": "position"}


@pytest.mark.parametrize("key, value, match", [
    ("patience", -1, "`patience` must be a positive integer, got -1"),
    # 0 stopped after the first validation even when it improved (wait 0 >= patience 0)
    ("patience", 0, "`patience` must be a positive integer, got 0"),
    ("min_epochs", -1, "`min_epochs` must be a non-negative integer, got -1"),
    ("report_every", 0, "`report_every` must be a positive integer, got 0"),
    ("momentum", -0.5, "`momentum` must be a non-negative number, got -0.5"),
])
def test_a_phase_refuses_settings_out_of_range(key, value, match):
    with pytest.raises(ValidationError, match=match):
        TrainingPhase(**{**BASE, key: value})
    TrainingPhase(**{**BASE, key: 0 if key not in ("report_every", "patience") else 1})


@pytest.mark.parametrize("value", ["x", 3])
def test_a_validation_that_is_not_a_table_is_named(value):
    recipe = recipe_from_dict({"recipe": "routine", "arrays": ["data", "positions"],
                               "models": {"main": {"name": "mlp", "out_dim": 2}},
                               "phases": [{**BASE, "validation": value}]})
    with pytest.raises(ConfigError, match=r"expected a table .* @ routine.phases.fit.validation"):
        recipe.build_phases()

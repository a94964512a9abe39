"""Property-based tests (hypothesis): the strict converter and the validators against type
confusion, NaN and extreme values; every recipe's dict <-> TOML round trip over random valid
hyperparameters."""

from __future__ import annotations

import math
import tomllib

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from infoblocks.blocks.assembly import shortcut_fields
from infoblocks.blocks.config import structure
from infoblocks.blocks.errors import ConfigError, InfoblocksError
from infoblocks.blocks.validators import non_negative, positive, positive_int
from infoblocks.plugins.registry import get_registry, recipe_from_dict

_field = attrs.make_class("F", {"value": attrs.field()})
_attribute = attrs.fields(_field).value

not_an_int = st.one_of(st.booleans(), st.text(max_size=5), st.none(),
                       st.floats(allow_nan=True).filter(lambda f: not float(f).is_integer()),
                       st.lists(st.integers(), max_size=2))


@attrs.define
class _Typed:
    count: int = 1
    rate: float = 1.0
    flag: bool = False
    label: str = "a"


@given(st.integers())
def test_ints_pass_the_converter_unchanged(value):
    assert structure({"count": value}, _Typed, "t").count == value


@given(not_an_int)
def test_anything_else_is_refused_for_an_int(value):
    with pytest.raises(ConfigError, match=r"@ t.count"):
        structure({"count": value}, _Typed, "t")


@given(st.one_of(st.text(max_size=5), st.integers(), st.floats(), st.none()))
def test_only_a_bool_is_a_bool(value):
    with pytest.raises(ConfigError, match=r"expected true or false"):
        structure({"flag": value}, _Typed, "t")


@given(st.one_of(st.booleans(), st.text(max_size=3), st.none()))
def test_a_float_field_refuses_non_numbers(value):
    with pytest.raises(ConfigError, match=r"expected a number"):
        structure({"rate": value}, _Typed, "t")


@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.none()))
def test_a_string_field_refuses_non_strings(value):
    with pytest.raises(ConfigError, match=r"expected a string"):
        structure({"label": value}, _Typed, "t")


@given(st.one_of(st.floats(), st.integers(), st.booleans(), st.text(max_size=3)))
def test_positive_accepts_exactly_the_finite_positive_numbers(value):
    good = (not isinstance(value, (bool, str)) and math.isfinite(value) and value > 0)
    if good:
        positive(None, _attribute, value)
    else:
        with pytest.raises(InfoblocksError):
            positive(None, _attribute, value)


@given(st.one_of(st.floats(), st.integers(), st.booleans()))
def test_non_negative_and_positive_int(value):
    finite = not isinstance(value, bool) and math.isfinite(value)
    if finite and value >= 0:
        non_negative(None, _attribute, value)
    else:
        with pytest.raises(InfoblocksError):
            non_negative(None, _attribute, value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        positive_int(None, _attribute, value)
    else:
        with pytest.raises(InfoblocksError):
            positive_int(None, _attribute, value)


def _numeric_fields(cls):
    out = {}
    for field in shortcut_fields(cls):
        default = field.default
        if isinstance(default, bool) or default is attrs.NOTHING:
            continue
        if isinstance(default, int) and default > 0:
            out[field.name] = st.integers(min_value=default, max_value=2 * default + 1)
        elif isinstance(default, float) and math.isfinite(default) and default > 0:
            out[field.name] = st.floats(min_value=default / 2, max_value=default * 2)
    return out


RECIPES = [e.name for e in get_registry().entries("recipe")]


@pytest.mark.parametrize("name", RECIPES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_valid_recipes_round_trip_through_toml(name, data):
    cls = get_registry().get("recipe", name)
    fields = _numeric_fields(cls)
    chosen = data.draw(st.fixed_dictionaries({}, optional=fields))
    try:
        recipe = cls(**chosen)
        recipe.routine_spec()
    except InfoblocksError:  # a cross-field rule (e.g. min_dist <= spread)
        assume(False)
    again = recipe_from_dict(tomllib.loads(recipe.to_toml()))
    assert again.to_dict() == recipe.to_dict()
    full = recipe_from_dict(tomllib.loads(recipe.to_toml(full=True)))
    assert full.routine_spec() == recipe.routine_spec()

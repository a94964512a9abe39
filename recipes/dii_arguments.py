"""Argument converters and checks of the DII recipe, and the unit handling of its block specs
(a helper module of :mod:`infoblocks.recipes.dii`; it defines no recipe)."""

from __future__ import annotations

import copy
import math
from typing import Any

import attrs
import numpy as np

from infoblocks.blocks.errors import ConfigError, ValidationError
from infoblocks.plugins.registry import get_registry


# ----------------------------------------------------------------------------- field helpers


def _periods(value: Any) -> list[float] | None:
    """None, one number for all features, or one entry per feature (None -> 0: not periodic).
    A list of floats is kept as the same object (``sklearn.base.clone`` checks identity)."""
    if value is None:
        return None
    if isinstance(value, list) and all(type(v) is float for v in value):
        return value
    if _is_real(value):
        return [float(value)]
    entries = None
    if not isinstance(value, (str, bytes, dict)) and hasattr(value, "__iter__"):
        entries = list(value)
    if entries is not None and all(v is None or _is_real(v) for v in entries):
        return [0.0 if v is None else float(v) for v in entries]
    raise ValidationError(
            f"`periods` must be None or a list with one period per feature (0 or None for a "
            f"non-periodic one), got {value!r}."
    )


def _is_real(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(
        value, (int, float, np.integer, np.floating))


def _entries(value: Any, name: str, what: str) -> list[Any]:
    """The entries of a list-like argument, or a ValidationError naming ``name``."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ValidationError(f"`{name}` must be None or a list of {what}, got {value!r}.")
    entries = list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else list(value)
    if not entries:
        raise ValidationError(f"`{name}` must be None or a non-empty list of {what}, got "
                              f"{value!r}.")
    return entries


def _params_init(value: Any) -> list[float] | None:
    """None or one initial weight per learned weight (finite numbers, not all zero)."""
    if value is None or (isinstance(value, list) and all(type(v) is float for v in value)):
        return value
    entries = _entries(value, "params_init", "numbers (one initial weight per feature)")
    if not all(_is_real(v) for v in entries):
        raise ValidationError(
            f"`params_init` must be a list of numbers (one initial weight per feature, or per "
            f"group of `params_groups`), got {value!r}.")
    return [float(v) for v in entries]


def _params_groups(value: Any) -> list[int] | None:
    """None or the sizes of consecutive feature groups (positive integers, never truncated:
    1.5 is an error, not 1)."""
    if value is None or (isinstance(value, list) and all(type(v) is int for v in value)):
        return value
    entries = _entries(value, "params_groups", "positive integers (group sizes)")
    if not all(not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, np.integer))
               for v in entries):
        raise ValidationError(
            f"`params_groups` must be a list of positive integers (the sizes of consecutive "
            f"feature groups sharing a weight), got {value!r}.")
    return [int(v) for v in entries]


def _params_init_entries(instance, attribute, value) -> None:
    if value is not None and (not all(math.isfinite(v) for v in value)
                              or not any(v != 0 for v in value)):
        raise ValidationError(f"`params_init` must be finite and not all zero, got {value}.")


def _params_groups_entries(instance, attribute, value) -> None:
    if value is not None and any(v < 1 for v in value):
        raise ValidationError(f"`params_groups` entries must be positive integers, got {value}.")


def _periods_entries(instance, attribute, value) -> None:
    if value is not None and any(not math.isfinite(p) or p < 0 for p in value):
        raise ValidationError(
            f"`{attribute.name}` entries must be positive periods or 0 (not periodic), got {value}."
        )


def _block_spec(instance, attribute, value) -> None:
    if isinstance(value, str) and value:
        return
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return
    raise ValidationError(f"`{attribute.name}` must name a registered block (\"name\" or "
                          f"{{name = \"...\", ...}}), got {value!r}.")


def _require_periods(spec: Any, shortcut: str) -> None:
    """A distance whose ``periods`` field is required, left without them, is refused naming
    the shortcut that gives them (user13: "Invalid distance 'periodic': field `periods` is
    required" for DII's distance_A = "periodic", whose setting is `periods_A`)."""
    if isinstance(spec, dict) and "periods" in spec:
        return
    name = spec if isinstance(spec, str) else spec.get("name", "") if isinstance(spec, dict) \
        else None
    try:
        cls = get_registry().get("distance", name) if name else None
    except Exception:  # noqa: BLE001 - an unknown name is reported when the block is built
        cls = None
    if cls is None or not attrs.has(cls):
        return
    field = {f.alias or f.name: f for f in attrs.fields(cls)}.get("periods")
    if field is not None and field.default is attrs.NOTHING:
        slot = "distance_" + shortcut[-1] if shortcut.startswith("periods_") else "distance"
        from infoblocks.blocks.imbalance.distances import FeatureWeightedDistance

        keep = "" if shortcut != "periods_A" or issubclass(cls, FeatureWeightedDistance) else (
            f"; and space A's distance must take the learnt weights, which {name!r} does not: "
            "keep distance_A = 'weighted_sqeuclidean', which takes `periods_A` itself")
        raise ConfigError(
            f"{slot} = {name!r} needs the period of each feature: set `{shortcut}` (one entry "
            f"per feature, 0 = not periodic, e.g. [0, 6.283] for an angle in the second)"
            f"{keep}.")


def _with_periods(spec: str | dict[str, Any], periods: list[float] | None,
                  shortcut: str = "periods") -> Any:
    """A distance spec with the recipe's periods filled in (when any feature is periodic);
    a distance without a ``periods`` field is refused naming the shortcut ``shortcut``."""
    if periods is None or not any(periods):
        _require_periods(spec, shortcut)
        return copy.deepcopy(spec)
    out = {"name": spec} if isinstance(spec, str) else copy.deepcopy(spec)
    if isinstance(out, dict) and "periods" not in out:
        try:
            cls = get_registry().get("distance", out.get("name", ""))
        except Exception:  # noqa: BLE001 - an unknown name is reported when the block is built
            cls = None
        if cls is not None and attrs.has(cls) and \
                "periods" not in {f.alias or f.name for f in attrs.fields(cls)}:
            slot = "distance_" + shortcut[-1] if shortcut.startswith("periods_") else "distance"
            raise ConfigError(
                f"`{shortcut}` fills the `periods` field of {slot} ({out.get('name')!r}), "
                "which has none: give the distance a `periods` field (one period per "
                f"feature, 0 = not periodic) or remove `{shortcut}`.")
        out["periods"] = list(periods)
    return out


def _in_unit(spec: Any, kind: str, unit: float) -> tuple[Any, float]:
    """``spec`` with ``unit`` filled in where its block has a ``unit`` field and the spec
    leaves it out, and the factor unit^−unit_power that converts a λ given in the data's
    units into the block's (1 where no unit applies).  Blocks without the field (a plugin's
    distance that does not opt in) see the data in the user's units."""
    if not isinstance(spec, (str, dict)):
        return spec, 1.0
    params = {"name": spec} if isinstance(spec, str) else dict(spec)
    try:
        cls = get_registry().get(kind, params.get("name", ""))
    except Exception:  # noqa: BLE001 - an unknown name is reported when the block is built
        return spec, 1.0
    if not attrs.has(cls) or "unit" not in {f.alias or f.name for f in attrs.fields(cls)
                                            if f.init}:
        return spec, 1.0
    params.setdefault("unit", unit)
    given = params["unit"]
    if isinstance(given, bool) or not isinstance(given, (int, float)) or not given > 0:
        return params, 1.0  # refused with its name when the block is built
    return params, float(given) ** -float(getattr(cls, "unit_power", 0.0))


def _softmax_in_unit(spec: Any, factor: float) -> Any:
    """A softmax spec whose fixed ``lambda_value`` (data units) is converted by ``factor``."""
    if factor == 1.0 or not isinstance(spec, dict) or spec.get("lambda_value") is None:
        return spec
    return {**spec, "lambda_value": spec["lambda_value"] * factor}


def _loss_in_units(spec: Any, units: dict[str, float]) -> Any:
    """A loss spec with distances ``distance_A`` / ``distance_B`` (the DII loss, or a
    plugin's loss with those fields) whose distances measure the arrays ``input`` /
    ``target`` in their units (``units``: dataset key -> :func:`data_unit`), its fixed λ
    (``lambda_init`` / ``lambda_final``, the softmax's ``lambda_value``) converted to match."""
    if not isinstance(spec, (str, dict)):
        return spec
    params = {"name": spec} if isinstance(spec, str) else dict(spec)
    try:
        cls = get_registry().get("loss", params.get("name", ""))
    except Exception:  # noqa: BLE001 - an unknown name is reported when the block is built
        return spec
    fields = attrs.fields_dict(cls) if attrs.has(cls) else {}
    if "distance_A" not in fields:
        return spec

    def given(key: str) -> Any:
        if key in params:
            return params[key]
        default = fields[key].default if key in fields else None
        return default if isinstance(default, (str, dict)) else None

    factor = 1.0
    if given("distance_A") is not None:
        params["distance_A"], factor = _in_unit(given("distance_A"), "distance",
                                                units.get(given("input"), 1.0))
    if given("distance_B") is not None:
        params["distance_B"], _ = _in_unit(given("distance_B"), "distance",
                                           units.get(given("target"), 1.0))
    for key in ("lambda_init", "lambda_final"):
        value = params.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            params[key] = value * factor
    if "softmax" in params:
        params["softmax"] = _softmax_in_unit(params["softmax"], factor)
    return params


def _fill(spec: Any, kind: str, path: str, **context: Any) -> Any:
    """``spec`` with ``context`` set on the fields the block has and the spec leaves out."""
    if not isinstance(spec, (str, dict)):
        return spec
    params = {"name": spec} if isinstance(spec, str) else dict(spec)
    cls = get_registry().get(kind, params.get("name", ""))
    fields = {f.alias or f.name for f in attrs.fields(cls) if f.init} if attrs.has(cls) else set()
    for key, value in context.items():
        if key in fields and key not in params:
            params[key] = value
    return params


# ----------------------------------------------------------------------------- the recipe

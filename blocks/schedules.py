"""Learning-rate schedules: the block kind ``schedule``, which a phase's ``lr_schedule`` names.

A schedule gives the factor of the phase's base ``learning_rate`` at each optimizer step:
``factor(step, total_steps) -> float`` (``step`` 0-based, ``total_steps`` = epochs ×
batches per epoch).  It is a pure function of the step and its fields, so a checkpoint needs
no schedule state and a resumed phase follows it exactly.  ``lr_schedule`` is a registered name
(``"none"``, ``"cos"``, ``"exp"``, a plugin's) or a table ``{name = ..., **fields}``; plugins
add schedules with the hook ``register_schedules``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from .base import Block, _provider, not_implemented
from .errors import RegistryError, ValidationError
from .numerics import cosine_factor
from .validators import non_negative_int, positive


@attrs.define
class Schedule(Block):
    """Base of the ``schedule`` kind: ``factor(step, total_steps) -> float``, the multiplier
    of the phase's ``learning_rate`` at optimizer step ``step`` (0-based) of ``total_steps``;
    finite and ≥ 0, and a function of the step and the block's fields alone (no state:
    checkpoints hold none, a resumed phase follows the schedule exactly)."""

    kind: ClassVar[str] = "schedule"
    #: the factor is 1 at every step: the phase makes no scheduler (no call per step)
    constant: ClassVar[bool] = False
    #: fields the phase fills from its own settings when ``lr_schedule`` leaves them out:
    #: block field -> phase field (``exp``: ``rate`` <- ``lr_decay_rate`` ...)
    phase_fields: ClassVar[Mapping[str, str]] = {}

    def factor(self, step: int, total_steps: int) -> float:
        raise not_implemented(self, "factor")


@attrs.define
class ConstantSchedule(Schedule):
    """The base learning rate at every step: factor 1."""

    name: ClassVar[str] = "none"
    constant: ClassVar[bool] = True

    def factor(self, step: int, total_steps: int) -> float:
        return 1.0


@attrs.define
class CosineSchedule(Schedule):
    """Half cosine from 1 at step 0 to 0 at ``total_steps``: ½ (1 + cos(π step / total))."""

    name: ClassVar[str] = "cos"

    def factor(self, step: int, total_steps: int) -> float:
        return cosine_factor(step, total_steps)


@attrs.define
class ExponentialSchedule(Schedule):
    """``rate`` ** (step // ``steps``) (staircase), or ``rate`` ** (step / ``steps``) with
    ``staircase=False`` (optax's ``exponential_decay``).  Named by string, it takes the
    phase's ``lr_decay_rate``, ``lr_decay_steps`` and ``lr_decay_staircase``; a table's own
    values come first."""

    name: ClassVar[str] = "exp"
    phase_fields: ClassVar[Mapping[str, str]] = {
        "rate": "lr_decay_rate", "steps": "lr_decay_steps", "staircase": "lr_decay_staircase"}

    rate: float = attrs.field(default=0.5, validator=positive)
    #: steps per decay by ``rate`` (0 is taken as 1)
    steps: int = attrs.field(default=10, validator=non_negative_int)
    staircase: bool = True

    def factor(self, step: int, total_steps: int) -> float:
        steps = max(self.steps, 1)
        return self.rate ** (step // steps if self.staircase else step / steps)


@attrs.define
class WarmupCosineSchedule(Schedule):
    """A linear warm-up, (step + 1) / ``warmup_steps`` for the first ``warmup_steps`` steps,
    then a half cosine from 1 to 0 over the remaining steps."""

    name: ClassVar[str] = "warmup_cos"

    warmup_steps: int = attrs.field(default=100, validator=non_negative_int)

    def factor(self, step: int, total_steps: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return cosine_factor(step - self.warmup_steps, total_steps - self.warmup_steps)


def _registry() -> Any:
    from infoblocks.plugins.registry import get_registry  # lazily: blocks import no plugin

    return get_registry()


def schedule_spec(instance: Any, attribute: Any, value: Any) -> None:
    """attrs validator of an ``lr_schedule`` (a phase's, a recipe's shortcut): a registered
    schedule's name, a table ``{name = ..., **fields}`` that builds, or a :class:`Schedule`."""
    if isinstance(value, Schedule):
        return
    name = value if isinstance(value, str) else (
        value.get("name") if isinstance(value, Mapping) else None)
    registry = _registry()
    if not isinstance(name, str):
        raise ValidationError(
            f"`{attribute.name}` must name a learning-rate schedule: one of "
            f"{registry.names('schedule')} (a plugin may add more) or a table {{name = ..., "
            f"...its fields}}; got {value!r}.")
    if ("schedule", name) not in registry:
        try:
            registry.entry("schedule", name)
        except RegistryError as exc:  # the registry's close matches and known names
            raise ValidationError(f"`{attribute.name}` must be one of the registered schedules "
                                  f"(or a table {{name = ..., ...its fields}}): {exc}") from None
    if isinstance(value, Mapping):  # its fields, checked by name and type
        registry.build("schedule", dict(value), path=attribute.name)


def schedule_data(value: Any) -> Any:
    """attrs converter of a recipe's ``lr_schedule``: a :class:`Schedule` instance becomes its
    data form ``{"name": ..., **fields}`` (what ``to_dict`` / TOML write); names and tables
    stay as they are."""
    return value.describe() if isinstance(value, Schedule) else value


def build_schedule(spec: Any, settings: Any = None, path: str = "lr_schedule") -> Schedule:
    """The :class:`Schedule` of an ``lr_schedule`` spec, through the registry.  ``settings``
    (a phase) gives the fields the schedule declares in ``phase_fields`` that the spec leaves
    out."""
    if isinstance(spec, Schedule):
        return spec
    registry = _registry()
    table = {"name": spec} if isinstance(spec, str) else dict(spec)
    cls = registry.get("schedule", table.get("name"))
    if settings is not None:
        for field, source in cls.phase_fields.items():
            table.setdefault(field, getattr(settings, source))
    return registry.build("schedule", table, path=path)


def checked_factor(schedule: Schedule, step: int, total_steps: int, where: str) -> float:
    """``schedule.factor(step, total_steps)``, refused unless a finite number ≥ 0."""
    value = schedule.factor(step, total_steps)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value) or value < 0:
        raise ValidationError(  # the plugin named, as for a schedule that raises
            f"{where}: schedule {schedule.name!r}{_provider(schedule)} gave the learning-rate "
            f"factor {value!r} at step {step} of {total_steps}; factor(step, total_steps) must "
            "return a finite float >= 0 (the multiplier of the phase's learning_rate).")
    return float(value)


__all__ = ["Schedule", "ConstantSchedule", "CosineSchedule", "ExponentialSchedule",
           "WarmupCosineSchedule", "schedule_spec", "schedule_data", "build_schedule",
           "checked_factor"]

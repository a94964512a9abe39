"""A learning-rate schedule: step decay at fractions of the phase, usable in any recipe's
``lr_schedule`` by name (``lr_schedule = "step_decay"``) or as a table
(``lr_schedule = {name = "step_decay", milestones = [0.5], gamma = 0.3}``)."""

from __future__ import annotations

from typing import ClassVar

import attrs

from infoblocks.blocks.schedules import Schedule


def _fractions(instance, attribute, value) -> None:
    if not all(0 < m < 1 for m in value) or list(value) != sorted(value):
        raise ValueError(f"`{attribute.name}` must be increasing fractions of the phase in "
                         f"(0, 1), got {value!r}.")


@attrs.define
class StepDecaySchedule(Schedule):
    """``gamma`` ** (milestones passed): the factor drops by ``gamma`` once the step reaches
    each fraction of ``milestones`` of the phase's ``total_steps``."""

    name: ClassVar[str] = "step_decay"

    milestones: list[float] = attrs.field(factory=lambda: [0.5, 0.75], validator=_fractions)
    gamma: float = 0.1

    def factor(self, step: int, total_steps: int) -> float:
        passed = sum(step >= m * total_steps for m in self.milestones)
        return self.gamma ** passed


BLOCKS = {"schedules": [StepDecaySchedule]}

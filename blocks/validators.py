"""attrs validators shared by blocks and recipes.

Each raises :class:`~infoblocks.blocks.errors.ValidationError` naming the field and what it
accepts, e.g. "`epochs` must be a positive integer, got -3."  Compose with
``attrs.validators.optional`` for fields that may be None.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from infoblocks.blocks.errors import ValidationError

Validator = Callable[[Any, Any, Any], None]


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _is_number(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
            and math.isfinite(value))


def positive_int(instance: Any, attribute: Any, value: Any) -> None:
    if not (_is_int(value) and value > 0):
        raise ValidationError(f"`{attribute.name}` must be a positive integer, got {value!r}.")


def positive_ints(instance: Any, attribute: Any, value: Any) -> None:
    """A sequence of positive integers (layer widths), the field named in the message."""
    if not all(_is_int(h) and h > 0 for h in value):
        raise ValidationError(f"`{attribute.name}` must hold positive integers, got {list(value)}.")


def non_negative_int(instance: Any, attribute: Any, value: Any) -> None:
    if not (_is_int(value) and value >= 0):
        raise ValidationError(f"`{attribute.name}` must be a non-negative integer, got {value!r}.")


def positive(instance: Any, attribute: Any, value: Any) -> None:
    if not (_is_number(value) and value > 0):
        raise ValidationError(f"`{attribute.name}` must be a positive number, got {value!r}.")


def non_negative(instance: Any, attribute: Any, value: Any) -> None:
    if not (_is_number(value) and value >= 0):
        raise ValidationError(f"`{attribute.name}` must be a non-negative number, got {value!r}.")


def fraction(instance: Any, attribute: Any, value: Any) -> None:
    if not (_is_number(value) and 0 <= value <= 1):
        raise ValidationError(f"`{attribute.name}` must be a fraction in [0, 1], got {value!r}.")


def device(instance: Any, attribute: Any, value: Any) -> None:
    """A device name: "cpu", "cuda", "cuda:N" or "auto" (a torch.device is accepted too);
    whether CUDA is present is checked when training starts."""
    import re

    import torch

    if isinstance(value, torch.device):
        value = str(value)
    if not isinstance(value, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", value):
        raise ValidationError(f"`{attribute.name}` = {value!r} is not a device; use 'cpu', "
                              "'cuda', 'cuda:N' or 'auto'.")


def one_of(*options: Any, otherwise: str = "") -> Validator:
    """The value must be one of ``options`` (compared with ``in``).  ``otherwise``: a
    sentence added to the error, where what else the user may mean goes (``{value}`` is
    the value given): a shortcut that chooses among built-in blocks names the section that
    takes a registered block of one's own."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value not in options:
            hint = f" {otherwise.format(value=value)}" if otherwise else ""
            raise ValidationError(f"`{attribute.name}` must be one of {list(options)}, "
                                  f"got {value!r}.{hint}")

    return check


__all__ = ["device", "fraction", "non_negative", "non_negative_int", "one_of", "positive",
           "positive_int", "positive_ints"]

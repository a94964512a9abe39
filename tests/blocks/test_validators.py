"""The shared attrs validators: each names the field and says what it accepts."""

import attrs
import numpy as np
import pytest
import torch
from attrs.validators import optional

from infoblocks.blocks.data import intra_op_threads
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.validators import (non_negative, non_negative_int, one_of, positive,
                                          positive_int)


@attrs.define
class Options:
    epochs: int = attrs.field(default=1, validator=positive_int)
    seed: int = attrs.field(default=0, validator=non_negative_int)
    rate: float = attrs.field(default=1.0, validator=positive)
    l1: float = attrs.field(default=0.0, validator=non_negative)
    rows: int | None = attrs.field(default=None, validator=optional(positive_int))
    decay: str | None = attrs.field(default=None, validator=one_of(None, "cos", "exp"))


@pytest.mark.parametrize("field, value, fragment", [
    ("epochs", 0, "`epochs` must be a positive integer, got 0."),
    ("epochs", True, "`epochs` must be a positive integer, got True."),
    ("epochs", 2.0, "`epochs` must be a positive integer, got 2.0."),
    ("seed", -1, "`seed` must be a non-negative integer, got -1."),
    ("rate", 0.0, "`rate` must be a positive number, got 0.0."),
    ("rate", float("nan"), "`rate` must be a positive number, got nan."),
    ("rate", "1e-3", "`rate` must be a positive number, got '1e-3'."),
    ("l1", -0.1, "`l1` must be a non-negative number, got -0.1."),
    ("l1", float("inf"), "`l1` must be a non-negative number, got inf."),
    ("rows", 0, "`rows` must be a positive integer, got 0."),
    ("decay", "linear", "`decay` must be one of [None, 'cos', 'exp'], got 'linear'."),
])
def test_validators_reject_with_the_field_name(field, value, fragment):
    with pytest.raises(ValidationError) as info:
        Options(**{field: value})
    assert str(info.value) == fragment


def test_validators_accept_valid_and_numpy_values():
    options = Options(epochs=np.int64(3), seed=0, rate=np.float32(0.5), l1=0, rows=None,
                      decay="cos")
    assert (options.epochs, options.rate, options.decay) == (3, 0.5, "cos")


def test_intra_op_threads_restores_the_previous_setting():
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), intra_op_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before


def test_device_names():
    import attrs
    import torch

    from infoblocks.blocks.validators import device

    attribute = attrs.fields(attrs.make_class("D", {"device": attrs.field()})).device
    for good in ("cpu", "cuda", "cuda:1", "auto", torch.device("cpu")):
        device(None, attribute, good)
    for bad in ("gpu", "cuda:-1", "mps", 3, None):
        with pytest.raises(ValidationError, match=r"`device` = .* is not a device"):
            device(None, attribute, bad)

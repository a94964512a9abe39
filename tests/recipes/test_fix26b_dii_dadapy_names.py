"""fix26b (author26-9, DII part): docs/dii.md says where DADApy's constructor arguments
`compute_error` / `discard_close_ind` went (final_dii's arguments), and what it says holds."""
from pathlib import Path

import numpy as np
import pytest

from infoblocks.blocks.errors import UnknownParameterError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "dii.md"


def test_the_docs_point_dadapy_constructor_arguments_at_final_dii():
    text = " ".join(DOCS.read_text().split())
    assert ("From DADApy's `DiffImbalance(...)`: `compute_error` and `discard_close_ind` are not "
            "constructor arguments here but arguments of `final_dii(compute_error=..., "
            "discard_close_ind=...)`") in text


@pytest.mark.parametrize("name, value", [("compute_error", True), ("discard_close_ind", 3)])
def test_what_the_docs_say_holds(name, value):
    from infoblocks.recipes import DII
    with pytest.raises(UnknownParameterError, match=name):
        DII(**{name: value})
    rng = np.random.default_rng(0)
    A = rng.standard_normal((40, 3)).astype(np.float32)
    m = DII(epochs=2).fit(A, A[:, :1])
    dii, _ = m.final_dii(**{name: value})
    assert 0.0 <= dii < 2.0

"""RelationData.restrict(index): a pairwise global among a batch's items, (B, B), the same
for every form (author22-7: a plugin loss had no documented way to read one; the built-in
`kl` used an undocumented helper)."""

from __future__ import annotations

import torch

from infoblocks.blocks.relations import DenseRelations


def test_restrict_is_the_dense_submatrix_in_every_form():
    values = torch.rand(12, 12, generator=torch.Generator().manual_seed(0))
    values[values < 0.6] = 0  # a sparse pattern
    dense = DenseRelations(values)
    index = torch.tensor([5, 0, 11, 5, 3])  # an item twice: its row and column twice
    expected = values[index][:, index]
    for form in (dense, dense.to_sparse(), dense.to_sparse().to_edges()):
        out = form.restrict(index)
        assert out.shape == (5, 5)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)

import numpy as np
import pytest
import scipy.sparse
import torch

from infoblocks.blocks.errors import SizeLimitError, ValidationError
from infoblocks.blocks.relations import (DenseRelations, DistsFromTo, EdgeRelations, PDist,
                                         SparseRelations)


def test_pdist_uses_the_named_metric():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert PDist().compute(x).values[0, 1] == pytest.approx(5.0)
    assert PDist(metric="sqeuclidean").compute(x).values[0, 1] == pytest.approx(25.0)


def test_pdist_refuses_matrices_above_the_limit():
    with pytest.raises(SizeLimitError, match="NeighborBasedPDist"):
        PDist(max_elements=99).compute(torch.zeros(10, 2))


def test_dists_from_to_gives_edge_distances():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    edges = DistsFromTo().compute(x, source=[0, 1], target=[2, 2])
    assert isinstance(edges, EdgeRelations)
    assert edges.values.tolist() == pytest.approx([3.0, 2.0])


def test_sparse_roundtrip_through_scipy_and_dense():
    m = scipy.sparse.random(7, 7, density=0.3, random_state=0, format="csr")
    rel = SparseRelations.from_scipy(m)
    assert np.allclose(rel.to_dense().values.numpy(), m.toarray(), atol=1e-6)
    assert np.allclose(rel.to_scipy().toarray(), m.toarray(), atol=1e-6)


def test_sparse_densify_above_limit_is_an_error_not_an_oom():
    big = SparseRelations(torch.tensor([0]), torch.tensor([1]), torch.tensor([1.0]),
                          (200_000, 200_000))
    with pytest.raises(SizeLimitError, match="200000 x 200000"):
        big.to_dense()


def test_sparse_indices_outside_shape_are_rejected():
    with pytest.raises(ValidationError, match="exceed its shape"):
        SparseRelations(torch.tensor([5]), torch.tensor([0]), torch.tensor([1.0]), (3, 3))


def test_dense_to_sparse_keeps_nonzeros():
    dense = DenseRelations(torch.tensor([[0.0, 2.0], [0.5, 0.0]]))
    sparse = dense.to_sparse()
    assert sparse.nnz == 2
    assert torch.equal(sparse.to_dense().values, dense.values)

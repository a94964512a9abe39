"""Layouts: the initial positions of an embedding (spectral, PCA) and free coordinates."""

from __future__ import annotations

import logging

import attrs
from attrs.validators import optional
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
import torch
from typing import ClassVar

from ..errors import ValidationError
from ..data import LazyRows
from ..models import PCA_SAMPLE_ROWS, Model
from ..numerics import pca_axes
from ..relations import SparseRelations
from ..state import TrainState
from ..transforms import Transform
from ..validators import positive, positive_int

log = logging.getLogger("infoblocks.blocks.embedding")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


# ----------------------------------------------------------------------------- free layout


class _FreePositionsModule(torch.nn.Module):
    """``index (m,) -> positions[index] (m, d)``; ``on_phase_start`` copies the start layout once."""

    def __init__(self, n_items: int, n_components: int, init: str | None,
                 scale: float | None) -> None:
        super().__init__()
        self.positions = torch.nn.Parameter(torch.zeros(n_items, n_components))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.init, self.scale = init, scale

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.positions.index_select(0, index.long())  # backward: index_add

    def lookup_table(self) -> torch.Tensor | None:
        """The tensor T with ``self(index) == T.index_select(0, index)`` (the positions), for a
        loss that indexes pairs of items in T directly; None in a subclass that changes
        ``forward``."""
        return self.positions if type(self).forward is _FreePositionsModule.forward else None

    @torch.no_grad()
    def on_phase_start(self, state: TrainState) -> None:
        if bool(self.initialised) or self.init is None:
            return
        start = torch.as_tensor(state.lookup(self.init)).to(self.positions)
        _check(tuple(start.shape) == tuple(self.positions.shape),
               f"FreePositions: the start layout {self.init!r} has shape {tuple(start.shape)}, "
               f"expected {tuple(self.positions.shape)}.")
        if self.scale is not None:
            start = start - start.mean(0)
            start = start * (self.scale / start[:, 0].std().clamp_min(1e-12))
        self.positions.copy_(start)
        self.initialised.fill_(True)


@attrs.define
class FreePositions(Model):
    """Free coordinates of the items, the parameters themselves: ``index -> Y[index]``.

    A non-parametric layout (UMAP's own optimisation of Y, n × ``n_components``) trained with
    the same losses as a network: a loss with ``input="items"`` (or ``"index"``) embeds the
    indices of a batch.  At the start of the first phase that trains it the coordinates are
    copied from the global ``init`` (e.g. the spectral layout ``"positions"``), centred and
    scaled so that the first coordinate has standard deviation ``scale`` (None: as given).
    """

    name: ClassVar[str] = "free_positions"
    n_items: int = attrs.field(validator=positive_int)
    n_components: int = attrs.field(default=2, validator=positive_int)
    init: str | None = "positions"
    scale: float | None = attrs.field(default=None, validator=optional(positive))

    def build(self) -> torch.nn.Module:
        return _FreePositionsModule(self.n_items, self.n_components, self.init, self.scale)


# ----------------------------------------------------------------------------- initialisation


def _standardize(y: np.ndarray, scale: float) -> np.ndarray:
    y = y - y.mean(0)
    return y / max(float(y[:, 0].std()), 1e-12) * scale


def _spectral_component(adjacency: scipy.sparse.csr_matrix, dim: int,
                        rng: np.random.Generator) -> np.ndarray:
    """The ``dim`` leading non-trivial eigenvectors of D^{-1/2} A D^{-1/2} (= the smallest of
    the normalized Laplacian I − D^{-1/2} A D^{-1/2}) of one connected graph: ``(m, dim)``."""
    m = adjacency.shape[0]
    degree = np.asarray(adjacency.sum(1)).ravel()
    inv_sqrt = scipy.sparse.diags(1.0 / np.sqrt(np.maximum(degree, 1e-300)))
    normalized = (inv_sqrt @ adjacency @ inv_sqrt).tocsr()
    k = dim + 1
    if m <= 4 * k + 50:  # tiny graphs: dense solver
        _, vecs = np.linalg.eigh(normalized.toarray())
        return vecs[:, -k:][:, ::-1][:, 1:]
    v0 = rng.uniform(0.5, 1.0, m)
    try:
        vals, vecs = scipy.sparse.linalg.eigsh(
            normalized, k, which="LA", ncv=max(2 * k + 1, int(np.sqrt(m))), tol=1e-4, v0=v0,
            maxiter=m * 5)
    except (scipy.sparse.linalg.ArpackError, scipy.sparse.linalg.ArpackNoConvergence):
        log.info("eigsh did not converge; trying lobpcg")
        x0 = rng.normal(size=(m, k))
        vals, vecs = scipy.sparse.linalg.lobpcg(normalized, x0, largest=True, tol=1e-6,
                                                maxiter=m * 5)
    order = np.argsort(vals)[::-1]
    return vecs[:, order[1:k]]


@attrs.define
class SpectralInit(Transform):
    """Spectral embedding of a graph: ``SparseRelations (n, n) -> tensor (n, n_components)``.

    The eigenvectors of the smallest non-zero eigenvalues of the normalized Laplacian
    I − D^{-1/2} A D^{-1/2} of A = (P + Pᵀ)/2 (scipy ``eigsh``, ``lobpcg`` if it fails).  A
    disconnected graph is embedded per component, components placed at random centres far
    apart (tiny components at random around theirs).  The result is centred and scaled so that
    the first coordinate has standard deviation ``scale``.
    """

    name: ClassVar[str] = "spectral_init"
    n_components: int = attrs.field(default=2, validator=positive_int)
    scale: float = attrs.field(default=1.0, validator=positive)
    seed: int = 0

    accepts: ClassVar[tuple[type, ...]] = (SparseRelations,)  # a dense graph: `.to_sparse()` first

    def apply(self, relations):
        _check(relations.shape[0] == relations.shape[1],
               f"SpectralInit needs a square graph, got shape {relations.shape}.")
        graph = relations.to_sparse().to_scipy().astype(np.float64)
        graph = ((graph + graph.T) * 0.5).tocsr()
        rng = np.random.default_rng(self.seed)
        dim = self.n_components
        count, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
        if count == 1:
            _check(graph.shape[0] > dim,
                   f"SpectralInit: a connected graph of {graph.shape[0]} nodes has "
                   f"{graph.shape[0] - 1} non-trivial eigenvectors; n_components = {dim} needs "
                   f"at least {dim + 1} nodes.")
            y = _spectral_component(graph, dim, rng)
        else:
            y = self._per_component(graph, labels, count, rng)
        return torch.from_numpy(_standardize(np.asarray(y, dtype=np.float64), self.scale)).float()

    def _per_component(self, graph, labels, count, rng) -> np.ndarray:
        dim = self.n_components
        y = np.zeros((graph.shape[0], dim))
        # centres on a sphere of radius ~ the number of components, so that components start
        # apart; each component's own layout is unit sized
        centres = rng.normal(size=(count, dim))
        centres *= 3.0 * np.sqrt(count) / np.linalg.norm(centres, axis=1, keepdims=True)
        for c in range(count):  # a loop over components, not points
            members = np.flatnonzero(labels == c)
            if members.size > 2 * dim + 2:
                local = _spectral_component(graph[members][:, members], dim, rng)
                local = local - local.mean(0)
                local /= max(float(np.abs(local).max()), 1e-12)
            else:
                local = rng.normal(scale=0.1, size=(members.size, dim))
            y[members] = centres[c] + local
        log.info("graph has %d connected components; spectral layout per component", count)
        return y


@attrs.define
class PCAInit(Transform):
    """Principal components of data: ``tensor (n, d) -> tensor (n, n_components)``.

    Projection of the centred data on its leading principal axes (sign fixed so that the
    largest loading of each axis is positive), scaled so that the first coordinate has standard
    deviation ``scale``; relative variances are kept.
    """

    name: ClassVar[str] = "pca_init"
    n_components: int = attrs.field(default=2, validator=positive_int)
    scale: float = attrs.field(default=1.0, validator=positive)

    accepts: ClassVar[tuple[type, ...]] = (torch.Tensor, LazyRows)  # data, not a relation
    lazy_rows: ClassVar[bool] = True  # rows on disk: axes from a sample, chunked projection

    def apply(self, relations):
        _check(len(relations.shape) == 2 and relations.shape[1] >= self.n_components,
               f"PCAInit needs (n, d) data with d >= n_components = {self.n_components}, got "
               f"shape {tuple(relations.shape)}.")
        if isinstance(relations, LazyRows):  # rows on disk: axes from a sample, chunked projection
            mean, axes = pca_axes(relations.sample(PCA_SAMPLE_ROWS).double(), self.n_components)
            y = torch.cat([(c.double() - mean) @ axes for c in relations.chunks()]).cpu().numpy()
            return torch.from_numpy(_standardize(y, self.scale)).float()
        x = relations.detach().double()
        mean, axes = pca_axes(x, self.n_components)  # the shared PCA (signs fixed)
        y = ((x - mean) @ axes).cpu().numpy()  # (n, n_components)
        return torch.from_numpy(_standardize(y, self.scale)).float()


__all__ = ["FreePositions", "SpectralInit", "PCAInit"]

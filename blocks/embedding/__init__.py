"""Blocks of neighbour-embedding methods (parametric UMAP and t-SNE).

Global side (computed once): affinities of a k-NN distance graph
(:class:`ConnectivityBasedRescale` for UMAP, :class:`PerplexityBasedRescale` for t-SNE, in
:mod:`.affinities`) and initial positions (:class:`SpectralInit`, :class:`PCAInit`, in
:mod:`.layout`).  Training side: the embedding kernels (:class:`ModifiedCauchyTransform`,
:class:`StudentTTransform`, :class:`HeavyTailedTransform`, in :mod:`.kernels`; their protocol in :class:`EmbeddingKernel`), the
edge sampler (:class:`NegativeEdgeSampler`) and the losses (:class:`RelationLoss`,
:class:`KLLoss`) in :mod:`.training`, free coordinates (:class:`FreePositions`) and the
encoder on standardised inputs (:class:`StandardizedMLP`, in :mod:`.encoder`).
Everything is vectorised over points; binary searches run on all rows at once.
"""

from __future__ import annotations

from .affinities import (MIN_K_DIST_SCALE, SMOOTH_K_TOLERANCE, ConnectivityBasedRescale,
                         PerplexityBasedRescale, RowMatrix)
from .encoder import StandardizedInput, StandardizedMLP
from .kernels import (SQ_DIST_FLOOR, EmbeddingKernel, HeavyTailedTransform,
                      ModifiedCauchyTransform, StudentTTransform, fit_ab)
from .layout import FreePositions, PCAInit, SpectralInit
from .training import ITEM_EDGES, KLLoss, NegativeEdgeSampler, RelationLoss

__all__ = [
    "ConnectivityBasedRescale", "PerplexityBasedRescale", "EmbeddingKernel",
    "ModifiedCauchyTransform", "StudentTTransform", "HeavyTailedTransform",
    "NegativeEdgeSampler", "RelationLoss",
    "KLLoss", "SpectralInit", "PCAInit", "FreePositions", "RowMatrix", "fit_ab", "ITEM_EDGES",
    "SQ_DIST_FLOOR", "SMOOTH_K_TOLERANCE", "MIN_K_DIST_SCALE", "StandardizedMLP",
    "StandardizedInput",
]

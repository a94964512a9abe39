"""t-SNE's repulsion over ALL pairs of an embedding: exact in row chunks, or on an FFT grid.

For points y_i of a 2-D embedding and the Cauchy kernel w_ij = 1 / (1 + ‖y_i − y_j‖²) the full
t-SNE gradient needs, per point, the repulsive sum and, once, the normaliser

    R_i = Σ_{j≠i} w_ij² (y_i − y_j)  (n, 2)        Z = Σ_{i≠j} w_ij  (a scalar).

:func:`exact_repulsion` computes both in row chunks (O(n²) time, O(chunk × n) memory).
:func:`fft_repulsion` approximates them in O(n + G² log G) (Linderman et al., 2019, FIt-SNE):
the bounding square of the points is cut into ``boxes`` × ``boxes`` boxes, each holding
``nodes_per_box``² equispaced interpolation nodes (together a uniform grid of G = boxes ×
nodes_per_box nodes per axis); each point spreads its charges onto the nodes of its box with
Lagrange interpolation weights (degree nodes_per_box − 1, per axis); the sums over the nodes of
kernel × charge are a discrete convolution (the kernel depends on the node offsets only),
computed with a zero-padded FFT; the nodes' potentials are read back at the points with the
same weights.  Charges (1, y) with kernel w² give R; charge 1 with kernel w gives Z (its self
terms, w_ii = 1, subtracted).  The error falls with the box width (tests/blocks/
test_tsne_repulsion.py measures it against the exact sums).
"""

from __future__ import annotations

import math

import torch

from ..errors import ValidationError

#: rows of the n × n kernel evaluated at once by :func:`exact_repulsion`: chunks of 128 × n
#: floats stay in cache through the few passes over them (1,797 items: 10 ms per call against
#: 19 ms in one chunk; 5,000: 84 against 248 ms; one thread)
EXACT_ROWS_PER_CHUNK = 128
#: FIt-SNE's default interpolation: 3 nodes per box and axis, boxes at most 1 unit wide (the
#: kernel's scale) and at least 50 per axis
NODES_PER_BOX = 3
MIN_BOXES = 50
BOX_WIDTH = 1.0


def _check_embedding(y: torch.Tensor, where: str) -> None:
    if y.ndim != 2 or y.shape[0] < 2:
        raise ValidationError(f"{where}: the embedding must be (n, d) with n >= 2 points, got "
                              f"shape {tuple(y.shape)}.")


@torch.no_grad()
def exact_repulsion(y: torch.Tensor, rows_per_chunk: int = EXACT_ROWS_PER_CHUNK
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(R (n, d), Z) of the module docstring, exactly: the kernel in chunks of rows."""
    _check_embedding(y, "exact_repulsion")
    n = y.shape[0]
    norms = (y * y).sum(1)
    ones_y = torch.cat([torch.ones_like(y[:, :1]), y], dim=1)  # (n, 1 + d): one product
    force = torch.empty_like(y)
    z = torch.zeros((), dtype=torch.float64, device=y.device)
    for lo in range(0, n, rows_per_chunk):
        hi = min(lo + rows_per_chunk, n)
        block = y[lo:hi]
        w = torch.addmm(norms[lo:hi, None] + norms[None, :], block, y.T, alpha=-2.0)
        w = w.clamp_min_(0.0).add_(1.0).reciprocal_()
        w[:, lo:hi].fill_diagonal_(0.0)  # no self pairs
        z += w.sum(1).sum(dtype=torch.float64)  # row sums in the working precision
        sums = w.mul_(w) @ ones_y  # (rows, 1 + d): Σ_j w², Σ_j w² y_j
        force[lo:hi] = block * sums[:, :1] - sums[:, 1:]
    return force, z


def _lagrange_weights(t: torch.Tensor, nodes: int) -> torch.Tensor:
    """Weights ``(m, nodes)`` of the Lagrange polynomials through the box-local nodes
    (k + ½) / nodes, k < nodes, at the local coordinates ``t`` ``(m,)`` in [0, 1]."""
    grid = (torch.arange(nodes, dtype=t.dtype, device=t.device) + 0.5) / nodes
    weights = []
    for k in range(nodes):  # a loop over the few nodes of a box, not over points
        others = torch.cat([grid[:k], grid[k + 1:]])
        denominator = torch.prod(grid[k] - others)
        weights.append(torch.prod(t[:, None] - others[None, :], dim=1) / denominator)
    return torch.stack(weights, dim=1)


def _kernel_spectrum(size: int, spacing: float, power: int, dtype, device) -> torch.Tensor:
    """rFFT of the kernel (1 + r²)^−power at the node offsets of a size × size grid, embedded
    circulantly in a 2·size × 2·size array (offsets −(size − 1) ... size − 1 per axis),
    transposed for :func:`_convolve`: ``(size + 1, 2 size)``."""
    offsets = torch.arange(2 * size, dtype=torch.float64, device=device)
    offsets = torch.where(offsets < size, offsets, offsets - 2 * size) * spacing
    r2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
    kernel = (1.0 + r2).pow(-power)
    kernel[size, :] = 0.0  # the wrap-around offset ±size never occurs between nodes
    kernel[:, size] = 0.0
    return torch.fft.rfft2(kernel.to(dtype)).T.contiguous()  # (size + 1, 2 size)


def fft_boxes(span: float, min_boxes: int = MIN_BOXES, box_width: float = BOX_WIDTH) -> int:
    """Boxes per axis for a bounding square of side ``span``: at least ``min_boxes``, at most
    ``box_width`` wide, rounded up to a product of small primes (fast FFT sizes)."""
    boxes = max(min_boxes, int(math.ceil(span / box_width)))
    while True:  # next 2^a 3^b 5^c (a few steps at most)
        m = boxes
        for prime in (2, 3, 5):
            while m % prime == 0:
                m //= prime
        if m == 1:
            return boxes
        boxes += 1


def _convolve(charges: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """Σ_nodes kernel(offset) × charge of ``charges`` ``(c, G, G)`` by the zero-padded FFT of
    size 2G × 2G, pruned: the first transform runs over the G non-zero rows only, the last
    over the G rows kept; the column transforms run on a transposed copy (contiguous rows,
    faster).  ``spectrum``: :func:`_kernel_spectrum` transposed, ``(G + 1, 2G)``."""
    size = charges.shape[-1]
    rows = torch.fft.rfft(charges, n=2 * size, dim=-1).transpose(-1, -2).contiguous()
    both = torch.fft.fft(rows, n=2 * size, dim=-1)  # (c, G + 1, 2G)
    back = torch.fft.ifft(both.mul_(spectrum), dim=-1)[..., :size]
    return torch.fft.irfft(back.transpose(-1, -2).contiguous(), n=2 * size, dim=-1)[..., :size]


@torch.no_grad()
def fft_repulsion(y: torch.Tensor, nodes_per_box: int = NODES_PER_BOX,
                  min_boxes: int = MIN_BOXES, box_width: float = BOX_WIDTH,
                  cache: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(R (n, 2), Z) of the module docstring, interpolated on an FFT grid (2-D embeddings).

    Boxes are ``box_width`` wide (wider when ``min_boxes`` of them would exceed the points'
    span), so the grid of a growing embedding keeps its spacing and the kernels' spectra can
    be kept in ``cache`` (a dict owned by the caller) from one call to the next."""
    _check_embedding(y, "fft_repulsion")
    if y.shape[1] != 2:
        raise ValidationError(f"fft_repulsion interpolates 2-D embeddings, got {y.shape[1]} "
                              "dimensions; use exact_repulsion (repulsion='exact').")
    if nodes_per_box < 1 or min_boxes < 1 or not box_width > 0:
        raise ValidationError(f"fft_repulsion: nodes_per_box ({nodes_per_box}) and min_boxes "
                              f"({min_boxes}) must be positive integers, box_width ({box_width}) "
                              "positive.")
    n, dev = y.shape[0], y.device
    low = y.min(0).values
    x = y - low  # coordinates from the square's corner: small sums
    span = float(x.max()) * (1.0 + 1e-6) + 1e-9
    boxes = fft_boxes(span, min_boxes, box_width)
    width = min(box_width, span / min_boxes)  # box_width wide once the span allows
    size = boxes * nodes_per_box  # nodes per axis
    scaled = x / width  # box units
    box = scaled.floor().clamp_(0, boxes - 1)
    local = scaled - box  # (n, 2) in [0, 1]
    wx = _lagrange_weights(local[:, 0], nodes_per_box)  # (n, p)
    wy = _lagrange_weights(local[:, 1], nodes_per_box)
    base = box.long() * nodes_per_box  # first node of each point's box, per axis
    steps = torch.arange(nodes_per_box, device=dev)
    ix = base[:, 0:1] + steps  # (n, p) node rows
    iy = base[:, 1:2] + steps
    flat = (ix[:, :, None] * size + iy[:, None, :]).reshape(n, -1)  # (n, p²) node ids
    weights = (wx[:, :, None] * wy[:, None, :]).reshape(n, -1)
    charges = torch.cat([torch.ones(n, 1, dtype=y.dtype, device=dev), x], dim=1)  # 1, y
    grid = torch.zeros(3, size * size, dtype=y.dtype, device=dev)
    grid.index_add_(1, flat.reshape(-1), (charges.T[:, :, None] * weights[None]).reshape(3, -1))
    key = (size, width / nodes_per_box, y.dtype, dev)
    spectra = None if cache is None else cache.get(key)
    if spectra is None:
        spacing = width / nodes_per_box
        spectra = tuple(_kernel_spectrum(size, spacing, power, y.dtype, dev)
                        for power in (2, 1))
        if cache is not None:
            cache.clear()  # one grid at a time: the embedding grows slowly
            cache[key] = spectra
    grid = grid.view(3, size, size)
    square = _convolve(grid, spectra[0]).reshape(3, -1)  # Σ_j w² (1, y_j)
    single = _convolve(grid[:1], spectra[1]).reshape(-1)  # Σ_j w
    phi = (square[:, flat] * weights).sum(-1)  # nodes -> points (3, n)
    force = x * phi[0][:, None] - phi[1:].T
    z = (single[flat] * weights).sum(-1).sum(dtype=torch.float64) - n  # less w_ii = 1
    return force, z.clamp_min(1e-12)


__all__ = ["exact_repulsion", "fft_repulsion", "fft_boxes", "EXACT_ROWS_PER_CHUNK",
           "NODES_PER_BOX", "MIN_BOXES", "BOX_WIDTH"]

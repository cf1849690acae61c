"""HOG ops (VLFeat's vl_hog as two differentiable ops): hog_cells and hog_norm.

``hog_cells_forward`` fuses the image gradient (central differences, the
colour channel of largest gradient at each pixel), the orientation binning
into K = 2*O directed orientations and the triangular pooling into cells;
``hog_norm_forward`` does the block normalisation (four factors per cell),
the clamp at 0.2 and the UoCTTI or Dalal-Triggs projection. Each keeps what
its backward needs. See :class:`invert_native.HOG` for the conventions.
"""

from __future__ import annotations

import numpy as np

from ._dispatch import _Call, _check_shape, _cpu, _int, _native, _shape4

BINNINGS = {"hard": 0, "bilinear": 1, "relu": 2}
VARIANTS = {"uoctti": 0, "dalaltriggs": 1}


def _choice(op, name, value, table):
    if value not in table:
        raise ValueError(f"{op}: {name} must be one of {', '.join(map(repr, table))}, "
                         f"got {value!r}")
    return table[value]


def _cells_hyper(op, x_shape, cell_size, orientations, binning):
    cell = _int(cell_size, op, "cell_size")
    O = _int(orientations, op, "orientations")
    mode = _choice(op, "binning", binning, BINNINGS)
    h, w = _native(op, _cpu.hog_cells_params, *x_shape, cell, O, mode)
    return (cell, O, mode), (h, w)


def _norm_hyper(op, hist_shape, variant, texture):
    if not isinstance(texture, (bool, np.bool_)):
        raise TypeError(f"{op}: texture must be a bool, got {texture!r}")
    v = _choice(op, "variant", variant, VARIANTS)
    D = _native(op, _cpu.hog_norm_params, *hist_shape, v, bool(texture))
    return (v, bool(texture)), D


def hog_cells_forward(x, cell_size=8, orientations=9, binning="hard"):
    """Directed orientation histograms of the HOG cells.

    Args:
        x: images, (N, C, H, W) float32, C = 1 or 3, values in [0, 255].
        cell_size: cell side in pixels.
        orientations: O, undirected orientations; there are 2*O directed bins,
            bin b at angle b*pi/O from +x towards +y (y points down).
        binning: "hard" (all of |g| to the nearest bin; exact ties go to the
            lower axis index, as in VLFeat), "bilinear" (linear in angle between
            the two nearest bins; VLFeat's bilinear orientation assignment) or
            "relu" (the paper's approximation, scaled to give |g| on a bin centre).

    Returns:
        (hist, pix, assign): hist (N, 2*O, h, w) with h = (H + cell_size//2) //
        cell_size (likewise w); pix (N, 4, H, W) float32 = gx, gy, and the
        magnitudes given to the two bins; assign (N, 3, H, W) int64 = selected
        channel, bin 0, bin 1 (-1 = none). pix and assign are what backward needs.
    """
    op = "hog_cells_forward"
    c = _Call(op, x=x)
    x = c.array("x", x, 4)
    hyper, (h, w) = _cells_hyper(op, x.shape, cell_size, orientations, binning)
    N, _, H, W = x.shape
    hist = c.empty((N, 2 * hyper[1], h, w))
    pix = c.empty((N, 4, H, W))
    assign = c.empty((N, 3, H, W), np.int64)
    if c.cuda:
        c.launch("hog_cells_forward", x, hist, pix, assign, *x.shape, *hyper)
    else:
        _cpu.hog_cells_forward(x, hist, pix, assign, *hyper)
    return hist, pix, assign


def _check_assign_on_device(op, assign, C, K):
    """The CUDA path's check of what backward indexes with (the CPU core checks natively)."""
    for k, (what, limit) in enumerate((("channels", C), ("bins", K), ("bins", K))):
        plane = assign[:, k]
        lo, hi = int(plane.min()), int(plane.max())
        if lo < -1 or hi >= limit:
            raise ValueError(f"{op}: assign[:, {k}] ({what}) holds {lo if lo < -1 else hi}, "
                             f"outside [-1, {limit - 1}]; pass the assign that "
                             "hog_cells_forward returned")


def hog_cells_backward(dhist, pix, assign, x_shape, cell_size=8, orientations=9, binning="hard",
                       *, _trusted=False):
    """Gradient of :func:`hog_cells_forward` w.r.t. x, from its pix and assign.

    Hard binning differentiates through the gradient magnitude only (the bin
    choice is piecewise constant); the channel selection likewise passes the
    gradient to the selected channel only. Returns dx (N, C, H, W), a new array.
    Raises ValueError when assign holds an index hog_cells_forward cannot write
    (channel outside [-1, C), bin outside [-1, 2*O)): backward indexes with them.
    (``_trusted``: assign comes straight from this package's forward; skips the
    device-side check, which synchronises with the GPU.)
    """
    op = "hog_cells_backward"
    c = _Call(op, dhist=dhist, pix=pix, assign=assign)
    dhist = c.array("dhist", dhist, 4)
    pix = c.array("pix", pix, 4)
    assign = c.array("assign", assign, 4, dtype=np.int64)
    x_shape = _shape4(x_shape, op, "x_shape")
    hyper, (h, w) = _cells_hyper(op, x_shape, cell_size, orientations, binning)
    N, _, H, W = x_shape
    _check_shape(op, "dhist", dhist, (N, 2 * hyper[1], h, w))
    _check_shape(op, "pix", pix, (N, 4, H, W))
    _check_shape(op, "assign", assign, (N, 3, H, W))
    dx = c.empty(x_shape)
    if c.cuda:
        if not _trusted:
            _check_assign_on_device(op, assign, x_shape[1], 2 * hyper[1])
        work = c.empty((N, 2, H, W))
        c.launch("hog_cells_backward", pix, assign, dhist, dx, work, *x_shape, *hyper)
    else:
        _cpu.hog_cells_backward(pix, assign, dhist, dx, *hyper)
    return dx


def hog_norm_forward(hist, variant="uoctti", texture=True):
    """Block normalisation of HOG cells (VLFeat's vl_hog_extract).

    Each cell has four factors f_i = 1/sqrt(E + 1e-4), one per 2x2 block
    around it (up-left, up-right, down-left, down-right; border blocks repeat
    the edge cells), E the block's sum of squared undirected histograms
    u_k = h_k + h_{k+O}.

    Args:
        hist: (N, 2*O, h, w) directed histograms from :func:`hog_cells_forward`.
        variant: "uoctti": D = 3*O + 4 dims per cell, the 2*O directed
            0.5*sum_i min(0.2, f_i h_k), the O undirected ones likewise on u_k
            and 4 texture dims sum_k min(0.2, f_i u_k) / sqrt(18);
            "dalaltriggs": D = 4*O, dim i*O + k = min(0.2, f_i u_k).
        texture: UoCTTI only; False drops the 4 texture dims (D = 3*O, the
            paper's 27-D HOG for O = 9).

    Returns:
        (y, blocks): y (N, D, h, w); blocks (N, h+1, w+1), the factors of all
        blocks, kept for backward.
    """
    op = "hog_norm_forward"
    c = _Call(op, hist=hist)
    hist = c.array("hist", hist, 4)
    hyper, D = _norm_hyper(op, hist.shape, variant, texture)
    N, _, h, w = hist.shape
    y = c.empty((N, D, h, w))
    blocks = c.empty((N, h + 1, w + 1))
    if c.cuda:
        c.launch("hog_norm_forward", hist, y, blocks, *hist.shape, *hyper)
    else:
        _cpu.hog_norm_forward(hist, y, blocks, *hyper)
    return y, blocks


def hog_norm_backward(hist, blocks, dy, variant="uoctti", texture=True):
    """Gradient of :func:`hog_norm_forward` w.r.t. hist (through the clamp where
    f*h <= 0.2, and through the block factors). Returns dhist, a new array."""
    op = "hog_norm_backward"
    c = _Call(op, hist=hist, blocks=blocks, dy=dy)
    hist = c.array("hist", hist, 4)
    blocks = c.array("blocks", blocks, 3)
    dy = c.array("dy", dy, 4)
    hyper, D = _norm_hyper(op, hist.shape, variant, texture)
    N, _, h, w = hist.shape
    _check_shape(op, "blocks", blocks, (N, h + 1, w + 1))
    _check_shape(op, "dy", dy, (N, D, h, w))
    dhist = c.empty(hist.shape)
    if c.cuda:
        work = c.empty((N, 4, h, w))
        c.launch("hog_norm_backward", hist, blocks, dy, dhist, work, *hist.shape, *hyper)
    else:
        _cpu.hog_norm_backward(hist, blocks, dy, dhist, *hyper)
    return dhist


__all__ = ["hog_cells_forward", "hog_cells_backward", "hog_norm_forward", "hog_norm_backward"]

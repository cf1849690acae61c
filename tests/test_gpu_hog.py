"""The CUDA HOG ops against the CPU core, on fresh random inputs (CuPy arrays).

Marked ``gpu``: conftest skips them where ``invert_native.cuda_available()``
is false, before any fixture runs, so this module collects without CuPy.
The CPU core is the reference, at the suite's tolerance (conftest) unless
stated. Both backends call the same per-element functions (hog_maths.h) in
the same summation order, both without fused multiply-adds (--fmad=false), so
the pixel assignments (channel, bins) must be equal even on exact ties; values
may differ in the last bits (CUDA's acosf and sqrtf), hence the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

import invert_native
from conftest import assert_close, f32, require
from invert_native import ops
from test_hog_grad import _random_hist, draw_away_from_kinks

pytestmark = pytest.mark.gpu

CELLS = [  # (N, C, H, W, cell, O, binning)
    (1, 1, 37, 29, 8, 9, "hard"),
    (2, 3, 64, 48, 8, 9, "bilinear"),
    (2, 3, 45, 51, 5, 6, "relu"),
    (1, 3, 96, 80, 6, 9, "hard"),
    (3, 1, 33, 70, 7, 4, "bilinear"),
]
NORM = [  # (N, O, h, w, variant, texture)
    (1, 9, 5, 4, "uoctti", True), (2, 9, 7, 3, "uoctti", False),
    (2, 9, 4, 6, "dalaltriggs", True), (1, 5, 1, 1, "uoctti", True),
    (3, 9, 2, 9, "uoctti", True),
]


@pytest.fixture
def cp():
    return require("cupy")


def _ids(cases):
    return ["-".join(map(str, c)) for c in cases]


@pytest.mark.parametrize("case", CELLS, ids=_ids(CELLS))
def test_hog_cells_cuda_matches_cpu(cp, case, rng):
    N, C, H, W, cell, O, binning = case
    x = f32(draw_away_from_kinks(rng, (N, C, H, W), cell, O, binning))
    hist, pix, assign = ops.hog_cells_forward(x, cell, O, binning)
    g_hist, g_pix, g_assign = ops.hog_cells_forward(cp.asarray(x), cell, O, binning)
    assert isinstance(g_hist, cp.ndarray) and g_assign.dtype == np.int64
    np.testing.assert_array_equal(g_assign.get(), assign)
    assert_close(g_pix, pix, what="pix")
    assert_close(g_hist, hist, what="hist")

    dh = f32(rng.normal(size=hist.shape))
    dx = ops.hog_cells_backward(dh, pix, assign, x.shape, cell, O, binning)
    g_dx = ops.hog_cells_backward(cp.asarray(dh), g_pix, g_assign, x.shape, cell, O, binning)
    assert isinstance(g_dx, cp.ndarray)
    assert_close(g_dx, dx, what="dx")


@pytest.mark.parametrize("case", NORM, ids=_ids(NORM))
def test_hog_norm_cuda_matches_cpu(cp, case, rng):
    N, O, h, w, variant, texture = case
    hist = f32(_random_hist(rng, N, O, h, w, variant, texture))
    y, blocks = ops.hog_norm_forward(hist, variant, texture)
    g_y, g_blocks = ops.hog_norm_forward(cp.asarray(hist), variant, texture)
    assert_close(g_blocks, blocks, what="blocks")
    assert_close(g_y, y, what="y")
    dy = f32(rng.normal(size=y.shape))
    dh = ops.hog_norm_backward(hist, blocks, dy, variant, texture)
    g_dh = ops.hog_norm_backward(cp.asarray(hist), g_blocks, cp.asarray(dy), variant, texture)
    assert_close(g_dh, dh, what="dhist")


@pytest.mark.parametrize("bilinear", [False, True])
def test_hog_chain_cuda_matches_cpu_on_a_photo(cp, bilinear, rng):
    skdata = require("skimage.data")
    img = skdata.astronaut()[:200, 100:317]
    x = f32(img.transpose(2, 0, 1)[None])
    net = invert_native.HOG(bilinear=bilinear)
    y = net.forward(x)
    dy = f32(rng.normal(size=y.shape))
    dx = net.backward(dy)
    g_y = net.forward(cp.asarray(x))
    g_dx = net.backward(cp.asarray(dy))
    # per image in relative L2, as against VLFeat
    assert float(cp.linalg.norm(g_y - cp.asarray(y)) / np.linalg.norm(y)) < 1e-5
    assert float(cp.linalg.norm(g_dx - cp.asarray(dx)) / np.linalg.norm(dx)) < 1e-4
    f = invert_native.hog(cp.asarray(img), bilinear=bilinear)
    assert isinstance(f, cp.ndarray) and f.shape == (25, 27, 31)


@pytest.mark.parametrize("O", [1, 10, 18])
@pytest.mark.parametrize("binning", ["hard", "bilinear"])
def test_hog_cuda_keeps_vlfeat_tie_rules(cp, O, binning):
    # the cases that a fused multiply-add or another initial score turn into other
    # bins (the CPU core matches VLFeat on them: test_hog.py)
    from test_hog import _photo, _slope_colour, rel_l2
    y, x = np.mgrid[0:32, 0:32].astype(np.float32)
    images = [_photo("camera")[:96, :96], 100 + 2 * x + 2 * y, 100 + 2 * y,
              _slope_colour(1.1, 0.3, 0.3, 1.1)]
    for img in images:
        planes = f32(img[None] if img.ndim == 2 else img.transpose(2, 0, 1))[None]
        hist, _, assign = ops.hog_cells_forward(planes, 8, O, binning)
        g_hist, _, g_assign = ops.hog_cells_forward(cp.asarray(planes), 8, O, binning)
        np.testing.assert_array_equal(g_assign.get(), assign)
        assert rel_l2(g_hist.get(), hist) < 1e-6


def test_hog_cells_backward_cuda_rejects_forged_assign(cp):
    x = cp.asarray(f32(np.random.default_rng(0).uniform(0, 255, (1, 3, 33, 41))))
    hist, pix, assign = ops.hog_cells_forward(x, 8, 9, "hard")
    for plane, value in ((1, 10 ** 8), (2, -5), (0, 7)):
        bad = assign.copy()
        bad[0, plane, 5, 5] = value
        with pytest.raises(ValueError, match=r"assign\[:, %d\]" % plane):
            ops.hog_cells_backward(cp.ones_like(hist), pix, bad, x.shape, 8, 9, "hard")


def test_hog_gpu_rejects_non_finite(cp):
    x = cp.full((1, 1, 32, 32), 10.0, dtype=cp.float32)
    x[0, 0, 3, 3] = cp.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        invert_native.HOG().forward(x)

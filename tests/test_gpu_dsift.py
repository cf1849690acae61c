"""Dense SIFT on the CUDA core against the CPU core, op by op and for the whole chain.

Both backends run the per-element functions of dsift_maths.h in the same order, without
fused multiply-adds, so the forward with VLFeat's fast atan2 (no libm call on the way) should
agree bit for bit, and the CPU's agrees bit for bit with libvl: the low-contrast case below,
whose descriptors of tiny norm turn any rounding difference into an O(1) error, checks it.
Elsewhere tolerances are conftest's, slightly widened where a value goes through atan2f
(CUDA's, with exact_atan2) and two normalisations.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, f32, require

import invert_native
from invert_native import ops
from invert_native.ops import DsiftConfig

pytestmark = pytest.mark.gpu

CONFIGS = [
    (DsiftConfig(bin_size=3, step=2), (2, 1, 31, 29)),
    (DsiftConfig(bin_size=5, step=(4, 3), second_l2=False, exact_atan2=True), (1, 1, 40, 57)),
    (DsiftConfig(bin_size=4, step=5, bounds=(2, 1, 40, 30), clamp=0.15), (3, 1, 33, 45)),
    (DsiftConfig(bin_size=4, step=3, orientations=1), (2, 1, 30, 34)),  # libvl's overwrite
]


def _gpu(a):
    cp = require("cupy")
    return cp.asarray(a)


@pytest.mark.parametrize("cfg,shape", CONFIGS)
def test_ops_cuda_match_cpu(rng, cfg, shape):
    x = f32(rng.uniform(0, 255, shape))
    h = ops.dsift_gradient_forward(x, cfg)
    assert_close(ops.dsift_gradient_forward(_gpu(x), cfg), h, rtol=1e-4,
                 what="dsift_gradient_forward")
    dh = f32(rng.standard_normal(h.shape))
    assert_close(ops.dsift_gradient_backward(_gpu(x), _gpu(dh), cfg),
                 ops.dsift_gradient_backward(x, dh, cfg), rtol=1e-4,
                 what="dsift_gradient_backward")
    for axis in (2, 3):
        assert_close(ops.dsift_triangle_forward(_gpu(h), axis, cfg),
                     ops.dsift_triangle_forward(h, axis, cfg), what=f"triangle forward {axis}")
        assert_close(ops.dsift_triangle_backward(_gpu(dh), axis, cfg),
                     ops.dsift_triangle_backward(dh, axis, cfg), what=f"triangle backward {axis}")
    d = ops.dsift_sample_forward(h, cfg)
    assert_close(ops.dsift_sample_forward(_gpu(h), cfg), d, what="dsift_sample_forward")
    dd = f32(rng.standard_normal(d.shape))
    assert_close(ops.dsift_sample_backward(_gpu(dd), h.shape, cfg),
                 ops.dsift_sample_backward(dd, h.shape, cfg), what="dsift_sample_backward")
    y, norms = ops.dsift_normalize_forward(d, cfg)
    yg, normsg = ops.dsift_normalize_forward(_gpu(d), cfg)
    assert_close(yg, y, what="dsift_normalize_forward")
    assert_close(normsg, norms, what="dsift_normalize_forward norms")
    assert_close(ops.dsift_normalize_backward(_gpu(d), _gpu(norms), _gpu(dd), cfg),
                 ops.dsift_normalize_backward(d, norms, dd, cfg), rtol=2e-4,
                 what="dsift_normalize_backward")


@pytest.mark.parametrize("cfg,shape", CONFIGS)
def test_chain_cuda_matches_cpu(rng, cfg, shape):
    kw = dict(bin_size=cfg.bin_size, step=cfg.step, bounds=cfg.bounds, second_l2=cfg.second_l2,
              clamp=cfg.clamp, exact_atan2=cfg.exact_atan2)
    x = f32(rng.uniform(0, 255, shape))
    cpu = invert_native.DSIFT(**kw)
    gpu = invert_native.DSIFT(**kw).to("cuda")
    y = cpu.forward(x)
    yg = gpu.forward(_gpu(x))
    assert_close(yg, y, rtol=2e-4, what="DSIFT.forward")
    dy = f32(rng.standard_normal(y.shape))
    assert_close(gpu.backward(_gpu(dy)), cpu.backward(dy), rtol=1e-3, what="DSIFT.backward")


def test_functional_dsift_on_cuda(rng):
    im = f32(rng.uniform(0, 255, (48, 52)))
    frames, d = invert_native.dsift(im, step=3, bin_size=4)
    frames_g, d_g = invert_native.dsift(_gpu(im), step=3, bin_size=4)
    np.testing.assert_array_equal(frames_g.get(), frames)
    assert_close(d_g, d, rtol=2e-4, what="dsift on CUDA")


def test_forward_on_a_low_contrast_photo_matches_cpu():
    # an im2single-style [0, 1] image: near-flat regions give descriptors of tiny norm
    skdata = require("skimage.data")
    import skimage.color

    im = f32(skimage.color.rgb2gray(skdata.astronaut())[100:300, 150:400])
    frames, d = invert_native.dsift(im, step=2, bin_size=3)
    _, d_g = invert_native.dsift(_gpu(im), step=2, bin_size=3)
    d_g = d_g.get()
    assert float(np.linalg.norm(d_g - d) / np.linalg.norm(d)) <= 1e-6
    assert float(np.abs(d_g - d).max()) <= 1e-5

"""Dense SIFT: the layer chain against VLFeat's vl_dsift (through ctypes), every op against a
float64 PyTorch reference, every backward against PyTorch autograd and float64 finite
differences, and the public API (layouts, geometry, bad input)."""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
from conftest import assert_close, f32, require
from vlfeat_ref import libvl

import invert_native
from invert_native import ops
from invert_native.ops import DsiftConfig

# ---------------------------------------------------------------------------------------------
# VLFeat through ctypes. vl_dsift's setters are inline functions of dsift.h, not exported by
# libvl.so, so the filter struct is mirrored here (VLFeat 0.9.21's VlDsiftFilter) and its
# fields are set directly, followed by _vl_dsift_update_buffers as the setters do.


class _Geom(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in ("numBinT", "numBinX", "numBinY", "binSizeX",
                                            "binSizeY")]


class _Keypoint(ctypes.Structure):
    _fields_ = [(n, ctypes.c_double) for n in ("x", "y", "s", "norm")]


class _Filter(ctypes.Structure):
    _fields_ = ([(n, ctypes.c_int) for n in ("imWidth", "imHeight", "stepX", "stepY", "boundMinX",
                                             "boundMinY", "boundMaxX", "boundMaxY")]
                + [("geom", _Geom), ("useFlatWindow", ctypes.c_int),
                   ("windowSize", ctypes.c_double), ("numFrames", ctypes.c_int),
                   ("descrSize", ctypes.c_int), ("frames", ctypes.POINTER(_Keypoint)),
                   ("descrs", ctypes.POINTER(ctypes.c_float)), ("numBinAlloc", ctypes.c_int),
                   ("numFrameAlloc", ctypes.c_int), ("numGradAlloc", ctypes.c_int),
                   ("grads", ctypes.POINTER(ctypes.POINTER(ctypes.c_float))),
                   ("convTmp1", ctypes.POINTER(ctypes.c_float)),
                   ("convTmp2", ctypes.POINTER(ctypes.c_float))])


def _vl():
    lib = libvl()
    lib.vl_dsift_new_basic.restype = ctypes.POINTER(_Filter)
    lib.vl_dsift_new_basic.argtypes = [ctypes.c_int] * 4
    lib.vl_dsift_process.argtypes = [ctypes.POINTER(_Filter), ctypes.POINTER(ctypes.c_float)]
    lib.vl_dsift_delete.argtypes = [ctypes.POINTER(_Filter)]
    lib._vl_dsift_update_buffers.argtypes = [ctypes.POINTER(_Filter)]
    return lib


def vl_dsift(im, bin_size, step, bounds=None, geometry=None, window_size=None):
    """VLFeat's dense SIFT, flat window: (frames (K, 2) as (x, y), descriptors (K, D)).

    geometry: (numBinT, numBinX = numBinY), default VLFeat's (8, 4) (D = 128)."""
    lib = _vl()
    im = np.ascontiguousarray(im, np.float32)
    H, W = im.shape
    sx, sy = (step, step) if np.isscalar(step) else step
    f = lib.vl_dsift_new_basic(W, H, sx, bin_size)
    try:
        c = f.contents
        c.stepX, c.stepY = sx, sy
        c.useFlatWindow = 1
        if bounds is not None:
            c.boundMinX, c.boundMinY, c.boundMaxX, c.boundMaxY = bounds
        T, nbin = geometry if geometry is not None else (8, 4)
        c.geom.numBinT, c.geom.numBinX, c.geom.numBinY = T, nbin, nbin
        if window_size is not None:
            c.windowSize = window_size
        lib._vl_dsift_update_buffers(f)
        lib.vl_dsift_process(f, im.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        n, D = c.numFrames, c.descrSize
        assert D == T * nbin * nbin
        descrs = np.ctypeslib.as_array(c.descrs, (n * D,)).reshape(n, D).copy()
        frames = np.array([(c.frames[i].x, c.frames[i].y) for i in range(n)]).reshape(n, 2)
    finally:
        lib.vl_dsift_delete(f)
    return frames, descrs


def _gray(name):
    require("skimage")  # scikit-image's bundled photos (CI: must be installed)
    import skimage.color
    import skimage.data

    im = getattr(skimage.data, name)()
    if im.ndim == 3:
        im = skimage.color.rgb2gray(im[..., :3]) * 255.0
    return im.astype(np.float32)


def _synthetic(kind, H, W):
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    if kind == "vedge":
        return np.where(x < W / 2, 30.0, 220.0)
    if kind == "hedge":
        return np.where(y < H / 3, 200.0, 10.0)
    if kind == "dedge":
        return np.where(x + 0.7 * y < 0.6 * (W + H), 0.0, 255.0)
    if kind == "ramp":
        return 0.8 * x + 0.3 * y
    if kind == "disk":
        return np.where((x - W / 2) ** 2 + (y - H / 2) ** 2 < (min(H, W) / 3) ** 2, 255.0, 40.0)
    if kind == "checker":
        return np.where(((x // 7) + (y // 5)) % 2 == 0, 255.0, 0.0)
    raise ValueError(kind)


def _rel(got, ref):
    return float(np.linalg.norm(got.astype(np.float64) - ref) / np.linalg.norm(ref))


# Relative L2 error per image against libvl. The forward repeats vl_dsift_process's float
# operations (fast atan2, fast sqrt, running-sum triangle filter, window weights,
# normalisation), so on x86-64 the descriptors are bit-identical to libvl's: measured 0 on
# every case below, full-size photos included. The bound leaves room for a libvl built
# differently (say with fused multiply-adds); it is still far below the O(1) errors that any
# other summation order causes on descriptors of tiny norm (dark or [0, 1] images), where
# VLFeat's 1e-8 floor and eps amplify rounding. With exact atan2: up to 9.3e-3 (the ramp),
# the fast atan2's own error of up to ~6e-3 rad moving mass between orientation bins.
VL_BOUND = 1e-6
VL_BOUND_EXACT_ATAN2 = 1e-2

PHOTO_CASES = [
    # (image, crop (rows, cols) or None, bin_size, step)
    ("camera", None, 8, 8),
    ("camera", (203, 157), 5, 3),
    ("astronaut", (256, 300), 5, 15),
    ("coffee", (150, 181), 3, 1),
    ("moon", (171, 256), 4, (2, 5)),
    ("chelsea", None, 6, 4),
]


@pytest.mark.parametrize("name,crop,bin_size,step", PHOTO_CASES)
def test_forward_matches_vlfeat_on_photos(name, crop, bin_size, step):
    im = _gray(name)
    if crop is not None:
        im = np.ascontiguousarray(im[: crop[0], : crop[1]])
    ref_frames, ref = vl_dsift(im, bin_size, step)
    frames, got = invert_native.dsift(im, step=step, bin_size=bin_size)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_array_equal(frames, ref_frames)
    err = _rel(got, ref)
    assert err <= VL_BOUND, f"relative L2 error {err:.3e} against VLFeat"


def _full_size(name):
    require("skimage")
    import skimage.color
    import skimage.data

    if name == "dark":  # noise far below one grey level next to a bright half, [0, 255]
        rng = np.random.default_rng(0)
        x = np.mgrid[0:48, 0:48][1]
        return np.where(x < 24, rng.uniform(0, 3e-4, x.shape), 200.0).astype(np.float32)
    return skimage.color.rgb2gray(getattr(skimage.data, name)()).astype(np.float32)


@pytest.mark.parametrize("name,scale,bin_size,step", [
    ("astronaut", 255.0, 8, 8), ("astronaut", 255.0, 4, 6), ("retina", 255.0, 8, 8),
    ("astronaut", 1.0, 3, 2), ("dark", 1.0, 3, 2)])
def test_forward_matches_vlfeat_on_full_size_and_low_contrast_images(name, scale, bin_size,
                                                                     step):
    # Full-size photos, an im2single-style [0, 1] image and a dark noisy one: descriptors
    # of tiny norm, where VLFeat's floor (1e-8) and eps amplify any difference in float
    # rounding to O(1) -- these failed (1.7e-4 .. 3.9e-2) before the chain repeated
    # VLFeat's running sums and fast sqrt.
    im = np.ascontiguousarray(_full_size(name) * np.float32(scale))
    ref_frames, ref = vl_dsift(im, bin_size, step)
    frames, got = invert_native.dsift(im, step=step, bin_size=bin_size)
    np.testing.assert_array_equal(frames, ref_frames)
    assert _rel(got, ref) <= VL_BOUND
    assert float(np.abs(got - ref).max()) <= 1e-5


@pytest.mark.parametrize("kind", ["vedge", "hedge", "dedge", "ramp", "disk", "checker"])
@pytest.mark.parametrize("size,bin_size,step", [((41, 37), 3, 2), ((64, 64), 8, 4),
                                                ((50, 77), 5, 3)])
def test_forward_matches_vlfeat_on_synthetic(kind, size, bin_size, step):
    im = _synthetic(kind, *size).astype(np.float32)
    ref_frames, ref = vl_dsift(im, bin_size, step)
    frames, got = invert_native.dsift(im, step=step, bin_size=bin_size)
    np.testing.assert_array_equal(frames, ref_frames)
    # flat regions give all-zero descriptors on both sides
    np.testing.assert_array_equal(np.all(got == 0, axis=1), np.all(ref == 0, axis=1))
    err = _rel(got, ref)
    assert err <= VL_BOUND, f"relative L2 error {err:.3e} against VLFeat"


def test_forward_matches_vlfeat_with_bounds():
    im = _gray("camera")[:120, :140].copy()
    bounds = (7, 11, 130, 101)
    ref_frames, ref = vl_dsift(im, 4, (3, 2), bounds=bounds)
    frames, got = invert_native.dsift(im, step=(3, 2), bin_size=4, bounds=bounds)
    np.testing.assert_array_equal(frames, ref_frames)
    assert _rel(got, ref) <= VL_BOUND


@pytest.mark.parametrize("bounds", [(-5, 11, 500, 101), (7, -3, 130, 119), (-1, -1, 139, 999)])
def test_bounds_past_the_image_are_clamped_as_matlab_vl_dsift(bounds):
    # MATLAB's vl_dsift passes max(min, 0) and min(max, size - 1) to vl_dsift_set_bounds
    im = _gray("camera")[:120, :140].copy()
    clamped = (max(bounds[0], 0), max(bounds[1], 0), min(bounds[2], 139), min(bounds[3], 119))
    ref_frames, ref = vl_dsift(im, 4, (3, 2), bounds=clamped)
    frames, got = invert_native.dsift(im, step=(3, 2), bin_size=4, bounds=bounds)
    np.testing.assert_array_equal(frames, ref_frames)
    assert _rel(got, ref) <= VL_BOUND


@pytest.mark.parametrize("orientations,num_bins,window_size", [
    (1, 4, 2.0), (1, 3, 1.5), (1, 1, 2.0), (2, 4, 2.0), (4, 4, 2.0), (12, 3, 3.5)])
def test_forward_matches_vlfeat_other_geometries(orientations, num_bins, window_size):
    # numBinT = 1: vl_dsift_process stores (1 - frac) * mag in bin 0, then frac * mag in bin
    # (0 + 1) % 1 = 0 over it, so the one orientation channel holds frac * mag (frac: the
    # angle's fraction of a turn); bit-identical to libvl as the other geometries
    im = _gray("camera")[100:200, 50:180].copy()
    ref_frames, ref = vl_dsift(im, 4, 3, geometry=(orientations, num_bins),
                               window_size=window_size)
    net = invert_native.DSIFT(bin_size=4, step=3, orientations=orientations, num_bins=num_bins,
                              window_size=window_size)
    y = net.forward(im[None, None])
    got = y[0].reshape(y.shape[1], -1).T
    np.testing.assert_array_equal(net.frames(*im.shape), ref_frames)
    assert got.shape == ref.shape
    assert _rel(got, ref) <= VL_BOUND


def test_exact_atan2_is_close_to_vlfeat():
    im = _gray("camera")[100:260, 50:230].copy()
    _, ref = vl_dsift(im, 5, 3)
    _, got = invert_native.dsift(im, step=3, bin_size=5, exact_atan2=True)
    err = _rel(got, ref)
    assert 1e-4 < err <= VL_BOUND_EXACT_ATAN2, err


def test_layer_layout_is_vlfeat_order(rng):
    """DSIFT.forward's (N, 128, ny, nx) is the functional API's rows, batch by batch."""
    ims = [_gray("camera")[:90, :70], _gray("moon")[200:290, 100:170]]
    net = invert_native.DSIFT(bin_size=4, step=3)
    y = net.forward(f32(np.stack(ims)[:, None]))
    ny, nx = (90 - 1 - 12) // 3 + 1, (70 - 1 - 12) // 3 + 1
    assert y.shape == (2, 128, ny, nx) == net.output_shape((2, 1, 90, 70))
    for i, im in enumerate(ims):
        frames, d = invert_native.dsift(im, step=3, bin_size=4)
        np.testing.assert_array_equal(y[i].reshape(128, -1).T, d)
        np.testing.assert_array_equal(net.frames(90, 70), frames)
    # frame (fy, fx) is centred at (fx*step + 1.5*bin, fy*step + 1.5*bin)
    assert tuple(frames[nx + 2]) == (2 * 3 + 6.0, 1 * 3 + 6.0)


# ---------------------------------------------------------------------------------------------
# float64 PyTorch reference of the chain (test-only)

C3, C1, EPS, FLOOR = 0.1821, 0.9675, 2.0 ** -23, 1e-8


def window_means(bin_size, num_bins, window_size=2.0):
    u = np.arange(-bin_size + 1, bin_size)
    out = []
    for i in range(num_bins):
        delta = bin_size * (i - 0.5 * (num_bins - 1))
        z = (u - delta) / (bin_size * window_size)
        out.append(np.exp(-0.5 * z * z).mean())
    return np.array(out)


def t_image_gradient(torch, x):
    def diff(v, dim):
        n = v.shape[dim]
        first = v.narrow(dim, 1, 1) - v.narrow(dim, 0, 1)
        mid = 0.5 * (v.narrow(dim, 2, n - 2) - v.narrow(dim, 0, n - 2))
        last = v.narrow(dim, n - 1, 1) - v.narrow(dim, n - 2, 1)
        return torch.cat([first, mid, last], dim)

    return diff(x, 3), diff(x, 2)


def t_angle(torch, gx, gy, exact):
    if exact:
        a = torch.atan2(gy, gx)
    else:
        ay = gy.abs() + EPS
        pos = gx >= 0
        r = torch.where(pos, (gx - ay) / (gx + ay), (gx + ay) / (ay - gx))
        a = torch.where(pos, math.pi / 4, 3 * math.pi / 4) + (C3 * r * r - C1) * r
        a = torch.where(gy < 0, -a, a)
    return torch.where(a < 0, a + 2 * math.pi, a)


def t_gradient(torch, x, cfg, return_nt=False):
    K = cfg.orientations
    gx, gy = t_image_gradient(torch, x)
    nt = t_angle(torch, gx, gy, cfg.exact_atan2) * (K / (2 * math.pi))
    b = torch.floor(nt).detach()
    frac = nt - b
    m2 = gx * gx + gy * gy
    mag = torch.where(m2 < FLOOR, torch.zeros_like(m2), torch.sqrt(m2.clamp_min(FLOOR)))
    b0 = torch.remainder(b, K).long()
    b1 = torch.remainder(b0 + 1, K)
    oh = torch.nn.functional.one_hot
    # VLFeat stores bin b0's share, then bin b1's: with K == 1 (b0 == b1) the second store
    # overwrites the first and the one channel holds frac * mag
    w0 = 0.0 if K == 1 else 1.0
    h = ((w0 * mag * (1 - frac)).unsqueeze(-1) * oh(b0, K)
         + (mag * frac).unsqueeze(-1) * oh(b1, K))
    h = h[:, 0].permute(0, 3, 1, 2)
    return (h, nt) if return_nt else h


def t_triangle(torch, x, axis, cfg):
    b, K = cfg.bin_size, x.shape[1]
    taps = torch.tensor([(b - abs(u)) / b ** 2 for u in range(-b + 1, b)], dtype=x.dtype)
    if axis == 3:
        xp = torch.nn.functional.pad(x, (b - 1, b - 1, 0, 0), mode="replicate")
        w = taps.view(1, 1, 1, -1)
    else:
        xp = torch.nn.functional.pad(x, (0, 0, b - 1, b - 1), mode="replicate")
        w = taps.view(1, 1, -1, 1)
    return torch.nn.functional.conv2d(xp, w.repeat(K, 1, 1, 1), groups=K)


def t_sample(torch, s, cfg):
    _, _, H, W = s.shape
    ny, nx, x0, y0 = ops.dsift_geometry(cfg, H, W)
    sx, sy = (cfg.step, cfg.step) if np.isscalar(cfg.step) else cfg.step
    m = window_means(cfg.bin_size, cfg.num_bins, cfg.window_size)
    parts = []
    for by in range(cfg.num_bins):
        rows = torch.tensor(y0 + np.arange(ny) * sy + by * cfg.bin_size)
        for bx in range(cfg.num_bins):
            cols = torch.tensor(x0 + np.arange(nx) * sx + bx * cfg.bin_size)
            parts.append(m[bx] * m[by] * cfg.bin_size ** 2 * s[:, :, rows][:, :, :, cols])
    return torch.cat(parts, 1)


def t_normalize(torch, d, cfg, return_u=False):
    def norm(v):
        ss = (v * v).sum(1, keepdim=True)
        return torch.where(ss < FLOOR, torch.zeros_like(ss), torch.sqrt(ss.clamp_min(FLOOR))) + EPS

    u = d / norm(d)
    v = torch.clamp(u, max=cfg.clamp)
    y = v / norm(v) if cfg.second_l2 else v
    return (y, u) if return_u else y


def t_chain(torch, x, cfg):
    h = t_gradient(torch, x, cfg)
    s = t_triangle(torch, t_triangle(torch, h, 2, cfg), 3, cfg)
    return t_normalize(torch, t_sample(torch, s, cfg), cfg)


def away_from_kinks(torch, rng, shape, cfg, margin=2e-4, tries=50):
    """A random image (values in [0, 255]) whose angles are at least `margin` (in bins) from
    every bin edge and whose normalised entries are at least `margin` from the clamp."""
    for _ in range(tries):
        x = f32(rng.uniform(0, 255, size=shape))
        xt = torch.tensor(x, dtype=torch.float64)
        _, nt = t_gradient(torch, xt, cfg, return_nt=True)
        frac = (nt - torch.round(nt)).abs()
        if float(frac.min()) < margin:
            continue
        s = t_triangle(torch, t_triangle(torch, t_gradient(torch, xt, cfg), 2, cfg), 3, cfg)
        _, u = t_normalize(torch, t_sample(torch, s, cfg), cfg, return_u=True)
        if float((u - cfg.clamp).abs().min()) < margin:
            continue
        return x
    raise AssertionError("could not draw an image away from the kinks")


CONFIGS = [
    DsiftConfig(bin_size=3, step=2),
    DsiftConfig(bin_size=2, step=(3, 1), second_l2=False, exact_atan2=True),
    DsiftConfig(bin_size=4, step=5, bounds=(1, 2, 17, 18), clamp=0.15),
    DsiftConfig(bin_size=3, step=4, orientations=6, num_bins=3),
    DsiftConfig(bin_size=3, step=2, orientations=1, num_bins=3),
]
SHAPES = [(2, 1, 15, 13), (1, 1, 12, 17), (1, 1, 20, 19), (1, 1, 14, 18), (2, 1, 13, 16)]


def _setup(torch, rng, i):
    cfg, shape = CONFIGS[i], SHAPES[i]
    return cfg, away_from_kinks(torch, rng, shape, cfg)


def _t(torch, a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def _net(cfg):
    return invert_native.DSIFT(bin_size=cfg.bin_size, step=cfg.step, bounds=cfg.bounds,
                               second_l2=cfg.second_l2, clamp=cfg.clamp,
                               exact_atan2=cfg.exact_atan2, orientations=cfg.orientations,
                               num_bins=cfg.num_bins)


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_ops_forward_match_float64_reference(rng, i):
    torch = require("torch")
    cfg, x = _setup(torch, rng, i)
    xt = _t(torch, x)
    h = ops.dsift_gradient_forward(x, cfg)
    assert_close(h, t_gradient(torch, xt, cfg), what="dsift_gradient_forward")
    for axis in (2, 3):
        assert_close(ops.dsift_triangle_forward(h, axis, cfg),
                     t_triangle(torch, _t(torch, h), axis, cfg), what=f"triangle axis {axis}")
    s = ops.dsift_triangle_forward(ops.dsift_triangle_forward(h, 2, cfg), 3, cfg)
    d = ops.dsift_sample_forward(s, cfg)
    assert_close(d, t_sample(torch, _t(torch, s), cfg), what="dsift_sample_forward")
    y, norms = ops.dsift_normalize_forward(d, cfg)
    assert_close(y, t_normalize(torch, _t(torch, d), cfg), what="dsift_normalize_forward")
    assert_close(norms[:, 0], np.linalg.norm(d.astype(np.float64), axis=1), what="norms")
    net = _net(cfg)
    assert_close(net.forward(x), t_chain(torch, xt, cfg), what="DSIFT.forward")


def _autograd(torch, fn, x, dy):
    xt = _t(torch, x).requires_grad_(True)
    fn(xt).backward(_t(torch, dy))
    return xt.grad


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_ops_backward_match_autograd(rng, i):
    torch = require("torch")
    cfg, x = _setup(torch, rng, i)
    h = ops.dsift_gradient_forward(x, cfg)
    dh = f32(rng.standard_normal(h.shape))
    assert_close(ops.dsift_gradient_backward(x, dh, cfg),
                 _autograd(torch, lambda v: t_gradient(torch, v, cfg), x, dh), rtol=2e-4,
                 what="dsift_gradient_backward")
    for axis in (2, 3):
        assert_close(ops.dsift_triangle_backward(dh, axis, cfg),
                     _autograd(torch, lambda v: t_triangle(torch, v, axis, cfg), h, dh),
                     what=f"dsift_triangle_backward axis {axis}")
    d = ops.dsift_sample_forward(h, cfg)
    dd = f32(rng.standard_normal(d.shape))
    assert_close(ops.dsift_sample_backward(dd, h.shape, cfg),
                 _autograd(torch, lambda v: t_sample(torch, v, cfg), h, dd),
                 what="dsift_sample_backward")
    y, norms = ops.dsift_normalize_forward(d, cfg)
    assert_close(ops.dsift_normalize_backward(d, norms, dd, cfg),
                 _autograd(torch, lambda v: t_normalize(torch, v, cfg), d, dd), rtol=2e-4,
                 what="dsift_normalize_backward")


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_chain_backward_matches_autograd(rng, i):
    torch = require("torch")
    cfg, x = _setup(torch, rng, i)
    net = _net(cfg)
    y = net.forward(x)
    dy = f32(rng.standard_normal(y.shape))
    assert_close(net.backward(dy), _autograd(torch, lambda v: t_chain(torch, v, cfg), x, dy),
                 rtol=1e-3, what="DSIFT.backward")


def _fd_check(torch, rng, fn, x, dx, n=12, h=1e-4, rtol=2e-3):
    """dx (our float32 backward of sum(w * fn(x))) against float64 central differences."""
    x64 = np.asarray(x, np.float64)
    scale = float(np.abs(dx).max())
    for flat in rng.choice(x64.size, size=min(n, x64.size), replace=False):
        e = np.zeros_like(x64)
        e.flat[flat] = h
        with torch.no_grad():
            fd = float(fn(_t(torch, x64 + e)) - fn(_t(torch, x64 - e))) / (2 * h)
        got = float(dx.flat[flat])
        assert abs(got - fd) <= 1e-6 + rtol * scale, (flat, got, fd, scale)


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_backward_matches_finite_differences(rng, i):
    torch = require("torch")
    cfg, x = _setup(torch, rng, i)
    # each op on its own
    h = ops.dsift_gradient_forward(x, cfg)
    wh = f32(rng.standard_normal(h.shape))
    _fd_check(torch, rng, lambda v: (t_gradient(torch, v, cfg) * _t(torch, wh)).sum(), x,
              ops.dsift_gradient_backward(x, wh, cfg))
    for axis in (2, 3):
        _fd_check(torch, rng, lambda v: (t_triangle(torch, v, axis, cfg) * _t(torch, wh)).sum(),
                  h, ops.dsift_triangle_backward(wh, axis, cfg))
    d = ops.dsift_sample_forward(h, cfg)
    wd = f32(rng.standard_normal(d.shape))
    _fd_check(torch, rng, lambda v: (t_sample(torch, v, cfg) * _t(torch, wd)).sum(), h,
              ops.dsift_sample_backward(wd, h.shape, cfg))
    _, norms = ops.dsift_normalize_forward(d, cfg)
    _fd_check(torch, rng, lambda v: (t_normalize(torch, v, cfg) * _t(torch, wd)).sum(), d,
              ops.dsift_normalize_backward(d, norms, wd, cfg), h=1e-3)
    # the whole chain
    net = _net(cfg)
    y = net.forward(x)
    wy = f32(rng.standard_normal(y.shape))
    _fd_check(torch, rng, lambda v: (t_chain(torch, v, cfg) * _t(torch, wy)).sum(), x,
              net.backward(wy), n=20)


def test_fast_atan2_matches_vlfeat_formula_and_exact_atan2():
    """The angles the chain bins: VLFeat's approximation is within 6.2e-3 rad of atan2."""
    torch = require("torch")
    g = torch.tensor(np.random.default_rng(0).standard_normal((2, 5000)))
    fast = t_angle(torch, g[0], g[1], False)
    exact = t_angle(torch, g[0], g[1], True)
    diff = torch.remainder(fast - exact + math.pi, 2 * math.pi) - math.pi
    assert 5e-3 < float(diff.abs().max()) < 6.2e-3


# ---------------------------------------------------------------------------------------------
# API and bad input


def test_table1_preset():
    net = invert_native.DSIFT.table1()
    assert (net.config.bin_size, net.config.step, net.config.second_l2) == (5, 15, False)
    x = f32(np.random.default_rng(1).uniform(0, 255, (1, 1, 64, 80)))
    y = net.forward(x)
    assert y.shape == (1, 128, (63 - 15) // 15 + 1, (79 - 15) // 15 + 1)
    # no second L2: entries stay <= 0.2 and norms are below 1 (up to VLFeat's fast sqrt,
    # which runs up to ~5e-6 low)
    assert float(y.max()) <= 0.2 + 1e-7
    assert np.all(np.linalg.norm(y, axis=1) <= 1.0 + 1e-5)
    assert net.names == ["gradient", "bin_y", "bin_x", "sample", "normalize"]


def test_flat_image_gives_zero_descriptors_and_zero_gradient():
    net = invert_native.DSIFT(bin_size=3, step=2)
    x = np.full((1, 1, 16, 16), 77.0, np.float32)
    y = net.forward(x)
    assert np.all(y == 0)
    dx = net.backward(np.ones_like(y))
    assert np.all(dx == 0)


def test_dsift_converts_integer_images():
    im = _gray("camera")[:60, :50]
    f1, d1 = invert_native.dsift(im.round().astype(np.uint8), step=4, bin_size=4)
    f2, d2 = invert_native.dsift(im.round().astype(np.float64), step=4, bin_size=4)
    f3, d3 = invert_native.dsift(im.round().astype(np.int32)[:, :, None], step=4, bin_size=4)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(d1, d3)
    np.testing.assert_array_equal(f1, f2)


def test_bad_input_raises_clear_errors():
    im = np.zeros((30, 30), np.float32)
    with pytest.raises(ValueError, match="too small for one descriptor"):
        invert_native.dsift(im, bin_size=10)
    with pytest.raises(ValueError, match="too small for one descriptor"):
        invert_native.DSIFT(bin_size=8).forward(np.zeros((1, 1, 24, 40), np.float32))
    with pytest.raises(ValueError, match="grey"):
        invert_native.dsift(np.zeros((30, 30, 3), np.uint8))
    with pytest.raises(ValueError, match="grey"):
        invert_native.DSIFT(bin_size=3).forward(np.zeros((1, 3, 30, 30), np.float32))
    bad = im.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        invert_native.dsift(bad)
    bad[3, 4] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        invert_native.DSIFT(bin_size=3).forward(bad[None, None])
    with pytest.raises(TypeError, match="float32"):
        invert_native.DSIFT(bin_size=3).forward(np.zeros((1, 1, 30, 30), np.float64))
    with pytest.raises(TypeError, match="real numbers"):
        invert_native.dsift(np.zeros((30, 30), bool))
    with pytest.raises(NotImplementedError, match="flat window"):
        invert_native.DSIFT(fast=False)
    with pytest.raises(ValueError, match="bin_size must be positive"):
        invert_native.DSIFT(bin_size=0)
    with pytest.raises(ValueError, match="step must be positive"):
        invert_native.DSIFT(bin_size=3, step=-1)
    for bounds in [(0, 0, -1, 20), (30, 0, 40, 20), (5, 3, 4, 20)]:  # no pixel left
        with pytest.raises(ValueError, match="bounds"):
            invert_native.dsift(im, bounds=bounds)
    with pytest.raises(RuntimeError, match="before forward"):
        invert_native.DSIFT(bin_size=3).backward(np.zeros((1, 128, 1, 1), np.float32))
    with pytest.raises(ValueError, match="dy has shape"):
        net = invert_native.DSIFT(bin_size=3, step=3)
        net.forward(np.zeros((1, 1, 20, 20), np.float32))
        net.backward(np.zeros((1, 128, 2, 2), np.float32))


@pytest.mark.parametrize("bad", [None, "abc", [[1, 2], [3]]])
def test_dsift_non_arrays_raise_type_error_naming_the_argument(bad):
    with pytest.raises(TypeError, match="dsift: gray must be an array of real numbers"):
        invert_native.dsift(bad)


def test_dsift_values_beyond_float32_range_say_so():
    im = np.full((30, 30), 100.0)
    im[3, 4] = 1e39
    with pytest.raises(ValueError, match="beyond float32 range"):
        invert_native.dsift(im)
    im[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        invert_native.dsift(im)

"""HOG backward (and forward) against an independent float64 PyTorch version of the chain.

The reference (test-only) writes the chain in torch ops and differentiates it
with autograd: gradients by slicing, the channel of largest |g|^2 by argmax,
orientation binning from the gradient's atan2 angle (not from dot products
with the bin directions, as the core does), pooling as two dense matrices,
block factors from a replicate-padded energy map. Its forward is checked
against the core, its autograd against float64 central finite differences, and
the core's backward (each op and the whole chain) against its autograd.

Inputs are drawn away from the kinks, where finite differences mean nothing:
gradient angles away from the bin boundaries (hard) and bin centres (bilinear,
ReLU), the two largest channel gradients apart, gradient magnitudes away from
0, and f * h away from the clamp at 0.2 (images that fail are redrawn).

Tolerance: the shared assert_close, max|got - ref| <= atol + rtol * max|ref|.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import invert_native
from conftest import assert_close, f32, require
from invert_native import ops

RTOL = 2e-4     # float32 core vs float64 reference
FD_EPS = 1e-6   # central differences on pixel values in [0, 255], float64
MARGIN = 1e-4   # distance to every kink (angle in bin widths; relative for the rest)


# ------------------------------------------------------------ torch reference
def _pool_matrix(n, cell, cells, torch):
    """(cells, n): weight of pixel i in cell c (VLFeat's rule, interior pixels only)."""
    m = np.zeros((cells, n))
    for i in range(1, n - 1):
        t = (i + 0.5) / cell - 0.5
        b = math.floor(t)
        f = t - b
        if 0 <= b < cells:
            m[b, i] += 1 - f
        if 0 <= b + 1 < cells:
            m[b + 1, i] += f
    return torch.tensor(m, dtype=torch.float64)


def torch_cells(x, cell, O, binning):
    """(N, C, H, W) float64 tensor -> (hist (N, 2O, h, w), angle t in bin widths, extras)."""
    torch = require("torch")
    N, C, H, W = x.shape
    K = 2 * O
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    gx[:, :, 1:-1, 1:-1] = x[:, :, 1:-1, 2:] - x[:, :, 1:-1, :-2]
    gy[:, :, 1:-1, 1:-1] = x[:, :, 2:, 1:-1] - x[:, :, :-2, 1:-1]
    g2 = gx * gx + gy * gy
    sel = g2.argmax(dim=1, keepdim=True)
    gxs = gx.gather(1, sel)[:, 0]
    gys = gy.gather(1, sel)[:, 0]
    mask = torch.zeros(N, H, W, dtype=torch.bool)
    mask[:, 1:-1, 1:-1] = True
    gxs = torch.where(mask, gxs, torch.ones_like(gxs))  # keep atan2/sqrt smooth on the border
    gys = torch.where(mask, gys, torch.zeros_like(gys))
    mag = torch.sqrt(gxs * gxs + gys * gys)
    width = math.pi / O
    t = torch.atan2(gys, gxs) / width  # angle in bin widths, (-O, O]
    kk = torch.arange(K, dtype=torch.float64).view(1, K, 1, 1)
    if binning == "hard":
        b = torch.remainder(torch.round(t.detach()), K)
        per_pixel = mag[:, None] * (kk == b[:, None]).double()
    elif binning == "bilinear" and O == 1:
        # VLFeat's scan finds one axis only: the nearer of the two directions gets
        # (1 - angle to it / pi) |g|, the other nothing
        b = torch.round(t.detach())
        per_pixel = (mag * (1 - torch.abs(t - b)))[:, None] * \
            (kk == torch.remainder(b, K)[:, None]).double()
    elif binning == "bilinear":
        b = torch.floor(t.detach())
        f = t - b
        b = torch.remainder(b, K)
        per_pixel = (mag * (1 - f))[:, None] * (kk == b[:, None]).double() + \
            (mag * f)[:, None] * (kk == torch.remainder(b + 1, K)[:, None]).double()
    else:  # relu
        a = math.cos(width)
        ang = kk * width
        proj = gxs[:, None] * torch.cos(ang) + gys[:, None] * torch.sin(ang)
        per_pixel = torch.relu(proj - a * mag[:, None]) / (1 - a)
    per_pixel = per_pixel * mask[:, None]
    h, w = (H + cell // 2) // cell, (W + cell // 2) // cell
    hist = torch.einsum("nkyx,cy,dx->nkcd", per_pixel, _pool_matrix(H, cell, h, torch),
                        _pool_matrix(W, cell, w, torch))
    return hist, dict(t=t, mag=mag, g2=g2, mask=mask)


def torch_norm(hist, variant, texture):
    """(N, 2O, h, w) -> (features (N, D, h, w), extras)."""
    torch = require("torch")
    O = hist.shape[1] // 2
    u = hist[:, :O] + hist[:, O:]
    e = (u * u).sum(1, keepdim=True)
    ep = torch.nn.functional.pad(e, (1, 1, 1, 1), mode="replicate")[:, 0]
    blocks = ep[:, :-1, :-1] + ep[:, :-1, 1:] + ep[:, 1:, :-1] + ep[:, 1:, 1:]
    f = 1.0 / torch.sqrt(blocks + 1e-4)
    fs = [f[:, :-1, :-1], f[:, :-1, 1:], f[:, 1:, :-1], f[:, 1:, 1:]]  # up-left .. down-right
    clamp = lambda v: torch.clamp(v, max=0.2)  # noqa: E731
    if variant == "dalaltriggs":
        out = torch.cat([clamp(fi[:, None] * u) for fi in fs], 1)
        args = [fi[:, None] * u for fi in fs]
    else:
        directed = 0.5 * sum(clamp(fi[:, None] * hist) for fi in fs)
        undirected = 0.5 * sum(clamp(fi[:, None] * u) for fi in fs)
        parts = [directed, undirected]
        if texture:
            parts.append(torch.stack([clamp(fi[:, None] * u).sum(1) for fi in fs], 1)
                         / math.sqrt(18.0))
        out = torch.cat(parts, 1)
        args = [fi[:, None] * hist for fi in fs] + [fi[:, None] * u for fi in fs]
    return out, dict(args=args)


def torch_hog(x, cell, O, binning, variant, texture):
    hist, ex = torch_cells(x, cell, O, binning)
    y, ex2 = torch_norm(hist, variant, texture)
    return y, hist, ex, ex2


# ------------------------------------------------------------------- margins
def _angle_margin(t, binning, O=9):
    """Distance (in bin widths) of every interior angle to the nearest kink."""
    off = 0.5 if binning == "hard" else 0.0  # hard: boundaries; bilinear/relu: centres
    d = np.abs(t - off - np.round(t - off))
    if binning == "bilinear" and O == 1:  # one axis: the bin also jumps halfway
        d = np.minimum(d, np.abs(t - 0.5 - np.round(t - 0.5)))
    return d


def _kink_margins(x64, cell, O, binning, variant, texture):
    torch = require("torch")
    xt = torch.tensor(x64)
    with torch.no_grad():
        _, _, ex, ex2 = torch_hog(xt, cell, O, binning, variant, texture)
    mask = ex["mask"].numpy()
    t = ex["t"].numpy()[mask]
    m_angle = _angle_margin(t, binning, O).min()
    m_mag = ex["mag"].numpy()[mask].min() / ex["mag"].numpy()[mask].max()
    g2 = np.sort(ex["g2"].numpy(), axis=1)
    if x64.shape[1] > 1:
        top, second = g2[:, -1][mask], g2[:, -2][mask]
        m_chan = ((top - second) / top).min()
    else:
        m_chan = 1.0
    args = np.concatenate([a.numpy().ravel() for a in ex2["args"]])
    m_clamp = (np.abs(args - 0.2) / 0.2).min()
    return min(m_angle, m_mag, m_chan, m_clamp)


def smooth_image(rng, N, C, H, W):
    """Random smooth-ish images in [0, 255]: a few random sinusoids plus noise."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    out = np.empty((N, C, H, W))
    for n in range(N):
        for c in range(C):
            img = np.zeros((H, W))
            for _ in range(4):
                fx, fy, ph = rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(0, 6.3)
                img += rng.uniform(10, 40) * np.sin(fx * x + fy * y + ph)
            out[n, c] = 128 + img + rng.normal(0, 8, (H, W))
    return out


def draw_away_from_kinks(rng, shape, cell, O, binning, variant="uoctti", texture=True):
    for _ in range(200):
        x = smooth_image(rng, *shape)
        # the core works in float32: make the float64 reference see the same pixels
        x = x.astype(np.float32).astype(np.float64)
        if _kink_margins(x, cell, O, binning, variant, texture) > MARGIN:
            return x
    raise AssertionError("could not draw an image away from the kinks")


# --------------------------------------------------------------- the checks
def directional_fd(fn, x, dy, n_dirs, rng):
    """float64 central differences of <dy, fn(x)> along n_dirs random directions."""
    dirs, vals = [], []
    for _ in range(n_dirs):
        v = rng.normal(size=x.shape)
        vals.append((np.sum(dy * fn(x + FD_EPS * v)) - np.sum(dy * fn(x - FD_EPS * v)))
                    / (2 * FD_EPS))
        dirs.append(v)
    return np.array(dirs), np.array(vals)


CASES = [  # (binning, variant, texture, C, H, W, cell, O)
    ("hard", "uoctti", True, 1, 26, 23, 5, 9),
    ("hard", "dalaltriggs", True, 3, 21, 27, 6, 9),
    ("bilinear", "uoctti", True, 3, 24, 24, 6, 9),
    ("bilinear", "uoctti", False, 1, 19, 30, 4, 6),
    ("bilinear", "dalaltriggs", True, 1, 20, 20, 5, 9),
    ("relu", "uoctti", True, 3, 22, 25, 5, 9),
    ("relu", "dalaltriggs", True, 1, 18, 21, 4, 4),
    ("bilinear", "uoctti", True, 3, 20, 22, 5, 1),
    ("hard", "dalaltriggs", True, 1, 20, 19, 5, 1),
]


def _ids(case):
    return "-".join(str(v) for v in case)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_chain_forward_and_backward_match_torch_and_fd(case, rng):
    torch = require("torch")
    binning, variant, texture, C, H, W, cell, O = case
    x64 = draw_away_from_kinks(rng, (2, C, H, W), cell, O, binning, variant, texture)
    net = invert_native.HOG(cell, O, variant, texture=texture, binning=binning)

    # forward: core vs the torch reference
    y = net.forward(f32(x64))
    xt = torch.tensor(x64, requires_grad=True)
    yt, hist_t, _, _ = torch_hog(xt, cell, O, binning, variant, texture)
    assert_close(y, yt, rtol=RTOL, what="forward")
    assert_close(net["cells"].forward(f32(x64)), hist_t, rtol=RTOL, what="hist")

    # backward: core vs autograd of the reference
    dy = rng.normal(size=y.shape)
    net.forward(f32(x64))
    dx = net.backward(f32(dy))
    (gt,) = torch.autograd.grad(yt, xt, torch.tensor(dy))
    assert_close(dx, gt, rtol=1e-3, what="dx vs torch autograd")

    # the reference's autograd vs float64 finite differences of the reference
    def fn(xx):
        with torch.no_grad():
            return torch_hog(torch.tensor(xx), cell, O, binning, variant, texture)[0].numpy()

    dirs, fd = directional_fd(fn, x64, dy, 3, rng)
    ad = np.einsum("knchw,nchw->k", dirs, gt.numpy())
    assert_close(ad, fd, rtol=1e-6, what="torch autograd vs finite differences")
    core = np.einsum("knchw,nchw->k", dirs, dx.astype(np.float64))
    assert_close(core, fd, rtol=1e-3, what="core backward vs finite differences")


def test_chain_backward_every_pixel_vs_finite_differences(rng):
    """Element-wise finite differences (all pixels) on a small colour image."""
    torch = require("torch")
    cell, O, binning = 4, 9, "bilinear"
    x64 = draw_away_from_kinks(rng, (1, 3, 13, 14), cell, O, binning)
    net = invert_native.HOG(cell, O, bilinear=True)
    y = net.forward(f32(x64))
    dy = rng.normal(size=y.shape)
    dx = net.backward(f32(dy))
    fd = np.zeros_like(x64)
    with torch.no_grad():
        for i in np.ndindex(*x64.shape):
            xp, xm = x64.copy(), x64.copy()
            xp[i] += FD_EPS
            xm[i] -= FD_EPS
            fp = torch_hog(torch.tensor(xp), cell, O, binning, "uoctti", True)[0].numpy()
            fm = torch_hog(torch.tensor(xm), cell, O, binning, "uoctti", True)[0].numpy()
            fd[i] = np.sum(dy * (fp - fm)) / (2 * FD_EPS)
    assert_close(dx, fd, rtol=1e-3, what="dx vs element-wise finite differences")


@pytest.mark.parametrize("binning", ["hard", "bilinear", "relu"])
def test_hog_cells_op_backward(binning, rng):
    """The op alone: hog_cells_backward vs autograd and finite differences."""
    torch = require("torch")
    cell, O = 5, 9
    x64 = draw_away_from_kinks(rng, (2, 3, 17, 22), cell, O, binning)
    hist, pix, assign = ops.hog_cells_forward(f32(x64), cell, O, binning)
    xt = torch.tensor(x64, requires_grad=True)
    ht, _ = torch_cells(xt, cell, O, binning)
    assert_close(hist, ht, rtol=RTOL, what="hist")
    dh = rng.normal(size=hist.shape)
    dx = ops.hog_cells_backward(f32(dh), pix, assign, x64.shape, cell, O, binning)
    (gt,) = torch.autograd.grad(ht, xt, torch.tensor(dh))
    assert_close(dx, gt, rtol=1e-3, what="dx")

    def fn(xx):
        with torch.no_grad():
            return torch_cells(torch.tensor(xx), cell, O, binning)[0].numpy()

    dirs, fd = directional_fd(fn, x64, dh, 3, rng)
    assert_close(np.einsum("knchw,nchw->k", dirs, dx.astype(np.float64)), fd, rtol=1e-3)
    # hard binning: backward through |g| only, i.e. along g/|g| of the selected channel
    if binning == "hard":
        assert np.all(assign[:, 2] == -1) and np.all(pix[:, 3] == 0)


def _random_hist(rng, N, O, h, w, variant, texture):
    """Histograms whose f * h stay away from 0.2 (redrawn otherwise)."""
    torch = require("torch")
    for _ in range(200):
        hist = rng.gamma(1.0, 30.0, size=(N, 2 * O, h, w))
        hist = hist.astype(np.float32).astype(np.float64)
        with torch.no_grad():
            _, ex = torch_norm(torch.tensor(hist), variant, texture)
        args = np.concatenate([a.numpy().ravel() for a in ex["args"]])
        if (np.abs(args - 0.2) / 0.2).min() > MARGIN and (args > 0.2).any():
            return hist
    raise AssertionError("could not draw histograms away from the clamp")


@pytest.mark.parametrize("variant,texture,O,h,w", [
    ("uoctti", True, 9, 5, 4), ("uoctti", False, 9, 3, 6), ("dalaltriggs", True, 9, 4, 4),
    ("uoctti", True, 5, 2, 2), ("dalaltriggs", True, 3, 1, 3), ("uoctti", True, 9, 1, 1),
])
def test_hog_norm_op_forward_and_backward(variant, texture, O, h, w, rng):
    torch = require("torch")
    hist64 = _random_hist(rng, 2, O, h, w, variant, texture)
    y, blocks = ops.hog_norm_forward(f32(hist64), variant, texture)
    ht = torch.tensor(hist64, requires_grad=True)
    yt, _ = torch_norm(ht, variant, texture)
    assert_close(y, yt, rtol=RTOL, what="hog_norm forward")
    dy = rng.normal(size=y.shape)
    dh = ops.hog_norm_backward(f32(hist64), blocks, f32(dy), variant, texture)
    (gt,) = torch.autograd.grad(yt, ht, torch.tensor(dy))
    assert_close(dh, gt, rtol=1e-3, what="dhist vs autograd")

    def fn(hh):
        with torch.no_grad():
            return torch_norm(torch.tensor(hh), variant, texture)[0].numpy()

    fd = np.zeros_like(hist64)
    for i in np.ndindex(*hist64.shape):
        hp, hm = hist64.copy(), hist64.copy()
        hp[i] += 1e-5
        hm[i] -= 1e-5
        fd[i] = np.sum(dy * (fn(hp) - fn(hm))) / 2e-5
    assert_close(gt, fd, rtol=1e-6, what="autograd vs finite differences")
    assert_close(dh, fd, rtol=1e-3, what="dhist vs finite differences")


def test_backward_overwrites_and_is_linear_in_dy(rng):
    x = f32(smooth_image(rng, 1, 3, 24, 24))
    net = invert_native.HOG(bilinear=True)
    y = net.forward(x)
    d1, d2 = rng.normal(size=y.shape), rng.normal(size=y.shape)
    g1 = net.backward(f32(d1))
    g2 = net.backward(f32(d2))
    g12 = net.backward(f32(d1 + 2 * d2))
    assert_close(g12, g1.astype(np.float64) + 2 * g2, rtol=1e-5)
    assert not np.any(net.backward(np.zeros_like(y)))


def test_gradient_reaches_only_the_selected_channel(rng):
    # channel 1 is the only one with gradients: channels 0 and 2 get no gradient anywhere
    y, x = np.mgrid[0:24, 0:24].astype(np.float32)
    img = np.stack([np.full_like(x, 50), 128 + 60 * np.sin(x / 3) * np.cos(y / 4),
                    np.full_like(x, 90)])[None]
    net = invert_native.HOG()
    out = net.forward(np.ascontiguousarray(img))
    dx = net.backward(f32(rng.normal(size=out.shape)))
    assert not dx[0, 0].any() and not dx[0, 2].any() and dx[0, 1].any()

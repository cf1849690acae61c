"""The baseline: the same representations, objective and update written in plain PyTorch.

This is what a user would write instead of using invert_native: the representation as
PyTorch tensor operations, the gradient by autograd, the update with in-place tensor ops.
It computes the same function as ours (same weights, same VLFeat conventions, same
sigma, lambdas, momentum and schedule); the benchmark checks that before it times
anything. It is used only as the benchmark's baseline.

A representation here is a :class:`Chain` of named stages, each a function of one tensor,
so the per-op rows can time a stage's forward and its autograd backward alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class Chain:
    """Stages (name, fn) applied in order; ``forward(x)`` runs them all."""

    def __init__(self, stages):
        self.stages = list(stages)

    def forward(self, x):
        for _, fn in self.stages:
            x = fn(x)
        return x

    __call__ = forward


def _f32(v) -> float:
    """v rounded to float32: the constant the native core uses."""
    return float(np.float32(v))


# ------------------------------------------------------------------------ CNN
def cnn_stage(layer, device):
    """A PyTorch function computing one invert_native.nn layer, with the layer's weights."""
    from invert_native import nn

    def tensor(a):
        if a is None:
            return None
        a = a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else a
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    if isinstance(layer, nn.Conv2d):
        w, b = tensor(layer.weight), tensor(layer.bias)
        return lambda x: F.conv2d(x, w, b, layer.stride, layer.padding, 1, layer.groups)
    if isinstance(layer, nn.ReLU):
        return F.relu
    if isinstance(layer, nn.MaxPool2d):
        k = layer.kernel_size
        s = k if layer.stride is None else layer.stride
        # ceil mode, and PyTorch drops a last window that would start in the padding: the
        # output size of ours
        return lambda x: F.max_pool2d(x, k, s, layer.padding, ceil_mode=True)
    if isinstance(layer, nn.LRN):
        return lambda x: F.local_response_norm(x, layer.size, layer.alpha, layer.beta, layer.k)
    if isinstance(layer, nn.Linear):
        w, b = tensor(layer.weight), tensor(layer.bias)
        return lambda x: F.linear(x.flatten(1), w, b)
    raise TypeError(f"no PyTorch baseline for layer {type(layer).__name__}")


def cnn_chain(named_layers, device) -> Chain:
    return Chain((name, cnn_stage(layer, device)) for name, layer in named_layers)


# ------------------------------------------------------------------------ HOG
def _safe_norm(gx, gy):
    """|g| with a zero gradient where g = 0 (ours passes none there; sqrt would give NaN)."""
    g2 = gx * gx + gy * gy
    nz = g2 > 0
    return torch.where(nz, torch.sqrt(torch.where(nz, g2, torch.ones_like(g2))),
                       torch.zeros_like(g2)), nz


def _cell_matrix(n: int, cells: int, cell: int, device) -> torch.Tensor:
    """(cells, n) weights of pixels to cells along one axis: pixel i sits at (i + 0.5) / cell
    - 0.5 in cell units and is split linearly between the two nearest cells (VLFeat)."""
    m = np.zeros((cells, n), np.float32)
    for i in range(n):
        h = np.float32((np.float32(i) + np.float32(0.5)) / np.float32(cell) - np.float32(0.5))
        b = int(np.floor(h))
        frac = np.float32(h - np.float32(b))
        if 0 <= b < cells:
            m[b, i] = np.float32(1.0) - frac
        if 0 <= b + 1 < cells:
            m[b + 1, i] = frac
    return torch.from_numpy(m).to(device)


class TorchHOG:
    """VLFeat's vl_hog (UoCTTI or Dalal-Triggs; hard, bilinear or ReLU orientation binning).

    Stages: ``cells`` (gradient, binning into 2*O directed orientations, triangular pooling
    into cells) and ``norm`` (block normalisation, clamp, projection), as ours.
    """

    def __init__(self, image_hw, cell_size=8, orientations=9, variant="uoctti", binning="hard",
                 texture=True, device="cpu"):
        H, W = image_hw
        self.cell, self.O, self.variant, self.binning, self.texture = (
            cell_size, orientations, variant, binning, texture)
        self.h, self.w = (H + cell_size // 2) // cell_size, (W + cell_size // 2) // cell_size
        angles = np.arange(orientations, dtype=np.float64) * math.pi / orientations
        # the native core's float32 directions
        ux, uy = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
        self.ux = torch.from_numpy(ux).to(device).view(1, -1, 1, 1)
        self.uy = torch.from_numpy(uy).to(device).view(1, -1, 1, 1)
        self.py = _cell_matrix(H, self.h, cell_size, device)  # (h, H)
        self.pxt = _cell_matrix(W, self.w, cell_size, device).t().contiguous()  # (W, w)
        self.chain = Chain([("cells", self.cells), ("norm", self.norm)])

    def forward(self, x):
        return self.chain(x)

    __call__ = forward

    def cells(self, x):
        N, C, H, W = x.shape
        O, K = self.O, 2 * self.O
        # [-1 0 1] differences without the 1/2, interior pixels only
        gx = F.pad(x[:, :, 1:-1, 2:] - x[:, :, 1:-1, :-2], (1, 1, 1, 1))
        gy = F.pad(x[:, :, 2:, 1:-1] - x[:, :, :-2, 1:-1], (1, 1, 1, 1))
        if C > 1:  # the channel of largest gradient (argmax: the first on ties, as ours)
            with torch.no_grad():
                c = (gx * gx + gy * gy).argmax(1, keepdim=True)
            gx, gy = gx.gather(1, c), gy.gather(1, c)
        mag, nz = _safe_norm(gx, gy)  # (N, 1, H, W)
        if self.binning == "hard":
            with torch.no_grad():  # the bin is piecewise constant: the gradient goes via |g|
                n = torch.clamp(mag, min=1e-10)
                proj = (gx / n) * self.ux + (gy / n) * self.uy  # (N, O, H, W)
                a = proj.abs().argmax(1, keepdim=True)  # first max: the lower axis on ties
                b0 = a + O * (proj.gather(1, a) < 0).long()
            maps = torch.zeros((N, K, H, W), dtype=x.dtype, device=x.device).scatter(1, b0, mag)
        elif self.binning == "bilinear":
            gxs = torch.where(nz, gx, torch.ones_like(gx))  # atan2 has no gradient at 0
            gys = torch.where(nz, gy, torch.zeros_like(gy))
            t = torch.atan2(gys, gxs) * _f32(K / (2 * math.pi))
            t = torch.where(t < 0, t + K, t)
            k = torch.floor(t).detach()
            frac = t - k
            with torch.no_grad():
                # the value VLFeat (and the core) computes for the farther bin's share:
                # acosf of the best projection over |g| (quotient and min in double), over the
                # bin width in double; the gradient stays that of the exact angle, as the core's
                s0 = (gx * self.ux + gy * self.uy).abs().amax(1, keepdim=True)
                c = (s0.double() / mag.double().clamp(min=1e-10)).clamp(max=1.0).float()
                w1 = (torch.acos(c).double() / (math.pi / O)).float()
                frac_vl = torch.where(frac <= 0.5, w1, 1 - w1)
            frac = frac + (frac_vl - frac).detach()
            k0 = k.long() % K
            k1 = (k0 + 1) % K
            zero = torch.zeros((N, K, H, W), dtype=x.dtype, device=x.device)
            maps = zero.scatter_add(1, k0, (1 - frac) * mag).scatter_add(1, k1, frac * mag)
        else:  # relu: max(0, <g, u> - a |g|) / (1 - a) on the 2*O directed directions
            a = _f32(math.cos(math.pi / O))
            proj = gx * self.ux + gy * self.uy
            proj = torch.cat([proj, -proj], 1)
            maps = F.relu(proj - a * mag) / _f32(1.0 - a)
        # triangular pooling: (h, H) @ maps @ (W, w)
        return torch.matmul(self.py, torch.matmul(maps, self.pxt))

    def norm(self, hist):
        O = self.O
        u = hist[:, :O] + hist[:, O:]  # undirected (N, O, h, w)
        e = (u * u).sum(1, keepdim=True)  # cell energies
        ep = F.pad(e, (1, 1, 1, 1), mode="replicate")[:, 0]  # blocks repeat the edge cells
        s = ep[:, :-1, :-1] + ep[:, :-1, 1:] + ep[:, 1:, :-1] + ep[:, 1:, 1:]  # (N, h+1, w+1)
        b = 1.0 / torch.sqrt(s + _f32(1e-4))
        # each cell's four factors: the blocks up-left, up-right, down-left, down-right
        f = torch.stack([b[:, :-1, :-1], b[:, :-1, 1:], b[:, 1:, :-1], b[:, 1:, 1:]], 1)
        f = f.unsqueeze(2)  # (N, 4, 1, h, w)
        clamp = _f32(0.2)
        if self.variant == "dalaltriggs":
            y = torch.clamp(f * u.unsqueeze(1), max=clamp)  # (N, 4, O, h, w): dim i*O + k
            return y.flatten(1, 2)
        directed = 0.5 * torch.clamp(f * hist.unsqueeze(1), max=clamp).sum(1)
        cu = torch.clamp(f * u.unsqueeze(1), max=clamp)  # (N, 4, O, h, w)
        parts = [directed, 0.5 * cu.sum(1)]
        if self.texture:
            parts.append(_f32(1 / math.sqrt(18)) * cu.sum(2))
        return torch.cat(parts, 1)


# ---------------------------------------------------------------------- DSIFT
_ATAN_C3, _ATAN_C1 = _f32(0.1821), _f32(0.9675)
_EPS = _f32(1.19209290e-07)  # VLFeat's VL_EPSILON_F
_SQRT_FLOOR = _f32(1e-8)  # VLFeat's fast sqrt is 0 below this


def _fast_atan2(y, x):
    """VLFeat's vl_fast_atan2_f, written so that autograd gives ours' derivative (also at y = 0)."""
    s = torch.where(y < 0, -torch.ones_like(y), torch.ones_like(y))
    a = y * s + _EPS  # |y| + eps, with d|y|/dy = s
    pos = x >= 0
    r = torch.where(pos, (x - a) / (x + a), (x + a) / (a - x))
    base = torch.where(pos, torch.full_like(x, _f32(math.pi / 4)),
                       torch.full_like(x, _f32(3 * math.pi / 4)))
    return s * (base + (_ATAN_C3 * r * r - _ATAN_C1) * r)


def _root(ss):
    """sqrt(ss), 0 below VLFeat's floor, with a zero gradient there."""
    ok = ss >= _SQRT_FLOOR
    return torch.where(ok, torch.sqrt(torch.where(ok, ss, torch.ones_like(ss))),
                       torch.zeros_like(ss))


class TorchDSIFT:
    """VLFeat's vl_dsift with the flat ("fast") window, as ours: stages ``gradient``,
    ``bin_y``, ``bin_x``, ``sample``, ``normalize``."""

    def __init__(self, image_hw, config, device="cpu"):
        from invert_native.ops import dsift_geometry

        H, W = image_hw
        self.config = c = config
        self.K, self.nbin, self.b = int(c.orientations), int(c.num_bins), int(c.bin_size)
        self.sx, self.sy = (c.step, c.step) if np.isscalar(c.step) else c.step
        self.ny, self.nx, self.x0, self.y0 = dsift_geometry(c, H, W)
        b = self.b
        # unit-integral triangles (b - |u|) / b^2, as ours; sample() multiplies b^2 back
        tri = np.array([(b - abs(u)) / (b * b) for u in range(-b + 1, b)], np.float32)
        tri = torch.from_numpy(tri).to(device)
        self.tri_y = tri.view(1, 1, -1, 1).repeat(self.K, 1, 1, 1)
        self.tri_x = tri.view(1, 1, 1, -1).repeat(self.K, 1, 1, 1)
        self.wmean = [self._window_mean(i) for i in range(self.nbin)]
        self.chain = Chain([("gradient", self.gradient), ("bin_y", self.bin_y),
                            ("bin_x", self.bin_x), ("sample", self.sample),
                            ("normalize", self.normalize)])

    def _window_mean(self, i):
        # VLFeat's mean of the Gaussian window over bin i's support, in float32 as ours
        b, f = self.b, np.float32
        delta = f(b) * (f(i) - f(0.5) * f(self.nbin - 1))
        sigma = f(b) * f(self.config.window_size)
        acc = f(0)
        for u in range(-b + 1, b):
            z = (f(u) - delta) / sigma
            acc = f(acc + np.exp(f(-0.5) * z * z, dtype=np.float32))
        return float(acc / f(2 * b - 1))

    def forward(self, x):
        return self.chain(x)

    __call__ = forward

    def gradient(self, x):
        # half central differences inside, one-sided at the border (VLFeat)
        gx = torch.cat([x[..., 1:2] - x[..., 0:1], 0.5 * (x[..., 2:] - x[..., :-2]),
                        x[..., -1:] - x[..., -2:-1]], 3)
        gy = torch.cat([x[..., 1:2, :] - x[..., 0:1, :], 0.5 * (x[..., 2:, :] - x[..., :-2, :]),
                        x[..., -1:, :] - x[..., -2:-1, :]], 2)
        K = self.K
        if self.config.exact_atan2:
            nz = (gx * gx + gy * gy) > 0
            a = torch.atan2(torch.where(nz, gy, torch.zeros_like(gy)),
                            torch.where(nz, gx, torch.ones_like(gx)))
        else:
            a = _fast_atan2(gy, gx)
        two_pi = _f32(2 * math.pi)
        a = torch.where(a < 0, a + two_pi, a)
        nt = a * _f32(np.float32(K) / np.float32(two_pi))
        fb = torch.floor(nt).detach()
        frac = nt - fb
        b0 = fb.long() % K
        b1 = (b0 + 1) % K
        mag = _root(gx * gx + gy * gy)
        zero = torch.zeros((x.shape[0], K) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
        return zero.scatter_add(1, b0, (1 - frac) * mag).scatter_add(1, b1, frac * mag)

    def bin_y(self, h):
        p = self.b - 1
        return F.conv2d(F.pad(h, (0, 0, p, p), mode="replicate"), self.tri_y, groups=self.K)

    def bin_x(self, h):
        p = self.b - 1
        return F.conv2d(F.pad(h, (p, p, 0, 0), mode="replicate"), self.tri_x, groups=self.K)

    def sample(self, s):
        parts = []
        for by in range(self.nbin):
            y = self.y0 + by * self.b
            rows = s[:, :, y:y + (self.ny - 1) * self.sy + 1:self.sy]
            for bx in range(self.nbin):
                x = self.x0 + bx * self.b
                part = rows[:, :, :, x:x + (self.nx - 1) * self.sx + 1:self.sx]
                # VLFeat's window weights (mean * bin_size), in float32 as ours
                w = (np.float32(self.wmean[bx]) * np.float32(self.b)) * \
                    (np.float32(self.wmean[by]) * np.float32(self.b))
                parts.append(part * _f32(w))
        d = torch.stack(parts, 1)  # (N, bins, K, ny, nx): channel (by*nbin + bx)*K + t
        return d.flatten(1, 2)

    def normalize(self, d):
        n1 = _root((d * d).sum(1, keepdim=True)) + _EPS
        v = torch.clamp(d / n1, max=_f32(self.config.clamp))
        if not self.config.second_l2:
            return v
        return v / (_root((v * v).sum(1, keepdim=True)) + _EPS)


# ----------------------------------------------------------------- objective
def alpha_norm(x, alpha):
    """sum |x|^alpha per sample."""
    return x.abs().pow(alpha).flatten(1).sum(1)


def tv(x, beta, floor=1e-5):
    """TV^beta per image: sum of f(v), v = d1^2 + d2^2, forward differences with the last
    row/column replicated, f(v) = v^(beta/2). For beta < 2, below v = ``floor`` f is its
    tangent in v (finite gradient on flat regions), as ours; autograd differentiates it."""
    d1 = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    d2 = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    v = d1 * d1 + d2 * d2
    if beta == 2.0:
        f = v
    elif beta > 2.0:
        f = v.pow(beta / 2.0)
    else:
        h = beta / 2.0
        above = v > floor
        # pow only where v is above the floor: its gradient at 0 would be inf (NaN after where)
        f = torch.where(above, torch.where(above, v, torch.ones_like(v)).pow(h),
                        floor ** h + h * floor ** (h - 1.0) * (v - floor))
    return f.flatten(1).sum(1)


class TorchObjective:
    """E(x) of invert_native.invert for a batch x (restarts), its autograd gradient, and one
    step of momentum descent -- the engine's iteration, in PyTorch."""

    def __init__(self, rep, target, sigma, alpha, beta, lambda_alpha, lambda_tv, tv_floor=1e-5):
        self.rep, self.t = rep, target
        self.sigma, self.alpha, self.beta = float(sigma), float(alpha), float(beta)
        self.lambda_alpha, self.lambda_tv, self.tv_floor = (float(lambda_alpha),
                                                            float(lambda_tv), float(tv_floor))
        self.t_norm2 = float((target.double() ** 2).sum())

    def terms(self, x):
        """(E, data, lambda_alpha R_alpha, lambda_tv R_tv), each (N,), differentiable."""
        r = self.rep(self.sigma * x) - self.t
        data = (r * r).flatten(1).sum(1) / self.t_norm2
        ra = self.lambda_alpha * alpha_norm(x, self.alpha)
        rt = self.lambda_tv * tv(x, self.beta, self.tv_floor)
        return data + ra + rt, data, ra, rt

    def evaluate(self, x):
        """-> (terms detached, dE/dx)."""
        x = x.detach().requires_grad_(True)
        t = self.terms(x)
        (grad,) = torch.autograd.grad(t[0].sum(), x)
        return tuple(v.detach() for v in t), grad

    def step(self, x, velocity, rate, momentum):
        """One iteration in place: mu <- m mu - eta grad; x <- x + mu. Returns the terms."""
        terms, grad = self.evaluate(x)
        with torch.no_grad():
            velocity.mul_(momentum).sub_(rate * grad)
            x.add_(velocity)
        return terms


def invert(objective: TorchObjective, x0, schedule, momentum=0.9, check_every=10):
    """invert_native.invert's loop in PyTorch: x0 (N, C, H, W) start, schedule of (rate, its)
    segments with the momentum reset at each; returns (x, objective history (its, N))."""
    x = x0.clone()
    velocity = torch.zeros_like(x)
    total = sum(n for _, n in schedule)
    hist = torch.zeros((total, x.shape[0]), dtype=torch.float64, device=x.device)
    it = 0
    for rate, count in schedule:
        velocity.zero_()
        for _ in range(count):
            terms = objective.step(x, velocity, rate, momentum)
            hist[it] = terms[0]
            it += 1
            if it % check_every == 0 or it == total:
                if not bool(torch.isfinite(hist[it - 1]).all()):
                    raise FloatingPointError(f"PyTorch baseline diverged by iteration {it}")
    return x, hist

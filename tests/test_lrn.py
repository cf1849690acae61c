"""LRN (Caffe's cross-channel form): the CPU core against float64 NumPy and PyTorch references.

Caffe:  scale_c = k + (alpha / n) * sum_{j in win(c)} x_j^2,   y_c = x_c * scale_c^(-beta),
        win(c) = [c - (n-1)/2, c + (n-1)/2] clipped to [0, C), n odd.
PyTorch's ``local_response_norm`` divides alpha by n as well and centres its
window the same way for odd n (for even n the windows differ, and the core
refuses even n), so it is a second reference for odd sizes. A third reference
writes Caffe's formula in torch ops and differentiates it with autograd.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close, f32, require
from invert_native import ops


# ------------------------------------------------------------------ reference
def ref_lrn_forward(x, size, alpha, beta, k):
    """float64 (y, scale) by Caffe's formula."""
    x = np.asarray(x, np.float64)
    C = x.shape[1]
    half = (size - 1) // 2
    scale = np.empty_like(x)
    for c in range(C):
        lo, hi = max(c - half, 0), min(c + half + 1, C)
        scale[:, c] = k + alpha / size * np.sum(x[:, lo:hi] ** 2, axis=1)
    return x * scale ** -beta, scale


def ref_lrn_backward(x, dy, size, alpha, beta, k):
    """float64 analytic gradient of Caffe's LRN:

    dx_c = dy_c * scale_c^(-beta)
           - (2 alpha beta / n) * x_c * sum_{c' : c in win(c')} dy_c' * x_c' * scale_c'^(-beta - 1)
    """
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    _, scale = ref_lrn_forward(x, size, alpha, beta, k)
    C = x.shape[1]
    half = (size - 1) // 2
    t = dy * x * scale ** (-beta - 1)
    dx = dy * scale ** -beta
    for c in range(C):
        # c is in win(c') exactly when |c - c'| <= half (the window is symmetric for odd n)
        lo, hi = max(c - half, 0), min(c + half + 1, C)
        dx[:, c] -= 2 * alpha * beta / size * x[:, c] * np.sum(t[:, lo:hi], axis=1)
    return dx


def torch_caffe_lrn(x, dy, size, alpha, beta, k):
    """Caffe's formula in torch ops (float64), with autograd for dx."""
    torch = require("torch")
    C = x.shape[1]
    half = (size - 1) // 2
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    sq = torch.nn.functional.pad(xt * xt, (0, 0, 0, 0, half, half))  # zero channels each side
    window_sum = sum(sq[:, j:j + C] for j in range(size))
    yt = xt * (k + alpha / size * window_sum) ** -beta
    yt.backward(torch.tensor(np.asarray(dy, np.float64)))
    return yt.detach().numpy(), xt.grad.numpy()


# ---------------------------------------------------------------------- cases
# (id, N, C, H, W, size, alpha, beta, k, input scale). The input scale makes
# alpha/n * sum(x^2) of order 0.1-1, so the normalisation is far from the identity.
CASES = [
    ("basic", 2, 5, 4, 3, 5, 1e-4, 0.75, 1.0, 60.0),
    ("13ch-size3", 2, 13, 3, 5, 3, 1e-2, 0.75, 2.0, 5.0),
    ("size-gt-C", 1, 3, 4, 4, 5, 1e-2, 0.75, 1.0, 8.0),
    ("size-much-gt-C", 2, 2, 3, 3, 9, 1e-1, 0.75, 1.0, 3.0),
    ("size1", 2, 7, 3, 3, 1, 1e-1, 0.75, 1.0, 3.0),
    ("size7-beta0.5", 2, 16, 2, 3, 7, 5e-3, 0.5, 1.0, 10.0),
    ("beta1.5-k0.5", 3, 9, 5, 2, 3, 2e-2, 1.5, 0.5, 3.0),
    ("one-channel", 2, 1, 5, 5, 5, 1e-1, 0.75, 1.0, 3.0),
    ("single-pixel", 4, 11, 1, 1, 5, 1e-2, 0.75, 1.0, 10.0),
    ("alpha0", 2, 5, 3, 3, 5, 0.0, 0.75, 2.0, 3.0),
]

# CaffeNet's norm1 / norm2 (size 5, alpha 1e-4, beta 0.75, k 1) on realistic magnitudes
CAFFENET = [
    ("norm1", 1, 96, 27, 27, 5, 1e-4, 0.75, 1.0, 100.0),
    ("norm1-batch2", 2, 96, 27, 27, 5, 1e-4, 0.75, 1.0, 100.0),
    ("norm2", 1, 256, 13, 13, 5, 1e-4, 0.75, 1.0, 100.0),
]

ALL = CASES + CAFFENET


def make(rng, case):
    _, N, C, H, W, size, alpha, beta, k, amp = case
    x = f32(amp * rng.standard_normal((N, C, H, W)))
    dy = f32(rng.standard_normal((N, C, H, W)))
    return x, dy, dict(size=size, alpha=alpha, beta=beta, k=k)


def ids(cases):
    return [c[0] for c in cases]


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_forward_matches_numpy(rng, case):
    x, _, hp = make(rng, case)
    y, scale = ops.lrn_forward(x, **hp)
    y_ref, scale_ref = ref_lrn_forward(x, **hp)
    assert y.dtype == np.float32 and scale.dtype == np.float32
    assert_close(y, y_ref, what="y")
    assert_close(scale, scale_ref, what="scale")


@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_backward_matches_numpy(rng, case):
    x, dy, hp = make(rng, case)
    y, scale = ops.lrn_forward(x, **hp)
    dx = ops.lrn_backward(x, y, scale, dy, **hp)
    assert dx.dtype == np.float32 and dx.shape == x.shape
    assert_close(dx, ref_lrn_backward(x, dy, **hp), what="dx")


@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_matches_torch_autograd_of_caffe_formula(rng, case):
    x, dy, hp = make(rng, case)
    y, scale = ops.lrn_forward(x, **hp)
    dx = ops.lrn_backward(x, y, scale, dy, **hp)
    y_ref, dx_ref = torch_caffe_lrn(x, dy, **hp)
    assert_close(y, y_ref, what="y vs torch (Caffe formula)")
    assert_close(dx, dx_ref, what="dx vs torch (Caffe formula)")


@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_matches_torch_local_response_norm(rng, case):
    """torch.nn.functional.local_response_norm agrees with Caffe for odd sizes."""
    torch = require("torch")
    x, dy, hp = make(rng, case)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    yt = torch.nn.functional.local_response_norm(xt, hp["size"], hp["alpha"], hp["beta"], hp["k"])
    yt.backward(torch.tensor(dy.astype(np.float64)))
    y, scale = ops.lrn_forward(x, **hp)
    dx = ops.lrn_backward(x, y, scale, dy, **hp)
    assert_close(y, yt, what="y vs torch LRN")
    assert_close(dx, xt.grad, what="dx vs torch LRN")


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[6]], ids=lambda c: c[0])
def test_numpy_reference_gradient_by_finite_differences(rng, case):
    """The analytic float64 reference gradient against central differences of the float64 forward."""
    x, dy, hp = make(rng, case)
    x = x.astype(np.float64)
    dx = ref_lrn_backward(x, dy, **hp)
    for flat in rng.choice(x.size, 15, replace=False):
        i = np.unravel_index(flat, x.shape)
        h = 1e-6 * max(1.0, abs(x[i]))
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        fd = (np.sum(ref_lrn_forward(xp, **hp)[0] * dy) - np.sum(ref_lrn_forward(xm, **hp)[0] * dy)) / (2 * h)
        assert abs(fd - dx[i]) <= 1e-6 * max(1.0, np.abs(dx).max()), (i, fd, dx[i])


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_window_is_centred_on_each_channel(size):
    """Put x_j^2 = 1 in one channel j: exactly the channels c with |c - j| <= (n-1)/2 see it."""
    C, j, alpha, k = 9, 4, 0.5, 1.0
    for jj in (0, j, C - 1):  # also at the clipped edges
        x = np.zeros((1, C, 1, 2), np.float32)
        x[0, jj] = 1.0
        _, scale = ops.lrn_forward(x, size, alpha, 0.75, k)
        inside = np.abs(np.arange(C) - jj) <= (size - 1) // 2
        expected = np.where(inside, k + alpha / size, k)
        np.testing.assert_allclose(scale[0, :, 0, 0], expected, rtol=1e-6)
        np.testing.assert_allclose(scale[0, :, 0, 1], expected, rtol=1e-6)


@pytest.mark.parametrize("size", [2, 4, 6])
def test_even_size_is_refused(rng, size):
    x = f32(rng.standard_normal((1, 8, 2, 2)))
    with pytest.raises(ValueError, match="size must be odd"):
        ops.lrn_forward(x, size=size)
    y, scale = ops.lrn_forward(x, size=5)
    with pytest.raises(ValueError, match="size must be odd"):
        ops.lrn_backward(x, y, scale, x, size=size)


def test_alpha_zero_is_scaling_by_k():
    x = f32(np.linspace(-3, 3, 2 * 5 * 2 * 2).reshape(2, 5, 2, 2))
    y, scale = ops.lrn_forward(x, size=5, alpha=0.0, beta=0.75, k=2.0)
    np.testing.assert_allclose(scale, 2.0)
    assert_close(y, x.astype(np.float64) * 2.0 ** -0.75)

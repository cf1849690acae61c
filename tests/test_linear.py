"""linear: the CPU core against a float64 NumPy reference and PyTorch autograd."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import invert_native
from conftest import assert_close, f32, require
from invert_native import ops


def ref_linear_forward(x, w, b):
    x = np.asarray(x, np.float64)
    y = x.reshape(x.shape[0], -1) @ np.asarray(w, np.float64).T
    return y if b is None else y + np.asarray(b, np.float64)


def ref_linear_backward(dy, w, x_shape):
    return (np.asarray(dy, np.float64) @ np.asarray(w, np.float64)).reshape(x_shape)


def torch_linear(x, w, b, dy, w64=None):
    torch = require("torch")
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    wt = torch.from_numpy(np.asarray(w, np.float64) if w64 is None else w64)
    bt = None if b is None else torch.tensor(np.asarray(b, np.float64))
    yt = torch.nn.functional.linear(xt.flatten(1), wt, bt)
    yt.backward(torch.tensor(np.asarray(dy, np.float64)))
    return yt.detach().numpy(), xt.grad.numpy()


# (id, N, per-sample shape, O, bias)
CASES = [
    ("vector", 2, (7,), 5, True),
    ("flatten-3d", 3, (3, 4, 5), 13, True),
    ("flatten-4d-nobias", 2, (2, 3, 3, 1), 7, False),
    ("one-output", 1, (13,), 1, True),
    ("one-input", 4, (1,), 9, True),
    ("batch16", 16, (33,), 19, True),      # largest batch of the streaming path
    ("batch17", 17, (33,), 19, True),      # smallest batch of the GEMM path
    ("batch20-deep", 20, (600,), 150, True),  # GEMM with I > one packed depth block
    ("batch5-wide", 5, (1500,), 37, False),   # streaming path over several column blocks
]

# CaffeNet's fully connected layers (fc6 takes pool5's 256x6x6 output), batch 1 and 8
CAFFENET_LAYERS = {"fc6": ((256, 6, 6), 4096), "fc7": ((4096,), 4096), "fc8": ((4096,), 1000)}
CAFFENET = [(name, n) for name in CAFFENET_LAYERS for n in (1, 8)]


def make(rng, case):
    _, N, shape, O, bias = case
    I = int(np.prod(shape))
    x = f32(rng.standard_normal((N, *shape)))
    w = f32(rng.standard_normal((O, I)) / np.sqrt(I))
    b = f32(rng.standard_normal(O)) if bias else None
    dy = f32(rng.standard_normal((N, O)))
    return x, w, b, dy


@pytest.fixture(scope="module")
def caffenet_weights():
    """CaffeNet-sized fc weights (float32 and float64), drawn once per module (fc6 is 151 MB)."""
    cache = {}

    def get(name):
        if name not in cache:
            shape, O = CAFFENET_LAYERS[name]
            I = int(np.prod(shape))
            g = np.random.default_rng(zlib.crc32(name.encode()))
            w = g.standard_normal((O, I), dtype=np.float32)
            w *= np.float32(1 / np.sqrt(I))
            b = g.standard_normal(O, dtype=np.float32)
            cache[name] = (w, b, w.astype(np.float64))
        return cache[name]

    return get


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_backward_match_numpy(rng, case):
    x, w, b, dy = make(rng, case)
    y = ops.linear_forward(x, w, b)
    dx = ops.linear_backward(dy, w, x.shape)
    assert y.shape == (x.shape[0], w.shape[0]) and y.dtype == np.float32
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert_close(y, ref_linear_forward(x, w, b), what="y")
    assert_close(dx, ref_linear_backward(dy, w, x.shape), what="dx")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_autograd(rng, case):
    x, w, b, dy = make(rng, case)
    y_ref, dx_ref = torch_linear(x, w, b, dy)
    assert_close(ops.linear_forward(x, w, b), y_ref, what="y vs torch")
    assert_close(ops.linear_backward(dy, w, x.shape), dx_ref, what="dx vs torch")


@pytest.mark.parametrize("name, N", CAFFENET, ids=[f"{n}-batch{b}" for n, b in CAFFENET])
def test_caffenet_shapes(rng, caffenet_weights, name, N):
    w, b, w64 = caffenet_weights(name)
    shape, O = CAFFENET_LAYERS[name]
    x = f32(rng.standard_normal((N, *shape)))
    dy = f32(rng.standard_normal((N, O)))
    y = ops.linear_forward(x, w, b)
    dx = ops.linear_backward(dy, w, x.shape)
    x64 = x.reshape(N, -1).astype(np.float64)
    assert_close(y, x64 @ w64.T + b, what="y vs numpy")
    assert_close(dx, (dy.astype(np.float64) @ w64).reshape(x.shape), what="dx vs numpy")
    y_ref, dx_ref = torch_linear(x, w, b, dy, w64=w64)
    assert_close(y, y_ref, what="y vs torch")
    assert_close(dx, dx_ref, what="dx vs torch")


def test_samples_are_independent(rng):
    """Row n of the output depends on sample n only, on both code paths (batch <= 16 and > 16)."""
    for N in (3, 18):
        x, w, b, dy = make(rng, ("", N, (40,), 11, True))
        y = ops.linear_forward(x, w, b)
        dx = ops.linear_backward(dy, w, x.shape)
        for n in (0, N - 1):
            assert_close(ops.linear_forward(x[n:n + 1], w, b)[0], y[n], rtol=1e-6)
            assert_close(ops.linear_backward(dy[n:n + 1], w, (1, 40))[0], dx[n], rtol=1e-6)


@pytest.mark.parametrize("N", [3, 17])
def test_results_do_not_depend_on_thread_count(rng, N):
    x, w, b, dy = make(rng, ("", N, (700,), 45, True))
    before = invert_native.get_num_threads()
    out = []
    try:
        for n in (1, 2, 3):
            invert_native.set_num_threads(n)
            out.append((ops.linear_forward(x, w, b), ops.linear_backward(dy, w, x.shape)))
    finally:
        invert_native.set_num_threads(before)
    for y, dx in out[1:]:
        np.testing.assert_array_equal(y, out[0][0])
        np.testing.assert_array_equal(dx, out[0][1])


# Backward skips the weight rows whose dy is zero for every sample (after a
# ReLU, its inactive units): the row-streaming path (N * I small), the
# column-blocked path (N * I large) and the GEMM path (N > 16).
SPARSE = [("rows-batch1", 1, 300, 97), ("rows-batch3", 3, 200, 61),
          ("columns-batch1", 1, 20000, 37), ("columns-batch5", 5, 4000, 53),
          ("gemm-batch17", 17, 300, 29)]


@pytest.mark.parametrize("N, I, O", [c[1:] for c in SPARSE], ids=[c[0] for c in SPARSE])
@pytest.mark.parametrize("density", [0.0, 0.03, 0.5, 1.0])
def test_backward_with_zero_rows_matches_numpy(rng, N, I, O, density):
    w = f32(rng.standard_normal((O, I)) / np.sqrt(I))
    dy = f32(rng.standard_normal((N, O)))
    dy[:, rng.random(O) >= density] = 0.0  # whole rows of w unused
    if N > 1 and density > 0:
        dy[0, rng.random(O) < 0.5] = 0.0  # zeros in one sample only: those rows stay active
    dx = ops.linear_backward(dy, w, (N, I))
    assert_close(dx, ref_linear_backward(dy, w, (N, I)), what="dx")
    if density == 0.0:
        assert np.array_equal(dx, np.zeros((N, I), np.float32))


def test_backward_zero_rows_keep_nan_and_threads(rng):
    """A NaN in dy still reaches dx; skipping rows does not make results depend on threads."""
    w = f32(rng.standard_normal((64, 500)))
    dy = f32(rng.standard_normal((2, 64)))
    dy[:, ::3] = 0.0
    dy[1, 5] = np.nan
    dx = ops.linear_backward(dy, w, (2, 500))
    assert np.isfinite(dx[0]).all() and np.isnan(dx[1]).all()
    dy[1, 5] = 1.0
    before = invert_native.get_num_threads()
    try:
        out = []
        for n in (1, 2, 3):
            invert_native.set_num_threads(n)
            out.append(ops.linear_backward(dy, w, (2, 500)))
    finally:
        invert_native.set_num_threads(before)
    for dx in out[1:]:
        np.testing.assert_array_equal(dx, out[0])

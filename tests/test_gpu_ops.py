"""The CUDA core against the CPU core, on CuPy arrays.

Every test is marked ``gpu``: conftest skips them where
``invert_native.cuda_available()`` is false (no CUDA core, no CuPy or no
device), before any fixture runs, so this module imports and collects without
CuPy. CuPy itself is imported through the ``cp`` fixture.

The parameter cases are exactly those of the CPU tests (their lists, CaffeNet
shapes included, imported from the CPU test modules), on fresh random inputs;
the CPU core is the reference, at the suite's tolerance (see conftest).
Max-pool argmax must match exactly on tie-free inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close, f32, require
from invert_native import nn, ops
from test_conv2d import ALL as CONV
from test_conv2d import CAFFENET as CONV_CAFFENET
from test_conv2d import CASES as CONV_CASES
from test_conv2d import make as make_conv
from test_linear import CAFFENET as LINEAR_CAFFENET
from test_linear import CAFFENET_LAYERS
from test_linear import CASES as LINEAR
from test_linear import make as make_linear
from test_lrn import ALL as LRN
from test_lrn import CASES as LRN_CASES
from test_lrn import make as make_lrn
from test_maxpool2d import ALL as POOL
from test_maxpool2d import distinct
from test_relu import SHAPES as RELU_SHAPES
from test_nn import make_chain, make_params, smooth_inputs

pytestmark = pytest.mark.gpu


@pytest.fixture
def cp():
    return require("cupy")


def gpu(cp, *arrays):
    """cupy copies (None stays None)."""
    out = tuple(None if a is None else cp.asarray(a) for a in arrays)
    return out if len(out) > 1 else out[0]


def check_gpu_output(cp, a, dtype=np.float32):
    assert isinstance(a, cp.ndarray), f"expected a cupy array, got {type(a)}"
    assert a.dtype == dtype and a.flags.c_contiguous


def ids(cases):
    return [c[0] for c in cases]


# -------------------------------------------------------------------- ops
@pytest.mark.parametrize("case", CONV, ids=ids(CONV))
def test_conv2d(cp, rng, case):
    x, w, b, stride, padding, groups = make_conv(rng, case)
    y = ops.conv2d_forward(x, w, b, stride, padding, groups)
    dy = f32(rng.standard_normal(y.shape))
    dx = ops.conv2d_backward(dy, w, x.shape, stride, padding, groups)
    xg, wg, bg, dyg = gpu(cp, x, w, b, dy)
    y_gpu = ops.conv2d_forward(xg, wg, bg, stride, padding, groups)
    dx_gpu = ops.conv2d_backward(dyg, wg, x.shape, stride, padding, groups)
    check_gpu_output(cp, y_gpu)
    check_gpu_output(cp, dx_gpu)
    assert_close(y_gpu, y, what="y (GPU vs CPU)")
    assert_close(dx_gpu, dx, what="dx (GPU vs CPU)")


@pytest.mark.parametrize("shape", RELU_SHAPES, ids=str)
def test_relu(cp, rng, shape):
    x = f32(rng.standard_normal(shape))
    x.flat[::7] = 0.0  # the kink: gradient 0 on both backends
    dy = f32(rng.standard_normal(shape))
    xg, dyg = gpu(cp, x, dy)
    y_gpu, dx_gpu = ops.relu_forward(xg), ops.relu_backward(xg, dyg)
    check_gpu_output(cp, y_gpu)
    check_gpu_output(cp, dx_gpu)
    np.testing.assert_array_equal(y_gpu.get(), ops.relu_forward(x))
    np.testing.assert_array_equal(dx_gpu.get(), ops.relu_backward(x, dy))


@pytest.mark.parametrize("case", POOL, ids=ids(POOL))
def test_maxpool2d(cp, rng, case):
    _, N, C, H, W, k, s, p = case
    x = distinct(rng, (N, C, H, W))
    y, argmax = ops.maxpool2d_forward(x, k, s, p)
    dy = f32(rng.standard_normal(y.shape))
    dx = ops.maxpool2d_backward(dy, argmax, x.shape, k, s, p)
    y_gpu, argmax_gpu = ops.maxpool2d_forward(gpu(cp, x), k, s, p)
    check_gpu_output(cp, y_gpu)
    check_gpu_output(cp, argmax_gpu, np.int64)
    np.testing.assert_array_equal(argmax_gpu.get(), argmax)
    np.testing.assert_array_equal(y_gpu.get(), y)
    dx_gpu = ops.maxpool2d_backward(gpu(cp, dy), argmax_gpu, x.shape, k, s, p)
    check_gpu_output(cp, dx_gpu)
    assert_close(dx_gpu, dx, what="dx (GPU vs CPU)")


@pytest.mark.parametrize("k, s, p", [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_maxpool2d_tie_rule_is_the_same_on_both_backends(cp, rng, k, s, p):
    x = f32(rng.integers(0, 3, (2, 5, 11, 12)))  # many ties
    y, argmax = ops.maxpool2d_forward(x, k, s, p)
    y_gpu, argmax_gpu = ops.maxpool2d_forward(gpu(cp, x), k, s, p)
    np.testing.assert_array_equal(argmax_gpu.get(), argmax)
    np.testing.assert_array_equal(y_gpu.get(), y)


def test_maxpool2d_padded_cells_never_win_on_gpu(cp, rng):
    x = f32(-1.0 - rng.random((2, 3, 7, 6)))
    y, argmax = ops.maxpool2d_forward(x, 3, 2, 1)
    y_gpu, argmax_gpu = ops.maxpool2d_forward(gpu(cp, x), 3, 2, 1)
    assert bool((y_gpu < 0).all())
    np.testing.assert_array_equal(argmax_gpu.get(), argmax)


@pytest.mark.parametrize("case", LRN, ids=ids(LRN))
def test_lrn(cp, rng, case):
    x, dy, hp = make_lrn(rng, case)
    y, scale = ops.lrn_forward(x, **hp)
    dx = ops.lrn_backward(x, y, scale, dy, **hp)
    xg, dyg = gpu(cp, x, dy)
    y_gpu, scale_gpu = ops.lrn_forward(xg, **hp)
    check_gpu_output(cp, y_gpu)
    check_gpu_output(cp, scale_gpu)
    assert_close(y_gpu, y, what="y (GPU vs CPU)")
    assert_close(scale_gpu, scale, what="scale (GPU vs CPU)")
    dx_gpu = ops.lrn_backward(xg, y_gpu, scale_gpu, dyg, **hp)
    check_gpu_output(cp, dx_gpu)
    assert_close(dx_gpu, dx, what="dx (GPU vs CPU)")


@pytest.mark.parametrize("case", LINEAR, ids=ids(LINEAR))
def test_linear(cp, rng, case):
    x, w, b, dy = make_linear(rng, case)
    xg, wg, bg, dyg = gpu(cp, x, w, b, dy)
    y_gpu = ops.linear_forward(xg, wg, bg)
    dx_gpu = ops.linear_backward(dyg, wg, x.shape)
    check_gpu_output(cp, y_gpu)
    check_gpu_output(cp, dx_gpu)
    assert dx_gpu.shape == x.shape
    assert_close(y_gpu, ops.linear_forward(x, w, b), what="y (GPU vs CPU)")
    assert_close(dx_gpu, ops.linear_backward(dy, w, x.shape), what="dx (GPU vs CPU)")


@pytest.mark.parametrize("name, N", LINEAR_CAFFENET, ids=[f"{n}-batch{b}" for n, b in LINEAR_CAFFENET])
def test_linear_caffenet_shapes(cp, rng, name, N):
    shape, O = CAFFENET_LAYERS[name]
    I = int(np.prod(shape))
    x = f32(rng.standard_normal((N, *shape)))
    w = rng.standard_normal((O, I), dtype=np.float32)
    w *= np.float32(1 / np.sqrt(I))
    b = rng.standard_normal(O, dtype=np.float32)
    dy = f32(rng.standard_normal((N, O)))
    xg, wg, bg, dyg = gpu(cp, x, w, b, dy)
    assert_close(ops.linear_forward(xg, wg, bg), ops.linear_forward(x, w, b), what="y")
    assert_close(ops.linear_backward(dyg, wg, x.shape), ops.linear_backward(dy, w, x.shape),
                 what="dx")


# ------------------------------------------------------- devices, streams
def test_mixed_numpy_and_cupy_arrays_are_a_type_error(cp, rng):
    x, w, b, stride, padding, groups = make_conv(rng, CONV_CASES[0])
    with pytest.raises(TypeError, match=r"x is a numpy array \(CPU\) but weight is a cupy array"):
        ops.conv2d_forward(x, cp.asarray(w), None, stride, padding, groups)
    with pytest.raises(TypeError, match=r"x is a cupy array .* but weight is a numpy array"):
        ops.conv2d_forward(cp.asarray(x), w, None, stride, padding, groups)
    with pytest.raises(TypeError, match="put all arrays on one device"):
        ops.conv2d_forward(cp.asarray(x), cp.asarray(w), b, stride, padding, groups)
    with pytest.raises(TypeError, match="put all arrays on one device"):
        ops.relu_backward(cp.asarray(x), x)
    y, argmax = ops.maxpool2d_forward(x, 2)
    with pytest.raises(TypeError, match="put all arrays on one device"):
        ops.maxpool2d_backward(cp.asarray(y), argmax, x.shape, 2)


def test_non_default_stream(cp, rng):
    x, w, b, stride, padding, groups = make_conv(rng, CONV_CAFFENET[1])
    y = ops.conv2d_forward(x, w, b, stride, padding, groups)
    dy = f32(rng.standard_normal(y.shape))
    dx = ops.conv2d_backward(dy, w, x.shape, stride, padding, groups)
    xp = distinct(rng, (2, 96, 55, 55))
    yp, argmax = ops.maxpool2d_forward(xp, 3, 2)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        xg, wg, bg, dyg, xpg = gpu(cp, x, w, b, dy, xp)
        y_gpu = ops.conv2d_forward(xg, wg, bg, stride, padding, groups)
        dx_gpu = ops.conv2d_backward(dyg, wg, x.shape, stride, padding, groups)
        yp_gpu, argmax_gpu = ops.maxpool2d_forward(xpg, 3, 2)
        relu_gpu = ops.relu_forward(y_gpu)
    stream.synchronize()
    assert_close(y_gpu, y, what="y on a non-default stream")
    assert_close(dx_gpu, dx, what="dx on a non-default stream")
    np.testing.assert_array_equal(yp_gpu.get(), yp)
    np.testing.assert_array_equal(argmax_gpu.get(), argmax)
    np.testing.assert_array_equal(relu_gpu.get(), ops.relu_forward(y_gpu.get()))


def test_non_contiguous_cupy_inputs(cp, rng):
    x, w, b, stride, padding, groups = make_conv(rng, CONV_CASES[1])
    y = ops.conv2d_forward(x, w, b, stride, padding, groups)
    xg = cp.asarray(np.ascontiguousarray(x[..., ::-1]))[..., ::-1]
    wg = cp.asarray(np.ascontiguousarray(w.transpose(3, 2, 1, 0))).transpose(3, 2, 1, 0)
    assert not xg.flags.c_contiguous and not wg.flags.c_contiguous
    assert_close(ops.conv2d_forward(xg, wg, cp.asarray(b), stride, padding, groups), y)


def test_gpu_inputs_are_never_modified(cp, rng):
    x, dy, hp = make_lrn(rng, LRN_CASES[0])
    xg, dyg = gpu(cp, x, dy)
    y_gpu, scale_gpu = ops.lrn_forward(xg, **hp)
    saved = [a.copy() for a in (xg, dyg, y_gpu, scale_gpu)]
    ops.lrn_backward(xg, y_gpu, scale_gpu, dyg, **hp)
    ops.relu_backward(xg, dyg)
    ops.maxpool2d_forward(xg, 2)
    cp.cuda.get_current_stream().synchronize()
    for a, s in zip((xg, dyg, y_gpu, scale_gpu), saved):
        np.testing.assert_array_equal(a.get(), s.get())


def test_gpu_wrong_dtype_is_a_type_error(cp, rng):
    x = cp.asarray(rng.standard_normal((1, 3, 5, 5)))  # float64
    with pytest.raises(TypeError, match="x must be float32, got float64"):
        ops.relu_forward(x)


# --------------------------------------------------------------------- nn
def test_sequential_on_cuda_matches_cpu(cp, rng):
    params = make_params(rng)
    x = smooth_inputs(rng)
    cpu_model = make_chain(params)
    y = cpu_model.forward(x)
    dy = f32(rng.standard_normal(y.shape))
    dx = cpu_model.backward(dy)
    gpu_model = make_chain(params).to("cuda")
    assert isinstance(gpu_model["conv1"].weight, cp.ndarray)
    y_gpu = gpu_model.forward(cp.asarray(x))
    dx_gpu = gpu_model.backward(cp.asarray(dy))
    assert_close(y_gpu, y, what="y (GPU vs CPU)")
    assert_close(dx_gpu, dx, what="dx (GPU vs CPU)")
    gpu_model.to("cpu")
    assert isinstance(gpu_model["conv1"].weight, np.ndarray)
    np.testing.assert_array_equal(gpu_model["fc"].weight, cpu_model["fc"].weight)


def test_a_layer_used_twice_on_cuda_matches_cpu(cp, rng):
    w = f32(rng.standard_normal((4, 4, 3, 3)) / 6)
    b = f32(rng.standard_normal(4))

    def model():
        relu = nn.ReLU()
        return nn.Sequential([relu, nn.Conv2d(w, b, padding=1), relu])

    x = f32(rng.standard_normal((2, 4, 9, 7)))
    cpu_model = model()
    y = cpu_model.forward(x)
    dy = f32(rng.standard_normal(y.shape))
    dx = cpu_model.backward(dy)
    gpu_model = model().to("cuda")
    assert_close(gpu_model.forward(cp.asarray(x)), y, what="y (GPU vs CPU)")
    assert_close(gpu_model.backward(cp.asarray(dy)), dx, what="dx (GPU vs CPU)")


def test_workspace_never_hands_out_an_input_on_cuda(cp, rng):
    x, w, _, _, _, _ = make_conv(rng, ("", 1, 4, 8, 8, 4, (3, 3), 1, 1, 1, False))
    z_ref = ops.conv2d_forward(ops.conv2d_forward(x, w, padding=1), w, padding=1)
    xg, wg = gpu(cp, x, w)
    ws = ops.Workspace()
    with ops.reusing(ws):
        y = ops.conv2d_forward(xg, wg, padding=1)
        ws.rewind()
        z = ops.conv2d_forward(y, wg, padding=1)  # position 0 holds y
        assert z is not y and not cp.shares_memory(z, y)
        assert_close(z, z_ref, what="z")
        ws.rewind()
        assert ops.conv2d_forward(xg, wg, padding=1) is z
    assert_close(ops.conv2d_forward(y, wg, padding=1), z_ref, what="y intact")

"""Property-based tests of the Python <-> native boundary (hypothesis).

Random shapes (zero-size dimensions and 1x1 images included), every dtype, non-contiguous,
negative-stride and read-only views, NaN/Inf values: each call either computes what the
float64 reference computes or raises TypeError/ValueError -- never crashes, never hangs, never
writes to its inputs.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from invert_native import _cpu, ops
from test_conv2d import ref_conv2d_backward, ref_conv2d_forward
from test_linear import ref_linear_forward
from test_lrn import ref_lrn_forward
from test_maxpool2d import caffe_pool_out, ref_maxpool2d

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# float32 (the only accepted dtype) most of the time, so that most examples compute
OTHER_DTYPES = [np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64]
dtypes = st.integers(0, 99).map(lambda i: np.float32 if i < 75 else OTHER_DTYPES[i % 7])
LAYOUTS = ["contiguous", "transposed", "reversed", "strided", "readonly"]


def view(a, layout):
    """The same values as a, laid out differently in memory."""
    if layout == "transposed" and a.ndim >= 2:
        return np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    if layout == "reversed" and a.ndim >= 1:
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if layout == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype) if a.ndim else a.copy()
        if a.ndim:
            big[..., ::2] = a
            return big[..., ::2]
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
    return a


@st.composite
def array(draw, shape, dtype=None, special=True):
    dtype = dtype or draw(dtypes)
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    a = rng.standard_normal(shape)
    if special and a.size and draw(st.booleans()):
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    with np.errstate(invalid="ignore", over="ignore"):
        a = a.astype(dtype)
    return view(a, draw(st.sampled_from(LAYOUTS)))


def check_unchanged(before, *arrays):
    for b, a in zip(before, arrays):
        np.testing.assert_array_equal(a, b)


def close(got, ref):
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    finite = np.isfinite(ref)
    # where the reference is finite the core must agree; NaN/Inf inputs may give anything
    # non-finite-or-equal where the reference is not finite
    scale = max(1.0, float(np.abs(ref[finite]).max())) if finite.any() else 1.0
    assert np.all(np.abs(got[finite] - ref[finite]) <= 1e-4 * scale)


dims = st.sampled_from([3, 1, 2, 4, 5, 6, 7, 9, 0])  # zero-size now and then


@SETTINGS
@given(data=st.data(), N=st.sampled_from([1, 2, 3, 0]), Cg=st.sampled_from([1, 2, 3, 5, 0]),
       H=dims, W=dims, Kg=st.sampled_from([1, 2, 3, 0]), kh=st.integers(1, 3),
       kw=st.integers(1, 3), s=st.integers(1, 3), p=st.integers(0, 2),
       groups=st.sampled_from([1, 1, 2, 3]), mismatch=st.sampled_from([0, 0, 0, 0, 1]))
def test_conv2d(data, N, Cg, H, W, Kg, kh, kw, s, p, groups, mismatch):
    C, K = Cg * groups + mismatch, Kg * groups  # mismatch: groups no longer divide C
    x = data.draw(array((N, C, H, W)))
    w = data.draw(array((K, Cg, kh, kw)))
    before = (x.copy(), w.copy())
    try:
        y = ops.conv2d_forward(x, w, None, s, p, groups)
    except (TypeError, ValueError):
        check_unchanged(before, x, w)
        return
    check_unchanged(before, x, w)
    event("computed")
    assert x.dtype == np.float32 and w.dtype == np.float32
    with np.errstate(invalid="ignore", over="ignore"):
        close(y, ref_conv2d_forward(x, w, None, s, p, groups))
        dy = np.ones_like(y)
        close(ops.conv2d_backward(dy, w, x.shape, s, p, groups),
              ref_conv2d_backward(dy, w, x.shape, s, p, groups))


@SETTINGS
@given(data=st.data(), N=st.sampled_from([1, 2, 0]), C=st.sampled_from([1, 2, 3, 0]), H=dims, W=dims,
       k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2))
def test_maxpool2d(data, N, C, H, W, k, s, p):
    x = data.draw(array((N, C, H, W)))
    before = x.copy()
    try:
        y, am = ops.maxpool2d_forward(x, k, s, p)
    except (TypeError, ValueError):
        check_unchanged((before,), x)
        return
    check_unchanged((before,), x)
    assert y.shape == (N, C, caffe_pool_out(H, k, s, p), caffe_pool_out(W, k, s, p))
    assert am.min() >= 0 and am.max() < H * W  # every winner lies inside its plane
    if np.isfinite(x).all():
        ref, ref_am = ref_maxpool2d(x, k, s, p)
        close(y, ref)
        np.testing.assert_array_equal(am, ref_am)
    dx = ops.maxpool2d_backward(np.ones_like(y), am, x.shape, k, s, p)
    assert dx.shape == x.shape and np.isclose(dx.sum(), y.size)


@SETTINGS
@given(data=st.data(), N=st.sampled_from([1, 2, 0]), C=st.sampled_from([3, 1, 2, 5, 7, 0]), H=dims, W=dims,
       size=st.sampled_from([1, 2, 3, 5, 7]))
def test_lrn(data, N, C, H, W, size):
    x = data.draw(array((N, C, H, W)))
    before = x.copy()
    try:
        y, scale = ops.lrn_forward(x, size, 1e-2, 0.75, 1.0)
    except (TypeError, ValueError):
        check_unchanged((before,), x)
        assert x.dtype != np.float32 or size % 2 == 0 or 0 in x.shape
        return
    check_unchanged((before,), x)
    with np.errstate(invalid="ignore", over="ignore"):
        close(y, ref_lrn_forward(x, size, 1e-2, 0.75, 1.0)[0])


@SETTINGS
@given(data=st.data(), shape=st.lists(st.integers(0, 5), min_size=0, max_size=4))
def test_relu_and_priors(data, shape):
    x = data.draw(array(tuple(shape)))
    before = x.copy()
    try:
        y = ops.relu_forward(x)
    except (TypeError, ValueError):
        check_unchanged((before,), x)
        assert x.dtype != np.float32 or x.size == 0
        return
    check_unchanged((before,), x)
    np.testing.assert_array_equal(y, np.where(np.isnan(x) | (x > 0), x, 0).astype(np.float32))
    if x.ndim == 4 and x.size:
        v, g = ops.tv_forward(x, 2.0)
        assert v.shape == (x.shape[0],) and g.shape == x.shape
        check_unchanged((before,), x)


@SETTINGS
@given(data=st.data(), N=st.integers(0, 3), F=st.lists(st.integers(0, 4), min_size=1, max_size=3),
       O=st.integers(0, 5))
def test_linear(data, N, F, O):
    x = data.draw(array((N, *F)))
    I = int(np.prod(F))
    w = data.draw(array((O, I)))
    before = (x.copy(), w.copy())
    try:
        y = ops.linear_forward(x, w)
    except (TypeError, ValueError):
        check_unchanged(before, x, w)
        return
    check_unchanged(before, x, w)
    with np.errstate(invalid="ignore", over="ignore"):
        close(y, ref_linear_forward(x, w, None))


@pytest.mark.parametrize("args", [
    (2**40, 2**40, 2**40, 2**40, 1, 2**40, 1, 1, 1, 1, 0, 0, 1),   # element count past 2^63
    (1, 3, 2**31, 2**31, 8, 3, 3, 3, 1, 1, 0, 0, 1),                # past 2^62: im2col size
])
def test_sizes_that_overflow_indexing_are_refused(args):
    with pytest.raises(ValueError, match="overflow"):
        _cpu.conv2d_params(*args)


def test_sizes_past_32_bit_indexing_are_computed_with_64_bit_indices():
    # (N*C*H*W > 2^31): the shape check passes and gives the right output size
    assert _cpu.conv2d_params(1, 1, 2**16, 2**16 + 1, 1, 1, 1, 1, 1, 1, 0, 0, 1) == (2**16, 2**16 + 1)
    assert _cpu.pool2d_params(1, 1, 2**16, 2**16 + 1, 2, 2, 2, 2, 0, 0) == (2**15, 2**15 + 1)

"""Input validation of invert_native.ops and the device rules of invert_native.nn.

Every bad input raises the documented exception type with a message that names
the argument; unusual but valid arrays (non-contiguous, negative strides,
transposed, read-only) are accepted and never written to.
"""

from __future__ import annotations

import numpy as np
import pytest

import invert_native
from conftest import assert_close, f32, refs_required, require
from invert_native import nn, ops

# One valid call of every op: x (2, 4, 7, 7), conv 4 -> 6 channels in 2 groups,
# 3x3 pool stride 2 -> (2, 4, 3, 3), linear 196 -> 5.
XS = (2, 4, 7, 7)


def valid_calls(rng):
    """{op name: (function, kwargs)} for one valid call of each op."""
    x = f32(rng.standard_normal(XS))
    w = f32(rng.standard_normal((6, 2, 3, 3)))
    b = f32(rng.standard_normal(6))
    conv_y = ops.conv2d_forward(x, w, b, 1, 1, 2)
    pool_y, argmax = ops.maxpool2d_forward(x, 3, 2)
    lrn_y, scale = ops.lrn_forward(x, 5, 1e-2, 0.75, 1.0)
    wl = f32(rng.standard_normal((5, 4 * 7 * 7)))
    bl = f32(rng.standard_normal(5))
    conv = dict(stride=1, padding=1, groups=2)
    pool = dict(kernel_size=3, stride=2)
    lrn = dict(size=5, alpha=1e-2, beta=0.75, k=1.0)
    return {
        "conv2d_forward": (ops.conv2d_forward, dict(x=x, weight=w, bias=b, **conv)),
        "conv2d_backward": (ops.conv2d_backward,
                            dict(dy=f32(rng.standard_normal(conv_y.shape)), weight=w, x_shape=XS,
                                 **conv)),
        "relu_forward": (ops.relu_forward, dict(x=x)),
        "relu_backward": (ops.relu_backward, dict(x=x, dy=f32(rng.standard_normal(XS)))),
        "maxpool2d_forward": (ops.maxpool2d_forward, dict(x=x, **pool)),
        "maxpool2d_backward": (ops.maxpool2d_backward,
                               dict(dy=f32(rng.standard_normal(pool_y.shape)), argmax=argmax,
                                    x_shape=XS, **pool)),
        "lrn_forward": (ops.lrn_forward, dict(x=x, **lrn)),
        "lrn_backward": (ops.lrn_backward,
                         dict(x=x, y=lrn_y, scale=scale, dy=f32(rng.standard_normal(XS)), **lrn)),
        "linear_forward": (ops.linear_forward, dict(x=x, weight=wl, bias=bl)),
        "linear_backward": (ops.linear_backward,
                            dict(dy=f32(rng.standard_normal((2, 5))), weight=wl, x_shape=XS)),
    }


# (op, array argument) for every float32 array argument of every op
FLOAT_ARGS = [
    ("conv2d_forward", "x"), ("conv2d_forward", "weight"), ("conv2d_forward", "bias"),
    ("conv2d_backward", "dy"), ("conv2d_backward", "weight"),
    ("relu_forward", "x"),
    ("relu_backward", "x"), ("relu_backward", "dy"),
    ("maxpool2d_forward", "x"),
    ("maxpool2d_backward", "dy"),
    ("lrn_forward", "x"),
    ("lrn_backward", "x"), ("lrn_backward", "y"), ("lrn_backward", "scale"), ("lrn_backward", "dy"),
    ("linear_forward", "x"), ("linear_forward", "weight"), ("linear_forward", "bias"),
    ("linear_backward", "dy"), ("linear_backward", "weight"),
]
ARRAY_ARGS = FLOAT_ARGS + [("maxpool2d_backward", "argmax")]
OPS = list(valid_calls(np.random.default_rng(0)))


def call(rng, op, **replace):
    fn, kwargs = valid_calls(rng)[op]
    kwargs.update(replace)
    return fn(**kwargs)


# ------------------------------------------------------------------- types
@pytest.mark.parametrize("op, name", FLOAT_ARGS, ids=[f"{o}-{n}" for o, n in FLOAT_ARGS])
@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.float16])
def test_wrong_dtype_is_a_type_error_mentioning_float32(rng, op, name, dtype):
    a = valid_calls(rng)[op][1][name]
    with pytest.raises(TypeError, match=rf"{op}: {name} must be float32, got {np.dtype(dtype).name}"):
        call(rng, op, **{name: a.astype(dtype)})


@pytest.mark.parametrize("dtype", [np.int32, np.uint64, np.float32, np.float64])
def test_argmax_of_the_wrong_dtype_is_a_type_error(rng, dtype):
    argmax = valid_calls(rng)["maxpool2d_backward"][1]["argmax"]
    with pytest.raises(TypeError, match=r"maxpool2d_backward: argmax must be int64"):
        call(rng, "maxpool2d_backward", argmax=argmax.astype(dtype))


@pytest.mark.parametrize("op, name", ARRAY_ARGS, ids=[f"{o}-{n}" for o, n in ARRAY_ARGS])
def test_python_list_is_a_type_error(rng, op, name):
    a = valid_calls(rng)[op][1][name]
    with pytest.raises(TypeError, match=rf"{op}: {name} must be a numpy.ndarray or cupy.ndarray, "
                                        r"got a builtins.list"):
        call(rng, op, **{name: a.tolist()})


@pytest.mark.parametrize("op, name", ARRAY_ARGS, ids=[f"{o}-{n}" for o, n in ARRAY_ARGS])
def test_torch_tensor_is_a_type_error(rng, op, name):
    torch = require("torch")
    a = valid_calls(rng)[op][1][name]
    with pytest.raises(TypeError, match=rf"{op}: {name} must be a numpy.ndarray or cupy.ndarray, "
                                        r"got a torch.Tensor"):
        call(rng, op, **{name: torch.from_numpy(a.copy())})


def test_scalar_and_none_are_type_errors(rng):
    with pytest.raises(TypeError, match="x must be a numpy.ndarray"):
        ops.relu_forward(1.0)
    with pytest.raises(TypeError, match="x is required"):
        ops.linear_forward(None, valid_calls(rng)["linear_forward"][1]["weight"])


@pytest.mark.parametrize("op, name, value, message", [
    ("conv2d_forward", "stride", 1.5, "stride must be an integer, got 1.5"),
    ("conv2d_forward", "padding", "1", "padding must be an integer"),
    ("conv2d_forward", "groups", 2.0, "groups must be an integer"),
    ("conv2d_forward", "groups", True, "groups must be an integer, got True"),
    ("conv2d_backward", "x_shape", 5, "x_shape must be a tuple of 4 ints"),
    ("conv2d_backward", "x_shape", (2, 4, 7.0, 7), "x_shape must be a tuple of 4 ints"),
    ("maxpool2d_forward", "kernel_size", None, "kernel_size must be an integer"),
    ("maxpool2d_backward", "x_shape", "2477", "x_shape must be a tuple of 4 ints"),
    ("lrn_forward", "alpha", None, "alpha, beta and k must be numbers"),
    ("lrn_backward", "beta", "three quarters", "alpha, beta and k must be numbers"),
    ("lrn_forward", "size", 5.0, "size must be an integer"),
    ("linear_backward", "x_shape", (2, None), "x_shape must be a tuple of ints"),
])
def test_non_integer_hyperparameters_are_type_errors(rng, op, name, value, message):
    with pytest.raises(TypeError, match=rf"{op}: {message}"):
        call(rng, op, **{name: value})


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("op, name, shape", [
    ("conv2d_forward", "x", (4, 7, 7)),
    ("conv2d_forward", "x", (1, 2, 4, 7, 7)),
    ("conv2d_forward", "weight", (6, 2, 9)),
    ("conv2d_forward", "bias", (6, 1)),
    ("conv2d_backward", "dy", (2, 6, 49)),
    ("conv2d_backward", "weight", (6, 18)),
    ("maxpool2d_forward", "x", (8, 7, 7)),
    ("maxpool2d_backward", "dy", (2, 4, 9)),
    ("lrn_forward", "x", (2, 4, 49)),
    ("lrn_backward", "scale", (2, 4, 49)),
    ("linear_forward", "weight", (5, 196, 1)),
    ("linear_forward", "bias", (1, 5)),
    ("linear_backward", "dy", (10,)),
])
def test_wrong_rank_is_a_value_error_naming_the_argument(rng, op, name, shape):
    with pytest.raises(ValueError, match=rf"{op}: {name} must have \d dimensions, got shape"):
        call(rng, op, **{name: np.zeros(shape, np.float32)})


def test_wrong_rank_argmax_and_linear_x(rng):
    with pytest.raises(ValueError, match=r"argmax must have 4 dimensions"):
        call(rng, "maxpool2d_backward", argmax=np.zeros((2, 4, 9), np.int64))
    with pytest.raises(ValueError, match=r"linear_forward: x must have a batch dimension"):
        call(rng, "linear_forward", x=np.zeros((196,), np.float32))
    with pytest.raises(ValueError, match=r"conv2d_backward: x_shape must have 4 entries"):
        call(rng, "conv2d_backward", x_shape=(2, 4, 7))
    with pytest.raises(ValueError, match=r"linear_backward: x_shape must be \(N, \.\.\.\) with at least 2"):
        call(rng, "linear_backward", x_shape=(392,))


@pytest.mark.parametrize("op, replace, message", [
    # weight channels vs x channels
    ("conv2d_forward", dict(weight=np.zeros((6, 4, 3, 3), np.float32)),
     r"weight.shape\[1\] must be C/groups = 2 \(x has 4 channels, groups=2\), got 4"),
    ("conv2d_forward", dict(x=np.zeros((2, 6, 7, 7), np.float32)),
     r"weight.shape\[1\] must be C/groups = 3 .*got 2"),
    ("conv2d_backward", dict(x_shape=(2, 8, 7, 7)), r"weight.shape\[1\] must be C/groups = 4"),
    # bias length
    ("conv2d_forward", dict(bias=np.zeros(5, np.float32)), r"bias has shape \(5,\), expected \(6,\)"),
    ("linear_forward", dict(bias=np.zeros(6, np.float32)), r"bias has shape \(6,\), expected \(5,\)"),
    # dy / argmax / forward results of the wrong shape
    ("conv2d_backward", dict(dy=np.zeros((2, 6, 7, 6), np.float32)),
     r"dy has shape \(2, 6, 7, 6\), expected \(2, 6, 7, 7\)"),
    ("conv2d_backward", dict(stride=2), r"dy has shape \(2, 6, 7, 7\), expected \(2, 6, 4, 4\)"),
    ("relu_backward", dict(dy=np.zeros((2, 4, 7, 6), np.float32)), r"dy has shape \(2, 4, 7, 6\)"),
    ("relu_backward", dict(dy=np.zeros((2, 4, 49), np.float32)), r"dy has shape \(2, 4, 49\)"),
    ("maxpool2d_backward", dict(dy=np.zeros((2, 4, 3, 4), np.float32)),
     r"dy has shape \(2, 4, 3, 4\), expected \(2, 4, 3, 3\)"),
    ("maxpool2d_backward", dict(argmax=np.zeros((2, 4, 4, 3), np.int64)),
     r"argmax has shape \(2, 4, 4, 3\), expected \(2, 4, 3, 3\)"),
    ("maxpool2d_backward", dict(x_shape=(2, 4, 9, 9)), r"dy has shape .* expected \(2, 4, 4, 4\)"),
    ("lrn_backward", dict(y=np.zeros((2, 4, 7, 6), np.float32)), r"y has shape \(2, 4, 7, 6\)"),
    ("lrn_backward", dict(scale=np.zeros((1, 4, 7, 7), np.float32)), r"scale has shape \(1, 4, 7, 7\)"),
    ("lrn_backward", dict(dy=np.zeros((2, 3, 7, 7), np.float32)), r"dy has shape \(2, 3, 7, 7\)"),
    # linear: features of x vs weight, dy vs (N, O)
    ("linear_forward", dict(weight=np.zeros((5, 195), np.float32)),
     r"weight.shape\[1\] must equal the 196 features of one flattened sample of x, got 195"),
    ("linear_backward", dict(x_shape=(2, 4, 7, 6)), r"weight.shape\[1\] must equal the 168 features"),
    ("linear_backward", dict(dy=np.zeros((3, 5), np.float32)), r"dy has shape \(3, 5\), expected \(2, 5\)"),
    ("linear_backward", dict(dy=np.zeros((2, 4), np.float32)), r"dy has shape \(2, 4\), expected \(2, 5\)"),
])
def test_mismatched_shapes_are_value_errors_naming_the_argument(rng, op, replace, message):
    with pytest.raises(ValueError, match=rf"{op}: .*{message}"):
        call(rng, op, **replace)


@pytest.mark.parametrize("op", ["conv2d_forward", "conv2d_backward"])
@pytest.mark.parametrize("groups, message", [
    (3, "groups=3 does not divide the 4 channels of x"),
    (4, "groups=4 does not divide the 6 output channels of weight"),
    (0, "groups must be positive, got 0"),
    (-2, "groups must be positive, got -2"),
])
def test_groups_must_divide_the_channels(rng, op, groups, message):
    with pytest.raises(ValueError, match=rf"{op}: .*{message}"):
        call(rng, op, groups=groups)


def test_groups_must_divide_the_output_channels(rng):
    with pytest.raises(ValueError, match="groups=2 does not divide the 5 output channels of weight"):
        call(rng, "conv2d_forward", weight=np.zeros((5, 2, 3, 3), np.float32), bias=None)


@pytest.mark.parametrize("op, replace, message", [
    ("conv2d_forward", dict(weight=np.zeros((6, 2, 10, 3), np.float32)),
     "kernel 10x3 is larger than the padded input 9x9"),
    ("conv2d_forward", dict(weight=np.zeros((6, 2, 8, 8), np.float32), padding=0),
     "kernel 8x8 is larger than the padded input 7x7"),
    ("conv2d_backward", dict(weight=np.zeros((6, 2, 3, 12), np.float32), padding=(1, 2)),
     "kernel 3x12 is larger than the padded input 9x11"),
    ("maxpool2d_forward", dict(kernel_size=8, stride=1), "kernel 8x8 is larger than the padded input 7x7"),
    ("maxpool2d_forward", dict(kernel_size=(3, 10), padding=1),
     "kernel 3x10 is larger than the padded input 9x9"),
    ("maxpool2d_backward", dict(kernel_size=9, stride=1), "kernel 9x9 is larger than the padded input 7x7"),
])
def test_kernel_larger_than_padded_input(rng, op, replace, message):
    with pytest.raises(ValueError, match=rf"{op}: .*{message}"):
        call(rng, op, **replace)


@pytest.mark.parametrize("op, replace, message", [
    ("conv2d_forward", dict(stride=0), "stride must be positive, got 0"),
    ("conv2d_forward", dict(stride=(1, -1)), "stride must be positive, got -1"),
    ("conv2d_forward", dict(padding=-1), "padding must be non-negative, got -1"),
    ("conv2d_forward", dict(stride=(1, 1, 1)), "stride must be an int or a pair of ints"),
    ("maxpool2d_forward", dict(kernel_size=0), "kernel_size must be positive"),
    ("maxpool2d_forward", dict(stride=0), "stride must be positive"),
    ("maxpool2d_forward", dict(padding=3), "padding must be smaller than kernel_size"),
    ("maxpool2d_forward", dict(padding=-1), "padding must be non-negative"),
    ("lrn_forward", dict(size=0), "size must be positive, got 0"),
    ("lrn_forward", dict(size=4), "size must be odd"),
    ("lrn_forward", dict(alpha=-1e-4), "alpha must be non-negative"),
    ("lrn_forward", dict(k=0.0), "k must be positive"),
    ("lrn_forward", dict(alpha=float("nan")), "alpha, beta and k must be finite"),
    ("lrn_forward", dict(beta=float("inf")), "alpha, beta and k must be finite"),
    ("lrn_backward", dict(k=-1.0), "k must be positive"),
])
def test_bad_hyperparameters_are_value_errors(rng, op, replace, message):
    with pytest.raises(ValueError, match=rf"{op}: .*{message}"):
        call(rng, op, **replace)


# ------------------------------------------- integers beyond the core's int64
@pytest.mark.parametrize("op, replace, name", [
    ("conv2d_forward", dict(padding=2 ** 63), "padding"),
    ("conv2d_forward", dict(stride=2 ** 70), "stride"),
    ("conv2d_forward", dict(stride=(1, -2 ** 63 - 1)), "stride"),
    ("conv2d_backward", dict(groups=2 ** 64), "groups"),
    ("conv2d_backward", dict(x_shape=(2, 4, 2 ** 63, 7)), "x_shape"),
    ("maxpool2d_forward", dict(kernel_size=2 ** 63), "kernel_size"),
    ("maxpool2d_backward", dict(padding=(0, 2 ** 80)), "padding"),
    ("lrn_forward", dict(size=2 ** 63 + 1), "size"),
    ("linear_backward", dict(x_shape=(2, 2 ** 65)), "x_shape"),
])
def test_integers_beyond_int64_are_value_errors_naming_the_argument(rng, op, replace, name):
    # not pybind11's "incompatible function arguments" TypeError, which names nothing
    with pytest.raises(ValueError, match=rf"^{op}: {name} = -?\d+ is out of range"):
        call(rng, op, **replace)


@pytest.mark.parametrize("op, replace", [
    ("conv2d_forward", dict(padding=2 ** 62)),
    ("conv2d_backward", dict(padding=(0, 2 ** 63 - 1))),
    ("maxpool2d_forward", dict(kernel_size=2 ** 62 + 1, padding=2 ** 62)),
    ("maxpool2d_backward", dict(kernel_size=(3, 2 ** 63 - 1), padding=(1, 2 ** 63 - 2))),
])
def test_padding_whose_padded_size_overflows_is_a_value_error(rng, op, replace):
    with pytest.raises(ValueError, match=rf"^{op}: .*padding \d+ is too large for an input "
                                         r"(height|width) of 7 \(the padded size overflows"):
        call(rng, op, **replace)


def _caffe_pool_out(H, k, s, p):
    """Caffe's ceil-mode size in Python's exact integers (see test_maxpool2d)."""
    o = -(-(H + 2 * p - k) // s) + 1
    return o - 1 if (o - 1) * s >= H + p else o


def test_pool_output_size_is_exact_up_to_the_largest_strides():
    from invert_native import _cpu

    strides = [1, 2, 3, 7, 2 ** 31 + 1, 2 ** 62, 2 ** 63 - 2, 2 ** 63 - 1]
    for H in range(1, 13):
        for k in range(1, 6):
            for p in range(k):
                if k > H + 2 * p:
                    continue
                for s in strides:
                    got = _cpu.pool2d_params(1, 1, H, 1, k, 1, s, 1, p, 0)[0]
                    assert got == _caffe_pool_out(H, k, s, p), (H, k, s, p)


@pytest.mark.parametrize("stride", [2 ** 62, 2 ** 63 - 1])
def test_huge_strides_give_the_first_window_only(rng, stride):
    x = f32(rng.standard_normal((2, 3, 6, 7)))
    y, argmax = ops.maxpool2d_forward(x, 3, stride, 1)
    assert y.shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(y[..., 0, 0], x[:, :, :2, :2].max(axis=(2, 3)))
    w = f32(rng.standard_normal((4, 3, 3, 3)))
    yc = ops.conv2d_forward(x, w, stride=stride, padding=1)
    assert yc.shape == (2, 4, 1, 1)
    assert_close(yc, ops.conv2d_forward(x, w, padding=1)[:, :, :1, :1], what="y")


@pytest.mark.parametrize("op", ["lrn_forward", "lrn_backward"])
@pytest.mark.parametrize("replace, message", [
    (dict(k=1e-300), "k must be positive in float32 .* got 1e-300, which rounds to 0"),
    (dict(k=1e-46), "k must be positive in float32"),
    (dict(k=3.5e38), "alpha, beta and k must be finite in float32"),
    (dict(alpha=1e300), "alpha, beta and k must be finite in float32"),
    (dict(beta=-1e39), "alpha, beta and k must be finite in float32"),
    (dict(alpha=3e38, beta=2.0, size=1), r"2 \* alpha \* beta / size must be finite in float32"),
    (dict(alpha=10 ** 400), "alpha, beta and k must be finite"),
])
def test_lrn_constants_must_hold_in_float32(rng, op, replace, message):
    # the core computes in float32: k = 1e-300 would become 0 and alpha = 1e300 inf (NaN outputs)
    with pytest.raises(ValueError, match=rf"^{op}: .*{message}"):
        call(rng, op, **replace)


def test_lrn_constants_at_the_float32_limits_work(rng):
    x = f32(rng.standard_normal(XS))
    y, _ = ops.lrn_forward(x, size=5, alpha=0.0, beta=0.75, k=3e38)
    assert np.isfinite(y).all() and np.abs(y).max() > 0
    y, _ = ops.lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2e-45)  # a float32 subnormal
    assert np.isfinite(y).all()


# --------------------------------------------------------- zero-size dims
@pytest.mark.parametrize("op", ["conv2d_forward", "maxpool2d_forward", "lrn_forward",
                                "linear_forward"])
@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_zero_size_input_is_a_value_error(rng, op, axis):
    shape = list(XS)
    shape[axis] = 0
    replace = dict(x=np.zeros(shape, np.float32))
    if op == "linear_forward" and axis > 0:
        replace["weight"] = np.zeros((5, 0), np.float32)
    with pytest.raises(ValueError, match=rf"{op}: .*(of x|features of x) must be positive, got 0"):
        call(rng, op, **replace)


@pytest.mark.parametrize("shape", [(0,), (2, 0, 7, 7)], ids=str)
def test_zero_size_relu_input_is_a_value_error(shape):
    """ops: 'zero-size dimensions raise ValueError naming the argument', for every op."""
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=r"relu_forward: .*x"):
        ops.relu_forward(x)
    with pytest.raises(ValueError, match=r"relu_backward: .*x"):
        ops.relu_backward(x, x)


@pytest.mark.parametrize("op, replace, message", [
    ("conv2d_forward", dict(weight=np.zeros((0, 2, 3, 3), np.float32), bias=None),
     r"output channels \(weight.shape\[0\]\) must be positive"),
    ("conv2d_forward", dict(weight=np.zeros((6, 2, 0, 3), np.float32)),
     r"kernel height \(weight.shape\[2\]\) must be positive"),
    ("conv2d_forward", dict(weight=np.zeros((6, 2, 3, 0), np.float32)),
     r"kernel width \(weight.shape\[3\]\) must be positive"),
    ("conv2d_backward", dict(x_shape=(0, 4, 7, 7), dy=np.zeros((0, 6, 7, 7), np.float32)),
     "batch size N of x must be positive"),
    ("maxpool2d_backward", dict(x_shape=(2, 4, 0, 7)), "height of x must be positive"),
    ("linear_forward", dict(weight=np.zeros((0, 196), np.float32), bias=None),
     r"output features \(weight.shape\[0\]\) must be positive"),
    ("linear_backward", dict(x_shape=(0, 196), dy=np.zeros((0, 5), np.float32)),
     "batch size N of x must be positive"),
    ("linear_backward", dict(x_shape=(2, 0), weight=np.zeros((5, 0), np.float32)),
     "input features of x must be positive"),
])
def test_zero_size_weights_and_shapes_are_value_errors(rng, op, replace, message):
    with pytest.raises(ValueError, match=rf"{op}: .*{message}"):
        call(rng, op, **replace)


# ------------------------------------------------- layouts and ownership
def non_contiguous(a, kind):
    """An array with a's values whose memory layout is not C-contiguous."""
    if kind == "strided":
        buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        buf[..., ::2] = a
        out = buf[..., ::2]
    elif kind == "negative-stride":
        out = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    elif kind == "transposed":
        out = np.ascontiguousarray(a.T).T if a.ndim > 1 else non_contiguous(a, "negative-stride")
    else:
        raise ValueError(kind)
    assert not out.flags.c_contiguous and np.array_equal(out, a)
    return out


@pytest.mark.parametrize("kind", ["strided", "negative-stride", "transposed"])
@pytest.mark.parametrize("op, name", ARRAY_ARGS, ids=[f"{o}-{n}" for o, n in ARRAY_ARGS])
def test_non_contiguous_inputs_give_the_contiguous_result(rng, op, name, kind):
    fn, kwargs = valid_calls(rng)[op]
    expected = fn(**kwargs)
    a = non_contiguous(kwargs[name], kind)
    before = a.copy()
    got = fn(**{**kwargs, name: a})
    for g, e in zip(expected if isinstance(expected, tuple) else (expected,),
                    got if isinstance(got, tuple) else (got,)):
        assert g.flags.c_contiguous
        np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(a, before)


def test_transposed_weight_gives_the_same_convolution(rng):
    """A weight stored as (kw, kh, C, K) and viewed as (K, C, kh, kw) through .T."""
    x = f32(rng.standard_normal((2, 3, 8, 8)))
    w = f32(rng.standard_normal((5, 3, 3, 2)))
    w_t = np.ascontiguousarray(w.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    assert not w_t.flags.c_contiguous
    np.testing.assert_array_equal(ops.conv2d_forward(x, w_t), ops.conv2d_forward(x, w))


@pytest.mark.parametrize("op", OPS)
def test_inputs_are_never_modified(rng, op):
    fn, kwargs = valid_calls(rng)[op]
    arrays = {k: v for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    copies = {k: v.copy() for k, v in arrays.items()}
    for _ in range(2):
        out = fn(**kwargs)
        for o in out if isinstance(out, tuple) else (out,):
            for k, v in arrays.items():
                assert not np.shares_memory(o, v), f"an output shares memory with {k}"
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, copies[k], err_msg=f"{op} modified its input {k}")


@pytest.mark.parametrize("op", OPS)
def test_repeated_calls_are_identical(rng, op):
    """Outputs are fresh arrays, overwritten (never accumulated into) and deterministic."""
    fn, kwargs = valid_calls(rng)[op]
    first = fn(**kwargs)
    second = fn(**kwargs)
    for a, b in zip(first if isinstance(first, tuple) else (first,),
                    second if isinstance(second, tuple) else (second,)):
        assert not np.shares_memory(a, b)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("op", OPS)
def test_read_only_inputs_work(rng, op):
    fn, kwargs = valid_calls(rng)[op]
    expected = fn(**kwargs)
    frozen = {}
    for k, v in kwargs.items():
        if isinstance(v, np.ndarray):
            v = v.copy()
            v.setflags(write=False)
        frozen[k] = v
    got = fn(**frozen)
    for g, e in zip(got if isinstance(got, tuple) else (got,),
                    expected if isinstance(expected, tuple) else (expected,)):
        assert g.flags.writeable
        np.testing.assert_array_equal(g, e)


def test_nan_is_not_checked_and_propagates(rng):
    """ops does not check values: a NaN in x reaches the outputs that depend on it."""
    x = f32(rng.standard_normal((1, 3, 5, 5)))
    x[0, 1, 2, 2] = np.nan
    w = f32(rng.standard_normal((2, 3, 3, 3)))
    y = ops.conv2d_forward(x, w)
    assert np.isnan(y).all()  # every 3x3 window of a 5x5 plane covers the centre
    assert np.isnan(ops.linear_forward(x, f32(rng.standard_normal((4, 75))))).all()
    y, _ = ops.lrn_forward(x, size=3)
    assert np.isnan(y[0, :, 2, 2]).all() and np.isfinite(y[0, :, 0, 0]).all()


# ------------------------------------------------------------------- CUDA
def test_cuda_available_is_falsy_with_a_reason():
    status = invert_native.cuda_available()
    if status:
        pytest.skip(f"this machine can use CUDA: {status}")
    assert isinstance(status, invert_native.CudaStatus)
    assert not status and status.available is False
    assert isinstance(status.reason, str) and len(status.reason) > 10
    assert str(status) == status.reason
    assert any(word in status.reason for word in ("CUDA", "CuPy")), status.reason
    assert invert_native.cuda_available() is status  # cached


def _layers(rng):
    return {
        "Conv2d": lambda: nn.Conv2d(f32(rng.standard_normal((2, 3, 3, 3))), f32([0.5, 1.0])),
        "Linear": lambda: nn.Linear(f32(rng.standard_normal((2, 5)))),
        "ReLU": nn.ReLU,
        "MaxPool2d": lambda: nn.MaxPool2d(2),
        "LRN": nn.LRN,
        "Sequential": lambda: nn.Sequential([nn.ReLU(), nn.MaxPool2d(2)]),
    }


LAYERS = ["Conv2d", "Linear", "ReLU", "MaxPool2d", "LRN", "Sequential"]


@pytest.mark.parametrize("kind", LAYERS)
def test_layer_to_cuda_without_cuda_is_a_runtime_error(rng, kind):
    status = invert_native.cuda_available()
    if status:
        pytest.skip(f"this machine can use CUDA: {status}")
    layer = _layers(rng)[kind]()
    with pytest.raises(RuntimeError, match="CUDA core cannot be used") as info:
        layer.to("cuda")
    assert status.reason in str(info.value)


@pytest.mark.parametrize("kind", LAYERS)
def test_layer_to_an_unknown_device_is_a_value_error(rng, kind):
    layer = _layers(rng)[kind]()
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        layer.to("tpu")


def test_failed_move_leaves_the_layer_usable_on_cpu(rng):
    if invert_native.cuda_available():
        pytest.skip("this machine can use CUDA")
    layer = _layers(rng)["Conv2d"]()
    x = f32(rng.standard_normal((1, 3, 5, 5)))
    y = layer(x)
    with pytest.raises(RuntimeError):
        layer.to("cuda")
    assert isinstance(layer.weight, np.ndarray) and isinstance(layer.bias, np.ndarray)
    np.testing.assert_array_equal(layer(x), y)


# ------------------------------------------------------- the suite's own rules
def test_require_skips_a_missing_reference_or_fails_under_require_refs(monkeypatch):
    missing = "invert_native_no_such_reference_library"
    monkeypatch.delenv("INVERT_NATIVE_REQUIRE_REFS", raising=False)
    assert not refs_required()
    with pytest.raises(pytest.skip.Exception, match=missing):
        require(missing)
    monkeypatch.setenv("INVERT_NATIVE_REQUIRE_REFS", "1")
    assert refs_required()
    with pytest.raises(pytest.fail.Exception, match="INVERT_NATIVE_REQUIRE_REFS=1"):
        require(missing)
    assert require("numpy") is np


def test_messages_carry_the_op_name_once():
    x = np.ones((1, 1, 5, 5), np.float32)
    with pytest.raises(ValueError) as info:
        ops.conv2d_forward(x, np.ones((1, 1, 7, 7), np.float32))
    assert str(info.value).startswith("conv2d_forward: kernel"), str(info.value)
    with pytest.raises(ValueError, match=r"^tv_forward: height of x must be positive"):
        ops.tv_forward(np.ones((1, 1, 0, 3), np.float32))
    with pytest.raises(ValueError, match=r"^alpha_norm_forward: batch size"):
        ops.alpha_norm_forward(np.ones((0, 3), np.float32))


@pytest.mark.parametrize("bad", [10 ** 9, -5, 16])
def test_maxpool_backward_refuses_an_argmax_forward_cannot_give(bad):
    y, am = ops.maxpool2d_forward(np.ones((1, 1, 4, 4), np.float32), 2)
    with pytest.raises(ValueError, match="argmax holds"):
        ops.maxpool2d_backward(y, np.full_like(am, bad), (1, 1, 4, 4), 2)

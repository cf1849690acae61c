"""invert_native.nn: layers and Sequential against torch autograd and float64 finite differences."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from conftest import assert_close, f32, require
import invert_native as inv
from invert_native import nn, ops
from test_conv2d import ref_conv2d_forward
from test_lrn import ref_lrn_forward
from test_maxpool2d import ref_maxpool2d

# conv -> relu -> pool -> LRN -> linear, small enough for finite differences
N, C, H, W = 2, 4, 11, 11
K, KS, PAD, GROUPS = 6, 3, 1, 2
POOL = dict(kernel_size=3, stride=2, padding=0)
LRN = dict(size=5, alpha=0.3, beta=0.75, k=1.0)
HC = H + 2 * PAD - KS + 1          # conv output: 11x11
HP = -(-(HC - 3) // 2) + 1         # pool 3/2, ceil mode: 5x5
O = 7


def make_params(rng):
    w_conv = f32(rng.standard_normal((K, C // GROUPS, KS, KS)) / np.sqrt(C // GROUPS * KS * KS))
    b_conv = f32(0.1 * rng.standard_normal(K))
    w_fc = f32(rng.standard_normal((O, K * HP * HP)) / np.sqrt(K * HP * HP))
    b_fc = f32(rng.standard_normal(O))
    return w_conv, b_conv, w_fc, b_fc


def make_chain(params):
    w_conv, b_conv, w_fc, b_fc = params
    return nn.Sequential([
        ("conv1", nn.Conv2d(w_conv, b_conv, stride=1, padding=PAD, groups=GROUPS)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(**POOL)),
        ("norm1", nn.LRN(**LRN)),
        ("fc", nn.Linear(w_fc, b_fc)),
    ])


def torch_chain(x, params, dy, stop=None):
    """The same chain in float64 torch; returns (output of layer `stop`, dx by autograd)."""
    torch = require("torch")
    F = torch.nn.functional
    w_conv, b_conv, w_fc, b_fc = (torch.tensor(p.astype(np.float64)) for p in params)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    stages = [
        ("conv1", lambda t: F.conv2d(t, w_conv, b_conv, padding=PAD, groups=GROUPS)),
        ("relu1", F.relu),
        ("pool1", lambda t: F.max_pool2d(t, POOL["kernel_size"], POOL["stride"], POOL["padding"],
                                         ceil_mode=True)),
        ("norm1", lambda t: F.local_response_norm(t, LRN["size"], LRN["alpha"], LRN["beta"],
                                                  LRN["k"])),
        ("fc", lambda t: F.linear(t.flatten(1), w_fc, b_fc)),
    ]
    t = xt
    for name, f in stages:
        t = f(t)
        if name == stop:
            break
    t.backward(torch.tensor(dy.astype(np.float64)))
    return t.detach().numpy(), xt.grad.numpy()


def ref_chain(x, params):
    """float64 NumPy chain; also returns its activation pattern (ReLU signs, pool argmax)."""
    w_conv, b_conv, w_fc, b_fc = params
    z = ref_conv2d_forward(x, w_conv, b_conv, 1, PAD, GROUPS)
    r = np.maximum(z, 0)
    p, argmax = ref_maxpool2d(r, **POOL)
    n, _ = ref_lrn_forward(p, **LRN)
    y = n.reshape(n.shape[0], -1) @ w_fc.astype(np.float64).T + b_fc
    return y, (z > 0, argmax)


def smooth_inputs(rng):
    return f32(rng.standard_normal((N, C, H, W)))


# ---------------------------------------------------------------------- tests
def test_chain_matches_torch_autograd(rng):
    params = make_params(rng)
    x = smooth_inputs(rng)
    model = make_chain(params)
    y = model.forward(x)
    assert y.shape == (N, O)
    dy = f32(rng.standard_normal(y.shape))
    dx = model.backward(dy)
    y_ref, dx_ref = torch_chain(x, params, dy)
    assert_close(y, y_ref, what="y vs torch")
    assert_close(dx, dx_ref, what="dx vs torch")
    assert_close(y, ref_chain(x, params)[0], what="y vs numpy")


def test_chain_gradient_by_finite_differences(rng):
    """dx of the float32 chain against central differences of the float64 NumPy chain,
    at coordinates where a step of 1e-3 changes no ReLU sign and no pooling winner."""
    params = make_params(rng)
    x = smooth_inputs(rng)
    x64 = x.astype(np.float64)
    model = make_chain(params)
    y = model.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = model.backward(f32(dy))
    scale = np.abs(dx).max()
    h, probe = 1e-6, 1e-3
    _, pattern = ref_chain(x64, params)
    checked = 0
    for flat in rng.permutation(x.size):
        i = np.unravel_index(flat, x.shape)
        if abs(dx[i]) < 0.05 * scale:
            continue  # a coordinate that matters
        smooth = True
        for step in (probe, -probe):
            xs = x64.copy()
            xs[i] += step
            _, pat = ref_chain(xs, params)
            smooth &= all(np.array_equal(a, b) for a, b in zip(pat, pattern))
        if not smooth:
            continue  # near a kink
        xp, xm = x64.copy(), x64.copy()
        xp[i] += h
        xm[i] -= h
        fd = (np.sum(ref_chain(xp, params)[0] * dy) - np.sum(ref_chain(xm, params)[0] * dy)) / (2 * h)
        assert abs(dx[i] - fd) <= 1e-4 * scale + 1e-6, f"at {i}: dx {dx[i]!r}, finite difference {fd!r}"
        checked += 1
        if checked == 8:
            break
    assert checked == 8, "not enough smooth coordinates"


@pytest.mark.parametrize("stop", ["conv1", "relu1", "pool1", "norm1", "fc"])
def test_forward_to_and_backward_stop_at_the_named_layer(rng, stop):
    params = make_params(rng)
    x = smooth_inputs(rng)
    model = make_chain(params)
    model.forward(x)  # a full forward first: forward_to must replace it
    out = model.forward_to(x, stop)
    # the same as running the layers by hand up to `stop`
    t = x
    for name, layer in model:
        t = layer.forward(t)
        if name == stop:
            break
    np.testing.assert_array_equal(out, t)
    dy = f32(rng.standard_normal(out.shape))
    dx = model.backward(dy)
    assert dx.shape == x.shape
    y_ref, dx_ref = torch_chain(x, params, dy, stop=stop)
    assert_close(out, y_ref, what=f"output of {stop} vs torch")
    assert_close(dx, dx_ref, what=f"dx through {stop} vs torch")


def test_backward_differentiates_the_last_forward(rng):
    params = make_params(rng)
    model = make_chain(params)
    x1, x2 = smooth_inputs(rng), smooth_inputs(rng)
    dy = f32(rng.standard_normal((N, O)))
    model.forward(x1)
    model.forward(x2)
    dx = model.backward(dy)
    _, dx_ref = torch_chain(x2, params, dy)
    assert_close(dx, dx_ref, what="dx at the last input")


def test_layers_match_ops(rng):
    """Each layer is its op: same outputs and gradients."""
    x = f32(rng.standard_normal((2, 5, 9, 9)))
    w = f32(rng.standard_normal((6, 5, 3, 3)))
    b = f32(rng.standard_normal(6))
    conv = nn.Conv2d(w, b, stride=2, padding=1)
    y = conv(x)
    np.testing.assert_array_equal(y, ops.conv2d_forward(x, w, b, 2, 1))
    np.testing.assert_array_equal(conv.backward(y), ops.conv2d_backward(y, w, x.shape, 2, 1))

    relu = nn.ReLU()
    np.testing.assert_array_equal(relu(x), ops.relu_forward(x))
    np.testing.assert_array_equal(relu.backward(x), ops.relu_backward(x, x))

    pool = nn.MaxPool2d(3)  # stride defaults to the kernel size
    yp, argmax = ops.maxpool2d_forward(x, 3, 3)
    np.testing.assert_array_equal(pool(x), yp)
    assert yp.shape == (2, 5, 3, 3)
    np.testing.assert_array_equal(pool.backward(yp), ops.maxpool2d_backward(yp, argmax, x.shape, 3, 3))

    lrn = nn.LRN(size=3, alpha=0.1, beta=0.5, k=2.0)
    yl, scale = ops.lrn_forward(x, 3, 0.1, 0.5, 2.0)
    np.testing.assert_array_equal(lrn(x), yl)
    np.testing.assert_array_equal(lrn.backward(x), ops.lrn_backward(x, yl, scale, x, 3, 0.1, 0.5, 2.0))

    wl = f32(rng.standard_normal((4, x[0].size)))
    fc = nn.Linear(wl)
    np.testing.assert_array_equal(fc(x), ops.linear_forward(x, wl))
    dy = f32(rng.standard_normal((2, 4)))
    np.testing.assert_array_equal(fc.backward(dy), ops.linear_backward(dy, wl, x.shape))


def test_sequential_names(rng):
    a, b = nn.ReLU(), nn.MaxPool2d(2)
    plain = nn.Sequential([a, b])
    assert plain.names == ["0", "1"] and len(plain) == 2
    assert plain[0] is a and plain["1"] is b
    named = nn.Sequential({"relu": a, "pool": b})
    assert named.names == ["relu", "pool"]
    assert named.index("pool") == 1
    assert [n for n, _ in named] == ["relu", "pool"]
    model = make_chain(make_params(rng))
    assert model.names == ["conv1", "relu1", "pool1", "norm1", "fc"]
    assert isinstance(model["norm1"], nn.LRN)


def test_sequential_rejects_bad_definitions():
    with pytest.raises(ValueError, match="used twice"):
        nn.Sequential([("a", nn.ReLU()), ("a", nn.ReLU())])
    with pytest.raises(ValueError, match="at least one layer"):
        nn.Sequential([])
    with pytest.raises(TypeError, match="entry 1 must be a Layer"):
        nn.Sequential([nn.ReLU(), "relu"])


def test_unknown_layer_name_raises_value_error(rng):
    model = make_chain(make_params(rng))
    x = smooth_inputs(rng)
    with pytest.raises(ValueError, match=r"no layer named 'conv9'.*conv1, relu1, pool1, norm1, fc"):
        model.forward_to(x, "conv9")
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        model["conv9"]
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        model.index("conv9")


def _all_layers(rng):
    return {
        "Conv2d": nn.Conv2d(f32(rng.standard_normal((2, 3, 3, 3)))),
        "ReLU": nn.ReLU(),
        "MaxPool2d": nn.MaxPool2d(2),
        "LRN": nn.LRN(),
        "Linear": nn.Linear(f32(rng.standard_normal((2, 5)))),
        "Sequential": nn.Sequential([nn.ReLU(), nn.LRN()]),
    }


@pytest.mark.parametrize("kind", ["Conv2d", "ReLU", "MaxPool2d", "LRN", "Linear", "Sequential"])
def test_backward_before_forward_raises_runtime_error(rng, kind):
    layer = _all_layers(rng)[kind]
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((1, 2, 3, 3), np.float32))


def test_backward_after_to_cpu_needs_a_new_forward(rng):
    conv = nn.Conv2d(f32(rng.standard_normal((2, 3, 3, 3))))
    conv.forward(f32(rng.standard_normal((1, 3, 5, 5))))
    conv.to("cpu")
    with pytest.raises(RuntimeError, match="before forward"):
        conv.backward(np.ones((1, 2, 3, 3), np.float32))


def test_constructors_copy_weights(rng):
    w = f32(rng.standard_normal((4, 3, 3, 3)))
    b = f32(rng.standard_normal(4))
    wl = f32(rng.standard_normal((5, 4 * 3 * 3)))
    bl = f32(rng.standard_normal(5))
    conv, fc = nn.Conv2d(w, b, padding=0), nn.Linear(wl, bl)
    x = f32(rng.standard_normal((2, 3, 5, 5)))
    y1 = conv(x)
    z1 = fc(y1)
    dz = f32(rng.standard_normal(z1.shape))
    dy1 = fc.backward(dz)
    dx1 = conv.backward(dy1)
    for a in (w, b, wl, bl):
        a[...] = 7.0  # mutate the caller's arrays in place
    y2 = conv(x)
    z2 = fc(y2)
    np.testing.assert_array_equal(y2, y1)
    np.testing.assert_array_equal(z2, z1)
    np.testing.assert_array_equal(fc.backward(dz), dy1)
    np.testing.assert_array_equal(conv.backward(dy1), dx1)
    assert conv.weight is not w and not np.shares_memory(conv.weight, w)
    assert fc.weight is not wl and not np.shares_memory(fc.weight, wl)


def test_constructors_take_float64_and_nested_lists_as_float32_copies(rng):
    w64 = rng.standard_normal((3, 4))
    fc = nn.Linear(w64, [1.0, 2.0, 3.0])
    assert fc.weight.dtype == np.float32 and fc.bias.dtype == np.float32
    x = f32(rng.standard_normal((2, 4)))
    assert_close(fc(x), x.astype(np.float64) @ w64.T + [1.0, 2.0, 3.0], what="y")


def test_constructors_validate(rng):
    with pytest.raises(ValueError, match="Conv2d weight must have 4 dimensions"):
        nn.Conv2d(f32(rng.standard_normal((3, 3, 3))))
    with pytest.raises(ValueError, match="Conv2d bias has 3 entries but weight has 2 filters"):
        nn.Conv2d(f32(rng.standard_normal((2, 3, 3, 3))), f32([1, 2, 3]))
    with pytest.raises(ValueError, match="groups=3"):
        nn.Conv2d(f32(rng.standard_normal((4, 1, 3, 3))), groups=3)
    with pytest.raises(ValueError, match="NaN or Inf"):
        nn.Linear(f32([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="Linear bias has 1 entries but weight has 2 outputs"):
        nn.Linear(f32(rng.standard_normal((2, 3))), f32([1.0]))


# ------------------------------------------- hyper-parameters, checked at construction
def _message(fn):
    with pytest.raises((TypeError, ValueError)) as info:
        fn()
    return info.type, str(info.value)


@pytest.mark.parametrize("layer, op", [
    (lambda w: nn.Conv2d(w, stride=0), lambda x, w: ops.conv2d_forward(x, w, stride=0)),
    (lambda w: nn.Conv2d(w, stride=(1, -3)), lambda x, w: ops.conv2d_forward(x, w, stride=(1, -3))),
    (lambda w: nn.Conv2d(w, padding=-1), lambda x, w: ops.conv2d_forward(x, w, padding=-1)),
    (lambda w: nn.Conv2d(w, groups=0), lambda x, w: ops.conv2d_forward(x, w, groups=0)),
    (lambda w: nn.Conv2d(w, stride=2 ** 70), lambda x, w: ops.conv2d_forward(x, w, stride=2 ** 70)),
    (lambda w: nn.Conv2d(w, padding=1.5), lambda x, w: ops.conv2d_forward(x, w, padding=1.5)),
    (lambda w: nn.MaxPool2d(3, 0), lambda x, w: ops.maxpool2d_forward(x, 3, 0)),
    (lambda w: nn.MaxPool2d(0), lambda x, w: ops.maxpool2d_forward(x, 0)),
    (lambda w: nn.MaxPool2d(3, 1, 3), lambda x, w: ops.maxpool2d_forward(x, 3, 1, 3)),
    (lambda w: nn.MaxPool2d(3, 2, -1), lambda x, w: ops.maxpool2d_forward(x, 3, 2, -1)),
    (lambda w: nn.LRN(4), lambda x, w: ops.lrn_forward(x, 4)),
    (lambda w: nn.LRN(5, "x"), lambda x, w: ops.lrn_forward(x, 5, "x")),
    (lambda w: nn.LRN(5, k=1e-300), lambda x, w: ops.lrn_forward(x, 5, k=1e-300)),
    (lambda w: nn.LRN(5, alpha=-1.0), lambda x, w: ops.lrn_forward(x, 5, alpha=-1.0)),
])
def test_constructors_fail_with_the_ops_errors(rng, layer, op):
    w = f32(rng.standard_normal((4, 3, 3, 3)))
    x = f32(rng.standard_normal((1, 3, 8, 8)))
    layer_type, layer_msg = _message(lambda: layer(w))
    op_type, op_msg = _message(lambda: op(x, w))
    assert layer_type is op_type
    # the same message after the prefix ("Conv2d: ..." / "conv2d_forward: ...")
    assert layer_msg.split(": ", 1)[1] == op_msg.split(": ", 1)[1]
    assert layer_msg.split(": ", 1)[0] in ("Conv2d", "MaxPool2d", "LRN")


# ----------------------------------------- one layer object at several positions
def _torch_conv(w, b, padding):
    torch = require("torch")
    wt, bt = torch.tensor(w.astype(np.float64)), torch.tensor(b.astype(np.float64))
    return lambda t: torch.nn.functional.conv2d(t, wt, bt, padding=padding)


def _autograd(x, dy, stages):
    torch = require("torch")
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    t = xt
    for f in stages:
        t = f(t)
    t.backward(torch.tensor(dy.astype(np.float64)))
    return t.detach().numpy(), xt.grad.numpy()


def test_a_layer_used_twice_gives_the_chains_gradient(rng):
    torch = require("torch")
    w = f32(rng.standard_normal((4, 4, 3, 3)) / 6)
    b = f32(rng.standard_normal(4))
    relu = nn.ReLU()
    model = nn.Sequential([relu, nn.Conv2d(w, b, padding=1), relu])
    x = f32(rng.standard_normal((2, 4, 6, 7)))
    y = model.forward(x)
    dy = f32(rng.standard_normal(y.shape))
    dx = model.backward(dy)
    y_ref, dx_ref = _autograd(x, dy, [torch.relu, _torch_conv(w, b, 1), torch.relu])
    assert_close(y, y_ref, what="y vs torch")
    assert_close(dx, dx_ref, what="dx vs torch")
    assert model[0] is model[2]  # shared, not copied


def test_a_conv_used_twice_shares_its_weights(rng):
    torch = require("torch")
    w = f32(rng.standard_normal((3, 3, 3, 3)) / 5)
    b = f32(rng.standard_normal(3))
    conv = nn.Conv2d(w, b, padding=1)
    model = nn.Sequential([("a", conv), ("relu", nn.ReLU()), ("b", conv), ("pool", nn.MaxPool2d(2))])
    x = distinct_inputs(rng, (2, 3, 8, 6))
    y = model.forward(x)
    dy = f32(rng.standard_normal(y.shape))
    dx = model.backward(dy)
    F = torch.nn.functional
    stages = [_torch_conv(w, b, 1), torch.relu, _torch_conv(w, b, 1), lambda t: F.max_pool2d(t, 2)]
    y_ref, dx_ref = _autograd(x, dy, stages)
    assert_close(y, y_ref, what="y vs torch")
    assert_close(dx, dx_ref, what="dx vs torch")
    # forward_to a shared layer's first position, then backward from there
    out = model.forward_to(x, "a")
    dy_a = f32(rng.standard_normal(out.shape))
    _, dx_ref = _autograd(x, dy_a, stages[:1])
    assert_close(model.backward(dy_a), dx_ref, what="dx through the first position")


def test_a_shared_layer_inside_and_outside_a_nested_sequential(rng):
    torch = require("torch")
    w = f32(rng.standard_normal((3, 3, 3, 3)) / 5)
    b = f32(rng.standard_normal(3))
    relu = nn.ReLU()
    inner = nn.Sequential([nn.Conv2d(w, b, padding=1), relu])
    model = nn.Sequential([relu, inner, inner, nn.LRN(3, 0.5, 0.75, 1.0), relu])
    x = f32(rng.standard_normal((2, 3, 5, 6)))
    y = model.forward(x)
    dy = f32(rng.standard_normal(y.shape))
    dx = model.backward(dy)
    F = torch.nn.functional
    conv = _torch_conv(w, b, 1)
    y_ref, dx_ref = _autograd(x, dy, [torch.relu, conv, torch.relu, conv, torch.relu,
                                      lambda t: F.local_response_norm(t, 3, 0.5, 0.75, 1.0),
                                      torch.relu])
    assert_close(y, y_ref, what="y vs torch")
    assert_close(dx, dx_ref, what="dx vs torch")


def distinct_inputs(rng, shape):
    """No ties (max-pool is differentiable there), values of both signs."""
    n = int(np.prod(shape))
    return f32((rng.permutation(n) - n / 2).reshape(shape) / n * 4)


# ------------------------------------------------------------- forward_to(position)
def test_forward_to_takes_a_position(rng):
    params = make_params(rng)
    x = smooth_inputs(rng)
    model = make_chain(params)
    for pos, name in enumerate(model.names):
        np.testing.assert_array_equal(model.forward_to(x, pos), model.forward_to(x, name))
    np.testing.assert_array_equal(model.forward_to(x, -1), model.forward(x))
    np.testing.assert_array_equal(model.forward_to(x, -5), model.forward_to(x, "conv1"))
    out = model.forward_to(x, 1)  # relu1
    dy = f32(rng.standard_normal(out.shape))
    _, dx_ref = torch_chain(x, params, dy, stop="relu1")
    assert_close(model.backward(dy), dx_ref, what="dx from position 1")
    assert model.index(2) == 2 and model.index(-1) == 4


@pytest.mark.parametrize("key, error, message", [
    (5, ValueError, "layer position 5 is out of range for 5 layers"),
    (-6, ValueError, "layer position -6 is out of range"),
    (1.0, TypeError, r"by its name \(a str\) or its position \(an int\), got 1.0"),
    (None, TypeError, "got None; the layers are: conv1, relu1"),
    (True, TypeError, "got True"),
])
def test_forward_to_a_bad_layer_key(rng, key, error, message):
    model = make_chain(make_params(rng))
    with pytest.raises(error, match=message):
        model.forward_to(smooth_inputs(rng), key)


def test_sequential_takes_numpy_integers_and_says_what_is_out_of_range():
    seq = nn.Sequential([("a", nn.ReLU()), ("b", nn.ReLU())])
    x = np.ones((1, 1, 2, 2), np.float32)
    assert seq[np.int64(1)] is seq["b"] and seq[-1] is seq["b"]
    np.testing.assert_array_equal(seq.forward_to(x, np.int64(0)), x)
    with pytest.raises(ValueError, match="out of range"):
        seq[10]
    with pytest.raises(TypeError, match="name .* or its position"):
        seq[0:2]


def test_linear_single_sample_through_the_transposed_copy(rng):
    """One sample on the CPU goes through the layer's transposed weight, skipping the weight rows
    of zero inputs; the sums are grouped differently from the batch product but compute the
    same function, independently of the thread count."""
    w = f32(rng.standard_normal((37, 300)) / np.sqrt(300))
    b = f32(rng.standard_normal(37))
    x = f32(rng.standard_normal((1, 3, 10, 10)))
    x[rng.random(x.shape) < 0.5] = 0.0  # behind a ReLU
    ref = x.reshape(1, -1).astype(np.float64) @ w.T.astype(np.float64) + b
    fc = nn.Linear(w, b)
    before = inv.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            inv.set_num_threads(n)
            outs.append(fc(x).copy())
    finally:
        inv.set_num_threads(before)
    assert_close(outs[0], ref, what="y of one sample")
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    dense = nn.Linear(w, b, transposed_copy=False)
    np.testing.assert_array_equal(dense(x), ops.linear_forward(x, w, b))
    assert_close(outs[0], dense(x), what="y, transposed copy against the plain product")
    # a batch goes through the plain product, each row the single sample's function
    xb = np.concatenate([x, x])
    np.testing.assert_array_equal(fc(xb), ops.linear_forward(xb, w, b))
    # the gradient is unchanged
    fc(x)
    dy = f32(rng.standard_normal((1, 37)))
    np.testing.assert_array_equal(fc.backward(dy), ops.linear_backward(dy, w, x.shape))
    # NaN and Inf inputs still reach the output
    x[0, 0, 0, 0], x[0, 1, 0, 0] = np.nan, 0.0
    assert np.isnan(fc(x)).all()


def test_linear_weight_is_read_only_and_reassigning_it_refreshes_the_copy(rng):
    w = f32(rng.standard_normal((5, 12)))
    fc = nn.Linear(w)
    assert w.flags.writeable  # the caller's array is left as it was
    x = f32(rng.standard_normal((1, 12)))
    fc(x)  # builds the transposed copy
    with pytest.raises(ValueError, match="read-only"):
        fc.weight[0, 0] = 1.0
    w2 = f32(rng.standard_normal((5, 12)))
    fc.weight = w2
    assert not np.shares_memory(fc.weight, w2) and not fc.weight.flags.writeable
    assert_close(fc(x), x.astype(np.float64) @ w2.T.astype(np.float64), what="y after reassigning")
    with pytest.raises(ValueError, match="NaN or Inf"):
        fc.weight = f32([[np.inf] * 12] * 5)
    fc.to("cpu")
    assert_close(fc(x), x.astype(np.float64) @ w2.T.astype(np.float64), what="y after to('cpu')")
    # a deep copy's weight comes back writeable: edited in place, the copy is made again
    twin = copy.deepcopy(fc)
    twin.weight[...] = 0.5
    assert_close(twin(x), np.full((1, 5), 0.5 * x.astype(np.float64).sum()), what="y of the copy")
    assert_close(fc(x), x.astype(np.float64) @ w2.T.astype(np.float64), what="y of the original")

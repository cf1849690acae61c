"""conv2d's Winograd F(2x2, 3x3) path (conv2d_winograd.cpp: 3x3 stride-1 layers with >= 32
channels a group each side and >= 16 output tiles an image; strided layers' backward by phases)
against float64 NumPy and PyTorch autograd, its filter-transform cache against weights changed
in place, and its determinism."""
from __future__ import annotations

import numpy as np
import pytest

import invert_native
from conftest import assert_close, f32, require, run_python
from invert_native import ops
from test_conv2d import (check_with_the_avx2_tile, ref_conv2d_backward, ref_conv2d_forward,
                         uses_winograd)

# (id, N, C, H, W, K, padding, groups)
CASES = [
    ("caffenet-conv3-batch8", 8, 256, 13, 13, 384, 1, 1),
    ("caffenet-conv5", 1, 384, 13, 13, 256, 1, 2),
    ("caffenet-conv5-batch2", 2, 384, 13, 13, 256, 1, 2),
    ("pad0-even", 3, 32, 18, 18, 48, 0, 1),
    ("pad2-odd-rect", 2, 40, 15, 21, 33, 2, 1),
    ("pad-rows-only", 4, 64, 12, 9, 64, (1, 0), 2),
    ("one-image-large", 1, 32, 40, 37, 32, 1, 1),      # 19x20 tiles: several blocks a thread
    ("smallest-plane", 3, 32, 9, 9, 40, 0, 1),          # 7x7 outputs: the 16 tiles the rule needs
    ("wide-rows", 1, 32, 5, 300, 32, 1, 1),             # 150 tiles a row: blocks of one row
    ("channels-not-multiples-of-8", 2, 36, 11, 10, 35, 1, 1),
]


def make(rng, case):
    _, N, C, H, W, K, padding, groups = case
    x = f32(rng.standard_normal((N, C, H, W)))
    w = f32(rng.standard_normal((K, C // groups, 3, 3)) / np.sqrt(C // groups * 9))
    b = f32(rng.standard_normal(K))
    return x, w, b, padding, groups


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_float64_and_torch(rng, case):
    x, w, b, padding, groups = make(rng, case)
    N, C, H, W = x.shape
    taken = uses_winograd(N, C, H, W, w.shape[0], (3, 3), 1, padding, groups)
    assert taken
    y = ops.conv2d_forward(x, w, b, 1, padding, groups)
    dy = f32(rng.standard_normal(y.shape))
    dx = ops.conv2d_backward(dy, w, x.shape, 1, padding, groups)
    # float32 rounding of 2.25x fewer, regrouped products: within the direct path's tolerances
    assert_close(y, ref_conv2d_forward(x, w, b, 1, padding, groups), rtol=2e-5, what="y")
    assert_close(dx, ref_conv2d_backward(dy, w, x.shape, 1, padding, groups), rtol=2e-5,
                 what="dx")
    torch = require("torch")
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, torch.tensor(w.astype(np.float64)),
                                    torch.tensor(b.astype(np.float64)), 1, padding, 1, groups)
    yt.backward(torch.tensor(dy.astype(np.float64)))
    assert_close(y, yt.detach().numpy(), rtol=2e-5, what="y vs torch")
    assert_close(dx, xt.grad.numpy(), rtol=2e-5, what="dx vs torch")


def im2col_result(tmp_path, name, expr, **arrays):
    """``expr`` (Python, over ``ops`` and the arrays by name) evaluated in a fresh process with
    INVERT_NATIVE_NO_WINOGRAD=1: the path without Winograd (im2col, or conv1's SGEMMs by phases)."""
    src, out = tmp_path / f"{name}-in.npz", tmp_path / f"{name}-out.npy"
    np.savez(src, **arrays)
    run_python("import sys, numpy as np; from invert_native import ops\n"
               "globals().update(np.load(sys.argv[1]))\n"
               f"np.save(sys.argv[2], {expr})\n",
               src, out, env={"INVERT_NATIVE_NO_WINOGRAD": "1"})
    return np.load(out)


def assert_float32_rounding(got, direct, ref):
    """``got`` (Winograd) and ``direct`` (the path without it) are two different paths, and
    got's error against the float64 ``ref`` stays within a few times direct's."""
    assert not np.array_equal(got, direct)
    e_w, e_d = np.abs(got - ref).max(), np.abs(direct - ref).max()
    assert e_w <= 4 * e_d + 1e-7, (e_w, e_d)
    assert e_w / np.abs(ref).max() < 2e-6


@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=[CASES[0][0], CASES[1][0]])
def test_error_is_float32_rounding(rng, tmp_path, case):
    """Winograd's error against float64 stays within a few times the im2col path's."""
    x, w, b, padding, groups = make(rng, case)
    y = ops.conv2d_forward(x, w, b, 1, padding, groups)
    dy = f32(rng.standard_normal(y.shape))
    dx = ops.conv2d_backward(dy, w, x.shape, 1, padding, groups)
    hyper = f"1, {padding!r}, {groups}"
    direct_y = im2col_result(tmp_path, "fwd", f"ops.conv2d_forward(x, w, b, {hyper})",
                             x=x, w=w, b=b)
    direct_dx = im2col_result(tmp_path, "bwd",
                              f"ops.conv2d_backward(dy, w, {x.shape!r}, {hyper})", dy=dy, w=w)
    for got, direct, ref in ((y, direct_y, ref_conv2d_forward(x, w, b, 1, padding, groups)),
                             (dx, direct_dx, ref_conv2d_backward(dy, w, x.shape, 1, padding,
                                                                 groups))):
        assert_float32_rounding(got, direct, ref)


def test_weights_changed_in_place_are_seen(rng):
    """The filter transforms are cached per weight array and checked bit for bit."""
    x, w, b, padding, groups = make(rng, CASES[2])
    y0 = ops.conv2d_forward(x, w, b, 1, padding, groups)
    w[3, 5, 1, 2] += 0.25                     # same array, same address
    y1 = ops.conv2d_forward(x, w, b, 1, padding, groups)
    assert_close(y1, ref_conv2d_forward(x, w, b, 1, padding, groups), rtol=2e-5, what="y")
    assert not np.array_equal(y0[:, 3], y1[:, 3])
    dy = f32(rng.standard_normal(y1.shape))
    w[:] = -w                                  # every filter, in place
    dx = ops.conv2d_backward(dy, w, x.shape, 1, padding, groups)
    assert_close(dx, ref_conv2d_backward(dy, w, x.shape, 1, padding, groups), rtol=2e-5,
                 what="dx")


def test_many_layers_alternating(rng):
    """More layers than the cache holds (16), called in turn: each result still right."""
    x = f32(rng.standard_normal((4, 32, 10, 10)))
    layers = [f32(rng.standard_normal((32, 32, 3, 3)) / 17) for _ in range(20)]
    for _ in range(2):
        for w in layers:
            y = ops.conv2d_forward(x, w, None, 1, 1, 1)
            assert_close(y, ref_conv2d_forward(x, w, None, 1, 1, 1), rtol=2e-5, what="y")


def test_inputs_untouched_and_threads_agree(rng):
    x, w, b, padding, groups = make(rng, CASES[1])
    x0, w0 = x.copy(), w.copy()
    dy = f32(rng.standard_normal((x.shape[0], w.shape[0], 13, 13)))
    before = invert_native.get_num_threads()
    out = []
    try:
        for n in (1, 2, 3):
            invert_native.set_num_threads(n)
            out.append((ops.conv2d_forward(x, w, b, 1, padding, groups),
                        ops.conv2d_backward(dy, w, x.shape, 1, padding, groups)))
    finally:
        invert_native.set_num_threads(before)
    for y, dx in out[1:]:
        np.testing.assert_array_equal(y, out[0][0])
        np.testing.assert_array_equal(dx, out[0][1])
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


def test_switch_off_gives_the_im2col_path(rng):
    """INVERT_NATIVE_NO_WINOGRAD=1 (read at the first call) changes the bits (another path),
    not the function; a batch equals its images alone either way."""
    script = (
        "import numpy as np; from invert_native import ops\n"
        "r = np.random.default_rng(5)\n"
        "x = r.standard_normal((4, 64, 13, 13)).astype(np.float32)\n"
        "w = (r.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)\n"
        "y = ops.conv2d_forward(x, w, None, 1, 1, 1)\n"
        "alone = np.concatenate([ops.conv2d_forward(x[n:n+1], w, None, 1, 1, 1) for n in range(4)])\n"
        "print(int(np.array_equal(y, alone)), y.tobytes().hex()[:4096])\n")
    res = {off: run_python(script, env={"INVERT_NATIVE_NO_WINOGRAD": off}).split()
           for off in ("0", "1")}
    assert res["0"][0] == res["1"][0] == "1"
    assert res["0"][1] != res["1"][1]


# ---- backward of a strided layer by phases (conv2d_winograd.cpp, "Backward of a strided
# layer by phases"): 3 taps a phase along both axes, >= 32 dy channels a group, >= 16 phases
# a group, and conv2d.cpp's rule for backward by phases. The shapes themselves are in
# test_conv2d.PHASES (float64, torch, AVX2 tile, batch vs alone, thread counts).
def phases_winograd(kernel, stride, padding, C, K, groups):
    """Whether conv2d_backward takes that path (the C++ rules, restated)."""
    (kh, kw), (sh, sw) = kernel, stride
    Ph, Qw = -(-kh // sh), -(-kw // sw)
    return ((sh, sw) != (1, 1) and 4 * kh * kw >= 3 * sh * Ph * sw * Qw and Ph == 3 and Qw == 3
            and K // groups >= 32 and C // groups * sh * sw >= 16)


CONV1 = dict(C=3, K=96, kernel=(11, 11), stride=(4, 4), padding=0, groups=1)


def conv1_problem(rng, N=1):
    x = f32(rng.standard_normal((N, 3, 227, 227)))
    w = f32(rng.standard_normal((96, 3, 11, 11)) / np.sqrt(363))
    dy = f32(rng.standard_normal((N, 96, 55, 55)))
    return x, w, dy


def test_conv1_takes_the_phase_path_and_keeps_float32_accuracy(rng, tmp_path):
    """conv1's backward and forward by Winograd on its 48 phases: their error against float64
    stays within a few times that of the SGEMM paths by phases (INVERT_NATIVE_NO_WINOGRAD=1,
    fresh process)."""
    assert phases_winograd(**{k: CONV1[k] for k in ("kernel", "stride", "padding", "C", "K",
                                                     "groups")})
    x, w, dy = conv1_problem(rng)
    ref = ref_conv2d_backward(dy, w, x.shape, 4, 0, 1)
    wino = ops.conv2d_backward(dy, w, x.shape, 4, 0, 1)
    sgemm = im2col_result(tmp_path, "conv1",
                          "ops.conv2d_backward(dy, w, (1, 3, 227, 227), 4, 0, 1)", dy=dy, w=w)
    assert_float32_rounding(wino, sgemm, ref)
    # forward: the 48 phase planes of x, 3x3 correlated (no zero taps to skip there)
    b = f32(rng.standard_normal(96))
    ref = ref_conv2d_forward(x, w, b, 4, 0, 1)
    wino = ops.conv2d_forward(x, w, b, 4, 0, 1)
    sgemm = im2col_result(tmp_path, "conv1-forward", "ops.conv2d_forward(x, w, b, 4, 0, 1)",
                          x=x, w=w, b=b)
    assert_float32_rounding(wino, sgemm, ref)


def test_phase_filters_follow_weights_changed_in_place(rng):
    """The phases' filter transforms are cached per weight array, apart from the 3x3 path's,
    and checked bit for bit: a weight changed in place is seen."""
    x, w, dy = conv1_problem(rng)
    dx0 = ops.conv2d_backward(dy, w, x.shape, 4, 0, 1)
    w[7, 1, 10, 3] += 0.5  # a tap of phase (a, b) = (2, 3), its last row (u = 0)
    dx1 = ops.conv2d_backward(dy, w, x.shape, 4, 0, 1)
    assert_close(dx1, ref_conv2d_backward(dy, w, x.shape, 4, 0, 1), rtol=2e-5, what="dx")
    assert not np.array_equal(dx0, dx1)
    w[:] = -w
    assert_close(ops.conv2d_backward(dy, w, x.shape, 4, 0, 1), -dx1, rtol=1e-6, what="-dx")


def test_phase_path_leaves_inputs_alone_and_any_thread_count_agrees(rng):
    x, w, dy = conv1_problem(rng, N=3)
    w0, dy0 = w.copy(), dy.copy()
    before = invert_native.get_num_threads()
    out = []
    try:
        for n in (1, 2, 3, 5):
            invert_native.set_num_threads(n)
            out.append(ops.conv2d_backward(dy, w, x.shape, 4, 0, 1))
    finally:
        invert_native.set_num_threads(before)
    for dx in out[1:]:
        np.testing.assert_array_equal(dx, out[0])
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(dy, dy0)
    # an image of the batch alone: the same bits
    np.testing.assert_array_equal(ops.conv2d_backward(dy[1:2], w, (1, 3, 227, 227), 4, 0, 1),
                                  out[0][1:2])


def test_the_avx2_tile_gives_the_same_function(tmp_path):
    """The products run on the SGEMM's register tile (12x32 with AVX-512, 6x16 with AVX2;
    INVERT_NATIVE_NO_AVX512=1 in a fresh process takes the AVX2 one): forward and backward
    match float64 on every layer case with either."""
    rng = np.random.default_rng(12)
    problems = []
    for case in CASES:
        x, w, b, padding, groups = make(rng, case)
        dy = f32(rng.standard_normal(ops.conv2d_forward(x, w, b, 1, padding, groups).shape))
        problems.append((case[0], x, w, b, dy, 1, padding, groups))
    check_with_the_avx2_tile(tmp_path, problems, rtol=2e-5)


def test_conv2_forward_by_blocks_keeps_float32_accuracy(rng, tmp_path):
    """conv2 (5x5, 2 groups) forward as one 3x3 correlation of 4 shifted copies of its input:
    its error against float64 stays within a few times im2col's (INVERT_NATIVE_NO_WINOGRAD=1,
    fresh process); backward stays with im2col (the same bits either way)."""
    x = f32(rng.standard_normal((2, 96, 27, 27)))
    w = f32(rng.standard_normal((256, 48, 5, 5)) / np.sqrt(48 * 25))
    b = f32(rng.standard_normal(256))
    dy = f32(rng.standard_normal((2, 256, 27, 27)))
    ref = ref_conv2d_forward(x, w, b, 1, 2, 2)
    wino = ops.conv2d_forward(x, w, b, 1, 2, 2)
    direct = im2col_result(tmp_path, "conv2", "ops.conv2d_forward(x, w, b, 1, 2, 2)",
                           x=x, w=w, b=b)
    assert_float32_rounding(wino, direct, ref)
    dx = im2col_result(tmp_path, "conv2-backward", "ops.conv2d_backward(dy, w, x_shape, 1, 2, 2)",
                       dy=dy, w=w, x_shape=np.array(x.shape))
    np.testing.assert_array_equal(ops.conv2d_backward(dy, w, x.shape, 1, 2, 2), dx)

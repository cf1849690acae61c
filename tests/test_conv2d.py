"""conv2d: the CPU core against a float64 NumPy reference and PyTorch autograd."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import invert_native
from conftest import assert_close, f32, require, run_python
from invert_native import ops


# ------------------------------------------------------------------ reference
def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def ref_conv2d_forward(x, w, b, stride, padding, groups):
    """float64 cross-correlation with zero padding, by sliding windows and tensordot."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    N, C, H, W = x.shape
    K, Cg, kh, kw = w.shape
    Kg = K // groups
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    Ho, Wo = win.shape[2], win.shape[3]
    assert (Ho, Wo) == ((H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)
    y = np.empty((N, K, Ho, Wo))
    for g in range(groups):
        wg = w[g * Kg:(g + 1) * Kg]                                # [Kg, Cg, kh, kw]
        xg = win[:, g * Cg:(g + 1) * Cg]                           # [N, Cg, Ho, Wo, kh, kw]
        # y[n, k, i, j] = sum_{c,u,v} x[n, c, i, j, u, v] * w[k, c, u, v]
        y[:, g * Kg:(g + 1) * Kg] = np.einsum("ncijuv,kcuv->nkij", xg, wg, optimize=True)
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def ref_conv2d_backward(dy, w, x_shape, stride, padding, groups):
    """float64 dx: each output's gradient scattered back through its window."""
    dy = np.asarray(dy, np.float64)
    w = np.asarray(w, np.float64)
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    N, C, H, W = x_shape
    K, Cg, kh, kw = w.shape
    Kg = K // groups
    Ho, Wo = dy.shape[2:]
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for g in range(groups):
        dyg = dy[:, g * Kg:(g + 1) * Kg]                           # [N, Kg, Ho, Wo]
        for u in range(kh):
            for v in range(kw):
                wuv = w[g * Kg:(g + 1) * Kg, :, u, v]              # [Kg, Cg]
                dxp[:, g * Cg:(g + 1) * Cg, u:u + sh * (Ho - 1) + 1:sh, v:v + sw * (Wo - 1) + 1:sw] += \
                    np.einsum("nkij,kc->ncij", dyg, wuv)
    return dxp[:, :, ph:ph + H, pw:pw + W]


def torch_conv2d(x, w, b, dy, stride, padding, groups):
    """PyTorch float64 forward and autograd dx."""
    torch = require("torch")
    F = torch.nn.functional
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    wt = torch.tensor(np.asarray(w, np.float64))
    bt = None if b is None else torch.tensor(np.asarray(b, np.float64))
    yt = F.conv2d(xt, wt, bt, stride=stride, padding=padding, groups=groups)
    yt.backward(torch.tensor(np.asarray(dy, np.float64)))
    return yt.detach().numpy(), xt.grad.numpy()


# ---------------------------------------------------------------------- cases
# (id, N, C, H, W, K, (kh, kw), stride, padding, groups, bias)
CASES = [
    ("basic-3ch", 2, 3, 7, 9, 5, (3, 3), 1, 0, 1, True),
    ("odd-stride2-pad1", 2, 5, 11, 13, 13, (3, 5), 2, 1, 1, True),
    ("stride3-pad2", 3, 3, 10, 9, 4, (4, 3), 3, 2, 1, True),
    ("anisotropic", 2, 5, 9, 12, 7, (3, 2), (2, 1), (1, 2), 1, True),
    ("groups2", 2, 6, 9, 9, 10, (3, 3), 1, 1, 2, True),
    ("groups2-stride2-nobias", 3, 10, 11, 8, 6, (5, 5), 2, 2, 2, False),
    ("depthwise", 2, 5, 8, 7, 5, (3, 3), 1, 1, 5, True),
    ("depthwise-x2", 2, 4, 9, 9, 8, (3, 3), 2, 1, 4, True),
    ("one-channel", 2, 1, 10, 11, 1, (3, 3), 1, 1, 1, True),
    ("one-channel-in", 1, 1, 12, 12, 3, (5, 5), 2, 0, 1, False),
    ("pointwise", 2, 13, 5, 7, 3, (1, 1), 1, 0, 1, True),
    ("pointwise-groups2", 2, 6, 4, 5, 4, (1, 1), 1, 0, 2, True),
    ("1x1-stride2", 2, 5, 7, 7, 13, (1, 1), 2, 0, 1, True),
    ("1x1-pad1", 1, 3, 4, 5, 5, (1, 1), 1, 1, 1, True),
    ("kernel-fills-padded-input", 2, 3, 3, 4, 5, (5, 6), 1, 1, 1, True),
    ("stride-gt-kernel", 2, 3, 11, 10, 5, (2, 2), 3, 0, 1, True),
    ("deep-reduction", 1, 13, 9, 9, 5, (5, 5), 1, 2, 1, True),  # Cg*kh*kw = 325 > one GEMM block
    ("big-kernel-stride4", 1, 3, 27, 27, 4, (11, 11), 4, 0, 1, True),
    # one image with a column stride: im2col reads the row's column phases (conv2d.cpp)
    ("single-strided-padded", 1, 3, 15, 17, 4, (3, 5), (2, 3), (1, 2), 1, True),
    ("single-stride4-pad3-groups3", 1, 6, 23, 22, 6, (7, 6), 4, 3, 3, False),
]

# CaffeNet's convolutions, exact shapes (batch 1; conv2 also at batch 2).
CAFFENET = [
    ("conv1", 1, 3, 227, 227, 96, (11, 11), 4, 0, 1, True),
    ("conv2", 1, 96, 27, 27, 256, (5, 5), 1, 2, 2, True),
    ("conv2-batch2", 2, 96, 27, 27, 256, (5, 5), 1, 2, 2, True),
    ("conv3", 1, 256, 13, 13, 384, (3, 3), 1, 1, 1, True),
    ("conv4", 1, 384, 13, 13, 384, (3, 3), 1, 1, 2, True),
    ("conv5", 1, 384, 13, 13, 256, (3, 3), 1, 1, 2, True),
    # batches of small outputs run in chunks of images, one SGEMM per chunk (conv2d.cpp):
    # (64*9 + 16) x 900 floats per image against a 4M-float chunk -> chunks of 5 and 4 images
    ("chunked-9-images", 9, 128, 30, 30, 32, (3, 3), 1, 1, 2, True),
    ("conv3-batch8", 8, 256, 13, 13, 384, (3, 3), 1, 1, 1, True),
]

# Strided kernels with at least 1024 outputs an image run by phases (conv2d.cpp): forward on
# the input's phase planes, backward (when zero taps add at most a third) on the padded dy,
# each through SGEMMs on row pointers; so does a batch's stride-1 forward. Shapes around the
# rules' edges.
PHASES = [
    ("phases-conv1-batch2", 2, 3, 227, 227, 96, (11, 11), 4, 0, 1, True),
    ("phases-7x7-stride2-pad3-groups2", 1, 4, 130, 125, 6, (7, 7), 2, 3, 2, False),
    ("phases-kernel-equals-stride", 1, 3, 128, 128, 8, (4, 4), 4, 1, 1, True),
    ("phases-2x2-stride2-wide", 1, 2, 70, 300, 3, (2, 2), 2, 0, 1, True),
    ("phases-rows-only", 2, 2, 100, 100, 3, (5, 3), (3, 1), (4, 0), 1, True),
    ("phases-columns-only", 1, 1, 97, 101, 2, (1, 3), (1, 2), (0, 1), 1, False),
    ("phases-6x6-stride3-pad5-groups2", 1, 2, 131, 129, 4, (6, 6), 3, 5, 2, True),
    ("phases-pad-beyond-kernel", 1, 1, 64, 64, 2, (4, 4), 2, 5, 1, True),
    # short phases along both axes (8 taps at stride 3: 3, 3, 2; 7 at stride 2: 4, 3) and
    # 24 phases a group: row panels that mix the tap classes
    ("phases-8x7-stride3x2-groups2", 2, 8, 100, 80, 6, (8, 7), (3, 2), (1, 2), 2, True),
    # 3 taps a phase along both axes and >= 32 dy channels a group: backward by Winograd on
    # the phases (conv2d_winograd.cpp; conv1 above too). Channels and phases that are not
    # multiples of 8 (36 and 18 a group; 33 and 16), padding that moves the phase grid
    # (t0 = 2, and 3 past the kernel's reach), odd and even phase grids
    ("phases-winograd-6x9-stride2x3-groups2", 2, 6, 70, 101, 72, (6, 9), (2, 3), (3, 4), 2, True),
    ("phases-winograd-12x12-stride4-pad7", 1, 1, 150, 131, 33, (12, 12), 4, 7, 1, True),
    ("phases-winograd-11x11-pad10x9", 1, 3, 130, 120, 32, (11, 11), 4, (10, 9), 1, False),
    ("phases-winograd-6x6-stride2-pad7", 1, 4, 60, 64, 32, (6, 6), 2, 7, 1, True),
    # stride 1, a batch of >= 512 row-padded outputs an image: forward on shifted rows of
    # the padded input (the same bits as im2col), backward by im2col
    ("rows-stride1-5x5-batch3-groups2", 3, 6, 30, 28, 8, (5, 5), 1, 2, 2, True),
    ("rows-stride1-3x3-batch2", 2, 4, 40, 40, 6, (3, 3), 1, 1, 1, False),
    ("rows-stride1-anisotropic-batch2", 2, 3, 33, 20, 4, (3, 5), 1, (0, 2), 1, True),
    # forward by phases, backward by im2col (too many zero taps: 15 of 24, 4 of 16)
    ("phases-forward-only-anisotropic", 1, 2, 100, 200, 4, (3, 5), (2, 3), (1, 2), 1, True),
    ("phases-forward-only-stride-gt-kernel", 1, 2, 140, 140, 2, (2, 2), 4, 3, 1, True),
]

# Stride-1 kernels of 4-9 taps a side whose 3x3 blocks are >= 2/3 full, with >= 32 channels a
# group: forward by Winograd on shifted copies of the input (conv2d_winograd.cpp; CaffeNet
# conv2 above too), backward by im2col. One row of blocks (5x3), three (8x8), channels not
# multiples of 8.
BLOCKS = [
    ("blocks-6x6-pad1", 1, 32, 20, 21, 40, (6, 6), 1, 1, 1, True),
    ("blocks-5x3-groups2", 2, 64, 16, 15, 64, (5, 3), 1, (2, 1), 2, False),
    ("blocks-8x8-odd-channels", 1, 36, 19, 17, 33, (8, 8), 1, 3, 1, True),
]

ALL = CASES + CAFFENET + PHASES + BLOCKS


def make(rng, case):
    _, N, C, H, W, K, (kh, kw), stride, padding, groups, bias = case
    x = f32(rng.standard_normal((N, C, H, W)))
    w = f32(rng.standard_normal((K, C // groups, kh, kw)) / np.sqrt(C // groups * kh * kw))
    b = f32(rng.standard_normal(K)) if bias else None
    return x, w, b, stride, padding, groups


def ids(cases):
    return [c[0] for c in cases]


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_forward_matches_numpy(rng, case):
    x, w, b, stride, padding, groups = make(rng, case)
    y = ops.conv2d_forward(x, w, b, stride, padding, groups)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    assert_close(y, ref_conv2d_forward(x, w, b, stride, padding, groups), what="y")


@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_backward_matches_numpy(rng, case):
    x, w, b, stride, padding, groups = make(rng, case)
    yshape = ops.conv2d_forward(x, w, b, stride, padding, groups).shape
    dy = f32(rng.standard_normal(yshape))
    dx = ops.conv2d_backward(dy, w, x.shape, stride, padding, groups)
    assert dx.dtype == np.float32 and dx.shape == x.shape
    assert_close(dx, ref_conv2d_backward(dy, w, x.shape, stride, padding, groups), what="dx")


@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_matches_torch_autograd(rng, case):
    x, w, b, stride, padding, groups = make(rng, case)
    y = ops.conv2d_forward(x, w, b, stride, padding, groups)
    dy = f32(rng.standard_normal(y.shape))
    dx = ops.conv2d_backward(dy, w, x.shape, stride, padding, groups)
    y_ref, dx_ref = torch_conv2d(x, w, b, dy, stride, padding, groups)
    assert_close(y, y_ref, what="y vs torch")
    assert_close(dx, dx_ref, what="dx vs torch")


def test_numpy_reference_gradient_by_finite_differences(rng):
    """The float64 reference's backward is the adjoint of its forward (central differences)."""
    case = ("fd", 2, 4, 6, 5, 6, (3, 2), 2, 1, 2, False)
    x, w, _, stride, padding, groups = make(rng, case)
    x = x.astype(np.float64)
    dy = rng.standard_normal(ref_conv2d_forward(x, w, None, stride, padding, groups).shape)
    dx = ref_conv2d_backward(dy, w, x.shape, stride, padding, groups)
    h = 1e-6
    for flat in rng.choice(x.size, 12, replace=False):
        i = np.unravel_index(flat, x.shape)
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        fd = (np.sum(ref_conv2d_forward(xp, w, None, stride, padding, groups) * dy)
              - np.sum(ref_conv2d_forward(xm, w, None, stride, padding, groups) * dy)) / (2 * h)
        assert abs(fd - dx[i]) <= 1e-7 * max(1.0, abs(fd))


def test_output_size_is_floor_mode(rng):
    x = f32(rng.standard_normal((1, 2, 10, 7)))
    w = f32(rng.standard_normal((3, 2, 3, 3)))
    assert ops.conv2d_forward(x, w, stride=3, padding=1).shape == (1, 3, 4, 3)
    assert ops.conv2d_forward(x, w, stride=(4, 2), padding=(0, 1)).shape == (1, 3, 2, 4)


def test_backward_of_linear_map_is_its_adjoint(rng):
    """<conv(x), dy> == <x, conv_backward(dy)> for the core itself (bias-free)."""
    x, w, _, stride, padding, groups = make(rng, CASES[5])
    y = ops.conv2d_forward(x, w, None, stride, padding, groups)
    dy = f32(rng.standard_normal(y.shape))
    dx = ops.conv2d_backward(dy, w, x.shape, stride, padding, groups)
    lhs = np.vdot(y.astype(np.float64), dy.astype(np.float64))
    rhs = np.vdot(x.astype(np.float64), dx.astype(np.float64))
    assert abs(lhs - rhs) <= 1e-4 * np.sqrt(np.vdot(y, y) * np.vdot(dy, dy))


def test_repeated_calls_reuse_workspace_safely(rng):
    """A large conv then a small one then the large again: the per-thread workspace is reused."""
    big = make(rng, CAFFENET[0])
    small = make(rng, CASES[1])
    y_big = ops.conv2d_forward(*big)
    ops.conv2d_forward(*small)
    np.testing.assert_array_equal(ops.conv2d_forward(*big), y_big)


@pytest.mark.parametrize("case", [CASES[1], CASES[16], CAFFENET[0], CAFFENET[1], CAFFENET[4],
                                  PHASES[1], PHASES[9]], ids=lambda c: c[0])
def test_results_do_not_depend_on_thread_count(rng, case):
    # conv2 and conv4 (2 groups) at 2 threads run their groups side by side, at 1 and 3 not
    x, w, b, stride, padding, groups = make(rng, case)
    dy = f32(rng.standard_normal(ops.conv2d_forward(x, w, b, stride, padding, groups).shape))
    before = invert_native.get_num_threads()
    out = []
    try:
        for n in (1, 2, 3):
            invert_native.set_num_threads(n)
            out.append((ops.conv2d_forward(x, w, b, stride, padding, groups),
                        ops.conv2d_backward(dy, w, x.shape, stride, padding, groups)))
    finally:
        invert_native.set_num_threads(before)
    for y, dx in out[1:]:
        np.testing.assert_array_equal(y, out[0][0])
        np.testing.assert_array_equal(dx, out[0][1])


def test_concurrent_calls_from_python_threads(rng):
    """The core releases the GIL: calls from several threads at once give the serial results."""
    cases = [make(rng, c) for c in (CASES[1], CASES[4], CASES[16], CAFFENET[3])]
    expected = [ops.conv2d_forward(*c) for c in cases]
    errors = []

    def work(i):
        for _ in range(5):
            for j in range(len(cases)):
                c = cases[(i + j) % len(cases)]
                if not np.array_equal(ops.conv2d_forward(*c), expected[(i + j) % len(cases)]):
                    errors.append((i, j))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def uses_winograd(N, C, H, W, K, kernel, stride, padding, groups):
    """conv2d.cpp's choice (conv2d_winograd.cpp): 3x3, stride 1, padding <= 2, >= 32 channels
    a group each side, >= 16 tiles of 2x2 outputs an image (never depends on N)."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    Ho, Wo = H + 2 * ph - 2, W + 2 * pw - 2
    return (tuple(kernel) == (3, 3) and (sh, sw) == (1, 1) and max(ph, pw) <= 2
            and C // groups >= 32 and K // groups >= 32 and min(Ho, Wo) >= 1
            and ((Ho + 1) // 2) * ((Wo + 1) // 2) >= 16)


@pytest.mark.parametrize("case", [c for c in ALL if c[1] > 1], ids=lambda c: c[0])
def test_a_batch_computes_each_image_as_alone(rng, case):
    # chunking the batch into one SGEMM, or Winograd's tiles into blocks, must not change a
    # single bit of any image's result (no path choice looks at the batch size)
    x, w, b, stride, padding, groups = make(rng, case)
    same = np.testing.assert_array_equal
    y = ops.conv2d_forward(x, w, b, stride, padding, groups)
    dy = f32(rng.standard_normal(y.shape))
    dx = ops.conv2d_backward(dy, w, x.shape, stride, padding, groups)
    for n in range(x.shape[0]):
        same(y[n:n + 1], ops.conv2d_forward(x[n:n + 1], w, b, stride, padding, groups))
        same(dx[n:n + 1], ops.conv2d_backward(dy[n:n + 1], w, x[n:n + 1].shape, stride, padding,
                                              groups))

def test_phases_switch_off_gives_the_im2col_path(tmp_path):
    """INVERT_NATIVE_NO_PHASES=1 (read at the first call) sends conv1 through im2col. With
    Winograd off too (INVERT_NATIVE_NO_WINOGRAD=1), forward by phases reads the same column
    matrix in the same order as im2col: the same bits. Backward by phases sums in a different
    order (no col2im, zero taps), and Winograd (the default for conv1, both ways) in yet
    another: they differ in the last bits, and all match float64."""
    script = (
        "import sys, numpy as np; from invert_native import ops\n"
        "r = np.random.default_rng(7)\n"
        "x = r.standard_normal((1, 3, 227, 227)).astype(np.float32)\n"
        "w = (r.standard_normal((96, 3, 11, 11)) / 19).astype(np.float32)\n"
        "y = ops.conv2d_forward(x, w, None, 4, 0, 1)\n"
        "dy = r.standard_normal(y.shape).astype(np.float32)\n"
        "np.savez(sys.argv[1], x=x, w=w, dy=dy, y=y, dx=ops.conv2d_backward(dy, w, x.shape, 4, 0, 1))\n")
    configs = {"default": {}, "phases": {"INVERT_NATIVE_NO_WINOGRAD": "1"},
               "im2col": {"INVERT_NATIVE_NO_PHASES": "1", "INVERT_NATIVE_NO_WINOGRAD": "1"}}
    out = {}
    for name, env in configs.items():
        path = tmp_path / f"{name}.npz"
        run_python(script, path, env={"INVERT_NATIVE_NO_PHASES": None,
                                      "INVERT_NATIVE_NO_WINOGRAD": None, **env})
        out[name] = np.load(path)
    x, w, dy = out["default"]["x"], out["default"]["w"], out["default"]["dy"]
    y_ref = ref_conv2d_forward(x, w, None, 4, 0, 1)
    dx_ref = ref_conv2d_backward(dy, w, x.shape, 4, 0, 1)
    for name in configs:
        assert_close(out[name]["y"], y_ref, what=f"y, {name}")
        assert_close(out[name]["dx"], dx_ref, what=f"dx, {name}")
    np.testing.assert_array_equal(out["phases"]["y"], out["im2col"]["y"])
    assert not np.array_equal(out["default"]["y"], out["phases"]["y"])
    assert not np.array_equal(out["phases"]["dx"], out["im2col"]["dx"])
    assert not np.array_equal(out["default"]["dx"], out["phases"]["dx"])


def check_with_the_avx2_tile(tmp_path, problems, **tol):
    """Forward and backward of each (name, x, w, b, dy, stride, padding, groups) in a fresh
    process with INVERT_NATIVE_NO_AVX512=1 (the AVX2 SGEMM tile, checked), against float64."""
    script = (
        "import sys, numpy as np; from invert_native import ops, _cpu\n"
        "assert _cpu.sgemm_kernel().startswith('avx2'), _cpu.sgemm_kernel()\n"
        "d = dict(np.load(sys.argv[1]))\n"
        f"cases = {[(p[0], p[5], p[6], p[7]) for p in problems]!r}\n"
        "out = {}\n"
        "for name, stride, padding, groups in cases:\n"
        "    x, w, dy, b = (d.get(name + k) for k in ('/x', '/w', '/dy', '/b'))\n"
        "    out[name + '/y'] = ops.conv2d_forward(x, w, b, stride, padding, groups)\n"
        "    out[name + '/dx'] = ops.conv2d_backward(dy, w, x.shape, stride, padding, groups)\n"
        "np.savez(sys.argv[2], **out)\n")
    inputs, refs = {}, {}
    for name, x, w, b, dy, stride, padding, groups in problems:
        inputs.update({name + "/x": x, name + "/w": w, name + "/dy": dy})
        if b is not None:
            inputs[name + "/b"] = b
        refs[name + "/y"] = ref_conv2d_forward(x, w, b, stride, padding, groups)
        refs[name + "/dx"] = ref_conv2d_backward(dy, w, x.shape, stride, padding, groups)
    src, dst = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(src, **inputs)
    run_python(script, src, dst, env={"INVERT_NATIVE_NO_AVX512": "1"})
    got = np.load(dst)
    for name, ref in refs.items():
        assert_close(got[name], ref, what=f"{name} (AVX2 tile)", **tol)


def test_phases_with_the_avx2_tile(tmp_path):
    """Backward by phases cuts its phases into the SGEMM's row panels (12 rows with AVX-512,
    6 with AVX2) and gives each panel only the tap pairs its rows need, and Winograd on the
    phases (both ways) and on 3x3 blocks (forward) runs its products on the same tiles, so
    the two tiles group the products differently; INVERT_NATIVE_NO_AVX512=1 in a fresh
    process takes the AVX2 one. Both match float64 on every phase and block case, forward and
    backward."""
    cases = [c for c in PHASES + BLOCKS if c[0].startswith(("phases-", "blocks-"))]
    rng = np.random.default_rng(11)
    problems = []
    for case in cases:
        x, w, b, stride, padding, groups = make(rng, case)
        dy = f32(rng.standard_normal(ops.conv2d_forward(x, w, b, stride, padding, groups).shape))
        problems.append((case[0], x, w, None, dy, stride, padding, groups))
    check_with_the_avx2_tile(tmp_path, problems)

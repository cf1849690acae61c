"""Reliability: no memory growth over many calls, correct results from concurrent threads."""

import gc
import threading

import numpy as np
import pytest

import invert_native as inv
from invert_native import nn, ops

from conftest import under_asan

# Under AddressSanitizer, freed blocks sit in a quarantine (256 MiB by default) so that a later
# use-after-free is caught: resident memory then grows with every call by design. CI runs this
# file twice, uninstrumented (where these checks apply) and under ASan (for memory errors only).
rss_checked = pytest.mark.skipif(
    under_asan(), reason="ASan's quarantine holds freed memory; checked in the uninstrumented run"
)


def rss_bytes():
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@rss_checked
def test_ten_thousand_op_calls_do_not_grow_memory():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 15, 13)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    wl = rng.standard_normal((5, x[0].size)).astype(np.float32)

    def round_trip():
        y = ops.conv2d_forward(x, w, None, 1, 1, 2)
        ops.conv2d_backward(y, w, x.shape, 1, 1, 2)
        p, am = ops.maxpool2d_forward(y, 3, 2)
        ops.maxpool2d_backward(p, am, y.shape, 3, 2)
        n, s = ops.lrn_forward(y)
        ops.lrn_backward(y, n, s, n)
        ops.relu_backward(y, ops.relu_forward(y))
        ops.tv_forward(x, 1.5)
        ops.alpha_norm_forward(x, 6.0)
        ops.linear_backward(ops.linear_forward(x, wl), wl, x.shape)

    for _ in range(200):  # warm up allocator pools and thread-local workspaces
        round_trip()
    gc.collect()
    before = rss_bytes()
    for _ in range(1000):  # x 10 ops = 10 000 calls
        round_trip()
    gc.collect()
    grown = rss_bytes() - before
    assert grown < 8 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB"


@rss_checked
def test_long_inversion_does_not_grow_memory():
    hog = inv.HOG(texture=False)
    rng = np.random.default_rng(1)
    img = (rng.random((1, 1, 48, 64)) * 255 - 128).astype(np.float32)
    t = hog.forward(img)
    kw = dict(image_shape=(48, 64, 1), lambda_alpha=1e5, learning_rate=0.001)
    inv.invert(hog, t, iterations=100, **kw)
    gc.collect()
    before = rss_bytes()
    res = inv.invert(hog, t, iterations=2000, **kw)
    gc.collect()
    grown = rss_bytes() - before
    assert np.isfinite(res.objective).all()
    # the histories of 2000 iterations are a few tens of KiB; the rest must not grow
    assert grown < 8 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB"


def test_two_threads_invert_at_once_and_get_the_serial_results():
    def make():
        rng = np.random.default_rng(2)
        net = nn.Sequential([("conv", nn.Conv2d(rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3,
                                                padding=1)),
                             ("relu", nn.ReLU()), ("pool", nn.MaxPool2d(2))])
        return net

    img = np.random.default_rng(3).standard_normal((1, 3, 24, 24)).astype(np.float32) * 40
    serial = []
    for seed in (0, 1):
        net = make()
        serial.append(inv.invert(net, net.forward(img), image_shape=(24, 24, 3), lambda_tv=0.5,
                                 iterations=60, seed=seed).images)
    results = [None, None]
    errors = []

    def work(i):
        try:
            net = make()  # layers keep per-call caches: one net per thread
            results[i] = inv.invert(net, net.forward(img), image_shape=(24, 24, 3),
                                    lambda_tv=0.5, iterations=60, seed=i).images
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for i in (0, 1):
        np.testing.assert_array_equal(results[i], serial[i])


@pytest.mark.parametrize("threads", [1, 2])
def test_results_do_not_depend_on_the_thread_count(threads):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 16, 27, 27)).astype(np.float32)
    w = rng.standard_normal((32, 8, 5, 5)).astype(np.float32)
    saved = inv.get_num_threads()
    try:
        inv.set_num_threads(1)
        ref = ops.conv2d_forward(x, w, None, 1, 2, 2)
        inv.set_num_threads(threads)
        np.testing.assert_array_equal(ops.conv2d_forward(x, w, None, 1, 2, 2), ref)
    finally:
        inv.set_num_threads(saved)

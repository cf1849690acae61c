"""CUDA regularisers and the inversion engine on the GPU, against the CPU core (``gpu`` marker)."""

import gc
import os
from collections import Counter

import numpy as np
import pytest
from conftest import assert_close, require

import invert_native as inv
from invert_native import ops

pytestmark = pytest.mark.gpu


@pytest.fixture
def cp():
    return require("cupy")


def live_arrays(cp):
    """(shape, dtype) of every CuPy array the garbage collector can see, counted (type(), not
    isinstance(): some objects warn when their __class__ is read)."""
    return Counter((a.shape, a.dtype.str) for a in gc.get_objects() if type(a) is cp.ndarray)


@pytest.mark.parametrize("beta", [1.0, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("shape", [(1, 1, 5, 7), (3, 3, 17, 13), (2, 3, 227, 227)])
@pytest.mark.parametrize("scale, floor", [(1.0, 1e-5), (1e-3, 1e-5), (1e-3, 1e-14)])
def test_tv_cuda_matches_cpu(cp, beta, shape, scale, floor):
    """Unit scale, and 1e-3 with the floor binding (1e-5) or not (1e-14, as invert passes)."""
    rng = np.random.default_rng(int(beta * 7) + shape[2])
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    v, g = ops.tv_forward(x, beta, floor)
    vg, gg = ops.tv_forward(cp.asarray(x), beta, floor)
    assert isinstance(gg, cp.ndarray) and isinstance(vg, cp.ndarray)
    assert_close(vg.get(), v, rtol=1e-5, atol=0.0)
    assert_close(gg.get(), g, atol=0.0)  # the gradient shrinks with the scale: relative only


@pytest.mark.parametrize("alpha", [1.0, 2.0, 6.0])
def test_alpha_norm_cuda_matches_cpu(cp, alpha):
    x = np.random.default_rng(3).standard_normal((4, 3, 31, 29)).astype(np.float32)
    v, g = ops.alpha_norm_forward(x, alpha)
    vg, gg = ops.alpha_norm_forward(cp.asarray(x), alpha)
    assert_close(vg.get(), v, rtol=1e-5)
    assert_close(gg.get(), g)


@pytest.mark.parametrize("shape", [(1, 3, 7, 5), (3, 3, 64, 48)])
def test_descent_step_cuda_matches_cpu_bit_for_bit(cp, shape):
    # no fused multiply-adds on either backend: the same float32 operations, the same bits
    rng = np.random.default_rng(sum(shape))
    host = [rng.standard_normal(shape).astype(np.float32) for _ in range(5)]
    dev = [cp.asarray(a) for a in host]
    consts = dict(sigma=213.7, lambda_alpha=0.216, lambda_tv=0.5, rate=0.004, momentum=0.9)
    ops.descent_step(*host, **consts)
    ops.descent_step(*dev, **consts)
    np.testing.assert_array_equal(dev[0].get(), host[0])
    np.testing.assert_array_equal(dev[1].get(), host[1])


def test_invert_runs_on_the_gpu_and_matches_the_cpu(cp):
    from test_invert import Upto, photo, small_cnn, target_of

    net = small_cnn()
    img = photo(32)
    rep = Upto(net, "norm1")
    t = target_of(rep, img)
    cpu = inv.invert(rep, t, image_shape=img.shape, lambda_tv=0.5, restarts=2, seed=3,
                     iterations=30)
    net.to("cuda")
    gpu = inv.invert(Upto(net, "norm1"), cp.asarray(t), image_shape=img.shape, lambda_tv=0.5,
                     restarts=2, seed=3, iterations=30)
    assert isinstance(gpu.x, cp.ndarray)
    # same start, same maths: the trajectories agree up to float32 summation order
    assert_close(gpu.objective, cpu.objective, rtol=1e-3)
    assert_close(gpu.images, cpu.images, rtol=1e-2)


def test_cuda_path_frees_what_it_allocates(cp):
    """Repeated op calls and inversions leave CuPy's pool and the device memory where they were."""
    from test_invert import Upto, photo, small_cnn, target_of

    pool = cp.get_default_memory_pool()
    x = cp.asarray(np.random.default_rng(0).standard_normal((2, 3, 31, 29)).astype(np.float32))

    def work():
        for _ in range(50):
            ops.tv_forward(x, 1.5)
            ops.alpha_norm_forward(x, 6.0)
            y, am = ops.maxpool2d_forward(x, 3, 2)
            ops.maxpool2d_backward(y, am, x.shape, 3, 2)
        net = small_cnn().to("cuda")
        rep = Upto(net, "norm1")
        img = photo(32)
        t = target_of(Upto(small_cnn(), "norm1"), img)
        inv.invert(rep, cp.asarray(t), image_shape=img.shape, iterations=20)
        cp.cuda.Device().synchronize()

    def settle():
        # earlier tests can leave arrays in reference cycles (a caught exception's frames):
        # collect them first, so that only this test's allocations are compared
        gc.collect()
        pool.free_all_blocks()
        return pool.used_bytes(), pool.total_bytes(), live_arrays(cp)

    work()
    used, total, live = settle()
    free_before = cp.cuda.runtime.memGetInfo()[0]
    for _ in range(3):
        work()
    used_after, total_after, live_after = settle()
    assert used_after <= used and total_after <= total, (
        f"CuPy pool grew from {used} to {used_after} bytes in use; arrays alive now and not "
        f"before: {live_after - live}")
    # nothing allocated outside CuPy's pool (the native core allocates no device memory).
    # The device's free memory is shared by every process: under pytest-xdist the other
    # workers' tests allocate while this one runs (on an H100 with -n 8 it fell by 826 MB
    # between the two readings), so the reading means something only in a lone process.
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        assert cp.cuda.runtime.memGetInfo()[0] >= free_before - 2**20


def test_gpu_loop_catches_divergence_without_input_checks(cp):
    """Inside invert's loop HOG's input check makes no host transfer on the GPU; a NaN image
    is still caught through the objective, in the loop or after the last update."""
    hog = inv.HOG(texture=False)
    x0 = (np.random.default_rng(0).random((1, 1, 48, 64)) * 255 - 128).astype(np.float32)
    t = hog.forward(cp.asarray(x0))
    with pytest.raises(inv.InversionDiverged, match=r"by iteration \d+"):
        inv.invert(hog, t, image_shape=(48, 64, 1), learning_rate=1e30, iterations=30)
    with pytest.raises(inv.InversionDiverged, match=r"after the last update \(iteration 6\)"):
        inv.invert(hog, t, image_shape=(48, 64, 1), learning_rate=[(0.004, 5), (1e30, 1)])
    # calls outside invert still refuse non-finite images
    with pytest.raises(ValueError, match="NaN"):
        hog.forward(cp.full((1, 1, 48, 64), cp.nan, cp.float32))

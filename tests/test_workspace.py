"""The inversion loop reuses its arrays: no image- or code-sized allocation per iteration."""

import threading
import tracemalloc

import numpy as np
import pytest

import invert_native as inv
from invert_native import nn, ops


def test_workspace_replays_arrays_by_position():
    ws = ops.Workspace()
    x = np.ones((1, 2, 5, 5), np.float32)
    with ops.reusing(ws):
        a = ops.relu_forward(x)
        b = ops.relu_forward(x)
        assert a is not b
        ws.rewind()
        assert ops.relu_forward(x) is a  # same position, same shape: the same array
        c = ops.relu_forward(np.ones((1, 2, 4, 4), np.float32))
        assert c is not b and c.shape == (1, 2, 4, 4)  # another shape: a new array
    assert ws.nbytes == a.nbytes + c.nbytes
    # outside the context every call returns a new array again
    assert ops.relu_forward(x) is not ops.relu_forward(x)


def test_an_output_never_overwrites_an_input_of_its_own_call():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    y_ref = ops.conv2d_forward(x, w, padding=1)  # outside the workspace: new arrays
    z_ref = ops.conv2d_forward(y_ref, w, padding=1)
    ws = ops.Workspace()
    with ops.reusing(ws):
        y = ops.conv2d_forward(x, w, padding=1)
        ws.rewind()
        z = ops.conv2d_forward(y, w, padding=1)  # position 0 again, which holds y
        assert z is not y and not np.shares_memory(z, y)
        np.testing.assert_array_equal(y, y_ref)  # the input is intact
        np.testing.assert_array_equal(z, z_ref)
        ws.rewind()
        assert ops.conv2d_forward(x, w, padding=1) is z  # the new array took the position
        # views of a workspace array count too (a reshape, a reversed slice)
        ws.rewind()
        a = ops.relu_forward(x)
        ws.rewind()
        b = ops.relu_forward(a.reshape(4, 1, 8, 8))
        c = ops.relu_backward(x, a[:, :, ::-1])
        assert not np.shares_memory(b, a) and not np.shares_memory(c, a)
        relu_x = np.maximum(x, 0)
        np.testing.assert_array_equal(a, relu_x)
        np.testing.assert_array_equal(b, relu_x.reshape(4, 1, 8, 8))
        np.testing.assert_array_equal(c, np.where(x > 0, relu_x[:, :, ::-1], 0))


def test_workspace_is_per_thread():
    ws = ops.Workspace()
    x = np.ones((1, 1, 3, 3), np.float32)
    seen = []
    with ops.reusing(ws):
        t = threading.Thread(target=lambda: seen.append(ops.relu_forward(x)))
        t.start()
        t.join()
    assert ws.nbytes == 0 and seen[0].shape == x.shape


class Opaque:
    """A representation that does not declare reuses_outputs: ops allocate as usual."""

    def __init__(self, rep):
        self.rep = rep

    def forward(self, x):
        return self.rep.forward(x)

    def backward(self, dy):
        return self.rep.backward(dy)


def small_cnn(rng):
    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32) / np.sqrt(np.prod(shape[1:]))
    return nn.Sequential([
        ("conv1", nn.Conv2d(w(16, 3, 5, 5), np.zeros(16, np.float32), stride=2, padding=2)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, 2)),
        ("norm1", nn.LRN()),
        ("conv2", nn.Conv2d(w(24, 8, 3, 3), padding=1, groups=2)),
        ("relu2", nn.ReLU()),
        ("fc", nn.Linear(w(10, 24 * 16 * 16))),
    ])


REPRESENTATIONS = {
    "hog": lambda rng: (inv.HOG(), (128, 128, 1)),
    "hogb": lambda rng: (inv.HOG(bilinear=True), (128, 128, 1)),
    "dsift": lambda rng: (inv.DSIFT(bin_size=6), (128, 128, 1)),
    "cnn": lambda rng: (small_cnn(rng), (64, 64, 3)),
}


@pytest.mark.parametrize("name", sorted(REPRESENTATIONS))
def test_inversion_iterations_allocate_no_arrays(name):
    rng = np.random.default_rng(3)
    rep, (H, W, C) = REPRESENTATIONS[name](rng)
    x0 = (rng.random((1, C, H, W)) * 255 - 128).astype(np.float32)
    target = rep.forward(x0).copy()
    image_bytes = x0.nbytes  # 64 KiB (grey) or 48 KiB (colour)

    transient = []

    def callback(it, energy):
        # the largest amount of Python-tracked memory (NumPy arrays included) allocated on top
        # of what was live at the previous iteration's end, then freed again
        current, peak = tracemalloc.get_traced_memory()
        transient.append(peak - current)
        tracemalloc.reset_peak()

    kw = dict(image_shape=(H, W, C), iterations=8, restarts=2, learning_rate=1e-4,
              lambda_alpha=1e-8, lambda_tv=1e-3, callback=callback, callback_every=1)
    tracemalloc.start()
    try:
        res = inv.invert(rep, target, **kw)
    finally:
        tracemalloc.stop()
    # iterations 1-2 fill the workspace; afterwards only scalars and (restarts,) vectors
    assert max(transient[3:]) < image_bytes // 4, transient

    # the same iterations without the workspace give bit-identical results
    again = inv.invert(Opaque(rep), target, **kw)  # (no deprocess: compare the variable)
    np.testing.assert_array_equal(res.x, again.x)
    np.testing.assert_array_equal(res.objective, again.objective)


def test_opaque_representation_allocates_as_before():
    # the check above can fail: without the workspace every iteration allocates arrays
    rep = inv.HOG()
    rng = np.random.default_rng(4)
    x0 = (rng.random((1, 1, 128, 128)) * 255 - 128).astype(np.float32)
    target = rep.forward(x0)
    transient = []

    def callback(it, energy):
        current, peak = tracemalloc.get_traced_memory()
        transient.append(peak - current)
        tracemalloc.reset_peak()

    tracemalloc.start()
    try:
        inv.invert(Opaque(rep), target, image_shape=(128, 128, 1), iterations=6, restarts=2,
                   learning_rate=1e-4, callback=callback, callback_every=1)
    finally:
        tracemalloc.stop()
    assert max(transient[3:]) >= x0.nbytes


def test_a_representation_in_float64_still_inverts():
    # the data term's native fast path is for float32 codes; other dtypes take the NumPy path
    rep = inv.HOG()

    class F64:
        def forward(self, x):
            return rep.forward(x.astype(np.float32)).astype(np.float64)

        def backward(self, dy):
            return rep.backward(np.asarray(dy, np.float32)).astype(np.float64)

    x0 = (np.random.default_rng(5).random((1, 1, 64, 64)) * 255 - 128).astype(np.float32)
    target = rep.forward(x0)
    kw = dict(image_shape=(64, 64, 1), iterations=20, learning_rate=1e-3, lambda_alpha=1e-8,
              lambda_tv=1e-3)
    a, b = inv.invert(F64(), target, **kw), inv.invert(rep, target, **kw)
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-5)
    assert a.objective[-1, 0] < a.objective[0, 0]

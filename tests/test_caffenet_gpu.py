"""CaffeNet and OnnxNet on the CUDA core against the CPU core (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, f32, require

import invert_native as inv

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def nets():
    cpu = inv.CaffeNet.random(seed=0)
    gpu = inv.CaffeNet.random(seed=0).to("cuda")
    return cpu, gpu


def test_caffenet_cuda_matches_cpu_every_layer_and_backward(nets, rng):
    cp = require("cupy")
    from skimage import data

    cpu, gpu = nets
    assert gpu.device == "cuda" and cpu.device == "cpu"
    x = f32(np.concatenate([cpu.preprocess(data.astronaut()), cpu.preprocess(data.coffee())]))
    x += f32(rng.uniform(-2, 2, x.shape))  # no tied pooling windows
    h, hg = x, cp.asarray(x)
    for name, layer in cpu:
        h = layer.forward(h)
        hg = gpu[name].forward(hg)
        assert isinstance(hg, cp.ndarray)
        assert_close(hg, h, what=f"{name} forward")
    for stop in ("norm2", "mpool5", "fc8"):
        y = cpu.forward_to(x, stop)
        dy = f32(rng.standard_normal(y.shape))
        dx = cpu.backward(dy)
        gpu.forward_to(cp.asarray(x), stop)
        assert_close(gpu.backward(cp.asarray(dy)), dx, what=f"dx through {stop}")


def test_inversion_runs_on_the_gpu(nets):
    from skimage import data

    _, gpu = nets
    rep = gpu.representation("conv1")
    target = rep.code(data.astronaut())
    r = inv.invert(rep, target, image_shape=rep.image_shape, iterations=20, seed=0)
    assert isinstance(r.images, np.ndarray) and r.images.shape == (1, 227, 227, 3)
    assert r.objective[-1, 0] < r.objective[0, 0]


def test_onnxnet_cuda_matches_cpu(rng):
    cp = require("cupy")
    require("onnx")
    from test_onnx import build_model, photo, vgg_desc

    model = build_model(vgg_desc(rng), [1, 3, 33, 33])
    cpu, gpu = inv.OnnxNet(model), inv.OnnxNet(model).to("cuda")
    x = np.concatenate([photo(33), photo(33, which="coffee")])
    y = cpu.forward(x)
    assert_close(gpu.forward(cp.asarray(x)), y, what="forward")
    dy = f32(rng.standard_normal(y.shape))
    assert_close(gpu.backward(cp.asarray(dy)), cpu.backward(dy), what="backward")


def test_onnx_identity_pools_and_in_place_safe_outputs_on_cuda(rng):
    """GlobalAveragePool (1x1), Flatten and Softmax hand out arrays of their own on CuPy too."""
    cp = require("cupy")
    require("onnx")
    from onnx import helper
    from test_onnx import _model, he, photo

    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1"),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], name="c2"),  # 6x6 -> 1x1
             helper.make_node("GlobalAveragePool", ["c2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
             helper.make_node("Softmax", ["flat"], ["prob"], name="prob")]
    model = _model(nodes, {"w1": he(rng, (6, 3, 3, 3)), "w2": he(rng, (8, 6, 6, 6))})
    cpu, gpu = inv.OnnxNet(model), inv.OnnxNet(model).to("cuda")
    x = np.concatenate([photo(8), photo(8, which="coffee")]) / np.float32(20)
    for stop in ("gap", "flat", "prob"):
        y = cpu.forward_to(x, stop)
        yg = gpu.forward_to(cp.asarray(x), stop)
        assert_close(yg, y, what=f"{stop} forward")
        yg -= 1.0  # the caller's to change
        dy = f32(rng.standard_normal(y.shape))
        assert_close(gpu.backward(cp.asarray(dy)), cpu.backward(dy), what=f"dx through {stop}")

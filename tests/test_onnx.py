"""ONNX loading (invert_native.OnnxNet, CaffeNet.from_onnx) against onnxruntime and torch autograd.

Models are built here with onnx.helper from layer descriptions; the same descriptions give a
float64 torch version of each net (test-only code), so the loader is checked against two
independent implementations: onnxruntime (CPU) for every layer's forward, torch for backward.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, f32, require

import invert_native as inv
from invert_native.onnx_loader import OnnxError

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # every test then skips (fails under INVERT_NATIVE_REQUIRE_REFS=1)
    onnx = None


@pytest.fixture(autouse=True)
def _needs_onnx():
    require("onnx")


# ------------------------------------------------------------------ builders
def build_model(desc, input_dims, opset=12, name_nodes=True, all_outputs=True, input_name="data"):
    """An ONNX model from a layer description (see the cases below).

    desc entries: (op, name, arrays, attrs); arrays go in as initializers after the activation.
    Special ops: "MatMulAdd" (MatMul then Add of arrays[1]), "ReshapeConst" (the shape as a
    Constant node). Every intermediate tensor is a graph output too (for onnxruntime).
    """
    nodes, inits, outs = [], [], []
    cur = input_name
    for op, name, arrays, attrs in desc:
        nn_ = name if name_nodes else ""
        if op == "MatMulAdd":
            w, b = arrays
            inits += [numpy_helper.from_array(w, f"{name}_B"),
                      numpy_helper.from_array(b, f"{name}_C")]
            nodes.append(helper.make_node("MatMul", [cur, f"{name}_B"], [f"{name}_mm"], name=nn_))
            nodes.append(helper.make_node("Add", [f"{name}_mm", f"{name}_C"], [f"{name}_out"],
                                          name=f"{nn_}_add" if nn_ else ""))
            outs.append(f"{name}_mm")
        elif op == "ReshapeConst":
            nodes.append(helper.make_node("Constant", [], [f"{name}_shape"], name=f"{name}_c",
                                          value=numpy_helper.from_array(arrays[0], "v")))
            nodes.append(helper.make_node("Reshape", [cur, f"{name}_shape"], [f"{name}_out"],
                                          name=nn_))
        else:
            names = []
            for i, a in enumerate(arrays):
                names.append(f"{name}_p{i}")
                inits.append(numpy_helper.from_array(a, names[-1]))
            nodes.append(helper.make_node(op, [cur] + names, [f"{name}_out"], name=nn_, **attrs))
        cur = f"{name}_out"
        outs.append(cur)
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_dims))
    outputs = [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)]
    if all_outputs:
        outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs[:-1]]
    graph = helper.make_graph(nodes, "net", [inp], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 13 else 8
    return model


def ort_outputs(model_or_path, x, input_name="data"):
    ort = require("onnxruntime")
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "graph") \
        else str(model_or_path)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {input_name: x})))


def he(rng, shape):
    return f32(rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:])))


def photo(size, rng=None, which="astronaut"):
    """A natural photo resized to size x size, mean-subtracted, as (1, 3, size, size)."""
    from PIL import Image
    from skimage import data

    img = np.asarray(Image.fromarray(getattr(data, which)()).resize((size, size)), np.float32)
    return f32((img - img.mean(axis=(0, 1))).transpose(2, 0, 1)[None])


# ------------------------------------------------------------------ torch twin
def _torch_same(H, k, s):
    total = max((-(-H // s) - 1) * s + k - H, 0)
    return total // 2, total - total // 2


def torch_forward(desc, xt, stop=None):
    """Run the description in float64 torch; return {name: output}."""
    torch = require("torch")
    F = torch.nn.functional
    outs = {}
    t = xt
    for op, name, arrays, at in desc:
        T = [torch.tensor(np.asarray(a, np.float64)) for a in arrays]
        if op == "Conv":
            k, s = at.get("kernel_shape", list(arrays[0].shape[2:])), at.get("strides", [1, 1])
            if at.get("auto_pad", "NOTSET") == "SAME_UPPER":
                (ph0, ph1), (pw0, pw1) = (_torch_same(t.shape[2 + a], k[a], s[a]) for a in range(2))
            else:
                ph0, pw0, ph1, pw1 = at.get("pads", [0, 0, 0, 0])
            t = F.pad(t, (pw0, pw1, ph0, ph1))
            t = F.conv2d(t, T[0], T[1] if len(T) > 1 else None, stride=s, groups=at.get("group", 1))
        elif op == "Relu":
            t = F.relu(t)
        elif op == "MaxPool":
            ph0, pw0, ph1, pw1 = at.get("pads", [0, 0, 0, 0])
            k, s = at["kernel_shape"], at.get("strides", [1, 1])
            ceil = bool(at.get("ceil_mode", 0))
            if ph0 == ph1 and pw0 == pw1:
                t = F.max_pool2d(t, k, s, (ph0, pw0), ceil_mode=ceil)
            else:
                t = F.max_pool2d(F.pad(t, (pw0, pw1, ph0, ph1), value=-np.inf), k, s,
                                 ceil_mode=ceil)
        elif op == "LRN":
            t = F.local_response_norm(t, at["size"], at.get("alpha", 1e-4), at.get("beta", 0.75),
                                      at.get("bias", 1.0))
        elif op in ("Flatten", "ReshapeConst", "Reshape"):
            t = t.flatten(1)
        elif op == "Gemm":
            B = T[0] if at.get("transB", 0) else T[0].T
            t = at.get("alpha", 1.0) * (t @ B.T) + at.get("beta", 1.0) * T[1]
        elif op == "MatMulAdd":
            t = t @ T[0] + T[1]
        elif op in ("Dropout", "Identity"):
            pass
        elif op == "Softmax":
            t = torch.softmax(t, dim=1)
        else:
            raise AssertionError(op)
        outs[name] = t
        if name == stop:
            break
    return outs


# ------------------------------------------------------------------ small nets
def vgg_desc(rng):
    """VGG-like: 3x3 convs, pools (floor and ceil), an asymmetric conv, LRN, Gemm, MatMul+Add."""
    return [
        ("Conv", "c1", [he(rng, (8, 3, 3, 3)), f32(0.1 * rng.standard_normal(8))],
         dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
        ("Relu", "r1", [], {}),
        ("Conv", "c2", [he(rng, (8, 4, 3, 3)), f32(0.1 * rng.standard_normal(8))],
         dict(pads=[1, 1, 1, 1], group=2)),
        ("Relu", "r2", [], {}),
        ("MaxPool", "p1", [], dict(kernel_shape=[2, 2], strides=[2, 2])),  # 33 -> 16 (floor)
        ("Conv", "c3", [he(rng, (12, 8, 3, 3)), f32(0.1 * rng.standard_normal(12))],
         dict(pads=[1, 0, 0, 1])),                                                  # asymmetric
        ("LRN", "n1", [], dict(size=3, alpha=2e-3, beta=0.75, bias=2.0)),
        ("MaxPool", "p2", [], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
        ("Conv", "c4", [he(rng, (16, 12, 2, 2))], dict(strides=[2, 2], auto_pad="SAME_UPPER")),
        ("Relu", "r4", [], {}),
        ("Flatten", "flat", [], dict(axis=1)),
        ("Gemm", "fc1", [he(rng, (16 * 4 * 4, 20)).astype(np.float32) * np.float32(0.1),
                         f32(rng.standard_normal(20))], dict(alpha=0.5, beta=2.0, transB=0)),
        ("Relu", "r5", [], {}),
        ("Dropout", "drop", [], {}),
        ("MatMulAdd", "fc2", [f32(rng.standard_normal((20, 10)) / 4),
                              f32(rng.standard_normal(10))], {}),
        ("Softmax", "prob", [], dict(axis=1)),
    ]


def pool_desc(rng, pads, ceil_mode, k=3, s=2):
    return [("Conv", "c1", [he(rng, (4, 3, 3, 3))], {}),
            ("MaxPool", "p", [], dict(kernel_shape=[k, k], strides=[s, s], pads=pads,
                                      ceil_mode=ceil_mode)),
            ("Relu", "r", [], {})]


def compare_all_layers(net, model, x, rtol=1e-4, input_name="data"):
    ref = ort_outputs(model, x, input_name)
    h = x
    checked = 0
    for name, layer in net:
        h = layer.forward(h)
        assert_close(h, ref[net.onnx_outputs[name]], rtol=rtol, what=f"layer {name}")
        checked += 1
    return checked


def test_vgg_like_every_layer_matches_onnxruntime(rng):
    desc = vgg_desc(rng)
    model = build_model(desc, ["N", 3, 33, 33], opset=12)
    net = inv.OnnxNet(model)
    assert net.names == ["c1", "r1", "c2", "r2", "p1", "c3", "n1", "p2", "c4", "r4", "flat",
                         "fc1", "r5", "fc2", "prob"]
    assert net.code_shape("p1") == (8, 16, 16)
    assert net.code_shape("c3") == (12, 15, 15)
    assert net.code_shape("p2") == (12, 7, 7)
    assert net.code_shape("c4") == (16, 4, 4)
    x = np.concatenate([photo(33), photo(33, which="coffee")])
    assert compare_all_layers(net, model, x) == 15


@pytest.mark.parametrize("opset", [11, 13])
def test_vgg_like_opsets_and_unnamed_nodes(rng, opset):
    desc = vgg_desc(rng)
    model = build_model(desc, ["N", 3, 33, 33], opset=opset, name_nodes=False)
    net = inv.OnnxNet(model)
    assert net.names[0] == "c1_out" and net.opset == opset
    compare_all_layers(net, model, photo(33))


@pytest.mark.parametrize("pads,ceil_mode,size", [
    ([0, 0, 0, 0], 0, 12),   # floor: one window fewer than Caffe's ceil -> cropped
    ([0, 0, 0, 0], 1, 12),   # ceil mode: the native rule
    ([0, 0, 1, 1], 0, 12),   # the model zoo's emulation of Caffe's ceil mode
    ([1, 1, 1, 1], 0, 11),
    ([1, 2, 0, 0], 1, 13),
    ([1, 1, 1, 1], 1, 12),
])
def test_maxpool_modes_match_onnxruntime_and_torch(rng, pads, ceil_mode, size):
    torch = require("torch")
    desc = pool_desc(rng, pads, ceil_mode)
    model = build_model(desc, [1, 3, size + 2, size + 2])
    net = inv.OnnxNet(model)
    x = photo(size + 2)
    compare_all_layers(net, model, x)
    y = net.forward(x)
    dy = f32(rng.standard_normal(y.shape))
    dx = net.backward(dy)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    (torch_forward(desc, xt)["r"] * torch.tensor(dy.astype(np.float64))).sum().backward()
    assert_close(dx, xt.grad, what="dx")


def test_vgg_like_backward_matches_torch_autograd(rng):
    torch = require("torch")
    desc = vgg_desc(rng)
    net = inv.OnnxNet(build_model(desc, [1, 3, 33, 33]))
    x = np.concatenate([photo(33), photo(33, which="coffee")])
    for stop in ("c1", "c3", "p2", "c4", "fc1", "prob"):
        y = net.forward_to(x, stop)
        dy = f32(rng.standard_normal(y.shape))
        dx = net.backward(dy)
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        out = torch_forward(desc, xt, stop)[stop]
        assert_close(y, out, what=f"{stop} forward")
        (out * torch.tensor(dy.astype(np.float64))).sum().backward()
        assert_close(dx, xt.grad, what=f"dx through {stop}")


def test_legacy_opset_attributes_load(rng):
    """Opset-6 style nodes (Gemm broadcast, Dropout is_test, Reshape by attribute) load as the
    opset-12 net does (onnxruntime has no opset-6 kernels to compare with)."""
    w1, b1 = he(rng, (6, 3, 3, 3)), f32(rng.standard_normal(6))
    w2, b2 = f32(rng.standard_normal((10, 6 * 4 * 4)) / 10), f32(rng.standard_normal(10))
    old = [("Conv", "c", [w1, b1], dict(kernel_shape=[3, 3])), ("Relu", "r", [], {}),
           ("MaxPool", "p", [], dict(kernel_shape=[2, 2], strides=[2, 2])),
           ("Reshape", "flat", [], dict(shape=[1, -1])),
           ("Gemm", "fc", [w2, b2], dict(transB=1, broadcast=1)),
           ("Dropout", "d", [], dict(is_test=1))]
    new = [e if e[0] != "Reshape" else ("Flatten", "flat", [], {}) for e in old]
    new = [e if e[0] != "Gemm" else ("Gemm", "fc", [w2, b2], dict(transB=1)) for e in new]
    new = [e for e in new if e[0] != "Dropout"]
    a = inv.OnnxNet(build_model(old, [1, 3, 10, 10], opset=4))
    b = inv.OnnxNet(build_model(new, [1, 3, 10, 10], opset=12))
    x = photo(10)
    assert_close(a.forward(x), b.forward(x), rtol=0, atol=0)
    assert_close(a.forward(x), ort_outputs(build_model(new, [1, 3, 10, 10]), x)["fc_out"])


def test_reshape_constant_node_and_matmul_without_bias(rng):
    desc = [("Conv", "c", [he(rng, (4, 3, 3, 3))], {}),
            ("ReshapeConst", "flat", [np.array([0, -1], np.int64)], {}),
            ("MatMul", "fc", [f32(rng.standard_normal((4 * 6 * 6, 5)))], {})]
    model = build_model(desc, [2, 3, 8, 8], opset=13)
    net = inv.OnnxNet(model)
    assert net.names == ["c", "flat", "fc"]
    compare_all_layers(net, model, np.concatenate([photo(8), photo(8, which="coffee")]))


# ------------------------------------------------------------ full CaffeNet
CAFFE_ONNX_NAMES = {"conv1": "conv1_1", "relu1": "conv1_2", "mpool1": "pool1_1",
                    "norm1": "norm1_1", "conv2": "conv2_1", "relu2": "conv2_2",
                    "mpool2": "pool2_1", "norm2": "norm2_1", "conv3": "conv3_1",
                    "relu3": "conv3_2", "conv4": "conv4_1", "relu4": "conv4_2",
                    "conv5": "conv5_1", "relu5": "conv5_2", "mpool5": "pool5_1", "fc6": "fc6_1",
                    "relu6": "fc6_2", "fc7": "fc7_1", "relu7": "fc7_2", "fc8": "fc8_1"}


def caffenet_onnx_model(seed=0, alexnet=False):
    """A CaffeNet-shaped ONNX graph in the model zoo's style (caffe2 export): unnamed nodes,
    tensors conv1_1, conv1_2, pool1_1, ..., MaxPool pads [0, 0, 1, 1] emulating Caffe's ceil
    mode, Reshape before fc6, Dropout, Gemm with transB, final Softmax; random weights."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = "data_0"

    def add(op, out, params=(), **attrs):
        nonlocal cur
        names = []
        for pname, a in params:
            inits.append(numpy_helper.from_array(a, pname))
            names.append(pname)
        nodes.append(helper.make_node(op, [cur] + names, [out], **attrs))
        cur = out

    def conv(i, cout, cin, k, s, p, g):
        w = rng.standard_normal((cout, cin // g, k, k), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / (cin // g * k * k)))
        b = f32(0.1 * rng.standard_normal(cout) + 0.05)
        add("Conv", f"conv{i}_1", [(f"conv{i}_w_0", w), (f"conv{i}_b_0", b)], kernel_shape=[k, k],
            strides=[s, s], pads=[p] * 4, group=g)
        add("Relu", f"conv{i}_2")

    def pool(i):
        add("MaxPool", f"pool{i}_1", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])

    def lrn(i):
        add("LRN", f"norm{i}_1", size=5, alpha=1e-4, beta=0.75, bias=1.0)

    def fc(i, cout, cin, relu=True):
        w = rng.standard_normal((cout, cin), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / cin))
        b = f32(0.1 * rng.standard_normal(cout))
        add("Gemm", f"fc{i}_1", [(f"fc{i}_w_0", w), (f"fc{i}_b_0", b)], transB=1)
        if relu:
            add("Relu", f"fc{i}_2")
            add("Dropout", f"fc{i}_3")

    conv(1, 96, 3, 11, 4, 0, 1)
    (lrn(1), pool(1)) if alexnet else (pool(1), lrn(1))
    conv(2, 256, 96, 5, 1, 2, 2)
    (lrn(2), pool(2)) if alexnet else (pool(2), lrn(2))
    conv(3, 384, 256, 3, 1, 1, 1)
    conv(4, 384, 384, 3, 1, 1, 2)
    conv(5, 256, 384, 3, 1, 1, 2)
    pool(5)
    inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "OC2_DUMMY_1"))
    nodes.append(helper.make_node("Reshape", [cur, "OC2_DUMMY_1"], ["OC2_DUMMY_0"]))
    cur = "OC2_DUMMY_0"
    fc(6, 4096, 9216)
    fc(7, 4096, 4096)
    fc(8, 1000, 4096, relu=False)
    add("Softmax", "prob_1")
    outs = [n.output[0] for n in nodes]
    inp = helper.make_tensor_value_info("data_0", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph(nodes, "caffenet", [inp],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in outs[::-1]], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    return model


@pytest.fixture(scope="module")
def caffenet_onnx(tmp_path_factory):
    """One CaffeNet-sized ONNX file (61M random weights, ~240 MB) for the whole module."""
    path = tmp_path_factory.mktemp("onnx") / "caffenet.onnx"
    onnx.save(caffenet_onnx_model(), str(path))
    return path


@pytest.fixture(scope="module")
def caffenet_and_ort(caffenet_onnx):
    """(CaffeNet.from_onnx, onnxruntime outputs of every tensor) on two photos at 227."""
    net = inv.CaffeNet.from_onnx(caffenet_onnx)
    from skimage import data

    x = np.concatenate([net.preprocess(data.astronaut()), net.preprocess(data.coffee())])
    return net, x, ort_outputs(caffenet_onnx, x, "data_0")


def test_caffenet_from_onnx_every_layer_matches_onnxruntime(caffenet_and_ort):
    net, x, ref = caffenet_and_ort
    assert net.names == list(inv.representations.caffenet.CAFFENET_LAYERS)
    assert net.trained and net.order == "caffenet"
    h = x
    for name, layer in net:
        h = layer.forward(h)
        assert_close(h, ref[CAFFE_ONNX_NAMES[name]], what=f"CaffeNet layer {name}")
    # activations neither vanish nor explode along the random net
    assert 1e-2 < float(np.abs(h).max()) < 1e4


def test_caffenet_from_onnx_backward_matches_torch(caffenet_and_ort, rng):
    torch = require("torch")
    F = torch.nn.functional
    net, x, _ = caffenet_and_ort
    w = {k: torch.tensor(v.astype(np.float64)) for k, v in net.weights().items()}
    # jitter: flat photo regions give exactly tied pooling windows, whose winner float32 and
    # float64 rounding may pick differently (a kink, not an error)
    x1 = f32(x[:1] + rng.uniform(-2.0, 2.0, x[:1].shape))
    xt = torch.tensor(x1.astype(np.float64), requires_grad=True)
    t = F.relu(F.conv2d(xt, w["conv1.weight"], w["conv1.bias"], stride=4))
    lrn = lambda u: F.local_response_norm(u, 5, 1e-4, 0.75, 1.0)  # noqa: E731
    t = lrn(F.max_pool2d(t, 3, 2, ceil_mode=True))
    t = F.relu(F.conv2d(t, w["conv2.weight"], w["conv2.bias"], padding=2, groups=2))
    norm2 = lrn(F.max_pool2d(t, 3, 2, ceil_mode=True))
    t = F.relu(F.conv2d(norm2, w["conv3.weight"], w["conv3.bias"], padding=1))
    t = F.relu(F.conv2d(t, w["conv4.weight"], w["conv4.bias"], padding=1, groups=2))
    t = F.relu(F.conv2d(t, w["conv5.weight"], w["conv5.bias"], padding=1, groups=2))
    t = F.max_pool2d(t, 3, 2, ceil_mode=True).flatten(1)
    t = F.relu(F.linear(t, w["fc6.weight"], w["fc6.bias"]))
    t = F.relu(F.linear(t, w["fc7.weight"], w["fc7.bias"]))
    fc8 = F.linear(t, w["fc8.weight"], w["fc8.bias"])
    for name, out in (("norm2", norm2), ("fc8", fc8)):
        y = net.forward_to(x1, name)
        assert_close(y, out, what=f"{name} forward")
        dy = f32(rng.standard_normal(y.shape))
        dx = net.backward(dy)
        xt.grad = None
        (out * torch.tensor(dy.astype(np.float64))).sum().backward(retain_graph=True)
        assert_close(dx, xt.grad, what=f"dx through {name}")


def test_onnxnet_on_caffenet_at_224_like_the_zoo(caffenet_onnx):
    """The zoo's files take 224 x 224: OnnxNet runs the graph at that size (MaxPool pads
    [0, 0, 1, 1] in floor mode give Caffe's ceil-mode sizes), softmax included."""
    net = inv.OnnxNet(caffenet_onnx, input_size=224)
    assert net.names[0] == "conv1_1" and net.names[-1] == "prob_1"
    assert net.code_shape("pool5_1") == (256, 6, 6)
    from skimage import data

    x = net.preprocess(data.chelsea())
    assert x.shape == (1, 3, 224, 224)
    ref = ort_outputs(caffenet_onnx, x, "data_0")
    h = x
    for name, layer in net:
        h = layer.forward(h)
        assert_close(h, ref[net.onnx_outputs[name]], what=f"layer {name}")
    assert_close(h.sum(axis=1), np.ones(1), what="softmax sums")
    # receptive fields are computed for any net
    assert net.receptive_field("pool5_1") == (195, 32)
    assert net.receptive_field("fc6_1") == (355, 32) and net.receptive_field("prob_1") == (355, 32)


def test_alexnet_order_from_onnx(rng):
    """The BVLC AlexNet puts LRN before pooling: CaffeNet.from_onnx keeps the paper's names in
    that order. (Built small: the fc weights are the only thing checked beyond the order.)"""
    model = caffenet_onnx_model(seed=1, alexnet=True)
    net = inv.CaffeNet.from_onnx(model)
    assert net.order == "alexnet"
    assert net.names[:4] == ["conv1", "relu1", "norm1", "mpool1"]
    assert net.receptive_field("norm1") == (11, 4) and net.receptive_field("mpool1") == (19, 8)
    from skimage import data

    x = net.preprocess(data.astronaut())
    ref = ort_outputs(model, x, "data_0")
    assert_close(net.forward_to(x, "mpool2"), ref["pool2_1"], what="mpool2")
    assert_close(net.forward(x), ref["fc8_1"], what="fc8")
    # the order is the graph's: one that contradicts it is an error, not a silent other net
    with pytest.raises(ValueError, match="order='caffenet', but an ONNX model is in 'alexnet' "
                                         "order"):
        inv.CaffeNet.from_onnx(model, order="caffenet")


# ------------------------------------------------------------ bad input
def _small(rng, extra=(), opset=12, **kw):
    desc = [("Conv", "c1", [he(rng, (4, 3, 3, 3))], dict(pads=[1, 1, 1, 1]))] + list(extra)
    return build_model(desc, [1, 3, 8, 8], opset=opset, **kw)


def test_unsupported_ops_name_the_op_and_node(rng):
    m = _small(rng, [("AveragePool", "avg", [], dict(kernel_shape=[2, 2]))])
    with pytest.raises(OnnxError, match=r"unsupported op AveragePool in AveragePool node 'avg'"):
        inv.OnnxNet(m)
    m = _small(rng, [("BatchNormalization", "bn",
                      [np.ones(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32),
                       np.ones(4, np.float32)], {})])
    with pytest.raises(OnnxError, match=r"BatchNormalization node 'bn'"):
        inv.OnnxNet(m)


def test_non_sequential_graphs_are_refused(rng):
    w = numpy_helper.from_array(he(rng, (4, 3, 3, 3)), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="ca", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w"], ["b"], name="cb", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["y"], name="sum")]
    g = helper.make_graph(nodes, "branch", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[w])
    with pytest.raises(OnnxError, match="not sequential"):
        inv.OnnxNet(helper.make_model(g))
    # a skip connection: Relu reads the input again
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="ca", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["x"], ["y"], name="r")]
    g = helper.make_graph(nodes, "skip", g.input, g.output, initializer=[w])
    with pytest.raises(OnnxError, match=r"not sequential: 'x' is read by 2 nodes "
                                        r"\(Conv node 'ca', Relu node 'r'\)"):
        inv.OnnxNet(helper.make_model(g))


@pytest.mark.parametrize("extra,match", [
    ([("LRN", "n", [], dict(size=4))], "only odd sizes"),
    ([("Conv", "c2", [he(np.random.default_rng(0), (4, 4, 3, 3))], dict(dilations=[2, 2]))],
     "dilations"),
    ([("Flatten", "f", [], {}), ("Gemm", "g", [np.ones((64, 3), np.float32)], dict(transA=1))],
     "transA"),
    ([("Flatten", "f", [], dict(axis=2))], "axis=1"),
    ([("Reshape", "f", [], dict(shape=[4, -1]))], "flattens each sample"),
    ([("Reshape", "f", [], dict(shape=[1, 100]))], "Flatten to 100 features"),
    ([("Relu", "r", [], {}), ("Add", "a", [np.ones(4, np.float32)], {})], "bias of a MatMul"),
    ([("MaxPool", "p", [], dict(kernel_shape=[2, 2], pads=[2, 2, 2, 2]))], "padding 2 >= kernel"),
])
def test_unsupported_attributes_say_why(rng, extra, match):
    with pytest.raises(OnnxError, match=match):
        net = inv.OnnxNet(_small(rng, extra))
        net.forward(photo(8))


def test_bad_files_and_inputs(rng, tmp_path):
    with pytest.raises(FileNotFoundError):
        inv.OnnxNet(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \xff\xfe")
    with pytest.raises(OnnxError, match="not a readable ONNX model"):
        inv.OnnxNet(bad)
    sym = build_model([("Relu", "r", [], {})], ["N", 3, "H", "W"])
    with pytest.raises(OnnxError, match="input_size"):
        inv.OnnxNet(sym)
    assert inv.OnnxNet(sym, input_size=(5, 7)).input_shape == (3, 5, 7)
    net = inv.OnnxNet(_small(rng))
    with pytest.raises(ValueError, match=r"\(N, 3, 8, 8\)"):
        net.forward(photo(9))
    with pytest.raises(ValueError, match="no layer named 'c9'"):
        net.representation("c9")
    # a weight that does not fit the previous layer
    m = _small(rng, [("Conv", "c2", [he(rng, (4, 5, 3, 3))], {})])
    with pytest.raises(ValueError, match="layer 'c2'.*takes 5 channels"):
        inv.OnnxNet(m)


def test_caffenet_from_onnx_refuses_other_nets(rng, tmp_path):
    with pytest.raises(OnnxError, match="not CaffeNet's or AlexNet's"):
        inv.CaffeNet.from_onnx(build_model(vgg_desc(rng), [1, 3, 33, 33]))


def test_inverting_an_onnx_net_reuses_arrays_bit_identically(rng):
    # through the asymmetric and SAME_UPPER convolutions, whose padding and cropping arrays
    # come from the inversion's workspace too
    net = inv.OnnxNet(build_model(vgg_desc(rng), [1, 3, 33, 33]))
    rep = net.representation("fc1")
    target = rep.forward(photo(33)).copy()

    class Opaque:  # no reuses_outputs: every op allocates
        forward, backward = staticmethod(rep.forward), staticmethod(rep.backward)

    kw = dict(image_shape=(33, 33, 3), iterations=6, restarts=2, learning_rate=1e-3,
              lambda_alpha=1e-8, lambda_tv=1e-3)
    a, b = inv.invert(rep, target, **kw), inv.invert(Opaque(), target, **kw)
    np.testing.assert_array_equal(a.x, b.x)  # (images differ: Opaque adds no mean back)
    np.testing.assert_array_equal(a.objective, b.objective)
    assert a.objective[-1].max() < a.objective[0].min()


# ------------------------------------------------------------ missing tensors
def _drop_initializer(model, name, keep_as_input=False):
    """The model without initializer `name` (optionally still listed as a graph input, as
    old exports list every weight)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    kept = [t for t in m.graph.initializer if t.name != name]
    assert len(kept) == len(m.graph.initializer) - 1
    if keep_as_input:
        m.graph.input.extend([helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                              for t in m.graph.initializer])
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    return m


@pytest.mark.parametrize("old_style", [False, True])
def test_a_missing_weight_is_named_with_its_node(rng, old_style):
    desc = [("Conv", "c1", [he(rng, (4, 3, 3, 3)), f32(rng.standard_normal(4))], {}),
            ("Relu", "r1", [], {}), ("Flatten", "flat", [], {}),
            ("Gemm", "fc7", [f32(rng.standard_normal((5, 4 * 6 * 6))), f32(np.ones(5))],
             dict(transB=1))]
    for named in (True, False):  # unnamed nodes (the zoo's) go by their first output
        model = build_model(desc, [1, 3, 8, 8], name_nodes=named)
        if old_style:  # every weight also a graph input: complete, it loads
            whole = onnx.ModelProto()
            whole.CopyFrom(model)
            whole.graph.input.extend([helper.make_tensor_value_info(t.name, t.data_type,
                                                                    list(t.dims))
                                      for t in model.graph.initializer])
            assert len(inv.OnnxNet(whole)) == 4
        for tensor, what, node in (("fc7_p0", "weight", "Gemm node 'fc7"),
                                   ("c1_p1", "bias", "Conv node 'c1")):
            node += "'" if named else "_out'"
            tail = r" \(a graph input without an initializer\)" if old_style else "$"
            with pytest.raises(OnnxError, match=rf"^{node} \(#\d+\) needs {what} '{tensor}', "
                                                rf"which the file does not contain{tail}"):
                inv.OnnxNet(_drop_initializer(model, tensor, keep_as_input=old_style))


# ------------------------------------------------------------ common real exports
def _model(nodes, inits, dims=(2, 3, 8, 8), opset=13, outputs=None):
    """A model from hand-made nodes: input 'x', every node's first output a graph output."""
    outs = outputs or [n.output[0] for n in nodes if n.op_type != "Constant"]
    g = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                       list(dims))],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                           for o in outs],
                          initializer=[numpy_helper.from_array(a, k) for k, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_identity_pools_load_and_match_onnxruntime(rng):
    """AveragePool 1x1 stride 1 (torchvision's AdaptiveAvgPool2d at its own size) and
    GlobalAveragePool on a 1x1 input are the identity; other average pools are refused."""
    w1, w2 = he(rng, (6, 3, 3, 3)), he(rng, (8, 6, 6, 6))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1"),
             helper.make_node("AveragePool", ["c1"], ["avg"], name="avg", kernel_shape=[1, 1],
                              strides=[1, 1]),
             helper.make_node("Relu", ["avg"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="c2"),  # 6x6 -> 1x1
             helper.make_node("GlobalAveragePool", ["c2"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flat")]
    model = _model(nodes, {"w1": w1, "w2": w2})
    net = inv.OnnxNet(model)
    assert net.names == ["c1", "r1", "c2", "gap", "flat"]  # the 1x1 AveragePool is no layer
    assert net.onnx_outputs["c1"] == "avg"
    x = np.concatenate([photo(8), photo(8, which="coffee")])
    compare_all_layers(net, model, x, input_name="x")
    y = net.forward(x)
    dy = f32(rng.standard_normal(y.shape))
    dx = net.backward(dy)
    # backward: exactly that of the same net without the identities
    plain = inv.OnnxNet(_model([nodes[0], helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
                                nodes[3], helper.make_node("Flatten", ["c2"], ["flat"])],
                               {"w1": w1, "w2": w2}))
    plain.forward(x)
    assert_close(dx, plain.backward(dy), rtol=0, atol=0)
    for bad, match in (
            (helper.make_node("AveragePool", ["c1"], ["avg"], name="avg", kernel_shape=[2, 2]),
             r"unsupported op AveragePool in AveragePool node 'avg' \(#1\): only kernel 1"),
            (helper.make_node("AveragePool", ["c1"], ["avg"], name="avg", kernel_shape=[1, 1],
                              pads=[1, 1, 1, 1]), "without padding"),
            (helper.make_node("GlobalAveragePool", ["c1"], ["avg"], name="avg"),
             (r"GlobalAveragePool node 'avg' \(#1\): only a 1 x 1 input is supported .* got "
              r"shape \(6, 6, 6\)"))):
        with pytest.raises(OnnxError, match=match):
            inv.OnnxNet(_model([nodes[0], bad], {"w1": w1}))


def _with_all_outputs(model):
    """The model with every node's first output as a graph output (for onnxruntime)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend([helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None)
                           for n in m.graph.node
                           if n.op_type not in ("Constant", "Shape", "Gather", "Unsqueeze",
                                                "Concat", "Slice") and n.output[0] not in have])
    return m


def _torch_vgg_view():
    """A small VGG-like torch net flattening with x.view(x.size(0), -1) after torchvision's
    AdaptiveAvgPool2d at its input's size, float64, eval mode."""
    torch = require("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                nn.ReLU(), nn.MaxPool2d(2, 2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                nn.MaxPool2d(3, 2, ceil_mode=True), nn.AdaptiveAvgPool2d((4, 4)))
            self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(16 * 4 * 4, 24), nn.ReLU(),
                                            nn.Dropout(), nn.Linear(24, 10), nn.Softmax(dim=1))

        def forward(self, x):
            x = self.features(x)
            return self.classifier(x.view(x.size(0), -1))

    torch.manual_seed(0)
    return Net().eval()


@pytest.mark.parametrize("opset", [9, 13])
def test_torch_export_with_dynamic_batch_view_loads_and_matches(rng, opset):
    """torch.onnx.export of x.view(x.size(0), -1) with a dynamic batch gives Shape -> Gather ->
    Unsqueeze -> Concat -> Reshape (Unsqueeze's axes an attribute at opset 9, an input at 13):
    the loader treats it as a Flatten; every layer matches onnxruntime at batch 2 and dx
    matches torch autograd of the exported module."""
    import io
    import warnings

    torch = require("torch")
    module = _torch_vgg_view()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter announces its deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, 3, 17, 17), buf, opset_version=opset,
                          input_names=["data"], output_names=["out"],
                          dynamic_axes={"data": {0: "N"}}, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    ops = [n.op_type for n in model.graph.node]
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "AveragePool"} <= set(ops)
    net = inv.OnnxNet(model)
    assert net.code_shape(net.names[7]) == (16, 4, 4)  # the ceil-mode pool, 8 -> 4
    assert [type(layer).__name__ for _, layer in net][8:] == \
        ["Flatten", "Linear", "ReLU", "Linear", "Softmax"]
    x = f32(np.concatenate([photo(17), photo(17, which="coffee")]) +
            rng.uniform(-2, 2, (2, 3, 17, 17)))  # no tied pooling windows
    assert compare_all_layers(net, _with_all_outputs(model), x) == len(net)
    module = module.double()
    for stop in (net.names[8], net.names[-1]):  # the flatten and the softmax
        y = net.forward_to(x, stop)
        dy = f32(rng.standard_normal(y.shape))
        dx = net.backward(dy)
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        ft = module.features(xt)
        out = ft.view(2, -1) if stop == net.names[8] else module(xt)
        assert_close(y, out, what=f"{stop} forward")
        (out * torch.tensor(dy.astype(np.float64))).sum().backward()
        assert_close(dx, xt.grad, what=f"dx through {stop}")


@pytest.mark.parametrize("opset", [9, 13])
def test_flatten_by_a_computed_shape(rng, opset):
    """Shape -> Slice(0:1) -> Concat(-1) -> Reshape (the batch kept, the rest flattened) is a
    Flatten; a computed shape that is not (batch, -1) or (batch, features) is refused."""
    w = he(rng, (4, 3, 3, 3))
    if opset < 10:
        sl = helper.make_node("Slice", ["s"], ["b"], starts=[0], ends=[1])
        extra = {}
    else:
        sl = helper.make_node("Slice", ["s", "st", "en"], ["b"])
        extra = {"st": np.array([0], np.int64), "en": np.array([1], np.int64)}
    flat = [helper.make_node("Conv", ["x", "w"], ["c"], name="c"),
            helper.make_node("Shape", ["c"], ["s"]), sl,
            helper.make_node("Constant", [], ["m1"], value_ints=[-1]),
            helper.make_node("Concat", ["b", "m1"], ["shape"], axis=0),
            helper.make_node("Reshape", ["c", "shape"], ["y"], name="flat")]
    model = _model(flat, {"w": w, **extra}, dims=["N", 3, 8, 8], opset=opset,
                   outputs=["c", "y"])
    net = inv.OnnxNet(model, input_size=8)
    assert net.names == ["c", "flat"] and net.code_shape("flat") == (4 * 6 * 6,)
    x = np.concatenate([photo(8), photo(8, which="coffee"), photo(8, which="chelsea")])
    compare_all_layers(net, model, x, input_name="x")
    # (batch, channels, -1): three dimensions
    three = flat[:3] + [helper.make_node("Gather", ["s", "one"], ["ch"], axis=0),
                        helper.make_node("Constant", [], ["m1"], value_ints=[-1]),
                        helper.make_node("Concat", ["b", "ch", "m1"], ["shape"], axis=0),
                        flat[-1]]
    ones = {"one": np.array([1], np.int64)}
    with pytest.raises(OnnxError, match=r"Reshape node 'flat' \(#\d\): only a Reshape that "
                                        r"flattens each sample.*\[batch, \?, -1\] \(computed"):
        inv.OnnxNet(_model(three, {"w": w, **extra, **ones}, opset=opset))
    # a shape op on the activations themselves
    with pytest.raises(OnnxError, match=r"unsupported op Gather in Gather node 'g' \(#1\): "
                                        "Gather is supported only in the shape computation"):
        inv.OnnxNet(_model([flat[0], helper.make_node("Gather", ["c", "i"], ["y"], name="g")],
                           {"w": w, "i": np.array(0, np.int64)}))


def test_bias_first_add_and_constant_value_attributes(rng):
    """Add(bias, MatMul) is MatMul + Add; Constants given as value_ints (a Reshape's shape),
    value_float and value_floats (unused) load; an unnamed node is never shown as ''."""
    B, C = f32(rng.standard_normal((3 * 8 * 8, 5)) / 8), f32(rng.standard_normal(5))
    nodes = [helper.make_node("Constant", [], ["unused1"], value_float=0.5),
             helper.make_node("Constant", [], ["shape"], value_ints=[0, -1]),
             helper.make_node("Reshape", ["x", "shape"], ["f"], name="flat"),
             helper.make_node("Constant", [], ["unused2"], value_floats=[1.0, 2.0]),
             helper.make_node("MatMul", ["f", "B"], ["m"], name="fc"),
             helper.make_node("Add", ["C", "m"], ["y"], name="bias")]
    model = _model(nodes, {"B": B, "C": C})
    net = inv.OnnxNet(model)
    assert net.names == ["flat", "fc"] and net.onnx_outputs["fc"] == "y"
    x = np.concatenate([photo(8), photo(8, which="coffee")])
    ref = ort_outputs(model, x, "x")["y"]
    assert_close(net.forward(x), ref, what="Add(bias, MatMul)")
    assert_close(net.forward(x), x.reshape(2, -1).astype(np.float64) @ B + C, what="fc")
    # an unnamed Constant with a value this loader cannot take goes by its output, not ''
    bad = [helper.make_node("Constant", [], ["s"], value_string="N")] + nodes[2:]
    with pytest.raises(OnnxError, match=r"^Constant node 's' \(#0\): a Constant with "
                                        r"\['value_string'\] is not supported"):
        inv.OnnxNet(_model(bad, {"B": B, "C": C}))
    # training-mode dropout is random: refused
    drop = [helper.make_node("Conv", ["x", "w"], ["c"], name="c"),
            helper.make_node("Dropout", ["c", "r", "t"], ["y"], name="drop")]
    with pytest.raises(OnnxError, match=r"Dropout node 'drop' \(#1\): training_mode is true"):
        inv.OnnxNet(_model(drop, {"w": he(rng, (4, 3, 3, 3)), "r": np.array(0.5, np.float32),
                                  "t": np.array(True)}))


def test_softmax_backward_survives_an_in_place_change_of_its_output(rng):
    """invert() turns the representation's output into the residual in place: Softmax (which
    needs its output for backward) and Flatten (whose input may be a cached output) must not
    hand out arrays their backward reads. Checked against torch autograd."""
    torch = require("torch")
    desc = [("Conv", "c", [he(rng, (6, 3, 3, 3))], {}),
            ("LRN", "n", [], dict(size=3, alpha=0.5, beta=0.75, bias=1.0)),  # keeps its output
            ("Flatten", "flat", [], {}),
            ("Gemm", "fc", [f32(rng.standard_normal((7, 6 * 7 * 7)) / 10), f32(np.ones(7))],
             dict(transB=1)),
            ("Softmax", "prob", [], {})]
    net = inv.OnnxNet(build_model(desc, [1, 3, 9, 9]))
    x = np.concatenate([photo(9), photo(9, which="coffee")]) / np.float32(20)
    for stop in ("prob", "flat"):
        y = net.forward_to(x, stop)
        y_ref = y.copy()
        dy = f32(rng.standard_normal(y.shape))
        y -= y_ref + 1.0  # what the residual does to the returned array, and more
        dx = net.backward(dy)
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        out = torch_forward(desc, xt, stop)[stop]
        assert_close(y_ref, out, what=f"{stop} forward")
        (out * torch.tensor(dy.astype(np.float64))).sum().backward()
        assert_close(dx, xt.grad, what=f"dx through {stop} after changing its output")


def test_onnxnet_std_and_group_mask_without_groups(rng):
    """A per-channel std (torchvision's normalisation) divides after the mean and deprocess
    multiplies it back; a net without grouped convolutions has no channel groups to mask."""
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    desc = [("Conv", "c", [he(rng, (4, 3, 3, 3))], dict(pads=[1, 1, 1, 1]))]
    net = inv.OnnxNet(build_model(desc, [1, 3, 8, 8]), channel_order="RGB", mean=mean, std=std)
    img = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    x = net.preprocess(img)
    ref = (img.astype(np.float64) - np.array(mean)) / np.array(std)
    assert_close(x[0], ref.transpose(2, 0, 1), rtol=1e-6)
    assert_close(net.deprocess(x)[0], img, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="std must be 3 positive values"):
        inv.OnnxNet(build_model(desc, [1, 3, 8, 8]), std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="no grouped convolution"):
        net.group_mask("c", 0)
    grouped = inv.OnnxNet(build_model(vgg_desc(rng), [1, 3, 33, 33]))  # c2 has group=2
    assert grouped.group_mask("c3", 1).sum() == 6


# ------------------------------------------------- constant side computations (folded)
def _torch_export(module, opset, dynamic=False, **kw):
    import io
    import warnings

    torch = require("torch")
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter announces its deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.zeros(1, 3, 10, 10), buf, opset_version=opset,
                          input_names=["data"], output_names=["out"], dynamo=False,
                          dynamic_axes={"data": {0: "N"}} if dynamic else None, **kw)
    return onnx.load_from_string(buf.getvalue())


def _check_against_ort_and_torch(rng, module, model, batch):
    """Every layer against onnxruntime; dx against torch autograd of the module."""
    torch = require("torch")
    net = inv.OnnxNet(model)
    x = f32(rng.standard_normal((batch, 3, 10, 10)))
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend([helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                           for t in net.onnx_outputs.values() if t not in have])
    assert compare_all_layers(net, m, x) == len(net)
    y = net.forward(x)
    dy = f32(rng.standard_normal(y.shape))
    dx = net.backward(dy)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    out = module.double()(xt)
    assert_close(y, out, what="forward against torch")
    (out * torch.tensor(dy.astype(np.float64))).sum().backward()
    assert_close(dx, xt.grad, what="dx against torch autograd")
    return net


@pytest.mark.parametrize("opset", [7, 8])
@pytest.mark.parametrize("flatten", ["reshape", "view"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_export_at_opsets_7_and_8_flattening_by_view_or_reshape(rng, opset, flatten,
                                                                      dynamic):
    """At opsets 7/8 PyTorch casts a Reshape's shape (Reshape takes int64, the exporter
    writes Constant -> Cast -> Reshape): the constant Cast is folded, not refused."""
    torch = require("torch")
    nn = torch.nn

    class Flat(nn.Module):
        def forward(self, x):
            return x.reshape(-1, 256) if flatten == "reshape" else x.view(x.size(0), -1)

    torch.manual_seed(opset)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), Flat(), nn.Linear(256, 5))
    model = _torch_export(module, opset, dynamic)
    ops = [n.op_type for n in model.graph.node]
    assert "Reshape" in ops
    if not dynamic:
        assert "Cast" in ops  # the exporter's Constant -> Cast -> Reshape
    net = _check_against_ort_and_torch(rng, module, model, 2 if dynamic else 1)
    assert [type(layer).__name__ for _, layer in net] == ["Conv2d", "ReLU", "Flatten", "Linear"]


@pytest.mark.parametrize("opset", [7, 13])
def test_torch_export_without_constant_folding(rng, opset):
    """do_constant_folding=False leaves Transpose(weight) -> MatMul for a bias-free Linear: the
    Transpose of the initializer is folded into MatMul's weight."""
    torch = require("torch")
    nn = torch.nn
    torch.manual_seed(1)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),
                           nn.Linear(256, 6, bias=False), nn.ReLU(), nn.Linear(6, 3))
    model = _torch_export(module, opset, do_constant_folding=False)
    assert "Transpose" in [n.op_type for n in model.graph.node]
    net = _check_against_ort_and_torch(rng, module, model, 1)
    assert [type(layer).__name__ for _, layer in net] == \
        ["Conv2d", "ReLU", "Flatten", "Linear", "ReLU", "Linear"]


def test_unfolded_batchnorm_names_the_unsupported_op(rng):
    """Conv + BatchNorm2d exported without constant folding has Identity(weight) nodes before
    the BatchNormalization: they are folded, and the error names BatchNormalization."""
    torch = require("torch")
    nn = torch.nn
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    model = _torch_export(module, 13, do_constant_folding=False)
    assert "Identity" in [n.op_type for n in model.graph.node]
    with pytest.raises(OnnxError, match=r"^unsupported op BatchNormalization in "
                                        r"BatchNormalization node '/1/BatchNormalization' "
                                        r"\(#\d\); supported: Conv"):
        inv.OnnxNet(model)


def test_constant_side_computations_on_weights_are_folded(rng):
    """Weights and shapes computed from constants (Concat, Gather, Unsqueeze, Squeeze,
    Transpose, Identity, Cast, Reshape, Mul) load as the values they compute; a constant
    computation that cannot be evaluated is an error naming its node."""
    wa, wb = he(rng, (2, 3, 3, 3)), he(rng, (3, 3, 3, 3))
    b = f32(rng.standard_normal(5))
    fc = f32(rng.standard_normal((4, 5 * 36)))  # (out, in): transposed for MatMul
    nodes = [
        helper.make_node("Concat", ["wa", "wb"], ["w"], axis=0),
        helper.make_node("Unsqueeze", ["b", "ax"], ["b2"]),
        helper.make_node("Squeeze", ["b2", "ax"], ["b1"]),
        helper.make_node("Identity", ["b1"], ["bias"]),
        helper.make_node("Conv", ["x", "w", "bias"], ["c"], name="c"),
        helper.make_node("Relu", ["c"], ["r"], name="r"),
        helper.make_node("Constant", [], ["s"], value_floats=[0.0, -1.0]),
        helper.make_node("Cast", ["s"], ["si"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["r", "si"], ["flat"], name="flat"),
        helper.make_node("Gather", ["fcs", "idx"], ["fc"], axis=0),
        helper.make_node("Transpose", ["fc"], ["fct"]),
        helper.make_node("Mul", ["fct", "two"], ["fct2"]),
        helper.make_node("MatMul", ["flat", "fct2"], ["y"], name="fc")]
    inits = {"wa": wa, "wb": wb, "b": b, "ax": np.array([0], np.int64),
             "fcs": np.stack([fc, -fc]), "idx": np.array(0, np.int64),
             "two": np.array(2.0, np.float32)}
    model = _model(nodes, inits, outputs=["c", "r", "flat", "y"])
    net = inv.OnnxNet(model)
    assert net.names == ["c", "r", "flat", "fc"]
    x = np.concatenate([photo(8), photo(8, which="coffee")])
    assert compare_all_layers(net, model, x, input_name="x") == 4
    assert_close(dict(iter(net))["c"].weight, np.concatenate([wa, wb]), rtol=0, atol=0)
    bad = [helper.make_node("Squeeze", ["wa", "ax"], ["w"], name="sq"),
           helper.make_node("Conv", ["x", "w"], ["c"], name="c")]
    with pytest.raises(OnnxError, match=r"Squeeze node 'sq' \(#0\) computes a constant from "
                                        r"\['wa', 'ax'\] that cannot be evaluated"):
        inv.OnnxNet(_model(bad, {"wa": wa, "ax": np.array([0], np.int64)}, outputs=["c"]))

"""invert_native.CaffeNet: architecture, receptive fields, images, weights, representations,
torch autograd agreement and inversion of a random-weight CaffeNet on a natural photo."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, f32, require

import invert_native as inv
from invert_native.invert import CNN_SCHEDULE
from invert_native.representations import ImageTransform
from invert_native.representations.caffenet import (CAFFENET_LAYERS, NPZ_SHAPES,
                                                    PAPER_RECEPTIVE_FIELDS)

# The paper's table (../shared/PAPER.md section 4): receptive field sizes per layer.
TABLE_RF = [11, 11, 19, 19, 51, 51, 67, 67, 99, 99, 131, 131, 163, 163, 195, 355, 355, 355, 355,
            355]
CODE_SHAPES = {"conv1": (96, 55, 55), "mpool1": (96, 27, 27), "norm1": (96, 27, 27),
               "conv2": (256, 27, 27), "mpool2": (256, 13, 13), "conv3": (384, 13, 13),
               "conv4": (384, 13, 13), "conv5": (256, 13, 13), "mpool5": (256, 6, 6),
               "fc6": (4096,), "relu7": (4096,), "fc8": (1000,)}


@pytest.fixture(scope="module")
def net():
    return inv.CaffeNet.random(seed=0)


def astronaut():
    from skimage import data

    return data.astronaut()


# ---------------------------------------------------------------- structure
def test_layers_are_the_papers_twenty(net):
    assert net.names == list(CAFFENET_LAYERS) and len(net) == 20
    groups = {n: layer.groups for n, layer in net if isinstance(layer, inv.nn.Conv2d)}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}
    assert isinstance(net["mpool1"], inv.nn.MaxPool2d) and isinstance(net["norm1"], inv.nn.LRN)
    assert net.index("mpool1") < net.index("norm1")  # CaffeNet: pool then norm
    lrn = net["norm2"]
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 1.0)
    for name, shape in CODE_SHAPES.items():
        assert net.code_shape(name) == shape, name


def test_receptive_fields_equal_the_papers_table(net):
    rf = net.receptive_fields()
    assert [rf[n][0] for n in CAFFENET_LAYERS] == TABLE_RF
    assert {n: rf[n][0] for n in CAFFENET_LAYERS} == PAPER_RECEPTIVE_FIELDS
    assert [net.receptive_field(n)[1] for n in ("conv1", "mpool1", "conv2", "mpool2", "conv5",
                                                "mpool5")] == [4, 8, 8, 16, 16, 32]
    assert net.representation("relu4").receptive_field == (131, 16)


def test_representation_carries_the_papers_settings(net):
    lv = [0.5] * 6 + [5.0] * 6 + [50.0] * 8
    for name, lam in zip(CAFFENET_LAYERS, lv):
        rep = net.representation(name)
        assert rep.paper_lambdas == (2.16e8, lam), name
    rep = net.representation("relu7")
    assert rep.paper_schedule == CNN_SCHEDULE
    assert rep.image_shape == (227, 227, 3) and rep.code_shape == (4096,)


def test_random_weights_are_labelled_untrained_and_reproducible(net):
    assert net.trained is False
    assert "UNTRAINED" in repr(net) and "UNTRAINED" in repr(net.representation("fc8"))
    w = net.weights()
    assert set(w) == set(NPZ_SHAPES)
    std = float(w["conv2.weight"].std())
    assert abs(std / np.sqrt(2.0 / (48 * 25)) - 1) < 0.01  # He: N(0, 2 / fan_in)
    assert not w["fc6.bias"].any()
    again = inv.CaffeNet.random(seed=0, num_classes=10)
    assert np.array_equal(again.weights()["conv1.weight"], w["conv1.weight"])
    assert again.code_shape("fc8") == (10,)
    assert not np.array_equal(inv.CaffeNet.random(seed=1)["conv1"].weight, w["conv1.weight"])


# ---------------------------------------------------------------- images
def test_preprocess_is_bgr_minus_the_caffe_mean(net):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (227, 227, 3), dtype=np.uint8)
    x = net.preprocess(img)
    assert x.shape == (1, 3, 227, 227) and x.dtype == np.float32 and x.flags.c_contiguous
    ref = img[:, :, ::-1].transpose(2, 0, 1).astype(np.float64) - \
        np.array([104.0, 117.0, 123.0]).reshape(3, 1, 1)
    assert_close(x[0], ref, rtol=0, atol=0)
    assert_close(net.preprocess(img.astype(np.float64)), x, rtol=0, atol=0)
    # exact inverse without the resize
    assert_close(net.deprocess(x)[0], img, rtol=0, atol=1e-5)
    assert_close(net.deprocess(x[0]), img, rtol=0, atol=1e-5)
    assert net.deprocess(np.concatenate([x, x])).shape == (2, 227, 227, 3)
    far = x * 3
    assert net.deprocess(far).max() > 255  # not clipped unless asked
    assert 0 <= net.deprocess(far, clip=True).min() and net.deprocess(far, clip=True).max() <= 255


def test_preprocess_resizes_with_pillow(net):
    from PIL import Image

    img = astronaut()  # 512 x 512
    x = net.preprocess(img)
    ref = np.asarray(Image.fromarray(img).resize((227, 227), Image.Resampling.BILINEAR),
                     np.float64)
    # Pillow's uint8 resize uses fixed-point weights and rounds; ours resamples float channels
    back = net.deprocess(x)[0]
    assert_close(back, ref, rtol=0, atol=1.0 + 1e-3)
    assert np.abs(back - ref).mean() < 0.3
    bicubic = ImageTransform(resample="bicubic").preprocess(img)
    assert 0 < np.abs(bicubic - x).max() < 60

def test_preprocess_frames_by_cropping_or_stretching(net):
    """fit="crop" (the default, as the command line does) keeps the aspect ratio and
    centre-crops; fit="stretch" resizes to 227 x 227. fit_image is what preprocess feeds on."""
    from PIL import Image

    img = astronaut()[:300]  # 300 x 512
    f = Image.Resampling.BILINEAR
    chans = [Image.fromarray(np.ascontiguousarray(img[:, :, c]).astype(np.float32))
             for c in range(3)]
    w = round(512 * 227 / 300)  # 387: the short side becomes 227
    crop = np.stack([np.asarray(ch.resize((w, 227), f)) for ch in chans], axis=2)
    crop = crop[:, (w - 227) // 2:(w - 227) // 2 + 227]
    stretch = np.stack([np.asarray(ch.resize((227, 227), f)) for ch in chans], axis=2)
    assert net.transform.fit == "crop"
    assert_close(net.fit_image(img), crop, rtol=0, atol=1e-3)
    assert_close(net.deprocess(net.preprocess(img))[0], crop, rtol=0, atol=1e-3)
    assert_close(net.fit_image(img, fit="stretch"), stretch, rtol=0, atol=1e-3)
    assert_close(net.deprocess(net.preprocess(img, fit="stretch"))[0], stretch, rtol=0,
                 atol=1e-3)
    tall = np.ascontiguousarray(img.transpose(1, 0, 2))  # 512 x 300: crops rows instead
    assert_close(net.fit_image(tall), crop.transpose(1, 0, 2), rtol=0, atol=1e-3)
    stretchy = inv.CaffeNet(net.weights(), fit="stretch")
    assert_close(stretchy.preprocess(img), net.preprocess(img, fit="stretch"), rtol=0, atol=0)
    with pytest.raises(ValueError, match="fit must be 'crop'"):
        net.preprocess(img, fit="pad")
    # a filter's overshoot is clipped to [0, 255]
    edges = np.zeros((100, 300, 3), np.uint8)
    edges[:, ::2] = 255
    lanczos = ImageTransform(resample="lanczos").fit_image(edges)
    assert lanczos.min() >= 0 and lanczos.max() <= 255


def test_preprocess_warns_on_01_images_and_composites_alpha(net):
    img = astronaut()[:227, :227]
    with pytest.warns(UserWarning, match=r"look like \[0, 1\].*expects \[0, 255\]"):
        net.preprocess(img / 255.0)
    # RGBA: composited over white, as the command line does (alpha in [0, 255])
    alpha = np.linspace(0, 255, 227, dtype=np.float32)[None, :].repeat(227, axis=0)
    rgba = np.dstack([img, alpha.astype(np.uint8)])
    a = rgba[:, :, 3:].astype(np.float64) / 255
    ref = img * a + 255 * (1 - a)
    assert_close(net.fit_image(rgba), ref, rtol=0, atol=1e-3)
    opaque = np.dstack([img, np.full((227, 227), 255, np.uint8)])
    assert_close(net.preprocess(opaque), net.preprocess(img), rtol=0, atol=0)
    grey_alpha = np.dstack([img[:, :, 0], np.full((227, 227), 255, np.uint8)])
    assert_close(net.preprocess(grey_alpha), net.preprocess(img[:, :, 0]), rtol=0, atol=0)


def test_preprocess_options_and_grey_images(net):
    grey = astronaut().mean(axis=2)
    x = net.preprocess(grey)
    y = net.preprocess(np.repeat(grey[:, :, None], 3, axis=2))
    assert_close(x, y, rtol=0, atol=0)
    rgb = ImageTransform(channel_order="RGB")
    img = np.full((227, 227, 3), [10, 20, 30], np.uint8)
    assert_close(rgb.preprocess(img)[0, :, 0, 0], [10 - 123, 20 - 117, 30 - 104], rtol=0, atol=0)
    assert_close(rgb.deprocess(rgb.preprocess(img))[0], img, rtol=0, atol=0)
    mean_img = np.arange(3 * 256 * 256, dtype=np.float32).reshape(3, 256, 256) / 1000
    full = ImageTransform(mean=mean_img)
    assert_close(full.preprocess(np.zeros((227, 227, 3)))[0], -mean_img[:, 14:241, 14:241],
                 rtol=0, atol=0)
    assert_close(full.deprocess(full.preprocess(img))[0], img, rtol=0, atol=1e-4)
    custom = ImageTransform(mean=[1, 2, 3])
    assert_close(custom.preprocess(np.zeros((227, 227, 3)))[0, :, 5, 5], [-1, -2, -3], rtol=0,
                 atol=0)


@pytest.mark.parametrize("image,error,match", [
    (np.zeros((227, 227, 5)), ValueError, "H x W x 3"),
    (np.zeros((227,)), ValueError, "H x W x 3"),
    (np.zeros((0, 5, 3)), ValueError, "empty"),
    (np.full((227, 227, 3), np.nan), ValueError, "NaN"),
    (np.array([["a"]]), TypeError, "real numbers"),
])
def test_bad_images(net, image, error, match):
    with pytest.raises(error, match=match):
        net.preprocess(image)


def test_bad_image_settings(net):
    with pytest.raises(ValueError, match="channel_order"):
        ImageTransform(channel_order="BRG")
    with pytest.raises(ValueError, match="resample"):
        ImageTransform(resample="area")
    with pytest.raises(ValueError, match="mean must be 3 values or an image"):
        ImageTransform(mean=np.zeros((3, 200, 200)))
    with pytest.raises(ValueError, match="channel_order"):  # the net passes them on
        inv.CaffeNet(net.weights(), channel_order="BRG")
    with pytest.raises(ValueError, match=r"deprocess takes network inputs \(N, 3, 227, 227\)"):
        net.deprocess(np.zeros((1, 3, 224, 224), np.float32))


# ---------------------------------------------------------------- weights
def test_npz_round_trip_and_bad_weights(net, tmp_path):
    path = tmp_path / "caffenet.npz"
    net.save_npz(path)
    loaded = inv.CaffeNet.from_npz(path)
    # the file records that the weights are untrained (random): they load so, not as trained
    assert loaded.trained is False and "UNTRAINED" in repr(loaded) and str(path) in repr(loaded)
    x = net.preprocess(astronaut())
    assert_close(loaded.forward_to(x, "fc8"), net.forward_to(x, "fc8"), rtol=0, atol=0)

    w = net.weights()
    del w["conv3.bias"]
    with pytest.raises(ValueError, match="missing weight tensors: conv3.bias"):
        inv.CaffeNet(w)
    w = net.weights()
    w["conv2.weight"] = np.zeros((256, 96, 5, 5), np.float32)  # groups forgotten
    with pytest.raises(ValueError, match=r"conv2.weight has shape \(256, 96, 5, 5\), expected "
                                         r"\(256, 48, 5, 5\)"):
        inv.CaffeNet(w)
    w = net.weights()
    w["conv6.weight"] = w["conv5.weight"]
    with pytest.raises(ValueError, match="unexpected weight tensors: conv6.weight"):
        inv.CaffeNet(w)
    w = net.weights()
    w["fc7.weight"] = w["fc7.weight"].copy()
    w["fc7.weight"][0, 0] = np.nan
    with pytest.raises(ValueError, match="fc7.weight contains NaN"):
        inv.CaffeNet(w)
    w = net.weights()
    w["conv1.bias"] = w["conv1.bias"].astype(str)
    with pytest.raises(TypeError, match="conv1.bias must hold numbers"):
        inv.CaffeNet(w)
    with pytest.raises(TypeError, match="mapping"):
        inv.CaffeNet([1, 2, 3])
    with pytest.raises(ValueError, match="order"):
        inv.CaffeNet(net.weights(), order="vgg")


def test_npz_records_whether_the_weights_are_trained(net, tmp_path):
    """save_npz writes __trained__; from_npz honours it (absent: trained, as files written by
    hand or before the key existed), and trained= overrides it."""
    key = inv.representations.caffenet.NPZ_TRAINED_KEY
    path = tmp_path / "random.npz"
    net.save_npz(path)
    with np.load(path) as f:
        assert f[key].shape == () and bool(f[key]) is False
    assert inv.CaffeNet.from_npz(path).trained is False
    assert inv.CaffeNet.from_npz(path, trained=True).trained is True
    trained = inv.CaffeNet(net.weights(), trained=True)
    trained.save_npz(path)
    with np.load(path) as f:
        assert bool(f[key]) is True
    back = inv.CaffeNet.from_npz(path)
    assert back.trained is True and "UNTRAINED" not in repr(back)
    bare = tmp_path / "bare.npz"
    np.savez(bare, **net.weights())  # no key: trained, as documented
    assert inv.CaffeNet.from_npz(bare).trained is True
    np.savez(bare, **net.weights(), __trained__=np.array([True, False]))
    with pytest.raises(ValueError, match="__trained__ must be a single boolean"):
        inv.CaffeNet.from_npz(bare)


def test_npz_fc8_weight_and_bias_that_disagree_name_both(tmp_path):
    """fc8 may have any number of classes: a weight cut to 10 rows beside a 1000-entry bias
    names the weight and the bias, not only the bias."""
    path = tmp_path / "wrongshape.npz"
    np.savez(path, **{"fc8.weight": np.zeros((10, 4096), np.float32),
                      "fc8.bias": np.zeros(1000, np.float32)})
    with pytest.raises(ValueError, match=r"fc8.weight has 10 rows \(classes\) but fc8.bias has "
                                         r"1000 entries"):
        inv.CaffeNet.from_npz(path)


def test_npz_records_the_layer_order(net, tmp_path):
    """An AlexNet-order net comes back in AlexNet order (not silently as CaffeNet); a file
    without the order key is read in CaffeNet order; a contradicting order is an error."""
    alex = inv.CaffeNet.random(seed=3, order="alexnet")
    path = tmp_path / "alexnet.npz"
    alex.save_npz(path)
    with np.load(path) as f:
        assert str(f[inv.representations.caffenet.NPZ_ORDER_KEY]) == "alexnet"
    back = inv.CaffeNet.from_npz(path)
    assert back.order == "alexnet" and back.names[2:4] == ["norm1", "mpool1"]
    x = net.preprocess(astronaut())
    assert_close(back.forward(x), alex.forward(x), rtol=0, atol=0)
    assert inv.CaffeNet.from_npz(path, order="alexnet").order == "alexnet"
    with pytest.raises(ValueError, match="order='caffenet', but the weights record 'alexnet'"):
        inv.CaffeNet.from_npz(path, order="caffenet")
    bare = tmp_path / "bare.npz"
    np.savez(bare, **alex.weights())  # no order key: CaffeNet's order, as documented
    assert inv.CaffeNet.from_npz(bare).order == "caffenet"
    assert inv.CaffeNet.from_npz(bare, order="alexnet").order == "alexnet"
    np.savez(bare, **alex.weights(), __order__=np.array("vgg"))
    with pytest.raises(ValueError, match="order must be 'caffenet'"):
        inv.CaffeNet.from_npz(bare)


def test_from_npz_refuses_other_files_clearly(net, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"junk bytes, not a zip")
    with pytest.raises(ValueError, match="junk.npz is not an .npz archive"):
        inv.CaffeNet.from_npz(junk)
    npy = tmp_path / "conv1.npy"
    np.save(npy, net.weights()["conv1.weight"])
    with pytest.raises(ValueError, match="conv1.npy is not an .npz archive"):
        inv.CaffeNet.from_npz(npy)
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"\x08\x07\x12\x04onnx")
    with pytest.raises(ValueError, match="not an .npz archive \\(an ONNX model: use "
                                         "CaffeNet.from_onnx\\)"):
        inv.CaffeNet.from_npz(fake)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, weights=np.array([net.weights()], dtype=object))
    with pytest.raises(ValueError, match="weights cannot be read without pickle"):
        inv.CaffeNet.from_npz(pickled)
    with pytest.raises(FileNotFoundError):
        inv.CaffeNet.from_npz(tmp_path / "missing.npz")
    nan = tmp_path / "nan.npz"
    w = net.weights()
    w["conv1.weight"][0, 0, 0, 0] = np.nan
    np.savez(nan, **w)
    with pytest.raises(ValueError, match="conv1.weight contains NaN"):
        inv.CaffeNet.from_npz(nan)


# ---------------------------------------------------------------- running
def test_bad_inputs_and_names(net):
    with pytest.raises(ValueError, match=r"\(N, 3, 227, 227\).*preprocess"):
        net.forward(np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3, 227, 227\)"):
        net.forward_to(np.zeros((3, 227, 227), np.float32), "conv1")
    with pytest.raises(TypeError, match="numpy or cupy"):
        net.forward([[1.0]])
    with pytest.raises(ValueError, match="no layer named 'pool1'; the layers are: conv1"):
        net.representation("pool1")
    with pytest.raises(ValueError, match="no layer named"):
        net.receptive_field("fc9")
    with pytest.raises(ValueError, match="no spatial grid"):
        net.window_mask("fc6")
    with pytest.raises(ValueError, match="does not fit"):
        net.window_mask("mpool5", 7)
    with pytest.raises(ValueError, match="group must be in"):
        net.group_mask("conv5", 2)
    with pytest.raises(ValueError, match="no channel groups"):
        net.group_mask("relu7", 0)


def test_masks_of_figures_9_and_10(net):
    m = net.window_mask("conv5")
    assert m.shape == (1, 13, 13) and m.sum() == 25 and m[0, 4:9, 4:9].all()
    assert net.window_mask("mpool5")[0, :5, :5].all()  # 6 x 6 grid: up-left of centre
    g = net.representation("conv4").group_mask(1)
    assert g.shape == (384, 1, 1) and g[192:].all() and not g[:192].any()


def torch_caffenet(net, x, stop):
    """The same CaffeNet in float64 torch up to `stop`: (outputs by name, input tensor)."""
    torch = require("torch")
    F = torch.nn.functional
    w = {k: torch.tensor(v.astype(np.float64)) for k, v in net.weights().items()}
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    ops = {"conv1": lambda t: F.conv2d(t, w["conv1.weight"], w["conv1.bias"], stride=4),
           "conv2": lambda t: F.conv2d(t, w["conv2.weight"], w["conv2.bias"], padding=2, groups=2),
           "conv3": lambda t: F.conv2d(t, w["conv3.weight"], w["conv3.bias"], padding=1),
           "conv4": lambda t: F.conv2d(t, w["conv4.weight"], w["conv4.bias"], padding=1, groups=2),
           "conv5": lambda t: F.conv2d(t, w["conv5.weight"], w["conv5.bias"], padding=1, groups=2)}
    outs, t = {}, xt
    for name in CAFFENET_LAYERS:
        kind = name.rstrip("0123456789")
        if kind == "conv":
            t = ops[name](t)
        elif kind == "relu":
            t = F.relu(t)
        elif kind == "mpool":
            t = F.max_pool2d(t, 3, 2, ceil_mode=True)
        elif kind == "norm":
            t = F.local_response_norm(t, 5, 1e-4, 0.75, 1.0)
        else:
            t = F.linear(t.flatten(1), w[f"{name}.weight"], w[f"{name}.bias"])
        outs[name] = t
        if name == stop:
            break
    return outs, xt


def test_forward_and_backward_match_torch(net, rng):
    torch = require("torch")
    # jitter: flat photo regions tie pooling windows exactly (a kink float32 and float64 may
    # resolve differently)
    x = f32(net.preprocess(astronaut()) + rng.uniform(-2.0, 2.0, (1, 3, 227, 227)))
    outs, _ = torch_caffenet(net, x, "fc8")
    h = x
    for name, layer in net:
        h = layer.forward(h)
        assert_close(h, outs[name], what=f"{name} forward")
    for stop in ("conv1", "relu7"):
        y = net.forward_to(x, stop)
        dy = f32(rng.standard_normal(y.shape))
        dx = net.backward(dy)
        outs, xt = torch_caffenet(net, x, stop)
        (outs[stop] * torch.tensor(dy.astype(np.float64))).sum().backward()
        assert_close(dx, xt.grad, what=f"dx through {stop}")


# ---------------------------------------------------------------- inversion
# CI-length runs: the paper's settings with the CNN schedule shrunk proportionally. Measured
# ||Phi(x*) - Phi0|| / ||Phi0|| at these lengths: conv1 0.46, norm2 0.38, relu4 0.34, mpool5
# 0.31, relu7 0.33, fc8 0.31 (bounds: 1.2 times those); the full 400 iterations reach 0.15,
# 0.16, 0.14, 0.19, 0.12 and 0.09 (CaffeNet.random(0), random start seed 0, astronaut; both
# photos in docs/caffenet_random.md, measured by docs/caffenet_random.py).
INVERT_CASES = [("conv1", 60, 0.55), ("norm2", 12, 0.46), ("relu4", 10, 0.41),
                ("mpool5", 10, 0.37), ("relu7", 8, 0.40), ("fc8", 8, 0.37)]


@pytest.mark.parametrize("layer,iterations,bound", INVERT_CASES)
def test_inverting_random_caffenet_reduces_the_feature_error(net, layer, iterations, bound):
    rep = net.representation(layer)
    target = rep.code(astronaut())
    r = inv.invert(rep, target, image_shape=rep.image_shape, iterations=iterations, seed=0)
    assert r.options["lambda_alpha"] == 2.16e8 and r.options["lambda_tv"] == rep.paper_lambdas[1]
    assert r.images.shape == (1, 227, 227, 3)
    assert r.objective[-1, 0] < 0.5 * r.objective[0, 0]
    assert r.feature_error[0] < bound
    # images come back as RGB pixels around the photo's range
    assert 0 < r.images.mean() < 255


def test_neuron_window_and_group_masks_are_one_line_calls(net):
    rep = net.representation("norm2")
    target = rep.code(astronaut())
    win = inv.invert(rep, target, image_shape=rep.image_shape, iterations=8,
                     mask=rep.window_mask())
    grp = inv.invert(rep, target, image_shape=rep.image_shape, iterations=8,
                     mask=rep.group_mask(0))
    for r in (win, grp):
        assert r.options["masked"] and r.data[-1, 0] < 0.8 * r.data[0, 0]


def test_constructor_takes_a_saved_npz_as_a_dict(tmp_path):
    from invert_native import CaffeNet

    path = tmp_path / "r.npz"
    CaffeNet.random(1).save_npz(path)
    with np.load(path) as f:
        net = CaffeNet(dict(f))
    assert net.trained is False

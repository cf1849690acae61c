"""The inversion engine: objective gradient, descent, restarts, seeds, masks, divergence, metrics."""

import hashlib

import numpy as np
import pytest
from conftest import assert_close

import invert_native as inv
from invert_native import nn

rng0 = np.random.default_rng(0)


def he(rng, shape):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)


def small_cnn(seed=0, smooth=False):
    rng = np.random.default_rng(seed)
    layers = [("conv1", nn.Conv2d(he(rng, (12, 3, 5, 5)), rng.standard_normal(12).astype(np.float32),
                                  stride=2, padding=2))]
    if not smooth:
        layers += [("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(3, 2))]
    layers += [("norm1", nn.LRN(5, 1e-4, 0.75, 1.0)),
               ("conv2", nn.Conv2d(he(rng, (8, 6, 3, 3)), padding=1, groups=2))]
    if not smooth:
        layers += [("relu2", nn.ReLU())]
    return nn.Sequential(layers)


class Upto:
    """A representation: the net's output at one layer."""

    def __init__(self, net, layer):
        self.net, self.layer = net, layer

    def forward(self, x):
        return self.net.forward_to(x, self.layer)

    def backward(self, dy):
        return self.net.backward(dy)


def photo(size=32):
    from PIL import Image
    from skimage import data

    img = np.asarray(Image.fromarray(data.astronaut()).resize((size, size)), np.float32)
    return img - img.mean(axis=(0, 1))


def target_of(rep, img):
    return rep.forward(np.ascontiguousarray(img.transpose(2, 0, 1)[None]))


def test_objective_gradient_matches_finite_differences():
    net = small_cnn(smooth=True)
    rep = Upto(net, "conv2")
    img = photo(16)
    t = target_of(rep, img)
    sigma = inv.paper_sigma(img.shape)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 3, 16, 16)) * 0.02).astype(np.float32)
    kw = dict(sigma=sigma, alpha=6.0, beta=1.5, lambda_alpha=3e6, lambda_tv=0.5)
    (E, data, ra, rt), g = inv.objective(rep, t, x, **kw)
    assert_close(E, data + ra + rt, what="E = sum of terms")
    # central differences in float64 of the float32 objective, on random directions
    for k in range(4):
        d = rng.standard_normal(x.shape).astype(np.float32)
        d /= np.linalg.norm(d)
        eps = 1e-3
        Ep = inv.objective(rep, t, x + eps * d, **kw)[0][0].sum()
        Em = inv.objective(rep, t, x - eps * d, **kw)[0][0].sum()
        fd = (Ep - Em) / (2 * eps)
        an = float((g.astype(np.float64) * d).sum())
        assert abs(fd - an) <= 1e-2 * abs(an) + 1e-4, (k, fd, an)


@pytest.fixture(scope="module")
def inverted():
    net = small_cnn()
    rep = Upto(net, "norm1")
    img = photo(32)
    t = target_of(rep, img)
    res = inv.invert(rep, t, image_shape=img.shape, lambda_tv=0.5, restarts=3, seed=5,
                     iterations=150)
    return rep, img, t, res


def test_restarts_reach_low_error_with_different_images(inverted):
    rep, img, t, res = inverted
    assert res.images.shape == (3, 32, 32, 3)
    assert res.objective.shape == (150, 3)
    assert np.isfinite(res.objective).all()
    # descent: the final objective is far below the start
    assert (res.objective[-1] < 0.2 * res.objective[0]).all()
    assert (res.feature_error < 0.3).all(), res.feature_error  # measured 0.175-0.197
    # restarts differ from each other
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(res.images[i] - res.images[j]).mean() > 1.0
    # the reported error is that of the returned images
    x = np.ascontiguousarray(res.images.transpose(0, 3, 1, 2))
    err = inv.reconstruction_error(rep.forward(x), np.repeat(t, 3, axis=0))
    assert_close(err, res.feature_error, rtol=1e-3)


def test_same_seed_same_result_and_batchless_target(inverted):
    rep, img, t, res = inverted
    again = inv.invert(rep, t[0], image_shape=img.shape, lambda_tv=0.5, restarts=3, seed=5,
                       iterations=150)
    np.testing.assert_array_equal(again.images, res.images)
    other = inv.invert(rep, t, image_shape=img.shape, lambda_tv=0.5, restarts=3, seed=6,
                       iterations=10)
    assert not np.array_equal(other.images, res.images[:, :, :, :])


def test_mask_restricts_the_loss():
    net = small_cnn()
    rep = Upto(net, "conv2")
    img = photo(32)
    t = target_of(rep, img)
    seen = {}

    class Spy(Upto):
        def backward(self, dy):
            seen["dy"] = dy.copy()
            return super().backward(dy)

    spy = Spy(net, "conv2")
    mask = np.zeros(t.shape[1:], np.float32)
    mask[:, 3:5, 3:5] = 1.0  # a 2x2 window of neurons, all channels
    x = (np.random.default_rng(0).standard_normal((1, 3, 32, 32)) * 0.02).astype(np.float32)
    sigma = inv.paper_sigma(img.shape)
    (E, data, _, _), g = inv.objective(spy, t, x, sigma=sigma, mask=mask)
    dy = seen["dy"]
    assert np.all(dy[0][mask == 0] == 0.0)
    assert np.any(dy[0][mask == 1] != 0.0)
    # the data term only sees the window, normalised by the window's target norm
    phi = rep.forward(sigma * x)
    ref = ((phi - t)[0][mask == 1].astype(np.float64) ** 2).sum() / (t[0][mask == 1].astype(np.float64) ** 2).sum()
    assert_close(data, [ref], rtol=1e-5)
    # channel subsets broadcast: mask of shape (C, 1, 1)
    cmask = np.zeros((t.shape[1], 1, 1), np.float32)
    cmask[:4] = 1
    inv.objective(spy, t, x, sigma=sigma, mask=cmask)
    assert np.all(seen["dy"][0, 4:] == 0.0) and np.any(seen["dy"][0, :4] != 0.0)


def test_divergence_is_reported_with_the_iteration():
    net = small_cnn()
    rep = Upto(net, "relu1")
    img = photo(16)
    t = target_of(rep, img)
    with pytest.raises(inv.InversionDiverged, match=r"iteration \d+.*smaller learning_rate"):
        inv.invert(rep, t, image_shape=img.shape, lambda_tv=0.5, learning_rate=1e6,
                   iterations=40)
    # at the paper's rate a too large lambda_alpha is named (its term dominates before)
    with pytest.raises(inv.InversionDiverged, match=r"iteration 3 .*or lambda_alpha \(=1e\+08"):
        inv.invert(rep, t, image_shape=img.shape, lambda_tv=0.5, lambda_alpha=1e8, iterations=40)


def test_bad_arguments():
    net = small_cnn()
    rep = Upto(net, "relu1")
    img = photo(16)
    t = target_of(rep, img)
    with pytest.raises(ValueError, match="target has shape"):
        inv.invert(rep, t[:, :3], image_shape=img.shape, iterations=2)
    with pytest.raises(ValueError, match="NaN"):
        inv.invert(rep, np.full_like(t, np.nan), image_shape=img.shape, iterations=2)
    with pytest.raises(ValueError, match="all zeros"):
        inv.invert(rep, np.zeros_like(t), image_shape=img.shape, iterations=2)
    with pytest.raises(ValueError, match="restarts"):
        inv.invert(rep, t, image_shape=img.shape, restarts=0)
    with pytest.raises(ValueError, match="mask"):
        inv.invert(rep, t, image_shape=img.shape, mask=np.ones((3, 3, 3)), iterations=2)
    with pytest.raises(TypeError, match="learning_rate"):
        inv.invert(rep, t, image_shape=img.shape, learning_rate="fast")
    bad = [
        (dict(iterations=0), ValueError, "iterations"),
        (dict(iterations=-3, learning_rate=0.01), ValueError, "iterations"),
        (dict(iterations=2.5), ValueError, "iterations"),
        (dict(learning_rate=[]), ValueError, "learning_rate"),
        (dict(learning_rate=-0.01, iterations=3), ValueError, "learning_rate"),
        (dict(learning_rate=float("nan"), iterations=3), ValueError, "learning_rate"),
        (dict(learning_rate=[(0.01, 5), (float("inf"), 5)]), ValueError, r"learning_rate\[1\]"),
        (dict(learning_rate=[(0.01, -2)]), ValueError, r"learning_rate\[0\] iterations"),
        (dict(learning_rate=[(0.01, 2.5)]), ValueError, r"learning_rate\[0\] iterations"),
        (dict(learning_rate=[(0.01, 0)]), ValueError, r"learning_rate\[0\] iterations"),
        (dict(learning_rate=[(0.01,)]), TypeError, "learning_rate"),
        (dict(sigma=0), ValueError, "sigma"),
        (dict(sigma=-1.0), ValueError, "sigma"),
        (dict(sigma=float("inf")), ValueError, "sigma"),
        (dict(lambda_alpha=-1.0), ValueError, "lambda_alpha"),
        (dict(lambda_tv=float("nan")), ValueError, "lambda_tv"),
        (dict(lambda_tv="big"), TypeError, "lambda_tv"),
        (dict(restarts=2.7), ValueError, "restarts"),
        (dict(restarts="2"), TypeError, "restarts"),
        (dict(momentum=1.0), ValueError, "momentum"),
        (dict(beta=0.0), ValueError, "beta"),
        (dict(alpha=0.5), ValueError, "alpha"),
        (dict(callback_every=0), ValueError, "callback_every"),
        (dict(tv_floor=0.0), ValueError, "tv_floor"),
        (dict(image_shape=(16, 16, 3, 1)), ValueError, "image_shape"),
        (dict(image_shape=(16, 0, 3)), ValueError, r"image_shape\[1\]"),
        (dict(image_shape=(16, 16.5, 3)), ValueError, r"image_shape\[1\]"),
        (dict(image_shape=16), TypeError, "image_shape"),
        (dict(mask=np.full(t.shape[1:], np.nan, np.float32)), ValueError, "mask contains NaN"),
        (dict(mask=np.zeros(t.shape[1:], np.float32)), ValueError, "mask is all zeros"),
        (dict(B=-1.0), ValueError, "B"),
        (dict(a=0.0), ValueError, "a must"),
        (dict(lambda_alpha=1.0, lambda_tv=1.0, B=100.0), ValueError, "B is used only"),
        (dict(lambda_tv=1.0, a=0.1), ValueError, "a is used only"),
    ]
    for kw, exc, match in bad:
        kw = {"image_shape": img.shape, "iterations": 2, **kw}
        if "learning_rate" in kw and not isinstance(kw["learning_rate"], (int, float)):
            kw.pop("iterations")
        with pytest.raises(exc, match=match):
            inv.invert(rep, t, **kw)
    # accepted: a mask with the target's batch dimension of 1, and (H, W) for grey images
    m = np.ones((1,) + t.shape[1:], np.float32)
    r = inv.invert(rep, t, image_shape=img.shape, iterations=2, mask=m)
    assert r.options["mask"]["shape"] == m.shape
    grey = Upto(nn.Sequential([("c", nn.Conv2d(he(rng0, (4, 1, 3, 3))))]), "c")
    tg = grey.forward(np.ascontiguousarray(img[None, None, :, :, 0]))
    assert inv.invert(grey, tg, image_shape=(16, 16), iterations=2).images.shape == (1, 16, 16, 1)


def test_schedule_and_callback():
    net = small_cnn()
    rep = Upto(net, "relu1")
    img = photo(16)
    t = target_of(rep, img)
    calls = []
    res = inv.invert(rep, t, image_shape=img.shape, lambda_tv=0.5, iterations=40,
                     callback=lambda it, e: calls.append((it, e.copy())), callback_every=10)
    # the default CNN schedule (100/200/100) shrunk to 40 iterations: 10/20/10
    assert res.options["learning_rate"] == [[0.004, 10], [0.0004, 20], [0.00004, 10]]
    assert [c[0] for c in calls] == [10, 20, 30, 40]
    assert_close(calls[-1][1], res.objective[-1])
    res2 = inv.invert(rep, t, image_shape=img.shape, lambda_tv=0.5,
                      learning_rate=[(0.002, 5), (0.0002, 5)])
    assert res2.objective.shape == (10, 1)


def test_reconstruction_error_metrics():
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((4, 10))
    rec = codes + 0.1 * rng.standard_normal((4, 10))
    d = np.linalg.norm(rec - codes, axis=1)
    pair = [np.linalg.norm(codes[i] - codes[j]) for i in range(4) for j in range(i + 1, 4)]
    assert_close(inv.mean_pairwise_distance(codes), np.mean(pair))
    assert_close(inv.reconstruction_error(rec, codes, codes), d / np.mean(pair))
    assert_close(inv.reconstruction_error(rec, codes, codes, squared=True),
                 d ** 2 / np.mean(np.square(pair)))
    assert_close(inv.reconstruction_error(rec, codes), d / np.linalg.norm(codes, axis=1))
    with pytest.raises(ValueError):
        inv.mean_pairwise_distance(codes[:1])


def test_reconstruction_error_single_codes_broadcast_and_bad_input():
    rng = np.random.default_rng(1)
    c = rng.random((27, 6, 8))  # one code (C, h, w), no batch dimension
    r = c + 0.1 * rng.random((27, 6, 8))
    S = rng.random((5, 27, 6, 8))  # an image set's codes
    plain = np.linalg.norm(r - c) / np.linalg.norm(c)
    paper = np.linalg.norm(r - c) / np.mean([np.linalg.norm(S[i] - S[j])
                                             for i in range(5) for j in range(i + 1, 5)])
    # one code: a float, whether the set tells its shape or batched=False does
    e = inv.reconstruction_error(r, c, S)
    assert isinstance(e, float) and e == pytest.approx(paper, rel=1e-12)
    e = inv.reconstruction_error(r, c, batched=False)
    assert isinstance(e, float) and e == pytest.approx(plain, rel=1e-12)
    assert inv.reconstruction_error(r.ravel(), c.ravel()) == pytest.approx(plain, rel=1e-12)
    # with a batch dimension: one value per row; a list of codes works as the set
    assert_close(inv.reconstruction_error(r[None], c[None], list(S)), [paper])
    # R restarts against the one original, with or without its batch dimension
    R = np.stack([r, c + 0.2, c])
    want = [np.linalg.norm(q - c) / np.linalg.norm(c) for q in R]
    assert_close(inv.reconstruction_error(R, c[None]), want)
    assert_close(inv.reconstruction_error(R, c), want)
    with pytest.raises(ValueError, match="set's codes have shape"):
        inv.reconstruction_error(r[None], c[None], S[:, :3])
    with pytest.raises(ValueError, match="original codes"):
        inv.reconstruction_error(R, np.stack([c, c]))
    with pytest.raises(ValueError, match="all zeros"):
        inv.reconstruction_error(np.ones((1, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="identical"):
        inv.reconstruction_error(r[None], c[None], np.stack([c, c]))


def test_objective_gradient_through_hog_matches_finite_differences():
    # HOGb (bilinear orientation binning) on a smooth random image: piecewise smooth, and
    # a small step in a random direction crosses no kink at the scale checked here.
    hog = inv.HOG(bilinear=True, texture=False)
    rng = np.random.default_rng(11)
    from scipy.ndimage import gaussian_filter

    x0 = gaussian_filter(rng.standard_normal((40, 48)), 2.0)
    x0 = (x0 / x0.std() * 40.0).astype(np.float32)[None, None]
    t = hog.forward(x0)
    sigma = inv.paper_sigma((40, 48, 1))
    x = (gaussian_filter(rng.standard_normal((40, 48)), 1.0) * 0.05).astype(np.float32)[None, None]
    kw = dict(sigma=sigma, alpha=6.0, beta=2.0, lambda_alpha=inv.code_lambda_alpha(sigma),
              lambda_tv=0.5)
    (E, *_), g = inv.objective(hog, t, x, **kw)
    ok = 0
    for k in range(6):
        d = rng.standard_normal(x.shape).astype(np.float32)
        d /= np.linalg.norm(d)
        # The slope of a cubic fitted to E along d over +-h: HOGb's forward takes VLFeat's
        # acosf for its bilinear weights, whose rounding (~3e-4 rad near a bin centre) makes
        # a two-point difference at a step small enough to miss the binning's curvature
        # noisy (off by 10 % at 5e-5); the fit averages 41 points.
        h = 2e-4
        steps = np.linspace(-h, h, 41)
        Es = [inv.objective(hog, t, x + np.float32(e) * d, **kw)[0][0].sum() for e in steps]
        fd = np.polynomial.polynomial.polyfit(steps / h, Es, 3)[1] / h
        an = float((g.astype(np.float64) * d).sum())
        ok += abs(fd - an) <= 2e-2 * abs(an) + 1e-3
    assert ok >= 5, "the gradient of E through HOG disagrees with finite differences"


def test_shallow_inversion_reaches_paper_level_errors():
    """A short HOGb and DSIFT inversion of a photo (the full runs give Table 1)."""
    from invert_native.experiments import shallow

    (_, gray), = shallow.bundled_photos(("camera",), size=(96, 128))
    for name, bound in (("hogb", 0.25), ("dsift", 0.3)):
        res = shallow.invert_gray(name, gray, iterations=200, restarts=2, seed=0)
        assert res.result.options["lambda_tv"] == 0.5
        assert res.reconstructions.shape == (2, 96, 128)
        assert (res.result.feature_error < bound).all(), (name, res.result.feature_error)


def test_tv_floor_is_in_pixel_units_and_leaves_photos_exact():
    """beta = 1 at a photo's scale: the floor binds only on exactly flat pixels, and the
    gradient of the whole objective agrees with its finite differences."""
    net = small_cnn(smooth=True)
    rep = Upto(net, "conv2")
    img = photo(32)
    sigma = inv.paper_sigma(img.shape)
    t = target_of(rep, np.roll(img, 3, axis=1))
    x = np.ascontiguousarray(img.transpose(2, 0, 1)[None] / sigma).astype(np.float32)
    x = np.concatenate([x, np.ascontiguousarray(x[:, :, ::-1])])
    d1 = np.diff(x, axis=3, append=x[..., -1:])
    d2 = np.diff(x, axis=2, append=x[..., -1:, :])
    v = d1.astype(np.float64) ** 2 + d2 ** 2
    # the floor invert uses (1e-5 grey levels^2) meets only exactly flat pixels; a floor of
    # 1e-5 on the scaled variable would cover differences of up to 12 grey levels
    assert ((v < 1e-5 / sigma ** 2) == (v == 0)).all()
    assert (v < 1e-5).mean() > 0.2
    kw = dict(sigma=sigma, beta=1.0, lambda_alpha=inv.paper_lambdas(sigma, 32, 32)[0],
              lambda_tv=0.5)
    (E, data, ra, rt), g = inv.objective(rep, t, x, **kw)
    assert (rt > data).all()  # the TV term matters in the check
    # and it is TV^1 itself (float64 reference), not a smoothed version of it
    assert_close(rt, 0.5 * np.sqrt(v).reshape(2, -1).sum(axis=1), rtol=1e-5)
    rng = np.random.default_rng(5)
    for k in range(3):
        d = rng.standard_normal(x.shape).astype(np.float32)
        d /= np.linalg.norm(d)
        eps = 1e-4  # ~2e-6 a pixel, far below a grey level (2.6e-4) of this photo
        fd = (inv.objective(rep, t, x + eps * d, **kw)[0][0].sum()
              - inv.objective(rep, t, x - eps * d, **kw)[0][0].sum()) / (2 * eps)
        an = float((g.astype(np.float64) * d).sum())
        assert abs(fd - an) <= 2e-3 * abs(an) + 1e-4, (k, fd, an)


def test_beta_1_reconstructions_are_not_tv2_ones():
    net = small_cnn()
    rep = Upto(net, "norm1")
    img = photo(32)
    t = target_of(rep, img)
    sigma = inv.paper_sigma(img.shape)
    kw = dict(image_shape=img.shape, iterations=150, seed=2)
    r1 = inv.invert(rep, t, beta=1.0, **kw)
    r2 = inv.invert(rep, t, beta=2.0, **kw)
    assert (r1.feature_error < 0.35).all() and (r2.feature_error < 0.3).all()
    # the default lambda_V = 0.5 at beta = 2 is carried to beta = 1 (same typical difference)
    assert r1.options["lambda_tv"] == pytest.approx(np.sqrt(0.5 / (32 * 32)))
    x = r1.x
    d1 = np.diff(x, axis=3, append=x[..., -1:])
    d2 = np.diff(x, axis=2, append=x[..., -1:, :])
    v = d1.astype(np.float64) ** 2 + d2 ** 2
    assert (v < r1.options["tv_floor"] / sigma ** 2).mean() < 0.1  # measured 0.05
    # TV^1's gradient there is not TV^2's (as it is when the floor covers every pixel)
    _, g1 = inv.ops.tv_forward(x, 1.0, r1.options["tv_floor"] / sigma ** 2)
    _, g2 = inv.ops.tv_forward(x, 2.0)
    assert np.corrcoef(g1.ravel(), g2.ravel())[0, 1] < 0.8  # measured 0.6
    # and TV^1 leaves sparser differences: more of them near 0, relative to their mean
    g = lambda r: np.abs(np.diff(r.images, axis=2)).ravel()
    near0 = lambda a: (a < 0.1 * a.mean()).mean()
    assert near0(g(r1)) > 1.5 * near0(g(r2))


@pytest.mark.parametrize("layer", ["norm1", None])
def test_default_lambdas_converge_on_a_cnn(layer):
    """No lambda given: the paper's lambda_alpha heuristic and lambda_V = 0.5 converge on a
    representation without paper_lambdas (a net's layer, or a bare nn.Sequential)."""
    net = small_cnn()
    rep = net if layer is None else Upto(net, layer)
    img = photo(32)
    t = rep.forward(np.ascontiguousarray(img.transpose(2, 0, 1)[None])).copy()
    res = inv.invert(rep, t, image_shape=img.shape, iterations=150)
    assert np.isfinite(res.objective).all()
    assert (res.feature_error < 0.3).all(), res.feature_error  # measured 0.09-0.2
    assert res.options["lambda_tv"] == 0.5
    assert res.options["lambda_sources"]["lambda_tv"].startswith("default")
    assert res.options["lambda_sources"]["lambda_alpha"].startswith("heuristic")
    # the paper's lambda_V heuristic at a = 1 % (~8700) diverges at its own rate, and the
    # error says that lambda_tv is the setting to lower
    with pytest.raises(inv.InversionDiverged, match=r"smaller learning_rate \(below [0-9.e-]+\) "
                                                    r"or lambda_tv \(below 59\.4\)"):
        inv.invert(rep, t, image_shape=img.shape, iterations=20, a=0.01)


def test_divergence_in_the_last_update_is_caught():
    hog = inv.HOG(texture=False)
    x0 = (np.random.default_rng(0).random((1, 1, 48, 64)) * 255 - 128).astype(np.float32)
    t = hog.forward(x0).copy()
    with pytest.raises(inv.InversionDiverged, match=r"after the last update \(iteration 6\)"):
        inv.invert(hog, t, image_shape=(48, 64, 1), learning_rate=[(0.004, 5), (1e30, 1)])


def test_loop_checks_finiteness_without_a_device_sync(monkeypatch):
    """Inside invert's loop the representation's input checks skip the host transfer that a
    CuPy array would cost (checked here with a stand-in device array type)."""
    from invert_native import _backend, ops

    class DeviceArray(np.ndarray):  # what check_finite sees of a CuPy array
        pass

    syncs = []

    class FakeXp:  # the "cupy" module: bool() of its reductions is a device -> host transfer
        @staticmethod
        def isfinite(v):
            syncs.append(1)
            return np.isfinite(np.asarray(v))

    monkeypatch.setattr(_backend, "array_module",
                        lambda a: FakeXp if isinstance(a, DeviceArray) else np)
    bad = np.array([1.0, np.nan], np.float32).view(DeviceArray)
    with pytest.raises(ValueError, match="NaN"):  # a direct call checks
        _backend.check_finite(bad, "x")
    assert len(syncs) >= 1
    syncs.clear()
    with ops.reusing(ops.Workspace()):  # inside invert's loop: no transfer
        _backend.check_finite(bad, "x")
    assert syncs == []
    monkeypatch.undo()

    # and invert runs every iteration of a built-in representation inside that workspace
    from invert_native.ops import _dispatch

    seen = []
    check = _backend.check_finite
    monkeypatch.setattr(_backend, "check_finite", lambda x, what: (
        seen.append(getattr(_dispatch._active, "workspace", None) is not None), check(x, what)))
    hog = inv.HOG(texture=False)
    x0 = (np.random.default_rng(0).random((1, 1, 48, 64)) * 255 - 128).astype(np.float32)
    t = hog.forward(x0).copy()
    seen.clear()
    inv.invert(hog, t, image_shape=(48, 64, 1), iterations=20)
    assert seen.count(True) == 20 and seen.count(False) <= 2, seen  # setup and final check


def test_options_record_the_settings_used():
    net = small_cnn()
    rep = Upto(net, "relu1")
    img = photo(16)
    t = target_of(rep, img)
    mask = np.zeros(t.shape[1:], np.float32)
    mask[:, 2:5, 2:5] = 1.0
    res = inv.invert(rep, t, image_shape=img.shape, iterations=3, seed=None, mask=mask,
                     callback_every=2, lambda_tv=0.25)
    o = res.options
    assert isinstance(o["seed"], int) and o["callback_every"] == 2
    assert o["lambda_sources"] == {"lambda_alpha": "heuristic sigma^alpha / (H W B^alpha), B = 128",
                                   "lambda_tv": "given"}
    digest = hashlib.sha256(mask.tobytes()).hexdigest()[:16]
    assert o["mask"] == dict(shape=mask.shape, sha256=digest)
    again = inv.invert(rep, t, image_shape=img.shape, iterations=3, seed=o["seed"], mask=mask,
                       lambda_tv=0.25)
    np.testing.assert_array_equal(again.images, res.images)  # the recorded seed repeats it
    # B and a select the heuristics, even over a representation's own lambdas
    hog = inv.HOG(texture=False)
    x0 = (np.random.default_rng(0).random((1, 1, 32, 32)) * 255 - 128).astype(np.float32)
    th = hog.forward(x0).copy()
    own = inv.invert(hog, th, image_shape=(32, 32, 1), iterations=2).options
    assert own["lambda_sources"] == {"lambda_alpha": "representation",
                                     "lambda_tv": "representation"}
    assert own["B"] is None and own["a"] is None
    ba = inv.invert(hog, th, image_shape=(32, 32, 1), iterations=2, B=100.0, a=0.2).options
    s = ba["sigma"]
    assert (ba["lambda_alpha"], ba["lambda_tv"]) == pytest.approx(
        inv.paper_lambdas(s, 32, 32, B=100.0, a=0.2))
    assert ba["B"] == 100.0 and ba["a"] == 0.2


class _CopyingRep:
    """The same representation, handing out a copy of its output."""

    def __init__(self, rep):
        self.rep = rep

    def forward(self, x):
        return self.rep.forward(x).copy()

    def backward(self, dy):
        return self.rep.backward(dy)


@pytest.mark.parametrize("last", ["lrn", "softmax"])
def test_objective_does_not_touch_the_output_a_layer_keeps_for_backward(last):
    # LRN (and an ONNX softmax) keep their output y for backward: the objective must form
    # Phi - Phi0 in an array of its own, or the gradient is computed from y - Phi0.
    from invert_native import nn
    from invert_native.onnx_loader import Softmax
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((6, 3, 3, 3)) * 0.3).astype(np.float32)
    layers = [nn.Conv2d(w, padding=1), nn.ReLU()]
    if last == "lrn":
        layers.append(nn.LRN(size=3, alpha=0.5, beta=0.75, k=1.0))
    else:
        w2 = (rng.standard_normal((10, 6 * 8 * 8)) * 0.05).astype(np.float32)
        layers += [nn.Linear(w2), Softmax()]
    rep = nn.Sequential(layers)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    target = rep.forward(rng.standard_normal((1, 3, 8, 8)).astype(np.float32) * 2).copy()
    kw = dict(sigma=1.0, lambda_alpha=0.0, lambda_tv=0.0)
    (e, *_), g = inv.objective(rep, target, x, **kw)
    (e_ref, *_), g_ref = inv.objective(_CopyingRep(rep), target, x, **kw)
    np.testing.assert_allclose(e, e_ref, rtol=1e-6)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-7 * np.abs(g_ref).max())
    # and against a central difference along a random direction
    d = rng.standard_normal(x.shape).astype(np.float64)
    h = 1e-3
    ep = inv.objective(rep, target, (x + h * d).astype(np.float32), **kw)[0][0][0]
    em = inv.objective(rep, target, (x - h * d).astype(np.float32), **kw)[0][0][0]
    assert abs((ep - em) / (2 * h) - float((g.astype(np.float64) * d).sum())) < 0.05 * abs(
        (ep - em) / (2 * h)) + 1e-6


@pytest.mark.parametrize("make", [lambda: inv.HOG(), lambda: inv.DSIFT(bin_size=4, step=4)])
def test_shallow_reconstructions_come_back_in_the_inputs_grey_levels(make):
    # gradient codes lose a constant offset and the prior centres the image on 0:
    # deprocess adds mid-grey back, so [0, 255] inputs give [0, 255]-centred images
    rep = make()
    img = photo(48)[..., :1] * 0.8 + 140.0  # (48, 48, 1) grey levels, mean 140
    t = rep.forward(np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32))
    res = inv.invert(rep, t, image_shape=img.shape, iterations=40, seed=0)
    assert abs(res.images.mean() - 128.0) < 20, res.images.mean()
    sigma = res.options["sigma"]
    np.testing.assert_array_equal(res.images, (sigma * res.x).transpose(0, 2, 3, 1) + np.float32(128))
    centred = make()
    centred.pixel_offset = 0.0
    again = inv.invert(centred, t, image_shape=img.shape, iterations=40, seed=0)
    np.testing.assert_allclose(again.images + np.float32(128.0), res.images, rtol=0, atol=1e-4)
    assert abs(again.images.mean()) < 20


def test_more_settings_are_checked_and_named():
    rep = inv.HOG()
    img = np.ascontiguousarray(photo(32)[..., :1].transpose(2, 0, 1)[None], dtype=np.float32)
    t = rep.forward(img)
    kw = dict(image_shape=(32, 32, 1), iterations=2)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        inv.invert(rep, t, seed=-1, **kw)
    with pytest.raises(TypeError, match="seed must be an integer"):
        inv.invert(rep, t, seed="a", **kw)
    with pytest.raises(TypeError, match="seed must be an integer"):
        inv.invert(rep, t, seed=np.random.default_rng(0), **kw)
    with pytest.raises(TypeError, match="callback must be a function"):
        inv.invert(rep, t, callback=5, **kw)
    with pytest.raises(ValueError, match="mask must be an array of weights"):
        inv.invert(rep, t, mask="abc", **kw)

    class Broken:
        def forward(self, x):
            return rep.forward(x)

        def backward(self, dy):
            return rep.backward(dy)[:, :, :5]

    with pytest.raises(ValueError, match="backward returned"):
        inv.invert(Broken(), t, lambda_tv=0.5, **kw)


def test_default_schedule_keeps_its_largest_rates_when_shrunk():
    from invert_native.invert import CNN_SCHEDULE, SHALLOW_SCHEDULE, _schedule

    assert _schedule(None, 2, SHALLOW_SCHEDULE) == [(0.004, 1), (0.0004, 1)]
    assert _schedule(None, 3, SHALLOW_SCHEDULE) == [(0.004, 1), (0.0004, 1), (4e-05, 1)]
    assert _schedule(None, 2, CNN_SCHEDULE) == [(0.004, 1), (0.0004, 1)]
    for n in range(1, 30):
        for default in (SHALLOW_SCHEDULE, CNN_SCHEDULE):
            segs = _schedule(None, n, default)
            assert sum(c for _, c in segs) == n and all(c >= 1 for _, c in segs)
            assert [r for r, _ in segs] == [r for r, _ in default][:len(segs)]
    assert _schedule(None, 800, SHALLOW_SCHEDULE) == [(r, 200) for r, _ in SHALLOW_SCHEDULE]


def test_error_metrics_refuse_non_finite_or_ragged_codes():
    c = np.random.default_rng(0).standard_normal((3, 4, 2, 2))
    with pytest.raises(ValueError, match="reconstructed contains NaN"):
        inv.reconstruction_error(c[:1] * np.nan, c[:1], c)
    with pytest.raises(ValueError, match="codes must be an array of numbers"):
        inv.mean_pairwise_distance([c[0], c[1][:2]])
    with pytest.raises(ValueError, match="at least two images"):
        inv.mean_pairwise_distance(np.float64(1))

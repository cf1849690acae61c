"""The representations the benchmark inverts, built once for both sides.

* CaffeNet: ``invert_native.CaffeNet.random(seed)`` (He-random, untrained), inverted
  through its ``representation(layer)``, as a user would. ``--quick`` builds a narrow
  CaffeNet (channels / 8, same spatial shapes) from ``invert_native.nn`` layers, wrapped in
  the package's ``ConvNet`` so that it goes through the very same representation API. The
  PyTorch baseline gets the very same weight arrays.
* HOG, HOGb: ``invert_native.HOG`` (the paper's 27-dimensional UoCTTI HOG: no texture
  dims), hard and bilinear orientation binning.
* DSIFT: ``invert_native.DSIFT.table1()`` (the paper's Table 1 network).

Representations that the installed package does not have yet are reported as missing and
their rows skipped (see :data:`SHALLOW`).
"""

from __future__ import annotations

import numpy as np

import invert_native as inv
from invert_native import nn
from invert_native.representations import ConvNet

# CaffeNet, as PAPER.md's table: name, kind, arguments
CAFFENET_LAYERS = [
    ("conv1", "conv", dict(out=96, k=11, stride=4, pad=0, groups=1)),
    ("relu1", "relu", {}),
    ("mpool1", "pool", dict(k=3, stride=2)),
    ("norm1", "lrn", {}),
    ("conv2", "conv", dict(out=256, k=5, stride=1, pad=2, groups=2)),
    ("relu2", "relu", {}),
    ("mpool2", "pool", dict(k=3, stride=2)),
    ("norm2", "lrn", {}),
    ("conv3", "conv", dict(out=384, k=3, stride=1, pad=1, groups=1)),
    ("relu3", "relu", {}),
    ("conv4", "conv", dict(out=384, k=3, stride=1, pad=1, groups=2)),
    ("relu4", "relu", {}),
    ("conv5", "conv", dict(out=256, k=3, stride=1, pad=1, groups=2)),
    ("relu5", "relu", {}),
    ("mpool5", "pool", dict(k=3, stride=2)),
    ("fc6", "fc", dict(out=4096)),
    ("relu6", "relu", {}),
    ("fc7", "fc", dict(out=4096)),
    ("relu7", "relu", {}),
    ("fc8", "fc", dict(out=1000)),
]
CAFFENET_NAMES = [n for n, _, _ in CAFFENET_LAYERS]
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)


def caffenet_lambda_tv(layer: str) -> float:
    """PAPER.md: lambda_V = 0.5 for layers 1-6, 5 for 7-12, 50 for 13-20."""
    i = CAFFENET_NAMES.index(layer) + 1
    return 0.5 if i <= 6 else (5.0 if i <= 12 else 50.0)


def build_caffenet(seed: int = 0, width: float = 1.0) -> list[tuple[str, nn.Layer]]:
    """CaffeNet's 20 layers with He-random weights (zero biases); ``width`` scales the
    channel counts (the 3 input channels and fc8's 1000 outputs stay)."""
    rng = np.random.default_rng(seed)
    layers, c, spatial = [], 3, 227
    for name, kind, a in CAFFENET_LAYERS:
        if kind == "conv":
            k_out = max(2, int(round(a["out"] * width)) // 2 * 2)  # divisible by the 2 groups
            cg = c // a["groups"]
            w = rng.standard_normal((k_out, cg, a["k"], a["k"]), dtype=np.float32)
            w *= np.float32(np.sqrt(2.0 / (cg * a["k"] * a["k"])))
            layer = nn.Conv2d(w, np.zeros(k_out, np.float32), a["stride"], a["pad"], a["groups"])
            spatial = (spatial + 2 * a["pad"] - a["k"]) // a["stride"] + 1
            c = k_out
        elif kind == "pool":
            layer = nn.MaxPool2d(a["k"], a["stride"])
            spatial = -(-(spatial - a["k"]) // a["stride"]) + 1
        elif kind == "lrn":
            layer = nn.LRN(5, 1e-4, 0.75, 1.0)
        elif kind == "relu":
            layer = nn.ReLU()
        else:
            fan_in = c * spatial * spatial
            out = a["out"] if name == "fc8" else max(8, int(round(a["out"] * width)))
            w = rng.standard_normal((out, fan_in), dtype=np.float32)
            w *= np.float32(np.sqrt(2.0 / fan_in))
            layer = nn.Linear(w, np.zeros(out, np.float32))
            c, spatial = out, 1
        layers.append((name, layer))
    return layers


class NarrowCaffeNet(ConvNet):
    """``--quick``'s CaffeNet: the package's network class over benchmark-built layers, with
    CaffeNet's per-layer lambdas, so that quick runs use the full run's code path."""

    paper_lambdas_of = inv.CaffeNet.paper_lambdas_of

    def __init__(self, layers, source):
        super().__init__(layers, input_shape=(3, 227, 227), trained=False, source=source)


class CaffeNetModel:
    """The package's CaffeNet (narrow in ``--quick``), its 20 (name, layer) pairs, where the
    weights came from, and a representation per target layer.

    No fallback: an API change in the package fails here, loudly, rather than timing
    something else than what users run.
    """

    def __init__(self, quick: bool, seed: int = 0):
        if quick:
            self.source = ("invert_native.ConvNet over a benchmark-built CaffeNet, He-random "
                           "weights, channels / 8 (--quick)")
            self.net = NarrowCaffeNet(build_caffenet(seed, 0.125), self.source)
        else:
            self.net = inv.CaffeNet.random(seed)
            self.source = "invert_native.CaffeNet.random (He-random, untrained)"
        self.layers = list(self.net)
        names = [n for n, _ in self.layers]
        if names != CAFFENET_NAMES:
            raise RuntimeError(f"the package's CaffeNet has layers {names}, the benchmark "
                               f"expects {CAFFENET_NAMES}")

    def upto(self, layer: str) -> list[tuple[str, nn.Layer]]:
        return self.layers[: CAFFENET_NAMES.index(layer) + 1]

    def representation(self, layer: str):
        """Ours: the network's representation of ``layer`` (what invert() takes)."""
        return self.net.representation(layer)

    def to(self, device: str):
        for _, layer in self.layers:
            layer.to(device)
        return self


def caffenet_image(size: int = 227) -> np.ndarray:
    """A natural photo (scikit-image's astronaut) as CaffeNet input: (1, 3, 227, 227), BGR
    minus the ImageNet mean."""
    img = _photo("astronaut", (size, size), colour=True)  # (H, W, 3) in [0, 255]
    bgr = img[:, :, ::-1] - BGR_MEAN
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None], dtype=np.float32)


def grey_image(size: int) -> np.ndarray:
    """The paper's shallow input: 255 * gray - 128 of a photo (camera), (1, 1, size, size)."""
    img = _photo("camera", (size, size), colour=False)
    return np.ascontiguousarray((img - 128.0)[None, None], dtype=np.float32)


def _photo(name, hw, colour):
    try:
        from skimage import data, transform

        img = getattr(data, name)().astype(np.float64)
        if colour and img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out = transform.resize(img, hw + img.shape[2:], anti_aliasing=True, preserve_range=True)
        return out.astype(np.float32)
    except ImportError:  # no scikit-image: a smooth synthetic image of the same range
        y, x = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float32)
        img = 127.5 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0)
        return np.repeat(img[:, :, None], 3, axis=2) if colour else img


# Shallow representations: name -> (factory of ours, factory of PyTorch's); a factory of
# ours returns None where the installed package lacks the class. This is the place to add
# a representation: give both factories, and the suite times it in every section.
def _hog(bilinear):
    def ours():
        cls = getattr(inv, "HOG", None)
        return None if cls is None else cls(cell_size=8, bilinear=bilinear, texture=False)

    def torch_side(hw, device):
        from .torch_baseline import TorchHOG

        return TorchHOG(hw, 8, 9, "uoctti", "bilinear" if bilinear else "hard", False, device)

    return ours, torch_side


def _dsift():
    def ours():
        cls = getattr(inv, "DSIFT", None)
        return None if cls is None else cls.table1()

    def torch_side(hw, device):
        from .torch_baseline import TorchDSIFT

        return TorchDSIFT(hw, ours().config, device)

    return ours, torch_side


SHALLOW = {"HOG": _hog(False), "HOGb": _hog(True), "DSIFT": _dsift()}

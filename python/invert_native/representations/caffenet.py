"""CaffeNet (the paper's CNN-A) and other plain sequential CNNs as invertible representations.

:class:`CaffeNet` is an :class:`~invert_native.nn.Sequential` of the native
layers named as in the paper's table (``../shared/PAPER.md`` section 4)::

    conv1 relu1 mpool1 norm1  conv2 relu2 mpool2 norm2  conv3 relu3  conv4 relu4
    conv5 relu5 mpool5  fc6 relu6  fc7 relu7  fc8

conv1 11x11 stride 4; conv2 5x5 pad 2 groups 2; conv3 3x3 pad 1; conv4 and
conv5 3x3 pad 1 groups 2; max pools 3x3 stride 2 with Caffe's ceil-mode output
size; LRN size 5, alpha 1e-4 (divided by the size, as Caffe and ONNX do), beta
0.75, k 1; pool before norm (CaffeNet's order; ``order="alexnet"`` puts the
norm first, as in the BVLC AlexNet). Dropout is the identity at inference and
has no layer; fc8 is taken before the softmax.

Images
------
The network takes preprocessed batches x (N, 3, 227, 227) float32 (NumPy, or
CuPy after ``net.to("cuda")``). :meth:`ConvNet.preprocess` makes one from an
H x W x 3 RGB image in [0, 255] (uint8 or float; an H x W or H x W x 1 grey
image is replicated to three channels; an RGBA or grey + alpha image is
composited over white, as the command line does; a float image whose values
all lie in [0, 1] draws a UserWarning, since the net expects [0, 255]):

1. frame it to 227 x 227 with Pillow (``resample="bilinear"`` by default, or
   ``"bicubic"``, ``"lanczos"``, ``"nearest"``), each channel as a float32
   image, so there is no rounding to uint8. ``fit="crop"`` (the default, as
   the command line and the experiments do) resizes keeping the aspect ratio
   until the image covers 227 x 227 and centre-crops; ``fit="stretch"``
   resizes to 227 x 227 (Caffe's classic resize, aspect not kept). An image
   already 227 x 227 is not resampled. :meth:`ConvNet.fit_image` returns this
   framed RGB image (to show beside reconstructions).
2. reorder the channels to what the weights expect: ``channel_order="BGR"``
   (Caffe models, the default) or ``"RGB"``;
3. subtract the mean: by default the per-channel ImageNet mean of Caffe,
   B, G, R = 104, 117, 123 (given in the network's channel order); or a
   ``mean`` of 3 values in the network's channel order; or a full mean image
   (3, h, w) in the network's channel order, h, w >= 227, centre-cropped to
   227 x 227 (e.g. Caffe's ``ilsvrc_2012_mean.npy``, 3 x 256 x 256, BGR);
   then, for nets given a per-channel ``std`` (torchvision-trained ones, via
   :class:`~invert_native.OnnxNet`), divide by it.

:meth:`ConvNet.deprocess` is the exact inverse of steps 2-3 for a batch
(N, 3, 227, 227) -> (N, 227, 227, 3) RGB. It does not clip: reconstructions can
leave [0, 255] and are returned as they are (``clip=True`` clips, for display).

Representations
---------------
``net.representation("relu7")`` is what :func:`invert_native.invert` takes:
``forward(x)`` runs the net up to the layer, ``backward(dy)`` returns dx; it
carries ``paper_lambdas`` (lambda_alpha = 2.16e8, lambda_V = 0.5 for layers
1-6, 5 for 7-12, 50 for 13-20, the bold rows of the paper's Table 3),
``paper_schedule`` (``invert.CNN_SCHEDULE``), ``deprocess``, ``image_shape``
(227, 227, 3), the layer's ``receptive_field`` and the masks of the paper's
Fig. 9 (``window_mask()``, the central 5 x 5 neurons) and Fig. 10
(``group_mask(g)``, the channels of one of the two groups). All
representations of one net share its layers' caches: use one at a time.

Weights
-------
* :meth:`CaffeNet.from_onnx` -- the BVLC CaffeNet / AlexNet as the ONNX model
  zoo distributes them (see :mod:`invert_native.onnx_loader`);
* :meth:`CaffeNet.from_npz` -- one array per weight and bias, keys
  ``conv1.weight`` (96, 3, 11, 11), ``conv1.bias`` (96,), ``conv2.weight``
  (256, 48, 5, 5), ``conv3.weight`` (384, 256, 3, 3), ``conv4.weight``
  (384, 192, 3, 3), ``conv5.weight`` (256, 192, 3, 3), ``fc6.weight``
  (4096, 9216), ``fc7.weight`` (4096, 4096), ``fc8.weight`` (classes, 4096)
  and the matching ``.bias`` vectors (:data:`NPZ_SHAPES`). Convolution weights
  are (out, in / groups, kh, kw) as in Caffe, ONNX and PyTorch; fully connected
  weights (out, in), in taking the previous layer's output flattened in C order
  (channel, row, column). An optional key ``__order__`` (:data:`NPZ_ORDER_KEY`),
  a 0-d string array ``"caffenet"`` or ``"alexnet"``, records the layer order;
  without it the file is read in CaffeNet's order (pool then norm). An optional
  key ``__trained__`` (:data:`NPZ_TRAINED_KEY`), a 0-d boolean array, records
  whether the weights come from training: False marks weights saved from an
  untrained net (:meth:`CaffeNet.random`), which :meth:`CaffeNet.from_npz` then
  loads as untrained (``net.trained`` False, the repr says UNTRAINED); without
  the key the weights are taken as trained.
  :meth:`CaffeNet.save_npz` writes this layout, the order and provenance included.
* :meth:`CaffeNet.random` -- He-initialised, *untrained* weights for tests and
  for runs where no weights are at hand (``net.trained`` is False and the repr
  says UNTRAINED).
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from typing import Mapping

import numpy as np

from .. import _backend
from ..invert import CNN_SCHEDULE
from ..nn import LRN, Conv2d, Linear, MaxPool2d, ReLU, Sequential

__all__ = ["CaffeNet", "ConvNet", "ImageTransform", "LayerRepresentation", "CAFFENET_LAYERS",
           "CAFFE_MEAN_BGR", "NPZ_SHAPES", "NPZ_ORDER_KEY", "PAPER_RECEPTIVE_FIELDS"]

CAFFENET_LAYERS = ("conv1", "relu1", "mpool1", "norm1", "conv2", "relu2", "mpool2", "norm2",
                   "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "mpool5", "fc6", "relu6",
                   "fc7", "relu7", "fc8")

# Caffe's per-channel ImageNet mean in B, G, R order.
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)

# The paper's table: receptive field size per layer (CNN-A, 227 x 227 input).
PAPER_RECEPTIVE_FIELDS = dict(zip(CAFFENET_LAYERS, (11, 11, 19, 19, 51, 51, 67, 67, 99, 99, 131,
                                                    131, 163, 163, 195, 355, 355, 355, 355, 355)))

# name: (out, in, kernel, stride, pad, groups)
_CONV = {"conv1": (96, 3, 11, 4, 0, 1), "conv2": (256, 96, 5, 1, 2, 2),
         "conv3": (384, 256, 3, 1, 1, 1), "conv4": (384, 384, 3, 1, 1, 2),
         "conv5": (256, 384, 3, 1, 1, 2)}
_FC = {"fc6": (4096, 256 * 6 * 6), "fc7": (4096, 4096), "fc8": (1000, 4096)}
_POOL = (3, 2)  # kernel, stride of mpool1, mpool2, mpool5
_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)
_INPUT = (3, 227, 227)

NPZ_SHAPES = {}
for _n, (_o, _i, _k, _s, _p, _g) in _CONV.items():
    NPZ_SHAPES[f"{_n}.weight"] = (_o, _i // _g, _k, _k)
    NPZ_SHAPES[f"{_n}.bias"] = (_o,)
for _n, (_o, _i) in _FC.items():
    NPZ_SHAPES[f"{_n}.weight"] = (_o, _i)
    NPZ_SHAPES[f"{_n}.bias"] = (_o,)

# The .npz key recording the layer order ("caffenet" or "alexnet"); see the module doc.
NPZ_ORDER_KEY = "__order__"
# The .npz key recording whether the weights are trained (a 0-d bool); see the module doc.
NPZ_TRAINED_KEY = "__trained__"

_RESAMPLE = ("nearest", "bilinear", "bicubic", "lanczos")


# --------------------------------------------------------------------- images
class ImageTransform:
    """Image <-> network input: framing, channel order, mean (and std) (see the module doc).

    Args:
        size: (H, W) of the network input.
        channel_order: ``"BGR"`` (Caffe weights) or ``"RGB"``: the order the weights expect.
        mean: None (Caffe's ImageNet mean, B, G, R = 104, 117, 123, in the network's order),
            3 values in the network's channel order, or an image (3, h, w) in the network's
            channel order with h >= H, w >= W (centre-cropped).
        resample: Pillow filter for the resize: nearest, bilinear, bicubic or lanczos.
        std: None, or 3 positive values in the network's channel order: the input is divided
            by them after the mean subtraction (torchvision-trained nets: 255 times
            0.229, 0.224, 0.225 in RGB, with mean 255 times 0.485, 0.456, 0.406).
        fit: how an image of another size is framed: ``"crop"`` (the default: resize keeping
            the aspect ratio until it covers H x W, then centre-crop; what the command line
            does) or ``"stretch"`` (resize to H x W, the aspect ratio not kept).
    """

    def __init__(self, size=(227, 227), channel_order="BGR", mean=None, resample="bilinear",
                 std=None, fit="crop"):
        self.size = (int(size[0]), int(size[1]))
        if channel_order not in ("BGR", "RGB"):
            raise ValueError(f"channel_order must be 'BGR' or 'RGB', got {channel_order!r}")
        if resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {', '.join(_RESAMPLE)}, got {resample!r}")
        self.channel_order, self.resample, self.fit = channel_order, resample, _check_fit(fit)
        H, W = self.size
        if mean is None:
            m = np.array(CAFFE_MEAN_BGR if channel_order == "BGR" else CAFFE_MEAN_BGR[::-1],
                         np.float32).reshape(3, 1, 1)
        else:
            m = np.array(mean, dtype=np.float32)
            if m.shape == (3,):
                m = m.reshape(3, 1, 1)
            elif m.ndim == 3 and m.shape[0] == 3 and m.shape[1] >= H and m.shape[2] >= W:
                t, l = (m.shape[1] - H) // 2, (m.shape[2] - W) // 2
                m = np.ascontiguousarray(m[:, t:t + H, l:l + W])
            else:
                raise ValueError(f"mean must be 3 values or an image (3, h, w) with h >= {H} and "
                                 f"w >= {W} in the network's channel order, got shape {m.shape}")
            if not np.isfinite(m).all():
                raise ValueError("mean contains NaN or Inf")
        self.mean = m  # (3, 1, 1) or (3, H, W), network channel order
        self.std = None
        if std is not None:
            d = np.array(std, dtype=np.float32)
            if d.shape != (3,) or not np.isfinite(d).all() or (d <= 0).any():
                raise ValueError(f"std must be 3 positive values in the network's channel "
                                 f"order, got {std!r}")
            self.std = d.reshape(3, 1, 1)

    def fit_image(self, image, fit=None) -> np.ndarray:
        """Any accepted image -> the H x W x 3 RGB float32 image in [0, 255] the net sees.

        Accepts H x W x 3 RGB, H x W x 4 RGBA and H x W x 2 grey + alpha (alpha in the
        image's range, [0, 255]; composited over white, as the command line does), and
        H x W or H x W x 1 grey (replicated to three channels), uint8 or float. A float
        image whose values are all in [0, 1] draws a UserWarning (the net expects [0, 255]).
        Other sizes are framed by ``fit`` (None: this transform's; see the class doc) with
        Pillow's ``resample`` filter, each channel as a float32 image (no rounding to uint8);
        a filter's overshoot beyond both [0, 255] and the image's own range is clipped.
        """
        fit = self.fit if fit is None else _check_fit(fit)
        if _backend.is_cupy(image):
            image = image.get()
        img = np.asarray(image)
        if img.dtype == bool or not np.issubdtype(img.dtype, np.number) or \
                np.issubdtype(img.dtype, np.complexfloating):
            raise TypeError(f"the image must hold real numbers in [0, 255], got dtype {img.dtype}")
        if np.issubdtype(img.dtype, np.floating) and img.size and 0.0 < float(img.max()) <= 1.0:
            warnings.warn(f"the image's values look like [0, 1] (max {float(img.max()):.3g}); "
                          "the net expects [0, 255]: multiply by 255", UserWarning, stacklevel=3)
        if img.ndim == 3 and img.shape[2] in (2, 4):  # grey + alpha, RGBA
            a = img[:, :, -1:].astype(np.float32) / np.float32(255.0)
            img = img[:, :, :-1].astype(np.float32) * a + np.float32(255.0) * (1 - a)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"the image must be H x W x 3 RGB (or RGBA, or H x W grey), got "
                             f"shape {img.shape}")
        if min(img.shape[:2]) < 1:
            raise ValueError(f"the image is empty: shape {img.shape}")
        img = img.astype(np.float32)
        if not np.isfinite(img).all():
            raise ValueError("the image contains NaN or Inf pixels")
        H, W = self.size
        if img.shape[:2] != (H, W):
            lo, hi = min(0.0, float(img.min())), max(255.0, float(img.max()))
            if fit == "stretch":
                img = self._resize(img, H, W)
            else:
                h, w = img.shape[:2]
                s = max(H / h, W / w)
                nh, nw = max(H, round(h * s)), max(W, round(w * s))
                img = self._resize(img, nh, nw)
                t, l = (nh - H) // 2, (nw - W) // 2
                img = img[t:t + H, l:l + W]
            img = np.clip(img, lo, hi)
        return np.ascontiguousarray(img, dtype=np.float32)

    def preprocess(self, image, fit=None) -> np.ndarray:
        """An image (see :meth:`fit_image`) -> (1, 3, H, W) float32 network input: framed to
        H x W, reordered to the network's channels, minus the mean (divided by ``std``)."""
        x = self.fit_image(image, fit).transpose(2, 0, 1)  # (3, H, W) RGB
        if self.channel_order == "BGR":
            x = x[::-1]
        x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return np.ascontiguousarray(x[None], dtype=np.float32)

    def _resize(self, img, H, W):
        try:
            from PIL import Image
        except ImportError as exc:
            raise ImportError(f"resizing images needs Pillow (pip install Pillow), or give "
                              f"{H}x{W} images: {exc}") from None

        f = getattr(Image.Resampling, self.resample.upper())
        return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, c]))
                                    .resize((W, H), f), np.float32) for c in range(3)], axis=2)

    def deprocess(self, x, clip: bool = False):
        """(N, 3, H, W) (or (3, H, W)) network input -> (N, H, W, 3) (or (H, W, 3)) RGB images.

        The exact inverse of :meth:`preprocess` without the framing: multiplies by ``std`` (if
        any), adds the mean and restores RGB order. NumPy in, NumPy out; CuPy in, CuPy out.
        Values are not clipped unless ``clip`` (then to [0, 255], for display).
        """
        xp = _backend.array_module(x)
        if not (_backend.is_cupy(x) or isinstance(x, np.ndarray)):
            x = np.asarray(x, np.float32)
        single = x.ndim == 3
        if single:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != (3,) + self.size:
            raise ValueError(f"deprocess takes network inputs (N, 3, {self.size[0]}, "
                             f"{self.size[1]}), got shape {tuple(x.shape)}")
        img = x.astype(xp.float32)
        if self.std is not None:
            img = img * xp.asarray(self.std)
        img = img + xp.asarray(self.mean)
        if self.channel_order == "BGR":
            img = img[:, ::-1]
        img = xp.ascontiguousarray(img.transpose(0, 2, 3, 1))
        if clip:
            img = xp.clip(img, 0.0, 255.0)
        return img[0] if single else img

    def __repr__(self):
        mean = "image" if self.mean.shape[1:] != (1, 1) else \
            tuple(float(v) for v in self.mean.ravel())
        std = None if self.std is None else tuple(float(v) for v in self.std.ravel())
        return (f"ImageTransform(size={self.size}, channel_order={self.channel_order!r}, "
                f"mean={mean}, std={std}, resample={self.resample!r}, fit={self.fit!r})")


def _check_fit(fit):
    if fit not in ("crop", "stretch"):
        raise ValueError(f"fit must be 'crop' (keep the aspect ratio, centre-crop) or 'stretch', "
                         f"got {fit!r}")
    return fit


# ------------------------------------------------------------ shapes and fields
def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def _caffe_pool_out(H, k, s, p):
    """The native max-pool's output size (Caffe's ceil mode; see cpp params.h)."""
    o = (H + 2 * p - k + s - 1) // s + 1
    if (o - 1) * s >= H + p:
        o -= 1
    return o


def _layer_out_shape(name, layer, shape):
    """Output shape (without batch) of a layer for an input of this shape; ValueError if the
    layer cannot take it. Layers other than the native ones give ``out_shape(shape)``."""
    if hasattr(layer, "out_shape"):
        return tuple(layer.out_shape(shape))
    if isinstance(layer, (ReLU, LRN)):
        return tuple(shape)
    if isinstance(layer, Conv2d):
        K, Cg, kh, kw = layer.weight.shape
        if len(shape) != 3 or shape[0] != Cg * layer.groups:
            raise ValueError(f"layer {name!r} ({layer!r}) takes {Cg * layer.groups} channels, "
                             f"but its input has shape {tuple(shape)}")
        (sh, sw), (ph, pw) = _pair(layer.stride), _pair(layer.padding)
        Ho, Wo = (shape[1] + 2 * ph - kh) // sh + 1, (shape[2] + 2 * pw - kw) // sw + 1
        if Ho < 1 or Wo < 1:
            raise ValueError(f"layer {name!r}: kernel {kh}x{kw} is larger than its padded input "
                             f"{tuple(shape)}")
        return (K, Ho, Wo)
    if isinstance(layer, MaxPool2d):
        (kh, kw) = _pair(layer.kernel_size)
        (sh, sw) = _pair(layer.kernel_size if layer.stride is None else layer.stride)
        (ph, pw) = _pair(layer.padding)
        if len(shape) != 3 or shape[1] + 2 * ph < kh or shape[2] + 2 * pw < kw:
            raise ValueError(f"layer {name!r}: cannot pool an input of shape {tuple(shape)} "
                             f"with a {kh}x{kw} window")
        return (shape[0], _caffe_pool_out(shape[1], kh, sh, ph),
                _caffe_pool_out(shape[2], kw, sw, pw))
    if isinstance(layer, Linear):
        O, I = layer.weight.shape
        if int(np.prod(shape)) != I:
            raise ValueError(f"layer {name!r} ({layer!r}) takes {I} inputs, but its input has "
                             f"shape {tuple(shape)} = {int(np.prod(shape))} values")
        return (O,)
    raise TypeError(f"layer {name!r}: cannot infer the output shape of {type(layer).__name__}")


def _kernel_stride(layer):
    """((kh, kw), (sh, sw)) of a windowed layer, or None for pointwise layers."""
    if hasattr(layer, "kernel_stride"):
        return layer.kernel_stride()
    if isinstance(layer, Conv2d):
        return tuple(layer.weight.shape[2:]), _pair(layer.stride)
    if isinstance(layer, MaxPool2d):
        return _pair(layer.kernel_size), _pair(layer.kernel_size if layer.stride is None
                                              else layer.stride)
    return None


# ---------------------------------------------------------------- the network
class ConvNet(Sequential):
    """A named chain of layers on a fixed input size, with image pre/deprocessing,
    per-layer representations, receptive fields and loss masks.

    Base of :class:`CaffeNet` and :class:`invert_native.OnnxNet`; see the module
    documentation. ``input_shape`` is (C, H, W); ``transform`` an :class:`ImageTransform`.
    """

    def __init__(self, layers, *, input_shape, transform=None, trained=True, source=""):
        super().__init__(layers)
        self.input_shape = tuple(int(v) for v in input_shape)
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
        self.transform = transform if transform is not None else \
            ImageTransform(self.input_shape[1:])
        self.trained, self.source = bool(trained), source
        # every layer's output shape, checked once (a wrong weight shape fails here)
        shapes, shape = {}, self.input_shape
        for name, layer in self:
            shape = _layer_out_shape(name, layer, shape)
            shapes[name] = shape
        self._shapes = shapes

    # -- images
    def preprocess(self, image, fit=None) -> np.ndarray:
        """H x W x 3 RGB image in [0, 255] -> (1, C, H, W) float32 network input (NumPy).

        ``fit``: ``"crop"`` or ``"stretch"`` for an image of another size (None: the net's
        transform's, ``"crop"`` unless set); see :class:`ImageTransform`."""
        return self.transform.preprocess(image, fit)

    def fit_image(self, image, fit=None) -> np.ndarray:
        """The image as the net sees it: (H, W, 3) RGB float32 in [0, 255], framed as
        :meth:`preprocess` frames it (``deprocess(preprocess(image))[0]`` up to rounding)."""
        return self.transform.fit_image(image, fit)

    def deprocess(self, x, clip: bool = False):
        """(N, 3, H, W) network input -> (N, H, W, 3) RGB images (not clipped unless ``clip``)."""
        return self.transform.deprocess(x, clip)

    # -- running
    def _run(self, x, stop):
        if not (isinstance(x, np.ndarray) or _backend.is_cupy(x)):
            raise TypeError(f"{type(self).__name__} takes a numpy or cupy array, got "
                            f"{_backend.describe(x)}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            C, H, W = self.input_shape
            raise ValueError(f"{type(self).__name__} takes preprocessed batches "
                             f"(N, {C}, {H}, {W}), got shape {tuple(x.shape)}; make one with "
                             "net.preprocess(image)")
        return super()._run(x, stop)

    @property
    def device(self) -> str:
        """``"cuda"`` when the weights are CuPy arrays, else ``"cpu"``."""
        for _, layer in self:
            for p in getattr(layer, "_params", ()):
                a = getattr(layer, p, None)
                if a is not None:
                    return "cuda" if _backend.is_cupy(a) else "cpu"
        return "cpu"

    def code(self, image, layer: str):
        """The code Phi0 of an RGB image at a layer, (1, ...) on the net's device."""
        return self.representation(layer).code(image)

    # -- structure
    def code_shape(self, layer: str) -> tuple:
        """Shape of the layer's output for one image (without the batch dimension)."""
        return self._shapes[self._check_name(layer)]

    def receptive_fields(self) -> dict:
        """{layer: (size, stride)} in input pixels, from the architecture.

        size: side of the input window one output neuron sees; stride: distance in input pixels
        between neighbouring neurons. A fully connected layer sees its whole input grid
        (size grows by (grid - 1) * stride); its stride is that of its input grid. Values are
        ints where both axes agree, else (height, width) pairs.
        """
        out = {}
        size, jump = [1, 1], [1, 1]
        grid = self.input_shape[1:]  # the last spatial grid, until a fully connected layer
        for name, layer in self:
            ks = _kernel_stride(layer)
            if ks is not None:
                for a in range(2):
                    size[a] += (ks[0][a] - 1) * jump[a]
                    jump[a] *= ks[1][a]
            elif isinstance(layer, Linear) and grid is not None:
                for a in range(2):
                    size[a] += (grid[a] - 1) * jump[a]
                grid = None
            shape = self._shapes[name]
            if len(shape) == 3:
                grid = shape[1:]
            out[name] = tuple(v[0] if v[0] == v[1] else (v[0], v[1]) for v in (size, jump))
        return out

    def receptive_field(self, layer: str):
        """(size, stride) of the layer's neurons in input pixels; see :meth:`receptive_fields`."""
        return self.receptive_fields()[self._check_name(layer)]

    def window_mask(self, layer: str, size: int = 5) -> np.ndarray:
        """0/1 loss mask selecting the central size x size neurons of a layer (paper Fig. 9).

        Returns (1, h, w) float32, broadcasting over the channels (pass it as ``mask=`` to
        :func:`invert_native.invert`). For an even margin the window is centred; otherwise it
        sits half a neuron up-left of centre.
        """
        shape = self.code_shape(layer)
        if len(shape) != 3:
            raise ValueError(f"layer {layer!r} has no spatial grid (code shape {shape}): a "
                             "neuron window needs a convolutional layer")
        size = int(size)
        h, w = shape[1:]
        if not 1 <= size <= min(h, w):
            raise ValueError(f"window size {size} does not fit layer {layer!r}'s {h}x{w} grid")
        m = np.zeros((1, h, w), np.float32)
        t, l = (h - size) // 2, (w - size) // 2
        m[:, t:t + size, l:l + size] = 1.0
        return m

    def group_mask(self, layer: str, group: int, groups: int = 2) -> np.ndarray:
        """0/1 loss mask selecting the channels of one of ``groups`` equal channel groups
        (paper Fig. 10: CaffeNet's two streams; group 0 = the first half of the channels).

        Returns (C, 1, 1) float32 (pass it as ``mask=`` to :func:`invert_native.invert`).
        ValueError on a net without grouped convolutions (no channel groups to select).
        """
        shape = self.code_shape(layer)
        if len(shape) != 3:
            raise ValueError(f"layer {layer!r} has no channel groups (code shape {shape}): group "
                             "masks apply to convolutional layers")
        if not any(getattr(getattr(lay, "core", lay), "groups", 1) > 1 for _, lay in self):
            raise ValueError(f"this {type(self).__name__} has no grouped convolution, so its "
                             "layers have no channel groups to select (Fig. 10 needs a net such "
                             "as CaffeNet, whose conv2, conv4 and conv5 have two groups)")
        C = shape[0]
        groups, group = int(groups), int(group)
        if groups < 1 or C % groups:
            raise ValueError(f"groups={groups} does not divide layer {layer!r}'s {C} channels")
        if not 0 <= group < groups:
            raise ValueError(f"group must be in [0, {groups}), got {group}")
        m = np.zeros((C, 1, 1), np.float32)
        n = C // groups
        m[group * n:(group + 1) * n] = 1.0
        return m

    def paper_lambdas_of(self, layer: str):
        """(lambda_alpha, lambda_tv) the paper used at this layer, or None (no published values:
        :func:`invert_native.invert` then uses the paper's heuristics)."""
        self._check_name(layer)
        return None

    def representation(self, layer: str) -> "LayerRepresentation":
        """The net up to ``layer`` as a representation for :func:`invert_native.invert`."""
        return LayerRepresentation(self, layer)

    def _describe(self):
        return (f"{self.source}" if self.trained
                else f"UNTRAINED: {self.source}" if self.source else "UNTRAINED")

    def __repr__(self):
        inner = ",\n".join(f"  ({n}): {layer!r}" for n, layer in self)
        return f"{type(self).__name__}({self._describe()}; input {self.input_shape})(\n{inner}\n)"


class LayerRepresentation:
    """A net up to one layer, as :func:`invert_native.invert` takes it.

    ``forward(x)`` (N, C, H, W) -> (N, *code_shape); ``backward(dy)`` -> dx. Carries
    ``paper_lambdas``, ``paper_schedule``, ``deprocess``, ``image_shape`` (H, W, C),
    ``code_shape``, ``receptive_field`` and the Fig. 9 / Fig. 10 masks. It shares the net's
    layers (and their caches): run one representation of a net at a time.
    """

    reuses_outputs = True  # as its layers (see invert_native.nn.Layer)

    def __init__(self, net: ConvNet, layer: str):
        self.net = net
        self.layer = net._check_name(layer)
        self.code_shape = net.code_shape(layer)
        self.paper_lambdas = net.paper_lambdas_of(layer)
        self.paper_schedule = CNN_SCHEDULE
        C, H, W = net.input_shape
        self.image_shape = (H, W, C)

    def forward(self, x):
        return self.net.forward_to(x, self.layer)

    def backward(self, dy):
        return self.net.backward(dy)

    __call__ = forward

    def deprocess(self, x, clip: bool = False):
        return self.net.deprocess(x, clip)

    def preprocess(self, image):
        return self.net.preprocess(image)

    def code(self, image):
        """Phi0 of an RGB image: (1, *code_shape) on the net's device."""
        x = self.net.preprocess(image)
        if self.net.device == "cuda":
            import cupy as cp

            x = cp.asarray(x)
        return self.forward(x)

    @property
    def receptive_field(self):
        """(size, stride) of this layer's neurons in input pixels."""
        return self.net.receptive_field(self.layer)

    def window_mask(self, size: int = 5):
        """Loss mask of the central size x size neurons (paper Fig. 9)."""
        return self.net.window_mask(self.layer, size)

    def group_mask(self, group: int, groups: int = 2):
        """Loss mask of one channel group (paper Fig. 10)."""
        return self.net.group_mask(self.layer, group, groups)

    def __repr__(self):
        return (f"LayerRepresentation({type(self.net).__name__}[{self.net._describe()}] up to "
                f"{self.layer!r}, code {self.code_shape})")


# ------------------------------------------------------------------- CaffeNet
def _layer_order(order):
    if order == "caffenet":
        return CAFFENET_LAYERS
    if order == "alexnet":  # LRN before pooling in conv1 and conv2's stages
        names = list(CAFFENET_LAYERS)
        for a, b in (("mpool1", "norm1"), ("mpool2", "norm2")):
            i, j = names.index(a), names.index(b)
            names[i], names[j] = names[j], names[i]
        return tuple(names)
    raise ValueError(f"order must be 'caffenet' (pool then norm) or 'alexnet' (norm then pool), "
                     f"got {order!r}")


def _weights_order(recorded, given):
    """The layer order from a weights mapping's NPZ_ORDER_KEY entry and the caller's."""
    if recorded is not None:
        a = np.asarray(recorded.get() if _backend.is_cupy(recorded) else recorded)
        if a.ndim != 0 or a.dtype.kind not in "US":
            raise ValueError(f"{NPZ_ORDER_KEY} must be a 0-d string array 'caffenet' or "
                             f"'alexnet', got {a!r}")
        recorded = str(a.item().decode() if a.dtype.kind == "S" else a.item())
        _layer_order(recorded)  # a known order
        if given is not None and given != recorded:
            raise ValueError(f"order={given!r}, but the weights record {recorded!r} order under "
                             f"{NPZ_ORDER_KEY}: the same weights in another order are another "
                             "net; leave order out")
        return recorded
    return "caffenet" if given is None else given


class CaffeNet(ConvNet):
    """The BVLC reference CaffeNet (paper's CNN-A) from native layers; see the module doc.

    Args:
        weights: mapping in the :data:`NPZ_SHAPES` layout (``conv1.weight``, ``conv1.bias``, ...,
            ``fc8.bias``, optionally :data:`NPZ_ORDER_KEY`); fc8 may have any number of
            classes. Arrays are copied as float32; NaN or Inf values are refused.
        mean, channel_order, resample, fit: image handling (:class:`ImageTransform`).
        order: ``"caffenet"`` (pool then norm) or ``"alexnet"`` (norm then pool); None (the
            default): the weights' :data:`NPZ_ORDER_KEY` entry, else ``"caffenet"``. An order
            that contradicts the weights' entry is an error.
        trained: whether the weights come from training (False for :meth:`random`).
        source: where the weights come from (shown in the repr).

    Use :meth:`from_onnx`, :meth:`from_npz` or :meth:`random` rather than the constructor.
    """

    def __init__(self, weights: Mapping, *, mean=None, channel_order="BGR", resample="bilinear",
                 fit="crop", order=None, trained=True,
                 source="weights given to the constructor"):
        if not isinstance(weights, Mapping):
            raise TypeError(f"weights must be a mapping name -> array, got "
                            f"{type(weights).__name__}")
        w = {str(k): v for k, v in weights.items()}
        order = _weights_order(w.pop(NPZ_ORDER_KEY, None), order)
        flag = w.pop(NPZ_TRAINED_KEY, None)  # dict(np.load(f)) of a save_npz file holds it
        if flag is not None and not bool(np.asarray(flag)):
            trained = False
        names = _layer_order(order)
        missing = [k for k in NPZ_SHAPES if k not in w]
        if missing:
            raise ValueError(f"CaffeNet: missing weight tensors: {', '.join(missing)} (expected "
                             "keys conv1.weight, conv1.bias, ..., fc8.bias; see NPZ_SHAPES)")
        extra = sorted(k for k in w if k not in NPZ_SHAPES)
        if extra:
            raise ValueError(f"CaffeNet: unexpected weight tensors: {', '.join(extra)} (expected "
                             "keys conv1.weight, conv1.bias, ..., fc8.bias; see NPZ_SHAPES)")
        arrays = {}
        fc8 = np.shape(w["fc8.weight"])
        classes = int(fc8[0]) if len(fc8) == 2 and fc8[0] > 0 else 1000  # fc8: any class count
        for k, shape in NPZ_SHAPES.items():
            a = w[k]
            a = a if _backend.is_cupy(a) else np.asarray(a)
            if k.startswith("fc8"):
                shape = (classes,) + shape[1:]
            if tuple(a.shape) != shape:
                raise ValueError(f"CaffeNet: {k} has shape {tuple(a.shape)}, expected {shape}")
            xp = _backend.array_module(a)
            if a.dtype == bool or not np.issubdtype(a.dtype, np.number) or \
                    np.issubdtype(a.dtype, np.complexfloating):
                raise TypeError(f"CaffeNet: {k} must hold numbers, got dtype {a.dtype}")
            if not bool(xp.isfinite(a).all()):
                raise ValueError(f"CaffeNet: {k} contains NaN or Inf")
            arrays[k] = a
        self.order = order
        layers = []
        for name in names:
            kind = name.rstrip("0123456789")
            if kind == "conv":
                _, _, _, s, p, g = _CONV[name]
                layer = Conv2d(arrays[f"{name}.weight"], arrays[f"{name}.bias"], stride=s,
                               padding=p, groups=g)
            elif kind == "fc":
                layer = Linear(arrays[f"{name}.weight"], arrays[f"{name}.bias"])
            elif kind == "relu":
                layer = ReLU()
            elif kind == "mpool":
                layer = MaxPool2d(*_POOL)
            else:
                layer = LRN(**_LRN)
            layers.append((name, layer))
        super().__init__(layers, input_shape=_INPUT,
                         transform=ImageTransform(_INPUT[1:], channel_order, mean, resample,
                                                  fit=fit),
                         trained=trained, source=source)

    # -- constructors
    @classmethod
    def random(cls, seed=0, num_classes=1000, **kwargs) -> "CaffeNet":
        """He-initialised, UNTRAINED weights: N(0, 2 / fan_in) (fan_in = in/groups * kh * kw, or
        the fc's inputs), zero biases; reproducible from ``seed``. For tests and for runs where
        no trained weights are at hand: reconstructions show what the architecture alone keeps."""
        rng = np.random.default_rng(seed)
        weights = {}
        for k, shape in NPZ_SHAPES.items():
            if k.startswith("fc8"):
                shape = (int(num_classes),) + shape[1:]
            if k.endswith(".bias"):
                weights[k] = np.zeros(shape, np.float32)
            else:
                std = math.sqrt(2.0 / float(np.prod(shape[1:])))
                a = rng.standard_normal(shape, dtype=np.float32)
                a *= np.float32(std)
                weights[k] = a
        kwargs.setdefault("source", f"random He-initialised weights, seed={seed}")
        return cls(weights, trained=False, **kwargs)

    @classmethod
    def from_npz(cls, path, **kwargs) -> "CaffeNet":
        """Weights from an .npz file in the :data:`NPZ_SHAPES` layout (see the module doc),
        in the order its :data:`NPZ_ORDER_KEY` entry records (CaffeNet's without one), trained
        unless its :data:`NPZ_TRAINED_KEY` entry is False (``trained=`` overrides it).

        ValueError if the file is not an .npz archive or holds pickled (object) arrays, or if
        fc8's weight and bias disagree on the number of classes."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no .npz file at {path}")
        hint = " (an ONNX model: use CaffeNet.from_onnx)" if path.lower().endswith(".onnx") \
            else ""
        if not zipfile.is_zipfile(path):  # np.load would try a pickle or return one array
            raise ValueError(f"{path} is not an .npz archive{hint}: CaffeNet.from_npz reads the "
                             "layout CaffeNet.save_npz writes (np.savez, one array per weight)")
        try:
            with np.load(path, allow_pickle=False) as f:
                weights = {}
                for k in f.files:
                    try:
                        weights[k] = f[k]
                    except ValueError as exc:  # object arrays need pickle
                        raise ValueError(f"{path}: {k} cannot be read without pickle ({exc}); "
                                         "save plain numeric arrays") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ValueError(f"{path} is not a readable .npz archive: {exc}") from None
        if NPZ_TRAINED_KEY in weights:
            flag = weights.pop(NPZ_TRAINED_KEY)
            if flag.shape != () or flag.dtype.kind not in "bi" or int(flag) not in (0, 1):
                raise ValueError(f"{path}: {NPZ_TRAINED_KEY} must be a single boolean (whether "
                                 f"the weights are trained), got {flag.dtype} {flag.shape}")
            kwargs.setdefault("trained", bool(flag))
        w8, b8 = weights.get("fc8.weight"), weights.get("fc8.bias")
        if w8 is not None and b8 is not None and w8.ndim == 2 and b8.ndim == 1 \
                and w8.shape[0] != b8.shape[0]:
            # fc8 may have any number of classes, so neither is wrong on its own: name both
            raise ValueError(f"{path}: fc8.weight has {w8.shape[0]} rows (classes) but fc8.bias "
                             f"has {b8.shape[0]} entries: fc8.weight {tuple(w8.shape)} and "
                             f"fc8.bias {tuple(b8.shape)} must agree")
        kwargs.setdefault("source", f"weights from {path}")
        return cls(weights, **kwargs)

    @classmethod
    def from_onnx(cls, path, **kwargs) -> "CaffeNet":
        """Weights from an ONNX CaffeNet or AlexNet (e.g. the model zoo's), mapped to the
        paper's layer names; see :func:`invert_native.onnx_loader.caffenet_weights`."""
        from ..onnx_loader import caffenet_weights

        weights, order = caffenet_weights(path)
        where = "an ONNX model" if hasattr(path, "graph") else os.fspath(path)
        given = kwargs.pop("order", None)
        if given is not None and given != order:
            raise ValueError(f"order={given!r}, but {where} is in {order!r} order "
                             f"({'pool then norm' if order == 'caffenet' else 'norm then pool'}): "
                             "the order is read from the graph; leave it out")
        kwargs.setdefault("source", f"weights from {where}")
        return cls({**weights, NPZ_ORDER_KEY: order}, **kwargs)

    def weights(self) -> dict:
        """The weights in the :data:`NPZ_SHAPES` layout, as NumPy float32 arrays (the order is
        ``self.order``; :meth:`save_npz` records it)."""
        out = {}
        for name, layer in self:
            if isinstance(layer, (Conv2d, Linear)):
                for p in ("weight", "bias"):
                    a = getattr(layer, p)
                    out[f"{name}.{p}"] = a.get() if _backend.is_cupy(a) else a.copy()
        return out

    def save_npz(self, path) -> None:
        """Write the weights in the :data:`NPZ_SHAPES` layout with the layer order under
        :data:`NPZ_ORDER_KEY` and whether they are trained under :data:`NPZ_TRAINED_KEY`
        (readable by :meth:`from_npz`: a file saved from :meth:`random` loads as untrained)."""
        np.savez(os.fspath(path), **self.weights(), **{NPZ_ORDER_KEY: np.array(self.order),
                                                       NPZ_TRAINED_KEY: np.array(self.trained)})

    def paper_lambdas_of(self, layer: str):
        """(2.16e8, lambda_V): lambda_V = 0.5 for layers 1-6, 5 for 7-12, 50 for 13-20 (the
        paper's Table 3, bold rows; layer number = position in the chain)."""
        i = self.index(layer) + 1
        return (2.16e8, 0.5 if i <= 6 else 5.0 if i <= 12 else 50.0)

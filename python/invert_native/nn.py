"""Layers with a forward and a backward-to-input, and a Sequential container.

``layer.forward(x)`` computes the output and keeps what ``layer.backward(dy)``
needs (the pooling argmax, the LRN scale, the ReLU input); ``backward(dy)``
returns the gradient with respect to the input of the last ``forward``. There
are no weight gradients: inverting a representation only needs dPhi/dx.

Parameters live on one device. Layers built from NumPy weights run on the CPU;
``layer.to("cuda")`` moves them to the current CuPy device (and
``layer.to("cpu")`` back). Weights given to a constructor are copied as
float32, so later changes to the caller's arrays do not reach the layer.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Mapping

import numpy as np

from . import _backend, ops
from .ops._dispatch import _int, _pair

__all__ = ["Layer", "Conv2d", "ReLU", "MaxPool2d", "LRN", "Linear", "Sequential"]


def _as_param(a, name, ndim):
    """A float32 C-contiguous copy of a weight array (NumPy or CuPy)."""
    if _backend.is_cupy(a):
        cp = _backend.array_module(a)
        out = cp.array(a, dtype=cp.float32, order="C", copy=True)
    else:
        try:
            out = np.array(a, dtype=np.float32, order="C", copy=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be an array of numbers: {exc}") from None
    if out.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(out.shape)}")
    if not bool((_backend.array_module(out).isfinite(out)).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return out


def _check_device(device):
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        _backend.cuda_core()  # raises, saying what is missing


def _move(a, device):
    """a on the device (checked by _check_device)."""
    if a is None:
        return None
    if device == "cpu":
        return a.get() if _backend.is_cupy(a) else a
    import cupy as cp

    return cp.asarray(a)


class Layer:
    """Base class: ``forward(x)`` then ``backward(dy)`` -> dx."""

    _params: tuple[str, ...] = ()
    # Keeps no op output across forward/backward passes, so that invert() may run it
    # with reused output arrays (invert_native.ops.Workspace). A subclass that keeps
    # outputs of one pass for the next must set this to False.
    reuses_outputs = True

    def __init__(self):
        self._cache = None

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward: run "
                               "forward(x) first (backward differentiates the last forward)")
        return self._cache

    def to(self, device: str) -> "Layer":
        """Move the parameters to ``"cpu"`` (NumPy) or ``"cuda"`` (CuPy); returns self."""
        _check_device(device)
        for name in self._params:
            setattr(self, name, _move(getattr(self, name), device))
        self._cache = None
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Conv2d(Layer):
    """2-D convolution, weight (K, C // groups, kh, kw), optional bias (K,)."""

    _params = ("weight", "bias")

    def __init__(self, weight, bias=None, stride=1, padding=0, groups=1):
        super().__init__()
        self.weight = _as_param(weight, "Conv2d weight", 4)
        self.bias = None if bias is None else _as_param(bias, "Conv2d bias", 1)
        if self.bias is not None and self.bias.shape[0] != self.weight.shape[0]:
            raise ValueError(f"Conv2d bias has {self.bias.shape[0]} entries but weight has "
                             f"{self.weight.shape[0]} filters")
        self.stride, self.padding, self.groups = stride, padding, groups
        # fail now rather than at the first forward
        _pair(stride, "Conv2d", "stride"), _pair(padding, "Conv2d", "padding")
        g = _int(groups, "Conv2d", "groups")
        if g <= 0 or self.weight.shape[0] % g:
            raise ValueError(f"Conv2d: groups={groups} must be positive and divide the "
                             f"{self.weight.shape[0]} filters")

    def forward(self, x):
        y = ops.conv2d_forward(x, self.weight, self.bias, self.stride, self.padding, self.groups)
        self._cache = tuple(x.shape)
        return y

    def backward(self, dy):
        x_shape = self._cached()
        return ops.conv2d_backward(dy, self.weight, x_shape, self.stride, self.padding, self.groups)

    def __repr__(self):
        K, Cg, kh, kw = self.weight.shape
        return (f"Conv2d({Cg * self.groups}->{K}, kernel={kh}x{kw}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups})")


class ReLU(Layer):
    """max(x, 0); the gradient at 0 is 0."""

    def forward(self, x):
        y = ops.relu_forward(x)
        self._cache = x
        return y

    def backward(self, dy):
        return ops.relu_backward(self._cached(), dy)


class MaxPool2d(Layer):
    """Max pooling, Caffe's ceil-mode output size; ties go to the first maximum."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        k = _pair(kernel_size, "MaxPool2d", "kernel_size")
        p = _pair(padding, "MaxPool2d", "padding")
        if stride is not None:
            _pair(stride, "MaxPool2d", "stride")
        if min(k) <= 0 or min(p) < 0 or p[0] >= k[0] or p[1] >= k[1]:
            raise ValueError(f"MaxPool2d: kernel_size must be positive and padding in "
                             f"[0, kernel_size), got kernel_size={kernel_size}, padding={padding}")

    def forward(self, x):
        y, argmax = ops.maxpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        self._cache = (tuple(x.shape), argmax)
        return y

    def backward(self, dy):
        x_shape, argmax = self._cached()
        return ops.maxpool2d_backward(dy, argmax, x_shape, self.kernel_size, self.stride,
                                      self.padding)

    def __repr__(self):
        return f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding})"


class LRN(Layer):
    """Caffe's cross-channel LRN: y = x / (k + alpha/size * sum x^2)^beta."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        y, scale = ops.lrn_forward(x, self.size, self.alpha, self.beta, self.k)
        self._cache = (x, y, scale)
        return y

    def backward(self, dy):
        x, y, scale = self._cached()
        return ops.lrn_backward(x, y, scale, dy, self.size, self.alpha, self.beta, self.k)

    def __repr__(self):
        return f"LRN(size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k})"


class Linear(Layer):
    """Fully connected: y = flatten(x) @ weight.T + bias, weight (O, I)."""

    _params = ("weight", "bias")

    def __init__(self, weight, bias=None):
        super().__init__()
        self.weight = _as_param(weight, "Linear weight", 2)
        self.bias = None if bias is None else _as_param(bias, "Linear bias", 1)
        if self.bias is not None and self.bias.shape[0] != self.weight.shape[0]:
            raise ValueError(f"Linear bias has {self.bias.shape[0]} entries but weight has "
                             f"{self.weight.shape[0]} outputs")

    def forward(self, x):
        y = ops.linear_forward(x, self.weight, self.bias)
        self._cache = tuple(x.shape)
        return y

    def backward(self, dy):
        return ops.linear_backward(dy, self.weight, self._cached())

    def __repr__(self):
        O, I = self.weight.shape
        return f"Linear({I}->{O})"


class Sequential(Layer):
    """A chain of layers, optionally named.

    ``Sequential([a, b])`` names the layers "0", "1", ...;
    ``Sequential([("conv1", a), ("relu1", b)])`` or a mapping names them.
    ``forward_to(x, name)`` stops after the named layer; the following
    ``backward(dy)`` starts from that layer.
    """

    def __init__(self, layers: Iterable | Mapping):
        super().__init__()
        items = list(layers.items()) if isinstance(layers, Mapping) else list(layers)
        named = OrderedDict()
        for i, item in enumerate(items):
            if isinstance(item, Layer):
                name, layer = str(i), item
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Layer):
                name, layer = str(item[0]), item[1]
            else:
                raise TypeError(f"Sequential: entry {i} must be a Layer or a (name, Layer) pair, "
                                f"got {item!r}")
            if name in named:
                raise ValueError(f"Sequential: layer name {name!r} is used twice")
            named[name] = layer
        if not named:
            raise ValueError("Sequential needs at least one layer")
        self._layers = named
        self._stop = None  # number of layers the last forward ran

    @property
    def names(self) -> list[str]:
        return list(self._layers)

    def __len__(self):
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers.items())

    def __getitem__(self, key):
        if isinstance(key, int):
            return list(self._layers.values())[key]
        return self._layers[self._check_name(key)]

    def _check_name(self, name):
        if name not in self._layers:
            raise ValueError(f"no layer named {name!r}; the layers are: {', '.join(self._layers)}")
        return name

    def index(self, name: str) -> int:
        """Position of the named layer."""
        return self.names.index(self._check_name(name))

    def forward(self, x):
        return self._run(x, len(self._layers))

    def forward_to(self, x, name: str):
        """Run the layers up to and including ``name``; return that layer's output."""
        return self._run(x, self.index(name) + 1)

    def _run(self, x, stop):
        for layer in list(self._layers.values())[:stop]:
            x = layer.forward(x)
        self._stop = stop
        self._cache = True
        return x

    def backward(self, dy):
        self._cached()
        for layer in reversed(list(self._layers.values())[: self._stop]):
            dy = layer.backward(dy)
        return dy

    def to(self, device):
        _check_device(device)
        for layer in self._layers.values():
            layer.to(device)
        self._cache = None
        return self

    def __repr__(self):
        inner = ",\n".join(f"  ({n}): {layer!r}" for n, layer in self._layers.items())
        return f"Sequential(\n{inner}\n)"

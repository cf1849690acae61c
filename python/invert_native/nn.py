"""Layers with a forward and a backward-to-input, and a Sequential container.

``layer.forward(x)`` computes the output and keeps what ``layer.backward(dy)``
needs (the pooling argmax, the LRN scale, the ReLU input); ``backward(dy)``
returns the gradient with respect to the input of the last ``forward``. There
are no weight gradients: inverting a representation only needs dPhi/dx.

Parameters live on one device. Layers built from NumPy weights run on the CPU;
``layer.to("cuda")`` moves them to the current CuPy device (and
``layer.to("cpu")`` back). Weights given to a constructor are copied as
float32, so later changes to the caller's arrays do not reach the layer.
Constructors check their hyper-parameters (stride, padding, groups, kernel
size, LRN constants) with the checks of the ops and fail with the same
messages, rather than at the first forward.

One layer object may appear at several positions of a :class:`Sequential`
(``Sequential([relu, conv, relu])``): its parameters are shared, and each
position keeps its own backward state, so the gradient is that of the chain, as
with a PyTorch module used twice.
"""

from __future__ import annotations

import numbers

from collections import OrderedDict
from typing import Iterable, Mapping

import numpy as np

from . import _backend, ops
from .ops._core import conv2d_hyper, lrn_hyper, maxpool2d_hyper

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
    """Base class: ``forward(x)`` then ``backward(dy)`` -> dx.

    A subclass keeps everything its ``backward`` needs in ``self._cache`` (set by
    ``forward``, read through ``self._cached()``): :class:`Sequential` saves and restores
    that attribute to run one object at several positions. A subclass that keeps backward
    state elsewhere overrides ``_save_state`` and ``_restore_state``.
    """

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

    def _save_state(self):
        """What ``backward`` needs from the last ``forward`` (see the class doc)."""
        return self._cache

    def _restore_state(self, state):
        """Make ``backward`` differentiate the ``forward`` whose state this was."""
        self._cache = state

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
        # fail now rather than at the first forward, with the op's messages
        g = conv2d_hyper("Conv2d", stride, padding, groups)[-1]
        if self.weight.shape[0] % g:
            raise ValueError(f"Conv2d: groups={g} does not divide the {self.weight.shape[0]} "
                             "filters of weight")

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
        maxpool2d_hyper("MaxPool2d", kernel_size, stride, padding)  # the op's checks, now

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
        lrn_hyper("LRN", size, alpha, beta, k)  # the op's checks, now

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
    """Fully connected: y = flatten(x) @ weight.T + bias, weight (O, I).

    On the CPU, a single sample (batch 1: a representation's code, an inversion without
    restarts) is multiplied through a transposed copy of the weight that the layer keeps,
    whose row i is read only where ``x[0, i] != 0``: behind a ReLU or a max-pool, forward then
    reads only the weights of the active inputs, as backward reads only those of the active
    outputs (CaffeNet's fc6-fc8 with random weights, 30-50 % of inputs zero: 25-40 % faster).
    The copy takes as much memory as the weight; ``transposed_copy=False`` does without it.
    The same sums are grouped differently from a batch's (float32 rounding apart, the same
    function). ``weight`` is kept read-only, so that the copy always matches it: assign a new
    array to ``layer.weight`` to change it.
    """

    _params = ("weight", "bias")

    def __init__(self, weight, bias=None, transposed_copy: bool = True):
        super().__init__()
        self.transposed_copy = bool(transposed_copy)
        self.weight = weight
        self.bias = None if bias is None else _as_param(bias, "Linear bias", 1)
        if self.bias is not None and self.bias.shape[0] != self.weight.shape[0]:
            raise ValueError(f"Linear bias has {self.bias.shape[0]} entries but weight has "
                             f"{self.weight.shape[0]} outputs")

    @property
    def weight(self):
        return self._weight

    @weight.setter
    def weight(self, value):
        w = _as_param(value, "Linear weight", 2)  # a copy of its own
        if isinstance(w, np.ndarray):
            w.setflags(write=False)
        self._weight = w
        self._weight_t = None  # made again from the new weight when needed

    def _transposed(self):
        if self._weight.flags.writeable:
            # a copied or unpickled layer (arrays come back writeable, so its weight may have
            # been edited since the copy was made): make the copy again, from a read-only weight
            self._weight.setflags(write=False)
            self._weight_t = None
        if self._weight_t is None:
            wt = np.ascontiguousarray(self._weight.T)
            wt.setflags(write=False)
            self._weight_t = wt
        return self._weight_t

    def forward(self, x):
        w = self._weight
        if (self.transposed_copy and isinstance(w, np.ndarray) and isinstance(x, np.ndarray)
                and x.dtype == np.float32 and x.ndim >= 2 and x.shape[0] == 1
                and x.size == w.shape[1]):
            # y = x @ W^T is linear_backward's product dy @ W with dy = x and W -> W^T: it
            # reads only the rows of W^T whose coefficient x[0, i] is nonzero.
            y = ops.linear_backward(x.reshape(1, -1), self._transposed(), (1, w.shape[0]))
            if self.bias is not None:
                y += self.bias
        else:
            y = ops.linear_forward(x, w, self.bias)
        self._cache = tuple(x.shape)
        return y

    def backward(self, dy):
        return ops.linear_backward(dy, self._weight, self._cached())

    def __repr__(self):
        O, I = self.weight.shape
        return f"Linear({I}->{O})"


class Sequential(Layer):
    """A chain of layers, optionally named.

    ``Sequential([a, b])`` names the layers "0", "1", ...;
    ``Sequential([("conv1", a), ("relu1", b)])`` or a mapping names them.
    ``forward_to(x, layer)`` stops after a layer given by name or by position;
    the following ``backward(dy)`` starts from that layer.

    The same layer object may sit at several positions (``Sequential([relu, conv,
    relu])``): forward keeps each position's backward state (``Layer._save_state``)
    and backward restores it before that position runs, so the gradient is the
    chain's, parameters are shared, and ``to(device)`` moves them once.
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
        # self._cache (after a forward): the backward state of each position that ran

    @property
    def names(self) -> list[str]:
        return list(self._layers)

    def __len__(self):
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers.items())

    def __getitem__(self, key):
        """A layer by name or position (as :meth:`index`)."""
        return list(self._layers.values())[self.index(key)]

    def _check_name(self, name):
        if name not in self._layers:
            raise ValueError(f"no layer named {name!r}; the layers are: {', '.join(self._layers)}")
        return name

    def index(self, layer: str | int) -> int:
        """Position (0-based) of a layer given by name, or by position (negative counts from
        the end, as in a list)."""
        if isinstance(layer, numbers.Integral) and not isinstance(layer, (bool, np.bool_)):
            layer, n = int(layer), len(self._layers)
            if not -n <= layer < n:
                raise ValueError(f"layer position {layer} is out of range for {n} layers "
                                 f"({', '.join(self._layers)})")
            return layer % n
        if not isinstance(layer, str):
            raise TypeError(f"a layer is given by its name (a str) or its position (an int), "
                            f"got {layer!r}; the layers are: {', '.join(self._layers)}")
        return self.names.index(self._check_name(layer))

    def forward(self, x):
        return self._run(x, len(self._layers))

    def forward_to(self, x, layer: str | int):
        """Run the layers up to and including ``layer`` (a name, or a position as in
        :meth:`index`); return that layer's output."""
        return self._run(x, self.index(layer) + 1)

    def _run(self, x, stop):
        self._cache = None  # a forward that fails half-way leaves nothing to differentiate
        states = []
        for layer in list(self._layers.values())[:stop]:
            x = layer.forward(x)
            states.append(layer._save_state())
        self._cache = states
        return x

    def backward(self, dy):
        states = self._cached()
        layers = list(self._layers.values())[: len(states)]
        for layer, state in zip(reversed(layers), reversed(states)):
            layer._restore_state(state)
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

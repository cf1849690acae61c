"""Plain sequential ONNX CNNs (CaffeNet, AlexNet, VGG-style nets) as native layer chains.

:class:`OnnxNet` reads an ONNX file (or ``onnx.ModelProto``) with the ``onnx``
package (``pip install 'invert-native[onnx]'``) and builds a
:class:`~invert_native.representations.caffenet.ConvNet` of native layers,
named after the ONNX nodes (the node's name, or its first output's name when
the node has none). :func:`caffenet_weights` maps a CaffeNet / AlexNet graph to
:class:`~invert_native.CaffeNet`'s paper names.

Graphs
------
The graph must be a chain: one image input (N, C, H, W); every node reads the
previous node's output (plus initializers or ``Constant`` tensors, whose value
may be given as ``value``, ``value_int(s)`` or ``value_float(s)``) and nothing
else reads it -- except shape computations (below). A node input that is no
initializer, Constant, node output or graph input (a weight left out of the
file), or a weight listed as a graph input without an initializer, is an error
that names the node and the tensor. Unnamed nodes are named after their first
output in layer names and messages (``#index`` where even that is empty).
Supported ops (default domain; opset 1-style legacy attributes such as
``broadcast``, ``is_test`` and ``consumed_inputs`` are ignored):

* ``Conv`` -- 2-D, any ``group``, ``strides``, ``pads`` (``[top, left, bottom,
  right]``, asymmetric ones included) or ``auto_pad``; ``dilations`` must be 1.
  The native conv pads symmetrically: extra bottom/right padding is added as
  zeros before it, less bottom/right padding crops its output.
* ``MaxPool`` -- 2-D, ``kernel_shape``, ``strides``, ``pads``/``auto_pad``,
  ``ceil_mode`` 0 (floor, ONNX's default) or 1. The native pool has Caffe's
  ceil-mode size with the top/left padding on both sides (padded cells never
  win); where ONNX's floor mode or a smaller bottom/right padding gives fewer
  windows, the extra last row/column is cropped (the remaining windows are the
  same). A model whose windows the native pool cannot produce (top/left
  padding >= kernel, or more windows than ceil mode gives) is refused.
  ``dilations`` must be 1; the ``Indices`` output is not supported.
* ``LRN`` -- odd ``size``; ONNX's ``alpha`` is divided by ``size`` (the spec's
  ``bias + alpha / size * square_sum``), exactly as in Caffe, so the native
  LRN takes the attributes unchanged.
* ``Gemm`` -- the activation as A (``transA`` = 0), B and C initializers:
  weight = ``alpha * B^T`` (or ``alpha * B`` with ``transB`` = 1), bias =
  ``beta * C`` (C broadcast to (outputs,)).
* ``MatMul`` with an initializer B (in, out), optionally followed by ``Add``
  of an initializer (the bias, either operand): one fully connected layer.
* ``Flatten`` (axis 1) and ``Reshape`` to 2-D keeping the batch
  (``[0, -1]``, ``[1, -1]``, ``[-1, in]``, ...): one layer that flattens. The
  target shape may also be computed from the input's own shape, as PyTorch
  exports ``x.view(x.size(0), -1)`` with a dynamic batch (``Shape`` ->
  ``Gather`` -> ``Unsqueeze`` -> ``Concat`` -> ``Reshape``; also ``Slice``,
  ``Squeeze``, ``Cast``, integer ``Mul``/``Div``/``Add``/``Sub``): such side
  computations are evaluated symbolically (the batch size is the shape's
  first entry) and must come to (batch, -1) or (batch, features).
* ``Dropout`` (inference mode; a constant ``training_mode`` of true is
  refused) and ``Identity``: no layer (the identity at inference).
* ``AveragePool`` with kernel 1, stride 1 and no padding (what torchvision's
  ``AdaptiveAvgPool2d`` exports when its input already has the output size):
  no layer. ``GlobalAveragePool`` on a 1 x 1 input: a layer that copies its
  input (:class:`GlobalPool1x1`). Other average pools are refused.
* ``Softmax`` over the features of a 2-D input: a layer (the loader's own,
  in NumPy/CuPy; :class:`~invert_native.CaffeNet` drops it, fc8 being the
  paper's last layer).

Constant side computations are folded first: a node of ``FOLD_OPS``
(``Identity``, ``Cast``, ``Transpose``, ``Unsqueeze``, ``Squeeze``, ``Concat``,
``Gather``, ``Reshape``, ``Shape``, ``Flatten``, ``Mul``, ``Add``, ``Sub``,
``Div``, ``Neg``) whose inputs are all initializers, Constants or earlier folded
values is evaluated in NumPy and its output becomes a constant. So PyTorch's
opset 7/8 ``Constant -> Cast -> Reshape`` and, with ``do_constant_folding=False``,
``Transpose(weight) -> MatMul`` and ``Identity(weight)`` load as the values they
compute; one that cannot be evaluated is an error naming its node.

Anything else (``BatchNormalization``, ``Concat`` of activations, other
``AveragePool`` windows, ...) raises :class:`OnnxError` naming the op and the
node.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from . import _backend
from .ops._dispatch import new_array_like as _scratch  # reused across invert() iterations
from .nn import LRN, Conv2d, Layer, Linear, MaxPool2d, ReLU
from .representations.caffenet import (CAFFENET_LAYERS, ConvNet, ImageTransform, _LRN, _CONV,
                                       _POOL, _layer_order)

__all__ = ["OnnxNet", "OnnxError", "read_onnx", "caffenet_weights", "Flatten", "Softmax",
           "GlobalPool1x1", "SUPPORTED_OPS", "CHAIN_OPS", "SHAPE_OPS", "FOLD_OPS"]

# ops that make (or pass on) layers of the chain
CHAIN_OPS = ("Conv", "Relu", "MaxPool", "LRN", "Gemm", "MatMul", "Add", "Flatten", "Reshape",
             "Dropout", "Identity", "Softmax", "AveragePool", "GlobalAveragePool", "Constant")
# ops accepted only where they compute a Reshape's target shape from a chain tensor's Shape
SHAPE_OPS = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Identity",
             "Mul", "Div", "Add", "Sub")
SUPPORTED_OPS = CHAIN_OPS + tuple(o for o in SHAPE_OPS if o not in CHAIN_OPS)
# what each input of a chain op is, for messages
_ROLES = {"Conv": ("input", "weight", "bias"), "Gemm": ("input", "weight", "bias"),
          "MatMul": ("input", "weight"), "Reshape": ("input", "shape"),
          "Dropout": ("input", "ratio", "training_mode"), "Add": ("input", "bias")}


class OnnxError(ValueError):
    """An ONNX graph this loader cannot turn into a chain of native layers."""


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("reading ONNX files needs the 'onnx' package: pip install "
                          f"'invert-native[onnx]' (or pip install onnx): {exc}") from None
    return onnx


# ----------------------------------------------------------------- layers
def _window_count(H, k, s, pb, pe, ceil_mode):
    """ONNX's number of windows along one axis."""
    span = H + pb + pe - k
    if span < 0:
        return 0
    if ceil_mode:
        o = -(-span // s) + 1
        if (o - 1) * s >= H + pb:  # a last window starting in the end padding is dropped
            o -= 1
        return o
    return span // s + 1


def _same_pads(H, k, s, mode):
    """(begin, end) of ONNX's auto_pad SAME_UPPER / SAME_LOWER along one axis."""
    total = max((-(-H // s) - 1) * s + k - H, 0)
    small = total // 2
    return (small, total - small) if mode == "SAME_UPPER" else (total - small, small)


class _Windowed(Layer):
    """A native Conv2d / MaxPool2d with ONNX's padding rules (see the module doc).

    ``core`` is the native layer; ``pads`` (top, left, bottom, right) or ``auto_pad``
    say ONNX's padding, ``ceil_mode`` its pooling size rule.
    """

    def __init__(self, core, kernel, stride, pads=(0, 0, 0, 0), auto_pad="NOTSET", ceil_mode=0,
                 where=""):
        super().__init__()
        self.core, self.kernel, self.stride = core, tuple(kernel), tuple(stride)
        self.pads, self.auto_pad, self.ceil_mode = tuple(pads), auto_pad, ceil_mode
        self.where = where
        self.pool = isinstance(core, MaxPool2d)

    def _plan(self, H, W):
        """-> (pad begin (2,), zeros to append (2,), ONNX output size (2,))."""
        begin, extend, out = [], [], []
        for a, n in enumerate((H, W)):
            k, s = self.kernel[a], self.stride[a]
            if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                pb, pe = _same_pads(n, k, s, self.auto_pad)
            elif self.auto_pad == "VALID":
                pb, pe = 0, 0
            else:
                pb, pe = self.pads[a], self.pads[a + 2]
            o = _window_count(n, k, s, pb, pe, self.ceil_mode if self.pool else 0)
            if o < 1:
                raise ValueError(f"{self.where}: a {k}-wide window does not fit an input of "
                                 f"size {n} with padding ({pb}, {pe})")
            if self.pool:
                if pb >= k:
                    raise OnnxError(f"{self.where}: padding {pb} >= kernel {k} is not supported "
                                    "by the native max-pool")
                native = _window_count(n, k, s, pb, pb, 1)
                if o > native:
                    raise OnnxError(f"{self.where}: ONNX gives {o} windows along an axis of size "
                                    f"{n} (pads {pb}, {pe}, ceil_mode={self.ceil_mode}) but the "
                                    f"native max-pool gives {native}")
                extend.append(0)
            else:
                extend.append(max(pe - pb, 0))
            begin.append(pb)
            out.append(o)
        return tuple(begin), tuple(extend), tuple(out)

    def out_shape(self, shape):
        if len(shape) != 3:
            raise ValueError(f"{self.where}: needs a (C, H, W) input, got shape {tuple(shape)}")
        if not self.pool:
            K, Cg = self.core.weight.shape[:2]
            if shape[0] != Cg * self.core.groups:
                raise ValueError(f"{self.where}: takes {Cg * self.core.groups} channels, but its "
                                 f"input has shape {tuple(shape)}")
        _, _, out = self._plan(shape[1], shape[2])
        C = shape[0] if self.pool else self.core.weight.shape[0]
        return (C,) + out

    def kernel_stride(self):
        return self.kernel, self.stride

    def forward(self, x):
        begin, extend, (Ho, Wo) = self._plan(x.shape[2], x.shape[3])
        self.core.padding = begin
        xin = x
        if extend != (0, 0):
            N, C, H, W = x.shape
            xin = _scratch(x, (N, C, H + extend[0], W + extend[1]))
            xin[...] = 0  # asymmetric zero padding at the end (conv only: pools never extend)
            xin[:, :, :H, :W] = x
        y = self.core.forward(xin)
        full = tuple(y.shape)
        if full[2:] != (Ho, Wo):
            crop = _scratch(y, y.shape[:2] + (Ho, Wo))
            crop[...] = y[:, :, :Ho, :Wo]
            y = crop
        self._cache = (tuple(x.shape), begin, full)
        return y

    def backward(self, dy):
        x_shape, begin, full = self._cached()
        self.core.padding = begin
        if tuple(dy.shape) != full:
            d = _scratch(dy, full)
            d[...] = 0
            d[:, :, :dy.shape[2], :dy.shape[3]] = dy
            dy = d
        dx = self.core.backward(dy)
        if tuple(dx.shape) != x_shape:
            crop = _scratch(dx, x_shape)
            crop[...] = dx[:, :, :x_shape[2], :x_shape[3]]
            dx = crop
        return dx

    def to(self, device):
        self.core.to(device)
        self._cache = None
        return self

    @property
    def _params(self):
        return self.core._params

    @property
    def weight(self):
        return getattr(self.core, "weight", None)

    def __repr__(self):
        pad = self.auto_pad if self.auto_pad != "NOTSET" else f"pads={list(self.pads)}"
        if self.pool:
            return (f"MaxPool2d(kernel_size={self.kernel}, stride={self.stride}, {pad}, "
                    f"ceil_mode={self.ceil_mode})")
        K, Cg, kh, kw = self.core.weight.shape
        return (f"Conv2d({Cg * self.core.groups}->{K}, kernel={kh}x{kw}, stride={self.stride}, "
                f"{pad}, groups={self.core.groups})")


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)) in C order; backward restores the shape.

    ``features``: the per-sample size the graph asks for (checked), or None. The output is a
    copy, not a view of the input: a caller that changes it in place leaves the previous
    layer's output (which that layer may keep for its backward) alone.
    """

    def __init__(self, features=None):
        super().__init__()
        self.features = features

    def forward(self, x):
        self._cache = tuple(x.shape)
        y = _scratch(x, (x.shape[0], int(np.prod(x.shape[1:]))))
        y[...] = x.reshape(y.shape)
        return y

    def backward(self, dy):
        return dy.reshape(self._cached())

    def out_shape(self, shape):
        n = int(np.prod(shape))
        if self.features is not None and n != self.features:
            raise OnnxError(f"Flatten to {self.features} features, but the input has shape "
                             f"{tuple(shape)} = {n} values per sample")
        return (n,)


class Softmax(Layer):
    """Softmax over the features of (N, F) inputs (float32, NumPy or CuPy).

    Backward uses the output y; forward keeps y and returns a copy of it, so a caller may
    change the returned array in place (invert's residual does) without changing the gradient.
    """

    def forward(self, x):
        if x.ndim != 2:
            raise ValueError(f"Softmax takes (N, F) inputs, got shape {tuple(x.shape)}")
        xp = _backend.array_module(x)
        e = xp.exp(x - x.max(axis=1, keepdims=True))
        y = (e / e.sum(axis=1, keepdims=True)).astype(xp.float32)
        self._cache = y
        return y.copy()

    def backward(self, dy):
        y = self._cached()
        return (y * (dy - (dy * y).sum(axis=1, keepdims=True))).astype(y.dtype)

    def out_shape(self, shape):
        if len(shape) != 1:
            raise ValueError(f"Softmax takes (N, F) inputs, got per-sample shape {tuple(shape)}")
        return tuple(shape)


class GlobalPool1x1(Layer):
    """ONNX's GlobalAveragePool on a 1 x 1 input: the identity (other sizes are refused).

    Forward returns a copy (see :class:`Flatten`); backward passes dy through.
    """

    def __init__(self, where=""):
        super().__init__()
        self.where = where

    def forward(self, x):
        if tuple(x.shape[2:]) != (1, 1):
            raise ValueError(f"{self.where}: takes (N, C, 1, 1) inputs, got {tuple(x.shape)}")
        y = _scratch(x, x.shape)
        y[...] = x
        return y

    def backward(self, dy):
        return dy

    def out_shape(self, shape):
        if len(shape) != 3 or tuple(shape[1:]) != (1, 1):
            raise OnnxError(f"{self.where}: only a 1 x 1 input is supported (there it is the "
                            f"identity), got shape {tuple(shape)}")
        return tuple(shape)

    def __repr__(self):
        return "GlobalAveragePool(1x1: identity)"


# ------------------------------------------------------------------- parsing
@dataclass
class LayerSpec:
    """One layer read from the graph: ``op`` is conv, relu, pool, lrn, fc, flatten, softmax or
    gap (a GlobalAveragePool, the identity on 1 x 1 inputs)."""

    name: str
    op: str
    output: str  # the ONNX tensor holding this layer's output
    where: str  # "<OpType> node 'name'", for messages
    attrs: dict = field(default_factory=dict)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None


@dataclass
class OnnxGraph:
    input_name: str
    input_shape: tuple  # (C, H, W), None where the file leaves a size symbolic
    layers: list
    opset: int


def _attrs(onnx, node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _decode(v):
    return v.decode() if isinstance(v, bytes) else v


def _who(node, i):
    """A node for messages: "<Op> node 'name'" (its name, else its first output), else "#i"."""
    name = node.name or (node.output[0] if len(node.output) else "")
    return f"{node.op_type} node {name!r}" if name else f"{node.op_type} node #{i}"


def _where(node, i):
    who = _who(node, i)
    return who if who.endswith(f"#{i}") else f"{who} (#{i})"


def _role(op, j):
    """What input j of a chain op is, for messages."""
    if op == "Add":
        return "bias"
    roles = _ROLES.get(op, ())
    return roles[j] if j < len(roles) else f"input {j}"


def _constant(onnx, numpy_helper, node, where):
    """The value of a Constant node (any of its value attributes but sparse or strings)."""
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if a.name == "value":
            return numpy_helper.to_array(v)
        if a.name in ("value_int", "value_ints"):
            return np.array(v, np.int64)
        if a.name in ("value_float", "value_floats"):
            return np.array(v, np.float32)
    got = [a.name for a in node.attribute]
    raise OnnxError(f"{where}: a Constant with {got or 'no value'} is not supported (only value, "
                    "value_int(s) and value_float(s))")


# ------------------------------------------------------- constant folding
# ops evaluated ahead of the chain when every input is a constant (initializer, Constant or
# an earlier folded output): what exporters leave in when they do not fold constants
# themselves (PyTorch's Constant -> Cast -> Reshape at opsets 7/8, Transpose(weight) -> MatMul
# and Identity(weight) with do_constant_folding=False)
FOLD_OPS = ("Identity", "Cast", "Transpose", "Unsqueeze", "Squeeze", "Concat", "Gather",
            "Reshape", "Shape", "Flatten", "Mul", "Add", "Sub", "Div", "Neg")


def _axes(a, args, k):
    """An op's axes: the attribute (older opsets) or input k (newer), or None."""
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(args) > k and args[k] is not None:
        return [int(v) for v in np.asarray(args[k]).ravel()]
    return None


def _fold_op(onnx, op, a, args):
    """The value of `op` on constant (NumPy) arguments (None: an absent optional input)."""
    x = args[0]
    if op == "Identity":
        return x
    if op == "Cast":
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(int(a["to"])))
    if op == "Transpose":
        perm = a.get("perm")
        return np.transpose(x, None if perm is None else [int(v) for v in perm])
    if op == "Unsqueeze":
        axes = _axes(a, args, 1)
        r = x.ndim + len(axes)
        return x.reshape(_unsqueezed(x.shape, {v % r for v in axes}))
    if op == "Squeeze":
        axes = _axes(a, args, 1)
        if axes is None:
            return np.squeeze(x)
        axes = tuple(v % max(x.ndim, 1) for v in axes)
        if any(x.shape[v] != 1 for v in axes):
            raise ValueError(f"Squeeze of axes {list(axes)} of shape {x.shape}")
        return np.squeeze(x, axis=axes)
    if op == "Concat":
        return np.concatenate([v for v in args if v is not None], axis=int(a["axis"]))
    if op == "Gather":
        return np.take(x, np.asarray(args[1]).astype(np.int64), axis=int(a.get("axis", 0)))
    if op == "Reshape":
        shape = [int(v) for v in (np.asarray(args[1]).ravel() if len(args) > 1 and
                                  args[1] is not None else a.get("shape", []))]
        if not int(a.get("allowzero", 0)):
            shape = [x.shape[k] if v == 0 else v for k, v in enumerate(shape)]
        return x.reshape(shape)
    if op == "Shape":
        start, end = int(a.get("start", 0)), a.get("end")
        return np.array(x.shape, np.int64)[start:None if end is None else int(end)]
    if op == "Flatten":
        axis = int(a.get("axis", 1)) % (x.ndim + 1) if x.ndim else 0
        return x.reshape(int(np.prod(x.shape[:axis])), -1)
    if op == "Neg":
        return np.negative(x)
    y = args[1]
    if op == "Div":
        if x.dtype.kind in "iu":
            q, r = np.divmod(x, y)
            if np.any(r):  # C-style truncation vs floor: only exact quotients are folded
                raise ValueError("an integer division with a remainder")
            return q.astype(x.dtype)
        return np.divide(x, y).astype(x.dtype)
    f = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract}[op]
    return f(x, y).astype(x.dtype)


def _unsqueezed(shape, axes):
    """`shape` with a 1 inserted at each of the output axes `axes` (a set)."""
    it = iter(shape)
    return [1 if d in axes else next(it) for d in range(len(shape) + len(axes))]


def _fold_constants(onnx, graph, consts):
    """Evaluate the nodes of FOLD_OPS whose inputs are all constants, adding their outputs to
    `consts`; returns the indices of those nodes (they are no layers)."""
    folded = set()
    for i, node in enumerate(graph.node):
        ins = [t for t in node.input if t]
        if node.domain not in ("", "ai.onnx") or node.op_type not in FOLD_OPS or not ins or \
                not all(t in consts for t in ins) or len(node.output) != 1:
            continue
        args = [np.asarray(consts[t]) if t else None for t in node.input]
        try:
            value = _fold_op(onnx, node.op_type, _attrs(onnx, node), args)
        except Exception as exc:
            raise OnnxError(f"{_where(node, i)} computes a constant from "
                            f"{[t for t in node.input]} that cannot be evaluated: {exc}") \
                from None
        consts[node.output[0]] = np.asarray(value)
        folded.add(i)
    return folded


# ---------------------------------------------------- shape side-branches
class _Sym:
    """A value of a Reshape's shape computation (Shape -> Gather -> Unsqueeze -> Concat ...).

    ``vals``: entries, each an int, ``BATCH`` (the batch size, the first entry of the shape
    of any chain tensor) or None (unknown); ``open``: more unknown entries may follow (the
    rank is not known); ``scalar``: a 0-d value (one entry).
    """

    BATCH = "batch"

    def __init__(self, vals, open_=False, scalar=False):
        self.vals, self.open, self.scalar = list(vals), open_, scalar

    @classmethod
    def of(cls, a):
        a = np.asarray(a)
        if a.dtype.kind not in "iub" or a.ndim > 1:
            return cls([], True)
        return cls([int(v) for v in a.ravel()], False, a.ndim == 0)

    def ints(self):
        """The entries as ints, or None where any is not a known int."""
        if self.open or any(not isinstance(v, int) for v in self.vals):
            return None
        return self.vals

    def __repr__(self):
        s = ["?" if v is None else str(v) for v in self.vals] + (["..."] if self.open else [])
        return s[0] if self.scalar else f"[{', '.join(s)}]"


_UNKNOWN = _Sym([], True)


def _slice_args(a, args, opset):
    """(start, end) of a 1-D Slice along axis 0 with step 1, or None when not that."""
    if opset < 10:  # attributes then, inputs since
        starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
    else:
        given = [v.ints() if v is not None else None for v in args[1:5]]
        if any(v is None and g is not None for v, g in zip(given, args[1:5])):
            return None  # a bound computed from something unknown
        starts, ends, axes, steps = (given + [None] * 4)[:4]
    if not starts or not ends or len(starts) != 1 or len(ends) != 1 or \
            axes not in (None, [0], [-1]) or steps not in (None, [1]):
        return None
    return int(starts[0]), int(ends[0])


def _eval_shape_op(op, a, args, opset):
    """One op of a shape computation on _Sym arguments (None: an absent optional input)."""
    x = args[0] if args else None
    if op in ("Cast", "Identity"):
        return x
    if op == "Shape":  # opset 15's start/end keep the batch only when start is 0
        start, end = int(a.get("start", 0)), a.get("end")
        if start != 0 or (end is not None and int(end) < 1):
            return _UNKNOWN
        return _Sym([_Sym.BATCH], True) if end is None else \
            _Sym([_Sym.BATCH] + [None] * (int(end) - 1))
    if op == "Gather":
        idx = args[1].ints() if len(args) > 1 else None
        if int(a.get("axis", 0)) != 0 or idx is None or x.scalar:
            return _UNKNOWN

        def pick(k):
            if k < 0:
                if x.open:
                    return None
                k += len(x.vals)
            return x.vals[k] if 0 <= k < len(x.vals) else None

        return _Sym([pick(k) for k in idx], False, args[1].scalar)
    if op in ("Unsqueeze", "Squeeze"):
        axes = a.get("axes") if "axes" in a else (args[1].ints() if len(args) > 1 and
                                                   args[1] is not None else None)
        if op == "Unsqueeze" and x.scalar and list(axes or []) in ([0], [-1]):
            return _Sym(x.vals)
        if op == "Squeeze" and not x.open and len(x.vals) == 1 and \
                list(axes or [0]) in ([0], [-1]):
            return _Sym(x.vals, scalar=True)
        return _UNKNOWN
    if op == "Concat":
        if int(a.get("axis", 0)) not in (0, -1) or any(v.scalar for v in args) or \
                any(v.open for v in args[:-1]):
            return _UNKNOWN
        return _Sym([e for v in args for e in v.vals], args[-1].open)
    if op == "Slice":
        se = _slice_args(a, args, opset)
        if se is None or x.scalar:
            return _UNKNOWN
        start, end = se
        if not x.open:
            return _Sym(x.vals[start:end])
        if start < 0 or end < 0:
            return _UNKNOWN
        if end >= 2 ** 31:  # "to the end" of a shape of unknown rank
            return _Sym(x.vals[start:], True)
        return _Sym([x.vals[k] if k < len(x.vals) else None for k in range(start, end)])
    if op in ("Mul", "Div", "Add", "Sub"):
        y = args[1]
        if x.open or y.open or min(len(x.vals), len(y.vals)) != 1 and len(x.vals) != len(y.vals):
            return _UNKNOWN
        n = max(len(x.vals), len(y.vals))
        xs, ys = (x.vals * n)[:n], (y.vals * n)[:n]
        f = {"Mul": lambda p, q: p * q, "Add": lambda p, q: p + q, "Sub": lambda p, q: p - q,
             "Div": lambda p, q: int(p / q) if q else None}[op]
        out = [f(p, q) if isinstance(p, int) and isinstance(q, int) else None
               for p, q in zip(xs, ys)]
        return _Sym(out, False, x.scalar and y.scalar)
    return _UNKNOWN  # pragma: no cover


def _shape_branches(onnx, graph, consts, opset, folded=()):
    """{tensor: _Sym} of the nodes that compute shapes from a chain tensor's Shape, and the
    indices of those nodes (they are not layers and do not branch the chain). Nodes in
    `folded` (constant computations, already evaluated) are skipped."""
    sym, nodes = {}, set()
    for i, node in enumerate(graph.node):
        op = node.op_type
        if i in folded or node.domain not in ("", "ai.onnx") or not len(node.output) or \
                op not in SHAPE_OPS:
            continue
        ins = [t for t in node.input if t]
        if op != "Shape" and not (ins and all(t in sym or t in consts for t in ins) and
                                  any(t in sym for t in ins)):
            continue
        args = [] if op == "Shape" else [None if not t else sym[t] if t in sym else
                                         _Sym.of(consts[t]) for t in node.input]
        sym[node.output[0]] = _eval_shape_op(op, _attrs(onnx, node), args, opset)
        nodes.add(i)
    return sym, nodes


def read_onnx(source) -> OnnxGraph:
    """Parse an ONNX file / ``ModelProto`` into layer specs; :class:`OnnxError` if unsupported."""
    onnx = _import_onnx()
    from onnx import numpy_helper

    if isinstance(source, onnx.ModelProto):
        model = source
    else:
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no ONNX file at {path}")
        try:
            model = onnx.load(path)
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise OnnxError(f"{path} is not a readable ONNX model: {exc}") from None
    graph = model.graph
    opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [1])
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            consts[node.output[0]] = _constant(onnx, numpy_helper, node, _where(node, i))

    # a tensor no initializer, Constant, node or graph input gives: a weight left out
    produced = {t for node in graph.node for t in node.output if t}
    graph_inputs = {i.name for i in graph.input}
    for i, node in enumerate(graph.node):
        for j, t in enumerate(node.input):
            if t and t not in consts and t not in produced and t not in graph_inputs:
                raise OnnxError(f"{_where(node, i)} needs {_role(node.op_type, j)} {t!r}, which "
                                "the file does not contain")
    free = [i.name for i in graph.input if i.name not in consts]
    if len(free) > 1:  # old exports list weights as graph inputs: one without an initializer
        for i, node in enumerate(graph.node):
            ins = list(node.input)
            for j, t in enumerate(ins):
                if t in free and node.op_type in _ROLES and (
                        (j >= 1 and ins[0] and ins[0] != t) or
                        (j == 0 and node.op_type == "Add" and any(u in produced
                                                                  for u in ins[1:]))):
                    raise OnnxError(f"{_where(node, i)} needs {_role(node.op_type, j)} {t!r}, "
                                    "which the file does not contain (a graph input without "
                                    "an initializer)")
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise OnnxError(f"the graph must have exactly one image input, it has {len(inputs)}: "
                        f"{[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise OnnxError(f"the input {inputs[0].name!r} must be (N, C, H, W), it has {len(dims)} "
                        "dimensions")
    input_shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                        for d in dims[1:])

    folded = _fold_constants(onnx, graph, consts)
    sym, shape_nodes = _shape_branches(onnx, graph, consts, opset, folded)
    shape_nodes |= folded
    readers = {}  # tensor -> the nodes reading it (shape computations aside)
    for i, node in enumerate(graph.node):
        if i in shape_nodes:
            continue
        for t in set(node.input):
            if t and t not in consts and t not in sym:
                readers.setdefault(t, []).append(_who(node, i))

    cur = inputs[0].name
    specs, names = [], set()
    for i, node in enumerate(graph.node):
        op = node.op_type
        if (op == "Constant" and node.domain in ("", "ai.onnx")) or i in shape_nodes:
            continue
        where = _where(node, i)
        if node.domain not in ("", "ai.onnx") or op not in CHAIN_OPS:
            dom = f" of domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
            if not dom and op in SHAPE_OPS:
                raise OnnxError(f"unsupported op {op} in {where}: {op} is supported only in the "
                                "shape computation of a Reshape (as in x.view(x.size(0), -1)), "
                                "not on the activations")
            only = [o for o in SHAPE_OPS if o not in CHAIN_OPS]
            raise OnnxError(f"unsupported op {op}{dom} in {where}; supported: "
                            f"{', '.join(CHAIN_OPS)} (and {', '.join(only)} in the shape "
                            "computation of a Reshape)")
        ins = list(node.input)
        if op == "Add" and len(ins) == 2 and ins[1] == cur and ins[0] in consts:
            ins.reverse()  # Add(bias, x): the same as Add(x, bias)
        data = [t for t in ins if t and t not in consts and t not in sym]
        if len(data) != 1 or ins[0] != cur:
            raise OnnxError(f"the graph is not sequential: {where} reads {list(node.input)}, but "
                            f"a chain node must read only the previous output {cur!r} (first) "
                            "plus initializers")
        if len(readers.get(cur, ())) > 1:
            raise OnnxError(f"the graph is not sequential: {cur!r} is read by "
                            f"{len(readers[cur])} nodes ({', '.join(readers[cur])}): a branch")
        used_outputs = [t for t in node.output[1:] if t and readers.get(t)]
        if used_outputs:
            raise OnnxError(f"{where}: its extra outputs {used_outputs} are used; only the "
                            "first output of a node can be followed")
        a = _attrs(onnx, node)
        out = node.output[0]
        name = node.name or out
        if name in names:
            k = 2
            while f"{name}_{k}" in names:
                k += 1
            name = f"{name}_{k}"
        spec = _parse_node(op, a, ins, consts, sym, where, name, out, specs)
        if spec is not None:
            names.add(spec.name)
            specs.append(spec)
        elif op != "Add" and specs:  # an identity: the same values under a new name
            specs[-1].output = out
        cur = out
    if not specs:
        raise OnnxError("the graph has no layers")
    return OnnxGraph(inputs[0].name, input_shape, specs, opset)


def _ints(a, key, default, n, where):
    v = list(a.get(key, default))
    if len(v) != n:
        raise OnnxError(f"{where}: {key} must have {n} values for a 2-D op, got {v}")
    return [int(t) for t in v]


def _const(consts, ins, k, where, what):
    if len(ins) <= k or not ins[k]:
        return None
    t = ins[k]
    if t not in consts:
        raise OnnxError(f"{where}: its {what} {t!r} must be an initializer or Constant")
    return np.asarray(consts[t])


def _window_attrs(a, where, kernel):
    strides = _ints(a, "strides", [1, 1], 2, where)
    pads = _ints(a, "pads", [0, 0, 0, 0], 4, where)
    dil = _ints(a, "dilations", [1, 1], 2, where)
    if dil != [1, 1]:
        raise OnnxError(f"{where}: dilations {dil} are not supported (only 1)")
    if min(strides) < 1 or min(pads) < 0:
        raise OnnxError(f"{where}: strides must be positive and pads non-negative, got "
                        f"strides={strides}, pads={pads}")
    auto_pad = _decode(a.get("auto_pad", "NOTSET")) or "NOTSET"
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise OnnxError(f"{where}: unknown auto_pad {auto_pad!r}")
    return dict(kernel=list(kernel), strides=strides, pads=pads, auto_pad=auto_pad)


def _parse_node(op, a, ins, consts, sym, where, name, out, specs):
    if op == "Dropout":
        train = _const(consts, ins, 2, where, "training_mode")
        if train is not None and bool(np.asarray(train).any()):
            raise OnnxError(f"{where}: training_mode is true (random dropout); only inference "
                            "Dropout, the identity, is supported")
        return None
    if op == "Identity":
        return None
    if op == "AveragePool":
        k = list(a.get("kernel_shape", []))
        st, pads = list(a.get("strides", [1] * len(k))), list(a.get("pads", [0] * 2 * len(k)))
        if k == [1, 1] and st == [1, 1] and not any(pads):
            return None  # the identity (torchvision's AdaptiveAvgPool2d at its own size)
        raise OnnxError(f"unsupported op AveragePool in {where}: only kernel 1, stride 1 "
                        "without padding (the identity, as torchvision's AdaptiveAvgPool2d "
                        f"exports at its native size) is supported; got kernel_shape={k}, "
                        f"strides={st}, pads={pads}")
    if op == "GlobalAveragePool":
        return LayerSpec(name, "gap", out, where)
    if op == "Relu":
        return LayerSpec(name, "relu", out, where)
    if op == "Conv":
        w = _const(consts, ins, 1, where, "weight")
        if w is None or w.ndim != 4:
            raise OnnxError(f"{where}: only 2-D convolutions with a weight initializer "
                            f"(M, C/group, kh, kw) are supported")
        b = _const(consts, ins, 2, where, "bias")
        if b is not None and b.shape != (w.shape[0],):
            raise OnnxError(f"{where}: bias has shape {b.shape}, expected ({w.shape[0]},)")
        kernel = _ints(a, "kernel_shape", list(w.shape[2:]), 2, where)
        if kernel != list(w.shape[2:]):
            raise OnnxError(f"{where}: kernel_shape {kernel} disagrees with the weight's "
                            f"{list(w.shape[2:])}")
        at = _window_attrs(a, where, kernel)
        at["group"] = int(a.get("group", 1))
        return LayerSpec(name, "conv", out, where, at, w.astype(np.float32),
                         None if b is None else b.astype(np.float32))
    if op == "MaxPool":
        if "kernel_shape" not in a:
            raise OnnxError(f"{where}: kernel_shape is required")
        kernel = _ints(a, "kernel_shape", [], 2, where)
        at = _window_attrs(a, where, kernel)
        at["ceil_mode"] = int(a.get("ceil_mode", 0))
        return LayerSpec(name, "pool", out, where, at)
    if op == "LRN":
        size = int(a.get("size", 0))
        if size < 1 or size % 2 == 0:
            raise OnnxError(f"{where}: size={size}; only odd sizes are supported (the window "
                            "must be centred, as in Caffe)")
        at = dict(size=size, alpha=float(a.get("alpha", 1e-4)), beta=float(a.get("beta", 0.75)),
                  k=float(a.get("bias", 1.0)))
        return LayerSpec(name, "lrn", out, where, at)
    if op == "Gemm":
        if int(a.get("transA", 0)):
            raise OnnxError(f"{where}: transA=1 is not supported (the activation must be A)")
        B = _const(consts, ins, 1, where, "B")
        if B is None or B.ndim != 2:
            raise OnnxError(f"{where}: B must be a 2-D initializer")
        w = B if int(a.get("transB", 0)) else B.T
        w = (float(a.get("alpha", 1.0)) * w.astype(np.float64)).astype(np.float32)
        C = _const(consts, ins, 2, where, "C")
        bias = None
        if C is not None:
            try:
                bias = np.broadcast_to(C.astype(np.float64), (1, w.shape[0])).reshape(-1)
            except ValueError:
                raise OnnxError(f"{where}: C of shape {C.shape} does not broadcast to "
                                f"(1, {w.shape[0]})") from None
            bias = (float(a.get("beta", 1.0)) * bias).astype(np.float32)
        return LayerSpec(name, "fc", out, where, dict(source="Gemm"), np.ascontiguousarray(w), bias)
    if op == "MatMul":
        B = _const(consts, ins, 1, where, "B")
        if B is None or B.ndim != 2:
            raise OnnxError(f"{where}: B must be a 2-D initializer (in, out)")
        return LayerSpec(name, "fc", out, where, dict(source="MatMul"),
                         np.ascontiguousarray(B.T.astype(np.float32)), None)
    if op == "Add":
        prev = specs[-1] if specs else None
        if prev is None or prev.op != "fc" or prev.attrs.get("source") != "MatMul" or \
                prev.bias is not None:
            raise OnnxError(f"{where}: Add is only supported as the bias of a MatMul")
        c = _const(consts, ins, 1, where, "bias")
        O = prev.weight.shape[0]
        try:
            prev.bias = np.broadcast_to(c, (1, O)).reshape(-1).astype(np.float32)
        except ValueError:
            raise OnnxError(f"{where}: bias of shape {c.shape} does not broadcast to (1, {O})") \
                from None
        prev.output = out
        return None
    if op == "Flatten":
        if int(a.get("axis", 1)) != 1:
            raise OnnxError(f"{where}: only axis=1 (keep the batch) is supported, got "
                            f"axis={a['axis']}")
        return LayerSpec(name, "flatten", out, where)
    if op == "Reshape":
        if len(ins) > 1 and ins[1] in sym:  # computed: x.view(x.size(0), -1) and the like
            got = sym[ins[1]]
            shape = [] if got.open or got.scalar else got.vals
            got = f"{got} (computed from the input's shape)"
        else:
            shape = _const(consts, ins, 1, where, "shape")
            shape = [int(v) for v in (shape if shape is not None else a.get("shape", []))]
            got = str(shape)
        # the batch stays first: [batch | 0 | 1 | -1, -1 | features] (1: the zoo's batch-1 graphs)
        if len(shape) != 2 or shape[0] not in (-1, 0, 1, _Sym.BATCH) or \
                not (shape[1] == -1 or (isinstance(shape[1], int) and shape[1] > 0)) or \
                shape == [-1, -1]:
            raise OnnxError(f"{where}: only a Reshape that flattens each sample to (N, -1) is "
                            f"supported, got target shape {got}")
        return LayerSpec(name, "flatten", out, where,
                         dict(features=shape[1] if shape[1] > 0 else None))
    if op == "Softmax":
        axis = int(a.get("axis", 1))
        if axis not in (1, -1):
            raise OnnxError(f"{where}: only a softmax over the features (axis 1 of an (N, F) "
                            f"input) is supported, got axis={axis}")
        return LayerSpec(name, "softmax", out, where)
    raise OnnxError(f"unsupported op {op} in {where}")  # pragma: no cover


def build_layer(spec: LayerSpec) -> Layer:
    """The native layer of a spec."""
    at = spec.attrs
    if spec.op == "relu":
        return ReLU()
    if spec.op == "lrn":
        return LRN(at["size"], at["alpha"], at["beta"], at["k"])
    if spec.op == "fc":
        return Linear(spec.weight, spec.bias)
    if spec.op == "flatten":
        return Flatten(at.get("features"))
    if spec.op == "softmax":
        return Softmax()
    if spec.op == "gap":
        return GlobalPool1x1(spec.where)
    pads, auto = at["pads"], at["auto_pad"]
    symmetric = auto == "NOTSET" and pads[:2] == pads[2:]
    if spec.op == "conv":
        if spec.weight.shape[0] % at["group"]:
            raise OnnxError(f"{spec.where}: group={at['group']} does not divide the "
                            f"{spec.weight.shape[0]} filters")
        conv = Conv2d(spec.weight, spec.bias, stride=tuple(at["strides"]), padding=tuple(pads[:2]),
                      groups=at["group"])
        if symmetric:
            return conv
        return _Windowed(conv, at["kernel"], at["strides"], pads, auto, 0, spec.where)
    if spec.op == "pool":
        for pb, k in zip(pads, list(at["kernel"]) * 2):
            if pb >= k:
                raise OnnxError(f"{spec.where}: padding {pb} >= kernel {k} is not supported by "
                                "the native max-pool")
        pool = MaxPool2d(tuple(at["kernel"]), tuple(at["strides"]), tuple(pads[:2]))
        if symmetric and at["ceil_mode"] == 1 and max(pads) < min(at["kernel"]):
            return pool  # ONNX's ceil mode is the native size rule
        return _Windowed(pool, at["kernel"], at["strides"], pads, auto, at["ceil_mode"],
                         spec.where)
    raise OnnxError(f"{spec.where}: no layer for op {spec.op!r}")  # pragma: no cover


# --------------------------------------------------------------------- nets
class OnnxNet(ConvNet):
    """A plain sequential ONNX CNN as native layers; see the module documentation.

    Args:
        source: path of an ``.onnx`` file, or an ``onnx.ModelProto``.
        input_size: (H, W) of the input, when the file leaves it symbolic (or to override it).
        mean, channel_order, resample, std, fit: image handling (:class:`ImageTransform`; the
            default is the Caffe convention: BGR, mean B, G, R = 104, 117, 123, no std, images
            of other sizes cropped). A torchvision-trained net takes ``channel_order="RGB"``,
            ``mean=(123.675, 116.28, 103.53)``, ``std=(58.395, 57.12, 57.375)`` (ImageNet's
            statistics scaled to [0, 255]). Needs C = 3 input channels for ``preprocess``.

    Layers are named after the ONNX nodes (``net.names``); ``net.onnx_outputs[name]`` is the
    ONNX tensor holding a layer's output. Representations get the paper's heuristic
    lambdas (no published values for arbitrary nets).
    """

    def __init__(self, source, *, input_size=None, mean=None, channel_order="BGR",
                 resample="bilinear", std=None, fit="crop"):
        g = read_onnx(source)
        C, H, W = g.input_shape
        if input_size is not None:
            H, W = (int(input_size), int(input_size)) if np.isscalar(input_size) else \
                (int(input_size[0]), int(input_size[1]))
        if C is None or H is None or W is None:
            raise OnnxError(f"the input {g.input_name!r} has symbolic sizes (C, H, W) = "
                            f"{g.input_shape}: give input_size=(H, W)")
        self.onnx_input = g.input_name
        self.onnx_outputs = {s.name: s.output for s in g.layers}
        self.opset = g.opset
        layers = [(s.name, build_layer(s)) for s in g.layers]
        transform = ImageTransform((H, W), channel_order, mean, resample, std, fit) \
            if C == 3 else None
        where = "an ONNX model" if hasattr(source, "graph") else os.fspath(source)
        super().__init__(layers, input_shape=(C, H, W), transform=transform, trained=True,
                         source=f"weights from {where}")

    def preprocess(self, image, fit=None):
        if self.input_shape[0] != 3:
            raise ValueError(f"preprocess makes 3-channel inputs; this net takes "
                             f"{self.input_shape[0]} channels: build x yourself")
        return super().preprocess(image, fit)

    def deprocess(self, x, clip=False):
        if self.input_shape[0] != 3:
            raise ValueError(f"deprocess needs 3-channel inputs; this net takes "
                             f"{self.input_shape[0]} channels")
        return super().deprocess(x, clip)


_CAFFE_OPS = {"conv": "conv", "relu": "relu", "mpool": "pool", "norm": "lrn", "fc": "fc"}


def caffenet_weights(source):
    """Read a CaffeNet or AlexNet ONNX graph -> (weights in CaffeNet's npz layout, order).

    The graph's layers (Flatten/Reshape, Dropout and a final Softmax aside) must be CaffeNet's
    20 in CaffeNet's order (pool then norm; order "caffenet") or AlexNet's (norm then pool;
    "alexnet"), with CaffeNet's kernels, strides, paddings, groups and LRN constants; pooling
    whose ONNX output size differs from CaffeNet's at 227 x 227 is refused. The model zoo's
    files declare a 224 x 224 input; the net built from them takes 227 x 227 (the paper's, and
    the size the fc6 weights fit). Other nets: use :class:`OnnxNet`.
    """
    g = read_onnx(source)
    if any(s.op == "softmax" for s in g.layers[:-1]):
        raise OnnxError("a Softmax inside the chain is not CaffeNet (only a final one is)")
    specs = [s for s in g.layers if s.op not in ("flatten", "softmax")]
    got = [s.op for s in specs]
    order = None
    for o in ("caffenet", "alexnet"):
        if got == [_CAFFE_OPS[n.rstrip("0123456789")] for n in _layer_order(o)]:
            order = o
    if order is None:
        want = [_CAFFE_OPS[n.rstrip("0123456789")] for n in CAFFENET_LAYERS]
        raise OnnxError(f"the graph's layers are not CaffeNet's or AlexNet's: got "
                        f"{' '.join(got)}; CaffeNet is {' '.join(want)} (use OnnxNet for "
                        "other nets)")
    weights = {}
    size = 227
    for name, s in zip(_layer_order(order), specs):
        kind = name.rstrip("0123456789")
        at = s.attrs
        if kind == "conv":
            _, _, k, st, p, grp = _CONV[name]
            if at["strides"] != [st, st] or at["pads"] != [p] * 4 or at["group"] != grp or \
                    at["auto_pad"] not in ("NOTSET",) or at["kernel"] != [k, k]:
                raise OnnxError(f"{s.where} is not CaffeNet's {name} (kernel {k}, stride {st}, "
                                f"pad {p}, group {grp}): got kernel {at['kernel']}, strides "
                                f"{at['strides']}, pads {at['pads']}, group {at['group']}, "
                                f"auto_pad {at['auto_pad']}")
            size = (size + 2 * p - k) // st + 1
        elif kind == "mpool":
            k, st = _POOL
            caffe = _window_count(size, k, st, 0, 0, 1)
            if at["kernel"] != [k, k] or at["strides"] != [st, st] or at["auto_pad"] != "NOTSET" \
                    or at["pads"][:2] != [0, 0] or any(
                        _window_count(size, k, st, 0, at["pads"][a + 2], at["ceil_mode"]) != caffe
                        for a in range(2)):
                raise OnnxError(f"{s.where} is not CaffeNet's {name} (3x3, stride 2, {caffe} "
                                f"windows on its {size}-pixel input): got kernel {at['kernel']}, "
                                f"strides {at['strides']}, pads {at['pads']}, ceil_mode "
                                f"{at['ceil_mode']}, auto_pad {at['auto_pad']}")
            size = caffe
        elif kind == "norm":
            if at["size"] != _LRN["size"] or any(
                    not math.isclose(at[key], _LRN[key], rel_tol=1e-6)
                    for key in ("alpha", "beta", "k")):
                raise OnnxError(f"{s.where} is not CaffeNet's {name} (size 5, alpha 1e-4, beta "
                                f"0.75, bias 1): got {at}")
        if kind in ("conv", "fc"):
            weights[f"{name}.weight"] = s.weight
            if s.bias is None:
                raise OnnxError(f"{s.where} ({name}) has no bias")
            weights[f"{name}.bias"] = s.bias
    return weights, order

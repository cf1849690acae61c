"""Validation and backend dispatch shared by every op module (see invert_native.ops)."""

from __future__ import annotations

import contextlib
import operator
import threading

import numpy as np

from .. import _backend
from .._backend import _cpu  # noqa: F401  (re-exported for the op modules)

class Workspace:
    """Output arrays of the ops, reused from one pass of a loop to the next.

    Inside ``with reusing(ws):`` the k-th output array that an op creates in this thread is the
    k-th array of the previous pass when its type, device, shape and dtype match (a new array
    otherwise, kept for the next pass). Start every pass with :meth:`rewind`. The arrays of the
    previous pass are overwritten, so this suits loops whose passes keep nothing across
    passes, such as the iterations of :func:`invert_native.invert` (which uses it for
    representations whose ``reuses_outputs`` attribute is true: every built-in one).

    An op never receives an output array that shares memory with one of its own inputs (say
    ``z = conv2d_forward(y, ...)`` after a rewind, where ``y`` is the previous pass's array at
    z's position): that position gets a new array, kept for the next pass, and the input is
    left as it was.
    """

    def __init__(self):
        self._arrays = []
        self._next = 0

    def rewind(self):
        """Start a pass: the next output reuses the first array of the previous pass."""
        self._next = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the workspace's arrays."""
        return sum(int(a.nbytes) for a in self._arrays)

    def take(self, xp, shape, dtype, device=None, avoid=()):
        """The next array of the pass: (shape, dtype) on ``device``, sharing no memory with
        any array of ``avoid`` (the inputs of the op call that asks)."""
        shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        k = self._next
        self._next += 1
        if k < len(self._arrays):
            a = self._arrays[k]
            if (_backend.array_module(a) is xp and a.shape == shape and a.dtype == dtype
                    and (device is None or a.device.id == device.id)
                    and not any(_may_share_memory(a, b) for b in avoid)):
                return a
        a = _empty(xp, shape, dtype, device)
        if k < len(self._arrays):
            self._arrays[k] = a
        else:
            self._arrays.append(a)
        return a


_active = threading.local()


@contextlib.contextmanager
def reusing(workspace: Workspace):
    """Draw the op outputs created in this thread from ``workspace`` (see :class:`Workspace`)."""
    previous = getattr(_active, "workspace", None)
    _active.workspace = workspace
    try:
        yield workspace
    finally:
        _active.workspace = previous


def _may_share_memory(a, b) -> bool:
    """Whether a and b may overlap (a bounds check: cheap, and never misses an overlap)."""
    if _backend.is_cupy(a) != _backend.is_cupy(b):
        return False
    return bool(_backend.array_module(a).may_share_memory(a, b))


def _empty(xp, shape, dtype, device):
    """xp.empty on the given CuPy device (None: the current one, or the host)."""
    if device is None:
        return xp.empty(shape, dtype)
    with device:
        return xp.empty(shape, dtype)


def new_array(xp, shape, dtype=np.float32, device=None, avoid=()):
    """An uninitialised array: from the active :class:`Workspace` if there is one (then never
    one that shares memory with an array of ``avoid``)."""
    ws = getattr(_active, "workspace", None)
    if ws is not None:
        return ws.take(xp, shape, dtype, device, avoid)
    return _empty(xp, shape, dtype, device)


def new_array_like(like, shape, dtype=np.float32, avoid=()):
    """:func:`new_array` with the array module and device of the array ``like``."""
    device = like.device if _backend.is_cupy(like) else None
    return new_array(_backend.array_module(like), shape, dtype, device, avoid)


class _Call:
    """Validated arrays of one op call and the backend that runs them."""

    def __init__(self, op: str, **arrays):
        self.op = op
        first_name, first = None, None
        for name, a in arrays.items():
            if a is None:
                continue
            if not isinstance(a, np.ndarray) and not _backend.is_cupy(a):
                raise TypeError(f"{op}: {name} must be a numpy.ndarray or cupy.ndarray, "
                                f"got {_backend.describe(a)}")
            if first is None:
                first_name, first = name, a
                continue
            if _backend.is_cupy(a) != _backend.is_cupy(first):
                raise TypeError(f"{op}: {first_name} is {_backend.describe(first)} but {name} is "
                                f"{_backend.describe(a)}; put all arrays on one device")
            if _backend.is_cupy(a) and a.device.id != first.device.id:
                raise ValueError(f"{op}: {first_name} is on GPU {first.device.id} but {name} is on "
                                 f"GPU {a.device.id}")
        self.cuda = _backend.is_cupy(first)
        self.xp = _backend.array_module(first)
        self.device = first.device if self.cuda else None
        # the caller's arrays, which no output may overwrite (see Workspace)
        self.inputs = tuple(a for a in arrays.values() if a is not None)

    def array(self, name, a, ndim=None, dtype=np.float32, optional=False):
        """a as a C-contiguous array of the given dtype and rank (copied if not contiguous)."""
        if a is None:
            if optional:
                return None
            raise TypeError(f"{self.op}: {name} is required")
        if a.dtype != dtype:
            hint = f" (convert with {name}.astype(numpy.{np.dtype(dtype).name}))"
            raise TypeError(f"{self.op}: {name} must be {np.dtype(dtype).name}, got {a.dtype}{hint}")
        if ndim is not None and a.ndim != ndim:
            raise ValueError(f"{self.op}: {name} must have {ndim} dimensions, got shape "
                             f"{tuple(a.shape)}")
        if not a.flags.c_contiguous:
            a = self.xp.ascontiguousarray(a)
        return a

    def empty(self, shape, dtype=np.float32):
        """An output (or scratch) array of this call; never one that overlaps an input."""
        return new_array(self.xp, shape, dtype, self.device, self.inputs)

    def launch(self, name, *args):
        """Run the CUDA core's `name` on the arrays' device and CuPy's current stream."""
        cuda = _backend.cuda_core()
        cp = self.xp
        with self.device:
            stream = cp.cuda.get_current_stream().ptr
            getattr(cuda, name)(*[_ptr(a) for a in args], stream)


def _ptr(a):
    """Device pointer of a CuPy array (0 for None); plain numbers pass through."""
    if a is None:
        return 0
    if _backend.is_cupy(a):
        return a.data.ptr
    return a


_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def _int(v, op, name):
    """v as a Python int that fits the core's int64 sizes (TypeError / ValueError naming it)."""
    if isinstance(v, bool):
        raise TypeError(f"{op}: {name} must be an integer, got {v!r}")
    try:
        v = operator.index(v)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an integer, got {v!r}") from None
    # Without this pybind11 refuses the whole call with an "incompatible function arguments"
    # TypeError that names no argument.
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ValueError(f"{op}: {name} = {v} is out of range (must fit in a signed 64-bit integer)")
    return v


def _pair(v, op, name):
    """An int or a pair of ints -> (int, int)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
        return _int(v[0], op, name), _int(v[1], op, name)
    v = _int(v, op, name)
    return v, v


def _shape4(shape, op, name):
    try:
        s = tuple(_int(d, op, name) for d in shape)
    except TypeError:
        raise TypeError(f"{op}: {name} must be a tuple of 4 ints, got {shape!r}") from None
    if len(s) != 4:
        raise ValueError(f"{op}: {name} must have 4 entries (N, C, H, W), got {shape!r}")
    return s


def _check_shape(op, name, a, expected):
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} has shape {tuple(a.shape)}, expected {tuple(expected)}")


def _native(op, fn, *args):
    """Call a C++ shape check, prefixing its message with the op name."""
    try:
        return fn(*args)
    except ValueError as exc:
        msg = str(exc)
        head, sep, rest = msg.partition(": ")
        if sep and " " not in head and op.lower().startswith(head.lower()):
            msg = rest  # the core's own prefix ("conv2d: ...") under the op's name
        raise ValueError(f"{op}: {msg}") from None

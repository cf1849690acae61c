"""Which core runs an array: NumPy arrays go to the CPU core, CuPy arrays to the CUDA core.

CuPy and the CUDA core are imported lazily, so ``import invert_native`` works on
machines without either; asking for the GPU then says exactly what is missing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from . import _cpu


@dataclass(frozen=True)
class CudaStatus:
    """Whether the CUDA core can be used; ``bool(status)`` is ``available``."""

    available: bool
    reason: str  # why not, or a description of the device when available

    def __bool__(self) -> bool:
        return self.available

    def __str__(self) -> str:
        return self.reason


_status: CudaStatus | None = None


def cuda_available() -> CudaStatus:
    """Say whether the CUDA core can be used and, if not, why.

    Returns a :class:`CudaStatus` that is truthy when the CUDA core was built,
    CuPy imports and a CUDA device is visible. Its ``reason`` names what is
    missing otherwise (the module was not built, CuPy is not installed, no
    device). The answer is cached for the life of the process.
    """
    global _status
    if _status is None:
        _status = _probe_cuda()
    return _status


def _probe_cuda() -> CudaStatus:
    try:
        from . import _cuda  # noqa: F401
    except ImportError as exc:
        return CudaStatus(False, "the CUDA core was not built (no nvcc at build time, or "
                                 f"INVERT_NATIVE_CUDA=OFF): {exc}")
    try:
        import cupy  # noqa: F401
    except ImportError as exc:
        return CudaStatus(False, "CuPy is not installed (pip install 'invert-native[cuda]' "
                                 f"or the cupy-cudaXXx wheel matching your CUDA): {exc}")
    except Exception as exc:  # a broken CuPy install raises all sorts
        return CudaStatus(False, f"CuPy failed to import: {exc}")
    n = _cuda.device_count()
    if n <= 0:
        return CudaStatus(False, "no CUDA device is visible (no GPU, no driver, or "
                                 "CUDA_VISIBLE_DEVICES hides them)")
    return CudaStatus(True, f"{n} CUDA device(s), CUDA runtime {_cuda.cuda_runtime_version()}")


def cuda_core():
    """The ``_cuda`` module, or a RuntimeError saying why it cannot be used."""
    status = cuda_available()
    if not status:
        raise RuntimeError(f"the CUDA core cannot be used: {status.reason}")
    from . import _cuda

    return _cuda


def is_cupy(a) -> bool:
    cp = sys.modules.get("cupy")
    return cp is not None and isinstance(a, cp.ndarray)


def describe(a) -> str:
    if isinstance(a, np.ndarray):
        return "a numpy array (CPU)"
    if is_cupy(a):
        return f"a cupy array (GPU {a.device.id})"
    return f"a {type(a).__module__}.{type(a).__qualname__}"


def check_finite(x, what: str) -> None:
    """ValueError unless every value of x (NumPy or CuPy) is finite.

    For a CuPy array the answer costs a device-to-host transfer, so it is skipped while an
    ``ops.reusing`` workspace is active in this thread: inside :func:`invert_native.invert`'s
    iterations, where a NaN/Inf image makes the objective NaN, which the loop checks every
    ``callback_every`` iterations (and after the last). Outside such a workspace it always
    checks.
    """
    if x.size == 0:
        return
    xp = array_module(x)
    if xp is not np:
        from .ops._dispatch import _active  # here: ops imports this module

        if getattr(_active, "workspace", None) is not None:
            return
    # min and max propagate NaN and reach +-Inf, and unlike isfinite(x).all() they need no
    # temporary array the size of x (this runs at every inversion iteration)
    if not (bool(xp.isfinite(x.min())) and bool(xp.isfinite(x.max()))):
        raise ValueError(f"{what} contains NaN or Inf pixels")


def array_module(a):
    """numpy for NumPy arrays, cupy for CuPy arrays."""
    if is_cupy(a):
        return sys.modules["cupy"]
    return np


__all__ = ["CudaStatus", "cuda_available", "cuda_core", "array_module", "is_cupy", "describe", "check_finite", "_cpu"]

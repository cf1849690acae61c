"""Shared helpers of the Python test suite.

Tolerance (stated once, used everywhere): results are compared in float64 with

    max|got - ref| <= atol + rtol * max|ref|

i.e. the largest absolute error relative to the reference's largest magnitude
(the norm of llm.c's and ggml's backend tests). ``rtol`` defaults to 1e-4, a
float32 core against a float64 reference.

Reference libraries (torch, and cupy for the GPU tests) are imported through
:func:`require`: a missing one skips the test, unless INVERT_NATIVE_REQUIRE_REFS=1
(CI), where it fails the test instead.

Tests marked ``gpu`` run when ``invert_native.cuda_available()`` is true. When it
is false they are skipped only where no GPU exists; on a machine with a GPU (the
CUDA core counts one, or, without the core, the NVIDIA driver shows one) they
fail, with ``cuda_available()``'s reason, since a missing CuPy or an unbuilt
CUDA core there would otherwise pass silently. ``CUDA_VISIBLE_DEVICES`` set to
an empty string or -1 hides every GPU: the tests skip.

Test modules import the helpers with ``from conftest import ...`` (pytest puts
this folder on ``sys.path``, as it has no ``__init__.py``).
"""

from __future__ import annotations

import glob
import importlib
import os
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest

import invert_native

RTOL = 1e-4
ATOL = 1e-6


def run_python(script: str, *args, env: dict | None = None) -> str:
    """Run ``script`` in a fresh interpreter (the core reads its environment switches once per
    process) with ``args`` and the environment changed by ``env`` (None removes a variable);
    return its stdout. A non-zero exit fails the calling test."""
    e = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], env=e,
                          capture_output=True, text=True, timeout=300, check=True).stdout


def assert_close(got, ref, rtol: float = RTOL, atol: float = ATOL, what: str = "result"):
    """Assert max|got - ref| <= atol + rtol * max|ref|, both taken as float64.

    ``got`` and ``ref`` may be NumPy arrays, torch tensors or anything
    ``numpy.asarray`` takes; shapes must be equal (no broadcasting).
    """
    got = _as_f64(got)
    ref = _as_f64(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference shape {ref.shape}"
    if ref.size == 0:
        return
    assert np.all(np.isfinite(ref)), f"{what}: the reference is not finite"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values where the reference is finite"
    err = np.abs(got - ref)
    scale = float(np.max(np.abs(ref)))
    bound = atol + rtol * scale
    worst = float(err.max())
    if worst > bound:
        where = np.unravel_index(int(err.argmax()), err.shape)
        raise AssertionError(
            f"{what}: max|got-ref| = {worst:.3e} > atol + rtol*max|ref| = {bound:.3e} "
            f"(rtol={rtol}, atol={atol}, max|ref|={scale:.3e}); worst at index {where}: "
            f"got {got[where]!r}, ref {ref[where]!r}")


def _as_f64(a):
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    elif hasattr(a, "get") and not isinstance(a, np.ndarray):  # cupy array
        a = a.get()
    return np.asarray(a, dtype=np.float64)


def under_asan() -> bool:
    """Whether AddressSanitizer's runtime is loaded into this process (CI's sanitizer run)."""
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def refs_required() -> bool:
    """True when a missing reference library must fail a test (INVERT_NATIVE_REQUIRE_REFS=1)."""
    return os.environ.get("INVERT_NATIVE_REQUIRE_REFS", "") == "1"


def require(modname: str):
    """Import a reference library, or skip the test (fail it with INVERT_NATIVE_REQUIRE_REFS=1)."""
    try:
        return importlib.import_module(modname)
    except ImportError as exc:
        msg = f"reference library {modname!r} is not importable: {exc}"
        if refs_required():
            pytest.fail(f"{msg} (INVERT_NATIVE_REQUIRE_REFS=1: references are mandatory)",
                        pytrace=False)
        pytest.skip(msg, allow_module_level=True)


def f32(a) -> np.ndarray:
    """A float32 C-contiguous copy."""
    return np.ascontiguousarray(a, dtype=np.float32)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A NumPy generator seeded from the test's id: reproducible, different per test."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ GPU gate
def core_device_count():
    """Devices the CUDA core counts, or None when the core was not built (or fails to load)."""
    try:
        from invert_native import _cuda
    except ImportError:
        return None
    return int(_cuda.device_count())


def driver_gpus() -> str:
    """A description of the NVIDIA GPUs the driver shows ("" when none): device nodes
    /dev/nvidia<N>, else the GPUs ``nvidia-smi -L`` lists."""
    nodes = sorted(p for p in glob.glob("/dev/nvidia*") if os.path.basename(p)[6:].isdigit())
    if nodes:
        return "device node(s) " + ", ".join(nodes)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
        gpus = [line for line in out.splitlines() if line.startswith("GPU ")]
        if gpus:
            return "nvidia-smi -L: " + "; ".join(gpus)
    return ""


def gpu_present() -> str:
    """Why this machine has a GPU the tests should use ("" when it has none)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return ""  # the user hid every GPU on purpose
    n = core_device_count()
    if n:
        return f"the CUDA core counts {n} device(s)"
    # No core, or a core that sees nothing (a driver too old for its runtime, say):
    # ask the driver itself.
    return driver_gpus()


def gpu_gate(status, present: str):
    """What to do with a ``gpu`` test: ("run", ""), ("skip", why) or ("fail", why).

    ``status`` is ``invert_native.cuda_available()``; ``present`` is :func:`gpu_present`.
    """
    if status:
        return "run", ""
    if present:
        return "fail", (f"a GPU is present ({present}) but the GPU tests cannot run: {status}. "
                        "Install CuPy / build the CUDA core, or hide the GPU with "
                        "CUDA_VISIBLE_DEVICES=-1 to skip them.")
    return "skip", f"no GPU: {status}"


_gate = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Runs before any fixture of the test, so GPU tests never reach a cupy import
    # on machines without a GPU.
    global _gate
    if item.get_closest_marker("gpu") is not None:
        if _gate is None:  # decided once per session
            status = invert_native.cuda_available()
            _gate = gpu_gate(status, "" if status else gpu_present())
        action, why = _gate
        if action == "fail":
            pytest.fail(why, pytrace=False)
        if action == "skip":
            pytest.skip(why)

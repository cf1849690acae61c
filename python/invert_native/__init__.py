"""invert_native: invert image representations (HOG, dense SIFT, CNN layers).

Given the code Phi0 = Phi(x0) of an image, find images x whose code matches,
by momentum gradient descent on a regularised reconstruction objective
(Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting
Them", CVPR 2015). The ops run on a hand-written C++ core (NumPy arrays) or
CUDA core (CuPy arrays).

Modules:
    invert_native.ops  forward/backward-to-input of each native op
    invert_native.nn   layers (Conv2d, ReLU, MaxPool2d, LRN, Linear, Sequential)
"""

import os as _os
import sys as _sys


def _interrupted_while_starting(signum, frame):  # pragma: no cover - timing-dependent
    _sys.stderr.write("invert-native: interrupted\n")
    _sys.stderr.flush()
    _os._exit(130)


# The console script imports this package (a fraction of a second) before its main() can
# catch Ctrl-C: until main() restores Python's handler, Ctrl-C ends the command with the
# CLI's one line and status 130 instead of a traceback. Only for the invert-native script.
if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "invert-native":
    import signal as _signal

    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        _signal.signal(_signal.SIGINT, _interrupted_while_starting)

# OpenMP threads that spin while waiting (libgomp's default: up to 300 000
# spins) make every parallel region stall when the machine has other work
# (measured: a HOG iteration 47 ms instead of 1 ms on 2 busy cores); threads that
# sleep at once pay a wake-up per region (CaffeNet conv4 forward 1.47 instead of
# 1.21 ms on a quiet machine). A short spin (GOMP_SPINCOUNT, libgomp only) keeps
# both: quiet-machine speed, and no stall under load (benchmarks/NOTES.md). Set
# either variable yourself to override. Must happen before libgomp loads.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _os.environ["GOMP_SPINCOUNT"] = "3000"



def _require_cpu_features(cpuinfo: str = "/proc/cpuinfo") -> None:
    """ImportError, before the CPU core loads, when this x86-64 CPU lacks AVX2 or FMA.

    The wheel's CPU core is compiled for x86-64-v3 (AVX2 + FMA): without them its first op
    would kill the process with SIGILL. Linux x86-64 only (reads the first ``flags`` line of
    ``cpuinfo``); elsewhere, or when the file cannot be read, nothing is checked.
    A core built with INVERT_NATIVE_NATIVE_ARCH=ON (``_build_info.CPU_TARGET == "native"``)
    is not checked; INVERT_NATIVE_SKIP_CPU_CHECK=1 skips the check too.
    """
    if _os.environ.get("INVERT_NATIVE_SKIP_CPU_CHECK") == "1":
        return
    try:
        from ._build_info import CPU_TARGET
    except ImportError:  # a source tree without a build: assume the portable target
        CPU_TARGET = "x86-64-v3"
    if CPU_TARGET != "x86-64-v3":  # built for this host (-march=native), or not x86
        return
    if not _sys.platform.startswith("linux") or _os.uname().machine not in ("x86_64", "AMD64"):
        return
    try:
        with open(cpuinfo) as f:
            flags = next((line for line in f if line.startswith("flags")), None)
    except OSError:
        return
    if flags is None:
        return
    missing = [name for name in ("avx2", "fma") if name not in flags.split(":", 1)[-1].split()]
    if missing:
        raise ImportError(
            f"invert_native: this CPU lacks {' and '.join(m.upper() for m in missing)}, which the "
            "CPU core was compiled for (x86-64-v3: AVX2 + FMA); running it would crash the "
            "process (illegal instruction). Build it for this machine from a source checkout: "
            "pip install . -Ccmake.define.INVERT_NATIVE_NATIVE_ARCH=ON.")


_require_cpu_features()

from . import nn, ops  # noqa: E402
from ._backend import CudaStatus, cuda_available
from ._cpu import get_num_threads, set_num_threads
from .representations import DSIFT, HOG, dsift, hog
from .representations import CaffeNet
from .onnx_loader import OnnxError, OnnxNet
from .invert import (InversionDiverged, InversionResult, code_lambda_alpha, invert,
                     mean_pairwise_distance, objective, paper_lambdas, paper_sigma,
                     reconstruction_error, tv_lambda_for_beta)

__version__ = "0.1.0"

__all__ = ["ops", "nn", "cuda_available", "CudaStatus", "set_num_threads", "get_num_threads",
           "invert", "objective", "code_lambda_alpha", "InversionResult", "InversionDiverged",
           "paper_lambdas", "paper_sigma", "reconstruction_error", "tv_lambda_for_beta", "mean_pairwise_distance", "__version__",
           "DSIFT", "dsift", "HOG", "hog", "CaffeNet", "OnnxNet", "OnnxError"]

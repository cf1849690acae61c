"""What the machine can do, measured by the benchmark itself: SGEMM rate and memory bandwidth.

Every rate in the report is a fraction of these two numbers, taken on the same machine, in
the same process, with the same thread count as the rows: a conv at 50 % of the measured
SGEMM rate is good wherever it runs.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np


def _best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def sgemm_gflops(n: int, repeats: int, torch_device: str = "cpu") -> dict:
    """Best float32 n x n x n matmul rate of NumPy (its BLAS) and PyTorch, in GFLOP/s."""
    import torch

    flop = 2.0 * n ** 3
    out = {"n": n}
    if torch_device == "cpu":
        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        a @ b  # warm-up: BLAS thread pool, page faults
        out["numpy"] = flop / _best_seconds(lambda: a @ b, repeats) / 1e9
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        torch.mm(ta, tb)
        out["torch"] = flop / _best_seconds(lambda: torch.mm(ta, tb), repeats) / 1e9
    else:
        # NumPy has no GPU: PyTorch's cuBLAS SGEMM, TF32 off (plain float32, as our kernels)
        allow = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            ta = torch.randn(n, n, device=torch_device)
            tb = torch.randn(n, n, device=torch_device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.mm(ta, tb)
            best = float("inf")
            for _ in range(repeats):
                start.record()
                torch.mm(ta, tb)
                end.record()
                end.synchronize()
                best = min(best, start.elapsed_time(end) / 1e3)
            out["torch"] = flop / best / 1e9
        finally:
            torch.backends.cuda.matmul.allow_tf32 = allow
    out["gflops"] = max(v for k, v in out.items() if k in ("numpy", "torch"))
    return out


def memory_gbs(megabytes: int, repeats: int, torch_device: str = "cpu") -> dict:
    """Read bandwidth: the best rate of summing a large float32 array, in GB/s (1e9 bytes).

    NumPy's sum runs on one thread, PyTorch's on all of its threads; the best of the two is
    kept. Arrays smaller than the last-level cache overstate the figure (``--quick`` does).
    """
    import torch

    n = megabytes * (1 << 20) // 4
    out = {"megabytes": megabytes}
    if torch_device == "cpu":
        a = np.ones(n, np.float32)  # written once: the pages exist before timing
        a.sum()
        out["numpy"] = a.nbytes / _best_seconds(lambda: a.sum(), repeats) / 1e9
        t = torch.from_numpy(a)
        t.sum()
        out["torch"] = a.nbytes / _best_seconds(lambda: t.sum(), repeats) / 1e9
    else:
        t = torch.ones(n, device=torch_device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t.sum()
        best = float("inf")
        for _ in range(repeats):
            start.record()
            t.sum()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        out["torch"] = 4.0 * n / best / 1e9
    out["gbs"] = max(v for k, v in out.items() if k in ("numpy", "torch"))
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
                            if f in flags]
    except OSError:
        pass
    return []


def _hypervisor() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            if " hypervisor" in f.read():
                return "virtual machine"
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def describe(threads: int, device: str) -> dict:
    """Facts about the machine and the software, for the report's header."""
    import torch

    import invert_native

    flags = _cpu_flags()
    isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    d = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "isa": isa,
        "cpu_flags": flags,
        "virtual": _hypervisor(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "invert_native": invert_native.__version__,
        "threads": threads,
        # one libgomp serves both libraries in a process, so both wait the same way
        "openmp_waits": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
        "device": device,
        "load_average_start": load_average(),
    }
    if device == "cuda":
        d["gpu"] = torch.cuda.get_device_name()
        d["cuda_status"] = str(invert_native.cuda_available())
    return d


def summary(d: dict) -> str:
    """One line naming the machine, e.g. '2-core x86_64 AVX-512 (Intel Xeon), virtual machine'."""
    s = f"{d['cores']}-core {d['arch']} {d['isa']} ({d['cpu']})"
    if d.get("virtual"):
        s += f", {d['virtual']}"
    if d.get("memory_gib"):
        s += f", {d['memory_gib']:.0f} GiB RAM"
    if d.get("gpu"):
        s += f"; GPU: {d['gpu']}"
    return s

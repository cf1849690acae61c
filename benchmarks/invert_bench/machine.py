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


def _numpy_limiter(threads: int):
    """A context limiting NumPy's BLAS to ``threads`` threads, or None when that cannot be
    done: OpenBLAS ignores torch.set_num_threads and would otherwise use every core."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=threads, user_api="blas")


def sgemm_gflops(n: int, repeats: int, torch_device: str = "cpu", threads: int = 1) -> dict:
    """Best float32 n x n x n matmul rate, in GFLOP/s, on ``threads`` threads.

    CPU: the better of PyTorch's ``torch.mm`` and NumPy's BLAS, the latter only when
    threadpoolctl can hold it to ``threads`` (else it is left out, and ``numpy_skipped`` says
    why); ``source`` names the library that gave the figure.
    """
    import torch

    flop = 2.0 * n ** 3
    out = {"n": n, "threads": threads}
    if torch_device == "cpu":
        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        limiter = _numpy_limiter(threads)
        if limiter is None:
            out["numpy_skipped"] = (f"threadpoolctl is not installed, so NumPy's BLAS cannot be "
                                    f"held to {threads} thread(s) (pip install threadpoolctl)")
        else:
            with limiter:
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
    out["source"] = max((k for k in ("numpy", "torch") if k in out), key=out.get)
    out["gflops"] = out[out["source"]]
    return out


def memory_gbs(megabytes: int, repeats: int, torch_device: str = "cpu") -> dict:
    """Read bandwidth: the best rate of summing a float32 array of ``megabytes`` MiB, in GB/s
    (1e9 bytes).

    NumPy's sum runs on one thread, PyTorch's on its threads; the best of the two is kept.
    An array that fits in the last-level cache overstates the figure (``--quick``'s does):
    see :func:`bandwidth_megabytes`.
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
    out["source"] = max((k for k in ("numpy", "torch") if k in out), key=out.get)
    out["gbs"] = out[out["source"]]
    return out


def bandwidth_megabytes(caches: dict, quick: bool) -> tuple[int, str]:
    """(MiB, why) of the bandwidth array: 1 GiB, or twice the L3 cache when that is larger
    (a VM may report a cache of hundreds of MiB), at most a quarter of the free memory."""
    if quick:
        return 32, "--quick: small, so it may sit in cache and overstate the bandwidth"
    l3 = caches.get("L3")
    mib = 1024
    why = "1 GiB"
    if l3 and 2 * l3 > mib * (1 << 20):
        mib = -(-2 * l3 // (1 << 20))
        why = f"twice the {l3 / (1 << 20):.0f} MiB L3 cache"
    free = _meminfo("MemAvailable")
    if free and mib * (1 << 20) > free // 4:
        mib = max(64, free // 4 // (1 << 20))
        why += f", capped at a quarter of the free memory ({mib} MiB)"
    return int(mib), why


def cache_sizes() -> dict:
    """Bytes of the CPU's data caches as the OS reports them: {"L1d": .., "L2": .., "L3": ..}."""
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        entries = []
    for e in entries:
        d = os.path.join(base, e)
        try:
            with open(os.path.join(d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(d, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(d, "size")) as f:
                size = f.read().strip()
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        try:
            n = int(size.rstrip("KMG")) * mult
        except ValueError:
            continue
        out["L1d" if level == 1 else f"L{level}"] = n
    return out


def _size(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= (1 << 20) else f"{n / (1 << 10):.0f} KiB"


def caches_text(caches: dict) -> str:
    """'L1d 48 KiB, L2 2 MiB, L3 480 MiB' (per core as the OS lists them for CPU 0)."""
    return ", ".join(f"{k} {_size(v)}" for k, v in caches.items()) or "not reported"


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


def _meminfo(key: str) -> int | None:
    """Bytes of one /proc/meminfo entry (e.g. MemTotal, MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _memory_gib() -> float | None:
    total = _meminfo("MemTotal")
    return None if total is None else total / (1 << 30)


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
        "caches": cache_sizes(),
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
    if d.get("caches"):
        s += f"; caches {caches_text(d['caches'])}"
    if d.get("gpu"):
        s += f"; GPU: {d['gpu']}"
    return s

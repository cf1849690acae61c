"""Timing: ours and PyTorch alternately, after warm-up, medians of many runs; validation first.

A row is measured as

    warm-up: both sides `warmup` times;
    then pairs: (ours, torch), (torch, ours), (ours, torch), ... until at least `min_reps`
    pairs and `budget_s` seconds, or `max_reps` pairs.

Alternating in one process means a machine that slows down (another job, thermal limits)
slows both sides alike, so the ratio stays honest even when the absolute times drift.
On the CPU a run is timed with ``perf_counter`` (both libraries return when their work
is done). On a GPU each side is timed with its own library's CUDA events on its current
stream: ``cupy.cuda.Event`` for ours, ``torch.cuda.Event`` for PyTorch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np


class CpuClock:
    name = "perf_counter"

    def __call__(self, fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


class CupyClock:
    """Seconds between two CuPy events around fn on CuPy's current stream."""

    name = "cuda events (cupy)"

    def __init__(self):
        import cupy

        self.cp = cupy
        self.start, self.end = cupy.cuda.Event(), cupy.cuda.Event()

    def __call__(self, fn) -> float:
        self.start.record()
        fn()
        self.end.record()
        self.end.synchronize()
        return self.cp.cuda.get_elapsed_time(self.start, self.end) / 1e3


class TorchCudaClock:
    """Seconds between two torch CUDA events around fn on PyTorch's current stream."""

    name = "cuda events (torch)"

    def __init__(self):
        import torch

        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn) -> float:
        self.start.record()
        fn()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3


def clocks(device: str):
    """(clock for ours, clock for PyTorch)."""
    if device == "cuda":
        return CupyClock(), TorchCudaClock()
    return CpuClock(), CpuClock()


@dataclass
class Settings:
    warmup: int = 3
    min_reps: int = 10
    max_reps: int = 200
    budget_s: float = 3.0


class Contention:
    """CPU time that other processes used while a measurement ran, in cores (Linux only).

    The machine's busy time (/proc/stat) minus this process's CPU time, over the wall time:
    0.0 on a quiet machine, 1.0 when another process kept one core busy throughout. On a
    machine with few cores this matters: an OpenMP thread that loses its core makes every
    parallel region wait for it.
    """

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
            return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _own():
        t = os.times()
        return t.user + t.system

    def cores(self) -> float | None:
        busy = self._busy()
        if busy is None or self.busy0 is None:
            return None
        wall = time.perf_counter() - self.t0
        if wall < 0.5:  # the counters tick every 10 ms: too coarse for a shorter span
            return None
        foreign = (busy - self.busy0) - (self._own() - self.own0)
        return max(0.0, foreign / wall)


def stats(samples) -> dict:
    s = np.asarray(samples, np.float64)
    q25, med, q75 = np.percentile(s, [25, 50, 75])
    return {"median_s": float(med), "q25_s": float(q25), "q75_s": float(q75),
            "min_s": float(s.min()), "max_s": float(s.max()), "n": int(s.size),
            # half the interquartile range relative to the median: the "±" of the table
            "spread": float((q75 - q25) / 2.0 / med) if med > 0 else 0.0}


def measure(ours, torch_fn, settings: Settings, clock_ours, clock_torch, prepare=None,
            prepare_torch=None) -> tuple[dict, dict]:
    """Time ``ours()`` and ``torch_fn()`` alternately; returns (stats of ours, stats of torch).

    ``prepare()`` / ``prepare_torch()``, if given, run untimed before each call of the
    matching side (e.g. to restore the start of an iteration).
    """

    def one(clock, fn, prep):
        if prep is not None:
            prep()
        return clock(fn)

    for _ in range(settings.warmup):
        one(clock_ours, ours, prepare)
        one(clock_torch, torch_fn, prepare_torch)
    t_ours, t_torch = [], []
    contention = Contention()
    start = time.perf_counter()
    i = 0
    while i < settings.max_reps and (i < settings.min_reps
                                     or time.perf_counter() - start < settings.budget_s):
        if i % 2 == 0:
            t_ours.append(one(clock_ours, ours, prepare))
            t_torch.append(one(clock_torch, torch_fn, prepare_torch))
        else:
            t_torch.append(one(clock_torch, torch_fn, prepare_torch))
            t_ours.append(one(clock_ours, ours, prepare))
        i += 1
    s_ours, s_torch = stats(t_ours), stats(t_torch)
    s_ours["contention"] = s_torch["contention"] = contention.cores()
    return s_ours, s_torch


def max_rel_diff(ours, ref) -> float:
    """max|ours - ref| / max|ref| in float64 (the test suite's error norm); inf on NaN."""
    a = np.asarray(ours, np.float64)
    b = np.asarray(ref, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare results of shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    scale = float(np.abs(b).max()) if b.size else 0.0
    err = float(np.abs(a - b).max()) if a.size else 0.0
    return err / scale if scale > 0 else err

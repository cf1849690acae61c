"""The ``invert-native`` command line."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _info(args) -> int:
    import invert_native as inv
    from invert_native import nn

    print(f"invert_native {inv.__version__}")
    print(f"CPU core: {inv.get_num_threads()} OpenMP thread(s)")
    status = inv.cuda_available()
    print(f"CUDA core: {'available, ' if status else 'not available: '}{status.reason}")

    # A CaffeNet-like block, forward and backward, as a smoke test of the core.
    rng = np.random.default_rng(0)
    net = nn.Sequential([
        ("conv1", nn.Conv2d(rng.standard_normal((96, 3, 11, 11), np.float32) * 0.01, stride=4)),
        ("relu1", nn.ReLU()),
        ("mpool1", nn.MaxPool2d(3, 2)),
        ("norm1", nn.LRN(5, 1e-4, 0.75, 1.0)),
    ])
    x = rng.standard_normal((1, 3, 227, 227), np.float32) * 50
    t0 = time.perf_counter()
    y = net.forward(x)
    dx = net.backward(np.ones_like(y))
    dt = time.perf_counter() - t0
    ok = bool(np.isfinite(dx).all()) and dx.shape == x.shape
    print(f"conv1..norm1 forward+backward on 227x227: output {tuple(y.shape)}, "
          f"{dt * 1e3:.1f} ms, {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="invert-native",
        description="Invert image representations (HOG, dense SIFT, CNN layers).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="show the build (CPU threads, CUDA status) and run a smoke test")
    p.set_defaults(func=_info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""Feature errors of inverting a random-weight (UNTRAINED) CaffeNet with the paper's settings.

    python docs/caffenet_random.py [--iterations 400] [--out docs/caffenet_random.md]

For each bundled photo (scikit-image's astronaut and chelsea, framed to 227 x 227 by
``net.preprocess``: aspect kept, centre crop) and each layer conv1, norm2, relu4, mpool5,
relu7 and fc8 of ``CaffeNet.random(seed=0)``, invert the layer's code from random start
``seed=0`` with the representation's paper settings (lambda_alpha = 2.16e8, lambda_V = 0.5 /
5 / 50 by layer, the 400-iteration CNN schedule) and report the relative feature error
||Phi(x*) - Phi0|| / ||Phi0||. The weights are untrained: the figures say how well the
optimiser matches codes of the architecture, not what a trained CaffeNet keeps.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time

import numpy as np

import invert_native as inv

LAYERS = ("conv1", "norm2", "relu4", "mpool5", "relu7", "fc8")
PHOTOS = ("astronaut", "chelsea")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations per inversion (default: the paper's 400)")
    p.add_argument("--out", default=None, help="also write the Markdown table to this file")
    args = p.parse_args(argv)
    from skimage import data

    commit = _commit()  # the code that runs (HEAD may move while this runs)
    net = inv.CaffeNet.random(seed=0)
    errors, seconds = {}, 0.0
    for photo in PHOTOS:
        image = getattr(data, photo)()
        for layer in LAYERS:
            rep = net.representation(layer)
            code = rep.code(image)
            t = time.perf_counter()
            kw = {} if args.iterations is None else {"iterations": args.iterations}
            r = inv.invert(rep, code, image_shape=rep.image_shape, seed=0, **kw)
            seconds += time.perf_counter() - t
            errors[photo, layer] = float(r.feature_error[0])
            iterations = r.objective.shape[0]
            print(f"{photo:10s} {layer:7s} feature error {errors[photo, layer]:.3f} "
                  f"({iterations} iterations)", flush=True)
    lines = [f"| photo | {' | '.join(LAYERS)} |", "|---|" + "---:|" * len(LAYERS)]
    for photo in PHOTOS:
        lines.append(f"| {photo} | " + " | ".join(f"{errors[photo, la]:.3f}" for la in LAYERS)
                     + " |")
    mean = [np.mean([errors[ph, la] for ph in PHOTOS]) for la in LAYERS]
    lines.append("| mean | " + " | ".join(f"{v:.3f}" for v in mean) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Inverting a random-weight (untrained) CaffeNet\n\n"
                    "Relative feature error ||Φ(x\\*) − Φ0|| / ||Φ0|| after "
                    f"{iterations} iterations with the paper's settings (λα = 2.16·10⁸, "
                    "λV = 0.5 / 5 / 50 by layer, the CNN schedule), `CaffeNet.random(seed=0)`, "
                    "random start `seed=0`, one restart; photos from scikit-image, framed to "
                    "227×227 by `net.preprocess` (aspect kept, centre crop). The weights are "
                    "**untrained**: these figures check that the optimiser matches the codes of "
                    "the architecture; they are not the paper's Table 3 (trained CaffeNet, "
                    "errors normalised by the mean pairwise code distance).\n\n"
                    f"{table}\n\n"
                    f"Measured at commit {commit} on {platform.machine()} "
                    f"({platform.processor() or platform.system()}), CPU core, "
                    f"{seconds:.0f} s of inversion in all. Reproduce with "
                    "`python docs/caffenet_random.py --out docs/caffenet_random.md`.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Table 1 of the paper: inverting HOG, HOGb and dense SIFT codes of grey photos.

As in the authors' code, the input is the grey image as 255*gray - 128 at its own size
(all images of one set share a size, so that their codes can be compared), HOG is the
paper's 27-D UoCTTI variant (texture dims dropped), HOGb the same with bilinear orientation
binning, and DSIFT the authors' network (bin size 5, a descriptor every 3 bins, one L2
normalisation). Settings, those of the authors' Table 1 script: lambda_alpha of their code at
the image's scale (invert.code_lambda_alpha: 2.16e8 at 227x227x3, less for smaller images),
lambda_V = 0.5 (their lambdaTV = 1, halved by their objective), beta = 2, momentum 0.9, and
0.004 x [1, 0.1, 0.01, 0.001] for 200 iterations each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import invert as _invert
from ..invert import mean_pairwise_distance
from ..representations import DSIFT, HOG

REPRESENTATIONS = ("hog", "hogb", "dsift")

# Natural photos that scikit-image ships (no download needed).
BUNDLED_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins",
                  "immunohistochemistry", "motorcycle")


def make_representation(name: str):
    """The paper's network for ``name`` in REPRESENTATIONS."""
    if name == "hog":
        return HOG(8, 9, "uoctti", bilinear=False, texture=False)
    if name == "hogb":
        return HOG(8, 9, "uoctti", bilinear=True, texture=False)
    if name == "dsift":
        return DSIFT.table1()
    raise ValueError(f"unknown shallow representation {name!r}; choose from "
                     f"{', '.join(REPRESENTATIONS)}")


def to_gray(image) -> np.ndarray:
    """H x W (x 3 or 4) image, uint8 or float in [0, 255] -> grey float32 in [0, 255]."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim == 3 and a.shape[2] == 3:
        a = a.astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140])  # ITU-R 601, as rgb2gray
    if a.ndim != 2:
        raise ValueError(f"expected a grey or RGB(A) image, got shape {a.shape}")
    a = a.astype(np.float32)
    if np.issubdtype(np.asarray(image).dtype, np.floating) and a.max() <= 1.0:
        a = a * 255.0  # images given in [0, 1]
    return a


def fit(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (keeping the aspect ratio) and centre-crop to size = (H, W), with Pillow.

    ``gray`` is H x W, or H x W x C (each channel resized alike); values in [0, 255].
    """
    from PIL import Image

    if gray.ndim == 3:
        return np.stack([fit(gray[..., c], size) for c in range(gray.shape[2])], axis=-1)
    H, W = size
    h, w = gray.shape
    s = max(H / h, W / w)
    nh, nw = max(H, round(h * s)), max(W, round(w * s))
    img = Image.fromarray(np.clip(gray, 0, 255).astype(np.float32), mode="F")
    img = img.resize((nw, nh), Image.BICUBIC)
    a = np.asarray(img, np.float32)
    y0, x0 = (nh - H) // 2, (nw - W) // 2
    return np.clip(a[y0:y0 + H, x0:x0 + W], 0, 255)


def bundled_photos(names=BUNDLED_PHOTOS, size=(192, 256)) -> list[tuple[str, np.ndarray]]:
    """scikit-image's photos as grey float32 images of one size, values in [0, 255]."""
    from skimage import data

    out = []
    for name in names:
        img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        out.append((name, fit(to_gray(img), size)))
    return out


@dataclass
class ShallowInversion:
    name: str                # representation
    image: np.ndarray        # the original, grey [0, 255], H x W
    reconstructions: np.ndarray  # restarts x H x W, grey [0, 255] (clipped for display)
    code: np.ndarray         # Phi(x0)
    codes: np.ndarray        # Phi of each reconstruction (restarts, ...)
    result: object           # the InversionResult


def invert_gray(name: str, gray: np.ndarray, rep=None, **options) -> ShallowInversion:
    """Invert the code of one grey image (H x W in [0, 255]) under representation ``name``.

    ``options`` go to :func:`invert_native.invert` (e.g. restarts, iterations, seed, callback).
    """
    return invert_image(name, gray, rep, **options)


def invert_image(name: str, image: np.ndarray, rep=None, device: str = "cpu",
                 **options) -> ShallowInversion:
    """Invert the code of a grey (H x W) or colour (H x W x 3, HOG only) image in [0, 255].

    The image enters as image - 128 (the authors' 255*gray - 128); ``device="cuda"`` runs the
    inversion on the GPU (CuPy). ``options`` go to :func:`invert_native.invert`. The
    reconstructions come back with 128 added, clipped to [0, 255] (R x H x W, or R x H x W x 3).
    """
    rep = make_representation(name) if rep is None else rep
    a = np.asarray(image, np.float32)
    colour = a.ndim == 3
    x0 = (a - 128.0).transpose(2, 0, 1)[None] if colour else (a - 128.0)[None, None]
    x0 = np.ascontiguousarray(x0)
    if device == "cuda":
        import cupy

        x0 = cupy.asarray(x0)
    code = rep.forward(x0)
    res = _invert(rep, code, image_shape=(a.shape[0], a.shape[1], 3 if colour else 1), **options)
    # the optimised images as the code saw them (mean-free); res.images has 128 added back
    pixels = np.ascontiguousarray(res.options["sigma"] * _host(res.x))
    codes = _host(rep.forward(_device(pixels) if device == "cuda" else pixels))
    recon = np.clip(res.images, 0, 255)
    return ShallowInversion(name, a, recon if colour else recon[..., 0], _host(code[0]), codes,
                            res)


def _device(a):
    import cupy

    return cupy.asarray(a)


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def set_scale(codes) -> tuple[float, float]:
    """(N_Phi, mean squared distance) of the codes of an image set (M >= 2 codes, (M, ...)):
    the normalisers of the paper's metric and of the authors' script's squared one."""
    codes = np.asarray(codes, np.float64)
    return mean_pairwise_distance(codes), mean_pairwise_distance(codes, squared=True)


def image_errors(code, rec_codes, scale=None) -> dict:
    """Errors of the reconstructions of one image, one value per restart.

    ``code``: Phi(x0); ``rec_codes``: (R, ...) codes of the reconstructions; ``scale``: the
    image set's :func:`set_scale`, or None (one image: only the relative error). Returns
    'relative' (||Phi(x*) - Phi(x0)|| / ||Phi(x0)||) and, with ``scale``, 'paper'
    (||Phi(x*) - Phi(x0)|| / N_Phi) and 'squared' (||.||^2 / mean squared distance).
    """
    c = np.asarray(code, np.float64).ravel()
    r = np.asarray(rec_codes, np.float64).reshape(len(rec_codes), -1)
    d2 = ((r - c) ** 2).sum(axis=1)
    out = {"relative": np.sqrt(d2 / (c ** 2).sum())}
    if scale is not None:
        out["paper"] = np.sqrt(d2) / scale[0]
        out["squared"] = d2 / scale[1]
    return out


def errors(inversions: list[ShallowInversion]) -> dict:
    """Per-image errors of one representation over an image set (the paper's metrics).

    Returns dict with 'paper' (||Phi(x*) - Phi(x0)|| / N_Phi, N_Phi the mean pairwise distance
    of the set's codes), 'squared' (the authors' script: squared error / mean squared
    distance) and 'relative' (||Phi(x*) - Phi(x0)|| / ||Phi(x0)||), each an array with one
    value per image (the first restart).
    """
    codes = np.stack([inv.code for inv in inversions]).astype(np.float64)
    rec = np.stack([inv.codes[0] for inv in inversions]).astype(np.float64)
    d2 = ((rec - codes) ** 2).reshape(len(codes), -1).sum(axis=1)
    n = mean_pairwise_distance(codes)
    n2 = mean_pairwise_distance(codes, squared=True)
    rel = np.sqrt(d2 / (codes ** 2).reshape(len(codes), -1).sum(axis=1))
    return {"paper": np.sqrt(d2) / n, "squared": d2 / n2, "relative": rel}


def summarise(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=0)) if len(v) > 1 else 0.0


PAPER_TABLE1 = {"hog": (28.10, 7.9), "hogb": (10.67, 5.2), "dsift": (10.89, 7.5)}


def table_markdown(per_rep: dict[str, dict]) -> str:
    """Markdown table: mean ± std error (%) per representation, both metrics, with the paper's."""
    lines = ["| representation | error % (paper metric) | squared metric % | paper (Table 1) |",
             "|---|---|---|---|"]
    for name, e in per_rep.items():
        m, s = summarise(100 * e["paper"])
        m2, s2 = summarise(100 * e["squared"])
        pm, ps = PAPER_TABLE1.get(name, (math.nan, math.nan))
        lines.append(f"| {name.upper() if name != 'hogb' else 'HOGb'} | {m:.2f} ± {s:.1f} | "
                     f"{m2:.2f} ± {s2:.1f} | {pm:.2f} ± {ps:.1f} |")
    return "\n".join(lines)

"""The paper's CaffeNet experiments: layers x lambda_V (Table 3, Fig. 6, Fig. 8), the central
5 x 5 neurons of a layer (Fig. 9) and one of its two channel groups (Fig. 10).

One inversion is a :class:`Job` (layer, lambda_V, optional loss mask); :func:`plan` lists the
jobs of a sweep and :func:`invert_layer` runs one. Images are RGB in [0, 255]; they are fitted
to CaffeNet's 227 x 227 input keeping their aspect ratio (resize so the short side is 227,
then a centre crop: :func:`fit_image`, the nets' own framing with :data:`FRAMING`), then the
net's preprocessing subtracts the mean.

Errors: ``relative`` is ||Phi(x*) - Phi0|| / ||Phi0|| (within the mask); with the codes of
several images at the same layer, ``paper`` is Table 3's ||Phi(x*) - Phi0|| / N_Phi, N_Phi the
mean pairwise distance between the images' codes (:func:`layer_scale`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from .. import invert as _invert
from ..invert import mean_pairwise_distance

__all__ = ["PAPER_LAMBDAS_TV", "PAPER_TABLE3", "DEMO_LAYERS", "WEIGHTS_HELP", "Job",
           "DeepInversion", "load_caffenet", "fit_image", "FRAMING", "plan", "invert_layer", "layer_codes",
           "layer_scale", "layer_scales", "table3_markdown", "paper_lambda_tv"]

PAPER_LAMBDAS_TV = (0.5, 5.0, 50.0)

_T3_LAYERS = ("conv1", "relu1", "mpool1", "norm1", "conv2", "relu2", "mpool2", "norm2", "conv3",
              "relu3", "conv4", "relu4", "conv5", "relu5", "mpool5", "fc6", "relu6", "fc7",
              "relu7", "fc8")
_T3 = ((10.0, 11.3, 21.9, 20.3, 12.4, 12.9, 15.5, 15.9, 14.5, 16.5,
        14.9, 13.8, 12.6, 15.6, 16.6, 12.4, 15.8, 12.8, 10.5, 5.3),
       (20.2, 22.4, 30.3, 28.2, 20.0, 17.4, 18.2, 18.4, 14.4, 15.1,
        13.3, 14.0, 15.4, 13.9, 15.5, 14.2, 13.7, 15.4, 10.8, 5.9),
       (40.8, 45.2, 54.1, 48.1, 39.7, 32.8, 32.7, 32.4, 25.6, 26.9,
        23.3, 23.9, 25.7, 20.1, 19.0, 18.6, 18.7, 17.1, 15.5, 8.5))
# Table 3 of the paper: error % (N_Phi metric, 100 images) per layer for lambda_V 0.5, 5, 50.
PAPER_TABLE3 = {name: {lam: row[i] for lam, row in zip(PAPER_LAMBDAS_TV, _T3)}
                for i, name in enumerate(_T3_LAYERS)}

# Layers of `invert-native demo --weights`: one per stage of the net, as in Fig. 6.
DEMO_LAYERS = ("conv1", "norm2", "relu3", "relu5", "relu6", "fc8")

WEIGHTS_HELP = ("CaffeNet weights are not bundled. Get the BVLC reference CaffeNet from the ONNX "
                "model zoo (https://github.com/onnx/models, file "
                "validated/vision/classification/caffenet/model/caffenet-12.onnx or "
                "caffenet-9.onnx; not the -int8 one) and pass it with --weights FILE.onnx "
                "(reading ONNX needs: pip install onnx). An .npz in CaffeNet.save_npz's layout "
                "works too.")


def paper_lambda_tv(net, layer: str) -> float:
    """lambda_V of the paper's Table 3 bold row for a layer (0.5, 5 or 50)."""
    return float(net.paper_lambdas_of(layer)[1])


# How the CLI frames images for CaffeNet: resize keeping the aspect ratio, centre crop,
# bicubic (as the authors' MATLAB imresize). The nets load_caffenet builds use it too.
FRAMING = {"resample": "bicubic", "fit": "crop"}


def fit_image(rgb: np.ndarray) -> np.ndarray:
    """An RGB image in [0, 255] -> the 227 x 227 x 3 picture the net sees (the nets' own
    ``fit_image`` with :data:`FRAMING`, available before any weights are loaded)."""
    from ..representations.caffenet import ImageTransform

    return ImageTransform(**FRAMING).fit_image(rgb)


def load_caffenet(path=None, *, random: bool = False, seed: int = 0, device: str = "cpu"):
    """CaffeNet from an ONNX (.onnx) or NumPy (.npz) weights file, or untrained random weights.

    Raises FileNotFoundError (no file), ValueError (unknown format, or weights that are not
    CaffeNet's: the message says which tensor or layer), ImportError (no ``onnx`` package).
    """
    from ..representations import CaffeNet

    framing = FRAMING
    if path is None:
        if not random:
            raise ValueError(WEIGHTS_HELP)
        net = CaffeNet.random(seed=seed, **framing)
    else:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such weights file")
        ext = os.path.splitext(path)[1].lower()
        if ext == ".onnx":
            net = CaffeNet.from_onnx(path, **framing)
        elif ext == ".npz":
            net = CaffeNet.from_npz(path, **framing)
        else:
            raise ValueError(f"{path}: unknown weights format {ext or '(no extension)'!r}; give "
                             "an .onnx model or an .npz in CaffeNet.save_npz's layout")
    if device == "cuda":
        net.to("cuda")
    return net


@dataclass(frozen=True)
class Job:
    """One inversion of a sweep: a layer, lambda_V (None: the paper's for the layer) and an
    optional loss mask: ("window", size) (Fig. 9) or ("group", g) with g = 1 or 2 (Fig. 10)."""

    layer: str
    lambda_tv: float | None = None
    mask: tuple | None = None

    @property
    def variant(self) -> str:
        """A short name of the mask ('' without one): 'window5', 'group1'."""
        return "" if self.mask is None else f"{self.mask[0]}{self.mask[1]}"

    def label(self, lambda_tv: float) -> str:
        v = f" {self.variant}" if self.variant else ""
        return f"{self.layer} lambdaV={lambda_tv:g}{v}"


def plan(net, layers=None, lambdas=None, window=None, group=None) -> list[Job]:
    """The jobs of a sweep: every layer (default all, or only those a mask applies to) x every
    lambda_V (default the paper's per layer), with the Fig. 9 window or Fig. 10 group mask.

    Raises ValueError for an unknown layer, or a mask that does not apply to a named layer.
    """
    if window is not None and group is not None:
        raise ValueError("--window and --group are separate experiments (Fig. 9 and Fig. 10): "
                         "give one of them")
    if group is not None and int(group) not in (1, 2):
        raise ValueError(f"--group must be 1 or 2 (CaffeNet's two channel groups), got {group}")
    if window is not None and int(window) < 1:
        raise ValueError(f"--window must be a positive number of neurons, got {window}")
    given = layers is not None
    names = list(net.names) if layers is None else list(layers)
    for name in names:
        if name not in net.names:
            raise ValueError(f"unknown layer {name!r}; CaffeNet's layers are: "
                             f"{', '.join(net.names)}")
    if window is not None or group is not None:
        ok = []
        for name in names:
            shape = net.code_shape(name)
            fits = len(shape) == 3 and (group is not None or min(shape[1:]) >= int(window))
            if fits:
                ok.append(name)
            elif given:
                what = (f"no {window}x{window} grid of neurons" if window is not None
                        else "no spatial grid of channels")
                raise ValueError(f"layer {name!r} (code {tuple(shape)}) has {what}: these "
                                 "masks apply to layers with a spatial grid (conv1 ... mpool5)")
        names = ok
    mask = (("window", int(window)) if window is not None
            else ("group", int(group)) if group is not None else None)
    lams = [None] if not lambdas else [float(v) for v in lambdas]
    return [Job(name, lam, mask) for lam in lams for name in names]


def job_mask(net, job: Job):
    if job.mask is None:
        return None
    kind, v = job.mask
    if kind == "window":
        return net.window_mask(job.layer, v)
    return net.group_mask(job.layer, v - 1, 2)


@dataclass
class DeepInversion:
    job: Job
    lambda_tv: float           # the value used
    reconstructions: np.ndarray  # (R, 227, 227, 3) RGB, clipped to [0, 255]
    codes: np.ndarray          # (R, ...) codes of the reconstructions (masked), NumPy
    code: np.ndarray           # Phi0 (masked), NumPy
    relative: np.ndarray       # (R,) ||Phi(x*) - Phi0|| / ||Phi0||
    objective: np.ndarray      # (R,) final objective
    seconds: float
    result: object = field(repr=False, default=None)

    @property
    def best(self) -> int:
        """The restart with the lowest final objective."""
        return int(np.argmin(self.objective))


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def layer_codes(net, images, job: Job) -> np.ndarray:
    """(M, ...) masked codes of fitted RGB images at the job's layer (NumPy float64)."""
    rep = net.representation(job.layer)
    mask = job_mask(net, job)
    out = []
    for img in images:
        c = _host(rep.code(img))[0].astype(np.float64)
        out.append(c if mask is None else c * mask)
    return np.stack(out)


def layer_scale(codes) -> float | None:
    """N_Phi of the codes of several images at one layer (None for a single image)."""
    return mean_pairwise_distance(codes) if len(codes) >= 2 else None


def layer_scales(net, images, jobs) -> dict:
    """{(layer, mask): (N_Phi, mean ||Phi||)} of fitted RGB images (two or more) at every
    job's layer, masked as the job is: known before the sweep, so that a set whose codes do
    not differ is refused before any inversion runs. One batch of all images per layer."""
    x = np.concatenate([net.preprocess(img) for img in images])
    if net.device == "cuda":
        import cupy

        x = cupy.asarray(x)
    out = {}
    for job in jobs:
        if (job.layer, job.mask) in out:
            continue
        c = _host(net.forward_to(x, job.layer)).astype(np.float64)
        mask = job_mask(net, job)
        if mask is not None:
            c = c * mask
        norm = float(np.sqrt((c.reshape(len(c), -1) ** 2).sum(axis=1)).mean())
        out[(job.layer, job.mask)] = (mean_pairwise_distance(c), norm)
    return out


def invert_layer(net, image, job: Job, **options) -> DeepInversion:
    """Invert the code of one fitted RGB image (227 x 227 x 3) at the job's layer.

    ``options`` go to :func:`invert_native.invert` (restarts, iterations, seed, callback...).
    """
    rep = net.representation(job.layer)
    code = rep.code(image)
    mask = job_mask(net, job)
    lam = paper_lambda_tv(net, job.layer) if job.lambda_tv is None else float(job.lambda_tv)
    t0 = time.perf_counter()
    res = _invert(rep, code, image_shape=rep.image_shape, lambda_tv=lam, mask=mask, **options)
    seconds = time.perf_counter() - t0
    codes = _host(rep.forward(res.x * np.float32(res.options["sigma"])))
    c0 = _host(code)[0]
    if mask is not None:
        codes = codes * mask
        c0 = c0 * mask
    rec = np.clip(res.images, 0, 255)
    return DeepInversion(job, lam, rec, codes, c0, np.asarray(res.feature_error, np.float64),
                         np.asarray(res.objective[-1], np.float64), seconds, res)


def table3_markdown(cells: dict, layers, lambdas, paper: bool = True,
                    paper_lambda=None) -> str:
    """Markdown: one row per layer, a column per lambda_V with our error % (and the paper's).

    ``cells[(layer, lambda_tv)]`` = (mean, std or None) as fractions; missing cells are left
    empty (an interrupted sweep). A lambda_tv of None is the paper's value per layer, given by
    ``paper_lambda(layer)`` (its column shows the value used).
    """
    head = ["layer"]
    for lam in lambdas:
        head.append("λV (paper's)" if lam is None else f"λV={lam:g}")
        if paper and (lam is None or lam in PAPER_LAMBDAS_TV):
            head.append("paper" if lam is None else f"paper λV={lam:g}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for layer in layers:
        row = [layer]
        for lam in lambdas:
            cell = cells.get((layer, lam))
            used = f" (λV={paper_lambda(layer):g})" if lam is None and paper_lambda else ""
            if cell is None:
                row.append("")
            else:
                m, s = 100 * cell[0], None if cell[1] is None else 100 * cell[1]
                row.append(f"{m:.1f}" + (f" ± {s:.1f}" if s is not None else "") + used)
            if paper and (lam is None or lam in PAPER_LAMBDAS_TV):
                at = paper_lambda(layer) if lam is None and paper_lambda else lam
                v = PAPER_TABLE3.get(layer, {}).get(at)
                row.append("" if v is None else f"{v:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)

"""The inversion engine: find images whose code under a representation matches a target.

Minimises, over the scaled image variable x (so that the image is sigma * x),

    E(x) = ||Phi(sigma x) - Phi0||^2 / ||Phi0||^2 + lambda_alpha * sum |x|^alpha
           + lambda_tv * sum_ij ((x[i,j+1]-x[i,j])^2 + (x[i+1,j]-x[i,j])^2)^(beta/2)

by momentum gradient descent (Mahendran & Vedaldi, CVPR 2015, eq. 3 and section 2.1).
The representation is any object with ``forward(x)`` and ``backward(dy)`` on
(N, C, H, W) float32 batches (NumPy or CuPy); all restarts run as one batch.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import _backend, ops
from .ops._dispatch import new_array_like

__all__ = ["invert", "objective", "InversionResult", "InversionDiverged", "paper_lambdas",
           "code_lambda_alpha", "paper_sigma",
           "reconstruction_error", "mean_pairwise_distance", "CNN_SCHEDULE", "SHALLOW_SCHEDULE"]

# Learning-rate schedules of the authors' code: (rate, iterations) segments; the
# momentum is reset to zero whenever the rate changes.
CNN_SCHEDULE = ((0.004, 100), (0.0004, 200), (0.00004, 100))
SHALLOW_SCHEDULE = ((0.004, 200), (0.0004, 200), (0.00004, 200), (0.000004, 200))
# lambda_V of the authors' Table 1 runs (lambdaTV = 1 in their code, which halves it).
SHALLOW_LAMBDA_TV = 0.5

# Average Euclidean norm of a mean-subtracted natural image, per value (the
# authors' 27098.1157 for 227x227x3 images, divided by sqrt(227*227*3)).
SIGMA_PER_VALUE = 27098.1157 / math.sqrt(227 * 227 * 3)


class InversionDiverged(FloatingPointError):
    """The objective became NaN or Inf: the learning rate is too large for this problem."""


@dataclass
class InversionResult:
    """What :func:`invert` found.

    Attributes:
        images: (restarts, H, W, C) reconstructions in the representation's pixel units, with
            the representation's mean added back where it subtracts one (NumPy, float32).
        x: (restarts, C, H, W) the optimised variable (image = sigma * x before deprocessing),
            on the representation's device.
        objective, data, alpha_term, tv_term: (iterations, restarts) float64 histories of E and
            of its three terms (the regularisers already multiplied by their lambdas).
        feature_error: (restarts,) final ||Phi(sigma x) - Phi0|| / ||Phi0|| (within the mask).
        options: the settings used, defaults resolved.
    """

    images: np.ndarray
    x: object
    objective: np.ndarray
    data: np.ndarray
    alpha_term: np.ndarray
    tv_term: np.ndarray
    feature_error: np.ndarray
    options: dict = field(default_factory=dict)


def paper_sigma(image_shape: Sequence[int]) -> float:
    """sigma = 68.92 * sqrt(H*W*C): the norm of a typical mean-subtracted image of that size."""
    return SIGMA_PER_VALUE * math.sqrt(float(np.prod(image_shape)))


def code_lambda_alpha(sigma: float) -> float:
    """lambda_alpha (alpha = 6) of the authors' code at image scale sigma.

    Their code puts lambda_L / 2 * sum x^6 / sigma^2 on the unscaled image x with
    lambda_L = 8e-10; in the scaled variable that is (lambda_L / 2) * sigma^4 * sum x^6.
    At sigma = 27098 (227x227x3) this is the paper's 2.16e8; it shrinks with smaller images,
    which keeps the descent stable there (a fixed 2.16e8 diverges on small images).
    """
    return 4e-10 * float(sigma) ** 4


def paper_lambdas(sigma: float, height: int, width: int, alpha: float = 6.0, beta: float = 2.0,
                  B: float = 128.0, a: float = 0.01) -> tuple[float, float]:
    """The paper's heuristics: lambda_alpha = sigma^alpha / (H W B^alpha) and
    lambda_tv = sigma^beta / (H W (a B)^beta), for pixel range B and typical gradient a*B."""
    hw = float(height) * float(width)
    return sigma ** alpha / (hw * B ** alpha), sigma ** beta / (hw * (a * B) ** beta)


def _schedule(learning_rate, iterations, default):
    """-> list of (rate, iterations) segments."""
    if learning_rate is None:
        segs = [(float(r), int(n)) for r, n in default]
        if iterations is not None:  # stretch the default schedule to the requested length
            total = sum(n for _, n in segs)
            cuts = [round(iterations * sum(n for _, n in segs[: i + 1]) / total)
                    for i in range(len(segs))]
            segs = [(r, c - p) for (r, _), c, p in zip(segs, cuts, [0] + cuts[:-1]) if c - p > 0]
        return segs
    if isinstance(learning_rate, (int, float, np.floating, np.integer)):
        n = 400 if iterations is None else int(iterations)
        return [(float(learning_rate), n)]
    try:
        segs = [(float(r), int(n)) for r, n in learning_rate]
    except (TypeError, ValueError):
        raise TypeError("learning_rate must be a number or a sequence of (rate, iterations) "
                        f"pairs, got {learning_rate!r}") from None
    if iterations is not None and iterations != sum(n for _, n in segs):
        raise ValueError(f"iterations={iterations} disagrees with the schedule's "
                         f"{sum(n for _, n in segs)} iterations")
    return segs


def invert(representation, target, *, image_shape, sigma=None, alpha=6.0, beta=2.0,
           lambda_alpha=None, lambda_tv=None, B=128.0, a=0.01, momentum=0.9,
           learning_rate=None, iterations=None, restarts=1, seed=0, mask=None,
           callback: Callable | None = None, callback_every: int = 10, tv_floor=1e-5):
    """Reconstruct images from the code ``target`` = Phi(x0) of the representation.

    Args:
        representation: object with ``forward(x)`` / ``backward(dy)`` on (N, C, H, W) float32
            batches (e.g. :class:`invert_native.HOG`, a CaffeNet layer, an ``nn.Sequential``).
            Optional attributes it may carry: ``paper_schedule`` (the default learning-rate
            schedule), ``paper_lambdas`` ((lambda_alpha, lambda_tv) used when not given, or a
            function of sigma returning them),
            ``deprocess(x)`` ((N, C, H, W) pixel values -> (N, H, W, C) images, e.g. adding a
            mean back).
        target: Phi0, with or without its batch dimension of 1, NumPy or CuPy (the device of
            the target is the device of the whole run).
        image_shape: (H, W, C) of the images to reconstruct.
        sigma: image scale; default :func:`paper_sigma` of ``image_shape``.
        alpha, beta: exponents of the alpha-norm and TV^beta priors (paper: 6 and 2).
        lambda_alpha, lambda_tv: weights; default the representation's ``paper_lambdas``, else
            the paper's heuristics (:func:`paper_lambdas` with ``B`` and ``a``).
        momentum: m of the update mu <- m mu - eta grad; x <- x + mu.
        learning_rate: a number (constant rate for ``iterations``, default 400) or a sequence of
            (rate, iterations) segments; the momentum is reset at each change. Default: the
            representation's ``paper_schedule``, else the paper's CNN schedule
            (0.004 x [1, 0.1, 0.01] for 100, 200, 100 iterations); ``iterations`` alone stretches
            or shrinks the default schedule proportionally.
        restarts: reconstructions from different random starts, run as one batch.
        seed: seed of the random starts (same seed, same result on the CPU).
        mask: weights of the code's elements in the loss, broadcastable to the target's shape
            (without batch): 0/1 selects a spatial window of neurons (paper Fig. 9) or a subset
            of channels (Fig. 10); elements with weight 0 get no gradient.
        callback: called as ``callback(iteration, objective)`` every ``callback_every``
            iterations and at the end, with the per-restart objective as a NumPy array (the
            only host transfer inside the loop).
        tv_floor: floor of d1^2 + d2^2 inside the TV gradient (keeps beta < 2 finite).

    Returns:
        :class:`InversionResult`.

    Raises:
        InversionDiverged: the objective became NaN/Inf (checked every ``callback_every``
            iterations and at the end); the message names the iteration. No automatic back-off:
            rerun with a smaller ``learning_rate``.
    """
    if not (_backend.is_cupy(target) or isinstance(target, np.ndarray)):
        target = np.asarray(target, dtype=np.float32)
    xp = _backend.array_module(target)
    H, W, C = (int(v) for v in image_shape)
    if min(H, W, C) <= 0:
        raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape}")
    restarts = int(restarts)
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    sigma = paper_sigma((H, W, C)) if sigma is None else float(sigma)
    if lambda_alpha is None or lambda_tv is None:
        given = getattr(representation, "paper_lambdas", None)
        if callable(given):
            given = given(sigma)
        la, lt = given if given is not None else paper_lambdas(sigma, H, W, alpha, beta, B, a)
        lambda_alpha = la if lambda_alpha is None else lambda_alpha
        lambda_tv = lt if lambda_tv is None else lambda_tv
    lambda_alpha, lambda_tv = float(lambda_alpha), float(lambda_tv)
    segments = _schedule(learning_rate, iterations,
                         getattr(representation, "paper_schedule", CNN_SCHEDULE))
    total = sum(n for _, n in segments)
    callback_every = max(1, int(callback_every))

    # random starts, each scaled to unit norm
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((restarts, C, H, W)).astype(np.float32)
    x0 /= np.sqrt((x0.astype(np.float64) ** 2).reshape(restarts, -1).sum(axis=1)).reshape(-1, 1, 1, 1).astype(np.float32)
    x = xp.asarray(x0)

    obj = _Objective(representation, target, x, sigma, alpha, beta, lambda_alpha, lambda_tv,
                     mask, tv_floor)
    hist = xp.zeros((4, total, restarts), xp.float64)  # E, data, alpha, tv; stays on device
    velocity = xp.zeros_like(x)
    # Overflow shows up as a non-finite objective, which is checked below: keep
    # NumPy from warning about it first.
    with np.errstate(over="ignore", invalid="ignore"):
        _descend(obj, x, velocity, hist, segments, momentum, callback, callback_every)

    # final images and errors
    err = xp.sqrt(obj.data_term(x))
    pixels = sigma * x
    deprocess = getattr(representation, "deprocess", None)
    if deprocess is not None:
        images = deprocess(pixels)
    else:
        images = xp.transpose(pixels, (0, 2, 3, 1))
    images = images.get() if hasattr(images, "get") and not isinstance(images, np.ndarray) else images
    hist = hist.get() if xp is not np else hist
    err = err.get() if xp is not np else err
    options = dict(image_shape=(H, W, C), sigma=sigma, alpha=float(alpha), beta=float(beta),
                   lambda_alpha=lambda_alpha, lambda_tv=lambda_tv, momentum=float(momentum),
                   learning_rate=[list(s) for s in segments], iterations=total,
                   restarts=restarts, seed=seed, masked=mask is not None, tv_floor=tv_floor)
    return InversionResult(images=np.ascontiguousarray(images, dtype=np.float32), x=x,
                           objective=hist[0], data=hist[1], alpha_term=hist[2], tv_term=hist[3],
                           feature_error=np.asarray(err), options=options)


def _descend(obj, x, velocity, hist, segments, momentum, callback, callback_every):
    """Momentum descent in place on x; fills hist (4, iterations, restarts)."""
    xp = obj.xp
    total = hist.shape[1]
    it = 0
    # Built-in representations draw their op outputs from one workspace that every
    # iteration reuses, so the loop allocates no image- or code-sized arrays.
    ws = ops.Workspace() if getattr(obj.rep, "reuses_outputs", False) else None
    with ops.reusing(ws) if ws is not None else contextlib.nullcontext():
        for rate, count in segments:
            velocity[...] = 0.0  # the authors reset the momentum at each rate change
            rate32, momentum32 = xp.float32(rate), xp.float32(momentum)
            for _ in range(count):
                if ws is not None:
                    ws.rewind()
                try:
                    terms, grad = obj.evaluate(x)
                except ValueError:
                    # a representation that checks its input refuses a diverged image
                    if not bool(xp.isfinite(x).all()):
                        raise InversionDiverged(
                            f"the image became NaN/Inf by iteration {it} (learning rate "
                            f"{rate:g}); rerun with a smaller learning_rate or lambda_alpha"
                        ) from None
                    raise
                for k in range(4):
                    hist[k, it] = terms[k]
                velocity *= momentum32
                grad *= rate32  # grad is scratch: scale it in place rather than allocate
                velocity -= grad
                x += velocity
                it += 1
                # on the host the check is free; on a GPU it costs a transfer, so every k
                if xp is np or it % callback_every == 0 or it == total:
                    e = hist[0, it - 1]
                    e_host = e.get() if xp is not np else e
                    if not np.isfinite(e_host).all():
                        raise InversionDiverged(
                            f"the objective became {e_host[~np.isfinite(e_host)][0]} by "
                            f"iteration {it} (learning rate {rate:g}); rerun with a smaller "
                            "learning_rate or lambda_alpha")
                    if callback is not None and (it % callback_every == 0 or it == total):
                        callback(it, np.array(e_host))


class _Objective:
    """E(x) and its gradient for one target; restarts are the batch of x."""

    def __init__(self, rep, target, x, sigma, alpha, beta, lambda_alpha, lambda_tv, mask,
                 tv_floor):
        xp = _backend.array_module(x)
        self.rep, self.xp, self.sigma = rep, xp, float(sigma)
        self.alpha, self.beta, self.tv_floor = float(alpha), float(beta), float(tv_floor)
        self.lambda_alpha, self.lambda_tv = float(lambda_alpha), float(lambda_tv)
        code_shape = tuple(rep.forward(self.sigma * x).shape[1:])
        t = xp.asarray(target).astype(xp.float32)
        if tuple(t.shape) == (1,) + code_shape:
            t = t[0]
        if tuple(t.shape) != code_shape:
            raise ValueError(f"target has shape {tuple(target.shape)} but the representation "
                             f"gives codes of shape {code_shape} for images of shape "
                             f"{tuple(x.shape[2:]) + (x.shape[1],)}")
        if not bool(xp.isfinite(t).all()):
            raise ValueError("target contains NaN or Inf")
        self.m = None
        if mask is not None:
            m = xp.asarray(mask).astype(xp.float32)
            try:
                self.m = xp.broadcast_to(m, code_shape).copy()
            except ValueError:
                raise ValueError(f"mask of shape {tuple(m.shape)} does not broadcast to the "
                                 f"code shape {code_shape}") from None
            t = t * self.m
        self.t = t
        self.t_norm2 = float((t.astype(xp.float64) ** 2).sum())
        if not self.t_norm2 > 0.0:
            raise ValueError("the target (within the mask) is all zeros: the normalised loss "
                             "||Phi - Phi0||^2 / ||Phi0||^2 is undefined")

    def _residual(self, x):
        """Phi(sigma x) (* mask) - target, in the representation's output array."""
        xs = new_array_like(x, x.shape, x.dtype)
        self.xp.multiply(x, self.xp.float32(self.sigma), out=xs)
        r = self.rep.forward(xs)
        if self.m is not None:
            r *= self.m  # t is already masked
        r -= self.t
        return r

    def data_term(self, x):
        r = self._residual(x)
        return (r.astype(self.xp.float64) ** 2).reshape(x.shape[0], -1).sum(axis=1) / self.t_norm2

    def evaluate(self, x):
        """-> ((E, data, lambda_alpha*R_alpha, lambda_tv*R_tv) each (N,) float64, dE/dx).

        dE/dx may be scratch that the next call overwrites (see :func:`_descend`).
        """
        xp = self.xp
        r = self._residual(x)
        if r.dtype == xp.float32:
            # sum r^2 (in float64) and its gradient 2r in one native pass
            sq, dr = ops.alpha_norm_forward(r, 2.0)
        else:  # a representation of the caller's that computes in another precision
            sq = (r.astype(xp.float64) ** 2).reshape(x.shape[0], -1).sum(axis=1)
            dr = 2 * r
        data = sq / self.t_norm2
        dr *= xp.float32(1.0 / self.t_norm2)
        if self.m is not None:
            dr *= self.m
        grad = self.rep.backward(dr)
        grad *= xp.float32(self.sigma)
        ra, ga = ops.alpha_norm_forward(x, self.alpha)
        rt, gt = ops.tv_forward(x, self.beta, self.tv_floor)
        ga *= xp.float32(self.lambda_alpha)
        gt *= xp.float32(self.lambda_tv)
        grad += ga
        grad += gt
        ra = self.lambda_alpha * ra
        rt = self.lambda_tv * rt
        return (data + ra + rt, data, ra, rt), grad


def objective(representation, target, x, *, sigma, alpha=6.0, beta=2.0, lambda_alpha=0.0,
              lambda_tv=0.0, mask=None, tv_floor=1e-5):
    """E(x) of :func:`invert` and its gradient, for a batch x (N, C, H, W) of scaled images.

    Returns ((E, data, lambda_alpha*R_alpha, lambda_tv*R_tv), dE/dx), each term (N,) float64.
    Useful to check gradients or to drive another optimiser.
    """
    obj = _Objective(representation, target, x, sigma, alpha, beta, lambda_alpha, lambda_tv,
                     mask, tv_floor)
    return obj.evaluate(x)


def mean_pairwise_distance(codes, squared: bool = False) -> float:
    """N_Phi: the mean Euclidean distance between the codes of an image set (M >= 2 codes,
    shape (M, ...)); with ``squared`` the mean squared distance (the authors' script)."""
    c = np.asarray(_host(codes), np.float64).reshape(len(codes), -1)
    if c.shape[0] < 2:
        raise ValueError("mean_pairwise_distance needs the codes of at least two images")
    # Differences, not |a|^2 + |b|^2 - 2ab: that form cancels to rounding noise for equal
    # or near-equal codes, and a set of identical images must give exactly 0.
    d2 = np.concatenate([((c[i + 1:] - c[i]) ** 2).sum(axis=1) for i in range(len(c) - 1)])
    return float(d2.mean() if squared else np.sqrt(d2).mean())


def reconstruction_error(reconstructed, original, codes=None, squared: bool = False):
    """Error of reconstructions in code space, one value per row.

    ``reconstructed`` and ``original`` are codes Phi(x*) and Phi(x0) of shape (N, ...) (or a
    single code). With ``codes`` (the codes of the whole image set, (M, ...)) this is the
    paper's metric ||Phi(x*) - Phi(x0)|| / N_Phi, N_Phi the mean pairwise distance between the
    set's codes (:func:`mean_pairwise_distance`); with ``squared`` the authors' script's variant
    ||.||^2 / mean squared distance. Without ``codes`` it is ||Phi(x*) - Phi(x0)|| / ||Phi(x0)||.
    """
    rec = np.asarray(_host(reconstructed), np.float64)
    orig = np.asarray(_host(original), np.float64)
    if rec.shape != orig.shape:
        raise ValueError(f"reconstructed codes {rec.shape} and original codes {orig.shape} "
                         "differ in shape")
    if rec.ndim == 0:
        raise ValueError("codes must be arrays")
    rec2 = rec.reshape(rec.shape[0], -1) if rec.ndim > 1 else rec.reshape(1, -1)
    orig2 = orig.reshape(rec2.shape)
    d2 = ((rec2 - orig2) ** 2).sum(axis=1)
    if codes is not None:
        n = mean_pairwise_distance(codes, squared)
        return d2 / n if squared else np.sqrt(d2) / n
    o2 = (orig2 ** 2).sum(axis=1)
    return d2 / o2 if squared else np.sqrt(d2 / o2)


def _host(a):
    return a.get() if _backend.is_cupy(a) else a

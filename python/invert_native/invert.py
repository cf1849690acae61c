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
import hashlib
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import _backend, ops
from .ops._dispatch import new_array_like

__all__ = ["invert", "objective", "InversionResult", "InversionDiverged", "paper_lambdas",
           "code_lambda_alpha", "paper_sigma", "tv_lambda_for_beta",
           "reconstruction_error", "mean_pairwise_distance", "CNN_SCHEDULE", "SHALLOW_SCHEDULE"]

# Learning-rate schedules of the authors' code: (rate, iterations) segments; the
# momentum is reset to zero whenever the rate changes.
CNN_SCHEDULE = ((0.004, 100), (0.0004, 200), (0.00004, 100))
SHALLOW_SCHEDULE = ((0.004, 200), (0.0004, 200), (0.00004, 200), (0.000004, 200))
# lambda_V of the authors' Table 1 runs (lambdaTV = 1 in their code, which halves it).
SHALLOW_LAMBDA_TV = 0.5
# lambda_V (beta = 2) when neither the caller nor the representation gives one: the paper's
# CaffeNet setting for layers 1-6 (Table 3, lambda_1).
DEFAULT_LAMBDA_TV = 0.5

# Average Euclidean norm of a mean-subtracted natural image, per value (the
# authors' 27098.1157 for 227x227x3 images, divided by sqrt(227*227*3)).
SIGMA_PER_VALUE = 27098.1157 / math.sqrt(227 * 227 * 3)


class InversionDiverged(FloatingPointError):
    """The objective or the image became NaN or Inf: the learning rate (or a lambda) is too
    large for this problem."""


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
    lambda_tv = sigma^beta / (H W (a B)^beta), for pixel range B and typical gradient a*B.

    Each makes its term about 1 for an image u = sigma x with values +-B and neighbour
    differences a*B: sum |u / sigma|^alpha ~ H W B^alpha / sigma^alpha, likewise for TV.
    With the paper's a = 1 %, lambda_tv = 68.92^2 C / 1.28^2 ~ 8700 (C = 3) at any image size
    (sigma^2 / (H W) = 68.92^2 C): 17000 times the lambda_V = 0.5 the paper ran CaffeNet with,
    and beyond what momentum descent at the paper's rate 0.004 can follow (on lambda_tv TV^2
    alone it is stable only while 16 lambda_tv rate < 2 (1 + momentum), lambda_tv < 59).
    :func:`invert` therefore takes this lambda_tv only when given ``a``.
    """
    hw = float(height) * float(width)
    return sigma ** alpha / (hw * B ** alpha), sigma ** beta / (hw * (a * B) ** beta)


def tv_lambda_for_beta(lambda_tv2: float, beta: float, height: int, width: int) -> float:
    """lambda_V for TV^beta that keeps the typical difference of a lambda_V = ``lambda_tv2``
    setting at beta = 2: (lambda_tv2 H W)^(beta/2) / (H W).

    In the form of the paper's heuristic, lambda_tv2 = sigma^2 / (H W g^2) for a difference g;
    the same g gives sigma^beta / (H W g^beta), which is the above (sigma cancels). A fixed
    lambda_V at beta = 1 would weigh TV more and more against the data term as images grow.
    """
    hw = float(height) * float(width)
    return (float(lambda_tv2) * hw) ** (0.5 * float(beta)) / hw


def _tv_rate_limit(lambda_tv, beta, momentum):
    """The learning rate above which momentum descent on lambda_tv * TV^2 alone diverges
    (None unless beta = 2): its Hessian's eigenvalues reach 16 lambda_tv (twice the grid
    Laplacian's bound of 8), and heavy-ball descent needs rate * L < 2 (1 + momentum)."""
    if beta != 2.0 or lambda_tv <= 0.0:
        return None
    return 2.0 * (1.0 + momentum) / (16.0 * lambda_tv)


def _whole(name, v, minimum=1):
    """v as an int >= minimum; TypeError for non-numbers, ValueError for fractions."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    if not isinstance(v, numbers.Integral):
        if not (math.isfinite(float(v)) and float(v).is_integer()):
            raise ValueError(f"{name} must be a whole number, got {v!r}")
    n = int(v)
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return n


def _real(name, v, minimum=None, strict=False):
    """v as a finite float (> or >= minimum); TypeError for non-numbers."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {f}")
    if minimum is not None and (f <= minimum if strict else f < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {f:g}")
    return f


def _image_shape(image_shape):
    """(H, W, C) from (H, W, C) or (H, W) (grey: C = 1)."""
    try:
        dims = tuple(image_shape)
    except TypeError:
        raise TypeError(f"image_shape must be (H, W, C) or (H, W), got {image_shape!r}") from None
    if len(dims) == 2:
        dims += (1,)
    if len(dims) != 3:
        raise ValueError(f"image_shape must be (H, W, C) or (H, W), got {image_shape!r}")
    return tuple(_whole(f"image_shape[{i}]", v) for i, v in enumerate(dims))


def _schedule(learning_rate, iterations, default):
    """-> list of (rate, iterations) segments, each rate > 0 and count >= 1."""
    if iterations is not None:
        iterations = _whole("iterations", iterations)
    if learning_rate is None:
        segs = [(float(r), int(n)) for r, n in default]
        if iterations is not None:  # stretch the default schedule to the requested length
            if iterations < len(segs):  # too short for every rate: the largest ones, in order
                return [(r, 1) for r, _ in segs[:iterations]]
            total = sum(n for _, n in segs)
            cuts = [round(iterations * sum(n for _, n in segs[: i + 1]) / total)
                    for i in range(len(segs))]
            counts = [c - p for c, p in zip(cuts, [0] + cuts[:-1])]
            for i in range(len(counts)):  # no rate rounded away: one step from the longest
                if counts[i] == 0:
                    counts[counts.index(max(counts))] -= 1
                    counts[i] = 1
            segs = [(r, n) for (r, _), n in zip(segs, counts)]
        return segs
    if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, (bool, np.bool_)):
        return [(_real("learning_rate", learning_rate, 0.0, strict=True),
                 400 if iterations is None else iterations)]
    try:
        pairs = [tuple(seg) for seg in learning_rate]
    except TypeError:
        pairs = None
    if pairs is None or any(len(seg) != 2 for seg in pairs) or isinstance(learning_rate, str):
        raise TypeError("learning_rate must be a number or a sequence of (rate, iterations) "
                        f"pairs, got {learning_rate!r}")
    if not pairs:
        raise ValueError("learning_rate is an empty schedule: give at least one "
                         "(rate, iterations) segment")
    segs = [(_real(f"learning_rate[{i}] rate", r, 0.0, strict=True),
             _whole(f"learning_rate[{i}] iterations", n)) for i, (r, n) in enumerate(pairs)]
    if iterations is not None and iterations != sum(n for _, n in segs):
        raise ValueError(f"iterations={iterations} disagrees with the schedule's "
                         f"{sum(n for _, n in segs)} iterations")
    return segs


def _lambdas(rep, sigma, H, W, alpha, beta, lambda_alpha, lambda_tv, B, a):
    """-> (lambda_alpha, lambda_tv, {name: where it came from}); see :func:`invert`."""
    if B is not None and lambda_alpha is not None and (a is None or lambda_tv is not None):
        raise ValueError("B is used only by the heuristics of lambda_alpha (and of lambda_tv "
                         "with a); both lambdas it could set were given")
    if a is not None and lambda_tv is not None:
        raise ValueError("a is used only by the heuristic of lambda_tv, which was given")
    given = None
    if lambda_alpha is None or lambda_tv is None:
        given = getattr(rep, "paper_lambdas", None)
        if callable(given):
            given = given(sigma)
        if given is not None:
            given = tuple(given)
            if len(given) != 2:
                raise ValueError("the representation's paper_lambdas must be (lambda_alpha, "
                                 f"lambda_tv), got {given!r}")
    B_used = 128.0 if B is None else _real("B", B, 0.0, strict=True)
    hw = float(H) * float(W)
    sources = {}
    if lambda_alpha is not None:
        sources["lambda_alpha"] = "given"
    elif given is not None and B is None:
        lambda_alpha, sources["lambda_alpha"] = given[0], "representation"
    else:
        lambda_alpha = sigma ** alpha / (hw * B_used ** alpha)
        sources["lambda_alpha"] = f"heuristic sigma^alpha / (H W B^alpha), B = {B_used:g}"
    if lambda_tv is not None:
        sources["lambda_tv"] = "given"
    elif a is not None:
        aB = _real("a", a, 0.0, strict=True) * B_used
        lambda_tv = sigma ** beta / (hw * aB ** beta)
        sources["lambda_tv"] = (f"heuristic sigma^beta / (H W (a B)^beta), a = {float(a):g}, "
                                f"B = {B_used:g}")
    else:
        if given is not None:
            base, source = float(given[1]), "representation"
        else:
            base, source = DEFAULT_LAMBDA_TV, "default (the paper's CaffeNet lambda_V)"
        lambda_tv = tv_lambda_for_beta(base, beta, H, W)
        if beta != 2.0:
            source += f", {base:g} at beta = 2 carried to beta = {beta:g}"
        sources["lambda_tv"] = source
    return (_real("lambda_alpha", lambda_alpha, 0.0), _real("lambda_tv", lambda_tv, 0.0),
            sources)


def _mask_record(mask):
    """What options records of a mask: its shape and a digest of its float32 values."""
    if mask is None:
        return None
    m = np.ascontiguousarray(_host(mask), dtype=np.float32)
    return dict(shape=tuple(m.shape), sha256=hashlib.sha256(m.tobytes()).hexdigest()[:16])


def invert(representation, target, *, image_shape, sigma=None, alpha=6.0, beta=2.0,
           lambda_alpha=None, lambda_tv=None, B=None, a=None, momentum=0.9,
           learning_rate=None, iterations=None, restarts=1, seed=0, mask=None,
           callback: Callable | None = None, callback_every: int = 10, tv_floor=1e-5):
    """Reconstruct images from the code ``target`` = Phi(x0) of the representation.

    Args:
        representation: object with ``forward(x)`` / ``backward(dy)`` on (N, C, H, W) float32
            batches (e.g. :class:`invert_native.HOG`, a CaffeNet layer, an ``nn.Sequential``).
            Optional attributes it may carry: ``paper_schedule`` (the default learning-rate
            schedule), ``paper_lambdas`` ((lambda_alpha, lambda_tv) at beta = 2 used when not
            given, or a function of sigma returning them, or None),
            ``deprocess(x)`` ((N, C, H, W) pixel values -> (N, H, W, C) images, e.g. adding a
            mean back).
        target: Phi0, with or without its batch dimension of 1, NumPy or CuPy (the device of
            the target is the device of the whole run).
        image_shape: (H, W, C) of the images to reconstruct, or (H, W) for grey (C = 1).
        sigma: image scale; default :func:`paper_sigma` of ``image_shape``.
        alpha, beta: exponents of the alpha-norm and TV^beta priors (paper: 6 and 2).
        lambda_alpha: weight of the alpha-norm. Default: the representation's
            ``paper_lambdas``, else (or when ``B`` is given) the paper's heuristic
            sigma^alpha / (H W B^alpha) (:func:`paper_lambdas`).
        lambda_tv: weight of TV^beta. Default: the paper's heuristic
            sigma^beta / (H W (a B)^beta) when ``a`` is given; else the representation's
            ``paper_lambdas``, else 0.5 (the paper's CaffeNet lambda_V for layers 1-6); for
            beta != 2 these two are carried over by :func:`tv_lambda_for_beta`. The heuristic
            at the paper's a = 1 % is no default: it diverges at the paper's learning rate
            (see :func:`paper_lambdas`).
        B, a: pixel range and typical difference (a fraction of B) of the heuristics. Giving
            ``B`` selects the lambda_alpha heuristic, giving ``a`` the lambda_tv one (B then
            defaults to 128); a ``B`` or ``a`` that no heuristic would use is an error.
        momentum: m of the update mu <- m mu - eta grad; x <- x + mu.
        learning_rate: a number (constant rate for ``iterations``, default 400) or a sequence of
            (rate, iterations) segments; the momentum is reset at each change. Default: the
            representation's ``paper_schedule``, else the paper's CNN schedule
            (0.004 x [1, 0.1, 0.01] for 100, 200, 100 iterations); ``iterations`` alone stretches
            or shrinks the default schedule proportionally.
        restarts: reconstructions from different random starts, run as one batch.
        seed: seed of the random starts (same seed, same result on the CPU); None draws one,
            which ``options["seed"]`` records.
        mask: weights of the code's elements in the loss, broadcastable to the target's shape
            (without batch, or with a batch dimension of 1): 0/1 selects a spatial window of
            neurons (paper Fig. 9) or a subset of channels (Fig. 10); elements with weight 0
            get no gradient.
        callback: called as ``callback(iteration, objective)`` every ``callback_every``
            iterations and at the end, with the per-restart objective as a NumPy array (the
            only host transfer inside the loop).
        tv_floor: for beta < 2, squared image differences (in the representation's pixel
            units, grey levels^2) below which TV^beta is smoothed to keep its gradient finite
            (see :func:`invert_native.ops.tv_forward`; the op receives tv_floor / sigma^2).
            The default 1e-5 (differences of 0.003 grey levels) leaves natural images and
            reconstructions untouched except on exactly flat regions.

    Returns:
        :class:`InversionResult`; its ``options`` record every setting used, among them where
        each lambda came from (``lambda_sources``), the seed drawn when ``seed=None`` and the
        mask's shape and digest.

    Raises:
        InversionDiverged: the objective or the image became NaN/Inf (checked every
            ``callback_every`` iterations on a GPU, every iteration on the CPU, and after the
            last update); the message names the iteration and which setting to lower. No
            automatic back-off: rerun with a smaller ``learning_rate`` (or lambda).
        ValueError, TypeError: a setting out of range or of the wrong type, named.
    """
    if not (_backend.is_cupy(target) or isinstance(target, np.ndarray)):
        target = np.asarray(target, dtype=np.float32)
    xp = _backend.array_module(target)
    H, W, C = _image_shape(image_shape)
    restarts = _whole("restarts", restarts)
    momentum = _real("momentum", momentum, 0.0)
    if momentum >= 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    alpha = _real("alpha", alpha, 1.0)
    beta = _real("beta", beta, 0.0, strict=True)
    tv_floor = _real("tv_floor", tv_floor, 0.0, strict=True)
    callback_every = _whole("callback_every", callback_every)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function (iteration, objective) or None, got "
                        f"{callback!r}")
    if seed is not None:  # an int, so that options["seed"] repeats the run
        seed = _whole("seed", seed, minimum=0)
    sigma = paper_sigma((H, W, C)) if sigma is None else _real("sigma", sigma, 0.0, strict=True)
    lambda_alpha = None if lambda_alpha is None else _real("lambda_alpha", lambda_alpha, 0.0)
    lambda_tv = None if lambda_tv is None else _real("lambda_tv", lambda_tv, 0.0)
    lambda_alpha, lambda_tv, sources = _lambdas(representation, sigma, H, W, alpha, beta,
                                                lambda_alpha, lambda_tv, B, a)
    segments = _schedule(learning_rate, iterations,
                         getattr(representation, "paper_schedule", CNN_SCHEDULE))
    total = sum(n for _, n in segments)
    if seed is None:  # draw one, so that the run can be repeated from options["seed"]
        seed = int(np.random.SeedSequence().entropy)

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
        # the last update is not followed by an evaluation: check where it led
        if not bool(xp.isfinite(x).all()):
            raise _diverged(obj, hist, total, segments[-1][0], momentum,
                            f"the image became NaN/Inf after the last update (iteration {total})")
        final = obj.value(x)
        e_host = _host(final[0])
        if not np.isfinite(e_host).all():
            raise _diverged(obj, hist, total, segments[-1][0], momentum,
                            f"the objective became {e_host[~np.isfinite(e_host)][0]} after the "
                            f"last update (iteration {total})")
    err = xp.sqrt(final[1])

    # final images and errors
    pixels = sigma * x
    deprocess = getattr(representation, "deprocess", None)
    if deprocess is not None:
        images = deprocess(pixels)
    else:
        images = xp.transpose(pixels, (0, 2, 3, 1))
    images, hist, err = _host(images), _host(hist), _host(err)
    options = dict(image_shape=(H, W, C), sigma=sigma, alpha=alpha, beta=beta,
                   lambda_alpha=lambda_alpha, lambda_tv=lambda_tv, lambda_sources=sources,
                   B=None if B is None else float(B), a=None if a is None else float(a),
                   momentum=momentum, learning_rate=[list(s) for s in segments],
                   iterations=total, restarts=restarts, seed=seed,
                   callback_every=callback_every, masked=mask is not None,
                   mask=_mask_record(mask), tv_floor=tv_floor)
    return InversionResult(images=np.ascontiguousarray(images, dtype=np.float32), x=x,
                           objective=hist[0], data=hist[1], alpha_term=hist[2], tv_term=hist[3],
                           feature_error=np.asarray(err), options=options)


def _diverged(obj, hist, it, rate, momentum, what):
    """InversionDiverged saying what happened by iteration ``it`` and which setting to lower:
    lambda_tv when its term alone is unstable at this rate, lambda_alpha when its term was
    the largest at the last finite objective, else the learning rate."""
    limit = _tv_rate_limit(obj.lambda_tv, obj.beta, momentum)
    if limit is not None and rate >= limit:
        advice = (f"rerun with a smaller learning_rate (below {limit:.3g}) or lambda_tv (below "
                  f"{obj.lambda_tv * limit / rate:.3g}): with lambda_tv={obj.lambda_tv:g}, descent "
                  "on the TV term alone is unstable at this rate")
    else:
        advice = "rerun with a smaller learning_rate"
        h = _host(hist[:, :it])  # off the loop: the transfer no longer matters
        ok = np.flatnonzero(np.isfinite(h[0]).all(axis=1))
        if ok.size and obj.lambda_alpha > 0:
            data, ra, rt = (h[k, ok[-1]].max() for k in (1, 2, 3))
            if ra > max(data, rt):
                advice += f" or lambda_alpha (={obj.lambda_alpha:g}, the largest term)"
    return InversionDiverged(f"{what} (learning rate {rate:g}); {advice}")


def _descend(obj, x, velocity, hist, segments, momentum, callback, callback_every):
    """Momentum descent in place on x; fills hist (4, iterations, restarts)."""
    xp = obj.xp
    total = hist.shape[1]
    it = 0
    # Built-in representations draw their op outputs from one workspace that every
    # iteration reuses, so the loop allocates no image- or code-sized arrays. Inside
    # it, their input checks on a GPU skip the host transfer (_backend.check_finite):
    # a NaN image makes the objective NaN, which the check every k iterations catches.
    ws = ops.Workspace() if getattr(obj.rep, "reuses_outputs", False) else None
    with ops.reusing(ws) if ws is not None else contextlib.nullcontext():
        for rate, count in segments:
            velocity[...] = 0.0  # the authors reset the momentum at each rate change
            for _ in range(count):
                if ws is not None:
                    ws.rewind()
                try:
                    terms = obj.step(x, velocity, rate, momentum)
                except ValueError:
                    # a representation that checks its input refuses a diverged image
                    if not bool(xp.isfinite(x).all()):
                        raise _diverged(obj, hist, it, rate, momentum,
                                        f"the image became NaN/Inf by iteration {it}") from None
                    raise
                for k in range(4):
                    hist[k, it] = terms[k]
                it += 1
                # on the host the check is free; on a GPU it costs a transfer, so every k
                if xp is np or it % callback_every == 0 or it == total:
                    e = hist[0, it - 1]
                    e_host = _host(e)
                    if not np.isfinite(e_host).all():
                        raise _diverged(obj, hist, it, rate, momentum,
                                        f"the objective became "
                                        f"{e_host[~np.isfinite(e_host)][0]} by iteration {it}")
                    if callback is not None and (it % callback_every == 0 or it == total):
                        callback(it, np.array(e_host))


class _Objective:
    """E(x) and its gradient for one target; restarts are the batch of x."""

    def __init__(self, rep, target, x, sigma, alpha, beta, lambda_alpha, lambda_tv, mask,
                 tv_floor):
        xp = _backend.array_module(x)
        self.rep, self.xp, self.sigma = rep, xp, float(sigma)
        self.alpha, self.beta = float(alpha), float(beta)
        # tv_floor is in pixel units; the op sees the scaled image x = pixels / sigma
        self.tv_floor = float(tv_floor) / self.sigma ** 2
        if not self.tv_floor >= 1e-37:  # float32 normal range, with a margin
            raise ValueError(f"tv_floor / sigma^2 = {self.tv_floor:g} underflows float32: give "
                             "a larger tv_floor")
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
            try:
                m = xp.asarray(mask).astype(xp.float32)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"mask must be an array of weights (0/1 or floats), got "
                                f"{type(mask).__name__}: {exc}") from None
            if m.ndim == len(code_shape) + 1 and m.shape[0] == 1:
                m = m[0]  # a batch dimension of 1, as the target may have
            if not bool(xp.isfinite(m).all()):
                raise ValueError("mask contains NaN or Inf")
            try:
                self.m = xp.broadcast_to(m, code_shape).copy()
            except ValueError:
                raise ValueError(f"mask of shape {tuple(m.shape)} does not broadcast to the "
                                 f"code shape {code_shape}") from None
            if not bool((self.m != 0).any()):
                raise ValueError("mask is all zeros: no element of the code is in the loss")
            t = t * self.m
        self.t = t
        self.t_norm2 = float((t.astype(xp.float64) ** 2).sum())
        if not self.t_norm2 > 0.0:
            raise ValueError("the target (within the mask) is all zeros: the normalised loss "
                             "||Phi - Phi0||^2 / ||Phi0||^2 is undefined")

    def _residual(self, x):
        """Phi(sigma x) (* mask) - target, in an array of its own: the representation's output
        may be what its last layer keeps for backward (LRN, softmax), so it is not touched."""
        xp = self.xp
        xs = new_array_like(x, x.shape, x.dtype)
        xp.multiply(x, xp.float32(self.sigma), out=xs)
        y = self.rep.forward(xs)
        r = new_array_like(y, y.shape, y.dtype)
        if self.m is not None:
            xp.multiply(y, self.m, out=r)  # t is already masked
            r -= self.t
        else:
            xp.subtract(y, self.t, out=r)
        return r

    def data_term(self, x):
        r = self._residual(x)
        return (r.astype(self.xp.float64) ** 2).reshape(x.shape[0], -1).sum(axis=1) / self.t_norm2

    def value(self, x):
        """(E, data, lambda_alpha*R_alpha, lambda_tv*R_tv) at x, each (N,) float64; no backward."""
        data = self.data_term(x)
        ra = self.lambda_alpha * ops.alpha_norm_forward(x, self.alpha)[0]
        rt = self.lambda_tv * ops.tv_forward(x, self.beta, self.tv_floor)[0]
        return data + ra + rt, data, ra, rt

    def _parts(self, x):
        """The objective's terms and the gradients it is made of: ((E, data, lambda_alpha
        R_alpha, lambda_tv R_tv), gradient of the data term w.r.t. sigma x, of R_alpha, of R_tv).
        The gradients may be scratch that the next call overwrites."""
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
        g_data = self.rep.backward(dr)
        if getattr(g_data, "shape", None) != x.shape:
            raise ValueError(f"the representation's backward returned "
                             f"{getattr(g_data, 'shape', type(g_data).__name__)} for images of "
                             f"shape {tuple(x.shape)}: it must return the gradient with "
                             "respect to its input, shaped like it")
        ra, ga = ops.alpha_norm_forward(x, self.alpha)
        rt, gt = ops.tv_forward(x, self.beta, self.tv_floor)
        ra = self.lambda_alpha * ra
        rt = self.lambda_tv * rt
        return (data + ra + rt, data, ra, rt), g_data, ga, gt

    def _assemble(self, g_data, ga, gt):
        """dE/dx = sigma g_data + lambda_alpha ga + lambda_tv gt (in place in the scratch)."""
        xp = self.xp
        g_data *= xp.float32(self.sigma)
        ga *= xp.float32(self.lambda_alpha)
        gt *= xp.float32(self.lambda_tv)
        g_data += ga
        g_data += gt
        return g_data

    def evaluate(self, x):
        """-> ((E, data, lambda_alpha*R_alpha, lambda_tv*R_tv) each (N,) float64, dE/dx).

        dE/dx may be scratch that the next call overwrites.
        """
        terms, g_data, ga, gt = self._parts(x)
        return terms, self._assemble(g_data, ga, gt)

    def step(self, x, velocity, rate, momentum):
        """The terms of E at x, then one momentum step from x, in place on x and velocity:
        mu <- m mu - rate dE/dx; x <- x + mu. Fused into one native pass (ops.descent_step,
        the same float32 operations as the NumPy form) when the gradients are float32 arrays
        shaped like x; the NumPy form otherwise (a representation of the caller's)."""
        xp = self.xp
        terms, g_data, ga, gt = self._parts(x)
        if g_data.dtype == xp.float32 and g_data.shape == x.shape:
            ops.descent_step(x, velocity, g_data, ga, gt, sigma=self.sigma,
                             lambda_alpha=self.lambda_alpha, lambda_tv=self.lambda_tv,
                             rate=rate, momentum=momentum)  # rounded to float32 by the core
        else:
            grad = self._assemble(g_data, ga, gt)
            velocity *= xp.float32(momentum)
            grad *= xp.float32(rate)
            velocity -= grad
            x += velocity
        return terms


def objective(representation, target, x, *, sigma, alpha=6.0, beta=2.0, lambda_alpha=0.0,
              lambda_tv=0.0, mask=None, tv_floor=1e-5):
    """E(x) of :func:`invert` and its gradient, for a batch x (N, C, H, W) of scaled images.

    Returns ((E, data, lambda_alpha*R_alpha, lambda_tv*R_tv), dE/dx), each term (N,) float64.
    ``tv_floor`` is in pixel units, as in :func:`invert`. Useful to check gradients or to
    drive another optimiser.
    """
    obj = _Objective(representation, target, x, _real("sigma", sigma, 0.0, strict=True),
                     _real("alpha", alpha, 1.0), _real("beta", beta, 0.0, strict=True),
                     _real("lambda_alpha", lambda_alpha, 0.0), _real("lambda_tv", lambda_tv, 0.0),
                     mask, _real("tv_floor", tv_floor, 0.0, strict=True))
    return obj.evaluate(x)


def mean_pairwise_distance(codes, squared: bool = False) -> float:
    """N_Phi: the mean Euclidean distance between the codes of an image set (M >= 2 codes,
    shape (M, ...)); with ``squared`` the mean squared distance (the authors' script)."""
    if isinstance(codes, (list, tuple)):
        codes = [_host(c) for c in codes]
    c = _codes_array("codes", codes)
    if c.ndim < 1 or c.shape[0] < 2:
        raise ValueError("mean_pairwise_distance needs the codes of at least two images")
    # Differences, not |a|^2 + |b|^2 - 2ab: that form cancels to rounding noise for equal
    # or near-equal codes, and a set of identical images must give exactly 0.
    c = c.reshape(len(c), -1)
    d2 = np.concatenate([((c[i + 1:] - c[i]) ** 2).sum(axis=1) for i in range(len(c) - 1)])
    return float(d2.mean() if squared else np.sqrt(d2).mean())


def _codes_array(name, a):
    """a (NumPy, CuPy or nested lists) as a finite float64 array, or a clear error."""
    try:
        out = np.asarray(_host(a), np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of numbers (codes of one shape): {exc}") \
            from None
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return out


def reconstruction_error(reconstructed, original, codes=None, squared: bool = False, *,
                         batched: bool | None = None):
    """Error of reconstructions in code space: one value per reconstructed code.

    Without ``codes`` it is ||Phi(x*) - Phi(x0)|| / ||Phi(x0)||; with ``codes`` (the codes of
    the whole image set, (M, ...) or a list of M codes) it is the paper's metric
    ||Phi(x*) - Phi(x0)|| / N_Phi, N_Phi the mean pairwise distance between the set's codes
    (:func:`mean_pairwise_distance`); with ``squared`` the authors' script's variant
    ||.||^2 / ||Phi(x0)||^2, or ||.||^2 / the mean squared distance.

    Args:
        reconstructed: codes Phi(x*), a batch (N, ...) (e.g. one per restart) or one code.
        original: Phi(x0), either one code per reconstructed one (N, ...) or a single code
            ((...) or (1, ...)) that every reconstructed code is compared with.
        codes: the image set's codes, for the paper's normaliser.
        batched: whether ``reconstructed`` has a batch dimension. Default: an array of the
            shape of one code of ``codes`` is one code; without ``codes``, arrays of two or
            more dimensions are batches and 1-D arrays one code (so give ``batched=False``
            for one unbatched code such as :func:`invert_native.hog`'s (h, w, D)).

    Returns:
        (N,) float64 for a batch, a float for one code.

    Raises:
        ValueError: shapes that do not agree; a zero normaliser (an all-zero original code,
        or a set of identical codes, N_Phi = 0).
    """
    rec = _codes_array("reconstructed", reconstructed)
    orig = _codes_array("original", original)
    if rec.ndim == 0 or orig.ndim == 0:
        raise ValueError("codes must be arrays, not scalars")
    code_shape = None
    if codes is not None:
        if isinstance(codes, (list, tuple)):
            codes = [_host(c) for c in codes]
        codes = _codes_array("codes", codes)
        if codes.ndim < 2:
            raise ValueError(f"codes must be the set's codes (M, ...), got shape {codes.shape}")
        code_shape = codes.shape[1:]
    single = (rec.shape == code_shape if code_shape is not None else rec.ndim == 1) \
        if batched is None else not batched
    if not single and rec.ndim < 2:
        raise ValueError(f"reconstructed has shape {rec.shape}: a batch needs (N, ...)")
    one = rec.shape if single else rec.shape[1:]
    if code_shape is not None and one != code_shape:
        raise ValueError(f"reconstructed codes have shape {one} but the set's codes have shape "
                         f"{code_shape}")
    rec2 = rec.reshape(-1, int(np.prod(one)))
    if orig.shape in (one, (1,) + one):
        orig2 = orig.reshape(1, -1)  # one original for every reconstruction
    elif orig.shape == (rec2.shape[0],) + one and not single:
        orig2 = orig.reshape(rec2.shape)
    else:
        raise ValueError(f"original codes of shape {orig.shape} match neither one code of "
                         f"shape {one} nor the {rec2.shape[0]} reconstructed codes "
                         f"{(rec2.shape[0],) + one}")
    d2 = ((rec2 - orig2) ** 2).sum(axis=1)
    if codes is not None:
        n = mean_pairwise_distance(codes, squared)
        if not n > 0.0:
            raise ValueError("the set's codes are all identical (N_Phi = 0): the paper's "
                             "metric is undefined")
        err = d2 / n if squared else np.sqrt(d2) / n
    else:
        o2 = (orig2 ** 2).sum(axis=1)
        if not (o2 > 0.0).all():
            raise ValueError("an original code is all zeros: ||Phi(x0)|| = 0 normalises "
                             "nothing (give codes= for the paper's N_Phi)")
        err = d2 / o2 if squared else np.sqrt(d2 / o2)
    return float(err[0]) if single else err


def _host(a):
    return a.get() if _backend.is_cupy(a) else a

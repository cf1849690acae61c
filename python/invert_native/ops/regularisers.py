"""The image priors of the inversion objective, each with its gradient in one pass.

* ``tv_forward(x, beta, floor)``: total variation
  R = sum over images' channels and pixels of f(v), v = (x[i,j+1]-x[i,j])^2 + (x[i+1,j]-x[i,j])^2,
  f(v) = v^(beta/2), forward differences with the last row/column replicated (the last
  difference is 0), as in the authors' code. For beta < 2 the gradient of v^(beta/2) is
  unbounded as v -> 0, so below v = ``floor`` f is its tangent in v,
  floor^(beta/2) + (beta/2) floor^(beta/2-1) (v - floor): value and gradient are those of
  this one C^1 function, which differs from v^(beta/2) by at most floor^(beta/2) per pixel.
  For beta >= 2 nothing is floored. ``floor`` is in the units of x squared (1e-5 by default,
  for x in grey levels; :func:`invert_native.invert` passes its ``tv_floor`` / sigma^2).
* ``alpha_norm_forward(x, alpha)``: R = sum |x|^alpha.

``descent_step`` is the update of :func:`invert_native.invert`'s momentum descent, fused with
the assembly of the objective's gradient (one pass instead of nine).

The priors return ``(value, dx)``: value of shape (N,) in float64 (one number per image of the
batch, summed in float64), dx shaped like x. There is no ``dy``: a regulariser is a term of the
loss, so its "backward" is its gradient.
"""

from __future__ import annotations

import numpy as np

from ._dispatch import _Call, _cpu, _native

__all__ = ["tv_forward", "alpha_norm_forward", "descent_step"]


def _positive(op, name, v, minimum=0.0, strict=True):
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be a number, got {v!r}") from None
    if not np.isfinite(v) or (v <= minimum if strict else v < minimum):
        raise ValueError(f"{op}: {name} must be a finite number {'>' if strict else '>='} "
                         f"{minimum:g}, got {v}")
    return v


def tv_forward(x, beta=2.0, floor=1e-5):
    """TV^beta of each image of x (N, C, H, W) and its gradient: returns (value (N,), dx).

    ``floor`` (beta < 2 only, in the units of x squared): where d1^2 + d2^2 is below it the
    term is smoothed to its tangent (see the module docstring).
    """
    op = "tv_forward"
    c = _Call(op, x=x)
    x = c.array("x", x, 4)
    beta = _positive(op, "beta", beta)
    floor = _positive(op, "floor", floor)
    dx = c.empty(x.shape)
    if c.cuda:
        terms = c.empty(x.shape)
        _native(op, c.launch, "tv_forward", x, terms, dx, *x.shape, beta, floor)
        with c.device:
            value = terms.reshape(x.shape[0], -1).sum(axis=1, dtype=c.xp.float64)
    else:
        value = np.empty(x.shape[0], np.float64)
        _native(op, _cpu.tv_forward, x, value, dx, beta, floor)
    return value, dx


def alpha_norm_forward(x, alpha=6.0):
    """sum |x|^alpha of each sample of x (N, ...) and its gradient: returns (value (N,), dx)."""
    op = "alpha_norm_forward"
    c = _Call(op, x=x)
    x = c.array("x", x)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have a batch dimension, got a scalar")
    alpha = _positive(op, "alpha", alpha, 1.0, strict=False)
    dx = c.empty(x.shape)
    N = x.shape[0]
    if c.cuda:
        terms = c.empty(x.shape)
        _native(op, c.launch, "alpha_norm_forward", x, terms, dx, N, x.size // max(N, 1), alpha)
        with c.device:
            value = terms.reshape(N, -1).sum(axis=1, dtype=c.xp.float64)
    else:
        value = np.empty(N, np.float64)
        _native(op, _cpu.alpha_norm_forward, x, value, dx, alpha)
    return value, dx


def descent_step(x, mu, g_data, g_alpha, g_tv, *, sigma, lambda_alpha, lambda_tv, rate,
                 momentum):
    """One step of momentum descent, **in place on x and mu** (float32, C-contiguous, same
    shape, same device):

        g = (sigma g_data + lambda_alpha g_alpha) + lambda_tv g_tv
        mu <- momentum mu - rate g;   x <- x + mu

    each operation rounded to float32 in this order (the same bits as the NumPy expressions,
    and on both backends). ``g_data`` is the data term's gradient with respect to sigma x;
    ``g_alpha`` and ``g_tv`` the priors' (:func:`alpha_norm_forward`, :func:`tv_forward`).
    Returns None.
    """
    op = "descent_step"
    c = _Call(op, x=x, mu=mu, g_data=g_data, g_alpha=g_alpha, g_tv=g_tv)
    for name, a in (("x", x), ("mu", mu)):  # updated in place: no silent copy
        if a.dtype != np.float32:
            raise TypeError(f"{op}: {name} must be float32, got {a.dtype}")
        if not a.flags.c_contiguous or (isinstance(a, np.ndarray) and not a.flags.writeable):
            raise ValueError(f"{op}: {name} is updated in place and must be a writeable "
                             "C-contiguous array")
    if mu.shape != x.shape:
        raise ValueError(f"{op}: mu has shape {tuple(mu.shape)}, x {tuple(x.shape)}")
    grads = []
    for name, g in (("g_data", g_data), ("g_alpha", g_alpha), ("g_tv", g_tv)):
        g = c.array(name, g)
        if g.shape != x.shape:
            raise ValueError(f"{op}: {name} has shape {tuple(g.shape)}, x {tuple(x.shape)}")
        grads.append(g)
    consts = [_positive(op, "sigma", sigma), _positive(op, "lambda_alpha", lambda_alpha, strict=False),
              _positive(op, "lambda_tv", lambda_tv, strict=False), _positive(op, "rate", rate, strict=False),
              _positive(op, "momentum", momentum, strict=False)]
    if c.cuda:
        c.launch("descent_step", *grads, x, mu, x.size, *consts)
    else:
        _cpu.descent_step(*grads, x, mu, *consts)


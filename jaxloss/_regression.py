"""Elementwise regression losses.

Most are polynomials or a single exp/log of the error, where autodiff of the
plain formula is exact. Four get a linear-tangent rule
(:func:`jaxloss._common.linear_rule`) in ``(dpredictions, dtargets)``:

- Huber / smooth L1: ``d/de = clip(e, -delta, delta)``, recomputed under
  ``jax.checkpoint`` (residuals: the inputs only); one fused pass instead of
  autodiff through ``min``/``abs`` (whose tie rule splits the gradient).
- log-cosh: ``d/de = tanh(e)``, whose own derivative ``1 - tanh^2`` is right
  at ``e = 0`` (autodiff of a stable ``|e|`` form gives 0 there, the truth is
  1) and whose slope survives errors far below the loss's underflow
  (``|e| < 1e-19`` in float32). Recomputed under ``jax.checkpoint`` like
  Huber's: the residuals are the caller's buffers.
- absolute error: ``d|e|/de = sign(e)``, 0 at ``e = 0`` as in PyTorch.
- Gaussian NLL: ``d/dx = (x - t) / v`` and ``d/dv = (1 - r^2) / (2 v)`` with
  ``r = (x - t) / sqrt(v)``, recomputed from the inputs (autodiff of the
  formula kept two input-sized intermediates for the backward pass).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array

_LOG2 = math.log(2.0)


def _prepare_raw(predictions, targets, name="predictions", required=False):
    """Checked float arrays in the caller's dtypes; ``targets=None`` means zeros (optax)."""
    x = cm.as_float_array(predictions, name)
    if targets is None:
        if required:
            raise TypeError("targets is required for this loss; got None.")
        return x, None
    # unbroadcast: widened before it is broadcast, so that the gradient of a
    # broadcast (e.g. scalar) bf16 target is summed in float32
    t = cm.check_broadcastable(cm.as_float_array(targets, "targets"), x.shape, "targets", name)
    return x, t


def _prepare(predictions, targets, name="predictions", required=False):
    """As ``_prepare_raw``, cast to the compute dtype (float32 for bf16/f16)."""
    x, t = _prepare_raw(predictions, targets, name, required)
    dtype = cm.compute_dtype(x) if t is None else cm.compute_dtype(x, t)
    return x.astype(dtype), (None if t is None else _widened(t, x.shape, dtype))


def _widened(t, shape, dtype):
    return jnp.broadcast_to(t.astype(dtype), shape)


def _error(x, t):
    # inputs are widened here, inside the rules, so the residuals are the caller's buffers
    dtype = cm.compute_dtype(x) if t is None else cm.compute_dtype(x, t)
    x = x.astype(dtype)
    return x if t is None else x - _widened(t, x.shape, dtype)


def _linear(coef, dx, dt):
    # coef * (dx - dt); None is a zero tangent, the callers skip the all-zero case
    if dt is not None:
        dt = _widened(dt, coef.shape, coef.dtype)
    if dt is None:
        return coef * dx.astype(coef.dtype)
    if dx is None:
        return -(coef * dt)
    return coef * (dx.astype(coef.dtype) - dt)


# d|e|/de = sign(e): 0 at e = 0 as in PyTorch (jnp.abs gives 1 there)
_abs = cm.linear_rule(lambda e: (jnp.abs(e), None), {0: lambda _, args, de: jnp.sign(args[0]) * de})


# --------------------------------------------------------------------------
# Squared and absolute error
# --------------------------------------------------------------------------


def squared_error(
    predictions: ArrayLike,
    targets: ArrayLike | None = None,
    *,
    reduction: str = "none",
) -> Array:
    r"""Squared error, elementwise; ``reduction="mean"`` is the MSE.

    .. math:: \ell = (x - t)^2

    Args:
      predictions: float array of any shape.
      targets: broadcastable to ``predictions``; ``None`` means zeros (optax).
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      Elementwise loss (float32 for bf16/f16 inputs) or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([3.0, -0.5, 2.0, 7.0], dtype=jnp.float32)
      >>> t = jnp.array([2.5, 0.0, 2.0, 8.0], dtype=jnp.float32)
      >>> jaxloss.squared_error(x, t, reduction="mean")
      Array(0.375, dtype=float32)

    Note:
      Overflows to ``inf`` for errors beyond the square root of the float
      maximum, as the true value does.

    References:
      ``optax.squared_error``; ``torch.nn.functional.mse_loss``.
    """
    x, t = _prepare(predictions, targets)
    red = cm.Reduction.of(reduction)
    return red(jnp.square(_error(x, t)))


def l2_loss(
    predictions: ArrayLike,
    targets: ArrayLike | None = None,
    *,
    reduction: str = "none",
) -> Array:
    r"""Half the squared error, elementwise (optax's ``l2_loss``).

    .. math:: \ell = \tfrac12 (x - t)^2

    Args:
      predictions: float array of any shape.
      targets: optional, broadcastable to ``predictions``; ``None`` is
        :math:`t = 0`, so the loss is :math:`\tfrac12 x^2` (optax).
      reduction: ``"none"`` (optax's elementwise result), ``"sum"`` or ``"mean"``.

    Returns:
      Half the squared error per element, float32 for bf16/f16 inputs; or
      its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.l2_loss(jnp.array([1.0, -2.0], dtype=jnp.float32))
      Array([0.5, 2. ], dtype=float32)

    Note:
      The gradient is the error itself, :math:`x - t`.

    References:
      ``optax.l2_loss``; Bishop, *Pattern Recognition and Machine Learning*.
    """
    x, t = _prepare(predictions, targets)
    red = cm.Reduction.of(reduction)
    return red(0.5 * jnp.square(_error(x, t)))


def absolute_error(
    predictions: ArrayLike,
    targets: ArrayLike | None = None,
    *,
    reduction: str = "none",
) -> Array:
    r"""Absolute error, elementwise; ``reduction="mean"`` is the L1 loss.

    .. math:: \ell = |x - t|

    Args:
      predictions: float array of any shape.
      targets: broadcastable to ``predictions``; ``None`` measures
        :math:`|x|` itself.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``; the mean over all
        elements is PyTorch's ``l1_loss`` default.

    Returns:
      The absolute errors (float32 for bf16/f16 inputs), or their reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([3.0, -0.5, 2.0, 7.0], dtype=jnp.float32)
      >>> t = jnp.array([2.5, 0.0, 2.0, 8.0], dtype=jnp.float32)
      >>> jaxloss.absolute_error(x, t)
      Array([0.5, 0.5, 0. , 1. ], dtype=float32)

    Note:
      The derivative at a zero error is 0 (``sign(0)``), as in PyTorch.

    References:
      ``torch.nn.functional.l1_loss``.
    """
    x, t = _prepare(predictions, targets)
    red = cm.Reduction.of(reduction)
    return red(_abs(_error(x, t)))


# --------------------------------------------------------------------------
# Huber and smooth L1
# --------------------------------------------------------------------------


def _huber_value(x, t, delta, scale):
    e = _error(x, t)
    a = jnp.abs(e)
    # 0.5 e^2 for |e| <= delta, delta (|e| - delta / 2) beyond (times scale)
    return jnp.where(a <= delta, (0.5 * scale) * (e * e), (scale * delta) * (a - 0.5 * delta))


def _huber_slope(args):
    x, t, delta, scale = args
    e = _error(x, t)
    # d/de = clip(e, -delta, delta); second derivative 1 up to and at the kink, 0 beyond
    return scale * jnp.where(jnp.abs(e) <= delta, e, delta * jnp.sign(e))


_huber = cm.linear_rule(
    lambda x, t, delta, scale: (_huber_value(x, t, delta, scale), None),
    {
        0: lambda _, args, dx: _linear(_huber_slope(args), dx, None),
        1: lambda _, args, dt: _linear(_huber_slope(args), None, dt),
    },
    traceable_argnums=(2, 3),
)


def huber_loss(
    predictions: ArrayLike,
    targets: ArrayLike | None = None,
    *,
    delta: float = 1.0,
    reduction: str = "none",
) -> Array:
    r"""Huber loss, elementwise: quadratic near zero, linear beyond ``delta``.

    .. math::
        \ell = \begin{cases} \tfrac12 e^2 & |e| \le \delta \\
               \delta (|e| - \tfrac12 \delta) & |e| > \delta \end{cases},
        \qquad e = x - t

    The derivative is :math:`\mathrm{clip}(e, -\delta, \delta)`.

    Args:
      predictions: float array of any shape.
      targets: broadcastable to ``predictions``; ``None`` means zeros (optax).
      delta: :math:`\delta > 0`, where the loss turns linear.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      Elementwise loss (float32 for bf16/f16 inputs) or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.huber_loss(jnp.array([0.5, -3.0], dtype=jnp.float32), delta=1.0)
      Array([0.125, 2.5  ], dtype=float32)

    Note:
      Infinite errors give ``inf`` with derivative :math:`\pm\delta`. The
      second derivative is 1 for :math:`|e| \le \delta` and 0 beyond.

    References:
      Huber, *Robust Estimation of a Location Parameter*, 1964;
      ``optax.huber_loss``; ``torch.nn.functional.huber_loss``.
    """
    x, t = _prepare_raw(predictions, targets)
    red = cm.Reduction.of(reduction)
    d = cm.hyperparameter(delta, "delta", low=0.0, low_open=True, dtype=cm.compute_dtype(x))
    return red(_huber(x, t, d, 1.0))


def smooth_l1_loss(
    predictions: ArrayLike,
    targets: ArrayLike | None = None,
    *,
    beta: float = 1.0,
    reduction: str = "none",
) -> Array:
    r"""Smooth L1 loss, elementwise (PyTorch ``SmoothL1Loss``).

    .. math::
        \ell = \begin{cases} \tfrac12 e^2 / \beta & |e| < \beta \\
               |e| - \tfrac12 \beta & \text{otherwise} \end{cases}

    It is the Huber loss divided by :math:`\beta`; ``beta=0`` is the
    absolute error.

    Args:
      predictions: float array of any shape.
      targets: broadcastable to ``predictions``; ``None`` means zeros.
      beta: :math:`\beta \ge 0`, where the loss turns linear; ``0`` gives
        the absolute error.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements;
        PyTorch's default is ``"mean"``, ours ``"none"``).

    Returns:
      The Huber loss over :math:`\beta`, per element (float32 for bf16/f16
      inputs), or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.smooth_l1_loss(jnp.array([0.5, -3.0], dtype=jnp.float32), beta=1.0)
      Array([0.125, 2.5  ], dtype=float32)

    Note:
      The derivative is :math:`\mathrm{clip}(e / \beta, -1, 1)` (``sign(e)``
      for ``beta=0``, 0 at a zero error).

    References:
      ``torch.nn.functional.smooth_l1_loss``; Girshick, *Fast R-CNN*, 2015.
    """
    x, t = _prepare_raw(predictions, targets)
    red = cm.Reduction.of(reduction)
    b = cm.hyperparameter(beta, "beta", low=0.0, dtype=cm.compute_dtype(x))
    if isinstance(b, float) and b == 0.0:
        return red(_abs(_error(x, t)))  # beta = 0 is L1
    return red(_huber(x, t, b, 1.0 / b))


# --------------------------------------------------------------------------
# log-cosh
# --------------------------------------------------------------------------


def _log_cosh_value(e):
    a = jnp.abs(e)
    w = -jnp.expm1(-a)  # 1 - exp(-|e|), exact near 0
    u = 1.0 - w  # exp(-|e|); only its square enters below 1e-7
    small = a < 1.0
    # |e| < 1: log cosh e = log1p(cosh e - 1), cosh e - 1 = w^2 / (2u)  (no cancellation)
    # else:    log cosh e = |e| - log 2 + log1p(u^2)                       (finite to float max)
    arg = jnp.where(small, w * w / (2.0 * jnp.where(small, u, 1.0)), u * u)
    return jnp.where(small, 0.0, a - _LOG2) + jnp.log1p(arg)


def _log_cosh_slope(args):
    # d/de log cosh e = tanh e; autodiff of tanh gives 1 - tanh^2 e (1 at e = 0)
    return jnp.tanh(_error(*args))


_log_cosh = cm.linear_rule(
    lambda x, t: (_log_cosh_value(_error(x, t)), None),
    {
        0: lambda _, args, dx: _linear(_log_cosh_slope(args), dx, None),
        1: lambda _, args, dt: _linear(_log_cosh_slope(args), None, dt),
    },
)


def log_cosh(
    predictions: ArrayLike,
    targets: ArrayLike | None = None,
    *,
    reduction: str = "none",
) -> Array:
    r"""log-cosh loss, elementwise: :math:`\tfrac12 e^2` near zero, :math:`|e| - \log 2` far out.

    .. math:: \ell = \log\cosh(x - t)

    computed as :math:`\log(1 + (\cosh e - 1))` with :math:`\cosh e - 1 =
    w^2 / (2(1 - w))`, :math:`w = 1 - e^{-|e|}` from ``expm1``, for :math:`|e| < 1`
    (full precision for tiny errors, where ``optax.log_cosh`` cancels to 0) and
    :math:`|e| - \log 2 + \log(1 + e^{-2|e|})` otherwise (finite up to the
    float maximum). The derivative rule is :math:`\tanh(e)`, read off the loss
    as :math:`\operatorname{sign}(e)\sqrt{1 - e^{-2\ell}}`, with its own rule
    :math:`1 - \tanh^2 e`: the second derivative is right everywhere, 1 at 0.

    Args:
      predictions: float array of any shape; errors of any finite size are
        fine (nothing overflows).
      targets: broadcastable to ``predictions``, or ``None`` (zeros, as in
        ``optax.log_cosh``).
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      Elementwise loss, finite for finite errors (float32 for bf16/f16
      inputs), or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.log_cosh(jnp.array([0.0, 1.0, -100.0], dtype=jnp.float32))
      Array([ 0.       ,  0.4337808, 99.30685  ], dtype=float32)

    Note:
      Infinite errors give ``inf`` with derivative :math:`\pm 1`; NaN stays NaN.

    References:
      ``optax.log_cosh``; Chen et al., *Log Hyperbolic Cosine Loss Improves
      Variational Auto-Encoder*, 2019.
    """
    x, t = _prepare_raw(predictions, targets)
    red = cm.Reduction.of(reduction)
    return red(_log_cosh(x, t))


# --------------------------------------------------------------------------
# Likelihood losses
# --------------------------------------------------------------------------

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def poisson_nll_loss(
    input: ArrayLike,  # PyTorch's name, fixed by the API
    targets: ArrayLike,
    *,
    log_input: bool = True,
    full: bool = False,
    eps: float = 1e-8,
    reduction: str = "none",
) -> Array:
    r"""Poisson negative log-likelihood of counts, elementwise (PyTorch ``PoissonNLLLoss``).

    .. math::
        \ell = \begin{cases} e^{x} - t\,x & \text{log\_input} \\
               x - t \log(x + \varepsilon) & \text{otherwise} \end{cases}
        \; + \; [\text{full}]\,[t > 1]\,\big(t \log t - t + \tfrac12 \log(2\pi t)\big)

    Args:
      input: the log-rate (``log_input=True``) or the rate, float array.
      targets: observed counts :math:`t \ge 0`, broadcastable to ``input``.
      log_input: whether ``input`` is the log of the rate.
      full: add the Stirling approximation of :math:`\log t!` (for :math:`t > 1`).
      eps: :math:`\varepsilon \ge 0`, added to the rate before the log when
        ``log_input=False``.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).
        PyTorch's default is ``"mean"``; ours is ``"none"``.

    Returns:
      Elementwise loss (float32 for bf16/f16 inputs) or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.poisson_nll_loss(jnp.array([0.0, 1.0], dtype=jnp.float32),
      ...                          jnp.array([1.0, 2.0], dtype=jnp.float32))
      Array([1.       , 0.7182817], dtype=float32)

    Note:
      The Stirling term is exactly 0 (with zero derivative) for
      :math:`t \le 1`. A large log-rate overflows ``exp`` to ``inf``, as in
      PyTorch.

    References:
      ``torch.nn.functional.poisson_nll_loss``.
    """
    x, t = _prepare(input, targets, "input", required=True)
    red = cm.Reduction.of(reduction)
    if not isinstance(log_input, bool) or not isinstance(full, bool):
        raise TypeError("log_input and full must be bools.")
    e = cm.static_float(eps, "eps", low=0.0)
    if log_input:
        loss = jnp.exp(x) - t * x
    else:
        # 0 log 0 = 0: a zero target gives x (gradient 1) even where x + eps = 0
        xe = x + e
        degenerate = (xe == 0) & (t == 0)
        loss = x - t * jnp.log(jnp.where(degenerate, jnp.ones_like(xe), xe))
    if full:
        big = t > 1
        ts = jnp.where(big, t, jnp.ones_like(t))
        stirling = ts * jnp.log(ts) - ts + 0.5 * jnp.log(ts) + _HALF_LOG_2PI
        loss = loss + jnp.where(big, stirling, 0.0)
    return red(loss)


def _standardized(x, t, v):
    """``(r, s)``: ``r = (x - t) / s``, ``s = sqrt(v)``. The loss uses ``r^2`` rather
    than ``d^2 / v``: finite wherever the loss is (``d = 1e20, v = 1e30``)."""
    s = jnp.sqrt(v)
    return (x - t) / s, s


def _gaussian_forward(x, t, v):
    r, _ = _standardized(x, t, v)
    return 0.5 * (jnp.log(v) + r * r), None


def _gaussian_tangent(_, args, d):
    x, t, v = args
    dx, dt, dv = d
    r, s = _standardized(x, t, v)
    # d/dx = (x - t) / v = r / s; d/dv = (1 - r^2) / (2 v)
    terms = [_linear(r / s, dx, dt)] if dx is not None or dt is not None else []
    if dv is not None:
        terms.append(0.5 * (1.0 - r * r) / v * dv)
    return functools.reduce(jnp.add, terms)


# elementwise, with the derivative recomputed from the inputs: reverse mode keeps
# no intermediate of the input's size
_gaussian = cm.linear_rule(_gaussian_forward, {(0, 1, 2): _gaussian_tangent})


def _gaussian_var(var, shape):
    """PyTorch's rules for the shape of ``var``, then broadcast to ``shape``."""
    if var is None:
        raise TypeError("var must be an array of variances (positive floats); got None.")
    v = cm.as_float_array(var, "var")
    vs = v.shape
    if vs == tuple(shape) or v.ndim == 0:
        pass
    elif len(shape) >= 1 and vs == tuple(shape[:-1]):
        v = v[..., None]  # one variance per row of the last axis (homoscedastic)
    elif v.ndim == len(shape) and sum(b for a, b in zip(shape, vs, strict=True) if a != b) == 1:
        pass  # one mismatched dimension, of size 1 in var
    else:
        raise ValueError(
            f"var with shape {vs} does not fit input with shape {tuple(shape)}: it must "
            "have the shape of input, of input without its last axis, or of input with "
            "one axis of size 1 (PyTorch's rules), or be a scalar."
        )
    return jnp.broadcast_to(v, shape)


def gaussian_nll_loss(
    input: ArrayLike,  # PyTorch's name, fixed by the API
    targets: ArrayLike,
    var: ArrayLike,
    *,
    full: bool = False,
    eps: float = 1e-6,
    reduction: str = "none",
) -> Array:
    r"""Gaussian negative log-likelihood, elementwise (PyTorch ``GaussianNLLLoss``).

    .. math::
        \ell = \tfrac12 \left(\log v + \frac{(x - t)^2}{v}\right)
        + [\text{full}]\, \tfrac12 \log 2\pi, \qquad v = \max(\mathrm{var}, \varepsilon)

    Args:
      input: predicted means, float array.
      targets: observations, broadcastable to ``input``.
      var: predicted variances, non-negative: the shape of ``input``, of
        ``input`` without its last axis (one variance per row), of ``input``
        with one axis of size 1, or a scalar (PyTorch's rules).
      full: add the constant :math:`\tfrac12 \log 2\pi`.
      eps: :math:`\varepsilon \ge 0`, the floor of the variance.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      Elementwise loss with the shape of ``input`` (float32 for bf16/f16
      inputs) or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.gaussian_nll_loss(jnp.array([0.0, 1.0], dtype=jnp.float32),
      ...                           jnp.array([1.0, 1.0], dtype=jnp.float32),
      ...                           jnp.array([1.0, 2.0], dtype=jnp.float32))
      Array([0.5      , 0.3465736], dtype=float32)

    Note:
      As in PyTorch the clamp at ``eps`` is invisible to the gradient: the
      derivative with respect to ``var`` is taken at :math:`v` and passed
      straight through, even where ``var < eps``. Concrete negative variances
      raise ``ValueError``; traced ones are clamped to ``eps``.

    References:
      ``torch.nn.functional.gaussian_nll_loss``; Nix and Weigend, *Estimating
      the mean and variance of the target probability distribution*, 1994.
    """
    x, t = _prepare(input, targets, "input", required=True)
    red = cm.Reduction.of(reduction)
    if not isinstance(full, bool):
        raise TypeError(f"full must be a bool; got {full!r}.")
    e = cm.static_float(eps, "eps", low=0.0)
    v = _gaussian_var(var, x.shape)
    if cm.is_concrete(v):
        host = np.asarray(jax.device_get(v))
        if np.isnan(host).any():
            raise ValueError("var has NaN entries; variances must be >= 0.")
        if (host < 0).any():
            raise ValueError("var has negative entries; variances must be >= 0.")
        if e == 0.0 and (host == 0).any():
            raise ValueError("var has zero entries and eps=0: the loss would be NaN; use eps > 0.")
    v = v.astype(cm.compute_dtype(x, v))
    x = x.astype(v.dtype)
    t = t.astype(v.dtype)
    # clamp(var, eps) with an identity derivative (PyTorch clamps under no_grad)
    v = v + jax.lax.stop_gradient(jnp.maximum(v, e) - v)
    loss = _gaussian(x, t, v)
    if full:
        loss = loss + _HALF_LOG_2PI
    return red(loss)

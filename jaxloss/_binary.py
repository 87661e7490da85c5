"""Binary and multi-label cross-entropy, elementwise, with closed-form rules.

Identities used throughout (``sp`` is softplus):
    -log sigmoid(x)     = sp(-x) = max(-x, 0) + log1p(exp(-|x|))
    -log (1-sigmoid(x)) = sp(x)  = max(x, 0)  + log1p(exp(-|x|))

With ``a = pos_weight * y`` and ``b = 1 - y`` the loss is ``a sp(-x) + b sp(x)``
and its derivative ``sigmoid(x) (a + b) - a`` (``sigmoid(x) - y`` without
``pos_weight``). The rule is a ``custom_jvp`` with a tangent linear in ``dx``,
recomputed under ``jax.checkpoint``: reverse mode keeps only the inputs.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array


def _smooth(y, eps):
    # Keras: labels squeezed towards 1/2.
    return y if eps == 0.0 else y * (1.0 - eps) + 0.5 * eps


def _bce_coeffs(y, pw, eps):
    ys = _smooth(y.astype(cm.compute_dtype(y)), eps)
    a = ys if pw is None else pw * ys
    return a, 1.0 - ys


def _bce_forward(x, y, pw, eps):
    a, b = _bce_coeffs(y, pw, eps)
    x = x.astype(cm.compute_dtype(x))
    tail = jnp.log1p(jnp.exp(-jnp.abs(x)))
    sp_pos = jnp.maximum(x, 0.0) + tail  # -log(1 - sigmoid(x))
    sp_neg = jnp.maximum(-x, 0.0) + tail  # -log sigmoid(x)
    return cm.safe_mul(a, sp_neg) + cm.safe_mul(b, sp_pos)


def _bce_tangent(x, y, pw, dx, eps):
    a, b = _bce_coeffs(y, pw, eps)
    x = x.astype(cm.compute_dtype(x))
    # d/dx [a sp(-x) + b sp(x)] = sigmoid(x) (a + b) - a
    return (jax.nn.sigmoid(x) * (a + b) - a) * dx.astype(x.dtype)


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _sigmoid_bce(x, y, pw, eps):
    return _bce_forward(x, y, pw, eps)


@partial(_sigmoid_bce.defjvp, symbolic_zeros=True)
def _sigmoid_bce_jvp(eps, primals, tangents):
    x, y, pw = primals
    dx, dy, dpw = tangents
    loss = _bce_forward(x, y, pw, eps)
    if cm.is_zero(dx):
        dloss = jnp.zeros_like(loss)
    else:
        dloss = jax.checkpoint(partial(_bce_tangent, eps=eps))(x, y, pw, dx)
    if not (cm.is_zero(dy) and cm.is_zero(dpw)):
        # Differentiating the labels or pos_weight: autodiff of the plain forward.
        dy, dpw = cm.instantiate(dy, y), (None if pw is None else cm.instantiate(dpw, pw))
        dloss = dloss + jax.jvp(lambda y_, pw_: _bce_forward(x, y_, pw_, eps), (y, pw), (dy, dpw))[1]
    return loss, dloss


def _prepare_binary(inputs, labels, weight, name):
    x = cm.as_float_array(inputs, name)
    y = jnp.asarray(labels)
    if not (jnp.issubdtype(y.dtype, jnp.floating) or jnp.issubdtype(y.dtype, jnp.integer)
            or y.dtype == jnp.bool_):
        raise TypeError(f"labels must be numeric; got dtype {y.dtype}.")
    y = cm.broadcast_to_shape(y, x.shape, "labels", name)
    w = None if weight is None else cm.broadcast_to_shape(
        cm.as_float_array(weight, "weight"), x.shape, "weight", name)
    return x, y, w


def sigmoid_binary_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "none",
) -> Array:
    r"""Binary cross-entropy on logits, elementwise (multi-label ready).

    .. math::
        \ell = w \left[ p\, y' \operatorname{sp}(-x) + (1 - y') \operatorname{sp}(x) \right],
        \qquad y' = (1-\varepsilon)\, y + \varepsilon / 2

    where :math:`\operatorname{sp}` is softplus, :math:`p` the ``pos_weight``
    and :math:`w` the ``weight``. The derivative rule is
    :math:`w\,[\sigma(x)(p y' + 1 - y') - p y']` (:math:`\sigma(x) - y` in the plain case).

    Args:
      logits: float scores of any shape.
      labels: targets in [0, 1] (float, int or bool), broadcastable to ``logits``.
      weight: elementwise rescaling, broadcastable to ``logits`` (PyTorch ``weight``).
      pos_weight: weight of the positive term, broadcastable to ``logits``
        (PyTorch ``pos_weight``: one per class on the last axis).
      label_smoothing: :math:`\varepsilon \in [0, 1]`, labels squeezed toward 1/2 (Keras).
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements, as
        PyTorch divides: ``weight`` rescales, it does not renormalise).

    Returns:
      Elementwise loss (float32 for bf16/f16 inputs) or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.sigmoid_binary_cross_entropy(jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0]))
      Array([0.6931472, 2.126928 ], dtype=float32)

    Note:
      Logits of ``+inf`` with label 1 (or ``-inf`` with label 0) give loss 0
      and gradient 0; a disagreeing label gives ``inf``. Never NaN for finite
      or infinite logits and labels in [0, 1].

    References:
      ``torch.nn.functional.binary_cross_entropy_with_logits``;
      ``optax.sigmoid_binary_cross_entropy``.
    """
    x, y, w = _prepare_binary(logits, labels, weight, "logits")
    cm.check_reduction(reduction)
    eps = cm.static_float(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    pw = None if pos_weight is None else cm.broadcast_to_shape(
        cm.as_float_array(pos_weight, "pos_weight"), x.shape, "pos_weight", "logits")
    dtype = cm.compute_dtype(x)
    # x and y stay in the caller's dtype: the rule widens them internally.
    loss = _sigmoid_bce(x, y if jnp.issubdtype(y.dtype, jnp.floating) else y.astype(dtype),
                        None if pw is None else pw.astype(dtype), eps)
    if w is not None:
        loss = loss * w.astype(dtype)
    return cm.reduce_loss(loss, reduction)


# BCELoss on probabilities ---------------------------------------------------

_LOG_CLAMP = -100.0  # PyTorch clamps each log at -100
_GRAD_EPS = 1e-12  # PyTorch's backward divides by max(p (1 - p), 1e-12)


def _clamped_logs(p):
    return (jnp.maximum(jnp.log(p), _LOG_CLAMP), jnp.maximum(jnp.log1p(-p), _LOG_CLAMP))


@jax.custom_jvp
def _bce_probs(p, y):
    log_p, log_q = _clamped_logs(p)
    return -(y * log_p + (1.0 - y) * log_q)


@_bce_probs.defjvp
def _bce_probs_jvp(primals, tangents):
    p, y = primals
    dp, dy = tangents
    log_p, log_q = _clamped_logs(p)
    loss = -(y * log_p + (1.0 - y) * log_q)
    # PyTorch's rule: (p - y) / max(p (1 - p), eps); equals the derivative inside (0, 1).
    grad_p = (p - y) / jnp.maximum(p * (1.0 - p), _GRAD_EPS)
    return loss, grad_p * dp - (log_p - log_q) * dy


def binary_cross_entropy(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "none",
) -> Array:
    r"""Binary cross-entropy on probabilities, PyTorch ``BCELoss``.

    .. math::
        \ell = -w \left[ y \max(\log p, -100) + (1-y) \max(\log(1-p), -100) \right]

    Prefer :func:`sigmoid_binary_cross_entropy` on logits: it is exact where
    this one clamps. The gradient follows PyTorch:
    :math:`w (p - y) / \max(p(1-p), 10^{-12})`.

    Args:
      probs: probabilities in [0, 1].
      labels: targets in [0, 1], broadcastable to ``probs``.
      weight: elementwise rescaling, broadcastable to ``probs``.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      Elementwise loss or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.binary_cross_entropy(jnp.array([0.1, 0.8, 0.9, 0.2]),
      ...                              jnp.array([0.0, 1.0, 1.0, 0.0]), reduction="mean")
      Array(0.16425204, dtype=float32)

    Note:
      ``probs`` of exactly 0 or 1 give at most 100 per element, never inf or
      NaN. Concrete ``probs`` outside [0, 1] raise ``ValueError``; traced ones
      give NaN there.

    References:
      ``torch.nn.functional.binary_cross_entropy``; ``optax.losses`` has no
      probability-space BCE.
    """
    p, y, w = _prepare_binary(probs, labels, weight, "probs")
    cm.check_reduction(reduction)
    if cm.is_concrete(p):
        host = jax.device_get(p)
        if ((host < 0) | (host > 1)).any():
            raise ValueError("probs must lie in [0, 1]; use sigmoid_binary_cross_entropy for logits.")
    dtype = cm.compute_dtype(p)
    loss = _bce_probs(p.astype(dtype), y.astype(dtype))
    if w is not None:
        loss = loss * w.astype(dtype)
    return cm.reduce_loss(loss, reduction)

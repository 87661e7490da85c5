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

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array


def _smooth(y, eps):
    # Keras: labels squeezed towards 1/2.
    return y if not cm.maybe_nonzero(eps) else y * (1.0 - eps) + 0.5 * eps


def _widen(v, like):
    """``v`` (an optional operand of its own broadcastable shape) in ``like``'s dtype and
    shape. Broadcasting happens here, inside the rule, so a ``[C]`` ``pos_weight`` or
    ``weight`` is never materialised as an ``[N, C]`` residual."""
    return None if v is None else jnp.broadcast_to(v.astype(like.dtype), like.shape)


def _bce_coeffs(x, y, pw, eps):
    ys = _smooth(_widen(y, x), eps)
    a = ys if pw is None else _widen(pw, x) * ys
    return a, 1.0 - ys


def _apply_weight(loss, w):
    # A zero weight gives 0 even where the loss is inf (no 0 * inf).
    return loss if w is None else cm.safe_mul(_widen(w, loss), loss)


def _bce_forward(x, y, pw, w, eps):
    x = x.astype(cm.compute_dtype(x))
    a, _ = _bce_coeffs(x, y, pw, eps)
    tail = jnp.log1p(jnp.exp(-jnp.abs(x)))
    # Clamped at the largest float so that a zero coefficient times an infinite
    # logit gives 0 without a select: XLA:CPU (jax 0.10.2) then fuses the loss into
    # the reduction with no temporary, where selects (safe_mul) cost three [N, C]
    # float32 buffers; pinned by tests/test_workarounds.py::test_bce_clamp.
    big = jnp.finfo(x.dtype).max
    sp_pos = jnp.minimum(jnp.maximum(x, 0.0) + tail, big)  # -log(1 - sigmoid(x))
    sp_neg = jnp.minimum(jnp.maximum(-x, 0.0) + tail, big)  # -log sigmoid(x)
    ys = _smooth(_widen(y, x), eps)
    loss = a * sp_neg + (sp_pos - ys * sp_pos)
    return _apply_weight(loss, w)


def _bce_tangent(x, y, pw, w, dx, eps):
    x = x.astype(cm.compute_dtype(x))
    a, b = _bce_coeffs(x, y, pw, eps)
    # d/dx [a sp(-x) + b sp(x)] = sigmoid(x) (a + b) - a; finite at x = +-inf.
    g = (a + b) * jax.nn.sigmoid(x) - a
    if w is not None:
        g = _widen(w, g) * g
    return g * dx.astype(x.dtype)


def _bce_tangent_x(_, args, dx):
    x, y, pw, w, eps = args
    return _bce_tangent(x, y, pw, w, dx, eps)


# Differentiating labels, pos_weight or weight (rare): autodiff of the plain forward.
_sigmoid_bce = cm.linear_rule(
    lambda x, y, pw, w, eps: (_bce_forward(x, y, pw, w, eps), None),
    {0: _bce_tangent_x},
    traceable_argnums=(4,),
)


def _prepare_binary(inputs, labels, weight, name):
    """Validates the operands; ``labels`` and ``weight`` keep their own (broadcastable)
    shapes and are broadcast inside the rules."""
    x = cm.as_float_array(inputs, name)
    y = cm.as_numeric_array(labels, "labels")
    y = cm.check_broadcastable(y, x.shape, "labels", name)
    w = None
    if weight is not None:
        w = cm.check_broadcastable(cm.as_float_array(weight, "weight"), x.shape, "weight", name)
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
      label_smoothing: :math:`\varepsilon \in [0, 1]`, labels squeezed toward 1/2 (Keras);
        a Python number, or a traced scalar (``jit``, ``vmap``, differentiable).
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements, as
        PyTorch divides: ``weight`` rescales, it does not renormalise).

    Returns:
      Elementwise loss (float32 for bf16/f16 inputs) or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> logits = jnp.array([0.0, 2.0], jnp.float32)
      >>> jaxloss.sigmoid_binary_cross_entropy(logits, jnp.array([1.0, 0.0], jnp.float32))
      Array([0.6931472, 2.126928 ], dtype=float32)

    Note:
      Logits of ``+inf`` with label 1 (or ``-inf`` with label 0) give loss 0
      and gradient 0; a disagreeing label saturates at the largest float
      (PyTorch gives ``inf``) with gradient :math:`\pm 1`. Never NaN for finite
      or infinite logits and labels in [0, 1].

    References:
      ``torch.nn.functional.binary_cross_entropy_with_logits``;
      ``optax.sigmoid_binary_cross_entropy``.
    """
    x, y, w = _prepare_binary(logits, labels, weight, "logits")
    red = cm.Reduction.of(reduction)
    eps = cm.number_option(
        label_smoothing, "label_smoothing", low=0.0, high=1.0, traced_dtype=cm.compute_dtype(x)
    )
    pw = None
    if pos_weight is not None:
        pw = cm.as_float_array(pos_weight, "pos_weight")
        pw = cm.check_broadcastable(pw, x.shape, "pos_weight", "logits")
    # Every operand keeps the caller's dtype and shape: the rule widens and
    # broadcasts internally, so reverse mode saves only the caller's buffers.
    loss = _sigmoid_bce(x, y, pw, w, eps)
    return red(loss)


# BCELoss on probabilities ---------------------------------------------------

_LOG_CLAMP = -100.0  # PyTorch clamps each log at -100
# PyTorch's backward divides by max(p (1 - p), 1e-12), its 1e-12 being a float32
# constant: 9.99999996e-13 (the float64 gradient then matches PyTorch's to the bit).
_GRAD_EPS = float(np.float32(1e-12))


def _clamped_logs(p):
    return (jnp.maximum(jnp.log(p), _LOG_CLAMP), jnp.maximum(jnp.log1p(-p), _LOG_CLAMP))


def _bce_probs_forward(p, y, w):
    p = p.astype(cm.compute_dtype(p))
    y = _widen(y, p)
    log_p, log_q = _clamped_logs(p)
    return _apply_weight(-(y * log_p + (1.0 - y) * log_q), w)


def _bce_probs_tangent(p, y, w, dp):
    p = p.astype(cm.compute_dtype(p))
    y = _widen(y, p)
    # PyTorch's rule: (p - y) / max(p (1 - p), eps); equals the derivative inside (0, 1).
    # Where p (1 - p) >= eps it is evaluated as (1 - y) / (1 - p) - y / p, whose own
    # derivative (1 - y) / (1 - p)^2 + y / p^2 has no cancellation: the quotient
    # form loses ~eps32 / p of the Hessian for confident predictions.
    clamped = p * (1.0 - p) < _GRAD_EPS
    one = jnp.ones_like(p)
    split = (1.0 - y) / jnp.where(clamped, one, 1.0 - p) - y / jnp.where(clamped, one, p)
    g = jnp.where(clamped, (p - y) / _GRAD_EPS, split)
    if w is not None:
        g = _widen(w, g) * g
    return g * dp.astype(p.dtype)


# d/dy = -(log p - log(1 - p)) with the clamped logs: autodiff of the forward.
_bce_probs = cm.linear_rule(
    lambda p, y, w: (_bce_probs_forward(p, y, w), None),
    {0: lambda _, args, dp: _bce_probs_tangent(*args, dp)},
)


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
      >>> probs = jnp.array([0.1, 0.8, 0.9, 0.2], jnp.float32)
      >>> labels = jnp.array([0.0, 1.0, 1.0, 0.0], jnp.float32)
      >>> jaxloss.binary_cross_entropy(probs, labels, reduction="mean")
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
    red = cm.Reduction.of(reduction)
    if cm.is_concrete(p):
        host = np.asarray(jax.device_get(p))
        if not ((host >= 0) & (host <= 1)).all():
            raise ValueError(
                "probs must lie in [0, 1] (no NaN); use sigmoid_binary_cross_entropy for logits."
            )
    loss = _bce_probs(p, y, w)
    return red(loss)

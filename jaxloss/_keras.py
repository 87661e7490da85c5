"""Keras's regression and hinge losses that optax and PyTorch lack.

Argument order: jaxloss puts predictions first, ``f(predictions, targets)``,
in every loss (optax's and PyTorch's order). Keras puts the truth first,
``f(y_true, y_pred)``. These functions keep jaxloss's order and its parameter
names, so ``keras.losses.f(y_true, y_pred)`` is ``jaxloss.f(y_pred, y_true)``;
a keyword call written for Keras (``y_true=...``) fails loudly instead of
swapping silently. The numbers are Keras's: each loss is a mean (or max) over
the last axis, one value per example.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array

_EPSILON = 1e-7  # keras.backend.epsilon()


def _prepare(predictions, targets):
    x = cm.as_float_array(predictions, "predictions")
    if x.ndim == 0:
        raise ValueError(
            "predictions must have at least one dimension (Keras reduces the last axis); "
            "got a scalar."
        )
    t = cm.check_broadcastable(
        cm.as_numeric_array(targets, "targets"), x.shape, "targets", "predictions"
    )
    floating = jnp.issubdtype(t.dtype, jnp.floating)
    dtype = cm.compute_dtype(x, t) if floating else cm.compute_dtype(x)
    return x.astype(dtype), jnp.broadcast_to(t.astype(dtype), x.shape)


def mean_absolute_percentage_error(
    predictions: ArrayLike, targets: ArrayLike, *, reduction: str = "none"
) -> Array:
    r"""Keras's mean absolute percentage error over the last axis.

    .. math:: \ell = \frac{100}{D} \sum_d \frac{|t_d - x_d|}{\max(|t_d|, \epsilon)}

    with Keras's :math:`\epsilon = 10^{-7}`.

    Args:
      predictions: float predictions ``[..., D]``. **First**, as everywhere
        in jaxloss: Keras's ``(y_true, y_pred)`` is ``(targets, predictions)``,
        so ``keras.losses.mean_absolute_percentage_error(y_true, y_pred)`` is
        ``jaxloss.mean_absolute_percentage_error(y_pred, y_true)``.
      targets: true values, broadcastable to ``predictions``.
      reduction: ``"none"`` (per example, shape ``predictions.shape[:-1]``),
        ``"sum"`` or ``"mean"`` (over examples).

    Returns:
      Per-example loss or its reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[1.1, 1.8], [0.0, 4.0]], dtype=jnp.float32)
      >>> t = jnp.array([[1.0, 2.0], [1.0, 5.0]], dtype=jnp.float32)
      >>> jaxloss.mean_absolute_percentage_error(x, t)
      Array([10.000002, 60.000004], dtype=float32)

    Note:
      A zero target divides by :math:`\epsilon` (large but finite, as in
      Keras). The derivative of :math:`|t - x|` at ``t == x`` is 0.

    References:
      ``keras.losses.mean_absolute_percentage_error``; argument order as
      explained above.
    """
    x, t = _prepare(predictions, targets)
    red = cm.Reduction.of(reduction)
    diff = jnp.abs(t - x) / jnp.maximum(jnp.abs(t), _EPSILON)
    return red(100.0 * jnp.mean(diff, axis=-1))


def mean_squared_logarithmic_error(
    predictions: ArrayLike, targets: ArrayLike, *, reduction: str = "none"
) -> Array:
    r"""Keras's mean squared logarithmic error over the last axis.

    .. math::
        \ell = \frac{1}{D} \sum_d \bigl(\log(1 + \max(x_d, \epsilon))
        - \log(1 + \max(t_d, \epsilon))\bigr)^2

    with Keras's :math:`\epsilon = 10^{-7}`.

    Args:
      predictions: float predictions ``[..., D]``. **First**, as everywhere
        in jaxloss: ``keras.losses.mean_squared_logarithmic_error(y_true, y_pred)``
        is ``jaxloss.mean_squared_logarithmic_error(y_pred, y_true)``.
      targets: true values, broadcastable to ``predictions``; clamped below
        at :math:`\epsilon` like the predictions.
      reduction: ``"none"`` (the mean over the last axis of each example),
        ``"sum"`` or ``"mean"`` (over examples).

    Returns:
      Per-example squared log error, shape ``predictions.shape[:-1]``, or
      its reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[1.0, 3.0], [0.0, 0.5]], dtype=jnp.float32)
      >>> t = jnp.array([[1.0, 1.0], [0.0, 0.0]], dtype=jnp.float32)
      >>> jaxloss.mean_squared_logarithmic_error(x, t, reduction="mean")
      Array(0.16121373, dtype=float32)

    Note:
      Values below :math:`\epsilon` (zero and negatives) are clamped to it,
      as in Keras, and get derivative 0; ``log1p`` keeps small values exact.

    References:
      ``keras.losses.mean_squared_logarithmic_error``; argument order as
      explained above.
    """
    x, t = _prepare(predictions, targets)
    red = cm.Reduction.of(reduction)
    e = jnp.log1p(jnp.maximum(x, _EPSILON)) - jnp.log1p(jnp.maximum(t, _EPSILON))
    return red(jnp.mean(e * e, axis=-1))


def categorical_hinge(
    predictions: ArrayLike, targets: ArrayLike, *, reduction: str = "none"
) -> Array:
    r"""Keras's categorical hinge loss over the last (class) axis.

    .. math::
        \ell = \max\Bigl(0,\ 1 + \max_c\,(1 - t_c)\,x_c - \sum_c t_c\,x_c\Bigr)

    Args:
      predictions: float scores ``[..., C]``. **First**, as everywhere in
        jaxloss: ``keras.losses.categorical_hinge(y_true, y_pred)`` is
        ``jaxloss.categorical_hinge(y_pred, y_true)``.
      targets: one-hot (or soft) targets, broadcastable to ``predictions``.
      reduction: ``"none"`` (one hinge value per example), ``"sum"`` or
        ``"mean"`` (over examples).

    Returns:
      Per-example hinge, shape ``predictions.shape[:-1]`` (float32 for
      bf16/f16 inputs), or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[0.2, 0.9, 0.1], [2.0, 0.5, -1.0]], dtype=jnp.float32)
      >>> t = jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=jnp.float32)
      >>> jaxloss.categorical_hinge(x, t)
      Array([0.3, 4. ], dtype=float32)

    Note:
      As in Keras, the max runs over :math:`(1 - t_c) x_c`, so with one-hot
      targets the true class enters it as 0 (a row of negative scores is
      compared with 0, not with its largest wrong score). The derivative at
      the kink is 0.

    References:
      ``keras.losses.categorical_hinge``; argument order as explained above.
    """
    x, t = _prepare(predictions, targets)
    red = cm.Reduction.of(reduction)
    pos = jnp.sum(t * x, axis=-1)
    neg = jnp.max((1.0 - t) * x, axis=-1)
    z = neg - pos + 1.0
    return red(jnp.where(z > 0, z, jnp.zeros_like(z)))

"""Listwise ranking losses (optax's definitions).

The log-softmax over each list is formed with a masked, shifted log-sum-exp,
so masked items, ``-inf`` scores and fully masked lists give no NaN in the
value or in any derivative.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array


def _masked_log_softmax(x: Array, valid: Array) -> Array:
    """``log_softmax`` over the valid entries of the last axis (0 elsewhere)."""
    top = jnp.max(x, axis=-1, keepdims=True, where=valid, initial=-jnp.inf)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    z = jnp.where(valid, x - top, -jnp.inf)
    total = jnp.sum(jnp.exp(z), axis=-1, keepdims=True)
    lse = jnp.log(jnp.where(total > 0, total, 1.0))
    return jnp.where(valid, z - lse, 0.0)


def _list_losses(logits, labels, where, weights):
    """Per-list losses ``[...]`` and the lists that have a valid item."""
    x = cm.as_float_array(logits, "logits")
    if x.ndim == 0:
        raise ValueError("logits must have a list axis (the last); got a scalar.")
    y = cm.as_numeric_array(labels, "labels")
    if y.shape != x.shape:
        raise ValueError(
            f"labels must have the shape of logits; got labels.shape={y.shape} "
            f"and logits.shape={x.shape}."
        )
    w = None if weights is None else cm.as_numeric_array(weights, "weights")
    if w is not None:
        w = cm.broadcast_to_shape(w, x.shape, "weights", "logits")
    mask = cm.as_mask(where, x.shape, "logits")
    floats = [a for a in (x, y, w) if a is not None and jnp.issubdtype(a.dtype, jnp.floating)]
    dtype = cm.compute_dtype(*floats)
    x, y = x.astype(dtype), y.astype(dtype)
    gain = y if w is None else y * w.astype(dtype)
    valid = jnp.ones(x.shape, bool) if mask is None else mask
    gain = jnp.where(valid, gain, 0.0)
    # a -inf score with zero gain adds nothing, in the value and in every derivative
    logp = _masked_log_softmax(x, valid & (x != -jnp.inf))
    logp = jnp.where(valid & (x == -jnp.inf), -jnp.inf, logp)
    loss = -jnp.sum(
        gain * jnp.where((gain == 0) & jnp.isinf(logp), 0.0, logp), axis=-1
    )  # 0 log 0 = 0; d/dgain = log p
    rows = None if mask is None else jnp.any(mask, axis=-1)
    return loss, rows


def ranking_softmax_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    reduce_fn: Callable[..., Any] | None = jnp.mean,
    reduction: str | None = None,
) -> Array:
    r"""Listwise softmax cross-entropy between scores and relevance labels.

    .. math::
       \ell(s, y) = -\sum_i w_i y_i \log \frac{e^{s_i}}{\sum_j e^{s_j}}

    over the valid items of each list (the last axis).

    Args:
      logits: float scores ``[..., list_size]``.
      labels: relevance labels of the same shape.
      where: boolean mask of the valid items (broadcastable to ``logits``).
      weights: per-item weights (broadcastable to ``logits``).
      reduce_fn: optax's reduction of the per-list losses: ``jnp.mean``
        (default; over the lists with a valid item), ``jnp.sum``, ``None``
        (per-list losses), or any function called as ``reduce_fn(loss,
        where=lists_with_a_valid_item)``.
      reduction: when given, replaces ``reduce_fn``: ``"none"``, ``"sum"``
        or ``"mean"`` (the mean over the lists with a valid item).

    Returns:
      The reduced loss, or per-list losses ``[...]`` (float32 for bf16/f16
      inputs).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> s = jnp.array([[0.0, 0.0], [1.0, 1.0]], dtype=jnp.float32)
      >>> y = jnp.array([[1.0, 0.0], [0.0, 2.0]], dtype=jnp.float32)
      >>> jaxloss.ranking_softmax_loss(s, y, reduce_fn=None)
      Array([0.6931472, 1.3862944], dtype=float32)

    Note:
      A fully masked list has loss 0 and does not count in the mean; when no
      list counts the mean is 0 (as optax). A ``-inf`` score with zero label
      (or masked) adds nothing and gives no NaN in any derivative; with a
      positive label the loss is ``inf``, the true value.

    References:
      ``optax.losses.ranking_softmax_loss``; Cao et al., "Learning to rank:
      from pairwise approach to listwise approach" (ListNet), ICML 2007.
    """
    if reduction is not None:
        red = cm.Reduction.of(reduction)
    elif reduce_fn is None or reduce_fn is jnp.sum or reduce_fn is jnp.mean:
        red = cm.Reduction.of({None: "none", jnp.sum: "sum", jnp.mean: "mean"}[reduce_fn])
    elif not callable(reduce_fn):
        raise TypeError(f"reduce_fn must be a callable or None; got {reduce_fn!r}.")
    else:
        red = None
    loss, rows = _list_losses(logits, labels, where, weights)
    if red is None:
        return reduce_fn(loss, where=rows)
    return red(loss, None if rows is None else rows.astype(loss.dtype))

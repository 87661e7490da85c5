"""Soft Dice and Tversky losses for segmentation (optax's definitions).

Probabilities come from a stable softmax (or a sigmoid for one channel), the
per-class sums are plain ``jnp`` reductions, and the ratio is a safe division,
so every transform applies and no edge gives NaN.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array

_CLASS_REDUCTIONS = ("none", "sum", "mean")


def _hyper(value: Any, name: str, dtype: Any) -> Array:
    """A hyperparameter (Python number or array, possibly traced) in ``dtype``."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a number or a float array; got {value!r}.")
    return cm.as_numeric_array(value, name).astype(dtype)


def _check_probabilities(probs: Array) -> None:
    """optax's check for ``apply_softmax=False``: rows sum to 1 (when concrete)."""
    if not cm.is_concrete(probs) or probs.shape[-1] == 1:
        return
    sums = np.sum(np.asarray(probs, dtype=np.float64), axis=-1)  # on the host: no tracing
    # optax's tolerance, widened to the rounding of C entries in a 16-bit dtype
    rtol = max(1e-5, probs.shape[-1] * float(jnp.finfo(probs.dtype).eps))
    if sums.size and not np.allclose(sums, 1.0, rtol=rtol):
        raise ValueError(
            "With apply_softmax=False, predictions must be probabilities that sum to 1 "
            f"along the class axis (-1); found sums in [{sums.min():.6f}, {sums.max():.6f}]."
        )


def _inputs(
    predictions: ArrayLike, targets: ArrayLike, probabilities: bool = False
) -> tuple[Array, Array]:
    """Float predictions and targets of one shape ``[..., C]`` (a missing unit class
    axis on either is added, as optax does), in the compute dtype; with
    ``probabilities``, the predictions' rows are checked (in their own dtype)."""
    x = cm.as_float_array(predictions, "predictions")
    t = cm.as_numeric_array(targets, "targets")
    if x.ndim == t.ndim - 1:
        x = x[..., None]
    if t.ndim == x.ndim - 1:
        t = t[..., None]
    if x.shape != t.shape or x.ndim == 0:
        raise ValueError(
            "predictions and targets must have the same shape [..., num_classes]; got "
            f"predictions.shape={x.shape} and targets.shape={t.shape}."
        )
    if probabilities:
        _check_probabilities(x)
    dtype = cm.compute_dtype(x, t) if jnp.issubdtype(t.dtype, jnp.floating) else None
    dtype = dtype or cm.compute_dtype(x)
    return x.astype(dtype), t.astype(dtype)


@partial(jax.jit, static_argnums=(6, 7, 8))  # one compiled program per shape, also eagerly
def _per_class(x, t, weights, smooth, alpha, beta, apply_softmax, ignore_background, axis):
    """Per-class Dice/Tversky losses ``1 - (I + s) / (I + a FP + b FN + s)``."""
    if apply_softmax:
        probs = jax.nn.sigmoid(x) if x.shape[-1] == 1 else jax.nn.softmax(x, axis=-1)
    else:
        probs = x
    axes = tuple(range(1, x.ndim - 1)) if axis is None else axis
    inter = jnp.sum(probs * t, axis=axes)
    pred_sum = jnp.sum(probs, axis=axes)
    target_sum = jnp.sum(t, axis=axes)
    num = inter + smooth
    den = inter + alpha * (pred_sum - inter) + beta * (target_sum - inter) + smooth
    # 0 / 0 (empty class, smooth = 0): a perfect match, loss 0 with zero gradient
    empty = den == 0
    coeff = jnp.where(empty, 1.0, num / jnp.where(empty, 1.0, den))
    loss = 1.0 - coeff
    if weights is not None:
        if weights.ndim != 1:
            raise ValueError(
                f"class_weights must have shape [num_classes]; got shape {weights.shape}."
            )
        loss = loss * weights.reshape((1,) * (loss.ndim - 1) + weights.shape)
    if ignore_background and x.shape[-1] > 1:
        loss = loss[..., 1:]
    return loss


def dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    class_weights: ArrayLike | None = None,
    smooth: ArrayLike = 1.0,
    alpha: ArrayLike = 0.5,
    beta: ArrayLike = 0.5,
    apply_softmax: bool = True,
    reduction: str = "mean",
    ignore_background: bool = False,
    axis: int | tuple[int, ...] | None = None,
) -> Array:
    r"""Soft Dice loss (Tversky loss for :math:`\alpha \ne \beta`), per class.

    With probabilities :math:`p` (softmax over the last axis, a sigmoid for
    one channel) and :math:`I_c = \sum_i p_{ic} t_{ic}`,
    :math:`P_c = \sum_i p_{ic}`, :math:`T_c = \sum_i t_{ic}` summed over ``axis``:

    .. math::
       \ell_c = 1 - \frac{I_c + s}{I_c + \alpha (P_c - I_c) + \beta (T_c - I_c) + s}

    Args:
      predictions: logits ``[..., num_classes]`` (``[...]`` or ``[..., 1]``
        for binary), or probabilities with ``apply_softmax=False``.
      targets: one-hot (or soft) targets of the same shape.
      class_weights: ``[num_classes]`` multipliers of the per-class losses.
      smooth: :math:`s` (may be traced).
      alpha: weight of false positives (may be traced).
      beta: weight of false negatives (may be traced).
      apply_softmax: turn logits into probabilities first.
      reduction: over the **class axis** (optax's meaning): ``"mean"``
        (default), ``"sum"``, or ``"none"`` (per-class losses).
      ignore_background: drop class 0 (when there is more than one class).
      axis: the axes summed in :math:`I, P, T`; ``None``: every axis but the
        first (batch) and the last (classes).

    Returns:
      ``[batch]`` for ``"mean"``/``"sum"``, ``[batch, classes]`` for
      ``"none"`` (float32 for bf16/f16 inputs).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> p = jnp.array([[[0.9, 0.1], [0.2, 0.8]]], dtype=jnp.float32)
      >>> t = jnp.array([[[1.0, 0.0], [0.0, 1.0]]], dtype=jnp.float32)
      >>> jaxloss.dice_loss(p, t, smooth=0.0, apply_softmax=False, reduction="none")
      Array([[0.15, 0.15]], dtype=float32)

    Note:
      With ``smooth = 0`` a class absent from both prediction and target
      (``0 / 0``) has loss 0 and zero gradient (optax: NaN). With
      ``apply_softmax=False`` the rows must sum to 1 (checked when the
      predictions are concrete, as optax does; not for one channel, where
      optax's check rejects any probability but 1).

    References:
      ``optax.losses.dice_loss``; Milletari et al., "V-Net", 3DV 2016;
      Salehi et al., "Tversky loss function for image segmentation", 2017.
    """
    if reduction not in _CLASS_REDUCTIONS:
        raise ValueError(f"reduction must be one of 'none', 'sum', 'mean'; got {reduction!r}.")
    x, t = _inputs(predictions, targets, not apply_softmax)
    w = None if class_weights is None else cm.as_float_array(class_weights, "class_weights")
    hyper = [
        _hyper(v, n, x.dtype) for v, n in ((smooth, "smooth"), (alpha, "alpha"), (beta, "beta"))
    ]
    w = None if w is None else w.astype(x.dtype)
    loss = _per_class(x, t, w, *hyper, bool(apply_softmax), bool(ignore_background), axis)
    if reduction == "mean":
        return jnp.mean(loss, axis=-1)
    if reduction == "sum":
        return jnp.sum(loss, axis=-1)
    return loss


def binary_dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    smooth: ArrayLike = 1.0,
    apply_sigmoid: bool = True,
    reduction: str = "none",
) -> Array:
    r"""Soft Dice loss of one foreground channel (:func:`dice_loss` with a sigmoid).

    .. math:: \ell = 1 - \frac{2 I + 2 s}{P + T + 2 s}

    (the :math:`\alpha = \beta = \tfrac12` Dice loss, :math:`I, P, T` summed
    over every axis but the first.)

    Args:
      predictions: logits ``[batch, ...]`` or ``[batch, ..., 1]``
        (probabilities with ``apply_sigmoid=False``).
      targets: binary targets of the same shape.
      smooth: :math:`s` (may be traced).
      apply_sigmoid: turn logits into probabilities first.
      reduction: over the per-example losses: ``"none"`` (default, optax's
        ``[batch]``), ``"sum"`` or ``"mean"``.

    Returns:
      The per-example losses (float32 for bf16/f16 inputs) or their reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> p = jnp.array([[0.5, 0.5, 0.0, 0.0]], dtype=jnp.float32)
      >>> t = jnp.array([[1.0, 1.0, 0.0, 0.0]], dtype=jnp.float32)
      >>> jaxloss.binary_dice_loss(p, t, smooth=0.0, apply_sigmoid=False)
      Array([0.3333333], dtype=float32)

    Note:
      Edges as :func:`dice_loss`; probabilities are accepted with
      ``apply_sigmoid=False`` (optax's sum-to-one check rejects them).

    References:
      ``optax.losses.binary_dice_loss``; Milletari et al., "V-Net", 3DV 2016.
    """
    red = cm.Reduction.of(reduction)
    x = cm.as_float_array(predictions, "predictions")
    t = cm.as_numeric_array(targets, "targets")
    if x.ndim == t.ndim and x.ndim > 0 and x.shape[-1] != 1:
        x, t = x[..., None], t[..., None]
    loss = dice_loss(x, t, smooth=smooth, apply_softmax=apply_sigmoid, reduction="mean")
    return red(loss)


def multiclass_generalized_dice_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    smooth: ArrayLike = 1.0,
    apply_softmax: bool = True,
    ignore_background: bool = False,
    reduction: str = "mean",
) -> Array:
    r"""Generalized Dice loss: :func:`dice_loss` with inverse-squared-frequency
    class weights.

    With :math:`f_c = \sum t_{\cdot c}` over every axis but the last,

    .. math::
       w_c = C \frac{1 / (f_c^2 + 10^{-7})}{\sum_k 1 / (f_k^2 + 10^{-7})}, \qquad
       \mathcal{L} = \operatorname{mean}_{b, c}\; w_c\, \ell_{bc}

    where :math:`\ell_{bc}` is :func:`dice_loss` per class.

    Args:
      predictions: logits ``[batch, ..., num_classes]`` (probabilities with
        ``apply_softmax=False``).
      targets: one-hot targets of the same shape.
      smooth: as :func:`dice_loss` (may be traced).
      apply_softmax: turn logits into probabilities first.
      ignore_background: drop class 0 (when there is more than one class).
      reduction: ``"mean"`` (optax's scalar, the default), ``"sum"``, or
        ``"none"``: the weighted per-example, per-class losses
        ``[batch, classes]`` whose mean is optax's value.

    Returns:
      The loss (float32 for bf16/f16 inputs).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> p = jnp.array([[[0.9, 0.1], [0.2, 0.8]]], dtype=jnp.float32)
      >>> t = jnp.array([[[1.0, 0.0], [0.0, 1.0]]], dtype=jnp.float32)
      >>> jaxloss.multiclass_generalized_dice_loss(p, t, smooth=0.0, apply_softmax=False)
      Array(0.15, dtype=float32)

    Note:
      The weights depend on the targets (and are differentiated with them,
      as in optax). Edges as :func:`dice_loss`.

    References:
      ``optax.losses.multiclass_generalized_dice_loss``; Sudre et al.,
      "Generalised Dice overlap as a deep learning loss function for highly
      unbalanced segmentations", DLMIA 2017.
    """
    red = cm.Reduction.of(reduction)
    x = cm.as_float_array(predictions, "predictions")
    t = cm.as_numeric_array(targets, "targets")
    if x.shape != t.shape or x.ndim == 0:
        raise ValueError(
            "predictions and targets must have the same shape [..., num_classes]; got "
            f"predictions.shape={x.shape} and targets.shape={t.shape}."
        )
    _, t = _inputs(x, t)  # x goes to dice_loss as given: its check sees x's own dtype
    freq = jnp.sum(t, axis=tuple(range(t.ndim - 1)))
    inv = 1.0 / (jnp.square(freq) + 1e-7)
    weights = inv / jnp.sum(inv) * inv.shape[0]
    loss = dice_loss(
        x,
        t,
        class_weights=weights,
        smooth=smooth,
        apply_softmax=apply_softmax,
        reduction="none",
        ignore_background=ignore_background,
    )
    return red(loss)

"""Softmax cross-entropy family: integer labels, probability labels, NLL.

The losses are built on the softmax core (:mod:`jaxloss._softmax`): one block
per row, the closed-form coefficient ``softmax * A - q`` as the tangent of a
:func:`jaxloss._common.linear_rule`. Reverse mode keeps the logits (the
caller's buffer), the labels and a few scalars per row; the backward
recomputes ``softmax * A - q`` in one fused elementwise pass.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxloss import _common as cm
from jaxloss import _softmax as sm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array


# --------------------------------------------------------------------------
# Integer labels
# --------------------------------------------------------------------------


def _int_forward(x, labels, weight, mask, eps, z, cap, ignore_index):
    """``((loss, share), (rows, safe))``: per-row loss, its share of the mean's
    divisor (``w[y]``, 0 when ignored or without a valid class) and the rule's
    residuals. ``eps``, ``z`` and ``cap`` are Python numbers (static) or traced
    scalars (differentiable by autodiff of this forward)."""
    num_classes = x.shape[-1]
    s = sm.softcap(sm.upcast(x), cap)
    info = sm.labels_info(labels, num_classes, ignore_index)
    w_y = sm.label_weight(info, weight, s.dtype)
    gscale = sm.gap_scale(num_classes)
    block = sm.labelled_stats(
        x, s, mask, weight, info.safe, cap=cap, dense=cm.maybe_nonzero(eps), gscale=gscale
    )
    loss, share, rows = sm.finish_labels(block, info, w_y, eps=eps, z=z, gscale=gscale)
    return (loss, share), (rows, info.safe)


def _int_tangent_x(res, args, dx):
    rows, safe = res
    x, _, weight, mask, eps, _, cap, _ = args
    s = sm.softcap(sm.upcast(x), cap)
    g = sm.coefficient(s, mask, safe, weight, rows, dense=cm.maybe_nonzero(eps), cap=cap)
    return sm.row_tangent(g, dx)


_ce_int = cm.linear_rule(
    _int_forward, {0: _int_tangent_x}, static_argnums=(7,), traceable_argnums=(4, 5, 6)
)


# --------------------------------------------------------------------------
# Probability labels
# --------------------------------------------------------------------------


def _smoothed_targets(s, labels, mask, eps):
    """Targets zeroed on masked classes, with ``eps / K`` spread over the valid ones."""
    t = labels.astype(s.dtype)
    if mask is not None:
        t = jnp.where(mask, t, jnp.zeros_like(t))
    if cm.maybe_nonzero(eps):
        valid = sm.valid_classes(s, mask)
        k = jnp.maximum(jnp.sum(valid, axis=-1).astype(s.dtype), 1.0)
        t = (1.0 - eps) * t + jnp.where(valid, eps / k[..., None], 0.0)
    return t


def _weighted_targets(s, labels, weight, mask, eps):
    """Smoothed targets times the class weights (PyTorch: ``-sum_c w_c t_c log p_c``)."""
    t = _smoothed_targets(s, labels, mask, eps)
    return t if weight is None else t * jnp.broadcast_to(weight.astype(s.dtype), s.shape)


def _prob_forward(x, labels, weight, mask, eps, z):
    """``((loss, share), rows)``; ``share`` is 1 on rows with a valid class."""
    s = sm.upcast(x)
    t = _weighted_targets(s, labels, weight, mask, eps)
    gscale = sm.gap_scale(s.shape[-1])
    block = sm.block_stats(s, mask, None, t, dense=True, gscale=gscale, w_as_given=True)
    zw = (block.wsum != 0).astype(s.dtype)
    one = jnp.ones_like(zw)
    loss, rows = sm.finish(block, qy=None, e=one, zw=zw, z=z, gscale=gscale)
    return (loss, (block.total > 0).astype(s.dtype)), rows


def _prob_tangent_x(rows, args, dx):
    x, labels, weight, mask, eps, _ = args
    s = sm.upcast(x)
    t = _weighted_targets(s, labels, weight, mask, eps)
    # p A - e t, e = 1 on counted rows and 0 elsewhere (no allowed class: no gradient)
    g = sm.coefficient(s, mask, None, t, rows, dense=True, w_as_given=True)
    return sm.row_tangent(g, dx)


def _prob_tangent_labels(rows, args, dlabels):
    """``(1 - eps) sum_c w_c (lse - x_c) dt_c`` over the valid classes.

    Written out rather than autodiffed: the forward's zero-target guard would
    drop the classes whose target is 0, whose slope is ``lse - x_c`` like any
    other's. The z-loss term does not depend on the targets.
    """
    x, _, weight, mask, eps, _ = args
    s = sm.upcast(x)
    gap = rows.log_sum[..., None] + (rows.shift[..., None] - s)
    gap = jnp.where(sm.valid_classes(s, mask), gap, jnp.zeros_like(gap))
    if weight is not None:
        gap = gap * jnp.broadcast_to(weight.astype(s.dtype), s.shape)
    dloss = (1.0 - eps) * jnp.sum(gap * dlabels.astype(s.dtype), axis=-1)
    return dloss, jnp.zeros_like(dloss)


_ce_prob = cm.linear_rule(
    _prob_forward, {0: _prob_tangent_x, 1: _prob_tangent_labels}, traceable_argnums=(4, 5)
)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    reduction: str = "none",
) -> Array:
    r"""Softmax cross-entropy with integer class labels.

    .. math::
        \ell_i = (1-\varepsilon)\, w_{y_i} (\mathrm{lse}(s_i) - s_{i,y_i})
          + \frac{\varepsilon}{K} \sum_c w_c (\mathrm{lse}(s_i) - s_{i,c})
          + z\, w_{y_i} \mathrm{lse}(s_i)^2,
        \qquad s = \mathrm{cap} \tanh(x / \mathrm{cap})

    with :math:`K` the number of classes (those allowed by ``where`` and not
    ``-inf``). The gradient is the closed form :math:`\mathrm{softmax}(s)\,A - q`;
    reverse mode keeps only the logits, the per-row logsumexp and the labels.

    Args:
      logits: unnormalized scores, any float dtype; the class axis is ``axis``.
      labels: integer class ids with the shape of ``logits`` minus ``axis``.
      axis: the class axis.
      where: boolean mask broadcastable to ``logits``; ``False`` classes are
        excluded from the softmax (as in ``jax.nn.log_softmax(where=)``). A row
        with no allowed class contributes 0 and does not count in the mean.
      weight: per-class weights ``[C]`` (PyTorch ``weight``).
      ignore_index: label value whose rows contribute 0 and do not count.
      label_smoothing: :math:`\varepsilon \in [0, 1]`, PyTorch semantics.
      z_loss: coefficient of PaLM's auxiliary :math:`\mathrm{lse}^2` term.
      logit_softcap: Gemma 2 soft cap applied to the logits first.
        ``label_smoothing``, ``z_loss`` and ``logit_softcap`` may be traced
        scalars (scheduled under ``jit``, swept with ``vmap``, learned with
        ``grad``); a Python number selects a specialised path.
      reduction: ``"none"`` (per example), ``"sum"`` or ``"mean"`` (PyTorch's
        weighted mean :math:`\sum \ell / \sum w_{y_i}`; 0 when nothing counts).

    Returns:
      The loss, float32 for bf16/f16 inputs; shape ``logits.shape`` minus
      ``axis`` for ``reduction="none"``, else a scalar.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], jnp.float32)
      >>> jaxloss.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 1]))
      Array([0.169846, 0.551445], dtype=float32)

    Note:
      ``-inf`` logits and ``where``-masked classes get probability 0, zero
      gradient and no smoothing mass; nothing becomes NaN. A row whose classes
      are all masked or all ``-inf`` contributes 0 and does not count in the
      mean. A label on a masked class is not an error: as in optax, the row's
      loss is ``logsumexp`` over the allowed classes minus that label's logit.
      Out-of-range labels
      raise ``ValueError`` when concrete; under ``jit`` the row's loss is NaN
      and its gradient 0 (so masking the loss, ``jnp.where(mask, loss, 0)``,
      also cleans the gradient), and ``checkify.checkify`` reports the label
      check.

    References:
      ``torch.nn.functional.cross_entropy``;
      ``optax.softmax_cross_entropy_with_integer_labels``.
    """
    options = (ignore_index, label_smoothing, z_loss, logit_softcap)
    p = cm.int_label_inputs(logits, labels, axis, where, weight, reduction, options, traced=True)
    o = p.options
    loss, share = _ce_int(p.x, p.labels, p.weight, p.mask, o.eps, o.z, o.cap, o.ignore_index)
    return p.reduction(loss, share)


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    weight: ArrayLike | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "none",
) -> Array:
    r"""Softmax cross-entropy with probability labels.

    .. math::
        \ell_i = \sum_c t'_{i,c} (\mathrm{lse}(x_i) - x_{i,c}) + z\,\mathrm{lse}(x_i)^2,
        \qquad t' = (1-\varepsilon)\, t + \varepsilon / K

    Args:
      logits: unnormalized scores, any float dtype.
      labels: class probabilities (or any non-negative targets), broadcastable
        to ``logits``. Differentiable: the gradient with respect to the labels
        is :math:`(1-\varepsilon)\, w (\mathrm{lse} - x)`, as used in distillation.
      axis: the class axis (an int, a tuple of axes or ``None``; optax's).
      where: a class mask broadcastable to ``logits`` (masked classes are left
        out of the softmax and of the sum) or a per-example mask shaped like
        the batch (optax's ``where``).
      weight: per-class weights ``[C]`` (PyTorch's ``weight`` with probability
        targets: :math:`-\sum_c w_c t_c \log p_c`; the mean still divides by
        the number of rows, as PyTorch does for probability targets).
      label_smoothing: :math:`\varepsilon \in [0, 1]` spread over the ``K``
        allowed classes.
      z_loss: coefficient of the :math:`\mathrm{lse}^2` term. Both may be
        traced scalars (``jit``, ``vmap``, differentiable).
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over rows; rows with no
        allowed class do not count).

    Returns:
      Per-row loss (``logits.shape`` minus ``axis``) or its reduction; float32
      for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> probs = jnp.array([[0.5, 0.4, 0.1]], jnp.float32)
      >>> jaxloss.softmax_cross_entropy(jnp.log(probs), jnp.array([[1.0, 0.0, 0.0]], jnp.float32))
      Array([0.6931472], dtype=float32)

    Note:
      A class whose target is 0 never makes the loss NaN, even with a ``-inf``
      logit; a positive target on a ``-inf`` logit gives ``inf`` (the true value).

    References:
      ``optax.softmax_cross_entropy``; ``torch.nn.functional.cross_entropy``
      with probability targets.
    """
    x, mask, axes = cm.prepare_logits(logits, axis, where)
    t = cm.as_float_array(labels, "labels")
    try:
        t = jnp.broadcast_to(t, jnp.shape(logits))
    except ValueError:
        raise ValueError(
            "labels must be class probabilities broadcastable to the shape of logits; got "
            f"labels.shape={t.shape}, logits.shape={jnp.shape(logits)}. "
            "For class indices use softmax_cross_entropy_with_integer_labels."
        ) from None
    t = cm.classes_last(t, axes)
    red = cm.Reduction.of(reduction)
    o = cm.ce_options(None, label_smoothing, z_loss, None, traced_dtype=cm.compute_dtype(x))
    # The labels keep their dtype: the rule widens them with the logits, so a
    # float32 target is never rounded to bf16 and no converted copy is saved.
    w = cm.prepare_class_weight(weight, x.shape[-1])
    loss, share = _ce_prob(x, t, w, mask, o.eps, o.z)
    return red(loss, share)


def nll_loss(
    log_probs: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    reduction: str = "none",
) -> Array:
    r"""Negative log-likelihood of integer labels given log-probabilities.

    .. math:: \ell_i = -w_{y_i}\, \log p_{i, y_i}

    Args:
      log_probs: log-probabilities (e.g. ``jax.nn.log_softmax(x)``).
      labels: integer class ids with the shape of ``log_probs`` minus ``axis``.
      axis: the class axis.
      weight: per-class weights ``[C]``.
      ignore_index: label value whose rows contribute 0 and do not count.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (:math:`\sum \ell / \sum w_{y_i}`,
        0 when nothing counts; PyTorch returns NaN there).

    Returns:
      Per-example loss or its reduction.

    Example:
      >>> import jax, jax.numpy as jnp, jaxloss
      >>> logp = jax.nn.log_softmax(jnp.array([[2.0, 0.0, -1.0]], jnp.float32))
      >>> jaxloss.nll_loss(logp, jnp.array([0]))
      Array([0.16984604], dtype=float32)

    Note:
      ``softmax_cross_entropy_with_integer_labels(x, y) == nll_loss(log_softmax(x), y)``.

    References:
      ``torch.nn.functional.nll_loss``.
    """
    lp, _, _ = cm.prepare_logits(log_probs, axis, None, "log_probs")
    y = cm.prepare_int_labels(labels, lp, axis, jnp.shape(log_probs))
    red = cm.Reduction.of(reduction)
    ignore_index = cm.static_int(ignore_index, "ignore_index")
    num_classes = lp.shape[-1]
    w = cm.prepare_class_weight(weight, num_classes)
    cm.check_labels_in_range(y, num_classes, ignore_index)
    info = sm.labels_info(y, num_classes, ignore_index)
    share = sm.label_weight(info, w, cm.compute_dtype(lp))
    picked = sm.upcast(sm.label_logit(lp, info.safe))
    counted = share != 0
    # A zero weight (or an ignored row) gives 0 even where log_probs is -inf.
    loss = jnp.where(counted, -share * jnp.where(counted, picked, 0.0), 0.0)
    # Out of range under jit: NaN, whatever the weight of the clipped class.
    loss = jnp.where(info.bad, jnp.nan, loss)
    return red(loss, share)


def safe_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    reduction: str = "none",
) -> Array:
    r"""Softmax cross-entropy with :math:`0 \log 0 = 0` (optax's ``safe_`` variant).

    .. math:: \ell_i = -\sum_c t_{i,c} \log \mathrm{softmax}(x_i)_c

    jaxloss's :func:`softmax_cross_entropy` already treats a zero target on a
    ``-inf`` logit as 0 (value and gradients), so the two agree everywhere;
    this name exists for programs written against optax.

    Args:
      logits: unnormalized scores ``[..., C]``.
      labels: class probabilities broadcastable to ``logits``.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over rows with a class).

    Returns:
      Per-row loss ``logits.shape[:-1]`` or its reduction; float32 for bf16/f16.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[0.0, -jnp.inf]], jnp.float32)
      >>> jaxloss.safe_softmax_cross_entropy(x, jnp.array([[1.0, 0.0]], jnp.float32))
      Array([0.], dtype=float32)

    Note:
      A positive target on a ``-inf`` logit gives ``inf`` (the true value).

    References:
      ``optax.safe_softmax_cross_entropy``.
    """
    return softmax_cross_entropy(logits, labels, reduction=reduction)


def poly_loss_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: ArrayLike = 2.0,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    reduction: str = "none",
) -> Array:
    r"""PolyLoss: cross-entropy plus :math:`\epsilon` times the first polynomial term.

    .. math:: \ell_i = \mathrm{CE}(x_i, t_i) + \epsilon \sum_c t_{i,c} (1 - p_{i,c})

    with :math:`p = \mathrm{softmax}(x)` over the allowed classes.

    Args:
      logits: unnormalized scores; the class axis (or axes) is ``axis``.
      labels: class probabilities broadcastable to ``logits``.
      epsilon: the coefficient :math:`\epsilon` (optax's default 2.0); may be
        traced (learned, scheduled, ``vmap``-ped).
      axis, where: as in :func:`softmax_cross_entropy` (optax's semantics).
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over rows with a class).

    Returns:
      Per-row loss or its reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[2.0, 0.0, -1.0]], jnp.float32)
      >>> jaxloss.poly_loss_cross_entropy(x, jnp.array([[1.0, 0.0, 0.0]], jnp.float32))
      Array([0.48225665], dtype=float32)

    Note:
      Masked classes and ``-inf`` logits have :math:`p = 0` and add nothing;
      a row with no class gives 0.

    References:
      Leng et al., *PolyLoss: A Polynomial Expansion Perspective of
      Classification Loss Functions*, ICLR 2022; ``optax.poly_loss_cross_entropy``.
    """
    red = cm.Reduction.of(reduction)
    ce = softmax_cross_entropy(logits, labels, axis, where)
    x, mask, axes = cm.prepare_logits(logits, axis, where)
    t = cm.classes_last(
        jnp.broadcast_to(cm.as_float_array(labels, "labels"), jnp.shape(logits)), axes
    )
    s = sm.upcast(x)
    valid = sm.valid_classes(s, mask)
    p = jax.nn.softmax(jnp.where(valid, s, -jnp.inf), axis=-1, where=valid)
    one_minus = jnp.sum(jnp.where(valid, t.astype(s.dtype) * (1.0 - p), 0.0), axis=-1)
    eps = cm.as_float_array(epsilon, "epsilon").astype(s.dtype)
    nonempty = jnp.any(valid, axis=-1)
    return red(ce + eps * one_minus, nonempty.astype(s.dtype))


def smooth_labels(
    labels: ArrayLike,
    alpha: ArrayLike,
    *,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
) -> Array:
    r"""Label smoothing: :math:`(1 - \alpha)\, t + \alpha / K` over the class axis.

    Args:
      labels: class probabilities (e.g. one-hot), float.
      alpha: the smoothing :math:`\alpha`; may be traced.
      axis: the class axis (or axes, or ``None`` for all).
      where: classes that count; ``K`` is their number per row (optax).

    Returns:
      The smoothed labels, the shape of ``labels``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.smooth_labels(jnp.array([[1.0, 0.0]], jnp.float32), 0.2)
      Array([[0.90000004, 0.1       ]], dtype=float32)

    Note:
      Not a loss: it prepares targets for :func:`softmax_cross_entropy` (whose
      ``label_smoothing`` does the same inside the loss).

    References:
      ``optax.smooth_labels``; Szegedy et al., *Rethinking the Inception
      Architecture for Computer Vision*, 2016.
    """
    t = cm.as_float_array(labels, "labels")
    a = cm.as_float_array(alpha, "alpha").astype(t.dtype)
    axes = cm.class_axes(axis, t.ndim, "labels")
    if where is None:
        k = math.prod(t.shape[i] for i in axes)
    else:
        k = jnp.sum(jnp.asarray(where), axis=axes, keepdims=True).astype(t.dtype)
    return (1.0 - a) * t + a / k

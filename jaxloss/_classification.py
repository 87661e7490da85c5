"""Softmax cross-entropy family with closed-form derivative rules.

Design of the derivative rules
------------------------------
Each loss is a ``jax.custom_jvp`` whose tangent is *linear* in the input
tangent: ``dL = sum_c g_c(x) dx_c`` with ``g = softmax * A - q`` (``A`` and
``q`` defined below).  Reverse mode comes from JAX transposing that linear
map, so ``grad``, ``jvp``, ``jacfwd``, ``hessian`` and forward-over-reverse
all work.  The tangent's coefficient ``g`` is computed inside
``jax.checkpoint``: under reverse mode the only residuals are the logits
themselves (the caller's buffer), the per-row ``logsumexp`` and the labels,
and the backward recomputes ``softmax - target`` in one fused elementwise pass.
No ``[N, C]`` intermediate is kept between the forward and the backward.

Math, per row, with ``s = softcap(x)`` (identity without ``logit_softcap``),
``V`` the valid classes (``where`` and ``s > -inf``), ``K = |V|``, ``lse =
logsumexp_V(s)``, ``p = softmax_V(s)`` and class weights ``w`` (ones by default):

    q_c  = (1 - eps) w_y [c == y] + eps w_c [c in V] / K       # target weights
    loss = sum_c q_c (lse - s_c) + z w_y lse^2                 # PyTorch + PaLM
    dloss/ds_c = p_c (sum_c q_c + 2 z w_y lse) - q_c
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array

_NEG_INF = -jnp.inf


# --------------------------------------------------------------------------
# Pieces shared by the rules
# --------------------------------------------------------------------------


def _softcap(x: Array, cap: float | None) -> Array:
    # Gemma 2: cap * tanh(x / cap)
    return x if cap is None else cap * jnp.tanh(x / cap)


def _softcap_slope(x: Array, cap: float | None) -> Array:
    # d/dx cap * tanh(x / cap) = 1 - tanh(x / cap)^2
    t = jnp.tanh(x / cap)
    return 1.0 - t * t


def _upcast(x: Array) -> Array:
    # Low-precision logits are read as-is and widened inside the rule, so the
    # only residual is the caller's own buffer.
    return x.astype(cm.compute_dtype(x))


def _masked(s: Array, mask: Array | None) -> Array:
    return s if mask is None else jnp.where(mask, s, _NEG_INF)


def _logsumexp(sm: Array) -> Array:
    """Row logsumexp of already-masked values; ``-inf`` for an empty row, never NaN."""
    m = jnp.max(sm, axis=-1)
    m_safe = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m)))
    s = jnp.sum(jnp.exp(sm - m_safe[..., None]), axis=-1)
    return jnp.log(s) + m_safe


def _softmax_from_lse(sm: Array, lse: Array) -> Array:
    # p = exp(s - lse); an empty row (lse = -inf) gives zeros, not NaN.
    lse_safe = jnp.where(jnp.isfinite(lse), lse, jnp.zeros_like(lse))
    return jnp.exp(sm - lse_safe[..., None])


def _logsumexp_parts(sm: Array) -> tuple[Array, Array]:
    """Row logsumexp of already-masked values as ``(shift, log_sum)``, ``lse =
    shift + log_sum``, with ``shift`` the row max (0 for an empty row, whose
    ``log_sum`` is ``-inf``). Kept apart so that ``lse - s_c`` can be formed
    as ``log_sum + (shift - s_c)``, exact near the maximum even for huge logits."""
    m = jnp.max(sm, axis=-1)
    shift = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m)))
    return shift, jnp.log(jnp.sum(jnp.exp(sm - shift[..., None]), axis=-1))


def _logsumexp_from_label(
    sm: Array, sm_y: Array, skip: Array, remake: Callable[[], Array]
) -> tuple[Array, Array]:
    """Row logsumexp in one pass over the logits, shifted by the label's logit.

    ``CE = log sum_c exp(s_c - s_y) >= 0``: with the label's own logit as the
    shift the sum is at least 1, so it cannot underflow, and it only overflows
    when some logit exceeds the label's by ~88 (float32). That saves the pass
    that finds the row maximum. If any counted row falls outside ``[1, inf)``
    (overflow, a ``-inf`` or masked label logit, NaN) the whole batch takes the
    max-shifted two-pass path instead. ``skip`` marks rows whose value is unused.
    ``remake()`` rebuilds ``sm`` from the caller's own input inside that branch:
    an ``sm`` computed outside it (upcast, masked, soft-capped) would become an
    operand of the ``cond`` and be materialised as an ``[N, C]`` buffer.
    Returns ``(shift, log_sum)`` as :func:`_logsumexp_parts` does.
    """
    shift = lax.stop_gradient(jnp.where(jnp.isfinite(sm_y), sm_y, jnp.zeros_like(sm_y)))
    total = jnp.sum(jnp.exp(sm - shift[..., None]), axis=-1)
    ok = ((total >= 1.0) & (total < jnp.inf)) | skip
    return lax.cond(
        jnp.all(ok), lambda: (shift, jnp.log(total)), lambda: _logsumexp_parts(remake())
    )


def _softmax_from_parts(sm: Array, shift: Array, log_sum: Array, rows: Array) -> Array:
    # p = exp((s - shift) - log_sum); 0 on rows that do not count (no NaN, no overflow).
    z = (sm - shift[..., None]) - log_sum[..., None]
    return jnp.exp(jnp.where(rows[..., None], z, _NEG_INF))


def _gap_sum(coef: Array, shift: Array, log_sum: Array, s: Array) -> Array:
    """``sum_c coef_c (lse - s_c)`` with ``lse = shift + log_sum``.

    A zero ``coef_c`` contributes 0 even where ``s_c = -inf``. The gap is formed
    as ``log_sum + (shift - s_c)``, exact for ``s_c`` near the shift; where
    ``shift - s_c`` overflows (logits of both signs near the float limit) the
    product is split so that a small ``coef_c`` still gives a finite term.
    """
    d = shift[..., None] - s
    overflow = jnp.isinf(d) & jnp.isfinite(s)
    d = jnp.where(overflow, jnp.zeros_like(d), d)
    term = cm.safe_mul(coef, log_sum[..., None] + d)
    split = coef * (shift + log_sum)[..., None] - coef * jnp.where(overflow, s, 0.0)
    return jnp.sum(jnp.where(overflow, split, term), axis=-1)


def _valid_classes(s: Array, mask: Array | None) -> Array:
    # ``!=`` rather than ``>``: a NaN logit stays "valid" so that it propagates.
    valid = s != _NEG_INF
    return valid if mask is None else valid & mask


def _weighted_sum(coef: Array, s: Array) -> Array:
    # sum_c coef_c * s_c, with coef_c == 0 contributing 0 even where s_c = -inf.
    return jnp.sum(cm.safe_mul(coef, s), axis=-1)


# --------------------------------------------------------------------------
# Integer labels
# --------------------------------------------------------------------------


def _int_rows(x, labels, weight, mask, ignore_index, eps, cap):
    """Row quantities that do not need the logits' tangent.

    Returns ``s`` (soft-capped float32 logits), ``shift`` and ``log_sum``
    (``lse = shift + log_sum``, both 0 on rows that do not count), the clipped
    label ``safe``, the label's weight ``w_y`` (0 where the row does not
    count), the smoothing coefficient per class weight ``e = eps / K`` (0 where
    the row does not count), ``bad`` (label out of range on a counted row) and
    ``active`` (the row counts: not ignored, some class allowed and not -inf).
    """
    num_classes = x.shape[-1]

    def remake():
        return _masked(_softcap(_upcast(x), cap), mask)

    s = _softcap(_upcast(x), cap)
    sm = _masked(s, mask)
    safe = jnp.clip(labels, 0, num_classes - 1)
    in_range = (labels >= 0) & (labels < num_classes)
    active = jnp.ones(labels.shape, jnp.bool_)
    if ignore_index is not None:
        active &= labels != ignore_index
    sm_y = _label_logit(x, safe, cap)
    if mask is not None:
        allowed = jnp.take_along_axis(mask, safe[..., None], axis=-1)[..., 0]
        sm_y = jnp.where(allowed, sm_y, _NEG_INF)
    shift, log_sum = _logsumexp_from_label(sm, sm_y, ~active, remake)
    # A row with no allowed class (all masked or all -inf) has lse = -inf and
    # contributes 0; a NaN logit keeps its row active so the NaN propagates.
    active &= log_sum != _NEG_INF
    w_y = jnp.ones(labels.shape, s.dtype) if weight is None else weight[safe].astype(s.dtype)
    w_y = jnp.where(active, w_y, jnp.zeros_like(w_y))
    bad = active & ~in_range
    if eps > 0.0:
        k = jnp.sum(_valid_classes(s, mask), axis=-1).astype(s.dtype)
        e = jnp.where(active, eps / jnp.maximum(k, 1.0), jnp.zeros_like(k))
    else:
        e = None
    shift = jnp.where(active, shift, jnp.zeros_like(shift))
    log_sum = jnp.where(active, log_sum, jnp.zeros_like(log_sum))
    return s, shift, log_sum, safe, w_y, e, bad, active


def _class_weights(weight, s):
    # Broadcast explicitly: the package must work under jax_numpy_rank_promotion="raise".
    if weight is None:
        return jnp.ones(s.shape, s.dtype)
    return jnp.broadcast_to(weight.astype(s.dtype), s.shape)


def _label_logit(x: Array, safe: Array, cap: float | None) -> Array:
    # Gathered from the caller's buffer and widened afterwards: gathering from the
    # widened array would share it between two consumers, and XLA would then
    # materialise the float32 copy of bf16 logits.
    return _softcap(_upcast(jnp.take_along_axis(x, safe[..., None], axis=-1)[..., 0]), cap)


def _int_loss_from_rows(x, s, shift, log_sum, safe, w_y, e, bad, active, weight, mask, eps, z, cap):
    s_y = _label_logit(x, safe, cap)
    s_y = jnp.where(active, s_y, jnp.zeros_like(s_y))
    # CE = logsumexp(s) - s[y] = log_sum + (shift - s[y]); exact when s[y] is the shift
    loss = cm.safe_mul((1.0 - eps) * w_y, log_sum + (shift - s_y))
    if e is not None:
        coef = jnp.where(_valid_classes(s, mask), e[..., None] * _class_weights(weight, s), 0.0)
        loss = loss + _gap_sum(coef, shift, log_sum, s)
    if z > 0.0:
        lse = shift + log_sum
        loss = loss + z * w_y * lse * lse  # PaLM z-loss
    return jnp.where(bad, jnp.full_like(loss, jnp.nan), loss)


def _int_coeffs(x, shift, log_sum, safe, w_y, e, bad, active, weight, mask, eps, z, cap):
    """dloss/dx for every element: softmax * A - q (times the softcap slope)."""
    x = _upcast(x)
    s = _softcap(x, cap)
    # Rows that do not count have p = 0 and A = q = 0, so their gradient is exactly 0.
    p = _softmax_from_parts(_masked(s, mask), shift, log_sum, active)
    a = (1.0 - eps) * w_y + 2.0 * z * w_y * (shift + log_sum)
    classes = lax.broadcasted_iota(safe.dtype, s.shape, s.ndim - 1)
    q = jnp.where(classes == safe[..., None], ((1.0 - eps) * w_y)[..., None], 0.0)
    if e is not None:
        cw = _class_weights(weight, s)
        valid = _valid_classes(s, mask)
        if weight is None:
            # sum_c [c valid] eps / K = eps on every counted row: no pass over classes.
            a = a + jnp.where(active, eps, 0.0)
        else:
            a = a + e * jnp.sum(jnp.where(valid, cw, 0.0), axis=-1)
        q = q + jnp.where(valid, e[..., None] * cw, 0.0)
    a = jnp.where(bad, jnp.full_like(a, jnp.nan), a)
    g = jnp.where(active[..., None], p * a[..., None] - q, 0.0)
    if cap is not None:
        g = g * _softcap_slope(x, cap)
    return g


def _int_tangent(x, shift, log_sum, safe, w_y, e, bad, active, weight, mask, dx, eps, z, cap):
    g = _int_coeffs(x, shift, log_sum, safe, w_y, e, bad, active, weight, mask, eps, z, cap)
    return jnp.sum(g * dx.astype(g.dtype), axis=-1)


def _int_forward(x, labels, weight, mask, ignore_index, eps, z, cap):
    """Per-row loss and the row's share of the mean's divisor (``w[y]``, 0 when
    the row is ignored or has no allowed class), from one pass over ``x``."""
    rows = _int_rows(x, labels, weight, mask, ignore_index, eps, cap)
    return _int_loss_from_rows(x, *rows, weight, mask, eps, z, cap), rows[4]


@partial(jax.custom_jvp, nondiff_argnums=(4, 5, 6, 7))
def _ce_int(x, labels, weight, mask, ignore_index, eps, z, cap):
    return _int_forward(x, labels, weight, mask, ignore_index, eps, z, cap)


@partial(_ce_int.defjvp, symbolic_zeros=True)
def _ce_int_jvp(ignore_index, eps, z, cap, primals, tangents):
    x, labels, weight, mask = primals
    dx, _, dweight, _ = tangents
    s, shift, log_sum, safe, w_y, e, bad, active = _int_rows(
        x, labels, weight, mask, ignore_index, eps, cap
    )
    loss = _int_loss_from_rows(
        x, s, shift, log_sum, safe, w_y, e, bad, active, weight, mask, eps, z, cap
    )
    if cm.is_zero(dx):
        dloss = jnp.zeros_like(loss)
    else:
        # Recomputed in the backward pass: residuals are x and row scalars.
        tangent = jax.checkpoint(partial(_int_tangent, eps=eps, z=z, cap=cap))
        dloss = tangent(x, shift, log_sum, safe, w_y, e, bad, active, weight, mask, dx)
    dden = jnp.zeros_like(w_y)
    if not cm.is_zero(dweight):
        # Rare path (learning class weights): autodiff of the plain forward (not of
        # _ce_int itself, whose rule would call this branch again without end).
        def of_weight(w):
            return _int_forward(x, labels, w, mask, ignore_index, eps, z, cap)

        dloss_w, dden = jax.jvp(of_weight, (weight,), (dweight,))[1]
        dloss = dloss + dloss_w
    return (loss, w_y), (dloss, dden)


# --------------------------------------------------------------------------
# Probability labels
# --------------------------------------------------------------------------


def _prob_rows(x, labels, mask, eps):
    """Upcast logits, ``(shift, log_sum)`` (0 on an empty row), the smoothed
    targets ``t`` and ``nonempty`` (some class allowed and not -inf)."""
    x = _upcast(x)
    sm = _masked(x, mask)
    shift, log_sum = _logsumexp_parts(sm)
    nonempty = log_sum != _NEG_INF
    log_sum = jnp.where(nonempty, log_sum, jnp.zeros_like(log_sum))
    t = labels.astype(x.dtype)
    if mask is not None:
        t = jnp.where(mask, t, jnp.zeros_like(t))
    if eps > 0.0:
        valid = _valid_classes(x, mask)
        k = jnp.maximum(jnp.sum(valid, axis=-1).astype(x.dtype), 1.0)
        t = (1.0 - eps) * t + jnp.where(valid, eps / k[..., None], 0.0)
    return x, shift, log_sum, nonempty, t


def _prob_loss(x, shift, log_sum, t, z):
    # CE = sum_c t_c (lse - x_c), each gap formed as log_sum + (shift - x_c)
    loss = _gap_sum(t, shift, log_sum, x)
    if z > 0.0:
        total = jnp.sum(t, axis=-1)
        lse = shift + log_sum
        loss = loss + z * jnp.where(total != 0, lse * lse, 0.0)
    return loss


def _prob_tangent(x, shift, log_sum, nonempty, labels, mask, dx, eps, z):
    x, _, _, _, t = _prob_rows(x, labels, mask, eps)
    p = _softmax_from_parts(_masked(x, mask), shift, log_sum, nonempty)
    total = jnp.sum(t, axis=-1)
    a = total + 2.0 * z * jnp.where(total != 0, shift + log_sum, 0.0)
    g = p * a[..., None] - t
    return jnp.sum(g * dx.astype(g.dtype), axis=-1)


def _prob_forward(x, labels, mask, eps, z):
    xu, shift, log_sum, _, t = _prob_rows(x, labels, mask, eps)
    return _prob_loss(xu, shift, log_sum, t, z)


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _ce_prob(x, labels, mask, eps, z):
    return _prob_forward(x, labels, mask, eps, z)


@partial(_ce_prob.defjvp, symbolic_zeros=True)
def _ce_prob_jvp(eps, z, primals, tangents):
    x, labels, mask = primals
    dx, dlabels, _ = tangents
    xu, shift, log_sum, nonempty, t = _prob_rows(x, labels, mask, eps)
    loss = _prob_loss(xu, shift, log_sum, t, z)
    if cm.is_zero(dx):
        dloss = jnp.zeros_like(loss)
    else:
        tangent = jax.checkpoint(partial(_prob_tangent, eps=eps, z=z))
        dloss = tangent(x, shift, log_sum, nonempty, labels, mask, dx)
    if not cm.is_zero(dlabels):
        # Distillation differentiates the targets too. Written out rather than
        # autodiffed: the forward's zero-target guard would drop the classes whose
        # target is 0, whose slope is lse - x_c like any other's.
        tangent = jax.checkpoint(partial(_prob_label_tangent, eps=eps))
        dloss = dloss + tangent(x, shift, log_sum, mask, dlabels)
    return loss, dloss


def _prob_label_tangent(x, shift, log_sum, mask, dlabels, eps):
    """``(1 - eps) sum_c (lse - x_c) dt_c`` over the allowed classes.

    ``-inf`` logits count as masked (slope 0), as everywhere in this module; the
    z-loss term does not depend on the targets.
    """
    x = _upcast(x)
    gap = log_sum[..., None] + (shift[..., None] - x)
    gap = jnp.where(_valid_classes(x, mask), gap, jnp.zeros_like(gap))
    return (1.0 - eps) * jnp.sum(gap * dlabels.astype(x.dtype), axis=-1)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def _prepare_logits(logits, axis, where, name="logits"):
    x = cm.as_float_array(logits, name)
    ax = cm.normalize_axis(axis, x.ndim)
    mask = cm.as_mask(where, x.shape, name)
    x = jnp.moveaxis(x, ax, -1)
    if mask is not None:
        mask = jnp.moveaxis(mask, ax, -1)
    return x, mask


def _prepare_int_labels(labels, x, axis, logits_shape, name="labels"):
    y = cm.as_int_array(labels, name)
    if y.shape != x.shape[:-1]:
        raise ValueError(
            f"{name} must have the shape of logits without the class axis (axis={axis}); "
            f"got {name}.shape={y.shape} for logits.shape={logits_shape}, expected {x.shape[:-1]}."
        )
    return y


def _prepare_class_weight(weight, num_classes):
    if weight is None:
        return None
    w = cm.as_float_array(weight, "weight")
    if w.shape != (num_classes,):
        raise ValueError(f"weight must have shape ({num_classes},), one per class; got {w.shape}.")
    return w


def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
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
      raise ``ValueError`` when concrete; under ``jit`` the row's loss and
      gradient are NaN and ``checkify.checkify`` reports the label check.

    References:
      ``torch.nn.functional.cross_entropy``;
      ``optax.softmax_cross_entropy_with_integer_labels``.
    """
    x, mask = _prepare_logits(logits, axis, where)
    y = _prepare_int_labels(labels, x, axis, jnp.shape(logits))
    cm.check_reduction(reduction)
    ignore_index = cm.static_int(ignore_index, "ignore_index")
    eps = cm.static_float(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    z = cm.static_float(z_loss, "z_loss", low=0.0)
    cap = cm.static_float(logit_softcap, "logit_softcap", low=0.0, low_open=True, allow_none=True)
    num_classes = x.shape[-1]
    w = _prepare_class_weight(weight, num_classes)
    cm.check_labels_in_range(y, num_classes, ignore_index)
    loss, divisor = _ce_int(x, y, w, mask, ignore_index, eps, z, cap)
    return cm.reduce_loss(loss, reduction, divisor if reduction == "mean" else None)


def _active_rows(y, rows, ignore_index):
    """Rows that count: not ``ignore_index`` and (when ``rows`` is given) not empty."""
    active = jnp.ones(y.shape, jnp.bool_) if rows is None else rows
    if ignore_index is not None:
        active &= y != ignore_index
    return active


def _counted_weight(y, w, rows, ignore_index, dtype):
    """Each row's share of the mean's divisor: w[y], 0 where ignored or empty."""
    safe = y if w is None else jnp.clip(y, 0, w.shape[0] - 1)
    den = jnp.ones(y.shape, dtype) if w is None else w.astype(dtype)[safe]
    return jnp.where(_active_rows(y, rows, ignore_index), den, jnp.zeros_like(den))


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
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
      labels: class probabilities (or any non-negative targets), the shape of
        ``logits``. Differentiable: the gradient with respect to the labels is
        :math:`(1-\varepsilon)(\mathrm{lse} - x)`, as used in distillation.
      axis: the class axis.
      where: boolean mask broadcastable to ``logits``; masked classes are left
        out of the softmax and of the sum (optax's ``where``).
      label_smoothing: :math:`\varepsilon \in [0, 1]` spread over the ``K``
        allowed classes.
      z_loss: coefficient of the :math:`\mathrm{lse}^2` term.
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
    x, mask = _prepare_logits(logits, axis, where)
    t = cm.as_float_array(labels, "labels")
    ax = cm.normalize_axis(axis, t.ndim) if t.ndim == x.ndim else None
    if ax is None or t.shape != jnp.shape(logits):
        raise ValueError(
            "labels must be class probabilities with the shape of logits; got "
            f"labels.shape={t.shape}, logits.shape={jnp.shape(logits)}. "
            "For class indices use softmax_cross_entropy_with_integer_labels."
        )
    t = jnp.moveaxis(t, ax, -1)
    cm.check_reduction(reduction)
    eps = cm.static_float(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    z = cm.static_float(z_loss, "z_loss", low=0.0)
    dtype = cm.compute_dtype(x, t)
    # The labels keep their dtype: the rule widens them with the logits, so a
    # float32 target is never rounded to bf16 and no converted copy is saved.
    loss = _ce_prob(x, t, mask, eps, z)
    if reduction != "mean" or mask is None:
        return cm.reduce_loss(loss, reduction)
    return cm.reduce_loss(loss, reduction, jnp.any(mask, axis=-1).astype(dtype))


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
    lp, _ = _prepare_logits(log_probs, axis, None, "log_probs")
    y = _prepare_int_labels(labels, lp, axis, jnp.shape(log_probs))
    cm.check_reduction(reduction)
    ignore_index = cm.static_int(ignore_index, "ignore_index")
    num_classes = lp.shape[-1]
    w = _prepare_class_weight(weight, num_classes)
    cm.check_labels_in_range(y, num_classes, ignore_index)
    dtype = cm.compute_dtype(lp)
    lp = lp.astype(dtype)
    den = _counted_weight(y, w, None, ignore_index, dtype)
    safe = jnp.clip(y, 0, num_classes - 1)
    picked = jnp.take_along_axis(lp, safe[..., None], axis=-1)[..., 0]
    counted = den != 0
    # A zero weight (or an ignored row) gives 0 even where log_probs is -inf.
    loss = jnp.where(counted, -den * jnp.where(counted, picked, 0.0), 0.0)
    # Out of range under jit: NaN, whatever the weight of the clipped class.
    bad = ((y < 0) | (y >= num_classes)) & _active_rows(y, None, ignore_index)
    loss = jnp.where(bad, jnp.nan, loss)
    if reduction != "mean":
        return cm.reduce_loss(loss, reduction)
    return cm.reduce_loss(loss, reduction, den)

"""Focal losses (sigmoid and softmax) with closed-form derivative rules.

Notation: ``p = sigmoid(x)``, ``q = 1 - p``, labels ``y`` in [0, 1] (soft
labels allowed), ``u = 1 - p_t = (1 - y) p + y q`` and
``ce = y sp(-x) + (1 - y) sp(x)`` (``sp`` is softplus). The focal loss is
``alpha_t ce u^gamma`` with ``alpha_t = alpha y + (1 - alpha)(1 - y)``.

Everything is computed in log space: ``log p = log_sigmoid(x)``,
``log q = log_sigmoid(-x)`` and ``log u`` as a two-term log-sum-exp of
``log(1 - y) + log p`` and ``log y + log q`` (for hard labels this is
``log_sigmoid`` of the signed logit). With the mixture weights
``w_a = (1 - y) p / u`` and ``w_b = y q / u`` (both in [0, 1]):

    dL/dx = alpha_t u^gamma [(p - y) + gamma ce (1 - 2y) (w_a q + w_b p)]
    dL/dy = alpha_t u^gamma [-x + gamma (q - p) (w_a h(x) + w_b h(-x))]
            + (2 alpha - 1) ce u^gamma,          h(z) = sp(z) / sigmoid(z)

Every factor is bounded, so ``gamma`` in (0, 1) and logits of any magnitude
give finite derivatives (``u^(gamma - 1)`` never appears on its own).

The softmax focal loss reduces to the same function of one margin per row:
with ``d = x_y - logsumexp_{c != y} x_c`` we have ``log p_y = log_sigmoid(d)``
and ``log(1 - p_y) = log_sigmoid(-d)``, so the loss is
``alpha_y sp(-d) sigmoid(-d)^gamma`` and, with ``D = dL/dd`` and ``p'`` the
softmax over the other classes, ``dL/dx_c = D ([c == y] - [c != y] p'_c)``.

Both rules are ``custom_jvp`` with tangents linear in the input tangents and
coefficients recomputed under ``jax.checkpoint``: reverse mode keeps only the
inputs (plus two scalars per row for the softmax loss: the margin and the
logsumexp of the other classes).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxloss import _common as cm
from jaxloss import _softmax as sm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array


# --------------------------------------------------------------------------
# Scalar pieces
# --------------------------------------------------------------------------


def _finite(x: Array, bound: float | None = None) -> Array:
    # +-inf -> +-float max: the limits of every derivative formula below are
    # then reached without inf * 0.
    big = jnp.finfo(x.dtype).max if bound is None else bound
    return jnp.clip(x, -big, big)


# Beyond |x| = 1000 every factor of the slopes w.r.t. the logits is saturated
# (exp(-1000) is 0 even in float64), so clipping there changes no slope and keeps
# their own derivatives (Hessians) free of float-max * 0 products.
_SATURATED = 1e3


def _safe_log(a: Array) -> Array:
    # log(a) for a >= 0, with log(0) = -inf and a zero derivative there.
    pos = a > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, a, jnp.ones_like(a))), -jnp.inf)


def _pow_gamma(log_u: Array, gamma: float | Array) -> Array:
    # u^gamma = exp(gamma log u); u^0 = 1 even where u = 0
    if isinstance(gamma, float):
        return jnp.ones_like(log_u) if gamma == 0.0 else jnp.exp(gamma * log_u)
    # traced gamma: d/dgamma u^gamma = log(u) u^gamma, taken as 0 where u = 0
    finite = log_u > -jnp.inf
    ug = jnp.exp(gamma * jnp.where(finite, log_u, 0.0))
    return jnp.where(finite, ug, jnp.where(gamma == 0, 1.0, 0.0))


def _h(z: Array) -> Array:
    """``softplus(z) / sigmoid(z)``, finite for every finite ``z`` (-> 1 as z -> -inf)."""
    t = jnp.exp(-jnp.abs(z))
    tail = jnp.log1p(t)
    # z >= 0: sp(z) (1 + e^-z); z < 0: log1p(t) / t * (1 + t) with t = e^z
    tiny = t < 1e-6
    t_safe = jnp.where(tiny, jnp.ones_like(t), t)
    ratio = jnp.where(tiny, 1.0 - 0.5 * t, tail / t_safe)
    return jnp.where(z >= 0, (z + tail) * (1.0 + t), ratio * (1.0 + t))


# --------------------------------------------------------------------------
# Sigmoid focal loss
# --------------------------------------------------------------------------


def _sigmoid_parts(x, y, bound=None):
    """p, q, log u, w_a, w_b and ce of ``x`` clipped to +-``bound`` (float max by default)."""
    x = _finite(x, bound)
    e = jnp.exp(-jnp.abs(x))
    tail = jnp.log1p(e)
    log_p = jnp.minimum(x, 0.0) - tail  # log sigmoid(x)
    log_q = jnp.minimum(-x, 0.0) - tail  # log (1 - sigmoid(x)) = log_sigmoid(-x)
    inv = 1.0 / (1.0 + e)
    p = jnp.where(x >= 0, inv, e * inv)
    q = jnp.where(x >= 0, e * inv, inv)
    # log u = log((1 - y) p + y q), a two-term log-sum-exp shifted by its max
    m = lax.stop_gradient(jnp.maximum(_safe_log(1.0 - y) + log_p, _safe_log(y) + log_q))
    # The weights stay outside the exponent so that derivatives in y are exact
    # at y = 0 and y = 1; the cap only bites on a zero weight (exp(x) overflow).
    cap = float(np.log(jnp.finfo(x.dtype).max)) - 1.0
    ea = (1.0 - y) * jnp.exp(jnp.minimum(log_p - m, cap))
    eb = y * jnp.exp(jnp.minimum(log_q - m, cap))
    total = ea + eb
    log_u = m + jnp.log(total)
    w_a, w_b = ea / total, eb / total
    ce = -(y * log_p + (1.0 - y) * log_q)
    return p, q, log_u, w_a, w_b, ce


def _alpha_t(y, alpha):
    return None if alpha is None else alpha * y + (1.0 - alpha) * (1.0 - y)


def _sigmoid_forward(x, y, alpha, gamma):
    x = x.astype(cm.compute_dtype(x))
    y = y.astype(x.dtype)
    # ce of the unclipped logits: an infinite logit with a disagreeing label is inf.
    tail = jnp.log1p(jnp.exp(-jnp.abs(x)))
    sp_pos = jnp.maximum(x, 0.0) + tail  # -log(1 - sigmoid(x))
    sp_neg = jnp.maximum(-x, 0.0) + tail  # -log sigmoid(x)
    ce = cm.safe_mul(y, sp_neg) + cm.safe_mul(1.0 - y, sp_pos)
    log_u = _sigmoid_parts(x, y)[2]
    loss = ce * _pow_gamma(log_u, gamma)  # FL = ce (1 - p_t)^gamma
    a_t = _alpha_t(y, alpha)
    loss = loss if a_t is None else cm.safe_mul(a_t, loss)  # alpha_t = 0 gives 0, even at inf
    # Exactly 0 where the cross-entropy is. Ending in a select also keeps XLA:CPU
    # (jax 0.10.2) from splitting this expression around the reduction that
    # follows: value_and_grad of the sum keeps one [N, C] float32 temporary with
    # it and nine without; pinned by tests/test_workarounds.py::test_focal_select.
    return jnp.where(ce == 0, 0.0, loss)


def _sigmoid_tangent_x(res, args, dx):
    x, y, alpha, gamma = args
    x = x.astype(cm.compute_dtype(x))
    y = y.astype(x.dtype)
    a_t = _alpha_t(y, alpha)
    p, q, log_u, w_a, w_b, ce = _sigmoid_parts(x, y, _SATURATED)
    ug = _pow_gamma(log_u, gamma)
    # dFL/dx = u^g [(p - y) + g ce (1 - 2y) pq/u],  pq/u = w_a q + w_b p
    g = ug * ((p - y) + gamma * (1.0 - 2.0 * y) * (ce * (w_a * q + w_b * p)))
    return (g if a_t is None else a_t * g) * dx.astype(x.dtype)


def _sigmoid_tangent_y(res, args, dy):
    x, y, alpha, gamma = args
    x = x.astype(cm.compute_dtype(x))
    y = y.astype(x.dtype)
    # linear in x for large |x|: the full range is needed here
    p, q, log_u, w_a, w_b, ce = _sigmoid_parts(x, y)
    ug = _pow_gamma(log_u, gamma)
    xf = _finite(x)
    # dFL/dy = u^g [-x + g (q - p) ce/u],  ce/u = w_a h(x) + w_b h(-x)
    g = ug * (-xf + gamma * (q - p) * (w_a * _h(xf) + w_b * _h(-xf)))
    if alpha is not None:
        g = _alpha_t(y, alpha) * g + (2.0 * alpha - 1.0) * ce * ug
    return g * dy.astype(x.dtype)


_sigmoid_focal = cm.linear_rule(
    lambda x, y, alpha, gamma: (_sigmoid_forward(x, y, alpha, gamma), None),
    {0: _sigmoid_tangent_x, 1: _sigmoid_tangent_y},
    traceable_argnums=(3,),
)


def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Array:
    r"""Sigmoid focal loss, elementwise (binary and multi-label).

    .. math::
        \ell = \alpha_t\, (1 - p_t)^\gamma\, \mathrm{CE}(x, y),
        \qquad p_t = p\,y + (1-p)(1-y),\quad p = \sigma(x),
        \qquad \alpha_t = \alpha y + (1-\alpha)(1-y)

    where :math:`\mathrm{CE}` is the binary cross-entropy with logits. The
    modulating factor is computed in log space,
    :math:`\log(1-p_t) = \log\sigma(\mp x)` for hard labels, and the closed-form
    derivative never forms :math:`(1-p_t)^{\gamma-1}` on its own, so logits of
    any magnitude and :math:`\gamma \in (0, 1)` give finite values, gradients
    and Hessians.

    Args:
      logits: float scores of any shape.
      labels: targets in [0, 1] (float, int or bool; soft labels allowed),
        broadcastable to ``logits``. Differentiable.
      alpha: optional weight of the positive class in [0, 1] (scalar or
        broadcastable to ``logits``); ``None`` applies no weighting (optax's
        default; torchvision's default is 0.25).
      gamma: focusing exponent :math:`\gamma \ge 0`; ``0`` gives the plain BCE.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      Elementwise loss with the shape of ``logits`` (float32 for bf16/f16
      inputs), or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([2.0, -1.0, 0.5], dtype=jnp.float32)
      >>> jaxloss.sigmoid_focal_loss(x, jnp.array([1.0, 0.0, 0.0], dtype=jnp.float32))
      Array([0.00180356, 0.02265805, 0.3774116 ], dtype=float32)

    Note:
      An infinite logit agreeing with its hard label gives loss 0 and gradient
      0; a disagreeing one gives loss ``inf`` and a finite gradient. Nothing is
      NaN for labels in [0, 1]. Labels are not checked to lie in [0, 1].

    References:
      Lin et al., *Focal Loss for Dense Object Detection*, 2017;
      ``torchvision.ops.sigmoid_focal_loss``; ``optax.sigmoid_focal_loss``.
    """
    x = cm.as_float_array(logits, "logits")
    y = cm.as_numeric_array(labels, "labels")
    y = cm.broadcast_to_shape(y, x.shape, "labels", "logits")
    red = cm.Reduction.of(reduction)
    dtype = cm.compute_dtype(x)
    g = cm.hyperparameter(gamma, "gamma", low=0.0, dtype=dtype)
    a = None
    if alpha is not None:
        a = cm.as_float_array(alpha, "alpha")
        if a.ndim:  # a scalar stays a scalar (no [N] copy kept for the backward pass)
            a = cm.broadcast_to_shape(a, x.shape, "alpha", "logits")
        if cm.is_concrete(a) and not (((av := jax.device_get(a)) >= 0) & (av <= 1)).all():
            raise ValueError("alpha must lie in [0, 1] (no NaN).")
        a = a.astype(dtype)
    # x and y stay in the caller's dtypes: the rule widens them, so the residuals are
    # the caller's buffers and the gradient comes back in the input dtype.
    return red(_sigmoid_focal(x, y, a, g))


# --------------------------------------------------------------------------
# Softmax focal loss
# --------------------------------------------------------------------------


class _FocalOpts(NamedTuple):
    ignore_index: int | None


def _margin_rows(x, labels, ignore_index):
    """Per row, from the softmax core: the margin ``d = s_y - lse_{c != y}(s)``
    formed as ``(s_y - S') - log_sum'`` (exact for logits of any magnitude; ``+inf``
    on rows that do not count), the other classes' ``(S', log_sum')`` (0 when
    there are none), the label facts and whether the row counts."""
    s = sm.upcast(x)
    info = sm.labels_info(labels, x.shape[-1], ignore_index)
    block = sm.block_stats(s, _others(s, info), None, None, dense=False, gscale=1.0)
    s_y = sm.upcast(sm.label_logit(x, info.safe))
    counted = info.active & ((block.total > 0) | (s_y != -jnp.inf))
    # no other class (C = 1 or all -inf): log_sum' = -inf, d = +inf, loss 0
    d = jnp.where(counted, (s_y - block.shift) - _safe_log(block.total), jnp.inf)
    log_sum = jnp.where(block.total > 0, _safe_log(block.total), 0.0)
    return d, block.shift, log_sum, info, counted


def _others(s, info: sm.Labels):
    # [..., C] mask of the classes other than the label
    return lax.broadcasted_iota(info.safe.dtype, s.shape, s.ndim - 1) != info.safe[..., None]


def _margin_loss(d, gamma):
    # -log p_y = sp(-d),  1 - p_y = sigmoid(-d)
    return jax.nn.softplus(-d) * _pow_gamma(jax.nn.log_sigmoid(-d), gamma)


def _margin_slope(d, gamma):
    # dFL/dd = -sigmoid(-d)^g [sigmoid(-d) + g sigmoid(d) sp(-d)]
    d = _finite(d, _SATURATED)
    s_neg = jax.nn.sigmoid(-d)
    return -_pow_gamma(jax.nn.log_sigmoid(-d), gamma) * (
        s_neg + gamma * jax.nn.sigmoid(d) * jax.nn.softplus(-d)
    )


def _row_scale(info: sm.Labels, alpha, counted, dtype):
    """``alpha_y`` (1 without alpha), 0 where the row does not count."""
    if alpha is None:
        a = jnp.ones(info.safe.shape, dtype)
    elif alpha.ndim == 0:
        a = jnp.broadcast_to(alpha.astype(dtype), info.safe.shape)
    else:
        a = cm.take_per_row(alpha.astype(dtype), info.safe)
    return jnp.where(counted, a, jnp.zeros_like(a))


def _softmax_focal_forward(x, labels, alpha, gamma, opts: _FocalOpts):
    """``((loss, share), (d, S', log_sum'))``; ``share`` is 1 on counted rows."""
    d, shift, log_sum, info, counted = _margin_rows(x, labels, opts.ignore_index)
    scale = _row_scale(info, alpha, counted, d.dtype)
    loss = jnp.where(counted, _margin_loss(jnp.where(counted, d, 0.0), gamma), 0.0)
    loss = cm.safe_mul(scale, loss)
    # Out of range under jit: NaN loss; the tangent rule gives the row a zero gradient.
    loss = jnp.where(info.bad, jnp.full_like(loss, jnp.nan), loss)
    return (loss, counted.astype(d.dtype)), (d, shift, log_sum)


def _softmax_focal_tangent_x(res, args, dx):
    d, shift, log_sum = res
    x, labels, alpha, gamma, opts = args
    s = sm.upcast(x)
    info = sm.labels_info(labels, x.shape[-1], opts.ignore_index)
    # rows that do not count have d = +inf; out-of-range rows: NaN loss, zero gradient
    counted = (d != jnp.inf) & ~info.bad
    d = jnp.where(counted, d, 0.0)
    slope = _row_scale(info, alpha, counted, s.dtype) * _margin_slope(d, gamma)
    zero = jnp.zeros_like(d)
    others = _others(s, info)
    # dd/dx_c = [c == y] - [c != y] p'_c, p' the softmax over the other classes
    p_o = sm.probs(s, others, sm.Rows(shift, log_sum, zero, zero, zero, counted))
    g = slope[..., None] * jnp.where(others, -p_o, 1.0)
    dloss = jnp.sum(g * dx.astype(s.dtype), axis=-1)
    return dloss, jnp.zeros_like(dloss)


_softmax_focal = cm.linear_rule(
    _softmax_focal_forward,
    {0: _softmax_focal_tangent_x},
    static_argnums=(4,),
    traceable_argnums=(3,),
)


def softmax_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    gamma: float = 2.0,
    axis: int = -1,
    ignore_index: int | None = None,
    reduction: str = "none",
) -> Array:
    r"""Softmax focal loss with integer class labels.

    .. math::
        \ell_i = -\alpha_{y_i} (1 - p_{i,y_i})^\gamma \log p_{i,y_i},
        \qquad p_i = \mathrm{softmax}(x_i)

    computed from the margin :math:`d = x_y - \mathrm{lse}_{c \ne y}(x_c)`:
    :math:`\log p_y = \log\sigma(d)` and :math:`\log(1-p_y) = \log\sigma(-d)`,
    so a confident row keeps full precision in :math:`1 - p_y`. The gradient is
    the closed form :math:`D\,([c=y] - [c \ne y]\, p'_c)` with :math:`D =
    \partial\ell/\partial d` and :math:`p'` the softmax over the other classes;
    reverse mode keeps only the logits, labels and two scalars per row.

    Args:
      logits: unnormalized scores, any float dtype; the class axis is ``axis``.
      labels: integer class ids with the shape of ``logits`` minus ``axis``.
      alpha: optional scalar or per-class ``[C]`` weight :math:`\alpha_{y}`
        (a multiplier of each example's loss).
      gamma: focusing exponent :math:`\gamma \ge 0`; ``0`` is the softmax
        cross-entropy.
      axis: the class axis.
      ignore_index: label value whose rows contribute 0 and do not count.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over the rows that are
        not ignored; ``alpha`` scales the losses and does not renormalise the
        mean; 0 when every row is ignored).

    Returns:
      Per-row loss (``logits.shape`` minus ``axis``), or its reduction; float32
      for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=jnp.float32)
      >>> jaxloss.softmax_focal_loss(x, jnp.array([0, 2]))
      Array([0.00414426, 0.9635032 ], dtype=float32)

    Note:
      ``-inf`` logits on other classes get zero gradient; a ``-inf`` target
      logit gives ``inf`` with a finite gradient; a single-class row gives 0.
      Out-of-range labels raise ``ValueError`` when concrete; under ``jit``
      the row's loss is NaN and its gradient 0 (so masking the loss also
      cleans the gradient), and ``checkify.checkify`` reports the label check.

    References:
      Lin et al., *Focal Loss for Dense Object Detection*, 2017 (the
      multi-class form); ``torch.nn.functional.cross_entropy`` at ``gamma=0``.
    """
    x, _, _ = cm.prepare_logits(logits, axis, None)
    y = cm.prepare_int_labels(labels, x, axis, jnp.shape(logits))
    red = cm.Reduction.of(reduction)
    g = cm.hyperparameter(gamma, "gamma", low=0.0, dtype=cm.compute_dtype(x))
    ignore_index = cm.static_int(ignore_index, "ignore_index")
    num_classes = x.shape[-1]
    a = None
    if alpha is not None:
        a = cm.as_float_array(alpha, "alpha")
        if a.shape not in ((), (num_classes,)):
            raise ValueError(
                f"alpha must be a scalar or have shape ({num_classes},), one per class; "
                f"got {a.shape}."
            )
        if cm.is_concrete(a) and not (jax.device_get(a) >= 0).all():
            raise ValueError("alpha must be non-negative (no NaN).")
    cm.check_labels_in_range(y, num_classes, ignore_index)
    loss, share = _softmax_focal(x, y, a, g, _FocalOpts(ignore_index))
    return red(loss, share)

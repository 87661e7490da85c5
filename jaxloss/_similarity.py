"""Similarity and metric-learning losses: cosine similarity and distance,
the triplet margin loss and NT-Xent (optax's definitions).

Norms are computed on inputs scaled by their largest magnitude (exact,
since a norm is homogeneous), so neither huge nor tiny vectors overflow or
underflow the sum of squares. A zero vector has cosine similarity 0 with
everything (its unit vector is taken as 0), with finite derivatives. The
cosine has a linear-tangent rule (:func:`jaxloss._common.cosine_rows`, shared
with PyTorch's cosine embedding loss), and so has the triplet loss's distance
(its backward pass recomputes the difference of its two inputs); the rest are
plain ``jnp`` formulas.
Every transform (``jit``, ``vmap``, ``grad``, ``jvp``, ``jacfwd``,
``hessian``) applies.
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


def _hyper(value: Any, name: str, dtype: Any) -> Array:
    """A hyperparameter (Python number or array, possibly traced) in ``dtype``."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a number or a float array; got {value!r}.")
    return cm.as_numeric_array(value, name).astype(dtype)


def _common_shape(arrays: dict[str, Array]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*(a.shape for a in arrays.values())))
    except ValueError:
        shapes = ", ".join(f"{k}.shape={v.shape}" for k, v in arrays.items())
        raise ValueError(f"{', '.join(arrays)} must broadcast together; got {shapes}.") from None


def _unit(a: Array, axes: tuple[int, ...], eps: Array) -> Array:
    """``a / sqrt(max(sum(a**2), eps))`` over ``axes``, formed on ``a`` scaled by its
    largest magnitude (no overflow or underflow); 0 for a zero vector."""
    big = jax.lax.stop_gradient(cm.max_scale(a, axes)[1])
    a = a / big
    sq = jnp.sum(jnp.square(a), axis=axes, keepdims=True)
    nonzero = sq > 0  # sqrt's derivative at 0 is infinite: keep it out of every path
    norm = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)
    norm = jnp.maximum(norm, jnp.sqrt(jnp.maximum(eps, 0.0)) / big)
    return a / jnp.where(norm > 0, norm, 1.0)


def _cosine(a: Array, b: Array, epsilon: Any, axis: Any, where: Any) -> Array:
    """Checked cosine similarity in the compute dtype, reduced over ``axis``."""
    a = cm.as_float_array(a, "predictions")
    b = cm.as_float_array(b, "targets")
    dtype = cm.compute_dtype(a, b)
    shape = _common_shape({"predictions": a, "targets": b})
    a = jnp.broadcast_to(a.astype(dtype), shape)
    b = jnp.broadcast_to(b.astype(dtype), shape)
    axes = cm.class_axes(axis, len(shape), "predictions")
    mask = cm.as_mask(where, shape, "predictions")
    eps = _hyper(epsilon, "epsilon", dtype)
    if mask is not None:  # masked entries (even inf or NaN) take no part, in any derivative
        a = jnp.where(mask, a, 0.0)
        b = jnp.where(mask, b, 0.0)
    return cm.cosine_rows(a, b, eps, axes)


def cosine_similarity(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    epsilon: ArrayLike = 0.0,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    reduction: str = "none",
) -> Array:
    r"""Cosine of the angle between ``predictions`` and ``targets`` along ``axis``.

    .. math::
       \cos(a, b) = \sum_i \frac{a_i}{\max(\|a\|, \sqrt{\epsilon})}
                          \frac{b_i}{\max(\|b\|, \sqrt{\epsilon})}

    Args:
      predictions: float array ``[..., dim]``.
      targets: float array broadcastable with ``predictions``.
      epsilon: lower bound on the *squared* norms (optax's clip); may be traced.
      axis: the vector axis: an int, a tuple of ints or ``None`` (every axis).
      where: boolean mask of the entries that take part (broadcastable).
      reduction: ``"none"`` (one value per vector), ``"sum"`` or ``"mean"``.

    Returns:
      The similarities, shape of the broadcast inputs without ``axis``
      (float32 for bf16/f16 inputs), or their reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> a = jnp.array([[1.0, 0.0], [1.0, 1.0]], dtype=jnp.float32)
      >>> b = jnp.array([[0.0, 2.0], [3.0, 3.0]], dtype=jnp.float32)
      >>> jnp.round(jaxloss.cosine_similarity(a, b), 6)
      Array([0., 1.], dtype=float32)

    Note:
      optax returns NaN for a zero vector when ``epsilon == 0``; here its
      similarity is 0, with finite derivatives. Vectors of any finite
      magnitude are handled (the norm is computed on scaled values), where
      optax's squared norm overflows beyond about ``1e19`` in float32.

    References:
      ``optax.losses.cosine_similarity``;
      ``torch.nn.functional.cosine_similarity`` (which clamps the norms
      rather than their squares).
    """
    red = cm.Reduction.of(reduction)
    return red(_cosine(predictions, targets, epsilon, axis, where))


def cosine_distance(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    epsilon: ArrayLike = 0.0,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    reduction: str = "none",
) -> Array:
    r"""One minus the cosine similarity (:func:`cosine_similarity`).

    .. math:: d(a, b) = 1 - \cos(a, b)

    Args:
      predictions: float array ``[..., dim]``.
      targets: float array broadcastable with ``predictions``.
      epsilon: lower bound on the *squared* norms, as in
        :func:`cosine_similarity`; may be traced.
      axis: the vector axis (an int, a tuple of ints, or ``None`` for all).
      where: boolean mask of the entries that take part (broadcastable).
      reduction: ``"none"`` (one value per vector), ``"sum"`` or ``"mean"``.

    Returns:
      The distances, in ``[0, 2]``, or their reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> a = jnp.array([[1.0, 0.0], [1.0, 1.0]], dtype=jnp.float32)
      >>> b = jnp.array([[0.0, 2.0], [-3.0, -3.0]], dtype=jnp.float32)
      >>> jaxloss.cosine_distance(a, b, reduction="mean")
      Array(1.5, dtype=float32)

    Note:
      A zero vector is at distance 1 from everything (optax: NaN when
      ``epsilon == 0``).

    References:
      ``optax.losses.cosine_distance``; ``torch.nn.CosineEmbeddingLoss``
      uses the same distance for similar pairs.
    """
    red = cm.Reduction.of(reduction)
    return red(1.0 - _cosine(predictions, targets, epsilon, axis, where))


def _distance_forward(x, y, p, eps, axes):
    """optax's ``(sum(d**p) + eps)**(1/p)`` over ``axes`` for ``d = x - y``, computed on
    ``d`` scaled by ``s = max(1, max|d|)``: ``s * (sum((d/s)**p) + eps / s**p)**(1/p)``."""
    d = x - y
    top = jnp.max(jnp.abs(d), axis=axes, keepdims=True, initial=1.0)
    finite = jnp.isfinite(top)
    big = jnp.where(finite, top, 1.0)
    u = jnp.where(finite, d / big, jnp.zeros_like(d))  # an infinite difference: the value is max|d|
    inner = jnp.sum(jnp.power(u, p), axis=axes) + eps / jnp.power(jnp.squeeze(big, axes), p)
    # real root of the signed sum (optax's values where they are finite)
    zero = inner == 0
    mag = jnp.power(jnp.where(zero, 1.0, jnp.abs(inner)), 1.0 / p)
    root = jnp.where(zero, 0.0, jnp.sign(inner) * mag)
    # inf (or NaN) where a difference is
    dist = jnp.where(
        jnp.squeeze(finite, axes), jnp.squeeze(big, axes) * root, jnp.squeeze(top, axes)
    )
    return dist, (top, inner, mag)


def _distance_tangent(res, args, dxy):
    x, y, p, _, axes = args
    top, inner, mag = res
    d = x - y
    finite = jnp.isfinite(top)
    big = jnp.where(finite, top, 1.0)
    u = jnp.where(finite, d / big, jnp.zeros_like(d))
    # d dist / d d = u**(p-1) |inner|**(1/p - 1); 0 where the distance is 0 (no 0 * inf)
    zero = inner == 0
    scale = jnp.where(zero, 0.0, mag / jnp.where(zero, 1.0, jnp.abs(inner)))
    keep = finite & ~jnp.expand_dims(zero, axes)
    coef = jnp.where(keep, jnp.power(u, p - 1) * jnp.expand_dims(scale, axes), 0.0)
    return jnp.sum(cm.norm_slope(coef, d, top) * cm.pair_tangent(dxy), axis=axes)


# a rule on (x, y): the backward pass recomputes the difference instead of keeping it;
# p and eps (traced or not) are rarely differentiated: autodiff of the forward
_distance = cm.linear_rule(
    _distance_forward, {(0, 1): _distance_tangent}, static_argnums=(4,), traceable_argnums=(2,)
)


def triplet_margin_loss(
    anchors: ArrayLike,
    positives: ArrayLike,
    negatives: ArrayLike,
    axis: int = -1,
    norm_degree: ArrayLike = 2,
    margin: ArrayLike = 1.0,
    eps: ArrayLike = 1e-6,
    *,
    reduction: str = "none",
) -> Array:
    r"""Triplet margin loss: the anchor must be nearer the positive than the
    negative by ``margin``.

    .. math::
       d(x, y) = \Big(\sum_i (x_i - y_i)^p + \epsilon\Big)^{1/p}, \qquad
       \ell = \max\big(d(a, p) - d(a, n) + \text{margin}, 0\big)

    Args:
      anchors: float array ``[..., dim]``.
      positives: float array broadcastable with ``anchors``.
      negatives: float array broadcastable with ``anchors``.
      axis: the embedding axis (an int or a tuple of ints).
      norm_degree: the degree ``p`` (may be traced).
      margin: the margin (may be traced).
      eps: added inside the root (may be traced).
      reduction: ``"none"`` (one value per triplet), ``"sum"`` or ``"mean"``.

    Returns:
      The loss per triplet (float32 for bf16/f16 inputs), or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> a = jnp.array([[0.0, 0.0], [1.0, 1.0]], dtype=jnp.float32)
      >>> p = jnp.array([[0.0, 0.0], [1.0, 1.0]], dtype=jnp.float32)
      >>> n = jnp.array([[3.0, 4.0], [1.0, 1.5]], dtype=jnp.float32)
      >>> jaxloss.triplet_margin_loss(a, p, n, eps=0.0)
      Array([0. , 0.5], dtype=float32)

    Note:
      As in optax, ``(x - y)**p`` is a signed power: for an even integer
      ``norm_degree`` this is the p-norm; for other degrees the values are
      optax's (not a norm). With ``eps = 0`` and coinciding points the
      distance is 0 and its derivative 0 (no NaN). Differences of any finite
      magnitude are handled (the power is taken on scaled values). At the
      hinge ``d(a, p) - d(a, n) + margin = 0`` the derivative is split in
      half, as optax's ``jnp.maximum``.

    References:
      ``optax.losses.triplet_margin_loss``;
      ``torch.nn.functional.triplet_margin_loss`` (same values for
      ``p=2`` and ``eps=0``; PyTorch adds ``eps`` to the difference);
      Balntas et al., "Learning local feature descriptors with triplets and
      shallow convolutional neural networks", BMVC 2016.
    """
    red = cm.Reduction.of(reduction)
    arrays = {
        "anchors": cm.as_float_array(anchors, "anchors"),
        "positives": cm.as_float_array(positives, "positives"),
        "negatives": cm.as_float_array(negatives, "negatives"),
    }
    dtype = cm.compute_dtype(*arrays.values())
    shape = _common_shape(arrays)
    a, pos, neg = (jnp.broadcast_to(v.astype(dtype), shape) for v in arrays.values())
    axes = cm.class_axes(axis, len(shape), "anchors")
    if isinstance(norm_degree, (int, np.integer)) and not isinstance(norm_degree, bool):
        p = int(norm_degree)  # exact integer power, as optax's jnp.power(d, 2)
        if p == 0:
            raise ValueError("norm_degree must be nonzero; got 0.")
    else:
        p = _hyper(norm_degree, "norm_degree", dtype)
    e = _hyper(eps, "eps", dtype)
    m = _hyper(margin, "margin", dtype)
    loss = jnp.maximum(_distance(a, pos, p, e, axes) - _distance(a, neg, p, e, axes) + m, 0.0)
    return red(loss)


@partial(jax.jit, static_argnums=(3,))  # one compiled program per shape, also eagerly
def _ntxent_pairs(x: Array, labels: Array, tau: Array, eps: float) -> tuple[Array, Array]:
    """Per-pair losses ``[B, B]`` (0 off the positive pairs) and the positive-pair mask."""
    n = x.shape[0]
    # every pair's cosine from the unit vectors in one product: [B, B], never [B, B, D]
    u = _unit(x, (1,), eps)
    logits = jnp.matmul(u, u.T, precision=jax.lax.Precision.HIGHEST) / tau
    same = labels[:, None] == labels[None, :]
    pos = same & ~jnp.eye(n, dtype=bool)
    neg = ~same
    top = jnp.max(logits, axis=1, keepdims=True, where=pos | neg, initial=-jnp.inf)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    z = logits - top
    # masked before exp: the excluded diagonal may overflow (no inf * 0 in a derivative)
    neg_sum = jnp.sum(jnp.exp(jnp.where(neg, z, -jnp.inf)), axis=1, keepdims=True)
    has_neg = neg_sum > 0
    log_neg = jnp.log(jnp.where(has_neg, neg_sum, 1.0))
    # -log softmax of the pair against the anchor's negatives: log(sum_neg + e^z) - z
    pair = jnp.where(has_neg, jnp.logaddexp(log_neg, z) - z, 0.0)
    return jnp.where(pos, pair, 0.0), pos


def ntxent(
    embeddings: ArrayLike,
    labels: ArrayLike,
    temperature: ArrayLike = 0.07,
    *,
    reduction: str = "mean",
) -> Array:
    r"""Normalized temperature-scaled cross-entropy (NT-Xent, SimCLR).

    With :math:`s_{ij} = \cos(e_i, e_j) / \tau`, :math:`P` the ordered pairs
    :math:`i \ne j` with equal labels and :math:`N_i` the embeddings whose
    label differs from :math:`e_i`'s:

    .. math::
       \ell_{ij} = -\log \frac{e^{s_{ij}}}{e^{s_{ij}} + \sum_{k \in N_i} e^{s_{ik}}},
       \qquad \mathcal{L} = \frac{1}{|P|} \sum_{(i, j) \in P} \ell_{ij}

    Args:
      embeddings: float array ``[batch, features]``.
      labels: integer array ``[batch]``; equal labels mark positive pairs.
      temperature: :math:`\tau` (may be traced).
      reduction: ``"mean"`` (optax's scalar, the default), ``"sum"``, or
        ``"none"``: ``[batch]``, row ``i`` holding :math:`\sum_j \ell_{ij}`
        over its positives (so ``"sum"`` is their total and ``"mean"``
        divides it by :math:`|P|`).

    Returns:
      The loss (float32 for bf16/f16 inputs).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> e = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=jnp.float32)
      >>> jaxloss.ntxent(e, jnp.array([0, 0, 1]), temperature=1.0)
      Array(0.3132617, dtype=float32)

    Note:
      The cosine similarities clip the squared norms at the machine epsilon
      of ``embeddings``' dtype, as optax does; a zero embedding has
      similarity 0. A batch without any positive pair gives 0 (optax: NaN);
      an anchor without negatives contributes 0. Any temperature > 0 and
      embeddings of any finite magnitude give finite values and gradients.

    References:
      ``optax.losses.ntxent``; Chen et al., "A Simple Framework for
      Contrastive Learning of Visual Representations", ICML 2020.
    """
    red = cm.Reduction.of(reduction)
    x = cm.as_float_array(embeddings, "embeddings")
    if x.ndim != 2:
        raise ValueError(f"embeddings must have shape [batch, features]; got shape {x.shape}.")
    y = jnp.asarray(labels)
    if not (jnp.issubdtype(y.dtype, jnp.integer) or y.dtype == jnp.bool_):
        raise TypeError(f"labels must be an integer array of group ids; got dtype {y.dtype}.")
    if y.shape != x.shape[:1]:
        raise ValueError(
            f"labels must have shape [batch] = {x.shape[:1]} to match embeddings "
            f"{x.shape}; got labels.shape={y.shape}."
        )
    eps = float(jnp.finfo(x.dtype).eps)
    dtype = cm.compute_dtype(x)
    pairs, pos = _ntxent_pairs(x.astype(dtype), y, _hyper(temperature, "temperature", dtype), eps)
    return red(jnp.sum(pairs, axis=1), jnp.sum(pos, axis=1))

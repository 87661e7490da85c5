"""Sparsemax losses and Fenchel-Young losses built from a max function.

The multiclass sparsemax loss is the Fenchel-Young loss of the Gini
negentropy. With ``p = sparsemax(z)`` (the Euclidean projection of ``z`` onto
the simplex) and ``S`` its support,

    loss = sum_{j in S} p_j (z_j - z_y) + (1 - |p|^2) / 2,   d loss = <p - e_y, dz>.

The value is computed on ``z - max(z)`` (shift invariant), so huge scores stay
finite; the derivative goes through :func:`jaxloss._common.linear_rule` with
the closed form ``p - e_y``, whose own derivative (the sparsemax Jacobian) comes
from autodiff of the projection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array


def _broadcast_pair(a: Array, b: Array, name_a: str, name_b: str) -> tuple[Array, Array]:
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"{name_a} and {name_b} must broadcast together; got {name_a}.shape={a.shape} "
            f"and {name_b}.shape={b.shape}."
        ) from None
    return jnp.broadcast_to(a, shape), jnp.broadcast_to(b, shape)


def _sparse_plus(x: Array) -> Array:
    """0 for ``x <= -1``, ``(x + 1)^2 / 4`` in between, ``x`` for ``x >= 1``."""
    mid = jnp.clip(x, -1.0, 1.0)  # the quadratic never sees huge values
    return jnp.where(x <= -1.0, jnp.zeros_like(x), jnp.where(x >= 1.0, x, (mid + 1.0) ** 2 / 4))


def sparsemax_loss(logits: ArrayLike, labels: ArrayLike, *, reduction: str = "none") -> Array:
    r"""Binary sparsemax loss, the Fenchel-Young loss of the sparse sigmoid.

    .. math::
        \ell = \mathrm{sparse\_plus}(s), \quad s = \begin{cases} -x & y \ne 0 \\
        x & y = 0 \end{cases}, \quad
        \mathrm{sparse\_plus}(s) = \begin{cases} 0 & s \le -1 \\
        (s + 1)^2 / 4 & -1 < s < 1 \\ s & s \ge 1 \end{cases}

    The loss is 0 exactly when ``jax.nn.sparse_sigmoid(logits) == labels``.

    Args:
      logits: scores :math:`x`, any shape.
      labels: binary labels (0 or 1; any nonzero value counts as 1), integer,
        boolean or float, broadcastable with ``logits``.
      reduction: ``"none"`` (elementwise, optax's result), ``"sum"`` or
        ``"mean"`` (over all elements).

    Returns:
      The elementwise loss (the broadcast shape of ``logits`` and ``labels``)
      or its reduction; float32 for bf16/f16 logits.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([-2.0, 0.0, 0.5, 3.0], dtype=jnp.float32)
      >>> y = jnp.array([0, 1, 1, 0], dtype=jnp.int32)
      >>> jaxloss.sparsemax_loss(x, y)
      Array([0.    , 0.25  , 0.0625, 3.    ], dtype=float32)

    Note:
      Finite for any finite logit (the quadratic piece is evaluated on the
      clipped logit, so it never overflows); the derivative is 0 below -1 and
      1 from 1 on, as in optax. ``reduction="mean"`` divides by the number of
      elements.

    References:
      ``optax.losses.sparsemax_loss``; Blondel, Martins and Niculae, *Learning
      with Fenchel-Young Losses*, JMLR 2020, Sec. 4.4.
    """
    x = cm.as_float_array(logits, "logits")
    y = cm.as_numeric_array(labels, "labels")
    red = cm.Reduction.of(reduction)
    x, y = _broadcast_pair(x, y, "logits", "labels")
    x = x.astype(cm.compute_dtype(x))
    return red(_sparse_plus(jnp.where(y != 0, -x, x)))


def _sparsemax(z: Array) -> Array:
    """Projection of each row of ``z`` (last axis) onto the probability simplex."""
    k = z.shape[-1]
    u = jnp.flip(jnp.sort(z, axis=-1), axis=-1)
    csum = jnp.cumsum(u, axis=-1)
    ind = jnp.broadcast_to(jnp.arange(1, k + 1, dtype=z.dtype), z.shape)
    # -inf scores sort last; their cumsum is -inf, and they never enter the support
    in_support = (1.0 + ind * u > csum) & (u != -jnp.inf)
    size = jnp.maximum(jnp.sum(in_support, axis=-1), 1)
    top = jnp.take_along_axis(csum, (size - 1)[..., None], axis=-1)
    tau = (top - 1.0) / size[..., None].astype(z.dtype)
    return jnp.where(z > tau, z - tau, jnp.zeros_like(z))


def _shifted(z: Array) -> Array:
    m = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    return z - jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))


def _valid(y: Array, k: int) -> Array:
    return (y >= 0) & (y < k)


def _multiclass_forward(z, y):
    z = z.astype(cm.compute_dtype(z))
    zs = _shifted(z)
    p = _sparsemax(zs)
    k = z.shape[-1]
    ok = _valid(y, k)
    z_y = jnp.take_along_axis(zs, jnp.where(ok, y, 0)[..., None], axis=-1)
    gap = jnp.where(p > 0, zs - z_y, jnp.zeros_like(zs))  # 0 off the support, even for -inf
    loss = jnp.sum(p * gap, axis=-1) + 0.5 * (1.0 - jnp.sum(p * p, axis=-1))
    return jnp.where(ok, loss, jnp.nan), None


def _multiclass_tangent(res, args, dz):
    z, y = args
    z = z.astype(cm.compute_dtype(z))
    k = z.shape[-1]
    ok = _valid(y, k)
    g = _sparsemax(_shifted(z)) - jax.nn.one_hot(jnp.where(ok, y, 0), k, dtype=z.dtype)
    return jnp.where(ok, jnp.sum(g * dz.astype(z.dtype), axis=-1), 0.0)


_multiclass = cm.linear_rule(_multiclass_forward, {0: _multiclass_tangent})


def multiclass_sparsemax_loss(
    scores: ArrayLike, labels: ArrayLike, *, reduction: str = "none"
) -> Array:
    r"""Multiclass sparsemax loss, the Fenchel-Young loss of the Gini negentropy.

    .. math::
        \ell = \sum_{j} p_j (z_j - z_y) + \tfrac12 \left(1 - \|p\|^2\right),
        \qquad p = \mathrm{sparsemax}(z) = \operatorname*{argmin}_{q \in \Delta}
        \|q - z\|^2,

    with gradient :math:`p - e_y`. The loss is 0 exactly when
    :math:`p = e_y`.

    Args:
      scores: scores :math:`z`, shape ``[..., K]`` (classes on the last axis;
        optax takes ``[B, K]``).
      labels: integer class indices in ``[0, K)``, shape ``scores.shape[:-1]``.
      reduction: ``"none"`` (one value per example, optax's result), ``"sum"``
        or ``"mean"`` (over examples).

    Returns:
      Per-example loss ``scores.shape[:-1]`` or its reduction; float32 for
      bf16/f16 scores.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> z = jnp.array([[1.0, 0.5, -1.0], [0.0, 3.0, 0.0]], dtype=jnp.float32)
      >>> y = jnp.array([0, 2], dtype=jnp.int32)
      >>> jaxloss.multiclass_sparsemax_loss(z, y)
      Array([0.0625, 3.    ], dtype=float32)

    Note:
      Computed on ``z - max(z)``: scores of any magnitude give a finite loss.
      A ``-inf`` score is never in the support and contributes nothing; a
      label on a ``-inf`` score gives ``inf`` (the true value) with a finite
      gradient. At least one score per row must be finite. Out-of-range
      labels raise a ``ValueError`` when concrete; under ``jit`` the row's
      loss is NaN and its gradient 0.

    References:
      ``optax.losses.multiclass_sparsemax_loss``; Martins and Astudillo,
      *From Softmax to Sparsemax*, ICML 2016.
    """
    z, _, _ = cm.prepare_logits(scores, -1, None, "scores")
    y = cm.prepare_int_labels(labels, z, -1, z.shape)
    red = cm.Reduction.of(reduction)
    cm.check_labels_in_range(y, z.shape[-1], None)
    return red(_multiclass(z, y))


def make_fenchel_young_loss(
    max_fun: Callable[..., Any], *, reduction: str = "none"
) -> Callable[..., Array]:
    r"""Builds the Fenchel-Young loss of a max function (a loss factory).

    .. math::
        \ell(z, t) = \Omega^*(z) - \langle t, z \rangle

    where :math:`\Omega^*` is ``max_fun`` applied along the last axis
    (``jax.nn.logsumexp`` gives the softmax cross-entropy, ``jnp.max`` the
    perceptron loss).

    Args:
      max_fun: ``max_fun(scores_row, *args, **kwargs) -> scalar`` on a 1-D
        vector of scores.
      reduction: jaxloss's extra option for the returned loss: ``"none"``
        (optax's result), ``"sum"`` or ``"mean"`` (over examples).

    Returns:
      ``fenchel_young_loss(scores, targets, *args, **kwargs)``: ``scores`` and
      ``targets`` of shape ``[..., K]`` (leading axes broadcast), extra
      arguments passed on to ``max_fun``; returns shape ``[...]``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxloss
      >>> fy = jaxloss.make_fenchel_young_loss(jax.nn.logsumexp)
      >>> z = jnp.array([[0.0, 0.0]], dtype=jnp.float32)
      >>> t = jnp.array([[1.0, 0.0]], dtype=jnp.float32)
      >>> fy(z, t)
      Array([0.6931472], dtype=float32)

    Note:
      The loss works along the last axis for any number of leading axes
      (jaxopt flattened everything into one vector instead). Scores and
      targets in bf16/f16 are computed in float32; integer targets are cast
      to the scores' dtype. Finiteness depends on ``max_fun``: a ``-inf``
      score with a zero target gives NaN through the inner product, as in
      optax.

    References:
      ``optax.losses.make_fenchel_young_loss``; Blondel, Martins and Niculae,
      *Learning with Fenchel-Young Losses*, JMLR 2020.
    """
    if not callable(max_fun):
        raise TypeError(f"max_fun must be callable; got {max_fun!r}.")
    red = cm.Reduction.of(reduction)
    row_max = jnp.vectorize(max_fun, signature="(n)->()")

    def fenchel_young_loss(scores, targets, *args, **kwargs):
        z = cm.as_float_array(scores, "scores")
        t = cm.as_numeric_array(targets, "targets")
        if z.ndim == 0 or t.ndim == 0 or z.shape[-1] != t.shape[-1]:
            raise ValueError(
                "scores and targets need the same last (class) axis; got "
                f"scores.shape={z.shape} and targets.shape={t.shape}."
            )
        z, t = _broadcast_pair(z, t, "scores", "targets")
        dtype = cm.compute_dtype(z)
        z, t = z.astype(dtype), t.astype(dtype)
        loss = jnp.asarray(row_max(z, *args, **kwargs)) - jnp.sum(t * z, axis=-1)
        return red(loss)

    return fenchel_young_loss

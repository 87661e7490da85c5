"""Margin losses: binary hinge, squared hinge and PyTorch's multi-class hinge.

These are piecewise polynomials, so the plain formula under autodiff is
already exact and stable; ``where(z > 0, z, 0)`` gives the kink a derivative
of 0 (PyTorch's convention, and a valid subgradient). No custom rule is needed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxloss import _common as cm
from jaxloss import _softmax as sm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array


def _relu(z):
    # max(0, z) with derivative 0 at z = 0 (PyTorch's), as a select: under
    # value_and_grad XLA:CPU (jax 0.10.2) keeps one [N, C] temporary with it and two
    # with jax.nn.relu (the forward alone needs one and none); pinned by
    # tests/test_workarounds.py::test_hinge_select.
    return jnp.where(z > 0, z, 0.0)


def _prepare_pm1(scores, labels, names=("predictor_outputs", "targets")):
    x = cm.as_float_array(scores, names[0])
    y = cm.as_numeric_array(labels, names[1])
    if y.dtype == jnp.bool_:
        raise TypeError(f"{names[1]} must be -1 or 1 (int or float); got dtype bool.")
    y = cm.broadcast_to_shape(y, x.shape, names[1], names[0])
    if cm.is_concrete(y):
        host = jax.device_get(y)
        bad = (host != 1) & (host != -1)
        if bad.any():
            raise ValueError(
                f"{names[1]} must be -1 or 1; found {host[bad].flat[0]}. "
                "Map {0, 1} labels with 2 * labels - 1."
            )
    dtype = cm.compute_dtype(x)
    return x.astype(dtype), y.astype(dtype)


def hinge_loss(
    predictor_outputs: ArrayLike,
    targets: ArrayLike,
    *,
    margin: float = 1.0,
    reduction: str = "none",
) -> Array:
    r"""Binary hinge loss with labels in {-1, 1}, elementwise.

    .. math:: \ell = \max(0,\ m - y\,s)

    Args:
      predictor_outputs: float decision values of any shape.
      targets: -1 or 1 (int or float), broadcastable to ``predictor_outputs``.
      margin: :math:`m`, the margin the score must clear.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      Elementwise loss (float32 for bf16/f16 inputs) or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> s = jnp.array([-1.5, 1.2, 0.9, -0.8], dtype=jnp.float32)
      >>> jaxloss.hinge_loss(s, jnp.array([-1, 1, 1, -1]), reduction="mean")
      Array(0.075, dtype=float32)

    Note:
      At the kink :math:`y s = m` the derivative is 0 (PyTorch's ``relu``
      convention; ``optax.hinge_loss`` gives half the slope there). Concrete
      labels other than -1 and 1 raise ``ValueError``; traced ones are used
      as given.

    References:
      ``optax.hinge_loss`` (``margin=1``); Wikipedia, *Hinge loss*.
    """
    x, y = _prepare_pm1(predictor_outputs, targets)
    red = cm.Reduction.of(reduction)
    m = cm.hyperparameter(margin, "margin", dtype=x.dtype)
    return red(_relu(m - y * x))


def squared_hinge_loss(
    predictor_outputs: ArrayLike,
    targets: ArrayLike,
    *,
    margin: float = 1.0,
    reduction: str = "none",
) -> Array:
    r"""Squared hinge loss with labels in {-1, 1}, elementwise.

    .. math:: \ell = \max(0,\ m - y\,s)^2

    Args:
      predictor_outputs: float decision values of any shape.
      targets: -1 or 1 (int or float), broadcastable to ``predictor_outputs``.
      margin: :math:`m`; a score with :math:`y s \ge m` costs nothing.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      The squared hinge of each element (float32 for bf16/f16 inputs), or
      its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> s = jnp.array([-1.5, 1.2, 0.9, -0.8], dtype=jnp.float32)
      >>> jaxloss.squared_hinge_loss(s, jnp.array([-1, 1, 1, -1]))
      Array([0.  , 0.  , 0.01, 0.04], dtype=float32)

    Note:
      Differentiable everywhere (the derivative is continuous at the kink);
      the second derivative jumps from 2 to 0 there. Concrete labels other
      than -1 and 1 raise ``ValueError``.

    References:
      scikit-learn ``LinearSVC(loss="squared_hinge")``; Keras ``SquaredHinge``.
    """
    x, y = _prepare_pm1(predictor_outputs, targets)
    red = cm.Reduction.of(reduction)
    m = cm.hyperparameter(margin, "margin", dtype=x.dtype)
    # relu(z)^2: no inf * 0 in the gradient where z = -inf (an infinite score)
    return red(jnp.square(_relu(m - y * x)))


def multi_margin_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    p: int = 1,
    margin: float = 1.0,
    weight: ArrayLike | None = None,
    reduction: str = "none",
) -> Array:
    r"""PyTorch's multi-class margin loss (``MultiMarginLoss``, Weston-Watkins).

    .. math::
        \ell_i = \frac{w_{y_i}}{C} \sum_{c \ne y_i} \max(0,\ m - s_{i,y_i} + s_{i,c})^p

    Args:
      scores: float scores ``[..., C]``; the class axis is the last one.
      labels: integer class ids with the shape of ``scores`` minus the last axis.
      margin: :math:`m`.
      p: 1 or 2, the power of each hinge term.
      weight: per-class weights ``[C]``, applied by the label's class.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``. As in PyTorch the mean
        divides by the number of examples, not by the sum of ``weight``.

    Returns:
      Per-example loss (``scores.shape[:-1]``) or its reduction; float32 for
      bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> s = jnp.array([[0.1, 0.2, 0.4, 0.8]], dtype=jnp.float32)
      >>> jaxloss.multi_margin_loss(s, jnp.array([3]))
      Array([0.325], dtype=float32)

    Note:
      Not :func:`multiclass_hinge_loss`, which is optax's Crammer-Singer loss
      (the largest violation, not the sum divided by C). A term exactly at the margin has
      derivative 0, as in PyTorch. Out-of-range labels raise ``ValueError``
      when concrete; under ``jit`` the row is NaN and ``checkify`` reports it.

    References:
      ``torch.nn.functional.multi_margin_loss``; Weston and Watkins,
      *Multi-class support vector machines*, 1998.
    """
    x = cm.as_float_array(scores, "scores")
    if x.ndim == 0:
        raise ValueError("scores must have at least one dimension (the class axis); got a scalar.")
    y = cm.as_int_array(labels, "labels")
    if y.shape != x.shape[:-1]:
        raise ValueError(
            "labels must have the shape of scores without the last (class) axis; got "
            f"labels.shape={y.shape} for scores.shape={x.shape}, expected {x.shape[:-1]}."
        )
    red = cm.Reduction.of(reduction)
    m = cm.hyperparameter(margin, "margin", dtype=x.dtype)
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2 (as in PyTorch); got {p!r}.")
    num_classes = x.shape[-1]
    w = cm.prepare_class_weight(weight, num_classes)
    cm.check_labels_in_range(y, num_classes, None)
    dtype = cm.compute_dtype(x)
    x = x.astype(dtype)
    safe = jnp.clip(y, 0, num_classes - 1)
    classes = lax.broadcasted_iota(safe.dtype, x.shape, x.ndim - 1)
    target = classes == safe[..., None]
    s_y = jnp.sum(jnp.where(target, x, 0.0), axis=-1)
    z = m - s_y[..., None] + x  # max(0, m - s_y + s_c), summed over c != y
    z = jnp.where(target | (z <= 0), 0.0, z)  # before the power: no 0 * inf at a -inf score
    h = z if p == 1 else z * z
    loss = jnp.sum(h, axis=-1) / num_classes
    if w is not None:
        loss = loss * cm.take_per_row(w.astype(dtype), safe)
    bad = (y < 0) | (y >= num_classes)
    loss = jnp.where(bad, jnp.nan, loss)
    return red(loss)


def multiclass_hinge_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    reduction: str = "none",
) -> Array:
    r"""optax's multi-class hinge loss (Crammer-Singer).

    .. math:: \ell_i = \max_c \left(s_{i,c} + 1 - [c = y_i]\right) - s_{i,y_i}

    Args:
      scores: float scores ``[..., C]``; the class axis is the last one.
      labels: integer class ids with the shape of ``scores`` minus the last axis.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over examples).

    Returns:
      Per-example loss (``scores.shape[:-1]``) or its reduction; float32 for
      bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> jaxloss.multiclass_hinge_loss(jnp.array([[10.0, 3.0]], jnp.float32), jnp.array([1]))
      Array([8.], dtype=float32)

    Note:
      PyTorch's ``MultiMarginLoss`` (the sum of violations divided by C) is
      :func:`multi_margin_loss`. Ties in the maximum share the gradient, as
      ``jnp.max`` does (optax's numbers). Out-of-range labels raise
      ``ValueError`` when concrete; under ``jit`` the row is NaN.

    References:
      ``optax.multiclass_hinge_loss``; Crammer and Singer, *On the Algorithmic
      Implementation of Multiclass Kernel-based Vector Machines*, JMLR 2001.
    """
    return _max_violation(scores, labels, 1.0, reduction)


def multiclass_perceptron_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    reduction: str = "none",
) -> Array:
    r"""optax's multi-class perceptron loss: :math:`\max_c s_c - s_y`.

    Args:
      scores: float scores ``[..., C]``, the classes on the last axis.
      labels: integer class ids, the shape of ``scores`` without its last axis.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over examples).

    Returns:
      Per-example loss, 0 where the label's score is (one of) the largest,
      or its reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> s = jnp.array([[10.0, 3.0]], jnp.float32)
      >>> jaxloss.multiclass_perceptron_loss(s, jnp.array([1]))
      Array([7.], dtype=float32)

    Note:
      0 when the label's score is (one of) the largest.

    References:
      ``optax.multiclass_perceptron_loss``.
    """
    return _max_violation(scores, labels, 0.0, reduction)


def _max_violation(scores, labels, margin: float, reduction):
    """``max_c (s_c + margin [c != y]) - s_y`` per example (optax's two losses)."""
    x = cm.as_float_array(scores, "scores")
    if x.ndim == 0:
        raise ValueError("scores must have at least one dimension (the class axis); got a scalar.")
    y = cm.prepare_int_labels(labels, x, -1, x.shape, "labels")
    red = cm.Reduction.of(reduction)
    num_classes = x.shape[-1]
    cm.check_labels_in_range(y, num_classes, None)
    x = x.astype(cm.compute_dtype(x))
    info = sm.labels_info(y, num_classes, None)
    target = lax.broadcasted_iota(info.safe.dtype, x.shape, x.ndim - 1) == info.safe[..., None]
    loss = jnp.max(jnp.where(target, x, x + margin), axis=-1) - sm.label_logit(x, info.safe)
    return red(jnp.where(info.bad, jnp.nan, loss))


def perceptron_loss(
    predictor_outputs: ArrayLike,
    targets: ArrayLike,
    *,
    reduction: str = "none",
) -> Array:
    r"""optax's binary perceptron loss: :math:`\max(0, -y\,s)`, labels in {-1, 1}.

    Args:
      predictor_outputs: float scores of any shape.
      targets: -1 or 1, the shape of ``predictor_outputs``.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      Elementwise loss or its reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> s = jnp.array([0.5, -2.0], jnp.float32)
      >>> jaxloss.perceptron_loss(s, jnp.array([1.0, 1.0], jnp.float32))
      Array([0., 2.], dtype=float32)

    Note:
      Derivative 0 at ``y s = 0``. optax requires equal shapes; so does this.

    References:
      ``optax.perceptron_loss``; Rosenblatt, 1958.
    """
    x, y = _prepare_pm1(predictor_outputs, targets)
    cm.check_same_shape(jnp.asarray(predictor_outputs), jnp.asarray(targets),
                        "predictor_outputs", "targets")  # fmt: skip
    return cm.Reduction.of(reduction)(_relu(-y * x))

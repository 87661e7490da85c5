"""Bounding-box regression losses: generalized, distance and complete IoU
(``torchvision.ops`` definitions, boxes as ``x1, y1, x2, y2``).

Each pair of boxes is rescaled by a power of two (a stop-gradient constant,
at least 1) so that its largest coordinate is below 2: areas and squared
diagonals of boxes with huge coordinates cannot overflow, and since the scale
is a power of two (with ``eps`` divided by its square) the arithmetic is
otherwise exactly torchvision's. Divisions that torchvision guards with
``eps`` are also guarded against ``0 / 0`` (``eps=0``). The aspect-ratio
angle of the complete IoU is ``atan(w / h)`` written as ``atan2`` of the
sides scaled by their larger magnitude, so zero-height boxes have finite
derivatives. Plain ``jnp`` formulas throughout: every transform (``jit``,
``vmap``, ``grad``, ``jvp``, ``jacfwd``, ``hessian``) applies.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array

_ASPECT = 4.0 / math.pi**2

# torchvision's complete_box_iou_loss calls _diou_iou_loss(boxes1, boxes2)
# without its eps: the IoU and the distance term keep that function's default
# 1e-7, and the caller's eps enters only the aspect weight alpha.
_DIOU_EPS = 1e-7


def _as_boxes(x: ArrayLike, name: str) -> Array:
    """``x`` as an array of boxes ``[..., 4]``; integer boxes become float32."""
    arr = cm.as_numeric_array(x, name)
    if arr.dtype == jnp.bool_:
        raise TypeError(f"{name} must hold box coordinates (float or int); got dtype bool.")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.float32)  # torchvision's _upcast_non_float
    if arr.ndim == 0 or arr.shape[-1] != 4:
        raise ValueError(
            f"{name} must have shape [..., 4] (x1, y1, x2, y2 per box); got shape {arr.shape}."
        )
    return arr


class _Pair(NamedTuple):
    """Per-pair quantities of two sets of boxes, in scaled coordinates."""

    iou: Array  # intersection / (union + eps)
    union: Array
    enclosing_w: Array  # sides of the smallest enclosing box
    enclosing_h: Array
    center_dx: Array  # difference of the box centres
    center_dy: Array
    sides: tuple[Array, Array, Array, Array]  # w1, h1, w2, h2
    eps_area: Array | float  # eps over the squared scale (area terms)


def _scale(b1: Array, b2: Array) -> Array:
    """A power of two ``k >= 1`` per pair with every coordinate below ``2 k``."""
    big = jnp.maximum(jnp.max(jnp.abs(b1), axis=-1), jnp.max(jnp.abs(b2), axis=-1))
    big = jnp.where(jnp.isfinite(big), big, jnp.ones_like(big))
    _, exponent = jnp.frexp(big)
    k = jnp.ldexp(jnp.ones_like(big), jnp.maximum(exponent - 1, 0))
    return jax.lax.stop_gradient(k)


def _pair(boxes1: ArrayLike, boxes2: ArrayLike, eps: Any) -> _Pair:
    """Validates the boxes and ``eps`` and computes torchvision's shared terms."""
    b1, b2 = _as_boxes(boxes1, "boxes1"), _as_boxes(boxes2, "boxes2")
    try:
        lead = np.broadcast_shapes(b1.shape[:-1], b2.shape[:-1])
    except ValueError:
        raise ValueError(
            "the leading dimensions of boxes1 and boxes2 must broadcast; got "
            f"boxes1.shape={b1.shape} and boxes2.shape={b2.shape}."
        ) from None
    dtype = cm.compute_dtype(b1, b2)
    b1 = jnp.broadcast_to(b1.astype(dtype), (*lead, 4))
    b2 = jnp.broadcast_to(b2.astype(dtype), (*lead, 4))
    e = cm.hyperparameter(eps, "eps", low=0.0, dtype=dtype)
    k = _scale(b1, b2)
    x1, y1, x2, y2 = jnp.unstack(b1 / k[..., None], axis=-1)
    x1g, y1g, x2g, y2g = jnp.unstack(b2 / k[..., None], axis=-1)
    eps_area = e / (k * k)
    # torchvision's _loss_inter_union: overlap only where both sides are positive
    iw = jnp.minimum(x2, x2g) - jnp.maximum(x1, x1g)
    ih = jnp.minimum(y2, y2g) - jnp.maximum(y1, y1g)
    inter = jnp.where((ih > 0) & (iw > 0), iw * ih, jnp.zeros_like(iw))
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    return _Pair(
        iou=cm.safe_divide(inter, union + eps_area),
        union=union,
        enclosing_w=jnp.maximum(x2, x2g) - jnp.minimum(x1, x1g),
        enclosing_h=jnp.maximum(y2, y2g) - jnp.minimum(y1, y1g),
        center_dx=(x2 + x1) / 2 - (x1g + x2g) / 2,
        center_dy=(y2 + y1) / 2 - (y1g + y2g) / 2,
        sides=(x2 - x1, y2 - y1, x2g - x1g, y2g - y1g),
        eps_area=eps_area,
    )


def _diou(p: _Pair) -> Array:
    """``1 - IoU + |c1 - c2|^2 / (diag^2 + eps)`` (torchvision's ``_diou_iou_loss``)."""
    diag = p.enclosing_w**2 + p.enclosing_h**2 + p.eps_area
    dist = p.center_dx**2 + p.center_dy**2
    return 1 - p.iou + cm.safe_divide(dist, diag)


def _angle(w: Array, h: Array) -> tuple[Array, Array]:
    """``atan(w / h)`` and where it is undefined (``w = h = 0``).

    Computed as ``atan2(s w / c, s h / c)`` with ``s`` the sign of ``h`` and
    ``c = max(|w|, |h|)`` a stop-gradient constant (the angle does not depend
    on ``c``, so every derivative is exact): finite derivatives at ``h = 0``
    (the limit of ``d atan(w / h)``), no underflow of ``w**2 + h**2``.
    """
    one = jnp.ones_like(h)
    s = jnp.where(h < 0, -one, one)
    c = jax.lax.stop_gradient(jnp.maximum(jnp.abs(w), jnp.abs(h)))
    point = c == 0
    c = jnp.where(point, one, c)
    x = jnp.where(point, one, s * w / c)
    y = jnp.where(point, one, s * h / c)
    return jnp.arctan2(x, y), point


def generalized_box_iou_loss(
    boxes1: ArrayLike, boxes2: ArrayLike, *, eps: ArrayLike = 1e-7, reduction: str = "none"
) -> Array:
    r"""Generalized IoU loss: one minus the IoU, plus the share of the
    smallest enclosing box that neither box covers.

    .. math::
       \ell = 1 - \frac{|A \cap B|}{|A \cup B| + \epsilon}
              + \frac{|C| - |A \cup B|}{|C| + \epsilon}

    with :math:`C` the smallest box enclosing :math:`A` and :math:`B`.

    Args:
      boxes1: boxes ``[..., 4]`` as ``x1, y1, x2, y2`` (``x1 <= x2``,
        ``y1 <= y2``); float or int (int is computed in float32).
      boxes2: boxes ``[..., 4]``; the leading dimensions broadcast with
        ``boxes1``'s. The loss is symmetric in the two arguments.
      eps: added to the denominators (may be traced).
      reduction: ``"none"`` (one value per pair of boxes), ``"sum"`` or
        ``"mean"``.

    Returns:
      The loss per pair of boxes (float32 for bf16/f16 inputs), or its
      reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> b1 = jnp.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]], dtype=jnp.float32)
      >>> b2 = jnp.array([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]], dtype=jnp.float32)
      >>> jaxloss.generalized_box_iou_loss(b1, b2)
      Array([1.079365 , 1.3333334], dtype=float32)

    Note:
      Degenerate boxes (zero width or height, points, identical or touching
      boxes) give finite values and derivatives, torchvision's. Boxes that
      only touch do not overlap (their intersection and its derivative are
      0). Where a minimum or maximum of two coordinates ties (identical
      edges), the derivative is split in half, as in torchvision. With
      ``eps=0`` a ``0 / 0`` (two point boxes) is taken as 0, where
      torchvision gives NaN; ``"mean"`` of no boxes is 0.

    References:
      ``torchvision.ops.generalized_box_iou_loss``; Rezatofighi et al.,
      "Generalized Intersection over Union: A Metric and A Loss for Bounding
      Box Regression", CVPR 2019.

    This follows torchvision's ``generalized_box_iou_loss`` (its values and
    reductions), with jaxloss's keyword-only ``eps`` and ``reduction``.
    """
    red = cm.Reduction.of(reduction)
    p = _pair(boxes1, boxes2, eps)
    area_c = p.enclosing_w * p.enclosing_h
    loss = 1 - (p.iou - cm.safe_divide(area_c - p.union, area_c + p.eps_area))
    return red(loss)


def distance_box_iou_loss(
    boxes1: ArrayLike, boxes2: ArrayLike, *, eps: ArrayLike = 1e-7, reduction: str = "none"
) -> Array:
    r"""Distance IoU loss: one minus the IoU, plus the squared distance of the
    box centres over the squared diagonal of the smallest enclosing box.

    .. math::
       \ell = 1 - \frac{|A \cap B|}{|A \cup B| + \epsilon}
              + \frac{\lVert c_A - c_B \rVert^2}{d_C^2 + \epsilon}

    with :math:`c_A, c_B` the box centres and :math:`d_C` the diagonal of the
    smallest box enclosing both.

    Args:
      boxes1: corners ``x1, y1, x2, y2`` of boxes ``[..., 4]`` with ``x1 <= x2``
        and ``y1 <= y2``; int coordinates are computed in float32.
      boxes2: boxes ``[..., 4]`` whose leading dimensions broadcast with those of
        ``boxes1``; swapping the two arguments gives the same loss.
      eps: added to the union and to the squared diagonal :math:`d_C^2` (may
        be traced).
      reduction: ``"none"`` (a loss per pair), ``"sum"`` or ``"mean"``.

    Returns:
      One minus the IoU plus the centre-distance penalty, per pair of boxes
      (float32 for bf16/f16 inputs), or the reduction of those values.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> b1 = jnp.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]], dtype=jnp.float32)
      >>> b2 = jnp.array([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]], dtype=jnp.float32)
      >>> jaxloss.distance_box_iou_loss(b1, b2, reduction="mean")
      Array(1.184127, dtype=float32)

    Note:
      Degenerate boxes (zero width or height, points, identical or touching
      boxes) give torchvision's finite values and derivatives; tied coordinates
      split the derivative in half, as in torchvision. With ``eps=0``, the
      ``0 / 0`` of two point boxes (no union; no diagonal either when they
      coincide) is taken as 0, where torchvision gives NaN; ``"mean"`` of no
      boxes is 0.

    References:
      ``torchvision.ops.distance_box_iou_loss``; Zheng et al.,
      "Distance-IoU Loss: Faster and Better Learning for Bounding Box
      Regression", AAAI 2020.

    This follows torchvision's ``distance_box_iou_loss`` (its values and
    reductions), with jaxloss's keyword-only ``eps`` and ``reduction``.
    """
    red = cm.Reduction.of(reduction)
    return red(_diou(_pair(boxes1, boxes2, eps)))


def complete_box_iou_loss(
    boxes1: ArrayLike, boxes2: ArrayLike, *, eps: ArrayLike = 1e-7, reduction: str = "none"
) -> Array:
    r"""Complete IoU loss: the distance IoU loss plus an aspect-ratio term.

    .. math::
       \ell = \ell_{\mathrm{DIoU}} + \alpha v, \qquad
       v = \frac{4}{\pi^2}\Big(\arctan\frac{w_B}{h_B} - \arctan\frac{w_A}{h_A}\Big)^2,
       \qquad \alpha = \frac{v}{1 - \mathrm{IoU} + v + \epsilon}

    with :math:`\alpha` held constant under differentiation (as torchvision
    computes it under ``no_grad``). As in torchvision, ``eps`` enters only
    :math:`\alpha`: the IoU and :math:`\ell_{\mathrm{DIoU}}` always use
    :math:`10^{-7}` (torchvision calls ``_diou_iou_loss`` without its
    ``eps``), so the loss has zero derivative with respect to ``eps``.

    Args:
      boxes1: ``[..., 4]`` boxes ``(x1, y1, x2, y2)``, ``x1 <= x2``, ``y1 <= y2``;
        float, or int (computed in float32).
      boxes2: ``[..., 4]`` boxes broadcast against ``boxes1`` over the leading
        dimensions; the loss is symmetric in ``boxes1`` and ``boxes2``.
      eps: the guard of the denominator of :math:`\alpha` only (may be traced);
        the IoU and the distance term use :math:`10^{-7}` whatever it is.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` over the pairs of boxes.

    Returns:
      The complete IoU loss of each pair of boxes (float32 for bf16/f16
      inputs), or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> box = jnp.array([0.0, 0.0, 2.0, 2.0], dtype=jnp.float32)
      >>> others = jnp.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 1.0]], dtype=jnp.float32)
      >>> jaxloss.complete_box_iou_loss(box, others)
      Array([0.96825397, 0.53449816], dtype=float32)

    Note:
      A box of zero height has the angle :math:`\pm\pi/2` (torchvision's
      value); its derivative is the finite limit of
      :math:`\partial \arctan(w/h)` (``-1/w`` along ``h``, 0 along ``w``),
      where torchvision's gradient is NaN. A point box (zero width and
      height) has no aspect ratio: :math:`v = 0` for any pair with a point
      box, with zero derivative, where torchvision's value is NaN
      (``0 / 0``). All other degenerate boxes (identical, touching, zero
      width) give torchvision's finite values and derivatives; ties of
      coordinates split the derivative in half, as in torchvision. With
      ``eps=0`` a ``0 / 0`` is taken as 0; ``"mean"`` of no boxes is 0.

    References:
      ``torchvision.ops.complete_box_iou_loss``; Zheng et al.,
      "Distance-IoU Loss: Faster and Better Learning for Bounding Box
      Regression", AAAI 2020 (complete IoU, section 3.3).

    This follows torchvision's ``complete_box_iou_loss`` (its values and
    reductions), with jaxloss's keyword-only ``eps`` and ``reduction``.
    """
    red = cm.Reduction.of(reduction)
    p = _pair(boxes1, boxes2, _DIOU_EPS)
    e = cm.hyperparameter(eps, "eps", low=0.0, dtype=p.iou.dtype)
    w1, h1, w2, h2 = p.sides
    angle1, point1 = _angle(w1, h1)
    angle2, point2 = _angle(w2, h2)
    v = _ASPECT * (angle2 - angle1) ** 2
    v = jnp.where(point1 | point2, jnp.zeros_like(v), v)
    alpha = jax.lax.stop_gradient(cm.safe_divide(v, 1 - p.iou + v + e))
    return red(_diou(p) + alpha * v)

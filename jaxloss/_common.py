"""Shared mechanics: validation, dtype handling, masks and reduction.

Every loss in the package goes through these helpers, so the conventions in
the README (reduction, weights, masks, dtypes, errors) live in one place.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.experimental import checkify

ArrayLike = jax.typing.ArrayLike
Array = jax.Array

REDUCTIONS = ("none", "sum", "mean")


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values we can inspect now (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def check_reduction(reduction: str, extra: Sequence[str] = ()) -> str:
    allowed = REDUCTIONS + tuple(extra)
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(
            f"reduction must be one of {', '.join(repr(r) for r in allowed)}; got {reduction!r}."
        )
    return reduction


def as_float_array(x: ArrayLike, name: str) -> Array:
    """Converts ``x`` to a JAX array and checks that it is floating point."""
    if isinstance(x, bool) or (
        hasattr(x, "dtype") and not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
    ):
        dtype = getattr(x, "dtype", type(x).__name__)
        raise TypeError(
            f"{name} must be a floating-point array; got dtype {dtype}. "
            f"Cast it with {name}.astype(jnp.float32)."
        )
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.float32)
    return arr


def as_int_array(x: ArrayLike, name: str) -> Array:
    """Converts ``x`` to a JAX array and checks that it holds integers."""
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(
            f"{name} must be an integer array of class indices; got dtype {arr.dtype}. "
            "For class probabilities use softmax_cross_entropy."
        )
    return arr


def compute_dtype(*arrays: Array) -> jnp.dtype:
    """float32 for low-precision inputs (bf16, f16), otherwise the widest input dtype."""
    dtypes = [a.dtype for a in arrays if a is not None]
    widest = max(dtypes, key=lambda d: jnp.dtype(d).itemsize)
    return jnp.dtype(jnp.float32) if jnp.dtype(widest).itemsize < 4 else jnp.dtype(widest)


def static_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """Reads a hyperparameter that must be a concrete number inside a range."""
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number; got None.")
    if not is_concrete(value):
        raise TypeError(
            f"{name} must be a concrete Python number (it selects the computation); "
            "got a traced value."
        )
    try:
        if isinstance(value, (str, bytes)):  # float("0.1") would accept it silently
            raise TypeError
        v = float(np.asarray(value))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {value!r}.") from None
    if np.isnan(v):
        raise ValueError(f"{name} must not be NaN.")
    if low is not None and (v < low or (low_open and v == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be {bound}; got {v}.")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}; got {v}.")
    return v


def static_int(value: Any, name: str, *, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be a Python int or None; got {value!r}.")
    return int(value)


def normalize_axis(axis: int, ndim: int, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int; got {axis!r}.")
    if ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis); got a scalar.")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} dimensions.")
    return int(axis) % ndim


def check_same_shape(a: Array, b: Array, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape; got {name_a}.shape={a.shape} "
            f"and {name_b}.shape={b.shape}."
        )


def check_broadcastable(x: ArrayLike, shape: tuple[int, ...], name: str, target: str) -> Array:
    """Checks that ``x`` broadcasts to ``shape`` and returns it unbroadcast, so a rule
    can broadcast it internally instead of keeping a full-size copy as a residual."""
    arr = jnp.asarray(x)
    try:
        ok = np.broadcast_shapes(arr.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} with shape {arr.shape} does not broadcast to the shape of {target}, "
            f"{tuple(shape)}."
        )
    return arr


def broadcast_to_shape(x: ArrayLike, shape: tuple[int, ...], name: str, target: str) -> Array:
    """Broadcasts ``x`` to ``shape`` with a clear error naming the argument."""
    return jnp.broadcast_to(check_broadcastable(x, shape, name, target), shape)


def as_mask(
    where: ArrayLike | None, shape: tuple[int, ...], target: str = "logits"
) -> Array | None:
    """Checks and broadcasts a boolean ``where`` mask."""
    if where is None:
        return None
    arr = jnp.asarray(where)
    if arr.dtype != jnp.bool_:
        raise TypeError(f"where must be a boolean mask; got dtype {arr.dtype}.")
    return broadcast_to_shape(arr, shape, "where", target)


def check_labels_in_range(
    labels: Array, num_classes: int, ignore_index: int | None, name: str = "labels"
) -> None:
    """Raises for out-of-range labels when they are concrete; under ``jit`` adds a
    :mod:`jax.experimental.checkify` check (active only when the caller checkifies)."""
    if is_concrete(labels):
        vals = np.asarray(labels)
        bad = (vals < 0) | (vals >= num_classes)
        if ignore_index is not None:
            bad &= vals != ignore_index
        if bad.any():
            first = vals[bad].flat[0]
            raise ValueError(
                f"{name} must lie in [0, {num_classes}) (or equal ignore_index={ignore_index}); "
                f"found {first}. A negative label never wraps to the last class."
            )
        return
    ok = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        ok |= labels == ignore_index
    checkify.debug_check(
        jnp.all(ok), f"{name} out of range [0, {num_classes}) (ignore_index={ignore_index})"
    )


def is_zero(t: Any) -> bool:
    """True for a symbolic-zero tangent in a ``custom_jvp(symbolic_zeros=True)`` rule."""
    return t is None or isinstance(t, SymbolicZero)


def instantiate(t: Any, like: Array) -> Array:
    return jnp.zeros(like.shape, like.dtype) if is_zero(t) else t


def safe_mul(coef: Array, value: Array) -> Array:
    """``coef * value`` that is 0 wherever ``coef == 0``, even for infinite ``value``,
    in the value and in every derivative (no ``0 * inf`` in a transposed product)."""
    return coef * jnp.where(coef == 0, jnp.zeros_like(value), value)


# --------------------------------------------------------------------------
# Reduction
# --------------------------------------------------------------------------


def safe_divide(num: Array, den: Array) -> Array:
    """``num / den``, and 0 (with zero gradient) where ``den == 0``."""
    zero = den == 0
    return jnp.where(zero, jnp.zeros_like(num), num / jnp.where(zero, jnp.ones_like(den), den))


def reduce_loss(
    loss: Array, reduction: str, denominator: Array | None = None, batch_size: int | None = None
) -> Array:
    """Applies ``reduction`` to elementwise losses.

    ``loss`` already carries every weight and is exactly 0 where an element does
    not count. ``denominator`` holds each element's share of the mean's divisor
    (class weight of the target, 0 where ignored or masked); ``None`` means every
    element counts once. ``"mean"`` returns 0, not NaN, when nothing counts.
    ``"batchmean"`` (KL divergence) divides the sum by ``batch_size``.
    """
    if reduction == "none":
        return loss
    total = jnp.sum(loss)
    if reduction == "sum":
        return total
    if reduction == "batchmean":
        return total / batch_size if batch_size else total
    if denominator is None:
        return total / loss.size if loss.size else total
    return safe_divide(total, jnp.sum(denominator).astype(total.dtype))

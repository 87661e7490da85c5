"""Shared mechanics: validation, dtype handling, masks, the linear-tangent rule
helper, the scaled norms and cosine that two families share, and reduction.

Every loss in the package goes through these helpers, so the conventions in
the README (reduction, weights, masks, dtypes, errors) live in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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


def as_numeric_array(x: ArrayLike, name: str) -> Array:
    """Converts ``x`` to a JAX array and checks that it is float, integer or bool."""
    if not hasattr(x, "dtype"):  # lists, scalars: look before JAX converts (strings)
        kind = np.asarray(x).dtype.kind
        if kind not in "fiub":
            raise TypeError(f"{name} must be numeric (float, int or bool); got {x!r}.")
    arr = jnp.asarray(x)
    ok = (jnp.floating, jnp.integer, jnp.bool_)
    if not any(jnp.issubdtype(arr.dtype, kind) for kind in ok):
        raise TypeError(f"{name} must be numeric (float, int or bool); got dtype {arr.dtype}.")
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


def hyperparameter(
    value: Any, name: str, *, low: float | None = None, low_open: bool = False, dtype: Any = None
) -> float | Array:
    """A hyperparameter optax takes as an array (``gamma``, ``delta``, ``margin``,
    ...): a concrete value is validated and returned as a Python float (which may
    select a specialised path); a traced one is returned as a float array for
    the general path (in ``dtype`` when given)."""
    if is_concrete(value):
        return static_float(value, name, low=low, low_open=low_open)
    arr = as_float_array(value, name)
    if arr.ndim:
        raise ValueError(f"{name} must be a scalar; got shape {arr.shape}.")
    return arr if dtype is None else arr.astype(dtype)


def static_int(value: Any, name: str, *, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be a Python int or None; got {value!r}.")
    return int(value)


def normalize_axis(axis: int, ndim: int, name: str = "axis", array: str = "logits") -> int:
    """``axis`` as a non-negative int for an ``ndim``-dimensional ``array``."""
    if isinstance(axis, bool) or not isinstance(axis, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int; got {axis!r}.")
    if ndim == 0:
        raise ValueError(
            f"{array} must have at least one dimension (the class axis); got a scalar."
        )
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} dimensions.")
    return int(axis) % ndim


def check_same_shape(a: Array, b: Array, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape; got {name_a}.shape={a.shape} "
            f"and {name_b}.shape={b.shape}."
        )


def _broadcasts(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def check_broadcastable(x: ArrayLike, shape: tuple[int, ...], name: str, target: str) -> Array:
    """Checks that ``x`` broadcasts to ``shape`` and returns it unbroadcast, so a rule
    can broadcast it internally instead of keeping a full-size copy as a residual."""
    arr = jnp.asarray(x)
    if not _broadcasts(arr.shape, shape):
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


def class_axes(axis: Any, ndim: int, array: str = "logits") -> tuple[int, ...]:
    """optax's ``axis``: an int, a tuple of ints (several class dimensions, read
    as one flattened class axis) or ``None`` (every axis)."""
    if ndim == 0:
        raise ValueError(
            f"{array} must have at least one dimension (the class axis); got a scalar."
        )
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        axes = tuple(normalize_axis(a, ndim, array=array) for a in axis)
        if not axes or len(set(axes)) != len(axes):
            raise ValueError(f"axis must name distinct axes of {array}; got {axis!r}.")
        return axes
    return (normalize_axis(axis, ndim, array=array),)


def classes_last(a: Array, axes: tuple[int, ...]) -> Array:
    """``a`` with the class ``axes`` moved last (in order) and flattened into one."""
    if axes == (a.ndim - 1,):
        return a
    batch = tuple(i for i in range(a.ndim) if i not in axes)
    a = jnp.transpose(a, batch + axes)
    return a.reshape((*a.shape[: len(batch)], -1))


def prepare_logits(
    logits: ArrayLike, axis: Any, where: ArrayLike | None, name: str = "logits"
) -> tuple[Array, Array | None, tuple[int, ...]]:
    """Float logits and optional class mask with the class axes moved last and
    flattened, and those axes. A ``where`` shaped like the batch (the logits'
    shape without the class axes) is a per-example mask, as in optax: a masked
    example has no class left. Any other ``where`` must broadcast to the
    logits (e.g. ``[C]``: a class mask shared by every example)."""
    x = as_float_array(logits, name)
    axes = class_axes(axis, x.ndim, name)
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"{name} has no classes: axis {axis} of {name}.shape={x.shape} is empty.")
    mask = None
    if where is not None:
        w = jnp.asarray(where)
        batch = tuple(n for i, n in enumerate(x.shape) if i not in axes)
        if w.ndim == len(batch) and _broadcasts(w.shape, batch):
            w = jnp.expand_dims(w, axes)  # per example (optax's rule, which wins a tie)
        mask = classes_last(as_mask(w, x.shape, name), axes)
    return classes_last(x, axes), mask, axes


def prepare_int_labels(
    labels: ArrayLike, x: Array, axis: int, logits_shape: tuple[int, ...], name: str = "labels"
) -> Array:
    """Integer labels with the shape of the (class-last) logits minus the class axis."""
    y = as_int_array(labels, name)
    if y.shape != x.shape[:-1]:
        raise ValueError(
            f"{name} must have the shape of logits without the class axis (axis={axis}); "
            f"got {name}.shape={y.shape} for logits.shape={logits_shape}, expected {x.shape[:-1]}."
        )
    return y


def optional_vector(value: ArrayLike | None, name: str, size: int, what: str) -> Array | None:
    """``None``, or a float array of shape ``[size]`` (``what`` says what it holds)."""
    if value is None:
        return None
    v = as_float_array(value, name)
    if v.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), {what}; got {name}.shape={v.shape}.")
    return v


def prepare_class_weight(weight: ArrayLike | None, num_classes: int) -> Array | None:
    """Per-class weights ``[C]`` or ``None``."""
    return optional_vector(weight, "weight", num_classes, "one per class")


class CEOptions(NamedTuple):
    """Validated cross-entropy options. ``ignore_index`` is static; the others are
    Python floats (a specialised path) or, where the loss allows it, traced
    scalars (the general path)."""

    ignore_index: int | None
    eps: float | Array
    z: float | Array
    cap: float | Array | None


def ce_options(
    ignore_index: Any,
    label_smoothing: Any,
    z_loss: Any,
    logit_softcap: Any,
    *,
    traced_dtype: Any = None,
) -> CEOptions:
    """Validates ``ignore_index``, ``label_smoothing``, ``z_loss`` and ``logit_softcap``.

    With ``traced_dtype`` (the computation dtype) ``label_smoothing``, ``z_loss``
    and ``logit_softcap`` may be traced (:func:`number_option`); without, each
    must be a concrete number."""
    number = functools.partial(number_option, traced_dtype=traced_dtype)
    return CEOptions(
        static_int(ignore_index, "ignore_index"),
        number(label_smoothing, "label_smoothing", low=0.0, high=1.0),
        number(z_loss, "z_loss", low=0.0),
        number(logit_softcap, "logit_softcap", low=0.0, low_open=True, allow_none=True),
    )


def number_option(
    value: Any, name: str, *, traced_dtype: Any = None, allow_none: bool = False, **bounds: Any
) -> float | Array | None:
    """A concrete hyperparameter as a validated Python float (:func:`static_float`,
    ``bounds`` its range); with ``traced_dtype``, a traced one as a scalar of that
    dtype (the general path; its range cannot be checked), else an error."""
    if traced_dtype is None or (value is None and allow_none) or is_concrete(value):
        return static_float(value, name, allow_none=allow_none, **bounds)
    return hyperparameter(value, name, dtype=traced_dtype)


def maybe_nonzero(v: float | Array | None) -> bool:
    """False only for a hyperparameter known to be 0 (or ``None``): a traced value
    takes the general path."""
    return v is not None and not (isinstance(v, (int, float)) and v == 0.0)


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


class IntLabelInputs(NamedTuple):
    """Validated inputs of an integer-label softmax cross-entropy."""

    x: Array  # float logits, the class axes moved last and flattened
    mask: Array | None  # class mask, shaped like ``x``
    labels: Array  # integer labels, ``x.shape[:-1]``
    weight: Array | None  # per-class weights ``[num_classes]``
    reduction: Reduction
    options: CEOptions
    num_classes: int


def int_label_inputs(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Any,
    where: ArrayLike | None,
    weight: ArrayLike | None,
    reduction: Any,
    options: tuple[Any, Any, Any, Any],
    shards: int = 1,
    *,
    traced: bool = False,
) -> IntLabelInputs:
    """Validates an integer-label cross-entropy's arguments, in one order for every
    such loss; ``options`` is ``(ignore_index, label_smoothing, z_loss,
    logit_softcap)``. With the class axis sharded over ``shards`` devices the
    classes (and the weights and the label range) number ``shards`` times the
    local ones."""
    x, mask, _ = prepare_logits(logits, axis, where)
    y = prepare_int_labels(labels, x, axis, jnp.shape(logits))
    red = Reduction.of(reduction)
    o = ce_options(*options, traced_dtype=compute_dtype(x) if traced else None)
    num_classes = x.shape[-1] * shards
    w = prepare_class_weight(weight, num_classes)
    check_labels_in_range(y, num_classes, o.ignore_index)
    return IntLabelInputs(x, mask, y, w, red, o, num_classes)


def is_zero(t: Any) -> bool:
    """True for a symbolic-zero tangent in a ``custom_jvp(symbolic_zeros=True)`` rule."""
    return t is None or isinstance(t, SymbolicZero)


def take_per_row(table: Array, index: Array) -> Array:
    """``table[index]`` (a per-class table read at each row's label) laid out like
    ``index``: under an explicit-sharding mesh with the rows sharded, jax needs the
    gather's ``out_sharding`` (it will not guess it)."""
    sharding = getattr(jax.typeof(index), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if spec is not None and any(axis is not None for axis in spec):
        return table.at[index].get(out_sharding=sharding)
    return table[index]


def safe_mul(coef: Array, value: Array) -> Array:
    """``coef * value`` that is 0 wherever ``coef == 0``, even for infinite ``value``,
    in the value and in every derivative (no ``0 * inf`` in a transposed product)."""
    return coef * jnp.where(coef == 0, jnp.zeros_like(value), value)


# --------------------------------------------------------------------------
# Linear-tangent rules
# --------------------------------------------------------------------------


def _differentiable(primal: Any, tangent: Any) -> bool:
    if is_zero(tangent) or primal is None:
        return False
    dtype = getattr(primal, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def _argnums(key: int | tuple[int, ...]) -> tuple[int, ...]:
    return key if isinstance(key, tuple) else (key,)


def _add_tangents(total: Any, term: Any) -> Any:
    return term if total is None else jax.tree.map(jnp.add, total, term)


def linear_rule(
    forward: Callable[..., tuple[Any, Any]],
    tangents: dict[int, Any],
    *,
    static_argnums: Sequence[int] = (),
    traceable_argnums: Sequence[int] = (),
    pass_want: bool = False,
    traceable_fields: Sequence[str] = (),
) -> Callable[..., Any]:
    """A ``jax.custom_jvp`` whose tangent is linear in the input tangents.

    ``forward(*args)`` returns ``(out, res)``: the primal output and small
    residuals (per-row statistics) that the tangent functions reuse. For each
    ``argnum`` in ``tangents``, ``tangents[argnum](res, args, d)`` returns the
    tangent of ``out`` along ``d`` (the tangent of ``args[argnum]``); it runs
    under ``jax.checkpoint``, so reverse mode (JAX's transpose of this linear
    map) saves only its inputs: ``res``, the caller's arrays and ``d``, and
    recomputes the coefficients in the backward pass. Float operands without an
    entry (rarely differentiated: class weights, ``alpha``, labels) get their
    tangent from ``jax.jvp`` of the plain forward. Symbolic-zero tangents and
    integer operands are skipped. An entry may be a pair ``(tangent, after)``:
    ``after(args, t)`` then runs on the checkpointed tangent outside the
    checkpoint (a collective that must transpose as itself, not be
    rematerialised). A key may be a tuple of argnums: its tangent function then
    gets the tuple of their tangents (``None`` for those not differentiated)
    and forms the joint tangent in one pass, so that reverse mode recomputes
    what the coefficients need once rather than once per operand.
    ``static_argnums`` are hashable non-array options; ``traceable_argnums`` are
    hyperparameters that are static when given as Python numbers (a specialised
    path) and operands otherwise (traced
    values: the general path, differentiable by autodiff of the forward). With
    ``pass_want`` the forward is called as ``forward(want, *args)``, ``want``
    the frozenset of argnums with a nonzero tangent (empty in the primal
    call), so it can form what those need. ``traceable_fields`` names fields of
    the options ``NamedTuple`` (the one static argument, the last one) that are
    hyperparameters: each travels as a ``traceable_argnums`` operand after it.
    """
    if traceable_fields:
        return _traceable_fields_rule(
            forward, tangents, static_argnums, traceable_argnums, pass_want, traceable_fields
        )
    cache: dict[tuple[int, ...], Callable[..., Any]] = {}

    def dispatch(*args):
        fixed = tuple(i for i in traceable_argnums if isinstance(args[i], (int, float)))
        if fixed not in cache:
            cache[fixed] = _custom_jvp(forward, tangents, (*static_argnums, *fixed), pass_want)
        return cache[fixed](*args)

    return (
        dispatch
        if traceable_argnums
        else _custom_jvp(forward, tangents, tuple(static_argnums), pass_want)
    )


def _traceable_fields_rule(forward, tangents, static_argnums, traceable_argnums, pass_want, fields):
    """:func:`linear_rule` whose options tuple (argument ``n``, the last) may hold
    traced hyperparameters in ``fields``: they are passed as operands ``n + 1, ...``
    (static when Python numbers) and put back into the options for ``forward``
    and the tangent functions."""
    (n,) = static_argnums
    k = len(fields)

    def split(a):
        return (*a[:n], a[n]._replace(**dict(zip(fields, a[n + 1 :], strict=True))))

    def fwd(*a):
        return forward(a[0], *split(a[1:])) if pass_want else forward(*split(a))

    def wrap(entry):
        fn, after = entry if isinstance(entry, tuple) else (entry, None)

        def tangent(res, a, d):
            return fn(res, split(a), d)

        return tangent if after is None else (tangent, lambda a, t: after(split(a), t))

    inner = linear_rule(
        fwd,
        {key: wrap(entry) for key, entry in tangents.items()},
        static_argnums=(n,),
        traceable_argnums=(*traceable_argnums, *range(n + 1, n + 1 + k)),
        pass_want=pass_want,
    )

    def call(*args):
        opts = args[n]
        hyper = tuple(getattr(opts, f) for f in fields)
        return inner(*args[:n], opts._replace(**dict.fromkeys(fields)), *hyper)

    return call


def _custom_jvp(forward, tangents, static_argnums, pass_want):
    """The ``jax.custom_jvp`` of :func:`linear_rule` for one set of static arguments."""
    static = tuple(sorted(static_argnums))

    def call(want, args):
        return forward(want, *args) if pass_want else forward(*args)

    fn = jax.custom_jvp(lambda *args: call(frozenset(), args)[0], nondiff_argnums=static)

    def merge(fixed, dynamic):
        args, fixed, dynamic = [], list(fixed), list(dynamic)
        for i in range(len(fixed) + len(dynamic)):
            args.append(fixed.pop(0) if i in static else dynamic.pop(0))
        return tuple(args)

    def rule(*rule_args):
        *fixed, primals, dprimals = rule_args
        args = merge(fixed, primals)
        dargs = merge([None] * len(fixed), dprimals)
        want = frozenset(i for i, d in enumerate(dargs) if _differentiable(args[i], d))
        out, res = call(want, args)
        total = None
        for key in sorted(tangents, key=_argnums):
            if not want & set(_argnums(key)):
                continue
            dyn = tuple(a for j, a in enumerate(args) if j not in static)
            fn, after = tangents[key] if isinstance(tangents[key], tuple) else (tangents[key], None)
            if isinstance(key, tuple):  # a joint entry: None for operands not differentiated
                d = tuple(dargs[i] if i in want else None for i in key)
            else:
                d = dargs[key]

            def tangent(res, dyn, d, fn=fn):
                return fn(res, merge(fixed, dyn), d)

            term = jax.checkpoint(tangent)(res, dyn, d)
            total = _add_tangents(total, term if after is None else after(args, term))
        rare = sorted(want - {i for key in tangents for i in _argnums(key)})
        if rare:

            def of_rare(*ops):
                full = list(args)
                for i, op in zip(rare, ops, strict=True):
                    full[i] = op
                return call(frozenset(), full)[0]

            term = jax.jvp(of_rare, [args[i] for i in rare], [dargs[i] for i in rare])[1]
            total = _add_tangents(total, term)
        if total is None:
            total = jax.tree.map(jnp.zeros_like, out)
        return out, total

    fn.defjvp(rule, symbolic_zeros=True)
    # One compiled computation per shape and options: an eager call (or an eager
    # jax.grad of one) compiles the rule once instead of dispatching its primitives
    # one by one; inside an outer jit the inner one is inlined.
    return jax.jit(fn, static_argnums=static)


# --------------------------------------------------------------------------
# Norms and cosine similarity
# --------------------------------------------------------------------------


def _root(q: Array) -> Array:
    """``sqrt(q)``, and 0 at 0 without the root's infinite derivative in any path."""
    pos = q > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, q, jnp.ones_like(q))), jnp.zeros_like(q))


def max_scale(x: Array, axes: int | tuple[int, ...]) -> tuple[Array, Array]:
    """``(max|x|, scale)`` over ``axes`` (kept): ``scale`` is ``max|x|``, or 1 where
    that is 0 or not finite, so that ``x / scale`` has entries of magnitude <= 1."""
    top = jnp.max(jnp.abs(x), axis=axes, keepdims=True, initial=0.0)
    return top, jnp.where(jnp.isfinite(top) & (top > 0), top, jnp.ones_like(top))


def pair_tangent(dxy: tuple[Array | None, Array | None]) -> Array:
    """The tangent of ``x - y`` from ``(dx, dy)`` (``None``: a zero tangent; not both)."""
    dx, dy = dxy
    return dx if dy is None else (-dy if dx is None else dx - dy)


def norm_slope(coef: Array, d: Array, top: Array) -> Array:
    """A norm's derivative ``coef`` (with respect to ``d``) where the row's ``max|d|``
    (``top``, kept axes) is finite; where it is not, the norm is ``max|d|`` and moves
    with each entry of that magnitude: ``sign(d)`` there (NaN at a NaN entry)."""
    at_top = (jnp.abs(d) == top) | jnp.isnan(d)
    return jnp.where(~jnp.isfinite(top) & at_top, jnp.sign(d), coef)


def _l2_forward(x1, x2, shift, axis):
    d = x1 - x2 + shift
    top, scale = max_scale(d, axis)
    u = d / scale
    root = _root(jnp.sum(u * u, axis=axis, keepdims=True))
    norm = jnp.where(jnp.isfinite(top), root * scale, top)
    return jnp.squeeze(norm, axis), (top, scale, root)


def _l2_tangent(res, args, dx):
    x1, x2, shift, axis = args
    top, scale, root = res
    d = x1 - x2 + shift
    # d / |d| where the norm is finite and positive; 0 elsewhere (no 0 * inf when transposed)
    use = jnp.isfinite(top) & (root > 0)
    coef = jnp.where(use, d / (scale * jnp.where(use, root, 1.0)), 0.0)
    return jnp.sum(norm_slope(coef, d, top) * pair_tangent(dx), axis=axis)


_l2 = linear_rule(_l2_forward, {(0, 1): _l2_tangent}, static_argnums=(2, 3))


def l2_distance(x1: Array, x2: Array, shift: float = 0.0, axis: int = -1) -> Array:
    """``|x1 - x2 + shift|``, the L2 norm over ``axis`` (``shift`` a Python number).

    Summed on the difference divided by its largest magnitude, so that neither
    the squares' overflow nor their underflow changes it; derivative 0 where
    the norm is exactly 0 (PyTorch's). Where an entry is not finite the value
    is ``max|d|`` (inf or NaN) and the derivative ``sign(d)`` at each entry of
    that magnitude (NaN for a NaN entry).

    A linear-tangent rule: the derivative ``d / |d|`` is formed elementwise from
    the inputs and the per-row norm, so reverse mode keeps no intermediate of
    the inputs' size (the difference is recomputed).
    """
    return _l2(x1, x2, shift, axis)


def _row_scale(x: Array, axes: tuple[int, ...], only_overflow: bool) -> Array:
    """``max|x|`` over ``axes`` (kept), 1 where that is 0 or not finite, or (with
    ``only_overflow``) where the row's squares sum without overflow."""
    _, scale = max_scale(x, axes)
    if not only_overflow:
        return scale
    overflow = ~jnp.isfinite(jnp.sum(x * x, axis=axes, keepdims=True))
    return jnp.where(overflow, scale, jnp.ones_like(scale))


def _cosine_stats(a, b, eps, axes, pytorch):
    """Per-row ``(sa, sb, den, wa, wb, cos)``: ``cos = <a/sa, b/sb> / den``, and
    ``wa`` = d log(den) / d|a/sa|^2 / 2 (likewise ``wb``), so that
    d cos / d(a/sa) = (b/sb) / den - cos * wa * (a/sa)."""
    sa, sb = _row_scale(a, axes, pytorch), _row_scale(b, axes, pytorch)
    ua, ub = a / sa, b / sb
    dot = jnp.sum(ua * ub, axis=axes, keepdims=True)
    qa = jnp.sum(ua * ua, axis=axes, keepdims=True)
    qb = jnp.sum(ub * ub, axis=axes, keepdims=True)
    if pytorch:  # sqrt((|a|^2 + eps) (|b|^2 + eps)), each root apart where the product overflows
        ma, mb = qa + eps, qb + eps
        prod = ma * mb
        finite = jnp.isfinite(prod)
        den = jnp.where(finite, jnp.sqrt(jnp.where(finite, prod, 1.0)), _root(ma) * _root(mb))
        return sa, sb, den, 1.0 / ma, 1.0 / mb, dot / den
    floor = jnp.sqrt(jnp.maximum(eps, 0.0))  # optax: max(|a|, sqrt(eps)) * max(|b|, sqrt(eps))
    ra, rb = _root(qa), _root(qb)
    na, nb = jnp.maximum(ra, floor / sa), jnp.maximum(rb, floor / sb)
    # the norm has a derivative where it (not the floor) is the divisor; a zero
    # vector divides by 1: its unit vector is itself, 0
    wa = jnp.where((ra > 0) & (ra >= floor / sa), 1.0 / jnp.where(na > 0, na * na, 1.0), 0.0)
    wb = jnp.where((rb > 0) & (rb >= floor / sb), 1.0 / jnp.where(nb > 0, nb * nb, 1.0), 0.0)
    den = jnp.where(na > 0, na, 1.0) * jnp.where(nb > 0, nb, 1.0)
    return sa, sb, den, wa, wb, dot / den


def _cosine_forward(a, b, eps, axes, pytorch):
    stats = _cosine_stats(a, b, eps, axes, pytorch)
    return jnp.squeeze(stats[-1], axes), stats


def _cosine_tangent(res, args, d):
    a, b, _, axes, _ = args
    sa, sb, den, wa, wb, cos = res
    ua, ub = a / sa, b / sb
    terms = [
        jnp.sum((u_other / den - cos * w * u) / s * du, axis=axes)
        for u, u_other, s, w, du in ((ua, ub, sa, wa, d[0]), (ub, ua, sb, wb, d[1]))
        if du is not None
    ]
    return functools.reduce(jnp.add, terms)


_cosine = linear_rule(_cosine_forward, {(0, 1): _cosine_tangent}, static_argnums=(3, 4))


def cosine_rows(
    a: Array, b: Array, eps: Array, axes: tuple[int, ...], *, pytorch: bool = False
) -> Array:
    """Cosine similarity of ``a`` and ``b`` (same shape and float dtype) over ``axes``.

    optax's (default): ``<a, b> / (max(|a|, sqrt(eps)) max(|b|, sqrt(eps)))``, 0
    for a zero vector, every row scaled by its largest magnitude first (exact:
    the cosine is scale-free), so no sum of squares overflows or underflows.
    ``pytorch=True``: ``<a, b> / sqrt((|a|^2 + eps) (|b|^2 + eps))``
    (``F.cosine_embedding_loss``), scaled only where a row's squares overflow.

    A linear-tangent rule: the derivative ``(b / den - cos w a) / s`` is formed
    elementwise from per-row statistics, so reverse mode keeps no ``[N, C]``
    intermediate, and forward mode and second derivatives are exact.
    """
    return _cosine(a, b, eps, tuple(axes), pytorch)


# --------------------------------------------------------------------------
# Reduction
# --------------------------------------------------------------------------


def safe_divide(num: Array, den: Array) -> Array:
    """``num / den``, and 0 (with zero gradient) where ``den == 0``."""
    zero = den == 0
    return jnp.where(zero, jnp.zeros_like(num), num / jnp.where(zero, jnp.ones_like(den), den))


def scaled_sum(loss: Array, scale: Array) -> Array:
    """``sum(loss) * scale`` as the sum of scaled row sums (a row: every axis but the
    first), so that it stays finite when the plain sum overflows, unless one row's
    own sum does.

    Scaling each element instead costs XLA:CPU (jax 0.10.2) an ``[N, C]`` buffer:
    the broadcast scale is materialised in front of its reduction fusion (1 GiB
    at ``[8192, 32768]`` float32); pinned by
    tests/test_workarounds.py::test_mean_scales_row_sums.
    """
    if loss.ndim > 1:
        loss = jnp.sum(loss, axis=tuple(range(1, loss.ndim)))
    return jnp.sum(loss * scale)


@dataclasses.dataclass(frozen=True)
class Reduction:
    """A validated ``reduction``: the one place that decides the mean's divisor.

    Loss code returns per-element losses (already weighted, exactly 0 where an
    element does not count) and, optionally, each element's share of the
    mean's divisor (its class weight, 0 where ignored or masked; ``None``:
    every element counts once). ``"mean"`` is ``sum(loss) / sum(share)``, as
    PyTorch divides, and 0 (not NaN) when nothing counts. ``"batchmean"``
    (KL divergence, when allowed) divides the sum by ``batch_size``.
    """

    kind: str

    @classmethod
    def of(cls, reduction: Any, *, batchmean: bool = False) -> Reduction:
        allowed = REDUCTIONS + (("batchmean",) if batchmean else ())
        if not isinstance(reduction, str) or reduction not in allowed:
            raise ValueError(
                f"reduction must be one of {', '.join(repr(r) for r in allowed)}; "
                f"got {reduction!r}."
            )
        return cls(reduction)

    def __call__(
        self, loss: Array, share: Array | None = None, *, batch_size: int | None = None
    ) -> Array:
        if self.kind == "none":
            return loss
        total = jnp.sum(loss)
        if self.kind == "sum":
            return total
        if self.kind == "batchmean":
            return total / batch_size if batch_size else total
        # the sum of scaled parts: finite wherever the mean is, even when the sum
        # overflows (losses near the float limit); 0 when nothing counts
        scale = self.scale(share, loss.size, total.dtype)
        return jnp.where(scale == 0, jnp.zeros_like(total), scaled_sum(loss, scale))

    def divisor(self, share: Array | None, size: int, dtype: Any) -> Array:
        """The mean's divisor: ``sum(share)``, or the element count without shares."""
        if share is None:
            return jnp.asarray(size, dtype)
        return jnp.sum(share).astype(dtype)

    def scale(self, share: Array | None, size: int, dtype: Any) -> Array:
        """The scalar that multiplies each element's gradient: ``1 / divisor`` for
        ``"mean"`` (0 when nothing counts), 1 otherwise."""
        one = jnp.ones((), dtype)
        if self.kind != "mean":
            return one
        return safe_divide(one, self.divisor(share, size, dtype))

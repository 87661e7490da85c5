"""PyTorch's margin and embedding losses that optax lacks.

Each function follows ``torch.nn.functional.<name>`` with PyTorch's options
and numbers, and jaxloss's conventions: the class (feature) axis last,
``reduction="none"`` by default, bf16/f16 computed in float32, a traceable
``margin``. All are piecewise smooth: the plain formula under autodiff is
exact, with ``where(z > 0, z, 0)`` giving a kink the derivative 0 (PyTorch's
``clamp_min`` convention). Two get linear-tangent rules
(:func:`jaxloss._common.linear_rule`): the multilabel soft-margin loss, whose
derivative ``w (sigmoid(x) - y) / C`` is exact and finite at infinite logits,
where the autodiff of the two log-sigmoid terms has to step around
``0 * inf``; and the cosine embedding loss's cosine
(:func:`jaxloss._common.cosine_rows`), whose derivative is formed elementwise
from per-row statistics (no stored ``[N, C]`` intermediate).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss import _common as cm

ArrayLike = jax.typing.ArrayLike
Array = jax.Array

_COSINE_EPS = 1e-12  # PyTorch's EPSILON in cosine_embedding_loss
_PAIRWISE_EPS = 1e-6  # F.pairwise_distance's default eps


def _relu(z):
    # max(0, z) with derivative 0 at z = 0 (PyTorch's clamp_min)
    return jnp.where(z > 0, z, jnp.zeros_like(z))


def _float(x, name):
    a = cm.as_float_array(x, name)
    return a.astype(cm.compute_dtype(a))


def _target(target, shape, dtype, name="target", of="input"):
    y = cm.as_numeric_array(target, name)
    if y.dtype == jnp.bool_:
        raise TypeError(f"{name} must hold -1 or 1 (int or float); got dtype bool.")
    return cm.broadcast_to_shape(y, shape, name, of).astype(dtype)


def _ndim_1_or_2(x, name):
    if x.ndim not in (1, 2):
        raise ValueError(
            f"{name} must have shape (N, D) or (D,), as in PyTorch; got shape {x.shape}."
        )


def margin_ranking_loss(
    input1: ArrayLike,
    input2: ArrayLike,
    target: ArrayLike,
    *,
    margin: float = 0.0,
    reduction: str = "none",
) -> Array:
    r"""Margin ranking loss: ``input1`` should rank above ``input2`` where ``target = 1``.

    .. math:: \ell = \max(0,\ -y\,(x_1 - x_2) + m)

    Args:
      input1: float scores of any shape.
      input2: float scores with the shape of ``input1``.
      target: ``1`` (``input1`` should be larger) or ``-1``, broadcastable to
        ``input1``; other values are used as given, as in PyTorch.
      margin: :math:`m`, by how much the higher-ranked input must win (may
        be traced).
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      The loss of each pair of scores (the shape of ``input1``), or its
      reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> a = jnp.array([0.5, 1.0, -2.0], dtype=jnp.float32)
      >>> b = jnp.array([0.0, 2.0, -1.0], dtype=jnp.float32)
      >>> jaxloss.margin_ranking_loss(a, b, jnp.array([1, 1, -1]), margin=0.5)
      Array([0. , 1.5, 0. ], dtype=float32)

    Note:
      At the kink the derivative is 0, as in PyTorch.

    References:
      Follows ``torch.nn.functional.margin_ranking_loss`` with PyTorch's options.
    """
    x1 = cm.as_float_array(input1, "input1")
    x2 = cm.as_float_array(input2, "input2")
    cm.check_same_shape(x1, x2, "input1", "input2")
    dtype = cm.compute_dtype(x1, x2)
    y = _target(target, x1.shape, dtype, of="input1")
    red = cm.Reduction.of(reduction)
    m = cm.hyperparameter(margin, "margin", dtype=dtype)
    return red(_relu(m - y * (x1.astype(dtype) - x2.astype(dtype))))


def _cosine(x1, x2):
    # PyTorch: sum(x1 x2) / sqrt((|x1|^2 + eps) (|x2|^2 + eps)); a row whose squared
    # norm overflows is first divided by its largest entry (cosine is scale-free),
    # and where the product overflows the root of each factor is taken separately
    eps = jnp.asarray(_COSINE_EPS, x1.dtype)
    return cm.cosine_rows(x1, x2, eps, (x1.ndim - 1,), pytorch=True)


def cosine_embedding_loss(
    input1: ArrayLike,
    input2: ArrayLike,
    target: ArrayLike,
    *,
    margin: float = 0.0,
    reduction: str = "none",
) -> Array:
    r"""Cosine embedding loss: pull pairs together (``target = 1``) or apart (``-1``).

    .. math::
        \ell = \begin{cases} 1 - \cos(x_1, x_2) & y = 1 \\
        \max(0,\ \cos(x_1, x_2) - m) & y = -1 \end{cases},\qquad
        \cos(x_1, x_2) = \frac{x_1 \cdot x_2}
        {\sqrt{(\lVert x_1\rVert^2 + \epsilon)(\lVert x_2\rVert^2 + \epsilon)}}

    with PyTorch's :math:`\epsilon = 10^{-12}`.

    Args:
      input1: float embeddings ``[N, D]`` or ``[D]`` (the feature axis last).
      input2: float embeddings with the shape of ``input1``.
      target: ``1`` or ``-1``, shaped ``[N]`` (or ``[]`` for ``[D]`` inputs).
      margin: :math:`m`, PyTorch suggests values in ``[-1, 1]`` (may be traced).
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over pairs).

    Returns:
      One loss per pair, ``[N]`` (a scalar for ``[D]`` inputs), or their
      reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> a = jnp.array([[1.0, 0.0], [1.0, 1.0]], dtype=jnp.float32)
      >>> b = jnp.array([[0.0, 1.0], [1.0, 1.0]], dtype=jnp.float32)
      >>> jaxloss.cosine_embedding_loss(a, b, jnp.array([1, -1]), margin=0.5)
      Array([1. , 0.5], dtype=float32)

    Note:
      A zero vector has cosine 0 (thanks to :math:`\epsilon`), and finite
      derivatives. A target other than ``1`` or ``-1`` gives 0, as in PyTorch.

    References:
      Follows ``torch.nn.functional.cosine_embedding_loss`` with PyTorch's options.
    """
    x1 = cm.as_float_array(input1, "input1")
    x2 = cm.as_float_array(input2, "input2")
    _ndim_1_or_2(x1, "input1")
    cm.check_same_shape(x1, x2, "input1", "input2")
    y = cm.as_numeric_array(target, "target")
    if y.shape != x1.shape[:-1]:
        raise ValueError(
            f"target must have shape {x1.shape[:-1]} (input1's shape without the feature "
            f"axis); got target.shape={y.shape} for input1.shape={x1.shape}."
        )
    if y.dtype == jnp.bool_:
        raise TypeError("target must hold -1 or 1 (int or float); got dtype bool.")
    red = cm.Reduction.of(reduction)
    dtype = cm.compute_dtype(x1, x2)
    m = cm.hyperparameter(margin, "margin", dtype=dtype)
    cos = _cosine(x1.astype(dtype), x2.astype(dtype))
    zero = jnp.zeros_like(cos)
    loss = jnp.where(y == 1, 1.0 - cos, zero) + jnp.where(y == -1, _relu(cos - m), zero)
    return red(loss)


def hinge_embedding_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    margin: float = 1.0,
    reduction: str = "none",
) -> Array:
    r"""Hinge embedding loss on distances: small for ``target = 1``, above ``margin`` for ``-1``.

    .. math::
        \ell = \begin{cases} x & y = 1 \\ \max(0,\ m - x) & y = -1 \end{cases}

    Args:
      input: float values (typically distances) of any shape.
      target: ``1`` or ``-1``, broadcastable to ``input``.
      margin: :math:`m`, the distance beyond which a ``-1`` pair costs
        nothing (may be traced).
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      Elementwise loss, the shape of ``input`` (float32 for bf16/f16 inputs),
      or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> d = jnp.array([0.3, 0.4, 2.0], dtype=jnp.float32)
      >>> jaxloss.hinge_embedding_loss(d, jnp.array([1, -1, -1]))
      Array([0.3, 0.6, 0. ], dtype=float32)

    Note:
      As in PyTorch, a target that is neither ``1`` nor ``-1`` gets both
      terms, :math:`x + \max(0, m - x)`. The derivative at the kink is 0.

    References:
      Follows ``torch.nn.functional.hinge_embedding_loss`` with PyTorch's options.
    """
    x = _float(input, "input")
    y = _target(target, x.shape, x.dtype)
    red = cm.Reduction.of(reduction)
    m = cm.hyperparameter(margin, "margin", dtype=x.dtype)
    zero = jnp.zeros_like(x)
    loss = jnp.where(y != 1, _relu(m - x), zero) + jnp.where(y != -1, x, zero)
    return red(loss)


def soft_margin_loss(input: ArrayLike, target: ArrayLike, *, reduction: str = "none") -> Array:
    r"""Two-class logistic loss with labels in {-1, 1}, elementwise.

    .. math:: \ell = \log(1 + e^{-y x})

    Args:
      input: float logits of any shape.
      target: ``1`` or ``-1`` (other values used as given), broadcastable to ``input``.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over all elements).

    Returns:
      Elementwise loss (float32 for bf16/f16 inputs) or its reduction.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([2.0, -1.0, 0.0], dtype=jnp.float32)
      >>> jaxloss.soft_margin_loss(x, jnp.array([1, 1, -1]))
      Array([0.126928 , 1.3132617, 0.6931472], dtype=float32)

    Note:
      Computed as ``softplus(-y x)``: finite for logits of any magnitude, and
      0 (not NaN) at infinite logits on the right side.

    References:
      Follows ``torch.nn.functional.soft_margin_loss`` with PyTorch's options.
    """
    x = _float(input, "input")
    y = _target(target, x.shape, x.dtype)
    red = cm.Reduction.of(reduction)
    return red(jax.nn.softplus(-y * x))


def _mul0(c, v):
    # c * v, with 0 * inf = 0; the derivative w.r.t. c stays v wherever v is finite
    return c * jnp.where((c == 0) & jnp.isinf(v), jnp.zeros_like(v), v)


def _mlsm_forward(x, y, w):
    x, y = _widen(x, y)
    loss = _mul0(y, jax.nn.softplus(-x)) + _mul0(1.0 - y, jax.nn.softplus(x))
    if w is not None:
        loss = _mul0(jnp.broadcast_to(w.astype(x.dtype), x.shape), loss)
    return jnp.sum(loss, axis=-1) / x.shape[-1], None


def _mlsm_dinput(_, args, d):
    x, y, w = args
    x, y = _widen(x, y)
    g = jax.nn.sigmoid(x) - y  # d/dx of y softplus(-x) + (1 - y) softplus(x)
    if w is not None:
        g = g * jnp.broadcast_to(w.astype(x.dtype), x.shape)
    return jnp.sum(g * d.astype(x.dtype), axis=-1) / x.shape[-1]


def _widen(x, y):
    dtype = cm.compute_dtype(x)
    return x.astype(dtype), jnp.broadcast_to(y.astype(dtype), x.shape)


_mlsm = cm.linear_rule(_mlsm_forward, {0: _mlsm_dinput})


def multilabel_soft_margin_loss(
    input: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "none",
) -> Array:
    r"""Multi-label one-versus-all logistic loss, averaged over classes per example.

    .. math::
        \ell_n = -\frac{1}{C} \sum_c w_c \bigl(y_{nc} \log \sigma(x_{nc})
        + (1 - y_{nc}) \log \sigma(-x_{nc})\bigr)

    Args:
      input: float logits ``[N, C]`` or ``[C]`` (classes last).
      target: 0/1 (or soft) labels, broadcastable to ``input``.
      weight: optional per-class weights ``[C]`` (anything broadcastable to ``input``).
      reduction: ``"none"``, ``"sum"`` or ``"mean"``. As in PyTorch the loss is
        first averaged over the ``C`` classes of each example; ``"mean"`` then
        averages over examples.

    Returns:
      Per-example loss ``[N]`` (or a scalar for ``[C]`` input) or its
      reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[2.0, -1.0, 0.0]], dtype=jnp.float32)
      >>> y = jnp.array([[1.0, 0.0, 1.0]], dtype=jnp.float32)
      >>> jaxloss.multilabel_soft_margin_loss(x, y)
      Array([0.37777898], dtype=float32)

    Note:
      The derivative w.r.t. ``input`` is :math:`w (\sigma(x) - y) / C`. At
      ``±inf`` logits on the side of a hard label the term is 0 with
      derivative 0, where PyTorch gives NaN (``0 * log σ(-inf)``).

    References:
      Follows ``torch.nn.functional.multilabel_soft_margin_loss`` with PyTorch's options.
    """
    x = cm.as_float_array(input, "input")
    if x.ndim not in (1, 2):
        raise ValueError(f"input must have shape (N, C) or (C,), as in PyTorch; got {x.shape}.")
    y = cm.check_broadcastable(cm.as_float_array(target, "target"), x.shape, "target", "input")
    w = None
    if weight is not None:
        w = cm.check_broadcastable(cm.as_float_array(weight, "weight"), x.shape, "weight", "input")
    red = cm.Reduction.of(reduction)
    return red(_mlsm(x, y, w))


def _multilabel_targets(y, num_classes):
    """Which listed targets count (before the first negative entry) and the class mask."""
    valid = jnp.cumprod((y >= 0).astype(jnp.int32), axis=-1).astype(bool)
    if cm.is_concrete(y):  # checked on the host (under jit, jnp results are traced)
        vals = np.asarray(y)
        ok = np.cumprod(vals >= 0, axis=-1).astype(bool)
        bad = ok & (vals >= num_classes)
        if bad.any():
            raise ValueError(
                f"target must hold class indices in [0, {num_classes}) before the first -1; "
                f"found {vals[bad].flat[0]}."
            )
    safe = jnp.clip(y, 0, num_classes - 1)
    # y is [N, C]: a scatter per row (never [N, C, C] pairs)
    is_target = jax.vmap(lambda s, v: jnp.zeros(s.shape, bool).at[s].max(v))(safe, valid)
    return valid, safe, is_target


def _count_at_most(rows: Array, q: Array) -> Array:
    """For each query ``q[n, j]``, how many entries of the sorted row ``rows[n]`` are
    ``<= q[n, j]`` (``searchsorted(side="right")``): a binary search of ``log2(C)``
    steps on all queries at once (a vmapped ``jnp.searchsorted`` fails under
    explicit sharding without a context mesh in jax 0.10.2)."""
    c = rows.shape[-1]

    def step(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) // 2
        v = jnp.take_along_axis(rows, jnp.minimum(mid, c - 1), axis=-1)
        right = (mid < hi) & (v <= q)
        return jnp.where(right, mid + 1, lo), jnp.where(right, hi, mid)

    bounds = (jnp.zeros(q.shape, jnp.int32), jnp.full(q.shape, c, jnp.int32))
    return jax.lax.fori_loop(0, c.bit_length(), step, bounds)[0]


def _multilabel_hinge(x, safe, valid, is_target):
    """``sum_{j listed} sum_{i not a target} max(0, 1 - x_j + x_i)`` per row of ``[N, C]``
    scores in ``O(N C log C)`` time and ``O(N C)`` memory: the non-target scores are
    sorted once; for each listed target the scores above ``x_j - 1`` (a binary
    search) give their count ``k`` and their sum ``S`` (suffix sums), and the
    pairs contribute ``k (1 - x_j) + S``. A pair exactly at the kink counts 0
    (PyTorch's derivative there)."""
    c = x.shape[-1]
    others = jnp.sort(jnp.where(is_target, -jnp.inf, x), axis=-1)  # targets first, as -inf
    finite = jnp.where(others == -jnp.inf, 0.0, others)
    zero = jnp.zeros_like(finite[:, :1])
    suffix = jnp.concatenate([jnp.cumsum(finite[:, ::-1], axis=-1)[:, ::-1], zero], axis=-1)
    x_t = jnp.take_along_axis(x, safe, axis=-1)  # [N, J]
    first = _count_at_most(others, x_t - 1.0)
    k = (c - first).astype(x.dtype)
    pairs = cm.safe_mul(k, 1.0 - x_t) + jnp.take_along_axis(suffix, first, axis=-1)
    return jnp.sum(jnp.where(valid, pairs, 0.0), axis=-1)


def multilabel_margin_loss(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "none"
) -> Array:
    r"""Multi-label hinge loss over (target, non-target) class pairs.

    .. math::
        \ell_n = \frac{1}{C} \sum_{j \in T_n} \sum_{i \notin T_n}
        \max(0,\ 1 - (x_{n, j} - x_{n, i}))

    Args:
      input: float scores ``[N, C]`` or ``[C]`` (classes last).
      target: integer class indices with the shape of ``input``: the target
        classes :math:`T_n` of each example listed first, then padded with
        ``-1`` (PyTorch's format; everything from the first negative entry on
        is ignored).
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over examples).

    Returns:
      Per-example loss ``[N]`` (or a scalar for ``[C]`` input) or its
      reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> x = jnp.array([[0.1, 0.2, 0.4, 0.8]], dtype=jnp.float32)
      >>> jaxloss.multilabel_margin_loss(x, jnp.array([[3, 0, -1, 1]]))
      Array([0.85], dtype=float32)

    Note:
      A class listed twice counts twice, as in PyTorch. An index ``>= C``
      before the first ``-1`` raises ``ValueError`` when concrete; under
      ``jit`` the example's loss is NaN. The derivative at a kink is 0.

    References:
      Follows ``torch.nn.functional.multilabel_margin_loss`` with PyTorch's options.
    """
    x = _float(input, "input")
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise ValueError(
            f"input must have shape (N, C) or (C,) with C > 0, as in PyTorch; got {x.shape}."
        )
    y = cm.as_int_array(target, "target")
    if y.shape != x.shape:
        raise ValueError(
            f"target must have the shape of input; got target.shape={y.shape} "
            f"for input.shape={x.shape}."
        )
    red = cm.Reduction.of(reduction)
    num_classes = x.shape[-1]
    x2, y2 = x.reshape(-1, num_classes), y.reshape(-1, num_classes)
    valid, safe, is_target = _multilabel_targets(y2, num_classes)
    loss = _multilabel_hinge(x2, safe, valid, is_target) / num_classes
    bad = jnp.any(valid & (y2 >= num_classes), axis=-1)
    return red(jnp.where(bad, jnp.nan, loss).reshape(x.shape[:-1]))


def _pairwise_distance(x1, x2):
    # F.pairwise_distance(x1, x2, p=2, eps=1e-6): || x1 - x2 + eps ||_2 over the
    # last axis, with derivative 0 (PyTorch's norm) where the norm is exactly 0
    # (scaled: differences of any finite magnitude give the finite distance)
    return cm.l2_distance(x1, x2, _PAIRWISE_EPS)


def _distances(fn, a, p, n, swap):
    d_pos = jnp.asarray(fn(a, p))
    d_neg = jnp.asarray(fn(a, n))
    if swap:
        d_neg = jnp.minimum(d_neg, jnp.asarray(fn(p, n)))
    if not jnp.issubdtype(d_pos.dtype, jnp.floating) or d_pos.shape != d_neg.shape:
        raise ValueError(
            "distance_function must return float distances of one shape for every pair; "
            f"got {d_pos.dtype}{d_pos.shape} and {d_neg.dtype}{d_neg.shape}."
        )
    return d_pos, d_neg


def triplet_margin_with_distance_loss(
    anchor: ArrayLike,
    positive: ArrayLike,
    negative: ArrayLike,
    *,
    distance_function: Callable[[Array, Array], Array] | None = None,
    margin: float = 1.0,
    swap: bool = False,
    reduction: str = "none",
) -> Array:
    r"""Triplet margin loss with any distance function.

    .. math:: \ell = \max(0,\ m + d(a, p) - d(a, n))

    With ``swap=True``, :math:`d(a, n)` is replaced by
    :math:`\min(d(a, n), d(p, n))` (Balntas et al.'s distance swap).

    Args:
      anchor: float embeddings ``[N, D]`` or ``[D]``.
      positive: float embeddings, as many dimensions as ``anchor``.
      negative: float embeddings, as many dimensions as ``anchor``.
      distance_function: ``f(x1, x2) -> distances``; ``None`` is the Euclidean
        distance of ``torch.nn.functional.pairwise_distance`` (``eps=1e-6``
        added to the difference). It receives arrays in the compute dtype.
      margin: :math:`m > 0`, as PyTorch requires (may be traced; then unchecked).
      swap: use the distance swap.
      reduction: ``"none"``, ``"sum"`` or ``"mean"`` (over triplets).

    Returns:
      Per-triplet loss, ``[N]`` for ``[N, D]`` embeddings (a scalar for
      ``[D]``), or its reduction; float32 for bf16/f16 inputs.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> a = jnp.array([[0.0, 0.0], [1.0, 1.0]], dtype=jnp.float32)
      >>> p = jnp.array([[0.0, 1.0], [1.0, 1.0]], dtype=jnp.float32)
      >>> n = jnp.array([[1.0, 0.0], [4.0, 5.0]], dtype=jnp.float32)
      >>> jaxloss.triplet_margin_with_distance_loss(a, p, n)
      Array([1., 0.], dtype=float32)

    Note:
      The default distance has derivative 0 where ``x1 - x2 + eps`` is
      exactly 0 (PyTorch's norm), never NaN. A kink has derivative 0.

    References:
      Follows ``torch.nn.functional.triplet_margin_with_distance_loss`` with
      PyTorch's options; Balntas et al., *Learning local feature descriptors
      with triplets and shallow convolutional neural networks*, BMVC 2016.
    """
    a = cm.as_float_array(anchor, "anchor")
    p = cm.as_float_array(positive, "positive")
    n = cm.as_float_array(negative, "negative")
    if not a.ndim == p.ndim == n.ndim:
        raise ValueError(
            "anchor, positive and negative must have the same number of dimensions; got "
            f"shapes {a.shape}, {p.shape} and {n.shape}."
        )
    if distance_function is None:
        _ndim_1_or_2(a, "anchor")
        for name, b in (("positive", p), ("negative", n)):
            cm.check_same_shape(a, b, "anchor", name)
        distance_function = _pairwise_distance
    elif not callable(distance_function):
        raise TypeError(f"distance_function must be callable or None; got {distance_function!r}.")
    if not isinstance(swap, (bool, np.bool_)):
        raise TypeError(f"swap must be a bool; got {swap!r}.")
    red = cm.Reduction.of(reduction)
    dtype = cm.compute_dtype(a, p, n)
    m = cm.hyperparameter(margin, "margin", low=0.0, low_open=True, dtype=dtype)
    args = (a.astype(dtype), p.astype(dtype), n.astype(dtype))
    d_pos, d_neg = _distances(distance_function, *args, bool(swap))
    return red(_relu(m + d_pos - d_neg))

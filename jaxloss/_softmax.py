"""The softmax core: per-row statistics and the closed-form coefficient.

Every softmax loss in the package (integer- and probability-label
cross-entropy, softmax focal, vocabulary-parallel and fused linear
cross-entropy) is built from the pieces below, applied to a *block* of a row's
classes: the whole row, a vocabulary tile of the fused loss, or one device's
shard of the vocabulary. Blocks reduce to a few numbers per row
(:class:`Block`), blocks combine exactly (:func:`merge`), and the combined
statistics give the loss and the coefficients (:func:`finish`); the gradient
with respect to a block's logits is formed from the block alone
(:func:`coefficient`).

Math, per row, with ``s = softcap(x)`` (identity without a cap), ``V`` the
valid classes (allowed by ``where``, not ``-inf``), ``K = |V|``, ``S`` the row
maximum, ``lse = S + log_sum`` and ``p = exp((s - S) - log_sum)``:

    q_c  = qy [c == y] + e w_c [c in V]           # target weights
    loss = sum_c q_c (lse - s_c) + z zw lse^2     # PyTorch's CE + PaLM's z-loss
         = qy (log_sum + (S - s_y)) + e (log_sum sum_V w + sum_V w (S - s))
           + z zw lse^2
    dloss/ds_c = p_c A - q_c,   A = qy + e sum_V w + 2 z zw lse

Integer labels: ``qy = (1 - eps) w_y``, ``e = eps / K``, ``w`` the class
weights, ``zw = w_y``. Probability labels: ``qy = 0``, ``e = 1``, ``w`` the
smoothed targets, ``zw = [sum_c t_c != 0]``.

``lse - s_c`` is always formed as ``log_sum + (S - s_c)``: exact near the
maximum for logits of any magnitude (``lse`` itself loses the ``log_sum`` of a
row of ``1e7``'s in float32). The weighted gap sum ``sum_V w (S - s)`` is kept
scaled by ``gscale = 1 / (2 C)`` (``C`` the row's full width) so that it stays
finite for finite logits of both signs near the float limit; the scale is
undone after multiplying by ``e``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxloss import _common as cm

Array = jax.Array

NEG_INF = -jnp.inf


# --------------------------------------------------------------------------
# Elementwise pieces
# --------------------------------------------------------------------------


def upcast(x: Array) -> Array:
    """Low-precision logits widened to float32 (the computation dtype)."""
    return x.astype(cm.compute_dtype(x))


def softcap(x: Array, cap: float | None) -> Array:
    # Gemma 2: cap * tanh(x / cap)
    return x if cap is None else cap * jnp.tanh(x / cap)


def softcap_slope(s: Array, cap: float | None) -> Array | None:
    """Slope of the soft cap read off the capped values ``s``; ``None`` without a cap."""
    # d/dx cap tanh(x / cap) = 1 - tanh(x / cap)^2 = 1 - (s / cap)^2
    if cap is None:
        return None
    t = s / cap
    return 1.0 - t * t


# Widest row XLA:CPU (jax 0.10.2) reduces a fused `exp` at full speed: `sum(exp(x -
# m), -1)` over [1024, 65536] float32 takes 8x the time of the same element count
# in rows of 32768 or fewer. Pinned by tests/test_workarounds.py (the HLO's
# reduction widths); the measured figures are in benchmarks/results/cpu.md.
ROW_BLOCK = 32768


def _row_blocks(c: int) -> tuple[int, int]:
    """``(nb, k)`` with ``nb * k <= c``, ``k <= ROW_BLOCK``: the fewest equal blocks
    that tile a row of ``c`` exactly, or, when those would be narrower than 1024
    columns (a ``c`` with no suitable divisor), ``ceil(c / ROW_BLOCK)`` blocks and
    a remainder of fewer than ``nb`` columns."""
    least = -(-c // ROW_BLOCK)
    for nb in range(least, c // 1024 + 1):
        if c % nb == 0:
            return nb, c // nb
    return least, c // least


def exp_sum(s: Array, shift: Array) -> Array:
    """``sum(exp(s - shift[..., None]), -1)`` over rows of any length.

    A row longer than :data:`ROW_BLOCK` is viewed as ``[..., nb, k]`` blocks
    before the ``exp`` (a reshape of the caller's buffer is free; after the
    ``exp`` it is not), each block summed, and the ``[..., nb]`` partial sums
    added after an optimisation barrier (without it XLA merges the two
    reductions back into one over the whole row). No ``[..., C]`` temporary;
    elsewhere (GPU) this is a two-level row reduction of the same cost.
    """
    c = s.shape[-1]
    if c <= ROW_BLOCK:
        return jnp.sum(jnp.exp(s - shift[..., None]), axis=-1)
    nb, k = _row_blocks(c)
    blocks = s[..., : nb * k].reshape(*s.shape[:-1], nb, k)
    part = jnp.sum(jnp.exp(blocks - shift[..., None, None]), axis=-1)
    total = jnp.sum(lax.optimization_barrier(part), axis=-1)
    if nb * k < c:
        total = total + jnp.sum(jnp.exp(s[..., nb * k :] - shift[..., None]), axis=-1)
    return total


def valid_classes(s: Array, mask: Array | None) -> Array:
    """Classes allowed by ``mask`` whose logit is not ``-inf``."""
    # ``!=`` rather than ``>``: a NaN logit stays valid so that it propagates.
    valid = s != NEG_INF
    return valid if mask is None else valid & mask


def gap_scale(num_classes: int) -> float:
    """The scale of :attr:`Block.wgap` for rows of ``num_classes`` classes."""
    return 0.5 / max(num_classes, 1)


# --------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------


class Labels(NamedTuple):
    """Per-row label facts shared by every integer-label loss."""

    safe: Array  # the label clipped into [0, C): safe to gather with
    active: Array  # bool: the row counts (not ignore_index)
    bad: Array  # bool: a counted row whose label is out of [0, C)


def labels_info(labels: Array, num_classes: int, ignore_index: int | None) -> Labels:
    active = jnp.ones(labels.shape, jnp.bool_)
    if ignore_index is not None:
        active &= labels != ignore_index
    bad = active & ((labels < 0) | (labels >= num_classes))
    return Labels(jnp.clip(labels, 0, max(num_classes - 1, 0)), active, bad)


def label_weight(info: Labels, weight: Array | None, dtype) -> Array:
    """``w[y]`` (1 without class weights), 0 where the row does not count."""
    if weight is None:
        w_y = jnp.ones(info.safe.shape, dtype)
    else:
        w_y = cm.take_per_row(weight.astype(dtype), info.safe)
    return jnp.where(info.active, w_y, jnp.zeros_like(w_y))


def label_logit(x: Array, safe: Array) -> Array:
    """``x[..., y]`` gathered from the caller's buffer (no widened copy is read).

    bf16/f16 logits are gathered as their 16-bit patterns: XLA:CPU (jax 0.10.2)
    widens the operand of a bf16 gather to float32 first, a float32 copy of the
    whole ``[N, C]`` logits (1 GiB at ``[8192, 32768]``); pinned by
    tests/test_workarounds.py::test_bf16_label_gather. Differentiable (the
    tangent is the same gather of the tangent).
    """
    if x.dtype.itemsize == 2 and jnp.issubdtype(x.dtype, jnp.floating):
        return _gather_bits(x, safe)
    return _take(x, safe)


def _take(x: Array, safe: Array) -> Array:
    return jnp.take_along_axis(x, safe[..., None], axis=-1)[..., 0]


@jax.custom_jvp
def _gather_bits(x: Array, safe: Array) -> Array:
    bits = lax.bitcast_convert_type(x, jnp.uint16)
    return lax.bitcast_convert_type(_take(bits, safe), x.dtype)


@_gather_bits.defjvp
def _gather_bits_jvp(primals, tangents):
    x, safe = primals
    return _gather_bits(x, safe), _take(tangents[0], safe)


# --------------------------------------------------------------------------
# Block statistics
# --------------------------------------------------------------------------


class Block(NamedTuple):
    """Statistics of one block of a row's classes (a row, a tile or a shard)."""

    shift: Array  # max of the block's valid logits; 0 when it has none
    total: Array  # sum_V exp(s - shift); 0 when the block has no valid class
    s_y: Array  # the label's logit when this block holds the label, else 0
    count: Array | None  # K, the number of valid classes (with smoothing)
    wsum: Array | None  # sum_V w (with a dense part)
    wgap: Array | None  # gscale * sum_V w (shift - s) (with a dense part)


def block_stats(
    s: Array,
    valid: Array | None,
    y_local: Array | None,
    w: Array | None,
    *,
    dense: bool,
    gscale: float,
    s_y: Array | None = None,
    w_as_given: bool = False,
    raw: Array | None = None,
    cap: float | None = None,
) -> Block:
    """Statistics of a block of logits ``s`` ``[..., B]`` (soft-capped, widened).

    ``valid`` is the block's valid classes (``None``: those with ``s != -inf``,
    read off ``s`` itself without a select); ``y_local`` the label's column in
    this block (a value outside ``[0, B)`` means another block holds it;
    ``None``: no label, or ``s_y`` is given: the label's logit gathered by the
    caller); ``w`` the weights of the dense part ``[B]`` or ``[..., B]``
    (``None``: ones), zeroed off the valid classes unless ``w_as_given``
    (probability targets: a positive target on a ``-inf`` logit gives ``inf``,
    the true value). With ``dense`` the count, weight sum and scaled gap sum
    are formed too. ``raw``: the caller's bf16/f16 logits (``s`` being
    ``softcap(upcast(raw), cap)``): the row maximum is read from them, exactly
    (widening and the soft cap are monotone), so that the widened ``s`` has a
    single reader that XLA:CPU (jax 0.10.2) fuses into it instead of writing a
    float32 copy of the logits; pinned by tests/test_workarounds.py.
    """
    sm = s if valid is None else jnp.where(valid, s, NEG_INF)
    if raw is None:
        m = jnp.max(sm, axis=-1)
    else:  # the maximum of the caller's low-precision buffer, widened and capped after
        m = softcap(
            upcast(jnp.max(raw if valid is None else jnp.where(valid, raw, NEG_INF), -1)), cap
        )
    shift = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m)))
    total = exp_sum(sm, shift)
    if s_y is None:
        s_y = jnp.zeros_like(shift)
        if y_local is not None:
            s_y = jnp.sum(jnp.where(label_hits(s, y_local), s, 0.0), axis=-1)
    count = wsum = wgap = None
    if dense:
        valid = valid_classes(s, valid)
        count = jnp.sum(valid.astype(s.dtype), axis=-1)  # a float sum: one reduction pass
        if w is None:
            wv = valid.astype(s.dtype)
        elif w_as_given:
            wv = _widen(w, s)
        else:
            wv = jnp.where(valid, _widen(w, s), 0.0)
        wsum = count if w is None else jnp.sum(wv, axis=-1)
        # gscale (shift - s) never overflows for finite logits; 0 weights give 0 at -inf.
        gap = shift[..., None] * gscale - s * gscale
        wgap = jnp.sum(cm.safe_mul(wv, gap), axis=-1)
    return Block(shift, total, s_y, count, wsum, wgap)


def labelled_stats(
    x: Array,
    s: Array,
    mask: Array | None,
    w: Array | None,
    y_local: Array,
    *,
    cap: float | Array | None,
    dense: bool,
    gscale: float,
) -> Block:
    """:func:`block_stats` of a block read from the caller's logits ``x`` (``s`` being
    ``softcap(upcast(x), cap)``): the label's logit gathered from ``x`` at
    ``y_local`` where this block holds it (0 where another block does; see
    :func:`label_logit`), not picked by a select over the whole block, and the
    row maximum read from ``x`` when it is low precision (``raw``)."""
    width = x.shape[-1]
    picked = softcap(upcast(label_logit(x, jnp.clip(y_local, 0, max(width - 1, 0)))), cap)
    owned = (y_local >= 0) & (y_local < width)
    s_y = jnp.where(owned, picked, jnp.zeros_like(picked))
    raw = x if x.dtype != s.dtype else None
    return block_stats(s, mask, None, w, dense=dense, gscale=gscale, s_y=s_y, raw=raw, cap=cap)


def _widen(w: Array, s: Array) -> Array:
    # explicit broadcast: the package works under jax_numpy_rank_promotion="raise"
    return jnp.broadcast_to(w.astype(s.dtype), s.shape)


def label_hits(s: Array, y_local: Array) -> Array:
    """``[..., B]`` one-hot of the label's column in a block (all false where another
    block holds it), from a ``[1, B]`` iota: no ``[N, B]`` constant, and a select
    (not a gather, whose transpose scatters into a zero ``[N, B]`` buffer)."""
    shape = (1,) * (s.ndim - 1) + s.shape[-1:]
    return lax.broadcasted_iota(y_local.dtype, shape, s.ndim - 1) == y_local[..., None]


def merge(blocks: Block, gscale: float) -> Block:
    """Exact combination of blocks stacked on a leading axis (tiles or shards)."""
    # A block without valid classes (total 0) takes no part in the maximum and adds nothing.
    m = jnp.max(jnp.where(blocks.total > 0, blocks.shift, NEG_INF), axis=0)
    shift = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
    total = jnp.sum(cm.safe_mul(blocks.total, jnp.exp(blocks.shift - shift[None])), axis=0)
    s_y = jnp.sum(blocks.s_y, axis=0)
    count = wsum = wgap = None
    if blocks.wgap is not None:
        count = jnp.sum(blocks.count, axis=0)
        wsum = jnp.sum(blocks.wsum, axis=0)
        # each block's gap sum re-based from its own shift to the common one
        rebase = shift[None] * gscale - blocks.shift * gscale
        wgap = jnp.sum(blocks.wgap + cm.safe_mul(blocks.wsum, rebase), axis=0)
    return Block(shift, total, s_y, count, wsum, wgap)


def merge_pair(a: Block, b: Block, gscale: float) -> Block:
    """:func:`merge` of two blocks (the online update over vocabulary tiles)."""
    return merge(jax.tree.map(lambda u, v: jnp.stack([u, v]), a, b), gscale)


def empty_block(like: Array, dense: bool) -> Block:
    """A block without valid classes (the start of an online merge); ``like`` is a
    per-row array of the computation dtype."""
    zero = jnp.zeros_like(like)
    extra = (zero, zero, zero) if dense else (None, None, None)
    return Block(zero, zero, zero, *extra)


def varying(x: Array) -> frozenset:
    """The manual mesh axes ``x`` varies over (empty outside typed ``shard_map``)."""
    mat = getattr(jax.typeof(x), "mat", None)
    return getattr(mat, "varying", frozenset())


def gather_shards(x: Array, axis_name) -> Array:
    """``x`` of every shard stacked on a new leading axis, the same on every device.

    Inside ``shard_map`` ``x`` is typed as varying over ``axis_name`` and the
    result as invariant; traced per device without those types (the
    partitioning rule of the fused functions) it is a plain all-gather.
    """
    axes = set(axis_name) if isinstance(axis_name, tuple) else {axis_name}
    typed = axes <= varying(x)
    return jax.lax.all_gather(x, axis_name, **({"to": "invarying"} if typed else {}))


def gather_blocks(block: Block, axis_name) -> Block:
    """Every shard's block statistics in one all-gather, stacked on a leading axis."""
    # Without class weights the weight sum is the count: gathered once.
    alias = block.wsum is block.count and block.count is not None
    parts = block._replace(wsum=None) if alias else block
    fields = [f for f in parts if f is not None]
    stacked = gather_shards(jnp.stack(fields), axis_name)  # [P, k, ...]
    it = iter(range(len(fields)))
    out = Block(*(None if f is None else stacked[:, next(it)] for f in parts))
    return out._replace(wsum=out.count) if alias else out


# --------------------------------------------------------------------------
# Rows: loss and coefficients from the combined statistics
# --------------------------------------------------------------------------


class Rows(NamedTuple):
    """Per-row scalars of the closed form (0 on rows that do not count)."""

    shift: Array  # S
    log_sum: Array  # lse = S + log_sum
    qy: Array  # weight of the label's one-hot target
    e: Array  # weight of the dense target part
    a: Array  # A = sum_c q_c + 2 z zw lse
    counted: Array  # bool: the row counts and has a valid class


def finish(
    block: Block,
    *,
    qy: Array | None,
    e: Array | None,
    zw: Array | None,
    z: float | Array,
    gscale: float,
    active: Array | None = None,
    bad: Array | None = None,
) -> tuple[Array, Rows]:
    """Per-row loss and :class:`Rows` from a row's combined statistics.

    Rows that are not ``active`` (ignored) or have no valid class give 0 and a
    zero gradient; ``bad`` rows (out-of-range labels) a NaN loss and a zero
    gradient, so that masking the loss also cleans the gradient.
    """
    counted = ~(block.total <= 0)  # not `> 0`: a NaN total (a NaN logit) stays, and propagates
    if active is not None:
        counted &= active
    zero = jnp.zeros_like(block.shift)
    log_sum = jnp.where(counted, jnp.log(jnp.where(counted, block.total, 1.0)), zero)
    shift = jnp.where(counted, block.shift, zero)
    s_y = jnp.where(counted, block.s_y, zero)
    qy = zero if qy is None else jnp.where(counted, qy, zero)
    e = zero if e is None else jnp.where(counted, e, zero)
    lse = shift + log_sum
    loss = cm.safe_mul(qy, log_sum + (shift - s_y))  # CE = lse - s_y
    a = qy
    if block.wgap is not None:
        # sum_V e w (lse - s) = e (log_sum sum_V w + sum_V w (S - s))
        wgap = jnp.where(counted, block.wgap, zero)
        loss = loss + cm.safe_mul(e, log_sum * block.wsum) + cm.safe_mul(e / gscale, wgap)
        a = a + e * block.wsum
    if zw is not None and cm.maybe_nonzero(z):
        zw = jnp.where(counted, zw, zero)
        loss = loss + z * zw * lse * lse  # PaLM z-loss
        a = a + 2.0 * z * zw * lse
    if bad is not None:
        loss = jnp.where(bad, jnp.full_like(loss, jnp.nan), loss)
        counted &= ~bad
        qy, e, a = (jnp.where(bad, zero, v) for v in (qy, e, a))
    return loss, Rows(shift, log_sum, qy, e, a, counted)


def finish_labels(
    block: Block, info: Labels, w_y: Array, *, eps: float | Array, z: float | Array, gscale: float
) -> tuple[Array, Array, Rows]:
    """:func:`finish` for integer labels: ``qy = (1 - eps) w_y``, ``e = eps / K``,
    ``zw = w_y``. Returns the loss, each row's share of the mean's divisor (``w_y``
    on rows with a valid class, else 0) and the rows."""
    e = eps / jnp.maximum(block.count, 1.0) if block.count is not None else None
    loss, rows = finish(
        block,
        qy=(1.0 - eps) * w_y,
        e=e,
        zw=w_y,
        z=z,
        gscale=gscale,
        active=info.active,
        bad=info.bad,
    )
    return loss, jnp.where(block.total > 0, w_y, jnp.zeros_like(w_y)), rows


def probs(s: Array, valid: Array | None, rows: Rows) -> Array:
    """``softmax`` of a block from the row's ``(S, log_sum)``; 0 off the valid
    classes (``valid=None``: ``-inf`` logits give 0 by themselves) and on rows
    that do not count."""
    z = (s - rows.shift[..., None]) - rows.log_sum[..., None]
    keep = rows.counted[..., None] if valid is None else rows.counted[..., None] & valid
    return jnp.exp(jnp.where(keep, z, NEG_INF))


def coefficient(
    s: Array,
    valid: Array | None,
    y_local: Array | None,
    w: Array | None,
    rows: Rows,
    *,
    dense: bool,
    w_as_given: bool = False,
    cap: float | None = None,
) -> Array:
    """``dloss/ds = p A - q`` for a block (``valid``, ``y_local``, ``w`` and
    ``w_as_given`` as in :func:`block_stats`); exactly 0 on rows that do not
    count: every target term is scaled by the row's ``qy`` or ``e``, which
    :func:`finish` zeroes there. With a soft ``cap`` (``s = softcap(x, cap)``)
    it is times the cap's slope: ``dloss/dx``."""
    g = probs(s, valid, rows) * rows.a[..., None]
    if y_local is not None:
        g = g - jnp.where(label_hits(s, y_local), rows.qy[..., None], 0.0)
    if dense:
        wv = rows.e[..., None] if w is None else rows.e[..., None] * _widen(w, s)
        # as given: a positive target on a -inf logit of a counted row keeps its
        # slope -e w (the loss there is inf, the true value)
        g = g - (wv if w_as_given else jnp.where(valid_classes(s, valid), wv, 0.0))
    slope = softcap_slope(s, cap)
    return g if slope is None else g * slope


def row_tangent(g: Array, dx: Array) -> tuple[Array, Array]:
    """``(sum_c g_c dx_c, 0)``: the tangent of a rule's ``(loss, share)`` outputs
    along ``dx``, ``g`` being ``dloss/dx`` (the share does not move)."""
    dloss = jnp.sum(g * dx.astype(g.dtype), axis=-1)
    return dloss, jnp.zeros_like(dloss)

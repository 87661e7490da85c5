"""Cross-entropy for large vocabularies: fused linear + softmax CE, vocabulary parallelism.

Two problems share this module.

* ``fused_linear_softmax_cross_entropy(hidden, kernel, labels)`` computes
  ``softmax_cross_entropy_with_integer_labels(hidden @ kernel + bias, labels)``
  without ever holding the ``[N, V]`` logits. Rows are processed in chunks of
  ``chunk_size`` tokens (``lax.scan``); inside a chunk the vocabulary is
  walked in tiles of about 4 MiB (``fori_loop``): an online logsumexp while
  the chunk's ``[chunk, V]`` logits are written once, then ``g`` is formed and
  consumed tile by tile while it is in cache (``dh += g @ W_t.T``,
  ``dW[:, t] += h.T @ g``). The chunk's logits are the largest temporary.
* ``vocab_parallel_softmax_cross_entropy(logits, labels, axis_name=...)`` runs
  inside ``jax.shard_map`` with the class axis sharded: each device reduces its
  slice to a few numbers per row, one all-gather combines them, and the
  gradient ``softmax * A - q`` is formed locally with no communication.

Math, per row, with ``s = cap * tanh(x / cap)`` (identity without a cap),
``lse = logsumexp(s)``, ``p = softmax(s)``, ``K`` classes and ``eps`` the
label smoothing (PyTorch semantics), ``z`` the z-loss coefficient:

    loss   = (1 - eps) (lse - s_y) + eps (lse - mean_c s_c) + z lse^2
    dl/ds  = p (1 + 2 z lse) - (1 - eps) onehot(y) - eps / K
    ds/dx  = 1 - (s / cap)^2                       # d/dx cap tanh(x / cap)

Derivative design (fused loss)
------------------------------
The private ``_fused`` is a ``jax.custom_jvp`` whose tangent is linear in the
input tangents, so reverse mode comes from transposition and forward mode
(``jvp``, ``jacfwd``) works as well. Its rule uses ``symbolic_zeros`` to know
which of ``hidden``, ``kernel`` and ``bias`` are being differentiated, and
picks one of two strategies:

* ``"fused"`` (default for ``reduction="mean"``/``"sum"``, and for
  ``reduction="none"`` when only ``hidden`` is differentiated): the primal
  pass computes the gradient coefficients ``G_h = dL/dhidden``,
  ``G_W = dL/dkernel``, ``G_b = dL/dbias`` chunk by chunk while the chunk's
  logits are still in memory (Liger-Kernel's approach); the tangent is
  ``<G_h, dh> + <G_W, dW> + <G_b, db>``. Reverse mode then costs three
  ``N x D x V`` matmuls in total (logits, ``g @ kernel.T``, ``hidden.T @ g``),
  the same as the materialised computation, and the residuals are the
  gradients themselves (``[N, D]``, ``[D, V]``, ``[V]``).
* ``"recompute"`` (used for ``reduction="none"`` when ``kernel`` or ``bias``
  is differentiated, where the cotangent differs per row and ``G_W`` cannot be
  formed ahead of it): the primal pass keeps only the per-row ``lse``; the
  tangent is a ``lax.scan`` over chunks whose body sits under
  ``jax.checkpoint`` and recomputes each chunk's logits, so its transpose
  rebuilds ``g`` chunk by chunk (four matmuls in total).

The vocabulary-parallel fused loss uses the same machinery with two passes
(local statistics, one all-gather, then the gradient pass, which recomputes
each tile's logits: four matmuls) and one ``[N, D]`` all-reduce that sums each
shard's ``g @ kernel_shard.T``.

Measured alternative: forming only the per-row ``lse`` in the forward pass and
recomputing logits in the backward (the ``"recompute"`` strategy for every
reduction, as jax-cce and Apple's CCE do) costs a fourth matmul; on CPU it was
slower than the default (benchmarks/results/large_vocab_cpu.md).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxloss import _common as cm
from jaxloss._classification import (
    _logsumexp,
    _masked,
    _prepare_class_weight,
    _prepare_int_labels,
    _prepare_logits,
    _softcap,
    _softcap_slope,
    _softmax_from_lse,
    _upcast,
    _valid_classes,
)

ArrayLike = jax.typing.ArrayLike
Array = jax.Array

# Logits scratch per chunk chosen when ``chunk_size=None``: at most this many
# bytes, and at most 1/8 of the full [N, V] float32 logits.
_CHUNK_BYTES = 256 * 2**20
_CHUNK_FRACTION = 8
# Within a chunk, the vocabulary is walked in tiles of about this many bytes.
_TILE_BYTES = 4 * 2**20


# --------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------


def _bind_axis(axis_name: Any, fn: str) -> tuple[Array, int]:
    """Returns ``(shard index, number of shards)`` or a clear error when unbound."""
    try:
        size = lax.axis_size(axis_name)
        index = lax.axis_index(axis_name)
    except NameError:
        raise ValueError(
            f"{fn}: axis_name={axis_name!r} is not bound. Call it inside jax.shard_map "
            "(or another mapped context) whose mesh has that axis, with the class axis "
            "sharded over it."
        ) from None
    return index, int(size)


def _varying(x: Array) -> frozenset:
    mat = getattr(jax.typeof(x), "mat", None)
    return getattr(mat, "varying", frozenset())


def _match_varying(x: Array, *refs: Array | None) -> Array:
    """Marks a fresh loop carry as varying over the manual mesh axes its updates vary over.

    Inside ``jax.shard_map`` (``check_vma=True``) a ``lax.scan`` carry must keep
    one type; a ``zeros`` initialiser is device-invariant while the values added
    to it vary with the sharded inputs.
    """
    want = frozenset().union(*(_varying(r) for r in refs if r is not None))
    missing = tuple(sorted(want - _varying(x), key=str))
    return lax.pcast(x, missing, to="varying") if missing else x


def _default_chunk(n: int, v: int) -> int:
    """Token rows per chunk: [chunk, V] float32 logits of at most min(256 MiB, N*V*4/8)."""
    budget = min(_CHUNK_BYTES, n * v * 4 // _CHUNK_FRACTION)
    rows = max(budget // (4 * max(v, 1)), 1)
    if rows >= 8:
        rows -= rows % 8
    return int(max(1, min(n, rows)))


def _dot(a: Array, b: Array, contract: tuple[int, int], dtype) -> Array:
    return lax.dot_general(
        a, b, (((contract[0],), (contract[1],)), ((), ())), preferred_element_type=dtype
    )


def _chunk_rows(x: Array, chunk: int, num_chunks: int, fill=0) -> Array:
    """Pads the leading axis to ``num_chunks * chunk`` and splits it into chunks."""
    pad = num_chunks * chunk - x.shape[0]
    if pad:
        widths = [(0, pad)] + [(0, 0)] * (x.ndim - 1)
        x = jnp.pad(x, widths, constant_values=fill)
    return x.reshape((num_chunks, chunk, *x.shape[1:]))


def _unchunk(x: Array, n: int) -> Array:
    return x.reshape((-1, *x.shape[2:]))[:n]


# --------------------------------------------------------------------------
# Fused linear + softmax cross-entropy (optionally vocabulary-parallel)
# --------------------------------------------------------------------------


class _Opts(NamedTuple):
    ignore_index: int | None
    eps: float
    z: float
    cap: float | None
    reduction: str
    chunk: int
    num_classes: int  # global V
    axis_name: Any  # None: unsharded
    strategy: str  # "fused" or "recompute"


class _Rows(NamedTuple):
    """Per-row quantities that depend only on the labels, split into chunks."""

    y: Array  # labels local to this shard's classes (may be out of [0, V_local))
    active: Array  # bool: the row counts
    bad: Array  # bool: counted row with an out-of-range label
    scale: Array  # gradient scale: 1/count (mean), 1 (sum, none); 0 where inactive
    count: Array  # number of counted rows (scalar)


def _rows(y, opts: _Opts, dtype, n, num_chunks, offset):
    active = jnp.ones(y.shape, jnp.bool_)
    if opts.ignore_index is not None:
        active &= y != opts.ignore_index
    bad = active & ((y < 0) | (y >= opts.num_classes))
    count = jnp.sum(active).astype(dtype)
    if opts.reduction == "mean":
        inv = cm.safe_divide(jnp.ones((), dtype), count)
    else:
        inv = jnp.ones((), dtype)
    scale = jnp.where(active, inv, jnp.zeros((), dtype))
    y_local = y if offset is None else y - offset.astype(y.dtype)
    ch = partial(_chunk_rows, chunk=opts.chunk, num_chunks=num_chunks)
    return _Rows(ch(y_local), ch(active, fill=False), ch(bad, fill=False), ch(scale), count)


def _logits(h_c, w, b, dtype, cap):
    """One chunk's (soft-capped) logits in the compute dtype: [chunk, V_local]."""
    x = _dot(h_c, w, (1, 0), dtype)
    if b is not None:
        x = x + b.astype(dtype)[None, :]
    return _softcap(x, cap)


def _row_loss(lse, s_y, sum_s, active, bad, opts: _Opts):
    # CE = lse - s_y; smoothing adds eps (lse - mean_c s_c); PaLM z-loss z lse^2
    loss = (1.0 - opts.eps) * (lse - s_y)
    if opts.eps > 0.0:
        loss = loss + opts.eps * (lse - sum_s / opts.num_classes)
    if opts.z > 0.0:
        loss = loss + opts.z * lse * lse
    loss = jnp.where(active, loss, jnp.zeros_like(loss))
    return jnp.where(bad, jnp.full_like(loss, jnp.nan), loss)


def _coeffs(s, lse, y_c, active, bad, scale, opts: _Opts):
    """dL/dx for one chunk: (softmax * A - q) * scale, times the soft-cap slope."""
    # No [chunk, V] constant appears below (iota is [1, V], masks select a row
    # vector): XLA would hoist such a loop-invariant broadcast out of the scan
    # and keep it alive as an extra [chunk, V] buffer.
    lse = jnp.where(active, lse, jnp.zeros_like(lse))
    a = 1.0 + 2.0 * opts.z * lse
    a = jnp.where(bad, jnp.full_like(a, jnp.nan), a) * scale
    g = jnp.exp(s - lse[:, None]) * a[:, None]
    cols = lax.broadcasted_iota(y_c.dtype, (1, s.shape[1]), 1)
    g = g - (cols == y_c[:, None]).astype(g.dtype) * ((1.0 - opts.eps) * scale)[:, None]
    if opts.eps > 0.0:
        g = g - (opts.eps / opts.num_classes * scale)[:, None]
    # Inactive rows get exactly 0 (even for non-finite hidden): `scale` is 0 there.
    g = jnp.where(active[:, None], g, scale[:, None])
    if opts.cap is not None:
        g = g * (1.0 - (s / opts.cap) ** 2)  # d/dx cap tanh(x / cap) = 1 - tanh^2
    return g


def _reduce(loss_rows, rows: _Rows, opts: _Opts):
    if opts.reduction == "none":
        return loss_rows
    total = jnp.sum(loss_rows)
    return total if opts.reduction == "sum" else cm.safe_divide(total, rows.count)


def _setup(h, w, y, opts: _Opts):
    n = h.shape[0]
    dtype = cm.compute_dtype(h, w)
    num_chunks = -(-n // opts.chunk)
    offset = None
    if opts.axis_name is not None:
        index, _ = _bind_axis(opts.axis_name, "vocab_parallel_fused_linear_softmax_cross_entropy")
        offset = index * w.shape[1]
    rows = _rows(y, opts, dtype, n, num_chunks, offset)
    h_chunks = _chunk_rows(h, opts.chunk, num_chunks)
    return n, dtype, num_chunks, rows, h_chunks


def _combine(stats, opts: _Opts):
    """Global per-row statistics from each shard's (one all-gather for all of them)."""
    if opts.axis_name is None:
        return stats
    gathered = lax.all_gather(jnp.stack(stats), opts.axis_name, to="invarying")  # [P, k, N]
    lse = _logsumexp(jnp.moveaxis(gathered[:, 0], 0, -1))  # logsumexp of shard lse's
    return [lse] + [jnp.sum(gathered[:, i], axis=0) for i in range(1, len(stats))]


def _stats_pass(h_chunks, w, b, rows: _Rows, dtype, n, opts: _Opts):
    """Local per-row statistics without gradients (one matmul, tile by tile)."""

    def body(_, xs):
        h_c, y_c = xs
        stats, _ = _chunk_stats(h_c, *_pin(w, b, h_c), y_c, dtype, opts, store=False)
        return None, jnp.stack(stats)

    _, stats = lax.scan(body, None, (h_chunks, rows.y))  # [chunks, k, chunk]
    return [_unchunk(stats[:, i], n) for i in range(stats.shape[1])]


def _loss_from_stats(stats, rows: _Rows, n, opts):
    lse, s_y = stats[0], stats[1]
    sum_s = stats[2] if opts.eps > 0.0 else None
    loss = _row_loss(lse, s_y, sum_s, _unchunk(rows.active, n), _unchunk(rows.bad, n), opts)
    lse = jnp.where(_unchunk(rows.active, n), lse, jnp.zeros_like(lse))
    return _reduce(loss, rows, opts), lse


def _pin(w, b, h_c):
    """``(w, b)`` tied to the current chunk by an optimization barrier.

    Without it XLA hoists the tile slices of W (loop-invariant in the chunk
    loop) out of the loop and keeps a tiled copy of the whole kernel.
    """
    w, b, _ = lax.optimization_barrier((w, b, h_c))
    return w, b


def _vocab_tiles(v: int, rows: int) -> tuple[int, int]:
    """(columns per tile, number of tiles): [rows, tile] and [D, tile] float32 tiles
    of about 4 MiB (``rows`` is the larger of the chunk and D), and at least 8
    tiles when V allows (so the tiles stay small beside the chunk's logits)."""
    tile = min(_TILE_BYTES // (4 * max(rows, 1)), -(-v // 8))
    tile = min(max(tile, 128), v)
    return tile, -(-v // tile)


def _tile_start(i, tile: int, v: int):
    """First column of tile ``i`` and of the slice read for it. The last tile is
    shifted left to stay in bounds; its columns before ``first`` belong to the
    previous tile and are masked out. A single tile is the whole vocabulary."""
    if tile == v:
        return 0, 0
    first = i * tile
    return first, jnp.minimum(first, v - tile)


def _slice_cols(x, start, tile: int, axis: int):
    # No slice for a single tile: XLA would hoist the loop-invariant copy of W.
    if tile == x.shape[axis]:
        return x
    return lax.dynamic_slice_in_dim(x, start, tile, axis=axis)


def _tile_columns(start, first, tile: int, v: int, dtype):
    """Column ids [1, tile] of a tile and its 0/1 mask of columns it owns."""
    if tile == v:
        cols = lax.broadcasted_iota(dtype, (1, tile), 1)
        return cols, None
    cols = start + lax.broadcasted_iota(start.dtype, (1, tile), 1)
    return cols.astype(dtype), cols >= first


def _tile_logits(h_c, w, b, start, tile, dtype, cap):
    w_t = _slice_cols(w, start, tile, 1)
    x = _dot(h_c, w_t, (1, 0), dtype)
    if b is not None:
        x = x + _slice_cols(b, start, tile, 0).astype(dtype)[None, :]
    return _softcap(x, cap), w_t


def _chunk_stats(h_c, w, b, y_c, dtype, opts: _Opts, store: bool):
    """Row statistics of one chunk, tile by tile: online logsumexp, s_y, sum_c s_c.

    With ``store`` the chunk's [chunk, V] logits are also written out (for the
    gradient pass that follows); otherwise only one [chunk, tile] tile exists.
    """
    c, v = h_c.shape[0], w.shape[1]
    tile, tiles = _vocab_tiles(v, max(c, h_c.shape[1]))
    refs = (h_c, w, b, y_c)
    zeros = _match_varying(jnp.zeros((c,), dtype), *refs)
    init = {"m": zeros - jnp.inf, "l": zeros, "s_y": zeros}
    if opts.eps > 0.0:
        init["sum_s"] = zeros
    if store:
        init["s"] = _match_varying(jnp.zeros((c, v), dtype), *refs)

    def step(i, acc):
        first, start = _tile_start(i, tile, v)
        s, _ = _tile_logits(h_c, w, b, start, tile, dtype, opts.cap)
        cols, fresh = _tile_columns(start, first, tile, v, y_c.dtype)
        # Row-vector masks only: a [chunk, tile] constant would be hoisted out of the loop.
        if fresh is not None:
            s_owned = s + jnp.where(fresh, 0.0, -jnp.inf).astype(s.dtype)
            own = fresh.astype(s.dtype)
        else:
            s_owned, own = s, None
        # Online logsumexp: l = sum exp(s - m) with a running max m.
        m = jnp.maximum(acc["m"], jnp.max(s_owned, axis=-1))
        m_safe = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
        out = dict(acc)
        out["m"] = m
        out["l"] = acc["l"] * jnp.exp(acc["m"] - m_safe) + jnp.sum(
            jnp.exp(s_owned - m_safe[:, None]), axis=-1
        )
        hit = (cols == y_c[:, None]).astype(s.dtype)
        if own is not None:
            hit = hit * own
        out["s_y"] = acc["s_y"] + jnp.sum(s * hit, axis=-1)
        if opts.eps > 0.0:
            out["sum_s"] = acc["sum_s"] + jnp.sum(s if own is None else s * own, axis=-1)
        if store:
            out["s"] = (
                s if tile == v else lax.dynamic_update_slice_in_dim(acc["s"], s, start, axis=1)
            )
        return out

    acc = lax.fori_loop(0, tiles, step, init)
    m_safe = jnp.where(jnp.isfinite(acc["m"]), acc["m"], jnp.zeros_like(acc["m"]))
    lse = jnp.log(acc["l"]) + m_safe
    stats = [lse, acc["s_y"]] + ([acc["sum_s"]] if opts.eps > 0.0 else [])
    return stats, acc.get("s")


def _chunk_grads(h_c, w, b, y_c, act_c, bad_c, sc_c, lse_c, s_full, dtype, opts, want, acc):
    """Adds one chunk's gradient coefficients, tile by tile.

    ``g`` exists one [chunk, tile] tile at a time and is used by the two
    products while it is in cache: ``dh_c += g @ W_t.T``, ``G_W[:, t] += h_c.T @ g``.
    The tile's logits come from ``s_full`` (stored by the statistics pass) or,
    without it, are recomputed.
    """
    want_h, want_w, want_b = want
    c, v = h_c.shape[0], w.shape[1]
    tile, tiles = _vocab_tiles(v, max(c, h_c.shape[1]))
    low = h_c.dtype  # g is cast to the matmul dtype, as autodiff of `h @ W` would

    def step(i, acc):
        dh_c, g_w, g_b = acc
        first, start = _tile_start(i, tile, v)
        if s_full is None:
            s, w_t = _tile_logits(h_c, w, b, start, tile, dtype, opts.cap)
        else:
            s, w_t = _slice_cols(s_full, start, tile, 1), _slice_cols(w, start, tile, 1)
        g = _coeffs(s, lse_c, y_c - jnp.asarray(start, y_c.dtype), act_c, bad_c, sc_c, opts)
        _, fresh = _tile_columns(start, first, tile, v, y_c.dtype)
        if fresh is not None:
            g = g * fresh.astype(g.dtype)  # columns of the previous tile
        gl = g.astype(low)
        if want_h:
            dh_c = dh_c + _dot(gl, w_t, (1, 1), dtype)  # g @ W_t.T: [chunk, D]
        if want_w:
            part = _dot(h_c, gl, (0, 0), dtype)  # h_c.T @ g: [D, tile]
            if tile == v:
                g_w = g_w + part
            else:
                old = lax.dynamic_slice_in_dim(g_w, start, tile, axis=1)
                g_w = lax.dynamic_update_slice_in_dim(g_w, old + part, start, axis=1)
        if want_b:
            part = jnp.sum(g, axis=0)
            if tile == v:
                g_b = g_b + part
            else:
                old = lax.dynamic_slice_in_dim(g_b, start, tile)
                g_b = lax.dynamic_update_slice_in_dim(g_b, old + part, start, 0)
        return dh_c, g_w, g_b

    dh0 = _match_varying(jnp.zeros((c, h_c.shape[1]), dtype), h_c, w, b, y_c, sc_c)
    dh_c, g_w, g_b = lax.fori_loop(0, tiles, step, (dh0 if want_h else None, *acc))
    return dh_c, g_w, g_b


def _grad_pass(h_chunks, w, b, rows: _Rows, dtype, n, opts: _Opts, want, lse=None):
    """Loss and gradient coefficients chunk by chunk.

    With ``lse=None`` (unsharded) each chunk first computes its rows' logits
    (stored, [chunk, V]) and statistics, then the gradients from the stored
    logits: three matmuls in all. Given the global ``lse`` (sharded), the
    gradient pass recomputes each tile's logits and makes no loss.
    """
    want_h, want_w, want_b = want
    lse_chunks = None if lse is None else _chunk_rows(lse, opts.chunk, h_chunks.shape[0])
    refs = (h_chunks, w, b, rows.scale)
    g_w0 = _match_varying(jnp.zeros(w.shape, dtype), *refs) if want_w else None
    g_b0 = _match_varying(jnp.zeros(w.shape[1:], dtype), *refs) if want_b else None

    def body(carry, xs):
        h_c, y_c, act_c, bad_c, sc_c, lse_c = xs
        w_, b_ = _pin(w, b, h_c)
        out = {}
        s_full = None
        if lse_c is None:
            st, s_full = _chunk_stats(h_c, w_, b_, y_c, dtype, opts, store=any(want))
            lse_c = st[0]
            out["loss"] = _row_loss(
                st[0], st[1], st[2] if opts.eps > 0.0 else None, act_c, bad_c, opts
            )
        if any(want):
            dh_c, *carry = _chunk_grads(
                h_c, w_, b_, y_c, act_c, bad_c, sc_c, lse_c, s_full, dtype, opts, want, carry
            )
            if want_h:
                out["h"] = dh_c
        return tuple(carry), out

    xs = (h_chunks, rows.y, rows.active, rows.bad, rows.scale, lse_chunks)
    (g_w, g_b), out = lax.scan(body, (g_w0, g_b0), xs)
    g_h = _unchunk(out["h"], n) if want_h else None
    loss_rows = _unchunk(out["loss"], n) if "loss" in out else None
    return loss_rows, g_h, g_w, g_b


def _tangent_rows(h_chunks, w, b, rows: _Rows, lse, dtype, n, opts: _Opts, dh, dw, db):
    """Per-row tangent ``sum_v g (dh W + h dW + db)``, logits recomputed per chunk.

    Linear in ``(dh, dw, db)``. The scan body is checkpointed, so under reverse
    mode the transpose recomputes each chunk's ``g`` instead of saving [N, V].
    """
    num_chunks = h_chunks.shape[0]
    lse_chunks = _chunk_rows(lse, opts.chunk, num_chunks)
    dh_chunks = None if dh is None else _chunk_rows(dh, opts.chunk, num_chunks)

    @jax.checkpoint
    def body(_, xs):
        h_c, y_c, act_c, bad_c, sc_c, lse_c, dh_c = xs
        s = _logits(h_c, w, b, dtype, opts.cap)
        g = _coeffs(s, lse_c, y_c, act_c, bad_c, sc_c, opts)
        dlogits = jnp.zeros_like(g)
        if dh_c is not None:
            dlogits = dlogits + _dot(dh_c, w, (1, 0), dtype)
        if dw is not None:
            dlogits = dlogits + _dot(h_c, dw, (1, 0), dtype)
        if db is not None:
            dlogits = dlogits + db.astype(dtype)[None, :]
        return None, jnp.sum(g * dlogits, axis=-1)

    xs = (h_chunks, rows.y, rows.active, rows.bad, rows.scale, lse_chunks, dh_chunks)
    _, t = lax.scan(body, None, xs)
    t = _unchunk(t, n)
    if opts.axis_name is not None:
        t = lax.psum(t, opts.axis_name)
    return t


def _forward(h, w, b, y, opts: _Opts):
    n, dtype, _, rows, h_chunks = _setup(h, w, y, opts)
    if opts.axis_name is None and opts.strategy == "fused":
        loss_rows, *_ = _grad_pass(h_chunks, w, b, rows, dtype, n, opts, (False,) * 3)
        return _reduce(loss_rows, rows, opts)
    stats = _combine(_stats_pass(h_chunks, w, b, rows, dtype, n, opts), opts)
    return _loss_from_stats(stats, rows, n, opts)[0]


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def _fused(h, w, b, y, opts: _Opts):
    return _forward(h, w, b, y, opts)


@partial(_fused.defjvp, symbolic_zeros=True)
def _fused_jvp(opts: _Opts, primals, tangents):
    h, w, b, y = primals
    dh, dw, db, _ = tangents
    dh = None if cm.is_zero(dh) else dh
    dw = None if cm.is_zero(dw) else dw
    db = None if (b is None or cm.is_zero(db)) else db
    want = (dh is not None, dw is not None, db is not None)
    n, dtype, _, rows, h_chunks = _setup(h, w, y, opts)
    scalar = opts.reduction != "none"
    if not any(want):
        loss = _forward(h, w, b, y, opts)
        return loss, jnp.zeros_like(loss)

    if opts.strategy == "fused" and (scalar or not (want[1] or want[2])):
        # Gradients in the forward pass; the tangent is <G, d(inputs)>.
        if opts.axis_name is None:
            loss_rows, g_h, g_w, g_b = _grad_pass(h_chunks, w, b, rows, dtype, n, opts, want)
            loss = _reduce(loss_rows, rows, opts)
        else:
            stats = _combine(_stats_pass(h_chunks, w, b, rows, dtype, n, opts), opts)
            loss, lse = _loss_from_stats(stats, rows, n, opts)
            _, g_h, g_w, g_b = _grad_pass(h_chunks, w, b, rows, dtype, n, opts, want, lse)
            if g_h is not None:
                g_h = lax.psum(g_h, opts.axis_name)  # the one [N, D] all-reduce
        tangent = jnp.zeros_like(loss)
        if dh is not None:
            prod = g_h * dh.astype(dtype)
            tangent = tangent + (jnp.sum(prod) if scalar else jnp.sum(prod, axis=-1))
        sharded = None
        if dw is not None:
            sharded = jnp.sum(g_w * dw.astype(dtype))
        if db is not None:
            part = jnp.sum(g_b * db.astype(dtype))
            sharded = part if sharded is None else sharded + part
        if sharded is not None:
            if opts.axis_name is not None:
                sharded = lax.psum(sharded, opts.axis_name)
            tangent = tangent + sharded
        return loss, tangent

    # Recompute strategy: keep the per-row lse; the tangent re-forms g chunk by chunk.
    stats = _combine(_stats_pass(h_chunks, w, b, rows, dtype, n, opts), opts)
    loss, lse = _loss_from_stats(stats, rows, n, opts)
    t = _tangent_rows(h_chunks, w, b, rows, lse, dtype, n, opts, dh, dw, db)
    return loss, (jnp.sum(t) if scalar else t)


def _prepare_fused(
    hidden,
    kernel,
    labels,
    bias,
    ignore_index,
    label_smoothing,
    z_loss,
    logit_softcap,
    reduction,
    chunk_size,
    kernel_name,
    bias_name,
):
    h = cm.as_float_array(hidden, "hidden")
    w = cm.as_float_array(kernel, kernel_name)
    if h.ndim != 2:
        raise ValueError(
            f"hidden must have shape [N, D] (tokens, features); got hidden.shape={h.shape}. "
            "Flatten leading batch axes with hidden.reshape(-1, D) or use jax.vmap."
        )
    if w.ndim != 2 or w.shape[0] != h.shape[1]:
        raise ValueError(
            f"{kernel_name} must have shape [D, V] with D = hidden.shape[1] = {h.shape[1]} "
            f"(the Flax Dense layout; a tied embedding passes embedding.T); got "
            f"{kernel_name}.shape={w.shape} for hidden.shape={h.shape}."
        )
    y = cm.as_int_array(labels, "labels")
    if y.shape != h.shape[:1]:
        raise ValueError(
            f"labels must have shape [N] = ({h.shape[0]},), one class id per row of hidden; "
            f"got labels.shape={y.shape} for hidden.shape={h.shape}."
        )
    b = None
    if bias is not None:
        b = cm.as_float_array(bias, bias_name)
        if b.shape != w.shape[1:]:
            raise ValueError(
                f"{bias_name} must have shape ({w.shape[1]},), one per column of "
                f"{kernel_name}; got {bias_name}.shape={b.shape}."
            )
    cm.check_reduction(reduction)
    ignore_index = cm.static_int(ignore_index, "ignore_index")
    eps = cm.static_float(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    z = cm.static_float(z_loss, "z_loss", low=0.0)
    cap = cm.static_float(logit_softcap, "logit_softcap", low=0.0, low_open=True, allow_none=True)
    chunk = cm.static_int(chunk_size, "chunk_size")
    if chunk is not None and chunk <= 0:
        raise ValueError(f"chunk_size must be a positive number of rows; got {chunk}.")
    # One matmul dtype: the wider of the two (bf16 x f32 -> f32); bf16 stays bf16.
    if h.dtype != w.dtype:
        common = h.dtype if h.dtype.itemsize > w.dtype.itemsize else w.dtype
        if h.dtype.itemsize == w.dtype.itemsize:
            common = jnp.dtype(jnp.float32)
        h, w = h.astype(common), w.astype(common)
    return h, w, y, b, ignore_index, eps, z, cap, chunk


def fused_linear_softmax_cross_entropy(
    hidden: ArrayLike,
    kernel: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Array:
    r"""Softmax cross-entropy of ``hidden @ kernel + bias`` without the ``[N, V]`` logits.

    Equal (to float rounding) to
    ``softmax_cross_entropy_with_integer_labels(hidden @ kernel + bias, labels, ...)``
    with the same options, and with the same gradients with respect to
    ``hidden``, ``kernel`` and ``bias``:

    .. math::
        \ell_i = (1-\varepsilon)(\mathrm{lse}(s_i) - s_{i,y_i})
          + \varepsilon\,(\mathrm{lse}(s_i) - \tfrac{1}{V}\textstyle\sum_c s_{i,c})
          + z\,\mathrm{lse}(s_i)^2,
        \qquad s = \mathrm{softcap}(h W + b)

    Rows are processed ``chunk_size`` at a time; one chunk's ``[chunk_size, V]``
    float32 logits is the largest temporary. Under ``jax.grad`` with
    ``reduction="mean"`` or ``"sum"`` the gradients are formed in the same pass
    (three ``N x D x V`` matmuls in all, like the materialised computation).

    Args:
      hidden: ``[N, D]`` features (e.g. the last hidden states, flattened).
      kernel: ``[D, V]`` output projection (Flax ``Dense`` layout; a tied
        embedding ``[V, D]`` passes ``embedding.T``).
      labels: ``[N]`` integer class ids.
      bias: optional ``[V]`` bias.
      ignore_index: label value whose rows contribute 0 and do not count.
      label_smoothing: :math:`\varepsilon \in [0, 1]`, PyTorch semantics.
      z_loss: coefficient of PaLM's :math:`\mathrm{lse}^2` term.
      logit_softcap: Gemma 2 soft cap ``cap * tanh(logits / cap)``.
      reduction: ``"mean"`` (default: mean over counted rows, 0 when none
        count), ``"sum"`` or ``"none"``.
      chunk_size: rows per chunk. ``None`` picks one whose float32 logits take
        at most ``min(64 MiB, N*V*4/16)`` bytes; smaller saves memory, larger
        is slightly faster.

    Returns:
      The loss: float32 for bf16/f16 inputs, a scalar unless
      ``reduction="none"`` (then ``[N]``).

    Example:
      >>> import jax, jax.numpy as jnp, jaxloss
      >>> h = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> w = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.5, 0.0]])
      >>> float(jaxloss.fused_linear_softmax_cross_entropy(h, w, jnp.array([0, 1])))
      0.3606...

    Note:
      bf16/f16 inputs are multiplied with float32 accumulation
      (``preferred_element_type``) and the softmax runs in float32; the
      gradients come back in the inputs' dtypes. Out-of-range labels raise
      ``ValueError`` when concrete; under ``jit`` the row's loss is NaN.
      ``jax.jvp``/``jax.jacfwd`` work for every argument; with
      ``reduction="mean"``/``"sum"`` a forward-mode tangent also costs the
      gradient pass.

    References:
      Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss``; Wijmans et al.,
      "Cut Your Losses in Large-Vocabulary Language Models" (2024).
    """
    h, w, y, b, ignore_index, eps, z, cap, chunk = _prepare_fused(
        hidden,
        kernel,
        labels,
        bias,
        ignore_index,
        label_smoothing,
        z_loss,
        logit_softcap,
        reduction,
        chunk_size,
        "kernel",
        "bias",
    )
    n, v = h.shape[0], w.shape[1]
    cm.check_labels_in_range(y, v, ignore_index)
    row_axes = _explicit_row_axes(h)
    if row_axes is not None:
        return _data_parallel(h, w, b, y, row_axes, ignore_index, eps, z, cap, reduction, chunk)
    chunk = _default_chunk(n, v) if chunk is None else min(chunk, max(n, 1))
    opts = _Opts(ignore_index, eps, z, cap, reduction, chunk, v, None, "fused")
    return _fused(h, w, b, y, opts)


def _explicit_row_axes(h):
    """Mesh axes that ``hidden``'s rows are explicitly sharded over (jit with
    ``AxisType.Explicit`` meshes, the ``jax.make_mesh`` default), else ``None``."""
    sharding = getattr(jax.typeof(h), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if not spec or spec[0] is None:
        return None
    return spec[0]


def _data_parallel(h, w, b, y, row_axes, ignore_index, eps, z, cap, reduction, chunk):
    """Rows sharded over a data-parallel mesh: each device runs the fused loss on
    its own rows (``shard_map``); per-device sums are added with one ``psum`` and
    the kernel's gradient is summed once, at the end, by the ``psum``'s transpose.
    """
    from jax.sharding import PartitionSpec as P

    mesh = jax.typeof(h).sharding.mesh
    axes = row_axes if isinstance(row_axes, tuple) else (row_axes,)
    shards = math.prod(mesh.shape[a] for a in axes)
    n_local, v = h.shape[0] // shards, w.shape[1]
    chunk = _default_chunk(n_local, v) if chunk is None else min(chunk, max(n_local, 1))
    local_reduction = "none" if reduction == "none" else "sum"
    opts = _Opts(ignore_index, eps, z, cap, local_reduction, chunk, v, None, "fused")

    # The kernel and bias are used whole on every device.
    def put(x, spec):
        return jax.sharding.reshard(x, jax.NamedSharding(mesh, spec))

    w = put(w, P())
    b = None if b is None else put(b, P())
    h, y = put(h, P(row_axes)), put(y, P(row_axes))

    def local(h, w, b, y):
        loss = _fused(h, w, b, y, opts)
        return loss if reduction == "none" else lax.psum(loss, axes)

    out = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(row_axes), P(), P(), P(row_axes)),
        out_specs=P(row_axes) if reduction == "none" else P(),
    )(h, w, b, y)
    if reduction != "mean":
        return out
    count = jnp.sum(y != ignore_index) if ignore_index is not None else y.shape[0]
    return cm.safe_divide(out, jnp.asarray(count, out.dtype))


def vocab_parallel_fused_linear_softmax_cross_entropy(
    hidden: ArrayLike,
    kernel_shard: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: Any,
    bias_shard: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Array:
    r"""Fused linear + softmax cross-entropy with the kernel's vocabulary sharded.

    Call inside ``jax.shard_map`` with ``hidden`` ``[N, D]`` and ``labels``
    ``[N]`` (global class ids) the same on every device of ``axis_name``, and
    ``kernel_shard`` ``[D, V / P]`` (and ``bias_shard`` ``[V / P]``) this
    device's contiguous slice of the vocabulary, shard ``i`` holding classes
    ``[i V/P, (i+1) V/P)``. Returns the same (replicated) loss as
    :func:`fused_linear_softmax_cross_entropy` on the full kernel.

    Communication: one all-gather of per-row statistics (``[P, k, N]``, with
    ``k <= 3``) in the forward pass, and under differentiation with respect to
    ``hidden`` one ``[N, D]`` all-reduce of the shards' ``g @ kernel_shard.T``.
    Gradients of ``kernel_shard`` and ``bias_shard`` stay local.

    Args:
      hidden: ``[N, D]`` features, replicated over ``axis_name``.
      kernel_shard: ``[D, V_local]`` slice of the ``[D, V]`` kernel.
      labels: ``[N]`` global class ids in ``[0, V)``.
      axis_name: the mesh axis the vocabulary is sharded over.
      bias_shard: optional ``[V_local]`` slice of the bias.
      ignore_index, label_smoothing, z_loss, logit_softcap, reduction,
        chunk_size: as in :func:`fused_linear_softmax_cross_entropy`.

    Returns:
      The loss, replicated over ``axis_name``.

    Note:
      Use ``jax.shard_map`` with its default ``check_vma=True``: the gradient's
      freedom from communication in the backward pass relies on it.
    """
    fn = "vocab_parallel_fused_linear_softmax_cross_entropy"
    _, shards = _bind_axis(axis_name, fn)
    h, w, y, b, ignore_index, eps, z, cap, chunk = _prepare_fused(
        hidden,
        kernel_shard,
        labels,
        bias_shard,
        ignore_index,
        label_smoothing,
        z_loss,
        logit_softcap,
        reduction,
        chunk_size,
        "kernel_shard",
        "bias_shard",
    )
    n, v = h.shape[0], w.shape[1] * shards
    cm.check_labels_in_range(y, v, ignore_index)
    chunk = _default_chunk(n, w.shape[1]) if chunk is None else min(chunk, max(n, 1))
    opts = _Opts(ignore_index, eps, z, cap, reduction, chunk, v, axis_name, "fused")
    return _fused(h, w, b, y, opts)


# --------------------------------------------------------------------------
# Vocabulary-parallel cross-entropy on sharded logits
# --------------------------------------------------------------------------


class _VpOpts(NamedTuple):
    axis_name: Any
    ignore_index: int | None
    eps: float
    z: float
    cap: float | None
    num_classes: int
    weighted: bool


def _vp_rows(x, y, weight, mask, opts: _VpOpts):
    """Local statistics, one all-gather, and the global per-row quantities."""
    index, _ = _bind_axis(opts.axis_name, "vocab_parallel_softmax_cross_entropy")
    v_local = x.shape[-1]
    s = _softcap(_upcast(x), opts.cap)
    sm = _masked(s, mask)
    y_local = y - (index * v_local).astype(y.dtype)
    inside = (y_local >= 0) & (y_local < v_local)
    safe_local = jnp.clip(y_local, 0, v_local - 1)
    s_y = jnp.take_along_axis(s, safe_local[..., None], axis=-1)[..., 0]
    local = [_logsumexp(sm), jnp.where(inside, s_y, jnp.zeros_like(s_y))]
    cw = None
    if opts.eps > 0.0:
        valid = _valid_classes(s, mask)
        if weight is not None:
            cw = lax.dynamic_slice_in_dim(weight.astype(s.dtype), index * v_local, v_local)
            cw = jnp.where(valid, jnp.broadcast_to(cw, s.shape), 0.0)
        else:
            cw = valid.astype(s.dtype)
        local.append(jnp.sum(valid, axis=-1).astype(s.dtype))  # K: valid classes
        local.append(jnp.sum(cm.safe_mul(cw, s), axis=-1))  # sum_c w_c s_c over valid c
        if weight is not None:
            local.append(jnp.sum(cw, axis=-1))
    # One collective: every shard's per-row statistics, [P, k, ...].
    g = lax.all_gather(jnp.stack(local), opts.axis_name, to="invarying")
    lse = _logsumexp(jnp.moveaxis(g[:, 0], 0, -1))
    s_y = jnp.sum(g[:, 1], axis=0)
    # A row with no class (all masked or -inf) has lse = -inf; NaN rows stay active.
    active = lse != -jnp.inf
    if opts.ignore_index is not None:
        active &= y != opts.ignore_index
    safe = jnp.clip(y, 0, opts.num_classes - 1)
    w_y = jnp.ones(y.shape, s.dtype) if weight is None else weight.astype(s.dtype)[safe]
    w_y = jnp.where(active, w_y, jnp.zeros_like(w_y))
    bad = active & ((y < 0) | (y >= opts.num_classes))
    lse = jnp.where(active, lse, jnp.zeros_like(lse))
    s_y = jnp.where(active, s_y, jnp.zeros_like(s_y))
    e = ws = wv = None
    if opts.eps > 0.0:
        k = jnp.sum(g[:, 2], axis=0)
        e = jnp.where(active, opts.eps / jnp.maximum(k, 1.0), jnp.zeros_like(k))
        ws = jnp.sum(g[:, 3], axis=0)
        wv = jnp.sum(g[:, 4], axis=0) if weight is not None else k
    return s, sm, lse, s_y, w_y, e, ws, wv, bad, active, y_local, inside, cw


def _vp_loss(lse, s_y, w_y, e, ws, wv, bad, opts: _VpOpts):
    loss = (1.0 - opts.eps) * w_y * (lse - s_y)  # CE = lse - s_y
    if e is not None:
        # sum_c (eps w_c / K) (lse - s_c) = e (lse sum_c w_c - sum_c w_c s_c)
        loss = loss + e * (lse * wv) - cm.safe_mul(e, ws)
    if opts.z > 0.0:
        loss = loss + opts.z * w_y * lse * lse
    return jnp.where(bad, jnp.full_like(loss, jnp.nan), loss)


def _vp_forward(x, y, weight, mask, opts: _VpOpts):
    s, _, lse, s_y, w_y, e, ws, wv, bad, active, *_ = _vp_rows(x, y, weight, mask, opts)
    return _vp_loss(lse, s_y, w_y, e, ws, wv, bad, opts), active.astype(s.dtype)


def _vp_tangent(x, lse, y_local, inside, w_y, e, wv, bad, active, weight, mask, dx, opts):
    """Local share of dL = sum_c g_c dx_c with g = softmax * A - q (no communication)."""
    index = lax.axis_index(opts.axis_name)
    v_local = x.shape[-1]
    s = _softcap(_upcast(x), opts.cap)
    p = _softmax_from_lse(_masked(s, mask), lse)
    a = (1.0 - opts.eps) * w_y + 2.0 * opts.z * w_y * lse
    cols = lax.broadcasted_iota(y_local.dtype, s.shape, s.ndim - 1)
    hit = (cols == y_local[..., None]) & inside[..., None]
    q = jnp.where(hit, ((1.0 - opts.eps) * w_y)[..., None], 0.0)
    if e is not None:
        valid = _valid_classes(s, mask)
        if weight is None:
            cw = jnp.ones(s.shape, s.dtype)
        else:
            cw = lax.dynamic_slice_in_dim(weight.astype(s.dtype), index * v_local, v_local)
            cw = jnp.broadcast_to(cw, s.shape)
        a = a + e * wv
        q = q + jnp.where(valid, e[..., None] * cw, 0.0)
    a = jnp.where(bad, jnp.full_like(a, jnp.nan), a)
    g = jnp.where(active[..., None], p * a[..., None] - q, 0.0)
    if opts.cap is not None:
        g = g * _softcap_slope(_upcast(x), opts.cap)
    return jnp.sum(g * dx.astype(g.dtype), axis=-1)


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def _vp_ce(x, y, weight, mask, opts: _VpOpts):
    return _vp_forward(x, y, weight, mask, opts)


@partial(_vp_ce.defjvp, symbolic_zeros=True)
def _vp_ce_jvp(opts: _VpOpts, primals, tangents):
    x, y, weight, mask = primals
    dx, _, dweight, _ = tangents
    s, _, lse, s_y, w_y, e, ws, wv, bad, active, y_local, inside, _ = _vp_rows(
        x, y, weight, mask, opts
    )
    loss = _vp_loss(lse, s_y, w_y, e, ws, wv, bad, opts)
    counted = active.astype(s.dtype)
    if cm.is_zero(dx):
        dloss = jnp.zeros_like(loss)
    else:
        # Recomputed in the backward pass: residuals are the local logits and row scalars.
        tangent = jax.checkpoint(partial(_vp_tangent, opts=opts))
        local = tangent(x, lse, y_local, inside, w_y, e, wv, bad, active, weight, mask, dx)
        # Forward mode sums the shards' shares; in reverse mode this psum transposes
        # to a no-op under shard_map's check_vma, so the backward is communication-free.
        dloss = lax.psum(local, opts.axis_name)
    if weight is not None and not cm.is_zero(dweight):
        # Rare path (learning class weights): autodiff of the plain forward.
        def of_weight(wt):
            r = _vp_rows(x, y, wt, mask, opts)
            return _vp_loss(r[2], r[3], r[4], r[5], r[6], r[7], r[8], opts)

        dloss = dloss + jax.jvp(of_weight, (weight,), (dweight,))[1]
    return (loss, counted), (dloss, jnp.zeros_like(counted))


def vocab_parallel_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: Any,
    axis: int = -1,
    where: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    reduction: str = "none",
) -> Array:
    r"""Integer-label softmax cross-entropy with the class axis sharded over ``axis_name``.

    Call inside ``jax.shard_map`` with this device's contiguous slice of the
    classes in ``logits`` (shard ``i`` of ``P`` holds classes
    ``[i C/P, (i+1) C/P)``) and the global class ids in ``labels`` (the same
    on every device of ``axis_name``). Returns what
    :func:`softmax_cross_entropy_with_integer_labels` returns on the full
    logits, replicated over ``axis_name``.

    Each shard reduces its slice to a few numbers per row (logsumexp, the
    target's logit if it owns it, the count of allowed classes and, with label
    smoothing, the weighted logit sum); a single ``all_gather`` of these
    ``[P, k, ...]`` statistics is the only communication. The gradient
    ``softmax * A - q`` is formed from the local logits and the global
    logsumexp: it stays sharded and the backward pass communicates nothing.

    Args:
      logits: this shard's ``[..., C / P]`` logits (class axis ``axis``).
      labels: global integer class ids with the shape of ``logits`` minus ``axis``.
      axis_name: the mesh axis the classes are sharded over.
      axis: the class axis of ``logits``.
      where: boolean mask of this shard's classes (sharded like ``logits``).
      weight: per-class weights ``[C]`` for all classes (replicated, not sharded).
      ignore_index, label_smoothing, z_loss, logit_softcap, reduction: as in
        :func:`softmax_cross_entropy_with_integer_labels`.

    Returns:
      Per-example loss (replicated over ``axis_name``) or its reduction.

    Example:
      >>> import jax, jax.numpy as jnp, jaxloss
      >>> from jax.sharding import PartitionSpec as P
      >>> mesh = jax.make_mesh((1,), ("v",), axis_types=(jax.sharding.AxisType.Auto,))
      >>> f = jax.shard_map(
      ...     lambda x, y: jaxloss.vocab_parallel_softmax_cross_entropy(x, y, axis_name="v"),
      ...     mesh=mesh, in_specs=(P(None, "v"), P()), out_specs=P())
      >>> jax.jit(f)(jnp.array([[2.0, 0.0, -1.0]], jnp.float32), jnp.array([0]))
      Array([0.169846], dtype=float32)

    Note:
      Use ``jax.shard_map``'s default ``check_vma=True``: the communication-free
      backward relies on it (the forward-mode tangent's ``psum`` transposes to
      nothing). ``weight`` is the full ``[C]`` vector, sliced locally.

    References:
      Megatron-LM ``vocab_parallel_cross_entropy``;
      ``torch.nn.functional.cross_entropy``.
    """
    _, shards = _bind_axis(axis_name, "vocab_parallel_softmax_cross_entropy")
    x, mask = _prepare_logits(logits, axis, where)
    y = _prepare_int_labels(labels, x, axis, jnp.shape(logits))
    cm.check_reduction(reduction)
    ignore_index = cm.static_int(ignore_index, "ignore_index")
    eps = cm.static_float(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    z = cm.static_float(z_loss, "z_loss", low=0.0)
    cap = cm.static_float(logit_softcap, "logit_softcap", low=0.0, low_open=True, allow_none=True)
    num_classes = x.shape[-1] * shards
    w = _prepare_class_weight(weight, num_classes)
    cm.check_labels_in_range(y, num_classes, ignore_index)
    opts = _VpOpts(axis_name, ignore_index, eps, z, cap, num_classes, w is not None)
    loss, counted = _vp_ce(x, y, w, mask, opts)
    if reduction != "mean":
        return cm.reduce_loss(loss, reduction)
    dtype = counted.dtype
    den = counted if w is None else counted * w.astype(dtype)[jnp.clip(y, 0, num_classes - 1)]
    return cm.reduce_loss(loss, reduction, den)

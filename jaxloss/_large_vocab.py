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

Sharding under plain ``jit``
---------------------------
Explicitly sharded inputs (``AxisType.Explicit`` meshes) carry their layout in
their types: the public functions read it and run the per-device code under
``jax.shard_map`` (``_layout``, ``_map_rows``). On an ``AxisType.Auto`` mesh
(``jax.set_mesh``) the layout is XLA's choice, made after tracing: the rule's
forward (value and, with the ``"fused"`` strategy, the gradients) is then one
``custom_partitioning`` op (``_auto_call``) whose partition callback reads the
chosen shardings of ``hidden``'s rows and ``kernel``'s columns and lowers the
same per-device code, collectives included (for the log-probabilities, whose
tangent recomputes the logits, only the forward pass). The op has no batching or
differentiation rule of its own: under ``vmap`` or for a tangent of the
forward itself it runs the code on whole arrays, which XLA partitions as any
other code (correct; without the vocabulary-parallel layout).

Measured alternative: forming only the per-row ``lse`` in the forward pass and
recomputing logits in the backward (the ``"recompute"`` strategy for every
reduction, as jax-cce and Apple's CCE do) costs a fourth matmul; on CPU it was
slower than the default (benchmarks/results/large_vocab_cpu.md).
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning

from jaxloss import _common as cm
from jaxloss import _softmax as sm

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


def _shard_offset(axis_name: Any, v_local: int, fn: str):
    """First global class of this device's slice of the vocabulary (0 unsharded)."""
    if axis_name is None:
        return 0
    index, _ = _bind_axis(axis_name, fn)
    return index * v_local


def _match_varying(x: Array, *refs: Array | None) -> Array:
    """Marks a fresh loop carry as varying over the manual mesh axes its updates vary over.

    Inside ``jax.shard_map`` (``check_vma=True``) a ``lax.scan`` carry must keep
    one type; a ``zeros`` initialiser is device-invariant while the values added
    to it vary with the sharded inputs.
    """
    want = frozenset().union(*(sm.varying(r) for r in refs if r is not None))
    missing = tuple(sorted(want - sm.varying(x), key=str))
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
    temperature: float = 1.0
    aux: bool = False  # also each row's logsumexp and argmax (return_aux)
    auto: bool = False  # under an Auto-axis mesh: partitioned by _auto_call


class _Cols(NamedTuple):
    """Per-class vectors ``[V_local]`` of the fused loss."""

    bias: Array | None
    weight: Array | None  # class weights (PyTorch's ``weight``)


class _Tokens(NamedTuple):
    """Per-token facts that depend only on the labels, split into chunks."""

    y: Array  # labels local to this shard's classes (may be out of [0, V_local))
    active: Array  # bool: the row counts (not ignore_index)
    bad: Array  # bool: counted row with an out-of-range label
    weight: Array | None  # per-token weights (sample_weight), 0 on padding rows
    class_weight: Array | None  # the label's class weight w[y]


class _Res(NamedTuple):
    """Residuals of the rule: the gradients (fused strategy) or the rows (recompute)."""

    grads: tuple | None  # (G_h, G_W, G_b) of the reduced loss, None when not wanted
    rows: sm.Rows | None  # per-row scalars, chunked
    scale: Array  # the reduction's gradient scale (1 / divisor for the mean)


_VP_FUSED = "vocab_parallel_fused_linear_softmax_cross_entropy"
# The hyperparameters of _Opts that may be traced (operands of the rule).
_HYPER = ("eps", "z", "cap", "temperature")


def _is_one(t) -> bool:
    """True for a temperature known to be 1 (a traced one takes the general path)."""
    return isinstance(t, (int, float)) and t == 1.0


def _setup(h, w, y, sw, cw, opts: _Opts):
    n = h.shape[0]
    dtype = cm.compute_dtype(h, w)
    num_chunks = -(-n // opts.chunk)
    offset = _shard_offset(opts.axis_name, w.shape[1], _VP_FUSED)
    info = sm.labels_info(y, opts.num_classes, opts.ignore_index)
    y_local = y - jnp.asarray(offset, y.dtype)
    ch = partial(_chunk_rows, chunk=opts.chunk, num_chunks=num_chunks)
    wt = None if sw is None else ch(sw.astype(dtype))
    cw_y = None if cw is None else ch(cm.take_per_row(cw.astype(dtype), info.safe))
    toks = _Tokens(ch(y_local), ch(info.active, fill=False), ch(info.bad, fill=False), wt, cw_y)
    return n, dtype, toks, _chunk_rows(h, opts.chunk, num_chunks)


def _cols(b, cw, w, opts: _Opts) -> _Cols:
    """This device's per-class vectors: the bias (already local) and its slice of
    the class weights (given whole: every device also reads ``w[y]`` at global labels)."""
    if cw is not None and opts.axis_name is not None:
        offset = _shard_offset(opts.axis_name, w.shape[1], _VP_FUSED)
        cw = lax.dynamic_slice_in_dim(cw, offset, w.shape[1])
    return _Cols(b, cw)


def _finish(block: sm.Block, t: _Tokens, opts: _Opts):
    """Loss, divisor share and :class:`~jaxloss._softmax.Rows` of a set of rows.

    The label's class weight ``w[y]`` enters the core as PyTorch weighs a row
    (its CE term, its z-loss and its share of the divisor). A token weight
    ``wt`` scales the whole row: its loss, its share of the mean's divisor and
    the coefficients ``qy, e, A`` (each term of the loss is linear in them), so
    ``g`` comes out scaled too.
    """
    act, bad, wt = t.active, t.bad, t.weight
    info = sm.Labels(None, act, bad)
    w_y = act.astype(block.shift.dtype)
    if t.class_weight is not None:
        w_y = w_y * t.class_weight
    gscale = sm.gap_scale(opts.num_classes)
    loss, share, rows = sm.finish_labels(block, info, w_y, eps=opts.eps, z=opts.z, gscale=gscale)
    if wt is None:
        return loss, share, rows
    scaled = rows._replace(qy=rows.qy * wt, e=rows.e * wt, a=rows.a * wt)
    return cm.safe_mul(wt, loss), share * wt, scaled


def _pin(w, b, h_c):
    """``(w, b)`` tied to the current chunk by an optimization barrier (``b`` may
    be a tuple of per-class vectors).

    Without it XLA (jax 0.10.2) hoists the tile slices of W, loop-invariant in
    the chunk loop, out of the loop and keeps a tiled copy of the whole kernel
    (twice its size at N=1024, D=256, V=16384); pinned by
    tests/test_large_vocab.py::test_chunk_barrier_keeps_no_tiled_copy_of_the_kernel.
    """
    w, b, _ = lax.optimization_barrier((w, b, h_c))
    return w, b


def _vocab_tiles(v: int, rows: int) -> tuple[int, int]:
    """(columns per tile, number of tiles): [rows, tile] and [D, tile] float32 tiles
    of about 4 MiB (``rows`` is the larger of the chunk and D), and at least 8
    tiles when V allows (so the tiles stay small beside the chunk's logits)."""
    if v == 0:
        return 0, 0
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
    # A single tile is the array itself.
    if tile == x.shape[axis]:
        return x
    return lax.dynamic_slice_in_dim(x, start, tile, axis=axis)


def _tile_owned(start, first, tile: int, v: int, y_c):
    """The tile's own columns as a ``[1, tile]`` mask (``None`` when the tiles divide
    the vocabulary: each tile owns all its columns) and the label's column in the
    tile (outside ``[0, tile)`` where another tile holds it).

    No mask without an overlap: under differentiation JAX keeps a select's
    predicate for the tangent, and XLA (jax 0.10.2) stacked every tile's
    broadcast mask into one [tiles, chunk, tile] boolean buffer (16 MiB of the
    fused loss's 115 MiB scratch at N=4096, D=512, V=32768; pinned by
    tests/test_large_vocab.py::test_tiles_that_divide_the_vocabulary_keep_no_mask)."""
    if v % tile == 0:
        return None, y_c - jnp.asarray(start, y_c.dtype)
    cols = start + lax.broadcasted_iota(jnp.asarray(start).dtype, (1, tile), 1)
    y_loc = y_c - jnp.asarray(start, y_c.dtype)
    return cols >= first, jnp.where(y_c >= first, y_loc, -jnp.ones_like(y_loc))


class _TileView(NamedTuple):
    s: Array  # the tile's tempered, soft-capped logits [chunk, tile]
    w_t: Array  # its kernel columns [D, tile]
    valid: Array | None  # its own columns [1, tile] (None: a single tile)
    y_loc: Array  # the label's column in it (outside [0, tile): another tile's)
    start: Any  # its first column read
    weight: Array | None  # its class weights [tile]


def _scores(x: Array, opts) -> Array:
    """Logits divided by the temperature, then soft-capped."""
    return sm.softcap(x if _is_one(opts.temperature) else x / opts.temperature, opts.cap)


def _tile(h_c, w, cols: _Cols, y_c, i, tile, dtype, opts: _Opts) -> _TileView:
    """Tile ``i`` of a chunk's logits, with the columns it reads."""
    v = w.shape[1]
    first, start = _tile_start(i, tile, v)
    w_t = _slice_cols(w, start, tile, 1)
    x = _dot(h_c, w_t, (1, 0), dtype)
    if cols.bias is not None:
        x = x + _slice_cols(cols.bias, start, tile, 0).astype(dtype)[None, :]
    valid, y_loc = _tile_owned(start, first, tile, v, y_c)
    cw = None if cols.weight is None else _slice_cols(cols.weight, start, tile, 0)
    return _TileView(_scores(x, opts), w_t, valid, y_loc, start, cw)


def _chunk_stats(h_c, w, cols: _Cols, y_c, dtype, opts: _Opts, store: bool):
    """Block statistics of one chunk, merged tile by tile (an online logsumexp).

    With ``store`` the chunk's [chunk, V] logits are also written out (for the
    gradient pass that follows); otherwise only one [chunk, tile] tile exists.
    Returns ``(block, logits or None, (max, argmax) or None)``: with ``opts.aux``
    each row's largest logit and its first column are tracked too.
    """
    c, v = h_c.shape[0], w.shape[1]
    tile, tiles = _vocab_tiles(v, max(c, h_c.shape[1]))
    dense, gscale = cm.maybe_nonzero(opts.eps), sm.gap_scale(opts.num_classes)
    like = _match_varying(jnp.zeros((c,), dtype), h_c, w, *cols, y_c)
    init = (sm.empty_block(like, dense), None, None)
    if store:
        init = (init[0], _match_varying(jnp.zeros((c, v), dtype), h_c, w, *cols, y_c), None)
    if opts.aux:
        init = (*init[:2], (jnp.full_like(like, sm.NEG_INF), jnp.zeros(like.shape, jnp.int32)))

    def step(i, carry):
        block, s_all, best = carry
        t = _tile(h_c, w, cols, y_c, i, tile, dtype, opts)
        part = sm.block_stats(t.s, t.valid, t.y_loc, t.weight, dense=dense, gscale=gscale)
        block = sm.merge_pair(block, part, gscale)
        if store:
            s_all = t.s if tile == v else lax.dynamic_update_slice_in_dim(s_all, t.s, t.start, 1)
        if best is not None:
            best = _argmax_update(best, t)
        return block, s_all, best

    return lax.fori_loop(0, tiles, step, init)


def _argmax_update(best, t: _TileView):
    """The running ``(max, argmax)`` of a row's logits after tile ``t`` (the first
    column of the maximum, as ``jnp.argmax``: a later tile must be strictly larger)."""
    s = t.s if t.valid is None else jnp.where(t.valid, t.s, sm.NEG_INF)
    top = jnp.max(s, axis=-1)
    col = jnp.argmax(s, axis=-1).astype(jnp.int32) + jnp.asarray(t.start, jnp.int32)
    better = top > best[0]
    return jnp.where(better, top, best[0]), jnp.where(better, col, best[1])


def _add_cols(acc, part, start, tile: int, axis: int):
    """``acc[..., start:start + tile] += part`` along ``axis`` (the whole array for one tile)."""
    if tile == acc.shape[axis]:
        return acc + part
    old = lax.dynamic_slice_in_dim(acc, start, tile, axis=axis)
    return lax.dynamic_update_slice_in_dim(acc, old + part, start, axis=axis)


def _chunk_grads(h_c, w, cols: _Cols, y_c, rows_c, s_all, dtype, opts: _Opts, want, acc):
    """Adds one chunk's gradient coefficients, tile by tile.

    ``g`` exists one [chunk, tile] tile at a time and is used by the two
    products while it is in cache: ``dh_c += g @ W_t.T``, ``G_W[:, t] += h_c.T @ g``.
    The tile's logits come from ``s_all`` (stored by the statistics pass) or,
    without it, are recomputed.
    """
    want_h, want_w, want_b = want
    c, v = h_c.shape[0], w.shape[1]
    tile, tiles = _vocab_tiles(v, max(c, h_c.shape[1]))
    # g stays float32: the two products multiply float32 copies of the chunk and the
    # tile (a bf16 g would round every coefficient before the sums)
    h_wide = h_c.astype(dtype)

    def step(i, acc):
        dh_c, g_w, g_b = acc
        t = _tile(h_c, w, cols, y_c, i, tile, dtype, opts)
        s = t.s if s_all is None else _slice_cols(s_all, t.start, tile, 1)
        g = _tile_coefficient(s, t.valid, t.y_loc, t.weight, rows_c, opts)
        if want_h:
            dh_c = dh_c + _dot(g, t.w_t.astype(dtype), (1, 1), dtype)  # g @ W_t.T: [chunk, D]
        if want_w:
            g_w = _add_cols(g_w, _dot(h_wide, g, (0, 0), dtype), t.start, tile, 1)  # h_c.T @ g
        if want_b:
            g_b = _add_cols(g_b, jnp.sum(g, axis=0), t.start, tile, 0)
        return dh_c, g_w, g_b

    dh0 = _match_varying(jnp.zeros((c, h_c.shape[1]), dtype), h_c, w, *cols, y_c, rows_c.a)
    return lax.fori_loop(0, tiles, step, (dh0 if want_h else None, *acc))


def _tile_coefficient(s, valid, y_loc, cw, rows_c, opts: _Opts):
    """dL/dlogits of one tile: ``softmax * A - q`` times the soft cap's slope, over
    the temperature."""
    g = sm.coefficient(s, valid, y_loc, cw, rows_c, dense=cm.maybe_nonzero(opts.eps), cap=opts.cap)
    return g if _is_one(opts.temperature) else g * (1.0 / opts.temperature)


def _stats_pass(h_chunks, w, cols: _Cols, toks: _Tokens, dtype, n, opts: _Opts):
    """Every row's block statistics, without gradients (one matmul, tile by tile),
    combined over the shards (one all-gather)."""

    def body(_, xs):
        h_c, y_c = xs
        block, _, best = _chunk_stats(h_c, *_pin(w, cols, h_c), y_c, dtype, opts, store=False)
        return None, (block, None if best is None else best[1])

    _, (blocks, arg) = lax.scan(body, None, (h_chunks, toks.y))
    block, arg = jax.tree.map(lambda f: _unchunk(f, n), (blocks, arg))
    if opts.axis_name is None:
        return block, arg
    block = sm.merge(sm.gather_blocks(block, opts.axis_name), sm.gap_scale(opts.num_classes))
    return block, arg


def _grad_pass(h_chunks, w, cols: _Cols, toks: _Tokens, dtype, n, opts: _Opts, want, rows=None):
    """Gradient coefficients chunk by chunk (and, without ``rows``, the loss).

    With ``rows=None`` (unsharded) each chunk first computes its rows' logits
    (stored, [chunk, V]) and statistics, then the gradients from the stored
    logits: three matmuls in all. Given the rows (sharded: global statistics),
    the gradient pass recomputes each tile's logits and makes no loss.
    """
    want_h, want_w, want_b = want
    refs = (h_chunks, w, *cols, toks.y)
    g_w0 = _match_varying(jnp.zeros(w.shape, dtype), *refs) if want_w else None
    g_b0 = _match_varying(jnp.zeros(w.shape[1:], dtype), *refs) if want_b else None

    def body(carry, xs):
        h_c, t_c, rows_c = xs
        w_, cols_ = _pin(w, cols, h_c)
        out, s_all = {}, None
        if rows_c is None:
            block, s_all, best = _chunk_stats(h_c, w_, cols_, t_c.y, dtype, opts, any(want))
            out["loss"], out["share"], rows_c = _finish(block, t_c, opts)
            if best is not None:
                out["lse"], out["arg"] = _block_lse(block), best[1]
        if any(want):
            dh_c, *carry = _chunk_grads(
                h_c, w_, cols_, t_c.y, rows_c, s_all, dtype, opts, want, carry
            )
            if want_h:
                out["h"] = dh_c
        return tuple(carry), out

    (g_w, g_b), out = lax.scan(body, (g_w0, g_b0), (h_chunks, toks, rows))
    out = {k: _unchunk(v, n) for k, v in out.items()}
    aux = (out["lse"], out["arg"]) if "arg" in out else None
    return out.get("loss"), out.get("share"), (out.get("h"), g_w, g_b), aux


def _block_lse(block: sm.Block) -> Array:
    """Each row's logsumexp (``-inf`` for a row without a valid class)."""
    return block.shift + jnp.log(block.total)


def _tangent_rows(
    h_chunks, w, cols: _Cols, toks: _Tokens, rows, d_chunks, dtype, n, opts: _Opts, dlogits
):
    """Per-row tangent ``sum_v g dlogits`` with logits recomputed chunk by chunk.

    ``dlogits(h_c, dh_c)`` is the chunk's logits tangent (linear in the input
    tangent). The scan body is checkpointed, so under reverse mode the
    transpose recomputes each chunk's ``g`` instead of saving [N, V].
    """

    @jax.checkpoint
    def body(_, xs):
        h_c, t_c, rows_c, d_c = xs
        s = _scores(_dot(h_c, w, (1, 0), dtype) + _bias(cols.bias, dtype), opts)
        g = _tile_coefficient(s, None, t_c.y, cols.weight, rows_c, opts)
        return None, jnp.sum(g * dlogits(h_c, d_c), axis=-1)

    _, t = lax.scan(body, None, (h_chunks, toks, rows, d_chunks))
    t = _unchunk(t, n)
    return t if opts.axis_name is None else lax.psum(t, opts.axis_name)


def _bias(b, dtype):
    return 0.0 if b is None else b.astype(dtype)[None, :]


def _fused_forward(want, h, w, b, y, sw, cw, opts: _Opts):
    """``((value, divisor), residuals)``; see the module docstring for the strategies."""
    want3 = (0 in want, 1 in want, 2 in want and b is not None)
    fused = opts.strategy == "fused" and (opts.reduction != "none" or not any(want3[1:]))
    grads = want3 if fused else (False,) * 3
    if opts.auto and (fused or not any(want3)):
        roles = ("rows", "cols", "vec", "rows", "rows", "whole")
        return _auto_forward(_fused_forward, grads, (h, w, b, y, sw, cw), roles, opts, opts.aux)
    n, dtype, toks, h_chunks = _setup(h, w, y, sw, cw, opts)
    cols = _cols(b, cw, w, opts)
    red = cm.Reduction(opts.reduction)
    if opts.axis_name is None and (fused or not any(want3)):
        loss, share, g, aux = _grad_pass(h_chunks, w, cols, toks, dtype, n, opts, grads)
        rows = None
    else:
        block, arg = _stats_pass(h_chunks, w, cols, toks, dtype, n, opts)
        aux = None if arg is None else (_block_lse(block), arg)
        loss, share, rows = _finish(block, jax.tree.map(lambda f: _unchunk(f, n), toks), opts)
        rows = jax.tree.map(lambda f: _chunk_rows(f, opts.chunk, h_chunks.shape[0]), rows)
        g = (None,) * 3
        if any(grads):
            g = _grad_pass(h_chunks, w, cols, toks, dtype, n, opts, grads, rows)[2]  # fmt: skip
            if g[0] is not None:
                g = (lax.psum(g[0], opts.axis_name), *g[1:])  # the one [N, D] all-reduce
    scale = red.scale(share, n, dtype)
    out = (red(loss, share), share if opts.reduction == "none" else red.divisor(share, n, dtype))
    if aux is not None:  # (lse, argmax as a float: outputs of a custom_jvp are floats)
        out = (*out, aux[0], aux[1].astype(dtype))
    if any(grads):
        return out, _Res(tuple(None if x is None else x * scale for x in g), None, scale)
    return out, _Res(None, rows, scale)


def _fused_tangent(argnum: int):
    """Tangent along ``hidden`` (0), ``kernel`` (1) or ``bias`` (2)."""

    def tangent(res: _Res, args, d):
        h, w, b, y, sw, cw, opts = args
        dtype = cm.compute_dtype(h, w)
        per_row = opts.reduction == "none"
        if res.grads is not None:
            prod = res.grads[argnum] * d.astype(dtype)
            if argnum == 0:
                t = jnp.sum(prod, axis=-1) if per_row else jnp.sum(prod)
            else:
                t = jnp.sum(prod)
                t = t if opts.axis_name is None else lax.psum(t, opts.axis_name)
        else:
            n, dtype, toks, h_chunks = _setup(h, w, y, sw, cw, opts)
            dlogits = partial(_dlogits, argnum=argnum, w=w, d=d, dtype=dtype)
            d_chunks = _chunk_d(d, argnum, opts, n)
            cols = _cols(b, cw, w, opts)
            t = _tangent_rows(h_chunks, w, cols, toks, res.rows, d_chunks, dtype, n, opts, dlogits)
            t = t if per_row else jnp.sum(t) * res.scale
        out = (t, jnp.zeros_like(t if per_row else t.sum()))
        if opts.aux:  # the auxiliary outputs are constants (stop_gradient)
            zero = jnp.zeros(h.shape[:1], dtype)
            out = (*out, zero, zero)
        return out

    return tangent


def _chunk_d(d, argnum, opts: _Opts, n):
    # Only hidden's tangent has rows to split into chunks (None: not differentiated).
    if d is None or argnum != 0:
        return jnp.zeros((-(-n // opts.chunk), opts.chunk, 0), jnp.float32)
    return _chunk_rows(d, opts.chunk, -(-n // opts.chunk))


def _dlogits(h_c, d_c, argnum, w, d, dtype):
    """A chunk's logits tangent along one input: ``dh W``, ``h dW`` or ``db``."""
    if argnum == 0:
        return _dot(d_c, w, (1, 0), dtype)
    if argnum == 1:
        return _dot(h_c, d, (1, 0), dtype)
    return jnp.broadcast_to(d.astype(dtype)[None, :], (h_c.shape[0], d.shape[0]))


_fused = cm.linear_rule(
    _fused_forward,
    {i: _fused_tangent(i) for i in range(3)},
    static_argnums=(6,),
    pass_want=True,
    traceable_fields=_HYPER,
)


# --------------------------------------------------------------------------
# Vocabulary-parallel cross-entropy on sharded logits
# --------------------------------------------------------------------------


class _VpOpts(NamedTuple):
    axis_name: Any
    ignore_index: int | None
    eps: float
    z: float
    cap: float | None
    num_classes: int  # global C


def _vp_local(x, y, weight, opts: _VpOpts):
    """This shard's logits (soft-capped, widened), its labels' local columns and its
    slice of the class weights."""
    v_local = x.shape[-1]
    offset = _shard_offset(opts.axis_name, v_local, "vocab_parallel_softmax_cross_entropy")
    s = sm.softcap(sm.upcast(x), opts.cap)
    y_local = y - jnp.asarray(offset, y.dtype)
    w_blk = None
    if weight is not None:
        w_blk = lax.dynamic_slice_in_dim(weight.astype(s.dtype), offset, v_local)
    return s, y_local, w_blk


def _vp_forward(x, y, weight, mask, opts: _VpOpts):
    """Local block statistics, one all-gather, the global rows."""
    s, y_local, w_blk = _vp_local(x, y, weight, opts)
    gscale, dense = sm.gap_scale(opts.num_classes), cm.maybe_nonzero(opts.eps)
    local = sm.labelled_stats(x, s, mask, w_blk, y_local, cap=opts.cap, dense=dense, gscale=gscale)
    block = sm.merge(sm.gather_blocks(local, opts.axis_name), gscale)
    info = sm.labels_info(y, opts.num_classes, opts.ignore_index)
    w_y = sm.label_weight(info, weight, s.dtype)
    loss, share, rows = sm.finish_labels(block, info, w_y, eps=opts.eps, z=opts.z, gscale=gscale)
    return (loss, share), rows


def _vp_tangent_x(rows, args, dx):
    """``sum_c g_c dx_c`` summed over the shards; the local part needs no communication."""
    x, y, weight, mask, opts = args
    s, y_local, w_blk = _vp_local(x, y, weight, opts)
    dense = cm.maybe_nonzero(opts.eps)
    g = sm.coefficient(s, mask, y_local, w_blk, rows, dense=dense, cap=opts.cap)
    return sm.row_tangent(g, dx)


def _vp_sum_shards(args, t):
    # Forward mode sums the shards' shares; in reverse mode this psum transposes
    # to a no-op, so the backward is communication-free.
    total = lax.psum(t[0], args[-1].axis_name)
    return total, jnp.zeros_like(total)


_vp_ce = cm.linear_rule(
    _vp_forward,
    {0: (_vp_tangent_x, _vp_sum_shards)},
    static_argnums=(4,),
    traceable_fields=("eps", "z", "cap"),
)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def _prepare_fused(
    hidden, kernel, labels, bias, chunk_size, kernel_name, bias_name, hidden_name="hidden"
):
    """Validated ``(hidden, kernel, labels, bias, chunk_size)`` in one matmul dtype."""
    h = cm.as_float_array(hidden, hidden_name)
    w = cm.as_float_array(kernel, kernel_name)
    if h.ndim != 2:
        raise ValueError(
            f"{hidden_name} must have shape [N, D] (tokens, features); got "
            f"{hidden_name}.shape={h.shape}. Flatten leading batch axes with "
            f"{hidden_name}.reshape(-1, D) or use jax.vmap."
        )
    if w.ndim != 2 or w.shape[0] != h.shape[1]:
        raise ValueError(
            f"{kernel_name} must have shape [D, V] with D = {hidden_name}.shape[1] = "
            f"{h.shape[1]} (the Flax Dense layout; a tied embedding passes embedding.T); got "
            f"{kernel_name}.shape={w.shape} for {hidden_name}.shape={h.shape}."
        )
    if w.shape[1] == 0:
        raise ValueError(f"{kernel_name} has no classes: {kernel_name}.shape={w.shape}.")
    y = cm.as_int_array(labels, "labels")
    if y.shape != h.shape[:1]:
        raise ValueError(
            f"labels must have shape [N] = ({h.shape[0]},), one class id per row of "
            f"{hidden_name}; got labels.shape={y.shape} for {hidden_name}.shape={h.shape}."
        )
    b = None
    if bias is not None:
        b = cm.as_float_array(bias, bias_name)
        if b.shape != w.shape[1:]:
            raise ValueError(
                f"{bias_name} must have shape ({w.shape[1]},), one per column of "
                f"{kernel_name}; got {bias_name}.shape={b.shape}."
            )
    chunk = cm.static_int(chunk_size, "chunk_size")
    if chunk is not None and chunk <= 0:
        raise ValueError(f"chunk_size must be a positive number of rows; got {chunk}.")
    # One matmul dtype: the wider of the two (bf16 x f32 -> f32); bf16 stays bf16.
    if h.dtype != w.dtype:
        common = h.dtype if h.dtype.itemsize > w.dtype.itemsize else w.dtype
        if h.dtype.itemsize == w.dtype.itemsize:
            common = jnp.dtype(jnp.float32)
        h, w = h.astype(common), w.astype(common)
    return h, w, y, b, chunk


def _token_weights(sample_weight, normalizer, reduction, n):
    """Validated ``(sample_weight, normalizer, reduction of the fused pass)``.

    A ``normalizer`` replaces the mean's divisor: the pass sums, the caller divides.
    """
    sw = cm.optional_vector(sample_weight, "sample_weight", n, "one weight per row of hidden")
    if normalizer is None:
        return sw, None, reduction
    if cm.Reduction.of(reduction).kind != "mean":
        raise ValueError(
            f"normalizer replaces the mean's divisor: it needs reduction='mean'; got {reduction!r}."
        )
    norm = cm.hyperparameter(normalizer, "normalizer", low=0.0)
    return sw, norm, "sum"


def _normalized(loss: Array, norm) -> Array:
    """``loss / normalizer`` (0 for a zero normalizer, as an empty mean)."""
    return loss if norm is None else cm.safe_divide(loss, jnp.asarray(norm, loss.dtype))


def _fused_opts(options, reduction, n, v_local, v, chunk, axis_name=None, dtype=None):
    """:class:`_Opts` of a call (``chunk=None`` picks one from the shapes);
    ``options`` is ``(ignore_index, label_smoothing, z_loss, logit_softcap)``,
    optionally followed by the temperature; with ``dtype`` (the computation
    dtype) the hyperparameters may be traced scalars."""
    o = cm.ce_options(*options[:4], traced_dtype=dtype)
    t = 1.0
    if len(options) > 4:
        t = cm.number_option(options[4], "temperature", traced_dtype=dtype, low=0.0, low_open=True)
    red = cm.Reduction.of(reduction)
    chunk = _default_chunk(n, v_local) if chunk is None else min(chunk, max(n, 1))
    return _Opts(o.ignore_index, o.eps, o.z, o.cap, red.kind, chunk, v, axis_name, "fused", t)


def fused_linear_softmax_cross_entropy(
    hidden: ArrayLike,
    kernel: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    normalizer: ArrayLike | None = None,
    temperature: float = 1.0,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
    return_aux: bool = False,
) -> Array | tuple[Array, FusedAux]:
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
      weight: optional ``[V]`` class weights, PyTorch's ``weight``: a row's
        loss is scaled by its label's weight ``w[y]`` (the smoothing term by
        each class's), and the mean divides by the summed ``w[y]`` of the
        counted rows.
      sample_weight: optional ``[N]`` per-token weights: each row's loss is
        multiplied by its weight, and the mean divides by the summed weights
        of the counted rows (a weight of 0 drops a padding token). With
        ``weight`` too, a row weighs ``w[y] * sample_weight``.
      normalizer: optional scalar that replaces the mean's divisor (needs
        ``reduction="mean"``): e.g. the number (or summed weight) of counted
        tokens over all micro-batches of an accumulated step, so that the
        summed micro-batch gradients equal the full batch's. May be traced;
        0 gives 0.
      temperature: :math:`T > 0` dividing the logits before the soft cap and
        the softmax. This and the three options below may be traced scalars
        (``jit``, ``vmap``, differentiable by autodiff of the tile loop).
      ignore_index: label value whose rows contribute 0 and do not count.
      label_smoothing: :math:`\varepsilon \in [0, 1]`, PyTorch semantics.
      z_loss: coefficient of PaLM's :math:`\mathrm{lse}^2` term.
      logit_softcap: Gemma 2 soft cap ``cap * tanh(logits / cap)``.
      reduction: ``"mean"`` (default: mean over counted rows, 0 when none
        count), ``"sum"`` or ``"none"``.
      chunk_size: rows per chunk. ``None`` picks one whose float32 logits take
        at most ``min(256 MiB, N*V*4/8)`` bytes; smaller saves memory, larger
        is slightly faster.
      return_aux: also return a ``FusedAux`` computed in the same pass:
        ``lse`` ``[N]`` (each token's logsumexp), ``z_loss`` (the z-term alone,
        reduced like the loss), ``argmax`` ``[N]`` (int32) and ``accuracy``
        (over the counted tokens: not ignored, a valid label, a nonzero
        ``sample_weight``). They are constants for differentiation. Not
        available with inputs sharded over an explicit mesh.

    Returns:
      The loss: float32 for bf16/f16 inputs, a scalar unless
      ``reduction="none"`` (then ``[N]``); with ``return_aux=True`` the pair
      ``(loss, aux)``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxloss
      >>> h = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> w = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.5, 0.0]])
      >>> float(jaxloss.fused_linear_softmax_cross_entropy(h, w, jnp.array([0, 1])))
      0.3606...

    Note:
      Under ``jit`` with explicitly sharded inputs (a mesh of
      ``AxisType.Explicit`` axes, ``jax.make_mesh``'s default): ``hidden``'s
      rows sharded over data axes run data-parallel (each device on its own
      tokens), and ``kernel``'s columns sharded over model axes run the
      vocabulary-parallel loss on each device's slice
      (:func:`vocab_parallel_fused_linear_softmax_cross_entropy`), with no
      ``jax.shard_map`` written by the caller: nothing ``[D, V]`` or ``[N, V]``
      is gathered, only a few numbers per token, and ``d hidden`` is summed
      over the vocabulary's devices. ``bias`` is sharded like the kernel's
      columns, ``labels`` and ``sample_weight`` like the rows.
      The same holds on a mesh of ``AxisType.Auto`` axes set with
      ``jax.set_mesh`` (inputs placed with ``NamedSharding``, shardings left to
      XLA): a partitioning rule (``jax.experimental.custom_partitioning``) reads
      the layout XLA chose for ``hidden``'s rows and ``kernel``'s columns and
      runs the same per-device computation, for ``reduction="mean"``/``"sum"``
      (and ``"none"`` when only ``hidden`` is differentiated). In the other
      cases (``"none"`` with the kernel differentiated, a gradient with respect
      to ``weight`` or ``sample_weight``, second derivatives, ``vmap``) and
      with ``return_aux=True`` the vocabulary is not split by the rule: XLA
      partitions the plain computation itself.
      bf16/f16 inputs are multiplied with float32 accumulation
      (``preferred_element_type``) and the softmax runs in float32; the
      gradients come back in the inputs' dtypes. The coefficient ``g`` stays
      float32 in the two gradient products (autodiff of a bf16
      ``hidden @ kernel`` would round it to bf16 first), so each gradient is
      its float32 value rounded once. Out-of-range labels raise
      ``ValueError`` when concrete; under ``jit`` the row's loss is NaN.
      ``jax.jvp``/``jax.jacfwd`` work for every argument; with
      ``reduction="mean"``/``"sum"`` a forward-mode tangent also costs the
      gradient pass.

    References:
      Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss``; Wijmans et al.,
      "Cut Your Losses in Large-Vocabulary Language Models" (2024).
    """
    h, w, y, b, chunk = _prepare_fused(hidden, kernel, labels, bias, chunk_size, "kernel", "bias")
    options = (ignore_index, label_smoothing, z_loss, logit_softcap, temperature)
    n, v = h.shape[0], w.shape[1]
    sw, norm, reduction = _token_weights(sample_weight, normalizer, reduction, n)
    cw = cm.optional_vector(weight, "weight", v, "one weight per class (column of kernel)")
    if not isinstance(return_aux, bool):
        raise TypeError(f"return_aux must be a bool; got {return_aux!r}.")
    layout = _layout(h, w)
    if layout is not None:
        if return_aux:
            raise ValueError("return_aux=True is not supported with inputs sharded over a mesh.")
        return _normalized(_sharded(h, w, b, y, sw, cw, layout, options, reduction, chunk), norm)
    opts = _fused_opts(options, reduction, n, v, v, chunk, dtype=cm.compute_dtype(h, w))
    opts = opts._replace(aux=return_aux, auto=_auto_mesh() is not None)
    cm.check_labels_in_range(y, v, opts.ignore_index)
    out = _fused(h, w, b, y, sw, cw, opts)
    loss = _normalized(out[0], norm)
    return (loss, _aux(y, sw, cw, opts, out, norm)) if return_aux else loss


class FusedAux(NamedTuple):
    """Auxiliary outputs of :func:`fused_linear_softmax_cross_entropy` (``return_aux=True``),
    all constants for differentiation (``stop_gradient``)."""

    lse: Array  # [N] logsumexp of each token's (tempered, soft-capped) logits
    z_loss: Array  # the z-loss term alone, reduced like the loss
    argmax: Array  # [N] int32 predicted class (the first maximum)
    accuracy: Array  # fraction of counted tokens whose argmax is the label


def _aux(y, sw, cw, opts: _Opts, out, norm) -> FusedAux:
    """:class:`FusedAux` from the rule's outputs ``(loss, divisor, lse, argmax)``."""
    lse, arg = (lax.stop_gradient(a) for a in out[2:])
    arg = arg.astype(jnp.int32)
    info = sm.labels_info(y, opts.num_classes, opts.ignore_index)
    counted = info.active & ~info.bad & jnp.isfinite(lse)
    w_row = counted.astype(lse.dtype)
    if cw is not None:
        w_row = w_row * cm.take_per_row(cw.astype(lse.dtype), info.safe)
    if sw is not None:
        w_row = w_row * sw.astype(lse.dtype)
        counted &= sw != 0
    z_rows = jnp.where(counted, opts.z * w_row * lse * lse, jnp.zeros_like(lse))
    z = z_rows if opts.reduction == "none" else jnp.sum(z_rows)
    if opts.reduction == "mean" or norm is not None:
        z = cm.safe_divide(
            z, lax.stop_gradient(out[1]) if norm is None else jnp.asarray(norm, z.dtype)
        )
    hits = jnp.sum(counted & (arg == info.safe.astype(arg.dtype))).astype(lse.dtype)
    accuracy = cm.safe_divide(hits, jnp.sum(counted).astype(lse.dtype))
    return FusedAux(lse, z, arg, accuracy)


def _explicit_axes(x, dim: int):
    """Mesh axes that dimension ``dim`` of ``x`` is explicitly sharded over (jit with
    ``AxisType.Explicit`` meshes, the ``jax.make_mesh`` default), else ``None``."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if not spec or len(spec) <= dim or spec[dim] is None:
        return None
    return spec[dim]


def _axes_size(mesh, axes) -> int:
    """How many devices ``axes`` (a mesh axis, a tuple of them, or ``None``) span."""
    if axes is None:
        return 1
    return math.prod(mesh.shape[a] for a in _axis_tuple(axes))


def _map_rows(fn, h, row_axes, rows, whole, reduction: str, whole_specs=None, mesh=None):
    """``fn(*rows, *whole)`` on each device's rows, under ``jax.shard_map``: ``rows``
    (``[N, ...]`` arrays or ``None``) sharded over ``row_axes`` (replicated when it
    is ``None``), ``whole`` (the kernel, biases, class weights) laid out by
    ``whole_specs`` (default: replicated). ``fn`` returns a pair: per-device sums
    (added with one ``psum`` over the row axes; the kernel's gradient is summed
    once by its transpose) or, with ``reduction="none"``, per-row outputs. With
    ``"mean"`` the pair is ``(sum, divisor)`` and the result their quotient;
    otherwise the pair itself."""
    from jax.sharding import PartitionSpec as P

    mesh = jax.typeof(h).sharding.mesh if mesh is None else mesh
    row_spec = P(row_axes) if row_axes is not None else P()
    whole_specs = (P(),) * len(whole) if whole_specs is None else tuple(whole_specs)

    def put(x, spec):
        return None if x is None else jax.sharding.reshard(x, jax.NamedSharding(mesh, spec))

    rows = [put(x, row_spec) for x in rows]
    whole = [put(x, spec) for x, spec in zip(whole, whole_specs, strict=True)]

    axes = row_axes if isinstance(row_axes, tuple) else (row_axes,)

    def local(*args):
        if row_axes is not None:
            # The kernel and biases made varying over the row axes here, at the top:
            # their gradients are then summed over the rows' devices once, whole,
            # by this cast's transpose, instead of wherever JAX would broadcast
            # them against the rows (a [chunk, V] sum per chunk in a tangent).
            cut = len(rows)
            args = (*args[:cut], *(_vary(a, axes) for a in args[cut:]))
        out = fn(*args)
        return out if reduction == "none" or row_axes is None else lax.psum(out, axes)

    spec = row_spec if reduction == "none" else P()
    value, divisor = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(row_spec,) * len(rows) + whole_specs,
        out_specs=(spec, spec),
    )(*rows, *whole)
    return cm.safe_divide(value, divisor) if reduction == "mean" else (value, divisor)


def _vary(x, axes):
    """``x`` (invariant over ``axes``: its spec does not name them) cast to varying."""
    return None if x is None else lax.pcast(x, axes, to="varying")


class _Layout(NamedTuple):
    """How explicitly sharded fused inputs lie on their mesh."""

    mesh: Any
    rows: Any  # mesh axes of hidden's rows (data parallel), or None
    vocab: Any  # mesh axes of the kernel's columns (vocabulary parallel), or None
    n_local: int  # rows per device
    v_local: int  # vocabulary columns per device


def _layout(h, w, axis_name=None) -> _Layout | None:
    """The :class:`_Layout` of ``hidden`` and ``kernel`` under ``jit`` with explicit
    sharding (``None`` when neither is sharded, or inside ``shard_map`` with
    ``axis_name``). The vocabulary must split evenly over its devices."""
    if axis_name is not None:
        return None
    rows, vocab = _explicit_axes(h, 0), _explicit_axes(w, 1)  # hidden's rows, W's columns
    if rows is None and vocab is None:
        return None
    mesh = jax.typeof(w if vocab is not None else h).sharding.mesh
    v, shards = w.shape[1], _axes_size(mesh, vocab)
    if v % shards:
        raise ValueError(
            f"kernel's vocabulary ({v} columns) is sharded over {vocab!r} ({shards} "
            "devices): it must divide evenly."
        )
    return _Layout(mesh, rows, vocab, h.shape[0] // _axes_size(mesh, rows), v // shards)


def _kernel_specs(layout: _Layout, count: int) -> tuple:
    """``count`` specs of (kernel, bias) pairs: columns over the vocabulary axes."""
    from jax.sharding import PartitionSpec as P

    return (P(None, layout.vocab), P(layout.vocab)) * count


def _sharded(h, w, b, y, sw, cw, layout: _Layout, options, reduction, chunk):
    """The fused CE with explicitly sharded inputs (:func:`_map_rows`): rows over the
    layout's row axes (data parallel), the kernel's vocabulary over its vocabulary
    axes (each device runs the vocabulary-parallel loss on its slice; nothing
    ``[N, V]`` or ``[D, V]`` is gathered)."""
    from jax.sharding import PartitionSpec as P

    red = cm.Reduction.of(reduction)
    local_reduction = "none" if red.kind == "none" else "sum"
    v = w.shape[1]
    opts = _fused_opts(
        options, local_reduction, layout.n_local, layout.v_local, v, chunk, layout.vocab,
        dtype=cm.compute_dtype(h, w),
    )  # fmt: skip
    cm.check_labels_in_range(y, v, opts.ignore_index)

    def local(h, y, sw, w, b, cw):  # traced hyperparameters in opts: replicated
        return _fused(h, w, b, y, sw, cw, opts)

    specs = (*_kernel_specs(layout, 1), P())  # kernel, bias, class weights (whole)
    out = _map_rows(local, h, layout.rows, (h, y, sw), (w, b, cw), red.kind, specs, layout.mesh)
    return out if red.kind == "mean" else out[0]


# --------------------------------------------------------------------------
# Auto-sharded inputs: a partitioning rule (jax.experimental.custom_partitioning)
# --------------------------------------------------------------------------


def _auto_mesh():
    """The context mesh (``jax.set_mesh``) when it spans several devices on
    ``AxisType.Auto`` axes outside ``shard_map``, else ``None``: the fused functions
    then leave the inputs' layout to XLA and give it a partitioning rule."""
    from jax.sharding import AxisType

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or mesh.manual_axes:
        return None
    return mesh if all(t == AxisType.Auto for t in mesh.axis_types) else None


class _Auto(NamedTuple):
    """What :func:`_auto_call` partitions.

    ``body(rows, vocab, opts, *args)`` computes the outputs of one device's
    tokens (``rows``: the mesh axes they are split over, or ``None``) and
    vocabulary slice (``vocab``; the body combines the slices itself, as with
    ``axis_name``); ``opts`` is the options tuple given to :func:`_auto_call`.
    ``args`` and ``outs`` give each operand's and output's role: ``"rows"``
    (``[N, ...]``, split by token), ``"cols"`` (``[D, V]``, by column),
    ``"vec"`` (``[V]``, by class), ``"whole"`` (replicated) or, for outputs,
    ``"sum"`` (a scalar). Every output but ``"rows"`` is summed over the
    row axes. ``split_vocab=False`` keeps every device's vocabulary whole.
    """

    body: Any
    args: tuple
    outs: tuple
    split_vocab: bool = True


def _auto_axes(spec: _Auto, mesh, shapes) -> tuple[Any, Any]:
    """``(rows, vocab)``: the mesh axes the first ``"rows"`` operand's rows and the
    first ``"cols"`` operand's columns are sharded over, where they divide evenly
    (an uneven or clashing split is gathered instead)."""

    def axes(role, dim):
        x = next(a for a, r in zip(shapes, spec.args, strict=True) if r == role)
        dim %= len(x.shape)
        part = x.sharding.spec[dim] if dim < len(x.sharding.spec) else None
        if part is None or x.shape[dim] % _axes_size(mesh, part):
            return None
        return part

    rows = axes("rows", 0)
    vocab = axes("cols", -1) if spec.split_vocab else None
    if rows is not None and vocab is not None and set(_axis_tuple(rows)) & set(_axis_tuple(vocab)):
        vocab = None
    return rows, vocab


def _axis_tuple(axes) -> tuple:
    return axes if isinstance(axes, tuple) else (axes,)


def _auto_specs(roles, rows, vocab, ndims) -> tuple:
    from jax.sharding import PartitionSpec as P

    layout = {
        "rows": lambda nd: P(rows, *(None,) * (nd - 1)),
        "cols": lambda nd: P(*(None,) * (nd - 1), vocab),
        "vec": lambda nd: P(vocab),
        "whole": lambda nd: P(),
        "sum": lambda nd: P(),
    }
    return tuple(layout[r](nd) for r, nd in zip(roles, ndims, strict=True))


def _auto_partition(spec: _Auto, mesh, arg_shapes, result_shape):
    from jax.sharding import NamedSharding

    rows, vocab = _auto_axes(spec, mesh, arg_shapes)
    results = jax.tree.leaves(result_shape)

    def lower(*args):  # traced per device without varying-axis types
        outs = spec.body(rows, vocab, *args)  # the body of _auto_call: opts bound
        summed = [rows is not None and r != "rows" for r in spec.outs]
        return tuple(lax.psum(o, rows) if s else o for o, s in zip(outs, summed, strict=True))

    def named(roles, shapes):
        specs = _auto_specs(roles, rows, vocab, [len(x.shape) for x in shapes])
        return tuple(NamedSharding(mesh, p) for p in specs)

    return mesh, lower, named(spec.outs, results), named(spec.args, arg_shapes)


def _auto_rule(spec: _Auto, mesh, operand_types, result_types) -> str:
    """Shardy's rule: ``n`` the tokens, ``v`` the vocabulary, other dims their own."""
    fresh = (f"f{i}" for i in itertools.count())

    def dims(role, nd):
        if nd == 0:
            return ""
        if role == "rows":
            return " ".join(["n", *(next(fresh) for _ in range(nd - 1))])
        if role in ("cols", "vec"):
            return " ".join([*(next(fresh) for _ in range(nd - 1)), "v"])
        return " ".join(next(fresh) for _ in range(nd))

    def side(roles, types):
        return ", ".join(dims(r, len(t.shape)) for r, t in zip(roles, types, strict=True))

    return f"{side(spec.args, operand_types)} -> {side(spec.outs, result_types)}"


def _auto_global(spec: _Auto, *args):
    return spec.body(None, None, *args)


_auto_op = custom_partitioning(_auto_global, static_argnums=(0,))
_auto_op.def_partition(_auto_partition, sharding_rule=_auto_rule)


def _auto_call(spec: _Auto, opts, *args):
    """``spec.body`` over the whole inputs, partitioned by XLA's SPMD partitioner
    with :func:`_auto_partition` (each device runs its rows and vocabulary slice).
    ``None`` operands are left out (their role too); the traced hyperparameters
    of ``opts`` enter as replicated operands (the op's static arguments must
    hold no tracer).

    The partitioned op has no batching or differentiation rule of its own:
    under ``vmap``, and for a tangent of the body itself (an operand without a
    closed-form rule, or a second derivative), the body runs on the whole
    arrays and XLA partitions it as any other code.
    """
    traced = {k: v for k, v in opts._asdict().items() if isinstance(v, jax.Array)}
    opts = opts._replace(**dict.fromkeys(traced))
    args = (*args, *traced.values())
    present = tuple(a is not None for a in args)
    roles = (*spec.args, *("whole" for _ in traced))
    roles = tuple(r for r, p in zip(roles, present, strict=True) if p)
    body = spec.body

    def dense_body(rows, vocab, *given):
        it = iter(given)
        full = [next(it) if p else None for p in present]
        hyper = dict(zip(traced, full[len(full) - len(traced) :], strict=True))
        return body(rows, vocab, opts._replace(**hyper), *full[: len(full) - len(traced)])

    spec = spec._replace(body=dense_body, args=roles)
    plain = partial(_auto_global, spec)
    batched = jax.custom_batching.custom_vmap(partial(_auto_op, spec))

    @batched.def_vmap
    def _(axis_size, in_batched, *given):
        out = jax.vmap(plain, in_axes=[0 if b else None for b in in_batched])(*given)
        return out, jax.tree.map(lambda _: True, out)

    call = jax.custom_jvp(batched)
    call.defjvp(lambda primals, tangents: jax.jvp(plain, primals, tangents))
    return call(*(a for a in args if a is not None))


def _auto_forward(forward, grads, args, roles, opts, aux=False):
    """``forward(want, *args, opts)`` (the rule's forward, ``grads`` the student's or
    model's ``(hidden, kernel, bias)`` gradients it forms) under an Auto-axis mesh:
    each device runs its tokens and vocabulary slice (:func:`_auto_call`) with the
    reduction's sum, then the mean divides once. ``aux``: two more per-row outputs
    (the vocabulary is then kept whole: the argmax is not combined over slices)."""
    local = "none" if opts.reduction == "none" else "sum"
    want = frozenset(i for i, g in enumerate(grads) if g)

    def body(rows, vocab, opts, *args):
        o = opts._replace(reduction=local, chunk=min(opts.chunk, args[0].shape[0]))
        out, res = forward(want, *args, o._replace(axis_name=vocab, auto=False))
        return (*out, *(g for g in (res.grads or ()) if g is not None))

    per = "rows" if local == "none" else "sum"
    outs = (per, per, *(("rows", "rows") if aux else ()))
    outs += tuple(r for r, g in zip(("rows", "cols", "vec"), grads, strict=True) if g)
    res = _auto_call(_Auto(body, roles, outs, not aux), opts, *args)
    k = len(outs) - sum(grads)
    out, it = res[:k], iter(res[k:])
    g = tuple(next(it) if want_i else None for want_i in grads)
    red = cm.Reduction(opts.reduction)  # the mean divides the summed value once
    scale = red.scale(out[1], 1, out[0].dtype)
    if red.kind == "mean":
        out = (red(out[0], out[1]), *out[1:])
    if any(grads):
        return out, _Res(tuple(None if x is None else x * scale for x in g), None, scale)
    return out, _Res(None, None, scale)


def vocab_parallel_fused_linear_softmax_cross_entropy(
    hidden: ArrayLike,
    kernel_shard: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: Any,
    bias_shard: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    normalizer: ArrayLike | None = None,
    temperature: float = 1.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
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
      weight: optional class weights for the whole vocabulary ``[V]``
        (replicated, not sharded), as in
        :func:`fused_linear_softmax_cross_entropy`.
      sample_weight, normalizer, temperature, ignore_index: as in
        :func:`fused_linear_softmax_cross_entropy` (``sample_weight`` replicated
        like ``labels``).
      label_smoothing, z_loss, logit_softcap, reduction, chunk_size: as in
        :func:`fused_linear_softmax_cross_entropy`.

    Returns:
      The loss, replicated over ``axis_name``.

    Note:
      Use ``jax.shard_map`` with its default ``check_vma=True``: the gradient's
      freedom from communication in the backward pass relies on it.
    """
    _, shards = _bind_axis(axis_name, _VP_FUSED)
    h, w, y, b, chunk = _prepare_fused(
        hidden, kernel_shard, labels, bias_shard, chunk_size, "kernel_shard", "bias_shard"
    )
    options = (ignore_index, label_smoothing, z_loss, logit_softcap, temperature)
    n, v = h.shape[0], w.shape[1] * shards
    sw, norm, reduction = _token_weights(sample_weight, normalizer, reduction, n)
    cw = cm.optional_vector(weight, "weight", v, "one weight per class of the whole vocabulary")
    dtype = cm.compute_dtype(h, w)
    opts = _fused_opts(options, reduction, n, w.shape[1], v, chunk, axis_name, dtype)
    cm.check_labels_in_range(y, v, opts.ignore_index)
    return _normalized(_fused(h, w, b, y, sw, cw, opts)[0], norm)


def vocab_parallel_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: Any,
    reduction: str = "none",
    axis: int = -1,
    where: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
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
    options = (ignore_index, label_smoothing, z_loss, logit_softcap)
    p = cm.int_label_inputs(
        logits, labels, axis, where, weight, reduction, options, shards, traced=True
    )
    opts = _VpOpts(axis_name, *p.options, p.num_classes)
    loss, share = _vp_ce(p.x, p.labels, p.weight, p.mask, opts)
    return p.reduction(loss, share)


# --------------------------------------------------------------------------
# Per-token log-probabilities and entropy
# --------------------------------------------------------------------------


class _LogProbOpts(NamedTuple):
    temperature: float
    cap: float | None
    chunk: int
    entropy: bool
    axis_name: Any = None  # None: the whole vocabulary on every device
    num_classes: int = 0  # global V
    auto: bool = False  # under an Auto-axis mesh: the forward partitioned by _auto_call


class _LogProbRows(NamedTuple):
    """Per-row scalars of the log-probability rule, split into chunks."""

    shift: Array  # S, the row's largest logit
    log_sum: Array  # lse = S + log_sum
    entropy: Array  # H (0 without return_entropy)


def _lp_scores(h_c, w, b, opts: _LogProbOpts):
    dtype = cm.compute_dtype(h_c, w)
    return _scores(_dot(h_c, w, (1, 0), dtype) + _bias(b, dtype), opts)


def _lp_label_column(y, w, opts: _LogProbOpts):
    """The label's column in this device's slice of the vocabulary."""
    offset = _shard_offset(opts.axis_name, w.shape[1], "fused_linear_log_probs")
    return y - jnp.asarray(offset, y.dtype)


def _lp_stats(h_c, w, b, y_c, opts: _LogProbOpts):
    """A chunk's ``(S, sum e^(s-S), s_y, sum e^(s-S) (s-S))`` over this device's columns."""
    s = _lp_scores(h_c, w, b, opts)
    block = sm.block_stats(s, None, y_c, None, dense=False, gscale=1.0)
    ent = jnp.zeros_like(block.total)
    if opts.entropy:
        rel = s - block.shift[:, None]
        ent = jnp.sum(cm.safe_mul(jnp.exp(rel), rel), axis=-1)  # 0 log 0 = 0
    return jnp.stack([block.shift, block.total, block.s_y, ent])


def _lp_merge(stats, axis_name):
    """Statistics of every device's columns combined (one all-gather)."""
    if axis_name is None:
        return stats
    parts = sm.gather_shards(stats, axis_name)  # [P, 4, N]
    shift, total, s_y, ent = (parts[:, i] for i in range(4))
    merged = sm.merge(sm.Block(shift, total, s_y, None, None, None), 1.0)
    # each device's entropy sum rebased from its own maximum to the common one
    rel = shift - merged.shift[None]
    ent = jnp.sum(cm.safe_mul(jnp.exp(rel), ent + cm.safe_mul(rel, total)), axis=0)
    return jnp.stack([merged.shift, merged.total, merged.s_y, ent])


def _lp_forward(h, w, b, y, opts: _LogProbOpts):
    """``(log p(y), H)`` per row and the rows the tangent reuses."""
    n = h.shape[0]
    num_chunks = -(-n // opts.chunk)
    ch = partial(_chunk_rows, chunk=opts.chunk, num_chunks=num_chunks)
    if opts.auto:  # each device's tokens and vocabulary slice; the rows come back whole

        def body(rows, vocab, o, h, w, b, y):
            o = o._replace(chunk=min(o.chunk, h.shape[0]), axis_name=vocab, auto=False)
            out, r = _lp_forward(h, w, b, y, o)
            return (*out, *(_unchunk(a, h.shape[0]) for a in r))

        spec = _Auto(body, ("rows", "cols", "vec", "rows"), ("rows",) * 5)
        log_p, entropy, *rows = _auto_call(spec, opts, h, w, b, y)
        return (log_p, entropy), _LogProbRows(*(ch(a) for a in rows))
    y_loc = _lp_label_column(y, w, opts)

    def body(_, xs):
        h_c, y_c = xs
        return None, _lp_stats(h_c, *_pin(w, b, h_c), y_c, opts)

    _, stats = lax.scan(body, None, (ch(h), ch(y_loc)))  # [chunks, 4, chunk]
    shift, total, s_y, ent = (_unchunk(stats[:, i], n) for i in range(4))
    shift, total, s_y, ent = _lp_merge(jnp.stack([shift, total, s_y, ent]), opts.axis_name)
    log_sum = jnp.log(total)
    log_p = (s_y - shift) - log_sum  # exact near the maximum
    # H = lse - sum_c p_c s_c = log_sum - sum_c p_c (s_c - S)
    entropy = log_sum - ent / total if opts.entropy else jnp.zeros_like(log_p)
    rows = _LogProbRows(*(ch(a) for a in (shift, log_sum, entropy)))
    return (log_p, entropy), rows


def _lp_tangent(rows: _LogProbRows, args, ds):
    """Joint tangent of ``(log p(y), H)`` along ``hidden``, ``kernel`` and ``bias``
    (``ds``: their tangents, ``None`` where not differentiated): ``sum_c g_c dx_c``
    with ``d log p_y/ds = e_y - p`` and ``dH/ds = -p (log p + H)``, the logits
    recomputed chunk by chunk once for all three (four ``N x D x V`` matmuls
    for a gradient)."""
    h, w, b, y, opts = args
    n, dtype = h.shape[0], cm.compute_dtype(h, w)
    ch = partial(_chunk_rows, chunk=opts.chunk, num_chunks=-(-n // opts.chunk))
    terms = [(i, d) for i, d in enumerate(ds) if d is not None]

    def dlogits(h_c, d_c):
        return sum(_dlogits(h_c, d_c, argnum=i, w=w, d=d, dtype=dtype) for i, d in terms)

    @jax.checkpoint
    def body(_, xs):
        h_c, y_c, r, d_c = xs
        s = _lp_scores(h_c, w, b, opts)
        log_p = (s - r.shift[:, None]) - r.log_sum[:, None]
        p = jnp.exp(log_p)
        scale = sm.softcap_slope(s, opts.cap)
        scale = 1.0 / opts.temperature if scale is None else scale / opts.temperature
        g_lp = (jnp.where(sm.label_hits(s, y_c), 1.0, 0.0) - p) * scale  # e_y - p
        dx = dlogits(h_c, d_c)
        t_lp = jnp.sum(g_lp * dx, axis=-1)
        if not opts.entropy:
            return None, jnp.stack([t_lp, jnp.zeros_like(t_lp)])
        g_h = -cm.safe_mul(p, log_p + r.entropy[:, None]) * scale  # -p (log p + H)
        return None, jnp.stack([t_lp, jnp.sum(g_h * dx, axis=-1)])

    xs = (ch(h), ch(_lp_label_column(y, w, opts)), rows, _chunk_d(ds[0], 0, opts, n))
    t = jnp.moveaxis(lax.scan(body, None, xs)[1], 1, 0).reshape(2, -1)[:, :n]
    t = t if opts.axis_name is None else lax.psum(t, opts.axis_name)
    return t[0], t[1]


_lp = cm.linear_rule(
    _lp_forward,
    {(0, 1, 2): _lp_tangent},
    static_argnums=(4,),
    traceable_fields=("temperature", "cap"),
)


def fused_linear_log_probs(
    hidden: ArrayLike,
    kernel: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    temperature: float = 1.0,
    logit_softcap: float | None = None,
    return_entropy: bool = False,
    chunk_size: int | None = None,
    axis_name: Any = None,
) -> Array | tuple[Array, Array]:
    r"""Per-token :math:`\log p(y)` (and entropy) of ``hidden @ kernel + bias`` without the logits.

    .. math::
        s = \mathrm{cap} \tanh\!\big((h W + b) / (T\,\mathrm{cap})\big), \qquad
        \log p_i(y_i) = s_{i,y_i} - \mathrm{lse}(s_i), \qquad
        H_i = -\sum_c p_{i,c} \log p_{i,c}

    The ``[N, V]`` logits are never held: rows are processed in chunks of
    ``chunk_size`` tokens and each chunk's ``[chunk, V]`` logits exist only
    inside its step. Both outputs are differentiable with respect to
    ``hidden``, ``kernel`` and ``bias`` (policy gradients, DPO's sequence
    log-probabilities, entropy bonuses), in forward and reverse mode, through a
    closed-form rule: :math:`\partial \log p_y / \partial s = e_y - p` and
    :math:`\partial H / \partial s = -p (\log p + H)`, formed while a chunk's
    logits are recomputed (four ``N x D x V`` matmuls for a gradient).

    Args:
      hidden: ``[N, D]`` features.
      kernel: ``[D, V]`` output projection (Flax ``Dense`` layout; a tied
        embedding passes ``embedding.T``).
      labels: ``[N]`` integer token ids in ``[0, V)``.
      bias: optional ``[V]`` bias.
      temperature: :math:`T > 0`, dividing the logits (may be traced, as may
        ``logit_softcap``).
      logit_softcap: Gemma 2's soft cap, applied after the temperature.
      return_entropy: also return the softmax entropy ``[N]``.
      chunk_size: rows per chunk; ``None`` picks one whose float32 logits take
        at most ``min(128 MiB, N*V*4/16)`` bytes.
      axis_name: inside ``jax.shard_map``, the mesh axis the vocabulary is
        sharded over: ``kernel`` (and ``bias``) is then this device's contiguous
        slice ``[D, V / P]`` (shard ``i`` holds ``[i V/P, (i+1) V/P)``),
        ``hidden`` and the global ``labels`` are the same on every device, and
        one all-gather of ``[P, 4, N]`` per-row statistics combines the shards
        (the results are replicated).

    Returns:
      ``log_probs [N]`` (float32 for bf16/f16 inputs), or
      ``(log_probs, entropy)`` with ``return_entropy=True``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> h = jnp.array([[1.0, 0.0], [0.0, 2.0]], jnp.float32)
      >>> w = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.5, 0.0]], jnp.float32)
      >>> jaxloss.fused_linear_log_probs(h, w, jnp.array([0, 1]))
      Array([-0.16984604, -0.55144465], dtype=float32)

    Note:
      ``fused_linear_log_probs(h, W, y) == -fused_linear_softmax_cross_entropy(h, W, y,
      reduction="none")``. Under ``jit`` with explicitly sharded inputs,
      ``hidden``'s rows over data axes run data-parallel and ``kernel``'s
      columns over model axes run vocabulary-parallel (as with ``axis_name``),
      without a ``shard_map`` in the caller's code: only per-token statistics
      are gathered. On a mesh of ``AxisType.Auto`` axes set with
      ``jax.set_mesh`` the forward pass does the same from the layout XLA
      chose (a partitioning rule); the gradient pass is XLA's partitioning of
      the plain computation. Labels are not masked: give
      padded tokens any valid id and mask the result. Out-of-range labels raise
      ``ValueError`` when concrete.

    References:
      TRL's ``selective_log_softmax``; Liger-Kernel's fused linear losses.
    """
    h, w, y, b, chunk = _prepare_fused(hidden, kernel, labels, bias, chunk_size, "kernel", "bias")
    number = partial(cm.number_option, traced_dtype=cm.compute_dtype(h, w), low=0.0, low_open=True)
    t = number(temperature, "temperature")
    cap = number(logit_softcap, "logit_softcap", allow_none=True)
    if not isinstance(return_entropy, bool):
        raise TypeError(f"return_entropy must be a bool; got {return_entropy!r}.")
    n, v_local = h.shape[0], w.shape[1]
    shards = 1 if axis_name is None else _bind_axis(axis_name, "fused_linear_log_probs")[1]
    v = v_local * shards
    cm.check_labels_in_range(y, v, None)
    # half the cross-entropy's chunk: at N=1024, D=512, V=65536 (value_and_grad with
    # entropy) a quarter of it took 3.20 s and 136 MiB of scratch, a half 2.38 s and
    # 144 MiB, the whole 2.09 s and 160 MiB (but more than N*V*4/4 at small N)
    chunk = max(_default_chunk(n, v_local) // 2, 1) if chunk is None else min(chunk, max(n, 1))
    y = jnp.clip(y, 0, v - 1)
    layout = _layout(h, w, axis_name)
    if layout is not None:  # explicitly sharded rows and/or vocabulary
        chunk = min(chunk, max(layout.n_local, 1))
        opts = _LogProbOpts(t, cap, chunk, return_entropy, layout.vocab, v)
        local = lambda h, y, w, b: _lp(h, w, b, y, opts)
        specs = _kernel_specs(layout, 1)
        log_p, entropy = _map_rows(
            local, h, layout.rows, (h, y), (w, b), "none", specs, layout.mesh
        )
    else:
        auto = axis_name is None and _auto_mesh() is not None
        opts = _LogProbOpts(t, cap, chunk, return_entropy, axis_name, v, auto)
        log_p, entropy = _lp(h, w, b, y, opts)
    return (log_p, entropy) if return_entropy else log_p


# --------------------------------------------------------------------------
# Fused distillation
# --------------------------------------------------------------------------

_DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


class _DistillOpts(NamedTuple):
    kind: str  # "forward_kl", "reverse_kl" or "jsd" (0 < beta < 1)
    beta: float
    temperature: float
    reduction: str
    chunk: int
    axis_name: Any = None  # the vocabulary sharded over this mesh axis (shard_map)
    auto: bool = False  # under an Auto-axis mesh: partitioned by _auto_call


def _log_softmax_rows(x: Array, axis_name=None) -> Array:
    """``log_softmax`` of ``[c, V]`` logits from the core's block statistics
    (``-inf`` columns stay ``-inf``; a row without a finite logit gives ``-inf``);
    with ``axis_name``, of this device's columns of a vocabulary sharded over it
    (one all-gather of the rows' statistics)."""
    block = sm.block_stats(x, None, None, None, dense=False, gscale=1.0)
    if axis_name is not None:
        block = sm.merge(sm.gather_blocks(block, axis_name), 1.0)
    some = block.total > 0
    log_sum = jnp.log(jnp.where(some, block.total, 1.0))
    return jnp.where(some[:, None], (x - block.shift[:, None]) - log_sum[:, None], sm.NEG_INF)


def _plogq(lp: Array, diff: Array, axis_name=None) -> Array:
    """``sum_c e^lp_c diff_c`` over the classes, with ``0 log 0 = 0`` (and over
    every device's classes with ``axis_name``)."""
    out = jnp.sum(jnp.where(lp != sm.NEG_INF, jnp.exp(lp) * diff, 0.0), axis=-1)
    return out if axis_name is None else lax.psum(out, axis_name)


def _log_weights(b) -> tuple:
    """``(log b, log(1 - b))`` of the JSD's ``beta``: in double precision when it
    is a Python number, else traced."""
    if isinstance(b, (int, float)):
        return math.log(b), math.log1p(-b)
    return jnp.log(b), jnp.log1p(-b)


def _divergence_rows(ls: Array, lt: Array, opts: _DistillOpts) -> tuple[Array, Array]:
    """Per-row divergence between the student's (``ls``) and the teacher's (``lt``)
    log-probabilities, and its derivative w.r.t. the student's tempered logits.

    With ``p = e^ls``, ``q = e^lt``, ``m = beta q + (1 - beta) p``:
    forward KL ``sum q (lt - ls)``, gradient ``p - q``; reverse KL
    ``K = sum p (ls - lt)``, gradient ``p (ls - lt - K)``; generalised JSD
    ``beta KL(q || m) + (1 - beta) KL(p || m)``, gradient
    ``(1 - beta) p (ls - lm - sum p (ls - lm))``.
    """
    p, ax = jnp.exp(ls), opts.axis_name
    if opts.kind == "forward_kl":
        loss = _plogq(lt, jnp.where(lt != sm.NEG_INF, lt - ls, 0.0), ax)
        return loss, p - jnp.exp(lt)
    if opts.kind == "reverse_kl":
        d = jnp.where(ls != sm.NEG_INF, ls - lt, 0.0)
        loss = _plogq(ls, d, ax)
        return loss, p * (d - loss[:, None])
    b = opts.beta
    if isinstance(b, (int, float)):
        return _jsd_rows(ls, lt, p, b, ax)
    # traced: 0 and 1 are the two KLs (as for a concrete beta), chosen at run time
    lo, hi = b == 0.0, b == 1.0
    parts = [_divergence_rows(ls, lt, opts._replace(kind=k)) for k in ("forward_kl", "reverse_kl")]
    parts.append(_jsd_rows(ls, lt, p, jnp.where(lo | hi, jnp.asarray(0.5, b.dtype), b), ax))
    (f_l, f_g), (r_l, r_g), (j_l, j_g) = parts
    return jnp.where(lo, f_l, jnp.where(hi, r_l, j_l)), jnp.where(lo, f_g, jnp.where(hi, r_g, j_g))


def _jsd_rows(ls, lt, p, b, ax):
    """The generalised JSD of :func:`_divergence_rows` for ``0 < b < 1``."""
    # log m as a logaddexp of log-probabilities (no probability formed from a tiny one)
    some = (lt != sm.NEG_INF) | (ls != sm.NEG_INF)
    log_b, log_1mb = _log_weights(b)
    lm = jnp.logaddexp(jnp.where(some, lt, 0.0) + log_b, jnp.where(some, ls, 0.0) + log_1mb)
    ds = jnp.where(ls != sm.NEG_INF, ls - lm, 0.0)
    dt = jnp.where(lt != sm.NEG_INF, lt - lm, 0.0)
    ks = _plogq(ls, ds, ax)
    loss = b * _plogq(lt, dt, ax) + (1.0 - b) * ks
    return loss, (1.0 - b) * p * (ds - ks[:, None])


def _distill_chunk(hs_c, ws, bs, ht_c, wt, bt, act_c, opts: _DistillOpts):
    """One chunk's per-row divergence (0 on rows that do not count) and
    ``dloss/dlogits`` of the student's untempered logits ``[chunk, V]``."""
    dtype = cm.compute_dtype(hs_c, ws)
    s = (_dot(hs_c, ws, (1, 0), dtype) + _bias(bs, dtype)) / opts.temperature
    t_dtype = cm.compute_dtype(ht_c, wt)
    t = (_dot(ht_c, wt, (1, 0), t_dtype) + _bias(bt, t_dtype)) / opts.temperature
    ls = _log_softmax_rows(s, opts.axis_name)
    loss, g = _divergence_rows(ls, _log_softmax_rows(t.astype(dtype), opts.axis_name), opts)
    loss = jnp.where(act_c, loss, jnp.zeros_like(loss))
    return loss, jnp.where(act_c[:, None], g / opts.temperature, 0.0)


def _distill_chunks(hs, ht, act, opts: _DistillOpts):
    n = hs.shape[0]
    ch = partial(_chunk_rows, chunk=opts.chunk, num_chunks=-(-n // opts.chunk))
    return ch(hs), ch(ht), ch(act, fill=False)


def _distill_forward(want, hs, ws, bs, ht, wt, bt, act, opts: _DistillOpts):
    """``((value, divisor), residuals)``: with ``reduction="mean"``/``"sum"`` the
    gradients of the student's operands are formed chunk by chunk in the same
    pass (the ``"fused"`` strategy of the cross-entropy); with ``"none"`` the
    tangent recomputes each chunk (``"recompute"``)."""
    n, dtype = hs.shape[0], cm.compute_dtype(hs, ws)
    red = cm.Reduction(opts.reduction)
    grads = (0 in want, 1 in want, 2 in want and bs is not None)
    grads = grads if opts.reduction != "none" else (False,) * 3
    if opts.auto:
        roles = ("rows", "cols", "vec", "rows", "cols", "vec", "rows")
        return _auto_forward(_distill_forward, grads, (hs, ws, bs, ht, wt, bt, act), roles, opts)
    refs = (hs, ws, bs, ht, wt, bt, act)  # a carry varies as they do inside shard_map
    g_w0 = _match_varying(jnp.zeros(ws.shape, dtype), *refs) if grads[1] else None
    g_b0 = _match_varying(jnp.zeros(ws.shape[1:], dtype), *refs) if grads[2] else None

    def body(carry, xs):
        hs_c, ht_c, act_c = xs
        ws_, bs_ = _pin(ws, bs, hs_c)
        wt_, bt_ = _pin(wt, bt, ht_c)
        loss, g = _distill_chunk(hs_c, ws_, bs_, ht_c, wt_, bt_, act_c, opts)
        g_w, g_b = carry
        out = {"loss": loss}
        if grads[0]:
            out["h"] = _dot(g, ws_.astype(dtype), (1, 1), dtype)  # g @ W.T
        if grads[1]:
            g_w = g_w + _dot(hs_c.astype(dtype), g, (0, 0), dtype)  # h.T @ g
        if grads[2]:
            g_b = g_b + jnp.sum(g, axis=0)
        return (g_w, g_b), out

    (g_w, g_b), out = lax.scan(body, (g_w0, g_b0), _distill_chunks(hs, ht, act, opts))
    loss = _unchunk(out["loss"], n)
    share = act.astype(dtype)
    scale = red.scale(share, n, dtype)
    value = (red(loss, share), share if opts.reduction == "none" else red.divisor(share, n, dtype))
    if not any(grads):
        return value, _Res(None, None, scale)
    g_h = None
    if grads[0]:
        g_h = _unchunk(out["h"], n)
        # each device holds its columns' share of g @ W.T: the one [N, D] all-reduce
        g_h = g_h if opts.axis_name is None else lax.psum(g_h, opts.axis_name)
    g = (g_h, g_w, g_b)
    return value, _Res(tuple(None if x is None else x * scale for x in g), None, scale)


def _distill_tangent(argnum: int):
    """Tangent along the student's ``hidden`` (0), ``kernel`` (1) or ``bias`` (2)."""

    def tangent(res: _Res, args, d):
        hs, ws, bs, ht, wt, bt, act, opts = args
        dtype = cm.compute_dtype(hs, ws)
        sharded = opts.axis_name is not None
        if res.grads is not None:
            t = jnp.sum(res.grads[argnum] * d.astype(dtype))
            # a kernel or bias shard's tangent moves only its own columns: summed over them
            t = lax.psum(t, opts.axis_name) if sharded and argnum != 0 else t
            return t, jnp.zeros_like(t)
        n = hs.shape[0]
        dlogits = partial(_dlogits, argnum=argnum, w=ws, d=d, dtype=dtype)

        @jax.checkpoint
        def body(_, xs):
            hs_c, ht_c, act_c, d_c = xs
            _, g = _distill_chunk(hs_c, ws, bs, ht_c, wt, bt, act_c, opts)
            return None, jnp.sum(g * dlogits(hs_c, d_c), axis=-1)

        chunks = (*_distill_chunks(hs, ht, act, opts), _chunk_d(d, argnum, opts, n))
        t = _unchunk(lax.scan(body, None, chunks)[1], n)
        t = lax.psum(t, opts.axis_name) if sharded else t  # every device's columns
        t = t if opts.reduction == "none" else jnp.sum(t) * res.scale
        return t, jnp.zeros_like(t)

    return tangent


_distill = cm.linear_rule(
    _distill_forward,
    {i: _distill_tangent(i) for i in range(3)},
    static_argnums=(7,),
    pass_want=True,
    traceable_fields=("beta", "temperature"),
)


def _divergence_kind(divergence, beta, temperature, dtype) -> tuple[str, Any, Any]:
    """Validated ``(kind, beta, temperature)``; the JSD's ``beta`` of 0 or 1 is the
    forward or the reverse KL (as in TRL and :func:`jensen_shannon_divergence`).
    ``beta`` and ``temperature`` may be traced (scalars of ``dtype``)."""
    if divergence not in _DIVERGENCES:
        raise ValueError(f"divergence must be one of {_DIVERGENCES}; got {divergence!r}.")
    b = cm.number_option(beta, "beta", traced_dtype=dtype, low=0.0, high=1.0)
    t = cm.number_option(temperature, "temperature", traced_dtype=dtype, low=0.0, low_open=True)
    if divergence == "jsd" and isinstance(b, float) and b in (0.0, 1.0):
        return ("forward_kl" if b == 0.0 else "reverse_kl"), b, t
    return divergence, b, t


def fused_linear_distillation_loss(
    student_hidden: ArrayLike,
    student_kernel: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_kernel: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    ignore_index: int | None = None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    student_bias: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
    axis_name: Any = None,
) -> Array:
    r"""Distillation divergence between a student's and a teacher's ``hidden @ kernel``
    without either ``[N, V]`` logits matrix.

    With the tempered softmaxes :math:`p = \mathrm{softmax}((h_s W_s + b_s) / T)`
    (student) and :math:`q = \mathrm{softmax}((h_t W_t + b_t) / T)` (teacher),
    per token:

    .. math::
        \text{forward\_kl: } \mathrm{KL}(q \,\|\, p), \qquad
        \text{reverse\_kl: } \mathrm{KL}(p \,\|\, q), \qquad
        \text{jsd: } \beta\,\mathrm{KL}(q \,\|\, m) + (1-\beta)\,\mathrm{KL}(p \,\|\, m),
        \; m = \beta q + (1-\beta) p

    The generalised JSD is :func:`jensen_shannon_divergence`'s (TRL's
    ``generalized_jsd_loss``, Liger-Kernel's ``LigerFusedLinearJSD``):
    ``beta=0`` gives the forward and ``beta=1`` the reverse KL. Rows are
    processed ``chunk_size`` tokens at a time; the gradient with respect to
    the student's logits (``p - q`` for the forward KL,
    ``p (log p - log q - KL)`` for the reverse, ``(1-beta) p (log(p/m) -
    KL(p||m))`` for the JSD, over ``T``) is formed while a chunk's logits are
    in memory, and with ``reduction="mean"``/``"sum"`` the student's gradients
    are accumulated in the same pass (four ``N x D x V`` matmuls in all: two
    for the logits, two for the gradients). The teacher is a constant
    (``stop_gradient``); gradients flow to ``student_hidden``,
    ``student_kernel`` and ``student_bias``, in forward and reverse mode.

    Args:
      student_hidden: ``[N, D_s]`` student features.
      student_kernel: ``[D_s, V]`` student output projection (Flax ``Dense``
        layout).
      teacher_hidden: ``[N, D_t]`` teacher features for the same tokens.
      teacher_kernel: ``[D_t, V]`` teacher output projection (same ``V``).
      labels: optional ``[N]`` integer labels, used only to mask tokens: rows
        whose label equals ``ignore_index`` give 0 and do not count.
      ignore_index: the label value of masked tokens (e.g. ``-100``).
      divergence: ``"forward_kl"`` (default), ``"reverse_kl"`` or ``"jsd"``.
      beta: :math:`\beta \in [0, 1]` of the generalised JSD (ignored by the
        two KL divergences); may be traced, and a traced 0 or 1 gives the KL
        direction a Python 0 or 1 gives.
      temperature: :math:`T > 0` dividing both logits (may be traced). As in
        TRL and Liger-Kernel, the divergence is not multiplied by :math:`T^2`.
      student_bias: optional ``[V]`` bias of the student.
      teacher_bias: optional ``[V]`` bias of the teacher.
      reduction: ``"mean"`` (default: over counted tokens, TRL's
        ``batchmean`` with labels), ``"sum"`` or ``"none"`` (``[N]``).
      chunk_size: rows per chunk; ``None`` picks one whose student and teacher
        float32 logits take at most ``min(64 MiB, N*V*4/32)`` bytes each.
      axis_name: inside ``jax.shard_map``, the mesh axis the vocabulary is
        sharded over: both kernels (and biases) are then this device's
        contiguous slice ``[D, V / P]``, the hidden states and labels the same
        on every device. Per chunk, one all-gather of each model's row
        statistics and one ``psum`` of the per-row sums combine the shards, and
        ``d student_hidden`` costs one ``[N, D]`` all-reduce; the result is
        replicated.

    Returns:
      The divergence: float32 for bf16/f16 inputs, a scalar unless
      ``reduction="none"``.

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> h = jnp.array([[1.0, 0.0], [0.0, 2.0]], jnp.float32)
      >>> w = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.5, 0.0]], jnp.float32)
      >>> float(jaxloss.fused_linear_distillation_loss(h, w, h, w))
      0.0
      >>> # KL(softmax([1, 0, -0.5]) || softmax([2, 0, -1])) = 0.14707 (float64 by hand)
      >>> jaxloss.fused_linear_distillation_loss(h, w, h, 0.5 * w, reduction="none")
      Array([0.14706..., 0.03113...], dtype=float32)

    Note:
      Equal (to float rounding) to :func:`kl_divergence_with_log_targets`
      (forward KL), or :func:`jensen_shannon_divergence` with ``beta`` (and
      0/1 for the KL directions) on the materialised
      ``log_softmax(logits / T)`` of both models. ``-inf`` bias columns are
      allowed (``0 log 0 = 0``); a class that only one side can produce gives
      ``inf`` for the KL direction that needs it, the true value. Under ``jit``
      with explicitly sharded inputs, ``student_hidden``'s rows over data axes
      run data-parallel (the sums added with one ``psum``) and the student
      kernel's columns over model axes run vocabulary-parallel, the teacher's
      kernel laid out the same way (as with ``axis_name``): only per-token
      statistics are gathered. On a mesh of ``AxisType.Auto`` axes set with
      ``jax.set_mesh``, a partitioning rule does the same from the layout XLA
      chose (the loss and its gradients with ``reduction="mean"``/``"sum"``; the
      gradient pass of ``"none"`` is left to XLA).

    References:
      Hinton et al., "Distilling the Knowledge in a Neural Network" (2015);
      Agarwal et al., "On-Policy Distillation of Language Models" (GKD, ICLR
      2024); TRL ``GKDTrainer.generalized_jsd_loss``; Liger-Kernel
      ``LigerFusedLinearJSD``.
    """
    y = labels
    if y is None:
        y = jnp.zeros(jnp.shape(student_hidden)[:1], jnp.int32)
    hs, ws, y, bs, chunk = _prepare_fused(
        student_hidden, student_kernel, y, student_bias, chunk_size,
        "student_kernel", "student_bias", "student_hidden",
    )  # fmt: skip
    ht, wt, _, bt, _ = _prepare_fused(
        teacher_hidden, teacher_kernel, jnp.zeros(jnp.shape(teacher_hidden)[:1], jnp.int32),
        teacher_bias, None, "teacher_kernel", "teacher_bias", "teacher_hidden",
    )  # fmt: skip
    n, v = hs.shape[0], ws.shape[1]
    if axis_name is not None:
        _bind_axis(axis_name, "fused_linear_distillation_loss")
    if ht.shape[0] != n or wt.shape[1] != v:
        raise ValueError(
            "the teacher must score the student's tokens over the same vocabulary: "
            f"teacher_hidden.shape[0] = {ht.shape[0]} and teacher_kernel.shape[1] = "
            f"{wt.shape[1]} must equal student_hidden.shape[0] = {n} and "
            f"student_kernel.shape[1] = {v}."
        )
    kind, b, t = _divergence_kind(divergence, beta, temperature, cm.compute_dtype(hs, ws))
    red = cm.Reduction.of(reduction)
    act = jnp.ones((n,), jnp.bool_)
    if ignore_index is not None and labels is not None:
        act = y != cm.static_int(ignore_index, "ignore_index")
    ht, wt, bt = (None if a is None else lax.stop_gradient(a) for a in (ht, wt, bt))
    layout = _layout(hs, ws, axis_name)
    n_local = n if layout is None else layout.n_local
    # a quarter of the cross-entropy's chunk (two models' logits, several [chunk, V]
    # arrays live): within N*V*4/4 bytes of scratch at small shapes (tested). A half
    # is faster at N=1024, D=512, V=65536 (JSD value_and_grad 2.46 s against 3.40 s,
    # 178 MiB against 154 MiB) but exceeds that bound at N=512, V=4096.
    chunk = max(_default_chunk(n_local, v) // 4, 1) if chunk is None else chunk
    if layout is None:
        auto = axis_name is None and _auto_mesh() is not None
        opts = _DistillOpts(kind, b, t, red.kind, min(chunk, max(n, 1)), axis_name, auto)
        return _distill(hs, ws, bs, ht, wt, bt, act, opts)[0]
    local_reduction = "none" if red.kind == "none" else "sum"
    opts = _DistillOpts(kind, b, t, local_reduction, min(chunk, max(n_local, 1)), layout.vocab)

    def local(hs, ht, act, ws, bs, wt, bt):
        return _distill(hs, ws, bs, ht, wt, bt, act, opts)

    rows, whole = (hs, ht, act), (ws, bs, wt, bt)
    specs = _kernel_specs(layout, 2)  # both kernels' columns over the vocabulary axes
    out = _map_rows(local, hs, layout.rows, rows, whole, red.kind, specs, layout.mesh)
    return out if red.kind == "mean" else out[0]

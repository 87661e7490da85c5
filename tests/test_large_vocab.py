"""Fused linear + softmax cross-entropy and vocabulary-parallel CE on one device.

References are the materialised computation
``softmax_cross_entropy_with_integer_labels(hidden @ kernel + bias, labels)``
in float64 (its own parity with PyTorch and optax is tested in
``test_classification.py``). Multi-device behaviour (sharded classes,
collective counts, data parallelism) is in ``test_sharding.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import close
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import jaxloss
from jaxloss import _large_vocab

N, D, V = 13, 5, 24  # N not a multiple of the chunk sizes used below
CHUNK = 4

OPTIONS = {
    "plain": {},
    "ignore_index": {"ignore_index": -100},
    "label_smoothing": {"label_smoothing": 0.2},
    "z_loss": {"z_loss": 1e-2},
    "logit_softcap": {"logit_softcap": 2.5},
    "all": {"ignore_index": -100, "label_smoothing": 0.1, "z_loss": 1e-3, "logit_softcap": 3.0},
}


def _data(dtype=np.float64, n=N, d=D, v=V, seed=0, ignore=True):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, v)).astype(dtype)
    b = rng.standard_normal((v,)).astype(dtype)
    y = rng.integers(0, v, n).astype(np.int32)
    if ignore:
        y[[2, min(7, n - 1)]] = -100
    return h, w, b, y


def _ref(h, w, b, y, **kw):
    logits = h @ w if b is None else h @ w + b[None, :]
    return jaxloss.softmax_cross_entropy_with_integer_labels(logits, y, **kw)


def _summary(f, reduction, n):
    """A scalar of the loss: a weighted row sum for reduction="none"."""
    r = jnp.linspace(0.5, 1.5, n, dtype=jnp.float64)
    return lambda *a: jnp.sum(f(*a) * r) if reduction == "none" else f(*a)


def _all_derivatives(f, h, w, b, reduction, jit=True):
    """Value, gradients w.r.t. (hidden, kernel, bias) and a jvp in hidden, one jit."""

    def run(h, w, b):
        value = f(h, w, b)
        grads = jax.grad(_summary(f, reduction, h.shape[0]), argnums=(0, 1, 2))(h, w, b)
        tangent = jax.jvp(lambda h_: f(h_, w, b), (h,), (jnp.cos(h),))[1]
        return value, grads, tangent

    return (jax.jit(run) if jit else run)(h, w, b)


def _one_device_mesh():
    # Auto axes: shard_map accepts unsharded arrays (check_grads perturbs its inputs).
    return jax.make_mesh((1,), ("v",), axis_types=(jax.sharding.AxisType.Auto,))


# --------------------------------------------------------------------------
# Equality with the materialised computation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_matches_materialised(reduction):
    """Value, gradients w.r.t. hidden, kernel and bias, and jvp in hidden, per option.

    All options of one reduction compile as one program (compiles dominate).
    """
    names = list(OPTIONS) if reduction == "mean" else ["plain", "all"]
    h, w, b, y_ignore = _data()
    y_plain = np.maximum(y_ignore, 0)

    def every_option(loss):
        def run(h, w, b):
            out = {}
            for name in names:
                kw = OPTIONS[name]
                y = y_ignore if "ignore_index" in kw else y_plain
                f = lambda h, w, b, kw=kw, y=y: loss(h, w, b, y, reduction=reduction, **kw)
                out[name] = _all_derivatives(f, h, w, b, reduction, jit=False)
            return out

        return jax.jit(run)(h, w, b)

    got = every_option(
        lambda h, w, b, y, **kw: jaxloss.fused_linear_softmax_cross_entropy(
            h, w, y, bias=b, chunk_size=CHUNK, **kw
        )
    )
    want = every_option(_ref)
    for name in names:
        (v, grads, t), (v0, grads0, t0) = got[name], want[name]
        close(v, v0, 1e-12, 1e-12, err_msg=f"{name}: value")
        for arg, a, e in zip(("hidden", "kernel", "bias"), grads, grads0, strict=True):
            close(a, e, 1e-12, 1e-12, err_msg=f"{name}: d {arg}")
        close(t, t0, 1e-12, 1e-12, err_msg=f"{name}: jvp in hidden")


def test_fused_jvp_in_every_argument():
    """Forward mode w.r.t. kernel and bias too ("none" uses the recompute path)."""
    h, w, b, y = _data()
    kw = {"ignore_index": -100, "label_smoothing": 0.1, "logit_softcap": 3.0}
    tangents = (jnp.cos(h), jnp.sin(w), jnp.cos(b))

    def both(loss):
        return jax.jit(
            lambda *p: [
                jax.jvp(lambda *q: loss(*q, reduction=r), p, tangents)[1] for r in ("mean", "none")
            ]
        )(h, w, b)

    got = both(
        lambda h, w, b, reduction: jaxloss.fused_linear_softmax_cross_entropy(
            h, w, y, bias=b, reduction=reduction, chunk_size=CHUNK, **kw
        )
    )
    want = both(lambda h, w, b, reduction: _ref(h, w, b, y, reduction=reduction, **kw))
    for a, e in zip(got, want, strict=True):
        close(a, e, 1e-12, 1e-12)


def test_fused_forward_over_reverse():
    """Hessian-vector product in hidden (forward mode over the reverse-mode rule)."""
    h, w, _, y = _data()

    def ours(h):
        return jaxloss.fused_linear_softmax_cross_entropy(
            h, w, y, ignore_index=-100, z_loss=1e-2, chunk_size=CHUNK
        )

    def hvp(f):
        return jax.jit(lambda h, v: jax.jvp(jax.grad(f), (h,), (v,))[1])

    want = hvp(lambda h: _ref(h, w, None, y, ignore_index=-100, z_loss=1e-2, reduction="mean"))
    close(hvp(ours)(h, np.cos(h)), want(h, np.cos(h)), 1e-11, 1e-11)


def test_fused_check_grads_finite_differences():
    """float64 finite differences, forward and reverse, w.r.t. all three arrays."""
    h, w, b, y = _data(n=6, d=3, v=7)

    def f(h, w, b):
        return jaxloss.fused_linear_softmax_cross_entropy(
            h,
            w,
            y,
            bias=b,
            ignore_index=-100,
            label_smoothing=0.1,
            z_loss=1e-2,
            logit_softcap=2.0,
            chunk_size=4,
        )

    check_grads(jax.jit(f), (h, w, b), order=1, modes=("fwd", "rev"), eps=1e-6)
    g = lambda h, w, b: jnp.sum(
        jaxloss.fused_linear_softmax_cross_entropy(
            h, w, y, bias=b, reduction="none", ignore_index=-100, chunk_size=4
        )
        ** 2
    )
    check_grads(jax.jit(g), (h, w, b), order=1, modes=("fwd", "rev"), eps=1e-6)


def test_fused_chunk_size_does_not_change_the_result():
    h, w, b, y = _data()
    sizes = (None, 1, 5, N, 100)

    def run(h, w):
        out = []
        for c in sizes:
            f = lambda h, w, c=c: jaxloss.fused_linear_softmax_cross_entropy(
                h, w, y, bias=b, ignore_index=-100, chunk_size=c
            )
            out.append(jax.value_and_grad(f, argnums=(0, 1))(h, w))
        return out

    want = jax.value_and_grad(
        lambda h, w: _ref(h, w, b, y, ignore_index=-100, reduction="mean"), argnums=(0, 1)
    )(h, w)
    for c, got in zip(sizes, jax.jit(run)(h, w), strict=True):
        for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            close(a, e, 1e-12, 1e-12, err_msg=f"chunk_size={c}")


def test_fused_eager_equals_jit():
    h, w, b, y = _data()
    f = lambda h: jaxloss.fused_linear_softmax_cross_entropy(
        h, w, y, bias=b, ignore_index=-100, reduction="none", chunk_size=CHUNK
    )
    close(f(h), jax.jit(f)(h), 1e-14, 1e-14)


def test_fused_vmap_over_a_leading_batch():
    hb = np.stack([_data(seed=s)[0] for s in range(3)])
    yb = np.stack([_data(seed=s)[3] for s in range(3)])
    _, w, b, _ = _data()

    def f(h, y, w):
        return jaxloss.fused_linear_softmax_cross_entropy(
            h, w, y, bias=b, ignore_index=-100, label_smoothing=0.1, chunk_size=CHUNK
        )

    def vg(fn):
        return jax.jit(jax.vmap(jax.value_and_grad(fn, argnums=(0, 2)), in_axes=(0, 0, None)))

    got = vg(f)(hb, yb, w)
    want = vg(
        lambda h, y, w: _ref(h, w, b, y, ignore_index=-100, label_smoothing=0.1, reduction="mean")
    )(hb, yb, w)
    for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        close(a, e, 1e-12, 1e-12)


# --------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------


def test_ignored_rows_contribute_nothing():
    h, w, b, y = _data()
    ignored = y == -100
    f = lambda h, w, b: jaxloss.fused_linear_softmax_cross_entropy(
        h, w, y, bias=b, ignore_index=-100, chunk_size=CHUNK
    )
    vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))
    value, (dh, dw, db) = vg(h, w, b)
    # Changing the ignored rows (even to huge values) changes nothing.
    h2 = h.copy()
    h2[ignored] = 1e4 * np.cos(h2[ignored])
    value2, (dh2, dw2, db2) = vg(h2, w, b)
    close(value2, value, 0.0, 0.0)
    assert np.all(np.asarray(dh)[ignored] == 0) and np.all(np.asarray(dh2)[ignored] == 0)
    close(dw2, dw, 0.0, 0.0)
    close(db2, db, 0.0, 0.0)
    # The mean divides by the counted rows only.
    rows = jaxloss.fused_linear_softmax_cross_entropy(
        h, w, y, bias=b, ignore_index=-100, reduction="none", chunk_size=CHUNK
    )
    assert np.all(np.asarray(rows)[ignored] == 0)
    close(value, np.sum(np.asarray(rows)) / np.sum(~ignored), 1e-14, 1e-14)


def test_all_rows_ignored_gives_zero_not_nan():
    h, w, b, _ = _data()
    y = np.full((N,), -1, np.int32)
    f = lambda h, w, b: jaxloss.fused_linear_softmax_cross_entropy(
        h, w, y, bias=b, ignore_index=-1, chunk_size=CHUNK
    )
    value, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(h, w, b)
    assert float(value) == 0.0
    for g in grads:
        assert np.all(np.asarray(g) == 0)


def test_out_of_range_labels():
    h, w, _, y = _data(ignore=False)
    bad = y.copy()
    bad[3] = V
    with pytest.raises(ValueError, match="labels must lie in"):
        jaxloss.fused_linear_softmax_cross_entropy(h, w, bad)
    bad[3] = -1  # a negative label never wraps to the last class
    with pytest.raises(ValueError, match="labels must lie in"):
        jaxloss.fused_linear_softmax_cross_entropy(h, w, bad)
    rows = jax.jit(lambda y: jaxloss.fused_linear_softmax_cross_entropy(h, w, y, reduction="none"))(
        bad
    )
    assert np.isnan(rows[3]) and np.all(np.isfinite(np.delete(np.asarray(rows), 3)))


def test_low_precision_accumulates_in_float32():
    """bf16 inputs: float32 loss, bf16 gradients close to float32 math on the same inputs."""
    dtype = jnp.bfloat16
    h, w, b, y = _data(np.float32, n=32, d=16, v=64)
    h, w, b = (jnp.asarray(a, dtype) for a in (h, w, b))
    f = lambda h, w, b: jaxloss.fused_linear_softmax_cross_entropy(
        h, w, y, bias=b, ignore_index=-100, chunk_size=8
    )
    value, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(h, w, b)
    assert value.dtype == jnp.float32
    assert [g.dtype for g in grads] == [dtype] * 3

    def ref(h, w, b):  # float32 logits of the same low-precision inputs
        h32, w32, b32 = (a.astype(jnp.float32) for a in (h, w, b))
        return _ref(h32, w32, b32, y, ignore_index=-100, reduction="mean")

    want, want_grads = jax.jit(jax.value_and_grad(ref, argnums=(0, 1, 2)))(h, w, b)
    close(value, want, 1e-5, 1e-5)
    for a, e in zip(grads, want_grads, strict=True):
        # the float32 gradient rounded once to bf16: at most one bf16 step away
        # (a bf16 coefficient before the products would be several steps off)
        a, e = np.asarray(a, np.float32), np.asarray(e, np.float64)
        step = np.spacing(np.abs(e).astype(np.float32)) * 2.0**16  # bf16 keeps 8 of 24 bits
        assert np.all(np.abs(a - e) <= step + 1e-30), np.max(np.abs(a - e) / step)
    # Mixed dtypes multiply in the wider one; each gradient keeps its input's dtype.
    gh, gw = jax.jit(jax.grad(lambda h, w: f(h, w, None), argnums=(0, 1)))(
        h, jnp.asarray(w, jnp.float32)
    )
    assert gh.dtype == jnp.bfloat16 and gw.dtype == jnp.float32


# --------------------------------------------------------------------------
# Memory: no [N, V] buffer
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compiled_scratch_is_below_a_quarter_of_the_logits(reduction):
    n, d, v = 1024, 64, 8192
    h = jax.ShapeDtypeStruct((n, d), jnp.float32)
    w = jax.ShapeDtypeStruct((d, v), jnp.float32)
    y = jnp.zeros((n,), jnp.int32)

    def f(h, w):
        out = jaxloss.fused_linear_softmax_cross_entropy(h, w, y, reduction=reduction)
        return jnp.sum(out)

    compiled = jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(h, w).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < n * v * 4 / 4, (temp, n * v * 4)

    def naive(h, w):
        return jnp.sum(jaxloss.softmax_cross_entropy_with_integer_labels(h @ w, y))

    naive_temp = (
        jax.jit(jax.value_and_grad(naive, argnums=(0, 1)))
        .lower(h, w)
        .compile()
        .memory_analysis()
        .temp_size_in_bytes
    )
    assert naive_temp >= n * v * 4  # the materialised logits are there


def test_no_n_by_v_residual():
    """Reverse mode keeps no [N, V] array between the forward and backward passes."""
    n, d, v = 64, 8, 512
    h, w, b, y = _data(np.float32, n=n, d=d, v=v)
    for reduction in ("mean", "none"):
        f = lambda h, w, b: jaxloss.fused_linear_softmax_cross_entropy(
            h, w, y, bias=b, ignore_index=-100, reduction=reduction, chunk_size=16
        )
        _, vjp = jax.vjp(f, h, w, b)
        sizes = [np.size(leaf) for leaf in jax.tree.leaves(vjp)]
        assert max(sizes) <= max(n * d, d * v), sorted(sizes)[-5:]


def test_default_chunk():
    assert _large_vocab._default_chunk(4096, 32768) == 512  # 1/8 of [N, V]: 64 MiB
    assert _large_vocab._default_chunk(4096, 131072) == 512  # capped at 256 MiB
    assert _large_vocab._default_chunk(5, 10) == 1  # at least one row
    assert 1 <= _large_vocab._default_chunk(1, 10**7) <= 1


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def test_bad_shapes_and_arguments_give_clear_errors():
    h, w, b, y = _data(ignore=False)
    f = jaxloss.fused_linear_softmax_cross_entropy
    with pytest.raises(ValueError, match=r"kernel must have shape \[D, V\] with D = hidden"):
        f(h, w[:-1], y)
    with pytest.raises(ValueError, match=r"kernel must have shape \[D, V\]"):
        f(h, w.T, y)
    with pytest.raises(ValueError, match=r"labels must have shape \[N\]"):
        f(h, w, y[:-1])
    with pytest.raises(ValueError, match=r"labels must have shape \[N\]"):
        f(h, w, y[:, None])
    with pytest.raises(ValueError, match=r"hidden must have shape \[N, D\]"):
        f(h[None], w, y)
    with pytest.raises(ValueError, match=r"bias must have shape \(24,\)"):
        f(h, w, y, bias=b[:-1])
    with pytest.raises(TypeError, match="labels must be an integer array"):
        f(h, w, y.astype(np.float64))
    with pytest.raises(TypeError, match="hidden must be a floating-point array"):
        f(h.astype(np.int32), w, y)
    with pytest.raises(ValueError, match="chunk_size must be a positive"):
        f(h, w, y, chunk_size=0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        f(h, w, y, reduction="batchmean")
    with pytest.raises(ValueError, match="label_smoothing"):
        f(h, w, y, label_smoothing=1.5)


def test_axis_name_not_bound():
    x = np.zeros((2, 4))
    y = np.zeros((2,), np.int32)
    with pytest.raises(ValueError, match="axis_name='v' is not bound"):
        jaxloss.vocab_parallel_softmax_cross_entropy(x, y, axis_name="v")
    with pytest.raises(ValueError, match="axis_name='v' is not bound"):
        jaxloss.vocab_parallel_fused_linear_softmax_cross_entropy(
            np.zeros((2, 3)), np.zeros((3, 4)), y, axis_name="v"
        )
    mesh = _one_device_mesh()
    wrong = jax.shard_map(
        lambda x, y: jaxloss.vocab_parallel_softmax_cross_entropy(x, y, axis_name="model"),
        mesh=mesh,
        in_specs=(P(None, "v"), P()),
        out_specs=P(),
    )
    with pytest.raises(ValueError, match="axis_name='model' is not bound"):
        jax.jit(wrong)(x, y)


def test_vocab_parallel_fused_bad_kernel_shard():
    mesh = _one_device_mesh()
    f = jax.shard_map(
        lambda h, w, y: jaxloss.vocab_parallel_fused_linear_softmax_cross_entropy(
            h, w, y, axis_name="v"
        ),
        mesh=mesh,
        in_specs=(P(), P(None, "v"), P()),
        out_specs=P(),
    )
    with pytest.raises(ValueError, match=r"kernel_shard must have shape \[D, V\]"):
        jax.jit(f)(np.zeros((2, 3)), np.zeros((4, 8)), np.zeros((2,), np.int32))


# --------------------------------------------------------------------------
# Vocabulary parallelism on a one-device mesh (multi-device: test_sharding.py)
# --------------------------------------------------------------------------


def test_vocab_parallel_one_shard_equals_unsharded_with_check_grads():
    mesh = _one_device_mesh()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6))
    y = np.array([0, 5, 2, -100], np.int32)
    kw = {"ignore_index": -100, "label_smoothing": 0.1, "z_loss": 1e-2, "logit_softcap": 3.0}
    f = jax.shard_map(
        lambda x: jaxloss.vocab_parallel_softmax_cross_entropy(x, y, axis_name="v", **kw),
        mesh=mesh,
        in_specs=P(None, "v"),
        out_specs=P(),
    )
    close(
        jax.jit(f)(x), jaxloss.softmax_cross_entropy_with_integer_labels(x, y, **kw), 1e-12, 1e-12
    )
    check_grads(jax.jit(f), (x,), order=1, modes=("fwd", "rev"), eps=1e-6)

    h, w, b, yy = _data(n=6, d=3, v=8)
    ref = _ref(h, w, b, yy, ignore_index=-100, reduction="mean")
    fused = jax.shard_map(
        lambda h, w, b: jaxloss.vocab_parallel_fused_linear_softmax_cross_entropy(
            h, w, yy, axis_name="v", bias_shard=b, ignore_index=-100, chunk_size=4
        ),
        mesh=mesh,
        in_specs=(P(), P(None, "v"), P("v")),
        out_specs=P(),
    )
    close(jax.jit(fused)(h, w, b), ref, 1e-12, 1e-12)


def test_chunk_barrier_keeps_no_tiled_copy_of_the_kernel(monkeypatch):
    """``_pin``'s optimization barrier (jax 0.10.2): without it XLA hoists the
    kernel's tile slices out of the chunk loop and keeps a tiled copy of W."""
    from jaxloss import _large_vocab

    n, d, v = 1024, 256, 16384
    h = jax.ShapeDtypeStruct((n, d), jnp.float32)
    w = jax.ShapeDtypeStruct((d, v), jnp.float32)
    y = jnp.zeros((n,), jnp.int32)

    def temp():
        jax.clear_caches()  # the rule is jitted once: the patched _pin needs a new trace
        f = lambda h, w: jaxloss.fused_linear_softmax_cross_entropy(h, w, y, chunk_size=256)
        compiled = jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(h, w).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    pinned = temp()
    monkeypatch.setattr(_large_vocab, "_pin", lambda w, b, h_c: (w, b))
    unpinned = temp()
    monkeypatch.undo()
    jax.clear_caches()  # no trace of the patched _pin outlives the patch
    kernel = d * v * 4
    assert unpinned - pinned >= kernel, (pinned, unpinned, kernel)


def test_tiles_that_divide_the_vocabulary_keep_no_mask(monkeypatch):
    """``_tile_owned`` returns no column mask when the tiles divide V: with one, the
    select's predicate is kept for the tangent and XLA (jax 0.10.2) stacks every
    tile's [chunk, tile] mask into one boolean buffer (tiles * chunk * tile bytes;
    16 MiB of 115 MiB at N=4096, D=512, V=32768)."""
    from jaxloss import _large_vocab

    n, d, v = 1024, 256, 16384
    h = jax.ShapeDtypeStruct((n, d), jnp.float32)
    w = jax.ShapeDtypeStruct((d, v), jnp.float32)
    y = jnp.zeros((n,), jnp.int32)
    chunk = 256
    tile, tiles = _large_vocab._vocab_tiles(v, max(chunk, d))
    assert v % tile == 0 and tiles > 1

    def temp():
        jax.clear_caches()  # the rule is jitted once: the patched helper needs a new trace
        f = lambda h, w: jaxloss.fused_linear_softmax_cross_entropy(h, w, y, chunk_size=chunk)
        compiled = jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(h, w).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    def always_masked(start, first, tile, v, y_c):  # the mask even without an overlap
        cols = start + jax.lax.broadcasted_iota(jnp.asarray(start).dtype, (1, tile), 1)
        y_loc = y_c - jnp.asarray(start, y_c.dtype)
        return cols >= first, jnp.where(y_c >= first, y_loc, -jnp.ones_like(y_loc))

    kept = temp()
    monkeypatch.setattr(_large_vocab, "_tile_owned", always_masked)
    masked = temp()
    monkeypatch.undo()
    jax.clear_caches()  # no trace of the patched helper outlives the patch
    # most of one stacked boolean buffer (buffer assignment moves a few others)
    assert masked - kept >= 3 * tiles * chunk * tile // 4, (kept, masked)


# --------------------------------------------------------------------------
# Per-token weights and a global normaliser
# --------------------------------------------------------------------------


def _weighted_ce64(h, w, b, y, sw, *, reduction="mean", normalizer=None, eps=0.0):
    """float64 numpy: ``sw_i * CE_i`` on ``h @ w + b`` (PyTorch's smoothing), rows with
    label -100 give 0; mean = sum / sum of the counted rows' weights, or / normalizer."""
    s = np.asarray(h, np.float64) @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
    lse = np.log(np.sum(np.exp(s - s.max(1, keepdims=True)), 1)) + s.max(1)
    keep = y != -100
    s_y = s[np.arange(len(y)), np.where(keep, y, 0)]
    rows = (1 - eps) * (lse - s_y) + eps * (lse - s.mean(1))
    rows = np.where(keep, rows, 0.0) * sw
    if reduction == "none":
        return rows
    if normalizer is not None:
        return rows.sum() / normalizer
    return rows.sum() if reduction == "sum" else rows.sum() / np.sum(sw[keep])


@pytest.mark.parametrize(
    "kw",
    [
        {"reduction": "mean"},
        {"reduction": "sum", "label_smoothing": 0.1},
        {"reduction": "none"},
        {"reduction": "mean", "normalizer": 40.0},
        {"reduction": "mean", "normalizer": 40.0, "unweighted": True},
    ],
    ids=["mean", "sum-smoothing", "none", "normalizer", "normalizer-unweighted"],
)
def test_sample_weight_and_normalizer_match_the_weighted_formula(kw):
    kw = dict(kw)
    unweighted = kw.pop("unweighted", False)
    h, w, b, y = _data()
    sw = np.random.default_rng(1).uniform(0.0, 2.0, N)
    sw[5] = 0.0  # a zero-weight (padding) token
    sw_arg = None if unweighted else sw
    f = lambda h, w, b: jaxloss.fused_linear_softmax_cross_entropy(
        h, w, y, bias=b, sample_weight=sw_arg, ignore_index=-100, chunk_size=CHUNK, **kw
    )
    red, eps = kw["reduction"], kw.get("label_smoothing", 0.0)
    sw64 = np.ones(N) if unweighted else sw
    want = _weighted_ce64(h, w, b, y, sw64, reduction=red, normalizer=kw.get("normalizer"), eps=eps)
    value, grads, tangent = _all_derivatives(f, h, w, b, red)
    close(value, want, 1e-12, 1e-12)
    # derivatives: autodiff of the materialised weighted loss (values checked above)
    g = lambda h, w, b: (
        jnp.asarray(sw64)
        * jaxloss.softmax_cross_entropy_with_integer_labels(
            h @ w + b[None, :], y, ignore_index=-100, label_smoothing=eps
        )
    )
    ref = {"none": g, "sum": lambda *a: jnp.sum(g(*a))}.get(red)
    if ref is None:
        divisor = kw.get("normalizer", np.sum(sw64[y != -100]))
        ref = lambda *a: jnp.sum(g(*a)) / divisor
    _, want_grads, want_tangent = _all_derivatives(ref, h, w, b, red)
    for a, e in zip(grads, want_grads, strict=True):
        close(a, e, 1e-11, 1e-12)
    close(tangent, want_tangent, 1e-11, 1e-12)


def test_normalizer_makes_micro_batch_gradients_add_up_to_the_batch():
    """Gradient accumulation over micro-batches with padding: with ``normalizer`` =
    the batch's count of counted tokens, the summed micro-batch losses and gradients
    equal the full batch's mean; a per-micro-batch mean does not."""
    h, w, b, y = _data()
    kw = {"bias": b, "ignore_index": -100, "chunk_size": CHUNK}
    full = lambda w: jaxloss.fused_linear_softmax_cross_entropy(h, w, y, **kw)
    count = int(np.sum(y != -100))
    parts = (slice(0, 6), slice(6, N))

    def accumulated(w, normalizer):
        return sum(
            jaxloss.fused_linear_softmax_cross_entropy(h[s], w, y[s], normalizer=normalizer, **kw)
            for s in parts
        )

    close(accumulated(w, count), full(w), 1e-12, 1e-12)
    close(jax.grad(accumulated)(w, count), jax.grad(full)(w), 1e-12, 1e-12)
    # traced normaliser (e.g. a psum over hosts), and the per-micro-batch mean's error
    close(jax.jit(accumulated)(w, jnp.float64(count)), full(w), 1e-12, 1e-12)
    per_batch = sum(
        jaxloss.fused_linear_softmax_cross_entropy(h[s], w, y[s], **kw) / 2 for s in parts
    )
    assert abs(float(per_batch) - float(full(w))) > 1e-3


def test_sample_weight_gradient_and_errors():
    h, w, b, y = _data()
    sw = np.random.default_rng(2).uniform(0.5, 2.0, N)
    f = lambda s: jaxloss.fused_linear_softmax_cross_entropy(
        h, w, y, bias=b, sample_weight=s, ignore_index=-100, chunk_size=CHUNK
    )
    # d mean / d sw_i = (CE_i - mean) / sum(sw over counted rows), CE_i = 0 off them
    ce = _weighted_ce64(h, w, b, y, np.ones(N), reduction="none")
    keep = y != -100
    want = np.where(keep, ce - f(sw), 0.0) / np.sum(sw[keep])
    close(jax.grad(f)(sw), want, 1e-11, 1e-12)
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        jaxloss.fused_linear_softmax_cross_entropy(h, w, y, sample_weight=sw[:3], ignore_index=-100)
    with pytest.raises(ValueError, match=r"normalizer .*reduction='mean'"):
        jaxloss.fused_linear_softmax_cross_entropy(
            h, w, y, normalizer=3.0, reduction="sum", ignore_index=-100
        )
    with pytest.raises(ValueError, match="normalizer"):
        jaxloss.fused_linear_softmax_cross_entropy(h, w, y, normalizer=-1.0, ignore_index=-100)
    # nothing counts: 0, not NaN
    zero = jaxloss.fused_linear_softmax_cross_entropy(h, w, y, normalizer=0.0, ignore_index=-100)
    assert float(zero) == 0.0


def test_vocab_parallel_fused_sample_weight_on_one_shard():
    mesh = _one_device_mesh()
    h, w, b, y = _data(n=6, d=3, v=8)
    sw = np.random.default_rng(3).uniform(0.5, 2.0, 6)
    kw = {"ignore_index": -100, "chunk_size": 4, "sample_weight": sw, "normalizer": 9.0}
    fused = jax.shard_map(
        lambda h, w, b: jaxloss.vocab_parallel_fused_linear_softmax_cross_entropy(
            h, w, y, axis_name="v", bias_shard=b, **kw
        ),
        mesh=mesh,
        in_specs=(P(), P(None, "v"), P("v")),
        out_specs=P(),
    )
    want = _weighted_ce64(h, w, b, y, sw, normalizer=9.0)
    close(jax.jit(fused)(h, w, b), want, 1e-12, 1e-12)

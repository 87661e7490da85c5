"""Checks that need several devices, run as a script with 8 simulated CPU devices.

``tests/test_sharding.py`` runs ``python tests/_multidevice.py`` in a subprocess
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be
set before JAX is imported, so these checks cannot run in the pytest process).
Each check is a function below; the script runs the ones named on the command
line (all by default), prints one JSON line ``{"check": "ok" | traceback}``
and exits non-zero when any failed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from functools import partial

import numpy as np

DEVICES = 8


def _setup():
    flag = f"--xla_force_host_platform_device_count={DEVICES}"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_numpy_rank_promotion", "raise")
    assert jax.device_count() == DEVICES, jax.devices()


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")


def collectives(hlo_text: str) -> list[tuple[str, str]]:
    """(op, result shape) for every collective in compiled HLO text.

    Async pairs (``all-gather-start``/``-done``) count once, at the start.
    """
    found = []
    pattern = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
    for line in hlo_text.splitlines():
        m = pattern.search(line)
        if m:
            found.append((m.group(2), m.group(1).strip()))
    return found


def _mesh(name="v"):
    import jax

    return jax.make_mesh((DEVICES,), (name,))


def _put(x, mesh, spec):
    import jax

    return jax.device_put(x, jax.NamedSharding(mesh, spec))


def _close(a, b, tol, what):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol, err_msg=what)


# --------------------------------------------------------------------------
# Vocabulary-parallel cross-entropy on sharded logits
# --------------------------------------------------------------------------

VP_OPTIONS = [
    {},
    # every row option at once: class weights, ignored rows, smoothing, z-loss, soft cap
    {
        "weight": True,
        "label_smoothing": 0.1,
        "ignore_index": -100,
        "z_loss": 1e-3,
        "logit_softcap": 4.0,
    },
    # masks: `where` (with an empty row), -inf logits (whole shards, an all -inf row)
    {"where": True, "neg_inf": True, "label_smoothing": 0.3, "ignore_index": -100},
]


def _vp_case(opts, dtype, n=12, c=64, seed=0):
    """NumPy data (no eager JAX ops: each would compile for 8 devices)."""
    rng = np.random.default_rng(seed)
    x = (3.0 * rng.standard_normal((n, c))).astype(dtype)
    y = rng.integers(0, c, n).astype(np.int32)
    kwargs = {}
    if opts.get("ignore_index") is not None:
        y[[1, 5]] = -100
        kwargs["ignore_index"] = -100
    for name in ("label_smoothing", "z_loss", "logit_softcap"):
        if name in opts:
            kwargs[name] = opts[name]
    if opts.get("weight"):
        kwargs["weight"] = rng.uniform(0.5, 2.0, c).astype(dtype)
    if opts.get("where"):
        mask = rng.uniform(size=(n, c)) < 0.7
        mask[np.arange(n), np.clip(y, 0, c - 1)] = True
        mask[3] = False  # a row with no allowed class
        kwargs["where"] = mask
    if opts.get("neg_inf"):
        x[:, 5:20] = -np.inf  # whole shards of -inf, and a partial one
        y = np.where((y >= 5) & (y < 20), 0, y).astype(np.int32)
        x[7] = -np.inf  # a row with every logit -inf
    return x, y, kwargs


def _vp_sharded(kwargs, reduction, mesh):
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    import jaxloss

    has_where = "where" in kwargs
    has_weight = "weight" in kwargs
    static = {k: v for k, v in kwargs.items() if k not in ("where", "weight")}

    def local(x, y, mask, weight):
        return jaxloss.vocab_parallel_softmax_cross_entropy(
            x, y, axis_name="v", where=mask, weight=weight, reduction=reduction, **static
        )

    in_specs = (P(None, "v"), P(), P(None, "v") if has_where else None, P() if has_weight else None)
    f = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P())

    def call(x, y):
        mask = _put(kwargs["where"], mesh, P(None, "v")) if has_where else None
        weight = _put(kwargs["weight"], mesh, P()) if has_weight else None
        return f(x, y, mask, weight)

    del jnp
    return call


def _value_grad_jvp(f, r, reduction):
    """One jitted function: f's value, the gradient of a scalar summary, and a jvp."""
    import jax
    import jax.numpy as jnp

    def scal(*a):
        out = f(*a)
        return (jnp.sum(out * r) if reduction == "none" else out), out

    def run(args, tangent):
        (_, value), grads = jax.value_and_grad(scal, argnums=tuple(range(len(args))), has_aux=True)(
            *args
        )
        tan = jax.jvp(lambda a0: f(a0, *args[1:]), (args[0],), (tangent,))[1]
        return value, grads, tan

    return run


def check_vocab_parallel_matches_unsharded():
    """Loss, gradient and jvp equal the unsharded loss for every option, two reductions."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    import jaxloss

    mesh = _mesh()
    cases = [(jnp.float64, 1e-10, opts) for opts in VP_OPTIONS]
    cases += [(jnp.float32, 1e-6, VP_OPTIONS[1])]
    for dtype, tol, opts in cases:
        x, y, kwargs = _vp_case(opts, dtype)
        xs, ys = _put(x, mesh, P(None, "v")), _put(y, mesh, P())
        r = np.linspace(0.5, 1.5, x.shape[0]).astype(dtype)
        dx = np.where(np.isfinite(x), np.cos(np.where(np.isfinite(x), x, 0.0)), 0.0).astype(dtype)
        for reduction in ("none", "mean"):
            f = _vp_sharded(kwargs, reduction, mesh)

            def ref(x_, kw=kwargs, red=reduction, y=y):
                return jaxloss.softmax_cross_entropy_with_integer_labels(x_, y, reduction=red, **kw)

            what = f"{dtype.__name__} {opts} {reduction}"
            got = jax.jit(_value_grad_jvp(lambda x_: f(x_, ys), r, reduction))(
                (xs,), _put(dx, mesh, P(None, "v"))
            )
            want = jax.jit(_value_grad_jvp(ref, r, reduction))((x,), dx)
            _close(got[0], want[0], tol, what + " value")
            _close(got[1][0], want[1][0], tol, what + " grad")
            _close(got[2], want[2], tol, what + " jvp")
            # The gradient stays sharded like the logits.
            assert got[1][0].sharding.spec in (P(None, "v"), P(None, ("v",))), got[1][0].sharding


def check_vocab_parallel_batch_and_axis():
    """Leading batch axes and a class axis other than the last."""
    import jax
    from jax.sharding import PartitionSpec as P

    import jaxloss

    mesh = _mesh()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 32, 5))  # class axis 1
    y = rng.integers(0, 32, (3, 5)).astype(np.int32)

    def local(x, y):
        return jaxloss.vocab_parallel_softmax_cross_entropy(
            x, y, axis_name="v", axis=1, label_smoothing=0.1, reduction="mean"
        )

    f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(None, "v"), P()), out_specs=P()))
    ref = jax.jit(
        lambda x: jaxloss.softmax_cross_entropy_with_integer_labels(
            x, y, axis=1, label_smoothing=0.1, reduction="mean"
        )
    )(x)
    _close(f(_put(x, mesh, P(None, "v")), _put(y, mesh, P())), ref, 1e-10, "axis=1")


def check_vocab_parallel_weight_gradient():
    """Differentiating the (replicated) class weights."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    import jaxloss

    mesh = _mesh()
    x, y, kwargs = _vp_case({"weight": True, "label_smoothing": 0.1}, jnp.float64)
    w = kwargs.pop("weight")

    def local(x, y, w):
        return jaxloss.vocab_parallel_softmax_cross_entropy(
            x, y, axis_name="v", weight=w, reduction="mean", **kwargs
        )

    f = jax.shard_map(local, mesh=mesh, in_specs=(P(None, "v"), P(), P()), out_specs=P())
    g = jax.jit(jax.grad(f, argnums=2))(_put(x, mesh, P(None, "v")), _put(y, mesh, P()), w)
    gr = jax.jit(
        jax.grad(
            lambda w_: jaxloss.softmax_cross_entropy_with_integer_labels(
                x, y, weight=w_, reduction="mean", **kwargs
            )
        )
    )(w)
    _close(g, gr, 1e-10, "d weight")


def check_vocab_parallel_collectives():
    """One O(N) all-gather in the forward pass; nothing added by the backward pass."""
    import jax
    from jax.sharding import PartitionSpec as P

    import jaxloss

    mesh = _mesh()
    n, c = 16, 1024
    x = _put(np.zeros((n, c), np.float32), mesh, P(None, "v"))
    y = _put(np.zeros((n,), np.int32), mesh, P())
    for opts in ({}, {"label_smoothing": 0.1, "z_loss": 1e-4, "ignore_index": -1}):

        def local(x, y, opts=opts):
            return jaxloss.vocab_parallel_softmax_cross_entropy(
                x, y, axis_name="v", reduction="mean", **opts
            )

        f = jax.shard_map(local, mesh=mesh, in_specs=(P(None, "v"), P()), out_specs=P())
        fwd = collectives(jax.jit(f).lower(x, y).compile().as_text())
        both = collectives(jax.jit(jax.value_and_grad(f)).lower(x, y).compile().as_text())
        for ops in (fwd, both):
            assert [op for op, _ in ops] == ["all-gather"], ops
            shape = ops[0][1]
            dims = [int(d) for d in re.findall(r"\[([\d,]*)\]", shape)[0].split(",")]
            # [P, k, N] statistics with k <= 5: O(N), never [N, C].
            assert dims[0] == DEVICES and dims[-1] == n and dims[1] <= 5, shape


def check_vocab_parallel_check_vma_false():
    """shard_map(check_vma=False): same loss and gradient, still one all-gather."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    import jaxloss

    mesh = _mesh()
    x, y, _ = _vp_case({}, jnp.float64)

    def local(x, y):
        return jaxloss.vocab_parallel_softmax_cross_entropy(x, y, axis_name="v", reduction="sum")

    f = jax.shard_map(
        local, mesh=mesh, in_specs=(P(None, "v"), P()), out_specs=P(), check_vma=False
    )
    xs, ys = _put(x, mesh, P(None, "v")), _put(y, mesh, P())
    vg = jax.jit(jax.value_and_grad(f))
    got = vg(xs, ys)
    want = jax.jit(
        jax.value_and_grad(
            lambda x: jaxloss.softmax_cross_entropy_with_integer_labels(x, y, reduction="sum")
        )
    )(x)
    _close(got[0], want[0], 1e-10, "check_vma=False value")
    _close(got[1], want[1], 1e-10, "check_vma=False grad")
    ops = [op for op, _ in collectives(vg.lower(xs, ys).compile().as_text())]
    assert ops == ["all-gather"], ops


# --------------------------------------------------------------------------
# Vocabulary-parallel fused linear cross-entropy
# --------------------------------------------------------------------------

FUSED_OPTIONS = [
    {},
    {"ignore_index": -100, "label_smoothing": 0.1, "z_loss": 1e-3, "logit_softcap": 2.0},
    {"ignore_index": -100, "label_smoothing": 0.1, "temperature": 0.7},  # + class weights
]


def _fused_case(dtype, n=20, d=6, v=64, seed=2):
    rng = np.random.default_rng(seed)
    h, w, b = (rng.standard_normal(shape).astype(dtype) for shape in ((n, d), (d, v), (v,)))
    y = rng.integers(0, v, n).astype(np.int32)
    y[[0, 9]] = -100
    return h, w, b, y


def _fused_sharded(mesh, reduction, opts, chunk_size=8):
    import jax
    from jax.sharding import PartitionSpec as P

    import jaxloss

    def local(h, w, b, y):
        return jaxloss.vocab_parallel_fused_linear_softmax_cross_entropy(
            h,
            w,
            y,
            axis_name="v",
            bias_shard=b,
            reduction=reduction,
            chunk_size=chunk_size,
            **opts,
        )

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(None, "v"), P("v"), P()), out_specs=P())


def check_vocab_parallel_fused_matches_unsharded():
    """Loss, gradients w.r.t. hidden, kernel and bias, and jvp equal the materialised loss."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    import jaxloss

    mesh = _mesh()
    # "mean": gradients formed in the forward pass; "none": the recompute path.
    cases = [(jnp.float64, 1e-10, FUSED_OPTIONS[1], red) for red in ("mean", "none")]
    cases += [(jnp.float32, 1e-5, FUSED_OPTIONS[0], "sum")]
    class_weight = np.random.default_rng(7).uniform(0.5, 2.0, 64)
    cases += [(jnp.float64, 1e-10, FUSED_OPTIONS[2] | {"weight": class_weight}, "mean")]
    for dtype, tol, opts, reduction in cases:
        h, w, b, y = _fused_case(dtype)
        if "ignore_index" not in opts:
            y = np.maximum(y, 0)
        r = np.linspace(0.5, 1.5, h.shape[0]).astype(dtype)
        args = (_put(h, mesh, P()), _put(w, mesh, P(None, "v")), _put(b, mesh, P("v")))
        ys = _put(y, mesh, P())
        f = _fused_sharded(mesh, reduction, opts)

        def ref(h_, w_, b_, opts=opts, red=reduction, y=y):
            kw = {k: v for k, v in opts.items() if k != "temperature"}
            logits = (h_ @ w_ + b_[None, :]) / opts.get("temperature", 1.0)
            return jaxloss.softmax_cross_entropy_with_integer_labels(logits, y, reduction=red, **kw)

        what = f"{dtype.__name__} {sorted(opts)} {reduction}"
        dh = _put(h * 0.5, mesh, P())
        got = jax.jit(_value_grad_jvp(lambda *a: f(*a, ys), r, reduction))(args, dh)
        want = jax.jit(_value_grad_jvp(ref, r, reduction))((h, w, b), h * 0.5)
        _close(got[0], want[0], tol, what + " value")
        for name, a, e in zip("hWb", got[1], want[1], strict=True):
            _close(a, e, tol, f"{what} d{name}")
        _close(got[2], want[2], tol, what + " jvp")


def check_vocab_parallel_fused_collectives():
    """Forward: one all-gather. With d hidden: plus exactly one [N, D] all-reduce."""
    import jax
    from jax.sharding import PartitionSpec as P

    mesh = _mesh()
    n, d, v = 32, 16, 512
    h = _put(np.zeros((n, d), np.float32), mesh, P())
    w = _put(np.zeros((d, v), np.float32), mesh, P(None, "v"))
    b = _put(np.zeros((v,), np.float32), mesh, P("v"))
    y = _put(np.zeros((n,), np.int32), mesh, P())
    f = _fused_sharded(mesh, "mean", {"label_smoothing": 0.1})
    fwd = collectives(jax.jit(f).lower(h, w, b, y).compile().as_text())
    assert [op for op, _ in fwd] == ["all-gather"], fwd
    vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))
    both = collectives(vg.lower(h, w, b, y).compile().as_text())
    ops = sorted(op for op, _ in both)
    assert ops == ["all-gather", "all-reduce"], both
    reduce_shape = next(s for op, s in both if op == "all-reduce")
    assert reduce_shape.replace(" ", "").startswith(f"f32[{n},{d}]"), both
    only_kernel = jax.jit(jax.value_and_grad(f, argnums=1))
    ops = [op for op, _ in collectives(only_kernel.lower(h, w, b, y).compile().as_text())]
    assert ops == ["all-gather"], ops


def check_vocab_parallel_log_probs():
    """fused_linear_log_probs with axis_name: log-probabilities, entropy, their
    gradients and jvp equal the unsharded function; one all-gather forward."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    import jaxloss

    mesh = _mesh()
    h, w, b, y = _fused_case(np.float64)
    y = np.maximum(y, 0)
    r = np.linspace(0.5, 1.5, h.shape[0])
    kw = {"temperature": 0.8, "logit_softcap": 4.0, "return_entropy": True, "chunk_size": 8}

    def summary(out):
        return jnp.sum(r * out[0]) + 0.3 * jnp.sum(r * out[1])

    def local(h_, w_, b_, y_):
        out = jaxloss.fused_linear_log_probs(h_, w_, y_, bias=b_, axis_name="v", **kw)
        return jnp.stack(out)

    f = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(None, "v"), P("v"), P()), out_specs=P())

    def ref(h_, w_, b_):
        return jnp.stack(jaxloss.fused_linear_log_probs(h_, w_, y, bias=b_, **kw))

    def run(fn):
        def inner(args, dh):
            value = fn(*args)
            grads = jax.grad(lambda *a: summary(fn(*a)), argnums=(0, 1, 2))(*args)
            tangent = jax.jvp(lambda h_: summary(fn(h_, *args[1:])), (args[0],), (dh,))[1]
            return value, grads, tangent

        return jax.jit(inner)

    args = (_put(h, mesh, P()), _put(w, mesh, P(None, "v")), _put(b, mesh, P("v")))
    ys = _put(y, mesh, P())
    got = run(lambda *a: f(*a, ys))(args, _put(h * 0.5, mesh, P()))
    want = run(ref)((h, w, b), h * 0.5)
    _close(got[0], want[0], 1e-10, "log-probs and entropy")
    for name, a, e in zip("hWb", got[1], want[1], strict=True):
        _close(a, e, 1e-10, f"d{name}")
    _close(got[2], want[2], 1e-10, "jvp")
    fwd = collectives(jax.jit(f).lower(*args, ys).compile().as_text())
    assert [op for op, _ in fwd] == ["all-gather"], fwd


def check_vocab_parallel_distillation():
    """fused_linear_distillation_loss with axis_name (both kernels' vocabulary
    sharded): value, gradients w.r.t. the student's hidden, kernel shard and bias
    shard, and jvp equal the unsharded call for each divergence."""
    import jax
    from jax.sharding import PartitionSpec as P

    import jaxloss

    mesh = _mesh()
    h, w, b, y = _fused_case(np.float64)
    rng = np.random.default_rng(9)
    ht, wt, bt = rng.standard_normal((h.shape[0], 5)), rng.standard_normal((5, 64)), b[::-1]
    r = np.linspace(0.5, 1.5, h.shape[0])
    cases = [("forward_kl", "mean"), ("reverse_kl", "none"), ("jsd", "sum")]
    for divergence, reduction in cases:
        kw = {"labels": y, "ignore_index": -100, "divergence": divergence, "beta": 0.3}
        kw |= {"temperature": 1.5, "reduction": reduction, "chunk_size": 8}

        def ref(h_, w_, b_, kw=kw):
            return jaxloss.fused_linear_distillation_loss(
                h_, w_, ht, wt, student_bias=b_, teacher_bias=bt, **kw
            )

        def local(h_, w_, b_, wt_, bt_, kw=kw):
            return jaxloss.fused_linear_distillation_loss(
                h_, w_, ht, wt_, student_bias=b_, teacher_bias=bt_, axis_name="v", **kw
            )

        f = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(), P(None, "v"), P("v"), P(None, "v"), P("v")),
            out_specs=P(),  # replicated, per row or reduced
        )
        teacher = (_put(wt, mesh, P(None, "v")), _put(bt, mesh, P("v")))
        args = (_put(h, mesh, P()), _put(w, mesh, P(None, "v")), _put(b, mesh, P("v")))
        what = f"{divergence} {reduction}"
        got = jax.jit(_value_grad_jvp(lambda *a: f(*a, *teacher), r, reduction))(
            args, _put(h * 0.5, mesh, P())
        )
        want = jax.jit(_value_grad_jvp(ref, r, reduction))((h, w, b), h * 0.5)
        _close(got[0], want[0], 1e-10, what + " value")
        for name, a, e in zip("hWb", got[1], want[1], strict=True):
            _close(a, e, 1e-10, f"{what} d{name}")
        _close(got[2], want[2], 1e-10, what + " jvp")


def check_data_parallel_llm_functions():
    """fused_linear_log_probs and fused_linear_distillation_loss with hidden states
    (and labels, teacher states) sharded over an explicit data-parallel mesh under
    plain jit: values and gradients equal the unsharded call, and the compiled
    program gathers nothing (all-reduces only: the kernel gradient and the sums)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxloss

    mesh = jax.make_mesh((8,), ("data",))
    h, w, _, y = _fused_case(np.float64, n=32, d=6, v=64)
    ht = np.random.default_rng(4).standard_normal(h.shape)
    r = np.arange(1.0, 33.0)

    def cases(y, ht):
        def log_probs(h, w):
            out = jaxloss.fused_linear_log_probs(h, w, jnp.maximum(y, 0), return_entropy=True)
            return jnp.sum(out[0] * r) + 0.5 * jnp.sum(out[1] * r)

        def distill(reduction, divergence):
            def f(h, w):
                out = jaxloss.fused_linear_distillation_loss(
                    h, w, ht, 0.5 * w, labels=y, ignore_index=-100, divergence=divergence,
                    reduction=reduction, chunk_size=2,
                )  # fmt: skip
                return jnp.sum(out * r) if reduction == "none" else out

            return f

        return {
            "log_probs": log_probs,
            "distill mean jsd": distill("mean", "jsd"),
            "distill none reverse_kl": distill("none", "reverse_kl"),
        }

    want = {k: jax.jit(jax.value_and_grad(f, (0, 1)))(h, w) for k, f in cases(y, ht).items()}
    with jax.set_mesh(mesh):
        rows = NamedSharding(mesh, P("data"))
        hs, ys, hts = (jax.device_put(a, rows) for a in (h, y, ht))
        ws = jax.device_put(w, NamedSharding(mesh, P()))
        for name, f in cases(ys, hts).items():
            g = jax.jit(jax.value_and_grad(f, (0, 1)))
            got = g(hs, ws)
            _close(got[0], want[name][0], 1e-10, f"{name} value")
            for what, a, e in zip(("d hidden", "d kernel"), got[1], want[name][1], strict=True):
                _close(a, e, 1e-10, f"{name} {what}")
            ops = {op for op, _ in collectives(g.lower(hs, ws).compile().as_text())}
            assert ops <= {"all-reduce"}, (name, ops)


def _check_collective_sizes(hlo_text: str, *, gather: int, reduce: int, what: str) -> None:
    """Every collective is an all-gather of at most ``gather`` elements or an
    all-reduce of at most ``reduce`` (the largest array of a combined one)."""
    for op, shp in collectives(hlo_text):
        arrays = re.findall(r"[a-z]+\d+\[([\d,]*)\]", shp)
        size = max(int(np.prod([int(x) for x in a.split(",") if x])) for a in arrays)
        if op == "all-gather":
            assert size <= gather, (what, op, shp)
        else:
            assert op == "all-reduce", (what, op, shp)
            assert size <= reduce, (what, op, shp)


def check_explicit_vocab_sharding_under_jit():
    """fused_linear_softmax_cross_entropy under plain jit with the kernel's vocabulary
    explicitly sharded over a "model" axis (and the tokens over "data", or not):
    values and gradients (hidden, kernel, bias) equal the unsharded call; the
    compiled program gathers nothing but the per-row statistics (no [D, V] kernel
    and no [N, V] array): its all-gathers hold at most 6 numbers per token and
    device (shift, total, label logit; with smoothing the count, weight and gap
    sums), and
    every all-reduce is at most [N_local, D] (d hidden) or the kernel shard's own
    gradient summed over "data" (data parallelism's usual gradient sum)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxloss

    n, d, v = 32, 10, 64  # d > 6: a gathered kernel is larger than any statistic
    h, w, b, y = _fused_case(np.float64, n=n, d=d, v=v)
    cw = np.random.default_rng(5).uniform(0.5, 2.0, v)
    sw = np.random.default_rng(6).uniform(0.0, 2.0, n)

    def case(y, cw, sw, reduction):
        def f(h, w, b):
            out = jaxloss.fused_linear_softmax_cross_entropy(
                h, w, y, bias=b, weight=cw, sample_weight=sw, ignore_index=-100,
                label_smoothing=0.1, z_loss=1e-3, logit_softcap=8.0, temperature=1.5,
                reduction=reduction, chunk_size=8,
            )  # fmt: skip
            return jnp.sum(out * jnp.arange(1.0, n + 1.0)) if reduction == "none" else out

        return f

    for shape, row in (((2, 4), "data"), ((1, 8), None)):
        mesh = jax.make_mesh(shape, ("data", "model"))
        local_rows = n // shape[0]
        for reduction in ("mean", "none"):
            want = jax.jit(jax.value_and_grad(case(y, cw, sw, reduction), (0, 1, 2)))(h, w, b)
            with jax.set_mesh(mesh):
                put = lambda a, *spec: jax.device_put(a, NamedSharding(mesh, P(*spec)))
                hs, ys, sws = put(h, row, None), put(y, row), put(sw, row)
                ws, bs, cws = put(w, None, "model"), put(b, "model"), put(cw)
                g = jax.jit(jax.value_and_grad(case(ys, cws, sws, reduction), (0, 1, 2)))
                got = g(hs, ws, bs)
                what = f"mesh {shape} {reduction}"
                _close(got[0], want[0], 1e-10, f"{what} value")
                for name, a, e in zip(("hidden", "kernel", "bias"), got[1], want[1], strict=True):
                    _close(a, e, 1e-10, f"{what} d {name}")
                _check_collective_sizes(
                    g.lower(hs, ws, bs).compile().as_text(),
                    gather=shape[1] * 6 * local_rows,  # [P, k <= 6, N_local]
                    reduce=max(local_rows * d, d * v // 4),
                    what=what,
                )


def check_explicit_vocab_sharding_llm_functions():
    """fused_linear_log_probs (with entropy) and fused_linear_distillation_loss under
    plain jit with both kernels' vocabulary explicitly sharded over "model" and the
    tokens over "data": values and gradients (hidden, kernel) equal the unsharded
    call, and no all-gather holds more than a few numbers per token (no kernel, no
    [N, V] array)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxloss

    n, d, v = 32, 10, 64  # d > 6: a gathered kernel is larger than any statistic
    h, w, _, y = _fused_case(np.float64, n=n, d=d, v=v)
    ht = np.random.default_rng(4).standard_normal(h.shape)
    wt = np.random.default_rng(7).standard_normal(w.shape)
    r = np.arange(1.0, n + 1.0)

    def cases(y, ht, wt):
        def log_probs(h, w):
            out = jaxloss.fused_linear_log_probs(
                h, w, jnp.maximum(y, 0), return_entropy=True, temperature=1.5, chunk_size=8
            )
            return jnp.sum(out[0] * r) + 0.5 * jnp.sum(out[1] * r)

        def distill(h, w):
            return jaxloss.fused_linear_distillation_loss(
                h, w, ht, wt, labels=y, ignore_index=-100, divergence="jsd", beta=0.3,
                temperature=2.0, chunk_size=8,
            )  # fmt: skip

        return {"log_probs": log_probs, "distill": distill}

    want = {k: jax.jit(jax.value_and_grad(f, (0, 1)))(h, w) for k, f in cases(y, ht, wt).items()}
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    with jax.set_mesh(mesh):
        put = lambda a, *spec: jax.device_put(a, NamedSharding(mesh, P(*spec)))
        hs, ys, hts = put(h, "data", None), put(y, "data"), put(ht, "data", None)
        ws, wts = put(w, None, "model"), put(wt, None, "model")
        for name, f in cases(ys, hts, wts).items():
            g = jax.jit(jax.value_and_grad(f, (0, 1)))
            got = g(hs, ws)
            _close(got[0], want[name][0], 1e-10, f"{name} value")
            for what, a, e in zip(("d hidden", "d kernel"), got[1], want[name][1], strict=True):
                _close(a, e, 1e-10, f"{name} {what}")
            _check_collective_sizes(
                g.lower(hs, ws).compile().as_text(),
                gather=4 * 4 * (n // 2),  # [P, k <= 4, N_local]
                reduce=max((n // 2) * d, d * v // 4),
                what=name,
            )


def check_auto_vocab_sharding_under_jit():
    """The fused cross-entropy and distillation under plain jit on an Auto-axis
    mesh (``jax.set_mesh``, inputs placed with NamedSharding, no sharding in the
    types): the partitioning rule runs each device's tokens and vocabulary slice
    (and the log-probabilities' forward pass; their gradient pass is XLA's).
    Values and gradients equal the unsharded call; the compiled program gathers
    only per-token statistics and reduces at most [N_local, D] or the kernel
    shard's gradient, which XLA's own partitioning of the same code does not
    achieve (checked with the rule switched off: jax 0.10.2 gathers every
    token's hidden state and reduces per chunk inside the loop). Under
    vmap and for a gradient with respect to ``sample_weight`` (no rule of its
    own) the numbers still match; so do traced hyperparameters (with their
    derivatives), on Auto and on explicit axes."""
    from unittest import mock

    import jax
    import jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxloss
    from jaxloss import _large_vocab

    n, d, v = 32, 32, 64  # a gathered kernel, or all tokens' hidden states, exceeds the bounds
    h, w, b, y = _fused_case(np.float64, n=n, d=d, v=v)
    cw = np.random.default_rng(5).uniform(0.5, 2.0, v)
    sw = np.random.default_rng(6).uniform(0.0, 2.0, n)
    ht = np.random.default_rng(4).standard_normal(h.shape)
    wt = np.random.default_rng(7).standard_normal(w.shape)

    def cases(y, cw, sw, ht, wt):
        def ce(reduction):
            def f(h, w, b):
                return jaxloss.fused_linear_softmax_cross_entropy(
                    h, w, y, bias=b, weight=cw, sample_weight=sw, ignore_index=-100,
                    label_smoothing=0.1, z_loss=1e-3, logit_softcap=8.0, temperature=1.5,
                    reduction=reduction, chunk_size=8,
                )  # fmt: skip

            return f

        def distill(divergence):
            def f(h, w, b):
                return jaxloss.fused_linear_distillation_loss(
                    h, w, ht, wt, labels=y, ignore_index=-100, divergence=divergence,
                    beta=0.3, temperature=2.0, student_bias=b, chunk_size=8,
                )  # fmt: skip

            return f

        return {"ce mean": ce("mean"), "ce sum": ce("sum"), "jsd": distill("jsd"),
                "forward_kl": distill("forward_kl")}  # fmt: skip

    vg = partial(jax.value_and_grad, argnums=(0, 1, 2))
    want = {k: jax.jit(vg(f))(h, w, b) for k, f in cases(y, cw, sw, ht, wt).items()}
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    put = lambda a, *spec: jax.device_put(a, NamedSharding(mesh, P(*spec)))
    hs, ys, sws, hts = put(h, "data", None), put(y, "data"), put(sw, "data"), put(ht, "data")
    ws, bs, cws, wts = put(w, None, "model"), put(b, "model"), put(cw), put(wt, None, "model")
    bounds = dict(gather=4 * 6 * (n // 2), reduce=max((n // 2) * d, d * v // 4))
    with jax.set_mesh(mesh):
        for name, f in cases(ys, cws, sws, hts, wts).items():
            g = jax.jit(vg(f))
            got = g(hs, ws, bs)
            _close(got[0], want[name][0], 1e-10, f"{name} value")
            for what, a, e in zip(("hidden", "kernel", "bias"), got[1], want[name][1], strict=True):
                _close(a, e, 1e-10, f"{name} d {what}")
            _check_collective_sizes(g.lower(hs, ws, bs).compile().as_text(), **bounds, what=name)
        f = cases(ys, cws, sws, hts, wts)["ce mean"]
        with mock.patch.object(_large_vocab, "_auto_mesh", lambda: None):
            plain = jax.jit(vg(f)).lower(hs, ws, bs).compile().as_text()
        try:
            _check_collective_sizes(plain, **bounds, what="without the rule")
        except AssertionError:
            pass
        else:
            raise AssertionError("XLA's own partitioning met the bounds: the check pins nothing")
        # vmap over two copies of the hidden states; the gradient w.r.t. sample_weight
        got = jax.jit(jax.vmap(f, in_axes=(0, None, None)))(jnp.stack([hs, hs]), ws, bs)
        _close(got, [want["ce mean"][0]] * 2, 1e-10, "vmap")

        sharded_sw = lambda s: cases(ys, cws, s, hts, wts)["ce mean"](hs, ws, bs)
        got = jax.jit(jax.grad(sharded_sw))(sws)
    plain_sw = lambda s: cases(y, cw, s, ht, wt)["ce mean"](h, w, b)
    _close(got, jax.jit(jax.grad(plain_sw))(sw), 1e-10, "d sample_weight")

    # fused_linear_log_probs: the forward partitioned (old-policy or reference
    # log-probabilities, no gradient), and value and gradients equal to the unsharded
    def log_probs(y):
        def f(h, w, b):
            lp, ent = jaxloss.fused_linear_log_probs(
                h, w, jnp.maximum(y, 0), bias=b, return_entropy=True, temperature=1.5,
                chunk_size=8,
            )  # fmt: skip
            return jnp.sum(lp * jnp.arange(1.0, n + 1.0)) + jnp.sum(ent)

        return f

    want_lp = jax.jit(vg(log_probs(y)))(h, w, b)
    with jax.set_mesh(mesh):
        f = log_probs(ys)
        forward = jax.jit(f).lower(hs, ws, bs).compile().as_text()
        _check_collective_sizes(forward, **bounds, what="log-probs forward")
        got = jax.jit(vg(f))(hs, ws, bs)
    _close(got[0], want_lp[0], 1e-10, "log-probs value")
    for what, a, e in zip(("hidden", "kernel", "bias"), got[1], want_lp[1], strict=True):
        _close(a, e, 1e-10, f"log-probs d {what}")

    # traced label_smoothing and temperature: operands of the partitioned op (Auto
    # axes) and replicated closures of the shard_map (explicit axes)
    def traced(y):
        def f(h, w, b, e, t):
            return jaxloss.fused_linear_softmax_cross_entropy(
                h, w, y, bias=b, ignore_index=-100, label_smoothing=e, temperature=t,
                chunk_size=8,
            )  # fmt: skip

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4)))

    want = traced(y)(h, w, b, 0.1, 1.5)
    explicit = jax.make_mesh((2, 4), ("data", "model"))
    for m in (mesh, explicit):
        with jax.set_mesh(m):
            put = lambda a, *spec, m=m: jax.device_put(a, NamedSharding(m, P(*spec)))
            got = traced(put(y, "data"))(put(h, "data"), put(w, None, "model"),
                                         put(b, "model"), 0.1, 1.5)  # fmt: skip
        what = f"traced, {m.axis_types[0]} axes"
        _close(got[0], want[0], 1e-10, what)
        for i, (a, e) in enumerate(zip(got[1], want[1], strict=True)):
            _close(a, e, 1e-10, f"{what}, d argument {i}")


# --------------------------------------------------------------------------
# Every exported loss under data parallelism
# --------------------------------------------------------------------------


BATCH, CLASSES = 16, 5  # batch divisible by the 8 devices


def check_data_parallel_every_loss():
    """Each batch loss of the registry: batch sharded over 8 devices == unsharded.

    Inputs are the row's benchmark builder at ``[16, 5]`` in float64 with the
    row's data-parallel options; the losses the registry marks as not batch
    losses (the vocabulary-parallel ones) are checked above.
    """
    from jax.sharding import PartitionSpec as P

    from jaxloss._registry import REGISTRY, public_names

    mesh = _mesh("data")
    rng = np.random.default_rng(3)
    covered, failures = [], []
    for row in REGISTRY:
        if not row.batch:
            continue
        args = row.bench(BATCH, CLASSES, rng, np.float64)
        # Shard every batched argument along its first axis; kernel-like args replicate.
        sharded = tuple(_put(a, mesh, P("data") if a.shape[0] == BATCH else P()) for a in args)
        kw = dict(row.batch_options)
        try:
            _data_parallel_case(row.fn, args, sharded, kw, mesh, row.name)
        except Exception as e:  # collect every failing case
            failures.append(f"{row.name} {kw}: {type(e).__name__}: {str(e).splitlines()[0]}")
        covered.append(row.name)
    required = {
        "softmax_cross_entropy",
        "softmax_cross_entropy_with_integer_labels",
        "nll_loss",
        "sigmoid_binary_cross_entropy",
        "binary_cross_entropy",
        "fused_linear_softmax_cross_entropy",
    }
    assert required <= set(covered), (required - set(covered), covered)
    assert not failures, "\n".join(failures)
    missing = sorted(set(public_names()) - {row.name for row in REGISTRY})
    assert not missing, f"exported losses without a registry row: {missing}"


def _data_parallel_case(fn, args, sharded, kw, mesh, name):
    """Values and first-argument gradients for reduction "none" and "mean" in one jit."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    def both(*a, kw):
        def none(*a):
            out = fn(*a, reduction="none", **kw)
            return jnp.sum(out * jnp.cos(out)), out

        mean_red = kw.pop("reduction", "mean")
        (_, rows), g_rows = jax.value_and_grad(none, has_aux=True)(*a)
        mean, g_mean = jax.value_and_grad(lambda *a: fn(*a, reduction=mean_red, **kw))(*a)
        return rows, g_rows, mean, g_mean

    want = jax.jit(partial(both, kw=dict(kw)))(*args)
    # Array options (class weights) live replicated on the mesh, as in training.
    kw_put = {k: _put(v, mesh, P()) if hasattr(v, "shape") else v for k, v in kw.items()}
    got = jax.jit(partial(both, kw=kw_put))(*sharded)
    for what, a, e in zip(("none", "grad none", "mean", "grad mean"), got, want, strict=True):
        _close(a, e, 1e-10, f"{name} {kw} {what}")


def check_data_parallel_class_weight():
    """Per-class tables gathered at sharded labels under data parallelism (``weight[y]``)."""
    from jax.sharding import PartitionSpec as P

    import jaxloss

    mesh = _mesh("data")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 5))
    y = rng.integers(0, 5, 16).astype(np.int32)
    w = np.linspace(0.5, 2.0, 5)
    # every per-class table read at the rows' labels: class weights, focal alpha
    cases = (
        ("softmax_cross_entropy_with_integer_labels", "weight"),
        ("nll_loss", "weight"),
        ("multi_margin_loss", "weight"),
        ("softmax_focal_loss", "alpha"),
    )
    for name, option in cases:
        fn = getattr(jaxloss, name)
        lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
        args = (x, y) if name != "nll_loss" else (lp, y)
        sharded = tuple(_put(a, mesh, P("data")) for a in args)
        _data_parallel_case(fn, args, sharded, {option: w}, mesh, name)


CHECKS = {name[len("check_") :]: fn for name, fn in globals().items() if name.startswith("check_")}


def main(argv: list[str]) -> int:
    _setup()
    names = argv or list(CHECKS)
    results = {}
    for name in names:
        start = time.process_time()
        try:
            CHECKS[name]()
            results[name] = "ok"
        except Exception:  # report every failure, not only the first
            results[name] = traceback.format_exc()
        print(f"{name}: {time.process_time() - start:.1f} s cpu", file=sys.stderr)
    print(json.dumps(results))
    return 0 if all(v == "ok" for v in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

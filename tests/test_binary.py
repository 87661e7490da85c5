"""Binary cross-entropy on logits and on probabilities.

References: PyTorch and optax called side by side in float64, a float64
softplus formula, and the worked numbers of DESIGN.md.
"""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
import torch
import torch.nn.functional as F
from _helpers import all_finite, close, large_residuals, rng, tt
from jax.test_util import check_grads

import jaxloss as jl

bce_logits = jl.sigmoid_binary_cross_entropy
bce_probs = jl.binary_cross_entropy

REDUCTIONS = ("none", "sum", "mean")
N, C = 6, 4


def soft_labels(r, shape=(N, C)):
    """Labels with exact 0s and 1s and soft values in between."""
    y = r.uniform(size=shape)
    y[0] = 1.0
    y[1] = 0.0
    return y


def weight_of(kind, r):
    return {
        None: None,
        "class": r.uniform(0.2, 2.0, size=C),
        "full": r.uniform(0.0, 2.0, size=(N, C)),
    }[kind]


# --------------------------------------------------------------------------
# sigmoid_binary_cross_entropy vs torch / optax
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [False, True])
@pytest.mark.parametrize("weight", [None, "class", "full"])
def test_sigmoid_bce_matches_torch(weight, pos_weight, reduction):
    r = rng(1)
    x = 3.0 * r.normal(size=(N, C))
    y = soft_labels(r)
    w = weight_of(weight, r)
    pw = r.uniform(0.3, 3.0, size=C) if pos_weight else None
    jw = None if w is None else jnp.asarray(w)
    jpw = None if pw is None else jnp.asarray(pw)

    def f(x, y):
        return bce_logits(x, y, weight=jw, pos_weight=jpw, reduction=reduction)

    loss, vjp = jax.vjp(f, jnp.asarray(x), jnp.asarray(y))
    ct = r.normal(size=loss.shape)
    gx, gy = vjp(jnp.asarray(ct))

    xt, yt = tt(x, grad=True), tt(y, grad=True)
    lt = F.binary_cross_entropy_with_logits(
        xt,
        yt,
        weight=None if w is None else tt(w),
        pos_weight=None if pw is None else tt(pw),
        reduction=reduction,
    )
    (lt * tt(ct)).sum().backward()
    assert loss.dtype == jnp.float64
    close(loss, lt.detach().numpy())
    close(gx, xt.grad.numpy())
    close(gy, yt.grad.numpy())


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0])
def test_sigmoid_bce_label_smoothing_is_keras_style(eps):
    # y' = y (1 - eps) + eps / 2: torch on pre-smoothed targets, and optax's
    # smooth_labels on the two-class one-hot [y, 1 - y] give the same target.
    r = rng(2)
    x = jnp.asarray(3.0 * r.normal(size=(N, C)))
    y = jnp.asarray((r.uniform(size=(N, C)) < 0.5).astype(np.float64))
    pw = jnp.asarray(r.uniform(0.3, 3.0, size=C))
    two_class = jnp.stack([y, 1.0 - y], axis=-1)
    y_optax = optax.smooth_labels(two_class, eps)[..., 0]
    close(y_optax, y * (1 - eps) + eps / 2)

    ours = lambda x: bce_logits(x, y, pos_weight=pw, label_smoothing=eps, reduction="mean")
    xt = tt(x, grad=True)
    lt = F.binary_cross_entropy_with_logits(xt, tt(y_optax), pos_weight=tt(pw), reduction="mean")
    lt.backward()
    close(ours(x), lt.detach().numpy())
    close(jax.grad(ours)(x), xt.grad.numpy())

    plain = lambda x: bce_logits(x, y, label_smoothing=eps)
    ref = lambda x: optax.losses.sigmoid_binary_cross_entropy(x, y_optax)
    close(plain(x), ref(x))
    close(jax.grad(lambda x: plain(x).sum())(x), jax.grad(lambda x: ref(x).sum())(x))


def test_sigmoid_bce_matches_optax():
    r = rng(3)
    x = jnp.asarray(4.0 * r.normal(size=(N, C)))
    y = jnp.asarray(soft_labels(r))
    ours = lambda x, y: bce_logits(x, y)
    ref = optax.losses.sigmoid_binary_cross_entropy
    close(ours(x, y), ref(x, y))
    g = jax.grad(lambda x, y: ours(x, y).sum(), argnums=(0, 1))(x, y)
    g_ref = jax.grad(lambda x, y: ref(x, y).sum(), argnums=(0, 1))(x, y)
    close(g[0], g_ref[0])
    close(g[1], g_ref[1])
    # Integer and boolean labels are accepted as well.
    yi = jnp.asarray(r.integers(0, 2, size=(N, C)))
    close(bce_logits(x, yi), ref(x, yi.astype(x.dtype)))
    close(bce_logits(x, yi.astype(bool)), ref(x, yi.astype(x.dtype)))


# --------------------------------------------------------------------------
# binary_cross_entropy (probabilities) vs torch
# --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, "class", "full"])
def test_bce_probs_matches_torch(weight, reduction):
    r = rng(4)
    p = r.uniform(size=(N, C))
    p[2, :2] = [0.0, 1.0]  # exact 0 and 1: each log clamped at -100
    p[3, :2] = [1.0, 0.0]
    y = soft_labels(r)
    y[2:4, :2] = [[0.0, 1.0], [0.0, 1.0]]
    w = weight_of(weight, r)
    jw = None if w is None else jnp.asarray(w)

    loss, vjp = jax.vjp(
        lambda p, y: bce_probs(p, y, weight=jw, reduction=reduction),
        jnp.asarray(p),
        jnp.asarray(y),
    )
    ct = r.normal(size=loss.shape)
    gp, gy = vjp(jnp.asarray(ct))

    pt, yt = tt(p, grad=True), tt(y, grad=True)
    lt = F.binary_cross_entropy(pt, yt, weight=None if w is None else tt(w), reduction=reduction)
    (lt * tt(ct)).sum().backward()
    close(loss, lt.detach().numpy())
    # Gradient (p - y) / max(p (1 - p), 1e-12): ~1e12 at p = 0 or 1 where y disagrees.
    close(gp, pt.grad.numpy(), rtol=1e-10, atol=0)
    # d/dy = log(1 - p) - log(p) with the clamped logs of the forward: PyTorch's
    # target gradient is unclamped (+-inf at p = 0 or 1); ours stays the derivative
    # of the value actually computed, +-100 there.
    interior = (p > 0) & (p < 1)
    close(gy[interior], yt.grad.numpy()[interior])
    edge_scale = np.broadcast_to(1.0 if w is None else w, p.shape) * (
        np.broadcast_to(ct, p.shape) if reduction == "none" else ct
    )
    if reduction == "mean":
        edge_scale = edge_scale / p.size
    clamped = np.where(p == 0, 100.0, -100.0) * edge_scale
    close(gy[~interior], clamped[~interior])


def test_design_worked_bce_numbers():
    # DESIGN.md: torch.manual_seed(0); torch.rand(2, 3) with targets [[0,0,1],[1,0,0]].
    torch.manual_seed(0)
    pt = torch.rand(2, 3)
    close(pt, [[0.4963, 0.7682, 0.0885], [0.1320, 0.3074, 0.6341]], rtol=0, atol=5e-5)
    p = jnp.asarray(pt.numpy())
    y = jnp.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], jnp.float32)
    elementwise = bce_probs(p, y)
    expected = [[0.6857, 1.4620, 2.4250], [2.0247, 0.3673, 1.0053]]
    # The tutorial prints 4 decimals (1.13246 shows as 1.1324): one unit of the last place.
    close(elementwise, expected, rtol=0, atol=1e-4)
    close(elementwise.mean(axis=1), [1.5242, 1.1324], rtol=0, atol=1e-4)
    close(bce_probs(p, y, reduction="mean"), 1.3283, rtol=0, atol=1e-4)
    # The same numbers from the logits.
    close(bce_logits(jnp.log(p) - jnp.log1p(-p), y), expected, rtol=0, atol=1e-4)
    # DESIGN.md: BCE of labels [0,1,1,0] vs probabilities [0.1,0.8,0.9,0.2] is 0.1643.
    p4, y4 = jnp.array([0.1, 0.8, 0.9, 0.2]), jnp.array([0.0, 1.0, 1.0, 0.0])
    close(bce_probs(p4, y4, reduction="mean"), 0.1643, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------
# Numerical gradient checks, second order, forward and reverse
# --------------------------------------------------------------------------


def test_check_grads_sigmoid_bce_all_options():
    r = rng(5)
    x = jnp.asarray(r.normal(size=(3, 4)))
    y = jnp.asarray(r.uniform(size=(3, 4)))
    pw = jnp.asarray(r.uniform(0.5, 2.0, size=4))
    w = jnp.asarray(r.uniform(0.5, 2.0, size=4))

    def f(x, y, pw, w):
        return bce_logits(x, y, weight=w, pos_weight=pw, label_smoothing=0.1, reduction="mean")

    check_grads(jax.jit(f), (x, y, pw, w), order=2, modes=["fwd", "rev"])


def test_check_grads_bce_probs():
    r = rng(6)
    p = jnp.asarray(r.uniform(0.05, 0.95, size=(3, 4)))
    y = jnp.asarray(r.uniform(size=(3, 4)))
    w = jnp.asarray(r.uniform(0.5, 2.0, size=4))

    def f(p, y, w):
        return bce_probs(p, y, weight=w, reduction="mean")

    # A smaller step than the default 1e-4: -log p has third derivative 2 / p^3
    # (16000 at p = 0.05), too curved for the central difference at 1e-4.
    check_grads(jax.jit(f), (p, y, w), order=2, modes=["fwd", "rev"], eps=1e-5)


# --------------------------------------------------------------------------
# Edges: infinite and huge logits, bf16
# --------------------------------------------------------------------------


def softplus64(x):
    return np.logaddexp(0.0, np.asarray(x, np.float64))


def test_infinite_logits():
    x = jnp.array([jnp.inf, -jnp.inf, jnp.inf, -jnp.inf])
    agree = jnp.array([1.0, 0.0, 1.0, 0.0])
    disagree = 1.0 - agree
    pw = jnp.array([2.0, 2.0, 0.5, 0.5])
    w0 = jnp.array([0.0, 0.0, 1.0, 1.0])

    @jax.jit
    def run(x):
        agreeing = []
        for opts in ({}, {"pos_weight": pw}, {"weight": pw}):
            f = lambda x, opts=opts: bce_logits(x, agree, reduction="sum", **opts)
            agreeing.append((f(x), jax.grad(f)(x), jax.hessian(f)(x)))
        g = jax.grad(lambda x: bce_logits(x, disagree).sum())(x)
        return agreeing, bce_logits(x, disagree), g, bce_logits(x, disagree, weight=w0)

    agreeing, loss, grad, weighted = run(x)
    for value, g, h in agreeing:
        assert value == 0.0
        assert jnp.all(g == 0.0)
        assert all_finite(h)
    # A disagreeing label saturates at the largest float (README; PyTorch gives
    # inf), with the finite gradient +-1.
    big = np.finfo(np.float64).max
    assert jnp.all(loss == big)
    close(grad, [1.0, -1.0, 1.0, -1.0])
    # A zero weight keeps a saturated element out.
    close(weighted, [0.0, 0.0, big, big])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_huge_logits(dtype):
    y = jnp.array([1.0, 0.0, 0.0, 1.0], dtype)
    pw = jnp.array([1.5, 1.5, 0.5, 0.5], dtype)

    @jax.jit
    def run(x):
        grads = [
            jax.grad(lambda x, o=opts: bce_logits(x, y, reduction="sum", **o))(x)
            for opts in ({}, {"pos_weight": pw}, {"label_smoothing": 0.1})
        ]
        return bce_logits(x, y), grads

    for big in (1e4, 3e38):
        x = jnp.array([big, -big, big, -big], dtype)
        loss, grads = run(x)
        assert all_finite(grads)
        # Float64 formula: y sp(-x) + (1 - y) sp(x); every value here fits in float32.
        x64 = np.asarray(x, np.float64)
        y64 = np.asarray(y, np.float64)
        ref = y64 * softplus64(-x64) + (1 - y64) * softplus64(x64)
        close(loss, ref, rtol=1e-7, atol=0)
        close(grads[0], scipy.special.expit(x64) - y64, rtol=1e-7, atol=0)


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
def test_low_precision_computes_in_float32(low):
    r = rng(7)
    y = jnp.asarray(soft_labels(r), jnp.float32)
    pw = jnp.asarray(r.uniform(0.5, 2.0, size=C), jnp.float32)
    w = jnp.asarray(r.uniform(0.5, 2.0, size=C), jnp.float32)
    cases = [
        (
            lambda x: bce_logits(x, y, weight=w, pos_weight=pw, label_smoothing=0.1),
            jnp.asarray(3.0 * r.normal(size=(N, C)), low),
        ),
        (lambda p: bce_probs(p, y, weight=w), jnp.asarray(r.uniform(size=(N, C)), low)),
    ]

    @jax.jit
    def run(inputs):
        out = []
        for (f, _), x_low in zip(cases, inputs, strict=True):
            for x in (x_low, x_low.astype(jnp.float32)):
                out.append((f(x), jax.grad(lambda x: f(x).sum())(x)))
        return out

    results = run([x for _, x in cases])
    for (loss_low, g_low), (loss32, g32) in zip(results[::2], results[1::2], strict=True):
        assert loss_low.dtype == jnp.float32
        close(loss_low, loss32, rtol=1e-5, atol=0)
        assert g_low.dtype == low
        # The same float32 gradient, rounded once to the input's dtype.
        close(g_low.astype(jnp.float32), g32.astype(low).astype(jnp.float32), rtol=0, atol=0)


def test_float64_labels_with_float32_logits():
    x = jnp.asarray(rng(8).normal(size=(N, C)), jnp.float32)
    y = np.asarray(soft_labels(rng(8)), np.float64)
    loss = bce_logits(x, y)
    assert loss.dtype == jnp.float32
    close(loss, bce_logits(x, y.astype(np.float32)), rtol=0, atol=0)


# --------------------------------------------------------------------------
# Equivalences
# --------------------------------------------------------------------------


def test_broadcast_weights_vmap_and_jit():
    r = rng(9)
    xs = jnp.asarray(r.normal(size=(3, N, C)))
    ys = jnp.asarray(r.uniform(size=(3, N, C)))
    ps = jnp.asarray(1 / (1 + np.exp(-np.asarray(xs))))
    pw = jnp.asarray(r.uniform(0.5, 2.0, size=C))
    w = jnp.asarray(r.uniform(0.5, 2.0, size=C))
    full = lambda a: jnp.broadcast_to(a, (N, C))
    f = lambda x, y: bce_logits(x, y, weight=w, pos_weight=pw, label_smoothing=0.1)
    g = lambda p, y: bce_probs(p, y, weight=w, reduction="mean")
    fns = [(f, xs), (g, ps)]

    @jax.jit
    def run(xs, ps, ys):
        x, y = xs[0], ys[0]
        broadcast = [
            # [C] weights equal fully broadcast ones.
            (f(x, y), bce_logits(x, y, weight=full(w), pos_weight=full(pw), label_smoothing=0.1)),
            # Labels broadcast too (one label row for the whole batch).
            (bce_logits(x, y[0]), bce_logits(x, full(y[0]))),
        ]
        batched, looped = [], []
        for fn, a in ((f, xs), (g, ps)):
            grad = jax.grad(lambda a, b, fn=fn: fn(a, b).sum())
            batched.append((jax.vmap(fn)(a, ys), jax.vmap(grad)(a, ys)))
            looped.append(
                (
                    jnp.stack([fn(a[i], ys[i]) for i in range(3)]),
                    jnp.stack([grad(a[i], ys[i]) for i in range(3)]),
                )
            )
        return broadcast, batched, looped

    broadcast, batched, looped = run(xs, ps, ys)
    for a, b in broadcast:
        close(a, b)
    for (value, grad), (ref_value, ref_grad) in zip(batched, looped, strict=True):
        close(value, ref_value)
        close(grad, ref_grad)
    # Eager (op by op) equals the compiled program.
    for (fn, a), (ref_value, _) in zip(fns, looped, strict=True):
        close(fn(a[0], ys[0]), ref_value[0])


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------

X = jnp.zeros((2, 3))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: bce_logits(jnp.zeros((2, 3), jnp.int32), X), TypeError, "logits"),
        (lambda: bce_probs(jnp.zeros((2, 3), jnp.int32), X), TypeError, "probs"),
        (lambda: bce_logits(X, jnp.zeros((2, 3), jnp.complex64)), TypeError, "labels"),
        (lambda: bce_logits(X, jnp.zeros((3, 3))), ValueError, "labels"),
        (lambda: bce_logits(X, jnp.zeros((2, 3, 1))), ValueError, "labels"),
        (lambda: bce_probs(X, jnp.zeros((2, 2))), ValueError, "labels"),
        (lambda: bce_logits(X, X, weight=jnp.ones(2)), ValueError, "weight"),
        (lambda: bce_probs(X, X, weight=jnp.ones((3, 3))), ValueError, "weight"),
        (lambda: bce_logits(X, X, weight=jnp.ones(3, jnp.int32)), TypeError, "weight"),
        (lambda: bce_logits(X, X, pos_weight=jnp.ones(4)), ValueError, "pos_weight"),
        (lambda: bce_logits(X, X, pos_weight=jnp.ones(3, jnp.int32)), TypeError, "pos_weight"),
        (lambda: bce_logits(X, X, reduction="mean_per_row"), ValueError, "reduction"),
        (lambda: bce_probs(X, X, reduction="batchmean"), ValueError, "reduction"),
        (lambda: bce_logits(X, X, label_smoothing=-0.5), ValueError, "label_smoothing"),
        (lambda: bce_logits(X, X, label_smoothing=1.01), ValueError, "label_smoothing"),
        (lambda: bce_probs(jnp.array([0.5, 1.5]), jnp.ones(2)), ValueError, "probs"),
        (lambda: bce_probs(jnp.array([-1e-7, 0.5]), jnp.ones(2)), ValueError, "probs"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_traced_probs_outside_unit_interval_give_nan():
    out = jax.jit(bce_probs)(jnp.array([0.5, 1.5, -0.5]), jnp.array([1.0, 1.0, 0.0]))
    assert jnp.isfinite(out[0]) and jnp.all(jnp.isnan(out[1:]))


# --------------------------------------------------------------------------
# Property sweep: no NaN where the math is finite
# --------------------------------------------------------------------------

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f64": jnp.float64}


@jax.jit
def _sweep_values(x, y, pw):
    def f(x):
        return bce_logits(x, y, pos_weight=pw, label_smoothing=0.1, reduction="mean")

    def g(x):
        p = jax.nn.sigmoid(x.astype(jnp.float32))
        return bce_probs(p, y, reduction="mean")

    return jax.value_and_grad(f)(x), jax.value_and_grad(g)(x)


@hypothesis.settings(max_examples=50, deadline=None, derandomize=True)
@hypothesis.given(
    shape=st.sampled_from([(1,), (3, 4)]),
    dtype=st.sampled_from(sorted(DTYPES)),
    exponent=st.integers(0, 30),
    seed=st.integers(0, 2**16),
)
def test_sweep_no_nan(shape, dtype, exponent, seed):
    r = rng(seed)
    x = jnp.asarray(r.normal(size=shape) * 10.0**exponent, DTYPES[dtype])
    y = jnp.asarray(r.uniform(size=shape), jnp.float32)
    pw = jnp.asarray(r.uniform(0.5, 2.0, size=shape[-1:]), jnp.float32)
    (loss, grad), (loss_p, grad_p) = _sweep_values(x, y, pw)
    # |x| <= ~1e31 and pos_weight <= 2: every loss is a float32 number.
    assert all_finite(loss, grad, loss_p, grad_p), (x, loss, grad, loss_p, grad_p)


# --------------------------------------------------------------------------
# Memory: reverse mode keeps no [N, C] intermediate
# --------------------------------------------------------------------------


def test_bce_keeps_no_nc_residual():
    n, c = 16, 64
    r = rng(10)
    x = jnp.asarray(r.normal(size=(n, c)), jnp.float32)
    y = jnp.asarray(r.uniform(size=(n, c)), jnp.float32)
    pw = jnp.asarray(r.uniform(0.5, 2.0, size=c), jnp.float32)

    # Labels and weights are closed over (held constant): they show up as
    # "from a constant", the caller's own buffers; anything computed would be
    # "output of <primitive>".
    def f(x):
        return bce_logits(x, y, pos_weight=pw, weight=pw, label_smoothing=0.1, reduction="mean")

    assert large_residuals(f, x, size=n * c) == []

    def g(p):
        return bce_probs(p, y, weight=pw, reduction="mean")

    assert large_residuals(g, jax.nn.sigmoid(x), size=n * c) == []
    # The check itself: a plain formula with a broadcast pos_weight keeps [N, C] arrays.
    plain = lambda x: jnp.mean(pw[None] * y * jax.nn.softplus(-x) + (1 - y) * jax.nn.softplus(x))
    assert large_residuals(plain, x, size=n * c) != []

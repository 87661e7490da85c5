"""Shared mechanics: reduction, weighting, validation, dtypes, the public contract.

The helpers in ``jaxloss._common`` are exercised directly and through the five
foundation losses, so that every loss follows the same conventions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxloss as jl
from jaxloss import _common as cm

# --------------------------------------------------------------------------
# Reduction, through every loss
# --------------------------------------------------------------------------

R = np.random.default_rng(0)
N, C = 6, 4
X = R.normal(size=(N, C))
Y_INT = np.array([0, 3, 1, -1, 2, 3])
W_CLASS = R.uniform(0.5, 2.0, size=C)
T = np.exp(X) / np.exp(X).sum(-1, keepdims=True)
Y_BIN = R.uniform(size=(N, C))
P = 1 / (1 + np.exp(-X))


def _ce_int(x, **kw):
    return jl.softmax_cross_entropy_with_integer_labels(
        x, Y_INT, weight=W_CLASS, ignore_index=-1, **kw
    )


def _nll(x, **kw):
    return jl.nll_loss(x, Y_INT, weight=W_CLASS, ignore_index=-1, **kw)


def _ce_prob(x, **kw):
    return jl.softmax_cross_entropy(x, T, **kw)


def _bce(x, **kw):
    return jl.sigmoid_binary_cross_entropy(x, Y_BIN, weight=W_CLASS, pos_weight=W_CLASS, **kw)


def _bce_p(x, **kw):
    return jl.binary_cross_entropy(x, Y_BIN, weight=W_CLASS, **kw)


# Each loss, its input, and the divisor of its "mean" (PyTorch's): the summed
# class weight of the counted rows for CE/NLL, the row count for probability
# CE, the element count for BCE (weights rescale, they do not renormalise).
COUNTED = Y_INT != -1
LOSSES = {
    "ce_int": (_ce_int, X, W_CLASS[np.where(COUNTED, Y_INT, 0)][COUNTED].sum()),
    "nll": (_nll, np.log(T), W_CLASS[np.where(COUNTED, Y_INT, 0)][COUNTED].sum()),
    "ce_prob": (_ce_prob, X, N),
    "bce": (_bce, X, N * C),
    "bce_probs": (_bce_p, P, N * C),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_reductions(name):
    f, x, divisor = LOSSES[name]
    x = jnp.asarray(x)

    @jax.jit
    def run(x):
        out = {r: f(x, reduction=r) for r in ("none", "sum", "mean")}
        grads = {r: jax.grad(lambda x, r=r: f(x, reduction=r).sum())(x) for r in out}
        return out, grads, f(x)

    out, grads, default = run(x)
    none = np.asarray(out["none"])
    # The default is optax's: one loss per example, elementwise for BCE.
    assert none.shape == ((N,) if name in ("ce_int", "nll", "ce_prob") else (N, C))
    np.testing.assert_array_equal(default, none)
    np.testing.assert_allclose(out["sum"], none.sum(), rtol=1e-12)
    np.testing.assert_allclose(out["mean"], none.sum() / divisor, rtol=1e-12)
    np.testing.assert_allclose(grads["mean"], grads["sum"] / divisor, rtol=1e-12, atol=1e-15)
    for r in ("sum", "mean"):
        assert out[r].shape == ()
    if name in ("ce_int", "nll"):
        # An ignored row contributes exactly 0 and has a zero gradient.
        assert none[~COUNTED] == 0.0
        assert jnp.all(grads["none"][~COUNTED] == 0.0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_empty_batch_mean_is_zero(name):
    x = jnp.zeros((0, C))
    labels = {
        "ce_int": jnp.zeros((0,), jnp.int32),
        "nll": jnp.zeros((0,), jnp.int32),
        "ce_prob": jnp.zeros((0, C)),
        "bce": jnp.zeros((0, C)),
        "bce_probs": jnp.zeros((0, C)),
    }[name]
    fn = {
        "ce_int": jl.softmax_cross_entropy_with_integer_labels,
        "nll": jl.nll_loss,
        "ce_prob": jl.softmax_cross_entropy,
        "bce": jl.sigmoid_binary_cross_entropy,
        "bce_probs": jl.binary_cross_entropy,
    }[name]
    value, grad = jax.value_and_grad(lambda x: fn(x, labels, reduction="mean"))(x)
    assert value == 0.0 and grad.shape == (0, C)


# --------------------------------------------------------------------------
# Reduction, safe_divide, safe_mul
# --------------------------------------------------------------------------


def test_reduction_mechanics():
    loss = jnp.array([1.0, 2.0, 0.0, 3.0])
    R = cm.Reduction.of
    assert R("none")(loss) is loss
    assert R("sum")(loss) == 6.0
    assert R("mean")(loss) == 1.5
    den = jnp.array([0.5, 1.0, 0.0, 1.5])
    assert R("mean")(loss, den) == 2.0
    # shares only matter to the mean
    assert R("sum")(loss, den) == 6.0 and R("none")(loss, den) is loss
    assert R("batchmean", batchmean=True)(loss, batch_size=3) == 2.0
    # the gradient scale is 1 / divisor for the mean, 1 otherwise
    assert R("mean").scale(den, 4, jnp.float32) == 1.0 / 3.0
    assert R("sum").scale(den, 4, jnp.float32) == 1.0
    assert R("mean").scale(None, 4, jnp.float32) == 0.25
    # Nothing counts: 0, never NaN, and the gradient is 0 (PyTorch: NaN).
    f = lambda loss: R("mean")(loss, jnp.zeros(4))
    assert f(loss) == 0.0
    assert jnp.all(jax.grad(f)(loss) == 0.0)
    assert R("mean").scale(jnp.zeros(4), 4, jnp.float32) == 0.0


def test_safe_divide_and_safe_mul_have_no_nan_in_derivatives():
    num, den = jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])
    np.testing.assert_array_equal(cm.safe_divide(num, den), [0.0, 0.5])
    g_num, g_den = jax.grad(lambda n, d: cm.safe_divide(n, d).sum(), argnums=(0, 1))(num, den)
    np.testing.assert_array_equal(g_num, [0.0, 0.25])
    np.testing.assert_array_equal(g_den, [0.0, -2.0 / 16.0])

    coef, value = jnp.array([0.0, 2.0]), jnp.array([jnp.inf, 3.0])
    np.testing.assert_array_equal(cm.safe_mul(coef, value), [0.0, 6.0])
    g_coef, g_value = jax.grad(lambda c, v: cm.safe_mul(c, v).sum(), argnums=(0, 1))(coef, value)
    np.testing.assert_array_equal(g_value, [0.0, 2.0])
    assert g_coef[1] == 3.0 and not jnp.isnan(g_coef[0])


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------


def test_reduction_validation():
    assert cm.Reduction.of("mean").kind == "mean"
    assert cm.Reduction.of("batchmean", batchmean=True).kind == "batchmean"
    for bad in ("avg", "batchmean", None, 1, "Mean"):
        with pytest.raises(ValueError, match=r"reduction must be one of 'none', 'sum', 'mean'"):
            cm.Reduction.of(bad)


def test_static_float():
    assert cm.static_float(0.1, "label_smoothing", low=0.0, high=1.0) == 0.1
    assert cm.static_float(np.float32(0.5), "x") == 0.5
    assert cm.static_float(jnp.asarray(0.25), "x") == 0.25
    assert cm.static_float(None, "logit_softcap", allow_none=True) is None
    with pytest.raises(TypeError, match="logit_softcap"):
        cm.static_float(None, "logit_softcap")
    with pytest.raises(ValueError, match=r"z_loss must be >= 0"):
        cm.static_float(-1.0, "z_loss", low=0.0)
    with pytest.raises(ValueError, match=r"logit_softcap must be > 0"):
        cm.static_float(0.0, "logit_softcap", low=0.0, low_open=True)
    with pytest.raises(ValueError, match=r"label_smoothing must be <= 1"):
        cm.static_float(1.5, "label_smoothing", low=0.0, high=1.0)
    with pytest.raises(ValueError, match="label_smoothing must not be NaN"):
        cm.static_float(float("nan"), "label_smoothing", low=0.0, high=1.0)
    with pytest.raises(TypeError, match="z_loss must be a number"):
        cm.static_float("0.1", "z_loss")
    with pytest.raises(TypeError, match="z_loss must be a concrete Python number"):
        jax.jit(lambda z: cm.static_float(z, "z_loss"))(0.1)


def test_static_int_and_axis():
    assert cm.static_int(None, "ignore_index") is None
    assert cm.static_int(np.int64(-100), "ignore_index") == -100
    for bad in (1.0, True, "1", jnp.asarray(1.5)):
        with pytest.raises(TypeError, match="ignore_index must be a Python int"):
            cm.static_int(bad, "ignore_index")
    assert cm.normalize_axis(-1, 3) == 2
    assert cm.normalize_axis(np.int32(1), 3) == 1
    with pytest.raises(ValueError, match=r"axis=3 is out of range"):
        cm.normalize_axis(3, 3)
    with pytest.raises(TypeError, match="axis must be an int"):
        cm.normalize_axis(True, 3)
    with pytest.raises(ValueError, match="at least one dimension"):
        cm.normalize_axis(-1, 0)


def test_array_kind_checks():
    assert cm.as_float_array([1, 2], "logits").dtype == jnp.float32  # Python numbers
    assert cm.as_float_array(jnp.ones(2, jnp.bfloat16), "logits").dtype == jnp.bfloat16
    with pytest.raises(TypeError, match=r"logits must be a floating-point array; got dtype int32"):
        cm.as_float_array(jnp.ones(2, jnp.int32), "logits")
    with pytest.raises(TypeError, match="astype"):
        cm.as_float_array(np.ones(2, np.int64), "weight")
    with pytest.raises(TypeError, match="probs"):
        cm.as_float_array(True, "probs")
    assert cm.as_int_array(np.array([1, 2]), "labels").dtype.kind == "i"
    with pytest.raises(TypeError, match="labels must be an integer array"):
        cm.as_int_array(jnp.ones(2), "labels")


def test_dtypes():
    f32, f64 = jnp.ones(1, jnp.float32), jnp.ones(1, jnp.float64)
    assert cm.compute_dtype(jnp.ones(1, jnp.bfloat16)) == jnp.float32
    assert cm.compute_dtype(jnp.ones(1, jnp.float16)) == jnp.float32
    assert cm.compute_dtype(f32) == jnp.float32
    assert cm.compute_dtype(f64) == jnp.float64
    assert cm.compute_dtype(f32, f64) == jnp.float64
    assert cm.compute_dtype(f32, None) == jnp.float32


def test_broadcasting_checks():
    w = jnp.ones(4)
    # check_broadcastable validates without materialising the broadcast.
    assert cm.check_broadcastable(w, (3, 4), "weight", "logits").shape == (4,)
    assert cm.broadcast_to_shape(w, (3, 4), "weight", "logits").shape == (3, 4)
    for bad in (jnp.ones(3), jnp.ones((2, 3, 4)), jnp.ones((3, 1, 1))):
        with pytest.raises(ValueError, match=r"weight with shape .* does not broadcast .*\(3, 4\)"):
            cm.check_broadcastable(bad, (3, 4), "weight", "logits")
    assert cm.as_mask(None, (3, 4)) is None
    assert cm.as_mask(jnp.ones(4, bool), (3, 4)).shape == (3, 4)
    with pytest.raises(TypeError, match="where must be a boolean mask"):
        cm.as_mask(jnp.ones(4), (3, 4))
    with pytest.raises(ValueError, match="where with shape"):
        cm.as_mask(jnp.ones(3, bool), (3, 4))
    with pytest.raises(ValueError, match=r"labels and logits must have the same shape"):
        cm.check_same_shape(jnp.ones(2), jnp.ones(3), "labels", "logits")


def test_check_labels_in_range():
    cm.check_labels_in_range(np.array([0, 2, -100]), 3, -100)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*found -1.*never wraps"):
        cm.check_labels_in_range(np.array([0, -1]), 3, None)
    with pytest.raises(ValueError, match="found 3"):
        cm.check_labels_in_range(np.array([3, 0]), 3, -100)

    # Traced labels: nothing raised at trace time; checkify reports it at run time.
    def f(y):
        cm.check_labels_in_range(y, 3, -100)
        return y

    jax.jit(f)(jnp.array([5]))  # no error unless checkified
    err, _ = checkify.checkify(jax.jit(f))(jnp.array([0, 5]))
    assert "labels out of range [0, 3)" in err.get()
    err, _ = checkify.checkify(jax.jit(f))(jnp.array([0, -100]))
    assert err.get() is None


# --------------------------------------------------------------------------
# No recompilation on repeated calls with the same shapes
# --------------------------------------------------------------------------

CALLS = {
    "ce_int": (
        lambda x, y: jl.softmax_cross_entropy_with_integer_labels(
            x, y, ignore_index=-1, label_smoothing=0.1, z_loss=1e-4, reduction="mean"
        ),
        lambda r: (r.normal(size=(N, C)), r.integers(0, C, size=N)),
    ),
    "nll": (
        lambda x, y: jl.nll_loss(x, y, reduction="mean"),
        lambda r: (r.normal(size=(N, C)), r.integers(0, C, size=N)),
    ),
    "ce_prob": (
        lambda x, t: jl.softmax_cross_entropy(x, t, label_smoothing=0.1, reduction="mean"),
        lambda r: (r.normal(size=(N, C)), r.uniform(size=(N, C))),
    ),
    "bce": (
        lambda x, y: jl.sigmoid_binary_cross_entropy(x, y, label_smoothing=0.1, reduction="mean"),
        lambda r: (r.normal(size=(N, C)), r.uniform(size=(N, C))),
    ),
    "bce_probs": (
        lambda p, y: jl.binary_cross_entropy(p, y, reduction="mean"),
        lambda r: (r.uniform(size=(N, C)), r.uniform(size=(N, C))),
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_no_recompilation(name):
    f, make = CALLS[name]
    traces = []

    @jax.jit
    def step(x, y):
        traces.append(1)  # runs only while tracing
        return jax.value_and_grad(f)(x, y)

    r = np.random.default_rng(1)
    for _ in range(3):
        x, y = make(r)
        step(jnp.asarray(x, jnp.float32), jnp.asarray(y))
    assert len(traces) == 1
    assert step._cache_size() == 1


def test_linear_rule_joint_tangent_gets_every_operand_in_one_call():
    """A tuple key: one tangent call with the differentiated operands' tangents
    (None for the others); values, gradients and jvp equal autodiff of the forward."""
    calls = []

    def forward(x, y):
        return jnp.sum(jnp.sin(x) * y), (x, y)

    def joint(res, args, ds):
        calls.append(tuple(d is None for d in ds))
        x, y = res
        dx, dy = ds
        t = 0.0 if dx is None else jnp.sum(jnp.cos(x) * y * dx)
        return t + (0.0 if dy is None else jnp.sum(jnp.sin(x) * dy))

    f = cm.linear_rule(forward, {(0, 1): joint})
    plain = lambda x, y: jnp.sum(jnp.sin(x) * y)
    x, y = jnp.asarray([0.3, -1.2, 2.0]), jnp.asarray([1.5, 0.5, -2.0])
    for argnums in ((0,), (1,), (0, 1)):
        calls.clear()
        got = jax.grad(f, argnums=argnums)(x, y)
        want = jax.grad(plain, argnums=argnums)(x, y)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
        assert calls == [tuple(i not in argnums for i in (0, 1))], calls
    t = jax.jvp(f, (x, y), (jnp.ones(3), jnp.ones(3)))[1]
    np.testing.assert_allclose(float(t), float(jax.jvp(plain, (x, y), (jnp.ones(3),) * 2)[1]))

"""Regression losses: parity with PyTorch and optax, derivatives, edges, errors.

References: ``torch.nn.functional`` (mse_loss, l1_loss, huber_loss,
smooth_l1_loss, poisson_nll_loss, gaussian_nll_loss) and ``optax.losses``
(squared_error, l2_loss, huber_loss, log_cosh) called side by side in float64;
float64 formulas written in the tests; the MSE worked example of DESIGN.md.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from _helpers import residual_lines, temp_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

import jaxloss

RNG = np.random.default_rng(0)
X = RNG.normal(size=(3, 4)) * 2.0
T = RNG.normal(size=(3, 4)) * 2.0


def _torch_value_and_grads(fn, *arrays):
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


def _jax_value_and_grads(fn, *arrays):
    args = [jnp.asarray(a) for a in arrays]
    out = fn(*args)
    grads = jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=tuple(range(len(args))))(*args)
    return np.asarray(out), [np.asarray(g) for g in grads]


def _assert_parity(ours, ref, *arrays, rtol=1e-12, atol=1e-12):
    v, gs = _jax_value_and_grads(ours, *arrays)
    rv, rgs = _torch_value_and_grads(ref, *arrays)
    np.testing.assert_allclose(v, rv, rtol=rtol, atol=atol)
    for g, rg in zip(gs, rgs, strict=True):
        np.testing.assert_allclose(g, rg, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------
# Worked example and parity
# --------------------------------------------------------------------------


def test_mse_worked_example():
    # DESIGN.md: MSE of [3, -0.5, 2, 7] vs [2.5, 0.0, 2, 8] is 0.375.
    x = jnp.array([3.0, -0.5, 2.0, 7.0])
    t = jnp.array([2.5, 0.0, 2.0, 8.0])
    assert float(jaxloss.squared_error(x, t, reduction="mean")) == pytest.approx(0.375, abs=1e-15)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_torch_parity_elementwise(reduction):
    cases = [
        (
            lambda x, t: jaxloss.squared_error(x, t, reduction=reduction),
            lambda x, t: F.mse_loss(x, t, reduction=reduction),
        ),
        (
            lambda x, t: jaxloss.absolute_error(x, t, reduction=reduction),
            lambda x, t: F.l1_loss(x, t, reduction=reduction),
        ),
    ]
    for delta in (0.5, 1.0, 3.0):
        cases.append(
            (
                lambda x, t, d=delta: jaxloss.huber_loss(x, t, delta=d, reduction=reduction),
                lambda x, t, d=delta: F.huber_loss(x, t, delta=d, reduction=reduction),
            )
        )
    for beta in (0.0, 0.5, 1.0, 2.0):
        cases.append(
            (
                lambda x, t, b=beta: jaxloss.smooth_l1_loss(x, t, beta=b, reduction=reduction),
                lambda x, t, b=beta: F.smooth_l1_loss(x, t, beta=b, reduction=reduction),
            )
        )
    for ours, ref in cases:
        _assert_parity(ours, ref, X, T)


@pytest.mark.parametrize("log_input", [True, False])
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_poisson_nll_torch(log_input, full, reduction):
    rng = np.random.default_rng(41)  # fixed draws, whatever ran before
    x = rng.normal(size=(3, 5)) if log_input else rng.uniform(0.1, 4.0, size=(3, 5))
    t = rng.poisson(2.0, size=(3, 5)).astype(np.float64) + rng.uniform(0, 0.5, size=(3, 5))
    t[0, :3] = [0.0, 1.0, 0.5]  # the Stirling term is masked for t <= 1
    for eps in (1e-8, 0.1):
        ours = lambda x_, t_: jaxloss.poisson_nll_loss(
            x_, t_, log_input=log_input, full=full, eps=eps, reduction=reduction
        )
        ref = lambda x_, t_: F.poisson_nll_loss(
            x_, t_, log_input=log_input, full=full, eps=eps, reduction=reduction
        )
        v, (gx, gt) = _jax_value_and_grads(ours, x, t)
        rv, (rgx, rgt) = _torch_value_and_grads(ref, x, t)
        np.testing.assert_allclose(v, rv, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(gx, rgx, rtol=1e-11, atol=1e-12)
        # torch's target gradient is NaN at t = 0 with full=True (log 0 in the masked
        # Stirling term); ours is the derivative of the unmasked part there.
        nan = np.isnan(rgt)
        assert nan.sum() == (1 if full else 0)
        np.testing.assert_allclose(gt[~nan], rgt[~nan], rtol=1e-11, atol=1e-12)
        plain = -x if log_input else -np.log(x + eps)
        scale = 1.0 / x.size if reduction == "mean" else 1.0
        np.testing.assert_allclose(gt[nan], scale * plain[nan], rtol=1e-12)


@pytest.mark.parametrize("var_shape", [(3, 4), (3,), (3, 1), (1, 4)])
@pytest.mark.parametrize("full", [False, True])
def test_gaussian_nll_torch(var_shape, full):
    rng = np.random.default_rng(42)  # fixed draws, whatever ran before
    var = rng.uniform(0.2, 3.0, size=var_shape)
    for reduction in ("none", "sum", "mean"):
        _assert_parity(
            lambda x, t, v: jaxloss.gaussian_nll_loss(x, t, v, full=full, reduction=reduction),
            lambda x, t, v: F.gaussian_nll_loss(x, t, v, full=full, reduction=reduction),
            X,
            T,
            var,
        )


def test_gaussian_nll_clamp_is_straight_through_like_torch():
    # var below eps (and exactly 0): value at the clamp, gradient passed straight through.
    var = np.array([[1e-9, 0.0, 0.5, 2.0]] * 3)
    _assert_parity(
        lambda x, t, v: jaxloss.gaussian_nll_loss(x, t, v, eps=1e-6),
        lambda x, t, v: F.gaussian_nll_loss(x, t, v, eps=1e-6, reduction="none"),
        X,
        T,
        var,
        rtol=1e-10,
    )


def test_gaussian_nll_scalar_var():
    # A Python float var, as torch accepts.
    ours = jaxloss.gaussian_nll_loss(jnp.asarray(X), jnp.asarray(T), 0.7)
    ref = F.gaussian_nll_loss(torch.tensor(X), torch.tensor(T), 0.7, reduction="none")
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-13)


@pytest.mark.parametrize("with_targets", [True, False])
def test_optax_parity(with_targets):
    t = jnp.asarray(T) if with_targets else None
    x = jnp.asarray(X)
    pairs = [
        (jaxloss.squared_error, optax.losses.squared_error),
        (jaxloss.l2_loss, optax.losses.l2_loss),
        (jaxloss.log_cosh, optax.losses.log_cosh),
        (
            lambda p, q: jaxloss.huber_loss(p, q, delta=0.7),
            lambda p, q: optax.losses.huber_loss(p, q, delta=0.7),
        ),
    ]
    for ours, ref in pairs:
        np.testing.assert_allclose(ours(x, t), ref(x, t), rtol=1e-12, atol=1e-14)
        g = jax.grad(lambda p: jnp.sum(ours(p, t)))(x)
        rg = jax.grad(lambda p: jnp.sum(ref(p, t)))(x)
        np.testing.assert_allclose(g, rg, rtol=1e-12, atol=1e-14)


def test_targets_none_means_zeros():
    x = jnp.asarray(X)
    z = jnp.zeros_like(x)
    for fn in (
        jaxloss.squared_error,
        jaxloss.l2_loss,
        jaxloss.absolute_error,
        jaxloss.huber_loss,
        jaxloss.smooth_l1_loss,
        jaxloss.log_cosh,
    ):
        np.testing.assert_array_equal(fn(x), fn(x, z))


def test_targets_broadcast_and_gradient():
    # targets broadcast to predictions; their gradient is summed back to their shape
    x = jnp.asarray(X)
    t = jnp.asarray(T[0])
    for fn in (jaxloss.huber_loss, jaxloss.log_cosh, jaxloss.squared_error):
        g = jax.grad(lambda t_: jnp.sum(fn(x, t_)))(t)
        rg = jax.grad(lambda t_: jnp.sum(fn(x, jnp.broadcast_to(t_, x.shape))))(t)
        assert g.shape == t.shape
        np.testing.assert_allclose(g, rg, rtol=1e-13)


# --------------------------------------------------------------------------
# Derivatives
# --------------------------------------------------------------------------


def test_check_grads_second_order():
    rng = np.random.default_rng(43)  # fixed draws, whatever ran before
    # Several losses per checked function, so the suite compiles few programs.
    x, t = jnp.asarray(X), jnp.asarray(T)
    var = jnp.asarray(rng.uniform(0.5, 2.0, size=X.shape))
    rate = jnp.asarray(rng.uniform(0.5, 2.0, size=X.shape))
    count = jnp.asarray(rng.uniform(1.5, 4.0, size=X.shape))

    def rules(a, b):  # the custom_jvp losses
        return (
            jaxloss.huber_loss(a, b, delta=1.3, reduction="sum")
            + jaxloss.smooth_l1_loss(a, b, beta=0.8, reduction="mean")
            + jaxloss.log_cosh(a, b, reduction="sum")
        )

    def plain(a, b, r, c, v):
        return (
            jaxloss.squared_error(a, b, reduction="sum")
            + jaxloss.l2_loss(a, b, reduction="mean")
            + jaxloss.absolute_error(a, b, reduction="sum")
            + jaxloss.poisson_nll_loss(a, c, full=True, reduction="sum")
            + jaxloss.poisson_nll_loss(r, c, log_input=False, reduction="sum")
            + jaxloss.gaussian_nll_loss(a, b, v, full=True, reduction="sum")
        )

    def both(a, w, b, r, c, v):
        # the rules near 0 and far out in their linear parts (|w| ~ 100), in one call
        return rules(jnp.concatenate([a, w]), jnp.concatenate([b, b])) + plain(a, b, r, c, v)

    w = 50.0 * x
    check_grads(jax.jit(both), (x, w, t, rate, count, var), order=2, modes=["fwd", "rev"])


def test_log_cosh_second_derivative_at_zero():
    # d^2/dx^2 log cosh x = 1 - tanh(x)^2 = 1 at 0; autodiff of the |x| form gives 0 there.
    h = jax.jit(jax.hessian(lambda v: jaxloss.log_cosh(v, reduction="sum")))(jnp.zeros(3))
    np.testing.assert_allclose(h, np.eye(3), atol=0)
    g = jax.jit(jax.jacfwd(jax.grad(lambda v: jaxloss.log_cosh(v, reduction="sum"))))(
        jnp.array([0.3])
    )
    np.testing.assert_allclose(g, [[1.0 - math.tanh(0.3) ** 2]], rtol=1e-14)


def test_huber_kink():
    d = 1.5
    e = jnp.array([-d, d, 0.0, 2 * d, -2 * d])
    g, h = _elementwise_derivatives(lambda v: jaxloss.huber_loss(v, delta=d))(e)
    np.testing.assert_array_equal(g, [-d, d, 0.0, d, -d])
    np.testing.assert_array_equal(h, [1.0, 1.0, 1.0, 0.0, 0.0])  # PyTorch's backward branch
    # torch's huber_loss gradient at the kink is delta as well
    _, (tg,) = _torch_value_and_grads(
        lambda a: F.huber_loss(a, torch.zeros(5, dtype=a.dtype), delta=d, reduction="none"),
        np.asarray(e),
    )
    np.testing.assert_array_equal(g, tg)


def test_absolute_error_zero_gradient_at_zero():
    g = jax.grad(lambda v: jaxloss.absolute_error(v, reduction="sum"))(jnp.zeros(2))
    np.testing.assert_array_equal(g, [0.0, 0.0])  # sign(0), as torch's l1_loss
    _, (tg,) = _torch_value_and_grads(
        lambda a: F.l1_loss(a, torch.zeros_like(a), reduction="none"), np.zeros(2)
    )
    np.testing.assert_array_equal(g, tg)
    g = jax.grad(lambda v: jaxloss.smooth_l1_loss(v, beta=0.0, reduction="sum"))(jnp.zeros(2))
    np.testing.assert_array_equal(g, [0.0, 0.0])


def test_residuals():
    x = jnp.ones((8,), jnp.float32)
    t = jnp.zeros((8,), jnp.float32)
    # Huber and smooth L1 recompute their slope: the inputs are the only residuals
    for fn in (jaxloss.huber_loss, jaxloss.smooth_l1_loss):
        lines = residual_lines(lambda a, b, f=fn: jnp.sum(f(a, b)), x, t)
        assert lines == ["f32[8] from the argument a", "f32[8] from the argument b"], lines
    # log-cosh recomputes its slope too: the caller's buffers and nothing else
    lines = residual_lines(lambda a, b: jnp.sum(jaxloss.log_cosh(a, b)), x, t)
    assert lines == ["f32[8] from the argument a", "f32[8] from the argument b"], lines


# --------------------------------------------------------------------------
# Edges, dtypes, transforms
# --------------------------------------------------------------------------


def test_log_cosh_extremes_and_precision():
    big = float(np.finfo(np.float32).max)
    x = jnp.array([big, -big, 1e30, -1e30, jnp.inf, -jnp.inf], jnp.float32)
    v = jaxloss.log_cosh(x)
    np.testing.assert_allclose(v[:4], [big - math.log(2)] * 2 + [1e30] * 2, rtol=1e-6)
    assert np.isinf(v[4:]).all()
    g = jax.grad(lambda a: jaxloss.log_cosh(a, reduction="sum"))(x)
    np.testing.assert_array_equal(g, [1, -1, 1, -1, 1, -1])
    # tiny errors: the float32 result is within 4 ulps (4 * 2**-23 relative) of the
    # float64 value; the |x| + log1p(exp(-2|x|)) - log 2 form loses every digit at 1e-4.
    small = np.array([1e-4, 3e-3, -0.2, 0.999, 1.0, 1.7], np.float32)
    ref = np.log(np.cosh(small.astype(np.float64)))
    np.testing.assert_allclose(jaxloss.log_cosh(jnp.asarray(small)), ref, rtol=4 * 2.0**-23)
    a = np.abs(small[:1])
    naive = a + np.log1p(np.exp(-2 * a)) - np.float32(math.log(2))
    assert abs(naive[0] - ref[0]) > 0.5 * ref[0]


def _elementwise_derivatives(fn):
    """jitted (gradient, second derivative) of an elementwise loss, per element."""
    grad = jax.grad(lambda a: jnp.sum(fn(a)))
    return jax.jit(lambda a: (grad(a), jax.jvp(grad, (a,), (jnp.ones_like(a),))[1]))


_SWEEP = {
    delta: [
        _elementwise_derivatives(lambda a, d=delta: jaxloss.huber_loss(a, delta=d)),
        _elementwise_derivatives(lambda a, d=delta: jaxloss.smooth_l1_loss(a, beta=d)),
        _elementwise_derivatives(jaxloss.log_cosh),
    ]
    for delta in (0.01, 1.0, 100.0)
}


_F32_MAX = float(np.finfo(np.float32).max)


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(np.float32, (16,), elements=st.floats(-_F32_MAX, _F32_MAX, width=32)),
    st.sampled_from(sorted(_SWEEP)),
)
def test_huber_log_cosh_finite_sweep(e, delta):
    x = jnp.asarray(e)
    for fn in _SWEEP[delta]:
        g, h = fn(x)
        assert np.isfinite(g).all() and np.isfinite(h).all()
        assert (np.abs(g) <= max(delta, 1.0) * (1 + 1e-6)).all()
    assert np.isfinite(jaxloss.log_cosh(x)).all()
    # delta |e| stays below the float maximum for delta <= 1 (beyond, inf is the true value)
    assert delta > 1 or np.isfinite(jaxloss.huber_loss(x, delta=delta)).all()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(dtype):
    x = jnp.asarray(X, dtype)
    t = jnp.asarray(T, dtype)
    var = jnp.ones(X.shape, dtype)
    fns = [
        lambda a: jaxloss.squared_error(a, t),
        lambda a: jaxloss.l2_loss(a, t),
        lambda a: jaxloss.absolute_error(a, t),
        lambda a: jaxloss.huber_loss(a, t),
        lambda a: jaxloss.smooth_l1_loss(a, t),
        lambda a: jaxloss.log_cosh(a, t),
        lambda a: jaxloss.poisson_nll_loss(a, jnp.abs(t)),
        lambda a: jaxloss.gaussian_nll_loss(a, t, var),
    ]
    for fn in fns:
        v = fn(x)
        assert v.dtype == jnp.float32
        ref = fn(x.astype(jnp.float32))  # same rounded inputs, computed in float32
        np.testing.assert_allclose(v, ref, rtol=1e-6)
        g = jax.grad(lambda a, f=fn: jnp.sum(f(a)))(x)
        assert g.dtype == dtype


def test_reductions_and_jit_vmap():
    x, t = jnp.asarray(X), jnp.asarray(T)
    for fn in (jaxloss.huber_loss, jaxloss.log_cosh, jaxloss.squared_error):
        none = fn(x, t)
        np.testing.assert_allclose(fn(x, t, reduction="sum"), none.sum(), rtol=1e-14)
        np.testing.assert_allclose(fn(x, t, reduction="mean"), none.mean(), rtol=1e-14)
        np.testing.assert_allclose(jax.jit(fn)(x, t), none, rtol=1e-14)
        np.testing.assert_allclose(jax.vmap(fn)(x, t), none, rtol=1e-14)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def test_errors():
    x, t = jnp.asarray(X), jnp.asarray(T)
    with pytest.raises(ValueError, match="targets"):
        jaxloss.squared_error(x, jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="targets"):
        jaxloss.huber_loss(x[0], t)
    with pytest.raises(ValueError, match="delta"):
        jaxloss.huber_loss(x, t, delta=0.0)
    with pytest.raises(ValueError, match="beta"):
        jaxloss.smooth_l1_loss(x, t, beta=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.log_cosh(x, t, reduction="avg")
    with pytest.raises(TypeError, match="predictions"):
        jaxloss.squared_error(jnp.array([1, 2]), jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="var has negative"):
        jaxloss.gaussian_nll_loss(x, t, -jnp.ones(3))
    with pytest.raises(ValueError, match="var with shape"):
        jaxloss.gaussian_nll_loss(x, t, jnp.ones((4,)))
    with pytest.raises(ValueError, match="eps"):
        jaxloss.poisson_nll_loss(x, t, eps=-1.0)
    with pytest.raises(TypeError, match="targets"):
        jaxloss.poisson_nll_loss(x, None)


def test_gaussian_nll_gradient_keeps_no_input_sized_buffer():
    """The rule recomputes ``(x - t) / sqrt(v)`` in the backward pass: value_and_grad
    w.r.t. input, targets and var keeps no [N, C] intermediate (autodiff of the
    formula kept two)."""
    n, c = 256, 2048
    spec = jax.ShapeDtypeStruct((n, c), jnp.float32)
    loss = partial(jaxloss.gaussian_nll_loss, reduction="mean")
    temp = temp_bytes(loss, spec, spec, spec, argnums=(0, 1, 2))
    assert temp < n * c * 4, temp

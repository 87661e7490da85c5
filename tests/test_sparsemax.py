"""sparsemax_loss, multiclass_sparsemax_loss and make_fenchel_young_loss against optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import all_finite, close, rng

import jaxloss

DTYPES = [(jnp.float32, 1e-5), (jnp.float64, 1e-12)]


def _optax_multiclass(z, y):
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int and float inside
        return optax.losses.multiclass_sparsemax_loss(z, y)


def _simplex(z):
    with jax.numpy_dtype_promotion("standard"):
        return jax.vmap(optax.projections.projection_simplex)(z)


def _scores(seed=0, shape=(5, 4), scale=2.0):
    return rng(seed).normal(0.0, scale, shape)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_sparsemax_loss_matches_optax(dtype, tol):
    x = jnp.asarray(np.concatenate([_scores().ravel(), [-1.0, 1.0, 0.0]]), dtype)
    y = jnp.asarray(rng(1).integers(0, 2, x.shape), jnp.int32)
    close(jaxloss.sparsemax_loss(x, y), optax.losses.sparsemax_loss(x, y), tol, tol)
    g = jax.grad(lambda v: jnp.sum(jaxloss.sparsemax_loss(v, y)))(x)
    g_ref = jax.grad(lambda v: jnp.sum(optax.losses.sparsemax_loss(v, y)))(x)
    close(g, g_ref, tol, tol)
    assert g.dtype == dtype


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_multiclass_matches_optax(dtype, tol):
    z = jnp.asarray(_scores(), dtype)
    y = jnp.asarray([0, 1, 2, 3, 1], jnp.int32)
    close(
        jaxloss.multiclass_sparsemax_loss(z, y),
        _optax_multiclass(z, y),
        tol,
        tol,
    )
    g = jax.grad(lambda v: jnp.sum(jaxloss.multiclass_sparsemax_loss(v, y)))(z)
    # optax's projection rule returns float64 tangents for float32 under x64
    z64 = z.astype(jnp.float64)
    g_ref = jax.grad(lambda v: jnp.sum(_optax_multiclass(v, y)))(z64)
    close(g, g_ref, tol, tol)


def test_multiclass_gradient_is_p_minus_onehot():
    z = jnp.asarray(_scores(2), jnp.float64)
    y = jnp.asarray([3, 0, 0, 2, 1], jnp.int32)
    p = _simplex(z)
    g = jax.grad(lambda v: jnp.sum(jaxloss.multiclass_sparsemax_loss(v, y)))(z)
    close(g, p - jax.nn.one_hot(y, 4, dtype=jnp.float64))


@pytest.mark.parametrize("fn", ["sparsemax_loss", "multiclass_sparsemax_loss"])
def test_reductions(fn):
    z = jnp.asarray(_scores(3), jnp.float64)
    y = jnp.asarray([0, 1, 1, 0, 1], jnp.int32)
    if fn == "sparsemax_loss":
        y = jnp.asarray(rng(3).integers(0, 2, z.shape), jnp.int32)
    f = getattr(jaxloss, fn)
    loss = f(z, y)
    close(f(z, y, reduction="sum"), jnp.sum(loss))
    close(f(z, y, reduction="mean"), jnp.mean(loss))
    with pytest.raises(ValueError, match="reduction"):
        f(z, y, reduction="avg")


def test_transforms_multiclass():
    z = jnp.asarray(_scores(4), jnp.float64)
    y = jnp.asarray([0, 1, 2, 3, 0], jnp.int32)
    f = jaxloss.multiclass_sparsemax_loss
    close(jax.jit(f)(z, y), f(z, y))
    close(jax.vmap(f)(z[:, None], y[:, None])[:, 0], f(z, y))
    dz = jnp.asarray(rng(5).normal(size=z.shape))
    _, tan = jax.jvp(lambda v: jnp.sum(f(v, y)), (z,), (dz,))
    close(tan, jnp.vdot(jax.grad(lambda v: jnp.sum(f(v, y)))(z), dz))
    h_fwd = jax.jacfwd(jax.grad(lambda v: f(v, y[0])))(z[0])
    h_rev = jax.hessian(lambda v: f(v, y[0]))(z[0])
    close(h_fwd, h_rev)
    p = _simplex(z[:1])[0]
    s = (p > 0).astype(jnp.float64)  # sparsemax Jacobian: diag(s) - s s^T / |S|
    close(h_rev, jnp.diag(s) - jnp.outer(s, s) / jnp.sum(s))


def test_transforms_binary():
    x = jnp.asarray(_scores(6), jnp.float64)
    y = jnp.asarray(rng(6).integers(0, 2, x.shape), jnp.int32)
    f = jaxloss.sparsemax_loss
    close(jax.jit(f)(x, y), f(x, y))
    close(jax.vmap(f)(x, y), f(x, y))
    dx = jnp.ones_like(x)
    _, tan = jax.jvp(lambda v: jnp.sum(f(v, y)), (x,), (dx,))
    close(tan, jnp.sum(jax.grad(lambda v: jnp.sum(f(v, y)))(x)))


def test_huge_and_masked_scores():
    z = jnp.asarray([[1e30, -1e30, 0.0], [3e38, 3e38, -3e38], [0.0, -jnp.inf, 1.0]], jnp.float32)
    y = jnp.asarray([1, 0, 2], jnp.int32)
    loss, g = jax.value_and_grad(lambda v: jnp.sum(jaxloss.multiclass_sparsemax_loss(v, y)))(z)
    assert all_finite(loss, g)
    close(jaxloss.multiclass_sparsemax_loss(z, y)[1:], [0.25, 0.0], 1e-6, 1e-6)
    # a label on a -inf score: inf (the true value), finite gradient
    on_inf = jnp.asarray([1], jnp.int32)
    val, g = jax.value_and_grad(lambda v: jaxloss.multiclass_sparsemax_loss(v, on_inf)[0])(z[2:])
    assert val == jnp.inf and all_finite(g)
    x = jnp.asarray([1e38, -1e38, 3e38], jnp.float32)
    yb = jnp.asarray([0, 1, 1], jnp.int32)
    assert all_finite(jax.grad(lambda v: jnp.sum(jaxloss.sparsemax_loss(v, yb)))(x))
    close(jaxloss.sparsemax_loss(x, yb), [1e38, 1e38, 0.0], 1e-6, 0.0)


def test_low_precision_returns_float32():
    z = jnp.asarray(_scores(7), jnp.bfloat16)
    y = jnp.asarray([0, 1, 2, 3, 0], jnp.int32)
    out = jaxloss.multiclass_sparsemax_loss(z, y)
    assert out.dtype == jnp.float32
    close(out, jaxloss.multiclass_sparsemax_loss(z.astype(jnp.float32), y), 1e-6, 1e-6)
    g = jax.grad(lambda v: jnp.sum(jaxloss.multiclass_sparsemax_loss(v, y)))(z)
    assert g.dtype == jnp.bfloat16
    assert jaxloss.sparsemax_loss(z, jnp.zeros(z.shape, jnp.int32)).dtype == jnp.float32


def test_bad_inputs():
    z = jnp.zeros((2, 3), jnp.float32)
    with pytest.raises(TypeError, match="scores"):
        jaxloss.multiclass_sparsemax_loss(jnp.zeros((2, 3), jnp.int32), jnp.zeros(2, jnp.int32))
    with pytest.raises(TypeError, match="labels"):
        jaxloss.multiclass_sparsemax_loss(z, jnp.zeros(2, jnp.float32))
    with pytest.raises(ValueError, match="labels"):
        jaxloss.multiclass_sparsemax_loss(z, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        jaxloss.multiclass_sparsemax_loss(z, jnp.asarray([0, -1], jnp.int32))
    with pytest.raises(ValueError, match="logits and labels"):
        jaxloss.sparsemax_loss(z, jnp.zeros(4, jnp.int32))
    with pytest.raises(TypeError, match="logits"):
        jaxloss.sparsemax_loss(jnp.zeros(3, jnp.int32), jnp.zeros(3, jnp.int32))


def test_out_of_range_label_under_jit_is_nan_with_zero_gradient():
    z = jnp.asarray(_scores(8, (2, 3)), jnp.float32)
    y = jnp.asarray([0, 5], jnp.int32)
    f = jax.jit(lambda v, y: jaxloss.multiclass_sparsemax_loss(v, y))
    loss = f(z, y)
    assert jnp.isfinite(loss[0]) and jnp.isnan(loss[1])
    g = jax.grad(lambda v: jnp.where(jnp.asarray([True, False]), f(v, y), 0.0).sum())(z)
    assert all_finite(g) and bool(jnp.all(g[1] == 0))


@pytest.mark.parametrize("max_fun", [jax.nn.logsumexp, jnp.max])
def test_fenchel_young_matches_optax(max_fun):
    z = jnp.asarray(_scores(9, (2, 3, 4)), jnp.float64)
    t = jax.nn.softmax(jnp.asarray(_scores(10, (2, 3, 4)), jnp.float64))
    ours = jaxloss.make_fenchel_young_loss(max_fun)
    ref = optax.losses.make_fenchel_young_loss(max_fun)
    close(ours(z, t), ref(z, t))
    close(jax.grad(lambda v: ours(v, t).sum())(z), jax.grad(lambda v: ref(v, t).sum())(z))
    close(jax.jit(ours)(z, t), ours(z, t))
    _, tan = jax.jvp(lambda v: ours(v, t).sum(), (z,), (jnp.ones_like(z),))
    close(tan, jnp.sum(jax.grad(lambda v: ours(v, t).sum())(z)))
    summed = jaxloss.make_fenchel_young_loss(max_fun, reduction="sum")
    close(summed(z, t), ours(z, t).sum())


def test_fenchel_young_logsumexp_is_cross_entropy_and_checks_shapes():
    z = jnp.asarray(_scores(11), jnp.float32)
    t = jax.nn.one_hot(jnp.asarray([0, 1, 2, 3, 0]), 4, dtype=jnp.float32)
    fy = jaxloss.make_fenchel_young_loss(jax.nn.logsumexp)
    close(fy(z, t), optax.losses.softmax_cross_entropy(z, t), 1e-5, 1e-5)
    close(fy(z, t), fy(z[None], t)[0], 1e-6, 1e-6)  # leading axes broadcast
    with pytest.raises(ValueError, match="last"):
        fy(z, t[:, :3])
    with pytest.raises(TypeError, match="max_fun"):
        jaxloss.make_fenchel_young_loss(3)

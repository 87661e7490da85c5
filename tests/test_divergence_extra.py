"""kl_divergence_with_log_targets, generalized_kl_divergence, convex_kl_divergence vs optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import all_finite, close, rng

import jaxloss

R = rng(0)
LP = jax.nn.log_softmax(jnp.asarray(R.normal(0, 2, (3, 4))))
LT = jax.nn.log_softmax(jnp.asarray(R.normal(0, 2, (3, 4))))
T = jnp.asarray(R.uniform(0.1, 2.0, (3, 4)))  # unnormalized, for the generalized KL
PAIRS = [
    ("kl_divergence_with_log_targets", LP, LT),
    ("generalized_kl_divergence", LP + 0.3, T),
]


@pytest.mark.parametrize("name,lp,t", PAIRS)
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)])
def test_matches_optax(name, lp, t, dtype, tol):
    lp, t = lp.astype(dtype), t.astype(dtype)
    ours, ref = getattr(jaxloss, name), getattr(optax.losses, name)
    close(ours(lp, t), ref(lp, t), tol, tol)
    g = jax.grad(lambda a, b: jnp.sum(ours(a, b)), (0, 1))(lp, t)
    g_ref = jax.grad(lambda a, b: jnp.sum(ref(a, b)), (0, 1))(lp, t)
    close(g[0], g_ref[0], tol, tol)
    close(g[1], g_ref[1], tol, tol)
    where = jnp.asarray(R.uniform(size=lp.shape) < 0.7)
    close(ours(lp, t, where=where), ref(lp, t, where=where), tol, tol)
    close(ours(lp, t, axis=0), ref(lp, t, axis=0), tol, tol)


@pytest.mark.parametrize("name,lp,t", PAIRS)
def test_reductions_and_transforms(name, lp, t):
    f = getattr(jaxloss, name)
    loss = f(lp, t)
    close(f(lp, t, reduction="sum"), jnp.sum(loss))
    close(f(lp, t, reduction="mean"), jnp.mean(loss))
    close(jax.jit(f)(lp, t), loss)
    close(jax.vmap(f)(lp, t), loss)
    s = lambda a: jnp.sum(f(a, t))
    d = jnp.ones_like(lp)
    close(jax.jvp(s, (lp,), (d,))[1], jnp.sum(jax.grad(s)(lp)))
    close(jax.jacfwd(jax.grad(s))(lp).sum(), jax.hessian(s)(lp).sum())


def test_log_targets_batchmean_and_kl_equivalence():
    close(
        jaxloss.kl_divergence_with_log_targets(LP, LT),
        jaxloss.kl_divergence(LP, LT, log_target=True),
    )
    close(
        jaxloss.kl_divergence_with_log_targets(LP, LT, reduction="batchmean"),
        jnp.sum(jaxloss.kl_divergence_with_log_targets(LP, LT)) / 3,
    )


def test_zero_targets_and_minus_inf_no_nan():
    lp = LP.at[0, 1].set(-jnp.inf)
    lt = LT.at[0, 1].set(-jnp.inf)
    v, g = jax.value_and_grad(
        lambda a, b: jnp.sum(jaxloss.kl_divergence_with_log_targets(a, b)), (0, 1)
    )(lp, lt)
    assert all_finite(v, g)
    t = T.at[0, 1].set(0.0)
    v, g = jax.value_and_grad(
        lambda a, b: jnp.sum(jaxloss.generalized_kl_divergence(a, b)), (0, 1)
    )(lp, t)
    assert all_finite(v, g)
    close(g[1][0, 1], -1.0)  # the t log t term contributes 0 at t = 0


def test_convex_kl_warns_and_matches():
    with pytest.warns(DeprecationWarning, match="generalized_kl_divergence"):
        out = jaxloss.convex_kl_divergence(LP, T, reduction="sum")
    close(out, jaxloss.generalized_kl_divergence(LP, T, reduction="sum"))
    with pytest.warns(DeprecationWarning):
        ref = optax.losses.convex_kl_divergence(LP, T)
    with pytest.warns(DeprecationWarning):
        close(jaxloss.convex_kl_divergence(LP, T), ref)


def test_low_precision_and_bad_inputs():
    out = jaxloss.generalized_kl_divergence(LP.astype(jnp.bfloat16), T.astype(jnp.bfloat16))
    assert out.dtype == jnp.float32
    with pytest.raises(TypeError, match="log_targets"):
        jaxloss.kl_divergence_with_log_targets(LP, jnp.zeros((3, 4), jnp.int32))
    with pytest.raises(ValueError, match="same shape"):
        jaxloss.generalized_kl_divergence(LP, T[:, :2])
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.generalized_kl_divergence(LP, T, reduction="batchmean")
    assert np.isfinite(np.asarray(jaxloss.generalized_kl_divergence(LP * 0 + 50.0, T))).all()

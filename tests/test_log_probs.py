"""fused_linear_log_probs against the materialised log-softmax in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss

R = np.random.default_rng(11)
N, D, V = 10, 3, 7
H = jnp.asarray(R.normal(size=(N, D)))
W = jnp.asarray(R.normal(size=(D, V)))
B = jnp.asarray(R.normal(size=V))
Y = jnp.asarray(R.integers(0, V, N))


def _reference(h, w, b, temperature, cap):
    """Materialised: log_softmax of cap tanh((h W + b) / (T cap)), then pick / entropy."""
    x = (h @ w + b[None, :]) / temperature
    s = x if cap is None else cap * jnp.tanh(x / cap)
    lp = jax.nn.log_softmax(s)
    return lp[jnp.arange(N), Y], -jnp.sum(jnp.exp(lp) * lp, axis=-1)


@pytest.mark.parametrize(("temperature", "cap", "chunk"), [(1.0, None, None), (0.7, 2.0, 4)])
def test_values_gradients_and_forward_mode(temperature, cap, chunk):
    def ours(h, w, b):
        return jaxloss.fused_linear_log_probs(
            h, w, Y, bias=b, temperature=temperature, logit_softcap=cap,
            return_entropy=True, chunk_size=chunk,
        )  # fmt: skip

    def weighted(f):
        return lambda h, w, b: jnp.sum(f(h, w, b)[0]) + 0.3 * jnp.sum(f(h, w, b)[1])

    ref = lambda h, w, b: _reference(h, w, b, temperature, cap)

    @jax.jit
    def run(h, w, b):
        both = [ours(h, w, b), ref(h, w, b)]
        grads = [jax.grad(weighted(f), argnums=(0, 1, 2))(h, w, b) for f in (ours, ref)]
        jvps = [jax.jvp(lambda h: weighted(f)(h, w, b), (h,), (jnp.ones_like(h),))[1]
                for f in (ours, ref)]  # fmt: skip
        return both, grads, jvps

    (got, want), (g_got, g_want), (t_got, t_want) = run(H, W, B)
    for a, b in zip((*got, *g_got, t_got), (*want, *g_want, t_want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def test_equals_minus_fused_cross_entropy_and_keeps_no_logits():
    lp = jaxloss.fused_linear_log_probs(H, W, Y, chunk_size=4)
    ce = jaxloss.fused_linear_softmax_cross_entropy(H, W, Y, reduction="none", chunk_size=4)
    np.testing.assert_allclose(np.asarray(lp), -np.asarray(ce), rtol=1e-12)
    n, d, v = 512, 32, 4096
    h = jax.ShapeDtypeStruct((n, d), jnp.float32)
    w = jax.ShapeDtypeStruct((d, v), jnp.float32)
    y = jnp.zeros((n,), jnp.int32)

    def f(h, w):
        lp, ent = jaxloss.fused_linear_log_probs(h, w, y, return_entropy=True)
        return jnp.sum(lp) + jnp.sum(ent)

    compiled = jax.jit(jax.grad(f, argnums=(0, 1))).lower(h, w).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < n * v * 4 / 4


def test_huge_equal_logits_and_bad_input():
    lp, ent = jaxloss.fused_linear_log_probs(
        jnp.array([[1e7]], jnp.float32), jnp.ones((1, 4), jnp.float32), jnp.array([0]),
        return_entropy=True,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(lp), [-np.log(4.0)], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ent), [np.log(4.0)], rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        jaxloss.fused_linear_log_probs(H, W, Y, temperature=0.0)
    with pytest.raises(ValueError, match="labels must lie"):
        jaxloss.fused_linear_log_probs(H, W, Y.at[0].set(V))

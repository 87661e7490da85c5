"""KL divergence: parity with optax and PyTorch, zero targets, masks, derivatives.

References: ``optax.kl_divergence`` and ``optax.kl_divergence_with_log_targets``
(values and gradients, axis, where); ``torch.nn.functional.kl_div``
(reduction "sum", "batchmean", "none" summed over the class axis, log_target)
in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from _helpers import residual_lines
from jax.test_util import check_grads

import jaxloss

RNG = np.random.default_rng(3)
LOGITS = RNG.normal(size=(4, 6))
LP = np.asarray(jax.nn.log_softmax(jnp.asarray(LOGITS)))
T = np.asarray(jax.nn.softmax(jnp.asarray(RNG.normal(size=(4, 6)) * 2.0)))


def _torch_kl(lp, t, reduction, log_target):
    tl = torch.tensor(lp, requires_grad=True)
    tt = torch.tensor(t, requires_grad=True)
    out = F.kl_div(tl, tt, reduction=reduction, log_target=log_target)
    out.sum().backward()
    return out.detach().numpy(), tl.grad.numpy(), tt.grad.numpy()


@pytest.mark.parametrize("log_target", [False, True])
def test_vs_optax(log_target):
    rng = np.random.default_rng(31)  # fixed draws, whatever ran before
    lp = jnp.asarray(LP)
    t = jnp.asarray(np.log(T) if log_target else T)
    ref_fn = (
        optax.losses.kl_divergence_with_log_targets if log_target else optax.losses.kl_divergence
    )
    mask = jnp.asarray(rng.uniform(size=LP.shape) < 0.7)
    for axis, where in ((-1, None), (0, None), (-1, mask)):
        ours = lambda a, b: jaxloss.kl_divergence(
            a, b, axis=axis, where=where, log_target=log_target
        )
        ref = lambda a, b: ref_fn(a, b, axis=axis, where=where)
        np.testing.assert_allclose(ours(lp, t), ref(lp, t), rtol=1e-13, atol=1e-15)
        g = jax.grad(lambda a, b: jnp.sum(ours(a, b)), argnums=(0, 1))(lp, t)
        rg = jax.grad(lambda a, b: jnp.sum(ref(a, b)), argnums=(0, 1))(lp, t)
        for x, r in zip(g, rg, strict=True):
            np.testing.assert_allclose(x, r, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "batchmean", "none"])
def test_vs_torch(log_target, reduction):
    t = np.log(T) if log_target else T
    ref, rg_lp, rg_t = _torch_kl(LP, t, reduction, log_target)
    if reduction == "none":
        ref = ref.sum(-1)  # torch keeps the class axis; ours sums it (optax)
    f = lambda a, b: jaxloss.kl_divergence(a, b, log_target=log_target, reduction=reduction)
    np.testing.assert_allclose(f(jnp.asarray(LP), jnp.asarray(t)), ref, rtol=1e-13, atol=1e-15)
    g_lp, g_t = jax.grad(lambda a, b: jnp.sum(f(a, b)), argnums=(0, 1))(
        jnp.asarray(LP), jnp.asarray(t)
    )
    np.testing.assert_allclose(g_lp, rg_lp, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g_t, rg_t, rtol=1e-13, atol=1e-15)


def test_batchmean_divides_by_first_dim_like_torch():
    rng = np.random.default_rng(32)  # fixed draws, whatever ran before
    # [B, T, C]: torch divides the sum by B = input.size(0), not by B * T.
    lp = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, 3, 5))))
    t = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, 3, 5))))
    ours = jaxloss.kl_divergence(lp, t, reduction="batchmean")
    ref = F.kl_div(torch.tensor(np.asarray(lp)), torch.tensor(np.asarray(t)), reduction="batchmean")
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-13)
    mean = jaxloss.kl_divergence(lp, t, reduction="mean")  # per-example mean: sum / (B * T)
    np.testing.assert_allclose(mean, ref.numpy() * 2 / 6, rtol=1e-13)


def test_zero_targets():
    lp = jnp.array([[-1.0, -2.0, -jnp.inf, -0.5]])
    t = jnp.array([[0.5, 0.0, 0.0, 0.5]])
    v = jaxloss.kl_divergence(lp, t)
    expect = 0.5 * (np.log(0.5) + 1.0) + 0.5 * (np.log(0.5) + 0.5)
    np.testing.assert_allclose(v, [expect], rtol=1e-14)
    g_lp, g_t = jax.grad(lambda a, b: jaxloss.kl_divergence(a, b, reduction="sum"), (0, 1))(lp, t)
    np.testing.assert_array_equal(g_lp, [[-0.5, 0.0, 0.0, -0.5]])
    # d/dt at t > 0 is log t + 1 - lp; at t == 0 it is taken as 0 (torch: NaN)
    np.testing.assert_allclose(g_t, [[np.log(0.5) + 2.0, 0.0, 0.0, np.log(0.5) + 1.5]], rtol=1e-14)
    tv, _, tg_t = _torch_kl(np.asarray(lp), np.asarray(t), "sum", False)
    assert np.isnan(tv) and np.isnan(tg_t[0, 1])  # what we improve on
    # log targets: lt = -inf is a zero target
    lt = jnp.log(t)
    v2 = jaxloss.kl_divergence(lp, lt, log_target=True)
    np.testing.assert_allclose(v2, v, rtol=1e-14)
    g2 = jax.grad(
        lambda a, b: jaxloss.kl_divergence(a, b, log_target=True, reduction="sum"), (0, 1)
    )(lp, lt)
    assert np.isfinite(g2[0]).all() and np.isfinite(g2[1]).all()
    np.testing.assert_array_equal(g2[1][0, 1:3], [0.0, 0.0])
    # and second derivatives stay finite
    h = jax.jit(jax.hessian(lambda b: jaxloss.kl_divergence(lp, b, reduction="sum")))(t)
    assert np.isfinite(h).all()


def test_positive_target_on_minus_inf_prediction_is_inf():
    lp = jnp.array([[-jnp.inf, 0.0]])
    t = jnp.array([[0.5, 0.5]])
    assert np.isposinf(jaxloss.kl_divergence(lp, t)[0])
    g = jax.grad(lambda a: jaxloss.kl_divergence(a, t, reduction="sum"))(lp)
    np.testing.assert_array_equal(g, [[-0.5, -0.5]])


def test_where_equals_dropping_elements_and_mean_counts_rows():
    lp, t = jnp.asarray(LP), jnp.asarray(T)
    mask = np.ones(LP.shape, bool)
    mask[0, :2] = False
    mask[2, :] = False  # a row with nothing allowed
    v = jaxloss.kl_divergence(lp, t, where=jnp.asarray(mask))
    for i in range(LP.shape[0]):
        keep = mask[i]
        np.testing.assert_allclose(
            v[i],
            jaxloss.kl_divergence(lp[i][keep], t[i][keep]) if keep.any() else 0.0,
            rtol=1e-14,
        )
    mean = jaxloss.kl_divergence(lp, t, where=jnp.asarray(mask), reduction="mean")
    np.testing.assert_allclose(mean, v.sum() / 3, rtol=1e-14)  # the empty row does not count
    none_allowed = jnp.zeros(LP.shape, bool)
    f = lambda a: jaxloss.kl_divergence(a, t, where=none_allowed, reduction="mean")
    assert float(f(lp)) == 0.0
    np.testing.assert_array_equal(jax.grad(f)(lp), np.zeros(LP.shape))


def test_axis_and_transforms():
    lp, t = jnp.asarray(LP), jnp.asarray(T)
    ref = jaxloss.kl_divergence(lp, t)
    np.testing.assert_allclose(jaxloss.kl_divergence(lp.T, t.T, axis=0), ref, rtol=1e-14)
    np.testing.assert_allclose(jax.vmap(jaxloss.kl_divergence)(lp, t), ref, rtol=1e-14)
    np.testing.assert_allclose(jax.jit(jaxloss.kl_divergence)(lp, t), ref, rtol=1e-14)


def test_check_grads():
    rng = np.random.default_rng(33)  # fixed draws, whatever ran before
    mask = jnp.asarray(rng.uniform(size=(2, 6)) < 0.8)

    def f(a, b):
        return jaxloss.kl_divergence(a, b, where=mask, reduction="sum") + jaxloss.kl_divergence(
            a, jnp.log(b), log_target=True, reduction="batchmean"
        )

    def plain(a, b):  # the float64 formula under autodiff
        lb = jnp.log(b)
        return jnp.sum(jnp.where(mask, b * (lb - a), 0.0)) + jnp.sum(b * (lb - a)) / 2

    # finite differences need targets away from 0 (the curvature in t is 1/t)
    lp = jnp.asarray(LP[:2])
    t = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, 6)) * 0.5))
    check_grads(jax.jit(f), (lp, t), order=2, modes=["fwd", "rev"])
    # down to small targets, the Hessian equals autodiff of the plain formula
    t_small = jnp.asarray(T[:2])
    h = jax.jit(jax.hessian(f, (0, 1)))(lp, t_small)
    r = jax.jit(jax.hessian(plain, (0, 1)))(lp, t_small)
    for hi, ri in zip(jax.tree.leaves(h), jax.tree.leaves(r), strict=True):
        np.testing.assert_allclose(hi, ri, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(dtype):
    lp, t = jnp.asarray(LP, dtype), jnp.asarray(T, dtype)
    f = jax.jit(lambda a, b: jaxloss.kl_divergence(a, b))
    v = f(lp, t)
    assert v.dtype == jnp.float32
    np.testing.assert_allclose(v, f(lp.astype(jnp.float32), t.astype(jnp.float32)), rtol=1e-6)
    g = jax.jit(jax.grad(lambda a, b: jnp.sum(f(a, b)), argnums=(0, 1)))(lp, t)
    assert g[0].dtype == dtype and g[1].dtype == dtype


def test_residuals_are_the_inputs():
    lp = jnp.zeros((4, 7), jnp.float32)
    t = jnp.full((4, 7), 1 / 7, jnp.float32)
    lines = residual_lines(lambda a, b: jaxloss.kl_divergence(a, b, reduction="sum"), lp, t)
    assert lines == ["f32[4,7] from the argument a", "f32[4,7] from the argument b"], lines


def test_errors():
    lp, t = jnp.asarray(LP), jnp.asarray(T)
    with pytest.raises(ValueError, match="same shape"):
        jaxloss.kl_divergence(lp, t[:, :3])
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.kl_divergence(lp, t, reduction="avg")
    with pytest.raises(TypeError, match="where"):
        jaxloss.kl_divergence(lp, t, where=jnp.ones(LP.shape))
    with pytest.raises(ValueError, match="where"):
        jaxloss.kl_divergence(lp, t, where=jnp.ones((3,), bool))
    with pytest.raises(TypeError, match="targets"):
        jaxloss.kl_divergence(lp, jnp.ones(LP.shape, jnp.int32))
    with pytest.raises(ValueError, match="axis"):
        jaxloss.kl_divergence(lp, t, axis=2)
    with pytest.raises(TypeError, match="log_target"):
        jaxloss.kl_divergence(lp, t, log_target=1)

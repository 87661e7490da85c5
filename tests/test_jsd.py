"""Generalised Jensen-Shannon divergence against float64 numpy and TRL's torch formula."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import all_finite, close, rng, tt

import jaxloss


def _log_softmax(x):
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def _jsd_np(lp, lt, beta):
    """GKD eq. 1: beta KL(t || m) + (1 - beta) KL(p || m), m = beta t + (1 - beta) p."""
    p, t = np.exp(lp), np.exp(lt)
    m = beta * t + (1 - beta) * p
    return np.sum(beta * t * np.log(t / m) + (1 - beta) * p * np.log(p / m), axis=-1)


def _jsd_torch(lp, lt, beta):
    """TRL ``GKDTrainer.generalized_jsd_loss`` (student = lp, teacher = lt), per row."""
    if beta == 0:
        return F.kl_div(lp, lt, reduction="none", log_target=True).sum(-1)
    if beta == 1:
        return F.kl_div(lt, lp, reduction="none", log_target=True).sum(-1)
    b = torch.tensor(beta, dtype=lp.dtype)
    m = torch.logsumexp(torch.stack([lp + torch.log1p(-b), lt + torch.log(b)]), dim=0)
    kl_t = F.kl_div(m, lt, reduction="none", log_target=True)
    kl_s = F.kl_div(m, lp, reduction="none", log_target=True)
    return (b * kl_t + (1 - b) * kl_s).sum(-1)


def _inputs(shape=(4, 5), seed=0):
    g = rng(seed)
    return _log_softmax(g.normal(0, 2, shape)), _log_softmax(g.normal(0, 2, shape))


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_values_and_gradients_match_trl(beta):
    lp, lt = _inputs()
    got = jaxloss.jensen_shannon_divergence(jnp.asarray(lp), jnp.asarray(lt), beta=beta)
    tp, tq = tt(lp, grad=True), tt(lt, grad=True)
    want = _jsd_torch(tp, tq, beta)
    close(got, want.detach().numpy())
    if 0 < beta < 1:
        close(got, _jsd_np(lp, lt, beta))
    want.sum().backward()
    f = lambda a, b: jnp.sum(jaxloss.jensen_shannon_divergence(a, b, beta=beta))
    ga, gb = jax.grad(f, argnums=(0, 1))(jnp.asarray(lp), jnp.asarray(lt))
    close(ga, tp.grad.numpy())
    close(gb, tq.grad.numpy())


def test_symmetric_at_half_and_bounded():
    lp, lt = map(jnp.asarray, _inputs())
    a = jaxloss.jensen_shannon_divergence(lp, lt)
    close(a, jaxloss.jensen_shannon_divergence(lt, lp))
    assert bool(jnp.all(a <= np.log(2) + 1e-12)) and bool(jnp.all(a >= 0))
    # swapping the sides is the same as beta -> 1 - beta
    close(
        jaxloss.jensen_shannon_divergence(lp, lt, beta=0.3),
        jaxloss.jensen_shannon_divergence(lt, lp, beta=0.7),
    )


@pytest.mark.parametrize("reduction", ["sum", "mean", "batchmean"])
def test_reductions(reduction):
    lp, lt = _inputs((3, 2, 5))
    per = _jsd_np(lp, lt, 0.4)
    want = {"sum": per.sum(), "mean": per.mean(), "batchmean": per.sum() / 3}[reduction]
    got = jaxloss.jensen_shannon_divergence(
        jnp.asarray(lp), jnp.asarray(lt), beta=0.4, reduction=reduction
    )
    close(got, want)


def test_axis_and_where():
    lp, lt = _inputs((5, 3))
    got = jaxloss.jensen_shannon_divergence(jnp.asarray(lp), jnp.asarray(lt), axis=0)
    close(got, _jsd_np(lp.T, lt.T, 0.5))
    mask = np.array([True, False, True])
    got = jaxloss.jensen_shannon_divergence(
        jnp.asarray(lp), jnp.asarray(lt), where=jnp.asarray(mask), beta=0.3
    )
    close(got, _jsd_np(lp[:, mask], lt[:, mask], 0.3))
    rows = jnp.array([True, False, True, True, False])  # per example: rows 1, 4 do not count
    mean = jaxloss.jensen_shannon_divergence(
        jnp.asarray(lp), jnp.asarray(lt), where=rows, reduction="mean"
    )
    close(mean, _jsd_np(lp[[0, 2, 3]], lt[[0, 2, 3]], 0.5).mean())


def test_neg_inf_and_masked_finite():
    ninf = -jnp.inf
    lp = jnp.array([[np.log(0.5), np.log(0.5), ninf], [0.0, ninf, ninf]])
    lt = jnp.array([[ninf, np.log(0.25), np.log(0.75)], [0.0, ninf, ninf]])
    mask = jnp.array([[True, True, True], [True, True, False]])
    for beta in (0.5, 0.2, jnp.float64(0.7)):
        f = lambda a, b: jnp.sum(jaxloss.jensen_shannon_divergence(a, b, beta=beta, where=mask))
        val, grads = jax.value_and_grad(f, argnums=(0, 1))(lp, lt)
        hess = jax.jit(jax.hessian(f))(lp, lt)
        assert all_finite(val, grads, hess)
        b = float(beta)
        # row 0 by hand; row 1 identical distributions: 0
        p, t = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.25, 0.75])
        m = b * t + (1 - b) * p
        with np.errstate(divide="ignore", invalid="ignore"):
            want = np.nansum(b * t * np.log(t / m)) + np.nansum((1 - b) * p * np.log(p / m))
        close(val, want)
    # at the endpoints the KL directions are infinite here, the true value
    assert np.isinf(jaxloss.jensen_shannon_divergence(lp, lt, beta=0.0)[0])
    assert np.isinf(jaxloss.jensen_shannon_divergence(lp, lt, beta=1.0)[0])


def test_traced_beta_jit_vmap_jvp():
    lp, lt = map(jnp.asarray, _inputs())
    betas = jnp.array([0.0, 0.25, 0.5, 1.0])
    f = jax.jit(jax.vmap(lambda b: jaxloss.jensen_shannon_divergence(lp, lt, beta=b)))
    got = f(betas)
    for i, b in enumerate([0.0, 0.25, 0.5, 1.0]):
        close(got[i], jaxloss.jensen_shannon_divergence(lp, lt, beta=b))
    # traced endpoints keep gradients finite even with -inf log-probabilities
    lp2 = lp.at[0, 0].set(-jnp.inf)
    g = jax.jit(jax.grad(lambda b, a: jnp.sum(jaxloss.jensen_shannon_divergence(a, lt, beta=b)),
                         argnums=(0, 1)))  # fmt: skip
    assert all_finite(g(jnp.float64(0.5), lp2))
    # jvp in beta against a central difference
    h = lambda b: jnp.sum(jaxloss.jensen_shannon_divergence(lp, lt, beta=b))
    _, dv = jax.jvp(h, (jnp.float64(0.3),), (jnp.float64(1.0),))
    close(dv, (h(0.3 + 1e-6) - h(0.3 - 1e-6)) / 2e-6, rtol=1e-6)


def test_low_precision_and_bad_input():
    lp, lt = (jnp.asarray(x, jnp.bfloat16) for x in _inputs())
    out = jaxloss.jensen_shannon_divergence(lp, lt)
    assert out.dtype == jnp.float32
    with pytest.raises(ValueError, match="same shape"):
        jaxloss.jensen_shannon_divergence(lp, lt[:, :3])
    with pytest.raises(ValueError, match=r"beta must be <= 1\.0"):
        jaxloss.jensen_shannon_divergence(lp, lt, beta=1.5)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        jaxloss.jensen_shannon_divergence(lp, lt, beta=-0.1)
    with pytest.raises(ValueError, match="reduction must be one of"):
        jaxloss.jensen_shannon_divergence(lp, lt, reduction="avg")

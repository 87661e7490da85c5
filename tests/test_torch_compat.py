"""PyTorch's options under optax's names, called side by side with torch 2.13."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxloss

R = np.random.default_rng(3)
X = R.normal(size=(5, 4))
T = np.exp(R.normal(size=(5, 4)))
T /= T.sum(-1, keepdims=True)
W = R.uniform(0.5, 2.0, size=4)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_probability_cross_entropy_with_class_weight(reduction, eps):
    xt = torch.tensor(X, requires_grad=True)
    tt = torch.tensor(T, requires_grad=True)
    want = F.cross_entropy(xt, tt, weight=torch.tensor(W), reduction=reduction,
                           label_smoothing=eps)  # fmt: skip
    want.sum().backward()

    def f(x, t):
        return jaxloss.softmax_cross_entropy(
            x, t, weight=jnp.asarray(W), label_smoothing=eps, reduction=reduction
        )

    got = jax.jit(f)(jnp.asarray(X), jnp.asarray(T))
    gx, gt = jax.grad(lambda x, t: f(x, t).sum(), argnums=(0, 1))(jnp.asarray(X), jnp.asarray(T))
    np.testing.assert_allclose(np.asarray(got), want.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(gx), xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(gt), tt.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_probability_cross_entropy_weight_is_validated():
    with pytest.raises(ValueError, match="weight must have shape"):
        jaxloss.softmax_cross_entropy(jnp.asarray(X), jnp.asarray(T), weight=jnp.ones(3))

"""Hinge losses: parity with PyTorch and optax, derivatives, edges, errors.

References: ``torch.nn.functional.multi_margin_loss`` (the multi-class loss,
and the binary hinge as its two-class case: scores ``[-s/2, s/2]`` and target
``(y + 1) / 2`` give ``max(0, m - y s) / 2``); ``optax.hinge_loss``
(``margin=1``); the hinge worked example of DESIGN.md.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from jax.experimental import checkify
from jax.test_util import check_grads

import jaxloss

RNG = np.random.default_rng(2)
S = RNG.normal(size=(5, 4)) * 2.0
Y_PM = np.where(RNG.uniform(size=(5, 4)) < 0.5, -1.0, 1.0)
SC = RNG.normal(size=(6, 5)) * 1.5
YC = RNG.integers(0, 5, size=6)


def torch_binary_hinge(scores, labels, margin, p):
    # two-class MultiMarginLoss: sum over the one wrong class, divided by C = 2
    s = scores.reshape(-1)
    two = torch.stack([-s / 2, s / 2], dim=-1)
    target = ((labels.reshape(-1) + 1) / 2).long()
    out = 2 * F.multi_margin_loss(two, target, p=p, margin=margin, reduction="none")
    return out.reshape(scores.shape)


def test_hinge_worked_example():
    # DESIGN.md: hinge of labels [-1, 1, 1, -1] vs scores [-1.5, 1.2, 0.9, -0.8] is 0.075
    # (the mean of max(0, 1 - y s) = [0, 0, 0.1, 0.2]).
    s = jnp.array([-1.5, 1.2, 0.9, -0.8])
    y = jnp.array([-1, 1, 1, -1])
    assert float(jaxloss.hinge_loss(s, y, reduction="mean")) == pytest.approx(0.075, abs=1e-15)
    np.testing.assert_allclose(jaxloss.hinge_loss(s, y), [0.0, 0.0, 0.1, 0.2], atol=1e-15)


@pytest.mark.parametrize("margin", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("squared", [False, True])
def test_binary_vs_torch(margin, squared):
    fn = jaxloss.squared_hinge_loss if squared else jaxloss.hinge_loss
    x, y = jnp.asarray(S), jnp.asarray(Y_PM)
    v = fn(x, y, margin=margin)
    g = jax.grad(lambda a: fn(a, y, margin=margin, reduction="sum"))(x)
    ts = torch.tensor(S, requires_grad=True)
    ref = torch_binary_hinge(ts, torch.tensor(Y_PM), margin, 2 if squared else 1)
    ref.sum().backward()
    np.testing.assert_allclose(v, ref.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g, ts.grad.numpy(), rtol=1e-13, atol=1e-15)
    for reduction, red in (("sum", np.sum), ("mean", np.mean)):
        np.testing.assert_allclose(
            fn(x, y, margin=margin, reduction=reduction), red(ref.detach().numpy()), rtol=1e-13
        )


def test_binary_vs_optax():
    x, y = jnp.asarray(S), jnp.asarray(Y_PM)
    np.testing.assert_allclose(jaxloss.hinge_loss(x, y), optax.hinge_loss(x, y), rtol=1e-14)
    g = jax.grad(lambda a: jaxloss.hinge_loss(a, y, reduction="sum"))(x)
    og = jax.grad(lambda a: optax.hinge_loss(a, y).sum())(x)
    np.testing.assert_allclose(g, og, rtol=1e-14)  # no score sits on the kink here


def test_kink_has_zero_slope_like_torch():
    x = jnp.array([1.0, -1.0, 0.5])
    y = jnp.array([1.0, -1.0, -1.0])  # the first two sit exactly on the kink
    for fn, p in ((jaxloss.hinge_loss, 1), (jaxloss.squared_hinge_loss, 2)):
        g = jax.grad(lambda a, f=fn: f(a, y, margin=1.0, reduction="sum"))(x)
        ts = torch.tensor(np.asarray(x), requires_grad=True)
        torch_binary_hinge(ts, torch.tensor(np.asarray(y)), 1.0, p).sum().backward()
        np.testing.assert_array_equal(g[:2], [0.0, 0.0])
        np.testing.assert_allclose(g, ts.grad.numpy(), rtol=1e-14)
    # optax's hinge (jnp.maximum) gives half the slope at the kink
    og = jax.grad(lambda a: optax.hinge_loss(a, y).sum())(x)
    np.testing.assert_allclose(og[:2], [-0.5, 0.5])


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", [1.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_multiclass_vs_torch(p, margin, weighted):
    rng = np.random.default_rng(21)  # fixed draws, whatever ran before
    w = rng.uniform(0.2, 3.0, size=5) if weighted else None
    x, y = jnp.asarray(SC), jnp.asarray(YC)
    jw = None if w is None else jnp.asarray(w)
    tw = None if w is None else torch.tensor(w)
    for reduction in ("none", "sum", "mean"):
        ts = torch.tensor(SC, requires_grad=True)
        ref = F.multi_margin_loss(
            ts, torch.tensor(YC), p=p, margin=margin, weight=tw, reduction=reduction
        )
        ref.sum().backward()
        f = lambda a, r=reduction: jaxloss.multi_margin_loss(
            a, y, margin=margin, p=p, weight=jw, reduction=r
        )
        np.testing.assert_allclose(f(x), ref.detach().numpy(), rtol=1e-13, atol=1e-15)
        g = jax.grad(lambda a: jnp.sum(f(a)))(x)
        np.testing.assert_allclose(g, ts.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_multiclass_mean_divides_by_examples_like_torch():
    # torch: weight rescales each example; "mean" divides by N, not by sum(w[y]).
    x = jnp.array([[0.1, 0.2, 0.4, 0.8], [1.0, -1.0, 0.5, 0.0]])
    y = jnp.array([3, 0])
    w = jnp.array([1.0, 2.0, 3.0, 4.0])
    none = jaxloss.multi_margin_loss(x, y, weight=w)
    np.testing.assert_allclose(none, [1.3, 0.125], rtol=1e-14)  # 4 * (0.3+0.4+0.6)/4, ...
    mean = jaxloss.multi_margin_loss(x, y, weight=w, reduction="mean")
    assert float(mean) == pytest.approx(0.7125, abs=1e-14)


def test_multiclass_batch_shapes_and_transforms():
    x, y = jnp.asarray(SC), jnp.asarray(YC)
    ref = jaxloss.multi_margin_loss(x, y)
    # a single example [C] with a scalar label, as torch allows
    np.testing.assert_allclose(jaxloss.multi_margin_loss(x[0], y[0]), ref[0], rtol=1e-14)
    # leading batch dims
    np.testing.assert_allclose(
        jaxloss.multi_margin_loss(x.reshape(2, 3, 5), y.reshape(2, 3)),
        ref.reshape(2, 3),
        rtol=1e-14,
    )
    np.testing.assert_allclose(jax.vmap(jaxloss.multi_margin_loss)(x, y), ref, rtol=1e-14)
    np.testing.assert_allclose(jax.jit(jaxloss.multi_margin_loss)(x, y), ref, rtol=1e-14)


def test_check_grads():
    rng = np.random.default_rng(22)  # fixed draws, whatever ran before
    # random float64 points are off every kink with probability one
    x, y = jnp.asarray(S[:3]), jnp.asarray(Y_PM[:3])
    xc, yc = jnp.asarray(SC[:3]), jnp.asarray(YC[:3])
    w = jnp.asarray(rng.uniform(0.5, 2.0, 5))

    def f(a, b, sc, ww):
        return (
            jaxloss.hinge_loss(a, y, margin=0.7, reduction="sum")
            + jaxloss.squared_hinge_loss(a, b, reduction="mean")
            + jaxloss.multi_margin_loss(sc, yc, p=1, weight=ww, reduction="sum")
            + jaxloss.multi_margin_loss(sc, yc, p=2, margin=2.0, reduction="mean")
        )

    check_grads(jax.jit(f), (x, y, xc, w), order=2, modes=["fwd", "rev"])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision(dtype):
    x = jnp.asarray(S, dtype)
    y = jnp.asarray(Y_PM)
    xc = jnp.asarray(SC, dtype)
    yc = jnp.asarray(YC)

    def f(a, b):
        return (
            jaxloss.hinge_loss(a, y),
            jaxloss.squared_hinge_loss(a, y),
            jaxloss.multi_margin_loss(b, yc, p=2),
        )

    outs = jax.jit(f)(x, xc)
    refs = jax.jit(f)(x.astype(jnp.float32), xc.astype(jnp.float32))
    for o, r in zip(outs, refs, strict=True):
        assert o.dtype == jnp.float32
        np.testing.assert_allclose(o, r, rtol=1e-6)
    g = jax.jit(jax.grad(lambda a, b: sum(jnp.sum(o) for o in f(a, b)), argnums=(0, 1)))(x, xc)
    assert g[0].dtype == dtype and g[1].dtype == dtype


def test_extremes_are_finite():
    big = float(np.finfo(np.float32).max)
    x = jnp.array([big, -big, 1e30, -1e30, 0.0], jnp.float32)
    y = jnp.array([1, 1, -1, -1, 1])
    v = jaxloss.hinge_loss(x, y)
    np.testing.assert_array_equal(v, np.array([0.0, big, 1e30, 0.0, 1.0], np.float32))
    g = jax.grad(lambda a: jaxloss.hinge_loss(a, y, reduction="sum"))(x)
    np.testing.assert_array_equal(g, [0.0, -1.0, 1.0, 0.0, -1.0])
    sc = jnp.array([[1e30, -1e30, 0.0], [0.0, -jnp.inf, 1.0]], jnp.float32)
    gm = jax.grad(lambda a: jaxloss.multi_margin_loss(a, jnp.array([1, 0]), reduction="sum"))(sc)
    assert np.isfinite(gm).all()


def test_labels_out_of_range():
    x = jnp.asarray(SC)
    with pytest.raises(ValueError, match="labels must lie"):
        jaxloss.multi_margin_loss(x, jnp.asarray(YC).at[0].set(5))
    with pytest.raises(ValueError, match="never wraps"):
        jaxloss.multi_margin_loss(x, jnp.asarray(YC).at[0].set(-1))
    f = jax.jit(jaxloss.multi_margin_loss)
    out = f(x, jnp.asarray(YC).at[0].set(9))
    assert np.isnan(out[0]) and np.isfinite(out[1:]).all()
    err, _ = checkify.checkify(f, errors=checkify.user_checks)(x, jnp.asarray(YC).at[0].set(9))
    assert err.get() is not None and "out of range" in err.get()


def test_errors():
    x, y = jnp.asarray(S), jnp.asarray(Y_PM)
    with pytest.raises(ValueError, match="-1 or 1"):
        jaxloss.hinge_loss(x, jnp.zeros_like(y))
    with pytest.raises(ValueError, match="-1 or 1"):
        jaxloss.squared_hinge_loss(x, (y + 1) / 2)
    # optax's argument names: predictor_outputs, targets
    with pytest.raises(ValueError, match="targets"):
        jaxloss.hinge_loss(x, y[:, :2])
    with pytest.raises(TypeError, match="targets"):
        jaxloss.hinge_loss(x, y > 0)
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.hinge_loss(x, y, reduction="batchmean")
    with pytest.raises(TypeError, match="predictor_outputs"):
        jaxloss.hinge_loss(jnp.ones((2,), jnp.int32), jnp.ones((2,)))
    xc, yc = jnp.asarray(SC), jnp.asarray(YC)
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        jaxloss.multi_margin_loss(xc, yc, p=3)
    with pytest.raises(ValueError, match="weight"):
        jaxloss.multi_margin_loss(xc, yc, weight=jnp.ones(4))
    with pytest.raises(ValueError, match="labels must have the shape"):
        jaxloss.multi_margin_loss(xc, yc[:3])
    with pytest.raises(TypeError, match="labels"):
        jaxloss.multi_margin_loss(xc, yc.astype(jnp.float64))
    # traced labels are not checked: under jit the loss is computed as given
    assert jax.jit(jaxloss.hinge_loss)(x, jnp.zeros_like(y)).shape == x.shape

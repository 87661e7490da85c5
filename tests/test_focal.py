"""Focal losses: parity with optax and torchvision's formula, derivatives, edges.

References: ``optax.sigmoid_focal_loss`` called side by side; torchvision's
``sigmoid_focal_loss`` body written out in torch float64 (torchvision is not a
dependency); the softmax focal loss as the float64 formula
``-alpha_y (1 - p_y)^gamma log p_y`` in torch; ``torch.nn.functional.cross_entropy``
for ``gamma=0``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from _helpers import residual_lines
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.experimental import checkify
from jax.test_util import check_grads

import jaxloss

RNG = np.random.default_rng(1)
X = RNG.normal(size=(4, 6)) * 3.0
Y_HARD = RNG.integers(0, 2, size=(4, 6)).astype(np.float64)
Y_SOFT = RNG.uniform(size=(4, 6))


def torchvision_sigmoid_focal(inputs, targets, alpha, gamma):
    # torchvision.ops.sigmoid_focal_loss (v0.19), reduction="none"; alpha=None -> no weighting
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha is not None:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss


def torch_softmax_focal(logits, labels, alpha, gamma, ignore_index=None):
    # -alpha_y (1 - p_y)^gamma log p_y, rows with ignore_index give 0
    valid = torch.ones_like(labels, dtype=torch.bool)
    if ignore_index is not None:
        valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    logp = F.log_softmax(logits, dim=-1).gather(-1, safe[:, None])[:, 0]
    loss = -((1 - logp.exp()) ** gamma) * logp
    if alpha is not None:
        loss = loss * (alpha[safe] if alpha.ndim else alpha)
    return torch.where(valid, loss, torch.zeros_like(loss))


# --------------------------------------------------------------------------
# Sigmoid focal loss
# --------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("alpha", [None, 0.25, 0.9])
def test_sigmoid_vs_optax_and_torchvision(gamma, alpha):
    x = jnp.asarray(X)
    for y_np in (Y_HARD, Y_SOFT):
        y = jnp.asarray(y_np)
        ours = jaxloss.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma)
        np.testing.assert_allclose(
            ours, optax.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma), rtol=1e-12, atol=1e-15
        )
        gx, gy = jax.grad(
            lambda a, b: jaxloss.sigmoid_focal_loss(
                a, b, alpha=alpha, gamma=gamma, reduction="sum"
            ),
            argnums=(0, 1),
        )(x, y)
        ogx = jax.grad(lambda a: optax.sigmoid_focal_loss(a, y, alpha=alpha, gamma=gamma).sum())(x)
        np.testing.assert_allclose(gx, ogx, rtol=1e-11, atol=1e-14)

        tx = torch.tensor(X, requires_grad=True)
        ty = torch.tensor(y_np, requires_grad=True)
        ref = torchvision_sigmoid_focal(tx, ty, alpha, gamma)
        ref.sum().backward()
        np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-11, atol=1e-14)
        # label derivatives too, also exactly at the hard labels 0 and 1
        np.testing.assert_allclose(gy, ty.grad.numpy(), rtol=1e-11, atol=1e-13)


def test_sigmoid_reductions_and_transforms():
    x, y = jnp.asarray(X), jnp.asarray(Y_SOFT)
    none = jaxloss.sigmoid_focal_loss(x, y, alpha=0.3)
    np.testing.assert_allclose(
        jaxloss.sigmoid_focal_loss(x, y, alpha=0.3, reduction="mean"), none.mean(), rtol=1e-14
    )
    np.testing.assert_allclose(
        jaxloss.sigmoid_focal_loss(x, y, alpha=0.3, reduction="sum"), none.sum(), rtol=1e-14
    )
    f = lambda a, b: jaxloss.sigmoid_focal_loss(a, b, alpha=0.3)
    np.testing.assert_allclose(jax.jit(f)(x, y), none, rtol=1e-14)
    np.testing.assert_allclose(jax.vmap(f)(x, y), none, rtol=1e-14)
    # labels as int and bool give the float result
    yi = jnp.asarray(Y_HARD.astype(np.int32))
    np.testing.assert_allclose(
        jaxloss.sigmoid_focal_loss(x, yi), jaxloss.sigmoid_focal_loss(x, jnp.asarray(Y_HARD))
    )
    np.testing.assert_allclose(
        jaxloss.sigmoid_focal_loss(x, yi.astype(bool)),
        jaxloss.sigmoid_focal_loss(x, jnp.asarray(Y_HARD)),
    )


def test_sigmoid_check_grads():
    rng = np.random.default_rng(11)  # fixed draws, whatever ran before
    x = jnp.asarray(X[:2])
    yh, ys = jnp.asarray(Y_HARD[:2]), jnp.asarray(Y_SOFT[:2])
    alpha = jnp.asarray(rng.uniform(0.1, 0.9, size=(2, 6)))

    def f(a, b, al):
        # one rule instance: hard labels (logit derivatives only) stacked on soft,
        # differentiated labels and alpha; gamma < 1
        labels = jnp.concatenate([yh, b])
        alphas = jnp.concatenate([jnp.full_like(al, 0.25), al])
        both = jnp.concatenate([a, a])
        return jaxloss.sigmoid_focal_loss(both, labels, gamma=0.5, alpha=alphas, reduction="sum")

    check_grads(jax.jit(f), (x, ys, alpha), order=2, modes=["fwd", "rev"])


def _f64_sigmoid_focal(x, y, gamma):
    # float64 log-space reference for hard labels: sp(-z) sigmoid(-z)^gamma, z = (2y - 1) x
    z = (2 * y - 1) * x
    return np.logaddexp(0, -z) * np.exp(gamma * -np.logaddexp(0, z))


_SIG_SWEEP = {
    gamma: jax.jit(
        lambda a, y, g_=gamma: (
            jaxloss.sigmoid_focal_loss(a, y, gamma=g_),
            jax.grad(lambda b: jaxloss.sigmoid_focal_loss(b, y, gamma=g_, reduction="sum"))(a),
            jax.jvp(
                jax.grad(lambda b: jaxloss.sigmoid_focal_loss(b, y, gamma=g_, reduction="sum")),
                (a,),
                (jnp.ones_like(a),),
            )[1],
        )
    )
    for gamma in (0.0, 0.3, 0.7, 2.0)
}


@pytest.mark.parametrize("gamma", [0.3, 0.7, 2.0])
def test_sigmoid_extremes_float32(gamma):
    xs = np.array([1e4, -1e4, 1e30, -1e30, 30.0, -30.0, 0.0, 5.0], np.float32)
    x = np.concatenate([xs, xs])
    y = np.repeat(np.array([0.0, 1.0], np.float32), 8)
    # value, gradient and second derivative per element, jitted
    v, g, h = _SIG_SWEEP[gamma](jnp.asarray(x), jnp.asarray(y))
    ref = _f64_sigmoid_focal(x.astype(np.float64), y.astype(np.float64), gamma)
    # below float32's smallest normal number the result is flushed to 0
    np.testing.assert_allclose(v, ref, rtol=2e-6, atol=float(np.finfo(np.float32).tiny))
    assert np.isfinite(g).all() and np.isfinite(h).all()
    # saturated limits: a confident right answer has slope 0, a confident wrong one +-1
    wrong = np.where(y == 0.0, x > 0, x < 0)
    far = np.abs(x) >= 1e4
    np.testing.assert_array_equal(
        np.asarray(g)[far & wrong], np.where(y == 0, 1.0, -1.0)[far & wrong]
    )
    np.testing.assert_array_equal(np.asarray(g)[far & ~wrong], 0.0)
    # and the full Hessian of a few of them
    f = lambda a: jaxloss.sigmoid_focal_loss(a, jnp.asarray(y[:4]), gamma=gamma, reduction="sum")
    assert np.isfinite(jax.jit(jax.hessian(f))(jnp.asarray(x[:4]))).all()


def test_sigmoid_infinite_logits():
    x = jnp.array([jnp.inf, -jnp.inf, jnp.inf, -jnp.inf], jnp.float32)
    y = jnp.array([1.0, 0.0, 0.0, 1.0], jnp.float32)
    v = jaxloss.sigmoid_focal_loss(x, y, gamma=2.0)
    np.testing.assert_array_equal(v, [0.0, 0.0, np.inf, np.inf])
    g = jax.grad(lambda a: jaxloss.sigmoid_focal_loss(a, y, gamma=2.0, reduction="sum"))(x)
    np.testing.assert_array_equal(g, [0.0, 0.0, 1.0, -1.0])


_F32_MAX = float(np.finfo(np.float32).max)


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(np.float32, (16,), elements=st.floats(-_F32_MAX, _F32_MAX, width=32)),
    hnp.arrays(np.float32, (16,), elements=st.sampled_from([0.0, 1.0, 0.5, 0.1])),
    st.sampled_from(sorted(_SIG_SWEEP)),
)
def test_sigmoid_finite_sweep(x, y, gamma):
    v, g, h = _SIG_SWEEP[gamma](jnp.asarray(x), jnp.asarray(y))
    assert np.isfinite(v).all() and np.isfinite(g).all() and np.isfinite(h).all()
    # where torchvision's formula is reliable in float64, the float32 slope agrees with it
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    torchvision_sigmoid_focal(tx, torch.tensor(y.astype(np.float64)), None, gamma).sum().backward()
    moderate = np.abs(x) < 50
    np.testing.assert_allclose(
        np.asarray(g)[moderate], tx.grad.numpy()[moderate], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_sigmoid_low_precision(dtype):
    x = jnp.asarray(X, dtype)
    y = jnp.asarray(Y_SOFT, dtype)
    f = jax.jit(lambda a, b: jaxloss.sigmoid_focal_loss(a, b, alpha=0.25))
    v = f(x, y)
    assert v.dtype == jnp.float32
    np.testing.assert_allclose(v, f(x.astype(jnp.float32), y.astype(jnp.float32)), rtol=1e-6)
    g = jax.jit(jax.grad(lambda a: jaxloss.sigmoid_focal_loss(a, y, reduction="sum")))(x)
    assert g.dtype == dtype


def test_sigmoid_residuals_are_the_inputs():
    x = jnp.ones((8,), jnp.float32)
    y = jnp.zeros((8,), jnp.float32)
    lines = residual_lines(
        lambda a, b: jaxloss.sigmoid_focal_loss(a, b, alpha=0.25, reduction="sum"), x, y
    )
    arrays = [ln for ln in lines if not ln.startswith("f32[] ")]  # scalars (alpha) aside
    assert arrays == ["f32[8] from the argument a", "f32[8] from the argument b"], lines


def test_sigmoid_errors():
    x, y = jnp.asarray(X), jnp.asarray(Y_HARD)
    with pytest.raises(ValueError, match="gamma"):
        jaxloss.sigmoid_focal_loss(x, y, gamma=-1.0)
    with pytest.raises(ValueError, match="labels"):
        jaxloss.sigmoid_focal_loss(x, y[:, :3])
    with pytest.raises(ValueError, match="alpha"):
        jaxloss.sigmoid_focal_loss(x, y, alpha=1.5)
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.sigmoid_focal_loss(x, y, reduction="batchmean")
    with pytest.raises(TypeError, match="logits"):
        jaxloss.sigmoid_focal_loss(jnp.asarray(Y_HARD.astype(np.int32)), y)


# --------------------------------------------------------------------------
# Softmax focal loss
# --------------------------------------------------------------------------

XS = RNG.normal(size=(6, 5)) * 2.0
YS = RNG.integers(0, 5, size=6)


def test_softmax_gamma_zero_is_cross_entropy():
    x, y = jnp.asarray(XS), jnp.asarray(YS)
    ours = jaxloss.softmax_focal_loss(x, y, gamma=0.0)
    np.testing.assert_allclose(
        ours, jaxloss.softmax_cross_entropy_with_integer_labels(x, y), rtol=1e-14, atol=1e-15
    )
    tx = torch.tensor(XS, requires_grad=True)
    ref = F.cross_entropy(tx, torch.tensor(YS), reduction="none")
    ref.sum().backward()
    np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-14)
    g = jax.grad(lambda a: jaxloss.softmax_focal_loss(a, y, gamma=0.0, reduction="sum"))(x)
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha_kind", ["none", "scalar", "per_class"])
def test_softmax_vs_torch_formula(gamma, alpha_kind):
    rng = np.random.default_rng(13)  # fixed draws, whatever ran before
    alpha = {"none": None, "scalar": np.float64(0.3), "per_class": rng.uniform(0.1, 2, 5)}[
        alpha_kind
    ]
    labels = YS.copy()
    labels[1] = -100
    x, y = jnp.asarray(XS), jnp.asarray(labels)
    a = None if alpha is None else jnp.asarray(alpha)
    tx = torch.tensor(XS, requires_grad=True)
    ta = None if alpha is None else torch.tensor(alpha)
    ref = torch_softmax_focal(tx, torch.tensor(labels), ta, gamma, ignore_index=-100)
    ref.sum().backward()
    ours = jaxloss.softmax_focal_loss(x, y, alpha=a, gamma=gamma, ignore_index=-100)
    np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-12, atol=1e-15)
    g = jax.grad(
        lambda v: jaxloss.softmax_focal_loss(
            v, y, alpha=a, gamma=gamma, ignore_index=-100, reduction="sum"
        )
    )(x)
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-11, atol=1e-14)
    # mean over the rows that are not ignored; alpha does not renormalise
    mean = jaxloss.softmax_focal_loss(
        x, y, alpha=a, gamma=gamma, ignore_index=-100, reduction="mean"
    )
    np.testing.assert_allclose(mean, ref.detach().numpy().sum() / 5, rtol=1e-12)


def test_softmax_axis_and_vmap():
    x, y = jnp.asarray(XS), jnp.asarray(YS)
    ref = jaxloss.softmax_focal_loss(x, y, gamma=1.5)
    np.testing.assert_allclose(
        jaxloss.softmax_focal_loss(x.T, y, gamma=1.5, axis=0), ref, rtol=1e-14
    )
    np.testing.assert_allclose(
        jax.vmap(lambda a, b: jaxloss.softmax_focal_loss(a, b, gamma=1.5))(x, y), ref, rtol=1e-14
    )
    np.testing.assert_allclose(
        jax.jit(lambda a, b: jaxloss.softmax_focal_loss(a, b, gamma=1.5))(x, y), ref, rtol=1e-14
    )


def test_softmax_check_grads():
    rng = np.random.default_rng(14)  # fixed draws, whatever ran before
    x, y = jnp.asarray(XS[:3]), jnp.asarray(YS[:3])
    alpha = jnp.asarray(rng.uniform(0.1, 2.0, 5))

    def f(a, al):
        return jaxloss.softmax_focal_loss(a, y, alpha=al, gamma=0.5, reduction="sum")

    check_grads(jax.jit(f), (x, alpha), order=2, modes=["fwd", "rev"])


def _f64_softmax_focal(rows, labels, gamma):
    # float64, with 1 - p_y = sum of the other classes' probabilities and
    # log p_y = -log(1 + sum_{c != y} exp(x_c - x_y)), so nothing cancels
    out = []
    for row, y in zip(rows.astype(np.float64), labels, strict=True):
        others = np.logaddexp.reduce(np.delete(row, y))
        log_p = -np.logaddexp(0.0, others - row[y])
        log_1mp = others - np.logaddexp(row[y], others)
        out.append(-np.exp(gamma * log_1mp) * log_p)
    return np.array(out)


@pytest.mark.parametrize("gamma", [0.25, 2.0])
def test_softmax_extremes_float32(gamma):
    rows = np.array(
        [
            [1e4, 0.0, -1e4],
            [1e4, 0.0, -1e4],
            [1e4, 0.0, -1e4],
            [1e30, -1e30, 0.0],
            [0.0, -np.inf, 1.0],
            [-np.inf, 0.0, 1.0],
            [30.0, -30.0, -30.0],
        ],
        np.float32,
    )
    labels = jnp.array([0, 1, 2, 1, 0, 0, 0])
    x = jnp.asarray(rows)
    f = lambda a: jaxloss.softmax_focal_loss(a, labels, gamma=gamma, reduction="sum")
    v, g, h = jax.jit(
        lambda a: (
            jaxloss.softmax_focal_loss(a, labels, gamma=gamma),
            jax.grad(f)(a),
            jax.hessian(f)(a),
        )
    )(x)
    ref = _f64_softmax_focal(rows, np.asarray(labels), gamma)
    # below float32's smallest normal number the result is flushed to 0
    np.testing.assert_allclose(v, ref, rtol=2e-6, atol=float(np.finfo(np.float32).tiny))
    assert np.isfinite(g).all() and np.isfinite(h).all()
    np.testing.assert_array_equal(g[4, 1], 0.0)  # -inf logit: zero gradient
    np.testing.assert_allclose(g[5], [-1.0, 1 / (1 + np.e), np.e / (1 + np.e)], rtol=1e-6)
    if gamma != 0.25:
        return
    # one class: loss 0, gradient 0, Hessian finite
    one = jnp.array([[3.0]], jnp.float32)
    f1 = lambda a: jaxloss.softmax_focal_loss(a, jnp.array([0]), gamma=gamma, reduction="sum")
    assert float(f1(one)) == 0.0 and float(jax.grad(f1)(one)[0, 0]) == 0.0
    assert np.isfinite(jax.jit(jax.hessian(f1))(one)).all()


def test_softmax_confident_row_keeps_precision():
    # 1 - p_y comes from the other classes' logsumexp, not from 1 - exp(log p_y).
    row = np.zeros((1, 1000))
    row[0, 0] = 20.0
    y = jnp.array([0])
    ref = torch_softmax_focal(torch.tensor(row), torch.tensor([0]), None, 2.0).numpy()
    ours32 = jaxloss.softmax_focal_loss(jnp.asarray(row, jnp.float32), y, gamma=2.0)
    np.testing.assert_allclose(ours32, ref, rtol=1e-5)
    naive32 = torch_softmax_focal(
        torch.tensor(row, dtype=torch.float32), torch.tensor([0]), None, 2.0
    )
    assert abs(naive32.numpy()[0] / ref[0] - 1) > 1e-3  # the plain formula in float32 is off


def test_softmax_all_ignored_mean_is_zero():
    x = jnp.asarray(XS)
    y = jnp.full((6,), -1)
    f = lambda a: jaxloss.softmax_focal_loss(a, y, ignore_index=-1, reduction="mean")
    assert float(f(x)) == 0.0
    np.testing.assert_array_equal(jax.grad(f)(x), np.zeros_like(XS))


def test_softmax_bad_labels():
    x = jnp.asarray(XS)
    with pytest.raises(ValueError, match="labels must lie"):
        jaxloss.softmax_focal_loss(x, jnp.asarray(YS).at[0].set(5))
    with pytest.raises(ValueError, match="never wraps"):
        jaxloss.softmax_focal_loss(x, jnp.asarray(YS).at[0].set(-1))
    f = jax.jit(lambda a, b: jaxloss.softmax_focal_loss(a, b))
    out = f(x, jnp.asarray(YS).at[0].set(7))
    assert np.isnan(out[0]) and np.isfinite(out[1:]).all()
    err, _ = checkify.checkify(f, errors=checkify.user_checks)(x, jnp.asarray(YS).at[0].set(7))
    assert err.get() is not None and "out of range" in err.get()


@pytest.mark.parametrize("alpha", [None, 0.25, "per_class"])
def test_softmax_out_of_range_label_has_zero_gradient(alpha):
    """DESIGN.md: under ``jit`` an out-of-range row's loss is NaN and its gradient
    0, so masking the loss (``jnp.where(mask, loss, 0)``) trains cleanly; the
    other rows are PyTorch's. Forward mode agrees (finite tangents, 0 on the row)."""
    x = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [1.5, -0.5, 0.3]])
    labels = jnp.array([0, -1, 2])
    keep = jnp.array([True, False, True])  # the mask a padded batch applies
    a = jnp.array([0.5, 2.0, 1.5]) if alpha == "per_class" else alpha
    gamma = jnp.float64(2.0)  # traced: the general path, differentiable in gamma

    def f(v, y, g):
        return jaxloss.softmax_focal_loss(v, y, alpha=a, gamma=g)

    def masked(v, y, g, keep):
        return jnp.sum(jnp.where(keep, f(v, y, g), 0.0))

    def run(v, y, g, keep):
        loss, (gx, gg) = f(v, y, g), jax.grad(masked, argnums=(0, 2))(v, y, g, keep)
        _, tangent = jax.jvp(lambda w: f(w, y, g), (v,), (jnp.ones_like(v),))
        return loss, gx, gg, tangent

    loss, gx, gg, tangent = jax.jit(run)(jnp.asarray(x), labels, gamma, keep)
    # reference: PyTorch on the rows in range
    ok = np.array([0, 2])
    tx = torch.tensor(x[ok], requires_grad=True)
    ta = None if a is None else torch.tensor(np.asarray(a, np.float64))
    ref = torch_softmax_focal(tx, torch.tensor([0, 2]), ta, 2.0)
    ref.sum().backward()
    assert np.isnan(loss[1])
    np.testing.assert_allclose(loss[ok], ref.detach().numpy(), rtol=1e-12)
    np.testing.assert_array_equal(gx[1], np.zeros(3))
    np.testing.assert_allclose(gx[ok], tx.grad.numpy(), rtol=1e-11, atol=1e-14)
    assert np.isfinite(gg)
    np.testing.assert_array_equal(tangent[1], 0.0)
    np.testing.assert_allclose(tangent[ok], tx.grad.numpy().sum(-1), atol=1e-12)
    # eagerly the labels are concrete: the same call raises instead
    with pytest.raises(ValueError, match="never wraps"):
        run(jnp.asarray(x), labels, gamma, keep)
    # eager, labels in range: the same numbers
    eager = run(jnp.asarray(x[ok]), labels[ok], gamma, keep[ok])
    np.testing.assert_allclose(eager[0], ref.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(eager[1], tx.grad.numpy(), rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_softmax_low_precision(dtype):
    x = jnp.asarray(XS, dtype)
    y = jnp.asarray(YS)
    f = jax.jit(lambda a: jaxloss.softmax_focal_loss(a, y))
    v = f(x)
    assert v.dtype == jnp.float32
    np.testing.assert_allclose(v, f(x.astype(jnp.float32)), rtol=1e-6)
    g = jax.jit(jax.grad(lambda a: jaxloss.softmax_focal_loss(a, y, reduction="sum")))(x)
    assert g.dtype == dtype


def test_softmax_residuals():
    x = jnp.ones((4, 7), jnp.float32)
    y = jnp.array([0, 1, 2, 3])
    lines = residual_lines(lambda a: jaxloss.softmax_focal_loss(a, y, reduction="sum"), x)
    big = [ln for ln in lines if "[4,7]" in ln]
    assert big == ["f32[4,7] from the argument a"], lines
    # plus the labels and three per-row scalars: the margin and the other classes'
    # (S', log_sum') kept apart, so that 1 - p_y stays exact for huge logits
    assert len(lines) <= 5, lines


def test_softmax_errors():
    x, y = jnp.asarray(XS), jnp.asarray(YS)
    with pytest.raises(ValueError, match="gamma"):
        jaxloss.softmax_focal_loss(x, y, gamma=-0.5)
    with pytest.raises(TypeError, match="labels"):
        jaxloss.softmax_focal_loss(x, y.astype(jnp.float64))
    with pytest.raises(ValueError, match="labels must have the shape"):
        jaxloss.softmax_focal_loss(x, y[:3])
    with pytest.raises(ValueError, match="alpha"):
        jaxloss.softmax_focal_loss(x, y, alpha=jnp.ones(4))
    with pytest.raises(ValueError, match="alpha"):
        jaxloss.softmax_focal_loss(x, y, alpha=-0.1)
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.softmax_focal_loss(x, y, reduction="avg")

"""ctc_loss and ctc_loss_with_forward_probs against optax and torch.nn.functional.ctc_loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from _helpers import all_finite, close, rng, tt

import jaxloss

B, T, K, N = 3, 6, 5, 3
IN_LEN = np.array([6, 4, 2])
TGT_LEN = np.array([3, 2, 2])  # the third target needs 3 frames (a repeat): infeasible


def _case(seed=0):
    r = rng(seed)
    x = r.normal(0.0, 1.5, (B, T, K))
    y = r.integers(1, K, (B, N))
    y[0, 1] = y[0, 0]  # a repeated label
    y[2, :2] = 4  # a repeat that cannot fit in 2 frames
    xpad = (np.arange(T)[None] >= IN_LEN[:, None]).astype(np.float32)
    ypad = (np.arange(N)[None] >= TGT_LEN[:, None]).astype(np.float32)
    return x, y.astype(np.int32), xpad, ypad


def _optax_ctc(*args, **kw):
    with jax.numpy_dtype_promotion("standard"):
        return optax.losses.ctc_loss_with_forward_probs(*args, **kw)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.float64, 1e-10)])
def test_matches_optax_values_tables_and_gradients(dtype, tol):
    x, y, xpad, ypad = _case()
    args = (
        jnp.asarray(x, dtype),
        jnp.asarray(xpad, dtype),
        jnp.asarray(y),
        jnp.asarray(ypad, dtype),
    )

    @jax.jit  # one compiled program for both libraries (eager calls compile op by op)
    def run(*args):
        ours = jaxloss.ctc_loss_with_forward_probs(*args)
        ref = _optax_ctc(*args)
        # the infeasible row's loss is ~1e5: float32 and optax's float64 differ there
        g = jax.grad(lambda v: jnp.sum(jaxloss.ctc_loss(v, *args[1:])[:2]))(args[0])
        g_ref = jax.grad(lambda v: jnp.sum(_optax_ctc(v, *args[1:])[0][:2]))(args[0])
        return ours, ref, jaxloss.ctc_loss(*args), g, g_ref

    ours, ref, loss, g, g_ref = run(*args)
    for a, b in zip(ours, ref, strict=True):
        close(a, b, tol, tol * 10)
    close(loss, ref[0], tol, tol * 10)
    close(g, g_ref, tol, tol)
    assert g.dtype == dtype


def _torch_ctc(x, y, reduction, zero_infinity):
    xt = tt(x, grad=True)
    lp = torch.log_softmax(xt, -1).transpose(0, 1)
    loss = torch.nn.functional.ctc_loss(
        lp,
        tt(y),
        tt(IN_LEN),
        tt(TGT_LEN),
        blank=0,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )
    if zero_infinity or reduction == "none":
        total = loss.sum() if reduction == "none" else loss
        (total if zero_infinity else loss[:2].sum()).backward()
    return loss.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_matches_torch(reduction, zero_infinity):
    x, y, xpad, ypad = _case(1)
    if not zero_infinity and reduction != "none":
        pytest.skip("the infeasible row makes torch's reduction inf")
    kw = {"log_epsilon": -jnp.inf, "reduction": reduction, "zero_infinity": zero_infinity}
    args = (jnp.asarray(x), jnp.asarray(xpad), jnp.asarray(y), jnp.asarray(ypad))
    want, g_want = _torch_ctc(x, y, reduction, zero_infinity)

    def f(v):
        loss = jaxloss.ctc_loss(v, *args[1:], **kw)
        return loss, (jnp.sum(loss) if zero_infinity else jnp.sum(loss[:2]))

    loss = f(args[0])[0]
    close(loss, want, 1e-10, 1e-10)
    g = jax.grad(lambda v: f(v)[1])(args[0])
    rows = slice(None) if zero_infinity else slice(0, 2)  # torch: NaN on the inf row
    close(g[rows], g_want[rows], 1e-9, 1e-10)


def test_impossible_alignment_is_inf_or_optax_finite():
    x, y, xpad, ypad = _case(2)
    args = (jnp.asarray(x), jnp.asarray(xpad), jnp.asarray(y), jnp.asarray(ypad))
    exact = jaxloss.ctc_loss(*args, log_epsilon=-jnp.inf)
    approx = jaxloss.ctc_loss(*args)
    assert exact[2] == jnp.inf and 1e4 < approx[2] < 1e6
    close(exact[:2], approx[:2])
    # default log_epsilon with zero_infinity zeroes the infeasible row too
    assert jaxloss.ctc_loss(*args, zero_infinity=True)[2] == 0.0
    g = jax.grad(lambda v: jnp.sum(jaxloss.ctc_loss(v, *args[1:], log_epsilon=-jnp.inf)))(args[0])
    assert all_finite(g)


def test_minus_inf_logits_no_nan():
    x, y, xpad, ypad = _case(3)
    x[:, :, 3] = -np.inf  # a class that is never allowed
    y = np.where(y == 3, 1, y).astype(np.int32)
    args = (jnp.asarray(x), jnp.asarray(xpad), jnp.asarray(y), jnp.asarray(ypad))
    loss, g = jax.value_and_grad(lambda v: jnp.sum(jaxloss.ctc_loss(v, *args[1:])[:2]))(args[0])
    assert all_finite(loss, g)
    finite = np.where(np.isinf(x), -1e9, x)
    close(jaxloss.ctc_loss(*args)[:2], jaxloss.ctc_loss(jnp.asarray(finite), *args[1:])[:2])
    # target uses the masked class: inf with log_epsilon=-inf, finite gradient
    y2 = y.copy()
    y2[0, 0] = 3
    f = lambda v: jaxloss.ctc_loss(v, args[1], jnp.asarray(y2), args[3], log_epsilon=-jnp.inf)[0]
    val, g = jax.value_and_grad(f)(args[0])
    assert val == jnp.inf and not np.isnan(np.asarray(g)).any()


def test_transforms_and_traced_log_epsilon():
    x, y, xpad, ypad = _case(4)
    args = (jnp.asarray(x), jnp.asarray(xpad), jnp.asarray(y), jnp.asarray(ypad))
    f = jaxloss.ctc_loss
    close(jax.jit(f)(*args), f(*args))
    close(jax.jit(lambda e: f(*args, log_epsilon=e))(-1e5), f(*args))
    close(jax.vmap(lambda *a: f(*(v[None] for v in a))[0])(*args), f(*args))
    dx = jnp.asarray(rng(5).normal(size=x.shape))
    s = lambda v: jnp.sum(f(v, *args[1:])[:2])
    _, tan = jax.jvp(s, (args[0],), (dx,))
    close(tan, jnp.vdot(jax.grad(s)(args[0]), dx), 1e-9, 1e-9)


def test_low_precision_returns_float32():
    x, y, xpad, ypad = _case(5)
    xb = jnp.asarray(x, jnp.bfloat16)
    out = jaxloss.ctc_loss(xb, jnp.asarray(xpad), jnp.asarray(y), jnp.asarray(ypad))
    assert out.dtype == jnp.float32
    g = jax.grad(lambda v: jnp.sum(jaxloss.ctc_loss(v, xpad, y, ypad)[:2]))(xb)
    assert g.dtype == jnp.bfloat16


def test_bad_inputs():
    x, y, xpad, ypad = (jnp.asarray(a) for a in _case())
    with pytest.raises(ValueError, match="logits"):
        jaxloss.ctc_loss(x[0], xpad, y, ypad)
    with pytest.raises(ValueError, match="logit_paddings"):
        jaxloss.ctc_loss(x, xpad[:, :2], y, ypad)
    with pytest.raises(ValueError, match="label_paddings"):
        jaxloss.ctc_loss(x, xpad, y, ypad[:, :2])
    with pytest.raises(TypeError, match="labels"):
        jaxloss.ctc_loss(x, xpad, y.astype(jnp.float32), ypad)
    with pytest.raises(ValueError, match="blank_id"):
        jaxloss.ctc_loss(x, xpad, y, ypad, blank_id=K)
    with pytest.raises(ValueError, match="labels must lie"):
        jaxloss.ctc_loss(x, xpad, y.at[0, 0].set(K), ypad)
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.ctc_loss(x, xpad, y, ypad, reduction="avg")
    with pytest.raises(TypeError, match="zero_infinity"):
        jaxloss.ctc_loss(x, xpad, y, ypad, zero_infinity=1)
    # a padded label may hold anything
    jaxloss.ctc_loss(x, xpad, y.at[1, 2].set(-1), ypad)
    bad = jax.jit(jaxloss.ctc_loss)(x, xpad, y.at[0, 0].set(K), ypad)
    assert jnp.isnan(bad[0]) and jnp.isfinite(bad[1])

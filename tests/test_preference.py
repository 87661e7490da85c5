"""Preference losses (DPO and variants, SimPO, ORPO) against float64 formulas
written from the papers and against PyTorch compositions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import all_finite, close, rng, tt

import jaxloss

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")


def _np_logsig(x):
    return -np.logaddexp(0.0, -x)


def _np_reduce(loss, reduction):
    return {"none": loss, "sum": np.sum(loss), "mean": np.mean(loss)}[reduction]


def _t_reduce(loss, reduction):
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


def _dpo_np(pc, pr, rc, rr, beta, loss_type, eps):
    """Rafailov et al. eq. 7 with Mitchell's conservative smoothing; IPO eq. 17;
    hinge; robust DPO (Chowdhury et al. eq. 4)."""
    h = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        return -(1 - eps) * _np_logsig(beta * h) - eps * _np_logsig(-beta * h)
    if loss_type == "hinge":
        return np.maximum(0.0, 1 - beta * h)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    return (-(1 - eps) * _np_logsig(beta * h) + eps * _np_logsig(-beta * h)) / (1 - 2 * eps)


def _dpo_torch(pc, pr, rc, rr, beta, loss_type, eps):
    """The same four losses as TRL's ``DPOTrainer.dpo_loss`` computes them."""
    logits = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps
    if loss_type == "robust":
        return (-F.logsigmoid(beta * logits) * (1 - eps) + F.logsigmoid(-beta * logits) * eps) / (
            1 - 2 * eps
        )
    if loss_type == "hinge":
        return torch.relu(1 - beta * logits)
    return (logits - 1 / (2 * beta)) ** 2


def _logps(n=6, seed=0):
    g = rng(seed)
    return [g.uniform(-40.0, -5.0, n) for _ in range(4)]


def _eps(loss_type):
    return {"sigmoid": 0.1, "robust": 0.2}.get(loss_type, 0.0)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_dpo_values_and_gradients(loss_type, reduction):
    xs = _logps()
    beta, eps = 0.3, _eps(loss_type)
    kw = {"beta": beta, "loss_type": loss_type, "label_smoothing": eps, "reduction": reduction}
    got = jaxloss.dpo_loss(*map(jnp.asarray, xs), **kw)
    close(got, _np_reduce(_dpo_np(*xs, beta, loss_type, eps), reduction))
    # gradients w.r.t. all four inputs against torch autograd of the TRL formula
    ts = [tt(x, grad=True) for x in xs]
    _t_reduce(_dpo_torch(*ts, beta, loss_type, eps), reduction).sum().backward()
    loss = lambda *a: jnp.sum(jaxloss.dpo_loss(*a, **kw))
    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*map(jnp.asarray, xs))
    for g, t in zip(grads, ts, strict=True):
        close(g, t.grad.numpy())


def test_dpo_label_smoothing_zero_is_plain_dpo_and_robust_agrees():
    xs = list(map(jnp.asarray, _logps()))
    plain = jaxloss.dpo_loss(*xs, beta=0.5, reduction="none")
    close(plain, -_np_logsig(0.5 * ((xs[0] - xs[1]) - (xs[2] - xs[3]))))
    close(jaxloss.dpo_loss(*xs, beta=0.5, loss_type="robust", reduction="none"), plain)
    # conservative DPO with eps differs from robust DPO with eps
    a = jaxloss.dpo_loss(*xs, beta=0.5, label_smoothing=0.2, reduction="none")
    b = jaxloss.dpo_loss(*xs, beta=0.5, label_smoothing=0.2, loss_type="robust", reduction="none")
    assert not np.allclose(a, b)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_dpo_traced_hyperparameters_jit_vmap_jvp(loss_type):
    xs = list(map(jnp.asarray, _logps()))
    eps0 = _eps(loss_type)

    def f(beta, eps):
        kw = {"label_smoothing": eps} if loss_type in ("sigmoid", "robust") else {}
        return jaxloss.dpo_loss(*xs, beta=beta, loss_type=loss_type, **kw)

    betas, epss = jnp.array([0.1, 0.5, 2.0]), jnp.array([0.0, eps0, eps0 / 2])
    got = jax.jit(jax.vmap(f))(betas, epss)
    want = [np.mean(_dpo_np(*map(np.asarray, xs), float(b), loss_type, float(e)))
            for b, e in zip(betas, epss, strict=True)]  # fmt: skip
    close(got, want)
    # jvp in beta against a central difference
    _, dv = jax.jvp(lambda b: f(b, jnp.float64(eps0)), (jnp.float64(0.3),), (jnp.float64(1.0),))
    d = 1e-6
    fd = (f(0.3 + d, eps0) - f(0.3 - d, eps0)) / (2 * d)
    close(dv, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_dpo_extreme_margins_finite(loss_type):
    big = jnp.array([1e4, -1e4, 0.0], jnp.float32)
    zero = jnp.zeros(3, jnp.float32)
    f = lambda pc: jaxloss.dpo_loss(
        pc, zero, zero, zero, beta=1.0, loss_type=loss_type, label_smoothing=_eps(loss_type)
    )
    val, g = jax.jit(jax.value_and_grad(f))(big)
    h = jax.jit(jax.hessian(f))(big)
    assert all_finite(val, g, h)
    if loss_type == "sigmoid":  # -log sigmoid(-1e4) = 1e4 exactly to rounding
        ref = _dpo_np(np.array([1e4, -1e4, 0.0]), 0, 0, 0, 1.0, "sigmoid", 0.1)
        close(val, np.mean(ref), rtol=1e-6)


def test_dpo_low_precision_in_float32():
    xs = [jnp.asarray(x, jnp.bfloat16) for x in _logps()]
    out = jaxloss.dpo_loss(*xs)
    assert out.dtype == jnp.float32
    g = jax.grad(lambda a: jaxloss.dpo_loss(a, *xs[1:]))(xs[0])
    assert g.dtype == jnp.bfloat16


def test_dpo_bad_input():
    xs = list(map(jnp.asarray, _logps()))
    with pytest.raises(ValueError, match="loss_type must be one of"):
        jaxloss.dpo_loss(*xs, loss_type="kto")
    with pytest.raises(ValueError, match="reference_rejected_logps"):
        jaxloss.dpo_loss(*xs[:3], xs[3][:4])
    with pytest.raises(ValueError, match="label_smoothing applies"):
        jaxloss.dpo_loss(*xs, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"label_smoothing must be < 0\.5"):
        jaxloss.dpo_loss(*xs, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match="beta must be > 0"):
        jaxloss.dpo_loss(*xs, beta=0.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        jaxloss.dpo_loss(*xs, reduction="batchmean")
    with pytest.raises(TypeError, match="policy_chosen_logps must be a floating-point"):
        jaxloss.dpo_loss(jnp.arange(6), *xs[1:])


def _simpo_np(c, r, beta, gamma):
    """Meng et al. eq. 6."""
    return -_np_logsig(beta * (c - r) - gamma)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_simpo_values_and_gradients(reduction):
    g = rng(1)
    c, r = g.uniform(-3, -0.1, 7), g.uniform(-3, -0.1, 7)
    got = jaxloss.simpo_loss(jnp.asarray(c), jnp.asarray(r), beta=2.5, gamma=1.2,
                             reduction=reduction)  # fmt: skip
    close(got, _np_reduce(_simpo_np(c, r, 2.5, 1.2), reduction))
    # TRL CPOTrainer (loss_type="simpo"): logits - simpo_gamma / beta inside beta * (.)
    tc, tr = tt(c, grad=True), tt(r, grad=True)
    _t_reduce(-F.logsigmoid(2.5 * ((tc - tr) - 1.2 / 2.5)), reduction).sum().backward()
    gc, gr = jax.grad(
        lambda a, b: jnp.sum(jaxloss.simpo_loss(a, b, beta=2.5, gamma=1.2, reduction=reduction)),
        argnums=(0, 1),
    )(jnp.asarray(c), jnp.asarray(r))
    close(gc, tc.grad.numpy())
    close(gr, tr.grad.numpy())


def test_simpo_traced_and_extreme():
    c, r = jnp.array([-0.5, -2.0]), jnp.array([-1.0, -0.5])
    f = jax.jit(jax.vmap(lambda b, gm: jaxloss.simpo_loss(c, r, beta=b, gamma=gm)))
    got = f(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.5]))
    close(got, [np.mean(_simpo_np(np.asarray(c), np.asarray(r), b, gm))
                for b, gm in [(1.0, 0.0), (2.0, 0.5)]])  # fmt: skip
    _, dv = jax.jvp(lambda gm: jaxloss.simpo_loss(c, r, gamma=gm), (0.5,), (1.0,))
    close(dv, np.mean(jax.nn.sigmoid(0.5 - 2.0 * (c - r))))
    big = jnp.array([1e4, -1e4], jnp.float32)
    val, gr = jax.value_and_grad(lambda a: jaxloss.simpo_loss(a, -a))(big)
    assert all_finite(val, gr)
    close(val, (2e4 * 2 + 0.5) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="rejected_logps"):
        jaxloss.simpo_loss(c, r[:1])


def _orpo_np(c, r, beta):
    """Hong et al. eqs. 4 and 7, directly with odds = p / (1 - p) in float64."""
    odds = lambda x: np.exp(x) / (1 - np.exp(x))
    return -beta * _np_logsig(np.log(odds(c) / odds(r)))


def _orpo_torch(c, r, beta):
    """TRL ``ORPOTrainer.odds_ratio_loss`` (the odds-ratio term, times beta)."""
    log_odds = (c - r) - (torch.log1p(-torch.exp(c)) - torch.log1p(-torch.exp(r)))
    return -beta * F.logsigmoid(log_odds)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_orpo_values_and_gradients(reduction):
    g = rng(2)
    c, r = g.uniform(-4, -0.05, 8), g.uniform(-4, -0.05, 8)
    got = jaxloss.orpo_odds_ratio_loss(jnp.asarray(c), jnp.asarray(r), beta=0.3,
                                       reduction=reduction)  # fmt: skip
    close(got, _np_reduce(_orpo_np(c, r, 0.3), reduction), rtol=1e-9)
    tc, tr = tt(c, grad=True), tt(r, grad=True)
    _t_reduce(_orpo_torch(tc, tr, 0.3), reduction).sum().backward()
    f = lambda a, b: jnp.sum(jaxloss.orpo_odds_ratio_loss(a, b, beta=0.3, reduction=reduction))
    gc, gr = jax.grad(f, argnums=(0, 1))(jnp.asarray(c), jnp.asarray(r))
    close(gc, tc.grad.numpy(), rtol=1e-9)
    close(gr, tr.grad.numpy(), rtol=1e-9)
    if reduction == "sum":  # second order (custom rule) against differences of the gradient
        c0, r0 = jnp.asarray(c), jnp.asarray(r)
        hc = jax.jit(jax.hessian(f))(c0, r0)
        grad, d = jax.jit(jax.grad(f)), 1e-6
        close(jnp.diag(hc), (grad(c0 + d, r0) - grad(c0 - d, r0)) / (2 * d), rtol=1e-5, atol=1e-8)


def test_orpo_log1mexp_accuracy_and_edges():
    # near 0 (p close to 1) and far below: log(1 - e^x) accurate in float32
    c = jnp.array([-1e-6, -1e-3, -30.0, -1e4, 0.0], jnp.float32)
    r = jnp.array([-2.0, -2.0, -1e4, -30.0, -1.0], jnp.float32)
    cd, rd = np.asarray(c, np.float64), np.asarray(r, np.float64)
    with np.errstate(divide="ignore"):  # log(0) = -inf at cd = 0
        want = -0.1 * _np_logsig((cd - rd) - (np.log(-np.expm1(cd)) - np.log(-np.expm1(rd))))
    got = jaxloss.orpo_odds_ratio_loss(c, r, reduction="none")
    close(got, want, rtol=2e-6, atol=1e-30)
    # at c = 0 the loss is 0 and the gradient is its finite limit -beta e^r / (1 - e^r)
    gc = jax.grad(lambda a: jnp.sum(jaxloss.orpo_odds_ratio_loss(a, r, reduction="sum")))(c)
    assert all_finite(gc)
    close(gc[-1], -0.1 * np.exp(-1.0) / (1 - np.exp(-1.0)), rtol=1e-6)
    # vmap and jit with a traced beta, and jvp
    f = jax.jit(jax.vmap(lambda b: jaxloss.orpo_odds_ratio_loss(c, r, beta=b)))
    close(f(jnp.array([0.1, 1.0], jnp.float32)), np.mean(want) * np.array([1.0, 10.0]), rtol=2e-6)
    _, dv = jax.jvp(lambda a: jaxloss.orpo_odds_ratio_loss(a, r), (c,), (jnp.ones_like(c),))
    close(dv, jnp.sum(gc) / 5, rtol=1e-6)


def test_orpo_bad_input():
    with pytest.raises(ValueError, match="chosen_logps and rejected_logps must have the same"):
        jaxloss.orpo_odds_ratio_loss(jnp.zeros(3), jnp.zeros(2))
    with pytest.raises(ValueError, match="beta must be > 0"):
        jaxloss.orpo_odds_ratio_loss(jnp.zeros(3) - 1, jnp.zeros(3) - 1, beta=-1.0)

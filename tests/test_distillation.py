"""fused_linear_distillation_loss against TRL's generalized_jsd_loss in PyTorch (float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss
from tests._helpers import close, rng, tt

R = rng(5)
N, DS, DT, V = 9, 3, 5, 8
HS, WS, BS = R.normal(size=(N, DS)), R.normal(size=(DS, V)), R.normal(size=V)
HT, WT, BT = R.normal(size=(N, DT)), 2.0 * R.normal(size=(DT, V)), R.normal(size=V)
Y = R.integers(0, V, N)
Y[[2, 5]] = -100


def _trl(hs, ws, bs, beta, temperature, reduction):
    """TRL's ``GKDTrainer.generalized_jsd_loss`` (trl 0.x), written out in torch:
    F.kl_div(input, target, log_target=True) is KL(target || input)."""
    import torch
    import torch.nn.functional as F

    s = (hs @ ws + bs) / temperature
    t = (tt(HT) @ tt(WT) + tt(BT)) / temperature
    ls, lt = F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)
    if beta == 0:
        jsd = F.kl_div(ls, lt, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(lt, ls, reduction="none", log_target=True)
    else:
        b = torch.tensor(beta, dtype=ls.dtype)
        lm = torch.logsumexp(torch.stack([ls + torch.log(1 - b), lt + torch.log(b)]), dim=0)
        jsd = b * F.kl_div(lm, lt, reduction="none", log_target=True) + (1 - b) * F.kl_div(
            lm, ls, reduction="none", log_target=True
        )
    mask = tt(Y) != -100
    rows = torch.where(mask, jsd.sum(-1), torch.zeros(()))
    if reduction == "none":
        return rows
    return rows.sum() / mask.sum() if reduction == "mean" else rows.sum()


CASES = [
    ("forward_kl", 0.5, 1.0, "mean"),
    ("reverse_kl", 0.5, 2.0, "sum"),
    ("jsd", 0.3, 1.5, "mean"),
    ("jsd", 1.0, 0.5, "mean"),  # beta=1: reverse KL, as TRL (beta=0: forward, below)
    ("jsd", 0.5, 1.0, "none"),
]


@pytest.mark.parametrize(("divergence", "beta", "temperature", "reduction"), CASES)
def test_matches_trl_in_torch_values_gradients_and_forward_mode(
    divergence, beta, temperature, reduction
):
    trl_beta = {"forward_kl": 0.0, "reverse_kl": 1.0}.get(divergence, beta)
    cot = np.linspace(0.5, 1.5, N)  # per-row cotangent for reduction="none"

    def ours(hs, ws, bs):
        out = jaxloss.fused_linear_distillation_loss(
            hs, ws, HT, WT, labels=Y, ignore_index=-100, divergence=divergence, beta=beta,
            temperature=temperature, student_bias=bs, teacher_bias=BT, reduction=reduction,
            chunk_size=4,
        )  # fmt: skip
        return jnp.sum(out * cot) if reduction == "none" else out

    args = [tt(a, grad=True) for a in (HS, WS, BS)]
    want = _trl(*args, trl_beta, temperature, reduction)
    want = (want * tt(cot) if reduction == "none" else want).sum()
    want.backward()
    value, grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2)))(HS, WS, BS)
    close(value, want.detach().numpy())
    for g, a in zip(grads, args, strict=True):
        close(g, a.grad.numpy())
    # forward mode: the tangent along a direction equals the gradient's projection
    dirs = [R.normal(size=a.shape) for a in (HS, WS, BS)]
    tangent = jax.jvp(ours, (HS, WS, BS), tuple(dirs))[1]
    close(tangent, sum(np.sum(np.asarray(g) * d) for g, d in zip(grads, dirs, strict=True)))


def test_equals_the_non_fused_divergences_and_gives_the_teacher_no_gradient():
    ls = jax.nn.log_softmax(HS @ WS)
    lt = jax.nn.log_softmax(HT @ WT)
    fused = jaxloss.fused_linear_distillation_loss(HS, WS, HT, WT, reduction="none")
    close(fused, jaxloss.kl_divergence_with_log_targets(ls, lt))
    fused = jaxloss.fused_linear_distillation_loss(
        HS, WS, HT, WT, divergence="jsd", beta=0.25, reduction="none"
    )
    close(fused, jaxloss.jensen_shannon_divergence(ls, lt, beta=0.25))
    fused = jaxloss.fused_linear_distillation_loss(
        HS, WS, HT, WT, divergence="jsd", beta=0.0, reduction="none"
    )
    close(fused, jaxloss.kl_divergence_with_log_targets(ls, lt))  # beta=0: forward KL

    def both(hs, ht, wt):
        return jaxloss.fused_linear_distillation_loss(hs, WS, ht, wt, divergence="reverse_kl")

    g_hs, g_ht, g_wt = jax.grad(both, argnums=(0, 1, 2))(HS, HT, WT)
    assert np.any(np.asarray(g_hs) != 0)
    assert not np.any(np.asarray(g_ht)) and not np.any(np.asarray(g_wt))


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_minus_inf_bias_columns_all_ignored_and_huge_logits(divergence):
    # a class neither model can produce (-inf bias on both sides) adds nothing
    b = jnp.asarray(BS).at[3].set(-jnp.inf)
    bt = jnp.asarray(BT).at[3].set(-jnp.inf)

    def loss(hs, **kw):
        return jaxloss.fused_linear_distillation_loss(
            hs, WS, HT, WT, divergence=divergence, teacher_bias=bt, **kw
        )

    keep = np.r_[0:3, 4:V]
    want = jaxloss.fused_linear_distillation_loss(
        HS, WS[:, keep], HT, WT[:, keep], divergence=divergence,
        student_bias=BS[keep], teacher_bias=BT[keep],
    )  # fmt: skip
    value, grad = jax.value_and_grad(lambda h: loss(h, student_bias=b))(HS)
    close(value, want)
    assert np.all(np.isfinite(np.asarray(grad)))
    # every token ignored: the mean is 0 with a zero gradient
    ignored = np.full(N, -100)
    value, grad = jax.value_and_grad(lambda h: loss(h, labels=ignored, ignore_index=-100))(HS)
    assert float(value) == 0.0 and not np.any(np.asarray(grad))
    # logits of +-1e4 (exp overflows float32): equal models give 0 and a zero gradient
    h = jnp.asarray([[100.0, 50.0], [-100.0, 20.0]], jnp.float32)
    w = jnp.asarray([[100.0, -100.0, 50.0], [0.0, 40.0, -60.0]], jnp.float32)
    f = lambda h: jaxloss.fused_linear_distillation_loss(h, w, h, w, divergence=divergence)
    value, grad = jax.value_and_grad(f)(h)
    assert float(value) == 0.0 and np.all(np.asarray(grad) == 0)


def test_bf16_accumulates_in_float32_and_keeps_no_logits():
    hs, ws = jnp.asarray(HS, jnp.bfloat16), jnp.asarray(WS, jnp.bfloat16)
    ht, wt = jnp.asarray(HT, jnp.bfloat16), jnp.asarray(WT, jnp.bfloat16)
    f = lambda hs, ws: jaxloss.fused_linear_distillation_loss(hs, ws, ht, wt, divergence="jsd")
    value, (g_h, g_w) = jax.value_and_grad(f, argnums=(0, 1))(hs, ws)
    assert value.dtype == jnp.float32 and g_h.dtype == g_w.dtype == jnp.bfloat16
    up = [jnp.asarray(a, jnp.float32) for a in (hs, ws, ht, wt)]
    f32 = lambda hs, ws: jaxloss.fused_linear_distillation_loss(hs, ws, *up[2:], divergence="jsd")
    want, (w_h, w_w) = jax.value_and_grad(f32, argnums=(0, 1))(*up[:2])
    close(value, want, rtol=1e-6, atol=1e-7)  # the same bf16 values multiplied in float32
    close(jnp.asarray(g_h, jnp.float32), w_h, rtol=1e-2, atol=1e-3)  # one bf16 rounding
    close(jnp.asarray(g_w, jnp.float32), w_w, rtol=1e-2, atol=1e-3)
    # compiled scratch of the gradient: below a quarter of one [N, V] float32 matrix
    n, d, v = 512, 32, 4096
    spec = jax.ShapeDtypeStruct
    hs_, ws_ = spec((n, d), jnp.float32), spec((d, v), jnp.float32)

    def g(hs, ws, ht, wt):
        return jaxloss.fused_linear_distillation_loss(hs, ws, ht, wt, divergence="jsd")

    compiled = jax.jit(jax.grad(g, argnums=(0, 1))).lower(hs_, ws_, hs_, ws_).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < n * v * 4 / 4


def test_bad_input_names_the_argument():
    f = jaxloss.fused_linear_distillation_loss
    with pytest.raises(ValueError, match="divergence must be one of"):
        f(HS, WS, HT, WT, divergence="kl")
    with pytest.raises(ValueError, match=r"beta must be <= 1\.0"):
        f(HS, WS, HT, WT, divergence="jsd", beta=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        f(HS, WS, HT, WT, temperature=0.0)
    with pytest.raises(ValueError, match="same vocabulary"):
        f(HS, WS, HT, WT[:, :-1])
    with pytest.raises(ValueError, match="teacher_kernel must have shape"):
        f(HS, WS, HT, WT.T)
    with pytest.raises(ValueError, match="student_hidden must have shape"):
        f(HS[0], WS, HT, WT)

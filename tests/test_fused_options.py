"""fused_linear_softmax_cross_entropy's class weights, temperature and auxiliary
outputs, against PyTorch 2.13's F.linear_cross_entropy and the materialised
logits in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss
from tests._helpers import close, hyperparameter_gradients_match_differences, rng, tt

R = rng(21)
N, D, V = 11, 4, 300  # V = 300: three vocabulary tiles of 128, the last one shifted
H, W, B = R.normal(size=(N, D)), R.normal(size=(D, V)), R.normal(size=V)
CW = R.uniform(0.2, 3.0, V)
Y = R.integers(0, V, N)
Y[3] = -100
COT = np.linspace(0.5, 1.5, N)  # per-row cotangent for reduction="none"


def _torch(reduction, eps, temperature):
    """F.linear_cross_entropy on (H / T, W.T, B / T): the tempered logits (hW + b) / T."""
    import torch.nn.functional as F

    args = [tt(a, grad=True) for a in (H, W.T, B)]
    out = F.linear_cross_entropy(
        args[0] / temperature, args[1], tt(Y), linear_bias=args[2] / temperature,
        weight=tt(CW), reduction=reduction, ignore_index=-100, label_smoothing=eps,
    )  # fmt: skip
    out = (out * tt(COT)).sum() if reduction == "none" else out
    out.backward()
    return out.detach().numpy(), [args[0].grad.numpy(), args[1].grad.numpy().T, args[2].grad]


@pytest.mark.parametrize(
    ("reduction", "eps", "temperature"), [("mean", 0.0, 1.0), ("sum", 0.2, 0.7), ("none", 0.2, 0.7)]
)
def test_class_weights_and_temperature_match_torch_linear_cross_entropy(
    reduction, eps, temperature
):
    def ours(h, w, b):
        out = jaxloss.fused_linear_softmax_cross_entropy(
            h, w, Y, bias=b, weight=CW, temperature=temperature, ignore_index=-100,
            label_smoothing=eps, reduction=reduction, chunk_size=4,
        )  # fmt: skip
        return jnp.sum(out * COT) if reduction == "none" else out

    want, want_grads = _torch(reduction, eps, temperature)
    value, grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2)))(H, W, B)
    close(value, want)
    for g, w in zip(grads, want_grads, strict=True):
        close(g, np.asarray(w))
    dirs = [R.normal(size=a.shape) for a in (H, W, B)]
    tangent = jax.jvp(ours, (H, W, B), tuple(dirs))[1]
    close(tangent, sum(np.sum(np.asarray(g) * d) for g, d in zip(grads, dirs, strict=True)))


def _materialised(temperature=1.0):
    return (H @ W + B) / temperature


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_aux_outputs_from_the_same_pass(reduction):
    sw = R.uniform(0.0, 2.0, N)
    sw[5] = 0.0  # a dropped token does not count for the accuracy
    z, t = 1e-3, 1.3
    kw = {"bias": B, "weight": CW, "sample_weight": sw, "temperature": t, "z_loss": z}
    kw |= {"ignore_index": -100, "reduction": reduction, "chunk_size": 4}

    def ours(w):
        loss, aux = jaxloss.fused_linear_softmax_cross_entropy(H, w, Y, return_aux=True, **kw)
        return jnp.sum(loss * COT), aux

    # reduction="none" with the kernel differentiated takes the recompute strategy
    (value, aux), grad = jax.value_and_grad(ours, has_aux=True)(W)
    plain = jax.value_and_grad(
        lambda w: jnp.sum(jaxloss.fused_linear_softmax_cross_entropy(H, w, Y, **kw) * COT)
    )(W)
    close(value, plain[0])
    close(grad, plain[1])  # the auxiliary outputs add nothing to the gradient
    x = _materialised(t)
    lse = np.log(np.sum(np.exp(x - x.max(-1, keepdims=True)), -1)) + x.max(-1)
    close(aux.lse, lse)
    np.testing.assert_array_equal(np.asarray(aux.argmax), np.argmax(x, -1))
    assert aux.argmax.dtype == jnp.int32
    counted = (Y != -100) & (sw != 0)
    close(aux.accuracy, np.mean((np.argmax(x, -1) == Y)[counted]))
    w_row = np.where(Y != -100, CW[np.where(Y != -100, Y, 0)], 0.0) * sw
    z_rows = z * w_row * lse**2
    want_z = z_rows if reduction == "none" else np.sum(z_rows) / np.sum(w_row)
    close(aux.z_loss, want_z)


def test_argmax_takes_the_first_maximum_across_tiles():
    h = np.ones((2, 1))
    w = np.zeros((1, V))
    w[0, [7, 200, 299]] = 5.0  # ties in the first, second and shifted last tile
    _, aux = jaxloss.fused_linear_softmax_cross_entropy(h, w, np.array([7, 200]), return_aux=True)
    np.testing.assert_array_equal(np.asarray(aux.argmax), [7, 7])
    close(aux.accuracy, 0.5)
    w[0, 250] = 6.0
    _, aux = jaxloss.fused_linear_softmax_cross_entropy(h, w, np.array([7, 250]), return_aux=True)
    np.testing.assert_array_equal(np.asarray(aux.argmax), [250, 250])


def test_bf16_weighted_loss_is_float32_and_bad_options_name_the_argument():
    h, w = jnp.asarray(H, jnp.bfloat16), jnp.asarray(W, jnp.bfloat16)
    cw = jnp.asarray(CW, jnp.float32)
    f = jaxloss.fused_linear_softmax_cross_entropy
    loss, g = jax.value_and_grad(lambda h: f(h, w, Y, weight=cw, ignore_index=-100))(h)
    assert loss.dtype == jnp.float32 and g.dtype == jnp.bfloat16
    up = [jnp.asarray(a, jnp.float32) for a in (h, w)]
    close(loss, f(*up, Y, weight=cw, ignore_index=-100), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"weight must have shape \(300,\)"):
        f(H, W, Y, weight=CW[:-1], ignore_index=-100)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        f(H, W, Y, temperature=0.0, ignore_index=-100)
    with pytest.raises(TypeError, match="return_aux must be a bool"):
        f(H, W, Y, return_aux=1, ignore_index=-100)


def test_traced_hyperparameters_of_the_fused_losses():
    """The fused losses' hyperparameters as traced scalars (cross-entropy:
    label_smoothing, z_loss, logit_softcap, temperature; log-probs: temperature,
    logit_softcap; distillation: temperature, beta): one compiled program gives
    the numbers of the Python-number path, under vmap too, and its derivative with
    respect to each matches central differences of that program in float64. A
    traced beta of 0 or 1 gives the two KL directions, as a Python number does."""
    ht, wt, yl = R.normal(size=(N, D)), R.normal(size=(D, V)), np.maximum(Y, 0)
    kd = jaxloss.fused_linear_distillation_loss

    def ce(e, z, c, t):
        return jaxloss.fused_linear_softmax_cross_entropy(
            H, W, Y, bias=B, ignore_index=-100, label_smoothing=e, z_loss=z, logit_softcap=c,
            temperature=t, chunk_size=4,
        )  # fmt: skip

    def log_probs(t, c):
        out = jaxloss.fused_linear_log_probs(
            H, W, yl, logit_softcap=c, temperature=t, return_entropy=True, chunk_size=4
        )
        return jnp.sum(COT * out[0]) + jnp.sum(COT * out[1])

    def distill(t, b):
        return kd(H, W, ht, wt, divergence="jsd", beta=b, temperature=t, chunk_size=4)

    for f, point in ((ce, (0.15, 0.02, 4.0, 0.8)), (log_probs, (1.3, 5.0)), (distill, (2.0, 0.3))):
        static, traced = f(*point), jax.jit(f)
        close(traced(*point), static, err_msg=f.__name__)
        batched = jax.vmap(f, (0,) + (None,) * (len(point) - 1))
        close(batched(jnp.array([point[0]] * 2), *point[1:]), [static] * 2, err_msg=f.__name__)
        hyperparameter_gradients_match_differences(f, point, f.__name__)
    at = jax.jit(lambda b: kd(H, W, ht, wt, divergence="jsd", beta=b, chunk_size=4))
    for b, kind in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
        close(at(b), kd(H, W, ht, wt, divergence=kind, chunk_size=4), err_msg=kind)


def test_traced_options_of_the_vocabulary_parallel_losses():
    """Inside shard_map (one device), label_smoothing, z_loss and logit_softcap
    traced give the loss and the hyperparameter derivatives of the unsharded
    cross-entropy on the same logits (itself checked against PyTorch)."""
    from jax.sharding import AxisType
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((1,), ("v",), axis_types=(AxisType.Auto,))
    x = H @ W + B

    def vp(e, z, c):
        def local(x_, k_, b_):
            return (
                jaxloss.vocab_parallel_softmax_cross_entropy(
                    x_, Y, axis_name="v", ignore_index=-100, label_smoothing=e, z_loss=z,
                    logit_softcap=c, reduction="sum",
                ),
                jaxloss.vocab_parallel_fused_linear_softmax_cross_entropy(
                    H, k_, Y, axis_name="v", bias_shard=b_, ignore_index=-100,
                    label_smoothing=e, z_loss=z, logit_softcap=c, reduction="sum",
                ),
            )  # fmt: skip

        specs = (P(None, "v"), P(None, "v"), P("v"))
        return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=(P(), P()))(x, W, B)

    def ref(e, z, c):
        return jaxloss.softmax_cross_entropy_with_integer_labels(
            x, Y, ignore_index=-100, label_smoothing=e, z_loss=z, logit_softcap=c, reduction="sum"
        )

    point = (0.15, 0.02, 4.0)
    want = jax.value_and_grad(ref, argnums=(0, 1, 2))(*point)
    for k in range(2):
        got = jax.jit(jax.value_and_grad(lambda *a, k=k: vp(*a)[k], argnums=(0, 1, 2)))(*point)
        close(got[0], want[0], err_msg=f"output {k}")
        close(jnp.stack(got[1]), jnp.stack(want[1]), rtol=1e-9, err_msg=f"output {k}")

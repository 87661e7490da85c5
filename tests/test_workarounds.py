"""Pins the code forms chosen for XLA:CPU's fusion (jax 0.10.2).

Each test compiles ``value_and_grad`` of a loss with the form the module uses
and with the plainer alternative (patched in here), and compares the compiled
temporary bytes: deterministic, no execution. A failure means the form no longer
saves memory on this jax version: revisit the comment at the named line.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from _helpers import temp_bytes

import jaxloss
from jaxloss import _binary, _divergence, _focal, _hinge
from jaxloss import _common as cm

N, C = 512, 1024
ONE_BUFFER = N * C * 4  # one [N, C] float32 array


def _spec(dtype=jnp.float32):
    return jax.ShapeDtypeStruct((N, C), jnp.dtype(dtype))


def _temp_bytes(loss, *specs, argnums=0):
    jax.clear_caches()  # the rules are jitted once: a patched helper needs a new trace
    return temp_bytes(loss, *specs, argnums=argnums)


def _measure(monkeypatch, module, name, plain, loss, *specs, argnums=0):
    """Temporary bytes of ``loss`` as written and with ``module.name`` = ``plain``."""
    kept = _temp_bytes(loss, *specs, argnums=argnums)
    with monkeypatch.context() as m:
        m.setattr(module, name, plain)
        alternative = _temp_bytes(loss, *specs, argnums=argnums)
    jax.clear_caches()  # no trace of the patched helper outlives the patch
    return kept, alternative


def _bce_forward_select(x, y, pw, w, eps):
    # 0 * inf avoided with selects rather than a clamp.
    x = x.astype(cm.compute_dtype(x))
    a, b = _binary._bce_coeffs(x, y, pw, eps)
    tail = jnp.log1p(jnp.exp(-jnp.abs(x)))
    sp_pos = jnp.maximum(x, 0.0) + tail
    sp_neg = jnp.maximum(-x, 0.0) + tail
    loss = jnp.minimum(cm.safe_mul(a, sp_neg) + cm.safe_mul(b, sp_pos), jnp.finfo(x.dtype).max)
    return loss if w is None else _binary._widen(w, loss) * loss


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_bce_clamp(monkeypatch, dtype):
    def loss(x, y):
        return jaxloss.sigmoid_binary_cross_entropy(x, y)

    kept, plain = _measure(
        monkeypatch, _binary, "_bce_forward", _bce_forward_select, loss, _spec(dtype), _spec(dtype)
    )
    assert kept < ONE_BUFFER, kept
    assert kept < plain, (kept, plain)


def _scaled_sum_elementwise(loss, scale):
    return jnp.sum(loss * scale)


@pytest.mark.parametrize(
    "loss",
    [
        lambda x, y: jaxloss.sigmoid_binary_cross_entropy(x, y, reduction="mean"),
        lambda x, y: jaxloss.sigmoid_focal_loss(x, y, reduction="mean"),
    ],
    ids=["bce", "sigmoid_focal"],
)
def test_mean_scales_row_sums(monkeypatch, loss):
    # the loss is already a scalar (the mean): _measure's .sum() leaves it as it is
    kept, plain = _measure(
        monkeypatch, cm, "scaled_sum", _scaled_sum_elementwise, loss, _spec(), _spec()
    )
    assert plain - kept > ONE_BUFFER // 2, (kept, plain)  # an [N, C] buffer, less [N] row sums


def _kl_elements_inner(lp, t, mask, log_target):
    # Operands guarded by their own selects instead of one select at the end.
    lp, t = _divergence._upcast(lp, t)
    if log_target:
        keep = t != -jnp.inf
        elem = jnp.exp(t) * (jnp.where(keep, t, 0.0) - jnp.where(keep, lp, 0.0))
    else:
        keep = t != 0
        elem = t * (jnp.log(jnp.where(keep, t, jnp.ones_like(t))) - jnp.where(keep, lp, 0.0))
    return _divergence._masked(elem, mask)


@pytest.mark.parametrize("log_target", [False, True])
def test_kl_single_select(monkeypatch, log_target):
    def loss(lp, t):
        return jaxloss.kl_divergence(lp, t, log_target=log_target)

    kept, plain = _measure(
        monkeypatch,
        _divergence,
        "_kl_elements",
        _kl_elements_inner,
        loss,
        _spec(),
        _spec(),
        argnums=(0, 1),
    )
    assert kept <= ONE_BUFFER, kept
    assert kept < plain, (kept, plain)


def _sigmoid_forward_plain(x, y, alpha, gamma):
    # The same loss without the final select.
    x = x.astype(cm.compute_dtype(x))
    y = y.astype(x.dtype)
    tail = jnp.log1p(jnp.exp(-jnp.abs(x)))
    sp_pos = jnp.maximum(x, 0.0) + tail
    sp_neg = jnp.maximum(-x, 0.0) + tail
    ce = cm.safe_mul(y, sp_neg) + cm.safe_mul(1.0 - y, sp_pos)
    loss = ce * _focal._pow_gamma(_focal._sigmoid_parts(x, y)[2], gamma)
    a_t = _focal._alpha_t(y, alpha)
    return loss if a_t is None else a_t * loss


def test_focal_select(monkeypatch):
    def loss(x, y):
        return jaxloss.sigmoid_focal_loss(x, y)

    kept, plain = _measure(
        monkeypatch, _focal, "_sigmoid_forward", _sigmoid_forward_plain, loss, _spec(), _spec()
    )
    assert kept <= ONE_BUFFER, kept
    assert kept < plain, (kept, plain)


def test_hinge_select(monkeypatch):
    def loss(x, y):
        return jaxloss.hinge_loss(x, y)

    kept, plain = _measure(monkeypatch, _hinge, "_relu", jax.nn.relu, loss, _spec(), _spec())
    assert kept <= ONE_BUFFER, kept
    assert kept < plain, (kept, plain)


def _labels_spec():
    return jax.ShapeDtypeStruct((N,), jnp.int32)


def test_bf16_label_gather(monkeypatch):
    """``_softmax.label_logit`` gathers bf16 logits as 16-bit patterns: a plain bf16
    gather makes XLA:CPU write a float32 copy of the whole [N, C] logits."""
    from jaxloss import _softmax as sm

    def loss(x, y):
        return jaxloss.softmax_cross_entropy_with_integer_labels(x, y)

    kept, plain = _measure(
        monkeypatch, sm, "label_logit", sm._take, loss, _spec(jnp.bfloat16), _labels_spec()
    )
    assert kept < ONE_BUFFER / 8, kept
    assert plain >= ONE_BUFFER, (kept, plain)


def test_bf16_row_max_from_the_raw_logits(monkeypatch):
    """``block_stats(raw=...)``: the row maximum read from the bf16 buffer leaves the
    widened logits one reader, fused into it; with two readers XLA:CPU writes the
    float32 copy."""
    from jaxloss import _softmax as sm

    def loss(x, y):
        return jaxloss.softmax_cross_entropy_with_integer_labels(x, y)

    def without_raw(*args, raw=None, cap=None, **kwargs):
        return block_stats(*args, **kwargs)

    block_stats = sm.block_stats
    kept, plain = _measure(
        monkeypatch, sm, "block_stats", without_raw, loss, _spec(jnp.bfloat16), _labels_spec()
    )
    assert kept < ONE_BUFFER / 8, kept
    assert plain >= ONE_BUFFER, (kept, plain)


def _reduce_shapes(loss, spec, labels):
    """Output shapes of the reductions in the compiled forward of ``loss``."""
    jax.clear_caches()
    text = jax.jit(loss).lower(spec, labels).compile().as_text()
    return {line.split("=")[1].split()[0] for line in text.splitlines() if " reduce(" in line}


def test_long_rows_are_summed_in_blocks(monkeypatch):
    """``_softmax.exp_sum``: a row wider than ``ROW_BLOCK`` is summed as blocks of at
    most 32768 columns whose partial sums are kept apart (``f32[N, nb]``), viewed
    before the ``exp``. XLA:CPU (jax 0.10.2) reduces a fused ``exp`` over rows of
    65536 at an eighth of its speed over rows of 32768 (the figures are in
    benchmarks/results/cpu.md); as one plain reduction the row stays whole."""
    from jaxloss import _softmax as sm

    rows, width = 8, 2 * sm.ROW_BLOCK
    spec = jax.ShapeDtypeStruct((rows, width), jnp.float32)
    labels = jax.ShapeDtypeStruct((rows,), jnp.int32)

    def loss(x, y):
        return jaxloss.softmax_cross_entropy_with_integer_labels(x, y)

    def plain(s, shift):
        return jnp.sum(jnp.exp(s - shift[..., None]), axis=-1)

    kept = _reduce_shapes(loss, spec, labels)
    with monkeypatch.context() as m:
        m.setattr(sm, "exp_sum", plain)
        whole = _reduce_shapes(loss, spec, labels)
    jax.clear_caches()
    assert f"f32[{rows},2]{{1,0}}" in kept, kept
    assert not any(s.startswith(f"f32[{rows},2]") for s in whole), whole

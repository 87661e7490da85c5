"""jaxloss.testing.gradcheck: what it catches, what it holds fixed, and every loss through it.

The registry ``BUILDERS`` maps each public loss to argument builders for a few
input regimes (moderate values, large logits around +-30, masked/ignored
entries where the loss has them). A loss that is not in ``jaxloss`` yet is
simply absent from the parametrization; a public loss without a builder fails
``test_every_public_loss_has_a_builder``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxloss
from jaxloss.testing import GradcheckReport, default_tolerances, gradcheck

F32 = np.float32


def f32(a) -> jax.Array:
    return jnp.asarray(np.asarray(a, dtype=F32))


# --------------------------------------------------------------------------
# gradcheck itself
# --------------------------------------------------------------------------


def _scaled_rule(scale: float, second_order_ok: bool = True):
    """sum(sin(x)) with a custom_jvp whose tangent is ``scale`` times the truth."""

    @jax.custom_jvp
    def f(x):
        return jnp.sum(jnp.sin(x))

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        c = jnp.cos(x) if second_order_ok else jnp.cos(jax.lax.stop_gradient(x))
        return f(x), scale * jnp.sum(c * t)

    return f


X = f32([[0.3, -1.2, 2.0], [0.7, 0.1, -0.4]])


def _plain(x):
    return jnp.sum(jnp.sin(x))


def test_exact_rule_passes():
    r = gradcheck(_scaled_rule(1.0), X, reference=_plain)
    assert r.ok, r
    assert r.errors["jvp vs fd"][1] < 1e-5


def test_rule_off_by_one_percent_fails():
    r = gradcheck(_scaled_rule(1.01), X, reference=_plain, jax_check_grads=True)
    assert not r.ok
    failed = {c.name for c in r.failures}
    assert {"jvp vs fd", "vjp vs fd", "jacfwd vs fd", "jacrev vs fd"} <= failed
    assert {"jvp vs reference", "vjp vs reference", "jax check_grads"} <= failed
    rel = r["jvp vs fd"].rel_error
    assert 0.009 < rel < 0.011
    # the rule is wrong in the same way both ways, so it is self-consistent
    assert r["jvp/vjp consistency"].ok


def test_rule_off_by_one_percent_fails_without_full_jacobian_or_reference():
    x = f32(np.random.default_rng(0).normal(size=(10, 10)))  # 100 > full_jacobian_max_size
    r = gradcheck(_scaled_rule(1.01), x, order=1)
    assert not r.ok
    assert "jacfwd vs fd" not in r.errors
    assert not r["jvp vs fd"].ok and not r["vjp vs fd"].ok


def test_wrong_second_order_is_caught():
    # first derivative right, but its own derivative is zero (stop_gradient in the rule)
    r = gradcheck(_scaled_rule(1.0, second_order_ok=False), X, reference=_plain)
    assert r["jvp vs fd"].ok and r["jacrev vs fd"].ok
    assert not r["hvp vs fd"].ok and not r["hessian vs fd"].ok
    assert not r["hvp (rev-over-rev) vs fd"].ok and not r["hvp vs reference"].ok
    r1 = gradcheck(_scaled_rule(1.0, second_order_ok=False), X, order=1)
    assert r1.ok, r1
    assert "hvp vs fd" not in r1.errors


def test_nan_derivative_fails():
    @jax.custom_jvp
    def f(x):
        return jnp.sum(x * x)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return f(x), jnp.sum(jnp.where(x > 1.5, jnp.nan, 2 * x) * t)

    r = gradcheck(f, X)
    assert not r.ok
    assert not r["finite derivatives"].ok
    assert r["finite values"].ok


def test_custom_vjp_without_forward_mode_is_reported():
    @jax.custom_vjp
    def f(x):
        return jnp.sum(jnp.sin(x))

    f.defvjp(lambda x: (f(x), x), lambda x, g: (g * jnp.cos(x),))
    r = gradcheck(f, X, order=1)
    assert not r.ok
    assert r["jacrev vs fd"].ok and r["vjp vs fd"].ok  # reverse mode is right
    assert not r["jvp vs fd"].ok and "custom_vjp" in r["jvp vs fd"].message


def test_argnums_tuple_and_pytrees():
    def f(a, b, scale):
        return scale * jnp.sum(a["w"] * jnp.tanh(b)) + jnp.sum(a["v"] ** 2)

    a = {"w": f32([1.0, -2.0, 0.5]), "v": f32([[0.2, 0.3]])}
    b = f32([0.1, 0.4, -0.3])
    r = gradcheck(f, a, b, 2.0, argnums=(0, 1))
    assert r.ok, r
    assert r.argnums == (0, 1)
    assert r.inputs == ("arg0['v']: float32[1, 2]", "arg0['w']: float32[3]", "arg1: float32[3]")
    assert r["jacfwd vs fd"].size == "1x8"


def test_argnums_selects_what_is_checked():
    @jax.custom_jvp
    def f(a, b):
        return jnp.sum(a * b)

    @f.defjvp
    def f_jvp(primals, tangents):
        (a, b), (da, db) = primals, tangents
        return f(a, b), jnp.sum(da * b) + 1.05 * jnp.sum(a * db)  # wrong in b only

    a, b = f32([1.0, 2.0]), f32([0.5, -1.0])
    assert gradcheck(f, a, b, argnums=0).ok
    assert not gradcheck(f, a, b, argnums=1).ok
    assert not gradcheck(f, a, b, argnums=(0, 1)).ok
    assert gradcheck(f, a, b, argnums=-2).argnums == (0,)


def test_non_float_arguments_are_held_fixed():
    x = f32([[1.0, -0.5, 0.2], [0.3, 0.9, -2.0]])
    y = jnp.array([2, 0], dtype=jnp.int32)
    mask = jnp.array([[True, True, True], [True, False, True]])

    def f(x, y, mask, eps, unused):
        assert unused is None
        return jaxloss.softmax_cross_entropy_with_integer_labels(
            x, y, where=mask, label_smoothing=eps
        )

    r = gradcheck(f, x, y, mask, 0.1, None, argnums=(0, 1, 2, 3, 4))
    assert r.ok, r
    assert r.inputs == ("arg0: float32[2, 3]",)
    notes = " ".join(r.notes)
    assert "arg1 (int32[2])" in notes and "arg2 (bool[2, 3])" in notes
    assert "arg3 (float)" in notes and "held fixed" in notes


def test_nothing_to_differentiate_raises():
    with pytest.raises(ValueError, match="no floating-point array"):
        gradcheck(lambda x, y: jnp.sum(x), X, jnp.array([1, 2]), argnums=1)
    with pytest.raises(ValueError, match="out of range"):
        gradcheck(_plain, X, argnums=3)
    with pytest.raises(ValueError, match="order"):
        gradcheck(_plain, X, order=3)


@pytest.mark.parametrize("initial", [False, True])
def test_float64_setting_is_restored(initial):
    before = jax.config.jax_enable_x64
    try:
        jax.config.update("jax_enable_x64", initial)
        x = jnp.asarray(np.asarray(X))  # float32 either way
        r = gradcheck(
            jaxloss.softmax_cross_entropy,
            x,
            jax.nn.softmax(x),
            argnums=(0, 1),
        )
        assert r.ok, r
        assert jax.config.jax_enable_x64 is initial
        assert r.inputs[0] == "arg0: float32[2, 3]"
        assert (r.rtol, r.atol) == default_tolerances(jnp.float32)
        if not initial:  # the caller's float32 world is untouched
            assert jnp.asarray(1.0).dtype == jnp.float32
            assert jnp.zeros(2, dtype=float).dtype == jnp.float32
    finally:
        jax.config.update("jax_enable_x64", before)


def test_float64_setting_is_restored_when_fn_raises():
    before = jax.config.jax_enable_x64
    calls = []

    def f(x):
        calls.append(x.dtype)
        if x.dtype == jnp.float64:
            raise RuntimeError("no float64 here")
        return jnp.sum(x * x)

    try:
        jax.config.update("jax_enable_x64", False)
        with pytest.raises(RuntimeError, match="no float64 here"):
            gradcheck(f, X)
        assert jax.config.jax_enable_x64 is False
    finally:
        jax.config.update("jax_enable_x64", before)
    assert calls[0] == jnp.float32 and calls[-1] == jnp.float64  # the float32 checks ran first


def test_low_precision_inputs_use_their_tolerances():
    x = jnp.asarray(np.asarray(X), dtype=jnp.bfloat16)
    y = jnp.array([1, 2])
    r = gradcheck(jaxloss.softmax_cross_entropy_with_integer_labels, x, y)
    assert r.ok, r
    assert (r.rtol, r.atol) == default_tolerances(jnp.bfloat16)


def test_report_text_and_html():
    r = gradcheck(_scaled_rule(1.01), X, reference=_plain, jax_check_grads=True)
    assert isinstance(r, GradcheckReport)
    text = str(r)
    for word in (
        "check",
        "mode",
        "max abs",
        "max rel",
        "jvp vs fd",
        "hessian vs fd",
        "jax check_grads",
        "FAIL",
        "FAILED",
    ):
        assert word in text
    assert len(text.splitlines()) >= len(r.checks) + 3
    page = r._repr_html_()
    assert page.count("<tr") == len(r.checks) + 1
    for word in ("<table", "max rel", "jvp vs reference", "FAIL"):
        assert word in page
    assert "FAILED" in repr(r)
    good = gradcheck(_plain, X)
    assert "OK:" in str(good) and "FAIL" not in str(good)
    assert "&#10003;" in good._repr_html_()
    with pytest.raises(KeyError, match="no check named"):
        good["nonsense"]


# --------------------------------------------------------------------------
# Every public loss, at a few input regimes
# --------------------------------------------------------------------------

REGIMES = ("moderate", "large", "masked")


@dataclasses.dataclass
class Case:
    fn: Callable
    args: tuple
    argnums: Any = 0
    reference: Callable | None = None
    order: int = 2  # 1 where a second order at these inputs adds little and costs much


def _logits(rng, regime, shape=(4, 5)):
    if regime == "large":
        return rng.uniform(-30.0, 30.0, shape)
    return rng.normal(0.0, 2.0, shape)


def _softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _log_softmax(a):
    return np.log(_softmax(a))


def _pick(a, y):
    return jnp.take_along_axis(a, y[..., None], axis=-1)[..., 0]


def _lse(s):
    return jax.nn.logsumexp(s, axis=-1)


def _ce_ref(x, y, *, eps=0.0, z=0.0, cap=None, weight=None):
    s = x if cap is None else cap * jnp.tanh(x / cap)
    lse = _lse(s)
    w = 1.0 if weight is None else weight[y]
    return w * ((1 - eps) * (lse - _pick(s, y)) + eps * (lse - jnp.mean(s, -1)) + z * lse**2)


MASK = np.array(
    [
        [True, True, False, True, True],
        [True, False, True, True, False],
        [False, False, False, False, False],
        [True, True, True, True, True],
    ]
)


def _b_softmax_ce(regime, rng):
    x = _logits(rng, regime)
    t = _softmax(rng.normal(size=x.shape))
    if regime == "moderate":
        kw = {"label_smoothing": 0.1, "z_loss": 1e-3}

        def ref(x, t):
            lse = _lse(x)
            tt = 0.9 * t + 0.1 / x.shape[-1]
            return jnp.sum(tt * (lse[:, None] - x), -1) + 1e-3 * lse**2

        return Case(
            functools.partial(jaxloss.softmax_cross_entropy, **kw), (f32(x), f32(t)), (0, 1), ref
        )
    if regime == "large":
        ref = lambda x, t: jnp.sum(-t * jax.nn.log_softmax(x), -1)
        return Case(jaxloss.softmax_cross_entropy, (f32(x), f32(t)), (0, 1), ref)
    fn = lambda x, t, m: jaxloss.softmax_cross_entropy(x, t, where=m, reduction="mean")
    return Case(fn, (f32(x), f32(t), jnp.asarray(MASK)), (0, 1))


def _b_int_ce(regime, rng):
    x = _logits(rng, regime)
    y = jnp.asarray(rng.integers(0, 5, size=4))
    fn = jaxloss.softmax_cross_entropy_with_integer_labels
    if regime == "moderate":
        kw = {"label_smoothing": 0.1, "z_loss": 1e-3, "logit_softcap": 5.0}
        ref = lambda x, y: _ce_ref(x, y, eps=0.1, z=1e-3, cap=5.0)
        return Case(functools.partial(fn, **kw), (f32(x), y), 0, ref)
    w = f32(rng.uniform(0.5, 2.0, 5))
    if regime == "large":
        ref = lambda x, y, w: jnp.sum(_ce_ref(x, y, weight=w))
        return Case(lambda x, y, w: fn(x, y, weight=w, reduction="sum"), (f32(x), y, w), 0, ref)
    y = jnp.array([0, -100, 1, 4])  # row 1 ignored, row 2 fully masked
    x[3, 2] = -np.inf  # and a -inf logit in a row that counts
    return Case(
        lambda x, y, w, m: fn(
            x, y, weight=w, where=m, ignore_index=-100, label_smoothing=0.2, reduction="mean"
        ),
        (f32(x), y, w, jnp.asarray(MASK)),
    )


def _b_nll(regime, rng):
    lp = _log_softmax(_logits(rng, regime))
    y = jnp.asarray(rng.integers(0, 5, size=4))
    w = f32(rng.uniform(0.5, 2.0, 5))
    if regime != "masked":
        ref = lambda lp, y, w: -w[y] * _pick(lp, y)
        return Case(lambda lp, y, w: jaxloss.nll_loss(lp, y, weight=w), (f32(lp), y, w), 0, ref)
    y = jnp.array([0, -1, 3, -1])
    return Case(
        lambda lp, y, w: jaxloss.nll_loss(lp, y, weight=w, ignore_index=-1, reduction="mean"),
        (f32(lp), y, w),
    )


def _b_softmax_focal(regime, rng):
    x = _logits(rng, regime)
    y = jnp.asarray(rng.integers(0, 5, size=4))
    alpha = f32(rng.uniform(0.2, 1.0, 5))
    fn = jaxloss.softmax_focal_loss

    def ref(x, y, alpha):
        lp = _pick(jax.nn.log_softmax(x), y)
        return -alpha[y] * (1 - jnp.exp(lp)) ** 2 * lp

    if regime == "moderate":
        return Case(lambda x, y, a: fn(x, y, alpha=a, gamma=2.0), (f32(x), y, alpha), 0, ref)
    if regime == "large":  # (1 - p_y) cancels in float64 too: no reference here
        return Case(lambda x, y, a: fn(x, y, alpha=a, gamma=2.0), (f32(x), y, alpha))
    y = jnp.array([0, 7, 1, 4])
    return Case(lambda x, y: fn(x, y, gamma=0.5, ignore_index=7, reduction="mean"), (f32(x), y))


def _b_multiclass_hinge(regime, rng):
    x = _logits(rng, regime)
    y = jnp.asarray(rng.integers(0, 5, size=4))
    w = f32(rng.uniform(0.5, 2.0, 5))
    p = 2 if regime == "moderate" else 1

    def ref(x, y, w):
        viol = jnp.maximum(0.0, 1.0 - _pick(x, y)[:, None] + x) ** p
        viol = jnp.where(jax.nn.one_hot(y, 5, dtype=bool), 0.0, viol)
        return w[y] * jnp.sum(viol, -1) / 5

    if regime == "masked":
        return None
    return Case(
        lambda x, y, w: jaxloss.multiclass_hinge_loss(x, y, p=p, weight=w), (f32(x), y, w), 0, ref
    )


def _b_kl(regime, rng):
    lp = _log_softmax(_logits(rng, regime))
    t = _softmax(rng.normal(size=lp.shape))
    fn = jaxloss.kl_divergence
    if regime == "moderate":
        ref = lambda lp, t: jnp.sum(t * (jnp.log(t) - lp), -1)
        return Case(fn, (f32(lp), f32(t)), (0, 1), ref)
    if regime == "large":
        lt = _log_softmax(_logits(rng, "large"))
        ref = lambda lp, lt: jnp.sum(jnp.exp(lt) * (lt - lp), -1)
        return Case(functools.partial(fn, log_target=True), (f32(lp), f32(lt)), (0, 1), ref)
    return Case(
        lambda lp, t, m: fn(lp, t, where=m, reduction="batchmean"),
        (f32(lp), f32(t), jnp.asarray(MASK)),
        (0, 1),
    )


def _softplus(x):
    return jnp.logaddexp(x, 0.0)


def _b_sigmoid_bce(regime, rng):
    x = _logits(rng, regime, (3, 4))
    fn = jaxloss.sigmoid_binary_cross_entropy
    if regime == "moderate":
        y = rng.uniform(0, 1, x.shape)
        w, pw = f32(rng.uniform(0.5, 2, x.shape)), f32(rng.uniform(0.5, 3, (4,)))

        def ref(x, y, w, pw):
            ys = 0.9 * y + 0.05
            return w * (pw[None, :] * ys * _softplus(-x) + (1 - ys) * _softplus(x))

        return Case(
            lambda x, y, w, pw: fn(x, y, weight=w, pos_weight=pw, label_smoothing=0.1),
            (f32(x), f32(y), w, pw),
            (0, 1),
            ref,
        )
    y = f32(rng.integers(0, 2, x.shape))
    if regime == "large":  # hard labels: see test_label_derivative_at_hard_labels
        ref = lambda x, y: y * _softplus(-x) + (1 - y) * _softplus(x)
        return Case(fn, (f32(x), y), 0, ref)
    w = f32(rng.integers(0, 2, x.shape))  # zero weights mask entries
    return Case(lambda x, y, w: fn(x, y, weight=w, reduction="mean"), (f32(x), y, w))


def _b_bce(regime, rng):
    # probabilities kept >= 3e-4 from 0 and 1, so that float64 finite differences
    # of log(p) stay accurate; "large" is the near-saturated end.
    x = rng.uniform(-8, 8, (3, 4)) if regime == "large" else rng.normal(0, 1.5, (3, 4))
    p = 1 / (1 + np.exp(-x))
    y = f32(rng.integers(0, 2, x.shape))
    fn = jaxloss.binary_cross_entropy
    if regime != "masked":
        ref = lambda p, y: -(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))
        return Case(fn, (f32(p), y), (0, 1), ref)
    w = f32(rng.integers(0, 2, x.shape))
    return Case(lambda p, y, w: fn(p, y, weight=w, reduction="mean"), (f32(p), y, w), (0, 1))


def _b_sigmoid_focal(regime, rng):
    x = _logits(rng, regime, (3, 4))
    fn = jaxloss.sigmoid_focal_loss

    def ref(x, y):
        p = jax.nn.sigmoid(x)
        ce = y * _softplus(-x) + (1 - y) * _softplus(x)
        p_t = p * y + (1 - p) * (1 - y)
        return (0.25 * y + 0.75 * (1 - y)) * (1 - p_t) ** 2 * ce

    if regime == "moderate":
        y = rng.uniform(0, 1, x.shape)
        return Case(lambda x, y: fn(x, y, alpha=0.25, gamma=2.0), (f32(x), f32(y)), (0, 1), ref)
    if regime == "large":
        y = f32(rng.integers(0, 2, x.shape))
        return Case(lambda x, y: fn(x, y, alpha=0.25, gamma=2.0), (f32(x), y))
    return None


def _hinge_builder(name, power):
    def build(regime, rng):
        if regime == "masked":
            return None
        s = _logits(rng, regime, (3, 4))
        y = f32(rng.choice([-1.0, 1.0], s.shape))
        ref = lambda s, y: jnp.maximum(0.0, 1.5 - y * s) ** power
        return Case(functools.partial(getattr(jaxloss, name), margin=1.5), (f32(s), y), 0, ref)

    return build


def _regression_builder(name, ref, **kw):
    def build(regime, rng):
        if regime == "masked":
            return None
        scale = 30.0 if regime == "large" else 2.0
        p = rng.uniform(-scale, scale, (3, 4))
        t = rng.uniform(-scale, scale, (3, 4))
        fn = functools.partial(getattr(jaxloss, name), **kw)
        return Case(fn, (f32(p), f32(t)), (0, 1), ref)

    return build


def _huber_ref(p, t, d=1.5):
    r = jnp.abs(p - t)
    return jnp.where(r <= d, 0.5 * r**2, d * (r - 0.5 * d))


def _smooth_l1_ref(p, t, b=0.5):
    r = jnp.abs(p - t)
    return jnp.where(r < b, 0.5 * r**2 / b, r - 0.5 * b)


def _b_poisson(regime, rng):
    if regime == "masked":
        return None
    t = f32(rng.poisson(3.0, (3, 4)))
    fn = jaxloss.poisson_nll_loss
    if regime == "moderate":  # rates, not log-rates
        lam = rng.uniform(0.5, 4.0, (3, 4))
        ref = lambda lam, t: lam - t * jnp.log(lam + 1e-8)
        return Case(functools.partial(fn, log_input=False), (f32(lam), t), 0, ref)
    x = rng.uniform(-30, 30, (3, 4))

    def ref(x, t):
        stirling = jnp.where(t > 1, t * jnp.log(t) - t + 0.5 * jnp.log(2 * jnp.pi * t), 0.0)
        return jnp.exp(x) - t * x + stirling

    return Case(functools.partial(fn, full=True), (f32(x), t), (0, 1), ref)


def _b_gaussian_nll(regime, rng):
    if regime == "masked":
        return None
    scale = 30.0 if regime == "large" else 2.0
    x, t = rng.uniform(-scale, scale, (2, 3, 4))
    var = rng.uniform(0.5, 2.0, (3, 4))
    full = regime == "large"

    def ref(x, t, v):
        out = 0.5 * (jnp.log(v) + (x - t) ** 2 / v)
        return out + 0.5 * jnp.log(2 * jnp.pi) if full else out

    return Case(
        functools.partial(jaxloss.gaussian_nll_loss, full=full),
        (f32(x), f32(t), f32(var)),
        (0, 1, 2),
        ref,
    )


def _fused_inputs(rng, regime):
    scale = 3.0 if regime == "large" else 1.0  # logits up to ~+-30 when large
    h = rng.normal(0, scale, (4, 3))
    k = rng.normal(0, scale, (3, 6))
    b = rng.normal(0, 1, (6,))
    y = jnp.asarray(rng.integers(0, 6, size=4))
    return f32(h), f32(k), f32(b), y


def _b_fused(regime, rng):
    h, k, b, y = _fused_inputs(rng, regime)
    fused = jaxloss.fused_linear_softmax_cross_entropy
    if regime == "masked":
        y = y.at[1].set(-100)
        fn = lambda h, k, b, y: fused(
            h, k, y, bias=b, ignore_index=-100, reduction="none", chunk_size=2
        )
        return Case(fn, (h, k, b, y), (0, 1, 2))
    kw = {"label_smoothing": 0.1, "z_loss": 1e-3} if regime == "moderate" else {}
    fn = lambda h, k, b, y: fused(h, k, y, bias=b, chunk_size=2, **kw)
    ref = lambda h, k, b, y: jnp.mean(
        _ce_ref(h @ k + b[None, :], y, eps=kw.get("label_smoothing", 0.0), z=kw.get("z_loss", 0.0))
    )
    # second order: moderate (the "fused" strategy) and masked ("recompute")
    return Case(fn, (h, k, b, y), (0, 1, 2), ref, order=1 if regime == "large" else 2)


def _mesh():
    return jax.make_mesh((1,), ("v",), axis_types=(jax.sharding.AxisType.Auto,))


def _b_vocab_parallel(regime, rng):
    x = _logits(rng, regime)
    y = jnp.asarray(rng.integers(0, 5, size=4))
    vp = jaxloss.vocab_parallel_softmax_cross_entropy
    if regime == "masked":
        y = y.at[0].set(-100)

        def fn(x, y, m):
            return jax.shard_map(
                lambda x, y, m: vp(
                    x, y, axis_name="v", where=m, ignore_index=-100, reduction="mean"
                ),
                mesh=_mesh(),
                in_specs=(P(None, "v"), P(), P(None, "v")),
                out_specs=P(),
            )(x, y, m)

        return Case(fn, (f32(x), y, jnp.asarray(MASK)))

    def fn(x, y):
        return jax.shard_map(
            lambda x, y: vp(x, y, axis_name="v", z_loss=1e-3),
            mesh=_mesh(),
            in_specs=(P(None, "v"), P()),
            out_specs=P(),
        )(x, y)

    return Case(fn, (f32(x), y), 0, lambda x, y: _ce_ref(x, y, z=1e-3))


def _b_vocab_parallel_fused(regime, rng):
    h, k, b, y = _fused_inputs(rng, regime)
    vpf = jaxloss.vocab_parallel_fused_linear_softmax_cross_entropy
    ii = -100 if regime == "masked" else None
    if regime == "masked":
        y = y.at[2].set(-100)

    def fn(h, k, b, y):
        return jax.shard_map(
            lambda h, k, b, y: vpf(
                h, k, y, axis_name="v", bias_shard=b, ignore_index=ii, chunk_size=2
            ),
            mesh=_mesh(),
            in_specs=(P(), P(None, "v"), P("v"), P()),
            out_specs=P(),
        )(h, k, b, y)

    ref = None if ii is not None else (lambda h, k, b, y: jnp.mean(_ce_ref(h @ k + b[None, :], y)))
    return Case(fn, (h, k, b, y), (0, 1, 2), ref, order=1 if regime == "large" else 2)


BUILDERS: dict[str, Callable[[str, np.random.Generator], Case | None]] = {
    "softmax_cross_entropy": _b_softmax_ce,
    "softmax_cross_entropy_with_integer_labels": _b_int_ce,
    "nll_loss": _b_nll,
    "softmax_focal_loss": _b_softmax_focal,
    "multiclass_hinge_loss": _b_multiclass_hinge,
    "kl_divergence": _b_kl,
    "sigmoid_binary_cross_entropy": _b_sigmoid_bce,
    "binary_cross_entropy": _b_bce,
    "sigmoid_focal_loss": _b_sigmoid_focal,
    "hinge_loss": _hinge_builder("hinge_loss", 1),
    "squared_hinge_loss": _hinge_builder("squared_hinge_loss", 2),
    "squared_error": _regression_builder("squared_error", lambda p, t: (p - t) ** 2),
    "l2_loss": _regression_builder("l2_loss", lambda p, t: 0.5 * (p - t) ** 2),
    "absolute_error": _regression_builder("absolute_error", lambda p, t: jnp.abs(p - t)),
    "huber_loss": _regression_builder("huber_loss", _huber_ref, delta=1.5),
    "smooth_l1_loss": _regression_builder("smooth_l1_loss", _smooth_l1_ref, beta=0.5),
    "log_cosh": _regression_builder(
        "log_cosh", lambda p, t: jnp.logaddexp(p - t, t - p) - jnp.log(2.0)
    ),
    "poisson_nll_loss": _b_poisson,
    "gaussian_nll_loss": _b_gaussian_nll,
    "fused_linear_softmax_cross_entropy": _b_fused,
    "vocab_parallel_softmax_cross_entropy": _b_vocab_parallel,
    "vocab_parallel_fused_linear_softmax_cross_entropy": _b_vocab_parallel_fused,
}

# Public callables that are not losses.
NOT_LOSSES = {"version"}


def public_losses() -> list[str]:
    return sorted(
        name
        for name, obj in vars(jaxloss).items()
        if not name.startswith("_")
        and inspect.isfunction(obj)
        and obj.__module__.startswith("jaxloss")
        and name not in NOT_LOSSES
    )


def _cases():
    out = []
    for name in BUILDERS:
        if not hasattr(jaxloss, name):
            continue
        for regime in REGIMES:
            rng = np.random.default_rng(zlib.crc32(f"{name}/{regime}".encode()))
            if BUILDERS[name](regime, rng) is not None:
                out.append(pytest.param(name, regime, id=f"{name}-{regime}"))
    return out


def test_every_public_loss_has_a_builder():
    missing = [n for n in public_losses() if n not in BUILDERS]
    assert not missing, f"add gradcheck builders for {missing} in tests/test_gradcheck.py"


@pytest.mark.parametrize(("name", "regime"), _cases())
def test_gradcheck_every_loss(name, regime):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{regime}".encode()))
    case = BUILDERS[name](regime, rng)
    # jax.test_util.check_grads repeats the finite-difference rows at twice their
    # cost; test_jax_check_grads_row runs it on real losses.
    r = gradcheck(
        case.fn,
        *case.args,
        argnums=case.argnums,
        reference=case.reference,
        order=case.order,
        jax_check_grads=False,
    )
    assert r.ok, f"\n{r}"
    if case.reference is not None:
        assert "vjp vs reference" in r.errors


@pytest.mark.parametrize("name", ["binary_cross_entropy"])
def test_jax_check_grads_row(name):
    rng = np.random.default_rng(zlib.crc32(f"{name}/moderate".encode()))
    case = BUILDERS[name]("moderate", rng)
    r = gradcheck(case.fn, *case.args, argnums=case.argnums)
    assert r["jax check_grads"].ok, f"\n{r}"
    assert r.ok


# Derivatives with respect to the labels at hard (0/1) labels, where a term's
# coefficient is exactly 0 and a rule may drop its derivative (a 0 * inf guard
# that also zeroes d/dt). The sweep above uses soft labels for the label rows.
_X2 = [[2.0, -1.0, 0.5], [0.1, 0.3, -0.2]]
HARD_LABEL_CASES = {
    "softmax_cross_entropy": lambda: (
        jaxloss.softmax_cross_entropy,
        f32(_X2),
        f32([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
        lambda x, t: jnp.sum(-t * jax.nn.log_softmax(x), -1),
    ),
    "sigmoid_binary_cross_entropy": lambda: (
        jaxloss.sigmoid_binary_cross_entropy,
        f32(_X2),
        f32([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]),
        lambda x, y: y * _softplus(-x) + (1 - y) * _softplus(x),
    ),
}


@pytest.mark.parametrize("name", sorted(HARD_LABEL_CASES))
def test_label_derivative_at_hard_labels(name):
    fn, x, t, ref = HARD_LABEL_CASES[name]()
    r = gradcheck(fn, x, t, argnums=1, reference=ref, order=1, jax_check_grads=False)
    assert r.ok, f"\n{r}"

"""Edge cases found by an outside property sweep: each row gives the true value.

Every expected value comes from a float64 formula written out here (numpy), or
from the same loss on an equivalent input (integer-label CE is exact where the
focal loss is compared with it). Each case runs eagerly and under ``jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss

INF = np.inf
f32 = lambda a: jnp.asarray(a, jnp.float32)


def _both(fn, *args):
    """``fn(*args)`` eagerly and under ``jit``: both results, as numpy."""
    return np.asarray(fn(*args)), np.asarray(jax.jit(fn)(*args))


def _lse(a):
    m = np.max(a, axis=-1, keepdims=True)
    return (m + np.log(np.sum(np.exp(a - m), axis=-1, keepdims=True)))[..., 0]


def test_r1_softmax_focal_row_without_classes_does_not_count():
    x = f32([[-INF, -INF, -INF], [0.0, 1.0, 2.0]])
    y = jnp.array([0, 2])
    fn = lambda x: jaxloss.softmax_focal_loss(x, y, reduction="mean")
    # focal loss of the second row alone (gamma = 2): -(1 - p)^2 log p
    p = np.exp(2.0 - _lse(np.array([0.0, 1.0, 2.0])))
    want = -((1.0 - p) ** 2) * np.log(p)
    for got in _both(fn, x):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    for grad in _both(jax.grad(fn), x):
        assert np.all(grad[0] == 0.0) and np.isfinite(grad).all()


def test_r2_probability_ce_row_without_classes_does_not_count():
    x = f32([[-INF, -INF], [0.0, 0.0]])
    t = f32([[0.0, 0.0], [1.0, 0.0]])
    for kw in ({}, {"where": jnp.array([[True, True], [True, True]])}):
        fn = lambda x, kw=kw: jaxloss.softmax_cross_entropy(x, t, reduction="mean", **kw)
        for got in _both(fn, x):
            np.testing.assert_allclose(got, np.log(2.0), rtol=1e-6)


@pytest.mark.parametrize("log_target", [False, True])
def test_r3_kl_target_gradient_is_zero_on_masked_classes(log_target):
    lp = f32([0.0, -INF])
    t = np.array([0.5, 0.5])
    where = jnp.array([True, False])
    targets = f32(np.log(t) if log_target else t)
    fn = lambda t_: jaxloss.kl_divergence(lp, t_, where=where, log_target=log_target).sum()
    # d/dt [t (log t - lp)] = log t + 1 - lp; with log targets times e^lt
    d0 = np.log(0.5) + 1.0 - 0.0
    want = [d0 * (0.5 if log_target else 1.0), 0.0]
    for grad in _both(jax.grad(fn), targets):
        np.testing.assert_allclose(grad, want, rtol=1e-6)


def test_r4_kl_log_target_underflow_gives_inf():
    fn = lambda lp, t: jaxloss.kl_divergence(lp, t, log_target=True)
    # e^-200 (-200 - (-inf)) = +inf in exact arithmetic
    for got in _both(fn, f32([0.0, -INF]), f32([0.0, -200.0])):
        assert got == INF


def test_r5_sigmoid_focal_zero_alpha_t_at_infinite_logits():
    fn = lambda x: jaxloss.sigmoid_focal_loss(x, f32([0.0, 1.0]), alpha=1.0)
    # alpha_t = alpha y + (1 - alpha)(1 - y): 0 for y = 0; y = 1 at x = -inf is inf
    for got in _both(fn, f32([INF, -INF])):
        np.testing.assert_array_equal(got, [0.0, INF])


def test_r6_bce_zero_weight_times_huge_loss_is_zero():
    def fn(x):
        return jaxloss.sigmoid_binary_cross_entropy(
            x, f32([1.0, 1.0]), pos_weight=2.0, weight=f32([0.0, 1.0]), reduction="sum"
        )

    want = 2.0 * np.log1p(np.exp(-0.5))  # pos_weight * softplus(-x) at x = 0.5
    for got in _both(fn, f32([-3e38, 0.5])):
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("fused", ["fused", "vocab_parallel_fused"])
def test_r7_fused_with_minus_inf_bias(fused):
    h = f32([[1.0, 0.0], [0.0, 1.0]])
    w = f32([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    b = f32([0.0, 0.0, -INF])
    y = jnp.array([0, 1])

    def fn(h, w, b, y):
        if fused == "fused":
            return jaxloss.fused_linear_softmax_cross_entropy(
                h, w, y, bias=b, label_smoothing=0.1, reduction="none"
            )
        from jax.sharding import PartitionSpec as P

        mesh = jax.make_mesh((1,), ("v",), axis_types=(jax.sharding.AxisType.Auto,))
        return jax.shard_map(
            lambda h, w, b, y: jaxloss.vocab_parallel_fused_linear_softmax_cross_entropy(
                h, w, y, axis_name="v", bias_shard=b, label_smoothing=0.1, reduction="none"
            ),
            mesh=mesh,
            in_specs=(P(), P(None, "v"), P("v"), P()),
            out_specs=P(),
        )(h, w, b, y)

    # CE with smoothing over the K = 2 classes whose logit is finite (float64)
    s = np.asarray(h, np.float64) @ np.asarray(w, np.float64)
    s = s[:, :2]
    lse = _lse(s)
    want = 0.9 * (lse - s[[0, 1], [0, 1]]) + 0.1 * np.mean(lse[:, None] - s, axis=-1)
    for got in _both(fn, h, w, b, y):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # a row whose only class has bias -inf: 0, not NaN
    one = fn(f32([[1.0, 1.0]]), f32([[1.0], [1.0]]), f32([-INF]), jnp.array([0]))
    np.testing.assert_array_equal(np.asarray(one), [0.0])


def test_r8_poisson_zero_log_zero():
    fn = lambda x: jaxloss.poisson_nll_loss(x, f32([0.0]), log_input=False, eps=0.0).sum()
    # x - t log(x + eps) with 0 log 0 = 0: value 0, d/dx = 1
    for got in _both(fn, f32([0.0])):
        assert got == 0.0
    for grad in _both(jax.grad(fn), f32([0.0])):
        np.testing.assert_array_equal(grad, [1.0])


def test_r9_gaussian_nll_large_error_and_variance():
    # inputs traced (not closed over) so that XLA does not fold (x - t)^2 to inf
    fn = lambda x, v: jaxloss.gaussian_nll_loss(x, f32([0.0]), v).sum()
    x, v = f32([1e20]), 1e30
    want = 0.5 * (np.log(v) + 1e40 / v)  # 0.5 (log var + (x - t)^2 / var)
    dwant = 0.5 * (1.0 / v - 1e40 / v**2)
    for got in _both(fn, x, f32([v])):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    for grad in _both(jax.grad(fn, argnums=1), x, f32([v])):
        np.testing.assert_allclose(grad, [dwant], rtol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 1e6, 1e7, 1e8])
def test_r14_softmax_focal_of_equal_logits_is_exact(scale):
    x = jnp.full((1, 3), scale, jnp.float32)
    y = jnp.array([0])
    fn = lambda x: jaxloss.softmax_focal_loss(x, y).sum()
    p = 1.0 / 3.0  # equal logits: p_y = 1/3 at any scale
    want = -((1.0 - p) ** 2) * np.log(p)
    for got in _both(fn, x):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    for grad in _both(jax.grad(fn), x):
        np.testing.assert_allclose(grad.sum(), 0.0, atol=1e-6)


@pytest.mark.parametrize("vp", [False, True])
def test_r15_fused_with_huge_equal_logits(vp):
    h, w, y = f32([[1e7]]), jnp.ones((1, 4), jnp.float32), jnp.array([0])
    fn = lambda h: jaxloss.fused_linear_softmax_cross_entropy(h, w, y, reduction="none")
    if vp:
        from jax.sharding import PartitionSpec as P

        mesh = jax.make_mesh((1,), ("v",), axis_types=(jax.sharding.AxisType.Auto,))
        fn = jax.shard_map(
            lambda h: jaxloss.vocab_parallel_fused_linear_softmax_cross_entropy(
                h, w, y, axis_name="v", reduction="none"
            ),
            mesh=mesh,
            in_specs=P(),
            out_specs=P(),
        )
    # four equal logits: lse - s_y = log 4, and the gradient is 0
    for got in _both(fn, h):
        np.testing.assert_allclose(got, [np.log(4.0)], rtol=1e-6)
    for grad in _both(jax.grad(lambda h: fn(h).sum()), h):
        np.testing.assert_allclose(grad, [[0.0]], atol=1e-6)


def test_log_cosh_slope_below_the_loss_underflow():
    e = f32([1e-20, -1e-25])
    for grad in _both(jax.grad(lambda e: jaxloss.log_cosh(e).sum()), e):
        np.testing.assert_allclose(grad, np.tanh(np.asarray(e, np.float64)), rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: jaxloss.softmax_cross_entropy(f32(np.zeros((2, 0))), f32(np.zeros((2, 0)))),
         "logits has no classes"),
        (lambda: jaxloss.softmax_cross_entropy_with_integer_labels(
            f32(np.zeros((2, 0))), jnp.zeros((2,), jnp.int32)), "logits has no classes"),
        (lambda: jaxloss.fused_linear_softmax_cross_entropy(
            f32(np.zeros((2, 3))), f32(np.zeros((3, 0))), jnp.zeros((2,), jnp.int32)),
         "kernel has no classes"),
        (lambda: jaxloss.nll_loss(f32(1.0), jnp.int32(0)), "log_probs must have at least"),
        (lambda: jaxloss.gaussian_nll_loss(f32([0.0]), f32([0.0]), None), "var must be"),
        (lambda: jaxloss.gaussian_nll_loss(f32([0.0]), f32([0.0]), f32([np.nan])), "var has NaN"),
        (lambda: jaxloss.gaussian_nll_loss(f32([0.0]), f32([0.0]), f32([0.0]), eps=0.0),
         "eps=0"),
        (lambda: jaxloss.sigmoid_focal_loss(f32([0.0]), f32([0.0]), alpha=np.nan), "alpha"),
        (lambda: jaxloss.softmax_focal_loss(f32([[0.0, 1.0]]), jnp.array([0]),
                                            alpha=f32([np.nan, 1.0])), "alpha"),
        (lambda: jaxloss.binary_cross_entropy(f32([np.nan]), f32([0.0])), "probs must lie"),
    ],
)  # fmt: skip
def test_clear_errors(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


@pytest.mark.parametrize(
    "fn",
    [
        jaxloss.sigmoid_binary_cross_entropy,
        jaxloss.binary_cross_entropy,
        jaxloss.sigmoid_focal_loss,
        jaxloss.hinge_loss,
        jaxloss.squared_hinge_loss,
    ],
)
def test_string_labels_are_named(fn):
    # optax's names for the hinge losses' labels: targets
    name = "targets" if "hinge" in fn.__name__ else "labels"
    with pytest.raises(TypeError, match=name):
        fn(f32([0.5, 0.5]), ["a", "b"])


def test_every_row_ignored_gives_zero_mean_and_zero_gradient():
    x = f32([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = jnp.array([-1, -1])
    fn = lambda x: jaxloss.softmax_cross_entropy_with_integer_labels(
        x, y, ignore_index=-1, reduction="mean"
    )
    for got in _both(fn, x):
        assert got == 0.0
    for grad in _both(jax.grad(fn), x):
        assert np.all(grad == 0.0)


@pytest.mark.parametrize("name", ["squared_error", "huber_loss", "log_cosh"])
def test_bf16_broadcast_target_gradient_is_summed_in_float32(name):
    fn = getattr(jaxloss, name)
    x = jnp.asarray(np.random.default_rng(0).normal(size=1000), jnp.bfloat16)
    t = jnp.bfloat16(0.3)
    got = jax.grad(lambda t: fn(x, t).sum())(t)
    # float64 gradient of the same bf16 inputs, rounded once to bf16
    x64, t64 = np.asarray(x, np.float64), float(t)
    ref = {
        "squared_error": lambda: np.sum(-2.0 * (x64 - t64)),
        "huber_loss": lambda: np.sum(-np.clip(x64 - t64, -1.0, 1.0)),
        "log_cosh": lambda: np.sum(-np.tanh(x64 - t64)),
    }[name]()
    assert got.dtype == jnp.bfloat16
    assert float(got) == float(jnp.bfloat16(ref)), (float(got), ref)


def test_mean_near_the_float_limit_is_finite_when_the_mean_is():
    x = f32([-3.4e38, 3.4e38, 1.0])
    y = f32([1.0, -1.0, 1.0])
    fn = lambda x: jaxloss.hinge_loss(x, y, reduction="mean")
    # max(0, 1 - y x) in float64, then the mean: 2.27e38 (the sum, 6.8e38, overflows)
    want = np.mean(np.maximum(0.0, 1.0 - np.asarray(y, np.float64) * np.asarray(x, np.float64)))
    for got in _both(fn, x):
        np.testing.assert_allclose(got, want, rtol=1e-6)


# --------------------------------------------------------------------------
# Rows of the package's own property sweep (tests/sweep_summary.md)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_minus_inf_score_has_finite_gradient(p):
    x = f32([[-INF, 0.0, 0.5], [0.0, 1.0, 2.0]])
    y = jnp.array([1, 0])
    fn = lambda x: jaxloss.multi_margin_loss(x, y, p=p, reduction="sum")
    # float64: sum over c != y of max(0, 1 - s_y + s_c)^p / C; the -inf class is inactive
    x64, y64 = np.asarray(x, np.float64), np.asarray(y)
    z = 1.0 - x64[np.arange(2), y64][:, None] + x64
    active = (z > 0) & (np.arange(3)[None, :] != y64[:, None])
    want = np.sum(np.where(active, np.where(active, z, 0.0) ** p, 0.0)) / 3
    d = np.where(active, p * np.where(active, z, 0.0) ** (p - 1), 0.0) / 3  # d/ds_c
    want_grad = d.copy()
    want_grad[np.arange(2), y64] -= d.sum(axis=1)
    for got in _both(fn, x):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    for grad in _both(jax.grad(fn), x):
        np.testing.assert_allclose(grad, want_grad, rtol=1e-6)


def test_generalized_kl_masked_infinite_entry():
    lp = f32([[0.0, -1.0, INF]])
    t = f32([[0.5, 0.25, 0.2]])
    keep = jnp.array([[True, True, False]])
    fn = lambda lp: jaxloss.generalized_kl_divergence(lp, t, where=keep).sum()
    # float64 over the kept entries: t (log t - lp) - t + exp(lp); d/dlp = exp(lp) - t
    lp64, t64 = np.array([0.0, -1.0]), np.array([0.5, 0.25])
    want = np.sum(t64 * (np.log(t64) - lp64) - t64 + np.exp(lp64))
    for got in _both(fn, lp):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    for grad in _both(jax.grad(fn), lp):
        np.testing.assert_allclose(grad[0], [*(np.exp(lp64) - t64), 0.0], rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16])
def test_triplet_infinite_negative_leaves_an_inactive_hinge(dtype):
    a = jnp.zeros((2, 3), dtype)
    n = a.at[0, 0].set(INF)
    fn = lambda a: jaxloss.triplet_margin_loss(a, a, n).sum()
    # row 0: d(a, n) = inf, hinge inactive (0); row 1: d(a, p) = d(a, n), the margin (1)
    for got in _both(fn, a):
        assert got == 1.0
    for grad in _both(jax.grad(fn), a):
        assert np.all(np.asarray(grad, np.float32) == 0.0)
    # an infinite positive: inf loss; d/dpositive is that of max|d|, the norm's limit
    fp = lambda p: jaxloss.triplet_margin_loss(a, p, a).sum()
    for got in _both(fp, n):
        assert got == INF
    for grad in _both(jax.grad(fp), n):
        np.testing.assert_array_equal(np.asarray(grad, np.float32), [[1, 0, 0], [0, 0, 0]])


def test_ctc_infinite_logit_on_a_padded_frame():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 4, 3)).astype(np.float32)
    pad = jnp.array([[0.0, 0.0, 0.0, 1.0]])
    labels, label_pad = jnp.array([[1, 2]]), jnp.zeros((1, 2))
    fn = lambda x: jaxloss.ctc_loss(x, pad, labels, label_pad).sum()
    dirty = f32(logits).at[0, 3, 1].set(INF)
    # the padded frame is never read: the loss of the three real frames alone
    want = jaxloss.ctc_loss(f32(logits[:, :3]), pad[:, :3], labels, label_pad).sum()
    want_grad = jax.grad(lambda x: jaxloss.ctc_loss(x, pad[:, :3], labels, label_pad).sum())(
        f32(logits[:, :3])
    )
    for got in _both(fn, dirty):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    grad = np.asarray(jax.jit(jax.grad(fn))(dirty))  # (an eager CTC gradient is slow to build)
    np.testing.assert_allclose(grad[:, :3], want_grad, rtol=1e-5, atol=1e-7)
    assert np.all(grad[:, 3] == 0.0)


def test_dice_probabilities_in_float16_pass_the_sum_check():
    # softmax rows rounded to float16: sums off by up to C * eps / 2, not by 1e-5
    p = jax.nn.softmax(jnp.asarray(np.random.default_rng(0).normal(size=(4, 7))), axis=-1)
    p16 = p.astype(jnp.float16)
    assert np.max(np.abs(np.sum(np.asarray(p16, np.float64), -1) - 1)) > 1e-5
    t = jax.nn.one_hot(jnp.arange(4) % 7, 7, dtype=jnp.float16)
    got = jaxloss.dice_loss(p16, t, apply_softmax=False)
    # the same loss on the same values in float32, under jit (where no check runs)
    dice = lambda p, t: jaxloss.dice_loss(p, t, apply_softmax=False)
    want = jax.jit(dice)(p16.astype(jnp.float32), t.astype(jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="sum to 1"):
        jaxloss.dice_loss(p16 * 1.1, t, apply_softmax=False)


@pytest.mark.parametrize(
    "name", ["softmax_cross_entropy_with_integer_labels", "softmax_cross_entropy", "nll_loss"]
)
def test_nan_logit_gives_nan_not_zero(name):
    # a NaN input has no true value: the row's loss is NaN (as jax.nn.log_softmax's),
    # never a silent 0 that drops the row from the mean
    x = f32([[np.nan, 0.0], [0.0, 1.0]])
    y = jnp.array([0, 1]) if name != "softmax_cross_entropy" else f32([[1, 0], [0, 1]])
    fn = lambda x: getattr(jaxloss, name)(x, y)
    for got in _both(fn, x):
        assert np.isnan(got[0]) and np.isfinite(got[1])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_triplet_with_distance_of_huge_differences_is_finite(dtype):
    a = jnp.asarray([[1e30, 2e30]], dtype)
    p = jnp.zeros((1, 2), dtype)
    n = jnp.asarray([[0.0, 3e30]], dtype)
    fn = lambda a: jaxloss.triplet_margin_with_distance_loss(a, p, n).sum()
    # float64: ||a - p + eps|| - ||a - n + eps|| + 1 (eps = 1e-6 is lost at this scale)
    a64, p64, n64 = (np.asarray(v, np.float64) for v in (a, p, n))
    want = np.linalg.norm(a64 - p64) - np.linalg.norm(a64 - n64) + 1.0
    for got in _both(fn, a):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # d/da = (a - p) / ||a - p|| - (a - n) / ||a - n||: unit vectors, finite
    u = lambda v: v / np.linalg.norm(v)
    want_grad = u(a64 - p64) - u(a64 - n64)
    for grad in _both(jax.grad(fn), a):
        np.testing.assert_allclose(np.asarray(grad, np.float64), want_grad, rtol=1e-2, atol=1e-2)

"""Softmax cross-entropy (integer and probability labels) and NLL.

References: PyTorch and optax called side by side in float64, a plain float64
formula differentiated by JAX (z-loss, soft cap, masks), and the worked numbers
of DESIGN.md.
"""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from _helpers import all_finite, close, large_residuals, rng, tt
from jax.experimental import checkify
from jax.test_util import check_grads

import jaxloss as jl

ce_int = jl.softmax_cross_entropy_with_integer_labels
ce_prob = jl.softmax_cross_entropy
nll = jl.nll_loss

REDUCTIONS = ("none", "sum", "mean")
N, C = 7, 5
# Labels for each ignore_index used below: -100 is PyTorch's default, 2 is a
# real class whose rows are then ignored.
LABELS = {
    None: [0, 2, 4, 1, 2, 3, 0],
    -100: [0, 2, 4, -100, 2, 3, -100],
    2: [0, 2, 4, 1, 2, 3, 0],
}


def softmax(a, axis=-1):
    """Probability rows from numpy (setup stays out of JAX's op-by-op compiles)."""
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def value_and_vjp(f, *args, seed=1):
    """Loss and the vector-Jacobian product with a random cotangent (one per output)."""
    out, vjp = jax.vjp(f, *args)
    ct = rng(seed).normal(size=out.shape)
    return out, vjp(jnp.asarray(ct, out.dtype)), ct


def vjp_all(fns, *args, seed=1):
    """Each function's value and its vector-Jacobian product with respect to every
    argument, all in one compiled program: op-by-op dispatch would compile every
    primitive anew for each shape and transformation, which costs far more than
    one jit here. Functions with the same output shape get the same random
    cotangent, so their gradients compare directly."""
    cts = [rng(seed).normal(size=jax.eval_shape(f, *args).shape) for f in fns]

    @jax.jit
    def run(*args):
        results = []
        for f, ct in zip(fns, cts, strict=True):
            value, vjp = jax.vjp(f, *args)
            results.append((value, vjp(jnp.asarray(ct, value.dtype))))
        return results

    return run(*args)


# --------------------------------------------------------------------------
# float64 reference formula (written out, differentiated by plain autodiff)
# --------------------------------------------------------------------------


def ref_int_ce(
    x,
    y,
    *,
    weight=None,
    ignore_index=None,
    eps=0.0,
    z=0.0,
    cap=None,
    where=None,
    reduction="none",
):
    """PyTorch's label-smoothed weighted CE + PaLM z-loss on Gemma-2 soft-capped logits."""
    num = x.shape[-1]
    s = x if cap is None else cap * jnp.tanh(x / cap)
    valid = jnp.ones(x.shape, bool) if where is None else jnp.broadcast_to(where, x.shape)
    valid = valid & (s != -jnp.inf)
    lse = jax.nn.logsumexp(s, axis=-1, where=valid)  # only for the z-loss term
    # log_softmax subtracts the max first: exact near the max even for huge logits.
    logp = jnp.where(valid, jax.nn.log_softmax(s, axis=-1, where=valid), 0.0)
    w = jnp.ones((num,), x.dtype) if weight is None else jnp.asarray(weight, x.dtype)
    active = jnp.ones(y.shape, bool) if ignore_index is None else y != ignore_index
    ys = jnp.where(active, y, 0)
    w_y = jnp.where(active, w[ys], 0.0)
    picked = jnp.take_along_axis(logp, ys[..., None], axis=-1)[..., 0]
    k = jnp.sum(valid, axis=-1).astype(x.dtype)
    smooth = -jnp.sum(jnp.where(valid, jnp.broadcast_to(w, x.shape) * logp, 0.0), axis=-1) / k
    loss = (1 - eps) * w_y * -picked + eps * smooth + z * w_y * lse**2
    loss = jnp.where(active, loss, 0.0)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / w_y.sum()
    return loss


# --------------------------------------------------------------------------
# Parity with PyTorch (float64, values and gradients)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("ignore_index", [None, -100, 2])
@pytest.mark.parametrize("use_weight", [False, True])
def test_integer_ce_matches_torch(use_weight, ignore_index):
    # Every combination of PyTorch's options: weight x ignore_index (parameters)
    # x label_smoothing x reduction (one compiled program per parameter pair).
    r = rng(10 + 3 * use_weight + (ignore_index or 0) % 7)
    x = 3.0 * r.normal(size=(N, C))
    y = np.array(LABELS[ignore_index])
    w = r.uniform(0.2, 2.0, size=C) if use_weight else None
    combos = [(eps, red) for eps in (0.0, 0.15) for red in REDUCTIONS]
    fns = [
        functools.partial(
            ce_int,
            labels=jnp.asarray(y),
            weight=None if w is None else jnp.asarray(w),
            ignore_index=ignore_index,
            label_smoothing=eps,
            reduction=red,
        )
        for eps, red in combos
    ]
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    for (eps, red), (loss, (gx,)) in zip(combos, vjp_all(fns, jnp.asarray(x)), strict=True):
        assert loss.dtype == jnp.float64
        ct = rng(1).normal(size=loss.shape)  # vjp_all's cotangent
        xt = tt(x, grad=True)
        weight = None if w is None else tt(w)
        lt = F.cross_entropy(xt, tt(y), weight=weight, label_smoothing=eps, reduction=red, **kwargs)
        (lt * tt(ct)).sum().backward()
        combo = f"label_smoothing={eps}, reduction={red}"
        close(loss, lt.detach().numpy(), err_msg=combo)
        close(gx, xt.grad.numpy(), err_msg=combo)


def test_integer_ce_spatial_class_axis_matches_torch():
    # PyTorch's K-dimensional case: input [N, C, d], target [N, d]; here axis=1.
    r = rng(3)
    x = r.normal(size=(3, C, 4))
    y = r.integers(0, C, size=(3, 4))
    y[0, 1] = y[2, 3] = -100
    w = r.uniform(0.5, 1.5, size=C)
    opts = {"weight": jnp.asarray(w), "ignore_index": -100, "label_smoothing": 0.1}
    fns = [
        functools.partial(ce_int, labels=jnp.asarray(y), axis=1, reduction=red, **opts)
        for red in REDUCTIONS
    ]
    for reduction, (loss, (gx,)) in zip(REDUCTIONS, vjp_all(fns, jnp.asarray(x)), strict=True):
        ct = rng(1).normal(size=loss.shape)  # vjp_all's cotangent
        xt = tt(x, grad=True)
        lt = F.cross_entropy(xt, tt(y), weight=tt(w), label_smoothing=0.1, reduction=reduction)
        (lt * tt(ct)).sum().backward()
        close(loss, lt.detach().numpy())
        close(gx, xt.grad.numpy())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [None, -100, 2])
@pytest.mark.parametrize("use_weight", [False, True])
def test_nll_matches_torch(use_weight, ignore_index, reduction):
    r = rng(11)
    # nll_loss reads whatever it is given: arbitrary scores, not only log-probabilities.
    lp = r.normal(size=(N, C))
    y = np.array(LABELS[ignore_index])
    w = r.uniform(0.2, 2.0, size=C) if use_weight else None

    def f(lp):
        return nll(
            lp,
            jnp.asarray(y),
            weight=None if w is None else jnp.asarray(w),
            ignore_index=ignore_index,
            reduction=reduction,
        )

    loss, (g,), ct = value_and_vjp(f, jnp.asarray(lp))
    lpt = tt(lp, grad=True)
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    lt = F.nll_loss(lpt, tt(y), weight=None if w is None else tt(w), reduction=reduction, **kwargs)
    (lt * tt(ct)).sum().backward()
    close(loss, lt.detach().numpy())
    close(g, lpt.grad.numpy())


def test_probability_ce_matches_torch():
    r = rng(5)
    x = 2.0 * r.normal(size=(N, C))
    t = softmax(3.0 * r.normal(size=(N, C)))
    combos = [(eps, red) for eps in (0.0, 0.2) for red in REDUCTIONS]
    fns = [functools.partial(ce_prob, label_smoothing=e, reduction=red) for e, red in combos]
    results = vjp_all(fns, jnp.asarray(x), jnp.asarray(t))
    for (eps, red), (loss, (gx, gt)) in zip(combos, results, strict=True):
        ct = rng(1).normal(size=loss.shape)  # vjp_all's cotangent
        xt, tgt = tt(x, grad=True), tt(t, grad=True)
        lt = F.cross_entropy(xt, tgt, label_smoothing=eps, reduction=red)
        (lt * tt(ct)).sum().backward()
        combo = f"label_smoothing={eps}, reduction={red}"
        close(loss, lt.detach().numpy(), err_msg=combo)
        close(gx, xt.grad.numpy(), err_msg=combo)
        # The gradient with respect to the targets (distillation) as well.
        close(gt, tgt.grad.numpy(), err_msg=combo)


def test_mean_with_nothing_counted_is_zero_where_torch_gives_nan():
    x = jnp.asarray(rng(2).normal(size=(3, C)))
    y = jnp.array([-100, -100, -100])
    fns = [
        lambda x: ce_int(x, y, ignore_index=-100, reduction="mean"),
        lambda x: ce_int(
            x, y, ignore_index=-100, label_smoothing=0.1, z_loss=0.1, reduction="mean"
        ),
        lambda x: nll(x, y, ignore_index=-100, reduction="mean"),
    ]
    for value, (grad,) in vjp_all(fns, x):
        assert value == 0.0
        assert jnp.all(grad == 0.0)
    # Documented difference: PyTorch divides 0 by 0.
    xt = tt(np.asarray(x), grad=True)
    assert torch.isnan(F.cross_entropy(xt, tt(np.asarray(y)), reduction="mean"))


def test_mean_zero_when_every_row_is_masked():
    x = jnp.asarray(rng(2).normal(size=(3, C)))
    y = jnp.array([0, 1, 2])
    m = jnp.zeros((3, C), bool)
    fns = [
        lambda x: ce_int(x, y, where=m, label_smoothing=0.1, z_loss=0.1, reduction="mean"),
        lambda x: ce_int(jnp.where(m, x, -jnp.inf), y, label_smoothing=0.1, reduction="mean"),
        lambda x: ce_prob(x, jnp.asarray(np.eye(C)[np.asarray(y)]), where=m, reduction="mean"),
    ]
    for value, (grad,) in vjp_all(fns, x):
        assert value == 0.0
        assert jnp.all(grad == 0.0)


def _ref_prob_row(x, t, *, weight=None, eps=0.0, z=0.0, poly=0.0):
    """float64 loss and gradient of one row with every class allowed:
    ``sum_c q_c (lse - x_c) + z lse^2 + poly sum_c t_c (1 - p_c)``,
    ``q = w ((1 - eps) t + eps / C)`` (PyTorch's weighted, smoothed CE, PaLM's
    z-loss, PolyLoss); gradient ``p sum(q) - q + 2 z lse p + poly (p sum(t p) - t p)``."""
    c = x.shape[-1]
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    q = w * ((1 - eps) * t + eps / c)
    m = x.max()
    lse = m + np.log(np.exp(x - m).sum())
    p = np.exp(x - lse)
    loss = (q * (lse - x)).sum() + z * lse**2 + poly * (t * (1 - p)).sum()
    grad = p * q.sum() - q + 2 * z * lse * p + poly * (p * (t * p).sum() - t * p)
    return loss, grad


W3 = np.array([0.5, 2.0, 1.5])
NO_CLASS_CASES = {
    "plain": (lambda x, t: ce_prob(x, t), {}),
    "weight": (lambda x, t: ce_prob(x, t, weight=jnp.asarray(W3)), {"weight": W3}),
    "smoothing": (lambda x, t: ce_prob(x, t, label_smoothing=0.1), {"eps": 0.1}),
    "z_loss": (lambda x, t: ce_prob(x, t, z_loss=0.05), {"z": 0.05}),
    "all": (
        lambda x, t: ce_prob(x, t, weight=jnp.asarray(W3), label_smoothing=0.1, z_loss=0.05),
        {"weight": W3, "eps": 0.1, "z": 0.05},
    ),
    "safe": (lambda x, t: jl.safe_softmax_cross_entropy(x, t), {}),
    "poly": (lambda x, t: jl.poly_loss_cross_entropy(x, t, epsilon=2.0), {"poly": 2.0}),
}


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("case", sorted(NO_CLASS_CASES))
def test_row_without_allowed_class_has_zero_gradient(case, jit):
    """A row whose logits are all ``-inf`` gives 0 and does not count, so its
    derivatives (logits and targets, reverse and forward mode) are 0 too, even
    with a positive target; the other row is the float64 formula."""
    f, ref_kw = NO_CLASS_CASES[case]
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.3, -1.2, 0.8]])
    t = np.array([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0]])
    d = rng(7).normal(size=x.shape)

    def run(x, t, d):
        loss, vjp = jax.vjp(f, x, t)
        gx, gt = vjp(jnp.ones_like(loss))
        _, tangent = jax.jvp(lambda v: f(v, t), (x,), (d,))
        return loss, gx, gt, tangent

    run = jax.jit(run) if jit else run
    loss, gx, gt, tangent = run(jnp.asarray(x), jnp.asarray(t), jnp.asarray(d))
    ref_loss, ref_grad = _ref_prob_row(x[1], t[1], **ref_kw)
    assert loss[0] == 0.0
    np.testing.assert_array_equal(gx[0], np.zeros(3))
    np.testing.assert_array_equal(gt[0], np.zeros(3))
    assert tangent[0] == 0.0
    close(loss[1], ref_loss)
    close(gx[1], ref_grad)
    close(tangent[1], ref_grad @ d[1])


@pytest.mark.parametrize("f", [ce_int, jl.softmax_focal_loss])
def test_out_of_range_label_docstring_states_the_behaviour(f):
    """The docstring's out-of-range sentence is what the code does (DESIGN.md):
    under ``jit`` the row's loss is NaN and its gradient 0."""
    doc = " ".join(f.__doc__.split())
    assert "loss is NaN and its gradient 0" in doc
    assert "gradient are NaN" not in doc and "the row is NaN" not in doc
    x = jnp.asarray(rng(3).normal(size=(3, 4)))
    y = jnp.array([1, 4, 0])
    keep = jnp.array([True, False, True])

    @jax.jit
    def run(v, y):
        masked = lambda w: jnp.sum(jnp.where(keep, f(w, y), 0.0))
        return f(v, y), jax.grad(masked)(v)

    loss, grad = run(x, y)
    assert np.isnan(loss[1]) and np.isfinite(loss[keep]).all()
    np.testing.assert_array_equal(grad[1], np.zeros(4))
    assert np.isfinite(grad).all()


# --------------------------------------------------------------------------
# Parity with optax
# --------------------------------------------------------------------------


def class_mask(r, shape):
    m = r.random(shape) < 0.6
    m[..., 0] = True  # at least one allowed class per row (optax's gradient needs it)
    return m


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("axis", [-1, 0])
def test_probability_ce_matches_optax(axis, masked):
    r = rng(7)
    x = jnp.asarray(2.0 * r.normal(size=(4, 6)))
    t = jnp.asarray(softmax(r.normal(size=(4, 6)), axis=axis))
    moved = np.moveaxis(np.empty((4, 6)), axis, -1).shape  # classes last
    m = jnp.asarray(np.moveaxis(class_mask(r, moved), -1, axis)) if masked else None
    ours = functools.partial(ce_prob, axis=axis, where=m)
    ref = functools.partial(optax.losses.softmax_cross_entropy, axis=axis, where=m)
    (value, g_ours), (ref_value, g_ref) = vjp_all([ours, ref], x, t)
    close(value, ref_value)
    close(g_ours[0], g_ref[0])
    if m is None:
        close(g_ours[1], g_ref[1])
    else:
        # optax's label gradient is NaN on masked classes (0 * -inf); ours is 0 there.
        close(g_ours[1][m], g_ref[1][m])
        assert jnp.all(g_ours[1][~m] == 0.0)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("axis", [-1, 1])
def test_integer_ce_matches_optax(axis, masked):
    r = rng(8)
    shape = (3, 4, 5)
    x = jnp.asarray(2.0 * r.normal(size=shape))
    num = shape[axis]
    y = jnp.asarray(r.integers(0, num, size=np.delete(shape, axis)))
    m = None
    if masked:
        m = np.moveaxis(class_mask(r, [*np.delete(shape, axis).tolist(), num]), -1, axis)
        m = jnp.asarray(m)
    ours = functools.partial(ce_int, axis=axis, where=m)
    ref = functools.partial(optax.losses.softmax_cross_entropy_with_integer_labels, axis=axis)
    if m is not None:
        ref = functools.partial(ref, where=m)
    (value, g), (ref_value, g_ref) = vjp_all([lambda x: ours(x, y), lambda x: ref(x, y)], x)
    close(value, ref_value)
    close(g, g_ref)


def test_label_smoothing_matches_optax_smooth_labels():
    r = rng(9)
    x = jnp.asarray(2.0 * r.normal(size=(N, C)))
    y = jnp.asarray(r.integers(0, C, size=N))
    onehot = jnp.asarray(np.eye(C)[np.asarray(y)])
    t = jnp.asarray(softmax(r.normal(size=(N, C))))
    fns = []
    for alpha in (0.1, 0.5, 1.0):
        smoothed = functools.partial(optax.smooth_labels, alpha=alpha)
        fns += [
            functools.partial(ce_int, labels=y, label_smoothing=alpha),
            lambda x, s=smoothed: optax.losses.softmax_cross_entropy(x, s(onehot)),
            functools.partial(ce_prob, labels=t, label_smoothing=alpha),
            lambda x, s=smoothed: optax.losses.softmax_cross_entropy(x, s(t)),
        ]
    results = vjp_all(fns, x)
    for (value, g), (ref_value, g_ref) in zip(results[::2], results[1::2], strict=True):
        close(value, ref_value)
        close(g, g_ref)


# --------------------------------------------------------------------------
# z-loss and soft cap: float64 formula under jax.grad
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts",
    [
        {"z": 0.3, "cap": 2.0},
        {"z": 0.05, "cap": 1.5, "eps": 0.2, "weight": True, "ignore_index": -1},
        {"z": 0.05, "cap": 3.0, "eps": 0.1, "weight": True, "ignore_index": 1, "where": True},
    ],
)
def test_z_loss_and_softcap_match_formula(opts):
    r = rng(13)
    x = jnp.asarray(3.0 * r.normal(size=(N, C)))
    y = np.array([0, 2, 4, 1, -1, 3, 1])
    if opts.get("ignore_index") != -1:
        y[y < 0] = 0
    where = None
    if opts.get("where"):
        where = class_mask(r, (N, C))
        where[np.arange(N), y] = True
        where = jnp.asarray(where)
    y = jnp.asarray(y)
    common = {"ignore_index": opts.get("ignore_index"), "where": where}
    eps, z, cap = opts.get("eps", 0.0), opts.get("z", 0.0), opts.get("cap")
    # With class weights, their gradient (the rule's autodiff path) is compared too.
    args = (x, jnp.asarray(r.uniform(0.2, 2.0, size=C))) if opts.get("weight") else (x,)

    def ours(x, w=None, *, reduction):
        return ce_int(
            x, y, weight=w, label_smoothing=eps, z_loss=z, logit_softcap=cap,
            reduction=reduction, **common,
        )  # fmt: skip

    def ref(x, w=None, *, reduction):
        return ref_int_ce(x, y, weight=w, eps=eps, z=z, cap=cap, reduction=reduction, **common)

    # "sum" is the sum of "none" (checked against PyTorch above); "mean" divides.
    fns = [functools.partial(f, reduction=red) for red in ("none", "mean") for f in (ours, ref)]
    results = vjp_all(fns, *args)
    for (value, g), (ref_value, g_ref) in zip(results[::2], results[1::2], strict=True):
        close(value, ref_value)
        for a, b in zip(g, g_ref, strict=True):
            close(a, b)
    # Second order of the closed-form rule against autodiff of the formula.
    hessians = jax.jit(
        lambda *args: [
            jax.hessian(functools.partial(f, reduction="mean"))(*args) for f in (ours, ref)
        ]
    )(*args)
    close(*hessians, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("z", [0.0, 0.2])
def test_probability_ce_z_loss_matches_formula(z):
    r = rng(14)
    x = jnp.asarray(2.0 * r.normal(size=(N, C)))
    t = jnp.asarray(softmax(r.normal(size=(N, C))))

    def ref(x, t):
        t = 0.9 * t + 0.1 / C
        lse = jax.nn.logsumexp(x, axis=-1)
        return jnp.sum(t * (lse[..., None] - x), axis=-1) + z * lse**2

    def ours(x, t):
        return ce_prob(x, t, label_smoothing=0.1, z_loss=z)

    (value, g), (ref_value, g_ref) = vjp_all([ours, ref], x, t)
    close(value, ref_value)
    close(g[0], g_ref[0])
    close(g[1], g_ref[1])


# --------------------------------------------------------------------------
# Worked numbers (DESIGN.md, "Worked examples from the source tutorials")
# --------------------------------------------------------------------------


def test_design_worked_cross_entropy_numbers():
    # Target (1, 0, 0): prediction (0.5, 0.4, 0.1) gives 0.693, (0.8, 0.1, 0.1) gives 0.223.
    target = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    log_pred = np.log(np.array([[0.5, 0.4, 0.1], [0.8, 0.1, 0.1]]))
    y = np.array([0, 0])
    values = jax.jit(lambda: (ce_prob(log_pred, target), ce_int(log_pred, y), nll(log_pred, y)))()
    for value in values:
        close(value, [0.693, 0.223], rtol=0, atol=5e-4)


# --------------------------------------------------------------------------
# Numerical gradient checks, second order, forward and reverse
# --------------------------------------------------------------------------


def test_check_grads_integer_ce_all_options():
    r = rng(15)
    x = jnp.asarray(r.normal(size=(4, 5)))
    w = jnp.asarray(r.uniform(0.5, 2.0, size=5))
    y = jnp.array([0, 3, -1, 2])
    m = jnp.asarray(np.array([[1, 1, 0, 1, 1], [1, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]]))
    m = m.astype(bool)

    def f(x):
        return ce_int(
            x,
            y,
            where=m,
            weight=w,
            ignore_index=-1,
            label_smoothing=0.1,
            z_loss=0.05,
            logit_softcap=2.0,
            reduction="mean",
        )

    # (The gradient with respect to ``weight`` is compared with the float64
    # formula in test_z_loss_and_softcap_match_formula.)
    check_grads(jax.jit(f), (x,), order=2, modes=["fwd", "rev"])


def test_check_grads_probability_ce_all_options():
    r = rng(16)
    x = jnp.asarray(r.normal(size=(3, 4)))
    t = jnp.asarray(softmax(r.normal(size=(3, 4))))
    m = jnp.asarray(np.array([[1, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 0]], bool))

    def f(x, t):
        return ce_prob(x, t, where=m, label_smoothing=0.2, z_loss=0.1, reduction="mean")

    check_grads(jax.jit(f), (x, t), order=2, modes=["fwd", "rev"])


def test_check_grads_nll():
    r = rng(17)
    lp = jnp.asarray(np.log(softmax(r.normal(size=(4, 3)))))
    w = jnp.asarray(r.uniform(0.5, 2.0, size=3))
    y = jnp.array([0, 2, 1, 2])

    def f(lp, w):
        return nll(lp, y, weight=w, ignore_index=1, reduction="mean")

    check_grads(jax.jit(f), (lp, w), order=2, modes=["fwd", "rev"])


# --------------------------------------------------------------------------
# Edges: -inf, where, huge logits, bf16
# --------------------------------------------------------------------------

INT_OPTIONS = [
    {},
    {"label_smoothing": 0.1, "z_loss": 0.01, "weight": jnp.array([1.0, 2.0, 0.5, 1.5])},
    {"logit_softcap": 5.0, "label_smoothing": 0.2},
]


@pytest.mark.parametrize("opts", INT_OPTIONS)
def test_neg_inf_logits_and_where_are_finite_to_second_order(opts):
    x = jnp.array([[1.0, -jnp.inf, 0.5, -jnp.inf], [-jnp.inf, 2.0, -1.0, 0.0]])
    y = jnp.array([0, 3])
    finite = jnp.isfinite(x)
    xw = jnp.where(finite, x, 1e3)  # a huge value behind the mask must not leak
    # The formula restricted to the allowed classes (with a soft cap, -inf
    # becomes -cap: an allowed class like any other).
    ref = functools.partial(
        ref_int_ce,
        y=y,
        eps=opts.get("label_smoothing", 0.0),
        z=opts.get("z_loss", 0.0),
        cap=opts.get("logit_softcap"),
        weight=opts.get("weight"),
        reduction="sum",
    )
    cases = [
        (lambda x: ce_int(x, y, reduction="sum", **opts), ref),
        (
            lambda x: ce_int(x, y, where=finite, reduction="sum", **opts),
            functools.partial(ref, where=finite),
        ),
    ]

    @jax.jit
    def run(x, xw):
        out = []
        for (fn, ref_fn), arg in zip(cases, (x, xw), strict=True):
            out.append((fn(arg), jax.grad(fn)(arg), jax.hessian(fn)(arg)))
            out.append((ref_fn(arg), jax.grad(ref_fn)(arg)))
        return out

    results = run(x, xw)
    for (loss, grad, hess), (ref_loss, ref_grad) in zip(results[::2], results[1::2], strict=True):
        assert all_finite(loss, grad, hess)
        if "logit_softcap" not in opts:
            assert jnp.all(jnp.where(finite, 0.0, grad) == 0.0)
        close(loss, ref_loss)
        close(grad, ref_grad)


def test_neg_inf_probability_ce_is_finite_to_second_order():
    x = jnp.array([[1.0, -jnp.inf, 0.5, -jnp.inf], [-jnp.inf, 2.0, -1.0, 0.0]])
    t = jnp.array([[0.7, 0.0, 0.3, 0.0], [0.0, 0.2, 0.3, 0.5]])
    finite = jnp.isfinite(x)

    def f(x):
        return ce_prob(x, t, label_smoothing=0.1, z_loss=0.05, reduction="sum")

    def masked(x):
        return ce_prob(x, t, where=finite, label_smoothing=0.1, z_loss=0.05, reduction="sum")

    t_bad = jnp.array([[0.5, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    xw = jnp.where(finite, x, 0.0)

    @jax.jit
    def run(x, xw):
        return f(x), jax.grad(f)(x), jax.hessian(f)(x), jax.grad(masked)(xw), ce_prob(x, t_bad)

    loss, grad, hess, grad_masked, bad = run(x, xw)
    assert all_finite(loss, grad, hess)
    assert jnp.all(jnp.where(finite, 0.0, grad) == 0.0)
    close(grad, grad_masked)
    # A positive target on a -inf logit is the true value, +inf (not NaN).
    assert bad[0] == jnp.inf and jnp.isfinite(bad[1])


@pytest.mark.parametrize("opts", INT_OPTIONS)
def test_huge_logits_float32(opts):
    ref_opts = {
        "eps": opts.get("label_smoothing", 0.0),
        "z": opts.get("z_loss", 0.0),
        "cap": opts.get("logit_softcap"),
        "weight": opts.get("weight"),
    }

    @jax.jit
    def ours(x, y):
        return ce_int(x, y, **opts), jax.grad(lambda x: ce_int(x, y, reduction="sum", **opts))(x)

    @jax.jit
    def ref(x, y):
        f = lambda x: ref_int_ce(x, y, reduction="sum", **ref_opts)
        return ref_int_ce(x, y, **ref_opts), jax.grad(f)(x)

    on_max = jnp.array([0, 1])  # the label on (one of) the largest logits
    off_max = jnp.array([1, 0])
    f32_max = np.finfo(np.float32).max
    for big in (1e4, 3e38):
        x = jnp.array([[big, -big, 0.0, 1.0], [-big, big, -big, big]], jnp.float32)
        for y in (on_max, off_max):
            loss, grad = ours(x, y)
            ref_loss, ref_grad = ref(x.astype(jnp.float64), y)
            assert all_finite(grad), (big, y, grad)
            assert not jnp.any(jnp.isnan(loss))
            # The gradient's true value fits in float32: it is that value.
            close(grad, ref_grad, rtol=1e-6, atol=1e-6)
            # Where the true loss is a float32 number the loss is that number
            # (not so for the label off the max at 3e38, or z * lse^2 ~ 1e75).
            fits = np.abs(np.asarray(ref_loss)) < f32_max
            assert fits.all() or big > 1e30
            close(np.asarray(loss)[fits], np.asarray(ref_loss)[fits], rtol=1e-6, atol=1e-6)
            if y is on_max and not opts.get("z_loss"):
                assert fits.all()


def test_huge_logits_probability_ce_and_nll_float32():
    t = jnp.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.5]], jnp.float32)

    @jax.jit
    def run(x):
        grad = jax.grad(lambda x: ce_prob(x, t, z_loss=1e-4).sum())(x)
        lp = jax.nn.log_softmax(x)
        g = jax.grad(lambda lp: nll(lp, jnp.array([0, 1]), reduction="mean"))(lp)
        return ce_prob(x, t), grad, g

    for big in (1e4, 3e38):
        x = jnp.array([[big, -big, 0.0, 1.0], [-big, big, -big, big]], jnp.float32)
        loss, grad, g = run(x)
        assert all_finite(grad, g)
        close(loss, [0.0, np.log(2.0)], rtol=1e-6, atol=1e-6)


LOW_PRECISION_CASES = {
    "ce_int": lambda x: ce_int(
        x,
        jnp.array([0, 2, 4, -1]),
        ignore_index=-1,
        weight=jnp.linspace(0.5, 1.5, 5, dtype=jnp.float32),
        label_smoothing=0.1,
        z_loss=1e-3,
        logit_softcap=4.0,
    ),
    "ce_prob": lambda x: ce_prob(
        x, jnp.full((4, 5), 0.2, jnp.float32), label_smoothing=0.1, z_loss=1e-3
    ),
    "nll": lambda x: nll(
        x, jnp.array([0, 2, 4, 1]), weight=jnp.linspace(0.5, 1.5, 5, dtype=jnp.float32)
    ),
}


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", sorted(LOW_PRECISION_CASES))
def test_low_precision_computes_in_float32(name, low):
    f = LOW_PRECISION_CASES[name]
    x_low = jnp.asarray(3.0 * rng(4).normal(size=(4, 5)), low)
    x32 = x_low.astype(jnp.float32)

    def value_and_grad(x):
        return f(x), jax.grad(lambda x: f(x).sum())(x)

    (loss_low, g_low), (loss32, g32) = jax.jit(lambda a, b: (value_and_grad(a), value_and_grad(b)))(
        x_low, x32
    )
    assert loss_low.dtype == jnp.float32
    close(loss_low, loss32, rtol=1e-5, atol=0)
    assert g_low.dtype == low
    # The same float32 gradient, rounded once to the input's dtype.
    close(g_low.astype(jnp.float32), g32.astype(low).astype(jnp.float32), rtol=0, atol=0)


# --------------------------------------------------------------------------
# Equivalences
# --------------------------------------------------------------------------


def test_where_equals_slicing_the_allowed_classes():
    r = rng(20)
    x = jnp.asarray(2.0 * r.normal(size=(N, 6)))
    m = np.array([True, False, True, True, False, True])
    idx = np.flatnonzero(m)
    y_sub = r.integers(0, len(idx), size=N)
    y = jnp.asarray(idx[y_sub])
    y_sub = jnp.asarray(y_sub)
    w = jnp.asarray(r.uniform(0.5, 2.0, size=6))
    opts = {"label_smoothing": 0.2, "z_loss": 0.1, "logit_softcap": 3.0, "reduction": "mean"}

    def masked(x):
        return ce_int(x, y, where=jnp.asarray(m), weight=w, **opts)

    def sliced(x):
        return ce_int(x[..., idx], y_sub, weight=w[idx], **opts)

    t_sub = softmax(r.normal(size=(N, len(idx))))
    t = np.zeros((N, 6))
    t[..., idx] = t_sub

    def masked_p(x):
        return ce_prob(x, t, where=jnp.asarray(m), label_smoothing=0.2, z_loss=0.1)

    def sliced_p(x):
        return ce_prob(x[..., idx], t_sub, label_smoothing=0.2, z_loss=0.1)

    results = vjp_all([masked, sliced, masked_p, sliced_p], x)
    for (value, (g,)), (ref_value, (g_ref,)) in zip(results[::2], results[1::2], strict=True):
        close(value, ref_value)
        close(g, g_ref)
        assert jnp.all(g[..., ~m] == 0.0)


@pytest.mark.parametrize("axis", [0, -2])
def test_axis_equals_moveaxis(axis):
    r = rng(21)
    shape = (3, 4, 5)
    x = jnp.asarray(r.normal(size=shape))
    num = shape[axis]
    rest = tuple(np.delete(shape, axis))
    y = jnp.asarray(r.integers(0, num, size=rest))
    m = jnp.asarray(class_mask(r, (*rest, num)))
    t = jnp.asarray(softmax(r.normal(size=(*rest, num))))
    w = jnp.asarray(r.uniform(0.5, 2.0, size=num))
    move = functools.partial(jnp.moveaxis, source=-1, destination=axis)
    opts = {"weight": w, "label_smoothing": 0.1, "z_loss": 0.1, "reduction": "none"}
    pairs = [
        (
            lambda x: ce_int(x, y, axis=axis, where=move(m), **opts),
            lambda x: ce_int(x, y, where=m, **opts),
        ),
        (
            lambda x: ce_prob(x, move(t), axis=axis, where=move(m), label_smoothing=0.1),
            lambda x: ce_prob(x, t, where=m, label_smoothing=0.1),
        ),
        (
            lambda x: nll(x, y, axis=axis, weight=w, reduction="mean"),
            lambda x: nll(x, y, weight=w, reduction="mean"),
        ),
    ]
    xm = jnp.moveaxis(x, axis, -1)

    @jax.jit
    def run(x, xm):
        return [
            (f(a), jax.grad(lambda a: f(a).sum())(a))
            for along, last in pairs
            for f, a in ((along, x), (last, xm))
        ]

    results = run(x, xm)
    for (value, g), (ref_value, g_ref) in zip(results[::2], results[1::2], strict=True):
        close(value, ref_value)
        close(jnp.moveaxis(g, axis, -1), g_ref)


def test_vmap_and_jit_match_eager():
    r = rng(22)
    xs = jnp.asarray(r.normal(size=(3, N, C)))
    ys = r.integers(0, C, size=(3, N))
    ys[:, 0] = -1
    ys = jnp.asarray(ys)
    ts = jnp.asarray(softmax(r.normal(size=(3, N, C))))
    w = jnp.asarray(r.uniform(0.5, 2.0, size=C))
    fns = [
        lambda x, y, t: ce_int(
            x, y, weight=w, ignore_index=-1, label_smoothing=0.1, z_loss=0.1, reduction="mean"
        ),
        lambda x, y, t: ce_int(x, y, ignore_index=-1, logit_softcap=2.0, reduction="none"),
        lambda x, y, t: ce_prob(x, t, label_smoothing=0.1, z_loss=0.1, reduction="mean"),
        lambda x, y, t: nll(x, y, weight=w, ignore_index=-1, reduction="mean"),
    ]
    grads = [jax.grad(lambda x, y, t, f=f: f(x, y, t).sum()) for f in fns]

    @jax.jit
    def batched(xs, ys, ts):
        return [
            (jax.vmap(f)(xs, ys, ts), jax.vmap(g)(xs, ys, ts))
            for f, g in zip(fns, grads, strict=True)
        ]

    @jax.jit
    def looped(xs, ys, ts):
        return [
            (
                jnp.stack([f(xs[i], ys[i], ts[i]) for i in range(3)]),
                jnp.stack([g(xs[i], ys[i], ts[i]) for i in range(3)]),
            )
            for f, g in zip(fns, grads, strict=True)
        ]

    loop = looped(xs, ys, ts)
    for (value, g), (ref_value, g_ref) in zip(batched(xs, ys, ts), loop, strict=True):
        close(value, ref_value)
        close(g, g_ref)
    # Eager (op by op) equals the compiled program.
    for f, (ref_value, _) in list(zip(fns, loop, strict=True))[:1]:
        close(f(xs[0], ys[0], ts[0]), ref_value[0])


def test_integer_ce_equals_nll_of_log_softmax():
    r = rng(23)
    x = jnp.asarray(2.0 * r.normal(size=(N, C)))
    w = jnp.asarray(r.uniform(0.2, 2.0, size=C))
    fns = []
    for ignore_index, labels in LABELS.items():
        for reduction in REDUCTIONS:
            opts = {"weight": w, "ignore_index": ignore_index, "reduction": reduction}
            y = jnp.asarray(labels)
            fns.append(functools.partial(ce_int, labels=y, **opts))
            fns.append(lambda x, y=y, opts=opts: nll(jax.nn.log_softmax(x), y, **opts))
    results = vjp_all(fns, x)
    for (value, g), (ref_value, g_ref) in zip(results[::2], results[1::2], strict=True):
        close(value, ref_value)
        close(g, g_ref)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------

X = jnp.zeros((2, 3))
Y = jnp.array([0, 2])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ce_int(jnp.zeros((2, 3), jnp.int32), Y), TypeError, "logits"),
        (lambda: ce_prob(jnp.zeros((2, 3), jnp.int32), X), TypeError, "logits"),
        (lambda: nll(jnp.zeros((2, 3), jnp.int32), Y), TypeError, "log_probs"),
        (lambda: ce_int(X, jnp.array([0.0, 2.0])), TypeError, "labels"),
        (lambda: nll(X, jnp.array([0.0, 2.0])), TypeError, "labels"),
        (lambda: ce_int(X, jnp.array([0, 1, 2])), ValueError, "labels"),
        (lambda: ce_int(X, jnp.array([[0, 1]])), ValueError, "labels"),
        (lambda: nll(X, jnp.array([0, 1, 2])), ValueError, "labels"),
        (lambda: ce_prob(X, jnp.zeros((2, 4))), ValueError, "labels"),
        (lambda: ce_prob(X, jnp.zeros((2,))), ValueError, "labels"),
        (lambda: ce_int(X, Y, reduction="avg"), ValueError, "reduction"),
        (lambda: ce_prob(X, X, reduction="batchmean"), ValueError, "reduction"),
        (lambda: nll(X, Y, reduction=None), ValueError, "reduction"),
        (lambda: ce_int(X, Y, label_smoothing=-0.1), ValueError, "label_smoothing"),
        (lambda: ce_int(X, Y, label_smoothing=1.5), ValueError, "label_smoothing"),
        (lambda: ce_prob(X, X, label_smoothing=2.0), ValueError, "label_smoothing"),
        (lambda: ce_int(X, Y, label_smoothing=float("nan")), ValueError, "label_smoothing"),
        (lambda: ce_int(X, Y, z_loss=-1e-4), ValueError, "z_loss"),
        (lambda: ce_prob(X, X, z_loss=-1.0), ValueError, "z_loss"),
        (lambda: ce_int(X, Y, logit_softcap=0.0), ValueError, "logit_softcap"),
        (lambda: ce_int(X, Y, logit_softcap=-30.0), ValueError, "logit_softcap"),
        (lambda: ce_int(X, Y, weight=jnp.ones(4)), ValueError, "weight"),
        (lambda: ce_int(X, Y, weight=jnp.ones((2, 3))), ValueError, "weight"),
        (lambda: nll(X, Y, weight=jnp.ones(2)), ValueError, "weight"),
        (lambda: ce_int(X, Y, weight=jnp.ones(3, jnp.int32)), TypeError, "weight"),
        (lambda: ce_int(X, jnp.array([0, 3])), ValueError, "labels"),
        (lambda: ce_int(X, jnp.array([-1, 0])), ValueError, "labels"),
        (lambda: ce_int(X, jnp.array([-2, 0]), ignore_index=-1), ValueError, "labels"),
        (lambda: nll(X, jnp.array([0, 3])), ValueError, "labels"),
        (lambda: nll(X, jnp.array([-1, 0])), ValueError, "labels"),
        (lambda: ce_int(X, Y, ignore_index=1.0), TypeError, "ignore_index"),
        (lambda: ce_int(X, Y, where=jnp.ones((2, 3))), TypeError, "where"),
        (lambda: ce_int(X, Y, where=jnp.ones((2, 2), bool)), ValueError, "where"),
        (lambda: ce_prob(X, X, where=jnp.ones((3, 3), bool)), ValueError, "where"),
        (lambda: ce_int(X, Y, axis=2), ValueError, "axis"),
        (lambda: ce_prob(X, X, axis=-3), ValueError, "axis"),
        (lambda: ce_int(jnp.float32(1.0), jnp.int32(0)), ValueError, "logits"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_traced_hyperparameters_must_be_scalars():
    # traced values are allowed (tests/test_optax_compat.py, tests/test_fused_options.py),
    # as scalars only
    with pytest.raises(ValueError, match="label_smoothing must be a scalar"):
        jax.jit(lambda e: ce_int(X, Y, label_smoothing=e))(jnp.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="z_loss must be a scalar"):
        jax.jit(lambda z: ce_prob(X, X, z_loss=z))(jnp.array([0.1, 0.2]))
    h, k = jnp.ones((2, 3)), jnp.ones((3, 4))
    with pytest.raises(ValueError, match="temperature must be a scalar"):
        jax.jit(lambda t: jl.fused_linear_softmax_cross_entropy(h, k, Y, temperature=t))(
            jnp.array([1.0, 2.0])
        )


def test_ignore_index_label_is_not_out_of_range():
    # The ignored value may lie outside [0, C): never wrapped, never an error.
    out = ce_int(X, jnp.array([-1, 0]), ignore_index=-1)
    assert out[0] == 0.0
    out = nll(X, jnp.array([7, 0]), ignore_index=7)
    assert out[0] == 0.0


@pytest.mark.parametrize(
    "f",
    [
        lambda x, y: ce_int(x, y, label_smoothing=0.1),
        lambda x, y: ce_int(x, y, weight=jnp.array([0.0, 1.0, 1.0])),
        lambda x, y: nll(x, y),
        lambda x, y: nll(x, y, weight=jnp.array([0.0, 1.0, 1.0])),
    ],
)
def test_out_of_range_label_under_jit_is_nan_and_checkify_reports_it(f):
    x = jnp.asarray(rng(24).normal(size=(4, 3)))
    y = jnp.array([0, -1, 3, 2])
    out = jax.jit(f)(x, y)
    # A negative label never reads the last class: its row is NaN, not a loss.
    assert jnp.all(jnp.isnan(out[1:3]))
    assert jnp.all(jnp.isfinite(out[jnp.array([0, 3])]))
    err, _ = checkify.checkify(jax.jit(f))(x, y)
    message = err.get()
    assert message is not None and "labels" in message
    err, _ = checkify.checkify(jax.jit(f))(x, jnp.array([0, 1, 2, 2]))
    assert err.get() is None


# --------------------------------------------------------------------------
# Property sweep: no NaN where the math is finite
# --------------------------------------------------------------------------

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f64": jnp.float64}


@jax.jit
def _sweep_values(x, y, t):
    """Every loss and its gradient, with and without options, in one program."""
    fns = [
        lambda x: ce_int(x, y, reduction="mean"),
        lambda x: ce_int(x, y, label_smoothing=0.1, logit_softcap=30.0, reduction="mean"),
        lambda x: ce_prob(x, t, label_smoothing=0.1, reduction="mean"),
        lambda x: nll(jax.nn.log_softmax(x.astype(jnp.float32)), y, reduction="mean"),
    ]
    finite = [jax.value_and_grad(f)(x) for f in fns]
    # The z-loss term itself may overflow (lse^2 ~ 1e60); its gradient may not.
    z_grad = jax.grad(lambda x: ce_int(x, y, z_loss=1e-4, reduction="sum"))(x)
    return finite, z_grad


@hypothesis.settings(max_examples=50, deadline=None, derandomize=True)
@hypothesis.given(
    shape=st.sampled_from([(3, 5)]),
    dtype=st.sampled_from(sorted(DTYPES)),
    exponent=st.integers(0, 30),
    seed=st.integers(0, 2**16),
)
def test_sweep_no_nan(shape, dtype, exponent, seed):
    r = rng(seed)
    x = jnp.asarray(r.normal(size=shape) * 10.0**exponent, DTYPES[dtype])
    y = jnp.asarray(r.integers(0, shape[-1], size=shape[:-1]))
    t = jnp.asarray(softmax(r.normal(size=shape)), jnp.float32)
    finite, z_grad = _sweep_values(x, y, t)
    # |x| <= ~1e31: every loss here is a float32 number (< 3.4e38).
    assert all_finite(finite, z_grad), (x, finite, z_grad)


# --------------------------------------------------------------------------
# Memory: reverse mode keeps no [N, C] intermediate
# --------------------------------------------------------------------------


MEMORY_N, MEMORY_C = 16, 64


def test_integer_ce_keeps_no_nc_residual():
    r = rng(30)
    x = jnp.asarray(r.normal(size=(MEMORY_N, MEMORY_C)), jnp.float32)
    y = r.integers(0, MEMORY_C, size=MEMORY_N)
    y[:3] = -100
    y = jnp.asarray(y)

    def f(x):
        return ce_int(
            x,
            y,
            ignore_index=-100,
            label_smoothing=0.1,
            z_loss=1e-4,
            logit_softcap=30.0,
            reduction="mean",
        )

    assert large_residuals(f, x, size=MEMORY_N * MEMORY_C) == []
    # The check itself: a plain log_softmax formula does keep [N, C] arrays.
    plain = lambda x: ref_int_ce(x, y, ignore_index=-100, reduction="mean")
    assert large_residuals(plain, x, size=MEMORY_N * MEMORY_C) != []


def test_bf16_integer_ce_keeps_no_nc_residual():
    r = rng(31)
    x = jnp.asarray(r.normal(size=(MEMORY_N, MEMORY_C)), jnp.bfloat16)
    y = jnp.asarray(r.integers(0, MEMORY_C, size=MEMORY_N))
    f = lambda x: ce_int(x, y, label_smoothing=0.1, reduction="mean")
    assert large_residuals(f, x, size=MEMORY_N * MEMORY_C) == []


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_probability_ce_keeps_no_nc_residual(dtype):
    r = rng(32)
    x = jnp.asarray(r.normal(size=(MEMORY_N, MEMORY_C)), dtype)
    t = jnp.asarray(softmax(r.normal(size=(MEMORY_N, MEMORY_C))), jnp.float32)

    def f(x):
        return ce_prob(x, t, label_smoothing=0.1, z_loss=1e-4, reduction="mean")

    assert large_residuals(f, x, size=MEMORY_N * MEMORY_C) == []


def test_options_case_keeps_no_row_by_class_temporary():
    """ignore_index + label smoothing + z-loss at [8192, 32768]: the compiled
    value_and_grad needs no [N, C] (nor [N, C/32]) scratch buffer beyond the
    gradient it returns. Counting the valid classes as an int32 sum compiled (jax
    0.10.2, XLA:CPU) to an s32[N, C] compare and an s32[N, C/32] reduce-window,
    33 MiB of scratch; the count is a float sum of one reduction pass."""
    n, c = 8192, 32768
    x = jax.ShapeDtypeStruct((n, c), jnp.float32)
    y = jax.ShapeDtypeStruct((n,), jnp.int32)

    def f(x, y):
        loss = jl.softmax_cross_entropy_with_integer_labels(
            x, y, ignore_index=-100, label_smoothing=0.1, z_loss=1e-4
        )
        return jnp.mean(loss)

    compiled = jax.jit(jax.value_and_grad(f)).lower(x, y).compile()
    assert compiled.memory_analysis().temp_size_in_bytes <= 2**20


# Rows longer than the core's block width (sm.ROW_BLOCK = 32768) are summed in
# blocks: 2 equal blocks (65536), 9 blocks of 10923 found by the divisor search
# (98307 = 9 * 10923; no 4 to 8 equal blocks tile it), and a prime width (65537:
# 3 blocks of 21845 and a 2-column remainder).
@pytest.mark.parametrize("c", [65536, 98307, 65537])
def test_long_rows_match_torch(c):
    from jaxloss import _softmax as sm

    r = rng(c)
    x = r.normal(0.0, 3.0, (3, c))
    x[1, 7] = 40.0  # one dominant logit
    y = np.array([0, 7, c - 1])
    t = r.dirichlet(np.ones(c), 3)
    nb, k = sm._row_blocks(c)
    assert nb * k <= c < nb * k + nb and k <= sm.ROW_BLOCK
    xj, yj, tj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(t)
    v = r.normal(size=x.shape)
    for ours, theirs in (
        (
            lambda a: ce_int(a, yj, reduction="sum"),
            lambda a: F.cross_entropy(a, tt(y), reduction="sum"),
        ),
        (
            lambda a: ce_prob(a, tj, reduction="sum"),
            lambda a: F.cross_entropy(a, tt(t), reduction="sum"),
        ),
    ):
        xt = tt(x, grad=True)
        ref = theirs(xt)
        ref.backward()
        val, g = jax.value_and_grad(ours)(xj)
        close(val, ref.item())
        close(g, xt.grad.numpy())
        close(jax.jvp(ours, (xj,), (jnp.asarray(v),))[1], np.sum(xt.grad.numpy() * v))

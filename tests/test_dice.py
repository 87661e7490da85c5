"""Soft Dice, Tversky, binary and generalized Dice losses.

References: ``optax.losses`` called side by side (values and gradients,
float64 for every option and one float32 check per loss); the probability
forms (``apply_softmax=False``) are checked as ``loss(softmax(x))`` against
optax's ``loss(x)``, which is the same function of ``x``. Where optax gives
NaN (a class absent from prediction and target with ``smooth=0``) the values
are compared where optax is finite and asserted finite elsewhere. Each group
of checks is one jitted program.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import all_finite, close, optax_promotion, value_and_grads

import jaxloss

RNG = np.random.default_rng(1)
X = RNG.normal(0.0, 2.0, size=(2, 3, 2, 3))  # [batch, height, width, classes]
T = np.eye(3)[RNG.integers(0, 3, size=X.shape[:-1])]
W = RNG.uniform(0.5, 2.0, size=3)


def _assert_pairs(pairs, args, tol):
    """``pairs``: ``[(label, ours, ref)]``; values and gradients agree where the
    reference is finite, and ours are finite everywhere."""
    out = value_and_grads([p[1] for p in pairs] + [p[2] for p in pairs], args)
    for (label, *_), got, want in zip(pairs, out[: len(pairs)], out[len(pairs) :], strict=True):
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            g, w = np.asarray(g), np.asarray(w)
            assert g.shape == w.shape, label
            assert np.all(np.isfinite(g)), label
            ok = np.isfinite(w)
            close(g[ok], w[ok], rtol=tol, atol=tol, err_msg=label)


def _pair(name, pre=None, ref_pre=None, post=None, ref_post=None, **kw):
    """``jaxloss.name(*pre(x, t), **kw)`` against ``optax.losses.name(*ref_pre(x, t))``."""
    pre = pre or (lambda x, t: (x, t))
    ref_pre = ref_pre or pre
    drop = ("apply_softmax", "apply_sigmoid")
    drop += () if post is None and ref_post is None else ("reduction",)
    ref_kw = {k: v for k, v in kw.items() if k not in drop}
    ours = lambda x, t: (post or (lambda v: v))(getattr(jaxloss, name)(*pre(x, t), **kw))
    ref = lambda x, t: (ref_post or (lambda v: v))(
        getattr(optax.losses, name)(*ref_pre(x, t), **ref_kw)
    )
    return (f"{name} {kw}", ours, ref)


def _softmax(x, t):
    return jax.nn.softmax(x, axis=-1), t


def _sigmoid(x, t):
    return jax.nn.sigmoid(x), t


def _channel(x, t):
    return x[..., :1], t[..., :1]


def _flat(x, t):
    return x[..., 0], t[..., 0]


DICE_OPTIONS = [
    {},
    {"alpha": 0.3, "beta": 0.7},
    {"ignore_background": True},
    {"smooth": 0.0},
    {"smooth": 2.5},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"class_weights": W},
    {"axis": 1},
    {"axis": (1, 2), "reduction": "none", "ignore_background": True, "alpha": 0.2, "beta": 0.8},
]


def _dice_pairs():
    pairs = [_pair("dice_loss", **kw) for kw in DICE_OPTIONS]
    pairs += [
        _pair("dice_loss", _softmax, ref_pre=lambda x, t: (x, t), apply_softmax=False),
        _pair("dice_loss", _softmax, lambda x, t: (x, t), apply_softmax=False, smooth=0.0),
        _pair("dice_loss", _channel, smooth=0.5),  # one channel: a sigmoid
        _pair("dice_loss", lambda x, t: (x[..., :1], t[..., 0])),  # targets without the axis
        _pair("dice_loss", lambda x, t: (x[..., 0], t[..., :1])),  # predictions without it
        _pair("dice_loss", _flat, reduction="none"),  # last axis as the classes
    ]
    return pairs


def _binary_pairs():
    plain = lambda x, t: (x[..., 0], t[..., 0])
    probs = lambda x, t: (jax.nn.sigmoid(x[..., 0]), t[..., 0])
    return [
        _pair("binary_dice_loss", plain),
        _pair("binary_dice_loss", _channel, smooth=0.0),
        _pair("binary_dice_loss", _channel, smooth=3.0),
        _pair("binary_dice_loss", probs, plain, apply_sigmoid=False),
        _pair("binary_dice_loss", plain, ref_post=jnp.sum, reduction="sum"),
        _pair("binary_dice_loss", plain, ref_post=jnp.mean, reduction="mean"),
    ]


def _generalized_pairs():
    name = "multiclass_generalized_dice_loss"
    return [
        _pair(name),
        _pair(name, ignore_background=True),
        _pair(name, smooth=0.5),
        _pair(name, smooth=0.0),
        _pair(name, _softmax, lambda x, t: (x, t), apply_softmax=False),
        _pair(name, post=jnp.mean, reduction="none"),
        _pair(name, post=lambda v: v / (X.shape[0] * 3), reduction="sum"),
    ]


def test_matches_optax_float64():
    pairs = _dice_pairs() + _binary_pairs() + _generalized_pairs()
    _assert_pairs(pairs, (jnp.asarray(X), jnp.asarray(T)), 1e-12)


def test_matches_optax_float32():
    pairs = [_dice_pairs()[0], _binary_pairs()[0], _generalized_pairs()[0]]
    _assert_pairs(pairs, (jnp.asarray(X, jnp.float32), jnp.asarray(T, jnp.float32)), 2e-5)


def test_binary_reductions_and_shapes():
    @jax.jit
    def run(x, t):
        return {r: jaxloss.binary_dice_loss(x, t, reduction=r) for r in ("none", "sum", "mean")}

    o = run(jnp.asarray(X[..., 0]), jnp.asarray(T[..., 0]))
    assert o["none"].shape == (2,)  # optax's shape: one value per example
    close(o["sum"], jnp.sum(o["none"]))
    close(o["mean"], jnp.mean(o["none"]))
    # a probability that is not 1 is accepted with one channel
    p = jnp.full((2, 4, 1), 0.5)
    t = jnp.ones((2, 4, 1))
    close(jaxloss.dice_loss(p, t, smooth=0.0, apply_softmax=False), jnp.full(2, 1 - 2 / 3))


def test_worked_values():
    # one class, p = (0.9, 0.2), t = (1, 0): I = 0.9, P = 1.1, T = 1,
    # Tversky 1 - I / (I + a (P - I) + b (T - I))
    p = jnp.array([[[0.9, 0.1], [0.2, 0.8]]])
    t = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])
    got = jax.jit(
        lambda p, t: jaxloss.dice_loss(
            p, t, smooth=0.0, alpha=0.25, beta=0.75, apply_softmax=False, reduction="none"
        )
    )(p, t)
    close(got[0, 0], 1 - 0.9 / (0.9 + 0.25 * 0.2 + 0.75 * 0.1))
    close(got[0, 1], 1 - 0.8 / (0.8 + 0.25 * 0.1 + 0.75 * 0.2))


def test_edges_finite():
    # class 2 absent from prediction and target, smooth = 0: 0 / 0 (optax: NaN)
    probs = np.concatenate([jax.nn.softmax(X[..., :2], axis=-1), np.zeros((*X.shape[:-1], 1))], -1)
    t = np.eye(3)[RNG.integers(0, 2, size=X.shape[:-1])]

    def ours(p, t):
        return jaxloss.dice_loss(p, t, smooth=0.0, apply_softmax=False, reduction="none")

    @jax.jit
    def run(p, t, big):
        return {
            "empty": ours(p, t),
            "empty_grad": jax.grad(lambda p, t: jnp.sum(ours(p, t)), (0, 1))(p, t),
            "big": [
                jax.value_and_grad(lambda x: jnp.sum(f(x, t)))(big)
                for f in (
                    jaxloss.dice_loss,
                    lambda x, t: jaxloss.binary_dice_loss(x[..., :1], t[..., :1], smooth=0.0),
                    jaxloss.multiclass_generalized_dice_loss,
                )
            ],
            "absent": jax.value_and_grad(
                lambda x: jaxloss.multiclass_generalized_dice_loss(x, t, smooth=0.0)
            )(big / 1e4),
        }

    p, tt = jnp.asarray(probs), jnp.asarray(t)
    o = run(p, tt, jnp.asarray(X * 1e4))
    assert all_finite(o)
    close(o["empty"][..., 2], np.zeros(2))  # a perfect (empty) match
    close(o["empty_grad"][0][..., 2], np.zeros(X.shape[:-1]))
    with optax_promotion():
        ref = np.asarray(
            optax.losses.dice_loss(probs, t, smooth=0.0, apply_softmax=False, reduction="none")
        )
    assert np.isnan(ref[..., 2]).all()
    close(o["empty"][..., :2], ref[..., :2])


def test_low_precision():
    x, t = jnp.asarray(X, jnp.bfloat16), jnp.asarray(T, jnp.bfloat16)
    fns = {
        "dice": jaxloss.dice_loss,
        "binary": lambda x, t: jaxloss.binary_dice_loss(x[..., 0], t[..., 0]),
        "generalized": jaxloss.multiclass_generalized_dice_loss,
    }

    @jax.jit
    def run(x, t):
        up = (x.astype(jnp.float32), t.astype(jnp.float32))
        return {
            k: (f(x, t), f(*up), jax.grad(lambda x, f=f: jnp.sum(f(x, t)))(x))
            for k, f in fns.items()
        }

    for k, (low, high, g) in run(x, t).items():
        assert low.dtype == jnp.float32, k
        close(low, high, rtol=1e-6, atol=1e-6, err_msg=k)
        assert g.dtype == jnp.bfloat16, k


def test_transforms():
    x, t = jnp.asarray(X), jnp.asarray(T)
    d = jnp.asarray(RNG.normal(size=X.shape))
    calls = [
        (lambda x, h: jaxloss.dice_loss(x, t, smooth=h[0], alpha=h[1], beta=h[2]), (0.5, 0.3, 0.7)),
        (lambda x, h: jaxloss.dice_loss(x, t, class_weights=h), W),
        (lambda x, h: jaxloss.binary_dice_loss(x[..., 0], t[..., 0], smooth=h), 2.0),
        (lambda x, h: jaxloss.multiclass_generalized_dice_loss(x, t, smooth=h), 0.25),
    ]

    @jax.jit
    def run(x, hs):
        out = []
        for (f, h), ht in zip(calls, hs, strict=True):
            s = lambda x, f=f, ht=ht: jnp.sum(f(x, ht))
            g = jax.grad(s)(x)
            out.append(
                {
                    "traced": (f(x, ht), f(x, h)),
                    "jvp": (jax.jvp(s, (x,), (d,))[1], jnp.sum(g * d)),
                    "jacfwd": (jax.jacfwd(s)(x), g),
                }
            )
        per_example = jax.vmap(lambda x, t: jaxloss.dice_loss(x[None], t[None], alpha=0.2)[0])
        vm = {
            "dice": (per_example(x, t), jaxloss.dice_loss(x, t, alpha=0.2)),
            "binary": (
                jax.vmap(lambda x, t: jaxloss.binary_dice_loss(x[None], t[None])[0])(
                    x[..., 0], t[..., 0]
                ),
                jaxloss.binary_dice_loss(x[..., 0], t[..., 0]),
            ),
        }
        h = hs[0]
        hess = jax.hessian(
            lambda x: jnp.sum(jaxloss.dice_loss(x, t[:1], smooth=h[0], alpha=h[1], beta=h[2]))
        )(x[:1])
        return out, vm, hess

    hs = [jax.tree.map(jnp.asarray, h) for _, h in calls]
    out, vm, hess = run(x, hs)
    for i, o in enumerate(out):
        for k, (got, want) in o.items():
            close(got, want, err_msg=f"{i} {k}")
    for k, (got, want) in vm.items():
        close(got, want, err_msg=k)
    assert all_finite(hess)


def test_bad_inputs():
    x, t = jnp.asarray(X), jnp.asarray(T)
    with pytest.raises(ValueError, match="same shape"):
        jaxloss.dice_loss(x, t[..., :2])
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.dice_loss(x, t, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.binary_dice_loss(x[..., 0], t[..., 0], reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.multiclass_generalized_dice_loss(x, t, reduction="avg")
    with pytest.raises(ValueError, match="class_weights"):
        jaxloss.dice_loss(x, t, class_weights=jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="sum to 1"):
        jaxloss.dice_loss(x, t, apply_softmax=False)
    with pytest.raises(TypeError, match="predictions"):
        jaxloss.dice_loss(jnp.ones((2, 3), jnp.int32), jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="smooth"):
        jaxloss.dice_loss(x, t, smooth="1")
    with pytest.raises(TypeError, match="alpha"):
        jaxloss.dice_loss(x, t, alpha=None)
    with pytest.raises(ValueError, match="same shape"):
        jaxloss.multiclass_generalized_dice_loss(x, t[..., 0])

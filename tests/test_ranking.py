"""Listwise softmax ranking loss.

References: ``optax.losses.ranking_softmax_loss`` called side by side (values
and gradients, float64 for every option and one float32 check), compared
where optax is finite (a fully masked list gives optax NaN gradients, a
``-inf`` score with label 0 a NaN value) with ours asserted finite
everywhere; a float64 formula ``-sum(w y log_softmax(s))`` written here.
Each group of checks is one jitted program.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import all_finite, close, value_and_grads

import jaxloss

RNG = np.random.default_rng(2)
S = RNG.normal(0.0, 2.0, size=(3, 4))
Y = RNG.integers(1, 4, size=(3, 4)).astype(np.float64)  # zero labels: see test_zero_label_gradient
WEIGHTS = RNG.uniform(0.5, 2.0, size=(3, 4))
MASK = np.array([[True, True, False, True], [True, False, True, True], [True] * 4])
EMPTY = MASK.copy()
EMPTY[1] = False  # a fully masked list


def _assert_pairs(pairs, args, tol):
    """Values and gradients agree where optax's are finite; ours are finite."""
    out = value_and_grads([p[1] for p in pairs] + [p[2] for p in pairs], args)
    for (label, *_), got, want in zip(pairs, out[: len(pairs)], out[len(pairs) :], strict=True):
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            g, w = np.asarray(g), np.asarray(w)
            assert g.shape == w.shape, label
            assert np.all(np.isfinite(g)), label
            ok = np.isfinite(w)
            close(g[ok], w[ok], rtol=tol, atol=tol, err_msg=label)


def _pair(ours_kw, ref_kw=None):
    ref_kw = ours_kw if ref_kw is None else ref_kw
    ours = lambda s, y: jaxloss.ranking_softmax_loss(s, y, **ours_kw)
    ref = lambda s, y: optax.losses.ranking_softmax_loss(s, y, **ref_kw)
    return (f"{sorted(ours_kw)}", ours, ref)


def _max(loss, where=None):
    return jnp.max(loss, where=where, initial=-jnp.inf)


OPTIONS = [
    {},
    {"where": MASK},
    {"where": EMPTY},
    {"weights": WEIGHTS},
    {"weights": WEIGHTS[0]},  # broadcast over the lists
    {"reduce_fn": jnp.sum},
    {"reduce_fn": None},
    {"reduce_fn": None, "where": EMPTY, "weights": WEIGHTS},
    {"reduce_fn": jnp.sum, "where": EMPTY},
    {"reduce_fn": _max, "where": MASK},  # any callable taking where=
]
REDUCTIONS = [("none", None), ("sum", jnp.sum), ("mean", jnp.mean)]


def test_matches_optax_float64():
    pairs = [_pair(kw) for kw in OPTIONS]
    for where in (None, EMPTY):
        for red, fn in REDUCTIONS:  # reduction= replaces reduce_fn
            ours = {"reduction": red, "reduce_fn": jnp.sum, "where": where}
            pairs.append(_pair(ours, {"reduce_fn": fn, "where": where}))
    _assert_pairs(pairs, (jnp.asarray(S), jnp.asarray(Y)), 1e-12)


def test_matches_optax_float32():
    args = (jnp.asarray(S, jnp.float32), jnp.asarray(Y, jnp.float32))
    _assert_pairs([_pair({}), _pair({"where": MASK})], args, 2e-6)


def test_zero_label_gradient():
    y = Y.copy()
    y[0, 1] = y[1, 2] = 0.0
    pairs = [_pair({}), _pair({"where": MASK})]
    _assert_pairs(pairs, (jnp.asarray(S), jnp.asarray(y)), 1e-12)


def test_formula_and_masked_lists():
    @jax.jit
    def run(s, y):
        return {
            "per": jaxloss.ranking_softmax_loss(s, y, weights=WEIGHTS, reduce_fn=None),
            "masked": jaxloss.ranking_softmax_loss(s, y, where=EMPTY, reduction="none"),
            "mean": jaxloss.ranking_softmax_loss(s, y, where=EMPTY),
            "all": jaxloss.ranking_softmax_loss(s, y, where=jnp.zeros(s.shape, bool)),
            "all_grad": jax.grad(
                lambda s: jaxloss.ranking_softmax_loss(s, y, where=jnp.zeros(s.shape, bool))
            )(s),
        }

    o = run(jnp.asarray(S), jnp.asarray(Y))
    logp = S - np.log(np.sum(np.exp(S), axis=-1, keepdims=True))
    close(o["per"], -np.sum(WEIGHTS * Y * logp, axis=-1))
    assert float(o["masked"][1]) == 0.0
    close(o["mean"], (o["masked"][0] + o["masked"][2]) / 2)  # over the lists that count
    assert float(o["all"]) == 0.0  # no list counts (optax: 0 too)
    assert all_finite(o["all_grad"])


def test_neg_inf_scores():
    s = S.copy()
    s[0, 1] = -np.inf
    y = Y.copy()
    y[0, 1] = 0.0  # -inf score with label 0 adds nothing
    y[2, 3] = 2.0

    @jax.jit
    def run(s, y):
        f = lambda s: jaxloss.ranking_softmax_loss(s, y, reduce_fn=None)
        pos = jnp.asarray(s).at[2, 3].set(-jnp.inf)
        return {
            "value": f(s),
            "grad": jax.grad(lambda s: jnp.sum(f(s)))(s),
            "jvp": jax.jvp(lambda s: jnp.sum(f(s)), (s,), (jnp.ones_like(s),))[1],
            "pos": f(pos),
        }

    o = run(jnp.asarray(s), jnp.asarray(y))
    assert all_finite(o["value"], o["grad"], o["jvp"])
    assert float(o["grad"][0, 1]) == 0.0
    finite = np.where(np.isinf(s), -1e30, s)  # the same lists with a very low score
    close(o["value"], jaxloss.ranking_softmax_loss(finite, y, reduce_fn=None))
    assert np.isinf(o["pos"][2]) and np.isfinite(o["pos"][:2]).all()  # the true value


def test_low_precision():
    s, y = jnp.asarray(S, jnp.bfloat16), jnp.asarray(Y, jnp.bfloat16)

    @jax.jit
    def run(s, y):
        f = lambda s, y: jaxloss.ranking_softmax_loss(s, y, where=MASK)
        return f(s, y), f(s.astype(jnp.float32), y.astype(jnp.float32)), jax.grad(f)(s, y)

    low, high, g = run(s, y)
    assert low.dtype == jnp.float32 and g.dtype == jnp.bfloat16
    close(low, high, rtol=1e-6, atol=1e-6)


def test_transforms():
    s, y = jnp.asarray(S), jnp.asarray(Y)
    d = jnp.asarray(RNG.normal(size=S.shape))

    def f(s, where, weights):
        return jaxloss.ranking_softmax_loss(s, y, where=where, weights=weights, reduce_fn=jnp.sum)

    @jax.jit
    def run(s, where, weights):  # mask and weights traced
        g = jax.grad(f)(s, where, weights)
        return {
            "traced": (f(s, where, weights), f(s, EMPTY, WEIGHTS)),
            "jvp": (jax.jvp(lambda s: f(s, where, weights), (s,), (d,))[1], jnp.sum(g * d)),
            "jacfwd": (jax.jacfwd(f)(s, where, weights), g),
            "weights_grad": (
                jax.grad(f, 2)(s, where, weights),
                -y * jnp.where(where, jax.nn.log_softmax(jnp.where(where, s, -jnp.inf)), 0.0),
            ),
            "vmap": (
                jax.vmap(lambda s, y: jaxloss.ranking_softmax_loss(s, y, reduce_fn=None))(s, y),
                jaxloss.ranking_softmax_loss(s, y, reduce_fn=None),
            ),
            "hessian": (jnp.isfinite(jax.hessian(f)(s, where, weights)).all(), True),
        }

    for k, (got, want) in run(s, jnp.asarray(EMPTY), jnp.asarray(WEIGHTS)).items():
        close(got, want, err_msg=k)


def test_bad_inputs():
    with pytest.raises(ValueError, match="labels"):
        jaxloss.ranking_softmax_loss(S, Y[:, :3])
    with pytest.raises(ValueError, match="scalar"):
        jaxloss.ranking_softmax_loss(jnp.float64(1.0), jnp.float64(1.0))
    with pytest.raises(TypeError, match="logits"):
        jaxloss.ranking_softmax_loss(jnp.ones((2, 3), jnp.int32), jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="reduce_fn"):
        jaxloss.ranking_softmax_loss(S, Y, reduce_fn="mean")
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.ranking_softmax_loss(S, Y, reduction="avg")
    with pytest.raises(ValueError, match="weights"):
        jaxloss.ranking_softmax_loss(S, Y, weights=np.ones((3, 3)))
    with pytest.raises(TypeError, match="where"):
        jaxloss.ranking_softmax_loss(S, Y, where=np.ones(S.shape))

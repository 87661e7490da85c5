"""Cosine similarity/distance, triplet margin loss and NT-Xent.

References: ``optax.losses`` called side by side (values and gradients,
float64 for every option and one float32 check per loss),
``torch.nn.functional.cosine_similarity`` and ``F.triplet_margin_loss`` in
float64; the NT-Xent worked value ``log(1 + e**-1)`` follows from its
definition (Chen et al. 2020). Each group of checks is one jitted program.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch.nn.functional as F
from _helpers import all_finite, close, optax_promotion, temp_bytes, tt, value_and_grads

import jaxloss

RNG = np.random.default_rng(0)
A, B, C = RNG.normal(size=(3, 4, 5))
WHERE = RNG.uniform(size=A.shape) < 0.7
LABELS = np.array([0, 0, 1, 1])
COSINES = ("cosine_similarity", "cosine_distance")


def _assert_pairs(pairs, args, tol):
    """``pairs``: ``[(label, ours, ref)]``; values and gradients agree."""
    out = value_and_grads([p[1] for p in pairs] + [p[2] for p in pairs], args)
    for (label, *_), got, want in zip(pairs, out[: len(pairs)], out[len(pairs) :], strict=True):
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            close(g, w, rtol=tol, atol=tol, err_msg=label)


def _optax_pair(name, **kw):
    ours = lambda *a: getattr(jaxloss, name)(*a, **kw)
    ref = lambda *a: getattr(optax.losses, name)(*a, **kw)
    return (f"{name} {kw}", ours, ref)


COSINE_OPTIONS = [{}, {"epsilon": 0.5}, {"axis": 0}, {"axis": None}, {"where": WHERE}]
TRIPLET_OPTIONS = [
    {},
    {"margin": 0.3, "eps": 0.0},
    {"norm_degree": 4},
    {"norm_degree": 1},
    {"axis": 0},
]


def test_cosine_matches_optax():
    pairs = [_optax_pair(n, **kw) for n in COSINES for kw in COSINE_OPTIONS]
    _assert_pairs(pairs, (jnp.asarray(A), jnp.asarray(B)), 1e-12)
    f32 = (jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32))
    _assert_pairs([_optax_pair(n) for n in COSINES], f32, 2e-5)


def test_triplet_matches_optax():
    pairs = [_optax_pair("triplet_margin_loss", **kw) for kw in TRIPLET_OPTIONS]
    _assert_pairs(pairs, tuple(jnp.asarray(x) for x in (A, B, C)), 1e-12)
    f32 = tuple(jnp.asarray(x, jnp.float32) for x in (A, B, C))
    _assert_pairs([_optax_pair("triplet_margin_loss")], f32, 2e-5)


def test_ntxent_matches_optax():
    lab = jnp.asarray(LABELS)
    pairs = [
        (
            f"ntxent {t}",
            lambda e, t=t: jaxloss.ntxent(e, lab, t),
            lambda e, t=t: optax.losses.ntxent(e, lab, t),
        )
        for t in (0.07, 1.0)
    ]
    _assert_pairs(pairs, (jnp.asarray(A),), 1e-11)
    _assert_pairs(pairs[:1], (jnp.asarray(A, jnp.float32),), 2e-4)


def test_matches_torch():
    ts = [tt(x, True) for x in (A, B, C)]
    want = [F.cosine_similarity(ts[0], ts[1], dim=-1)]
    fns = [lambda a, b, c: jaxloss.cosine_similarity(a, b)]
    for red in ("none", "sum", "mean"):
        want.append(F.triplet_margin_loss(*ts, margin=2.0, p=2, eps=0.0, reduction=red))
        fns.append(
            lambda a, b, c, r=red: jaxloss.triplet_margin_loss(
                a, b, c, margin=2.0, eps=0.0, reduction=r
            )
        )
    got = value_and_grads(fns, tuple(jnp.asarray(x) for x in (A, B, C)))
    for (v, gs), w in zip(got, want, strict=True):
        for t in ts:
            t.grad = None
        w.sum().backward()
        close(v, w.detach().numpy())
        close(gs[0], ts[0].grad.numpy())
        close(gs[1], ts[1].grad.numpy())
        if ts[2].grad is not None:  # the triplet loss's negatives
            close(gs[2], ts[2].grad.numpy())


def test_reductions():
    lab = jnp.array([0, 0, 0, 1])

    @jax.jit
    def run(a, b):
        out = {r: jaxloss.cosine_distance(a, b, reduction=r) for r in ("none", "sum", "mean")}
        out |= {f"s{r}": jaxloss.cosine_similarity(a, b, reduction=r) for r in ("sum", "mean")}
        out |= {f"n{r}": jaxloss.ntxent(a, lab, reduction=r) for r in ("none", "sum", "mean")}
        return out

    o = run(jnp.asarray(A), jnp.asarray(B))
    close(o["sum"], jnp.sum(o["none"]))
    close(o["mean"], jnp.mean(o["none"]))
    close(o["ssum"], jnp.sum(1.0 - o["none"]))
    close(o["smean"], jnp.mean(1.0 - o["none"]))
    per = o["nnone"]
    assert per.shape == (4,) and float(per[3]) == 0.0  # no positive
    close(o["nsum"], jnp.sum(per))
    close(o["nmean"], jnp.sum(per) / 6)  # 6 ordered positive pairs
    with optax_promotion():
        close(o["nmean"], optax.losses.ntxent(jnp.asarray(A), lab))
    with pytest.raises(ValueError, match="reduction"):
        jaxloss.cosine_distance(A, B, reduction="avg")


def test_ntxent_worked_value():
    # two identical embeddings and one orthogonal: each positive pair has
    # -log(e / (e + e**0)) = log(1 + e**-1) at temperature 1.
    e = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    close(jax.jit(jaxloss.ntxent)(e, jnp.array([0, 0, 1]), 1.0), math.log1p(math.exp(-1.0)))


def test_edges_finite():
    b = jnp.asarray(B[:2, :3])
    a64 = jnp.asarray(A)
    lab = jnp.asarray(LABELS)
    big32 = jnp.asarray(A * 1e30, jnp.float32)
    tiny32 = jnp.asarray(A * 1e-30, jnp.float32)
    b32 = jnp.asarray(B, jnp.float32)

    def sim_sum(a, b):
        return jnp.sum(jaxloss.cosine_similarity(a, b))

    @jax.jit
    def run(zero, b, a, big, tiny, b32):
        zero_e = jnp.zeros((4, 5)).at[0].set(1.0)
        big_e = big / 1e5  # about 1e25
        trip = lambda x: jnp.sum(jaxloss.triplet_margin_loss(x, x, -x))
        return {
            "zero_sim": jaxloss.cosine_similarity(zero, b),
            "zero_dist": jaxloss.cosine_distance(zero, b),
            "finite": (
                jax.grad(sim_sum, (0, 1))(zero, b),
                jax.hessian(lambda z: sim_sum(z, b))(zero),
                jax.grad(
                    lambda x, p: jnp.sum(jaxloss.triplet_margin_loss(x, p, x + 1.0, eps=0.0)),
                    (0, 1),
                )(a, a),
                jax.grad(trip)(big),
                jax.grad(jaxloss.ntxent)(zero_e, lab, 0.01),
                jax.value_and_grad(jaxloss.ntxent)(big_e, lab),
                jax.grad(jaxloss.ntxent)(a, lab, 1e-4),
                [jax.grad(lambda x: sim_sum(x, b32))(x) for x in (big, tiny)],
            ),
            "sims": [jaxloss.cosine_similarity(x, x) for x in (big, tiny)],
            "trip_big": jaxloss.triplet_margin_loss(big, big * 0.5, -big),
            "no_pairs": jaxloss.ntxent(a, jnp.arange(4)),
        }

    o = run(jnp.zeros((2, 3)), b, a64, big32, tiny32, b32)
    close(o["zero_sim"], jnp.zeros(2))  # optax: NaN
    close(o["zero_dist"], jnp.ones(2))
    assert all_finite(o["finite"])
    for s in o["sims"]:  # beyond the range of the squared norm in float32
        close(s, jnp.ones(4), rtol=1e-5)
    norms = np.linalg.norm(A, axis=-1) * 1e30
    close(o["trip_big"], np.maximum(0.5 * norms - 2 * norms + 1.0, 0.0), rtol=1e-5)
    assert float(o["no_pairs"]) == 0.0  # optax: 0 / 0


def test_low_precision():
    a, b, c = (jnp.asarray(x, jnp.bfloat16) for x in (A, B, C))
    lab = jnp.asarray(LABELS)
    fns = {
        "cosine_similarity": lambda a, b, c: jaxloss.cosine_similarity(a, b),
        "cosine_distance": lambda a, b, c: jaxloss.cosine_distance(a, b),
        "triplet_margin_loss": lambda a, b, c: jaxloss.triplet_margin_loss(a, b, c),
        "ntxent": lambda a, b, c: jaxloss.ntxent(a, lab),
    }

    @jax.jit
    def run(a, b, c):
        up = [x.astype(jnp.float32) for x in (a, b, c)]
        return {
            k: (f(a, b, c), f(*up), jax.grad(lambda a, f=f: jnp.sum(f(a, b, c)))(a))
            for k, f in fns.items()
        }

    for k, (low, high, g) in run(a, b, c).items():
        assert low.dtype == jnp.float32, k
        close(low, high, rtol=1e-6, atol=1e-6, err_msg=k)
        assert g.dtype == jnp.bfloat16, k


def test_transforms():
    a, b, c = (jnp.asarray(x) for x in (A, B, C))
    d = jnp.asarray(C)
    lab = jnp.asarray(LABELS)
    calls = [
        (lambda a, h: jaxloss.cosine_similarity(a, b, epsilon=h), 0.3),
        (lambda a, h: jaxloss.cosine_distance(a, b, epsilon=h), 0.3),
        (lambda a, h: jaxloss.triplet_margin_loss(a, b, c, margin=h, eps=h), 0.7),
        (lambda a, h: jaxloss.triplet_margin_loss(a, b, c, norm_degree=h), 4.0),
        (lambda a, h: jaxloss.ntxent(a, lab, h), 0.5),
    ]

    @jax.jit
    def run(a, hs):
        out = []
        for (f, h), ht in zip(calls, hs, strict=True):
            s = lambda a, f=f, ht=ht: jnp.sum(f(a, ht))
            g = jax.grad(s)(a)
            out.append(
                {
                    "traced": f(a, ht),
                    "static": f(a, h),
                    "jacfwd": jax.jacfwd(s)(a),
                    "grad": g,
                    "jvp": jax.jvp(s, (a,), (d,))[1],
                    "dot": jnp.sum(g * d),
                }
            )
        stacked = jnp.stack([a, b])
        vm = {
            "cos": (jax.vmap(jaxloss.cosine_similarity)(a, b), jaxloss.cosine_similarity(a, b)),
            "ntxent": (
                jax.vmap(lambda e: jaxloss.ntxent(e, lab))(stacked),
                jnp.stack([jaxloss.ntxent(a, lab), jaxloss.ntxent(b, lab)]),
            ),
            "triplet": (
                jax.vmap(jaxloss.triplet_margin_loss)(a, b, c),
                jaxloss.triplet_margin_loss(a, b, c),
            ),
        }
        hess = jax.hessian(lambda a: jaxloss.ntxent(a, lab, hs[-1]))(a)
        return out, vm, hess

    out, vm, hess = run(a, [jnp.asarray(h) for _, h in calls])
    for i, o in enumerate(out):
        close(o["traced"], o["static"], err_msg=str(i))  # traced hyperparameter
        close(o["jacfwd"], o["grad"], err_msg=str(i))
        close(o["jvp"], o["dot"], err_msg=str(i))
    assert all_finite(hess)
    for k, (got, want) in vm.items():
        close(got, want, err_msg=k)


def test_bad_inputs():
    with pytest.raises(TypeError, match="predictions"):
        jaxloss.cosine_similarity(jnp.ones((2, 3), jnp.int32), B[:2, :3])
    with pytest.raises(ValueError, match="broadcast"):
        jaxloss.cosine_similarity(A, B[:, :3])
    with pytest.raises(TypeError, match="where"):
        jaxloss.cosine_similarity(A, B, where=jnp.ones(A.shape))
    with pytest.raises(TypeError, match="epsilon"):
        jaxloss.cosine_distance(A, B, epsilon="0.1")
    with pytest.raises(TypeError, match="negatives"):
        jaxloss.triplet_margin_loss(A, B, jnp.ones((4, 5), jnp.int32))
    with pytest.raises(ValueError, match="axis=3"):
        jaxloss.triplet_margin_loss(A, B, C, axis=3)
    with pytest.raises(ValueError, match="norm_degree"):
        jaxloss.triplet_margin_loss(A, B, C, norm_degree=0)
    with pytest.raises(ValueError, match="labels"):
        jaxloss.ntxent(A, jnp.array([0, 1]))
    with pytest.raises(TypeError, match="labels"):
        jaxloss.ntxent(A, jnp.ones(4))
    with pytest.raises(ValueError, match="embeddings"):
        jaxloss.ntxent(A[0], jnp.zeros(5, jnp.int32))


def test_cosine_gradient_keeps_no_row_sized_buffer():
    """The cosine's rule forms its derivative elementwise from per-row statistics:
    value_and_grad w.r.t. both inputs keeps no [N, C] intermediate (the plain
    formula under autodiff kept the scaled inputs for the backward pass)."""
    n, c = 256, 2048
    spec = jax.ShapeDtypeStruct((n, c), jnp.float32)
    for loss in (jaxloss.cosine_similarity, jaxloss.cosine_distance):
        temp = temp_bytes(partial(loss, reduction="mean"), spec, spec, argnums=(0, 1))
        assert temp < n * c * 4, (loss.__name__, temp)


def test_triplet_distance_gradient_recomputes_the_difference():
    """The distance's rule recomputes ``x - y`` in the backward pass: value_and_grad
    w.r.t. the anchors keeps one input-sized buffer (the forward's difference, read
    by two reductions) where autodiff of the formula kept four."""
    n, c = 256, 2048
    spec = jax.ShapeDtypeStruct((n, c), jnp.float32)
    temp = temp_bytes(partial(jaxloss.triplet_margin_loss, reduction="mean"), spec, spec, spec)
    assert temp < 1.5 * n * c * 4, temp

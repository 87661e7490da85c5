"""PyTorch's margin and embedding losses: parity with ``torch.nn.functional``.

References (called side by side): ``torch.nn.functional.margin_ranking_loss``,
``cosine_embedding_loss``, ``hinge_embedding_loss``, ``soft_margin_loss``,
``multilabel_soft_margin_loss``, ``multilabel_margin_loss`` and
``triplet_margin_with_distance_loss`` (with ``pairwise_distance``).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import all_finite, close, temp_bytes, tt

from jaxloss import _margin as M

RNG = np.random.default_rng(7)
N, C = 5, 4
X1, X2, X3 = RNG.normal(size=(3, N, C))
V1, V2 = RNG.normal(size=(2, N))
PM = np.where(RNG.uniform(size=N) < 0.5, -1.0, 1.0)
PM2 = np.where(RNG.uniform(size=(N, C)) < 0.5, -1.0, 1.0)
SOFT = RNG.uniform(size=(N, C))
W = RNG.uniform(0.5, 2.0, size=C)
ML_T = np.array([[3, 0, -1, 1], [1, -1, -1, -1], [-1, 2, 0, 0], [0, 1, 2, 3], [2, 2, -1, 0]])


def _l1_distance(x, y):
    return (x - y).abs().sum(-1) if isinstance(x, torch.Tensor) else jnp.sum(jnp.abs(x - y), -1)


# name, float inputs, other positional inputs, keyword options
CASES = [
    ("margin_ranking_loss", (V1, V2), (PM,), {"margin": 0.3}),
    ("margin_ranking_loss", (V1, V2), (PM,), {}),
    ("cosine_embedding_loss", (X1, X2), (PM,), {"margin": 0.2}),
    ("cosine_embedding_loss", (X1, X2), (PM,), {"margin": -0.5}),
    ("cosine_embedding_loss", (X1[0], X2[0]), (np.array(-1.0),), {}),
    ("hinge_embedding_loss", (np.abs(X1) * 1.5,), (PM2,), {"margin": 1.3}),
    ("hinge_embedding_loss", (X1,), (PM2,), {}),
    ("soft_margin_loss", (X1 * 3,), (PM2,), {}),
    ("multilabel_soft_margin_loss", (X1 * 3,), (SOFT,), {}),
    ("multilabel_soft_margin_loss", (X1,), (np.round(SOFT),), {"weight": W}),
    ("multilabel_soft_margin_loss", (X1[0],), (SOFT[0],), {"weight": W}),
    ("multilabel_margin_loss", (X1,), (ML_T,), {}),
    ("multilabel_margin_loss", (X1[1],), (ML_T[0],), {}),
    ("triplet_margin_with_distance_loss", (X1, X2, X3), (), {}),
    ("triplet_margin_with_distance_loss", (X1, X2, X3), (), {"margin": 0.5, "swap": True}),
    ("triplet_margin_with_distance_loss", (X1[2], X2[2], X3[2]), (), {"swap": True}),
    (
        "triplet_margin_with_distance_loss",
        (X1, X2, X3),
        (),
        {"distance_function": _l1_distance, "margin": 2.0, "swap": True},
    ),
]
REDUCTIONS = ("none", "sum", "mean")


def _torch_kwargs(kw):
    kw = dict(kw)
    if "weight" in kw:
        kw["weight"] = tt(kw["weight"])
    return kw


def _torch(name, floats, others, kw, reduction, dtype=torch.float64):
    xs = [tt(a).to(dtype).requires_grad_(True) for a in floats]
    ys = [tt(a).to(dtype) if np.issubdtype(a.dtype, np.floating) else tt(a) for a in others]
    out = getattr(F, name)(*xs, *ys, reduction=reduction, **_torch_kwargs(kw))
    cot = torch.linspace(0.5, 1.5, out.numel(), dtype=dtype).reshape(out.shape)
    (out * cot).sum().backward()
    return out.detach().numpy(), [x.grad.numpy() for x in xs], cot.numpy()


def _jax(name, groups):
    """Values and gradients for each group of inputs and every reduction, in one
    jitted program; a group is ``(floats, others, kw, cotangents)``."""
    fn = getattr(M, name)

    def one(floats, others, kw, cots):
        n = len(floats)
        results = []
        for reduction, cot in zip(REDUCTIONS, cots, strict=True):

            def f(*fl, reduction=reduction, cot=cot):
                out = fn(*fl, *others, reduction=reduction, **kw)
                return jnp.sum(out * cot), out

            grad = jax.value_and_grad(f, argnums=tuple(range(n)), has_aux=True)
            (_, out), grads = grad(*floats)
            results.append((out, grads))
        return results

    @jax.jit
    def run(arrays):
        pairs = zip(arrays, kws, strict=True)
        return [one(fl, ot, dict(kw, **ka), c) for (fl, ot, ka, c), kw in pairs]

    kws = [{k: v for k, v in g[2].items() if not isinstance(v, np.ndarray)} for g in groups]
    arrays = [
        (
            tuple(jnp.asarray(a) for a in fl),
            tuple(jnp.asarray(a) for a in ot),
            {k: jnp.asarray(v) for k, v in kw.items() if isinstance(v, np.ndarray)},
            [jnp.asarray(c) for c in cots],
        )
        for fl, ot, kw, cots in groups
    ]
    return run(arrays)


def _f32(a):
    return np.asarray(a, np.float32) if np.asarray(a).dtype == np.float64 else a


@pytest.mark.parametrize("case", range(len(CASES)))
def test_torch_parity(case):
    """float64 (tight) and float32 (PyTorch's float32) values and gradients w.r.t.
    every float input, for every reduction."""
    name, floats, others, kw = CASES[case]
    want64 = [_torch(name, floats, others, kw, r) for r in REDUCTIONS]
    want32 = [_torch(name, floats, others, kw, r, torch.float32) for r in REDUCTIONS]
    kw32 = {k: _f32(v) for k, v in kw.items()}
    got64, got32 = _jax(
        name,
        [
            (floats, others, kw, [w[2] for w in want64]),
            (tuple(map(_f32, floats)), tuple(map(_f32, others)), kw32, [w[2] for w in want32]),
        ],
    )
    for dtype, got, want, tol in (
        (jnp.float64, got64, want64, (1e-10, 1e-12, 1e-10, 1e-12)),
        (jnp.float32, got32, want32, (2e-6, 2e-6, 1e-5, 2e-6)),
    ):
        for r, (out, grads), (value, want_grads, _) in zip(REDUCTIONS, got, want, strict=True):
            msg = f"{name} {r} {dtype.__name__}"
            assert out.dtype == dtype and out.shape == value.shape, msg
            close(out, value, rtol=tol[0], atol=tol[1], err_msg=msg)
            for g, w in zip(grads, want_grads, strict=True):
                close(g, w, rtol=tol[2], atol=tol[3], err_msg=f"{msg} gradient")


@jax.jit
def _duplicates(x):
    return M.multilabel_margin_loss(x, jnp.asarray([2, 2, -1, 0]))


def test_multilabel_margin_counts_duplicates_and_stops_at_first_negative():
    x = np.array([0.1, 0.2, 0.4, 0.8])
    hinge = [max(0.0, 1 - x[2] + x[i]) for i in (0, 1, 3)]
    close(_duplicates(jnp.asarray(x)), 2 * sum(hinge) / 4)


TRACED = {
    "margin_ranking_loss": lambda m: M.margin_ranking_loss(V1, V2, PM, margin=m),
    "cosine_embedding_loss": lambda m: M.cosine_embedding_loss(X1, X2, PM, margin=m),
    "hinge_embedding_loss": lambda m: M.hinge_embedding_loss(np.abs(X1), PM2, margin=m),
    "triplet_margin_with_distance_loss": lambda m: M.triplet_margin_with_distance_loss(
        X1, X2, X3, margin=m, swap=True
    ),
}


@jax.jit
def _traced(ms):
    out = {}
    for name, f in TRACED.items():
        per_m = [f(ms[i]) for i in range(3)]
        tangent = jax.jvp(lambda m, f=f: jnp.sum(f(m)), (ms[1],), (jnp.ones(()),))[1]
        out[name] = (jax.vmap(f)(ms), per_m, tangent)
    return out


def test_traced_margin_jit_vmap_jvp():
    ms = [0.1, 0.7, 1.3]
    got = _traced(jnp.asarray(ms))
    for name, f in TRACED.items():
        batched, per_m, tangent = got[name]
        for i, m in enumerate(ms):
            close(batched[i], per_m[i], err_msg=name)
            close(per_m[i], f(m), err_msg=name)  # traced margin == concrete margin
        fd = (np.sum(f(0.7 + 1e-6)) - np.sum(f(0.7 - 1e-6))) / 2e-6
        close(tangent, fd, rtol=1e-6, atol=1e-8, err_msg=name)


@jax.jit
def _forward_mode(x, y, w, t):
    def f(x):
        return M.multilabel_soft_margin_loss(x, y, weight=w, reduction="sum")

    def ref(x):  # the plain log-sigmoid form
        terms = -(y * jax.nn.log_sigmoid(x) + (1 - y) * jax.nn.log_sigmoid(-x)) * w[None]
        return jnp.sum(jnp.mean(terms, axis=-1))

    def f_of_y(y):
        return M.multilabel_soft_margin_loss(x, y, weight=w, reduction="sum")

    got = (jax.jacfwd(f)(x), jax.hessian(f)(x), jax.jvp(jax.grad(f), (x,), (t,))[1])
    want = (jax.grad(ref)(x), jax.hessian(ref)(x), jax.jvp(jax.grad(ref), (x,), (t,))[1])
    return got, want, jax.grad(f_of_y)(y), jax.jacfwd(f_of_y)(y)


def test_forward_mode_and_hessian():
    """jacfwd, hessian and forward-over-reverse of the custom rule; the target's
    derivative (through the plain forward) is -w x / C, also at hard labels."""
    x, y, w = X1 * 2, np.round(SOFT), W
    got, want, dy, dy_fwd = _forward_mode(x, y, w, X2)
    for g, r in zip(got, want, strict=True):
        close(g, r)
    close(dy, -w * x / C)
    close(dy_fwd, -w * x / C)


@jax.jit
def _edges(z):
    v = jnp.ones_like(z)
    y = jnp.array([1, -1])
    out = []
    for f in (
        lambda a: M.cosine_embedding_loss(a, v, y, reduction="sum"),
        lambda a: M.cosine_embedding_loss(a, jnp.zeros_like(a), y, reduction="sum"),
        lambda a: M.triplet_margin_with_distance_loss(a, a + 1e-6, a, reduction="sum"),
    ):
        out.append((f(z), jax.grad(f)(z), jax.hessian(f)(z)))
    big = jnp.full((2, 3), 3e30, jnp.float32)
    out.append(M.cosine_embedding_loss(big, -big, y))
    out.append(jax.grad(lambda b: M.cosine_embedding_loss(b, big, y, reduction="sum"))(big))
    inf = jnp.array([[jnp.inf, -jnp.inf, 30.0, -1e4]])
    hard = jnp.array([[1.0, 0.0, 1.0, 0.0]])

    def mlsm(x):
        return M.multilabel_soft_margin_loss(x, hard, reduction="mean")

    out.append((mlsm(inf), jax.grad(mlsm)(inf), jax.jacfwd(mlsm)(inf)))
    out.append(M.soft_margin_loss(jnp.array([jnp.inf, -1e30]), jnp.array([1, -1])))
    return out


def test_edges_finite():
    """Zero vectors, x1 - x2 = -eps (a zero norm), huge and infinite inputs."""
    out = _edges(jnp.zeros((2, 3)))
    assert all_finite(out)
    close(out[3], [2.0, 0.0], atol=1e-6)  # cosine -1 of huge opposite vectors
    close(out[5][0], np.log1p(np.exp(-30.0)) / 4)
    close(out[6], [0.0, 0.0])


def test_low_precision_and_empty_mean():
    x = jnp.asarray(X1, jnp.bfloat16)
    out = M.soft_margin_loss(x, jnp.asarray(PM2), reduction="mean")
    assert out.dtype == jnp.float32
    g = jax.grad(lambda x: M.multilabel_soft_margin_loss(x, jnp.asarray(SOFT), reduction="sum"))(x)
    assert g.dtype == jnp.bfloat16
    empty = jnp.zeros((0, 3))
    assert float(M.triplet_margin_with_distance_loss(empty, empty, empty, reduction="mean")) == 0
    assert float(M.multilabel_soft_margin_loss(empty, empty, reduction="mean")) == 0


def test_jit_out_of_range_multilabel_target_is_nan():
    out = jax.jit(M.multilabel_margin_loss)(jnp.asarray(X1[:2]), jnp.asarray(ML_T[:2] * 0 + 7))
    assert np.isnan(np.asarray(out)).all()


@pytest.mark.parametrize(
    ("call", "err", "match"),
    [
        (lambda: M.margin_ranking_loss(V1, V2[:3], PM), ValueError, "input1 and input2"),
        (lambda: M.margin_ranking_loss(V1, V2, PM[:2]), ValueError, "target with shape"),
        (lambda: M.margin_ranking_loss(V1, V2, PM > 0), TypeError, "bool"),
        (lambda: M.cosine_embedding_loss(X1[None], X2[None], PM), ValueError, r"\(N, D\)"),
        (lambda: M.cosine_embedding_loss(X1, X2, PM[:3]), ValueError, "target must have"),
        (lambda: M.hinge_embedding_loss(X1.astype(int), PM2), TypeError, "input"),
        (lambda: M.soft_margin_loss(X1, PM2, reduction="avg"), ValueError, "reduction"),
        (lambda: M.multilabel_soft_margin_loss(X1, SOFT[:, :2]), ValueError, "target"),
        (lambda: M.multilabel_soft_margin_loss(X1, SOFT, weight=W[:3]), ValueError, "weight"),
        (lambda: M.multilabel_soft_margin_loss(X1[None], SOFT), ValueError, r"\(N, C\)"),
        (lambda: M.multilabel_margin_loss(X1, ML_T * 1.0), TypeError, "target"),
        (lambda: M.multilabel_margin_loss(X1, ML_T[:, :2]), ValueError, "shape of input"),
        (lambda: M.multilabel_margin_loss(X1, ML_T + 1), ValueError, r"\[0, 4\)"),
        (lambda: M.triplet_margin_with_distance_loss(X1, X2, X3[0]), ValueError, "dimensions"),
        (lambda: M.triplet_margin_with_distance_loss(X1, X2, X3, margin=0), ValueError, "> 0"),
        (lambda: M.triplet_margin_with_distance_loss(X1, X2, X3, swap=1), TypeError, "swap"),
        (
            lambda: M.triplet_margin_with_distance_loss(X1, X2, X3, distance_function=3),
            TypeError,
            "callable",
        ),
        (
            lambda: M.triplet_margin_with_distance_loss(X1[None], X2[None], X3[None]),
            ValueError,
            "anchor",
        ),
    ],
)
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_cosine_embedding_gradient_keeps_no_row_sized_buffer():
    """The cosine's rule forms its derivative elementwise from per-row statistics:
    value_and_grad w.r.t. both inputs keeps no [N, C] intermediate."""
    n, c = 256, 2048
    spec = jax.ShapeDtypeStruct((n, c), jnp.float32)
    y = jnp.where(jnp.arange(n) % 2 == 0, 1, -1)
    loss = lambda a, b: M.cosine_embedding_loss(a, b, y, margin=0.1, reduction="mean")
    temp = temp_bytes(loss, spec, spec, argnums=(0, 1))
    assert temp < n * c * 4, temp


def test_pairwise_distance_gradient_recomputes_the_difference():
    """The distance's rule recomputes ``x1 - x2`` in the backward pass: value_and_grad
    of the triplet loss w.r.t. the anchor keeps one input-sized buffer (the forward's
    difference, read by two reductions) where autodiff of the formula kept two."""
    n, c = 256, 2048
    spec = jax.ShapeDtypeStruct((n, c), jnp.float32)
    loss = partial(M.triplet_margin_with_distance_loss, margin=0.5, reduction="mean")
    temp = temp_bytes(loss, spec, spec, spec)
    assert temp < 1.5 * n * c * 4, temp

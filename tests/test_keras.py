"""Keras's losses: the formulas of ``keras.losses`` written out in float64 numpy.

``keras.losses.mean_absolute_percentage_error``,
``keras.losses.mean_squared_logarithmic_error`` and
``keras.losses.categorical_hinge`` (Keras 3, ``epsilon = 1e-7``), each
called by Keras as ``f(y_true, y_pred)`` and here as ``f(y_pred, y_true)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import all_finite, close

from jaxloss import _keras as K

EPS = 1e-7
RNG = np.random.default_rng(3)
PRED = RNG.normal(size=(4, 5)) * 2
TRUE = RNG.normal(size=(4, 5)) * 2
ONE_HOT = np.eye(5)[RNG.integers(0, 5, 4)]


def keras_mape(y_true, y_pred):
    return 100.0 * np.mean(np.abs((y_true - y_pred) / np.maximum(np.abs(y_true), EPS)), axis=-1)


def keras_msle(y_true, y_pred):
    first = np.log(np.maximum(y_pred, EPS) + 1.0)
    second = np.log(np.maximum(y_true, EPS) + 1.0)
    return np.mean((first - second) ** 2, axis=-1)


def keras_categorical_hinge(y_true, y_pred):
    pos = np.sum(y_true * y_pred, axis=-1)
    neg = np.max((1.0 - y_true) * y_pred, axis=-1)
    return np.maximum(neg - pos + 1.0, 0.0)


CASES = [
    (K.mean_absolute_percentage_error, keras_mape, PRED, TRUE),
    (K.mean_squared_logarithmic_error, keras_msle, np.abs(PRED), np.abs(TRUE)),
    (K.mean_squared_logarithmic_error, keras_msle, PRED, TRUE),  # clamped at eps
    (K.categorical_hinge, keras_categorical_hinge, PRED, ONE_HOT),
    (K.categorical_hinge, keras_categorical_hinge, PRED, np.abs(TRUE) / 4),
]


@jax.jit
def _all(args):
    out = []
    for (fn, *_), (x, t) in zip(CASES, args, strict=True):
        per = {r: fn(x, t, reduction=r) for r in ("none", "sum", "mean")}

        def total(x, t, fn=fn):
            return jnp.sum(fn(x, t) * jnp.arange(1.0, 5.0))

        out.append((per, jax.grad(total, argnums=(0, 1))(x, t)))
    return out


def _num_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def test_keras_formulas_values_and_gradients():
    got = _all([(jnp.asarray(x), jnp.asarray(t)) for _, _, x, t in CASES])
    w = np.arange(1.0, 5.0)
    for (fn, ref, x, t), (per, (gx, gt)) in zip(CASES, got, strict=True):
        want = ref(t, x)  # Keras's order: y_true first
        close(per["none"], want, err_msg=fn.__name__)
        close(per["sum"], want.sum(), err_msg=fn.__name__)
        close(per["mean"], want.mean(), err_msg=fn.__name__)
        close(gx, _num_grad(lambda x: ref(t, x) @ w, x), rtol=1e-6, atol=1e-6)
        close(gt, _num_grad(lambda t: ref(t, x) @ w, t), rtol=1e-6, atol=1e-6)


def test_argument_order_matters():
    # MAPE divides by the truth: swapping the arguments changes the number
    x, t = jnp.array([[2.0]]), jnp.array([[1.0]])
    close(K.mean_absolute_percentage_error(x, t), [100.0])
    close(K.mean_absolute_percentage_error(t, x), [50.0])
    with pytest.raises(TypeError):
        K.mean_absolute_percentage_error(y_true=t, y_pred=x)


@jax.jit
def _edges(z):
    fns = (
        lambda x: K.mean_absolute_percentage_error(x, z, reduction="sum"),
        lambda x: K.mean_squared_logarithmic_error(x, z, reduction="sum"),
        lambda t: K.mean_squared_logarithmic_error(z, t, reduction="sum"),
        lambda x: K.categorical_hinge(x, z, reduction="sum"),
    )
    return [(f(z), jax.grad(f)(z), jax.jacfwd(f)(z)) for f in fns]


def test_edges_finite_and_low_precision():
    assert all_finite(_edges(jnp.zeros((2, 3))))
    x = jnp.asarray(np.abs(PRED), jnp.bfloat16)
    out = K.mean_squared_logarithmic_error(x, jnp.asarray(np.abs(TRUE), jnp.bfloat16))
    assert out.dtype == jnp.float32 and out.shape == (4,)
    g = jax.grad(lambda x: K.categorical_hinge(x, jnp.asarray(ONE_HOT), reduction="sum"))(x)
    assert g.dtype == jnp.bfloat16
    assert float(K.categorical_hinge(jnp.zeros((0, 3)), jnp.zeros((0, 3)), reduction="mean")) == 0


@pytest.mark.parametrize(
    ("call", "err", "match"),
    [
        (lambda: K.categorical_hinge(np.ones(3, int), ONE_HOT[0]), TypeError, "predictions"),
        (lambda: K.categorical_hinge(jnp.float32(1.0), 1.0), ValueError, "scalar"),
        (lambda: K.mean_squared_logarithmic_error(PRED, TRUE[:, :2]), ValueError, "targets"),
        (lambda: K.mean_absolute_percentage_error(PRED, "x"), TypeError, "targets"),
        (lambda: K.mean_absolute_percentage_error(PRED, TRUE, reduction="x"), ValueError, "red"),
    ],
)
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()

"""optax's calling conventions, called side by side with optax 0.2.8.

Positional ``axis``/``where``, tuple and ``None`` axes, per-example masks, and
the padding pattern (labels of -1 on padded rows, masked after the loss).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import close as close64
from _helpers import hyperparameter_gradients_match_differences

import jaxloss

R = np.random.default_rng(7)
X = jnp.asarray(R.normal(size=(5, 4)), jnp.float32)
Y = jnp.asarray(R.integers(0, 4, size=5))
T = jax.nn.softmax(jnp.asarray(R.normal(size=(5, 4)), jnp.float32))
EXAMPLE_MASK = jnp.array([True, False, True, True, False])
CLASS_MASK = jnp.asarray(R.uniform(size=(5, 4)) > 0.3).at[:, 0].set(True)


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("where", [None, EXAMPLE_MASK, CLASS_MASK])
def test_positional_axis_and_where(where):
    y = jnp.where(CLASS_MASK[jnp.arange(5), Y], Y, 0)  # labels on allowed classes
    close(
        jaxloss.softmax_cross_entropy_with_integer_labels(X.T, y, 0, None if where is None
                                                          else where.T if where.ndim == 2
                                                          else where),
        optax.softmax_cross_entropy_with_integer_labels(X.T, y, 0, None if where is None
                                                        else where.T if where.ndim == 2
                                                        else where),
    )  # fmt: skip
    close(
        jaxloss.softmax_cross_entropy(X, T, -1, where),
        optax.softmax_cross_entropy(X, T, -1, where),
    )
    if where is None or where.ndim == 2:  # optax's KL has no per-example mask
        lp = jax.nn.log_softmax(X)
        close(jaxloss.kl_divergence(lp, T, -1, where), optax.kl_divergence(lp, T, -1, where))


def test_tuple_and_none_axes():
    shape = (2, 3, 4, 5)
    x = jnp.asarray(R.normal(size=shape), jnp.float32)
    labels = jnp.asarray(R.integers(0, 12, size=(2, 5)))  # flat index into axes (1, 2)
    close(
        jaxloss.softmax_cross_entropy_with_integer_labels(x, labels, (1, 2)),
        optax.softmax_cross_entropy_with_integer_labels(x, labels, (1, 2)),
    )
    t = jax.nn.softmax(jnp.asarray(R.normal(size=shape), jnp.float32), axis=(1, 2))
    close(jaxloss.softmax_cross_entropy(x, t, (1, 2)), optax.softmax_cross_entropy(x, t, (1, 2)))
    t_all = jax.nn.softmax(x, axis=None)
    close(
        jaxloss.softmax_cross_entropy(x, t_all, None), optax.softmax_cross_entropy(x, t_all, None)
    )


def test_per_example_where_gives_zero_and_does_not_count():
    got = jaxloss.softmax_cross_entropy_with_integer_labels(X, Y, where=EXAMPLE_MASK)
    assert np.all(np.asarray(got)[~np.asarray(EXAMPLE_MASK)] == 0.0)
    mean = jaxloss.softmax_cross_entropy_with_integer_labels(
        X, Y, where=EXAMPLE_MASK, reduction="mean"
    )
    full = optax.softmax_cross_entropy_with_integer_labels(X, Y)
    close(mean, np.asarray(full)[np.asarray(EXAMPLE_MASK)].mean())


def test_padding_pattern_gives_clean_gradients_under_jit():
    pad = jnp.array([True, True, False, True, False])
    labels = jnp.where(pad, Y, -1)

    @jax.jit
    def loss(x, labels):  # labels traced, as in a training step
        per_row = jaxloss.softmax_cross_entropy_with_integer_labels(x, labels)
        return jnp.where(pad, per_row, 0.0).sum()

    def reference(x):
        per_row = optax.softmax_cross_entropy_with_integer_labels(x, jnp.where(pad, Y, 0))
        return jnp.where(pad, per_row, 0.0).sum()

    value, grad = jax.value_and_grad(loss)(X, labels)
    close(value, reference(X))
    close(grad, jax.grad(reference)(X))
    # the padded rows' own losses are NaN (out-of-range label), never a wrapped class
    assert np.isnan(np.asarray(jax.jit(jaxloss.softmax_cross_entropy_with_integer_labels)(
        X, labels))[~np.asarray(pad)]).all()  # fmt: skip


@pytest.mark.parametrize("where", [None, CLASS_MASK])
def test_poly_loss_and_smooth_labels_match_optax(where):
    from optax import losses as ol

    close(
        jaxloss.poly_loss_cross_entropy(X, T, epsilon=0.5, where=where),
        ol.poly_loss_cross_entropy(X, T, epsilon=0.5, where=where),
    )
    grads = [
        jax.grad(lambda x, f=f: f(x, T, where=where).sum())(X)
        for f in (jaxloss.poly_loss_cross_entropy, ol.poly_loss_cross_entropy)
    ]
    close(*grads)
    # epsilon traced (scheduled or learned)
    traced = jax.jit(lambda e: jaxloss.poly_loss_cross_entropy(X, T, epsilon=e, where=where))
    close(traced(1.5), ol.poly_loss_cross_entropy(X, T, epsilon=1.5, where=where))
    # optax's own smooth_labels(where=) fails under strict promotion: its formula
    k = 4.0 if where is None else np.asarray(where).sum(-1, keepdims=True)
    close(jaxloss.smooth_labels(T, 0.1, where=where), 0.9 * np.asarray(T) + 0.1 / k)
    close(jax.jit(jaxloss.smooth_labels)(T, 0.3), ol.smooth_labels(T, 0.3))


def test_safe_softmax_cross_entropy_matches_optax_and_is_finite_at_minus_inf():
    from optax import losses as ol

    close(jaxloss.safe_softmax_cross_entropy(X, T), ol.safe_softmax_cross_entropy(X, T))
    x = X.at[:, 1].set(-jnp.inf)
    t = T.at[:, 1].set(0.0)
    close(jaxloss.safe_softmax_cross_entropy(x, t), ol.safe_softmax_cross_entropy(x, t))
    grad = jax.grad(lambda x: jaxloss.safe_softmax_cross_entropy(x, t).sum())(x)
    assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.parametrize("value", [0.0, 0.5, 2.0])
def test_traced_hyperparameters_match_optax(value):
    x = jnp.asarray(R.normal(size=(6,)), jnp.float32)
    y = jnp.asarray(R.integers(0, 2, size=(6,)), jnp.float32)
    pairs = [
        (lambda g: jaxloss.sigmoid_focal_loss(x, y, gamma=g), lambda g: optax.sigmoid_focal_loss(
            x, y, gamma=g)),
        (lambda d: jaxloss.huber_loss(x, y, delta=d + 0.25), lambda d: optax.huber_loss(
            x, y, delta=d + 0.25)),
    ]  # fmt: skip
    for ours, theirs in pairs:
        close(jax.jit(ours)(value), theirs(value))  # traced
        close(ours(value), theirs(value))  # concrete: the specialised path
        # learning the hyperparameter: autodiff of the plain formula
        close(
            jax.grad(lambda v, f=ours: f(v).sum())(value),
            jax.grad(lambda v, f=theirs: f(v).sum())(value),
        )
        close(jax.vmap(ours)(jnp.array([value, value + 1.0])),
              jnp.stack([theirs(value), theirs(value + 1.0)]))  # fmt: skip


def test_traced_gamma_softmax_focal_equals_the_static_path():
    x = jnp.asarray(R.normal(size=(4, 5)), jnp.float32)
    y = jnp.asarray(R.integers(0, 5, size=4))
    for gamma in (0.0, 1.5):
        f = lambda g: jaxloss.softmax_focal_loss(x, y, gamma=g)
        close(jax.jit(f)(gamma), f(gamma))
        gx = [jax.grad(lambda x, g=g: jaxloss.softmax_focal_loss(x, y, gamma=g).sum())(x)
              for g in (gamma, jnp.float32(gamma))]  # fmt: skip
        close(*gx)


@pytest.mark.parametrize(
    "name", ["multiclass_hinge_loss", "multiclass_perceptron_loss", "perceptron_loss", "hinge_loss"]
)
def test_margin_losses_are_optax_s(name):
    if name.startswith("multiclass"):
        args = (X.astype(jnp.float64), Y)  # optax's one_hot is float64 under x64
    else:
        signs = jnp.asarray(R.choice([-1.0, 1.0], size=X.shape), jnp.float32)
        args = (X, signs)
    ours, theirs = getattr(jaxloss, name), getattr(optax.losses, name)
    close(ours(*args), theirs(*args))
    close(jax.jit(ours)(*args), theirs(*args))
    if name.startswith("multiclass"):  # hinge/perceptron: PyTorch's slope 0 at the kink
        close(jax.grad(lambda s: ours(s, args[1]).sum())(args[0]),
              jax.grad(lambda s: theirs(s, args[1]).sum())(args[0]))  # fmt: skip


def test_multiclass_hinge_is_crammer_singer_and_multi_margin_is_pytorch_s():
    s, y = jnp.array([[10.0, 3.0]], jnp.float64), jnp.array([1])
    # max_c(s_c + 1 - [c = y]) - s_y = 11 - 3 (optax); PyTorch: max(0, 1 - 3 + 10) / 2
    close(jaxloss.multiclass_hinge_loss(s, y), optax.losses.multiclass_hinge_loss(s, y))
    import torch

    want = torch.nn.functional.multi_margin_loss(
        torch.tensor(np.asarray(s)), torch.tensor(np.asarray(y)), reduction="none"
    )
    close(jaxloss.multi_margin_loss(s, y), want.numpy())


def test_traced_cross_entropy_options_equal_the_static_path_and_are_differentiable():
    """label_smoothing, z_loss and logit_softcap traced (jit, vmap, grad) give the
    numbers of the Python-number path; their derivatives match central
    differences of that path in float64."""
    r = np.random.default_rng(7)
    x = jnp.asarray(r.normal(0.0, 3.0, (5, 6)))
    y = jnp.asarray(r.integers(0, 6, 5))
    t = jnp.asarray(r.dirichlet(np.ones(6), 5))
    b = jnp.asarray(r.uniform(size=(5, 6)))
    losses = {
        "int": lambda e, z, c: jaxloss.softmax_cross_entropy_with_integer_labels(
            x, y, label_smoothing=e, z_loss=z, logit_softcap=c, reduction="sum"
        ),
        "prob": lambda e, z, c: jaxloss.softmax_cross_entropy(
            x, t, label_smoothing=e, z_loss=z, reduction="sum"
        ),
        "bce": lambda e, z, c: jaxloss.sigmoid_binary_cross_entropy(
            x, b, label_smoothing=e, reduction="sum"
        ),
    }
    point = (0.15, 0.02, 4.0)
    for name, f in losses.items():
        static = f(*point)
        traced = jax.jit(f)  # one compiled program for every value below
        close64(traced(*point), static, err_msg=name)
        close64(jax.vmap(f, (0, None, None))(jnp.array([0.0, point[0]]), *point[1:]),
              jnp.stack([f(0.0, *point[1:]), static]), err_msg=name)  # fmt: skip
        hyperparameter_gradients_match_differences(f, point, name)

    # the logits' gradient is the same closed form on both paths
    def ce(x, e):
        return jaxloss.softmax_cross_entropy_with_integer_labels(
            x, y, label_smoothing=e, z_loss=0.02, logit_softcap=4.0
        ).sum()

    close64(jax.grad(ce)(x, 0.15), jax.grad(ce)(x, jnp.float64(0.15)))

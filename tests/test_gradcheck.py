"""jaxloss.testing.gradcheck: what it catches, what it holds fixed, and every loss through it.

The registry ``BUILDERS`` maps each public loss to argument builders for a few
input regimes (moderate values, large logits around +-30, masked/ignored
entries where the loss has them). A loss that is not in ``jaxloss`` yet is
simply absent from the parametrization; a public loss without a builder fails
``test_every_public_loss_has_a_builder``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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

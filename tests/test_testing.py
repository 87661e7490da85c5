"""jaxloss.testing.gradcheck: raising on failure, skipped checks, propagated errors, check_grads."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss.testing
from jaxloss.testing import GradcheckError, GradcheckReport, gradcheck

X = jnp.asarray(np.array([[0.3, -1.2, 2.0], [0.7, 0.1, -0.4]], dtype=np.float32))
FORWARD_CHECKS = {"jvp vs fd", "jacfwd vs fd", "jvp/vjp consistency"}
REVERSE_CHECKS = {"vjp vs fd", "jacrev vs fd", "jvp/vjp consistency"}


def _sin_sum(x):
    return jnp.sum(jnp.sin(x))


def _sin_sum_rule(scale: float):
    """sum(sin(x)) with a custom_jvp whose tangent is ``scale`` times the truth."""

    @jax.custom_jvp
    def f(x):
        return _sin_sum(x)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return f(x), scale * jnp.sum(jnp.cos(x) * t)

    return f


def _vjp_only():
    """sum(sin(x)) as a custom_vjp: no forward mode."""

    @jax.custom_vjp
    def f(x):
        return _sin_sum(x)

    f.defvjp(lambda x: (f(x), x), lambda x, g: (g * jnp.cos(x),))
    return f


def _forward_only(x):
    """sin applied twice in a while_loop: no reverse mode."""
    y, _ = jax.lax.while_loop(lambda c: c[1] < 2, lambda c: (jnp.sin(c[0]), c[1] + 1), (x, 0))
    return jnp.sum(y)


# --------------------------------------------------------------------------
# raise_on_failure
# --------------------------------------------------------------------------


def test_raise_on_failure_raises_with_the_table_for_a_wrong_rule():
    with pytest.raises(GradcheckError) as info:
        gradcheck(_sin_sum_rule(1.01), X, reference=_sin_sum, raise_on_failure=True)
    err = info.value
    assert isinstance(err, AssertionError)
    assert isinstance(err.report, GradcheckReport) and not err.report.ok
    text = str(err)
    assert text == str(err.report)
    for word in ("max abs", "max rel", "jvp vs fd", "vjp vs reference", "FAIL", "FAILED"):
        assert word in text
    assert "jvp vs fd" in {c.name for c in err.report.failures}


def test_raise_on_failure_is_silent_for_a_correct_rule():
    r = gradcheck(_sin_sum_rule(1.0), X, reference=_sin_sum, raise_on_failure=True)
    assert r.ok, r
    assert not r.skipped


def test_without_raise_on_failure_a_wrong_rule_is_only_reported():
    r = gradcheck(_sin_sum_rule(1.01), X, order=1)
    assert not r.ok
    assert not r["jvp vs fd"].ok


def test_gradcheck_error_survives_pickling():
    r = gradcheck(_sin_sum_rule(1.01), X, order=1)
    err = pickle.loads(pickle.dumps(GradcheckError(r)))
    assert str(err) == str(r)
    assert err.report.failures == r.failures


# --------------------------------------------------------------------------
# skipped checks
# --------------------------------------------------------------------------


def test_custom_vjp_forward_mode_checks_are_skipped_with_the_reason():
    r = gradcheck(_vjp_only(), X, order=1)
    assert not r.ok
    assert set(r.skipped) == FORWARD_CHECKS
    for name, reason in r.skipped.items():
        assert reason.startswith("no forward mode") and "custom_vjp" in reason, reason
        assert r[name].skipped and not r[name].ok
        assert np.isnan(r.errors[name][0])
    # reverse mode ran and is right
    for name in ("vjp vs fd", "jacrev vs fd", "finite derivatives"):
        assert r[name].ok and not r[name].skipped, r
    assert "3 skipped" in repr(r)


def test_skipped_checks_are_shown_in_the_text_and_the_html():
    r = gradcheck(_vjp_only(), X, order=1)
    text = str(r)
    table = text.splitlines()[3 : 3 + len(r.checks)]
    assert [line.split("  ")[0] for line in table] == [c.name for c in r.checks]
    skipped_lines = [line for line in table if line.endswith("SKIP")]
    assert len(skipped_lines) == len(FORWARD_CHECKS)
    assert f"  jvp vs fd: skipped: {r.skipped['jvp vs fd']}" in text.splitlines()
    page = r._repr_html_()
    assert page.count("<tr") == len(r.checks) + 1
    assert page.count("SKIPPED") == len(FORWARD_CHECKS)
    assert "<li><b>jvp vs fd</b>: skipped: no forward mode" in page


def test_second_order_checks_needing_forward_mode_are_skipped():
    r = gradcheck(_vjp_only(), X)
    assert {"hvp vs fd", "hessian vs fd"} <= set(r.skipped)
    assert r["hvp (rev-over-rev) vs fd"].ok, r  # reverse-over-reverse needs no forward mode


def test_reverse_mode_checks_are_skipped_for_a_while_loop():
    r = gradcheck(_forward_only, X)
    assert not r.ok
    assert REVERSE_CHECKS | {"hvp vs fd", "hvp (rev-over-rev) vs fd"} <= set(r.skipped)
    assert all(reason.startswith("no reverse mode") for reason in r.skipped.values()), r
    assert r["jvp vs fd"].ok and r["jacfwd vs fd"].ok, r


def test_skipped_checks_fail_raise_on_failure():
    with pytest.raises(GradcheckError, match="skipped: no forward mode"):
        gradcheck(_vjp_only(), X, order=1, raise_on_failure=True)


# --------------------------------------------------------------------------
# errors propagate
# --------------------------------------------------------------------------


class _Boom(Exception):
    pass


@pytest.mark.parametrize("kind", [_Boom, TypeError, ValueError])
def test_an_exception_in_fn_propagates(kind):
    def f(x):
        if x.dtype == jnp.float64:  # the finite differences, not the rule under test
            raise kind("boom in fn")
        return _sin_sum(x)

    with pytest.raises(kind, match="boom in fn"):
        gradcheck(f, X)
    with pytest.raises(kind, match="boom in fn"):
        gradcheck(lambda x: f(x.astype(jnp.float64)), X)


@pytest.mark.parametrize("kind", [_Boom, TypeError, ValueError])
def test_an_exception_in_a_derivative_rule_propagates(kind):
    @jax.custom_jvp
    def f(x):
        return _sin_sum(x)

    @f.defjvp
    def f_jvp(primals, tangents):
        raise kind("boom in the rule")

    before = jax.config.jax_enable_x64
    with pytest.raises(kind, match="boom in the rule"):
        gradcheck(f, X, order=1)
    assert jax.config.jax_enable_x64 is before


def test_an_exception_in_the_reference_propagates():
    def ref(x):
        raise _Boom("boom in the reference")

    with pytest.raises(_Boom, match="boom in the reference"):
        gradcheck(_sin_sum_rule(1.0), X, reference=ref)


# --------------------------------------------------------------------------
# jax.test_util.check_grads
# --------------------------------------------------------------------------


@pytest.fixture
def check_grads_calls(monkeypatch):
    """Records each call of jax.test_util.check_grads (it still runs)."""
    calls = []
    real = jax.test_util.check_grads

    def spy(f, args, order, **kwargs):
        calls.append(order)
        return real(f, args, order, **kwargs)

    monkeypatch.setattr(jax.test_util, "check_grads", spy)
    return calls


def test_check_grads_is_off_by_default(check_grads_calls):
    r = gradcheck(_sin_sum_rule(1.01), X)
    assert "jax check_grads" not in r.errors
    assert check_grads_calls == []


@pytest.mark.parametrize("order", [1, 2])
def test_check_grads_runs_when_asked(check_grads_calls, order):
    r = gradcheck(_sin_sum_rule(1.0), X, order=order, jax_check_grads=True)
    assert r.ok, r
    assert r["jax check_grads"].ok
    assert check_grads_calls == [order]


def test_check_grads_reports_a_wrong_rule():
    r = gradcheck(_sin_sum_rule(1.01), X, order=1, jax_check_grads=True)
    row = r["jax check_grads"]
    assert not row.ok and not row.skipped
    assert row.message.startswith("AssertionError")


def test_check_grads_is_skipped_without_forward_mode():
    r = gradcheck(_vjp_only(), X, order=1, jax_check_grads=True)
    assert "custom_vjp" in r.skipped["jax check_grads"]


def test_public_names():
    assert "GradcheckError" in jaxloss.testing.__all__
    assert issubclass(jaxloss.testing.GradcheckError, AssertionError)

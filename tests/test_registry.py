"""Every public loss through its registry row (``jaxloss._registry``).

* the gradient check (``jaxloss.testing.gradcheck``) of every row at every
  input regime it has ("small", "large", "masked"), against the row's float64
  reference formula where the regime's inputs are ones it models (second order
  in the "small" regime; in every regime with ``JAXLOSS_SWEEP=thorough``);
* derivatives with respect to the labels at hard 0/1 labels;
* the signature contract: positional parameter names and order, keyword-only
  names and defaults as the row (DESIGN.md) fixes them, and optax's own
  parameters kept where the row names an optax function;
* each row's reference formula equals the loss in float64, and so does the
  optax function a row names (at default options);
* coverage: every public loss has a row, every row a demo run.
"""

from __future__ import annotations

import inspect
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import close

import jaxloss
from jaxloss._registry import BY_NAME, REGIMES, REGISTRY, public_names, resolve
from jaxloss.testing import gradcheck

NAMES = [row.name for row in REGISTRY]


def _cases():
    return [
        pytest.param(row.name, regime, id=f"{row.name}-{regime}")
        for row in REGISTRY
        for regime in REGIMES
        if row.inputs(regime) is not None
    ]


# --------------------------------------------------------------------------
# Gradient checks
# --------------------------------------------------------------------------


# jax.test_util.check_grads repeats the finite-difference rows at twice their cost:
# it runs on one real loss only.
JAX_CHECK_GRADS = {("binary_cross_entropy", "small")}


# Second-order checks (Hessian-vector products against finite differences of the
# gradient, forward-over-reverse against reverse-over-reverse) cost about as much
# as all the first-order ones. The default (CI) profile runs them in the "small"
# regime of every row; JAXLOSS_SWEEP=thorough (the property sweep's switch) also
# in the "large" and "masked" regimes.
SECOND_ORDER_REGIMES = REGIMES if os.environ.get("JAXLOSS_SWEEP") == "thorough" else ("small",)


@pytest.mark.parametrize(("name", "regime"), _cases())
def test_gradcheck_every_loss(name, regime):
    row = BY_NAME[name]
    inputs = row.inputs(regime)
    fn, flat, argnums = row.bind(inputs)
    reference = row.bind_reference(inputs) if inputs.reference else None
    check_grads = (name, regime) in JAX_CHECK_GRADS
    r = gradcheck(
        fn,
        *flat,
        argnums=argnums,
        reference=reference,
        order=inputs.order if regime in SECOND_ORDER_REGIMES else 1,
        jax_check_grads=check_grads,
    )
    assert r.ok, f"\n{r}"
    if reference is not None:
        assert "vjp vs reference" in r.errors
    if check_grads:
        assert r["jax check_grads"].ok, f"\n{r}"


# Derivatives with respect to the labels at hard (0/1) labels, where a term's
# coefficient is exactly 0 and a rule may drop its derivative (a 0 * inf guard
# that also zeroes d/dt). The sweep above uses soft labels for the label rows.
_X2 = np.array([[2.0, -1.0, 0.5], [0.1, 0.3, -0.2]], np.float32)
HARD_LABELS = {
    "softmax_cross_entropy": [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
    "sigmoid_binary_cross_entropy": [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],
}


@pytest.mark.parametrize("name", sorted(HARD_LABELS))
def test_label_derivative_at_hard_labels(name):
    row = BY_NAME[name]
    x, t = jnp.asarray(_X2), jnp.asarray(np.asarray(HARD_LABELS[name], np.float32))
    r = gradcheck(row.fn, x, t, argnums=1, reference=row.reference, order=1, jax_check_grads=False)
    assert r.ok, f"\n{r}"


# --------------------------------------------------------------------------
# The signature contract
# --------------------------------------------------------------------------


def _bare(sig: inspect.Signature) -> inspect.Signature:
    params = [p.replace(annotation=p.empty) for p in sig.parameters.values()]
    return sig.replace(parameters=params, return_annotation=sig.empty)


def _contract_params():
    return [
        pytest.param(
            row.name,
            marks=[pytest.mark.xfail(strict=True, reason=row.signature_issue)]
            if row.signature_issue
            else [],
        )
        for row in REGISTRY
    ]


@pytest.mark.parametrize("name", _contract_params())
def test_signature_contract(name):
    row = BY_NAME[name]
    actual = _bare(inspect.signature(getattr(jaxloss, name)))
    params = list(actual.parameters.values())
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keywords = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    assert positional == list(row.positional), f"{name}{actual}"
    assert keywords == set(row.keywords), f"{name}{actual}"
    assert all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params), actual
    assert actual == row.parameters, f"defaults: {name}{actual} vs {row.signature}"


@pytest.mark.parametrize("name", [row.name for row in REGISTRY if row.optax])
def test_optax_parameters_are_kept(name):
    """DESIGN.md rule 1: optax's positional parameters in optax's order, optax's keyword
    names and defaults; jaxloss's own options come after them, keyword-only."""
    row = BY_NAME[name]
    ours = row.parameters.parameters
    theirs = _bare(inspect.signature(resolve(row.optax))).parameters
    assert list(ours)[: len(theirs)] == list(theirs), f"{row.signature} vs {row.optax}{theirs}"
    for p in theirs.values():
        assert (ours[p.name].kind, ours[p.name].default) == (p.kind, p.default), p.name
    extras = [p for p in ours.values() if p.name not in theirs]
    assert all(p.kind is p.KEYWORD_ONLY for p in extras), extras


# --------------------------------------------------------------------------
# References and peers
# --------------------------------------------------------------------------


def _to64(a):
    if isinstance(a, jax.Array | np.ndarray) and jnp.issubdtype(a.dtype, jnp.floating):
        return jnp.asarray(a, jnp.float64)
    return a


def _agreement_cases(problems: list[str]) -> dict:
    """name -> (loss, reference, optax peer or None, positional count, float64 inputs)."""
    cases = {}
    for row in REGISTRY:
        inputs = row.inputs("small")
        if inputs is None or not inputs.reference:
            problems.append(f"{row.name}: no small regime modelled by its reference")
            continue
        fn, flat, _ = row.bind(inputs)
        peer = resolve(row.optax) if row.optax else None
        flat = tuple(_to64(a) for a in flat)
        cases[row.name] = (fn, row.bind_reference(inputs), peer, len(inputs.args), flat)
    return cases


def test_references_and_optax_peers_agree_in_float64():
    """Every row's reference equals its loss in float64 on the "small" inputs, and so
    does the optax function a row names (same positional inputs, default options).
    All rows in one compiled program: one compile rather than one per row."""
    problems: list[str] = []
    cases = _agreement_cases(problems)

    def run(flats):
        out = {}
        for name, (fn, ref, peer, n, _) in cases.items():
            a = flats[name]
            try:  # a row that fails to trace is reported, the others still run
                out[name] = (fn(*a), ref(*a))
                if peer is not None:
                    out[name] += (BY_NAME[name].fn(*a[:n]), peer(*a[:n]))
            except Exception as e:
                problems.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0]}")
        return out

    results = jax.jit(run)({name: case[4] for name, case in cases.items()})
    for name, values in results.items():
        got, want = values[:2]
        if got.dtype != jnp.float64 or got.shape != want.shape:
            problems.append(f"{name}: {got.dtype}{got.shape} vs reference {want.shape}")
        pairs = [("its reference", got, want)]
        if len(values) == 4:
            pairs.append((BY_NAME[name].optax, *values[2:]))
        for what, a, b in pairs:
            try:
                close(a, b, rtol=1e-10, atol=1e-12)
            except AssertionError as e:
                lines = [ln.strip() for ln in str(e).splitlines()]
                summary = "; ".join(ln for ln in lines if ln.startswith(("Mismatched", "Max")))
                problems.append(f"{name} vs {what}: {summary}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------
# Coverage and consistency of the table
# --------------------------------------------------------------------------


def test_every_public_loss_has_a_row():
    public = public_names()
    assert public, "jaxloss exports no losses?"
    missing = sorted(set(public) - set(BY_NAME))
    assert not missing, f"add rows for {missing} to jaxloss/_registry.py"
    stale = sorted(set(BY_NAME) - set(public))
    assert not stale, f"rows for losses jaxloss does not export: {stale}"
    assert len(NAMES) == len(set(NAMES)), "duplicate rows"


@pytest.mark.parametrize("name", NAMES)
def test_row_is_consistent(name):
    row = BY_NAME[name]
    assert row.fn is getattr(jaxloss, name)
    assert row.fn.__module__ == f"jaxloss.{row.family}"
    assert row.signature_issue is None or row.signature_issue.startswith("issue ")
    for regime in REGIMES:
        inputs = row.inputs(regime)
        assert inputs is None or set(inputs.kwargs) <= set(inspect.signature(row.fn).parameters)
    if row.bench is None:
        assert not row.batch, "a batch loss needs bench inputs for the data-parallel check"
        return
    args = row.bench(16, 6, np.random.default_rng(0), np.float32)
    assert args[0].dtype == np.float32 and args[0].shape[0] == 16
    assert all(isinstance(a, np.ndarray) for a in args)


def test_every_row_has_a_demo_run():
    from jaxloss.demo import _runs

    covered = {n for spec in _runs.SPECS for n in spec.losses}
    missing = [name for name in NAMES if name not in covered]
    assert not missing, f"no demo run in jaxloss/demo/_runs.py uses {missing}"
    for name, spec in _runs.SPECS_BY_NAME.items():
        assert set(spec.losses) <= set(BY_NAME), name
        # a run is named after its loss, a second setting with the setting in brackets
        assert name in spec.losses or name.split("[")[0] in spec.losses, name
    assert _runs.public_losses() == sorted(NAMES)

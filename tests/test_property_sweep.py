"""Property sweep over every registry row (``jaxloss._registry.REGISTRY``).

For each row, hypothesis draws one of the row's input regimes ("small", "large",
"masked"), a dtype (float16, bfloat16, float32, float64) and, for each
score-like argument, a magnitude (0 and 1e-30 up to near the dtype's maximum)
plus a few +-inf entries. The builder's inputs are rescaled to that magnitude;
labels, targets, masks, probabilities, variances and paddings keep the
builder's values (cast to the dtype). Checks:

1. finiteness: wherever the float64 reference on the same (cast) inputs is
   finite and representable in the dtype, the loss is finite; where the whole
   reference is, the gradient with respect to the first differentiable argument
   has no NaN;
2. ``jax.jit`` and eager calls give the same numbers (to the dtype's tolerance);
3. for per-example (``batch=True``) rows, ``vmap`` over two stacked inputs gives
   the two separate calls' numbers.

The reference is the row's formula where the regime's inputs are ones it models
(``Inputs.reference``), otherwise the loss itself in float64.

Profiles: ``ci`` (default, a few examples per row) and ``thorough``
(``JAXLOSS_SWEEP=thorough``, over 10,000 cases). With ``JAXLOSS_SWEEP_LOG`` set
to a path, the per-row case counts are written there as JSON.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxloss._registry import BY_NAME, REGIMES, REGISTRY, LossSpec

# --------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------

_COMMON = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.data_too_large,
    ],
}
hypothesis.settings.register_profile("ci", max_examples=1, **_COMMON)
hypothesis.settings.register_profile("thorough", max_examples=250, **_COMMON)
PROFILE = os.environ.get("JAXLOSS_SWEEP", "ci")
SETTINGS = hypothesis.settings.get_profile(PROFILE)

# --------------------------------------------------------------------------
# What gets rescaled
# --------------------------------------------------------------------------

# Positions (in ``LossSpec.bind``'s flat arguments) of the score-like inputs
# where they are more than the first differentiable argument: every other input
# (labels, probabilities, variances, log-targets, paddings, masks) keeps its
# domain.
_REGRESSION = ("squared_error", "l2_loss", "absolute_error", "huber_loss", "smooth_l1_loss")
SCORE_ARGS: dict[Any, tuple[int, ...]] = {
    **{name: (0, 1) for name in (*_REGRESSION, "log_cosh")},
    "cosine_similarity": (0, 1),
    "cosine_distance": (0, 1),
    "triplet_margin_loss": (0, 1, 2),
    "dpo_loss": (0, 1, 2, 3),
    "simpo_loss": (0, 1),
    "orpo_odds_ratio_loss": (0, 1),
}

# (name, regime) -> no rescaling: inputs that must stay probabilities there
SCORE_ARGS[("dice_loss", "masked")] = ()
# probabilities rescaled in logit space (then a float64 sigmoid): 0 and 1 reachable
PROBABILITY_ARGS = ("binary_cross_entropy",)

DTYPES = {
    "float16": jnp.float16,
    "bfloat16": jnp.bfloat16,
    "float32": jnp.float32,
    "float64": jnp.float64,
}
# jit vs eager / vmap vs loop: relative to the value, absolute to the inputs' scale
RTOL = {"float16": 2e-2, "bfloat16": 1e-1, "float32": 1e-4, "float64": 1e-10}
MAGNITUDES = (0.0, 1e-30, 1e-8, 1e-3, 1.0, 30.0, 1e3, 6e4, 1e8, 1e15, 1e30, 1e38, 1e100, 1e300)
NEAR_MAX = 0.99  # "max": this fraction of the dtype's largest finite value
# a reference value counts as representable below this fraction of the dtype's max
# (a reduction may overflow an intermediate sum just below it)
REPRESENTABLE = 1 / 64

# Eager calls that retrace on every call (scan, shard_map): the number of eager
# comparisons per row and regime (per profile); all other rows compare every example.
_SHARD_MAP = (
    "vocab_parallel_softmax_cross_entropy",
    "vocab_parallel_fused_linear_softmax_cross_entropy",
)
EAGER_LIMIT = {
    **{name: {"ci": 0, "thorough": 1} for name in _SHARD_MAP},
    **{
        name: {"ci": 0, "thorough": 8}
        for name in (
            "ctc_loss",
            "ctc_loss_with_forward_probs",
            "fused_linear_softmax_cross_entropy",
        )
    },
}

COUNTS: dict[Any, collections.Counter] = collections.defaultdict(collections.Counter)


def _first(out: Any) -> jax.Array:
    return out[0] if isinstance(out, tuple) else out


def _is_float(a: Any) -> bool:
    return isinstance(a, (jax.Array, np.ndarray)) and jnp.issubdtype(a.dtype, jnp.floating)


def _np64(a: Any) -> np.ndarray:
    return np.asarray(jnp.asarray(a, jnp.float64))


def _f64(a: Any) -> jax.Array:
    return jnp.asarray(a, jnp.float64)


def _cast(a: Any, dtype: Any) -> Any:
    if not _is_float(a):
        return a
    with np.errstate(all="ignore"):
        return jnp.asarray(np.asarray(a, np.float64).astype(dtype))


# --------------------------------------------------------------------------
# Compiled functions, one set per (row, regime, dtype)
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    row: LossSpec
    regime: str
    dtype: str
    fn: Callable[..., Any]
    flat: tuple[Any, ...]  # the builder's inputs cast to the dtype
    base: tuple[np.ndarray, ...]  # the scored inputs, float64, as built
    scored: tuple[int, ...]
    grad_arg: int
    value_grad: Callable[..., Any]
    reference: Callable[..., Any]
    reference_kind: str
    vmapped: Callable[..., Any] | None
    other: tuple[np.ndarray, np.ndarray] | None = None  # loss and ok mask at ``flat``


_CASES: dict[tuple[str, str, str], Case] = {}
_REFERENCES: dict[tuple[str, str], tuple[Callable[..., Any], str]] = {}
# rows whose reference formula does not trace under jit: the float64 loss stands in
REFERENCE_FALLBACK: dict[str, str] = {}


def _scored(name: str, regime: str, argnums: tuple[int, ...]) -> tuple[int, ...]:
    if (name, regime) in SCORE_ARGS:
        return SCORE_ARGS[name, regime]
    return SCORE_ARGS.get(name, argnums[:1])


def _reference(name: str, regime: str) -> tuple[Callable[..., Any], str]:
    """The float64 reference of a row at a regime, jitted: ``ref(*flat)``."""
    key = (name, regime)
    if key not in _REFERENCES:
        row = BY_NAME[name]
        inputs = row.inputs(regime)
        fn, flat, _ = row.bind(inputs)
        flat64 = [_f64(a) if _is_float(a) else a for a in flat]
        found = None
        if inputs.reference:
            ref = row.bind_reference(inputs)
            jitted = jax.jit(lambda *a: _first(ref(*a)))
            try:
                jax.eval_shape(jitted, *flat64)
                found = (jitted, "reference")
            except Exception as e:  # recorded: the float64 loss stands in
                REFERENCE_FALLBACK[name] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        _REFERENCES[key] = found or (jax.jit(lambda *a: _first(fn(*a))), "float64 loss")
    return _REFERENCES[key]


def _case(name: str, regime: str, dtype: str) -> Case:
    key = (name, regime, dtype)
    if key in _CASES:
        return _CASES[key]
    row = BY_NAME[name]
    inputs = row.inputs(regime)
    fn, flat, argnums = row.bind(inputs)
    scored = _scored(name, regime, argnums)
    g = argnums[0]
    base = tuple(_np64(flat[i]) for i in scored)
    if name in PROBABILITY_ARGS:
        with np.errstate(all="ignore"):
            base = tuple(np.log(b) - np.log1p(-b) for b in base)
    flat = tuple(_cast(a, DTYPES[dtype]) for a in flat)

    def loss(*args):
        return _first(fn(*args))

    def value_grad(*args):
        def at(x):
            return loss(*args[:g], x, *args[g + 1 :])

        out, vjp = jax.vjp(at, args[g])
        return out, vjp(jnp.ones_like(out))[0]

    reference, kind = _reference(name, regime)
    vmapped = jax.jit(jax.vmap(loss)) if row.batch else None
    case = Case(
        row,
        regime,
        dtype,
        loss,
        flat,
        base,
        scored,
        g,
        jax.jit(value_grad),
        reference,
        kind,
        vmapped,
    )
    _CASES[key] = case
    return case


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def _rescale(
    base: np.ndarray, magnitude: float, infs, dtype: str, probability: bool = False
) -> jax.Array:
    """``base`` with its largest finite entry at ``magnitude`` (capped near the dtype's
    max), ``infs`` as ``(flat index, +-inf)``, then cast to the dtype; with
    ``probability``, ``base`` is in logit space and the result its sigmoid."""
    top = float(jnp.finfo(DTYPES[dtype]).max) * NEAR_MAX
    x = np.array(base, np.float64)
    finite = np.isfinite(x)
    peak = np.max(np.abs(x[finite]), initial=0.0)
    with np.errstate(all="ignore"):
        if peak > 0:
            x[finite] = x[finite] / peak * min(magnitude, top)
        flat = x.reshape(-1)
        for index, value in infs:
            flat[index % flat.size] = value
        if probability:
            x = 0.5 * (1.0 + np.tanh(0.5 * x))
        return jnp.asarray(x.astype(DTYPES[dtype]))


def _draw(data, case: Case) -> tuple[Any, ...]:
    args = list(case.flat)
    probability = case.row.name in PROBABILITY_ARGS
    for i, base in zip(case.scored, case.base, strict=True):
        magnitude = data.draw(st.sampled_from(MAGNITUDES), label=f"magnitude[{i}]")
        if magnitude >= 1e38:
            magnitude = data.draw(st.sampled_from((magnitude, np.inf)), label=f"max[{i}]")
        infs = data.draw(
            st.lists(
                st.tuples(st.integers(0, 10**6), st.sampled_from((np.inf, -np.inf))), max_size=2
            ),
            label=f"infs[{i}]",
        )
        args[i] = _rescale(base, magnitude, infs, case.dtype, probability)
    return tuple(args)


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------


def _representable(ref: np.ndarray, dtype: str) -> np.ndarray:
    top = float(jnp.finfo(DTYPES[dtype]).max) * REPRESENTABLE
    with np.errstate(all="ignore"):
        return np.isfinite(ref) & (np.abs(ref) <= top)


# Rows that multiply ``hidden`` by a kernel form their logits in float32 (from
# bf16/f16 inputs too), as the materialised ``hidden @ kernel`` would: where a
# float64 logit lies beyond float32's range, no float32 loss is owed for its row.
_MATMUL_ROWS = ("fused_linear", "vocab_parallel_fused_linear")


def _logits_in_range(case: Case, args: tuple[Any, ...], ok: np.ndarray) -> np.ndarray:
    if not case.row.name.startswith(_MATMUL_ROWS):
        return ok
    with np.errstate(all="ignore"):
        logits = _np64(args[0]) @ _np64(args[1])
    rows = np.all(np.abs(logits) <= float(jnp.finfo(jnp.float32).max), axis=-1)
    return ok & (rows if rows.shape == ok.shape else rows.all())


def _scale(args: tuple[Any, ...], case: Case) -> float:
    peaks = [1.0]
    for i in case.scored:
        a = _np64(args[i])
        peaks.append(np.max(np.abs(a[np.isfinite(a)]), initial=0.0))
    return max(peaks)


def _agree(actual, expected, ok, case, scale, what, args) -> None:
    a, e = _np64(actual), _np64(expected)
    rtol = RTOL[case.dtype]
    with np.errstate(all="ignore"):
        bad = ok & ~(np.abs(a - e) <= rtol * np.abs(e) + rtol * scale)
    assert not bad.any(), (
        f"{case.row.name}/{case.regime}/{case.dtype}: {what} differ at {np.argwhere(bad)[:4]}:"
        f" {a[bad][:4]} vs {e[bad][:4]}\n{_describe(args, case)}"
    )


def _describe(args, case) -> str:
    return "\n".join(f"  arg {i}: {np.asarray(_np64(args[i])).tolist()}" for i in case.scored)


def _check(case: Case, args: tuple[Any, ...]) -> None:
    name = case.row.name
    ref = _np64(case.reference(*(_f64(a) if _is_float(a) else a for a in args)))
    value, grad = case.value_grad(*args)
    value_np = _np64(value)
    ok = _representable(ref, case.dtype)
    if ref.shape != value_np.shape:
        ok = np.broadcast_to(ok.all(), value_np.shape)
    ok = _logits_in_range(case, args, ok)
    COUNTS[name]["cases"] += 1
    COUNTS[name]["finite reference"] += int(ok.all())
    where = f"{name}/{case.regime}/{case.dtype}"
    detail = _describe(args, case)

    # 1. finiteness where the float64 reference is finite
    bad = ok & ~np.isfinite(value_np)
    assert not bad.any(), (
        f"{where}: loss {value_np[bad][:4]} where the {case.reference_kind} is"
        f" {np.broadcast_to(ref, value_np.shape)[bad][:4]}\n{detail}"
    )
    if ok.all():
        g = _np64(grad)
        assert not np.isnan(g).any(), f"{where}: NaN gradient of arg {case.grad_arg}\n{detail}"

    # 2. jit == eager
    scale = _scale(args, case)
    limit = EAGER_LIMIT.get(name, {}).get(PROFILE)
    if limit is None or COUNTS[name, case.regime]["eager"] < limit:
        COUNTS[name, case.regime]["eager"] += 1
        COUNTS[name]["eager"] += 1
        _agree(case.fn(*args), value, ok, case, scale, "eager and jit", args)

    # 3. vmap over two stacked inputs == two calls
    if case.vmapped is not None:
        if case.other is None:
            other = _np64(case.value_grad(*case.flat)[0])
            ref_other = _np64(case.reference(*(_f64(a) if _is_float(a) else a for a in case.flat)))
            ok_other = _representable(ref_other, case.dtype)
            if ref_other.shape != other.shape:
                ok_other = np.broadcast_to(ok_other.all(), other.shape)
            case.other = (other, ok_other)
        stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), args, case.flat)
        batched = case.vmapped(*stacked)
        _agree(batched[0], value, ok, case, scale, "vmap[0] and the call", args)
        _agree(batched[1], case.other[0], case.other[1], case, 1.0, "vmap[1] and the call", args)


# --------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------


def _regimes(row: LossSpec) -> tuple[str, ...]:
    return tuple(r for r in REGIMES if row.inputs(r) is not None)


@pytest.fixture(scope="module", autouse=True)
def _write_counts():
    yield
    path = os.environ.get("JAXLOSS_SWEEP_LOG")
    if path:
        with open(path, "w") as f:
            counts = {k: v for k, v in COUNTS.items() if isinstance(k, str)}
            report = {"profile": PROFILE, "counts": counts, "fallback": REFERENCE_FALLBACK}
            json.dump(report, f, indent=1, sort_keys=True)


@pytest.mark.parametrize("name", [row.name for row in REGISTRY])
def test_property_sweep(name):
    row = BY_NAME[name]
    regimes = _regimes(row)

    @SETTINGS
    @hypothesis.given(data=st.data())
    def sweep(data):
        regime = data.draw(st.sampled_from(regimes), label="regime")
        dtype = data.draw(st.sampled_from(tuple(DTYPES)), label="dtype")
        case = _case(name, regime, dtype)
        _check(case, _draw(data, case))

    sweep()


def test_checks_can_fail():
    """A naive log-cosh, ``log(cosh(e))``, overflows to inf at finite errors: caught."""
    case = _case("log_cosh", "small", "float32")

    def naive(p, t):
        return jnp.log(jnp.cosh(p - t))

    def value_grad(p, t):
        return naive(p, t), jax.grad(lambda q: naive(q, t).sum())(p)

    row = dataclasses.replace(case.row, name="log_cosh (naive)")
    broken = dataclasses.replace(
        case, row=row, fn=naive, value_grad=jax.jit(value_grad), vmapped=None
    )
    args = (_rescale(case.base[0], 1e3, [], "float32"), case.flat[1])
    with pytest.raises(AssertionError, match="loss"):
        _check(broken, args)
    COUNTS.pop(row.name)

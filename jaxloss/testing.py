"""Gradient checking for loss functions and their custom derivative rules.

:func:`gradcheck` compares a function's own derivative rules (whatever
``jax.custom_jvp``/``custom_vjp`` machinery sits behind it) with

* autodiff of a plain ``reference`` formula, evaluated in float64;
* central finite differences of the function itself, evaluated in float64,
  along random directions and, for small inputs, along every coordinate
  (the full Jacobian, and the full Hessian of the summed output);
* itself: ``<v, J u>`` from forward mode must equal ``<J^T v, u>`` from reverse
  mode, and every value and derivative must be finite;
* optionally, :func:`jax.test_util.check_grads` (``jax_check_grads=True``).

It returns a :class:`GradcheckReport` with one row per check (worst absolute
and relative error, the tolerance it was held to, pass/fail), printable in a
terminal and rendered as an HTML table in notebooks. With
``raise_on_failure=True`` a failed report raises :class:`GradcheckError`
instead, whose message is the table.

How errors are measured
-----------------------
Each check compares a block of numbers ``a`` (the rule under test, computed in
the inputs' own dtype) with a block ``b`` (the reference, float64). The
absolute error is ``max |a - b|``; the relative error is that divided by the
block's scale ``max |b|``. A check passes when

    max |a - b| <= atol + rtol * max |b| + noise

where ``noise`` is the float64 rounding floor of the finite difference
(``4 * eps64 * max |f| / h``; zero for autodiff references). Measuring against
the block's scale rather than elementwise keeps entries that are tiny next to
the rest (a confidently right class at logit 30) from failing on rounding,
while any rule that is off by a relative 1% where it matters is caught.

Skipped checks
--------------
A check that needs a mode the function does not have is skipped, with the
reason in the report (``report.skipped``): forward mode through a
``jax.custom_vjp`` rule, reverse mode through a ``lax.while_loop``, a
primitive without a differentiation rule. A skipped check is not a passed one,
so the report is not ``ok``. Any other exception raised while checking (a bug
in ``fn`` or in ``reference``) propagates.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np

__all__ = [
    "CheckResult",
    "GradcheckError",
    "GradcheckReport",
    "default_tolerances",
    "gradcheck",
]

# rtol, atol for the derivative rules, by the least precise dtype involved.
# float32/float64 catch a rule that is off by 0.1%; bf16 carries only ~3
# significant digits, so a 1% error there is indistinguishable from rounding.
_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-5, 1e-9),
    "float32": (1e-3, 1e-6),
    "float16": (5e-3, 1e-4),
    "bfloat16": (2e-2, 1e-3),
}
_EPS64 = float(np.finfo(np.float64).eps)
_FD_STEP = 1e-6  # relative to max(1, max |x|)
_SUM_JACOBIAN_ABOVE = 1024  # output size above which the full Jacobian is of sum(output)


def default_tolerances(dtype: Any) -> tuple[float, float]:
    """The ``(rtol, atol)`` that :func:`gradcheck` uses for a floating dtype."""
    name = jnp.dtype(dtype).name
    return _TOLERANCES.get(name, _TOLERANCES["float32"])


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One row of a :class:`GradcheckReport`.

    Attributes:
      name: what is compared, e.g. ``"jvp vs fd"``.
      mode: the derivative mechanism under test (``"forward"``, ``"reverse"``,
        ``"fwd-over-rev"``, ...).
      against: what it is compared with.
      size: how much was compared (directions, Jacobian shape).
      abs_error: ``max |a - b|`` (``nan`` when not applicable or skipped).
      rel_error: ``abs_error / max |b|``.
      tolerance: the absolute threshold ``atol + rtol * max |b| + noise``.
      ok: whether the check passed (``False`` when skipped).
      message: why it failed or was skipped, or a remark.
      skipped: the check could not run (the function lacks the mode it needs);
        ``message`` says why.
    """

    name: str
    mode: str
    against: str
    size: str
    abs_error: float
    rel_error: float
    tolerance: float
    ok: bool
    message: str = ""
    skipped: bool = False


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.2e}"


_COLUMNS = ("check", "mode", "against", "size", "max abs", "max rel", "tol", "")
_HTML_STATUS = {  # status -> (colour, mark)
    "ok": ("#1a7f37", "&#10003;"),
    "FAIL": ("#cf222e", "&#10007; FAIL"),
    "SKIP": ("#6e7781", "&#8211; SKIPPED"),
}


class _Row(NamedTuple):
    """A check as the text table and the HTML table show it."""

    cells: tuple[str, ...]  # one per column of _COLUMNS, the status last
    status: str  # "ok", "FAIL" or "SKIP"
    remark: str  # the line under the table ("" for none)


def _row(c: CheckResult) -> _Row:
    status = "SKIP" if c.skipped else ("ok" if c.ok else "FAIL")
    remark = f"skipped: {c.message}" if c.skipped else c.message
    errs = (_fmt(c.abs_error), _fmt(c.rel_error), _fmt(c.tolerance))
    return _Row((c.name, c.mode, c.against, c.size, *errs, status), status, remark)


@dataclasses.dataclass(frozen=True)
class GradcheckReport:
    """What :func:`gradcheck` found.

    Attributes:
      ok: every check passed (none failed, none was skipped).
      checks: one :class:`CheckResult` per check, in the order of the table.
      function: the checked function's name.
      inputs: the differentiated leaves, e.g. ``("x: float32[4, 5]",)``.
      argnums: the argument positions asked for.
      order: 1 or 2.
      rtol, atol, eps: the tolerances and finite-difference step used.
      notes: arguments held fixed and other remarks.
    """

    ok: bool
    checks: tuple[CheckResult, ...]
    function: str
    inputs: tuple[str, ...]
    argnums: tuple[int, ...]
    order: int
    rtol: float
    atol: float
    eps: float
    notes: tuple[str, ...] = ()

    @property
    def errors(self) -> dict[str, tuple[float, float]]:
        """``{check name: (worst absolute error, worst relative error)}``."""
        return {c.name: (c.abs_error, c.rel_error) for c in self.checks}

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        """The checks that did not pass, skipped ones included."""
        return tuple(c for c in self.checks if not c.ok)

    @property
    def skipped(self) -> dict[str, str]:
        """``{check name: why it was skipped}``."""
        return {c.name: c.message for c in self.checks if c.skipped}

    def __getitem__(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks are {[c.name for c in self.checks]}")

    @functools.cached_property
    def _rows(self) -> tuple[_Row, ...]:
        return tuple(_row(c) for c in self.checks)

    def _header(self) -> str:
        return (
            f"gradcheck of {self.function}: {', '.join(self.inputs)}; order={self.order}, "
            f"rtol={self.rtol:g}, atol={self.atol:g}, eps={self.eps:g}"
        )

    def _verdict(self) -> str:
        n_ok = sum(c.ok for c in self.checks)
        word = "OK" if self.ok else "FAILED"
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        return f"{word}: {n_ok}/{len(self.checks)} checks passed{skipped}"

    def __str__(self) -> str:
        table = [_COLUMNS, *(r.cells for r in self._rows)]
        widths = [max(len(r[i]) for r in table) for i in range(len(_COLUMNS))]
        line = lambda r: "  ".join(s.ljust(w) for s, w in zip(r, widths, strict=True)).rstrip()
        out = [self._header(), line(_COLUMNS), line(tuple("-" * w for w in widths))]
        out += [line(r) for r in table[1:]]
        out += [f"  {r.cells[0]}: {r.remark}" for r in self._rows if r.remark]
        out += [f"note: {n}" for n in self.notes]
        out.append(self._verdict())
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"<GradcheckReport {self.function}: {self._verdict()}>"

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in _COLUMNS)
        body = []
        for r in self._rows:
            color, mark = _HTML_STATUS[r.status]
            tds = "".join(f"<td>{esc(s)}</td>" for s in r.cells[:-1])
            title = f" title='{esc(r.remark)}'" if r.remark else ""
            body.append(f"<tr{title}>{tds}<td style='color:{color}'><b>{mark}</b></td></tr>")
        msgs = "".join(
            f"<li><b>{esc(r.cells[0])}</b>: {esc(r.remark)}</li>" for r in self._rows if r.remark
        )
        msgs += "".join(f"<li>{esc(n)}</li>" for n in self.notes)
        color = "#1a7f37" if self.ok else "#cf222e"
        return (
            f"<div><p><code>{esc(self._header())}</code></p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + (f"<ul>{msgs}</ul>" if msgs else "")
            + f"<p style='color:{color}'><b>{esc(self._verdict())}</b></p></div>"
        )


class GradcheckError(AssertionError):
    """Raised by ``gradcheck(..., raise_on_failure=True)`` when a check fails or
    is skipped; the message is the report's table, and ``.report`` the report."""

    def __init__(self, report: GradcheckReport):
        super().__init__(str(report))
        self.report = report

    def __reduce__(self):
        return (type(self), (self.report,))


# --------------------------------------------------------------------------
# Exceptions a check may legitimately hit
# --------------------------------------------------------------------------

# Raised while tracing a function whose Python control flow depends on values:
# it runs eagerly (and is mapped with a Python loop) instead.
_TRACE_ONLY_ERRORS: tuple[type[BaseException], ...] = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
    jax.errors.NonConcreteBooleanIndexError,
)
# (exception type, part of its message, reason): a mode the function does not have.
_UNSUPPORTED: tuple[tuple[type[BaseException], str, str], ...] = (
    (TypeError, "custom_vjp", "no forward mode"),
    (ValueError, "Reverse-mode differentiation does not work", "no reverse mode"),
    (NotImplementedError, "", "not implemented"),
)
_MAYBE_UNSUPPORTED = tuple({kind for kind, _, _ in _UNSUPPORTED})


class _Skipped(NamedTuple):
    """Stands in for a quantity that could not be computed."""

    reason: str


def _one_line(exc: BaseException, limit: int = 300) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:limit]


def _skip_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means a check cannot run, or ``None`` when it is a real error."""
    if isinstance(exc, _TRACE_ONLY_ERRORS):
        return None
    for kind, fragment, why in _UNSUPPORTED:
        if isinstance(exc, kind) and fragment in str(exc):
            return f"{why} ({_one_line(exc)})"
    return None


def _lift(f: Callable, *values: Any) -> Any:
    """``f(*values)``, or the first :class:`_Skipped` among ``values``."""
    for v in values:
        if isinstance(v, _Skipped):
            return v
    return f(*values)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _is_diff_leaf(x: Any) -> bool:
    """Floating-point arrays are differentiated; Python scalars, ints, bools, None are not."""
    if x is None or isinstance(x, (bool, numbers.Number, str)):
        return False
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


def _describe(x: Any) -> str:
    if hasattr(x, "dtype") and hasattr(x, "shape"):
        return f"{jnp.dtype(x.dtype).name}{list(x.shape)}"
    return type(x).__name__


def _to64(x: Any) -> Any:
    """Float arrays to float64 (call inside ``enable_x64``); other leaves unchanged."""
    return jnp.asarray(np.asarray(x, dtype=np.float64)) if _is_diff_leaf(x) else x


def _rows64(tree: Any, count: int | None = None) -> np.ndarray:
    """Leaves raveled and concatenated as float64: a vector, or ``[count, total]``
    when the leaves carry a leading batch axis of ``count``."""
    leaves = jax.tree_util.tree_leaves(tree)
    shape = (-1,) if count is None else (count, -1)
    if not leaves:
        return np.zeros((0,) if count is None else (count, 0))
    return np.concatenate([np.asarray(v, dtype=np.float64).reshape(shape) for v in leaves], axis=-1)


def _widest(dtypes: Sequence[Any]) -> Any:
    return max((jnp.dtype(d) for d in dtypes), key=lambda d: (d.itemsize, d.name != "float16"))


def _least_precise(dtypes: Sequence[Any]) -> Any:
    rank = {"bfloat16": 0, "float16": 1, "float32": 2, "float64": 3}
    return min((jnp.dtype(d) for d in dtypes), key=lambda d: rank.get(d.name, 2))


def _vmap(fun: Callable, stacked: Sequence[Any]) -> Any:
    """``vmap(fun)`` over the leading axis of ``stacked``; a Python loop when
    ``fun`` does not vmap (value-dependent Python control flow, a primitive
    without a batching rule)."""
    try:
        return jax.vmap(fun)(*stacked)
    except (*_TRACE_ONLY_ERRORS, NotImplementedError):
        count = jax.tree_util.tree_leaves(stacked)[0].shape[0]
        outs = [
            fun(*(jax.tree_util.tree_map(lambda a, i=i: a[i], s) for s in stacked))
            for i in range(count)
        ]
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)


# Derivatives are checked, not timed: skip LLVM's optimisation to compile faster.
_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def _jit_run(compute: Callable, inputs: Any) -> Any:
    lowered = jax.jit(compute).lower(inputs)
    try:
        compiled = lowered.compile(_COMPILER_OPTIONS)
    except jax.errors.JaxRuntimeError:  # a backend that does not know the option
        compiled = lowered.compile()
    return compiled(inputs)


_Programs = dict[str, tuple[Callable, Callable]]  # {key: (compute(inputs), to_numpy)}


def _evaluate(progs: _Programs, inputs: Any) -> dict[str, Any]:
    """Evaluates ``{key: (compute, to_numpy)}`` on ``inputs``.

    Everything is computed in one ``jit`` (one compilation instead of hundreds
    of eager-mode ones). When that hits a mode the function lacks, or Python
    control flow on traced values, each quantity is computed alone (under
    ``jit``, then eagerly), and a quantity that needs a missing mode is a
    :class:`_Skipped` with the reason. Other exceptions propagate.
    """
    try:
        raw = _jit_run(lambda i: {k: c(i) for k, (c, _) in progs.items()}, inputs)
        return {k: progs[k][1](v) for k, v in raw.items()}
    except (*_TRACE_ONLY_ERRORS, *_MAYBE_UNSUPPORTED) as e:
        if not isinstance(e, _TRACE_ONLY_ERRORS) and _skip_reason(e) is None:
            raise
    return {k: _evaluate_one(compute, post, inputs) for k, (compute, post) in progs.items()}


def _evaluate_one(compute: Callable, post: Callable, inputs: Any) -> Any:
    try:
        try:
            return post(_jit_run(compute, inputs))
        except _TRACE_ONLY_ERRORS:
            return post(compute(inputs))
    except _MAYBE_UNSUPPORTED as e:
        reason = _skip_reason(e)
        if reason is None:
            raise
        return _Skipped(reason)


class _Problem:
    """``fn`` as a function of its differentiable leaves only.

    ``call(*leaves)`` rebuilds the full argument list (every other leaf and
    argument fixed at its given value) and returns the tuple of the output's
    floating-point leaves; ``summed`` adds them up; ``grad`` is its gradient.
    """

    def __init__(
        self,
        fn: Callable,
        args: Sequence[Any],
        argnums: tuple[int, ...],
        convert: Callable[[Any], Any] = lambda x: x,
    ):
        self.fn = fn
        with_path, self.treedef = jax.tree_util.tree_flatten_with_path(
            tuple(args), is_leaf=lambda x: x is None
        )
        self.flat = [convert(v) for _, v in with_path]
        self.positions: list[int] = []
        self.names: list[str] = []
        self.fixed: list[str] = []
        for i, (path, leaf) in enumerate(with_path):
            arg = path[0].idx
            label = f"arg{arg}{jax.tree_util.keystr(path[1:])}"
            if arg not in argnums:
                continue
            if _is_diff_leaf(leaf):
                self.positions.append(i)
                self.names.append(f"{label}: {_describe(leaf)}")
            else:
                self.fixed.append(
                    f"{label} ({_describe(leaf)}) is not a floating-point array: held fixed"
                )
        self.leaves = tuple(jnp.asarray(self.flat[i]) for i in self.positions)

    def call(self, *leaves: Any) -> tuple:
        flat = list(self.flat)
        for i, v in zip(self.positions, leaves, strict=True):
            flat[i] = v
        out = self.fn(*jax.tree_util.tree_unflatten(self.treedef, flat))
        return tuple(
            o
            for o in jax.tree_util.tree_leaves(out)
            if jnp.issubdtype(jnp.result_type(o), jnp.floating)
        )

    def summed(self, *leaves: Any) -> jax.Array:
        outs = self.call(*leaves)
        acc = _widest([o.dtype for o in outs] + [jnp.float32])
        return sum(jnp.sum(o).astype(acc) for o in outs)

    def grad(self, *leaves: Any) -> tuple:
        return jax.grad(self.summed, argnums=tuple(range(len(leaves))))(*leaves)

    def jvps(self, x: tuple, dirs: tuple) -> Any:
        return _vmap(lambda *u: jax.jvp(self.call, x, u)[1], dirs)

    def vjps(self, x: tuple, cots: tuple) -> Any:
        _, vjp_fun = jax.vjp(self.call, *x)
        return _vmap(lambda *v: vjp_fun(v), cots)

    def hvps(self, x: tuple, dirs: tuple) -> Any:
        """Forward-over-reverse Hessian-vector products of ``summed``."""
        return _vmap(lambda *u: jax.jvp(self.grad, x, u)[1], dirs)

    def hvps_rev_rev(self, x: tuple, dirs: tuple) -> Any:
        """Reverse-over-reverse: ``grad(<grad(summed), u>)``."""

        def one(*u):
            def inner(*xs):
                g = self.grad(*xs)
                acc = _widest([gi.dtype for gi in g] + [jnp.float32])
                return sum(jnp.vdot(gi, ui).astype(acc) for gi, ui in zip(g, u, strict=True))

            return jax.grad(inner, argnums=tuple(range(len(u))))(*x)

        return _vmap(one, dirs)


def _stack(vectors: Sequence[Sequence[np.ndarray]], dtypes: Sequence[Any]) -> tuple:
    """``vectors[k][leaf]`` -> one array per leaf stacked over ``k``, in that leaf's dtype."""
    return tuple(
        jnp.asarray(np.stack([v[j] for v in vectors]), dtype=dtypes[j]) for j in range(len(dtypes))
    )


def _random_unit(rng: np.random.Generator, shapes: Sequence[tuple], count: int) -> list:
    out = []
    for _ in range(count):
        parts = [rng.standard_normal(s) for s in shapes]
        norm = math.sqrt(sum(float(np.sum(p * p)) for p in parts)) or 1.0
        out.append([p / norm for p in parts])
    return out


def _basis(shapes: Sequence[tuple]) -> list:
    sizes = [math.prod(s) for s in shapes]
    eye = np.eye(sum(sizes))
    out = []
    for row in eye:
        parts = np.split(row, np.cumsum(sizes)[:-1])
        out.append([p.reshape(s) for p, s in zip(parts, shapes, strict=True)])
    return out


def _flat(vectors: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """``vectors[k][leaf]`` -> ``[k, total]``."""
    return np.stack([np.concatenate([p.ravel() for p in v]) for v in vectors])


def _compare(name, mode, against, size, a, b, rtol, atol, noise=0.0) -> CheckResult:
    """Worst ``|a - b|``, relative to ``max |b|``; passes below ``atol + rtol max|b| + noise``."""
    skip = _lift(lambda *_: None, a, b)
    if skip is not None:
        return _skipped_row(name, mode, against, skip)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        msg = f"shape mismatch {a.shape} vs {b.shape}"
        return CheckResult(name, mode, against, size, math.nan, math.nan, math.nan, False, msg)
    if a.size == 0:
        return CheckResult(name, mode, against, size, 0.0, 0.0, atol, True)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
        scale = float(np.max(np.abs(b)))
    finite = bool(np.all(np.isfinite(diff))) and math.isfinite(scale)
    abs_err = float(np.max(diff)) if finite else math.nan
    rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else math.inf)
    tol = atol + rtol * scale + noise
    ok = finite and abs_err <= tol
    msg = ""
    if not finite:
        msg = "non-finite numbers in the comparison"
    elif not ok:
        k = int(np.argmax(diff))
        msg = f"worst at flat index {k}: {a.ravel()[k]:.6g} vs {b.ravel()[k]:.6g}"
    return CheckResult(name, mode, against, size, abs_err, rel_err, tol, ok, msg)


def _skipped_row(name: str, mode: str, against: str, skip: _Skipped) -> CheckResult:
    nan = math.nan
    return CheckResult(name, mode, against, "-", nan, nan, nan, False, skip.reason, skipped=True)


def _finite_row(name: str, what: str, values: Sequence[Any]) -> CheckResult:
    """Whether ``values`` (arrays, some perhaps :class:`_Skipped`) are all finite."""
    done = [v for v in values if not isinstance(v, _Skipped)]
    if values and not done:
        return _skipped_row(name, "-", "-", values[0])
    arr = np.concatenate([np.ravel(v) for v in done]) if done else np.zeros(0)
    bad = int(np.sum(~np.isfinite(arr)))
    nan = math.nan
    msg = f"{bad} non-finite" if bad else ""
    return CheckResult(name, "-", "-", f"{arr.size} {what}", nan, nan, nan, bad == 0, msg)


def _fn_name(fn: Callable) -> str:
    while not hasattr(fn, "__name__") and hasattr(fn, "func"):  # functools.partial
        fn = fn.func
    return getattr(fn, "__name__", None) or repr(fn)


# --------------------------------------------------------------------------
# Setup: the differentiated leaves, the directions, the tolerances
# --------------------------------------------------------------------------


def _normalize_argnums(argnums: int | Sequence[int], nargs: int) -> tuple[int, ...]:
    if isinstance(argnums, (numbers.Integral, np.integer)) and not isinstance(argnums, bool):
        argnums = (int(argnums),)
    argnums = tuple(int(a) for a in argnums)
    if not argnums:
        raise ValueError("argnums must name at least one argument.")
    for a in argnums:
        if not -nargs <= a < nargs:
            raise ValueError(f"argnums={a} is out of range for {nargs} positional arguments.")
    return tuple(sorted({a % nargs for a in argnums}))


@dataclasses.dataclass(frozen=True)
class _Setup:
    """Where and how ``fn`` is checked.

    The directions are ``k`` random unit vectors ``us`` (inputs) and ``vs``
    (outputs) and, when ``full``, every coordinate vector after them.
    """

    prob: _Problem  # fn as a function of its differentiated leaves
    order: int
    k: int
    out_shapes: list[tuple]
    out_dtypes: list[Any]
    us: list
    vs: list
    full: bool  # small inputs: also the full Jacobian and Hessian
    jac_of_sum: bool  # large outputs: the full Jacobian is of sum(output)
    rtol: float
    atol: float
    h: float  # finite-difference step

    @property
    def shapes(self) -> list[tuple]:
        return [tuple(v.shape) for v in self.prob.leaves]

    @property
    def n_in(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def n_out(self) -> int:
        return sum(math.prod(s) for s in self.out_shapes)

    @functools.cached_property
    def dirs(self) -> list:
        return self.us + (_basis(self.shapes) if self.full else [])

    @functools.cached_property
    def cots(self) -> list:
        if not self.full:
            return self.vs
        if self.jac_of_sum:
            return [*self.vs, [np.ones(s) for s in self.out_shapes]]
        return self.vs + _basis(self.out_shapes)


def _tolerances(x: Sequence[jax.Array], out_dtypes: list, rtol, atol, eps) -> tuple:
    """``(rtol, atol, h)``: the defaults for the least precise dtype, and the step."""
    d_rtol, d_atol = default_tolerances(_least_precise([v.dtype for v in x] + out_dtypes))
    x_np = [np.asarray(v, dtype=np.float64) for v in x]
    xmax = max(float(np.max(np.abs(v[np.isfinite(v)]), initial=0.0)) for v in x_np)
    h = _FD_STEP * max(1.0, xmax) if eps is None else float(eps)
    return (d_rtol if rtol is None else float(rtol), d_atol if atol is None else float(atol), h)


def _make_setup(prob: _Problem, order: int, k: int, full_max: int, seed: int, tols) -> _Setup:
    out = jax.eval_shape(prob.call, *prob.leaves)
    if not out:
        raise ValueError(f"{_fn_name(prob.fn)} returned no floating-point output to check.")
    shapes = [tuple(v.shape) for v in prob.leaves]
    out_shapes = [tuple(o.shape) for o in out]
    out_dtypes = [o.dtype for o in out]
    rtol, atol, h = _tolerances(prob.leaves, out_dtypes, *tols)
    rng = np.random.default_rng(seed)
    us, vs = _random_unit(rng, shapes, k), _random_unit(rng, out_shapes, k)
    full = sum(math.prod(s) for s in shapes) <= full_max
    jac_of_sum = sum(math.prod(s) for s in out_shapes) > _SUM_JACOBIAN_ABOVE
    return _Setup(prob, order, k, out_shapes, out_dtypes, us, vs, full, jac_of_sum, rtol, atol, h)


# --------------------------------------------------------------------------
# Evaluation: the rule under test, finite differences, the reference
# --------------------------------------------------------------------------


def _derivative_programs(prob: _Problem, order: int, n_dirs: int, n_cots: int, prefix: str = ""):
    """Value, JVPs, VJPs and (order 2) forward-over-reverse HVPs of ``prob`` at
    ``inputs[prefix + "x"]``, along the directions ``inputs[prefix + "D"]`` and
    the cotangents ``inputs[prefix + "C"]``; keyed ``prefix + "value"`` etc."""
    x, d, c = prefix + "x", prefix + "D", prefix + "C"
    progs: _Programs = {
        "value": (lambda i: prob.call(*i[x]), _rows64),
        "jvp": (lambda i: prob.jvps(i[x], i[d]), lambda t: _rows64(t, n_dirs)),
        "vjp": (lambda i: prob.vjps(i[x], i[c]), lambda t: _rows64(t, n_cots)),
    }
    if order == 2:
        progs["hvp"] = (lambda i: prob.hvps(i[x], i[d]), lambda t: _rows64(t, n_dirs))
    return {prefix + key: prog for key, prog in progs.items()}


def _rule_results(s: _Setup) -> dict[str, Any]:
    """The rule under test: the inputs' own dtype, the caller's settings."""
    x, k = s.prob.leaves, s.k
    inputs = {"x": x, "D": _stack(s.dirs, [v.dtype for v in x]), "C": _stack(s.cots, s.out_dtypes)}
    progs = _derivative_programs(s.prob, s.order, len(s.dirs), len(s.cots))
    if s.order == 2:
        progs["hvp_rr"] = (
            lambda i: s.prob.hvps_rev_rev(i["x"], tuple(d[:k] for d in i["D"])),
            lambda t: _rows64(t, k),
        )
    return _evaluate(progs, inputs)


def _fd_programs(s: _Setup, p64: _Problem) -> tuple[_Programs, dict[str, Any]]:
    """``fn`` (and at order 2 its gradient) at ``x`` and at ``x +- h d`` for
    every direction ``d``, keyed ``"value"``, ``"value_at"``, ``"grad"``,
    ``"grad_at"``. Call inside ``enable_x64``."""
    points = []
    for j, xj in enumerate(p64.leaves):
        step = s.h * np.stack([d[j] for d in s.dirs])
        points.append(jnp.asarray(np.concatenate([np.asarray(xj) + step, np.asarray(xj) - step])))
    n = 2 * len(s.dirs)
    funcs = {"value": p64.call, "grad": p64.grad} if s.order == 2 else {"value": p64.call}
    progs: _Programs = {}
    for key, f in funcs.items():
        progs[key] = (lambda i, f=f: f(*i["x"]), _rows64)
        progs[key + "_at"] = (lambda i, f=f: _vmap(f, i["P"]), lambda t: _rows64(t, n))
    return progs, {"x": p64.leaves, "P": tuple(points)}


def _reference_programs(s: _Setup, reference: Callable, args, argnums):
    """Autodiff of ``reference`` along the random directions, keyed ``"ref_value"``
    etc. Call inside ``enable_x64``."""
    r64 = _Problem(reference, args, argnums, convert=_to64)
    r_dtypes = [o.dtype for o in jax.eval_shape(r64.call, *r64.leaves)]
    if len(r_dtypes) != len(s.out_shapes):
        raise ValueError(
            f"reference returns {len(r_dtypes)} floating-point outputs; "
            f"{_fn_name(s.prob.fn)} returns {len(s.out_shapes)}."
        )
    inputs = {
        "ref_x": r64.leaves,
        "ref_D": _stack(s.us, [jnp.float64] * len(r64.leaves)),
        "ref_C": _stack(s.vs, r_dtypes),
    }
    return _derivative_programs(r64, s.order, s.k, s.k, prefix="ref_"), inputs


def _float64_results(s: _Setup, fn, args, argnums, reference) -> tuple[dict, _Problem, list]:
    """Finite differences of ``fn`` and autodiff of ``reference``, in float64.

    Returns the results, ``fn``'s float64 problem, and notes. The caller's
    float64 setting is back on return, also when ``fn`` raises.
    """
    with jax.enable_x64(True):
        p64 = _Problem(fn, args, argnums, convert=_to64)
        progs, inputs = _fd_programs(s, p64)
        if reference is not None:
            ref_progs, ref_inputs = _reference_programs(s, reference, args, argnums)
            progs, inputs = {**progs, **ref_progs}, {**inputs, **ref_inputs}
        results = _evaluate(progs, inputs)
        out_dtypes = [jnp.dtype(o.dtype).name for o in jax.eval_shape(p64.call, *p64.leaves)]
    notes = []
    if any(d != "float64" for d in out_dtypes):
        notes.append(
            f"{_fn_name(fn)} does not compute in float64 (outputs {out_dtypes}): the finite "
            "differences are only as precise as that; consider a larger eps"
        )
    return results, p64, notes


# --------------------------------------------------------------------------
# The checks: one function per row of the report
# --------------------------------------------------------------------------

_FWD, _REV, _FWD_REV, _REV_REV = "forward", "reverse", "fwd-over-rev", "rev-over-rev"
_REF = "reference (float64)"
_FD = {"value": "fd (float64)", "grad": "fd (float64) of grad"}


@dataclasses.dataclass
class _Run:
    """What the checks compare: the rule under test (``rule``, rows per
    direction) and the float64 side (``f64``)."""

    s: _Setup
    rule: dict[str, Any]
    f64: dict[str, Any]
    p64: _Problem

    @property
    def nd(self) -> str:
        return f"{self.s.k} directions"

    @property
    def jac_size(self) -> str:
        return f"{1 if self.s.jac_of_sum else self.s.n_out}x{self.s.n_in}"

    def head(self, rows: Any) -> Any:  # the random directions
        return _lift(lambda a: a[: self.s.k], rows)

    def tail(self, rows: Any) -> Any:  # the coordinate vectors after them
        return _lift(lambda a: a[self.s.k :], rows)

    def fd(self, key: str) -> Any:
        """Central differences of ``key`` (``"value"`` or ``"grad"``) along every direction."""
        n, h = len(self.s.dirs), self.s.h
        return _lift(lambda a: (a[:n] - a[n:]) / (2 * h), self.f64[key + "_at"])

    def noise(self, key: str) -> float:
        """Float64 rounding in a central difference of ``key``."""
        vals = self.f64[key]
        if isinstance(vals, _Skipped):
            return 0.0
        return 4 * _EPS64 * float(np.max(np.abs(vals), initial=0.0)) / self.s.h

    def jacobian(self, rows: Any) -> Any:
        """The coordinate rows ``[n_in, n_out]`` as the Jacobian ``[n_out, n_in]``
        (``[1, n_in]``, of the output's sum, when ``jac_of_sum``)."""

        def jac(a: np.ndarray) -> np.ndarray:
            j = a[self.s.k :].T
            return j.sum(axis=0, keepdims=True) if self.s.jac_of_sum else j

        return _lift(jac, rows)

    def v_dot(self, rows: Any) -> Any:
        """``<v, rows>`` for each random output direction ``v``."""
        return _lift(lambda a: np.sum(_flat(self.s.vs) * a[: self.s.k], axis=1), rows)

    @property
    def vju(self) -> Any:
        """``<J^T v, u>`` from reverse mode, for each random pair ``u``, ``v``."""
        return _lift(lambda a: np.sum(a[: self.s.k] * _flat(self.s.us), axis=1), self.rule["vjp"])

    def compare(self, name, mode, against, size, a, b, noise=0.0) -> CheckResult:
        return _compare(name, mode, against, size, a, b, self.s.rtol, self.s.atol, noise)

    def vs_fd(self, name, mode, size, a, b, key="value") -> CheckResult:
        return self.compare(name, mode, _FD[key], size, a, b, self.noise(key))


def _check_finite_values(run: _Run) -> CheckResult:
    return _finite_row("finite values", "values", [run.rule["value"]])


def _check_value_vs_reference(run: _Run) -> CheckResult:
    y, ref = run.rule["value"], run.f64["ref_value"]
    return run.compare("value vs reference", "-", _REF, f"{run.s.n_out} values", y, ref)


def _derivative_vs_reference(run: _Run, key: str, mode: str) -> CheckResult:
    a, b = run.head(run.rule[key]), run.f64["ref_" + key]
    return run.compare(f"{key} vs reference", mode, _REF, run.nd, a, b)


def _check_vjp_vs_reference(run: _Run) -> CheckResult:
    return _derivative_vs_reference(run, "vjp", _REV)


def _check_jvp_vs_reference(run: _Run) -> CheckResult:
    return _derivative_vs_reference(run, "jvp", _FWD)


def _check_hvp_vs_reference(run: _Run) -> CheckResult:
    return _derivative_vs_reference(run, "hvp", _FWD_REV)


def _check_jvp_vs_fd(run: _Run) -> CheckResult:
    jvp, fd = run.head(run.rule["jvp"]), run.head(run.fd("value"))
    return run.vs_fd("jvp vs fd", _FWD, run.nd, jvp, fd)


def _check_vjp_vs_fd(run: _Run) -> CheckResult:
    """Reverse mode along random directions: ``<J^T v, u>`` against ``<v, FD(u)>``."""
    size = f"{run.s.k} <v, J u>"
    return run.vs_fd("vjp vs fd", _REV, size, run.vju, run.v_dot(run.fd("value")))


def _check_jacfwd_vs_fd(run: _Run) -> CheckResult:
    jac, fd = run.jacobian(run.rule["jvp"]), run.jacobian(run.fd("value"))
    return run.vs_fd("jacfwd vs fd", _FWD, run.jac_size, jac, fd)


def _check_jacrev_vs_fd(run: _Run) -> CheckResult:
    jac, fd = run.tail(run.rule["vjp"]), run.jacobian(run.fd("value"))
    return run.vs_fd("jacrev vs fd", _REV, run.jac_size, jac, fd)


def _check_dot_product(run: _Run) -> CheckResult:
    """``<v, J u>`` from forward mode against ``<J^T v, u>`` from reverse mode."""
    size, vjux = f"{run.s.k} <v, J u>", run.v_dot(run.rule["jvp"])
    return run.compare("jvp/vjp consistency", "fwd vs rev", "itself", size, run.vju, vjux)


def _check_hvp_vs_fd(run: _Run) -> CheckResult:
    hvp, fd = run.head(run.rule["hvp"]), run.head(run.fd("grad"))
    return run.vs_fd("hvp vs fd", _FWD_REV, run.nd, hvp, fd, key="grad")


def _check_hvp_rev_rev_vs_fd(run: _Run) -> CheckResult:
    hvp, fd = run.rule["hvp_rr"], run.head(run.fd("grad"))
    return run.vs_fd("hvp (rev-over-rev) vs fd", _REV_REV, run.nd, hvp, fd, key="grad")


def _check_hessian_vs_fd(run: _Run) -> CheckResult:
    hess, fd, n = run.tail(run.rule["hvp"]), run.tail(run.fd("grad")), run.s.n_in
    return run.vs_fd("hessian vs fd", _FWD_REV, f"{n}x{n}", hess, fd, key="grad")


def _check_finite_derivatives(run: _Run) -> CheckResult:
    derivs = [v for key, v in run.rule.items() if key != "value"]
    return _finite_row("finite derivatives", "numbers", derivs)


def _check_jax_check_grads(run: _Run) -> CheckResult:
    """:func:`jax.test_util.check_grads` in float64 (pass/fail only)."""
    name, mode = "jax check_grads", "fwd+rev" + (", order 2" if run.s.order == 2 else "")
    row = functools.partial(CheckResult, name, mode, _FD["value"], "pass/fail", *[math.nan] * 3)
    try:
        _run_check_grads(run.p64, run.s.order, run.s.h)
    except AssertionError as e:  # numpy's report of the mismatch
        return row(False, _one_line(e))
    except _MAYBE_UNSUPPORTED as e:
        reason = _skip_reason(e)
        if reason is None:
            raise
        return _skipped_row(name, mode, _FD["value"], _Skipped(reason))
    return row(True)


def _run_check_grads(p64: _Problem, order: int, h: float) -> None:
    # its default step (1e-4) is too coarse for curved losses at order 2
    check = functools.partial(
        jax.test_util.check_grads, args=p64.leaves, order=order, modes=("fwd", "rev"), eps=10 * h
    )
    with jax.enable_x64(True):
        try:
            check(jax.jit(p64.call))
        except _TRACE_ONLY_ERRORS:  # Python control flow on values: run it eagerly
            check(p64.call)


# (check, what it needs), in the order of the report's rows
_CHECKS: tuple[tuple[Callable[[_Run], CheckResult], frozenset[str]], ...] = (
    (_check_finite_values, frozenset()),
    (_check_value_vs_reference, frozenset({"reference"})),
    (_check_vjp_vs_reference, frozenset({"reference"})),
    (_check_jvp_vs_reference, frozenset({"reference"})),
    (_check_hvp_vs_reference, frozenset({"reference", "order 2"})),
    (_check_jvp_vs_fd, frozenset()),
    (_check_vjp_vs_fd, frozenset()),
    (_check_jacfwd_vs_fd, frozenset({"full"})),
    (_check_jacrev_vs_fd, frozenset({"full"})),
    (_check_dot_product, frozenset()),
    (_check_hvp_vs_fd, frozenset({"order 2"})),
    (_check_hvp_rev_rev_vs_fd, frozenset({"order 2"})),
    (_check_hessian_vs_fd, frozenset({"order 2", "full"})),
    (_check_finite_derivatives, frozenset()),
    (_check_jax_check_grads, frozenset({"check_grads"})),
)


# --------------------------------------------------------------------------
# gradcheck
# --------------------------------------------------------------------------


def gradcheck(
    fn: Callable,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    reference: Callable | None = None,
    order: int = 2,
    rtol: float | None = None,
    atol: float | None = None,
    eps: float | None = None,
    num_directions: int = 3,
    full_jacobian_max_size: int = 64,
    seed: int = 0,
    jax_check_grads: bool = False,
    raise_on_failure: bool = False,
) -> GradcheckReport:
    r"""Checks ``fn``'s derivative rules in forward and reverse mode, to second order.

    Args:
      fn: the function under test, called as ``fn(*args)``; returns an array
        of any shape or a pytree of arrays (its floating-point leaves are
        checked). Bind keyword arguments with a ``lambda`` or
        :func:`functools.partial`.
      *args: the point to check at.
      argnums: the argument(s) to differentiate, an int or a tuple. Pytrees are
        fine; leaves that are not floating-point arrays (int or bool arrays,
        ``None``, Python scalars) are held fixed automatically, and so are the
        other arguments.
      reference: optional plain formula with ``fn``'s signature whose autodiff
        gives the true derivatives (say ``-log_softmax(x)[y]`` written out).
        Evaluated in float64.
      order: 1, or 2 to also check Hessian-vector products (forward-over-reverse
        and reverse-over-reverse) and, for small inputs, the full Hessian of
        the summed output.
      rtol, atol: tolerances for the rule under test (see the module notes);
        by default from the least precise dtype of the inputs and outputs,
        :func:`default_tolerances` (float32: ``1e-3, 1e-6``).
      eps: finite-difference step; default ``1e-6 * max(1, max|x|)``. The
        differences are central and computed in float64.
      num_directions: random directions for the directional checks.
      full_jacobian_max_size: up to this many differentiated elements, the
        full Jacobian (and Hessian) is also checked, one coordinate at a time.
        It is the Jacobian of the output, or of its sum when the output has
        more than 1024 elements.
      seed: seed of the random directions.
      jax_check_grads: also run :func:`jax.test_util.check_grads` in float64
        (pass/fail only; it costs about as much as all the other checks).
      raise_on_failure: raise :class:`GradcheckError`, whose message is the
        report's table, when a check fails or is skipped.

    Returns:
      A :class:`GradcheckReport`: ``.ok``; ``.checks`` with the worst absolute
      and relative error of each check; ``.skipped`` with why a check could
      not run; ``print(report)`` shows the table and a notebook renders it as
      HTML.

    Raises:
      GradcheckError: with ``raise_on_failure=True``, when the report is not ok.
      ValueError: for invalid arguments, or nothing to differentiate.
      Any exception ``fn`` or ``reference`` raises, other than a missing
      derivative mode (see the module notes on skipped checks).

    Example:
      >>> import jax.numpy as jnp, jaxloss
      >>> from jaxloss.testing import gradcheck
      >>> x = jnp.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
      >>> gradcheck(jaxloss.softmax_cross_entropy_with_integer_labels, x, jnp.array([0, 2])).ok
      True

    Note:
      Float64 is switched on only for the finite differences and the reference
      (``jax.enable_x64``) and the caller's setting is back on return; the rule
      under test runs in the inputs' own dtype under the caller's settings.
      Finite differences assume ``fn`` is smooth within ``eps`` of the point:
      keep off kinks (a hinge at its margin, ``|x|`` at 0).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2; got {order!r}.")
    argnums = _normalize_argnums(argnums, len(args))
    num_directions = int(num_directions)
    if num_directions < 1:
        raise ValueError(f"num_directions must be >= 1; got {num_directions}.")
    prob = _Problem(fn, args, argnums)
    if not prob.leaves:
        raise ValueError(
            f"argnums={argnums} holds no floating-point array to differentiate; integer, "
            "bool, None and Python-scalar arguments are held fixed."
        )
    tols = (rtol, atol, eps)
    s = _make_setup(prob, order, num_directions, full_jacobian_max_size, seed, tols)
    rule = _rule_results(s)
    f64, p64, notes = _float64_results(s, fn, args, argnums, reference)
    run = _Run(s, rule, f64, p64)
    wanted = {
        "reference": reference is not None,
        "order 2": order == 2,
        "full": s.full,
        "check_grads": jax_check_grads,
    }
    flags = {flag for flag, on in wanted.items() if on}
    checks = tuple(check(run) for check, needs in _CHECKS if needs <= flags)
    report = GradcheckReport(
        all(c.ok for c in checks),
        checks,
        _fn_name(fn),
        tuple(prob.names),
        argnums,
        order,
        s.rtol,
        s.atol,
        s.h,
        tuple(prob.fixed + notes),
    )
    if raise_on_failure and not report.ok:
        raise GradcheckError(report)
    return report

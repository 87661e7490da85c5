"""Gradient checking for loss functions and their custom derivative rules.

:func:`gradcheck` compares a function's own derivative rules (whatever
``jax.custom_jvp``/``custom_vjp`` machinery sits behind it) with

* autodiff of a plain ``reference`` formula, evaluated in float64;
* central finite differences of the function itself, evaluated in float64,
  along random directions and, for small inputs, along every coordinate
  (the full Jacobian, and the full Hessian of the summed output);
* itself: ``<v, J u>`` from forward mode must equal ``<J^T v, u>`` from reverse
  mode, and every value and derivative must be finite.

It returns a :class:`GradcheckReport` with one row per check (worst absolute
and relative error, the tolerance it was held to, pass/fail), printable in a
terminal and rendered as an HTML table in notebooks.

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
"""

from __future__ import annotations

import dataclasses
import html
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np

__all__ = ["CheckResult", "GradcheckReport", "default_tolerances", "gradcheck"]

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
      abs_error: ``max |a - b|`` (``nan`` when not applicable or failed).
      rel_error: ``abs_error / max |b|``.
      tolerance: the absolute threshold ``atol + rtol * max |b| + noise``.
      ok: whether the check passed.
      message: why it failed, or a remark.
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


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.2e}"


@dataclasses.dataclass(frozen=True)
class GradcheckReport:
    """What :func:`gradcheck` found.

    Attributes:
      ok: every check passed.
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
        return tuple(c for c in self.checks if not c.ok)

    def __getitem__(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks are {[c.name for c in self.checks]}")

    def _header(self) -> str:
        return (
            f"gradcheck of {self.function}: {', '.join(self.inputs)}; order={self.order}, "
            f"rtol={self.rtol:g}, atol={self.atol:g}, eps={self.eps:g}"
        )

    def _verdict(self) -> str:
        n_ok = sum(c.ok for c in self.checks)
        word = "OK" if self.ok else "FAILED"
        return f"{word}: {n_ok}/{len(self.checks)} checks passed"

    def __str__(self) -> str:
        cols = ("check", "mode", "against", "size", "max abs", "max rel", "tol", "")
        rows = [
            (
                c.name,
                c.mode,
                c.against,
                c.size,
                _fmt(c.abs_error),
                _fmt(c.rel_error),
                _fmt(c.tolerance),
                "ok" if c.ok else "FAIL",
            )
            for c in self.checks
        ]
        widths = [max(len(r[i]) for r in (cols, *rows)) for i in range(len(cols))]
        line = lambda r: "  ".join(s.ljust(w) for s, w in zip(r, widths, strict=True)).rstrip()
        out = [self._header(), line(cols), line(tuple("-" * w for w in widths))]
        out += [line(r) for r in rows]
        for c in self.checks:
            if c.message:
                out.append(f"  {c.name}: {c.message}")
        out += [f"note: {n}" for n in self.notes]
        out.append(self._verdict())
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"<GradcheckReport {self.function}: {self._verdict()}>"

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(
            f"<th style='text-align:left'>{esc(h)}</th>"
            for h in ("check", "mode", "against", "size", "max abs", "max rel", "tol", "")
        )
        body = []
        for c in self.checks:
            color = "#1a7f37" if c.ok else "#cf222e"
            mark = "&#10003;" if c.ok else "&#10007; FAIL"
            cells = (
                c.name,
                c.mode,
                c.against,
                c.size,
                _fmt(c.abs_error),
                _fmt(c.rel_error),
                _fmt(c.tolerance),
            )
            tds = "".join(f"<td>{esc(s)}</td>" for s in cells)
            title = f" title='{esc(c.message)}'" if c.message else ""
            body.append(f"<tr{title}>{tds}<td style='color:{color}'><b>{mark}</b></td></tr>")
        msgs = "".join(
            f"<li><b>{esc(c.name)}</b>: {esc(c.message)}</li>" for c in self.checks if c.message
        )
        msgs += "".join(f"<li>{esc(n)}</li>" for n in self.notes)
        color = "#1a7f37" if self.ok else "#cf222e"
        return (
            f"<div><p><code>{esc(self._header())}</code></p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + (f"<ul>{msgs}</ul>" if msgs else "")
            + f"<p style='color:{color}'><b>{esc(self._verdict())}</b></p></div>"
        )


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
    """``vmap(fun)`` over the leading axis of ``stacked``; falls back to a Python
    loop when ``fun`` does not vmap (value-dependent Python control flow)."""
    try:
        return jax.vmap(fun)(*stacked)
    except Exception:
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
    except Exception:  # a backend that does not know the option
        compiled = lowered.compile()
    return compiled(inputs)


def _evaluate(progs: dict[str, tuple[Callable, Callable]], inputs: Any) -> dict[str, Any]:
    """Evaluates ``{key: (compute, to_numpy)}`` on ``inputs``.

    Everything is computed in one ``jit`` (one compilation instead of hundreds
    of eager-mode ones). When that fails, each quantity is computed alone
    (under ``jit``, then eagerly), so an exception is charged only to the
    quantities it breaks; the exception object then stands in for the result.
    """
    try:
        raw = _jit_run(lambda i: {k: c(i) for k, (c, _) in progs.items()}, inputs)
        return {k: progs[k][1](v) for k, v in raw.items()}
    except Exception:
        pass
    out: dict[str, Any] = {}
    for k, (compute, post) in progs.items():
        try:
            out[k] = post(_jit_run(compute, inputs))
        except Exception:
            try:
                out[k] = post(compute(inputs))
            except Exception as e:
                out[k] = e
    return out


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


def _compare(name, mode, against, size, a, b, rtol, atol, noise=0.0) -> CheckResult:
    """Worst ``|a - b|``, relative to ``max |b|``; passes below ``atol + rtol max|b| + noise``."""
    if isinstance(a, BaseException) or isinstance(b, BaseException):
        return _failed(name, mode, against, a if isinstance(a, BaseException) else b)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return CheckResult(
            name,
            mode,
            against,
            size,
            math.nan,
            math.nan,
            math.nan,
            False,
            f"shape mismatch {a.shape} vs {b.shape}",
        )
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


def _failed(name, mode, against, exc: BaseException) -> CheckResult:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return CheckResult(name, mode, against, "-", math.nan, math.nan, math.nan, False, text)


def _fn_name(fn: Callable) -> str:
    while not hasattr(fn, "__name__") and hasattr(fn, "func"):  # functools.partial
        fn = fn.func
    return getattr(fn, "__name__", None) or repr(fn)


def _finite_row(name: str, what: str, values: Sequence[np.ndarray]) -> CheckResult:
    arr = np.concatenate([np.ravel(v) for v in values]) if values else np.zeros(0)
    bad = int(np.sum(~np.isfinite(arr)))
    return CheckResult(
        name,
        "-",
        "-",
        f"{arr.size} {what}",
        math.nan,
        math.nan,
        math.nan,
        bad == 0,
        f"{bad} non-finite" if bad else "",
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
    jax_check_grads: bool = True,
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

    Returns:
      A :class:`GradcheckReport`: ``.ok``; ``.checks`` with the worst absolute
      and relative error of each check; ``print(report)`` shows the table and a
      notebook renders it as HTML.

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
    if isinstance(argnums, (numbers.Integral, np.integer)) and not isinstance(argnums, bool):
        argnums = (int(argnums),)
    argnums = tuple(int(a) for a in argnums)
    if not argnums:
        raise ValueError("argnums must name at least one argument.")
    for a in argnums:
        if not -len(args) <= a < len(args):
            raise ValueError(f"argnums={a} is out of range for {len(args)} positional arguments.")
    argnums = tuple(sorted({a % len(args) for a in argnums}))
    num_directions = int(num_directions)
    if num_directions < 1:
        raise ValueError(f"num_directions must be >= 1; got {num_directions}.")

    prob = _Problem(fn, args, argnums)
    if not prob.leaves:
        raise ValueError(
            f"argnums={argnums} holds no floating-point array to differentiate; integer, "
            "bool, None and Python-scalar arguments are held fixed."
        )
    name = _fn_name(fn)
    notes = list(prob.fixed)
    x = prob.leaves
    in_dtypes = [v.dtype for v in x]
    shapes = [tuple(v.shape) for v in x]
    n_in = sum(math.prod(s) for s in shapes)

    def report(checks, rtol_, atol_, h_):
        return GradcheckReport(
            all(c.ok for c in checks),
            tuple(checks),
            name,
            tuple(prob.names),
            argnums,
            order,
            rtol_,
            atol_,
            h_,
            tuple(notes),
        )

    try:
        y_spec = jax.eval_shape(prob.call, *x)
    except Exception as e:
        return report([_failed("finite values", "-", "-", e)], math.nan, math.nan, math.nan)
    if not y_spec:
        raise ValueError(f"{name} returned no floating-point output to check.")
    out_dtypes = [o.dtype for o in y_spec]
    out_shapes = [tuple(o.shape) for o in y_spec]
    n_out = sum(math.prod(s) for s in out_shapes)

    d_rtol, d_atol = default_tolerances(_least_precise(in_dtypes + out_dtypes))
    rtol = d_rtol if rtol is None else float(rtol)
    atol = d_atol if atol is None else float(atol)
    x_np = [np.asarray(v, dtype=np.float64) for v in x]
    xmax = max(float(np.max(np.abs(v[np.isfinite(v)]), initial=0.0)) for v in x_np)
    h = _FD_STEP * max(1.0, xmax) if eps is None else float(eps)

    # Directions: K random unit vectors u (inputs) and v (outputs), then, for
    # small inputs, every coordinate vector.
    K = num_directions
    rng = np.random.default_rng(seed)
    us = _random_unit(rng, shapes, K)
    vs = _random_unit(rng, out_shapes, K)
    full = n_in <= full_jacobian_max_size
    jac_of_sum = n_out > _SUM_JACOBIAN_ABOVE
    dirs = us + (_basis(shapes) if full else [])
    cots = vs
    if full:
        cots = vs + ([[np.ones(s) for s in out_shapes]] if jac_of_sum else _basis(out_shapes))
    n_dirs, n_cots = len(dirs), len(cots)

    # ---- the rule under test: inputs' own dtype, caller's settings ----
    inp = {"x": x, "D": _stack(dirs, in_dtypes), "C": _stack(cots, out_dtypes)}
    progs: dict[str, tuple[Callable, Callable]] = {
        "value": (lambda i: prob.call(*i["x"]), _rows64),
        "jvp": (lambda i: prob.jvps(i["x"], i["D"]), lambda t: _rows64(t, n_dirs)),
        "vjp": (lambda i: prob.vjps(i["x"], i["C"]), lambda t: _rows64(t, n_cots)),
    }
    if order == 2:
        progs["hvp"] = (lambda i: prob.hvps(i["x"], i["D"]), lambda t: _rows64(t, n_dirs))
        progs["hvp_rr"] = (
            lambda i: prob.hvps_rev_rev(i["x"], tuple(d[:K] for d in i["D"])),
            lambda t: _rows64(t, K),
        )
    nat = _evaluate(progs, inp)

    # ---- float64: finite differences of fn, and the reference's autodiff ----
    with jax.enable_x64(True):
        p64 = _Problem(fn, args, argnums, convert=_to64)
        x64 = [np.asarray(v) for v in p64.leaves]
        # points x + h d for every direction d, then x - h d
        pts = tuple(
            jnp.asarray(
                np.concatenate(
                    [
                        xi + h * np.stack([d[j] for d in dirs]),
                        xi - h * np.stack([d[j] for d in dirs]),
                    ]
                )
            )
            for j, xi in enumerate(x64)
        )
        inp64: dict[str, Any] = {"x": p64.leaves, "P": pts}
        progs64: dict[str, tuple[Callable, Callable]] = {
            "value": (lambda i: p64.call(*i["x"]), _rows64),
            "f_at": (lambda i: _vmap(p64.call, i["P"]), lambda t: _rows64(t, 2 * n_dirs)),
        }
        if order == 2:
            progs64["grad"] = (lambda i: p64.grad(*i["x"]), _rows64)
            progs64["g_at"] = (lambda i: _vmap(p64.grad, i["P"]), lambda t: _rows64(t, 2 * n_dirs))
        if reference is not None:
            r64 = _Problem(reference, args, argnums, convert=_to64)
            inp64["rx"] = r64.leaves
            inp64["U"] = _stack(us, [jnp.float64] * len(x))
            try:
                r_dtypes = [o.dtype for o in jax.eval_shape(r64.call, *r64.leaves)]
            except Exception:
                r_dtypes = [jnp.float64] * len(out_shapes)
            inp64["V"] = _stack(vs, r_dtypes) if len(r_dtypes) == len(vs[0]) else None
            progs64["ref_value"] = (lambda i: r64.call(*i["rx"]), _rows64)
            progs64["ref_jvp"] = (lambda i: r64.jvps(i["rx"], i["U"]), lambda t: _rows64(t, K))
            progs64["ref_vjp"] = (lambda i: r64.vjps(i["rx"], i["V"]), lambda t: _rows64(t, K))
            if order == 2:
                progs64["ref_hvp"] = (lambda i: r64.hvps(i["rx"], i["U"]), lambda t: _rows64(t, K))
        r = _evaluate(progs64, inp64)

        jtu_error: BaseException | None = None
        if jax_check_grads:
            try:
                # its default step (1e-4) is too coarse for curved losses at order 2
                jax.test_util.check_grads(
                    jax.jit(p64.call), p64.leaves, order=order, modes=("fwd", "rev"), eps=10 * h
                )
            except Exception as e:  # AssertionError with numpy's report, or any failure
                jtu_error = e
        try:
            out64 = jax.eval_shape(p64.call, *p64.leaves)
            if any(o.dtype != jnp.float64 for o in out64):
                notes.append(
                    f"{name} does not compute in float64 (outputs "
                    f"{[jnp.dtype(o.dtype).name for o in out64]}): the finite differences "
                    "are only as precise as that; consider a larger eps"
                )
        except Exception:
            pass

    def central(vals):
        if isinstance(vals, BaseException):
            return vals
        return (vals[:n_dirs] - vals[n_dirs:]) / (2 * h)

    def noise_of(vals):  # float64 rounding in a central difference of these values
        if isinstance(vals, BaseException):
            return 0.0
        return 4 * _EPS64 * float(np.max(np.abs(vals), initial=0.0)) / h

    fd_f = central(r["f_at"])
    noise = noise_of(r["value"])
    fd_g = central(r["g_at"]) if order == 2 else None
    gnoise = noise_of(r["grad"]) if order == 2 else 0.0

    def head(v, k=K):  # the first k rows (random directions) of a result
        return v if isinstance(v, BaseException) else v[:k]

    def tail(v, k=K):  # the rows after them (coordinate vectors)
        return v if isinstance(v, BaseException) else v[k:]

    # ---- compare ----
    fwd, rev, fr, rr = "forward", "reverse", "fwd-over-rev", "rev-over-rev"
    FD, REF = "fd (float64)", "reference (float64)"
    nd = f"{K} directions"
    y_np = nat["value"]
    checks: list[CheckResult] = []
    if isinstance(y_np, BaseException):
        checks.append(_failed("finite values", "-", "-", y_np))
    else:
        checks.append(_finite_row("finite values", "values", [y_np]))
    if reference is not None:
        checks += [
            _compare(
                "value vs reference", "-", REF, f"{n_out} values", y_np, r["ref_value"], rtol, atol
            ),
            _compare("vjp vs reference", rev, REF, nd, head(nat["vjp"]), r["ref_vjp"], rtol, atol),
            _compare("jvp vs reference", fwd, REF, nd, head(nat["jvp"]), r["ref_jvp"], rtol, atol),
        ]
        if order == 2:
            checks.append(
                _compare(
                    "hvp vs reference", fr, REF, nd, head(nat["hvp"]), r["ref_hvp"], rtol, atol
                )
            )

    checks.append(
        _compare("jvp vs fd", fwd, FD, nd, head(nat["jvp"]), head(fd_f), rtol, atol, noise)
    )
    # reverse mode along random directions: <J^T v, u> against <v, FD(u)>
    uflat = np.stack([np.concatenate([p.ravel() for p in u]) for u in us])
    vflat = np.stack([np.concatenate([p.ravel() for p in v]) for v in vs])
    vju = (
        nat["vjp"]
        if isinstance(nat["vjp"], BaseException)
        else np.sum(nat["vjp"][:K] * uflat, axis=1)
    )
    vfd = head(fd_f) if isinstance(fd_f, BaseException) else np.sum(vflat * fd_f[:K], axis=1)
    checks.append(_compare("vjp vs fd", rev, FD, f"{K} <v, J u>", vju, vfd, rtol, atol, noise))
    if full:
        jac_fd = fd_f
        if not isinstance(fd_f, BaseException):
            jac_fd = fd_f[K:].T  # [n_out, n_in]
            if jac_of_sum:
                jac_fd = jac_fd.sum(axis=0, keepdims=True)
        jacfwd = tail(nat["jvp"])
        if not isinstance(jacfwd, BaseException):
            jacfwd = jacfwd.T.sum(axis=0, keepdims=True) if jac_of_sum else jacfwd.T
        jshape = f"{jac_fd.shape[0] if not isinstance(jac_fd, BaseException) else '?'}x{n_in}"
        checks += [
            _compare("jacfwd vs fd", fwd, FD, jshape, jacfwd, jac_fd, rtol, atol, noise),
            _compare("jacrev vs fd", rev, FD, jshape, tail(nat["vjp"]), jac_fd, rtol, atol, noise),
        ]
    # <v, J u> from forward mode against <J^T v, u> from reverse mode
    vjux = (
        nat["jvp"]
        if isinstance(nat["jvp"], BaseException)
        else np.sum(vflat * nat["jvp"][:K], axis=1)
    )
    checks.append(
        _compare(
            "jvp/vjp consistency", "fwd vs rev", "itself", f"{K} <v, J u>", vju, vjux, rtol, atol
        )
    )
    if order == 2:
        checks += [
            _compare(
                "hvp vs fd",
                fr,
                FD + " of grad",
                nd,
                head(nat["hvp"]),
                head(fd_g),
                rtol,
                atol,
                gnoise,
            ),
            _compare(
                "hvp (rev-over-rev) vs fd",
                rr,
                FD + " of grad",
                nd,
                nat["hvp_rr"],
                head(fd_g),
                rtol,
                atol,
                gnoise,
            ),
        ]
        if full:
            checks.append(
                _compare(
                    "hessian vs fd",
                    fr,
                    FD + " of grad",
                    f"{n_in}x{n_in}",
                    tail(nat["hvp"]),
                    tail(fd_g),
                    rtol,
                    atol,
                    gnoise,
                )
            )
    derivs = [v for k, v in nat.items() if k != "value" and not isinstance(v, BaseException)]
    checks.append(_finite_row("finite derivatives", "numbers", derivs))
    if jax_check_grads:
        msg = "" if jtu_error is None else _failed("", "", "", jtu_error).message
        checks.append(
            CheckResult(
                "jax check_grads",
                "fwd+rev" + (", order 2" if order == 2 else ""),
                "fd (float64)",
                "pass/fail",
                math.nan,
                math.nan,
                math.nan,
                jtu_error is None,
                msg,
            )
        )
    return report(checks, rtol, atol, h)

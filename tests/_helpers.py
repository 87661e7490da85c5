"""Helpers shared by the test modules.

``tests/`` has no ``__init__.py``: pytest's default ("prepend") import mode puts
this directory on ``sys.path``, so test modules import this file as
``_helpers``, as ``test_sharding.py`` imports ``_multidevice``.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence

import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def tt(a, grad: bool = False):
    """A float64 torch tensor (int64 for integer and boolean arrays)."""
    import torch

    a = np.asarray(a)
    dtype = torch.float64 if np.issubdtype(a.dtype, np.floating) else torch.int64
    return torch.tensor(a, dtype=dtype, requires_grad=grad)


def close(actual, expected, rtol=1e-10, atol=1e-12, err_msg=""):
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol, err_msg=err_msg
    )


def hyperparameter_gradients_match_differences(f, point, what, step=1e-6):
    """The gradient of ``f`` (a scalar function of Python-number hyperparameters)
    with respect to each of ``point`` equals the central difference of one jitted
    ``f`` (float64: step 1e-6, relative error 1e-6)."""
    traced = jax.jit(f)
    grads = jax.jit(jax.grad(f, argnums=tuple(range(len(point)))))(*point)
    for i, g in enumerate(grads):
        up, down = list(point), list(point)
        up[i] += step
        down[i] -= step
        fd = (traced(*up) - traced(*down)) / (2 * step)
        close(g, fd, rtol=1e-6, atol=1e-8, err_msg=f"{what}: argument {i}")


def temp_bytes(loss, *specs, argnums=0) -> int:
    """Compiled temporary bytes of ``value_and_grad`` of ``loss(*args).sum()`` at
    the shapes ``specs`` (no execution)."""
    f = jax.value_and_grad(lambda *a: loss(*a).sum(), argnums=argnums)
    return jax.jit(f).lower(*specs).compile().memory_analysis().temp_size_in_bytes


def all_finite(*trees) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(trees))


def saved_residuals(f, *args):
    """``(aval, source)`` of every residual reverse mode keeps between the passes."""
    fn = getattr(jax.ad_checkpoint, "saved_residuals", None)
    if fn is None:  # not re-exported publicly in every JAX version
        from jax._src.ad_checkpoint import saved_residuals as fn
    return fn(f, *args)


def large_residuals(f, *args, size):
    """Residuals with at least ``size`` elements other than the caller's own buffers:
    the arguments and the closed-over operands ("from a constant"); anything the
    loss computed shows up as "output of <primitive>"."""
    return [
        (aval, src)
        for aval, src in saved_residuals(f, *args)
        if np.prod(aval.shape) >= size
        and not src.startswith(("from the argument", "from a constant"))
    ]


def residual_lines(f, *args) -> list[str]:
    """The non-empty lines ``jax.ad_checkpoint.print_saved_residuals`` prints."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        jax.ad_checkpoint.print_saved_residuals(f, *args)
    return [ln for ln in buf.getvalue().splitlines() if ln.strip()]


@contextlib.contextmanager
def optax_promotion():
    """optax's code relies on standard promotion and rank broadcasting."""
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        yield


def value_and_grads(fns, args):
    """``[(f(*args), grad of sum(f) w.r.t. every argument)]`` for every ``f``, in one
    jitted program (under :func:`optax_promotion`, so optax peers can run in it)."""

    def run(*a):
        n = tuple(range(len(a)))
        return [(f(*a), jax.grad(lambda *x, f=f: jnp.sum(f(*x)), argnums=n)(*a)) for f in fns]

    with optax_promotion():
        return jax.jit(run)(*args)


@contextlib.contextmanager
def child(
    cmd: Sequence[str], env: dict[str, str], cwd: str | os.PathLike | None = None
) -> Iterator[subprocess.Popen]:
    """A subprocess in its own process group, killed with its own children and
    reaped on the way out, its pipes drained and closed, whatever happened in the
    block (a timeout, a failed assertion): no process outlives the test and no
    ``ResourceWarning`` is left."""
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, even if it exited
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
            proc.communicate(timeout=60)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()

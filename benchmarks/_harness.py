"""Timing and memory utilities shared by every benchmark case.

A *peer* is one implementation of a loss (jaxloss, optax, the naive formula,
composed optax, PyTorch). All peers of a case run in the same process on the
same inputs; repeats are interleaved round-robin over the peers (the starting
peer rotates each round) after one warm-up call each, and we report the median
and the min-max of the repeats.

JAX peers are compiled ahead of time (``jit(f).lower(*args).compile()``), so
compile time is measured apart from run time, and ``memory_analysis()`` of the
compiled executable gives the deterministic scratch (temp) bytes.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MiB = 1 << 20
GiB = 1 << 30


# --------------------------------------------------------------------------
# Machine facts
# --------------------------------------------------------------------------


def cpu_threads() -> int:
    """Threads XLA:CPU uses for one computation (it sizes its pool to the CPUs we may run on)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def device_kind() -> str:
    """``jax.devices()[0].device_kind`` made safe for a file name.

    ``cpu`` stays ``cpu``; ``NVIDIA H100 80GB HBM3`` becomes ``nvidia-h100-80gb-hbm3``.
    """
    kind = jax.devices()[0].device_kind.lower()
    safe = "".join(c if c.isalnum() else "-" for c in kind)
    while "--" in safe:
        safe = safe.replace("--", "-")
    return safe.strip("-") or "unknown"


def block(x: Any) -> Any:
    return jax.block_until_ready(x)


def free_memory() -> None:
    gc.collect()


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    def to_json(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "min_s": self.min,
            "max_s": self.max,
            "times_s": list(self.times),
        }


# --------------------------------------------------------------------------
# Streaming bandwidth
# --------------------------------------------------------------------------


def stream_bandwidth(nbytes: int = 256 * MiB, repeats: int = 10) -> dict[str, Any]:
    """The machine's streaming bandwidth: a jitted ``a + 1`` over ``nbytes`` of
    float32 written into the donated input buffer; bytes moved = 2 * size (one
    read, one write). (``a + 0`` would not do: XLA folds it to a no-op.)"""
    n = nbytes // 4
    bump = jax.jit(lambda a: a + jnp.float32(1), donate_argnums=0)
    a = block(jnp.zeros((n,), jnp.float32))
    a = block(bump(a))  # compile + warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a = block(bump(a))
        times.append(time.perf_counter() - t0)
    del a
    free_memory()
    t = Timing(times)
    moved = 2 * n * 4
    return {
        "bytes": moved,
        "buffer_bytes": n * 4,
        **t.to_json(),
        "GBps": moved / t.median / 1e9,
        "GBps_best": moved / t.min / 1e9,
    }


# --------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Peer:
    """One implementation of a case's loss.

    ``fwd`` and ``vag`` are zero-argument callables that run the forward (the
    reduced loss) and value-and-grad once and block until the result is ready.
    They are built by :func:`jax_peer` or :func:`torch_peer`.
    """

    name: str
    framework: str
    fwd: Callable[[], Any]
    vag: Callable[[], Any]
    compile_fwd_s: float | None = None
    compile_vag_s: float | None = None
    scratch_fwd_bytes: int | None = None
    scratch_vag_bytes: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _memory(compiled: Any) -> dict[str, int | None]:
    try:
        m = compiled.memory_analysis()
    except Exception:  # pragma: no cover - backend without memory analysis
        m = None
    if m is None:
        return {"temp": None, "argument": None, "output": None}
    return {
        "temp": int(m.temp_size_in_bytes),
        "argument": int(m.argument_size_in_bytes),
        "output": int(m.output_size_in_bytes),
    }


def _compile(fn: Callable, args: Sequence[Any]) -> tuple[Any, float, dict[str, int | None]]:
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    elapsed = time.perf_counter() - t0
    return compiled, elapsed, _memory(compiled)


def jax_peer(
    name: str, loss_fn: Callable[..., jax.Array], args: Sequence[Any], forward: bool = True
) -> Peer:
    """A JAX peer: ``loss_fn(logits, *rest)`` returns a scalar; the gradient is
    taken with respect to the first argument. ``forward=False`` compiles only
    value-and-grad (the peer's ``fwd`` then raises)."""
    args = tuple(args)
    vag_c, vag_t, vag_m = _compile(jax.value_and_grad(loss_fn), args)
    if forward:
        fwd_c, fwd_t, fwd_m = _compile(loss_fn, args)
        fwd = lambda: block(fwd_c(*args))
    else:
        fwd_t, fwd_m = None, {"temp": None}

        def fwd():
            raise RuntimeError(f"{name}: compiled without its forward")

    value, grad = block(vag_c(*args))
    loss = fwd() if forward else value
    extra = {
        "value": float(loss),
        "loss_dtype": str(loss.dtype),
        "vag_value": float(value),
        "grad_dtype": str(grad.dtype),
        "grad_finite": bool(jnp.all(jnp.isfinite(grad))),
        "argument_bytes": vag_m["argument"],
        "output_bytes_vag": vag_m["output"],
    }
    del loss, value, grad
    return Peer(
        name=name,
        framework="jax",
        fwd=fwd,
        vag=lambda: block(vag_c(*args)),
        compile_fwd_s=fwd_t,
        compile_vag_s=vag_t,
        scratch_fwd_bytes=fwd_m["temp"],
        scratch_vag_bytes=vag_m["temp"],
        extra=extra,
    )


def torch_peer(name: str, loss_fn: Callable[..., Any], logits: Any, rest: Sequence[Any]) -> Peer:
    """A PyTorch peer, eager: forward under ``no_grad``; value-and-grad is the
    forward with ``requires_grad`` plus ``torch.autograd.grad``."""
    import torch

    leaf = logits.detach().requires_grad_(True)
    rest = tuple(rest)

    def fwd():
        with torch.no_grad():
            return loss_fn(logits, *rest)

    def vag():
        loss = loss_fn(leaf, *rest)
        (grad,) = torch.autograd.grad(loss, leaf)
        return loss, grad

    loss = fwd()
    value, grad = vag()
    extra = {
        "value": float(loss),
        "loss_dtype": str(loss.dtype).replace("torch.", ""),
        "vag_value": float(value.detach()),
        "grad_dtype": str(grad.dtype).replace("torch.", ""),
        "grad_finite": bool(torch.isfinite(grad).all()),
        "threads": torch.get_num_threads(),
    }
    del loss, value, grad
    return Peer(name=name, framework="torch", fwd=fwd, vag=vag, extra=extra)


def floor_peers(shape: Sequence[int], dtype: Any) -> list[Peer]:
    """The physical floors of a case, timed beside its peers: one ``sum(exp(x))``
    pass over a ``shape`` array (``floor_exp``) and one read-and-write pass,
    ``x + 1`` into a new buffer as a gradient is written (``floor_write``).

    The exp pass is summed over rows of the softmax core's block width (a free
    reshape of the array, as ``jaxloss._softmax.exp_sum`` views long rows):
    XLA:CPU (jax 0.10.2) reduces a fused ``exp`` over longer rows at an eighth of
    the speed, and a floor is the fastest way to do the work.
    """
    from jaxloss._softmax import _row_blocks

    n = int(np.prod(shape))
    nb, width = _row_blocks(shape[-1])
    if nb * width != shape[-1]:  # no equal blocks: the whole row
        width = shape[-1]
    x = jnp.asarray(np.random.default_rng(0).normal(size=n).astype(np.float32)).astype(dtype)
    x = x.reshape(n // width, width)
    exp_c, _, _ = _compile(lambda a: jnp.sum(jnp.exp(a.astype(jnp.float32)), axis=-1), (x,))
    write_c, _, _ = _compile(lambda a: a + jnp.ones((), a.dtype), (x,))
    exp_pass = lambda: block(exp_c(x))
    write_pass = lambda: block(write_c(x))
    return [
        Peer(name="floor_exp", framework="floor", fwd=exp_pass, vag=exp_pass),
        Peer(name="floor_write", framework="floor", fwd=write_pass, vag=write_pass),
    ]


def floor_ratio(jaxloss_s: float, exp_s: float, write_s: float) -> float:
    """jaxloss's value_and_grad time over two exp passes plus one write."""
    return jaxloss_s / (2.0 * exp_s + write_s)


def interleaved(
    peers: Sequence[Peer], mode: str, repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """Times ``mode`` ("fwd" or "vag") of every peer: ``warmup`` untimed calls
    each, then ``repeats`` rounds over all peers, the starting peer rotating."""
    calls = {p.name: getattr(p, mode) for p in peers}
    names = [p.name for p in peers]
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    # The collector is paused while timing (a full collection costs ~0.1 s here);
    # results are dropped right after each call, so memory does not pile up.
    gc.collect()
    gc.disable()
    try:
        for r in range(repeats):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                t0 = time.perf_counter()
                out = calls[name]()
                times[name].append(time.perf_counter() - t0)
                del out
    finally:
        gc.enable()
    return {name: Timing(ts) for name, ts in times.items()}


def run_peers(peers: Sequence[Peer], repeats: int, warmup: int = 1) -> dict[str, dict[str, Timing]]:
    """Forward, then value-and-grad, each interleaved over the peers."""
    return {mode: interleaved(peers, mode, repeats, warmup) for mode in ("fwd", "vag")}


def ratios(medians: dict[str, float]) -> dict[str, dict[str, float]]:
    """``r[a][b] = median(a) / median(b)``: below 1 means ``a`` is faster."""
    return {a: {b: ta / tb for b, tb in medians.items() if tb > 0} for a, ta in medians.items()}


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def to_torch(x: Any) -> Any:
    """A JAX/NumPy array as a torch tensor holding the same values (bf16 bit for bit)."""
    import torch

    arr = np.asarray(x)  # read-only view of a JAX array: torch gets its own copy
    if arr.dtype == jnp.bfloat16:
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(arr, copy=True))


def fmt_time(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_bytes(b: int | None) -> str:
    if b is None:
        return "n/a"
    if b >= GiB:
        return f"{b / GiB:.2f} GiB"
    if b >= MiB:
        return f"{b / MiB:.1f} MiB"
    if b >= 1024:
        return f"{b / 1024:.1f} KiB"
    return f"{b} B"

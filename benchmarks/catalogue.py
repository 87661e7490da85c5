"""Loss catalogue benchmark: each loss against the peer it matches.

For every loss: ``jax.jit(jax.value_and_grad(mean loss))`` with respect to its
first argument at 8M elements (``[1024, 8192]``; the class-axis losses have
8192 classes), against the optax function it matches or, where optax has none,
the plain formula under autodiff. Both are compiled ahead of time in the same
process; after a warm-up call each, the two are timed in interleaved pairs
(``--repeats``, the first of each pair alternating) and we report the median
of the per-pair time ratios, ours / peer. Beside it, the deterministic scratch
of each compiled program, ``compile().memory_analysis().temp_size_in_bytes``.

Target per loss: median ratio <= 1.0 and our scratch no larger than the peer's.

Run: ``python -m benchmarks.catalogue [--repeats 7] [--rows 1024] [--cols 8192]
[--only NAME ...] [--out benchmarks/results/catalogue_cpu.md]``. Self-contained
(it does not use the shared harness) so it can be folded in later.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

import jaxloss


@dataclasses.dataclass
class Case:
    name: str
    peer_name: str
    ours: Callable
    peer: Callable
    make_args: Callable  # (rows, cols, key) -> tuple of arrays; grad w.r.t. args[0]


def _normal(key, shape, scale=1.0):
    return scale * jax.random.normal(key, shape, jnp.float32)


def _pm1(key, shape):
    return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0).astype(jnp.float32)


def _binary_args(rows, cols, key):
    k1, k2 = jax.random.split(key)
    return (
        _normal(k1, (rows, cols), 2.0),
        jax.random.bernoulli(k2, 0.3, (rows, cols)).astype(jnp.float32),
    )


def _pm_args(rows, cols, key):
    k1, k2 = jax.random.split(key)
    return _normal(k1, (rows, cols), 2.0), _pm1(k2, (rows, cols))


def _class_args(rows, cols, key):
    k1, k2 = jax.random.split(key)
    return _normal(k1, (rows, cols), 2.0), jax.random.randint(k2, (rows,), 0, cols)


def _kl_args(rows, cols, key):
    k1, k2 = jax.random.split(key)
    return (
        jax.nn.log_softmax(_normal(k1, (rows, cols))),
        jax.nn.softmax(_normal(k2, (rows, cols), 2.0)),
    )


def _reg_args(rows, cols, key):
    k1, k2 = jax.random.split(key)
    return _normal(k1, (rows, cols), 2.0), _normal(k2, (rows, cols), 2.0)


def _poisson_args(rows, cols, key):
    k1, k2 = jax.random.split(key)
    return _normal(k1, (rows, cols)), jax.random.poisson(k2, 2.0, (rows, cols)).astype(jnp.float32)


def _gauss_args(rows, cols, key):
    k1, k2, k3 = jax.random.split(key, 3)
    return (
        _normal(k1, (rows, cols)),
        _normal(k2, (rows, cols)),
        jax.random.uniform(k3, (rows, cols), jnp.float32, 0.1, 2.0),
    )


# Plain formulas under autodiff, for losses optax does not have ---------------


def _plain_softmax_focal(x, y, gamma=2.0):
    logp = jnp.take_along_axis(jax.nn.log_softmax(x), y[:, None], axis=-1)[:, 0]
    return -((1.0 - jnp.exp(logp)) ** gamma) * logp


def _plain_squared_hinge(s, y):
    return jnp.maximum(0.0, 1.0 - y * s) ** 2


def _plain_multi_margin(s, y, margin=1.0):
    onehot = jax.nn.one_hot(y, s.shape[-1], dtype=s.dtype)
    s_y = jnp.sum(s * onehot, axis=-1, keepdims=True)
    return jnp.sum(jnp.maximum(0.0, margin - s_y + s) * (1.0 - onehot), axis=-1) / s.shape[-1]


def _plain_abs(x, t):
    return jnp.abs(x - t)


def _plain_smooth_l1(x, t, beta=1.0):
    a = jnp.abs(x - t)
    return jnp.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


def _plain_poisson(x, t):
    return jnp.exp(x) - t * x


def _plain_gaussian(x, t, v, eps=1e-6):
    v = jnp.maximum(v, eps)
    return 0.5 * (jnp.log(v) + (x - t) ** 2 / v)


CASES = [
    Case(
        "sigmoid_focal_loss",
        "optax.sigmoid_focal_loss",
        lambda x, y: jaxloss.sigmoid_focal_loss(x, y),
        optax.sigmoid_focal_loss,
        _binary_args,
    ),
    Case(
        "softmax_focal_loss",
        "plain formula (log_softmax)",
        lambda x, y: jaxloss.softmax_focal_loss(x, y),
        _plain_softmax_focal,
        _class_args,
    ),
    Case(
        "hinge_loss",
        "optax.hinge_loss",
        lambda s, y: jaxloss.hinge_loss(s, y),
        optax.hinge_loss,
        _pm_args,
    ),
    Case(
        "squared_hinge_loss",
        "plain formula",
        lambda s, y: jaxloss.squared_hinge_loss(s, y),
        _plain_squared_hinge,
        _pm_args,
    ),
    Case(
        "multiclass_hinge_loss",
        "plain formula (torch semantics)",
        lambda s, y: jaxloss.multiclass_hinge_loss(s, y),
        _plain_multi_margin,
        _class_args,
    ),
    Case(
        "kl_divergence",
        "optax.kl_divergence",
        lambda a, b: jaxloss.kl_divergence(a, b),
        optax.kl_divergence,
        _kl_args,
    ),
    Case(
        "squared_error",
        "optax.squared_error",
        lambda x, t: jaxloss.squared_error(x, t),
        optax.squared_error,
        _reg_args,
    ),
    Case("l2_loss", "optax.l2_loss", lambda x, t: jaxloss.l2_loss(x, t), optax.l2_loss, _reg_args),
    Case(
        "absolute_error",
        "plain formula",
        lambda x, t: jaxloss.absolute_error(x, t),
        _plain_abs,
        _reg_args,
    ),
    Case(
        "huber_loss",
        "optax.huber_loss",
        lambda x, t: jaxloss.huber_loss(x, t),
        optax.huber_loss,
        _reg_args,
    ),
    Case(
        "smooth_l1_loss",
        "plain formula",
        lambda x, t: jaxloss.smooth_l1_loss(x, t),
        _plain_smooth_l1,
        _reg_args,
    ),
    Case(
        "log_cosh", "optax.log_cosh", lambda x, t: jaxloss.log_cosh(x, t), optax.log_cosh, _reg_args
    ),
    Case(
        "poisson_nll_loss",
        "plain formula",
        lambda x, t: jaxloss.poisson_nll_loss(x, t),
        _plain_poisson,
        _poisson_args,
    ),
    Case(
        "gaussian_nll_loss",
        "plain formula (torch clamp)",
        lambda x, t, v: jaxloss.gaussian_nll_loss(x, t, v),
        _plain_gaussian,
        _gauss_args,
    ),
]


def _compiled(fn, args):
    def mean_loss(first, *rest):
        return jnp.mean(fn(first, *rest))

    t0 = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(mean_loss)).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    temp = None if mem is None else int(mem.temp_size_in_bytes)
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older jax returns one dict per computation
        cost = cost[0] if cost else {}
    work = tuple(float(cost.get(k, 0.0)) for k in ("flops", "transcendentals", "bytes accessed"))
    return compiled, temp, compile_s, work


def _time_once(compiled, args):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - t0


def run_case(case, rows, cols, repeats, seed=0):
    args = case.make_args(rows, cols, jax.random.PRNGKey(seed))
    args = jax.block_until_ready(args)
    ours, ours_temp, ours_c, ours_work = _compiled(case.ours, args)
    peer, peer_temp, peer_c, peer_work = _compiled(case.peer, args)
    # same numbers first (a benchmark of a wrong loss is worthless)
    (v1, g1), (v2, g2) = ours(*args), peer(*args)
    value_err = float(abs(v1 - v2) / max(abs(float(v2)), 1e-30))
    grad_err = float(jnp.max(jnp.abs(g1 - g2)) / jnp.maximum(jnp.max(jnp.abs(g2)), 1e-30))
    _time_once(ours, args)
    _time_once(peer, args)
    t_ours, t_peer, ratios = [], [], []
    for i in range(repeats):
        if i % 2 == 0:
            a, b = _time_once(ours, args), _time_once(peer, args)
        else:
            b, a = _time_once(peer, args), _time_once(ours, args)
        t_ours.append(a)
        t_peer.append(b)
        ratios.append(a / b)
    ratio = statistics.median(ratios)
    met = ratio <= 1.0 and (ours_temp or 0) <= (peer_temp or 0)
    return dict(
        loss=case.name,
        peer=case.peer_name,
        ratio=ratio,
        ours_ms=1e3 * statistics.median(t_ours),
        peer_ms=1e3 * statistics.median(t_peer),
        min_ratio=min(t_ours) / min(t_peer),
        ours_temp=ours_temp,
        peer_temp=peer_temp,
        ours_compile_s=ours_c,
        peer_compile_s=peer_c,
        value_err=value_err,
        grad_err=grad_err,
        met=met,
        ours_work=ours_work,
        peer_work=peer_work,
    )


def _mib(n):
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def _work(r, n):
    # XLA's static cost model of the compiled programs, per input element
    fo, to, bo = (v / n for v in r["ours_work"])
    fp, tp, bp = (v / n for v in r["peer_work"])
    return f"{fo:.1f} / {fp:.1f}, {to:.1f} / {tp:.1f}, {bo:.0f} / {bp:.0f}"


def to_markdown(results, rows, cols, repeats):
    dev = jax.devices()[0]
    lines = [
        "# Loss catalogue benchmark (CPU)",
        "",
        f"`jax.jit(jax.value_and_grad(mean loss))` w.r.t. the first argument, float32 "
        f"`[{rows}, {cols}]` ({rows * cols / 1e6:.1f}M elements; class-axis losses have "
        f"{cols} classes). Median of {repeats} interleaved ours/peer time ratios after one "
        "warm-up each (and, less sensitive to other load on the machine, the ratio of the "
        "fastest runs); scratch is `compile().memory_analysis().temp_size_in_bytes`; the XLA "
        "cost columns are `compile().cost_analysis()` divided by the number of elements. "
        "Target: median ratio <= 1.0x and our scratch no larger than the peer's.",
        "",
        f"Device: {dev.device_kind} ({dev.platform}), {jax.local_device_count()} device(s), "
        f"{os.cpu_count()} CPU threads ({platform.machine()}), load average "
        f"{os.getloadavg()[0]:.1f} at the end of the run; jax {jax.__version__}, "
        f"optax {optax.__version__}; generated by `python -m benchmarks.catalogue`.",
        "",
        "| loss | peer | median ratio | min-time ratio | ours (ms) | peer (ms) | our scratch "
        "| peer scratch "
        "| target | XLA cost per element, ours / peer: flops, transcendentals, bytes "
        "| max rel. diff value / grad |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| `{r['loss']}` | {r['peer']} | {r['ratio']:.2f}x | {r['min_ratio']:.2f}x | "
            f"{r['ours_ms']:.1f} | "
            f"{r['peer_ms']:.1f} | {_mib(r['ours_temp'])} | {_mib(r['peer_temp'])} | "
            f"{'met' if r['met'] else 'not met'} | {_work(r, rows * cols)} | "
            f"{r['value_err']:.1e} / {r['grad_err']:.1e} |"
        )
    met = sum(r["met"] for r in results)
    lines += ["", f"{met} of {len(results)} meet the target."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--cols", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or c.name in args.only]
    results = []
    for case in cases:
        r = run_case(case, args.rows, args.cols, args.repeats)
        results.append(r)
        print(
            f"{r['loss']:24s} {r['ratio']:5.2f}x  ours {r['ours_ms']:8.1f} ms  "
            f"peer {r['peer_ms']:8.1f} ms  scratch {_mib(r['ours_temp'])} vs "
            f"{_mib(r['peer_temp'])}  {'met' if r['met'] else 'NOT MET'}",
            flush=True,
        )
    md = to_markdown(results, args.rows, args.cols, args.repeats)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    else:
        print(md)


if __name__ == "__main__":
    main()

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
[--only NAME ...] [--out FILE]``; ``python -m benchmarks --cases catalogue`` puts
its table in ``benchmarks/results/<device-kind>.md``. Self-contained (it does not
use the shared harness).
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
import numpy as np
import optax

from jaxloss._registry import REGISTRY, LossSpec, resolve


@dataclasses.dataclass
class Case:
    name: str
    peer_name: str
    ours: Callable
    peer: Callable
    make_args: Callable  # (rows, cols, seed) -> tuple of arrays; grad w.r.t. args[0]


def _case(row: LossSpec) -> Case:
    """A registry row's case: its optax function, or else its reference formula."""

    def make_args(rows, cols, seed):
        rng = np.random.default_rng(seed)
        return tuple(jnp.asarray(a) for a in row.bench(rows, cols, rng, np.float32))

    if row.optax:
        peer, peer_name = resolve(row.optax), row.optax.replace("optax.losses.", "optax.")
    else:
        peer, peer_name = row.reference, "plain formula" + (f" ({row.torch})" if row.torch else "")
    return Case(row.name, peer_name, row.fn, peer, make_args)


# Every registry row with benchmark inputs (the vocabulary-parallel losses need a
# mesh: benchmarks/large_vocab.py).
CASES = [_case(row) for row in REGISTRY if row.bench is not None]


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
    args = case.make_args(rows, cols, seed)
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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


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
        if "error" in r:
            lines.append(f"| `{r['loss']}` | {r['peer']} | failed: {r['error']} |" + " |" * 8)
            continue
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
        try:
            r = run_case(case, args.rows, args.cols, args.repeats)
        except Exception as exc:  # one case's failure (e.g. a peer out of memory) is a row
            r = dict(loss=case.name, peer=case.peer_name, error=_first_line(exc), met=False)
            print(f"{case.name:24s} failed: {r['error']}", flush=True)
            results.append(r)
            continue
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

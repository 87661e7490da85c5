"""Large-vocabulary cross-entropy benchmarks (CPU, float32).

Two comparisons, each peer in the same process, compiled apart from the timed
calls, timed as interleaved repeats (median, min-max), with the compiled
function's ``memory_analysis().temp_size_in_bytes`` beside each timing:

1. ``value_and_grad`` w.r.t. hidden and kernel of the mean cross-entropy of
   ``hidden @ kernel`` at N=4096, D=512, V=32768 and N=4096, D=256, V=131072:
   ``jaxloss.fused_linear_softmax_cross_entropy`` (default chunk, and a
   memory-saving chunk with at most 100 MiB of scratch), the gradients-by-
   recomputation alternative (``strategy="recompute"``), ``jax-cce`` when it
   is installed, and the naive ``hidden @ kernel`` +
   ``optax.softmax_cross_entropy_with_integer_labels`` mean.
2. Vocabulary-parallel CE on 4 simulated CPU devices (a child process with
   ``XLA_FLAGS=--xla_force_host_platform_device_count=4``):
   ``jaxloss.vocab_parallel_softmax_cross_entropy`` under ``shard_map`` vs
   GSPMD compiling optax's loss on the same class-sharded logits, with the
   collectives (count and shapes) read from each compiled HLO.

    python -m benchmarks.large_vocab            # full shapes (minutes, ~6 GiB)
    python -m benchmarks.large_vocab --quick    # tiny shapes (seconds)

``main(quick)`` returns the results (with a ``targets`` list) and, in full
mode, writes ``benchmarks/results/large_vocab_cpu.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MiB = 2**20
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MEMORY_SAVING_BYTES = 100 * MiB
VP_DEVICES = 4
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")


def _shapes(quick: bool) -> list[tuple[int, int, int]]:
    if quick:
        return [(256, 64, 2048), (256, 32, 8192)]
    return [(4096, 512, 32768), (4096, 256, 131072)]


def _fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    return f"{b / MiB:,.1f} MiB" if b < 2**30 else f"{b / 2**30:,.2f} GiB"


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:,.1f} ms" if s < 1 else f"{s:,.2f} s"


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else 0.5 * (ys[n // 2 - 1] + ys[n // 2])


def collectives(hlo_text: str) -> list[tuple[str, str]]:
    """(op, result shape) of every collective in compiled HLO text (async pairs once)."""
    pattern = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
    return [
        (m.group(2), m.group(1).strip())
        for line in hlo_text.splitlines()
        if (m := pattern.search(line))
    ]


def _compile(fn, args):
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    temp = compiled.memory_analysis().temp_size_in_bytes
    return compiled, compile_s, temp


def _interleaved(peers: dict[str, dict[str, Any]], repeats: int) -> None:
    """Times every compiled peer ``repeats`` times, one call of each in turn."""
    import jax

    for p in peers.values():  # warm-up call, not timed
        jax.block_until_ready(p["compiled"](*p["args"]))
        p["times"] = []
    for _ in range(repeats):
        for p in peers.values():
            t0 = time.perf_counter()
            jax.block_until_ready(p["compiled"](*p["args"]))
            p["times"].append(time.perf_counter() - t0)
    for p in peers.values():
        p["median_s"] = _median(p["times"])
        p["min_s"], p["max_s"] = min(p["times"]), max(p["times"])


# --------------------------------------------------------------------------
# Fused linear cross-entropy
# --------------------------------------------------------------------------


def _memory_saving_chunk(n, d, v, y, budget):
    """Largest power-of-two chunk whose compiled value_and_grad scratch fits ``budget``."""
    import jax
    import jax.numpy as jnp

    import jaxloss

    h = jax.ShapeDtypeStruct((n, d), jnp.float32)
    w = jax.ShapeDtypeStruct((d, v), jnp.float32)
    chunk = 1
    while chunk * 2 <= n:
        chunk *= 2
    while chunk > 1:
        f = lambda h, w, c=chunk: jaxloss.fused_linear_softmax_cross_entropy(h, w, y, chunk_size=c)
        _, _, temp = _compile(jax.value_and_grad(f, argnums=(0, 1)), (h, w))
        if temp <= budget:
            return chunk, temp
        chunk //= 2
    return 1, None


def bench_fused(n: int, d: int, v: int, repeats: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import optax

    import jaxloss
    from jaxloss import _large_vocab as lv

    key = jax.random.split(jax.random.key(0), 3)
    h = jax.random.normal(key[0], (n, d), jnp.float32)
    w = jax.random.normal(key[1], (d, v), jnp.float32) / jnp.sqrt(jnp.float32(d))
    y = jax.random.randint(key[2], (n,), 0, v)

    def naive(h, w):
        return optax.softmax_cross_entropy_with_integer_labels(h @ w, y).mean()

    def ours(chunk):
        return lambda h, w: jaxloss.fused_linear_softmax_cross_entropy(h, w, y, chunk_size=chunk)

    default_chunk = lv._default_chunk(n, v)
    recompute = lv._Opts(None, 0.0, 0.0, None, "mean", default_chunk, v, None, "recompute")

    def ours_recompute(h, w):  # (h, w, bias, labels, sample_weight, class weight, opts)
        return lv._fused(h, w, None, y, None, None, recompute)[0]

    peers: dict[str, dict[str, Any]] = {
        "naive (h @ W + optax)": {"fn": naive, "args": (h, w)},
        f"jaxloss (default chunk={default_chunk})": {"fn": ours(None), "args": (h, w)},
    }
    naive_temp = _compile(jax.value_and_grad(naive, argnums=(0, 1)), (h, w))[2]
    budget = min(MEMORY_SAVING_BYTES, naive_temp // 10)
    saving_chunk, _ = _memory_saving_chunk(n, d, v, y, budget)
    peers[f"jaxloss (memory-saving chunk={saving_chunk})"] = {
        "fn": ours(saving_chunk),
        "args": (h, w),
    }
    peers[f"jaxloss recompute alternative (chunk={default_chunk})"] = {
        "fn": ours_recompute,
        "args": (h, w),
    }
    try:
        import jax_cce

        wt = jnp.asarray(w.T)  # jax-cce takes the [V, D] layout
        peers["jax-cce 0.1.0 (chunk=4096)"] = {
            "fn": lambda h, wt: jax_cce.linear_cross_entropy(h, wt, y),
            "args": (h, wt),
        }
        cce_note = ""
    except ImportError:
        cce_note = "jax-cce not installed (pip install jax-cce): not measured"

    for name, p in peers.items():
        p["compiled"], p["compile_s"], p["temp_bytes"] = _compile(
            jax.value_and_grad(p["fn"], argnums=(0, 1)), p["args"]
        )
        print(f"  compiled {name}: {p['compile_s']:.2f} s, scratch {_fmt_bytes(p['temp_bytes'])}",
              flush=True)  # fmt: skip
    # Same answers before timing anything.
    ref = peers["naive (h @ W + optax)"]["compiled"](h, w)
    for name, p in peers.items():
        out = p["compiled"](*p["args"])
        err = abs(float(out[0]) - float(ref[0])) / abs(float(ref[0]))
        p["rel_error_loss"] = err
        assert err < 1e-4, (name, err)
    _interleaved(peers, repeats)
    base = peers["naive (h @ W + optax)"]
    rows = []
    for name, p in peers.items():
        rows.append(
            {
                "peer": name,
                "median_s": p["median_s"],
                "min_s": p["min_s"],
                "max_s": p["max_s"],
                "times_s": p["times"],
                "time_ratio": p["median_s"] / base["median_s"],
                "compile_s": p["compile_s"],
                "temp_bytes": p["temp_bytes"],
                "temp_ratio": p["temp_bytes"] / base["temp_bytes"],
                "rel_error_loss": p["rel_error_loss"],
            }
        )
        print(f"  {name:48s} {_fmt_s(p['median_s']):>10s} x{rows[-1]['time_ratio']:.3f} "
              f"scratch {_fmt_bytes(p['temp_bytes'])}", flush=True)  # fmt: skip
    return {
        "shape": {"N": n, "D": d, "V": v},
        "logits_bytes": n * v * 4,
        "default_chunk": default_chunk,
        "memory_saving_chunk": saving_chunk,
        "memory_saving_budget": budget,
        "peers": rows,
        "note": cce_note,
    }


# --------------------------------------------------------------------------
# Vocabulary-parallel CE (child process with 4 host devices)
# --------------------------------------------------------------------------


def _vp_child(quick: bool, repeats: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxloss

    assert jax.device_count() == VP_DEVICES, jax.devices()
    n, v = (256, 2048) if quick else (4096, 32768)
    key = jax.random.split(jax.random.key(1), 2)
    x = jax.random.normal(key[0], (n, v), jnp.float32)
    y = jax.random.randint(key[1], (n,), 0, v)

    mesh = jax.make_mesh((VP_DEVICES,), ("v",))  # Explicit axes (the default)
    xs = jax.device_put(x, NamedSharding(mesh, P(None, "v")))
    ys = jax.device_put(y, NamedSharding(mesh, P()))

    def local(x, y):
        return jaxloss.vocab_parallel_softmax_cross_entropy(x, y, axis_name="v", reduction="mean")

    ours = jax.value_and_grad(
        jax.shard_map(local, mesh=mesh, in_specs=(P(None, "v"), P()), out_specs=P())
    )

    # GSPMD: the same sharded logits, optax's loss, the partitioner decides.
    auto = jax.make_mesh((VP_DEVICES,), ("v",), axis_types=(AxisType.Auto,))
    xa = jax.device_put(x, NamedSharding(auto, P(None, "v")))
    ya = jax.device_put(y, NamedSharding(auto, P()))

    def gspmd_loss(x, y):
        return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()

    gspmd = jax.value_and_grad(gspmd_loss)
    peers = {
        "jaxloss vocab_parallel (shard_map)": {"fn": ours, "args": (xs, ys)},
        "GSPMD + optax": {"fn": gspmd, "args": (xa, ya)},
    }
    for p in peers.values():
        p["compiled"], p["compile_s"], p["temp_bytes"] = _compile(p["fn"], p["args"])
        p["collectives"] = collectives(p["compiled"].as_text())
    fwd = (
        jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(None, "v"), P()), out_specs=P()))
        .lower(xs, ys)
        .compile()
    )
    a = peers["jaxloss vocab_parallel (shard_map)"]["compiled"](xs, ys)
    b = peers["GSPMD + optax"]["compiled"](xa, ya)
    loss_err = abs(float(a[0]) - float(b[0]))
    grad_err = float(np.max(np.abs(np.asarray(a[1]) - np.asarray(b[1]))))
    _interleaved(peers, repeats)
    base = peers["GSPMD + optax"]["median_s"]
    rows = [
        {
            "peer": name,
            "median_s": p["median_s"],
            "min_s": p["min_s"],
            "max_s": p["max_s"],
            "times_s": p["times"],
            "time_ratio": p["median_s"] / base,
            "compile_s": p["compile_s"],
            "temp_bytes_per_device": p["temp_bytes"],
            "collectives": p["collectives"],
        }
        for name, p in peers.items()
    ]
    return {
        "shape": {"N": n, "V": v, "devices": VP_DEVICES},
        "peers": rows,
        "forward_collectives": collectives(fwd.as_text()),
        "max_abs_diff": {"loss": loss_err, "grad": grad_err},
    }


def bench_vocab_parallel(quick: bool, repeats: int) -> dict[str, Any]:
    env = dict(os.environ)
    flag = f"--xla_force_host_platform_device_count={VP_DEVICES}"
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
    cmd = [sys.executable, "-m", "benchmarks.large_vocab", "--vp-child", "--repeats",
           str(repeats), *(["--quick"] if quick else [])]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"vocab-parallel child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


# --------------------------------------------------------------------------
# Targets and report
# --------------------------------------------------------------------------


def _targets(fused: list[dict[str, Any]], vp: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for case in fused:
        s = case["shape"]
        shape = f"N={s['N']}, D={s['D']}, V={s['V']}"
        default = next(r for r in case["peers"] if "default chunk" in r["peer"])
        saving = next(r for r in case["peers"] if "memory-saving" in r["peer"])
        out.append({"name": f"fused default chunk, time ({shape})", "criterion": "<= 0.9x naive",
                    "figure": f"{default['time_ratio']:.3f}x",
                    "met": default["time_ratio"] <= 0.9})  # fmt: skip
        out.append({"name": f"fused default chunk, scratch ({shape})",
                    "criterion": "<= 0.25x naive",
                    "figure": f"{default['temp_ratio']:.3f}x ({_fmt_bytes(default['temp_bytes'])})",
                    "met": default["temp_ratio"] <= 0.25})  # fmt: skip
        ok = saving["temp_bytes"] <= MEMORY_SAVING_BYTES and saving["time_ratio"] <= 1.05
        out.append({"name": f"fused memory-saving chunk={case['memory_saving_chunk']} ({shape})",
                    "criterion": "<= 100 MiB scratch at <= 1.05x naive time",
                    "figure": f"{_fmt_bytes(saving['temp_bytes'])}, {saving['time_ratio']:.3f}x",
                    "met": ok})  # fmt: skip
    if vp:
        ours = vp["peers"][0]
        ops = ours["collectives"]
        n = vp["shape"]["N"]
        small = all(
            max(int(x) for x in re.findall(r"\d+", shape.split("{")[0]) or ["0"])
            <= max(n, VP_DEVICES * 8)
            for _, shape in ops
        )
        out.append({"name": "vocab-parallel CE collectives (forward + backward)",
                    "criterion": "at most 2, each O(N)",
                    "figure": ", ".join(f"{op} {shape.split('{')[0]}" for op, shape in ops)
                    or "none", "met": len(ops) <= 2 and small})  # fmt: skip
        out.append({"name": f"vocab-parallel CE time, {VP_DEVICES} devices",
                    "criterion": "<= 1.0x GSPMD + optax",
                    "figure": f"{ours['time_ratio']:.3f}x",
                    "met": ours["time_ratio"] <= 1.0})  # fmt: skip
    return out


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Large-vocabulary cross-entropy on CPU (float32)",
        "",
        f"Machine: {results['machine']}. Run: `{results['command']}` at {results['finished_at']}; "
        f"{results['repeats']} interleaved repeats after one warm-up call, median "
        "[min-max]; compile time apart; scratch = `compiled.memory_analysis()."
        "temp_size_in_bytes`. Load average during the run: "
        f"{results['load_average']} (other processes shared the 2 cores; the spread shows "
        "the noise).",
        "",
        "## Targets",
        "",
        "| target | criterion | figure | verdict |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        lines.append(f"| {t['name']} | {t['criterion']} | {t['figure']} | "
                     f"{'met' if t['met'] else 'not met'} |")  # fmt: skip
    for case in results["fused"]:
        s = case["shape"]
        lines += [
            "",
            f"## value_and_grad w.r.t. hidden and kernel, N={s['N']}, D={s['D']}, V={s['V']}",
            "",
            f"Full logits: {_fmt_bytes(case['logits_bytes'])}. Memory-saving chunk: the largest "
            f"power of two with at most {_fmt_bytes(case['memory_saving_budget'])} of scratch.",
            "",
            "| peer | time (median [min-max]) | vs naive | compile | scratch | vs naive |",
            "|---|---|---|---|---|---|",
        ]
        for r in case["peers"]:
            lines.append(
                f"| {r['peer']} | {_fmt_s(r['median_s'])} [{_fmt_s(r['min_s'])}-"
                f"{_fmt_s(r['max_s'])}] | {r['time_ratio']:.3f}x | {r['compile_s']:.2f} s | "
                f"{_fmt_bytes(r['temp_bytes'])} | {r['temp_ratio']:.3f}x |"
            )
        if case.get("note"):
            lines += ["", case["note"]]
    vp = results.get("vocab_parallel")
    if vp:
        s = vp["shape"]
        lines += [
            "",
            f"## Vocabulary-parallel CE, value_and_grad, N={s['N']}, V={s['V']} over "
            f"{s['devices']} simulated CPU devices",
            "",
            "| peer | time (median [min-max]) | vs GSPMD | compile | scratch per device | "
            "collectives (forward + backward) |",
            "|---|---|---|---|---|---|",
        ]
        for r in vp["peers"]:
            ops = "; ".join(f"{op} {shape.split('{')[0]}" for op, shape in r["collectives"])
            lines.append(
                f"| {r['peer']} | {_fmt_s(r['median_s'])} [{_fmt_s(r['min_s'])}-"
                f"{_fmt_s(r['max_s'])}] | {r['time_ratio']:.3f}x | {r['compile_s']:.2f} s | "
                f"{_fmt_bytes(r['temp_bytes_per_device'])} | {len(r['collectives'])}: {ops} |"
            )
        fwd = "; ".join(f"{op} {shape.split('{')[0]}" for op, shape in vp["forward_collectives"])
        lines += [
            "",
            f"Forward alone (ours): {len(vp['forward_collectives'])} collective(s): {fwd}. "
            f"Largest difference to GSPMD + optax: loss {vp['max_abs_diff']['loss']:.2e}, "
            f"gradient {vp['max_abs_diff']['grad']:.2e}.",
        ]
    lines += [
        "",
        "Notes: `naive` is `optax.softmax_cross_entropy_with_integer_labels(h @ W, y).mean()`. "
        "`recompute alternative` keeps only the per-row logsumexp in the forward pass and "
        "recomputes each chunk's logits in the backward pass (four N·D·V matmuls instead of "
        "three); the default rule forms the gradients while each chunk's logits are in "
        "memory. jax-cce chunks the vocabulary and recomputes in its backward pass.",
        "",
    ]
    return "\n".join(lines)


def run_record(module: str, quick: bool, repeats: int, t0: float) -> dict[str, Any]:
    """What every report states about its run: machine, command, load, time."""
    import platform

    import jax

    return {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}",
        "command": f"python -m {module}" + (" --quick" if quick else ""),
        "quick": quick,
        "repeats": repeats,
        "load_average": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "wall_s": time.perf_counter() - t0,
    }


def main(quick: bool = False, repeats: int | None = None, write: bool | None = None):
    import jax

    repeats = repeats or 3
    write = (not quick) if write is None else write
    t0 = time.perf_counter()
    fused = []
    for n, d, v in _shapes(quick):
        print(f"fused linear CE N={n} D={d} V={v}", flush=True)
        fused.append(bench_fused(n, d, v, repeats))
        jax.clear_caches()
    print(f"vocab-parallel CE on {VP_DEVICES} devices", flush=True)
    vp = bench_vocab_parallel(quick, repeats)
    results = run_record("benchmarks.large_vocab", quick, repeats, t0)
    results |= {"fused": fused, "vocab_parallel": vp}
    results["targets"] = _targets(fused, vp)
    for t in results["targets"]:
        print(f"{'met' if t['met'] else 'NOT MET':8s} {t['name']}: {t['figure']} "
              f"({t['criterion']})")  # fmt: skip
    if write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "large_vocab_cpu.md").write_text(render(results))
        (RESULTS / "large_vocab_cpu.json").write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {RESULTS / 'large_vocab_cpu.md'}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_vocab")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--vp-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help="write the report in quick mode")
    args = parser.parse_args()
    if args.vp_child:
        print(json.dumps(_vp_child(args.quick, args.repeats or 3)))
    else:
        main(args.quick, args.repeats, write=True if args.write else None)

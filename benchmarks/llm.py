"""The LLM loss family on CPU (float32): each fused function against its naive
materialised version, cross-entropy also against PyTorch 2.13's
``F.linear_cross_entropy``, with the matmul floor measured in the same run.

For each shape ``(N, D, V)``: ``value_and_grad`` with respect to ``hidden`` and
``kernel`` of

* cross-entropy (mean): ``jaxloss.fused_linear_softmax_cross_entropy``, the
  naive ``hidden @ kernel`` + ``optax.softmax_cross_entropy_with_integer_labels``,
  and ``torch.nn.functional.linear_cross_entropy`` (forward + backward, 2 threads);
* per-token log-probabilities and entropy (``sum(log p) + sum(H)``):
  ``jaxloss.fused_linear_log_probs(return_entropy=True)`` and the materialised
  ``log_softmax``;
* distillation (generalised JSD, ``beta=0.5``, a teacher of the same shape):
  ``jaxloss.fused_linear_distillation_loss`` and
  ``jaxloss.jensen_shannon_divergence`` on the materialised log-softmaxes.

The floor is the time of one jitted ``hidden @ kernel`` (``[N, D] x [D, V]``)
times three (the matmuls any ``value_and_grad`` of these losses needs:
logits, ``d hidden``, ``d kernel``); distillation adds the teacher's logits (four).
Timings are interleaved repeats in one process (median [min-max]); scratch is
``compiled.memory_analysis().temp_size_in_bytes``.

    python -m benchmarks.llm            # full shapes (minutes, ~10 GiB)
    python -m benchmarks.llm --quick    # tiny shapes (seconds), prints only
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from benchmarks.large_vocab import (
    RESULTS,
    _compile,
    _fmt_bytes,
    _fmt_s,
    _interleaved,
    _median,
    run_record,
)


def _shapes(quick: bool) -> list[tuple[int, int, int]]:
    if quick:
        return [(128, 32, 1024)]
    return [(4096, 512, 32768), (2048, 1024, 131072)]


def _peers(n, d, v, rng) -> dict[str, dict[str, dict[str, Any]]]:
    """{loss: {peer: {"fn", "args"}}} for one shape (JAX peers)."""
    import jax
    import jax.numpy as jnp
    import optax

    import jaxloss

    h = jnp.asarray(rng.standard_normal((n, d)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((d, v)) / np.sqrt(d), jnp.float32)
    ht = jnp.asarray(rng.standard_normal((n, d)), jnp.float32)
    wt = jnp.asarray(rng.standard_normal((d, v)) / np.sqrt(d), jnp.float32)
    y = jnp.asarray(rng.integers(0, v, n), jnp.int32)

    def vag(f):
        return jax.value_and_grad(f, argnums=(0, 1))

    def naive_ce(h, w):
        return optax.softmax_cross_entropy_with_integer_labels(h @ w, y).mean()

    def fused_lp(h, w):
        lp, ent = jaxloss.fused_linear_log_probs(h, w, y, return_entropy=True)
        return jnp.sum(lp) + jnp.sum(ent)

    def naive_lp(h, w):
        lp = jax.nn.log_softmax(h @ w)
        return jnp.sum(jnp.take_along_axis(lp, y[:, None], 1)) - jnp.sum(jnp.exp(lp) * lp)

    def fused_kd(h, w):
        return jaxloss.fused_linear_distillation_loss(h, w, ht, wt, divergence="jsd")

    def naive_kd(h, w):
        ls, lt = jax.nn.log_softmax(h @ w), jax.nn.log_softmax(jax.lax.stop_gradient(ht @ wt))
        return jaxloss.jensen_shannon_divergence(ls, lt, beta=0.5, reduction="mean")

    def peer(f):
        return {"fn": vag(f), "args": (h, w)}

    return {
        "cross-entropy": {
            "jaxloss": peer(lambda h, w: jaxloss.fused_linear_softmax_cross_entropy(h, w, y)),
            "naive": peer(naive_ce),
            "floor": {"fn": lambda h, w: h @ w, "args": (h, w)},
        },
        "log-probs + entropy": {"jaxloss": peer(fused_lp), "naive": peer(naive_lp)},
        "distillation (jsd)": {"jaxloss": peer(fused_kd), "naive": peer(naive_kd)},
    }, (np.asarray(h), np.asarray(w), np.asarray(y))


def _torch_times(h, w, y, repeats: int) -> dict[str, Any]:
    """F.linear_cross_entropy forward + backward (mean), median of ``repeats``."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(os.cpu_count() or 1)
    ht = torch.tensor(h, requires_grad=True)
    wt = torch.tensor(w.T.copy(), requires_grad=True)  # torch's Linear layout [V, D]
    yt = torch.tensor(y, dtype=torch.int64)

    def step():
        ht.grad = wt.grad = None
        F.linear_cross_entropy(ht, wt, yt).backward()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"median_s": _median(times), "min_s": min(times), "max_s": max(times)}


def bench_shape(n: int, d: int, v: int, repeats: int) -> dict[str, Any]:
    import jax

    rng = np.random.default_rng(0)
    losses, host = _peers(n, d, v, rng)
    out: dict[str, Any] = {"shape": [n, d, v], "losses": {}}
    for loss, peers in losses.items():
        for p in peers.values():
            p["compiled"], p["compile_s"], p["scratch"] = _compile(p["fn"], p["args"])
        _interleaved(peers, repeats)
        out["losses"][loss] = {
            name: {k: p[k] for k in ("median_s", "min_s", "max_s", "compile_s", "scratch")}
            for name, p in peers.items()
        }
        del peers
        jax.clear_caches()
    out["losses"]["cross-entropy"]["torch F.linear_cross_entropy"] = _torch_times(*host, repeats)
    return out


def _summary(shape: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (loss, peer): time vs naive, floor fraction, scratch vs naive."""
    ce = shape["losses"]["cross-entropy"]
    matmul = ce["floor"]["median_s"]
    rows = []
    for loss, peers in shape["losses"].items():
        floor = matmul * (4 if loss.startswith("distillation") else 3)
        naive = peers["naive"]
        for name, p in peers.items():
            if name == "floor":
                continue
            row = {"loss": loss, "peer": name, "median_s": p["median_s"]}
            row["range"] = (p["min_s"], p["max_s"])
            row["vs_naive"] = p["median_s"] / naive["median_s"]
            row["floor_fraction"] = floor / p["median_s"]
            row["scratch"] = p.get("scratch")
            if row["scratch"] is not None:
                row["scratch_vs_naive"] = row["scratch"] / naive["scratch"]
            if name == "jaxloss" and loss == "cross-entropy":
                torch = peers["torch F.linear_cross_entropy"]["median_s"]
                row["vs_torch"] = p["median_s"] / torch
            rows.append(row)
    return rows


def render(results: dict[str, Any]) -> str:
    lines = [
        "# The LLM loss family on CPU (float32)",
        "",
        f"Machine: {results['machine']}. Run: `{results['command']}` at "
        f"{results['finished_at']}; {results['repeats']} interleaved repeats after one "
        "warm-up call, median [min-max]; compile time apart; scratch = "
        "`compiled.memory_analysis().temp_size_in_bytes` (PyTorch: not measured). "
        f"Load average at the end: {results['load_average']}. Floor = one jitted "
        "`hidden @ kernel` measured in the same run, times 3 (times 4 for "
        "distillation: the teacher's logits); `floor %` = floor / time.",
        "",
    ]
    for shape in results["shapes"]:
        n, d, v = shape["shape"]
        matmul = shape["losses"]["cross-entropy"]["floor"]["median_s"]
        lines += [
            f"## value_and_grad w.r.t. hidden and kernel, N={n}, D={d}, V={v}",
            "",
            f"One `hidden @ kernel`: {_fmt_s(matmul)}; full logits {_fmt_bytes(n * v * 4)}.",
            "",
            "| loss | peer | time (median [min-max]) | vs naive | floor % | scratch | vs naive |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in _summary(shape):
            lo, hi = r["range"]
            extra = f" ({r['vs_torch']:.3f}x torch)" if "vs_torch" in r else ""
            scratch = _fmt_bytes(r["scratch"])
            ratio = f"{r['scratch_vs_naive']:.3f}x" if "scratch_vs_naive" in r else "-"
            lines.append(
                f"| {r['loss']} | {r['peer']} | {_fmt_s(r['median_s'])} [{_fmt_s(lo)}-"
                f"{_fmt_s(hi)}] | {r['vs_naive']:.3f}x{extra} | {100 * r['floor_fraction']:.0f}% "
                f"| {scratch} | {ratio} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    repeats = repeats or 3
    t0 = time.perf_counter()
    shapes = []
    for n, d, v in _shapes(quick):
        print(f"LLM losses N={n} D={d} V={v}", flush=True)
        shapes.append(bench_shape(n, d, v, repeats))
    results = run_record("benchmarks.llm", quick, repeats, t0) | {"shapes": shapes}
    report = render(results)
    print(report)
    if not quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "llm_cpu.md").write_text(report)
        (RESULTS / "llm_cpu.json").write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {RESULTS / 'llm_cpu.md'}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.llm")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    main(args.quick, args.repeats)

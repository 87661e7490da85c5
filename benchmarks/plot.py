"""PNG plots of a results JSON: per-case time relative to the reference peer,
and the vocabulary-scaling curves (time and scratch against V).

``python -m benchmarks.plot benchmarks/results/cpu.json`` redraws them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from benchmarks._harness import fmt_bytes

DPI = 90
PEER_ORDER = ("jaxloss", "optax", "optax (composed)", "naive", "torch")
COLORS = {
    "jaxloss": "#1f77b4",
    "optax": "#ff7f0e",
    "optax (composed)": "#d62728",
    "naive": "#7f7f7f",
    "torch": "#2ca02c",
    "floor_exp": "#9467bd",
    "floor_write": "#8c564b",
}


def title(results: dict[str, Any], text: str) -> str:
    """A figure title; a ``--quick`` run's says it is a smoke run, not a measurement."""
    if results.get("quick"):
        return f"SMOKE RUN (--quick, tiny shapes): not a measurement\n{text}"
    return text


def plot_cases(results: dict[str, Any], path: Path) -> Path | None:
    """Horizontal bars: each peer's value_and_grad median divided by the case's
    reference peer (1.0 = as fast as the reference; lower is faster)."""
    cases = [(n, c) for n, c in results.get("cases", {}).items() if c.get("status") == "ok"]
    if not cases:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.75 * len(cases) + 1.0))
    height = 0.8 / len(PEER_ORDER)
    labels = []
    for i, (name, case) in enumerate(cases):
        ref = case["peers"].get(case["reference"], {})
        ref_t = ref.get("vag", {}).get("median_s") if ref.get("status") == "ok" else None
        labels.append(f"{name}\n(÷ {case['reference']})" if ref_t else name)
        for j, peer in enumerate(PEER_ORDER):
            p = case["peers"].get(peer)
            if not p or p.get("status") != "ok" or not ref_t:
                continue
            r = p["vag"]["median_s"] / ref_t
            y = i + (j - (len(PEER_ORDER) - 1) / 2) * height
            ax.barh(y, r, height=height, left=0.0, color=COLORS[peer])
            ax.text(r, y, f" {r:.2f}", va="center", fontsize=6)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(range(len(cases)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("value_and_grad time ÷ reference peer (median, log scale; lower is faster)",
                  fontsize=8)  # fmt: skip
    fig.suptitle(title(results, f"Loss benchmarks on {results['device']['name']}"), fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[p]) for p in PEER_ORDER]
    ax.legend(handles, PEER_ORDER, fontsize=7, ncol=len(PEER_ORDER), loc="lower center",
              bbox_to_anchor=(0.5, 1.0), frameon=False)  # fmt: skip
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_scaling(results: dict[str, Any], path: Path) -> Path | None:
    """Time and scratch of value_and_grad against V at fixed N (log-log)."""
    s = results.get("scaling")
    if not s or s.get("status") != "ok":
        return None
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(8.5, 3.2))
    floor = 1024  # bytes; scratch of 0 is drawn at 1 KiB on the log axis
    sweeps = s.get("sweeps") or [s]
    styles = ["-", ":"]
    for k, sweep in enumerate(sweeps):
        vocab, ls = sweep["V"], styles[k % len(styles)]
        for name, series in sweep["peers"].items():
            med = [t["median_s"] * 1e3 for t in series["vag"]]
            lo = [m - t["min_s"] * 1e3 for m, t in zip(med, series["vag"], strict=True)]
            hi = [t["max_s"] * 1e3 - m for m, t in zip(med, series["vag"], strict=True)]
            color = COLORS.get(name, "gray")
            label = f"{name}, N={sweep['N']}"
            ax_t.errorbar(vocab, med, yerr=[lo, hi], marker="o", ms=3, capsize=2, label=label,
                          c=color, ls=ls, lw=0.8 if name.startswith("floor") else 1.5)  # fmt: skip
            if series["vag_scratch_bytes"][0] is not None:
                scratch = [max(b or 0, floor) for b in series["vag_scratch_bytes"]]
                ax_m.plot(vocab, scratch, marker="o", ms=3, label=label, c=color, ls=ls)
    for ax in (ax_t, ax_m):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("vocabulary size V", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
        ax.grid(True, which="major", lw=0.3)
    ax_t.set_ylabel("value_and_grad time (ms, median, min-max)", fontsize=8)
    ax_m.set_ylabel("scratch (memory_analysis temp; floor 1 KiB)", fontsize=8)
    top = max(max(b or 0, floor) for sweep in sweeps for series in sweep["peers"].values()
              for b in series["vag_scratch_bytes"])  # fmt: skip
    ax_m.set_ylim(floor / 2, max(4 * top, 2**20))
    ax_m.yaxis.set_major_locator(LogLocator(base=4))
    ax_m.yaxis.set_major_formatter(FuncFormatter(lambda b, _: fmt_bytes(int(b))))
    ax_m.yaxis.set_minor_formatter(NullFormatter())
    name = results["device"]["name"]
    fig.suptitle(title(results, f"Softmax CE, integer labels, f32, on {name}"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_all(results: dict[str, Any], out: Path, stem: str) -> list[Path]:
    made = [
        plot_cases(results, out / f"{stem}-cases.png"),
        plot_scaling(results, out / f"{stem}-scaling.png"),
    ]
    return [p for p in made if p is not None]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    for name in args:
        path = Path(name)
        results = json.loads(path.read_text())
        for made in plot_all(results, path.parent, path.stem):
            print(made)


if __name__ == "__main__":
    main()

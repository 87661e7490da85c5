"""``python -m benchmarks``: run the suite, write ``<out>/<device-kind>.{md,json}`` and plots.

    python -m benchmarks                    # full suite (big shapes; ~45 min on 2 CPU cores)
    python -m benchmarks --quick            # smoke run: tiny shapes, about a minute
    python -m benchmarks --cases ce_int_f32,scaling_vocab
    python -m benchmarks --out /tmp/bench

With ``--cases``, results of cases not run this time are kept from the
existing ``<out>/<device-kind>.json`` when it came from the same mode (quick or
full); each case records when it ran.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# PyTorch's OpenMP threads spin while they wait; on a machine shared with other
# processes that turns a 0.1 ms call into tens of ms. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EXTRAS = ("catalogue", "large_vocab")
EXTRA_TARGETS = {
    "large_vocab": [
        ("fused linear CE", "<= 0.9x naive time, <= 0.25x naive scratch, <= 0.7x jax-cce"),
        ("vocab-parallel CE", "<= 1.0x GSPMD+optax, at most 2 collectives"),
    ]
}
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results"
EXTRA_TIMEOUT_S = {True: 300, False: 3600}
# The benchmarks' optional dependencies (the "benchmarks" extra): import name -> pip name.
DEPENDENCIES = {"torch": "torch", "optax": "optax", "matplotlib": "matplotlib"}
SMOKE = "smoke run (--quick, tiny shapes): not a measurement"


def missing_dependencies() -> list[str]:
    """The optional dependencies that do not import, by their pip names."""
    missing = []
    for module, package in DEPENDENCIES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from benchmarks.cases import CORE_CASE_NAMES, SCALING

    known = (*CORE_CASE_NAMES, SCALING, *EXTRAS)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny shapes, about a minute; its report says it is not a measurement",
    )
    parser.add_argument(
        "--cases",
        default=None,
        help=f"comma-separated subset of: {', '.join(known)} (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default benchmarks/results; benchmarks/results/quick with --quick)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per peer (>= 5)")
    parser.add_argument(
        "--render",
        action="store_true",
        help="run nothing: rewrite the report and plots from <out>/<device-kind>.json",
    )
    args = parser.parse_args(argv)
    if args.cases:
        chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in known]
        if unknown:
            parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        args.selected = chosen
    else:
        args.selected = list(known)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    if args.out is None:
        args.out = DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT
    return args  # fmt: skip


# --------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment(threads: int) -> dict[str, Any]:
    import jax
    import optax
    import torch

    from benchmarks import _harness as h

    dev = jax.devices()[0]
    kind = h.device_kind()
    name = f"{_cpu_model()}, {threads} threads" if dev.platform == "cpu" else dev.device_kind
    return {
        "kind": kind,
        "device_kind": dev.device_kind,
        "platform": dev.platform,
        "name": name,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": importlib.import_module("jaxlib").__version__,
            "optax": optax.__version__,
            "torch": torch.__version__,
            "numpy": importlib.import_module("numpy").__version__,
        },
    }


# --------------------------------------------------------------------------
# Optional self-contained scripts
# --------------------------------------------------------------------------


def run_extra(name: str, quick: bool, out: Path) -> dict[str, Any]:
    """Calls ``benchmarks.<name>.main`` in a child interpreter (see ``_extra``); never raises."""
    module_name = f"benchmarks.{name}"
    if importlib.util.find_spec(module_name) is None:
        return {"status": "skipped", "reason": "not run: module missing"}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks._extra", name, "--json", str(json_path),
               "--out", str(out / name), *(["--quick"] if quick else [])]  # fmt: skip
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                  timeout=EXTRA_TIMEOUT_S[quick])  # fmt: skip
            output = proc.stdout + proc.stderr
            if json_path.exists():
                result = json.loads(json_path.read_text())
            else:
                result = {"status": "failed", "reason": f"exited with {proc.returncode}"}
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode(errors="replace") if exc.stdout else ""
            result = {"status": "failed", "reason": f"timed out after {exc.timeout} s"}
    if result.get("status") != "skipped":
        sys.stdout.write(output[-2000:])
    result.update(
        stdout_tail=output[-20000:],
        wall_s=time.perf_counter() - t0,
        run_at=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    return result


def _target_row(
    name: str, case: str, criterion: str, figure: str, met: bool | None, why: str = "not run"
) -> dict[str, Any]:
    verdict = "met" if met else ("not met" if met is not None else why)
    return {"name": name, "case": case, "criterion": criterion, "figure": figure, "met": met,
            "verdict": verdict}  # fmt: skip


def _cce_targets(returned: dict[str, Any]) -> list[dict[str, Any]]:
    """``<= 0.7x jax-cce`` for the fused loss, from the script's own timings of the
    default-chunk fused loss and of jax-cce, where it reports no such target."""
    reported = " ".join(str(t) for t in returned.get("targets", []))
    if "jax-cce" in reported:
        return []
    rows = []
    for case in returned.get("fused", []):
        peers = [p for p in case.get("peers", []) if isinstance(p, dict)]
        ours = next((p for p in peers if "default chunk" in str(p.get("peer"))), None)
        cce = next((p for p in peers if "jax-cce" in str(p.get("peer"))), None)
        s = case.get("shape", {})
        label = f"fused default chunk vs jax-cce (N={s.get('N')}, D={s.get('D')}, V={s.get('V')})"
        if ours and cce and ours.get("median_s") and cce.get("median_s"):
            r = ours["median_s"] / cce["median_s"]
            rows.append(_target_row(label, "large_vocab", "<= 0.7x jax-cce", f"{r:.3f}x",
                                    r <= 0.7))  # fmt: skip
        else:
            rows.append(_target_row(label, "large_vocab", "<= 0.7x jax-cce", "", None,
                                    "not run: jax-cce not measured"))  # fmt: skip
    return rows


def extra_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Targets reported by the optional scripts (a ``targets`` list in what ``main``
    returned), or the expected ones marked not run with the reason."""
    rows = []
    for name, expected in EXTRA_TARGETS.items():
        extra = results.get("extras", {}).get(name)
        returned = (extra or {}).get("returned")
        reported = returned.get("targets") if isinstance(returned, dict) else None
        if isinstance(reported, list) and reported:
            for t in reported:
                rows.append(_target_row(str(t.get("name", "?")), name,
                                        str(t.get("criterion", "")), str(t.get("figure", "")),
                                        t.get("met")))  # fmt: skip
            if name == "large_vocab":
                rows += _cce_targets(returned)
            continue
        if extra is None:
            why = "not run: not selected"
        elif extra["status"] == "skipped":
            why = extra["reason"]
        elif extra["status"] == "failed":
            why = f"not run: benchmarks/{name}.py failed"
        else:
            why = f"not run: benchmarks/{name}.py reported no targets"
        for target, criterion in expected:
            rows.append(_target_row(target, name, criterion, "", None, why))
    return rows


# --------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------


def _span(t: dict[str, float]) -> str:
    from benchmarks._harness import fmt_time

    return f"{fmt_time(t['median_s'])} [{fmt_time(t['min_s'])}–{fmt_time(t['max_s'])}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def headline_table(results: dict[str, Any]) -> list[str]:
    from benchmarks._harness import fmt_bytes, fmt_time

    rows = []
    for name, c in results.get("cases", {}).items():
        shape = "x".join(str(d) for d in c.get("shape", []))
        if c.get("status") != "ok":
            rows.append([name, f"{shape} {c.get('dtype', '')}", c.get("reason", c.get("status")),
                         "", "", "", "", "", "", ""])  # fmt: skip
            continue
        peers = c["peers"]
        ours = peers["jaxloss"]
        ref = peers.get(c["reference"], {})
        ref_ok = ref.get("status") == "ok"
        torch_p = peers.get("torch", {})
        t_ours = ours["vag"]["median_s"]
        t_ref = ref["vag"]["median_s"] if ref_ok else None
        t_torch = torch_p["vag"]["median_s"] if torch_p.get("status") == "ok" else None
        rows.append([
            name,
            f"{shape} {c['dtype']}",
            fmt_time(t_ours),
            f"{fmt_time(t_ref)} ({c['reference']})" if ref_ok else "n/a",
            _ratio(t_ours, t_ref),
            _ratio(t_ours, t_torch),
            fmt_bytes(ours["scratch_vag_bytes"]),
            fmt_bytes(ref.get("scratch_vag_bytes")) if ref_ok else "n/a",
            f"{ours['eff_GBps_vag']:.1f} GB/s ({100 * ours['bw_fraction_vag']:.0f}%)",
            _floor_figure(c),
        ])  # fmt: skip
    header = [
        "case",
        "shape",
        "jaxloss v&g",
        "reference v&g",
        "jaxloss ÷ ref",
        "jaxloss ÷ torch",
        "jaxloss scratch",
        "ref scratch",
        "jaxloss eff. BW (of stream)",
        "jaxloss ÷ (2 exp + write)",
    ]
    return _table(header, rows)  # fmt: skip


def _floor_figure(c: dict[str, Any]) -> str:
    """jaxloss's value_and_grad over the case's floors (two exp passes + one write)."""
    from benchmarks._harness import floor_ratio

    f = c.get("floors") or {}
    if not {"floor_exp", "floor_write"} <= set(f):
        return "n/a"
    t = c["peers"]["jaxloss"]["vag"]["median_s"]
    return f"{floor_ratio(t, f['floor_exp']['median_s'], f['floor_write']['median_s']):.2f}x"


def targets_table(targets: list[dict[str, Any]], smoke: bool = False) -> list[str]:
    """The targets and their verdicts; a smoke run's verdicts say they are not measurements."""
    mark = " (smoke run)" if smoke else ""
    rows = [
        [t["name"], t["criterion"], t["figure"] or "—", f"**{t['verdict']}**{mark}"]
        for t in targets
    ]
    return _table(["target (CPU, value_and_grad, median)", "criterion", "figure", "verdict"], rows)


def case_section(name: str, c: dict[str, Any]) -> list[str]:
    from benchmarks._harness import fmt_bytes, fmt_time

    shape = "x".join(str(d) for d in c.get("shape", []))
    lines = [f"### {name}: {c.get('title', '')} [{shape}] {c.get('dtype', '')}", ""]
    if c.get("options"):
        lines += [f"Options: {c['options']}.", ""]
    if c.get("status") != "ok" and "peers" not in c:
        return [*lines, f"{c.get('reason', c.get('status'))}", ""]
    lines += [f"Ran {c['run_at']}, {c['repeats']} interleaved repeats after {c['warmup']} "
              f"warm-up; bytes that must move: forward {fmt_bytes(c['bytes_fwd'])}, "
              f"value_and_grad {fmt_bytes(c['bytes_vag'])}.", ""]  # fmt: skip
    ours = c["peers"].get("jaxloss", {})
    rows = []
    for peer, p in c["peers"].items():
        if p.get("status") != "ok":
            rows.append([peer, f"failed: {p.get('error', '')}", "", "", "", "", "", ""])
            continue
        if p["framework"] == "jax":
            compile_s = f"{fmt_time(p['compile_fwd_s'])} / {fmt_time(p['compile_vag_s'])}"
            scratch = f"{fmt_bytes(p['scratch_fwd_bytes'])} / {fmt_bytes(p['scratch_vag_bytes'])}"
        else:
            compile_s, scratch = "n/a (eager)", "n/a"
        if ours.get("status") == "ok":
            vs = (f"{_ratio(ours['fwd']['median_s'], p['fwd']['median_s'])} / "
                  f"{_ratio(ours['vag']['median_s'], p['vag']['median_s'])}")  # fmt: skip
        else:
            vs = "n/a"
        rows.append([
            peer,
            _span(p["fwd"]),
            _span(p["vag"]),
            compile_s,
            scratch,
            f"{p['eff_GBps_vag']:.1f} GB/s ({100 * p['bw_fraction_vag']:.0f}%)",
            vs,
            f"{p['value']:.6g} ({p['loss_dtype']})",
        ])  # fmt: skip
    floors = c.get("floors") or {}
    if ours.get("status") == "ok" and {"floor_exp", "floor_write"} <= set(floors):
        from benchmarks._harness import floor_ratio

        e, w = floors["floor_exp"]["median_s"], floors["floor_write"]["median_s"]
        ratio = floor_ratio(ours["vag"]["median_s"], e, w)
        lines += [f"Floors, timed in the same rounds: one `sum(exp(x))` pass {fmt_time(e)}, "
                  f"one read-and-write pass {fmt_time(w)}; jaxloss's value_and_grad is "
                  f"{ratio:.2f}x two exp passes plus one write.", ""]  # fmt: skip
    header = [
        "peer",
        "forward",
        "value_and_grad",
        "compile fwd / v&g",
        "scratch fwd / v&g",
        "eff. BW v&g (of stream)",
        "jaxloss ÷ peer (fwd / v&g)",
        "loss (dtype)",
    ]
    return [*lines, *_table(header, rows), ""]  # fmt: skip


def _scaling_sweeps(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The sweeps of a scaling result (one per N); older files hold one, flat."""
    return s.get("sweeps") or [s]


def scaling_section(s: dict[str, Any], stem: str) -> list[str]:
    from benchmarks._harness import floor_ratio, fmt_bytes

    lines = [f"### {s.get('title', 'scaling')}", ""]
    if s.get("status") != "ok":
        return [*lines, s.get("reason", s.get("status", "")), ""]
    lines += [f"{s['repeats']} interleaved repeats per point; floors timed beside the peers: "
              "`exp` = one `sum(exp(x))` pass over the same array, `write` = one "
              "read-and-write pass (`x + 1` into a new buffer, as a gradient is written). "
              "Target: jaxloss at most 2x (two exp passes + one write).", "",
              f"![scaling]({stem}-scaling.png)", ""]  # fmt: skip
    for sweep in _scaling_sweeps(s):
        peers = sweep["peers"]
        names = [n for n in ("jaxloss", "optax") if n in peers]
        floors = "floor_exp" in peers
        header = ["N", "V"]
        for n in names:
            header += [f"{n} v&g", f"{n} scratch"]
        header.append("jaxloss ÷ optax")
        if floors:
            header += ["exp pass", "write pass", "jaxloss ÷ (2 exp + write)"]
        rows = []
        for i, v in enumerate(sweep["V"]):
            row = [str(sweep["N"]), str(v)]
            for n in names:
                row += [_span(peers[n]["vag"][i]), fmt_bytes(peers[n]["vag_scratch_bytes"][i])]
            med = {n: peers[n]["vag"][i]["median_s"] for n in peers}
            row.append(_ratio(med["jaxloss"], med["optax"]))
            if floors:
                ratio = floor_ratio(med["jaxloss"], med["floor_exp"], med["floor_write"])
                row += [_span(peers["floor_exp"]["vag"][i]), _span(peers["floor_write"]["vag"][i]),
                        f"{ratio:.2f}x"]  # fmt: skip
            rows.append(row)
        at = sweep.get("run_at", s.get("run_at", ""))
        lines += [f"N = {sweep['N']}, ran {at}.", "", *_table(header, rows), ""]
    return lines


def extra_section(name: str, e: dict[str, Any]) -> list[str]:
    lines = [f"### benchmarks/{name}.py", ""]
    if e.get("status") == "skipped":
        return [*lines, f"{e.get('reason', e.get('status'))}", ""]
    if e.get("status") != "ok":
        tail = e.get("stdout_tail", "").rstrip()[-1500:]
        return [*lines, f"failed: {e.get('reason', '')}", "", "```", tail, "```", ""]
    lines += [f"Called `{e['call']}` at {e['run_at']} ({e['wall_s']:.0f} s).", ""]
    returned = e.get("returned")
    markdown = e.get("markdown")
    if isinstance(returned, dict) and isinstance(returned.get("markdown"), str):
        markdown = returned["markdown"]
    if isinstance(markdown, str):
        return [*lines, *_demoted(markdown.rstrip().splitlines()), ""]
    rows = returned.get("rows") if isinstance(returned, dict) else returned
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        header = list(dict.fromkeys(k for r in rows for k in r))
        body = [[_cell(r.get(k, "")) for k in header] for r in rows]
        return [*lines, *_table(header, body), ""]
    if returned is not None:
        text = json.dumps(returned, indent=1)[:6000]
        return [*lines, "```json", text, "```", ""]
    printed = e.get("stdout_tail", "").rstrip()
    report = _printed_markdown(printed)
    if report:
        return [*lines, *report, ""]
    return [*lines, "```", printed or "(no output)", "```", ""]


def _printed_markdown(text: str) -> list[str]:
    """The markdown report a script printed (from its first heading on, headings
    moved under this section), or nothing when it printed no table."""
    rows = text.splitlines()
    start = next((i for i, r in enumerate(rows) if r.startswith("# ")), None)
    if start is None or not any(r.startswith("|---") for r in rows[start:]):
        return []
    return _demoted(rows[start:])


def _demoted(rows: list[str]) -> list[str]:
    """Markdown headings moved three levels down, under this report's sections."""
    return ["###" + r if r.startswith("#") else r for r in rows]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def render_markdown(results: dict[str, Any], out: Path, stem: str) -> str:
    d = results["device"]
    bw = results["stream_bandwidth"]
    smoke = bool(results["quick"])
    mode = SMOKE if smoke else "full"
    lines = [
        f"# jaxloss benchmarks: {d['name']}" + (f" — {SMOKE}" if smoke else ""),
        "",
    ]
    if smoke:
        lines += [
            "> **Smoke run.** `--quick` runs every case on tiny shapes to check that it "
            "works; the timings, ratios and verdicts below are not measurements. "
            "`python -m benchmarks` measures.",
            "",
        ]
    lines += [
        f"Device kind `{d['kind']}` ({d['platform']}, {d['device_count']} device(s)); "
        f"jax {d['versions']['jax']}, optax {d['versions']['optax']}, "
        f"torch {d['versions']['torch']} ({d['torch_threads']} threads, "
        f"OMP_WAIT_POLICY={d.get('omp_wait_policy')}). "
        f"Mode: {mode}. Command: `{results['command']}`; finished {results['finished_at']}.",
        "",
        f"Streaming bandwidth (jitted `a + 1` on {bw['buffer_bytes'] >> 20} MiB into the donated "
        f"buffer, 2 x size / median time): **{bw['GBps']:.1f} GB/s** (best {bw['GBps_best']:.1f}).",
        "",
        "## Headline: value_and_grad of the mean loss, median of interleaved repeats"
        + (" (smoke run)" if smoke else ""),
        "",
        *headline_table(results),
        "",
        "Ratios below 1 mean jaxloss is faster. Scratch is `compiled.memory_analysis()` temp "
        "bytes of the jitted value_and_grad. Effective bandwidth = bytes that must move / median "
        "time, as a share of the streaming bandwidth above.",
        "",
        "## Targets" + (f" — {SMOKE}" if smoke else ""),
        "",
        *targets_table(results["targets"], smoke),
        "",
    ]
    if (out / f"{stem}-cases.png").exists():
        lines += [f"![cases]({stem}-cases.png)", ""]
    lines += ["## Cases", ""]
    for name, c in results.get("cases", {}).items():
        lines += case_section(name, c)
    if "scaling" in results:
        lines += ["## Scaling", "", *scaling_section(results["scaling"], stem)]
    if results.get("extras"):
        lines += ["## Other benchmark scripts", ""]
        for name, e in results["extras"].items():
            lines += extra_section(name, e)
    lines += [
        "## Method",
        "",
        "- Peers run in one process on the same inputs. Each gets one warm-up call, then the "
        "timed repeats go round-robin over the peers (the starting peer rotates), forward first, "
        "then value_and_grad; we report the median and min–max.",
        "- JAX peers are compiled ahead of time (`jit(f).lower(...).compile()`): compile time is "
        "apart from run time, and scratch is the compiled executable's temp bytes.",
        "- `optax`: optax's function then `jnp.mean`; `optax (composed)`: `optax.smooth_labels` on "
        "a one-hot, `optax.softmax_cross_entropy`, the z-loss added, a masked mean for "
        "`ignore_index`; `naive`: `log_softmax` + gather (two `log_sigmoid`s for BCE) under "
        "`jax.value_and_grad`; `torch`: `torch.nn.functional` forward (under `no_grad`) and "
        "forward + `torch.autograd.grad`, eager, `torch.set_num_threads` = the CPUs JAX uses.",
        "- Bytes that must move: integer-label softmax losses read the logits once forward; "
        "value_and_grad reads them twice and writes the gradient (3·N·C·itemsize). Probability "
        "labels add two reads of the labels (5·N·C·4). Elementwise losses read logits and labels "
        "and write the gradient in one pass (3·N·C·4).",
        "- Other processes may share the machine; the min–max spread shows the noise.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _merge_previous(results: dict[str, Any], path: Path, selected: list[str]) -> None:
    """Keeps results of cases not selected this time from an earlier run in the same mode."""
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if (
        old.get("quick") != results["quick"]
        or old.get("device", {}).get("kind") != results["device"]["kind"]
    ):
        return
    for name, case in old.get("cases", {}).items():
        if name not in selected:
            results["cases"].setdefault(name, case)
    if "scaling" not in results and "scaling" in old:
        results["scaling"] = old["scaling"]
    for name, extra in old.get("extras", {}).items():
        results["extras"].setdefault(name, extra)


def _add_script_markdown(name: str, extra: dict[str, Any]) -> None:
    """The script's own ``render(results)`` markdown, for results stored without it."""
    try:
        render = getattr(importlib.import_module(f"benchmarks.{name}"), "render", None)
        if callable(render):
            extra["markdown"] = str(render(extra["returned"]))
    except Exception as exc:
        extra["markdown_error"] = f"{type(exc).__name__}: {exc}"


def write_report(results: dict[str, Any], out: Path, stem: str) -> list[Path]:
    """Targets, plots, ``<stem>.json`` and ``<stem>.md`` from a results dict."""
    from benchmarks import cases as cs
    from benchmarks import plot

    for name, extra in results.get("extras", {}).items():
        if isinstance(extra.get("returned"), dict) and "markdown" not in extra:
            _add_script_markdown(name, extra)
    results["targets"] = cs.evaluate_targets(results) + extra_targets(results)
    plots = plot.plot_all(results, out, stem)
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=1, default=repr) + "\n")
    md_path = out / f"{stem}.md"
    md_path.write_text(render_markdown(results, out, stem))
    return [md_path, json_path, *plots]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    missing = missing_dependencies()
    if missing:
        print(
            f"error: the benchmarks need {', '.join(missing)}, not installed; "
            f'install the benchmarks extra: pip install -e ".[benchmarks]"',
            file=sys.stderr,
        )
        raise SystemExit(1)
    args = _parse(argv)
    t_start = time.perf_counter()
    from benchmarks import _harness as h

    if args.render:
        stem = h.device_kind()
        results = json.loads((args.out / f"{stem}.json").read_text())
        for p in write_report(results, args.out, stem):
            print(f"wrote {p}")
        return results

    threads = h.cpu_threads()
    import torch

    torch.set_num_threads(threads)

    from benchmarks import cases as cs

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    env = _environment(threads)
    stem = env["kind"]
    print(f"# jaxloss benchmarks on {env['name']} — {SMOKE if args.quick else 'full run'} -> {out}")

    bw = h.stream_bandwidth(repeats=5 if args.quick else 10)
    print(f"stream bandwidth: {bw['GBps']:.1f} GB/s")
    warmup = 1
    command = ["python -m benchmarks", *(["--quick"] if args.quick else [])]
    command += [f"--cases {args.cases}"] if args.cases else []
    results: dict[str, Any] = {
        "device": env,
        "quick": args.quick,
        "command": " ".join(command),
        "stream_bandwidth": bw,
        "cases": {},
        "extras": {},
    }

    for case in cs.core_cases(args.quick):
        if case.name not in args.selected:
            continue
        t0 = time.perf_counter()
        r = cs.run_case(case, repeats=args.repeats, warmup=warmup, stream_gbps=bw["GBps"])
        results["cases"][case.name] = r
        summary = r.get("reason", "")
        if r["status"] == "ok":
            ours = r["peers"]["jaxloss"]["vag"]["median_s"]
            summary = ", ".join(
                f"{n} {h.fmt_time(p['vag']['median_s'])}" if p["status"] == "ok" else f"{n} failed"
                for n, p in r["peers"].items()
            )
            summary = f"v&g jaxloss {h.fmt_time(ours)} | {summary}"
        print(f"{case.name:18s} {r['status']:7s} {summary} ({time.perf_counter() - t0:.1f} s)")

    if cs.SCALING in args.selected:
        t0 = time.perf_counter()
        try:
            results["scaling"] = cs.run_scaling(args.quick, repeats=args.repeats, warmup=warmup)
        except Exception as exc:
            results["scaling"] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        print(f"{cs.SCALING:18s} {results['scaling']['status']} ({time.perf_counter() - t0:.1f} s)")

    for name in EXTRAS:
        if name in args.selected:
            print(f"--- benchmarks/{name}.py")
            results["extras"][name] = run_extra(name, args.quick, out)
            e = results["extras"][name]
            if e["status"] == "skipped":
                why = e.get("reason", "").removeprefix("not run: ")
                print(f"{name:18s} skipped{' (quick run)' if args.quick else ''}: {why}")
            else:
                print(f"{name:18s} {e['status']} {e.get('reason', '')}")

    if args.cases:
        _merge_previous(results, out / f"{stem}.json", args.selected)
    results["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results["wall_s"] = time.perf_counter() - t_start
    written = write_report(results, out, stem)
    print("\n".join(targets_table(results["targets"], args.quick)))
    for p in written:
        print(f"wrote {p}")
    print(f"total {results['wall_s']:.1f} s")
    return results


if __name__ == "__main__":
    main()

"""Smoke run of the benchmark suite: ``python -m benchmarks --quick`` writes its
report, JSON and plots with every core case, each marked as a smoke run. No
timing is asserted."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import child

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 1800  # seconds; the quick run takes about a minute on an idle 2-core machine

PEER_FIELDS = {
    "jax": ("fwd", "vag", "compile_fwd_s", "compile_vag_s", "scratch_fwd_bytes",
            "scratch_vag_bytes", "eff_GBps_vag", "bw_fraction_vag", "value", "loss_dtype"),
    "torch": ("fwd", "vag", "eff_GBps_vag", "bw_fraction_vag", "value", "loss_dtype"),
}  # fmt: skip
TIMING_FIELDS = ("median_s", "min_s", "max_s", "times_s")


def _import(name: str):
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT))


@pytest.fixture(scope="session")
def quick(tmp_path_factory):
    """The quick run: (completed process, results JSON, output folder)."""
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)]
    with child(cmd, env, cwd=ROOT) as proc:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    assert done.returncode == 0, stdout[-3000:] + stderr[-3000:]
    (json_path,) = out.glob("*.json")
    return done, json.loads(json_path.read_text()), out


def test_quick_benchmarks_write_report(quick):
    _, results, out = quick
    CORE_CASE_NAMES = _import("benchmarks.cases").CORE_CASE_NAMES

    (json_path,) = out.glob("*.json")
    (md_path,) = out.glob("*.md")
    pngs = sorted(p.name for p in out.glob("*.png"))
    stem = json_path.stem
    assert md_path.stem == stem
    assert pngs == [f"{stem}-cases.png", f"{stem}-scaling.png"]
    assert all(p.stat().st_size > 0 for p in out.glob("*.png"))

    assert results["quick"] is True
    assert results["stream_bandwidth"]["GBps"] > 0
    assert set(CORE_CASE_NAMES) <= set(results["cases"])
    for name in CORE_CASE_NAMES:
        case = results["cases"][name]
        assert case["status"] in ("ok", "skipped"), (name, case.get("reason"))
        if case["status"] == "skipped":
            assert case["reason"].startswith("not run:")
            continue
        assert {"jaxloss", case["reference"], "naive", "torch"} <= set(case["peers"]), name
        for peer, p in case["peers"].items():
            assert p["status"] == "ok", (name, peer, p.get("error"))
            for field in PEER_FIELDS[p["framework"]]:
                assert field in p, (name, peer, field)
            for mode in ("fwd", "vag"):
                assert set(TIMING_FIELDS) <= set(p[mode])
                assert len(p[mode]["times_s"]) >= 5
        assert set(case["ratios"]["vag"]["jaxloss"]) == set(case["peers"])

    scaling = results["scaling"]
    assert scaling["status"] == "ok"
    for sweep in scaling["sweeps"]:
        assert {"jaxloss", "optax", "floor_exp", "floor_write"} <= set(sweep["peers"])
        for series in sweep["peers"].values():
            assert len(series["vag"]) == len(series["vag_scratch_bytes"]) == len(sweep["V"])

    # every benchmark script must run: the smoke run is what keeps them from rotting
    assert results["extras"]["large_vocab"]["status"] == "ok", results["extras"]["large_vocab"]
    assert results["extras"]["catalogue"]["status"] in ("ok", "skipped")  # no quick mode
    verdicts = {t["name"]: t["verdict"] for t in results["targets"]}
    assert len(verdicts) >= 6
    assert all(v.startswith(("met", "not met", "not run")) for v in verdicts.values())

    report = md_path.read_text()
    assert "## Targets" in report
    for name in CORE_CASE_NAMES:
        assert name in report


def test_quick_report_is_marked_as_a_smoke_run(quick):
    _, results, out = quick
    (md_path,) = out.glob("*.md")
    report = md_path.read_text().splitlines()
    assert report[0].startswith("# jaxloss benchmarks:") and "smoke run" in report[0]
    assert any(line.startswith("> **Smoke run.**") for line in report)
    start = next(i for i, line in enumerate(report) if line.startswith("## Targets"))
    assert "not a measurement" in report[start]
    rows = [line for line in report[start + 1 :] if line.startswith("| ")][1:]  # past the header
    rows = rows[: len(results["targets"])]
    assert len(rows) == len(results["targets"]) >= 6
    assert all(row.rstrip(" |").endswith("(smoke run)") for row in rows), rows


def test_quick_run_prints_skips_not_errors(quick):
    done, results, _ = quick
    lines = (done.stdout + done.stderr).splitlines()
    assert not [line for line in lines if line.lstrip().startswith("error:")]
    assert not [line for line in lines if "unrecognized arguments" in line]
    printed = done.stdout.splitlines()
    for name, extra in results["extras"].items():
        if extra["status"] == "skipped":
            line = f"{name:18s} skipped (quick run): {extra['reason'].removeprefix('not run: ')}"
            assert line in printed, (name, done.stdout[-3000:])


@pytest.mark.parametrize("smoke", [True, False])
def test_plot_titles_mark_a_smoke_run(quick, tmp_path, monkeypatch, smoke):
    import matplotlib.figure

    results = quick[1]
    plot = _import("benchmarks.plot")
    titles = []
    savefig = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        titles.append(fig.get_suptitle())
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    made = plot.plot_all({**results, "quick": smoke}, tmp_path, "cpu")
    assert len(made) == len(titles) == 2
    assert all(("SMOKE RUN" in t and "not a measurement" in t) == smoke for t in titles), titles


def test_missing_torch_names_the_extra(monkeypatch, tmp_path, capsys):
    # The module sets OMP_WAIT_POLICY when first imported; monkeypatch restores it.
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    bench_main = _import("benchmarks.__main__")
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now fails
    with pytest.raises(SystemExit) as exc:
        bench_main.main(["--quick", "--out", str(tmp_path / "out")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert "torch" in err and 'pip install -e ".[benchmarks]"' in err
    assert not (tmp_path / "out").exists()


def test_llm_family_benchmark_quick():
    """``python -m benchmarks.llm --quick``: every fused function and its naive
    version time, with scratch, and the fused ones hold less than the naive."""
    import jax

    llm = _import("benchmarks.llm")
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"):
        results = llm.main(quick=True, repeats=1)
    (shape,) = results["shapes"]
    rows = llm._summary(shape)
    peers = {(r["loss"], r["peer"]) for r in rows}
    for loss in ("cross-entropy", "log-probs + entropy", "distillation (jsd)"):
        assert {(loss, "jaxloss"), (loss, "naive")} <= peers
    assert ("cross-entropy", "torch F.linear_cross_entropy") in peers
    for r in rows:
        assert r["median_s"] > 0 and r["floor_fraction"] > 0
        if r["peer"] == "jaxloss":
            assert r["scratch_vs_naive"] < 1.0, r
    assert "## value_and_grad" in llm.render(results)

"""Smoke run of the benchmark suite: ``python -m benchmarks --quick`` writes its
report, JSON and plots with every core case. No timing is asserted."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PEER_FIELDS = {
    "jax": ("fwd", "vag", "compile_fwd_s", "compile_vag_s", "scratch_fwd_bytes",
            "scratch_vag_bytes", "eff_GBps_vag", "bw_fraction_vag", "value", "loss_dtype"),
    "torch": ("fwd", "vag", "eff_GBps_vag", "bw_fraction_vag", "value", "loss_dtype"),
}  # fmt: skip
TIMING_FIELDS = ("median_s", "min_s", "max_s", "times_s")


def test_quick_benchmarks_write_report(tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.cases import CORE_CASE_NAMES
    finally:
        sys.path.remove(str(ROOT))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    (json_path,) = tmp_path.glob("*.json")
    (md_path,) = tmp_path.glob("*.md")
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    stem = json_path.stem
    assert md_path.stem == stem
    assert pngs == [f"{stem}-cases.png", f"{stem}-scaling.png"]
    assert all(p.stat().st_size > 0 for p in tmp_path.glob("*.png"))

    results = json.loads(json_path.read_text())
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
    for series in scaling["peers"].values():
        assert len(series["vag"]) == len(series["vag_scratch_bytes"]) == len(scaling["V"])

    for extra in ("catalogue", "large_vocab"):
        assert results["extras"][extra]["status"] in ("ok", "skipped", "failed")
    verdicts = {t["name"]: t["verdict"] for t in results["targets"]}
    assert len(verdicts) >= 6
    assert all(v.startswith(("met", "not met", "not run")) for v in verdicts.values())

    report = md_path.read_text()
    assert "## Targets" in report
    for name in CORE_CASE_NAMES:
        assert name in report

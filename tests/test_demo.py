"""``python -m jaxloss.demo``: a quick run on one and on eight simulated CPU devices.

The two quick runs start side by side in subprocesses (the eight-device one
with ``--xla_force_host_platform_device_count=8``); the tests then read their
tables and JSON files. The demo's per-loss gradient check runs in the
single-device run (the eight-device run skips it to keep CI fast: it only
compares losses). Bad flags are checked in-process through ``main``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxloss.demo import _runs, main

STEPS = 6  # fixed number of steps for the one-vs-eight-device comparison
BATCH = 64  # a multiple of 8: both runs see the same global batches
TIMEOUT = 600


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both quick runs, started together: {devices: (completed process, results JSON)}."""
    procs = {}
    for devices in (1, 8):
        out = tmp_path_factory.mktemp(f"demo{devices}")
        cmd = [
            sys.executable,
            "-m",
            "jaxloss.demo",
            "--quick",
            "--no-progress",
            "--steps",
            str(STEPS),
            "--batch-size",
            str(BATCH),
            "--seed",
            "0",
            "--out",
            str(out),
        ]
        if devices > 1:
            cmd.append("--no-gradcheck")
        proc = subprocess.Popen(
            cmd, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs[devices] = (proc, out)
    results = {}
    for devices, (proc, out) in procs.items():
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        path = out / "results.json"
        payload = json.loads(path.read_text()) if path.exists() else None
        results[devices] = (done, payload, out)
    return results


@pytest.mark.parametrize("devices", [1, 8])
def test_quick_run_succeeds_and_writes_outputs(runs, devices):
    done, payload, out = runs[devices]
    assert done.returncode == 0, done.stderr[-4000:]
    assert payload is not None, "results.json was not written"
    assert payload["config"]["num_devices"] == devices
    assert payload["config"]["steps"] == STEPS
    assert (out / "loss_curves.png").stat().st_size > 0
    assert (out / "summary.png").stat().st_size > 0
    for row in payload["results"]:
        assert len(row["loss_curve"]) == STEPS
        assert np.all(np.isfinite(row["loss_curve"])), row["name"]
        assert np.isfinite(row["test_metric"]) and np.isfinite(row["baseline"]), row["name"]


@pytest.mark.parametrize("devices", [1, 8])
def test_table_lists_every_loss(runs, devices):
    done, payload, _ = runs[devices]
    table_names = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    public = _runs.public_losses()
    assert public, "jaxloss exports no losses?"
    missing = [name for name in public if name not in table_names]
    assert not missing, f"not in the table: {missing}\n{done.stdout}"
    covered = {n for row in payload["results"] for n in row["losses"]}
    assert set(public) <= covered


def test_gradcheck_ok_for_every_loss(runs):
    _, payload, _ = runs[1]
    bad = {
        r["name"]: r["gradcheck"] for r in payload["results"] if r["gradcheck"]["ok"] is not True
    }
    assert not bad, bad


def test_data_parallel_matches_single_device(runs):
    _, one, _ = runs[1]
    _, eight, _ = runs[8]
    assert [r["name"] for r in one["results"]] == [r["name"] for r in eight["results"]]
    for a, b in zip(one["results"], eight["results"], strict=True):
        # Global-batch means: sharding changes only the order of float additions.
        np.testing.assert_allclose(
            b["loss_curve"], a["loss_curve"], rtol=1e-4, atol=1e-6, err_msg=a["name"]
        )
        np.testing.assert_allclose(b["test_metric"], a["test_metric"], rtol=1e-3, err_msg=a["name"])


# --- bad flags --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--loss", "no_such_loss"], "invalid choice: 'no_such_loss'"),
        (["--steps", "0"], "--steps: expected a positive integer, got 0"),
        (["--steps", "-5"], "--steps: expected a positive integer, got -5"),
        (["--steps", "ten"], "--steps: expected a positive integer, got 'ten'"),
        (["--batch-size", "0"], "--batch-size: expected an integer in [1, 4096], got 0"),
        (["--batch-size", "100000"], "--batch-size: expected an integer in [1, 4096]"),
        (["--seed", "-1"], "--seed: expected an integer in [0, 2**32), got -1"),
        (["--platform", "abacus"], "invalid choice: 'abacus'"),
    ],
)
def test_bad_flags_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert message in err
    assert "usage: python -m jaxloss.demo" in err


def test_unknown_loss_lists_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--loss", "cross_entropy"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for name in _runs.public_losses():
        assert name in err


def test_out_must_be_a_directory(tmp_path, capsys):
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(path), "--quick"])
    assert exc.value.code == 2
    assert "is not a directory" in capsys.readouterr().err


def test_missing_platform_is_an_error(capsys):
    have = {d.platform for d in jax.devices()}
    absent = [p for p in ("tpu", "gpu") if p not in have and not (p == "gpu" and "cuda" in have)]
    if not absent:
        pytest.skip("every platform is present")
    with pytest.raises(SystemExit) as exc:
        main(["--platform", absent[0], "--quick"])
    assert exc.value.code == 2
    assert f"--platform {absent[0]}" in capsys.readouterr().err


def test_bad_flag_exits_non_zero_from_the_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "jaxloss.demo", "--steps", "0"],
        env=_env(1),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--steps: expected a positive integer, got 0" in done.stderr

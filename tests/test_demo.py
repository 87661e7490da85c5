"""``python -m jaxloss.demo``: a quick run on one CPU device and one on eight simulated ones.

The one-device run of every loss calls ``main`` in the test process (with the
demo's own JAX settings: no x64, standard promotion); a second one-device run
of a few losses includes the per-loss gradient check. The eight-device run
needs ``--xla_force_host_platform_device_count=8`` before JAX starts, so it runs
in a subprocess, started first so that both train at the same time; it trains
one loss of every kind and is compared loss by loss with the one-device run.
All are shared by every test of this module and run once (``--dist loadfile``
in pyproject.toml keeps a file's tests on one xdist worker). Bad flags and missing optional
dependencies are checked in-process through ``main``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import pytest
from _helpers import child

from jaxloss.demo import _runs, main

STEPS = 4  # steps per run: every later loss depends on the earlier all-reduced gradients
BATCH = 64  # a multiple of 8: both runs see the same global batches
TIMEOUT = 1800  # seconds; a quick run takes about a minute on an idle 2-core machine
# The eight-device run trains one loss of each kind of objective (a class-axis
# softmax, distillation against a teacher, a whole-batch loss, CTC sequences,
# the fused and the vocabulary-parallel character LM): it tests the demo's
# data-parallel training (elementwise losses shard like the class-axis one).
# That every loss gives the same values and gradients when its batch is sharded
# is tested for every registry row by tests/test_sharding.py.
# The demo's gradient check at the trained parameters runs for three losses (a
# softmax, a box loss whose rule holds alpha fixed, and the distillation whose
# test rows carry the teacher's hidden states): each loss's derivatives are
# checked on its own by tests/test_registry.py.
GRADCHECK_LOSSES = (
    "softmax_cross_entropy_with_integer_labels",
    "complete_box_iou_loss",
    "fused_linear_distillation_loss",
)
EIGHT_DEVICE_LOSSES = (
    "softmax_cross_entropy_with_integer_labels",
    "kl_divergence",
    "dice_loss",
    "ctc_loss",
    "fused_linear_softmax_cross_entropy",
    "vocab_parallel_softmax_cross_entropy",
)


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _argv(out: pathlib.Path, *extra: str) -> list[str]:
    return [
        "--quick",
        "--no-progress",
        "--platform",
        "cpu",
        "--steps",
        str(STEPS),
        "--batch-size",
        str(BATCH),
        "--seed",
        "0",
        "--out",
        str(out),
        *extra,
    ]


@dataclasses.dataclass
class Run:
    returncode: int | str | None
    stdout: str
    stderr: str
    out: pathlib.Path

    @property
    def payload(self) -> dict[str, Any]:
        path = self.out / "results.json"
        assert path.exists(), f"results.json was not written\n{self.stderr[-4000:]}"
        return json.loads(path.read_text())


def _in_process(argv: list[str], out: pathlib.Path) -> Run:
    """``main(argv)`` here, with the settings the command line has (the suite's
    conftest enables x64 and strict promotion; the demo runs without them)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        jax.enable_x64(False),
        jax.numpy_dtype_promotion("standard"),
        jax.numpy_rank_promotion("allow"),
    ):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return Run(code, stdout.getvalue(), stderr.getvalue(), out)


def _command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "jaxloss.demo", *argv]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[Any, Run]:
    """{devices: Run} for the one- and eight-device quick runs (no gradient check),
    and {"gradcheck": Run} for a one-device run of GRADCHECK_LOSSES with it."""
    out1 = tmp_path_factory.mktemp("demo1")
    out8 = tmp_path_factory.mktemp("demo8")
    outg = tmp_path_factory.mktemp("demog")
    argv8 = _argv(out8, "--no-gradcheck", *_losses(EIGHT_DEVICE_LOSSES))
    argv1, argvg = _argv(out1, "--no-gradcheck"), _argv(outg, *_losses(GRADCHECK_LOSSES))
    with child(_command(argv8), _env(8)) as proc8:
        if len(jax.local_devices(backend="cpu")) == 1:
            one, gc = _in_process(argv1, out1), _in_process(argvg, outg)
        else:  # this process simulates several CPU devices itself
            one, gc = (_subprocess(a, o) for a, o in ((argv1, out1), (argvg, outg)))
        stdout, stderr = proc8.communicate(timeout=TIMEOUT)
    return {1: one, 8: Run(proc8.returncode, stdout, stderr, out8), "gradcheck": gc}


def _losses(names: Sequence[str]) -> list[str]:
    return [a for n in names for a in ("--loss", n)]


def _subprocess(argv: list[str], out: pathlib.Path) -> Run:
    with child(_command(argv), _env(1)) as proc:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    return Run(proc.returncode, stdout, stderr, out)


@pytest.mark.parametrize("devices", [1, 8])
def test_quick_run_succeeds_and_writes_outputs(runs, devices):
    run = runs[devices]
    assert run.returncode == 0, run.stderr[-4000:]
    payload = run.payload
    assert payload["config"]["num_devices"] == devices
    assert payload["config"]["platform"] == "cpu"
    assert payload["config"]["steps"] == STEPS
    assert payload["config"]["batch_size"] == BATCH
    assert payload["config"]["quick"] is True
    assert (run.out / "loss_curves.png").stat().st_size > 0
    assert (run.out / "summary.png").stat().st_size > 0
    assert payload["results"], "no runs"
    for row in payload["results"]:
        assert row["steps"] == len(row["loss_curve"]) == STEPS, row["name"]
        assert row["batch_size"] == BATCH, row["name"]
        assert np.all(np.isfinite(row["loss_curve"])), row["name"]
        assert np.isfinite(row["test_metric"]) and np.isfinite(row["baseline"]), row["name"]
    assert f"{len(payload['results'])} run(s) on {devices} cpu device(s)" in run.stdout


@pytest.mark.parametrize("devices", [1, 8])
def test_table_lists_every_loss(runs, devices):
    run = runs[devices]
    payload = run.payload
    assert payload["table"] in run.stdout  # the printed table is the stored one
    lines = payload["table"].splitlines()
    assert lines[0].split()[:2] == ["loss", "data"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == [r["name"] for r in payload["results"]]
    public = _runs.public_losses() if devices == 1 else list(EIGHT_DEVICE_LOSSES)
    assert public, "jaxloss exports no losses?"
    missing = [name for name in public if name not in rows]
    assert not missing, f"not in the table: {missing}\n{payload['table']}"
    covered = {n for row in payload["results"] for n in row["losses"]}
    assert set(public) <= covered
    for r in payload["results"]:
        assert f"{r['train_loss']:.4f}" in rows[r["name"]], r["name"]


def test_gradcheck_ok_at_the_trained_parameters(runs):
    run = runs["gradcheck"]
    assert run.returncode == 0, run.stderr[-4000:]
    payload = run.payload
    assert sorted(r["name"] for r in payload["results"]) == sorted(GRADCHECK_LOSSES)
    bad = {
        r["name"]: r["gradcheck"] for r in payload["results"] if r["gradcheck"]["ok"] is not True
    }
    assert not bad, bad
    for r in payload["results"]:
        assert r["gradcheck"]["passed"] == r["gradcheck"]["checks"] > 0, r["name"]


@pytest.mark.parametrize("devices", [1, 8])
def test_no_gradcheck_is_reported_as_skipped(runs, devices):
    payload = runs[devices].payload
    assert all(r["gradcheck"]["ok"] is None for r in payload["results"])
    lines = payload["table"].splitlines()[2:]
    assert lines and all(line.rstrip().endswith("skipped") for line in lines)


def test_data_parallel_matches_single_device(runs):
    one = {r["name"]: r for r in runs[1].payload["results"]}
    eight = runs[8].payload["results"]
    assert sorted(r["name"] for r in eight) == sorted(EIGHT_DEVICE_LOSSES)
    for b in eight:
        a = one[b["name"]]
        # Global-batch means: sharding changes only the order of float additions, so
        # the loss before any update agrees to float32 rounding. Each Adam step divides
        # by the gradient's own magnitude and so magnifies rounding in near-zero
        # gradient entries (most of all for the piecewise-linear hinge losses): later
        # steps agree to 1e-3. A dropped shard, a per-device mean or a missing
        # gradient all-reduce moves the loss by a percent or more.
        np.testing.assert_allclose(
            b["loss_curve"][0], a["loss_curve"][0], rtol=1e-5, atol=1e-6, err_msg=a["name"]
        )
        np.testing.assert_allclose(
            b["loss_curve"], a["loss_curve"], rtol=1e-3, atol=1e-6, err_msg=a["name"]
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
    assert exc.value.code == 2
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
    with child(_command(["--steps", "0"]), _env(1)) as proc:
        _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 2
    assert "--steps: expected a positive integer, got 0" in stderr


# --- missing optional dependencies -------------------------------------------


@pytest.mark.parametrize(
    "module, package",
    [
        ("flax", "flax"),
        ("optax", "optax"),
        ("sklearn", "scikit-learn"),
        ("matplotlib", "matplotlib"),
        ("tqdm", "tqdm"),
    ],
)
def test_missing_dependency_names_the_extra(module, package, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # "import module" now fails
    assert main(["--quick", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert package in err
    assert 'pip install -e ".[demo]"' in err
    assert not (tmp_path / "out").exists()


def test_missing_dependency_exit_status_from_the_command_line():
    code = (
        "import runpy, sys; sys.modules['flax'] = None; "
        "runpy.run_module('jaxloss.demo', run_name='__main__')"
    )
    with child([sys.executable, "-c", code, "--quick"], _env(1)) as proc:
        stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr
    assert stderr.strip().splitlines() == [stderr.strip()]
    assert "flax" in stderr and 'pip install -e ".[demo]"' in stderr
    assert "Traceback" not in stderr and not stdout

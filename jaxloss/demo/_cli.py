"""Command line of ``python -m jaxloss.demo``."""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import platform as _platform
import sys
import time
from collections.abc import Sequence
from typing import Any

PLATFORMS = ("cpu", "gpu", "tpu")
QUICK_STEPS = 8
MAX_BATCH_SIZE = 4096
# The demo's optional dependencies (the "demo" extra): import name -> pip name.
DEPENDENCIES = {
    "flax": "flax",
    "optax": "optax",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
}


def _int_in(low: int, high: int | None, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


def build_parser(loss_names: Sequence[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxloss.demo",
        description=(
            "Train small Flax NNX models on bundled data (scikit-learn's digits, breast "
            "cancer and diabetes sets; Python's own source text) with every loss in "
            "jaxloss, data-parallel over all devices JAX sees, and report held-out "
            "metrics against trivial baselines and a gradient check of each loss."
        ),
    )
    _add_run_flags(p, loss_names)
    _add_mode_flags(p)
    return p


def _add_run_flags(p: argparse.ArgumentParser, loss_names: Sequence[str]) -> None:
    """What is trained, and where the results go."""
    p.add_argument(
        "--loss",
        action="append",
        choices=list(loss_names),
        metavar="NAME",
        help="run only this loss's run (repeatable; default: every run); NAME[setting] "
        "picks another setting of a loss, e.g. "
        "fused_linear_distillation_loss[forward_kl]. Choices: " + ", ".join(loss_names),
    )
    p.add_argument(
        "--steps",
        type=_int_in(1, None, "a positive integer"),
        help="optimizer steps per run (default: per task, 250-1000; 8 with --quick)",
    )
    p.add_argument(
        "--batch-size",
        type=_int_in(1, MAX_BATCH_SIZE, f"an integer in [1, {MAX_BATCH_SIZE}]"),
        default=128,
        help="global batch size, rounded up to a multiple of the device count (default: 128)",
    )
    p.add_argument(
        "--seed",
        type=_int_in(0, 2**32 - 1, "an integer in [0, 2**32)"),
        default=0,
        help="seed of the data split, initialisation and batches (default: 0)",
    )
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("demo_out"),
        help="directory for results.json and the plots (default: demo_out/)",
    )


def _add_mode_flags(p: argparse.ArgumentParser) -> None:
    """How it runs: smoke test, devices, progress bars, gradient check."""
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_STEPS} steps per run (unless --steps is given): a smoke test",
    )
    p.add_argument(
        "--platform", choices=PLATFORMS, help="devices to run on (default: the best JAX finds)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument(
        "--no-gradcheck",
        action="store_true",
        help="skip the per-loss gradient check (jaxloss.testing.gradcheck)",
    )


def _devices(parser: argparse.ArgumentParser, platform: str | None) -> list[Any]:
    import jax

    if platform is None:
        return jax.local_devices()
    try:
        return jax.local_devices(backend=platform)
    except RuntimeError as e:
        have = sorted({d.platform for d in jax.devices()})
        parser.error(
            f"--platform {platform}: JAX finds no such devices ({str(e).splitlines()[0]}); "
            f"available: {', '.join(have)}"
        )


def _simulated_cpu_devices() -> int:
    """How many CPU devices XLA is asked to simulate (read before JAX starts its backends)."""
    import jax

    count = int(getattr(jax.config, "jax_num_cpu_devices", -1) or -1)
    for flag in os.environ.get("XLA_FLAGS", "").split():
        if flag.startswith("--xla_force_host_platform_device_count="):
            count = max(count, int(flag.split("=", 1)[1]))
    return count


def missing_dependencies() -> list[str]:
    """The demo's optional dependencies that do not import, by their pip names."""
    missing = []
    for module, package in DEPENDENCIES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


def _parse(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parses and checks the flags; exits with status 2 on a bad one."""
    import jaxloss
    from jaxloss.demo import _runs

    public = _runs.public_losses()
    parser = build_parser(sorted(set(public) | set(_runs.SPECS_BY_NAME)))
    args = parser.parse_args(argv)
    missing = [n for n in args.loss or () if not hasattr(jaxloss, n)]
    if missing:
        parser.error(
            f"--loss {', '.join(missing)}: not provided by this jaxloss "
            f"({jaxloss.__version__}); available: {', '.join(public)}"
        )
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: exists and is not a directory")
    args.steps_used = (
        args.steps if args.steps is not None else (QUICK_STEPS if args.quick else None)
    )
    return parser, args


def _placement(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list, int]:
    """The devices to train on and the global batch size (a multiple of their count)."""
    import jax

    if _simulated_cpu_devices() > 1:
        # Simulated CPU devices share a few cores; running each computation inline
        # keeps the device threads of consecutive steps from waiting on each other.
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    devices = _devices(parser, args.platform)
    n_dev = len(devices)
    batch_size = -(-args.batch_size // n_dev) * n_dev
    if batch_size != args.batch_size:
        print(
            f"note: batch size {args.batch_size} rounded up to {batch_size}, a multiple of "
            f"{n_dev} devices",
            file=sys.stderr,
        )
    return devices, batch_size


def _select_specs(args: argparse.Namespace) -> list[Any]:
    """The runs to do, with a warning for every loss no run covers."""
    from jaxloss.demo import _runs

    specs = _runs.available_specs()
    if args.loss:
        chosen = set(args.loss)
        # a run's own name picks that run; a loss no run is named after picks every
        # run that uses it
        by_use = chosen - {s.name for s in specs}
        return [s for s in specs if s.name in chosen or by_use & set(s.losses)]
    covered = {n for s in specs for n in s.losses}
    for name in sorted(set(_runs.public_losses()) - covered):
        print(f"warning: no demo run uses jaxloss.{name}", file=sys.stderr)
    for s in _runs.SPECS:
        if s not in specs:
            print(f"note: skipping {s.name}: not in this jaxloss", file=sys.stderr)
    return specs


def _train_all(
    args: argparse.Namespace, specs: list[Any], devices: list[Any], batch_size: int
) -> list[dict[str, Any]]:
    """One row of results per run, with a progress line per run unless ``--no-progress``."""
    import jax

    from jaxloss.demo._train import Runner

    runner = Runner(
        devices,
        seed=args.seed,
        steps=args.steps_used,
        batch_size=batch_size,
        progress=not args.no_progress,
        gradcheck=not args.no_gradcheck,
    )
    verdicts = {True: "ok", False: "FAILED", None: "skipped"}
    rows = []
    with jax.default_device(devices[0]):
        for i, spec in enumerate(specs, 1):
            row = runner.run(spec, desc=f"[{i}/{len(specs)}] {spec.name}")
            rows.append(row)
            if not args.no_progress:
                print(
                    f"[{i}/{len(specs)}] {spec.name}: {row['metric']} {row['test_metric']:.4g} "
                    f"(baseline {row['baseline']:.4g}), "
                    f"gradcheck {verdicts[row['gradcheck']['ok']]}",
                    file=sys.stderr,
                )
    return rows


def _write(args: argparse.Namespace, payload: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """``results.json``, ``loss_curves.png`` and ``summary.png`` in ``--out``."""
    from jaxloss.demo import _report

    args.out.mkdir(parents=True, exist_ok=True)
    _report.write_json(args.out / "results.json", payload)
    _report.plot_curves(args.out / "loss_curves.png", rows)
    _report.plot_summary(args.out / "summary.png", rows)
    print(f"wrote {args.out / 'results.json'}, loss_curves.png and summary.png", file=sys.stderr)


def _config(args: argparse.Namespace, devices: list[Any], batch_size: int) -> dict[str, Any]:
    import jax

    import jaxloss

    return {
        "jaxloss": jaxloss.__version__,
        "jax": jax.__version__,
        "python": _platform.python_version(),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "seed": args.seed,
        "steps": args.steps_used,
        "batch_size": batch_size,
        "requested_batch_size": args.batch_size,
        "quick": args.quick,
        "losses": args.loss,
    }


def _exit_status(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    """1 if a gradient check failed, or a full-length run did not beat its baseline."""
    failed = [r["name"] for r in rows if r["gradcheck"].get("ok") is False]
    behind = [r["name"] for r in rows if not r["beats_baseline"]]
    full_length = not args.quick and args.steps_used is None
    if failed:
        print(f"error: gradcheck failed for {', '.join(failed)}", file=sys.stderr)
    if behind:
        level = "error" if full_length else "note"
        print(f"{level}: not better than the baseline: {', '.join(behind)}", file=sys.stderr)
    return 1 if failed or (behind and full_length) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo; returns the exit status (2 for bad flags, via ``SystemExit``)."""
    missing = missing_dependencies()
    if missing:
        print(
            f"error: the demo needs {', '.join(missing)}, not installed; "
            f'install the demo extra: pip install -e ".[demo]"',
            file=sys.stderr,
        )
        return 1

    import jaxloss
    from jaxloss.demo import _report

    parser, args = _parse(argv)
    devices, batch_size = _placement(parser, args)
    specs = _select_specs(args)
    n_dev, platform = len(devices), devices[0].platform
    print(
        f"jaxloss {jaxloss.__version__} demo on {n_dev} x {devices[0].device_kind} "
        f"({platform}); global batch {batch_size}, seed {args.seed}",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    rows = _train_all(args, specs, devices, batch_size)
    wall = time.perf_counter() - t0

    text = _report.table(rows)
    print(text)
    print(f"\n{len(rows)} run(s) on {n_dev} {platform} device(s) in {wall:.1f} s")
    payload = {
        "config": _config(args, devices, batch_size),
        "wall_time_s": wall,
        "table": text,
        "results": rows,
    }
    _write(args, payload, rows)
    return _exit_status(args, rows)


__all__ = ["build_parser", "main", "missing_dependencies"]

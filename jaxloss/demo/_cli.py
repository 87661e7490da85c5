"""Command line of ``python -m jaxloss.demo``."""

from __future__ import annotations

import argparse
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
    p.add_argument(
        "--loss",
        action="append",
        choices=list(loss_names),
        metavar="NAME",
        help="run only this loss (repeatable; default: every loss). Choices: "
        + ", ".join(loss_names),
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
    return p


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


def main(argv: Sequence[str] | None = None) -> int:
    import jax

    import jaxloss
    from jaxloss.demo import _report, _runs

    public = _runs.public_losses()
    known = sorted(set(public) | set(_runs.SPECS_BY_NAME))
    parser = build_parser(known)
    args = parser.parse_args(argv)

    missing = [n for n in args.loss or () if not hasattr(jaxloss, n)]
    if missing:
        parser.error(
            f"--loss {', '.join(missing)}: not provided by this jaxloss "
            f"({jaxloss.__version__}); available: {', '.join(public)}"
        )
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: exists and is not a directory")

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
    steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else None)

    specs = _runs.available_specs()
    if args.loss:
        chosen = set(args.loss)
        specs = [s for s in specs if chosen & set(s.losses)]
    covered = {n for s in specs for n in s.losses}
    if not args.loss:
        for name in sorted(set(public) - covered):
            print(f"warning: no demo run uses jaxloss.{name}", file=sys.stderr)
        for s in _runs.SPECS:
            if s not in specs:
                print(f"note: skipping {s.name}: not in this jaxloss", file=sys.stderr)

    from jaxloss.demo._train import Runner

    print(
        f"jaxloss {jaxloss.__version__} demo on {n_dev} x {devices[0].device_kind} "
        f"({devices[0].platform}); global batch {batch_size}, seed {args.seed}",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    runner = Runner(
        devices,
        seed=args.seed,
        steps=steps,
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
    wall = time.perf_counter() - t0

    text = _report.table(rows)
    print(text)
    print(f"\n{len(rows)} run(s) on {n_dev} {devices[0].platform} device(s) in {wall:.1f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": {
            "jaxloss": jaxloss.__version__,
            "jax": jax.__version__,
            "python": _platform.python_version(),
            "platform": devices[0].platform,
            "device_kind": devices[0].device_kind,
            "num_devices": n_dev,
            "seed": args.seed,
            "steps": steps,
            "batch_size": batch_size,
            "requested_batch_size": args.batch_size,
            "quick": args.quick,
            "losses": args.loss,
        },
        "wall_time_s": wall,
        "table": text,
        "results": rows,
    }
    _report.write_json(args.out / "results.json", payload)
    _report.plot_curves(args.out / "loss_curves.png", rows)
    _report.plot_summary(args.out / "summary.png", rows)
    print(f"wrote {args.out / 'results.json'}, loss_curves.png and summary.png", file=sys.stderr)

    failed = [r["name"] for r in rows if r["gradcheck"].get("ok") is False]
    behind = [r["name"] for r in rows if not r["beats_baseline"]]
    if failed:
        print(f"error: gradcheck failed for {', '.join(failed)}", file=sys.stderr)
    if behind:
        level = "note" if args.quick or steps is not None else "error"
        print(f"{level}: not better than the baseline: {', '.join(behind)}", file=sys.stderr)
    return 1 if failed or (behind and not args.quick and steps is None) else 0


__all__ = ["build_parser", "main"]

"""Child process that calls one self-contained benchmark script's ``main``.

``python -m benchmarks._extra NAME --json PATH [--quick] [--out DIR]`` imports
``benchmarks.NAME`` in a fresh interpreter (so the script can set
``XLA_FLAGS``, e.g. a host device count, or JAX options before JAX starts, and
so its memory and settings do not leak into the core cases), calls ``main``
and writes what it returned to ``PATH`` as JSON. Nothing here imports JAX.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import sys
import traceback
from pathlib import Path
from typing import Any


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=repr))


def call_main(name: str, quick: bool, out: Path | None) -> dict[str, Any]:
    module_name = f"benchmarks.{name}"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        return {"status": "failed", "reason": f"import failed: {type(exc).__name__}: {exc}"}
    main = getattr(module, "main", None)
    if not callable(main):
        return {"status": "skipped", "reason": f"not run: {module_name} has no main()"}
    params = inspect.signature(main).parameters
    kwargs: dict[str, Any] = {}
    argv = ["--quick"] if quick else []
    if "quick" in params:
        kwargs["quick"] = quick
    elif "argv" in params or "args" in params:
        kwargs["argv" if "argv" in params else "args"] = argv
    for key in ("out", "out_dir", "outdir", "output_dir"):
        if key in params and out is not None:
            out.mkdir(parents=True, exist_ok=True)
            kwargs[key] = out
            break
    call = f"{module_name}.main({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    sys.argv = [module_name, *argv]  # for a main that parses sys.argv itself
    # A script without --quick stops with argparse's "error: unrecognized arguments"
    # on stderr; that is a skip, not a failure, so its stderr is held back until known.
    may_skip = quick and "quick" not in kwargs
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held) if may_skip else contextlib.nullcontext():
            returned = main(**kwargs)
    except SystemExit as exc:  # an argparse main
        if exc.code == 2 and may_skip:
            reason = f"not run: {module_name} has no --quick mode"
            return {"status": "skipped", "reason": reason, "call": call}
        sys.stderr.write(held.getvalue())
        if exc.code not in (0, None):
            return {"status": "failed", "reason": f"exited with {exc.code}", "call": call}
        returned = None
    except Exception as exc:
        sys.stderr.write(held.getvalue())
        reason = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-500:]
        traceback.print_exc()
        return {"status": "failed", "reason": reason, "call": call}
    sys.stderr.write(held.getvalue())
    result = {"status": "ok", "reason": "", "call": call, "returned": _jsonable(returned)}
    render = getattr(module, "render", None)
    if isinstance(returned, dict) and callable(render):
        # a module-level render(results) -> str gives the script's own markdown report
        try:
            result["markdown"] = str(render(returned))
        except Exception as exc:
            result["markdown_error"] = f"{type(exc).__name__}: {exc}"
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._extra")
    parser.add_argument("name")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = call_main(args.name, args.quick, args.out)
    args.json.write_text(json.dumps(result, indent=1, default=repr))


if __name__ == "__main__":
    main()

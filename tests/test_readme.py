"""The README's API table lists every public function with its signature."""

from __future__ import annotations

import inspect
import pathlib
import re

import jaxloss

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _public():
    return sorted(
        n
        for n in dir(jaxloss)
        if not n.startswith("_")
        and callable(getattr(jaxloss, n))
        and getattr(jaxloss, n).__module__.startswith("jaxloss.")
    )


def test_every_public_function_is_in_the_api_table_with_its_parameters():
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(\w+)\(([^)]*)\)` \|", README.read_text(), re.M)
    }
    missing = [n for n in _public() if n not in rows]
    assert not missing, missing
    for name in _public():
        params = inspect.signature(getattr(jaxloss, name)).parameters
        listed = [p.strip() for p in rows[name].split(",") if p.strip() not in ("*", "")]
        assert listed == list(params), (name, listed, list(params))

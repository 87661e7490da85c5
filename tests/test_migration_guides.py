"""The migration guides stay complete: every PyTorch and optax loss has a row.

``docs/guides/pytorch.md`` must have a table row for every loss of
``torch.nn.functional`` and ``docs/guides/optax.md`` one for every public
function of ``optax.losses``, both enumerated from the installed packages; every
``../api/<name>.md`` link in the two guides must name a public function of
jaxloss. The numbers behind the rows are checked by the parity tests
(``test_torch_compat.py``, ``test_optax_compat.py``, ``test_registry.py``).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import optax
import pytest
import torch.nn.functional as F

import jaxloss

GUIDES = Path(__file__).resolve().parent.parent / "docs" / "guides"
PYTORCH = GUIDES / "pytorch.md"
OPTAX = GUIDES / "optax.md"

API_LINK = re.compile(r"\]\(\.\./api/([\w.]+)\.md(?:#[\w-]*)?\)")
NO_COUNTERPART = "no jaxloss counterpart"


def torch_losses() -> list[str]:
    """The loss functions of ``torch.nn.functional``.

    A public function counts as a loss when its name ends in ``_loss``, names a
    cross-entropy or ``kl_div``, or when it takes a ``reduction`` argument.
    """
    found = []
    for name in dir(F):
        obj = getattr(F, name)
        if name.startswith("_") or not callable(obj) or inspect.isclass(obj):
            continue
        try:
            takes_reduction = "reduction" in inspect.signature(obj).parameters
        except (TypeError, ValueError):  # builtins without a signature
            takes_reduction = False
        if name.endswith("_loss") or "cross_entropy" in name or name == "kl_div":
            found.append(name)
        elif takes_reduction:
            found.append(name)
    return sorted(found)


def optax_losses() -> list[str]:
    """The public functions of ``optax.losses``."""
    return sorted(
        name
        for name in dir(optax.losses)
        if not name.startswith("_")
        and callable(getattr(optax.losses, name))
        and not inspect.isclass(getattr(optax.losses, name))
    )


def jaxloss_functions() -> set[str]:
    """The public functions of the flat ``jaxloss`` namespace."""
    return {
        name
        for name in dir(jaxloss)
        if not name.startswith("_")
        and callable(getattr(jaxloss, name))
        and (getattr(getattr(jaxloss, name), "__module__", "") or "").startswith("jaxloss")
    }


def table(path: Path, header: str) -> list[list[str]]:
    """The body rows (lists of cells) of the Markdown table whose first header is ``header``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tables, current = [], []
    for line in [*lines, ""]:
        if line.lstrip().startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    for rows in tables:
        cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
        if cells[0][0] == header:
            return [c for c in cells[1:] if not all(set(x) <= set("-: ") for x in c)]
    raise AssertionError(f"{path.name}: no table with the header {header!r}")


def first_cell_names(rows: list[list[str]], prefix: str) -> set[str]:
    """Names ``X`` of the rows whose first cell starts with `` `<prefix>X` ``."""
    pattern = re.compile(r"^`" + re.escape(prefix) + r"(\w+)`")
    return {m.group(1) for row in rows if (m := pattern.match(row[0]))}


# --------------------------------------------------------------------------
# The enumerations are not empty
# --------------------------------------------------------------------------


def test_torch_enumeration_finds_the_known_losses():
    found = torch_losses()
    assert len(found) >= 20, found
    for name in ("cross_entropy", "nll_loss", "kl_div", "mse_loss", "ctc_loss"):
        assert name in found
    for name in ("softmax", "log_softmax", "cosine_similarity", "linear", "relu"):
        assert name not in found


def test_optax_enumeration_finds_the_known_losses():
    found = optax_losses()
    assert len(found) >= 30, found
    for name in ("softmax_cross_entropy", "sigmoid_binary_cross_entropy", "ctc_loss"):
        assert name in found


# --------------------------------------------------------------------------
# Completeness
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", torch_losses())
def test_every_torch_loss_has_a_row(name):
    rows = table(PYTORCH, "PyTorch")
    assert name in first_cell_names(rows, "F."), f"F.{name} has no row in {PYTORCH.name}"


@pytest.mark.parametrize("name", optax_losses())
def test_every_optax_loss_has_a_row(name):
    rows = table(OPTAX, "optax.losses")
    assert name in first_cell_names(rows, "optax.losses."), (
        f"optax.losses.{name} has no row in {OPTAX.name}"
    )


def test_pytorch_rows_name_real_functions():
    for name in first_cell_names(table(PYTORCH, "PyTorch"), "F."):
        assert callable(getattr(F, name, None)), f"F.{name} is not in torch.nn.functional"


def test_optax_rows_name_real_functions_and_the_same_jaxloss_name():
    rows = table(OPTAX, "optax.losses")
    for row in rows:
        (name,) = first_cell_names([row], "optax.losses.")
        assert callable(getattr(optax.losses, name, None)), f"optax.losses.{name} does not exist"
        assert API_LINK.findall(row[1]) == [name], row[:2]
        assert row[2], f"optax.losses.{name}: empty differences cell"


@pytest.mark.parametrize(("path", "header"), [(PYTORCH, "PyTorch"), (OPTAX, "optax.losses")])
def test_rows_are_well_formed(path, header):
    rows = table(path, header)
    assert rows
    for row in rows:
        assert len(row) == 3, f"{path.name}: not three cells: {row}"
        assert API_LINK.search(row[1]) or NO_COUNTERPART in row[1].lower(), (
            f"{path.name}: {row[0]} names neither a jaxloss function nor says it has none"
        )
        assert row[2], f"{path.name}: {row[0]} has an empty third cell"


# --------------------------------------------------------------------------
# Links
# --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [PYTORCH, OPTAX], ids=lambda p: p.name)
def test_api_links_name_public_functions(path):
    links = API_LINK.findall(path.read_text(encoding="utf-8"))
    assert links
    missing = sorted(set(links) - jaxloss_functions())
    assert not missing, f"{path.name} links to API pages of unknown functions: {missing}"


def test_link_pattern_and_table_parser(tmp_path):
    guide = tmp_path / "g.md"
    guide.write_text(
        "# T\n\n| PyTorch | jaxloss | How |\n|---|---|---|\n"
        "| `F.a_loss` (x) | [`a`](../api/a.md) | `a(x)` |\n"
        "| `F.b_loss` | no jaxloss counterpart | - |\n\ntext [b](../api/b.md#c)\n",
        encoding="utf-8",
    )
    rows = table(guide, "PyTorch")
    assert [r[0] for r in rows] == ["`F.a_loss` (x)", "`F.b_loss`"]
    assert first_cell_names(rows, "F.") == {"a_loss", "b_loss"}
    assert API_LINK.findall(guide.read_text(encoding="utf-8")) == ["a", "b"]
    with pytest.raises(AssertionError, match="no table"):
        table(guide, "optax.losses")

"""The notebooks execute top to bottom without an error, and are stored without outputs.

Each notebook asserts its own numbers, so executing it is the test. The kernel
is ``python3`` started from this interpreter (jupyter_client runs the native
kernel with ``sys.executable``); a first injected cell checks that it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
MAX_STORED_OUTPUT_BYTES = 2_000  # "cleared": a stray short output is tolerated, images are not


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {
        "01_losses_tour.ipynb",
        "02_gradient_checking.ipynb",
        "03_why_cross_entropy.ipynb",
    } <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    size = len(json.dumps(outputs))
    assert size <= MAX_STORED_OUTPUT_BYTES, (
        f"{path.name} is stored with {size} bytes of outputs; clear them "
        f"(jupyter nbconvert --clear-output --inplace {path.name})"
    )
    assert not any("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path):
    nb = nbformat.read(path, as_version=4)
    check = nbformat.v4.new_code_cell(
        f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.executable"
    )
    check["id"] = "kernel-check"
    nb.cells.insert(0, check)
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors

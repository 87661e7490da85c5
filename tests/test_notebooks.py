"""The notebooks execute top to bottom without an error, and are stored without outputs.

Each notebook asserts its own numbers, so executing it is the test. The kernel
is ``python3`` started from this interpreter (jupyter_client runs the native
kernel with ``sys.executable``); a first injected cell checks that it is. The
kernel manager belongs to the test, which kills the kernel's process group in a
``finally`` whatever happened: a failing cell, a cell past its timeout, an
interrupted run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

from nbclient.exceptions import CellTimeoutError  # noqa: E402
from nbclient.util import run_sync  # noqa: E402

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
MAX_STORED_OUTPUT_BYTES = 2_000  # "cleared": a stray short output is tolerated, images are not
CELL_TIMEOUT = 900  # seconds per cell: generous, for a loaded machine
STARTUP_TIMEOUT = 300  # seconds for the kernel to answer its first request


async def _stop(client, km) -> None:
    """Closes the client's channels and kills the kernel's process group (then reaps it)."""
    try:
        if client.kc is not None:
            client.kc.stop_channels()
    finally:
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
        else:
            await km.cleanup_resources()


def execute(nb, cell_timeout: int = CELL_TIMEOUT, pids: list[int] | None = None) -> None:
    """Runs every code cell of ``nb`` in place in a fresh ``python3`` kernel.

    Raises what ``nbclient`` raises (``CellExecutionError`` with the cell and
    the traceback, ``CellTimeoutError``); the kernel is killed in any case.
    The kernel's process id is appended to ``pids``.
    """
    km = jupyter_client.AsyncKernelManager(kernel_name="python3")
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=cell_timeout,
        startup_timeout=STARTUP_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    try:
        client.execute()
    finally:
        if pids is not None and km.provisioner is not None:
            pids.append(km.provisioner.pid)
        run_sync(_stop)(client, km)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


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
    pids: list[int] = []
    execute(nb, pids=pids)  # raises CellExecutionError, with the cell and traceback, on any error
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    assert pids and all(_gone(pid) for pid in pids)


def test_hanging_kernel_is_killed():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import time\ntime.sleep(3600)")]
    nb.cells[0]["id"] = "hang"
    pids: list[int] = []
    with pytest.raises(CellTimeoutError):
        execute(nb, cell_timeout=2, pids=pids)
    assert len(pids) == 1
    assert _gone(pids[0]), f"kernel {pids[0]} still running"

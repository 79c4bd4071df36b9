"""Execute every notebook in ``notebooks/`` in a fresh kernel; any cell error fails the test.

The notebooks check their own results (each comparison ``assert``s its tolerance), so a
notebook that runs to the end has also passed its checks. The kernel is a new ``python3``
process, so the strict dtype promotion that ``conftest.py`` sets for pytest does not apply
there, and neither do its fast-compile settings: a notebook runs as a user runs it, with XLA's
defaults (its training steps run faster optimised). It shares the run's compilation cache.
"""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600  # per cell; generous because the CPU may be shared


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, default_compile_env):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "kernel must be python3"
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        allow_errors=False,
        # Run from the notebook's own directory, as Jupyter does, so relative paths resolve.
        resources={"metadata": {"path": str(path.parent)}},
    )
    # Raises CellExecutionError (with the traceback) on the first failing cell.
    client.execute(env=default_compile_env)
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, errors

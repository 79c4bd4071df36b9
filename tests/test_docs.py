"""The documentation site builds with warnings as errors, and its pages show math and plots.

Runs ``sphinx-build -W --keep-going -b html`` on ``docs/`` into a temporary directory (what
CONTRIBUTING.md's build command does), then reads the HTML: an API page typesets its
``.. math::`` blocks with the MathJax copy shipped in ``_static`` (no network needed), a notebook
page shows its committed plot as a PNG image, references to JAX, NumPy, Flax, Optax, Orbax and
Python objects are links into their documentation (intersphinx, from the inventories in
``docs/_inv``, which must match the table that writes them), signatures show the type aliases,
and code blocks have a copy button. The landing page's example runs. Needs the ``docs`` extra;
skipped without it.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
pytest.importorskip("furo")
pytest.importorskip("sphinx_copybutton")

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 900  # about 30 s on two idle cores; generous for a shared machine

# Every page of the site, by source name (``docs/<name>.md|.rst|.ipynb``).
PAGES = [
    "index",
    "getting_started",
    "notation",
    "performance",
    "sharding",
    "errors",
    "changelog",
    "contributing",
    "notebooks/01_cells_from_equations",
    "notebooks/02_seq2seq_attention",
    "notebooks/03_char_language_model",
    "notebooks/04_pytorch_interop",
    "notebooks/05_long_range",
    "notebooks/06_regularisation_and_convlstm",
    "api/index",
    *(
        f"api/{name}"
        for name in [
            "precision",
            "core",
            "cells",
            "cells.classic",
            "cells.gated",
            "cells.layernorm",
            "cells.conv",
            "cells.xlstm",
            "cells.linear",
            "cells.carry",
            "regularizers",
            "scan",
            "newton",
            "layers",
            "cudnn",
            "attention",
            "seq2seq",
            "decode",
            "losses",
            "recipes",
            "data",
            "train",
            "train.state",
            "train.loop",
            "train.checkpoints",
            "train.parallel",
            "models",
            "models.language_model",
            "models.char_lm_run",
            "models.long_range",
            "flax",
            "flax.linen",
            "flax.nnx",
            "interop",
            "interop.torch",
            "interop.flax",
            "interop.equinox",
            "cli",
            "types",
        ]
    ),
]


def _image_sources(html: str) -> list[str]:
    return re.findall(r'<img[^>]*\bsrc="([^"]+)"', html)


def test_docs_build_without_warnings_and_render_math_and_plots(tmp_path):
    out = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q"]
    cmd += ["-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert proc.returncode == 0, (
        f"sphinx-build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-8000:]}"
    )

    for page in PAGES:
        assert (out / f"{page}.html").is_file(), f"missing page {page}.html"

    # Math: MathJax loads from the site itself, not from a CDN, and the page has math to typeset.
    mathjax = out / "_static" / "mathjax" / "tex-chtml.js"
    assert mathjax.is_file(), "the local MathJax copy was not installed into _static"
    cells = (out / "api" / "cells.gated.html").read_text(encoding="utf-8")
    assert "_static/mathjax/tex-chtml.js" in cells
    assert "cdn.jsdelivr.net" not in cells
    assert cells.count('class="math') >= 4, "expected the cells' equations as math blocks"
    assert r"\Gamma_u" in cells and "jaxrnn.lstm" in cells

    # A notebook page: rendered from its committed outputs, with its plot as a PNG file.
    notebook = out / "notebooks" / "01_cells_from_equations.html"
    html = notebook.read_text(encoding="utf-8")
    assert "_static/mathjax/tex-chtml.js" in html and 'class="math' in html
    pngs = [src for src in _image_sources(html) if src.endswith(".png")]
    assert pngs, "the notebook's plot is missing"
    for src in pngs:
        data = (notebook.parent / src).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, src
    assert "max abs difference" in html  # a committed stdout output, shown, not re-executed

    # The README is the single source of the getting-started page, CONTRIBUTING.md of the
    # contributing page.
    getting_started = (out / "getting_started.html").read_text(encoding="utf-8")
    assert "Quick start" in getting_started and "API tour" in getting_started
    contributing = (out / "contributing.html").read_text(encoding="utf-8")
    assert "Contributing to jaxrnn" in contributing and "How the tests are written" in contributing

    # intersphinx: references to other projects' objects link into their documentation.
    def links(page: str) -> set[str]:
        html = (out / page).read_text(encoding="utf-8")
        return set(re.findall(r'<a class="reference external" href="([^"]+)"', html))

    scan_links, state_links = links("api/scan.html"), links("api/train.state.html")
    assert "https://docs.jax.dev/en/latest/_autosummary/jax.Array.html" in scan_links
    assert "https://docs.python.org/3/library/functions.html#bool" in scan_links
    assert any(u.startswith("https://optax.readthedocs.io/en/latest/") for u in state_links)
    assert any(
        u.startswith("https://flax.readthedocs.io/en/latest/") for u in links("api/flax.nnx.html")
    )
    linen = links("api/flax.linen.html")
    assert any(u.startswith("https://flax-linen.readthedocs.io/en/latest/") for u in linen)
    orbax = links("api/train.checkpoints.html")
    assert any(u.startswith("https://orbax.readthedocs.io/en/latest/") for u in orbax)
    assert any(u.startswith("https://numpy.org/doc/stable/") for u in links("api/data.html"))

    # Signatures name the type aliases (linked to their page), never a placeholder's repr.
    assert "TypeAliasForwardRef" not in cells
    signature = re.search(r'<dt class="sig sig-object py" id="jaxrnn.lstm">.*?</dt>', cells, re.S)
    assert signature and 'href="types.html#Initializer"' in signature.group(0)

    # A copy button on code blocks, from the site's own files.
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "_static/copybutton.js" in index and (out / "_static" / "copybutton.js").is_file()
    assert (out / "_static" / "clipboard.min.js").is_file()


def test_inventories_match_their_table():
    """docs/_inv/*.inv are what docs/_inv/make_inventories.py writes (compared decompressed)."""
    spec = importlib.util.spec_from_file_location(
        "make_inventories", ROOT / "docs" / "_inv" / "make_inventories.py"
    )
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    committed = {p.stem for p in (ROOT / "docs" / "_inv").glob("*.inv")}
    assert committed == set(make.INVENTORIES)
    for name in make.INVENTORIES:
        assert make.read_inventory(ROOT / "docs" / "_inv" / f"{name}.inv") == make.inventory_lines(
            name
        ), f"docs/_inv/{name}.inv is stale: run python docs/_inv/make_inventories.py"


def test_landing_page_example_runs(capsys):
    """The example on docs/index.md runs as shown and learns the adding problem. It runs with
    JAX's standard dtype promotion, as a user's program does (Optax's Adam mixes a Python float
    with its int32 step count, which conftest.py's strict promotion rejects)."""
    import jax

    text = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    with jax.numpy_dtype_promotion("standard"):
        exec(compile(code, "docs/index.md", "exec"), {"__name__": "landing_page"})
    printed = capsys.readouterr().out
    mse = float(re.search(r"mean squared error ([0-9.]+)", printed).group(1))
    assert mse < 0.05, printed  # always answering 1 scores about 0.17

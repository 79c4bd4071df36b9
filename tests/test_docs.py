"""The documentation site builds with warnings as errors, and its pages show math and plots.

Runs ``sphinx-build -W --keep-going -b html`` on ``docs/`` into a temporary directory (what the
README's build command does), then reads the HTML: an API page typesets its ``.. math::`` blocks
with the MathJax copy shipped in ``_static`` (no network needed), and a notebook page shows its
committed plot as a PNG image. Needs the ``docs`` extra; skipped without it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
pytest.importorskip("furo")

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 900  # about 30 s on two idle cores; generous for a shared machine

# Every page of the site, by source name (``docs/<name>.md|.rst|.ipynb``).
PAGES = [
    "index",
    "getting_started",
    "notation",
    "performance",
    "changelog",
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
    assert r"\Gamma_u" in cells and "jaxrnn.cells._gated.lstm" in cells

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

    # The README is the single source of the getting-started page.
    getting_started = (out / "getting_started.html").read_text(encoding="utf-8")
    assert "Quick start" in getting_started and "API tour" in getting_started

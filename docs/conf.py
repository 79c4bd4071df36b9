"""Sphinx configuration of the jaxrnn documentation site.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (the ``docs`` extra).

The API pages are autodoc (+ napoleon for the Google-style sections) over the docstrings, which
are reST already; math is MathJax, served from a local copy so that pages render offline; the
notebooks are rendered by myst-nb from their committed outputs, never executed; references to
Python, JAX, NumPy, Flax, Optax and Orbax objects link to their documentation through
intersphinx, from inventories shipped in ``docs/_inv`` (no download, so the build works offline).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document the checkout, installed or not

from jaxrnn._version import __version__  # noqa: E402  (the checkout's, after the insert)

project = "jaxrnn"
author = "jaxrnn developers"
copyright = "jaxrnn developers, Apache-2.0"
release = version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "sphinx_copybutton",  # a copy button on every code block
    "myst_nb",  # Markdown pages (MyST) and notebooks; loads myst_parser itself
]

exclude_patterns = ["_build", "_inv", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
suppress_warnings: list[str] = []

# --- intersphinx: links into the documentation of the libraries jaxrnn builds on ----------------
# Each project's inventory is a small local file (written by docs/_inv/make_inventories.py, which
# lists the objects our docstrings and pages refer to), never downloaded: the site builds offline
# and `-W` cannot fail on an unreachable server. The URLs are where the links point.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", "_inv/python.inv"),
    "jax": ("https://docs.jax.dev/en/latest/", "_inv/jax.inv"),
    "numpy": ("https://numpy.org/doc/stable/", "_inv/numpy.inv"),
    "flax": ("https://flax.readthedocs.io/en/latest/", "_inv/flax.inv"),
    "flax_linen": ("https://flax-linen.readthedocs.io/en/latest/", "_inv/flax_linen.inv"),
    "optax": ("https://optax.readthedocs.io/en/latest/", "_inv/optax.inv"),
    "orbax": ("https://orbax.readthedocs.io/en/latest/", "_inv/orbax.inv"),
}

# --- autodoc / napoleon -----------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Signatures name jaxrnn's type aliases instead of expanding them (``kernel_init: Initializer |
# None`` rather than ``Callable[[Array, tuple[int, ...], Any], Array] | None``). Keys are the
# annotations as written (the modules use ``from __future__ import annotations``); values are
# what the signature shows and links to: the aliases are described in docs/api/types.md, and
# ``Array`` is ``jax.Array`` (a link into JAX's documentation). The other entries give objects
# that JAX, Optax and Flax define in private modules the public names their inventories list.
autodoc_type_aliases = {
    "Initializer": "Initializer",
    "PRNGKey": "PRNGKey",
    "Params": "Params",
    "Carry": "Carry",
    "Array": "jax.Array",
    "jax.Array": "jax.Array",
    "Mesh": "jax.sharding.Mesh",
    "optax.GradientTransformation": "optax.GradientTransformation",
    "nnx.Rngs": "flax.nnx.Rngs",
    "nnx.RngStream": "flax.nnx.RngStream",
    "np.ndarray": "numpy.ndarray",
    "np.dtype": "numpy.dtype",
}
# Where a public object is defined under a private name, the name its documentation uses.
_PUBLIC_NAMES = {
    "jax.jaxlib._jax.Array": "jax.Array",
    "jaxlib._jax.Array": "jax.Array",
    "jax._src.mesh.Mesh": "jax.sharding.Mesh",
    "optax._src.base.GradientTransformation": "optax.GradientTransformation",
    "flax.nnx.rnglib.Rngs": "flax.nnx.Rngs",
    "flax.nnx.rnglib.RngStream": "flax.nnx.RngStream",
    "flax.linen.module.Module": "flax.linen.Module",
}
_ALIAS_REPR = re.compile(r"TypeAliasForwardRef\('([^']*)'\)")
_PRIVATE_NAME = re.compile("|".join(rf"(?<![\w.]){re.escape(n)}(?![\w.])" for n in _PUBLIC_NAMES))
_BARE_ALIAS = {k: v for k, v in autodoc_type_aliases.items() if "." not in k and k != v}
_BARE_NAME = re.compile("|".join(rf"(?<![\w.~]){re.escape(n)}(?![\w.])" for n in _BARE_ALIAS))


# A default without a source form, e.g. Flax Linen's `parent=<flax.linen.module._Sentinel
# object>`: Sphinx cannot parse such a signature and prints it raw, `~` prefixes and all.
_OBJECT_REPR = re.compile(r"<[\w.]+ object(?: at 0x[0-9a-fA-F]+)?>")


def _fix_annotations(text: str | None) -> str | None:
    if not text:
        return text
    text = _OBJECT_REPR.sub("...", _ALIAS_REPR.sub(r"\1", text))
    text = _PRIVATE_NAME.sub(lambda m: _PUBLIC_NAMES[m.group(0)], text)
    return _BARE_NAME.sub(lambda m: _BARE_ALIAS[m.group(0)], text)


def _alias_names(app, what, name, obj, options, signature, return_annotation):
    """Type aliases and public names in every signature. Sphinx substitutes an alias that is a
    whole annotation, but inside ``X | None`` or ``tuple[X, Y]`` it leaves its placeholder's
    repr, ``TypeAliasForwardRef('X')``; where it cannot evaluate the annotations (a NamedTuple's
    fields) it leaves them as written (``Array``); and an alias evaluated at import (``Step =
    Callable[[Any, Array], ...]``) names the private module that defines ``jax.Array``. Each is
    rewritten to the name that links (``jax.Array``, shown as ``Array``), and a default that
    only has an object repr is shown as ``...``."""
    if signature is None and return_annotation is None:
        return None
    return _fix_annotations(signature), _fix_annotations(return_annotation)


python_use_unqualified_type_names = True  # `jax.Array` shows as `Array` (still linked)
python_display_short_literal_types = True  # `Literal["a", "b"]` shows as `"a" | "b"`
python_maximum_signature_line_length = 96  # longer signatures: one parameter per line
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "special-members": "__call__"}
autodoc_inherit_docstrings = False  # e.g. Flax's long Module.setup docstring on our setup()
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = False


def _source_order_within_all() -> None:
    """Members of a module with ``__all__`` in source order, not in ``__all__``'s (alphabetical)
    order: a params NamedTuple then stays next to its cell factory. Sphinx has no option for
    this; without the (private) hook the pages are still complete, only ordered by ``__all__``."""
    try:
        from sphinx.ext.autodoc._dynamic import _member_finder
    except ImportError:
        return
    sort = getattr(_member_finder, "_sort_members", None)
    if sort is None or getattr(sort, "_jaxrnn", False):
        return

    def sort_members(documenters, order, *, ignore_module_all, **kwargs):
        return sort(documenters, order, ignore_module_all=True, **kwargs)

    sort_members._jaxrnn = True
    _member_finder._sort_members = sort_members


_source_order_within_all()


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """Leave out NamedTuple fields: their generated docstring is "Alias for field number N",
    and the class docstring already describes them (an ``Attributes:`` section would otherwise
    describe each field twice)."""
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


# ``id(obj) -> documented full name``, per build environment. Kept in this process, not on the
# environment: Sphinx pickles the environment for incremental builds, and object ids mean nothing
# in the next process.
_DOCUMENTED: dict[int, dict[int, str]] = {}


def _documented_by_object(env) -> dict[int, str]:
    """``id(obj) -> documented full name`` for every object the site documents, built once."""
    cached = _DOCUMENTED.get(id(env))
    if cached is not None:
        return cached
    found: dict[int, str] = {}
    for fullname in sorted(env.get_domain("py").objects, key=len):
        obj = _lookup(fullname)
        if obj is not None and not isinstance(obj, (str, int, float, bool, type(None))):
            found.setdefault(id(obj), fullname)
    _DOCUMENTED.clear()  # one environment per build
    _DOCUMENTED[id(env)] = found
    return found


def _lookup(target: str):
    """The object ``target`` (``jaxrnn.lstm``, ``jaxrnn.train.fit``, ...) names, or ``None``."""
    parts = target.split(".")
    try:
        obj = importlib.import_module(parts[0])
        for part in parts[1:]:
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return obj


def _resolve_reexport(app, env, node, contnode):
    """Resolve ``jaxrnn.lstm``, ``jaxrnn.Layer``, ``jaxrnn.train.fit``, ... (names re-exported by
    a package) to the page that documents the object itself, whatever name it is documented
    under; likewise an unqualified name imported into the current module (``Cell`` in
    ``jaxrnn.layers``)."""
    target, module = node.get("reftarget", ""), node.get("py:module") or ""
    if node.get("refdomain") != "py":
        return None
    if not target.startswith("jaxrnn."):
        if not module.startswith("jaxrnn") or "." in target:
            return None
        target = f"{module}.{target}"  # e.g. :class:`RNN` in jaxrnn.flax's docstring
    obj = _lookup(target)
    documented = None if obj is None else _documented_by_object(env).get(id(obj))
    if documented is None or documented == target:
        return None
    py = env.get_domain("py")
    return py.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], documented, node, contnode
    )


class Family(SphinxDirective):
    """``.. jaxrnn-family:: jaxrnn.cells._gated jaxrnn [jaxrnn.cells ...]``: the docstring of a
    private implementation file, then every class and function of its ``__all__`` that it
    defines, documented under the public name users write (``jaxrnn.lstm``, as ``jr.lstm``; not
    ``jaxrnn.cells._gated.lstm``): the first of the public modules that re-exports it."""

    required_arguments = 2
    optional_arguments = 3  # further public modules, for names the first does not re-export

    def run(self):
        private, *publics = self.arguments
        module = importlib.import_module(private)
        lines = [f".. automodule:: {private}", "   :no-members:", ""]
        for name in module.__all__:
            obj = getattr(module, name)
            if getattr(obj, "__module__", None) != private:
                continue  # imported or an alias (the aliases have their own page)
            public = next(
                (m for m in publics if getattr(importlib.import_module(m), name, None) is obj),
                None,
            )
            if public is None:
                msg = f"{private}.{name} is re-exported by none of {', '.join(publics)}"
                return [self.state.document.reporter.warning(msg, line=self.lineno)]
            kind = "autoclass" if isinstance(obj, type) else "autofunction"
            lines += [f".. currentmodule:: {public}", "", f".. {kind}:: {name}", ""]
        self.state_machine.insert_input(lines, self.state_machine.input_lines.source(0))
        return []


class CliHelp(SphinxDirective):
    """``.. jaxrnn-cli-help:: demo``: the ``--help`` text of ``jaxrnn demo``, as argparse prints
    it (taken from the command line itself, so the page never goes stale)."""

    optional_arguments = 2

    def run(self):
        from jaxrnn.__main__ import main

        out, code = io.StringIO(), None
        columns = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "96"
        try:
            with contextlib.redirect_stdout(out):
                main([*self.arguments, "--help"])
        except SystemExit as e:
            code = e.code
        finally:
            if columns is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = columns
        text = out.getvalue().rstrip()
        if code not in (0, None) or not text:
            msg = f"jaxrnn {' '.join(self.arguments)} --help: exit {code}, no help text"
            return [self.state.document.reporter.warning(msg, line=self.lineno)]
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


# --- math: MathJax 3 from a local copy ----------------------------------------------------------
# The sphinx-mathjax-offline distribution (the `docs` extra) ships MathJax 3.2; the few files the
# pages load are copied into _static/mathjax at the end of the build, so math renders without
# network access. Without it, Sphinx's default (a CDN) is used.
_MATHJAX_PARTS = ("tex-chtml.js", "input/tex", "output/chtml", "ui", "a11y", "adaptors")


def _mathjax_source() -> Path | None:
    try:
        dist = metadata.distribution("sphinx-mathjax-offline")
    except metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    return path if (path / "tex-chtml.js").is_file() else None


_MATHJAX = _mathjax_source()
if _MATHJAX is not None:
    mathjax_path = "mathjax/tex-chtml.js"


def _copy_mathjax(app, exc):
    if exc is not None or _MATHJAX is None or app.builder.format != "html":
        return
    dest = Path(app.outdir) / "_static" / "mathjax"
    for part in _MATHJAX_PARTS:
        src, out = _MATHJAX / part, dest / part
        if src.is_dir():
            shutil.copytree(src, out, dirs_exist_ok=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)


# --- MyST and notebooks ---------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # render the committed outputs; tests/test_notebooks.py runs them
nb_merge_streams = True
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# --- copy button (sphinx-copybutton) -------------------------------------------------------------
# Copying a doctest block copies the code without the prompts and without the outputs; a shell
# block's `$ ` prompt is dropped too.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True
copybutton_exclude = ".linenos, .gp, .go"

# --- HTML -------------------------------------------------------------------------------------
html_theme = "furo"
html_title = "jaxrnn"
html_static_path: list[str] = []
html_show_sourcelink = False


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("autodoc-process-signature", _alias_names)
    app.connect("build-finished", _copy_mathjax)
    app.connect("missing-reference", _resolve_reexport)
    app.add_directive("jaxrnn-cli-help", CliHelp)
    app.add_directive("jaxrnn-family", Family)

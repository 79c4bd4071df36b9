"""The version of jaxrnn, in one place.

pyproject.toml reads it (``dynamic = ["version"]``), so does the documentation; the package
re-exports it as ``jaxrnn.__version__``.
"""

__version__ = "0.1.0"

"""The version of jaxrnn, in one place (pyproject reads it as its dynamic version)."""

__version__ = "0.1.0"

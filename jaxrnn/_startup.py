"""Ctrl-C and SIGTERM while the command-line tool starts.

``python -m jaxrnn`` and the ``jaxrnn`` command import the package, and JAX with it (a second
or more), before :func:`jaxrnn.__main__.main` takes over Ctrl-C and SIGTERM. :func:`guard`, the
first thing the package does, makes either signal end such a start with the tool's one line and
status 130 instead of an import traceback; :func:`release`, the first thing ``main`` does, gives
the signals back. Anything else that imports jaxrnn keeps Python's handlers: the guard applies
only while the tool starts (Python sets ``sys.argv[0]`` to ``"-m"`` while it locates the module
of ``python -m``; the command's ``argv[0]`` is its own path).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["guard", "release"]

#: Exit status of a start stopped by Ctrl-C or SIGTERM (128 + SIGINT), as the tool uses.
EXIT_INTERRUPTED = 130

_previous: dict[int, object] = {}


def _cli_starting() -> bool:
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 == "-m" or os.path.basename(argv0) == "jaxrnn"


def _stop(signum, frame) -> None:
    sys.stderr.write("jaxrnn: interrupted while starting\n")
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def guard() -> None:
    """While the command-line tool starts: Ctrl-C and SIGTERM end it with one line."""
    if not _cli_starting() or threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        _previous[signum] = signal.signal(signum, _stop)


def release() -> None:
    """Give the signals back (a no-op where :func:`guard` did nothing)."""
    while _previous:
        signum, handler = _previous.popitem()
        signal.signal(signum, handler)

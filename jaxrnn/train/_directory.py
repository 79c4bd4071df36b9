"""The checkpoint directory: checked before use, locked by one writer, shared by all processes.

A writer of :class:`~jaxrnn.train.Checkpoints` checks its directory (a directory, creatable,
writable, without symbolic links among its checkpoints: orbax deletes old steps recursively)
and holds an exclusive ``flock`` on a lock file in it for its lifetime, released by the
operating system if the process dies. Each process of a run locks its own file,
``.jaxrnn-writer-<process index>.lock``: the processes of one run do not exclude each other,
while a second run is excluded (its process 0 finds the first run's process 0 holding the
lock). With several processes, all open the directory together: if one cannot, all fail; and
every process must see what process 0 writes there (a file system every host reaches).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import tempfile

import jax

from jaxrnn.train._digest import gather_bytes
from jaxrnn.train._types import CheckpointError

try:  # POSIX advisory locks; without them (Windows) a writer takes no lock.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["check_no_links", "open_for_writing", "unlock"]

#: Name of the lock file a writer holds (one per process index, for multi-process runs).
LOCK_NAME = ".jaxrnn-writer-{}.lock"


def _error(message: str) -> Exception:
    """A :class:`jaxrnn.train.CheckpointError` with ``message``."""
    return CheckpointError(message)


def open_for_writing(directory: str) -> int | None:
    """Check the directory and lock it; with several processes, all of them together.

    Every process of a run takes its own lock file (``.jaxrnn-writer-<process>.lock``),
    so the processes of one run do not exclude each other while a second run is excluded
    (its process 0 finds the first run's process 0 holding the lock). With several
    processes, every process must reach the same directory: process 0 leaves a token file
    there which every other process must see.
    """
    problem, fd = None, None
    try:
        prepare(directory)
        fd = lock(directory)
    except CheckpointError as e:
        problem = e
    if jax.process_count() == 1:
        if problem is not None:
            raise problem
        return fd
    failed = [
        i for i, ok in enumerate(gather_bytes(b"\x00" if problem else b"\x01")) if ok == b"\x00"
    ]
    if problem is not None:
        raise problem
    if failed:
        raise _error(
            f"checkpoint directory {directory} cannot be used by process(es) "
            f"{failed} of this run (see their error)"
        )
    check_shared(directory)
    return fd


def check_shared(directory: str) -> None:
    """Every process sees the token file process 0 writes (a collective)."""
    token = gather_bytes(os.urandom(8))[0].hex()
    path = os.path.join(directory, f".jaxrnn-shared-{token}")
    if jax.process_index() == 0:
        with open(path, "w") as f:
            f.write(socket.gethostname())
    gather_bytes(b"\x01")  # a barrier: the token is written
    seen = gather_bytes(b"\x01" if os.path.exists(path) else b"\x00")
    gather_bytes(b"\x01")  # a barrier: everyone has looked
    if jax.process_index() == 0:
        with contextlib.suppress(OSError):
            os.unlink(path)
    blind = [i for i, ok in enumerate(seen) if ok == b"\x00"]
    if blind:
        raise _error(
            f"checkpoint directory {directory} is not shared by all processes of this "
            f"run: process(es) {blind} do not see what process 0 writes there; use a "
            "directory every host reaches (a shared file system)"
        )


def prepare(d: str) -> None:
    """A directory, created if missing, writable; or a :class:`CheckpointError`."""
    if os.path.lexists(d) and not os.path.isdir(d):
        raise _error(f"checkpoint directory {d} is not a directory")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        raise _error(f"cannot create checkpoint directory {d}: {e.strerror or e}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".jaxrnn-probe-", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _error(f"checkpoint directory {d} is not writable: {e.strerror or e}") from None


def lock(directory: str) -> int | None:
    """Take this process's writer lock on ``directory``: the lock file's descriptor."""
    if fcntl is None:  # pragma: no cover
        return None
    path = os.path.join(directory, LOCK_NAME.format(jax.process_index()))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _error(
            f"checkpoint directory {directory} is not writable: cannot open its lock "
            f"file {path}: {e.strerror or e}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = read_holder(fd)
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            raise _error(
                f"cannot lock checkpoint directory {directory}: {e.strerror or e}"
            ) from None
        raise _error(
            f"checkpoint directory {directory} is in use by {holder}; wait for it "
            "to finish, stop it, or use another directory"
        ) from None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd


def unlock(fd: int | None) -> None:
    """Release a lock :func:`lock` took (``None``: none was taken)."""
    if fd is not None and fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def check_no_links(directory: str, *, deep: bool) -> None:
    """Refuse symbolic links among the checkpoints: orbax deletes old steps recursively."""
    try:
        entries = list(os.scandir(directory))
    except OSError as e:
        raise _error(f"cannot list checkpoint directory {directory}: {e.strerror or e}") from None
    for entry in entries:
        if not entry.name[:1].isdigit():
            continue
        if entry.is_symlink():
            raise _error(
                f"checkpoint directory {directory} holds a symbolic link {entry.path} "
                "where a checkpoint belongs; replace it by a copy (checkpoints are deleted "
                "recursively, never through links)"
            )
        if deep and entry.is_dir(follow_symlinks=False):
            for root, dirs, files in os.walk(entry.path):
                for name in dirs + files:
                    if os.path.islink(os.path.join(root, name)):
                        raise _error(
                            f"checkpoint {entry.path} holds a symbolic link "
                            f"{os.path.join(root, name)}; replace it by a copy (checkpoints "
                            "are deleted recursively, never through links)"
                        )


def read_holder(fd: int) -> str:
    """Who holds a lock file, from the JSON its holder wrote into it."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} (host {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file names none)"

"""Checkpoints: atomic, verified saves of a :class:`~jaxrnn.train.TrainState` with orbax.

:class:`Checkpoints` wraps orbax-checkpoint's ``CheckpointManager`` (atomic saves, the last
``k`` kept) and stores next to each state JSON metadata: digests of the state (a SHA-256 per
process, of what it holds, and one that does not depend on the layout: see
``jaxrnn.train._digest``), the structure, dtype and shape of every leaf, the run's
configuration and the metric :class:`~jaxrnn.train.History`. Any number of processes save
and restore together, onto any layout. Nothing is lost and
nothing is silent: a writer holds an exclusive lock on its directory for its lifetime, a step
that already exists with other contents is an error, and a checkpoint that cannot be restored
exactly (unreadable, failing its digest, of another structure) raises :class:`CheckpointError`.
Typed PRNG keys are stored as their raw ``uint32`` data and re-wrapped on restore.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxrnn._checks import check_size
from jaxrnn.train import _digest, _directory
from jaxrnn.train._types import CheckpointError, History, TrainState

__all__ = ["CheckpointError", "Checkpoints"]

#: Test hook, for the test suite only (``tests/test_reliability_checkpoints.py``): with
#: ``JAXRNN_TEST_KILL_IN_SAVE="<step>:<point>"`` in the environment when this module is
#: imported, the save of checkpoint ``<step>`` kills its own process (``SIGKILL``) at
#: ``<point>`` of the write, to prove that a crash there loses nothing. The points, in the
#: order a save reaches them, name orbax's temporary directories: ``create:<item>`` (made,
#: nothing written in it by the item yet) and ``finalize:<item>`` (all written, not yet
#: committed by its rename), for the items ``state`` and ``meta`` and the step's own directory
#: ``step`` (see :data:`KILL_POINTS`). Unset, as always outside the tests, it costs nothing:
#: orbax's own temporary directories are used, untouched.
_KILL_IN_SAVE = os.environ.get("JAXRNN_TEST_KILL_IN_SAVE") or None

#: The points of a save where the test hook (``JAXRNN_TEST_KILL_IN_SAVE``) can kill.
KILL_POINTS = (
    "create:step",
    "create:meta",
    "create:state",
    "finalize:meta",
    "finalize:state",
    "finalize:step",
)


def _is_key(x) -> bool:
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct) and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def _to_saveable(tree):
    """Typed PRNG keys -> their raw ``uint32`` data (what a checkpoint can store)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract(tree):
    """The saveable structure of ``tree`` as ``ShapeDtypeStruct`` leaves, shardings kept."""

    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(x):
        # Abstract leaves without a placement (``jax.eval_shape``) go to this process's first
        # device, whatever mesh the checkpoint was saved from.
        sharding = getattr(x, "sharding", None) or default
        if _is_key(x):
            shape = jax.eval_shape(jax.random.key_data, x)
            return jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding)
        return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x), sharding=sharding)

    return jax.tree.map(leaf, tree)


def _from_saveable(restored, template):
    def leaf(r, t):
        if _is_key(t):
            # A concrete key knows its implementation; an abstract one keeps it in its dtype
            # (a private attribute: fall back to the default implementation without it).
            if isinstance(t, jax.Array):
                impl = jax.random.key_impl(t)
            else:
                impl = getattr(t.dtype, "_impl", None) or jax.config.jax_default_prng_impl
            return jax.random.wrap_key_data(r, impl=impl)
        return r

    return jax.tree.map(leaf, restored, template)


def _leaf_name(path) -> str:
    return jax.tree_util.keystr(path).lstrip(".")


def _tree_spec(saveable) -> list[list[Any]]:
    """``[[leaf path, dtype name, shape], ...]`` of a saveable tree (concrete or abstract)."""
    return [
        [_leaf_name(path), np.dtype(leaf.dtype).name, list(np.shape(leaf))]
        for path, leaf in jax.tree_util.tree_flatten_with_path(saveable)[0]
    ]


def _killing_path(spec: str):
    """The test hook's orbax temporary-path class: ``AtomicRenameTemporaryPath`` (orbax's
    default on local disks), killing this process at the point ``spec`` names
    (``"<step>:<point>"``, see ``_KILL_IN_SAVE``)."""
    import signal

    from orbax.checkpoint._src.path import atomicity

    step, _, point = spec.partition(":")
    if not step.isdigit() or point not in KILL_POINTS:
        raise ValueError(
            f"JAXRNN_TEST_KILL_IN_SAVE: expected '<step>:<point>', the point one of "
            f"{KILL_POINTS}, got {spec!r}"
        )

    class KillingTemporaryPath(atomicity.AtomicRenameTemporaryPath):
        def _reached(self, event: str) -> None:
            final = self.get_final()
            if final.name == step:
                item = "step"
            elif final.name in ("state", "meta") and final.parent.name.split(".")[0] == step:
                item = final.name  # inside the step's temporary directory
            else:
                return
            if f"{event}:{item}" == point:
                os.kill(os.getpid(), signal.SIGKILL)

        async def create(self, *args, **kwargs):
            path = await super().create(*args, **kwargs)
            self._reached("create")
            return path

        async def finalize(self, *args, **kwargs):
            self._reached("finalize")
            return await super().finalize(*args, **kwargs)

    return KillingTemporaryPath


def _check_keep(max_to_keep) -> int | None:
    """``max_to_keep``: a positive int (:func:`jaxrnn._checks.check_size`) or ``None``."""
    if max_to_keep is None:
        return None
    try:
        return check_size("max_to_keep", max_to_keep)
    except ValueError:
        raise ValueError(
            f"max_to_keep must be a positive int or None, got {max_to_keep!r}"
        ) from None


def _check_directory(directory) -> str:
    """``directory`` as a ``str`` path: not empty or blank (``''`` would be the current
    directory), without NUL characters."""
    try:
        path = os.fsdecode(os.fspath(directory))
    except TypeError:
        raise TypeError(
            f"directory must be a path (str or os.PathLike), got {type(directory).__name__}"
        ) from None
    if not path.strip() or "\0" in path:
        raise ValueError(f"directory must be a non-empty path without NUL characters, got {path!r}")
    return path


def _check_config(config) -> dict[str, Any] | None:
    """``config`` as the JSON it is stored as: a JSON-serialisable mapping, or ``None``."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise TypeError(
            f"config must be a JSON-serialisable mapping (a dict) or None, got "
            f"{type(config).__name__}"
        )
    try:
        return json.loads(json.dumps(config))
    except (TypeError, ValueError, RecursionError) as e:
        raise TypeError(
            f"config must be a JSON-serialisable mapping (a dict) or None: {_one_line(e)}"
        ) from None


#: How tensorstore names the operating system's error inside its messages.
_OS_ERROR_CODE = re.compile(r"\[os_error_code='?(\d+)'?\]")


def _write_problem(error: BaseException) -> str:
    """What went wrong in a write, in a few words: the operating system's error where there
    is one (``No space left on device (ENOSPC)``), else the first line of the message."""
    code = error.errno if isinstance(error, OSError) and error.errno else None
    match = _OS_ERROR_CODE.search(str(error))
    if code is None and match:
        code = int(match.group(1))
    if code:
        return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    return f"{type(error).__name__}: {_one_line(error)}"


#: Annotations tensorstore appends to its messages (``[source locations='...']``,
#: ``[tensorstore_spec='{...}']``: kilobytes of JSON), dropped from ours.
_ANNOTATION = re.compile(r"\s*\[\w[\w ]*='(?:[^']|'(?!\]))*'\]")


def _one_line(text: str, limit: int = 300) -> str:
    """The first line of ``text``, without tensorstore's annotations, at most ``limit`` long."""
    text = _ANNOTATION.sub("", str(text)).strip()
    line = text.splitlines()[0] if text else ""
    line = line.split(" See full TensorStore details")[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Checkpoints:
    """Periodic, atomic, verified checkpoints of a :class:`TrainState` with orbax-checkpoint.

    Each checkpoint is a directory ``<directory>/<step>`` written atomically by orbax's
    ``CheckpointManager`` (to a temporary name, renamed when complete; only the last
    ``max_to_keep`` are kept). Next to the state it stores JSON metadata: the step, digests
    of the state (a SHA-256 per process, of the shards it holds, and a layout-free digest of
    the whole state), the path, dtype and shape of every leaf, the run's ``config`` and the
    metric :class:`History` so far.

    With several processes (``jax.distributed``), every process constructs the writer, saves
    and restores together (these are collectives), in a directory every host reaches (checked
    when a writer opens it); each process takes its own lock file.

    Nothing is lost silently:

    * A writer (``read_only=False``, the default) checks its directory when constructed (a
      directory, creatable, writable, without symbolic links among its checkpoints) and holds
      an exclusive lock on it until :meth:`close` (an ``flock`` on a lock file, released by the
      operating system if the process dies): a second writer fails at once, naming the pid,
      host and start time of the first.
    * :meth:`save` of a step that exists already is a no-op if the stored digest is the new
      state's, and a :class:`CheckpointError` if not.
    * :meth:`restore` compares the stored structure, dtypes and shapes with the template's
      (naming the first leaf that differs), then verifies the digests, never skipping them:
      each process its own SHA-256 when the layout is the one saved, all processes the
      layout-free digest together otherwise (another number of processes, other shards). A
      checkpoint that cannot be read, does not match its digest or carries none to check
      raises :class:`CheckpointError`; only a directory without any checkpoint means "start
      from scratch" (see :meth:`resume`).

    Args:
        directory: where checkpoints live (created if missing, unless ``create=False``).
        save_every: :func:`fit` saves when ``step % save_every == 0`` (and at the end); a
            positive int.
        max_to_keep: how many of the latest checkpoints to keep: a positive int, or ``None``
            for all.
        config: a JSON-serialisable mapping describing the run, stored with every checkpoint (for
            example the model's hyperparameters and vocabulary, to rebuild it for sampling).
        create: create ``directory`` if it does not exist; otherwise a missing directory is a
            ``FileNotFoundError``.
        read_only: open for reading only: no lock is taken, nothing is written or deleted and
            :meth:`save` raises. Default: ``not create`` (``Checkpoints(d, create=False)`` is a
            reader, e.g. for sampling while another process trains).
        verify: verify every restored state against its stored digest (default). ``False``
            restores checkpoints without a digest, or failing it, as they are: dangerous,
            corrupt weights are then restored silently. Only for salvaging data by hand.

    Raises:
        CheckpointError: if the directory is not a directory, cannot be created or written,
            holds symbolic links among its checkpoints, or another writer holds it.
        FileNotFoundError: with ``create=False``, if the directory does not exist.
        ValueError: if ``save_every`` or ``max_to_keep`` is not a positive int, or
            ``directory`` is empty or blank (``''`` is not taken for the current directory).
        TypeError: if ``config`` is not a JSON-serialisable mapping (or ``None``), or
            ``directory`` not a path.

    >>> import tempfile, jax, jax.numpy as jnp, optax, jaxrnn.train as jt
    >>> state = jt.init_state({"w": jnp.ones(3)}, optax.adam(0.1), jax.random.key(0))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with jt.Checkpoints(tmp, config={"note": "demo"}) as ckpt:
    ...         _ = ckpt.save(state)
    ...     with jt.Checkpoints(tmp, create=False) as ckpt:
    ...         restored, history = ckpt.resume(state)
    ...         (ckpt.steps(), ckpt.metadata()["config"], restored.params["w"].tolist())
    ([0], {'note': 'demo'}, [1.0, 1.0, 1.0])
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every: int = 100,
        max_to_keep: int | None = 3,
        config: Mapping[str, Any] | None = None,
        create: bool = True,
        read_only: bool | None = None,
        verify: bool = True,
    ):
        self._manager = None
        self._lock_fd: int | None = None
        self.directory = os.path.abspath(_check_directory(directory))
        self.save_every = check_size("save_every", save_every)
        self.max_to_keep = _check_keep(max_to_keep)
        self.read_only = (not create) if read_only is None else bool(read_only)
        self.verify = bool(verify)
        self.config = _check_config(config)
        if not create and not os.path.isdir(self.directory):
            if os.path.lexists(self.directory):
                raise CheckpointError(f"checkpoint directory {self.directory} is not a directory")
            raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
        try:
            if not self.read_only:
                self._lock_fd = _directory.open_for_writing(self.directory)
            _directory.check_no_links(self.directory, deep=True)
            # A reader is read-only by our own guard in save(); orbax's read_only mode would
            # only log warnings about the options it overrides.
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.max_to_keep,
                create=False,  # created above, with a clear error if it cannot be
                enable_async_checkpointing=False,  # the next step donates the buffers saved
                # Leftovers of a save interrupted by a crash; only the writer may remove them
                # (a reader would delete the temporary directory of a save in progress).
                cleanup_tmp_directories=not self.read_only,
                temporary_path_class=_killing_path(_KILL_IN_SAVE) if _KILL_IN_SAVE else None,
            )
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except BaseException:
            self.close()
            raise

    # Context manager and cleanup.
    def close(self) -> None:
        """Wait for pending writes, release the manager and the directory's lock."""
        try:
            if self._manager is not None:
                manager, self._manager = self._manager, None
                manager.close()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        _directory.unlock(fd)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # A writer dropped without close() releases its lock when collected (the operating
        # system releases it anyway when the process ends). No contextlib here: at interpreter
        # exit, module globals may already be gone.
        try:  # noqa: SIM105
            self._unlock()
        except Exception:
            pass

    def _active(self) -> ocp.CheckpointManager:
        if self._manager is None:
            raise CheckpointError(f"checkpoints of {self.directory} were closed")
        return self._manager

    def steps(self) -> list[int]:
        """Steps of the checkpoints on disk, ascending.

        Raises:
            CheckpointError: if a checkpoint is a symbolic link.
        """
        _directory.check_no_links(self.directory, deep=False)
        manager = self._active()
        manager.reload()
        return sorted(manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest checkpoint's step, or ``None`` if there is none."""
        steps = self.steps()
        return steps[-1] if steps else None

    def should_save(self, step: int) -> bool:
        """Whether :func:`fit` saves after reaching ``step``."""
        return step % self.save_every == 0

    def step_path(self, step: int) -> str:
        """The directory of the checkpoint of ``step``."""
        return os.path.join(self.directory, str(step))

    def save(self, state: TrainState, *, history: History | None = None) -> bool:
        """Save ``state`` as the checkpoint of step ``int(state.step)`` (blocking).

        In a multi-process run every process must call it (the digests are gathered).

        Returns:
            ``True`` if written; ``False`` if that step is already saved with the same contents
            (its digest equals the state's; nothing written).

        Raises:
            CheckpointError: if the step exists with other contents, the directory was opened
                read-only, a checkpoint in it is a symbolic link, or the write fails (a full
                disk, say: the message names the operating system's error; the checkpoints
                saved before are intact).
        """
        if self.read_only:
            raise CheckpointError(f"checkpoint directory {self.directory} was opened read-only")
        step = int(state.step)
        saveable = _to_saveable(state)
        digests, layouts = _digest.process_digests(saveable)
        content = _digest.content_digest(saveable)
        _directory.check_no_links(self.directory, deep=True)
        exists = step in self.steps()
        if len(set(_digest.gather_bytes(b"\x01" if exists else b"\x00"))) > 1:
            raise CheckpointError(
                f"the processes of this run disagree whether step {step} exists in "
                f"{self.directory}: every process must reach the same directory"
            )
        if exists:
            meta = self.metadata(step)
            stored = _stored_content(meta)
            # The layout-free digest where stored (saved by any number of processes).
            same = stored == content if stored is not None else _stored_digests(meta) == digests
            if same:
                return False
            raise CheckpointError(
                f"step {step} already exists in {self.directory} with other contents"
                + ("" if _has_digest(meta) else " (or without a digest to compare)")
                + f"; refusing to overwrite it (remove {self.step_path(step)} to save anew)"
            )
        meta = {
            "step": step,
            "digest": {"sha256": digests, "layout": layouts, "content": content},
            # The single-process digest under its former name, for readers of 0.2 checkpoints.
            "checksum": digests["0"] if len(digests) == 1 else None,
            "tree": _tree_spec(saveable),
            "config": self.config,
            "history": None if history is None else history.to_json(),
        }
        manager = self._active()
        try:
            manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(saveable), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
            manager.wait_until_finished()
        except Exception as e:
            raise CheckpointError(
                f"cannot save the checkpoint of step {step} in {self.directory}: "
                f"{_write_problem(e)}; the checkpoints saved before are intact"
            ) from e
        return True

    def _fail(self, step: int, reason: str, cause: BaseException | None = None):
        older = [s for s in self.steps() if s < step]
        hint = (
            f"remove {self.step_path(step)} to resume from step {older[-1]}"
            if older
            else "no older checkpoint exists; remove the directory to start from scratch"
        )
        detail = f" ({type(cause).__name__}: {_one_line(cause)})" if cause is not None else ""
        raise CheckpointError(
            f"checkpoint of step {step} in {self.directory} cannot be restored: {reason}"
            f"{detail}. Refusing to continue from anything else; {hint}."
        ) from cause

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The JSON metadata of checkpoint ``step`` (default: the latest).

        Raises:
            CheckpointError: if there is no checkpoint or its metadata is unreadable.
        """
        step = self._resolve(step)
        try:
            restored = self._active().restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
            meta = restored.meta
        except Exception as e:
            self._fail(step, "its metadata is unreadable", e)
        if not isinstance(meta, Mapping):
            self._fail(step, "its metadata is not a JSON object")
        meta = dict(meta)
        if meta.get("step") != step or isinstance(meta.get("step"), bool):
            self._fail(step, f"its metadata names step {meta.get('step')!r}")
        return meta

    def history(self, step: int | None = None) -> History:
        """The :class:`History` stored with checkpoint ``step`` (default: the latest).

        Raises:
            CheckpointError: if there is no such checkpoint or its history is malformed.
        """
        meta = self.metadata(step)
        stored = meta.get("history")
        if stored is None:
            return History()
        try:
            return History.from_json(stored)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self._fail(meta["step"], "its stored history is malformed", e)

    def _resolve(self, step: int | None) -> int:
        steps = self.steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no checkpoint in {self.directory}")
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"no checkpoint of step {step} in {self.directory}: {steps}")
        return step

    def _check_template(self, step: int, meta: Mapping[str, Any], abstract) -> None:
        stored = meta.get("tree")
        if stored is None:
            return  # written before 0.3: orbax's own checks apply
        if not isinstance(stored, list) or not all(
            isinstance(r, list)
            and len(r) == 3
            and isinstance(r[0], str)
            and isinstance(r[1], str)
            and isinstance(r[2], list)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in r[2])
            for r in stored
        ):
            self._fail(step, "its stored tree description is malformed")
        expected = _tree_spec(abstract)
        held = {name: (dtype, tuple(shape)) for name, dtype, shape in stored}
        wanted = {name: (dtype, tuple(shape)) for name, dtype, shape in expected}
        where = f"checkpoint of step {step} in {self.directory}"
        extra = [n for n in held if n not in wanted]
        missing = [n for n in wanted if n not in held]
        if extra or missing:
            parts = []
            if extra:
                parts.append(f"it holds {_listing(extra)} which the template lacks")
            if missing:
                parts.append(f"the template has {_listing(missing)} which it lacks")
            raise CheckpointError(
                f"{where} has another structure than the template: " + "; ".join(parts)
            )
        diffs = [n for n in wanted if held[n] != wanted[n]]
        if diffs:
            n = diffs[0]
            (d0, s0), (d1, s1) = held[n], wanted[n]
            more = {1: "", 2: " (1 more leaf differs)"}.get(
                len(diffs), f" ({len(diffs) - 1} more leaves differ)"
            )
            raise CheckpointError(
                f"{where} holds {d0} {n} {s0}, the template expects {d1} {n} {s1}{more}; "
                "the checkpoint itself is intact: restore it into a model built as it was"
            )

    def restore(
        self, template: TrainState, *, step: int | None = None, verify: bool | None = None
    ) -> TrainState:
        """Restore checkpoint ``step`` (default: the latest) into the structure of ``template``.

        ``template`` is a :class:`TrainState` of the same structure (e.g. a freshly
        initialised one, or ``jax.eval_shape`` of one); the restored arrays get its shardings
        (leaves without one, as from ``jax.eval_shape``, land on this process's first device):
        a checkpoint restores onto any layout, e.g. one saved by 2 processes into 1, or from
        replicated onto split parameters (:func:`~jaxrnn.train.state_shardings` of a
        template gives the layout of a mesh). Under a mesh with explicit axes a restored array
        has its template's type, so a train step compiled for the template takes it as it is.

        Args:
            template: the structure, dtypes, shapes and shardings to restore into.
            step: which checkpoint (default: the latest).
            verify: override the ``verify`` given to the constructor for this call; ``False``
                skips the digest check (dangerous: see :class:`Checkpoints`).

        Raises:
            CheckpointError: if there is no such checkpoint, it cannot be read, its structure,
                dtypes or shapes differ from ``template``'s (naming the first leaf that
                differs), its contents fail their digest, or (when verifying) it carries none.
        """
        verify = self.verify if verify is None else bool(verify)
        step = self._resolve(step)
        _directory.check_no_links(self.directory, deep=True)
        meta = self.metadata(step)
        abstract = _abstract(template)
        self._check_template(step, meta, abstract)
        expected, content = _stored_digests(meta), _stored_content(meta)
        if verify and expected is None and content is None:
            self._fail(
                step,
                "it carries no digest of its state, so its contents cannot be verified "
                "(restore(..., verify=False) skips the check: dangerous, corrupt weights are "
                "then restored silently)",
            )
        try:
            restored = self._active().restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
            saveable = restored.state
        except Exception as e:
            self._fail(step, "reading the state failed", e)
        if verify:
            self._verify(step, meta, saveable)
        state = _from_saveable(saveable, template)
        if int(state.step) != step:
            self._fail(step, f"the state inside says step {int(state.step)}")
        return state

    def _verify(self, step: int, meta: Mapping[str, Any], saveable) -> None:
        """Check the restored ``saveable`` against the digests stored in ``meta``.

        Restored onto the layout it was saved from, each process checks the SHA-256 of its
        own part; onto another layout (another number of processes, other shards), all check
        the layout-free digest together. Never skipped: a checkpoint that allows neither
        fails.
        """
        expected, content = _stored_digests(meta), _stored_content(meta)
        layouts = meta["digest"].get("layout") if isinstance(meta.get("digest"), Mapping) else None
        digest, layout = _digest.local_digest(saveable)
        me = str(jax.process_index())
        same_layout = (
            expected is not None
            and len(expected) == jax.process_count()
            and (not isinstance(layouts, Mapping) or layouts.get(me) == layout)
        )
        if _digest.all_processes(same_layout):
            ok = _digest.all_processes(digest == expected.get(me))
        elif content is not None:
            ok = _digest.content_digest(saveable) == content
        else:
            self._fail(
                step,
                f"it was saved by {len(expected)} process(es) and is restored by "
                f"{jax.process_count()} (or onto other shards), and carries no layout-free "
                "digest to verify it with (verify=False skips the check)",
            )
        if not ok:
            self._fail(step, "its contents do not match the digest saved with it (corrupt)")

    def resume(self, template: TrainState) -> tuple[TrainState, History]:
        """The latest checkpoint and its history, or ``(template, History())`` if none exists.

        An empty directory is an explicit fresh start; a directory whose latest checkpoint is
        unreadable is an error (:class:`CheckpointError`), never a silent restart.
        (:func:`fit` given these checkpoints and no ``history`` also picks the history up from
        the checkpoint of its starting step.)
        """
        latest = self.latest_step()
        if latest is None:
            return template, History()
        state = self.restore(template, step=latest)
        return state, self.history(latest)


def _listing(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _stored_content(meta: Mapping[str, Any]) -> str | None:
    """The layout-free digest stored in ``meta`` (absent before multi-process support)."""
    digest = meta.get("digest")
    content = digest.get("content") if isinstance(digest, Mapping) else None
    return content if isinstance(content, str) else None


def _has_digest(meta: Mapping[str, Any]) -> bool:
    return _stored_digests(meta) is not None or _stored_content(meta) is not None


def _stored_digests(meta: Mapping[str, Any]) -> dict[str, str] | None:
    """The per-process digests stored in ``meta`` (a 0.2 checksum counts as process 0's)."""
    digest = meta.get("digest")
    if isinstance(digest, Mapping) and isinstance(digest.get("sha256"), Mapping):
        table = digest["sha256"]
        if table and all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
            return dict(table)
        return None
    checksum = meta.get("checksum")
    return {"0": checksum} if isinstance(checksum, str) else None

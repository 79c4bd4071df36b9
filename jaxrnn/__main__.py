"""Command line: ``python -m jaxrnn demo`` and ``python -m jaxrnn sample`` (also ``jaxrnn ...``).

``demo`` trains a character-level language model (an LSTM by default) on the source code of
part of the Python standard library, or on any text file, shows a progress bar, and prints
generated text. With ``--checkpoint-dir`` it saves checkpoints and resumes from the latest one.
``sample`` generates text from a checkpoint directory written by ``demo``.

Everything the command line is given is checked before any data is read or any step is
trained: option values (positive sizes, finite rates and temperatures), then the checkpoint
directory, then the corpus (a regular UTF-8 file under ``--max-corpus-bytes``), then the prompt
against the vocabulary and, when resuming, the corpus against the digest stored in the
checkpoint. The corpus of a resumed run is always the one given now (``--corpus``, or the
standard-library default), never a path read from the checkpoint.

A failure is one line on stderr, ``jaxrnn <command>: error: ...``, with exit status 2 for a
usage error (an invalid option value, a prompt the vocabulary cannot encode) and 1 for
everything else (unreadable corpus or checkpoint, settings that differ from the checkpoint's,
``--steps`` at or below the checkpoint's step: "nothing to train"). Ctrl-C or SIGTERM stops
with one line and status 130 (training saves a checkpoint first when the library supports it),
at any moment, joining a ``--distributed`` job included (which gives up after
``--coordinator-timeout`` seconds). Without ``--debug`` an error is always exactly one line:
library logging, warnings and late clean-up noise are silenced and long library messages
summarised. ``jaxrnn --debug ...`` shows the full traceback instead. ``--length`` and
``--num-samples`` of any size run in bounded memory (long samples stream).

Run ``python -m jaxrnn demo --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import signal
import sys
import threading
import time

from jaxrnn import _startup
from jaxrnn._cli_options import _MODEL_OPTIONS, _REGULARISERS, _parser

_START = time.perf_counter()

#: Exit status of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """An invalid combination of options found after parsing (exit status 2)."""


# --------------------------------------------------------------------------------------------
# Checks that need the checkpoint directory, the corpus or the vocabulary.


def _check_prompt(prompt: str, vocab, where: str) -> None:
    """A :class:`UsageError` if ``prompt`` has characters outside ``vocab``."""
    missing = sorted(set(prompt) - set(vocab.tokens))
    if missing:
        raise UsageError(
            f"--prompt {prompt!r}: {len(missing)} character(s) not in the vocabulary of "
            f"{where} ({vocab.size} characters): {''.join(missing)[:40]!r}; choose a --prompt "
            "made of characters of the corpus"
        )


def _short(value, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters: metadata is shown as data, never used."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_enough_text(text: str, config, corpus: str) -> None:
    from jaxrnn import data

    train, _ = data.split_text(text, config.val_fraction)
    needed = (config.batch_size + 1) * config.seq_len
    if len(train) < needed:
        total = math.ceil(needed / (1.0 - config.val_fraction)) + 1
        raise ValueError(
            f"{corpus}: {len(text):,} characters are too few for --batch-size "
            f"{config.batch_size} and --seq-len {config.seq_len}: training needs at least "
            f"{needed:,} characters after holding out {config.val_fraction:.0%} for validation "
            f"(about {total:,} in all); use a longer corpus or smaller --batch-size/--seq-len"
        )


# --------------------------------------------------------------------------------------------
# The commands.


#: Bytes that sampling may hold at once (token ids, keys and text); past it, samples are
#: generated a group of rows at a time, and a sample longer than that alone streams.
SAMPLE_MEMORY = 256 * 2**20

#: Tokens per piece of a streamed sample (each a compiled scan; Ctrl-C is seen between them).
SAMPLE_CHUNK = 8192


def _rows_at_once(model, vocab, length: int) -> int:
    """How many samples of ``length`` tokens fit in :data:`SAMPLE_MEMORY` at once (0: none)."""
    import jax
    import numpy as np

    carry = jax.eval_shape(lambda: model.initial_carry((1,)))
    state = sum(np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize for x in jax.tree.leaves(carry))
    # Per row: int32 ids twice (scanned, then transposed) and up to 16 bytes a character of
    # text while decoding; the carry and a few rows of logits. Shared: one key per step.
    per_row = 24 * length + 4 * int(state) + 16 * vocab.size
    return max(0, (SAMPLE_MEMORY - 8 * length) // per_row)


def _print_samples(model, params, vocab, args, *, seed: int) -> None:
    """Print ``--num-samples`` samples of ``--length`` characters, within bounded memory.

    All samples at once when they fit in :data:`SAMPLE_MEMORY` (one :func:`jaxrnn.models.sample`
    call); otherwise in groups of rows (group ``g`` drawing from ``fold_in(key, g)``), and a
    sample too long for that alone is streamed to stdout :data:`SAMPLE_CHUNK` characters at a
    time. Any ``--length`` and ``--num-samples`` therefore run in bounded memory.
    """
    import jax
    import numpy as np

    from jaxrnn.models import sample
    from jaxrnn.models.language_model import _sample_chunks

    prompt_ids = vocab.encode(args.prompt)
    key = jax.random.key(seed)
    total, length = args.num_samples, args.length

    def header(k: int) -> None:
        print(
            f"--- sample {k + 1} of {total} (temperature {args.temperature}, "
            f"prompt {args.prompt!r}) ---"
        )

    rows = _rows_at_once(model, vocab, length)
    if rows >= 1:
        for group, first in enumerate(range(0, total, rows)):
            count = min(rows, total - first)
            ids = sample(
                model,
                params,
                key if count == total else jax.random.fold_in(key, group),
                prompt_ids,
                length,
                temperature=args.temperature,
                num_samples=count,
            )
            for k, row in enumerate(np.asarray(ids)):
                header(first + k)
                print(args.prompt + vocab.decode(row))
            sys.stdout.flush()
        return
    for k in range(total):
        header(k)
        sys.stdout.write(args.prompt)
        pieces = _sample_chunks(
            model,
            params,
            jax.random.fold_in(key, k),
            prompt_ids,
            length,
            temperature=args.temperature,
            chunk=SAMPLE_CHUNK,
        )
        for tokens in pieces:
            sys.stdout.write(vocab.decode(tokens))
            sys.stdout.flush()
        sys.stdout.write("\n")
    sys.stdout.flush()


def _resume_config(directory: str, step: int, overrides: dict):
    """The stored run's :class:`CharLMConfig` and corpus record; clashes with options raise.

    The metadata is validated by :func:`jaxrnn.models.stored_run` (a ``CheckpointError`` for
    anything unknown or malformed); nothing in it is acted on.
    """
    from jaxrnn.models import stored_run

    stored_config, meta = stored_run(directory, step=step)
    clashes = [
        f"--{k.replace('_', '-')} {v} (checkpoint: {getattr(stored_config, k)})"
        for k, v in overrides.items()
        if getattr(stored_config, k) != v
    ]
    if clashes:
        raise ValueError(f"{directory} holds a run with other settings: " + ", ".join(clashes))
    return stored_config, meta["config"]["corpus"]


def _open_checkpoints(args, overrides: dict, config):
    """Check the directory, read its latest checkpoint's settings: ``(config, latest, corpus)``.

    The writer is opened (and closed) here, before any data is read, so that a directory that
    cannot hold checkpoints (not a directory, uncreatable, unwritable: ``Checkpoints`` checks)
    or one in use by another run fails at start.
    """
    from jaxrnn.train import Checkpoints

    directory = os.path.abspath(args.checkpoint_dir)
    with Checkpoints(directory, save_every=args.save_every) as ckpt:
        latest = ckpt.latest_step()
    if latest is None:
        print(f"no checkpoint in {directory}: starting from scratch")
        if args.steps is not None:
            config = dataclasses.replace(config, steps=args.steps)
        return config, None, None
    config, stored_corpus = _resume_config(directory, latest, overrides)
    target = config.steps if args.steps is None else args.steps
    if target <= latest:
        given = f"--steps {args.steps}" if args.steps is not None else f"its {target} steps"
        raise ValueError(
            f"nothing to train: the checkpoint in {directory} is at step {latest}, {given}; "
            "pass a larger --steps to train on, or use `jaxrnn sample --checkpoint-dir "
            f"{directory}` to generate text"
        )
    print(f"resuming from {directory} at step {latest}")
    if args.steps is not None and args.steps > config.steps:
        print(
            f"note: training past the schedule's {config.steps} steps, at its final learning rate"
        )
    return config, latest, stored_corpus


def _read_corpus(args: argparse.Namespace) -> tuple[str, str, str, str]:
    """``(text, name, description, where)`` of ``--corpus`` (or the built-in default)."""
    from jaxrnn import data

    if args.corpus is None:
        text, name = data.stdlib_corpus(), "stdlib"
        described = f"the source of {len(data.STDLIB_MODULES)} Python standard-library modules"
        return text, name, described, "the default corpus"
    name = os.path.abspath(args.corpus)
    try:
        text = data.load_text(name, max_bytes=args.max_corpus_bytes)
    except ValueError as e:
        raise ValueError("--corpus " + str(e).removeprefix("load_text: ")) from e
    except OSError as e:
        raise ValueError(f"--corpus {name!r}: {e.strerror or e}") from e
    return text, name, name, f"--corpus {name!r}"


def _print_losses(history, end_step: int, train_time: float) -> None:
    """The first and last training loss, the last validation loss, and the training time."""
    from jaxrnn.models import bits_per_char

    losses = history.train.get("loss", [])
    if losses:
        line = f"step {end_step}: train loss {losses[0]:.3f} (step 1) -> {losses[-1]:.3f}"
        if history.eval.get("loss"):
            val = history.eval["loss"][-1]
            line += f", validation loss {val:.3f} nats/char ({bits_per_char(val):.2f} bits/char)"
        print(line + f"; training took {train_time:.1f} s")


def _demo(args: argparse.Namespace) -> int:
    from jaxrnn import data
    from jaxrnn.models import CharLMConfig, train_char_lm

    overrides = {k: getattr(args, k) for k in _MODEL_OPTIONS if getattr(args, k) is not None}
    config = CharLMConfig(**overrides)
    stored_corpus = None
    if args.checkpoint_dir is not None:
        # Resume: the run's settings come from the checkpoints; options given now must agree.
        config, _, stored_corpus = _open_checkpoints(args, overrides, config)
    elif args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)

    # The corpus is always the user's (or the built-in default), never a path from metadata.
    text, name, described, where = _read_corpus(args)
    if stored_corpus is not None and data.text_digest(text) != stored_corpus["sha256"]:
        raise ValueError(
            f"{os.path.abspath(args.checkpoint_dir)} was trained on another corpus (recorded "
            f"as {_short(stored_corpus.get('source'))}, {_short(stored_corpus.get('chars'))} "
            f"characters) than {where} ({len(text):,} characters); to resume, pass --corpus "
            "with the same text, or use another --checkpoint-dir"
        )
    _check_enough_text(text, config, where)
    vocab = data.Vocab.from_text(text)
    _check_prompt(args.prompt, vocab, where)
    rates = "".join(
        f", {k.replace('_', ' ')} {getattr(config, k):g}"
        for k in _REGULARISERS
        if getattr(config, k) > 0
    )
    print(
        f"jaxrnn demo: {config.cell} language model (hidden {config.hidden_size}, "
        f"{config.num_layers} layer(s), {config.dtype} matmuls{rates}) on {described}: "
        f"{len(text):,} characters, "
        f"vocabulary {vocab.size}; batch {config.batch_size} x {config.seq_len} characters"
    )
    sys.stdout.flush()

    t_train = time.perf_counter()
    run = train_char_lm(
        text,
        config,
        corpus=name,
        stop_at=args.steps,
        checkpoint_dir=args.checkpoint_dir,
        save_every=args.save_every,
        eval_every=args.eval_every,
        progress=not args.no_progress,
    )
    train_time = time.perf_counter() - t_train
    end_step = int(run.state.step)
    _print_losses(run.history, end_step, train_time)
    if args.checkpoint_dir is not None:
        print(f"checkpoint: {os.path.abspath(args.checkpoint_dir)} (step {end_step})")
    _print_samples(run.model, _local_params(run.state.params), run.vocab, args, seed=config.seed)
    print(f"total wall time {time.perf_counter() - _START:.1f} s (start-up included)")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from jaxrnn.models import load_char_lm

    directory = os.path.abspath(args.checkpoint_dir)
    if not os.path.isdir(directory):
        what = "does not exist" if not os.path.lexists(directory) else "is not a directory"
        raise ValueError(f"--checkpoint-dir {directory} {what}")
    model, params, vocab, config, meta = load_char_lm(directory, step=args.step)
    _check_prompt(args.prompt, vocab, f"the checkpoint in {directory}")
    print(f"{config.cell} language model from {directory}, step {meta['step']}")
    _print_samples(model, params, vocab, args, seed=args.seed)
    return 0


# --------------------------------------------------------------------------------------------
# Distributed runs (--distributed, issue 14): one process of a multi-process job.

_DISTRIBUTED_ENV = {"num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}

#: JAX's own join timeout is this much longer than ``--coordinator-timeout``: when it expires,
#: JAX aborts the whole process (a C++ check failure and a stack trace), so the CLI's own
#: watchdog, which ends with one line, must always come first.
_JAX_TIMEOUT_MARGIN = 60


class _Abandoned(ValueError):
    """A failure that leaves work running in a thread that cannot be cancelled (a
    ``jax.distributed`` join): :func:`main` reports it and ends the process at once."""


def _initialize_distributed(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` from the options, then the environment, then detection.

    Every value is checked first (a malformed address is a usage error). The join runs in a
    background thread while the main thread waits, so that Ctrl-C and SIGTERM end the
    process at any moment, and gives up after ``--coordinator-timeout`` seconds with one line
    (JAX's own timeout would abort the process with a stack trace); what the runtime writes to
    stderr meanwhile is kept out of sight unless ``--debug``.
    """
    from jaxrnn._cli_options import DEFAULT_COORDINATOR_TIMEOUT, _address

    given = {
        "coordinator_address": args.coordinator,
        "num_processes": args.num_processes,
        "process_id": args.process_id,
    }
    for name, env in _DISTRIBUTED_ENV.items():
        if given[name] is None and os.environ.get(env, "").strip():
            try:
                given[name] = int(os.environ[env])
            except ValueError:
                raise UsageError(f"{env}={os.environ[env]!r} is not an integer") from None
    env_address = os.environ.get("JAX_COORDINATOR_ADDRESS", "").strip()
    if given["coordinator_address"] is None and env_address:
        try:
            given["coordinator_address"] = _address(env_address)
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"JAX_COORDINATOR_ADDRESS: {e}") from None
    n, i = given["num_processes"], given["process_id"]
    if n is not None and n < 1:
        raise UsageError(f"JAX_NUM_PROCESSES={n} must be at least 1")
    if i is not None and i < 0:
        raise UsageError(f"JAX_PROCESS_ID={i} must be at least 0")
    if n is not None and i is not None and i >= n:
        raise UsageError(f"--process-id {i} must be below --num-processes {n}")
    timeout = getattr(args, "coordinator_timeout", None) or DEFAULT_COORDINATOR_TIMEOUT
    import jax

    # Cross-process collectives on CPU need an implementation (GPUs and TPUs bring theirs).
    if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {k: v for k, v in given.items() if v is not None}
    _join(kwargs, timeout, quiet=not args.debug)


def _join(kwargs: dict, timeout: int, *, quiet: bool) -> None:
    """``jax.distributed.initialize(**kwargs)`` in a thread, watched from this one."""
    import jax

    failure: list[BaseException] = []

    def join():
        try:
            jax.distributed.initialize(
                **kwargs, initialization_timeout=timeout + _JAX_TIMEOUT_MARGIN
            )
        except BaseException as e:  # reported by the main thread
            failure.append(e)

    thread = threading.Thread(target=join, name="jaxrnn-distributed-join", daemon=True)
    with _stderr_captured(quiet) as captured:
        thread.start()
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            thread.join(0.1)  # signals (Ctrl-C, SIGTERM) are handled between waits
    where = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in kwargs.items()) or "detected"
    if thread.is_alive():
        raise _Abandoned(
            f"--distributed: the job was not joined within {timeout} s (--coordinator-timeout; "
            f"{where}): is process 0 running and reachable at the coordinator's address, and "
            "has every process started?"
        )
    if failure:
        error = failure[0]
        logged = _last_log_line(captured)
        detail = f"{type(error).__name__}: {_one_line(error, 300)}"
        if logged:
            detail += f" ({_one_line(logged, 300)})"
        raise _Abandoned(f"--distributed: jax.distributed.initialize() failed: {detail}") from error


@contextlib.contextmanager
def _stderr_captured(quiet: bool):
    """With ``quiet``, file descriptor 2 goes to a temporary file inside (the C++ runtime's
    logging cannot be silenced otherwise); yields the file, or ``None`` without ``quiet``."""
    if not quiet:
        yield None
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _last_log_line(captured) -> str:
    """The last non-empty line written to ``captured`` (a file from :func:`_stderr_captured`),
    without the C++ log prefix (``E1206 17:35:18.627136   15952 add_port.cc:83] ``)."""
    if captured is None:
        return ""
    captured.seek(0)
    lines = [ln.strip() for ln in captured.read()[-65536:].decode(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return ""
    last = lines[-1]
    return last.split("] ", 1)[1] if "] " in last and last[:1] in "IWEF" else last


@contextlib.contextmanager
def _distributed(args: argparse.Namespace):
    """With ``--distributed``: join the job; processes other than 0 print nothing on stdout.

    Yields the label of this process for error messages (`` [process i of n]``).
    """
    if not getattr(args, "distributed", False):
        extra = [
            o
            for o in ("coordinator", "num_processes", "process_id", "coordinator_timeout")
            if getattr(args, o, None) is not None
        ]
        if extra:
            raise UsageError(f"--{extra[0].replace('_', '-')} needs --distributed")
        yield ""
        return
    _initialize_distributed(args)  # a UsageError or ValueError, reported by main()
    import jax

    index = jax.process_index()
    if index == 0:
        yield f" [process 0 of {jax.process_count()}]"
        return
    args.no_progress = True
    # Python's and the libraries' own output (file descriptor 1) alike; stderr stays.
    stdout = sys.stdout
    stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        sys.stdout = devnull
        try:
            yield f" [process {index} of {jax.process_count()}]"
        finally:
            sys.stdout = stdout
            os.dup2(saved, 1)
            os.close(saved)


def _local_params(params):
    """The parameters whole on this process (after a run spread over several)."""
    from jaxrnn.train import local_copy

    return local_copy(params)


# --------------------------------------------------------------------------------------------
# Errors, interrupts and logging.


def _one_line(text: str, limit: int = 2000) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Annotations libraries append to their messages (tensorstore: ``[source locations='...']``,
#: ``[tensorstore_spec='{...}']``, kilobytes of JSON): not for a one-line error.
_ANNOTATION = re.compile(r"\s*\[\w[\w ]*='(?:[^']|'(?!\]))*'\]")

#: The most characters of one error line.
MESSAGE_LIMIT = 600


def _summary(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line, without library annotations, at most ``limit`` characters."""
    text = _ANNOTATION.sub("", str(text)).split(" See full TensorStore details")[0]
    return _one_line(text, limit)


def _describe(error: BaseException) -> str:
    """The one-line message of ``error``: its text, with its type unless it is an expected
    kind (invalid values, files, checkpoints), summarised (:func:`_summary`)."""
    from jaxrnn.train import CheckpointError, NonFiniteLossError

    expected = (CheckpointError, NonFiniteLossError, ValueError, OSError)
    message = _summary(error)
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        message = f"{error.filename}: {error.strerror}"
    if not isinstance(error, expected) or not message:
        message = f"{type(error).__name__}: {message} (run `jaxrnn --debug ...` for the traceback)"
    return _summary(message, MESSAGE_LIMIT + 60)


def _describe_interrupt(error: KeyboardInterrupt, args: argparse.Namespace) -> str:
    from jaxrnn.train import Interrupted

    if isinstance(error, Interrupted):
        step, path = error.step, error.path
        if path is not None:
            return f"interrupted at step {step}; checkpoint saved in {path}"
        if getattr(args, "checkpoint_dir", None) is None:
            return f"interrupted at step {step}; no checkpoint directory: progress lost"
        return f"interrupted at step {step}; no checkpoint saved"
    if getattr(args, "command", None) == "demo" and getattr(args, "checkpoint_dir", None):
        return "interrupted; progress since the last checkpoint is lost"
    return "interrupted"


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the command runs, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does (with
    Python's own Ctrl-C handler, which ``jr.train.fit`` replaces by its save-then-stop one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _quiet_logging() -> None:
    """Keep absl/orbax INFO and WARNING lines from burying the CLI's own messages."""
    import logging

    for name in ("absl", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)


def _ignore(*_args) -> None:
    """A hook that shows nothing."""


@contextlib.contextmanager
def _quiet(*, for_good: bool):
    """Nothing but the CLI's own lines on stderr: library logging (absl, orbax, JAX) and
    warnings off, and exceptions nobody can catch (in library threads, in callbacks into a
    closed event loop, in objects collected late: orbax's and tensorstore's clean-up after a
    failed read or write) not printed. ``for_good``: the process ends with the command (the
    late noise comes at interpreter exit), so nothing is restored; otherwise (``main`` called
    in a Python process) everything is restored on exit.
    """
    import logging
    import warnings

    _quiet_logging()
    saved = (logging.root.manager.disable, sys.excepthook, sys.unraisablehook)
    saved_thread_hook = threading.excepthook
    logging.disable(logging.CRITICAL)
    sys.excepthook, sys.unraisablehook, threading.excepthook = _ignore, _ignore, _ignore
    if for_good:
        warnings.simplefilter("ignore")
        yield
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(saved[0])
        sys.excepthook, sys.unraisablehook = saved[1], saved[2]
        threading.excepthook = saved_thread_hook


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m jaxrnn`` and the ``jaxrnn`` console script.

    Without ``--debug``, every error is one line on stderr and nothing else is printed there:
    library logging, warnings and exceptions raised where nobody can catch them (library
    threads, clean-up at exit) are silenced (:func:`_quiet`) for the rest of the process when
    ``argv`` is ``None`` (the command line's own process), for the call otherwise.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 on a runtime error, 2 on a usage error (argparse's
        own usage errors exit with 2 directly). When interrupted (Ctrl-C, SIGTERM) the process
        ends at once with status 130 (``os._exit``, after flushing stdout and stderr).
    """
    _startup.release()  # from here on, main's own handling of Ctrl-C and SIGTERM
    args = _parser().parse_args(argv)
    quiet = contextlib.nullcontext() if args.debug else _quiet(for_good=argv is None)
    with quiet:
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    """:func:`main` once the arguments are parsed."""
    prog = f"jaxrnn {args.command}"
    with _sigterm_as_interrupt():
        try:
            with _distributed(args) as label:  # issue 14: "" unless --distributed
                prog += label
                return _demo(args) if args.command == "demo" else _sample(args)
        except KeyboardInterrupt as e:
            if args.debug:
                raise
            print(f"{prog}: {_describe_interrupt(e, args)}", file=sys.stderr)
            # End at once: a computation interrupted midway may leave XLA threads running,
            # and interpreter shutdown under them can crash (SIGSEGV) after the message. Any
            # checkpoint was written synchronously before the interrupt propagated.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # stdout closed early (``jaxrnn demo | head``): stop quietly, as a pipeline expects.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1
        except UsageError as e:
            if args.debug:
                raise
            print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
            return 2
        except Exception as e:
            if args.debug:
                raise
            print(f"{prog}: error: {_describe(e)}", file=sys.stderr)
            if isinstance(e, _Abandoned):  # a thread cannot be stopped: end without waiting
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
            return 1


if __name__ == "__main__":
    sys.exit(main())

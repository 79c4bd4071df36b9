"""Small real and synthetic sequence tasks, generated locally (nothing is downloaded).

* :func:`stdlib_corpus` and :func:`load_text`: text for character-level language models, by
  default the source code of a fixed list of Python standard-library modules, read from the
  running interpreter's own installation;
* :class:`Vocab`: characters (and optional special tokens) <-> integer ids;
* :class:`TextBatches`: char-rnn style batches for truncated backpropagation through time: the
  corpus is cut into ``batch_size`` contiguous streams, and consecutive steps read consecutive
  chunks of every stream, so the recurrent carry can be passed from one chunk to the next;
* :func:`adding_problem` and :func:`copy_memory`: the long-range-dependency benchmarks of
  Hochreiter & Schmidhuber (1997) and Arjovsky et al. (2016);
* :func:`date_pairs` and :func:`date_dataset`: ``"21 November 2026" -> "2026-11-21"``
  translation pairs for sequence-to-sequence models.

Everything is deterministic: the synthetic tasks are functions of a ``jax.random`` key, the text
batches and date pairs of an integer ``seed`` (and, for batches, the step number). Batches are
``jax.numpy`` arrays.

This module needs only JAX, NumPy and the standard library.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import os
import random
import stat
import sysconfig
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_ids, check_int, check_key, check_size

__all__ = [
    "DATE_FORMATS",
    "MAX_TEXT_BYTES",
    "STDLIB_MODULES",
    "DateData",
    "TextBatches",
    "Vocab",
    "adding_problem",
    "copy_memory",
    "date_dataset",
    "date_pairs",
    "load_text",
    "split_text",
    "stdlib_corpus",
    "text_digest",
]

# --------------------------------------------------------------------------------------------
# Text corpora.

#: Standard-library modules whose source makes up :func:`stdlib_corpus`: pure-Python modules,
#: present in every CPython >= 3.11, chosen for plenty of docstrings and comments and for plain
#: ASCII text (about 440 000 characters on CPython 3.11).
STDLIB_MODULES: tuple[str, ...] = (
    "abc",
    "argparse",
    "bisect",
    "calendar",
    "contextlib",
    "copy",
    "dataclasses",
    "fnmatch",
    "glob",
    "graphlib",
    "numbers",
    "operator",
    "pprint",
    "queue",
    "random",
    "reprlib",
    "sched",
    "string",
    "textwrap",
    "timeit",
    "traceback",
    "weakref",
)


def stdlib_corpus(modules: Sequence[str] = STDLIB_MODULES) -> str:
    """The source code of some standard-library modules of the running Python, concatenated.

    The files are read from ``sysconfig.get_paths()["stdlib"]`` in the order given, so the text
    depends only on the Python version. Nothing is imported and nothing is downloaded.

    Args:
        modules: names of top-level pure-Python standard-library modules (dotted names of
            submodules are allowed; each part must be a Python identifier).

    Returns:
        The concatenated text, one module after another.

    Raises:
        TypeError: if ``modules`` is a single string rather than a sequence of names.
        ValueError: if a name is not a (dotted) Python identifier, or a file is not a UTF-8
            regular file (see :func:`load_text`).
        FileNotFoundError: if a module has no ``.py`` file in the standard library directory.

    >>> text = stdlib_corpus(["bisect"])
    >>> "def insort_right" in text
    True
    """
    if isinstance(modules, str | bytes):
        raise TypeError(
            f"stdlib_corpus: modules: expected a sequence of module names, got the string "
            f"{modules!r} (write [{modules!r}] for one module)"
        )
    stdlib = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in modules:
        if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
            raise ValueError(
                f"stdlib_corpus: modules: expected module names such as 'argparse', got {name!r}"
            )
        path = os.path.join(stdlib, *name.split(".")) + ".py"
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"stdlib_corpus: no source file for module {name!r} (looked for {path}); pass "
                "modules= with pure-Python standard-library modules, or use load_text(path)"
            )
        parts.append(_read_text(path, MAX_TEXT_BYTES, "stdlib_corpus"))
    return "".join(parts)


#: Default ``max_bytes`` of :func:`load_text` (1 GiB).
MAX_TEXT_BYTES: int = 1 << 30


def load_text(path: str | os.PathLike, *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """Read a UTF-8 text file (any user corpus) into a string.

    Only a regular file is read (symbolic links to one are followed): a directory, a device
    such as ``/dev/urandom``, a FIFO or a socket is refused before anything is read. The size
    is checked before reading and the read itself is bounded by ``max_bytes``, so a file that
    grows meanwhile cannot exhaust memory. Line endings are normalised to ``"\\n"`` (Python's
    universal newlines, as ``open(path, encoding="utf-8").read()``).

    Args:
        path: the file.
        max_bytes: the largest file accepted, in bytes (default :data:`MAX_TEXT_BYTES`, 1 GiB).

    Returns:
        The text.

    Raises:
        FileNotFoundError: if ``path`` does not exist (other ``OSError`` s if it cannot be
            opened).
        ValueError: naming ``path``, if it is not a regular file, is larger than ``max_bytes``,
            is not valid UTF-8 (with the byte offset of the first invalid byte), or is empty.

    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "corpus.txt")
    ...     with open(path, "wb") as f:
    ...         _ = f.write(b"caf\\xc3\\xa9\\r\\n")
    ...     load_text(path)
    'café\\n'
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"load_text: max_bytes must be a positive int, got {max_bytes!r}")
    text = _read_text(path, max_bytes, "load_text")
    if not text:
        raise ValueError(f"load_text: {os.fspath(path)!r} is empty")
    return text


def _kind_of_file(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _read_text(path: str | os.PathLike, max_bytes: int, who: str) -> str:
    """The UTF-8 text of the regular file ``path`` (at most ``max_bytes`` bytes)."""
    name = os.fspath(path)

    def check(st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(
                f"{who}: {name!r} is {_kind_of_file(st.st_mode)}, not a regular file; "
                "expected a UTF-8 text file"
            )
        if st.st_size > max_bytes:
            raise ValueError(
                f"{who}: {name!r} has {st.st_size:,} bytes, more than the limit of "
                f"{max_bytes:,} (max_bytes; --max-corpus-bytes on the command line)"
            )

    check(os.stat(name))  # before opening: opening a FIFO without a writer would block
    # O_NONBLOCK: should the path have become a FIFO meanwhile, opening it does not block (it
    # is then refused by the check of the open file, which is what gets read).
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    chunks, size = [], 0
    with open(fd, "rb", buffering=0, closefd=True) as f:
        check(os.fstat(fd))
        # Bounded, in chunks, should the file grow while it is read.
        while size <= max_bytes:
            chunk = f.read(min(max_bytes + 1 - size, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    raw = b"".join(chunks)
    if len(raw) > max_bytes:
        raise ValueError(
            f"{who}: {name!r} grew beyond the limit of {max_bytes:,} bytes while being read "
            "(max_bytes; --max-corpus-bytes on the command line)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{who}: {name!r} is not UTF-8 text: byte offset {e.start} "
            f"(0x{raw[e.start]:02x}: {e.reason}); convert it to UTF-8 first"
        ) from None
    # Universal newlines, as text-mode open() reads: \r\n and \r become \n.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_digest(text: str) -> str:
    """SHA-256 hex digest of ``text`` (UTF-8), to recognise a corpus when resuming training."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split ``text`` into a training head and a validation tail.

    >>> split_text("abcdefghij", 0.2)
    ('abcdefgh', 'ij')
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a fraction in [0, 1), got {val_fraction}")
    cut = len(text) - round(len(text) * val_fraction)
    return text[:cut], text[cut:]


# --------------------------------------------------------------------------------------------
# Vocabulary.


@dataclasses.dataclass(frozen=True)
class Vocab:
    """A token <-> id mapping for character-level models.

    ``tokens[i]`` is the token of id ``i``. Ordinary tokens are single characters; special
    tokens (several characters, such as ``"<pad>"``) come first and never match text, so
    :meth:`encode` reads text character by character.

    Attributes:
        tokens: the tokens, in id order.

    >>> vocab = Vocab.from_text("hello world")
    >>> vocab.size, "".join(vocab.tokens)
    (8, ' dehlorw')
    >>> ids = vocab.encode("hello")
    >>> ids.tolist(), vocab.decode(ids)
    ([3, 2, 4, 4, 5], 'hello')
    """

    tokens: tuple[str, ...]

    def __post_init__(self):
        tokens = tuple(self.tokens)
        object.__setattr__(self, "tokens", tokens)
        if len(set(tokens)) != len(tokens):
            raise ValueError("Vocab: tokens must be unique")
        if not all(isinstance(t, str) and t for t in tokens):
            raise ValueError("Vocab: tokens must be non-empty strings")
        chars = [(ord(t), i) for i, t in enumerate(tokens) if len(t) == 1]
        chars.sort()
        # Sorted code points and their ids: encode() maps a whole string with one searchsorted.
        object.__setattr__(self, "_codes", np.array([c for c, _ in chars], np.uint32))
        object.__setattr__(self, "_code_ids", np.array([i for _, i in chars], np.int32))

    @classmethod
    def from_text(cls, text: str, specials: Sequence[str] = ()) -> Vocab:
        """The sorted characters of ``text``, after the ``specials`` (ids ``0..len-1``)."""
        return cls(tuple(specials) + tuple(sorted(set(text) - set(specials))))

    @property
    def size(self) -> int:
        """Number of tokens."""
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self, token: str) -> int:
        """The id of ``token`` (a character or a special token)."""
        try:
            return self.tokens.index(token)
        except ValueError:
            raise KeyError(f"Vocab: unknown token {token!r}") from None

    def encode(self, text: str) -> np.ndarray:
        """Character ids of ``text``, an ``int32`` NumPy array of shape ``(len(text),)``.

        Raises:
            ValueError: if ``text`` has a character outside the vocabulary (with
                ``"<unk>"`` among the tokens, such characters map to it instead).
            TypeError: if ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        if self._codes.size == 0:
            pos = np.zeros(codes.shape, np.intp)
            found = np.zeros(codes.shape, bool)
        else:
            pos = np.minimum(np.searchsorted(self._codes, codes), self._codes.size - 1)
            found = self._codes[pos] == codes
        ids = np.where(found, self._code_ids[pos] if self._codes.size else 0, -1)
        if not found.all():
            if "<unk>" in self.tokens:
                ids = np.where(found, ids, self.tokens.index("<unk>"))
            else:
                missing = sorted({chr(c) for c in codes[~found]})
                raise ValueError(
                    f"Vocab.encode: {len(missing)} character(s) not in the vocabulary: "
                    f"{''.join(missing)[:40]!r}"
                )
        return ids.astype(np.int32)

    def decode(self, ids: Iterable[int], *, skip_specials: bool = False) -> str:
        """The text of ``ids`` (any integer array or sequence, of any shape, read flat).

        Raises:
            TypeError: if ``ids`` are not integers.
            ValueError: if an id lies outside ``[0, size)``.
        """
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        ids = check_ids("ids", ids, self.size)
        toks = self.tokens
        out = (toks[int(i)] for i in ids.reshape(-1))
        if skip_specials:
            out = (t for t in out if len(t) == 1)
        return "".join(out)

    def to_json(self) -> list[str]:
        """The tokens as a JSON-serialisable list (see :meth:`from_json`)."""
        return list(self.tokens)

    @classmethod
    def from_json(cls, tokens: Sequence[str]) -> Vocab:
        """Rebuild a vocabulary saved by :meth:`to_json`."""
        return cls(tuple(tokens))


# --------------------------------------------------------------------------------------------
# Text batches for truncated BPTT.


class TextBatches:
    """Language-model batches over one long token stream, for truncated BPTT (char-rnn style).

    Each epoch starts at a random offset ``o`` in ``[0, seq_len)`` (drawn from ``seed`` and the
    epoch number) and cuts ``ids[o:]`` into ``batch_size`` contiguous streams of
    ``num_chunks * seq_len`` tokens. Step ``s`` is chunk ``k = s % num_chunks`` of epoch
    ``s // num_chunks``: row ``b`` of the batch is the ``k``-th window of ``seq_len`` tokens of
    stream ``b``, so row ``b`` of step ``s + 1`` continues row ``b`` of step ``s`` and a model
    may carry its state across steps. ``reset`` is true at the first chunk of an epoch, where
    the streams start afresh and a carried state must be zeroed.

    A batch is a pure function of ``step``, so training resumed at step ``s`` sees exactly the
    batches an uninterrupted run sees.

    Args:
        ids: the token ids of the whole corpus, 1-D.
        batch_size: ``B``, number of parallel streams.
        seq_len: ``T``, tokens per chunk.
        seed: seed of the per-epoch offsets.

    Raises:
        ValueError: if the corpus is shorter than ``(batch_size + 1) * seq_len + 1`` tokens.

    >>> import numpy as np
    >>> batches = TextBatches(np.arange(100), batch_size=2, seq_len=5, seed=0)
    >>> batches.num_chunks
    9
    >>> b0, b1 = batches(0), batches(1)
    >>> b0["inputs"].shape, b0["reset"].tolist(), b1["reset"].tolist()
    ((2, 5), [True, True], [False, False])
    >>> bool((b0["targets"][:, :-1] == b0["inputs"][:, 1:]).all())  # next-token targets
    True
    >>> bool((b1["inputs"][:, 0] == b0["targets"][:, -1]).all())  # streams continue
    True
    """

    def __init__(self, ids, batch_size: int, seq_len: int, *, seed: int = 0):
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids: expected a 1-D integer array, got {ids.dtype} {ids.shape}")
        check_size("batch_size", batch_size)
        check_size("seq_len", seq_len)
        # The largest offset is seq_len - 1 and every input needs its next token as target.
        num_chunks = (ids.size - seq_len) // (batch_size * seq_len)
        if num_chunks < 1:
            raise ValueError(
                f"TextBatches: a corpus of {ids.size} tokens is too short for batch_size="
                f"{batch_size} and seq_len={seq_len} (needs at least "
                f"{(batch_size + 1) * seq_len} tokens)"
            )
        self.ids = ids.astype(np.int32)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.num_chunks = num_chunks
        self.stream_len = num_chunks * seq_len

    def offset(self, epoch: int) -> int:
        """Start offset of ``epoch`` (deterministic in ``seed`` and ``epoch``)."""
        return int(np.random.default_rng([self.seed, epoch]).integers(self.seq_len))

    def __call__(self, step: int) -> dict[str, jax.Array]:
        """The batch of training step ``step``.

        Returns:
            ``{"inputs": (B, T) int32, "targets": (B, T) int32, "reset": (B,) bool}``.
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, chunk = divmod(step, self.num_chunks)
        starts = (
            self.offset(epoch) + np.arange(self.batch_size) * self.stream_len + chunk * self.seq_len
        )
        window = self.ids[starts[:, None] + np.arange(self.seq_len + 1)]
        return {
            "inputs": jnp.asarray(window[:, :-1]),
            "targets": jnp.asarray(window[:, 1:]),
            "reset": jnp.full((self.batch_size,), chunk == 0),
        }


# --------------------------------------------------------------------------------------------
# Synthetic long-range tasks.


def adding_problem(key: jax.Array, batch_size: int, length: int) -> tuple[jax.Array, jax.Array]:
    """The adding problem (Hochreiter & Schmidhuber 1997; as in Le et al. 2015).

    Each input step has two features: a value drawn uniformly from ``[0, 1)`` and a marker that
    is 1 at exactly two steps, one in the first half of the sequence and one in the second, and
    0 elsewhere. The target is the sum of the two marked values; predicting 1 always (the best
    guess without memory) has mean squared error about 1/6.

    Args:
        key: a ``jax.random`` key.
        batch_size: ``B``.
        length: ``T >= 2``, sequence length.

    Returns:
        ``(xs, ys)``: inputs ``(B, T, 2)`` float32 and targets ``(B,)`` float32.

    >>> import jax
    >>> xs, ys = adding_problem(jax.random.key(0), 4, 10)
    >>> xs.shape, ys.shape, xs[..., 1].sum(axis=1).tolist()
    ((4, 10, 2), (4,), [2.0, 2.0, 2.0, 2.0])
    """
    key = check_key("key", key)
    batch_size = check_int("batch_size", batch_size, low=0)
    length = check_int("length", length, low=2)
    return _adding_problem(key, batch_size, length)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _adding_problem(key: jax.Array, batch_size: int, length: int) -> tuple[jax.Array, jax.Array]:
    """:func:`adding_problem`, its arguments checked."""
    k_val, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_val, (batch_size, length), jnp.float32)
    first = jax.random.randint(k_first, (batch_size,), 0, length // 2)
    second = jax.random.randint(k_second, (batch_size,), length // 2, length)
    steps = jnp.arange(length)
    marks = (steps == first[:, None]) | (steps == second[:, None])
    xs = jnp.stack([values, marks.astype(jnp.float32)], axis=-1)
    ys = jnp.sum(jnp.where(marks, values, jnp.zeros((), jnp.float32)), axis=1)
    return xs, ys


@functools.partial(jax.jit, static_argnums=(1, 2), static_argnames=("num_symbols", "copy_length"))
def copy_memory(
    key: jax.Array,
    batch_size: int,
    delay: int,
    *,
    num_symbols: int = 8,
    copy_length: int = 10,
) -> tuple[jax.Array, jax.Array]:
    """The copy-memory task (Hochreiter & Schmidhuber 1997; layout of Arjovsky et al. 2016).

    Token ids: ``0`` is the blank, ``1..num_symbols`` the symbols to remember and
    ``num_symbols + 1`` the delimiter (so ``num_symbols + 2`` classes). An input sequence of
    length ``delay + 2 * copy_length`` is ``copy_length`` random symbols, ``delay - 1``
    blanks, the delimiter, then ``copy_length`` blanks; the target is ``delay + copy_length``
    blanks followed by the ``copy_length`` symbols: after the delimiter, the model must
    reproduce what it saw ``delay + copy_length`` steps earlier. A memoryless model that predicts
    blanks and then uniformly random symbols has cross-entropy
    ``copy_length * log(num_symbols) / (delay + 2 * copy_length)``.

    Args:
        key: a ``jax.random`` key.
        batch_size: ``B``.
        delay: ``T >= 1``, the number of steps between the last symbol and the delimiter, plus
            one.
        num_symbols: size of the symbol alphabet.
        copy_length: number of symbols to copy.

    Returns:
        ``(inputs, targets)``, both ``(B, delay + 2 * copy_length)`` int32.

    >>> import jax
    >>> x, y = copy_memory(jax.random.key(0), 1, 3, num_symbols=4, copy_length=2)
    >>> x.shape, int(x[0, 4]), x[0, 2:4].tolist(), y[0, :5].tolist()
    ((1, 7), 5, [0, 0], [0, 0, 0, 0, 0])
    >>> bool((y[0, 5:] == x[0, :2]).all())
    True
    """
    key = check_key("key", key)
    if delay < 1 or copy_length < 1 or num_symbols < 1:
        raise ValueError(
            "delay, copy_length and num_symbols must be >= 1, got "
            f"{delay}, {copy_length}, {num_symbols}"
        )
    symbols = jax.random.randint(key, (batch_size, copy_length), 1, num_symbols + 1)
    blanks = functools.partial(jnp.zeros, dtype=jnp.int32)
    delimiter = jnp.full((batch_size, 1), num_symbols + 1, jnp.int32)
    inputs = jnp.concatenate(
        [symbols, blanks((batch_size, delay - 1)), delimiter, blanks((batch_size, copy_length))],
        axis=1,
    )
    targets = jnp.concatenate([blanks((batch_size, delay + copy_length)), symbols], axis=1)
    return inputs, targets


# --------------------------------------------------------------------------------------------
# Dates for sequence-to-sequence models.

#: Source formats of :func:`date_pairs`, as ``datetime.strptime`` formats (which also parse
#: them back). Where a month name appears, the day is written without a leading zero.
DATE_FORMATS: tuple[str, ...] = (
    "%d %B %Y",  # 21 November 2026
    "%B %d, %Y",  # November 21, 2026
    "%A, %d %B %Y",  # Saturday, 21 November 2026
    "%d %b %Y",  # 21 Nov 2026
    "%b %d %Y",  # Nov 21 2026
    "%d/%m/%Y",  # 21/11/2026
    "%d.%m.%Y",  # 21.11.2026
)

_DATE_MIN = datetime.date(1950, 1, 1)
_DATE_MAX = datetime.date(2049, 12, 31)


def _format_date(day: datetime.date, fmt: str) -> str:
    if "%B" in fmt or "%b" in fmt:
        fmt = fmt.replace("%d", str(day.day))  # "5 March", not "05 March"
    return day.strftime(fmt)


def date_pairs(
    n: int,
    *,
    seed: int = 0,
    formats: Sequence[str] = DATE_FORMATS,
    start: datetime.date = _DATE_MIN,
    end: datetime.date = _DATE_MAX,
) -> list[tuple[str, str]]:
    """``n`` pairs (human-readable date, ISO date), e.g. ``("21 November 2026", "2026-11-21")``.

    Dates are drawn uniformly from ``[start, end]`` and formats uniformly from ``formats``, by a
    ``random.Random(seed)``; month and weekday names come from ``strftime`` (English unless the
    program changed the ``LC_TIME`` locale).

    >>> for pair in date_pairs(3, seed=1):
    ...     print(pair)
    ('Feb 9 1974', '1974-02-09')
    ('Friday, 28 April 1961', '1961-04-28')
    ('27 Feb 1971', '1971-02-27')
    """
    rng = random.Random(seed)
    span = (end - start).days
    if span < 0:
        raise ValueError(f"date_pairs: start {start} is after end {end}")
    pairs = []
    for _ in range(n):
        day = start + datetime.timedelta(days=rng.randint(0, span))
        fmt = formats[rng.randrange(len(formats))]
        pairs.append((_format_date(day, fmt), day.isoformat()))
    return pairs


class DateData(NamedTuple):
    """Encoded date pairs from :func:`date_dataset`.

    Attributes:
        sources: ``(N, S)`` int32 source ids, right-padded with ``<pad>`` (id 0).
        source_lengths: ``(N,)`` int32, the unpadded lengths.
        decoder_inputs: ``(N, 10)`` int32, ``<s>`` followed by the first nine target
            characters (teacher forcing).
        targets: ``(N, 10)`` int32 ids of the ISO date ``YYYY-MM-DD``.
        source_vocab: :class:`Vocab` of the sources (``<pad>`` first).
        target_vocab: :class:`Vocab` of the targets (``<s>`` first, then ``-0123456789``).
    """

    sources: jax.Array
    source_lengths: jax.Array
    decoder_inputs: jax.Array
    targets: jax.Array
    source_vocab: Vocab
    target_vocab: Vocab


@functools.cache
def _date_source_vocab(formats: tuple[str, ...]) -> tuple[Vocab, int]:
    """Every character any date in range can produce, and the longest source length."""
    chars, longest = set(), 0
    # One leap year covers every day-of-month, month and weekday name; add the range ends'
    # years so every digit appears.
    days = [datetime.date(2024, 1, 1) + datetime.timedelta(days=k) for k in range(366)]
    days += [_DATE_MIN, _DATE_MAX]
    for day in days:
        for fmt in formats:
            text = _format_date(day, fmt)
            chars.update(text)
            longest = max(longest, len(text))
    return Vocab.from_text("".join(chars) + "0123456789", specials=("<pad>",)), longest


def date_dataset(n: int, *, seed: int = 0, formats: Sequence[str] = DATE_FORMATS) -> DateData:
    """:func:`date_pairs` encoded as padded id arrays, ready for a seq2seq model.

    The source length ``S`` is the longest date any of ``formats`` can produce, so every
    dataset built with the same formats has the same shapes.

    >>> data = date_dataset(5, seed=0)
    >>> data.sources.shape[0], data.targets.shape, data.decoder_inputs[:, 0].tolist()
    (5, (5, 10), [0, 0, 0, 0, 0])
    >>> data.target_vocab.decode(data.targets[0]) == date_pairs(1, seed=0)[0][1]
    True
    """
    formats = tuple(formats)
    source_vocab, width = _date_source_vocab(formats)
    target_vocab = Vocab(("<s>", *"-0123456789"))
    pairs = date_pairs(n, seed=seed, formats=formats)
    sources = np.zeros((n, width), np.int32)
    lengths = np.zeros((n,), np.int32)
    targets = np.zeros((n, 10), np.int32)
    for row, (src, tgt) in enumerate(pairs):
        sources[row, : len(src)] = source_vocab.encode(src)
        lengths[row] = len(src)
        targets[row] = target_vocab.encode(tgt)
    decoder_inputs = np.concatenate([np.zeros((n, 1), np.int32), targets[:, :-1]], axis=1)
    return DateData(
        jnp.asarray(sources),
        jnp.asarray(lengths),
        jnp.asarray(decoder_inputs),
        jnp.asarray(targets),
        source_vocab,
        target_vocab,
    )

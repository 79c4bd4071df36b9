"""Tests of jaxrnn.data: vocabulary, text batches, synthetic tasks and date pairs.

Expected values come from independent computations: ``inspect.getsource`` for the corpus,
plain slicing of the id stream for batches, NumPy for the adding problem's sums and
``datetime.strptime`` for the dates.
"""

from __future__ import annotations

import datetime
import importlib
import inspect
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import data

# --------------------------------------------------------------------------------------------
# Corpus and vocabulary.


def test_stdlib_corpus_is_the_modules_source():
    modules = ["bisect", "textwrap", "fnmatch"]
    expected = "".join(inspect.getsource(importlib.import_module(m)) for m in modules)
    assert data.stdlib_corpus(modules) == expected
    assert data.stdlib_corpus(modules) == data.stdlib_corpus(modules)


def test_default_corpus_is_large_and_ascii():
    text = data.stdlib_corpus()
    assert len(text) > 200_000
    assert "def " in text and '"""' in text
    assert data.Vocab.from_text(text).size < 128


def test_stdlib_corpus_missing_module():
    with pytest.raises(FileNotFoundError, match="no_such_module"):
        data.stdlib_corpus(["no_such_module"])


def test_load_text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("héllo\n", encoding="utf-8")
    assert data.load_text(path) == "héllo\n"
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        data.load_text(tmp_path / "empty.txt")


def test_load_text_reads_like_text_mode_open(tmp_path):
    # Universal newlines, as open(path, encoding="utf-8").read(): the corpus digests of
    # existing checkpoints stay valid.
    raw = "a\r\nb\rc\nd\r\r\n — é\n".encode() * 3
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    with open(path, encoding="utf-8") as f:
        assert data.load_text(path) == f.read()
    assert data.load_text(path, max_bytes=len(raw)) == data.load_text(str(path))


def test_load_text_refuses_what_is_not_a_regular_utf8_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block without a writer
    kinds = [(tmp_path, "a directory"), (fifo, "a FIFO"), ("/dev/zero", "a character device")]
    for path, kind in kinds:
        with pytest.raises(ValueError, match=f"{re.escape(repr(str(path)))} is {kind}"):
            data.load_text(path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"plain ascii " + "café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt' is not UTF-8 text: byte offset 15 \(0xe9"):
        data.load_text(bad)
    with pytest.raises(FileNotFoundError):
        data.load_text(tmp_path / "missing.txt")


def test_load_text_size_limit(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("x" * 100)
    assert data.load_text(path, max_bytes=100) == "x" * 100
    with pytest.raises(ValueError, match="has 101 bytes, more than the limit of 100"):
        path.write_text("x" * 101)
        data.load_text(path, max_bytes=100)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_bytes must be a positive int"):
            data.load_text(path, max_bytes=bad)
    assert data.MAX_TEXT_BYTES == 2**30
    # The limit is checked before reading: a sparse file of 1 GiB + 1 is never read.
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as f:
        f.truncate(data.MAX_TEXT_BYTES + 1)
    with pytest.raises(ValueError, match="1,073,741,825 bytes"):
        data.load_text(huge)


def test_load_text_read_is_bounded_when_stat_understates_the_size():
    # Files of /proc are regular files whose stat size is 0 but which read as text, like a
    # file that grows after it was checked: the read stops at max_bytes + 1 and is refused.
    path = "/proc/self/status"
    if not os.path.isfile(path) or os.stat(path).st_size != 0:
        pytest.skip("needs Linux /proc")
    assert "Pid:" in data.load_text(path)
    with pytest.raises(ValueError, match="grew beyond the limit of 20 bytes while being read"):
        data.load_text(path, max_bytes=20)


def test_stdlib_corpus_refuses_a_string_and_paths():
    with pytest.raises(TypeError, match="sequence of module names"):
        data.stdlib_corpus("bisect")
    for name in ("../../etc/passwd", "/etc/passwd", "bisect.", 3):
        with pytest.raises(ValueError, match="expected module names"):
            data.stdlib_corpus([name])


def test_vocab_roundtrip_and_order():
    text = "the quick brown fox — ünïcode!"
    vocab = data.Vocab.from_text(text)
    assert list(vocab.tokens) == sorted(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert [vocab.tokens[i] for i in ids] == list(text)
    assert vocab.decode(ids) == text
    assert vocab.decode(jnp.asarray(ids)) == text
    assert data.Vocab.from_json(vocab.to_json()) == vocab


def test_vocab_specials_and_unknown():
    vocab = data.Vocab.from_text("abc", specials=("<pad>", "<unk>"))
    assert vocab.tokens == ("<pad>", "<unk>", "a", "b", "c")
    assert vocab.encode("abz").tolist() == [2, 3, 1]
    assert vocab.decode([0, 2, 1, 3], skip_specials=True) == "ab"
    plain = data.Vocab.from_text("abc")
    with pytest.raises(ValueError, match="not in the vocabulary: 'xz'"):
        plain.encode("axbz")
    with pytest.raises(ValueError, match="unique"):
        data.Vocab(("a", "a"))
    assert plain.encode("").shape == (0,)


def test_split_text():
    train, val = data.split_text("x" * 95 + "y" * 5, 0.05)
    assert train == "x" * 95 and val == "y" * 5
    assert data.split_text("abc", 0.0) == ("abc", "")


# --------------------------------------------------------------------------------------------
# Text batches.


@pytest.mark.parametrize("batch_size,seq_len", [(3, 4), (1, 7), (5, 1)])
def test_text_batches_against_stream_slicing(batch_size, seq_len):
    ids = np.arange(200, dtype=np.int32) * 7 % 101  # distinct-enough, non-monotone stream
    tb = data.TextBatches(ids, batch_size, seq_len, seed=3)
    n = tb.num_chunks
    assert n == (200 - seq_len) // (batch_size * seq_len)
    for epoch in range(2):
        offset = tb.offset(epoch)
        assert 0 <= offset < seq_len
        rows = [[] for _ in range(batch_size)]
        for chunk in range(n):
            batch = tb(epoch * n + chunk)
            assert batch["inputs"].shape == (batch_size, seq_len)
            assert batch["inputs"].dtype == jnp.int32
            batch = jax.tree.map(np.asarray, batch)
            assert batch["reset"].tolist() == [chunk == 0] * batch_size
            np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])
            for b in range(batch_size):
                rows[b].append(np.asarray(batch["inputs"][b]))
                # The last target is the stream's next token.
                start = offset + b * n * seq_len + chunk * seq_len
                assert int(batch["targets"][b, -1]) == ids[start + seq_len]
        for b, parts in enumerate(rows):
            # Each row, chunk after chunk, reads one contiguous stretch of the corpus.
            start = offset + b * n * seq_len
            np.testing.assert_array_equal(np.concatenate(parts), ids[start : start + n * seq_len])


def test_text_batches_deterministic_and_seeded():
    ids = np.arange(1000) % 37
    a, b = data.TextBatches(ids, 4, 8, seed=0), data.TextBatches(ids, 4, 8, seed=0)
    for step in [0, 5, 100, 12345]:
        np.testing.assert_array_equal(a(step)["inputs"], b(step)["inputs"])
    offsets = {data.TextBatches(ids, 4, 8, seed=s).offset(e) for s in range(4) for e in range(4)}
    assert len(offsets) > 1


def test_text_batches_errors():
    with pytest.raises(ValueError, match="too short"):
        data.TextBatches(np.arange(20), batch_size=4, seq_len=5)
    with pytest.raises(ValueError, match="1-D integer"):
        data.TextBatches(np.zeros((3, 3), np.int32), 1, 1)
    with pytest.raises(ValueError, match="seq_len"):
        data.TextBatches(np.arange(100), 2, 0)


# --------------------------------------------------------------------------------------------
# Synthetic tasks.


@pytest.mark.parametrize("length", [2, 51])
def test_adding_problem(length):
    xs, ys = data.adding_problem(jax.random.key(0), 64, length)
    assert xs.shape == (64, length, 2) and ys.shape == (64,)
    assert xs.dtype == jnp.float32 and ys.dtype == jnp.float32
    xs_np, ys_np = np.asarray(xs), np.asarray(ys)
    values, marks = xs_np[..., 0].astype(np.float64), xs_np[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(np.unique(marks)) <= {0.0, 1.0}
    half = length // 2
    for b in range(64):
        (where,) = np.nonzero(marks[b])
        assert len(where) == 2
        assert where[0] < half <= where[1]
        np.testing.assert_allclose(ys_np[b], values[b, where].sum(), rtol=1e-6)
    xs2, ys2 = data.adding_problem(jax.random.key(0), 64, length)
    np.testing.assert_array_equal(xs, xs2)
    np.testing.assert_array_equal(ys, ys2)
    xs3, _ = data.adding_problem(jax.random.key(1), 64, length)
    assert not np.array_equal(xs, xs3)


def test_adding_problem_rejects_short():
    with pytest.raises(ValueError, match="length"):
        data.adding_problem(jax.random.key(0), 2, 1)


@pytest.mark.parametrize("delay,num_symbols,copy_length", [(1, 8, 10), (25, 3, 2)])
def test_copy_memory_layout(delay, num_symbols, copy_length):
    x, y = data.copy_memory(
        jax.random.key(0), 16, delay, num_symbols=num_symbols, copy_length=copy_length
    )
    total = delay + 2 * copy_length
    assert x.shape == y.shape == (16, total)
    assert x.dtype == y.dtype == jnp.int32
    x, y = np.asarray(x), np.asarray(y)
    symbols = x[:, :copy_length]
    assert ((symbols >= 1) & (symbols <= num_symbols)).all()
    delim = copy_length + delay - 1
    # Blanks between the symbols and the delimiter, the delimiter, blanks after it.
    assert (x[:, copy_length:delim] == 0).all()
    assert (x[:, delim] == num_symbols + 1).all()
    assert (x[:, delim + 1 :] == 0).all()
    # Targets: blanks until the delimiter has been read, then the symbols.
    assert (y[:, : total - copy_length] == 0).all()
    np.testing.assert_array_equal(y[:, total - copy_length :], symbols)
    assert len(np.unique(symbols)) > 1


def test_copy_memory_deterministic():
    a = data.copy_memory(jax.random.key(5), 4, 10)
    b = data.copy_memory(jax.random.key(5), 4, 10)
    np.testing.assert_array_equal(a[0], b[0])


# --------------------------------------------------------------------------------------------
# Dates.


def _parse(source: str) -> tuple[datetime.date, str]:
    """Parse ``source`` with the first of DATE_FORMATS that accepts it."""
    for fmt in data.DATE_FORMATS:
        try:
            return datetime.datetime.strptime(source, fmt).date(), fmt
        except ValueError:
            continue
    raise AssertionError(f"no format parses {source!r}")


def test_date_pairs_parse_back():
    pairs = data.date_pairs(500, seed=0)
    assert pairs == data.date_pairs(500, seed=0)
    assert pairs != data.date_pairs(500, seed=1)
    formats = set()
    for source, target in pairs:
        day = datetime.date.fromisoformat(target)
        assert datetime.date(1950, 1, 1) <= day <= datetime.date(2049, 12, 31)
        parsed, fmt = _parse(source)
        assert parsed == day, (source, target)
        formats.add(fmt)
        if "%B" in fmt or "%b" in fmt:
            assert f" 0{day.day}" not in source and not source.startswith("0")
    assert formats == set(data.DATE_FORMATS)


def test_date_pairs_example():
    (pair,) = data.date_pairs(
        1, formats=["%d %B %Y"], start=datetime.date(2026, 11, 21), end=datetime.date(2026, 11, 21)
    )
    assert pair == ("21 November 2026", "2026-11-21")


def test_date_dataset_decodes_to_pairs():
    ds = data.date_dataset(200, seed=4)
    pairs = data.date_pairs(200, seed=4)
    sources, targets = np.asarray(ds.sources), np.asarray(ds.targets)
    n, width = sources.shape
    assert n == 200 and ds.targets.shape == (200, 10) and ds.decoder_inputs.shape == (200, 10)
    # The longest possible source: "Wednesday, 30 September 2026".
    assert width == len("Wednesday, 30 September 2026")
    for row, (source, target) in enumerate(pairs):
        length = int(ds.source_lengths[row])
        assert length == len(source)
        assert ds.source_vocab.decode(sources[row, :length]) == source
        assert (sources[row, length:] == 0).all()  # <pad>
        assert ds.target_vocab.decode(targets[row]) == target
    np.testing.assert_array_equal(ds.decoder_inputs[:, 1:], ds.targets[:, :-1])
    assert (np.asarray(ds.decoder_inputs[:, 0]) == ds.target_vocab.index("<s>")).all()
    # Same shapes for every seed.
    assert data.date_dataset(3, seed=1).sources.shape[1] == width

"""Tests of jaxrnn.train.Checkpoints: exact round trips, keep-last-k, bit-exact resumption after
a crash in another process, and clear errors for corrupt or mismatched checkpoints."""

from __future__ import annotations

import dataclasses
import gc
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn.models as jm
import jaxrnn.train as jt
from jaxrnn import data
from jaxrnn.train.checkpoints import _to_saveable

TESTS_DIR = pathlib.Path(__file__).resolve().parent
REPO = TESTS_DIR.parent

# Small enough to be quick, with a dropout that consumes the PRNG key and a corpus that wraps
# around (new epoch, new offset, carry reset) within the run.
TEXT = "a stitch in time saves nine; " * 6
TOTAL, SAVE_EVERY, CRASH_AT = 12, 3, 7


def setup_run(directory=None, *, max_to_keep=2):
    """A fresh run: (state, train_step, batches, checkpoints or None)."""
    vocab = data.Vocab.from_text(TEXT)
    model = jm.char_lm(vocab.size, 8, embed_size=4, dropout=0.25)
    batches = data.TextBatches(vocab.encode(TEXT), 3, 10, seed=1)
    assert batches.num_chunks < TOTAL  # the run crosses an epoch boundary
    opt = jt.default_optimizer(1e-2, TOTAL, warmup_steps=2)
    state = jt.init_state(
        model.init(jax.random.key(0)), opt, jax.random.key(1), model.initial_carry((3,))
    )
    step = jt.make_train_step(jm.lm_loss(model), opt)
    ckpt = None
    if directory is not None:
        ckpt = jt.Checkpoints(
            directory, save_every=SAVE_EVERY, max_to_keep=max_to_keep, config={"text": TEXT}
        )
    return state, step, batches, ckpt


def leaves_equal(a, b):
    la, ta = jax.tree.flatten(_to_saveable(a))
    lb, tb = jax.tree.flatten(_to_saveable(b))
    return ta == tb and all(
        x.dtype == y.dtype and np.array_equal(x, y)
        for x, y in zip(map(np.asarray, la), map(np.asarray, lb), strict=True)
    )


def copy_state(state):
    return jax.tree.map(jnp.copy, state)


# --------------------------------------------------------------------------------------------
# Round trips.


def test_roundtrip_is_exact_and_keeps_last_k(tmp_path):
    state, step, batches, ckpt = setup_run(tmp_path / "ck", max_to_keep=2)
    saved = {}
    history = jt.History()
    for s in range(3):
        state, metrics = step(state, batches(s))
        history.log_train(s + 1, metrics)
        assert ckpt.save(state, history=history)
        saved[s + 1] = copy_state(state)
    assert not ckpt.save(state)  # step 3 exists already
    assert ckpt.steps() == [2, 3]  # max_to_keep=2
    ckpt.close()

    template, _, _, _ = setup_run()
    with jt.Checkpoints(tmp_path / "ck") as again:
        assert again.latest_step() == 3
        restored, restored_history = again.resume(template)
        assert leaves_equal(restored, saved[3])
        assert isinstance(restored, jt.TrainState)
        assert jax.dtypes.issubdtype(restored.rng.dtype, jax.dtypes.prng_key)
        assert restored_history == history
        assert leaves_equal(again.restore(template, step=2), saved[2])
        meta = again.metadata(2)
        assert meta["step"] == 2 and meta["config"] == {"text": TEXT}
        assert len(meta["history"]["train"]["loss"]) == 2
        # Abstract templates work too (shardings default to the first device).
        abstract = jax.eval_shape(lambda: template)
        assert leaves_equal(again.restore(abstract), saved[3])


def test_empty_directory_starts_from_scratch(tmp_path):
    template, _, _, ckpt = setup_run(tmp_path / "new")
    with ckpt:
        assert ckpt.latest_step() is None
        state, history = ckpt.resume(template)
        assert state is template and history == jt.History()
        with pytest.raises(jt.CheckpointError, match="no checkpoint"):
            ckpt.restore(template)
        with pytest.raises(jt.CheckpointError, match="no checkpoint"):
            ckpt.metadata()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        jt.Checkpoints(tmp_path / "missing", create=False)


# --------------------------------------------------------------------------------------------
# Resuming after a crash.

CRASHING_RUN = textwrap.dedent(
    f"""
    import os, signal, sys
    sys.path.insert(0, {str(TESTS_DIR)!r})
    import jax
    # The same settings as conftest.py, so both processes compile the same programs.
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_debug_key_reuse", True)
    import jaxrnn.train as jt
    from test_checkpoint import setup_run, TOTAL, CRASH_AT

    state, step, batches, ckpt = setup_run(sys.argv[1])

    def crash(step, state, metrics):
        if step == CRASH_AT:  # killed mid-run: no cleanup, no final checkpoint
            os.kill(os.getpid(), signal.SIGKILL)

    jt.fit(state, step, batches, TOTAL, checkpoints=ckpt, callback=crash, progress=False)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_resume_after_crash_is_bit_exact(tmp_path):
    directory = tmp_path / "ck"
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, str(directory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    # Uninterrupted reference run, in this process.
    state, step, batches, _ = setup_run()
    reference_state, reference = jt.fit(state, step, batches, TOTAL, progress=False)

    # A new process (this one), a new manager: resume from the last checkpoint and finish.
    template, step, batches, ckpt = setup_run(directory)
    assert ckpt.steps() == [3, 6]  # saved every 3 steps, killed at 7, the last 2 kept
    state, history = ckpt.resume(template)
    assert int(state.step) == 6 and history.train["step"] == [1, 2, 3, 4, 5, 6]
    with ckpt:
        state, history = jt.fit(
            state, step, batches, TOTAL, checkpoints=ckpt, history=history, progress=False
        )
        assert ckpt.steps() == [9, 12]

    # The same losses, step for step, bit for bit (the first six from the killed process).
    assert history.train["step"] == list(range(1, TOTAL + 1))
    assert history.train["loss"] == reference.train["loss"]
    assert history.train["grad_norm"] == reference.train["grad_norm"]
    assert leaves_equal(state, reference_state)


# --------------------------------------------------------------------------------------------
# Corrupt, incomplete and mismatched checkpoints.


def _largest_file(directory: pathlib.Path) -> pathlib.Path:
    files = [p for p in directory.rglob("*") if p.is_file()]
    return max(files, key=lambda p: (p.stat().st_size, str(p)))


def _flip_bytes(path: pathlib.Path) -> None:
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    for i in range(middle, min(len(raw), middle + 8)):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    # The largest file of the state is the array data: flipped bytes are only caught by the
    # checksum (tensorstore has no checksum on raw chunks), truncation by tensorstore.
    "flip-array-data": lambda step_dir: _flip_bytes(_largest_file(step_dir / "state")),
    "truncate-array-data": lambda step_dir: _truncate(_largest_file(step_dir / "state")),
    "garble-metadata": lambda step_dir: _truncate(_largest_file(step_dir / "meta")),
    "delete-state": lambda step_dir: [
        p.unlink() for p in sorted((step_dir / "state").rglob("*")) if p.is_file()
    ],
}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A checkpoint directory with steps 1 and 2, and the states saved."""
    directory = tmp_path_factory.mktemp("saved") / "ck"
    state, step, batches, ckpt = setup_run(directory)
    states = {}
    with ckpt:
        for s in range(2):
            state, _ = step(state, batches(s))
            ckpt.save(state)
            states[s + 1] = copy_state(state)
    return directory, states


# A failing restore must leave no orbax coroutine behind (reported as "exception ignored"
# warnings in later tests): collect inside the test and make any such warning an error.
orbax_leaks = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


@orbax_leaks
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_latest_checkpoint_is_an_error(saved_run, tmp_path, corruption):
    source, states = saved_run
    directory = tmp_path / "ck"
    subprocess.run(["cp", "-r", str(source), str(directory)], check=True)
    CORRUPTIONS[corruption](directory / "2")

    template, _, _, ckpt = setup_run(directory)
    with ckpt:
        assert ckpt.latest_step() == 2
        with pytest.raises(jt.CheckpointError) as info:
            ckpt.resume(template)
        message = str(info.value)
        assert "step 2" in message and str(directory) in message
        assert f"remove {directory / '2'} to resume from step 1" in message
        # Nothing was restored silently; the older checkpoint is still intact and usable.
        assert leaves_equal(ckpt.restore(template, step=1), states[1])
    gc.collect()


@orbax_leaks
def test_mismatched_template_is_an_error(saved_run):
    directory, _ = saved_run
    vocab = data.Vocab.from_text(TEXT)
    other = jm.char_lm(vocab.size, 16, embed_size=4)  # another hidden size
    opt = jt.default_optimizer(1e-2, TOTAL)
    template = jt.init_state(
        other.init(jax.random.key(0)), opt, jax.random.key(1), other.initial_carry((3,))
    )
    with jt.Checkpoints(directory) as ckpt, pytest.raises(jt.CheckpointError, match="step 2"):
        ckpt.restore(template)
    gc.collect()


def test_unknown_step_is_an_error(saved_run):
    directory, _ = saved_run
    template, _, _, _ = setup_run()
    with jt.Checkpoints(directory) as ckpt, pytest.raises(jt.CheckpointError, match="step 5"):
        ckpt.restore(template, step=5)


def test_train_char_lm_refuses_another_runs_checkpoints(tmp_path):
    text = TEXT * 2  # long enough to hold out one batch for validation
    config = jm.CharLMConfig(
        hidden_size=8, embed_size=4, batch_size=2, seq_len=8, steps=2, eval_chunks=1
    )
    run = jm.train_char_lm(text, config, checkpoint_dir=tmp_path, progress=False)
    assert int(run.state.step) == 2 and run.history.eval["step"] == [2]
    with pytest.raises(ValueError, match="hidden_size: checkpoint 8, now 12"):
        jm.train_char_lm(text, dataclasses.replace(config, hidden_size=12), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="corpus"):
        jm.train_char_lm(text + "!", config, checkpoint_dir=tmp_path)
    # The same run resumes (and, being complete, trains no further).
    again = jm.train_char_lm(text, config, checkpoint_dir=tmp_path, progress=False)
    assert again.history == run.history
    _, params, _, loaded_config, meta = jm.load_char_lm(tmp_path)
    assert loaded_config == config and meta["step"] == 2
    assert leaves_equal(params, run.state.params)


def test_load_char_lm_errors(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(jt.CheckpointError, match="no checkpoint"):
        jm.load_char_lm(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        jm.load_char_lm(tmp_path / "nowhere")

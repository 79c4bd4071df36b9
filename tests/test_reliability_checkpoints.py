"""Reliability of checkpoints and the fit loop (issue 11, section 1): nothing lost, nothing silent.

Each test is a probe that ended badly before: flipped bytes restored silently when the digest
was missing, two writers on one directory, ``max_to_keep=0``, dtype mismatches reported as
corruption, unusable directories found after training, stored metadata trusted, NaN losses
checkpointed, Ctrl-C losing the run, resumed runs forgetting their history.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn.models as jm
import jaxrnn.train as jt
from jaxrnn.models.char_lm_run import stored_run
from jaxrnn.train import checkpoints
from jaxrnn.train.checkpoints import KILL_POINTS, _to_saveable

TESTS_DIR = pathlib.Path(__file__).resolve().parent
REPO = TESTS_DIR.parent

# Restores that fail must not leave orbax coroutines behind to be reported later.
no_leaks = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


def small_state(dtype=jnp.float32, seed=0):
    # A 64 x 64 float32 array is stored out of line by OCDBT, in a data file without a
    # checksum of its own: flipped bytes there are caught by our digest alone.
    w = jax.random.normal(jax.random.key(seed), (64, 64)).astype(dtype)
    return jt.init_state({"w": w, "b": jnp.ones(8, dtype)}, optax.sgd(0.1), jax.random.key(1))


def same(a, b):
    la, lb = jax.tree.leaves(_to_saveable(a)), jax.tree.leaves(_to_saveable(b))
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)
    )


def array_data_file(step_dir: pathlib.Path) -> pathlib.Path:
    """The largest OCDBT data file of a checkpoint's state (the raw array bytes)."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: (p.stat().st_size, str(p)))


def flip_middle(path: pathlib.Path) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 8):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def edit_meta(step_dir: pathlib.Path, edit) -> None:
    path = step_dir / "meta" / "metadata"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


# --------------------------------------------------------------------------------------------
# 1. Integrity is always verified.


@no_leaks
def test_flipped_array_bytes_raise_with_and_without_the_digest(tmp_path):
    state = small_state()
    with jt.Checkpoints(tmp_path) as ckpt:
        assert ckpt.save(state)
        meta = ckpt.metadata(0)
    assert set(meta["digest"]["sha256"]) == {"0"}  # one digest per process
    assert meta["tree"][0][1:] == ["float32", [8]]
    flip_middle(array_data_file(tmp_path / "0"))

    with jt.Checkpoints(tmp_path, create=False) as ckpt:
        with pytest.raises(jt.CheckpointError, match="do not match the digest") as info:
            ckpt.restore(state)
        assert "\n" not in str(info.value)
        # The flip is in the array data: without verification it would pass unnoticed.
        assert not same(ckpt.restore(state, verify=False), state)

    # A checkpoint without a digest (as every multi-host checkpoint was) is an error too.
    def strip(meta):
        del meta["digest"]
        meta["checksum"] = None

    edit_meta(tmp_path / "0", strip)
    with jt.Checkpoints(tmp_path, create=False) as ckpt:
        with pytest.raises(jt.CheckpointError, match="carries no digest"):
            ckpt.restore(state)
        with pytest.raises(jt.CheckpointError, match="carries no digest"):
            ckpt.resume(state)
    with jt.Checkpoints(tmp_path, create=False, verify=False) as ckpt:
        restored = ckpt.restore(state)  # the documented, dangerous opt-out
        assert restored.params["w"].shape == (64, 64)


def test_checkpoints_of_0_2_with_a_checksum_still_verify(tmp_path):
    state = small_state()
    with jt.Checkpoints(tmp_path) as ckpt:
        ckpt.save(state)
    edit_meta(tmp_path / "0", lambda m: [m.pop("digest"), m.pop("tree")])
    with jt.Checkpoints(tmp_path, create=False) as ckpt:
        assert same(ckpt.restore(state), state)
    flip_middle(array_data_file(tmp_path / "0"))
    with (
        jt.Checkpoints(tmp_path, create=False) as ckpt,
        pytest.raises(jt.CheckpointError, match="digest"),
    ):
        ckpt.restore(state)


# --------------------------------------------------------------------------------------------
# 2. One writer per directory; an existing step is never skipped silently.

HOLDER = textwrap.dedent(
    """
    import sys
    import jaxrnn.train as jt
    ckpt = jt.Checkpoints(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the parent closes our stdin (or kills us)
    """
)


def test_second_writer_fails_at_once_naming_the_first(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(jt.CheckpointError) as info:
            jt.Checkpoints(tmp_path)
        message = str(info.value)
        assert f"{tmp_path} is in use by pid {holder.pid} (host " in message
        assert "since " in message and "\n" not in message
        with jt.Checkpoints(tmp_path, create=False) as reader:  # readers need no lock
            assert reader.latest_step() is None
        # A lock held by a process that died is released with it.
        holder.kill()
        holder.wait(timeout=60)
        with jt.Checkpoints(tmp_path) as ckpt:
            assert ckpt.save(small_state())
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=60)


def test_one_writer_per_directory_in_process(tmp_path):
    first = jt.Checkpoints(tmp_path)
    with pytest.raises(jt.CheckpointError, match=f"in use by pid {os.getpid()}"):
        jt.Checkpoints(tmp_path)
    first.close()
    with jt.Checkpoints(tmp_path) as second:
        assert second.save(small_state())
    with (
        jt.Checkpoints(tmp_path, create=False) as reader,
        pytest.raises(jt.CheckpointError, match="read-only"),
    ):
        reader.save(small_state())


def test_existing_step_is_a_no_op_or_an_error(tmp_path):
    state = small_state()
    with jt.Checkpoints(tmp_path) as ckpt:
        assert ckpt.save(state)
        assert not ckpt.save(state)  # the same contents: idempotent
        with pytest.raises(jt.CheckpointError, match=r"step 0 already exists .* other contents"):
            ckpt.save(small_state(seed=1))
    with jt.Checkpoints(tmp_path, create=False) as ckpt:
        assert same(ckpt.restore(state), state)  # the first save is what is on disk


# --------------------------------------------------------------------------------------------
# 3. Arguments.


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_to_keep", 0),
        ("max_to_keep", -1),
        ("max_to_keep", True),
        ("max_to_keep", 2.0),
        ("save_every", 0),
        ("save_every", False),
        ("save_every", "10"),
        ("save_every", None),
    ],
)
def test_bad_keep_and_period_are_rejected(tmp_path, name, value):
    with pytest.raises(ValueError, match=f"^{name} must be a positive int"):
        jt.Checkpoints(tmp_path, **{name: value})
    assert not os.path.exists(tmp_path / ".jaxrnn-writer-0.lock")  # checked before anything


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (object(), "got object"),
        ([1, 2], "got list"),
        ({"f": object()}, "not JSON serializable"),
        ({"f": {1, 2}}, "not JSON serializable"),
    ],
)
def test_config_that_cannot_be_stored_names_config(tmp_path, config, expected):
    with pytest.raises(TypeError, match=r"^config must be a JSON-serialisable mapping") as info:
        jt.Checkpoints(tmp_path, config=config)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert not os.path.exists(tmp_path / ".jaxrnn-writer-0.lock")  # checked before anything


@pytest.mark.parametrize(
    ("directory", "error", "expected"),
    [
        ("", ValueError, "^directory must be a non-empty path"),
        ("   ", ValueError, "^directory must be a non-empty path"),
        ("a\0b", ValueError, "^directory must be a non-empty path without NUL"),
        (3, TypeError, r"^directory must be a path \(str or os.PathLike\), got int"),
        (None, TypeError, "^directory must be a path"),
    ],
)
def test_directory_that_is_no_path_is_refused(tmp_path, monkeypatch, directory, error, expected):
    monkeypatch.chdir(tmp_path)  # '' was the current directory: steps and a lock written here
    with pytest.raises(error, match=expected):
        jt.Checkpoints(directory)
    assert list(tmp_path.iterdir()) == []


def test_numpy_ints_and_none_are_accepted(tmp_path):
    with jt.Checkpoints(tmp_path, max_to_keep=None, save_every=np.int64(2)) as ckpt:
        assert ckpt.save_every == 2 and ckpt.max_to_keep is None


# --------------------------------------------------------------------------------------------
# 4. A template that does not match is reported as such.


@no_leaks
def test_dtype_and_shape_mismatch_name_the_leaf(tmp_path):
    with jt.Checkpoints(tmp_path) as ckpt:
        ckpt.save(small_state())
    with jt.Checkpoints(tmp_path, create=False) as ckpt:
        with pytest.raises(jt.CheckpointError) as info:
            ckpt.restore(small_state(jnp.bfloat16))
        message = str(info.value)
        assert (
            "holds float32 params['b'] (8,), the template expects bfloat16 params['b'] (8,) "
            "(1 more leaf differs)" in message
        )
        assert "corrupt" not in message and "remove" not in message
        params = {"w": jnp.zeros((64, 32)), "b": jnp.ones(8)}
        other = jt.init_state(params, optax.sgd(0.1), jax.random.key(1))
        with pytest.raises(jt.CheckpointError, match=r"holds float32 params\['w'\] \(64, 64\)"):
            ckpt.restore(other)
        params = {"w": jnp.zeros((64, 64)), "c": jnp.zeros(2)}
        extra = jt.init_state(params, optax.sgd(0.1), jax.random.key(1))
        with pytest.raises(jt.CheckpointError, match="another structure than the template"):
            ckpt.restore(extra)


# --------------------------------------------------------------------------------------------
# 5. The directory is checked before any training.


def test_unusable_directories_fail_at_construction(tmp_path):
    regular = tmp_path / "file"
    regular.write_text("not a directory")
    with pytest.raises(jt.CheckpointError, match=f"^checkpoint directory {regular} is not a dir"):
        jt.Checkpoints(regular)
    with pytest.raises(jt.CheckpointError, match=f"^cannot create checkpoint directory {regular}"):
        jt.Checkpoints(regular / "sub")
    if os.geteuid() == 0:  # root writes anywhere: use a directory no one can write into
        unwritable = pathlib.Path("/proc/self")
    else:
        unwritable = tmp_path / "ro"
        unwritable.mkdir()
        unwritable.chmod(0o555)
    with pytest.raises(jt.CheckpointError, match="is not writable") as info:
        jt.Checkpoints(unwritable)
    assert str(unwritable) in str(info.value) and "\n" not in str(info.value)


def test_symlinked_step_is_refused_and_nothing_is_deleted_through_it(tmp_path):
    directory, elsewhere = tmp_path / "ck", tmp_path / "precious"
    with jt.Checkpoints(directory, max_to_keep=1) as ckpt:
        ckpt.save(small_state())
    os.rename(directory / "0", elsewhere)
    os.symlink(elsewhere, directory / "0")
    kept = sorted(p for p in elsewhere.rglob("*"))
    with pytest.raises(jt.CheckpointError, match="symbolic link"):
        jt.Checkpoints(directory, max_to_keep=1)  # a save would delete step 0 through it
    with pytest.raises(jt.CheckpointError, match="symbolic link"):
        jm.load_char_lm(directory)
    with pytest.raises(jt.CheckpointError, match="symbolic link"):
        jt.Checkpoints(directory, create=False)
    assert sorted(p for p in elsewhere.rglob("*")) == kept


# --------------------------------------------------------------------------------------------
# 6. Stored metadata is data: validated, never acted on.

TEXT = "the quick brown fox jumps over the lazy dog. " * 8
CONFIG = jm.CharLMConfig(
    hidden_size=8, embed_size=4, batch_size=2, seq_len=8, steps=2, eval_chunks=1
)


@pytest.fixture(scope="module")
def char_lm_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lm") / "ck"
    jm.train_char_lm(TEXT, CONFIG, corpus="mine.txt", checkpoint_dir=directory, progress=False)
    return directory


def _copy(source, target):
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    return target


def test_stored_run_describes_without_opening(char_lm_run, tmp_path):
    directory = _copy(char_lm_run, tmp_path / "ck")
    config, meta = stored_run(directory)
    assert config == CONFIG and meta["step"] == 2
    corpus = meta["config"]["corpus"]
    assert corpus["source"] == "mine.txt" and len(corpus["sha256"]) == 64
    assert stored_run(tmp_path / "nowhere") is None
    (tmp_path / "empty").mkdir()
    assert stored_run(tmp_path / "empty") is None
    # A stored corpus path is a name: resuming trains on the text given, checked by digest.
    edit_meta(directory / "2", lambda m: m["config"]["corpus"].update(source="/etc/passwd"))
    assert stored_run(directory)[1]["config"]["corpus"]["source"] == "/etc/passwd"
    with pytest.raises(ValueError, match="corpus"):
        jm.train_char_lm("x" * 500, CONFIG, checkpoint_dir=directory, progress=False)
    again = jm.train_char_lm(TEXT, CONFIG, checkpoint_dir=directory, progress=False)
    assert int(again.state.step) == 2


def test_resume_with_other_regularisation_is_refused(char_lm_run, tmp_path):
    directory = _copy(char_lm_run, tmp_path / "ck")
    other = dataclasses.replace(CONFIG, weight_drop=0.5, input_dropout=0.25)
    with pytest.raises(ValueError, match="different run") as info:
        jm.train_char_lm(TEXT, other, checkpoint_dir=directory, progress=False)
    assert "input_dropout: checkpoint 0.0, now 0.25" in str(info.value)
    assert "weight_drop: checkpoint 0.0, now 0.5" in str(info.value)
    # A checkpoint written before the regularisers existed lacks them: they default to 0.
    fields = ("dropout", "input_dropout", "recurrent_dropout", "zoneout", "weight_drop")
    fields += ("embedding_dropout",)
    edit_meta(directory / "2", lambda m: [m["config"]["config"].pop(k) for k in fields])
    assert stored_run(directory)[0] == CONFIG


BAD_METADATA = {
    "unknown config key": (
        lambda m: m["config"]["config"].update(evil=1),
        "unknown keys in the stored config: evil",
    ),
    "wrong type": (
        lambda m: m["config"]["config"].update(hidden_size="8"),
        "hidden_size is '8', expected a positive int",
    ),
    "zero size": (
        lambda m: m["config"]["config"].update(batch_size=0),
        "batch_size is 0, expected a positive int",
    ),
    "bool for int": (
        lambda m: m["config"]["config"].update(num_layers=True),
        "num_layers is True",
    ),
    "unknown cell": (lambda m: m["config"]["config"].update(cell="os.system"), "cell is"),
    "rate of one": (
        lambda m: m["config"]["config"].update(zoneout=1.0),
        r"zoneout is 1.0, expected a number in \[0, 1\)",
    ),
    "empty vocabulary": (lambda m: m["config"].update(vocab=[]), "vocabulary is empty"),
    "vocabulary string": (lambda m: m["config"].update(vocab="abc"), "vocabulary is empty"),
    "duplicate tokens": (lambda m: m["config"].update(vocab=["a", "a"]), "vocabulary is"),
    "vocabulary size": (
        lambda m: m["config"].update(vocab=m["config"]["vocab"][:-1]),
        "vocabulary has",
    ),
    "unknown top key": (lambda m: m["config"].update(run="x"), "unknown keys"),
    "not char_lm": (lambda m: m.update(config={"kind": "other"}), "no train_char_lm"),
    "corpus": (lambda m: m["config"].update(corpus={"source": 1}), "corpus description"),
    "history": (lambda m: m.update(history={"train": 3}), "history is malformed"),
}


@no_leaks
@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_malformed_metadata_is_a_checkpoint_error(char_lm_run, tmp_path, case):
    edit, expected = BAD_METADATA[case]
    directory = _copy(char_lm_run, tmp_path / "ck")
    edit_meta(directory / "2", edit)
    calls = [lambda: jm.train_char_lm(TEXT, CONFIG, checkpoint_dir=directory, progress=False)]
    if case != "history":
        calls += [lambda: jm.load_char_lm(directory), lambda: stored_run(directory)]
    for call in calls:
        with pytest.raises(jt.CheckpointError, match=expected) as info:
            call()
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# 7. A non-finite loss stops fit before anything after it is saved.


def toy_problem(nan_at: int):
    """A linear regression whose batch of step ``nan_at`` holds a NaN."""

    def loss_fn(params, carry, batch, key):
        return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2), carry

    def batches(s):
        x = jax.random.normal(jax.random.key(s), (4, 3))
        if s == nan_at:
            x = x.at[0, 0].set(jnp.nan)
        return {"x": x, "y": jnp.ones(4)}

    state = jt.init_state({"w": jnp.zeros(3)}, optax.sgd(0.1), jax.random.key(0))
    return state, jt.make_train_step(loss_fn, optax.sgd(0.1)), batches


def test_fit_stops_at_the_first_non_finite_step(tmp_path):
    state, step, batches = toy_problem(nan_at=4)  # step 5 (the fifth) sees the NaN
    with jt.Checkpoints(tmp_path, save_every=2) as ckpt:
        with pytest.raises(jt.NonFiniteLossError, match="at step 5") as info:
            jt.fit(state, step, batches, 20, checkpoints=ckpt, progress=False, log_every=10)
        assert info.value.step == 5 and isinstance(info.value, FloatingPointError)
        assert ckpt.steps() == [2, 4]  # nothing after the bad step; step 6 was never saved
        good = ckpt.restore(jax.eval_shape(lambda: state))
        assert bool(jnp.all(jnp.isfinite(good.params["w"])))


def test_fit_can_continue_through_non_finite_losses():
    state, step, batches = toy_problem(nan_at=1)
    _, history = jt.fit(state, step, batches, 4, progress=False, on_nonfinite="continue")
    assert history.train["step"] == [1, 2, 3, 4] and np.isnan(history.train["loss"][1])
    with pytest.raises(ValueError, match="on_nonfinite"):
        jt.fit(state, step, batches, 4, progress=False, on_nonfinite="ignore")


# --------------------------------------------------------------------------------------------
# 8. Ctrl-C / SIGTERM: save the last completed step, then stop.

INTERRUPTED_RUN = textwrap.dedent(
    f"""
    import os, signal, sys
    sys.path.insert(0, {str(TESTS_DIR)!r})
    import jax
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_debug_key_reuse", True)
    import jaxrnn.train as jt
    from test_checkpoint import setup_run, TOTAL, CRASH_AT

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignores it
    state, step, batches, ckpt = setup_run(sys.argv[1])
    signum = getattr(signal, sys.argv[2])

    def interrupt(step, state, metrics):
        if step == CRASH_AT:
            os.kill(os.getpid(), signum)

    try:
        jt.fit(state, step, batches, TOTAL, checkpoints=ckpt, callback=interrupt, progress=False)
    except jt.Interrupted as e:
        print(e.step, e.path)
        sys.exit(130)
    """
)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_saves_and_resume_is_bit_exact(tmp_path, signame):
    from test_checkpoint import CRASH_AT, TOTAL, leaves_equal, setup_run

    directory = tmp_path / "ck"
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_RUN, str(directory), signame],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert proc.stdout.split() == [str(CRASH_AT), str(directory / str(CRASH_AT))]
    assert "Traceback" not in proc.stderr

    state, step, batches, _ = setup_run()
    reference_state, reference = jt.fit(state, step, batches, TOTAL, progress=False)

    template, step, batches, ckpt = setup_run(directory)
    with ckpt:
        assert ckpt.steps() == [6, CRASH_AT]
        state, _ = ckpt.resume(template)
        state, history = jt.fit(state, step, batches, TOTAL, checkpoints=ckpt, progress=False)
    assert history.train["loss"] == reference.train["loss"]  # its history came along
    assert leaves_equal(state, reference_state)


# --------------------------------------------------------------------------------------------
# 9. kill -9 *during* a save (issue 24): the test hook of jaxrnn.train.checkpoints kills the
# process at a point inside the write of step 9 (3 and 6 saved before); the resumed run
# repeats the uninterrupted run's losses bit for bit.

KILLED_IN_SAVE = textwrap.dedent(
    f"""
    import sys
    sys.path.insert(0, {str(TESTS_DIR)!r})
    import jax
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_debug_key_reuse", True)
    import jaxrnn.train as jt
    from test_checkpoint import setup_run, TOTAL

    state, step, batches, ckpt = setup_run(sys.argv[1])
    jt.fit(state, step, batches, TOTAL, checkpoints=ckpt, progress=False)
    print("never killed")
    """
)


@pytest.fixture(scope="module")
def uninterrupted():
    """The reference: the run of test_checkpoint.setup_run, never stopped; and its compiled
    train step (the same for every run: compiled once)."""
    from test_checkpoint import TOTAL, setup_run

    state, step, batches, _ = setup_run()
    return (*jt.fit(state, step, batches, TOTAL, progress=False), step)


def _files(directory: pathlib.Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("point", [p for p in KILL_POINTS if p != "create:meta"])
def test_kill_during_a_save_then_resume_is_bit_exact(tmp_path, point, uninterrupted):
    from test_checkpoint import SAVE_EVERY, TOTAL, leaves_equal, setup_run

    assert checkpoints._KILL_IN_SAVE is None  # the hook is off here, as everywhere else
    killed = 3 * SAVE_EVERY
    directory = tmp_path / "ck"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_IN_SAVE, str(directory)],
        cwd=REPO,
        env={**os.environ, "JAXRNN_TEST_KILL_IN_SAVE": f"{killed}:{point}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr[-3000:]

    # The kill landed inside the write of step 9: its temporary directory holds what was
    # written up to that point, and step 9 does not exist.
    (partial,) = [p for p in directory.iterdir() if p.name.startswith(f"{killed}.")]
    assert not (directory / str(killed)).exists()
    written = _files(partial)
    event, item = point.split(":")
    assert "_CHECKPOINT_METADATA" in written
    if event == "create":  # nothing of the items yet
        assert not any(f.startswith(("state", "meta")) for f in written), written
    else:  # the arrays written; the items committed in order: meta, state, then the step
        committed = {"meta": [], "state": ["meta"], "step": ["meta", "state"]}[item]
        assert any(f.endswith("manifest.ocdbt") for f in written), written
        for name in ("meta", "state"):
            assert (f"{name}/commit_success.txt" in written) == (name in committed), written

    reference_state, reference, step = uninterrupted
    template, _, batches, ckpt = setup_run(directory)
    with ckpt:
        assert ckpt.steps() == [SAVE_EVERY, 2 * SAVE_EVERY]  # the last complete steps
        state, history = ckpt.resume(template)
        assert int(state.step) == 2 * SAVE_EVERY
        state, history = jt.fit(
            state, step, batches, TOTAL, checkpoints=ckpt, history=history, progress=False
        )
        assert ckpt.steps() == [3 * SAVE_EVERY, TOTAL]
    # Nothing of the killed save is left: orbax's clean-up of a writer removed it.
    assert sorted(p.name for p in directory.iterdir()) == [".jaxrnn-writer-0.lock", "12", "9"]
    assert history.train["step"] == list(range(1, TOTAL + 1))
    assert history.train["loss"] == reference.train["loss"]  # bit for bit
    assert history.train["grad_norm"] == reference.train["grad_norm"]
    assert leaves_equal(state, reference_state)


def test_tensorstore_annotations_stay_out_of_messages():
    spec = "{" + ", ".join(f'"k{i}": {i}' for i in range(500)) + "}"
    message = f"DATA_LOSS: bad [source locations='a.cc:1\nb.cc:2'] [tensorstore_spec='{spec}'] end"
    assert checkpoints._one_line(message) == "DATA_LOSS: bad end"
    assert len(checkpoints._one_line("x" * 5000)) == 300


def test_kill_hook_refuses_unknown_points():
    with pytest.raises(ValueError, match="JAXRNN_TEST_KILL_IN_SAVE: expected"):
        checkpoints._killing_path("9:halfway")


def test_keyboard_interrupt_in_process_saves_the_last_step(tmp_path):
    state, step, batches = toy_problem(nan_at=-1)
    previous = signal.getsignal(signal.SIGTERM)

    def stop(s, state, metrics):
        if s == 3:
            raise KeyboardInterrupt

    with jt.Checkpoints(tmp_path, save_every=100) as ckpt:
        with pytest.raises(jt.Interrupted) as info:
            jt.fit(state, step, batches, 10, checkpoints=ckpt, callback=stop, progress=False)
        assert isinstance(info.value, KeyboardInterrupt)
        assert info.value.step == 3 and info.value.path == str(tmp_path / "3")
        assert ckpt.steps() == [3] and ckpt.history(3).train["step"] == [1, 2, 3]
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored


# --------------------------------------------------------------------------------------------
# 10. The history is part of what a resume restores.


def test_resume_without_passing_history_keeps_it(tmp_path):
    state, step, batches = toy_problem(nan_at=-1)
    with jt.Checkpoints(tmp_path, save_every=2) as ckpt:
        jt.fit(state, step, batches, 4, checkpoints=ckpt, progress=False)
    with jt.Checkpoints(tmp_path, save_every=2) as ckpt:
        state, _ = ckpt.resume(state)  # the README's example, history dropped
        _, history = jt.fit(state, step, batches, 6, checkpoints=ckpt, progress=False)
        assert history.train["step"] == [1, 2, 3, 4, 5, 6]
        assert ckpt.history().train["step"] == [1, 2, 3, 4, 5, 6]
        assert len(ckpt.history().train["loss"]) == 6

"""The command line validates first and never shows a traceback (issue 11, section 2).

Every case runs the real CLI in a subprocess (or, for the option-parsing matrix, ``main`` in
process, which exits inside argparse before anything else runs) and asserts the exit status
(2: usage, 1: runtime error, 130: interrupted), a single ``jaxrnn <command>: ...`` line on
stderr naming the option or file, and the absence of a traceback. Cases that need training use
tiny sizes and a shared two-step checkpoint.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import jaxrnn.models as jm
from jaxrnn import __main__ as cli
from jaxrnn import __version__, data

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--hidden-size",
    "8",
    "--embed-size",
    "4",
    "--batch-size",
    "2",
    "--seq-len",
    "8",
    "--length",
    "5",
    "--no-progress",
]


# The CLI as started from a terminal: a test runner's worker may ignore SIGINT, which its
# children inherit; Python then installs no KeyboardInterrupt handler.
AS_FROM_A_TERMINAL = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('jaxrnn', run_name='__main__', alter_sys=True)"
)


def jaxrnn(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxrnn", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc, status: int, *needles: str, command: str = "demo") -> str:
    """Exit ``status``, no traceback, one stderr line ``jaxrnn <command>: ...`` with needles."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    line = lines[0]
    assert line.startswith(f"jaxrnn {command}: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


# --------------------------------------------------------------------------------------------
# 1. Option values: argparse types, exit 2, before anything is read or trained.

BAD_OPTIONS = [
    ("demo", "--length", "0", "positive integer"),
    ("demo", "--length", "-1", "positive integer"),
    ("demo", "--num-samples", "0", "positive integer"),
    ("demo", "--steps", "0", "positive integer"),
    ("demo", "--steps", "-5", "positive integer"),
    ("demo", "--steps", "2.5", "positive integer"),
    ("demo", "--save-every", "0", "positive integer"),
    ("demo", "--eval-every", "0", "positive integer"),
    ("demo", "--hidden-size", "0", "positive integer"),
    ("demo", "--embed-size", "-3", "positive integer"),
    ("demo", "--num-layers", "0", "positive integer"),
    ("demo", "--batch-size", "0", "positive integer"),
    ("demo", "--seq-len", "0", "positive integer"),
    ("demo", "--max-corpus-bytes", "0", "positive integer"),
    ("demo", "--learning-rate", "0", "finite number > 0"),
    ("demo", "--learning-rate", "-1e-3", "finite number > 0"),
    ("demo", "--learning-rate", "nan", "finite number > 0"),
    ("demo", "--learning-rate", "inf", "finite number > 0"),
    ("demo", "--temperature", "nan", "finite number >= 0"),
    ("demo", "--temperature", "-0.5", "finite number >= 0"),
    ("demo", "--temperature", "inf", "finite number >= 0"),
    ("demo", "--seed", "-1", "integer >= 0"),
    ("demo", "--seed", str(2**63), "integer in [0, 9223372036854775807]"),
    ("demo", "--steps", str(2**31), "positive integer <= 2147483647"),
    ("demo", "--prompt", "", "at least one character"),
    ("demo", "--dropout", "1", "probability in [0, 1)"),
    ("demo", "--input-dropout", "-0.1", "probability in [0, 1)"),
    ("demo", "--recurrent-dropout", "nan", "probability in [0, 1)"),
    ("demo", "--zoneout", "1.0", "probability in [0, 1)"),
    ("demo", "--weight-drop", "inf", "probability in [0, 1)"),
    ("demo", "--embedding-dropout", "half", "probability in [0, 1)"),
    ("demo", "--coordinator", "foo", "(e.g. 10.0.0.1:1234)"),
    ("demo", "--coordinator", "127.0.0.1", "(e.g. 10.0.0.1:1234)"),
    ("demo", "--coordinator", ":", "(e.g. 10.0.0.1:1234)"),
    ("demo", "--coordinator", ":1234", "(e.g. 10.0.0.1:1234)"),
    ("demo", "--coordinator", "127.0.0.1:abc", "(e.g. 10.0.0.1:1234)"),
    ("demo", "--coordinator", "127.0.0.1:99999", "(e.g. 10.0.0.1:1234)"),
    ("demo", "--coordinator", "127.0.0.1:0", "(e.g. 10.0.0.1:1234)"),
    ("demo", "--coordinator", "[::1", "(e.g. 10.0.0.1:1234)"),
    ("demo", "--coordinator", "host name:80", "(e.g. 10.0.0.1:1234)"),
    ("demo", "--coordinator-timeout", "0", "positive integer"),
    ("demo", "--checkpoint-dir", "", "(not empty or blank, no NUL characters)"),
    ("demo", "--checkpoint-dir", "  ", "(not empty or blank, no NUL characters)"),
    ("sample", "--checkpoint-dir", "", "(not empty or blank, no NUL characters)"),
    ("demo", "--corpus", "", "(not empty or blank, no NUL characters)"),
    ("sample", "--step", "-1", "integer >= 0"),
    ("sample", "--seed", "-2", "integer >= 0"),
    ("sample", "--length", "0", "positive integer"),
    ("sample", "--num-samples", "-1", "positive integer"),
    ("sample", "--temperature", "NaN", "finite number >= 0"),
]


@pytest.mark.parametrize(("command", "option", "value", "expected"), BAD_OPTIONS)
def test_bad_option_values_are_usage_errors(command, option, value, expected, capsys):
    argv = [command, f"{option}={value}"]
    if command == "sample" and option != "--checkpoint-dir":
        argv += ["--checkpoint-dir", "unused"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"jaxrnn {command}: error: argument {option}: expected a")
    assert f"{expected}, got {value!r}" in err


RATES = {  # the regularisation options, each at a valid value
    "dropout": "0",
    "input_dropout": "0.999",
    "recurrent_dropout": "1e-3",
    "zoneout": "0.5",
    "weight_drop": ".25",
    "embedding_dropout": "0.0",
}


def test_edge_values_are_accepted():
    parser = cli._parser()
    args = parser.parse_args(
        ["demo", "--temperature", "0", "--seed", "0", "--learning-rate", "1e-9", "--steps", "1"]
    )
    assert (args.temperature, args.seed, args.learning_rate, args.steps) == (0.0, 0, 1e-9, 1)
    args = parser.parse_args(["sample", "--checkpoint-dir", "d", "--step", "0"])
    assert args.step == 0 and args.debug is False
    args = parser.parse_args(["demo", "--seed", str(2**63 - 1), "--max-corpus-bytes", "5000000000"])
    assert (args.seed, args.max_corpus_bytes) == (2**63 - 1, 5_000_000_000)
    assert parser.parse_args(["demo", "--debug"]).debug is True
    argv = ["demo"] + [f"--{name.replace('_', '-')}={v}" for name, v in RATES.items()]
    args = parser.parse_args(argv)
    assert {name: getattr(args, name) for name in RATES} == {
        name: float(v) for name, v in RATES.items()
    }
    assert set(RATES) <= set(cli._MODEL_OPTIONS)  # CharLMConfig fields, checked on resume
    assert all(getattr(parser.parse_args(["demo"]), name) is None for name in RATES)
    assert parser.parse_args(["--debug", "demo"]).debug is True


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--temperature", "nan"],
        ["demo", "--steps", "0"],
        ["sample", "--checkpoint-dir", "d", "--step", "-1"],
    ],
    ids=["temperature-nan", "steps-0", "sample-step--1"],
)
def test_bad_option_values_in_a_subprocess(argv):
    proc = jaxrnn(*argv)
    assert_one_line_error(proc, 2, "error: argument --", argv[-2], command=argv[0])
    assert proc.stdout == ""


def test_empty_checkpoint_dir_writes_nothing_here(tmp_path):
    # '' was taken for the current directory: numbered steps and a lock written into it.
    proc = subprocess.run(
        [sys.executable, "-m", "jaxrnn", "demo", *TINY, "--steps", "1", "--checkpoint-dir", ""],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert_one_line_error(proc, 2, "argument --checkpoint-dir", "got ''")
    assert list(tmp_path.iterdir()) == []


def test_version():
    proc = jaxrnn("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"jaxrnn {__version__}"


# --------------------------------------------------------------------------------------------
# 3. Corpora: one line naming the file, exit 1, before training.


def _corpus_cases(tmp: pathlib.Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    latin1 = tmp / "latin1.txt"
    good = b"def f(x):\n    return x\n" * 20
    latin1.write_bytes(good + "café".encode("latin-1") + good)
    short = tmp / "short.txt"
    short.write_text("def f(x): return x\n")
    big = tmp / "big.txt"
    big.write_bytes(good * 10)
    return {
        "directory": ([str(tmp)], (str(tmp), "is a directory")),
        "device": (["/dev/urandom"], ("/dev/urandom", "character device")),
        "fifo": ([str(fifo)], (str(fifo), "FIFO")),
        "not-utf8": ([str(latin1)], (str(latin1), f"byte offset {len(good) + 3}", "UTF-8")),
        "too-short": ([str(short)], (str(short), "too few", "--batch-size", "--seq-len")),
        "missing": ([str(tmp / "nope.txt")], (str(tmp / "nope.txt"), "No such file")),
        "too-big": (
            [str(big), "--max-corpus-bytes", "100"],
            (str(big), f"{big.stat().st_size:,} bytes", "--max-corpus-bytes"),
        ),
    }


@pytest.mark.parametrize(
    "case", ["directory", "device", "fifo", "not-utf8", "too-short", "missing", "too-big"]
)
def test_bad_corpus_is_one_line_naming_the_file(case, tmp_path):
    args, needles = _corpus_cases(tmp_path)[case]
    t0 = time.perf_counter()
    proc = jaxrnn("demo", *TINY, "--corpus", *args, timeout=120)
    assert_one_line_error(proc, 1, "--corpus", *needles)
    assert "train loss" not in proc.stdout
    assert time.perf_counter() - t0 < 100  # no read of /dev/urandom until memory runs out


# --------------------------------------------------------------------------------------------
# 2. The prompt is checked against the vocabulary before training.


def test_prompt_outside_the_default_vocabulary_fails_before_training():
    proc = jaxrnn("demo", *TINY, "--prompt", "x☃")
    assert_one_line_error(proc, 2, "--prompt", "'☃'", "vocabulary")
    assert "train loss" not in proc.stdout


def test_corpus_without_the_default_prompt_fails_before_training(tmp_path):
    corpus = tmp_path / "abc.txt"
    corpus.write_text("abc cab\n" * 500)
    proc = jaxrnn("demo", *TINY, "--corpus", str(corpus))
    assert_one_line_error(proc, 2, "--prompt 'def '", "'def'", str(corpus))
    assert "train loss" not in proc.stdout


# --------------------------------------------------------------------------------------------
# 9. The checkpoint directory is checked at start.


@pytest.mark.parametrize("case", ["regular-file", "under-a-file", "read-only"])
def test_bad_checkpoint_dir_fails_at_start(case, tmp_path):
    target = tmp_path / "file"
    target.write_text("not a directory")
    if case == "under-a-file":
        target = target / "sub"
    elif case == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root can write to a read-only directory")
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o555)
    proc = jaxrnn("demo", *TINY, "--steps", "2", "--checkpoint-dir", str(target))
    assert_one_line_error(proc, 1, str(target))
    assert "train loss" not in proc.stdout and "language model" not in proc.stdout


def test_two_runs_on_one_directory(tmp_path):
    directory = str_dir = str(tmp_path / "ckpt")
    cmd = [sys.executable, "-m", "jaxrnn", "demo", *TINY, "--steps", "30"]
    first = subprocess.Popen(
        [*cmd, "--checkpoint-dir", directory],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not os.path.isdir(directory):  # the first run holds the directory
            time.sleep(0.1)
        time.sleep(1.0)
        proc = jaxrnn("demo", *TINY, "--steps", "30", "--cell", "gru", "--checkpoint-dir", str_dir)
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert_one_line_error(proc, 1, directory)
    assert "train loss" not in proc.stdout


# --------------------------------------------------------------------------------------------
# 6 and 7. Resuming: nothing to train; the corpus is the user's, never a path from metadata.


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-step checkpoint of ``jaxrnn demo *TINY --steps 2`` (trained in process: faster)."""
    directory = tmp_path_factory.mktemp("resume") / "ckpt"
    config = jm.CharLMConfig(hidden_size=8, embed_size=4, batch_size=2, seq_len=8, steps=2)
    jm.train_char_lm(
        data.stdlib_corpus(), config, corpus="stdlib", checkpoint_dir=directory, progress=False
    )
    return directory


def _copy_with_corpus_record(trained, tmp_path, **record) -> pathlib.Path:
    directory = tmp_path / "ckpt"
    shutil.copytree(trained, directory)
    path = directory / "2" / "meta" / "metadata"  # orbax's JsonSave of the metadata
    meta = json.loads(path.read_text())
    meta["config"]["corpus"].update(record)
    path.write_text(json.dumps(meta))
    return directory


@pytest.mark.parametrize("steps", ["2", "1"])
def test_steps_at_or_below_the_checkpoint_is_nothing_to_train(trained, steps):
    proc = jaxrnn("demo", *TINY, "--steps", steps, "--checkpoint-dir", str(trained))
    assert_one_line_error(proc, 1, "nothing to train", "at step 2", f"--steps {steps}")
    assert "--- sample" not in proc.stdout


def test_sample_checks_the_prompt_against_the_checkpoint_vocabulary(trained):
    proc = jaxrnn("sample", "--checkpoint-dir", str(trained), "--prompt", "☃", "--length", "3")
    assert_one_line_error(proc, 2, "--prompt", "'☃'", str(trained), command="sample")


def test_sample_into_a_closed_pipe_is_quiet(trained):
    # 100 kB of text into `head -c 10`: the pipe closes while the CLI writes.
    cmd = f"{sys.executable} -m jaxrnn sample --checkpoint-dir {trained} --length 2000"
    proc = subprocess.run(
        f"{cmd} --num-samples 50 2>err.txt | head -c 10; cat err.txt >&2",
        shell=True,
        cwd=trained.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout == "lstm langu" and proc.stderr == ""


MAX_RSS = textwrap.dedent(
    """
    import resource, subprocess, sys
    proc = subprocess.run(sys.argv[1], shell=True, capture_output=True, text=True)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    print(proc.returncode, len(proc.stdout), rss, repr(proc.stderr))
    """
)


@pytest.mark.parametrize(
    "sizes",
    [["--length", "2147483647"], ["--length", "5", "--num-samples", "2147483647"]],
    ids=["longest-sample", "most-samples"],
)
def test_samples_of_any_size_stream_in_bounded_memory(trained, sizes):
    # The largest sizes the options take, read for 300 kB: text flows at once, in bounded
    # memory (before, the kernel killed the process at 14.7 GB or XLA ran out of memory).
    cmd = f"{sys.executable} -m jaxrnn sample --checkpoint-dir {trained} {' '.join(sizes)}"
    proc = subprocess.run(
        [sys.executable, "-c", MAX_RSS, f"{cmd} | head -c 300000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    status, chars, rss, stderr = proc.stdout.split(" ", 3)
    assert (status, chars, stderr.strip()) == ("0", "300000", "''"), proc.stdout
    assert int(rss) < 1.5 * 2**30, int(rss) / 2**20  # measured: 0.3 and 0.7 GiB


def _samples(capsys, trained, *options) -> list[str]:
    argv = ["sample", "--checkpoint-dir", str(trained), "--prompt", "d", *options]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    return [block.split("\n", 1)[1].rstrip("\n") for block in out.split("--- sample ")[1:]]


def test_groups_of_samples_and_streamed_samples(trained, capsys, monkeypatch):
    options = ["--length", "40", "--num-samples", "3", "--temperature", "0"]
    whole = _samples(capsys, trained, *options)  # all at once: one jm.sample call
    model, _, vocab, _, _ = jm.load_char_lm(trained)
    monkeypatch.setattr(cli, "SAMPLE_MEMORY", 0)
    while cli._rows_at_once(model, vocab, 40) == 0:  # the least memory for one row at a time
        monkeypatch.setattr(cli, "SAMPLE_MEMORY", cli.SAMPLE_MEMORY + 100)
    assert cli._rows_at_once(model, vocab, 40) == 1
    grouped = _samples(capsys, trained, *options)
    monkeypatch.setattr(cli, "SAMPLE_MEMORY", 100)  # no row fits: streamed, 16 at a time
    monkeypatch.setattr(cli, "SAMPLE_CHUNK", 16)
    streamed = _samples(capsys, trained, *options)
    # Greedy decoding draws nothing: the three ways give the same text.
    assert len(whole) == 3 and all(len(text) == 41 for text in whole)
    assert grouped == streamed == whole
    # Random samples: the right count and lengths, different samples, reproducible.
    drawn = _samples(capsys, trained, "--length", "40", "--num-samples", "3", "--seed", "3")
    assert len(drawn) == 3 and all(len(text) == 41 for text in drawn) and len(set(drawn)) > 1
    assert drawn == _samples(capsys, trained, "--length", "40", "--num-samples", "3", "--seed", "3")


def test_sample_missing_step_is_one_line(trained):
    proc = jaxrnn("sample", "--checkpoint-dir", str(trained), "--step", "7")
    assert_one_line_error(proc, 1, "step 7", str(trained), command="sample")


def test_resume_never_opens_the_corpus_path_stored_in_the_checkpoint(trained, tmp_path):
    # A hostile record: another file, with that file's digest. The user's corpus (here the
    # default) does not match it: refused, naming --corpus; the stored path is only shown.
    passwd = "/etc/passwd"
    digest = data.text_digest(data.load_text(passwd)) if os.path.isfile(passwd) else "0" * 64
    directory = _copy_with_corpus_record(trained, tmp_path, source=passwd, sha256=digest)
    proc = jaxrnn("demo", *TINY, "--steps", "3", "--checkpoint-dir", str(directory))
    line = assert_one_line_error(proc, 1, "another corpus", "'/etc/passwd'", "--corpus")
    assert "the default corpus" in line
    assert "root:" not in proc.stdout + proc.stderr and "train loss" not in proc.stdout


def test_resume_uses_the_users_corpus_when_the_digest_matches(trained, tmp_path):
    # The stored path is a FIFO nobody writes to: opening it would block until the timeout.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    directory = _copy_with_corpus_record(trained, tmp_path, source=str(fifo))
    proc = jaxrnn("demo", *TINY, "--steps", "3", "--checkpoint-dir", str(directory), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout and "at step 2" in proc.stdout
    assert "standard-library modules" in proc.stdout and "step 3: train loss" in proc.stdout
    assert (directory / "3").is_dir()


# --------------------------------------------------------------------------------------------
# 4. --debug shows the traceback; library logging does not bury the message.


def test_debug_shows_the_traceback(tmp_path):
    proc = jaxrnn("--debug", "demo", *TINY, "--corpus", str(tmp_path))
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "is a directory" in proc.stderr


# --------------------------------------------------------------------------------------------
# 8. Interrupts: Ctrl-C and SIGTERM exit 130 with one line.


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_demo_exits_130_with_one_line(signum, tmp_path):
    directory = tmp_path / "ckpt"
    # Saving every step shows from outside when training runs: the first step directory.
    forever = ["--steps", "100000", "--save-every", "1", "--eval-every", "100000"]
    forever += ["--checkpoint-dir", str(directory)]
    proc = subprocess.Popen(
        [sys.executable, "-c", AS_FROM_A_TERMINAL, "demo", *TINY, *forever],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    header = proc.stdout.readline()
    while header and "language model" not in header:  # printed just before training
        header = proc.stdout.readline()
    deadline = time.monotonic() + 240
    while not (directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "the demo never trained"
        time.sleep(0.2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, header + out, err)
    line = assert_one_line_error(result, 130, "interrupted")
    assert f"checkpoint saved in {directory}" in line  # fit saves at the current step
    assert any(p.name.isdigit() for p in directory.iterdir())


# --------------------------------------------------------------------------------------------
# Non-finite loss: one line, exit 1.


def test_non_finite_loss_is_one_line():
    proc = jaxrnn("demo", *TINY, "--steps", "20", "--learning-rate", "1e30")
    assert_one_line_error(proc, 1, "step")


# --------------------------------------------------------------------------------------------
# 9. --distributed: a malformed address is a usage error; an unreachable coordinator ends
# after --coordinator-timeout with one line; Ctrl-C and SIGTERM end the join at once.


def test_coordinator_addresses_that_parse(capsys):
    parser = cli._parser()
    for address in ("127.0.0.1:1", "[::1]:65535", "node-3.cluster:8476"):
        assert parser.parse_args(["demo", "--coordinator", address]).coordinator == address
    args = parser.parse_args(["demo", "--distributed", "--coordinator-timeout", "7"])
    assert args.coordinator_timeout == 7
    assert cli.main(["demo", "--coordinator-timeout", "5"]) == 2  # needs --distributed
    assert "--coordinator-timeout needs --distributed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"JAX_COORDINATOR_ADDRESS": "foo"}, "JAX_COORDINATOR_ADDRESS: expected an address"),
        ({"JAX_NUM_PROCESSES": "0"}, "JAX_NUM_PROCESSES=0 must be at least 1"),
        ({"JAX_PROCESS_ID": "-1"}, "JAX_PROCESS_ID=-1 must be at least 0"),
        ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
    ],
)
def test_bad_cluster_environment_is_a_usage_error(monkeypatch, capsys, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["demo", "--distributed"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxrnn demo: error: ") and expected in err


def closed_port() -> int:
    """A port of 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("process_id", ["1", "0"], ids=["unreachable", "peer-missing"])
def test_distributed_gives_up_after_the_timeout_with_one_line(process_id):
    # Process 1: nothing listens at the coordinator's address. Process 0: it is the
    # coordinator, and process 1 never comes.
    address = f"127.0.0.1:{closed_port()}"
    start = time.monotonic()
    proc = jaxrnn(
        "demo",
        "--distributed",
        *("--coordinator", address, "--num-processes", "2", "--process-id", process_id),
        *("--coordinator-timeout", "2"),
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert_one_line_error(proc, 1, "not joined within 2 s", "--coordinator-timeout", address)
    assert proc.stdout == "" and elapsed < 60  # start-up (imports) included


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_ends_a_distributed_join_at_once(signum):
    # A coordinator that accepts connections and never answers (a black hole): the join
    # waits for it (the default timeout, 300 s); the signal lands while it does.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        hole.settimeout(120)
        address = f"127.0.0.1:{hole.getsockname()[1]}"
        cluster = ["--coordinator", address, "--num-processes", "2", "--process-id", "1"]
        proc = subprocess.Popen(
            [sys.executable, "-c", AS_FROM_A_TERMINAL, "demo", "--distributed", *cluster],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            connection, _ = hole.accept()  # the process is joining now
            time.sleep(0.5)
            sent = time.monotonic()
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=30)
            took = time.monotonic() - sent
            connection.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_one_line_error(result, 130, "interrupted")
    assert took < 5, took  # measured: about 0.02 s


# --------------------------------------------------------------------------------------------
# 10. Without --debug, one line per error, always: no library logging, tracebacks of library
# threads or closed event loops, or kilobytes of tensorstore JSON.

FULL_DISK_ARGS = ["demo", *TINY, "--hidden-size", "64", "--steps", "3", "--save-every", "1"]


def _mounts_tmpfs(directory: pathlib.Path) -> list[str] | None:
    """A command prefix that runs a command with a 200 kB tmpfs mounted at ``directory`` (in
    a mount namespace of its own: as root, or as a user where user namespaces are allowed)."""
    mount = ["sh", "-c", 'mount -t tmpfs -o size=200k tmpfs "$0" && exec "$@"', str(directory)]
    for unshare in (["unshare", "--user", "--map-root-user", "--mount"], ["unshare", "--mount"]):
        if shutil.which("unshare") is None:
            return None
        probe = subprocess.run([*unshare, *mount, "true"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return [*unshare, *mount]
    return None


def test_full_disk_is_one_line(tmp_path):
    directory = tmp_path / "small"
    directory.mkdir()
    prefix, ck = _mounts_tmpfs(directory), str(directory / "ck")
    if prefix is None:
        pytest.skip("cannot mount a small tmpfs here (needs root or user namespaces)")
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "jaxrnn", *FULL_DISK_ARGS, "--checkpoint-dir", ck],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Before: about 115 lines of orbax/absl tracebacks first.
    line = assert_one_line_error(proc, 1, "cannot save the checkpoint of step 1")
    assert "No space left on device (ENOSPC)" in line and len(line) < 300


# The write of a checkpoint fails as tensorstore fails on a full disk, logged by orbax as it
# logs it (an ERROR with the traceback), with tensorstore's annotations.
SIMULATED_FULL_DISK = textwrap.dedent(
    """
    import logging, runpy, sys
    import orbax.checkpoint as ocp

    def save(self, *args, **kwargs):
        spec = "{" + ", ".join(f'"key{i}": "{"x" * 40}"' for i in range(100)) + "}"
        try:
            raise ValueError(
                'RESOURCE_EXHAUSTED: Error writing "params.w_out/0.0" in OCDBT database: '
                "Failed to write 113214 bytes to file 18: No space left on device "
                f"[os_error_code='28'] [source locations='tensorstore/kvstore/file.cc:220'] "
                f"[tensorstore_spec='{spec}']"
            )
        except ValueError:
            logging.getLogger("absl").exception("_SignalingThread.run() raised an exception")
            raise

    ocp.CheckpointManager.save = save
    sys.argv[0] = "jaxrnn"
    runpy.run_module("jaxrnn", run_name="__main__", alter_sys=True)
    """
)


def test_simulated_full_disk_is_one_line(tmp_path):
    ck = str(tmp_path / "ck")
    proc = subprocess.run(
        [sys.executable, "-c", SIMULATED_FULL_DISK, *FULL_DISK_ARGS, "--checkpoint-dir", ck],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = assert_one_line_error(proc, 1, "cannot save the checkpoint of step 1")
    assert "No space left on device (ENOSPC)" in line and "tensorstore_spec" not in line


@pytest.mark.parametrize(
    "name",
    ["state/manifest.ocdbt", "state/d", "state/_METADATA", "meta/metadata", "_CHECKPOINT_METADATA"],
)
def test_corrupt_checkpoint_is_at_most_one_line(trained, tmp_path, name):
    directory = tmp_path / "ckpt"
    shutil.copytree(trained, directory)
    path = directory / "2" / name
    if path.is_dir():  # the data file of the arrays
        path = max(path.iterdir(), key=lambda p: p.stat().st_size)
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, min(len(raw), len(raw) // 2 + 8)):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    proc = jaxrnn("sample", "--checkpoint-dir", str(directory), "--length", "3")
    # Before: the one line came with asyncio "Event loop is closed" tracebacks, or absl
    # ERROR lines. Orbax's own step metadata is not needed to restore: it may be intact.
    if proc.returncode == 0:
        assert proc.stderr == "" and name == "_CHECKPOINT_METADATA"
    else:
        line = assert_one_line_error(proc, 1, "cannot be restored", command="sample")
        assert len(line) < 800


def test_library_messages_are_summarised():
    spec = "{" + ", ".join(f'"k{i}": "{i}"' for i in range(2000)) + "}"
    message = (
        "DATA_LOSS: Error reading \"params.embed\" [source locations='a.cc:1\nb.cc:2'] "
        f"[tensorstore_spec='{spec}'] and more"
    )
    assert cli._summary(message) == 'DATA_LOSS: Error reading "params.embed" and more'
    assert len(cli._describe(RuntimeError("x" * 10_000))) < 800
    assert "\n" not in cli._describe(ValueError("a\nb"))

"""The command line: ``python -m jaxrnn demo`` trains (here with every regulariser) and prints
text, ``sample`` reads its checkpoint, and a checkpoint directory of another run is refused
(tiny sizes, subprocesses)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import jax
import pytest

import jaxrnn.models as jm

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--hidden-size",
    "16",
    "--embed-size",
    "8",
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--no-progress",
]
# Every regulariser (the demo run trains with them; its checkpoint keeps them).
REGULARISED = {
    "dropout": 0.1,
    "input_dropout": 0.2,
    "recurrent_dropout": 0.15,
    "zoneout": 0.05,
    "weight_drop": 0.3,
    "embedding_dropout": 0.1,
}
RATES = [arg for k, v in REGULARISED.items() for arg in (f"--{k.replace('_', '-')}", str(v))]


def jaxrnn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxrnn", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli") / "ckpt"
    proc = jaxrnn(
        "demo", "--steps", "5", *TINY, *RATES, "--checkpoint-dir", str(directory), "--length", "40"
    )
    return directory, proc


def test_demo_trains_saves_and_prints_text(demo_run):
    directory, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "no checkpoint in" in out and "starting from scratch" in out
    assert "lstm language model" in out and "standard-library" in out
    assert "float32 matmuls, dropout 0.1, input dropout 0.2, recurrent dropout 0.15, " in out
    assert "zoneout 0.05, weight drop 0.3, embedding dropout 0.1)" in out
    assert "step 5: train loss" in out and "validation loss" in out
    sample_header = "--- sample 1 of 1 (temperature 0.7, prompt 'def ') ---"
    assert sample_header in out
    text = out.split(sample_header + "\n", 1)[1].split("\ntotal wall time", 1)[0]
    assert text.startswith("def ") and len(text) == len("def ") + 40
    assert (directory / "5").is_dir()
    model, _, _, config, _ = jm.load_char_lm(directory)  # the settings are the run's
    assert {k: getattr(config, k) for k in REGULARISED} == REGULARISED
    assert {k: dict(model.config)[k] for k in REGULARISED} == REGULARISED


def test_sample_reads_the_checkpoint(demo_run):
    directory, _ = demo_run
    proc = jaxrnn(
        "sample",
        "--checkpoint-dir",
        str(directory),
        "--prompt",
        "class ",
        "--length",
        "30",
        "--num-samples",
        "2",
        "--temperature",
        "0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 5" in proc.stdout
    texts = [block.split("\n", 1)[1].rstrip("\n") for block in proc.stdout.split("--- sample ")[1:]]
    assert len(texts) == 2
    assert all(t.startswith("class ") and len(t) == len("class ") + 30 for t in texts)
    assert texts[0] == texts[1]  # greedy


def test_demo_refuses_a_checkpoint_of_other_settings(demo_run):
    directory, _ = demo_run
    proc = jaxrnn("demo", "--cell", "gru", *TINY, "--checkpoint-dir", str(directory))
    assert proc.returncode == 1
    assert "other settings: --cell gru (checkpoint: lstm)" in proc.stderr
    proc = jaxrnn("demo", *TINY, "--zoneout", "0.1", "--checkpoint-dir", str(directory))
    assert proc.returncode == 1
    assert "other settings: --zoneout 0.1 (checkpoint: 0.05)" in proc.stderr


def test_demo_mixed_precision_stores_float32_and_resumes_with_its_dtype(tmp_path):
    directory = tmp_path / "bf16"
    proc = jaxrnn(
        "demo", "--steps", "3", *TINY, "--dtype", "bfloat16", "--checkpoint-dir", str(directory)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bfloat16 matmuls" in proc.stdout and "step 3: train loss" in proc.stdout

    model, params, _, config, _ = jm.load_char_lm(directory)
    assert config.dtype == "bfloat16" and dict(model.config)["dtype"].name == "bfloat16"
    assert {leaf.dtype.name for leaf in jax.tree.leaves(params)} == {"float32"}
    # Resuming with another --dtype is another run: refused, naming the option.
    proc = jaxrnn("demo", "--steps", "4", *TINY, "--checkpoint-dir", str(directory))
    assert proc.returncode == 0, proc.stderr[-3000:]  # no --dtype given: the checkpoint's
    proc = jaxrnn(
        "demo", "--steps", "5", *TINY, "--dtype", "float32", "--checkpoint-dir", str(directory)
    )
    assert proc.returncode == 1 and "--dtype float32 (checkpoint: bfloat16)" in proc.stderr

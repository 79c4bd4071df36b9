"""Several processes: 2 processes x 2 devices train exactly as 1 process x 4 devices.

Real processes on this machine, joined by ``jax.distributed`` (coordinator on 127.0.0.1, gloo
CPU collectives), each feeding its own rows. Three processes, the two of the 2 x 2 world and
the single one of the 1 x 4 world, run every scenario of tests/distributed_worker.py, launched
together once per test session (also under pytest-xdist); the tests below compare what they
wrote: losses step for step, histories, checkpoints saved by two processes and restored by one
and the other way round, resumption in two processes bit for bit, and ``jaxrnn demo
--distributed``.

The launch has a hard timeout; each process runs in its own process group, killed in a
``finally`` whatever happens.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import distributed_worker
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn.models as jm
import jaxrnn.train as jt
from jaxrnn.train._digest import content_digest
from jaxrnn.train.checkpoints import _to_saveable

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"
TIMEOUT = 300  # seconds for the launch (about 45 s on 2 idle cores), on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(commands: list[list[str]], logs: pathlib.Path, timeout: float = TIMEOUT) -> None:
    """Run ``commands`` at once, each in its own process group, until all succeed.

    The first to fail (or the timeout) ends the others; every process group is killed on any
    exit. Each one's stdout and stderr go to files in ``logs`` (no pipe to fill up).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["PYTHONPATH"] = str(REPO)
    procs = []
    try:
        for k, cmd in enumerate(commands):
            with open(logs / f"{k}.out", "w") as out, open(logs / f"{k}.err", "w") as err:
                procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=REPO,
                        env=env,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs):
            failed = [k for k, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        problems = [
            f"process {k} ({' '.join(commands[k][2:])}): "
            + ("timed out" if p.poll() is None else f"exit status {p.returncode}")
            + "\n"
            + (logs / f"{k}.err").read_text()[-3000:]
            for k, p in enumerate(procs)
            if p.poll() != 0
        ]
        assert not problems, "\n\n".join(problems)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def one_process_checkpoint(directory: pathlib.Path) -> str:
    """The step-0 state of the worker's LM, saved by this (single, one-device) process."""
    state = lm_template()
    with jt.Checkpoints(directory) as ckpt:
        ckpt.save(state)
    return content_digest(_to_saveable(state))


def run_all(out: pathlib.Path) -> dict:
    """The three processes of both worlds, launched together; what every process wrote."""
    out.mkdir(parents=True, exist_ok=True)
    single = out / "single"
    single_digest = one_process_checkpoint(single)
    worker = [sys.executable, str(WORKER), str(out)]
    port = str(free_port())
    commands = [
        [
            *worker,
            "--world",
            "2x2",
            "--port",
            port,
            "--process-id",
            str(i),
            "--from-one",
            str(single),
        ]
        for i in range(2)
    ]
    # The 1-process run starts at once too (both cores busy) and waits for the 2-process
    # run's results before restoring its checkpoint.
    commands.append([*worker, "--world", "1x4", "--from-two", str(out / "lm-2x2")])
    t0 = time.perf_counter()
    logs = out / "logs"
    logs.mkdir()
    launch(commands, logs)
    print(f"multi-process launch: {time.perf_counter() - t0:.1f} s (wall)")
    names = ("2x2-0", "2x2-1", "1x4-0")
    results = {name: json.loads((out / f"{name}.json").read_text()) for name in names}
    return {
        "out": str(out),
        "two": results["2x2-0"],
        "two_1": results["2x2-1"],
        "one": results["1x4-0"],
        "single_digest": single_digest,
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """:func:`run_all` once per test session, also under pytest-xdist: the first worker to get
    here runs it under a lock, the others wait for its results (the launch needs both cores)."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if uid is None:
        results = run_all(tmp_path_factory.mktemp("dist"))
    else:
        root = tmp_path_factory.getbasetemp().parent / f"distributed-{uid}"
        root.mkdir(exist_ok=True)
        with open(root / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done, failed = root / "runs.json", root / "failed.txt"
            if failed.exists():
                pytest.fail(
                    "the multi-process launch failed in another worker:\n" + failed.read_text()
                )
            if not done.exists():
                try:
                    results = run_all(root / "work")
                except BaseException as e:
                    failed.write_text(f"{type(e).__name__}: {e}")
                    raise
                done.write_text(json.dumps(results))
            results = json.loads(done.read_text())
    results["out"] = pathlib.Path(results["out"])
    return results


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)


def test_two_processes_really_ran(runs):
    two, two_1, one = runs["two"], runs["two_1"], runs["one"]
    assert two["process_count"] == two_1["process_count"] == 2
    assert two["local_devices"] == 2 and one["local_devices"] == 4 and one["process_count"] == 1
    assert two["local_rows"] == 4 and one["local_rows"] == 8  # each process its own rows
    assert two["lm"]["carry_rows"] == [2, 2]  # the carry split over this process's devices


def test_plain_model_two_processes_equal_one(runs):
    two, one = runs["two"]["plain"], runs["one"]["plain"]
    assert len(two["loss"]) == len(one["loss"]) == 5
    close(two["loss"], one["loss"])
    close(two["grad_norm"], one["grad_norm"])
    assert one["loss"][-1] < one["loss"][0]


def test_char_lm_with_carries_two_processes_equal_one(runs):
    two, one = runs["two"]["lm"], runs["one"]["lm"]
    assert len(two["loss"]) == len(one["loss"]) == 6
    close(two["loss"], one["loss"])
    assert one["loss"][-1] < one["loss"][0]


def test_metrics_and_history_are_global(runs):
    assert runs["two"]["lm"]["history"] == runs["two_1"]["lm"]["history"]
    assert runs["two"]["plain"] == runs["two_1"]["plain"]


def test_checkpoints_of_two_processes_carry_a_digest_per_process(runs):
    two = runs["two"]["lm"]
    assert two["steps"] == [3, 6]
    assert set(two["digest"]["sha256"]) == set(two["digest"]["layout"]) == {"0", "1"}
    assert two["digest"]["sha256"]["0"] != two["digest"]["sha256"]["1"]  # their own shards
    assert two["digest"]["content"] == two["final_digest"]
    assert runs["two_1"]["lm"]["digest"] == two["digest"]


def test_resume_in_two_processes_is_bit_exact(runs):
    for result in (runs["two"], runs["two_1"]):
        lm = result["lm"]
        # Steps 4 to 6 again from the checkpoint of step 3 (its history carried on): the same
        # losses, bit for bit, the same final state (and saving step 6 again found it saved
        # with the same contents, else it would have raised).
        assert lm["resumed_loss"] == lm["loss"]
        assert lm["resumed_digest"] == lm["final_digest"]


def test_directories_are_checked_in_every_process(runs):
    for result in (runs["two"], runs["two_1"]):
        assert "is in use by pid" in result["second_writer"]
        assert (
            "is not shared by all processes of this run: process(es) [1]" in (result["private_dir"])
        )


def test_one_process_checkpoint_restores_in_two(runs):
    two = runs["two"]["from_one"]
    assert two["digest"] == runs["single_digest"]  # restored exactly, verified per layout
    assert two["loss"] == runs["two"]["lm"]["loss"]  # and trains as the 2-process run does


def test_two_process_checkpoint_restores_in_one(runs):
    restored = runs["one"]["from_two"]
    close(restored["loss"], runs["two"]["lm"]["loss"][3:])


def lm_template():
    return distributed_worker.lm_setup()[3]()


def edit_meta(step_dir: pathlib.Path, edit) -> None:
    path = step_dir / "meta" / "metadata"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_two_process_checkpoint_restores_here_verified(runs, tmp_path):
    """One process, one device: the 2-process checkpoint re-sharded onto it and verified by
    the layout-free digest, which is never skipped: a wrong one fails, a missing one too."""
    template = lm_template()
    with jt.Checkpoints(runs["out"] / "lm-2x2", create=False) as ckpt:
        restored = ckpt.restore(template, step=6)
    assert content_digest(_to_saveable(restored)) == runs["two"]["lm"]["final_digest"]
    assert int(restored.step) == 6 and jnp.shape(restored.carry[0].h) == (8, 8)

    copy = tmp_path / "ck"
    shutil.copytree(runs["out"] / "lm-2x2", copy)
    edit_meta(copy / "6", lambda m: m["digest"].update(content="0" * 16))
    with (
        jt.Checkpoints(copy, create=False) as ckpt,
        pytest.raises(jt.CheckpointError, match="do not match the digest"),
    ):
        ckpt.restore(template, step=6)
    edit_meta(copy / "6", lambda m: m["digest"].pop("content"))
    with (
        jt.Checkpoints(copy, create=False) as ckpt,
        pytest.raises(jt.CheckpointError, match=r"saved by 2 process\(es\) and is restored by 1"),
    ):
        ckpt.restore(template, step=6)


def test_cli_demo_distributed_in_two_processes(runs):
    """``jaxrnn demo --distributed``: process 0 by its options, process 1 by environment
    variables; process 0 alone prints; the checkpoints, written by both, restore here."""
    zero, one = runs["two"]["cli"], runs["two_1"]["cli"]
    assert zero["status"] == one["status"] == 0, (zero["stderr"], one["stderr"])
    lines = zero["stdout"]
    assert "no checkpoint in" in lines and "starting from scratch" in lines
    assert "step 4: train loss" in lines and "validation loss" in lines
    assert f"checkpoint: {runs['out'] / 'cli'} (step 4)" in lines
    assert "--- sample 1 of 1" in lines
    assert one["stdout"] == ""  # process 1 prints nothing
    directory = runs["out"] / "cli"
    with jt.Checkpoints(directory, create=False) as ckpt:
        assert ckpt.steps() == [2, 4]
        meta = ckpt.metadata(4)
    assert set(meta["digest"]["sha256"]) == {"0", "1"}
    assert len(meta["history"]["train"]["loss"]) == 4 and meta["history"]["eval"]["loss"]
    _, params, vocab, config, _ = jm.load_char_lm(directory)  # verified, re-sharded
    assert config.batch_size == 4 and params.w_out.shape == (8, vocab.size)
    # Loaded whole by each of the two processes too (verified against the layout-free digest).
    assert zero["loaded"] == one["loaded"] == {"step": 4, "w_out_sum": float(np.sum(params.w_out))}


def test_cli_cluster_options_need_distributed(capsys):
    from jaxrnn.__main__ import main

    assert main(["demo", "--coordinator", "127.0.0.1:1234"]) == 2
    assert "jaxrnn demo: error: --coordinator needs --distributed" in capsys.readouterr().err
    assert main(["demo", "--distributed", "--num-processes", "2", "--process-id", "2"]) == 2
    assert "--process-id 2 must be below --num-processes 2" in capsys.readouterr().err


def test_sequence_parallel_scan_two_processes_equals_one_device(runs):
    """A scan whose time axis is split over the devices of two processes (lru associative,
    gru Newton, reverse with lengths): loss and gradients equal one device, and the 1-process
    world's split scan."""
    for name in ("lru", "gru"):
        two, one = runs["two"]["sequence"][name], runs["one"]["sequence"][name]
        close(two["split"], two["one"])
        close(two["split"], one["split"])
        close(runs["two_1"]["sequence"][name]["split"], two["split"])

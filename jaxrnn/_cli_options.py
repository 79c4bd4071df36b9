"""The options of the command line (``python -m jaxrnn``): its argument parser and option types.

:func:`_parser` builds the ``demo`` and ``sample`` commands with their options and help texts
(the defaults of ``demo`` are those of :class:`jaxrnn.models.CharLMConfig`); every value is
checked as it is parsed, so a bad one is a one-line usage error with exit status 2 before
anything else runs. What the commands do with the options is :mod:`jaxrnn.__main__`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

#: Regularisation options: ``CharLMConfig`` fields, rates in [0, 1), with their help.
_REGULARISERS = {
    "dropout": "dropout between layers and before the output layer, a new mask at every step",
    "input_dropout": "variational dropout on every recurrent layer's inputs: one mask per "
    "sequence, the same at every step (Gal & Ghahramani 2016)",
    "recurrent_dropout": "variational dropout on the hidden state the cell reads (one mask per "
    "sequence)",
    "zoneout": "probability that a unit of the state keeps its previous value at a step "
    "(Krueger et al. 2017)",
    "weight_drop": "DropConnect on the recurrent weight matrix, one mask per batch "
    "(AWD-LSTM, Merity et al. 2018)",
    "embedding_dropout": "probability of dropping a whole character from the embedding for a "
    "batch (AWD-LSTM)",
}

_MODEL_OPTIONS = (
    "cell",
    "hidden_size",
    "embed_size",
    "num_layers",
    "batch_size",
    "seq_len",
    "learning_rate",
    "seed",
    "dtype",
    *_REGULARISERS,
)


# --------------------------------------------------------------------------------------------
# Option types: argparse reports "argument --x: expected ..., got '...'" and exits with 2.


_INT32_MAX = 2**31 - 1  # steps, sizes and lengths reach XLA as int32

#: Seconds ``--distributed`` waits to join the job (``--coordinator-timeout``).
DEFAULT_COORDINATOR_TIMEOUT = 300


def _positive_int(text: str, *, high: int = _INT32_MAX) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value > high:
        raise argparse.ArgumentTypeError(f"expected a positive integer <= {high}, got {text!r}")
    return value


def _byte_count(text: str) -> int:
    return _positive_int(text, high=2**63 - 1)


def _nonnegative_int(text: str, *, high: int = _INT32_MAX) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    if value > high:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, {high}], got {text!r}")
    return value


def _seed(text: str) -> int:
    return _nonnegative_int(text, high=2**63 - 1)  # what jax.random.key accepts


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _probability(text: str) -> float:
    from jaxrnn._checks import check_probability

    try:
        return check_probability("rate", float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a probability in [0, 1), got {text!r}"
        ) from None


def _address(text: str) -> str:
    """``HOST:PORT`` (an IPv6 host in brackets, ``[::1]:1234``), the port in [1, 65535]."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ok = (
        bool(sep and host and port.isdigit())
        and 1 <= int(port) <= 65535
        and not any(c.isspace() or c in "[]/" for c in host)
    )
    if not ok:
        raise argparse.ArgumentTypeError(
            f"expected an address HOST:PORT, the port in [1, 65535] (e.g. 10.0.0.1:1234), got "
            f"{text!r}"
        )
    return text


def _directory(text: str) -> str:
    """A directory path: not empty or blank (``''`` would write into the current directory),
    without NUL characters."""
    if not text.strip() or "\0" in text:
        raise argparse.ArgumentTypeError(
            f"expected a directory path (not empty or blank, no NUL characters), got {text!r}"
        )
    return text


def _file(text: str) -> str:
    """A file path: not empty or blank, without NUL characters."""
    if not text.strip() or "\0" in text:
        raise argparse.ArgumentTypeError(
            f"expected a file path (not empty or blank, no NUL characters), got {text!r}"
        )
    return text


def _prompt(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("expected at least one character, got ''")
    return text


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    """The parser of ``python -m jaxrnn``: ``--version``, ``--debug``, ``demo`` and ``sample``."""
    from jaxrnn import __version__

    parser = _Parser(
        prog="jaxrnn",
        description="jaxrnn: recurrent networks as pure JAX functions.",
    )
    parser.add_argument("--version", action="version", version=f"jaxrnn {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show full tracebacks and library logging instead of one-line errors",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    demo = _demo_command(sub)
    sample = _sample_command(sub)
    for command in (demo, sample):  # also accepted after the command: jaxrnn demo --debug
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    return parser


def _demo_command(sub) -> argparse.ArgumentParser:
    """The ``demo`` command: train a character-level language model, then sample."""
    demo = sub.add_parser(
        "demo",
        help="train a character-level language model and print generated text",
        description=(
            "Train a character-level language model (embedding -> recurrent cell -> dense "
            "head) with truncated BPTT, then sample from it. The default corpus is the source "
            "of some Python standard-library modules, read from this interpreter. "
            "With the defaults it takes under a minute on two CPU cores."
        ),
    )
    defaults = _config_defaults()
    _run_options(demo, defaults)
    _model_options(demo)
    _sampling_options(demo)
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _distributed_options(demo)  # issue 14: see "Distributed runs" below
    _show_defaults(demo, defaults)
    return demo


def _run_options(demo: argparse.ArgumentParser, defaults: dict) -> None:
    """``demo``'s steps, cell, corpus and checkpoint options."""
    from jaxrnn.data import MAX_TEXT_BYTES

    demo.add_argument(
        "--steps",
        type=_positive_int,
        help=f"total training steps (default {defaults['steps']}); when resuming, "
        "train until this step (at or below the checkpoint's step is an error: nothing to "
        "train)",
    )
    demo.add_argument("--cell", choices=("lstm", "gru", "rnn", "peephole", "coupled"))
    demo.add_argument(
        "--corpus",
        type=_file,
        metavar="FILE",
        help="UTF-8 text file to train on (default: stdlib source); when resuming, the same "
        "text the checkpoint was trained on",
    )
    demo.add_argument(
        "--max-corpus-bytes",
        type=_byte_count,
        default=MAX_TEXT_BYTES,
        metavar="N",
        help="refuse a larger --corpus file (default %(default)s, 1 GiB)",
    )
    demo.add_argument(
        "--checkpoint-dir",
        type=_directory,
        metavar="DIR",
        help="save checkpoints here and resume from the latest one (an empty or new directory "
        "starts from scratch)",
    )
    demo.add_argument(
        "--save-every", type=_positive_int, default=100, help="checkpoint period (steps)"
    )


def _model_options(demo: argparse.ArgumentParser) -> None:
    """``demo``'s model, optimiser, evaluation and regularisation options."""
    demo.add_argument("--hidden-size", type=_positive_int)
    demo.add_argument("--embed-size", type=_positive_int)
    demo.add_argument("--num-layers", type=_positive_int)
    demo.add_argument("--batch-size", type=_positive_int)
    demo.add_argument("--seq-len", type=_positive_int, help="TBPTT chunk length")
    demo.add_argument("--learning-rate", type=_positive_float)
    demo.add_argument("--seed", type=_seed)
    demo.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="dtype of the matmul operands; parameters, carries and sums stay float32 "
        "(mixed precision)",
    )
    demo.add_argument(
        "--eval-every", type=_positive_int, default=100, help="validation period (steps)"
    )
    regularisation = demo.add_argument_group(
        "regularisation",
        "Rates in [0, 1), used in training only (evaluation and sampling use the "
        "expectation); part of the run's settings, so a resumed run keeps them.",
    )
    for name, text in _REGULARISERS.items():
        regularisation.add_argument(
            "--" + name.replace("_", "-"), type=_probability, metavar="P", help=text
        )


def _show_defaults(demo: argparse.ArgumentParser, defaults: dict) -> None:
    """Append the ``CharLMConfig`` default to the help of each option that has one."""
    for action in demo._actions:
        name = action.dest
        if name in defaults and action.help and "default" not in action.help:
            action.help += f" (default {defaults[name]})"
        elif name in defaults and not action.help:
            action.help = f"default {defaults[name]}"


def _sample_command(sub) -> argparse.ArgumentParser:
    """The ``sample`` command: generate text from a checkpoint of ``demo``."""
    sample = sub.add_parser(
        "sample",
        help="generate text from a checkpoint directory written by `demo`",
        description="Generate text from the latest (or a given) checkpoint of `jaxrnn demo`.",
    )
    sample.add_argument("--checkpoint-dir", type=_directory, metavar="DIR", required=True)
    sample.add_argument(
        "--step", type=_nonnegative_int, help="checkpoint step (default: the latest)"
    )
    sample.add_argument("--seed", type=_seed, default=0, help="sampling seed")
    _sampling_options(sample)
    return sample


def _sampling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prompt", type=_prompt, default="def ", help="text to start from (default %(default)r)"
    )
    parser.add_argument(
        "--length",
        type=_positive_int,
        default=500,
        help="characters to generate (default %(default)s)",
    )
    parser.add_argument(
        "--temperature",
        type=_nonnegative_float,
        default=0.7,
        help="softmax temperature; 0 is greedy (default %(default)s)",
    )
    parser.add_argument(
        "--num-samples", type=_positive_int, default=1, help="samples to print (default 1)"
    )


def _config_defaults() -> dict:
    from jaxrnn.models import CharLMConfig

    return dataclasses.asdict(CharLMConfig())


# --------------------------------------------------------------------------------------------
# Distributed runs (--distributed, issue 14): the options (jaxrnn.__main__ joins the job).


def _distributed_options(demo: argparse.ArgumentParser) -> None:
    group = demo.add_argument_group(
        "several processes",
        "Run as one process of a multi-process job: every process runs the same command, "
        "feeds its own rows of each batch, and process 0 prints. --checkpoint-dir must be a "
        "directory every host reaches.",
    )
    group.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize(): the cluster is detected (SLURM, Open MPI, "
        "TPU pods, or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID in the "
        "environment) unless given by the options below",
    )
    group.add_argument(
        "--coordinator",
        type=_address,
        metavar="HOST:PORT",
        help="address of process 0's coordinator service",
    )
    group.add_argument("--num-processes", type=_positive_int, metavar="N")
    group.add_argument("--process-id", type=_nonnegative_int, metavar="I")
    group.add_argument(
        "--coordinator-timeout",
        type=_positive_int,
        metavar="SECONDS",
        help="give up (exit status 1, one line) when the job is not joined within this time: "
        "the coordinator unreachable, or a process missing (default "
        f"{DEFAULT_COORDINATOR_TIMEOUT} s, as jax.distributed's own default)",
    )

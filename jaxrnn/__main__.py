"""Command line: ``python -m jaxrnn demo`` and ``python -m jaxrnn sample`` (also ``jaxrnn ...``).

``demo`` trains a character-level language model (an LSTM by default) on the source code of
part of the Python standard library, or on any text file, shows a progress bar, and prints
generated text. With ``--checkpoint-dir`` it saves checkpoints and resumes from the latest one.
``sample`` generates text from a checkpoint directory written by ``demo``.

Run ``python -m jaxrnn demo --help`` for the options.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

_START = time.perf_counter()

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
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxrnn",
        description="jaxrnn: recurrent networks as pure JAX functions.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

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
    demo.add_argument(
        "--steps",
        type=int,
        help=f"total training steps (default {defaults['steps']}); when resuming, "
        "train until this step",
    )
    demo.add_argument("--cell", choices=("lstm", "gru", "rnn", "peephole", "coupled"))
    demo.add_argument(
        "--corpus", metavar="FILE", help="UTF-8 text file to train on (default: stdlib source)"
    )
    demo.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="save checkpoints here and resume from the latest one (an empty or new directory "
        "starts from scratch)",
    )
    demo.add_argument("--save-every", type=int, default=100, help="checkpoint period (steps)")
    demo.add_argument("--hidden-size", type=int)
    demo.add_argument("--embed-size", type=int)
    demo.add_argument("--num-layers", type=int)
    demo.add_argument("--batch-size", type=int)
    demo.add_argument("--seq-len", type=int, help="TBPTT chunk length")
    demo.add_argument("--learning-rate", type=float)
    demo.add_argument("--seed", type=int)
    demo.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="dtype of the matmul operands; parameters, carries and sums stay float32 "
        "(mixed precision)",
    )
    demo.add_argument("--eval-every", type=int, default=100, help="validation period (steps)")
    _sampling_options(demo)
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    for action in demo._actions:
        name = action.dest
        if name in defaults and action.help and "default" not in action.help:
            action.help += f" (default {defaults[name]})"
        elif name in defaults and not action.help:
            action.help = f"default {defaults[name]}"

    sample = sub.add_parser(
        "sample",
        help="generate text from a checkpoint directory written by `demo`",
        description="Generate text from the latest (or a given) checkpoint of `jaxrnn demo`.",
    )
    sample.add_argument("--checkpoint-dir", metavar="DIR", required=True)
    sample.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    sample.add_argument("--seed", type=int, default=0, help="sampling seed")
    _sampling_options(sample)
    return parser


def _sampling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default="def ", help="text to start from (default %(default)r)")
    parser.add_argument(
        "--length", type=int, default=500, help="characters to generate (default %(default)s)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.7,
        help="softmax temperature; 0 is greedy (default %(default)s)",
    )
    parser.add_argument("--num-samples", type=int, default=1, help="samples to print")


def _config_defaults() -> dict:
    from jaxrnn.models import CharLMConfig

    return dataclasses.asdict(CharLMConfig())


def _print_samples(model, params, vocab, args, *, seed: int) -> None:
    import jax

    from jaxrnn.models import sample

    prompt_ids = vocab.encode(args.prompt)
    ids = sample(
        model,
        params,
        jax.random.key(seed),
        prompt_ids,
        args.length,
        temperature=args.temperature,
        num_samples=args.num_samples,
    )
    for k, row in enumerate(ids):
        print(
            f"--- sample {k + 1} of {args.num_samples} (temperature {args.temperature}, "
            f"prompt {args.prompt!r}) ---"
        )
        print(args.prompt + vocab.decode(row))
    sys.stdout.flush()


def _demo(args: argparse.Namespace) -> int:
    from jaxrnn import data
    from jaxrnn.models import CharLMConfig, bits_per_char, train_char_lm
    from jaxrnn.train import Checkpoints

    overrides = {k: getattr(args, k) for k in _MODEL_OPTIONS if getattr(args, k) is not None}
    config = CharLMConfig(**overrides)
    corpus = None if args.corpus is None else os.path.abspath(args.corpus)
    stop_at = args.steps

    if args.checkpoint_dir is not None:
        # Resume: the run's settings come from the checkpoints; options given now must agree.
        with Checkpoints(args.checkpoint_dir) as ckpt:
            latest = ckpt.latest_step()
            meta = None if latest is None else ckpt.metadata()
        if meta is None:
            print(f"no checkpoint in {ckpt.directory}: starting from scratch")
            if stop_at is not None:
                config = dataclasses.replace(config, steps=stop_at)
        else:
            stored = meta["config"] or {}
            if stored.get("kind") != "char_lm":
                raise ValueError(f"{ckpt.directory} holds checkpoints of another kind of run")
            stored_config = CharLMConfig(**stored["config"])
            clashes = [
                f"--{k.replace('_', '-')} {v} (checkpoint: {getattr(stored_config, k)})"
                for k, v in overrides.items()
                if getattr(stored_config, k) != v
            ]
            source = stored["corpus"]["source"]
            if corpus is not None and corpus != source:
                clashes.append(f"--corpus {corpus} (checkpoint: {source})")
            if clashes:
                raise ValueError(
                    f"{ckpt.directory} holds a run with other settings: " + ", ".join(clashes)
                )
            config = stored_config
            corpus = None if source == "stdlib" else source
            print(f"resuming from {ckpt.directory} at step {latest}")
            if stop_at is not None and stop_at > config.steps:
                print(
                    f"note: training past the schedule's {config.steps} steps, at its final "
                    "learning rate"
                )
    elif stop_at is not None:
        config = dataclasses.replace(config, steps=stop_at)

    if corpus is None:
        text, name = data.stdlib_corpus(), "stdlib"
        described = f"the source of {len(data.STDLIB_MODULES)} Python standard-library modules"
    else:
        text, name = data.load_text(corpus), corpus
        described = corpus
    vocab_size = data.Vocab.from_text(text).size
    print(
        f"jaxrnn demo: {config.cell} language model (hidden {config.hidden_size}, "
        f"{config.num_layers} layer(s), {config.dtype} matmuls) on {described}: "
        f"{len(text):,} characters, "
        f"vocabulary {vocab_size}; batch {config.batch_size} x {config.seq_len} characters"
    )
    sys.stdout.flush()

    t_train = time.perf_counter()
    run = train_char_lm(
        text,
        config,
        corpus=name,
        stop_at=stop_at,
        checkpoint_dir=args.checkpoint_dir,
        save_every=args.save_every,
        eval_every=args.eval_every,
        progress=not args.no_progress,
    )
    train_time = time.perf_counter() - t_train
    losses = run.history.train.get("loss", [])
    end_step = int(run.state.step)
    if losses:
        line = f"step {end_step}: train loss {losses[0]:.3f} (step 1) -> {losses[-1]:.3f}"
        if run.history.eval.get("loss"):
            val = run.history.eval["loss"][-1]
            line += f", validation loss {val:.3f} nats/char ({bits_per_char(val):.2f} bits/char)"
        print(line + f"; training took {train_time:.1f} s")
    if args.checkpoint_dir is not None:
        print(f"checkpoint: {os.path.abspath(args.checkpoint_dir)} (step {end_step})")
    _print_samples(run.model, run.state.params, run.vocab, args, seed=config.seed)
    print(f"total wall time {time.perf_counter() - _START:.1f} s (start-up included)")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from jaxrnn.models import load_char_lm

    model, params, vocab, config, meta = load_char_lm(args.checkpoint_dir, step=args.step)
    print(
        f"{config.cell} language model from {os.path.abspath(args.checkpoint_dir)}, "
        f"step {meta['step']}"
    )
    _print_samples(model, params, vocab, args, seed=args.seed)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m jaxrnn`` and the ``jaxrnn`` console script."""
    args = _parser().parse_args(argv)
    from jaxrnn.train import CheckpointError

    try:
        return _demo(args) if args.command == "demo" else _sample(args)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"jaxrnn {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

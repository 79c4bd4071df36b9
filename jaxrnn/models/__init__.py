"""Models and applications built on jaxrnn, the way a user's own model would be.

* :mod:`jaxrnn.models.language_model`: a character-level language model (embedding ->
  :func:`jaxrnn.rnn` -> dense head), its loss, evaluation and sampler;
* :mod:`jaxrnn.models.char_lm_run`: :func:`train_char_lm` / :func:`load_char_lm` /
  :func:`stored_run`, its training run with :mod:`jaxrnn.train` — what ``python -m jaxrnn
  demo`` runs.
"""

from jaxrnn.models.char_lm_run import (
    CharLMConfig,
    CharLMRun,
    load_char_lm,
    run_metadata,
    stored_run,
    train_char_lm,
)
from jaxrnn.models.language_model import (
    CELLS,
    CharLM,
    CharLMParams,
    bits_per_char,
    char_lm,
    evaluate_lm,
    lm_loss,
    sample,
)

__all__ = [
    "CELLS",
    "CharLM",
    "CharLMConfig",
    "CharLMParams",
    "CharLMRun",
    "bits_per_char",
    "char_lm",
    "evaluate_lm",
    "lm_loss",
    "load_char_lm",
    "run_metadata",
    "sample",
    "stored_run",
    "train_char_lm",
]

"""Models and applications built on jaxrnn, the way a user's own model would be.

* :mod:`jaxrnn.models.language_model`: a character-level language model (embedding ->
  :func:`jaxrnn.rnn` -> dense head), its loss, evaluation and sampler;
* :mod:`jaxrnn.models.char_lm_run`: :func:`train_char_lm` / :func:`load_char_lm` /
  :func:`stored_run`, its training run with :mod:`jaxrnn.train` — what ``python -m jaxrnn
  demo`` runs.
* :mod:`jaxrnn.models.long_range`: the adding problem, copy memory and a character-level task
  with one residual model for every cell (:data:`LONG_RANGE_CELLS`), and
  :func:`train_long_range`, to compare how far back and how fast the cells learn.
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
from jaxrnn.models.long_range import (
    ADDING_SOLVED_MSE,
    COPY_SOLVED_ACCURACY,
    LONG_RANGE_CELLS,
    LongRangeConfig,
    LongRangeModel,
    LongRangeResult,
    long_range_model,
    train_long_range,
)

__all__ = [
    "ADDING_SOLVED_MSE",
    "CELLS",
    "COPY_SOLVED_ACCURACY",
    "LONG_RANGE_CELLS",
    "CharLM",
    "CharLMConfig",
    "CharLMParams",
    "CharLMRun",
    "LongRangeConfig",
    "LongRangeModel",
    "LongRangeResult",
    "bits_per_char",
    "char_lm",
    "evaluate_lm",
    "lm_loss",
    "load_char_lm",
    "long_range_model",
    "run_metadata",
    "sample",
    "stored_run",
    "train_char_lm",
    "train_long_range",
]

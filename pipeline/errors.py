"""The exception types users see.

Every error a user can cause (a wrong folder layout, an unknown name, a cache
file that is not ours) is a :class:`PipelineError`. The command line prints its
message and exits non-zero without a traceback; anything else is a bug and
keeps its traceback.

A message names a setting once, as its flag (`` `--batch-size` ``). Read on
the command line it stays so; read from Python it names the argument
(`` `batch_size` ``), so a caller of the API is never told of a flag.
"""

import contextvars
import errno
import re
from contextlib import contextmanager

_ON_THE_COMMAND_LINE = contextvars.ContextVar("on_the_command_line", default=False)
_FLAG = re.compile(r"`--([a-z][a-z0-9-]*)`")
# Flags whose argument is not the flag with "_" for "-" (tests/config checks this against the
# settings); `run`'s `--config FILE` and `--set KEY=VALUE` are `load_run_config`'s `path` and
# `overrides`.
ARGUMENT_OF_FLAG = {"param": "params", "jobs": "n_jobs", "memory-budget": "memory_budget_mb",
                    "config": "path", "set": "overrides"}


@contextmanager
def on_the_command_line():
    """Messages read inside name flags, as the command line's user typed them."""
    token = _ON_THE_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_THE_COMMAND_LINE.reset(token)


def spelt(text: str) -> str:
    """``text`` with each quoted flag as the Python argument it sets, outside the command line."""
    if _ON_THE_COMMAND_LINE.get():
        return text
    return _FLAG.sub(lambda m: f"`{ARGUMENT_OF_FLAG.get(m.group(1), m.group(1).replace('-', '_'))}`",
                     text)


class PipelineError(Exception):
    """Base class of user-facing errors; the message says what to do."""

    def __str__(self) -> str:
        return spelt(super().__str__())


class DataLayoutError(PipelineError):
    """The image folder does not have a layout the pipeline can read."""


class UnknownNameError(PipelineError, KeyError):
    """A name (backbone, pooling, split, ...) is not in its registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return spelt(str(self.args[0]))


class ConfigError(PipelineError, ValueError):
    """A setting has a value the pipeline cannot use."""


class CacheError(PipelineError):
    """A feature cache file is missing, partial, stale or not ours."""


class WeightsError(PipelineError):
    """Backbone weights cannot be obtained or do not fit the backbone."""


class RunError(PipelineError):
    """A run folder is missing, incomplete, or a model in it was changed."""


class DataSourceError(PipelineError):
    """A named dataset (Keras-cached, tfds) cannot be obtained."""


def first_line(exc: BaseException) -> str:
    """An exception's first line, for a message that quotes its cause."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def write_problem(exc: BaseException) -> str:
    """Why a write failed, in words: a full disk above all (HDF5 quotes the errno in its text)."""
    code = getattr(exc, "errno", None)
    quoted = re.search(r"errno = (\d+)", str(exc))
    code = code if code is not None else int(quoted.group(1)) if quoted else None
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"the disk is full (or a file size limit was reached) ({first_line(exc)})"
    return f"it could not be written ({first_line(exc)})"

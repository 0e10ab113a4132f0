"""The exception types users see.

Every error a user can cause (a wrong folder layout, an unknown name, a cache
file that is not ours) is a :class:`PipelineError`. The command line prints its
message and exits non-zero without a traceback; anything else is a bug and
keeps its traceback.
"""

import errno
import re


class PipelineError(Exception):
    """Base class of user-facing errors; the message says what to do."""


class DataLayoutError(PipelineError):
    """The image folder does not have a layout the pipeline can read."""


class UnknownNameError(PipelineError, KeyError):
    """A name (backbone, pooling, split, ...) is not in its registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


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

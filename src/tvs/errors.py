"""The errors a user causes, each naming the file, key or folder at fault.

The stage entry point (:func:`tvs.cli.run_stage`) turns any :class:`UserError` into one line on
stderr and a non-zero exit, without a traceback. They live in one small module so that every
module can raise them without importing the module of another pipeline room.
"""

from collections.abc import Sequence

MAX_LISTED = 10


def list_preview(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``a, b, c (and 7 more)``: the first ``limit`` offenders of a message and a count of the rest."""
    head = ", ".join(items[:limit])
    return head + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


class UserError(ValueError):
    """Caused by the user's data, params or files; the message says what to fix."""


class ConfigError(UserError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


class DataError(UserError):
    """The image folder or the prepared data cannot be used as it is; the message names the files or classes."""


class WeightsError(UserError):
    """Weights are missing, unreadable, or do not fit the model."""


class UnsafePathError(UserError):
    """An output path would land outside the project's output folders."""

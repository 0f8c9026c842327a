"""What every stage entry point shares: logging set-up and turning user errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from tvs.config import ConfigError
from tvs.data import DataError
from tvs.io import UnsafePathError
from tvs.weights import WeightsError

# Errors caused by the user's data, params or files: one line on stderr, exit code 1, no traceback.
USER_ERRORS = (ConfigError, DataError, WeightsError, UnsafePathError, FileNotFoundError)


def one_line(message: str) -> str:
    """``message`` on one line (a library's multi-line message is joined with ' | ')."""
    return " | ".join(line.strip() for line in str(message).splitlines() if line.strip())


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's ``main`` with logging configured; report user errors without a traceback."""
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s", stream=sys.stderr)
    try:
        main()
    except USER_ERRORS as err:
        print(f"{name}: error: {one_line(str(err))}", file=sys.stderr)
        sys.exit(1)

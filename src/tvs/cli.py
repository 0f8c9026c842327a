"""What every stage entry point shares: logging set-up and turning user errors into one line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from tqdm.contrib.logging import logging_redirect_tqdm

from tvs.errors import UserError
from tvs.io import DISK_FULL

# Errors caused by the user's data, params or files: one line on stderr, exit code 1, no traceback.
USER_ERRORS = (UserError, FileNotFoundError)


def one_line(message: str) -> str:
    """``message`` on one line (a library's multi-line message is joined with ' | ')."""
    return " | ".join(line.strip() for line in str(message).splitlines() if line.strip())


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's ``main`` with logging configured; report user errors without a traceback.

    Also one line each: a full disk (exit 1; :func:`tvs.io.atomic_path` names the file and leaves
    no half-written one) and Ctrl-C (exit 130, like a shell; the state is that of a kill: whole
    files only, and a training stage resumes after its last completed epoch). Log lines go through
    tqdm (``logging_redirect_tqdm``), so they never break a progress bar.
    """
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s", stream=sys.stderr)
    try:
        with logging_redirect_tqdm():
            main()
    except USER_ERRORS as err:
        print(f"{name}: error: {one_line(str(err))}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"{name}: error: {where}{os.strerror(err.errno).lower()}; free some space and rerun", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; nothing half-written (rerun to resume)", file=sys.stderr)
        sys.exit(130)

"""Which params a saved resume state belongs to, readable without torch.

Beside ``state.pt`` a training run writes ``params.sha256``: the digest of the params it read
(params.yaml and its ``--set`` overrides). The `check_params` stage, which runs before any other
stage whenever params.yaml's text changes, removes the main pipeline's states made with other
params. Without it, a state left by Ctrl-C stayed (tens of MB) when DVC later restored that arm
from its run-cache, which runs no project code; a state is resumed only with the params it was
made with, and one arm keeps one state, so none of these could be resumed again in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from tvs.config import Params, to_dict

log = logging.getLogger(__name__)

RECORD = "params.sha256"


def params_digest(params: Params) -> str:
    """The digest a state's record holds: the params as read, before a run adjusts them."""
    return hashlib.sha256(json.dumps(to_dict(params), sort_keys=True, default=str).encode()).hexdigest()


def forget_other_params(root: Path, params: Params) -> list[Path]:
    """Remove each ``root/<arm>/`` whose record names params other than ``params``; the folders removed.

    A folder without a record (written before records existed, or a run killed before its first
    state) is left alone: its training removes it when the fingerprint does not match.
    """
    digest = params_digest(params)
    removed = []
    for record in sorted(Path(root).glob(f"*/{RECORD}")):
        try:
            made_with = record.read_text().strip()
        except (OSError, UnicodeDecodeError):
            made_with = ""
        if made_with != digest:
            shutil.rmtree(record.parent, ignore_errors=True)
            log.info("%s: resume state of an interrupted run with other params; removed", record.parent)
            removed.append(record.parent)
    return removed

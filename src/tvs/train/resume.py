"""Resume an interrupted training stage from its last completed epoch.

After every epoch the training loop saves everything the rest of the run depends on (model,
optimizer, scheduler, both random generators, the best weights so far and the history) to
``models/.resume/<arm>/state.pt``. That folder is *beside* the stage's DVC output, not in it:
DVC deletes ``models/<arm>`` before it reruns the stage, never caches ``models/.resume``, and the
folder ignores itself in git. A rerun with the same params, data and code picks the state up; any
other rerun ignores it. A finished run deletes it.

The file is written with ``torch.save`` but holds only tensors and plain Python values, and is
read back with ``weights_only=True``, so a tampered file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import torch

from tvs.config import Params, to_dict
from tvs.deps import SRC, stage_code
from tvs.errors import UnsafePathError
from tvs.io import remove_stale_temps, write_bytes, write_text
from tvs.models.sources import why_refused
from tvs.train.resume_record import RECORD

log = logging.getLogger(__name__)

STATE = "state.pt"
FORMAT = 1
TRAINING_STAGE = SRC / "stages" / "train.py"  # its code deps in dvc.yaml: the script and what it imports


@dataclass(frozen=True)
class ResumeSpec:
    """Where a run keeps its resume state, and the fingerprint a saved state must match."""

    folder: Path
    fingerprint: str
    params_digest: str = ""  # the params as read (resume_record.params_digest): what check_params compares


def default_resume_dir(out: str | Path) -> Path:
    """``models/.resume/pretrained`` for the output ``models/pretrained``: beside it, in its output folder.

    Not inside ``out``, which DVC deletes before it reruns the stage. An ``out`` directly in the
    project folder (the working directory, where DVC runs the stage) is refused: its state would
    land in the project root (``--out models``: ``.resume/models``), outside every output folder.

    Raises:
        UnsafePathError: naming ``--out`` and where the state would have gone.
    """
    out = Path(out)
    folder = out.parent / ".resume" / out.name
    if Path(os.path.abspath(out)).parent == Path(os.getcwd()):
        raise UnsafePathError(
            f"--out {out}: training keeps its resume state beside its output folder, here {folder} in the "
            f"project root, outside the output folders; name a folder inside an output folder, e.g. {out}/<name>"
        )
    return folder


def fingerprint(params: Params, arm: str, manifest: Path) -> str:
    """What a resumed run must share with the interrupted one: params, arm, data and code."""
    digest = hashlib.sha256(json.dumps({"arm": arm, "params": to_dict(params)}, sort_keys=True).encode())
    digest.update(torch.__version__.encode())
    digest.update(Path(manifest).read_bytes())  # lists every image's sha1 and split
    for path in stage_code(TRAINING_STAGE):  # the code dvc.yaml declares for the training stages
        digest.update(path.read_bytes())
    return digest.hexdigest()


def save_state(spec: ResumeSpec, state: dict[str, Any]) -> None:
    """Atomically replace the saved state; ``state`` holds tensors and plain values only.

    Serialised in memory, then written by :func:`tvs.io.write_bytes`: a full disk is one error
    naming the file, not torch's ``PytorchStreamWriter failed writing file``.
    """
    ignore = spec.folder.parent / ".gitignore"
    if not ignore.exists():  # like .pytest_cache: the folder keeps itself out of git
        write_text(ignore, "# resume state of interrupted training stages; see docs/reliability.md\n*\n")
    if spec.params_digest:  # before the state: a state never lies there without its record
        write_text(spec.folder / RECORD, spec.params_digest + "\n")
    buffer = BytesIO()
    torch.save({"format": FORMAT, "fingerprint": spec.fingerprint, **state}, buffer)
    write_bytes(spec.folder / STATE, buffer.getbuffer())


def load_state(spec: ResumeSpec) -> dict[str, Any] | None:
    """The saved state if there is one for this fingerprint, else ``None`` (with a log line why).

    A state this run cannot use (other params, data or code; unreadable) is deleted at once,
    not left until this run's first epoch replaces it: interrupted again before then, the
    workspace would keep a file (tens of MB) that no run can use.
    """
    removed = remove_stale_temps(spec.folder)  # left by a kill in the middle of a write
    path = spec.folder / STATE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or tampered file: start afresh rather than trust it
        log.warning("%s: unreadable (%s); starting from epoch 1", path, why_refused(err))
        clear_state(spec)
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("fingerprint") != spec.fingerprint:
        log.warning("%s: saved for other params, data or code; starting from epoch 1", path)
        clear_state(spec)
        return None
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted write", spec.folder, len(removed))
    log.info("resuming after epoch %d from %s", state["epoch"], path)
    return state


def clear_state(spec: ResumeSpec) -> None:
    """Forget the state once the run has finished."""
    shutil.rmtree(spec.folder, ignore_errors=True)


def snapshot(
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    best: dict[str, torch.Tensor],
    result: dict[str, Any],
) -> dict[str, Any]:
    """Everything the epochs after ``epoch`` depend on, as tensors and plain values."""
    return {
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),  # dropout and drop-path draw from the global generator
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "best": best,
        "result": result,
    }


def restore(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> None:
    """Put a :func:`snapshot` back into the objects of a fresh run."""
    model.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])

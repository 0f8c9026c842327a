"""Atomic file output (a kill, Ctrl-C or a full disk at any moment leaves either the old file or
the new one), the one CSV writer and reader, and the check that a stage writes only where its
``dvc.yaml`` declares outputs."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tvs.errors import DataError, UnsafePathError

if TYPE_CHECKING:
    import pandas as pd

# A full disk or an exhausted quota: reported as one line naming the file (tvs.cli), not as a library's error.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic on
    POSIX. On error it is removed and ``path`` is left untouched. A full disk, whether the block's
    writes or the final ``fsync`` find it, raises an ``OSError`` naming ``path`` (not the temporary).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        _raise_if_disk_full(err, path)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp_path, path)
    except OSError as err:
        _raise_if_disk_full(err, path)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def disk_full_names(path: str | Path) -> Iterator[None]:
    """Raise a full disk met in the block as an ``OSError`` naming ``path`` (for writes outside :func:`atomic_path`)."""
    try:
        yield
    except OSError as err:
        _raise_if_disk_full(err, Path(path))
        raise


def _raise_if_disk_full(err: OSError, path: Path) -> None:
    """Raise a full-disk ``err`` again as an ``OSError`` naming ``path``; return for any other error."""
    if err.errno in DISK_FULL:
        raise OSError(err.errno, os.strerror(err.errno), str(path)) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically.

    Callers serialise in memory first (``safetensors.torch.save``, ``torch.save`` into a buffer),
    so that the only writer that meets the disk is this one: a full disk is then an ``OSError``
    naming the file, never a library's own error (torch's ``PytorchStreamWriter failed writing
    file data/0``, safetensors' ``IoError``).
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv(table: pd.DataFrame, path: str | Path) -> None:
    """Write ``table`` (without its index) to ``path`` atomically, so that :func:`read_csv` reads back every cell.

    Every CSV the project writes goes through here. Python's csv writer, which pandas uses, quotes a
    field holding a comma, a quote or a newline, but not one holding a lone carriage return, which
    every CSV reader (pandas', the csv module's, DVC's plots) takes for a line break: a file named
    ``"\\r.png"`` split its row in two. When any text cell or column name holds one, every field is
    quoted; other tables are written byte for byte as before.
    """
    texts = table.select_dtypes(exclude="number")
    cells = [*map(str, table.columns), *(str(value) for column in texts for value in texts[column])]
    quoting = csv.QUOTE_ALL if any("\r" in cell for cell in cells) else csv.QUOTE_MINIMAL
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, quoting=quoting)


def read_csv(path: str | Path, text: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a table :func:`write_csv` wrote: the ``text`` columns exactly as written, the others parsed.

    A name such as ``NA``, ``nan`` or ``null`` stays a string in a ``text`` column; elsewhere only
    an empty field is missing (NaN).

    Raises:
        FileNotFoundError: ``path`` does not exist, naming it.
        DataError: ``path`` is not a CSV table (binary bytes, not UTF-8, ragged rows, empty), naming it.
    """
    # pandas loads here, not at the top: every stage imports this module (through tvs.cli), and a
    # stage's `--help` answers before pandas or torch load (tests/test_logs.py).
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=dict.fromkeys(text, str), keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file; run the stage that writes it first") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a readable CSV table ({type(err).__name__}: {err})") from None
    present = [column for column in text if column in table.columns]
    table[present] = table[present].fillna("")
    return table


def read_json(path: str | Path) -> Any:
    """Read a JSON file a stage wrote (UTF-8, as JSON is), naming the file when it is missing or malformed.

    Raises:
        FileNotFoundError: ``path`` does not exist, naming it.
        DataError: ``path`` is not JSON (cut short, edited, binary), naming it: a user error, so a
            stage reports it in one line (:func:`tvs.cli.run_stage`). The message ends at the reason,
            ``<path>: not valid JSON (<reason>)``, so that a reader of a particular file can add its own
            advice (``tvs.models.checkpoint.read_meta``: restore the ``meta.json`` training wrote).
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file; run the stage that writes it first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


DVC_YAML = "dvc.yaml"


def output_roots(dvc_yaml: str | Path = DVC_YAML) -> tuple[str, ...]:
    """The folders ``dvc_yaml``'s stages declare outputs in (outs, metrics, plots).

    ``dvc.yaml`` is the one list of where stages write; the check below reads it rather than
    restating it. A folder output is a root itself (``data/prepared``), a file output gives its
    folder (``metrics/prepare.json``: ``metrics``), and a templated one the part before the
    template (``models/${item.fraction}-...``: ``models``). DVC runs a stage in the folder of its
    ``dvc.yaml``, so the default is the one in the working directory.
    """
    path = Path(dvc_yaml)
    try:
        stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {})
    except FileNotFoundError:
        raise UnsafePathError(
            f"{path}: not found; stages run through DVC (`dvc repro`), in the folder of their dvc.yaml"
        ) from None
    roots = set()
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                parts = Path(next(iter(entry)) if isinstance(entry, dict) else entry).parts
                templated = [i for i, part in enumerate(parts) if "${" in part]
                if templated:
                    parts = parts[: templated[0]]
                elif Path(parts[-1]).suffix:
                    parts = parts[:-1]
                if parts:
                    roots.add(Path(*parts).as_posix())
    return tuple(sorted(roots))


def check_output_path(path: str | Path, flag: str, root: str | Path | None = None) -> Path:
    """Return ``path`` if it lies under one of the :func:`output_roots` of ``root`` (default: cwd).

    The check is lexical: ``..`` is collapsed but symlinks are not followed, so a user may point
    ``models/`` at another disk, while ``models/../../x`` or ``/tmp/x`` are refused.

    Raises:
        UnsafePathError: naming ``flag`` (the command-line option) and the allowed folders.
    """
    base = Path(os.path.abspath(root if root is not None else Path.cwd()))
    tops = output_roots(base / DVC_YAML)
    full = Path(os.path.abspath(base / path))
    if any(full == base / top or (base / top) in full.parents for top in tops):
        return Path(path)
    allowed = ", ".join(f"{top}/" for top in tops)
    raise UnsafePathError(f"{flag} {path}: outside the project's output folders; stages write only under {allowed}")


def check_output_paths(**paths: str | Path | None) -> None:
    """:func:`check_output_path` for each ``flag_name=path`` (``eval_dir`` names ``--eval-dir``); skips ``None``."""
    for name, path in paths.items():
        if path is not None:
            check_output_path(path, "--" + name.replace("_", "-"))


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` leaves behind when a process is killed."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale

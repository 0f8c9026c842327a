"""Export the embedded default dataset (the ``elpv-dataset`` package) as an ImageFolder.

ELPV: 2,624 electroluminescence images of solar cells (300x300, 8-bit grayscale), each with a
defect probability of 0, 1/3, 2/3 or 1 (Deitsch et al., 2019; CC BY-NC-SA 4.0). The PNG bytes
are copied unchanged, so the export is byte-for-byte deterministic and its DVC hash matches the
one committed in ``data/dvc.lock``, whose stage ``elpv`` (``src/stages/elpv.py``) runs it.

Usage: ``python -m tvs.elpv --out data/raw [--scheme binary|levels]`` (the four-level export is
for your own ``dvc add``, README "Bringing your own data"). The stage script takes the same command
line (:func:`parse_args`) and adds only the check that it writes where ``data/dvc.yaml`` declares.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tvs.cli import run_stage
from tvs.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SCHEMES = ("binary", "levels")
LEVEL_NAMES = {0.0: "p0.00", 1 / 3: "p0.33", 2 / 3: "p0.67", 1.0: "p1.00"}


def elpv_root() -> Path:
    """The folder holding ``labels.csv`` and ``images/`` inside the installed package."""
    import elpv_dataset

    return Path(elpv_dataset.__file__).parent / "data"


def read_labels(root: Path) -> pd.DataFrame:
    """ELPV's ``labels.csv``: image path, defect probability, cell type (mono/poly)."""
    import pandas as pd  # here, not at import: the stage's --help answers before it loads

    return pd.read_csv(root / "labels.csv", sep=r"\s+", header=None, names=["path", "probability", "type"])


def class_of(probability: float, scheme: str) -> str:
    """``functional``/``defective`` (threshold 0.5), or one class per probability level."""
    if scheme == "binary":
        return "defective" if probability >= 0.5 else "functional"
    level = min(LEVEL_NAMES, key=lambda p: abs(p - probability))
    return LEVEL_NAMES[level]


def export_paths(labels: pd.DataFrame) -> set[str]:
    """Every ``<class>/<file>`` an export writes, under either scheme."""
    names = [Path(path).name for path in labels["path"]]
    return {
        f"{class_of(p, scheme)}/{name}"
        for scheme in SCHEMES
        for p, name in zip(labels["probability"], names, strict=True)
    }


def foreign_files(dest: Path, labels: pd.DataFrame) -> list[str]:
    """The files under ``dest`` that no ELPV export writes (hidden ones included): someone else's data."""
    if not dest.is_dir():
        return [dest.name]
    ours = export_paths(labels)
    found = (path for path in sorted(dest.rglob("*")) if not path.is_dir() or path.is_symlink())
    return [rel for rel in (path.relative_to(dest).as_posix() for path in found) if rel not in ours]


def export_elpv(dest: str | Path, scheme: str = "binary", source: Path | None = None) -> int:
    """Copy ELPV into ``dest/<class>/<file>.png``; return the number of images.

    An earlier export in ``dest`` (either scheme) is replaced; any other file there stops the
    export and nothing is touched, so no user data is ever overwritten. The new folder takes the
    old one's place only when it is complete.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    dest = Path(dest)
    source = source or elpv_root()
    labels = read_labels(source)
    if dest.exists() and (foreign := foreign_files(dest, labels)):
        shown = ", ".join(foreign[:3]) + (f" (and {len(foreign) - 3} more)" if len(foreign) > 3 else "")
        raise DataError(
            f"{dest}: holds {len(foreign)} file(s) that are not an ELPV export ({shown}), so the export "
            "stops and leaves them alone. To use your own images, replace the export stage with them "
            "(README, Bringing your own data: `dvc remove data/dvc.yaml:elpv`, then `dvc add data/raw`); "
            f"to export ELPV here, move them out of {dest} first"
        )
    partial = dest.with_name(dest.name + ".partial")
    replaced = dest.with_name(dest.name + ".replaced")
    for leftover in (partial, replaced):
        shutil.rmtree(leftover, ignore_errors=True)
    for row in labels.itertuples(index=False):
        target = partial / class_of(row.probability, scheme) / Path(row.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / row.path, target)
    if dest.exists():
        dest.rename(replaced)
    partial.rename(dest)  # the folder appears whole or not at all
    shutil.rmtree(replaced, ignore_errors=True)
    log.info("exported %d ELPV images to %s (%s classes)", len(labels), dest, scheme)
    return len(labels)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The export's one command line: ``python -m tvs.elpv`` and the stage ``src/stages/elpv.py`` alike."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the ImageFolder to write (the stage's: data/raw)")
    parser.add_argument(
        "--scheme", choices=SCHEMES, default="binary",
        help="functional/defective (threshold 0.5), or one class per defect-probability level",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tvs.elpv --out DIR``: the export anywhere, for your own ``dvc add``."""
    args = parse_args(argv)
    export_elpv(args.out, args.scheme)


if __name__ == "__main__":
    run_stage("elpv", main)

"""DVC stage `elpv` (data/dvc.yaml): the embedded default dataset, ELPV from PyPI, as an ImageFolder."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this working copy's package, not an installed one

from tvs.cli import run_stage  # noqa: E402
from tvs.elpv import SCHEMES, export_elpv  # noqa: E402
from tvs.io import check_output_paths  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="the ImageFolder to write (data/raw)")
    parser.add_argument(
        "--scheme", choices=SCHEMES, default="binary",
        help="functional/defective (threshold 0.5), or one class per defect-probability level",
    )  # fmt: skip
    args = parser.parse_args()
    check_output_paths(out=args.out)
    export_elpv(args.out, args.scheme)


if __name__ == "__main__":
    run_stage("elpv", main)

"""DVC stage `elpv` (data/dvc.yaml): the embedded default dataset, ELPV from PyPI, as an ImageFolder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this working copy's package, not an installed one

from tvs.cli import run_stage  # noqa: E402
from tvs.elpv import export_elpv, parse_args  # noqa: E402
from tvs.io import check_output_paths  # noqa: E402


def main() -> None:
    args = parse_args()  # the command line of `python -m tvs.elpv`
    check_output_paths(out=args.out)  # a stage writes only where its dvc.yaml declares outputs
    export_elpv(args.out, args.scheme)


if __name__ == "__main__":
    run_stage("elpv", main)

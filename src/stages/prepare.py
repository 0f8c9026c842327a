"""DVC stage `prepare`: ImageFolder -> checked, split, manifest + uint8 tensor cache."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this working copy's package, not an installed one

from tvs.cli import run_stage  # noqa: E402
from tvs.config import load_params, parse_override  # noqa: E402
from tvs.io import check_output_paths  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--raw", type=Path, required=True, help="ImageFolder root (one sub-folder per class)")
    parser.add_argument("--out", type=Path, required=True, help="folder for manifest.csv and images.npy")
    parser.add_argument("--summary", type=Path, required=True, help="JSON file for the dataset counts")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a param: dotted key, YAML value (repeatable), e.g. --set seed=2 for another split",
    )  # fmt: skip
    args = parser.parse_args()
    check_output_paths(out=args.out, summary=args.summary)
    # torch and the package's heavy modules load after parsing, so that --help answers at once
    from tvs.data.prepare import prepare_dataset

    params = load_params(args.params, overrides=dict(parse_override(item) for item in args.set))
    prepare_dataset(
        raw=args.raw, out=args.out, params=params, summary_path=args.summary, max_pixels=params.data.max_pixels
    )


if __name__ == "__main__":
    run_stage("prepare", main)

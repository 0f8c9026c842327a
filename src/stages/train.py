"""DVC stages `train_pretrained` and `train_scratch`: one training code path, the arm as argument."""

import argparse
from pathlib import Path

from tvs.cli import run_stage
from tvs.config import ARMS, load_params, parse_override
from tvs.io import check_output_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arm", choices=ARMS, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    parser.add_argument("--live", type=Path, required=True, help="DVCLive folder for per-epoch curves")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a param: dotted key, YAML value (repeatable), e.g. --set data.train_fraction=0.1",
    )  # fmt: skip
    parser.add_argument(
        "--min-steps", type=int, default=0, help="raise train.epochs until training makes this many optimizer steps"
    )
    args = parser.parse_args()
    check_output_paths(out=args.out, live=args.live)
    params = load_params(args.params, overrides=dict(parse_override(item) for item in args.set))
    # torch and the package's heavy modules load after the checks, so that --help and bad params answer at once
    from tvs.train.worker import train_arm

    train_arm(
        arm=args.arm, data_dir=args.data, out=args.out, params=params, live_dir=args.live, min_steps=args.min_steps
    )


if __name__ == "__main__":
    run_stage("train", main)

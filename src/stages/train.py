"""DVC stages `train_pretrained` and `train_scratch`: one training code path, the arm as argument."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this working copy's package, not an installed one

from tvs.cli import run_stage  # noqa: E402
from tvs.config import ARMS, load_params, parse_override  # noqa: E402
from tvs.io import check_output_paths  # noqa: E402


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
    from tvs.train.launch import inside_torchrun, launch, run_as_rank

    if params.train.nproc > 1 and not inside_torchrun():
        launch(params.train)  # this same command line, as train.nproc processes under torchrun's agent
        return
    from tvs.train.worker import train_arm

    run_as_rank(
        lambda: train_arm(
            arm=args.arm, data_dir=args.data, out=args.out, params=params, live_dir=args.live, min_steps=args.min_steps
        )
    )


if __name__ == "__main__":
    run_stage("train", main)

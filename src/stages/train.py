"""DVC stages `train_pretrained` and `train_scratch`: one training code path, the arm as argument."""

import argparse
from pathlib import Path

from tvs.cli import run_stage
from tvs.config import ARMS, load_params
from tvs.training import train_arm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arm", choices=ARMS, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    parser.add_argument("--live", type=Path, required=True, help="DVCLive folder for per-epoch curves")
    args = parser.parse_args()
    params = load_params(args.params)
    train_arm(arm=args.arm, data_dir=args.data, out=args.out, params=params, live_dir=args.live)


if __name__ == "__main__":
    run_stage("train", main)

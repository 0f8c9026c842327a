"""DVC stage `evaluate`: both checkpoints on the test split -> metrics JSON and confusion plots."""

import argparse
from pathlib import Path

from tvs.cli import run_stage
from tvs.evaluation import evaluate_arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--pretrained", type=Path, required=True, help="checkpoint folder of the pretrained arm")
    parser.add_argument("--scratch", type=Path, required=True, help="checkpoint folder of the scratch arm")
    parser.add_argument("--metrics", type=Path, required=True, help="folder for <arm>.json and comparison.json")
    parser.add_argument("--eval-dir", type=Path, required=True, help="folder for confusion matrices and predictions")
    args = parser.parse_args()
    evaluate_arms(
        models={"pretrained": args.pretrained, "scratch": args.scratch},
        data_dir=args.data,
        metrics_dir=args.metrics,
        eval_dir=args.eval_dir,
    )


if __name__ == "__main__":
    run_stage("evaluate", main)

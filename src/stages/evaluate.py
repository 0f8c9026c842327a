"""DVC stage `evaluate`: both checkpoints on the test split -> metrics JSON and confusion plots."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this working copy's package, not an installed one

from tvs.cli import run_stage  # noqa: E402
from tvs.config import load_params, parse_override  # noqa: E402
from tvs.io import check_output_paths  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="its `evaluate` section is read")
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--pretrained", type=Path, required=True, help="checkpoint folder of the pretrained arm")
    parser.add_argument("--scratch", type=Path, required=True, help="checkpoint folder of the scratch arm")
    parser.add_argument("--metrics", type=Path, required=True, help="folder for <arm>.json and comparison.json")
    parser.add_argument("--eval-dir", type=Path, required=True, help="folder for confusion matrices and predictions")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a param: dotted key, YAML value (repeatable), e.g. --set evaluate.resamples=1000",
    )  # fmt: skip
    args = parser.parse_args()
    check_output_paths(metrics=args.metrics, eval_dir=args.eval_dir)
    params = load_params(args.params, overrides=dict(parse_override(item) for item in args.set))
    # torch and the package's heavy modules load after the checks, so that --help and bad params answer at once
    from tvs.evaluate.scoring import evaluate_arms

    evaluate_arms(
        models={"pretrained": args.pretrained, "scratch": args.scratch},
        data_dir=args.data,
        metrics_dir=args.metrics,
        eval_dir=args.eval_dir,
        evidence=params.evaluate,
    )


if __name__ == "__main__":
    run_stage("evaluate", main)

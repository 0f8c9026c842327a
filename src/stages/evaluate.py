"""DVC stage `evaluate`: both checkpoints on the test split -> metrics JSON and confusion plots."""

import argparse
from pathlib import Path

from tvs.cli import run_stage
from tvs.evaluate.stats import EvidenceSettings
from tvs.io import check_output_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder")
    parser.add_argument("--pretrained", type=Path, required=True, help="checkpoint folder of the pretrained arm")
    parser.add_argument("--scratch", type=Path, required=True, help="checkpoint folder of the scratch arm")
    parser.add_argument("--metrics", type=Path, required=True, help="folder for <arm>.json and comparison.json")
    parser.add_argument("--eval-dir", type=Path, required=True, help="folder for confusion matrices and predictions")
    parser.add_argument("--verdict", type=Path, default=None, help="write the verdict (Markdown) here")
    parser.add_argument("--curve-plot", type=Path, default=None, help="PNG of val accuracy vs seconds, for the verdict")
    parser.add_argument("--confidence", type=float, default=0.95, help="level of the confidence intervals")
    parser.add_argument("--resamples", type=int, default=10_000, help="paired bootstrap resamples")
    parser.add_argument(
        "--target-fraction", type=float, default=0.95, help="time-to-accuracy target: share of the better arm's best"
    )
    args = parser.parse_args()
    # torch and the package's heavy modules load after parsing, so that --help answers at once
    from tvs.evaluate.scoring import evaluate_arms

    check_output_paths(metrics=args.metrics, eval_dir=args.eval_dir, verdict=args.verdict, curve_plot=args.curve_plot)
    evaluate_arms(
        models={"pretrained": args.pretrained, "scratch": args.scratch},
        data_dir=args.data,
        metrics_dir=args.metrics,
        eval_dir=args.eval_dir,
        evidence=EvidenceSettings(args.confidence, args.resamples, args.target_fraction),
        verdict=args.verdict,
        curve_plot=args.curve_plot,
    )


if __name__ == "__main__":
    run_stage("evaluate", main)

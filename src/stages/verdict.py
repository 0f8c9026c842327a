"""DVC stage `verdict`: what `evaluate` measured -> reports/verdict.md, its plot, and the plot sources in git.

The plot sources are small files `dvc plots` and the answer page read from git (reports/plots/: both
arms' per-epoch curves, each arm's test confusion, calibration, ROC and PR, the disagreement gallery).

A stage of its own, not part of `evaluate`: DVC keeps no run-cache for a stage with a `cache: false`
output that is neither a metric nor a plot (the Markdown verdict), and scoring is the part worth
restoring from it.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this working copy's package, not an installed one

from tvs.cli import run_stage  # noqa: E402
from tvs.config import load_params  # noqa: E402
from tvs.io import check_output_paths  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="its `evaluate` section is read")
    parser.add_argument("--metrics", type=Path, required=True, help="folder of evaluate's <arm>.json, comparison.json")
    parser.add_argument("--pretrained", type=Path, required=True, help="the pretrained arm's checkpoint sidecar")
    parser.add_argument("--scratch", type=Path, required=True, help="the scratch arm's checkpoint sidecar")
    parser.add_argument("--verdict", type=Path, required=True, help="write the verdict (Markdown) here")
    parser.add_argument("--curve-plot", type=Path, default=None, help="PNG of val accuracy vs seconds, for the verdict")
    parser.add_argument("--eval-dir", type=Path, default=None, help="folder of evaluate's <arm>/predictions.csv")
    parser.add_argument("--plots-dir", type=Path, default=None, help="write the plot sources here (curves.csv, ...)")
    args = parser.parse_args()
    if args.plots_dir is not None and args.eval_dir is None:
        parser.error("--plots-dir needs --eval-dir (the confusion comes from evaluate's predictions)")
    check_output_paths(verdict=args.verdict, curve_plot=args.curve_plot, plots_dir=args.plots_dir)
    params = load_params(args.params)
    # matplotlib loads after the checks, so that --help and bad params answer at once
    from tvs.verdict.pair import write_verdict

    write_verdict(
        metrics_dir=args.metrics,
        sidecars={"pretrained": args.pretrained, "scratch": args.scratch},
        settings=params.evaluate,
        verdict_path=args.verdict,
        curve_path=args.curve_plot,
        plots_dir=args.plots_dir,
        eval_dir=args.eval_dir,
    )


if __name__ == "__main__":
    run_stage("verdict", main)

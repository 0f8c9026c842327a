"""DVC stage `tune_report` of the tuning pipeline (tune/dvc.yaml): every run -> summary metrics, verdict, plot."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this working copy's package, not an installed one

from tvs.cli import run_stage  # noqa: E402
from tvs.config import load_params  # noqa: E402
from tvs.io import check_output_paths  # noqa: E402
from tvs.tune.params import load_tune_params  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, required=True, help="the tuning pipeline's params (grid, report)")
    parser.add_argument("--main-params", type=Path, required=True, help="params.yaml: its lr is the untuned recipe")
    parser.add_argument("--summary", type=Path, required=True, help="JSON metrics of the tuning pipeline")
    parser.add_argument("--verdict", type=Path, required=True, help="the verdict (Markdown)")
    parser.add_argument("--plot", type=Path, required=True, help="PNG: test accuracy against training seconds")
    parser.add_argument("--table", type=Path, required=True, help="CSV of every run, for `dvc plots`")
    args = parser.parse_args()
    check_output_paths(summary=args.summary, verdict=args.verdict, plot=args.plot, table=args.table)
    tune, untuned_lr = load_tune_params(args.params), load_params(args.main_params).lr
    # pandas and matplotlib load after the checks, so that --help and bad params answer at once
    from tvs.tune.report import write_tune_report

    write_tune_report(
        tune=tune, root=Path("."), untuned_lr=untuned_lr, summary_path=args.summary, verdict_path=args.verdict,
        plot_path=args.plot, table_path=args.table,
    )  # fmt: skip


if __name__ == "__main__":
    run_stage("tune_report", main)

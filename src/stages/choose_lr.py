"""DVC stage `choose_lr` of the tuning pipeline (tune/dvc.yaml): each arm's learning rate, chosen on validation.

Reads only the search runs' checkpoints metadata (validation accuracy and loss), never a test score,
and writes `<arm>.set` (`lr=<chosen>`), which the final runs pass to the training stage as `--set`.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this working copy's package, not an installed one

from tvs.cli import run_stage  # noqa: E402
from tvs.io import check_output_paths  # noqa: E402
from tvs.tune.params import load_tune_params  # noqa: E402
from tvs.tune.runs import search, write_selection  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, required=True, help="the tuning pipeline's params (its grid)")
    parser.add_argument("--models", type=Path, required=True, help="folder of the search runs: <arm>-<lr>/")
    parser.add_argument("--out", type=Path, required=True, help="folder for <arm>.set and selection.json")
    args = parser.parse_args()
    check_output_paths(out=args.out)
    tune = load_tune_params(args.params)
    chosen = write_selection(search(args.models, tune.lrs, tune.epochs), args.out)
    for arm, trial in chosen.items():
        print(f"{arm}: lr {trial.lr:g} (validation accuracy {trial.val_accuracy:.1%})")


if __name__ == "__main__":
    run_stage("choose_lr", main)

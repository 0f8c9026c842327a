"""DVC stage `report` of the study (study/dvc.yaml): every cell -> summary metrics, the curve, tables, verdict."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this working copy's package, not an installed one

from tvs.cli import run_stage  # noqa: E402
from tvs.io import check_output_paths  # noqa: E402
from tvs.study.params import load_study_params  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, required=True, help="the study's params (grid and report settings)")
    parser.add_argument("--data", type=Path, required=True, help="folder of each seed's prepared split: <seed>/")
    parser.add_argument("--results", type=Path, required=True, help="folder of the evaluate cells: <fraction>-<seed>/")
    parser.add_argument("--summary", type=Path, required=True, help="JSON metrics of the whole study")
    parser.add_argument("--verdict", type=Path, required=True, help="the study's verdict (Markdown)")
    parser.add_argument("--plot", type=Path, required=True, help="PNG: test accuracy vs training images per class")
    parser.add_argument("--table", type=Path, required=True, help="CSV of the curve, for `dvc plots`")
    parser.add_argument("--cells", type=Path, required=True, help="CSV of every cell: each seed's numbers")
    args = parser.parse_args()
    # torch and the package's heavy modules load after parsing, so that --help answers at once
    from tvs.study.report import write_study_report

    check_output_paths(summary=args.summary, verdict=args.verdict, plot=args.plot, table=args.table, cells=args.cells)
    write_study_report(
        study=load_study_params(args.params),
        data_dir=args.data,
        results=args.results,
        summary_path=args.summary,
        verdict_path=args.verdict,
        plot_path=args.plot,
        table_path=args.table,
        cells_path=args.cells,
    )


if __name__ == "__main__":
    run_stage("report", main)

"""DVC stage `check_params`: params.yaml checked as a whole (every key's type and range) whenever its text changes.

DVC compares a param's values with Python's ``==``, where ``true == 1``: after `dvc exp run -S
train.epochs=true` over ``epochs: 1`` it sees nothing changed and runs no stage, so no stage could
refuse the value and the experiment would record it. This stage depends on the *file* params.yaml
(hashed as bytes, not compared as values), so any edit runs it; it reads the file with the one loader
every stage uses and stops the run with that loader's one line. It writes nothing.

Valid params also decide which resume states can still be used: a state an interrupted training
run left under ``--resume`` (models/.resume) for other params is removed (see
:mod:`tvs.train.resume_record`). DVC may restore that arm from its run-cache, which runs no code
of ours, so this stage is the one that sees the change.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this working copy's package, not an installed one

from tvs.cli import run_stage  # noqa: E402
from tvs.config import load_params  # noqa: E402
from tvs.train.resume_record import forget_other_params  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--resume", type=Path, help="the training stages' resume folder (models/.resume)")
    args = parser.parse_args()
    params = load_params(args.params)
    if args.resume is not None:
        forget_other_params(args.resume, params)


if __name__ == "__main__":
    run_stage("check_params", main)

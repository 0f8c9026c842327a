"""The main pipeline end to end by dvc.yaml's own stage commands, in order, each timed, without dvc.

For a machine with the package's needs but no dvc (the lent GPU machine): each stage's ``cmd``
runs exactly as dvc.yaml writes it, from the repo root, ``python`` being this interpreter.
``--skip prepare`` uses a ``data/prepared`` already in place; ``--torchrun N`` runs the training
stages under ``python -m torch.distributed.run --standalone --nproc-per-node N`` (a process group
even for one process: NCCL on CUDA). The verdict's headline figures come back in the JSON::

    python -m benchmarks.stages --skip prepare --out "$OUT/stages.json"
    python -m benchmarks.stages --skip prepare --torchrun 1 --out "$OUT/stages-torchrun.json"
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import PROJECT, machine_info, write_result

TRAIN = "src/stages/train.py"


def stage_commands(dvc_yaml: Path, skip: set[str], torchrun: int = 0) -> dict[str, list[str]]:
    """Each stage's command line in dvc.yaml's order (the order it runs in), as an argument list."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    unknown = skip - stages.keys()
    if unknown:
        raise SystemExit(f"benchmarks.stages: --skip {', '.join(sorted(unknown))}: not a stage of {dvc_yaml}")
    commands = {}
    for name, stage in stages.items():
        if name in skip:
            continue
        argv = shlex.split(stage["cmd"])
        if argv[0] == "python":
            argv[0] = sys.executable
        if torchrun and TRAIN in argv:
            at = argv.index(TRAIN)
            launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(torchrun)]
            argv = [*argv[:at], *launcher, *argv[at:]]
        commands[name] = argv
    return commands


def run_stages(commands: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Run each command from the project root; stop at the first that fails. Seconds and exit code of each."""
    rows = []
    for name, argv in commands.items():
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True)
        rows.append({"stage": name, "seconds": time.perf_counter() - start, "returncode": proc.returncode})
        sys.stderr.write(proc.stderr[-4000:])  # the stage's own log (its last lines on failure)
        if proc.returncode:
            break
    return rows


def headline() -> dict[str, Any]:
    """The figures the verdict rests on, from the metrics and checkpoints the stages wrote."""
    figures: dict[str, Any] = {}
    for arm in ("pretrained", "scratch"):
        metrics = json.loads((PROJECT / "metrics" / f"{arm}.json").read_text())
        meta = json.loads((PROJECT / "models" / arm / "meta.json").read_text())
        figures[arm] = {k: metrics[k] for k in ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "train_seconds")}
        figures[arm] |= {k: meta[k] for k in ("best_epoch", "best_val_accuracy", "weights_source")}
        figures[arm]["epoch_seconds"] = [row["epoch_seconds"] for row in meta["history"]]
    figures["comparison"] = json.loads((PROJECT / "metrics" / "comparison.json").read_text())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", action="append", default=[], help="a stage whose outputs are already in place")
    parser.add_argument("--torchrun", type=int, default=0, metavar="N", help="run the training stages under torchrun")
    parser.add_argument("--commit", help="the commit of the tree (for a copy without git)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    commands = stage_commands(PROJECT / "dvc.yaml", set(args.skip), args.torchrun)
    result: dict[str, Any] = {"kind": "stages", "machine": machine_info(), "skipped": args.skip}
    result["machine"]["git_commit"] = args.commit or result["machine"]["git_commit"]  # a copied .git may be stale
    result["torchrun_nproc"] = args.torchrun
    result["stages"] = run_stages(commands)
    result["total_seconds"] = sum(row["seconds"] for row in result["stages"])
    if all(row["returncode"] == 0 for row in result["stages"]) and len(result["stages"]) == len(commands):
        result["figures"] = headline()
    write_result(args.out, result)
    print(json.dumps({k: result[k] for k in ("stages", "total_seconds")} | {"figures": result.get("figures")}))


if __name__ == "__main__":
    main()

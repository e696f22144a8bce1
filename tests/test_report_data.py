"""`eyelip report` compares test IoUs only on the same data (dvc.lock's data_version), with the real git + dvc."""

from __future__ import annotations

import json

import yaml
from conftest import BIN

from eyelip.tracking.report import verdict


def test_verdict_on_other_data_is_not_comparable() -> None:
    result = verdict(0.86, 0.73, data=("aaa", "bbb"))
    assert result.word == "not comparable (different data)"
    assert result.line("`HEAD`") == (
        "**not comparable (different data)**: test IoU 0.7300 on data bbb vs 0.8600 on data aaa at `HEAD`"
    )
    assert verdict(0.86, 0.73).word == "worse"


def commit(project, iou: float, resized_md5: str, message: str) -> None:
    lock = {
        "schema": "2.0",
        "stages": {
            "resize": {
                "cmd": "python pipeline/resize.py",
                "outs": [{"path": "data/resized", "md5": f"{resized_md5}.dir", "size": 1, "nfiles": 1}],
            }
        },
    }
    (project.root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (project.root / "metrics").mkdir(exist_ok=True)
    (project.root / "metrics" / "evaluate.json").write_text(json.dumps({"iou": iou}))
    if message:
        project.run("git", "add", "-A")
        project.run("git", "commit", "-qm", message)


def test_report_says_not_comparable_when_the_data_differs(project) -> None:
    commit(project, 0.8621, "a" * 32, "synthetic sample")
    commit(project, 0.7303, "b" * 32, "")  # the workspace: a run on other faces
    project.run(str(BIN / "eyelip"), "report", "--baseline", "HEAD", "--out", "report.md", "--no-images")
    first = (project.root / "report.md").read_text().splitlines()[0]
    assert first.startswith("**not comparable (different data)**: test IoU 0.7303 on data "), first
    assert "worse" not in first and "vs 0.8621 on data " in first
    commit(project, 0.7303, "a" * 32, "")  # the same data again: a verdict
    project.run(str(BIN / "eyelip"), "report", "--baseline", "HEAD", "--out", "report.md", "--no-images")
    assert (project.root / "report.md").read_text().startswith("**worse**: test IoU 0.7303 vs 0.8621")

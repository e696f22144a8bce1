"""A shared DVC remote: `dvc push` every stage output; a second clone pulls them and reproduces nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO, Project

pytestmark = pytest.mark.slow

TINY = {
    "sample": {"n": 40, "image_size": 64, "mask_size": 64},
    "resize": {"size": 64},
    "model": {"base_width": 8, "depth": 3},
    "train": {"epochs": 2, "batch_size": 32},
    "runtime": {"threads": 2},
    "export": {"latency_repeats": 1},
}
CACHED = [
    "data/sample.zip",
    "data/fused/masks.npy",
    "data/resized/images.npy",
    "data/split/train.txt",
    "models/model.pt",
    "models/run.json",
    "models/resume.pt",
    "models/model.onnx",
    "models/model.ts",
]


def tiny_project(project: Project) -> None:
    """The repository's own git/DVC split and a tiny pipeline, ready for `dvc repro`."""
    shutil.copy2(REPO / ".gitignore", project.root / ".gitignore")
    project.set_params(**TINY)


def clone_pulls_everything(project: Project, dest: Path, env: dict[str, str] | None = None) -> Project:
    """After `dvc push`: commit, clone into ``dest``, `dvc pull` (with ``env`` added, e.g. the remote's
    credentials) and check the clone is complete and reproduces nothing; returns the clone."""
    assert "in sync" in project.dvc("status", "--cloud").stdout
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "pipeline run")

    clone = Project(dest)
    clone.env.update(env or {})
    project.run("git", "clone", "-q", str(project.root), str(clone.root))
    assert not any((clone.root / path).exists() for path in CACHED), "cached outputs must not be in git"
    clone.dvc("pull")
    missing = [path for path in CACHED if not (clone.root / path).exists()]
    assert not missing, missing
    assert "up to date" in clone.dvc("status").stdout
    assert "Running stage" not in clone.dvc("repro").stdout
    return clone


def test_second_clone_pulls_every_output_and_reproduces_nothing(project: Project, tmp_path: Path) -> None:
    tiny_project(project)
    project.dvc("repro")
    project.dvc("remote", "add", "-d", "store", str(tmp_path / "store"))  # S3: tests/test_team.py
    project.dvc("push")
    clone_pulls_everything(project, tmp_path / "clone")

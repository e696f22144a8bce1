"""A shared DVC remote: `dvc push` every stage output; a second clone pulls them and reproduces nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO, Project

pytestmark = pytest.mark.slow

TINY = {"sample": {"n": 40, "image_size": 64, "mask_size": 64}, "resize": {"size": 64},
        "model": {"base_width": 8, "depth": 3}, "train": {"epochs": 2, "batch_size": 32}, "runtime": {"threads": 2},
        "export": {"latency_repeats": 1}}
CACHED = ["data/sample.zip", "data/fused/masks.npy", "data/resized/images.npy", "data/split/train.txt",
          "models/model.pt", "models/run.json", "models/resume.pt", "models/model.onnx", "models/model.ts"]


def test_second_clone_pulls_every_output_and_reproduces_nothing(project: Project, tmp_path: Path) -> None:
    shutil.copy2(REPO / ".gitignore", project.root / ".gitignore")  # the repository's own git/DVC split
    project.set_params(**TINY)
    project.dvc("repro")
    project.dvc("remote", "add", "-d", "store", str(tmp_path / "store"))  # S3 etc.: an s3:// URL + dvc[s3]
    project.dvc("push")
    assert "in sync" in project.dvc("status", "--cloud").stdout
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "pipeline run")

    clone = Project(tmp_path / "clone")
    project.run("git", "clone", "-q", str(project.root), str(clone.root))
    assert not any((clone.root / path).exists() for path in CACHED), "cached outputs must not be in git"
    clone.dvc("pull")
    missing = [path for path in CACHED if not (clone.root / path).exists()]
    assert not missing, missing
    assert "up to date" in clone.dvc("status").stdout
    assert "Running stage" not in clone.dvc("repro").stdout

"""data.root through the real `dvc` CLI: a missing root is named by the project before DVC hashes it,
and a run on data other than the built-in sample leaves no image of its faces where git would take it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO

from eyelip.cli import main
from eyelip.data.synthetic import generate_sample

# Images that show no face (curves, histograms): they may change with every run.
PLOTS = {"metrics/train_curves.png", "metrics/evaluate_thresholds.png", "metrics/evaluate_histogram.png"}
FACES = "metrics/evaluate_overlays.png"
TINY = {"resize": {"size": 32}, "split": {"train": 0.5, "val": 0.25, "test": 0.25},
        "model": {"base_width": 4, "depth": 2}, "train": {"epochs": 1, "batch_size": 8},
        "runtime": {"threads": 1, "n_jobs": 1}}


@pytest.mark.parametrize("target", ["fuse-masks", "split"])
def test_a_missing_root_is_named_before_dvc_hashes_it(project, tmp_path: Path, target: str) -> None:
    missing = tmp_path / "nowhere" / "CelebAMask-HQ.zip"
    project.set_params(data={"root": str(missing)})
    proc = project.dvc("repro", target, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"eyelip check-data: error: data.root: {missing} does not exist" in output, output
    assert "Errno 2" not in output and "Running stage 'fuse-masks'" not in output


def test_the_built_in_sample_passes_the_check_before_it_exists(project) -> None:
    project.set_params(sample={"n": 4, "image_size": 64, "mask_size": 64}, runtime={"n_jobs": 1})
    # Alone first: DVC may order the two root stages, sample and check-data, either way.
    proc = project.dvc("repro", "check-data")
    assert "data.root: data/sample.zip, the built-in sample" in proc.stdout
    assert not (project.root / "data" / "sample.zip").exists()
    project.dvc("repro", "fuse-masks")
    assert (project.root / "data" / "fused" / "masks.npy").is_file()


def test_profile_refuses_a_missing_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "mini", "--data-root", str(tmp_path / "nowhere")]) == 1
    assert f"eyelip profile: error: data.root: {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert (tmp_path / "params.yaml").read_text() == (REPO / "params.yaml").read_text()


@pytest.mark.slow
def test_faces_of_other_data_never_reach_git(project, tmp_path: Path) -> None:
    """The README's advice (`git add -A` after a run) on data that is not the sample: only face-free
    plots are taken; the overlay grid is in the DVC cache."""
    (project.root / ".gitignore").write_text((REPO / ".gitignore").read_text())
    for ignore in ("metrics/.gitignore", "data/.gitignore"):
        (project.root / ignore).parent.mkdir(exist_ok=True)
        shutil.copy2(REPO / ignore, project.root / ignore)
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "project")
    other = tmp_path / "elsewhere" / "faces.zip"  # counts as licensed data: not data/sample.zip
    generate_sample(other, n=16, seed=5, image_size=64, mask_size=64)
    project.set_params(data={"root": str(other)}, **TINY)
    project.dvc("repro", "evaluate")
    assert (project.root / FACES).is_file()  # written, so the checks below can fail
    project.dvc("plots", "show")
    project.run("git", "add", "-A")
    images = {p for p in project.run("git", "ls-files").stdout.split()
              if p.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".html", ".zip", ".npy"))}
    assert images <= PLOTS, f"git would take files derived from the faces: {sorted(images - PLOTS)}"
    for path in (FACES, "dvc_plots/index.html"):
        assert project.run("git", "check-ignore", "-q", path, check=False).returncode == 0, f"{path} not ignored"
    cached = project.dvc("ls", ".", "metrics", "--dvc-only").stdout.split()
    assert "evaluate_overlays.png" in cached


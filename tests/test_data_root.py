"""data.root and params through the real `dvc` CLI: check-data, the first stage, names a missing root or a bad
param before any stage works (the sample is not built, DVC hashes nothing); the sample is built only when
data.root is the sample; and a run on other data leaves no image of its faces where git would take it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO

from eyelip.cli import main
from eyelip.data.source import Source
from eyelip.data.synthetic import generate_sample

# Images that show no face (curves, histograms): they may change with every run.
PLOTS = {"metrics/train_curves.png", "metrics/evaluate_thresholds.png", "metrics/evaluate_histogram.png"}
FACES = "metrics/evaluate_overlays.png"
TINY = {
    "resize": {"size": 32},
    "split": {"train": 0.5, "val": 0.25, "test": 0.25},
    "model": {"base_width": 4, "depth": 2},
    "train": {"epochs": 1, "batch_size": 8},
    "runtime": {"threads": 1, "n_jobs": 1},
}


def ran(output: str) -> list[str]:
    """The stages `dvc repro` started, in order."""
    return re.findall(r"Running stage '([\w-]+)'", output)


@pytest.mark.parametrize("target", [None, "split"])
def test_a_missing_root_stops_the_pipeline_first(project, tmp_path: Path, target: str | None) -> None:
    """Before the sample is built (DVC runs every stage on a plain `dvc repro`) and before DVC hashes the path."""
    missing = tmp_path / "nowhere" / "CelebAMask-HQ.zip"
    project.set_params(data={"root": str(missing)})
    proc = project.dvc("repro", *([target] if target else []), check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"eyelip check-data: error: data.root: {missing} does not exist" in output, output
    assert ran(output) == ["check-data"] and "Errno 2" not in output
    assert not (project.root / "data" / "sample.zip").exists()


def test_the_built_in_sample_is_checked_then_built(project) -> None:
    project.set_params(sample={"n": 4, "image_size": 64, "mask_size": 64}, runtime={"n_jobs": 1})
    proc = project.dvc("repro", "fuse-masks")
    assert ran(proc.stdout + proc.stderr) == ["check-data", "sample", "fuse-masks"]
    assert "data.root: data/sample.zip, the built-in sample" in proc.stdout
    assert (project.root / "data" / "fused" / "masks.npy").is_file()


def test_other_data_does_not_build_the_sample(project, synthetic: Path) -> None:
    project.set_params(
        data={"root": str(synthetic)}, sample={"n": 4, "image_size": 64, "mask_size": 64}, runtime={"n_jobs": 1}
    )
    proc = project.dvc("repro", "sample")
    assert ran(proc.stdout + proc.stderr) == ["check-data", "sample"]
    assert "the built-in sample is not needed" in proc.stdout and "synthetic" not in proc.stderr
    assert (project.root / "data" / "sample.zip").stat().st_size == 0
    project.set_params(data={"root": "data/sample.zip"})  # back to the sample: now it is built
    project.dvc("repro", "sample")
    assert len(Source(project.root / "data" / "sample.zip").ids()) == 4


def test_a_param_no_stage_reads_yet_stops_the_pipeline_first(project) -> None:
    """check-data depends on the whole of params.yaml: after the data stages ran, a bad key stops `dvc repro` at
    check-data, not at the first stage that reads it (train here)."""
    project.set_params(sample={"n": 8, "image_size": 64, "mask_size": 64}, **TINY)
    project.dvc("repro", "split")
    project.set_params(train={"threads": 1})  # moved to runtime.threads
    proc = project.dvc("repro", check=False)
    output = proc.stdout + proc.stderr
    assert "eyelip check-data: error: train.threads: moved to runtime.threads" in output, output
    assert ran(output) == ["check-data"]


@pytest.mark.parametrize(
    "section, values, key", [("split", {"val": -0.1}, "split.val"), ("runtime", {"n_jobz": 1}, "runtime.n_jobz")]
)
def test_a_bad_param_anywhere_stops_the_pipeline_first(project, section: str, values: dict, key: str) -> None:
    project.set_params(**{section: values})
    proc = project.dvc("repro", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert re.search(rf"eyelip check-data: error: (params.yaml: )?{re.escape(key)}", output), output
    assert ran(output) == ["check-data"]


def test_profile_refuses_a_missing_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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
    images = {
        p
        for p in project.run("git", "ls-files").stdout.split()
        if p.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".html", ".zip", ".npy"))
    }
    assert images <= PLOTS, f"git would take files derived from the faces: {sorted(images - PLOTS)}"
    for path in (FACES, "dvc_plots/index.html"):
        assert project.run("git", "check-ignore", "-q", path, check=False).returncode == 0, f"{path} not ignored"
    cached = project.dvc("ls", ".", "metrics", "--dvc-only").stdout.split()
    assert "evaluate_overlays.png" in cached

"""The data stages through the real `dvc` CLI, on a dataset folder (the synthetic faces) and the built-in sample."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from conftest import SYNTHETIC_IDS

from eyelip.data.arrays import read_ids


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def test_data_stages_on_a_dataset_folder(project, synthetic: Path) -> None:
    project.set_params(data={"root": str(synthetic)}, resize={"size": 64})
    first = project.dvc("repro", "split")
    assert stages_run(first.stdout) == ["check-data", "fuse-masks", "resize", "split"]
    resized = project.root / "data" / "resized"
    images = np.load(resized / "images.npy", mmap_mode="r")
    masks = np.load(resized / "masks.npy", mmap_mode="r")
    n = len(SYNTHETIC_IDS)
    assert images.shape == (n, 64, 64, 3) and masks.shape == (n, 1, 64, 64)
    assert 0.005 < masks.mean() < 0.03  # eyes+lips are ~1.5% of a face photo
    splits = {name: read_ids(project.root / "data" / "split" / f"{name}.txt") for name in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [38, 5, 5]  # 80/10/10 %, rounded

    again = project.dvc("repro", "split")
    assert stages_run(again.stdout) == [] and "Data and pipelines are up to date" in again.stdout

    project.set_params(split={"seed": 7})
    reseeded = project.dvc("repro", "split")
    assert stages_run(reseeded.stdout) == ["check-data", "split"]  # check-data re-checks any params edit
    assert read_ids(project.root / "data" / "split" / "train.txt") != splits["train"]


def test_bad_param_fails_with_the_key_and_keeps_nothing(project, synthetic: Path) -> None:
    project.set_params(data={"root": str(synthetic)}, resize={"size": -3})
    proc = project.dvc("repro", "resize", check=False)
    assert proc.returncode != 0
    assert "resize.size: expected a value >= 8, got -3" in proc.stderr + proc.stdout
    assert not (project.root / "data" / "resized").exists()


def test_missing_root_is_named(project, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    project.set_params(data={"root": str(tmp_path / "empty")})
    proc = project.dvc("repro", "fuse-masks", check=False)
    assert proc.returncode != 0 and "not CelebAMask-HQ-shaped" in proc.stderr + proc.stdout


def test_data_stages_on_the_built_in_sample(project) -> None:
    project.set_params(
        sample={"n": 40, "image_size": 256, "mask_size": 128},
        resize={"size": 64},
        data={"targets": {"eyes": ["l_eye", "r_eye"], "lips": ["u_lip", "l_lip"]}},
    )
    out = project.dvc("repro", "split")
    assert stages_run(out.stdout) == ["check-data", "sample", "fuse-masks", "resize", "split"]
    with zipfile.ZipFile(project.root / "data" / "sample.zip") as zf:
        assert "CelebAMask-HQ/CelebA-HQ-img/0.jpg" in zf.namelist()
    masks = np.load(project.root / "data" / "resized" / "masks.npy", mmap_mode="r")
    assert masks.shape == (40, 2, 64, 64) and masks[:, 0].any() and masks[:, 1].any()
